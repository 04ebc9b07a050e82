"""Read a user's file where a library fault cannot take the command down (every command that opens one).

:func:`run_guarded` runs the risky part of a command in a child process
(:func:`calibsuite_h5source.tools.isolate.run_isolated`): a file libhdf5
hangs on ends the command with exit 2 naming the file after ``--timeout``
seconds without progress; a crash of the library is reported the same way;
Ctrl-C ends the command with 130; the child never outlives the command.
The job is called as ``func(*args, reporter)``; it reports progress with
``reporter(h5path, activity)``, counts for the progress bar with
``reporter.send('count', (done, total), throttle=True)`` and lines for
stdout with ``reporter.send('out', text)``. With ``--timeout 0`` the job
runs in this process, without a limit (for debuggers).
"""

from __future__ import annotations

import sys

from calibsuite_h5source.errors import DamagedFileError, H5SourceError
from calibsuite_h5source.tools.isolate import run_isolated

#: Default of ``--timeout``: seconds without progress before a file is reported unreadable.
DEFAULT_TIMEOUT = 15.0
#: Seconds without progress before the progress line says so.
NOTE_AFTER = 3.0

#: Said in the help of every command that opens a user's file.
ISOLATION_HELP = ("Files are read in a separate process: a file the HDF5 library hangs or crashes on ends the "
                  "command with exit 2, naming the file, after --timeout seconds without progress; Ctrl-C ends it "
                  "with 130, and no reading process outlives the command.")


def add_timeout(parser, default: float = DEFAULT_TIMEOUT, extra: str = "") -> None:
    """Add ``--timeout SECONDS`` to a command's parser."""
    parser.add_argument("--timeout", type=float, default=default, metavar="SECONDS",
                        help="report a file as unreadable after this many seconds without progress (a library "
                             f"hang){extra}; 0 reads in this process without a limit (default: %(default)g)")


class _InProcess:
    """The reporter of a job run in this process (``--timeout 0``)."""

    def __init__(self, on_message):
        self._on_message = on_message

    def __call__(self, h5path: str, activity: str, detail: str = "") -> None:
        pass

    def send(self, kind: str, payload, throttle: bool = False) -> None:
        self._on_message(kind, payload)


def run_guarded(func, args: tuple, *, file, timeout: float, progress=None, notes: bool = True, handler=None):
    """Run ``func(*args, reporter)`` in a child process; return its result or raise what it raised.

    Parameters
    ----------
    func : callable
        A module-level function.
    file : str or callable
        The user's file, named in the error of a hang or a crash (a callable
        is asked then: the file a job over several was at).
    timeout : float
        Seconds without progress before the job is killed (0: run here, no limit).
    progress : Progress, optional
        Receives the job's counts, and notes while no progress arrives.
    notes : bool
        Say on the progress line when the job makes no progress (off for work that legitimately waits).
    handler : callable, optional
        ``handler(kind, payload) -> bool`` sees every message first; True: handled.

    Raises
    ------
    DamagedFileError
        The job hung (no progress for ``timeout`` s) or the library crashed.
    """
    def on_message(kind, payload):
        if handler is not None and handler(kind, payload):
            return
        if kind == "out":
            print(payload, flush=True)
        elif kind == "err":
            print(payload, file=sys.stderr, flush=True)
        elif kind == "count" and progress is not None:
            progress.set(*payload)
        elif kind == "wait" and progress is not None and notes and payload[0] >= NOTE_AFTER:
            h5path, activity, _ = payload[1]
            progress.note(f"no progress for {payload[0]:.0f} s while {activity} {h5path} "
                          f"(gives up after {timeout:g} s)")

    if not timeout:
        return func(*args, _InProcess(on_message))
    out = run_isolated(func, args, timeout, on_message)
    if out.status == "done":
        return out.result
    if out.status == "raised":
        exc = out.result
        if out.detail and hasattr(exc, "add_note"):
            exc.add_note(f"in the reading process:\n{out.detail}")
        raise exc
    h5path, activity, detail = out.at
    file = file() if callable(file) else file
    where = f"while {activity} {h5path}" + (f" (filters: {detail})" if detail else "")
    if out.status == "timeout":
        raise DamagedFileError(f"no progress for {timeout:g} s {where}: the HDF5 library hangs on this file "
                               "(damaged, or a known library fault: 'calibsuite-h5 validate' names it); "
                               "--timeout sets the limit", file=str(file))
    if out.status == "crashed":
        raise DamagedFileError(f"the HDF5 library crashed ({out.signal_name}) {where} (damaged, or a known "
                               "library fault: 'calibsuite-h5 validate' names it)", file=str(file))
    raise H5SourceError(f"reading failed {where}: {out.result}", file=str(file))
