"""The one retry helper: reads and opens that may race a writer's flush are tried again.

A file that a :class:`~calibsuite_h5source.write.writer.RunWriter` is still
writing can be looked at while a flush is half on disk (``docs/format.rst``,
"What a live file looks like"): an open, a header read, a chunk lookup may
fail, or see less than is there, and succeed a moment later once the file is
reopened. Every such place calls :func:`retry`; nothing else loops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

__all__ = ["retry"]

T = TypeVar("T")


def retry(action: Callable[[], T], *, attempts: int, on: tuple[type[BaseException], ...],
          recover: Callable[[], object] | None = None, delay: float = 0.002, what: str = "a read") -> T:
    """Return ``action()``, trying it up to ``attempts`` times while it raises one of ``on``.

    Parameters
    ----------
    action : callable
        What to do (no arguments).
    attempts : int
        Tries in all (>= 1); the last failure is raised unchanged.
    on : tuple of exception classes
        The failures that may be transient (anything else is raised at once).
    recover : callable, optional
        Called after a failure, before the next try (e.g. reopen the file).
        What it raises is raised (it is not retried here).
    delay : float
        Seconds slept after the ``k``-th failure: ``delay * k``.
    what : str
        Named in the debug log.

    Returns
    -------
    object
        What ``action`` returned.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1; got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except on as exc:
            if attempt == attempts:
                raise
            log.debug("%s failed (%s: %s); trying again (%d of %d)", what, type(exc).__name__, exc,
                      attempt + 1, attempts)
            time.sleep(delay * attempt)
            if recover is not None:
                recover()
    raise AssertionError("unreachable")  # pragma: no cover
