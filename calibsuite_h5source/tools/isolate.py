"""Run a job in a child process with a time limit, so that a library fault cannot take the caller down.

libhdf5 can loop forever on some corrupted files, and a compression filter
can crash the process on a corrupted chunk (``docs/upstream-faults.rst``).
:func:`run_isolated` runs ``func(*args, progress)`` in a child process; the
job calls ``progress(h5path, activity, detail)`` as it goes. The job ends
with its result, or is killed after ``timeout`` seconds without progress, or
dies of a signal; :class:`Outcome` says which, and what the job was doing
last, so the caller can name the fault.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Outcome", "run_isolated", "no_progress"]

#: Progress messages are sent at most this often (seconds) unless the activity changes.
THROTTLE = 0.2


@dataclass
class Outcome:
    """How an isolated job ended.

    ``status``: ``'done'`` (``result`` holds its return value), ``'timeout'``
    (no progress for the time limit: killed), ``'crashed'`` (died of
    ``signal``), or ``'failed'`` (raised: ``result`` holds the text).
    ``at``: the last ``(h5path, activity, detail)`` the job reported.
    """

    status: str
    result: object = None
    signal: int | None = None
    at: tuple = ("/", "starting", "")
    seconds: float = 0.0

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signal).name
        except (ValueError, TypeError):
            return f"signal {self.signal}"


def no_progress(h5path: str, activity: str, detail: str = "") -> None:
    """The progress callback of a job run in-process: does nothing."""


class _Reporter:
    """The child's progress callback: sends ``("at", (h5path, activity, detail))``, throttled."""

    def __init__(self, conn):
        self._conn, self._last, self._sent = conn, 0.0, None

    def __call__(self, h5path: str, activity: str, detail: str = "") -> None:
        now = time.monotonic()
        key = (h5path, activity, detail)
        if key != self._sent or now - self._last > THROTTLE:
            self._conn.send(("at", key))
            self._sent, self._last = key, now


def _child(conn, func, args):
    try:
        result = func(*args, _Reporter(conn))
    except BaseException as exc:  # reported to the parent, never printed
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("done", result))
    finally:
        conn.close()


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_isolated(func: Callable, args: tuple, timeout: float) -> Outcome:
    """Run ``func(*args, progress)`` in a child process; kill it after ``timeout`` s without progress.

    Parameters
    ----------
    func : callable
        A module-level function (picklable); its result must be picklable.
    args : tuple
        Its arguments, before ``progress``.
    timeout : float
        Seconds the job may go without calling ``progress`` (or finishing).

    Returns
    -------
    Outcome
    """
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, func, args), daemon=True)
    start = time.monotonic()
    proc.start()
    send.close()
    at, last = ("/", "starting", ""), time.monotonic()
    try:
        while True:
            wait = timeout - (time.monotonic() - last)
            if wait <= 0:
                proc.kill()
                return Outcome("timeout", at=at, seconds=time.monotonic() - start)
            if receive.poll(min(wait, 1.0)):
                try:
                    kind, payload = receive.recv()
                except (EOFError, OSError):  # the child died: see its exit code below
                    break
                if kind == "at":
                    at, last = payload, time.monotonic()
                    continue
                proc.join(timeout)
                return Outcome(kind, payload, at=at, seconds=time.monotonic() - start)
            if not proc.is_alive() and not receive.poll():
                break
        proc.join(timeout)
        code = proc.exitcode
        return Outcome("crashed", signal=-code if code and code < 0 else None, at=at,
                       seconds=time.monotonic() - start)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(1)
        receive.close()
