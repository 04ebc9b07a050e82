"""psana timestamps: ``(seconds since 1990-01-01 UTC) << 32 | nanoseconds``.

A run file may store its own timestamps (``/timestamp/<step>``). When it does
not, :func:`synthesise` makes strictly increasing ones from the run's Unix
start time: event ``k`` of the run (counting across steps, from 0) is placed
``k`` milliseconds after the start, i.e. a 1 kHz event rate.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np

#: Seconds from the Unix epoch (1970) to the LCLS epoch (1990-01-01 UTC).
LCLS_EPOCH_OFFSET = 631152000
#: Spacing of synthesised timestamps, in nanoseconds (1 ms).
SYNTHETIC_SPACING_NS = 1_000_000

_NS = 1_000_000_000
_LCLS_EPOCH = _dt.datetime(1990, 1, 1)


def from_unix(seconds: float | int, nanoseconds: int = 0) -> int:
    """Return the psana timestamp of a Unix time.

    Parameters
    ----------
    seconds : float or int
        Unix seconds; a float's fraction is added to ``nanoseconds``.
    nanoseconds : int
        Extra nanoseconds.
    """
    whole = int(seconds)
    ns = int(round((seconds - whole) * _NS)) + int(nanoseconds)
    whole += ns // _NS
    ns %= _NS
    sec = whole - LCLS_EPOCH_OFFSET
    if sec < 0:
        raise ValueError(f"Unix time {seconds} is before the LCLS epoch (1990-01-01)")
    return (sec << 32) | ns


def to_unix(timestamp: int) -> float:
    """Return the Unix time (float seconds) of a psana timestamp."""
    timestamp = int(timestamp)
    return (timestamp >> 32) + LCLS_EPOCH_OFFSET + (timestamp & 0xFFFFFFFF) / _NS


def to_datetime(timestamp: int) -> _dt.datetime:
    """Return a psana timestamp as a naive UTC ``datetime``, as ``evt.datetime()`` does."""
    timestamp = int(timestamp)
    # exactly psana's arithmetic: float microseconds, rounded by timedelta
    return _LCLS_EPOCH + _dt.timedelta(seconds=timestamp >> 32, microseconds=(timestamp & 0xFFFFFFFF) / 1000)


def synthesise(run_unix_seconds: int, n_events_per_step, start_event: int = 0) -> list[np.ndarray]:
    """Make strictly increasing timestamps for a run that stores none.

    Parameters
    ----------
    run_unix_seconds : int
        The run's ``run`` header value (Unix seconds); values before 1990 are
        clamped to the LCLS epoch.
    n_events_per_step : sequence of int
        Events in each step.
    start_event : int
        Run-wide index of the first event (to continue a sequence).

    Returns
    -------
    list of numpy.ndarray
        One ``uint64`` array per step.
    """
    base_ns = max(int(run_unix_seconds) - LCLS_EPOCH_OFFSET, 0) * _NS
    out = []
    k = start_event
    for n in n_events_per_step:
        ns = base_ns + (np.arange(k, k + int(n), dtype=np.int64) * SYNTHETIC_SPACING_NS)
        out.append(((ns // _NS).astype(np.uint64) << np.uint64(32)) | (ns % _NS).astype(np.uint64))
        k += int(n)
    return out
