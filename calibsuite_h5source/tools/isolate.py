"""Run a job in a child process with a time limit, so that a library fault cannot take the caller down.

libhdf5 can loop forever on some corrupted files, and a compression filter
can crash the process on a corrupted chunk (``docs/upstream-faults.rst``).
:func:`run_isolated` runs ``func(*args, progress)`` in a child process; the
job calls ``progress(h5path, activity, detail)`` as it goes. The job ends
with its result, or is killed after ``timeout`` seconds without progress, or
dies of a signal; :class:`Outcome` says which, and what the job was doing
last, so the caller can name the fault.

The job may also send other messages through ``progress.send(kind, payload)``
(lines to print, counts for a progress bar); they reach the caller's
``on_message`` and count as progress.

The child never outlives the call: it is killed when the caller returns,
raises (Ctrl-C, a termination signal turned into an exception), or dies
(on Linux the child asks the kernel for SIGKILL when its parent dies). It
runs in its own process group, so a Ctrl-C at the terminal reaches only the
caller, which decides; its standard output is ``/dev/null`` (its results
travel through the pipe), so a stuck child never holds the caller's output
pipe open.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from calibsuite_h5source.errors import H5SourceError

__all__ = ["Outcome", "run_isolated", "no_progress"]

#: Progress messages are sent at most this often (seconds) unless the activity changes.
THROTTLE = 0.2
#: Seconds the child is given to end on SIGINT before it is killed (caller interrupted or terminated).
GRACE = 1.0


@dataclass
class Outcome:
    """How an isolated job ended.

    ``status``: ``'done'`` (``result`` holds its return value), ``'timeout'``
    (no progress for the time limit: killed), ``'crashed'`` (died of
    ``signal``), ``'failed'`` (raised: ``result`` holds the text) or
    ``'raised'`` (raised: ``result`` holds the exception, rebuilt in the
    caller, ``detail`` its traceback text).
    ``at``: the last ``(h5path, activity, detail)`` the job reported.
    """

    status: str
    result: object = None
    signal: int | None = None
    at: tuple = ("/", "starting", "")
    seconds: float = 0.0
    detail: str = ""

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signal).name
        except (ValueError, TypeError):
            return f"signal {self.signal}"


def no_progress(h5path: str, activity: str, detail: str = "") -> None:
    """The progress callback of a job run in-process: does nothing."""


no_progress.send = lambda kind, payload: None  # type: ignore[attr-defined]


class _Reporter:
    """The child's progress callback: sends ``("at", (h5path, activity, detail))``, throttled."""

    def __init__(self, conn):
        self._conn, self._last, self._sent = conn, 0.0, None
        self._pending: dict = {}

    def __call__(self, h5path: str, activity: str, detail: str = "") -> None:
        now = time.monotonic()
        key = (h5path, activity, detail)
        if key != self._sent or now - self._last > THROTTLE:
            self._conn.send(("at", key))
            self._sent, self._last = key, now

    def send(self, kind: str, payload, throttle: bool = False) -> None:
        """Send ``(kind, payload)`` to the caller's ``on_message`` (``throttle``: at most every THROTTLE s per kind)."""
        if throttle:
            now = time.monotonic()
            if now - self._pending.get(kind, 0.0) < THROTTLE:
                return
            self._pending[kind] = now
        self._conn.send((kind, payload))


class _Raised:
    """An exception as it crosses the pipe.

    An :class:`H5SourceError` travels as its class, args and attributes (its
    ``file``, ``h5path``, ``rule`` survive; rebuilt without calling
    ``__init__``); any other exception pickled, when it pickles to the same
    text (``OSError`` keeps its ``filename``), else like an H5SourceError.
    """

    def __init__(self, exc: BaseException, text: str):
        self.text, self.blob = text, None
        self.cls, self.args, self.attrs = type(exc), exc.args, dict(getattr(exc, "__dict__", {}))
        if not isinstance(exc, H5SourceError):
            try:
                blob = pickle.dumps(exc)
                back = pickle.loads(blob)
                if type(back) is type(exc) and str(back) == str(exc):
                    self.blob = blob
            except Exception:  # noqa: BLE001 - not picklable: class, args and attributes
                pass

    def rebuild(self) -> BaseException:
        if self.blob is not None:
            return pickle.loads(self.blob)
        exc = self.cls.__new__(self.cls)
        exc.args = self.args
        vars(exc).update(self.attrs)
        return exc


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); elsewhere a watchdog thread."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the request
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _child(conn, func, args, parent):
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a Ctrl-C at the terminal reaches the caller only; the caller decides
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the child
    try:
        result = func(*args, _Reporter(conn))
    except BaseException as exc:  # reported to the parent, never printed
        import traceback

        text = "".join(traceback.format_exception(exc))
        try:
            conn.send(("raised", _Raised(exc, text)))
        except Exception:  # not picklable: its text
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("done", result))
    finally:
        conn.close()


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_isolated(func: Callable, args: tuple, timeout: float, on_message: Callable | None = None) -> Outcome:
    """Run ``func(*args, progress)`` in a child process; kill it after ``timeout`` s without progress.

    Parameters
    ----------
    func : callable
        A module-level function (picklable); its result must be picklable.
    args : tuple
        Its arguments, before ``progress``.
    timeout : float
        Seconds the job may go without calling ``progress`` (or finishing).
    on_message : callable, optional
        ``on_message(kind, payload)`` for every message the job sends with
        ``progress.send``, and as ``on_message('at', (h5path, activity,
        detail))`` for every progress report; also called as
        ``on_message('wait', (seconds, at))`` about once a second while no
        progress arrives.

    Returns
    -------
    Outcome
        Also when the job raised: ``'raised'`` with the exception rebuilt.
        If the caller is interrupted (``KeyboardInterrupt`` or any other
        exception raised while waiting), the child is ended first.
    """
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, func, args, os.getpid()), daemon=True)
    start = time.monotonic()
    proc.start()
    send.close()
    at, last = ("/", "starting", ""), time.monotonic()
    ended = False
    try:
        while True:
            wait = timeout - (time.monotonic() - last)
            if wait <= 0:
                proc.kill()
                ended = True
                return Outcome("timeout", at=at, seconds=time.monotonic() - start)
            if receive.poll(min(wait, 1.0)):
                try:
                    kind, payload = receive.recv()
                except (EOFError, OSError):  # the child died: see its exit code below
                    break
                last = time.monotonic()
                if kind == "at":
                    at = payload
                    if on_message is not None:
                        on_message("at", payload)
                    continue
                if kind in ("done", "failed", "raised"):
                    proc.join(timeout)
                    ended = True
                    if kind == "raised":
                        return Outcome("raised", payload.rebuild(), at=at, seconds=last - start, detail=payload.text)
                    return Outcome(kind, payload, at=at, seconds=last - start)
                if on_message is not None:
                    on_message(kind, payload)
                continue
            if not proc.is_alive() and not receive.poll():
                break
            if on_message is not None:
                on_message("wait", (time.monotonic() - last, at))
        proc.join(timeout)
        ended = True
        code = proc.exitcode
        return Outcome("crashed", signal=-code if code and code < 0 else None, at=at,
                       seconds=time.monotonic() - start)
    finally:
        _end(proc, gently=not ended)
        receive.close()


def _end(proc, gently: bool) -> None:
    """End the child: SIGINT and a short grace when it may be mid-work (so a writer can close), then SIGKILL."""
    if proc.is_alive() and gently and proc.pid is not None:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGINT)
        proc.join(GRACE)
    if proc.is_alive():
        proc.kill()
    proc.join(5)
