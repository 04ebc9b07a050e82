"""psana timestamps: ``(seconds since 1990-01-01 UTC) << 32 | nanoseconds``.

A run file may store its own timestamps (``/timestamp/<step>``). When it does
not, :func:`synthesise` makes strictly increasing ones from the run's Unix
start time: event ``k`` of the run (counting across steps, from 0) is placed
``k`` milliseconds after the start, i.e. a 1 kHz event rate.

The reader keeps one sequence per step that allocates nothing in proportion
to the step's declared size: :class:`SyntheticTimestamps` computes event
``i``'s time when asked, :class:`StoredTimestamps` reads stored ones in
blocks on first use, each block checked by :func:`checked` (the one rule:
unsigned, finite, 64-bit).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence

import numpy as np

from calibsuite_h5source.errors import HeaderError, TimestampError

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


#: Latest ``run`` (Unix seconds) timestamps can be synthesised from: psana's seconds since 1990 are 32
#: bits, less 2**20 s (a billion events 1 ms apart) for the events after the start.
LAST_RUN_START = LCLS_EPOCH_OFFSET + 2**32 - 2**20


def check_run_start(run_unix_seconds, file: str | None = None) -> None:
    """Raise :class:`HeaderError` naming ``ancillaryData.run`` when timestamps cannot be made from it.

    Only a run that stores no timestamps needs this (they are synthesised from ``run``).
    """
    if int(run_unix_seconds) > LAST_RUN_START:
        raise HeaderError(f"attribute run = {run_unix_seconds} (Unix seconds) is past "
                          f"{_dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=LAST_RUN_START):%Y-%m-%d}, the "
                          f"last start psana timestamps (32-bit seconds since 1990) can hold; the file stores no "
                          f"/timestamp, so timestamps are made from run: store them, or fix run",
                          file=file, h5path="/ancillaryData")


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
    out = []
    k = start_event
    for n in n_events_per_step:
        out.append(synthetic_step(run_unix_seconds, k, int(n)).block(0, int(n)))
        k += int(n)
    return out


# -- the reader's per-step sequences ---------------------------------------------------

#: Stored timestamps are read and checked in blocks of this many events (8 MiB).
BLOCK = 1 << 20


def check_dtype(dtype: np.dtype, file: str | None = None, h5path: str | None = None) -> None:
    """Raise :class:`TimestampError` unless ``dtype`` is a 64-bit integer (values are checked by :func:`checked`)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize != 8:
        kind = "compound" if dtype.names else "string" if dtype.kind in "SUO" else str(dtype)
        raise TimestampError(f"timestamps must be unsigned 64-bit integers (psana's format); found {kind} "
                             f"({dtype.str})", file=file, h5path=h5path)


def checked(values, file: str | None = None, h5path: str | None = None, first: int = 0) -> np.ndarray:
    """Return stored timestamps as uint64 after checking the rule; raise :class:`TimestampError`.

    Parameters
    ----------
    values : array_like
        Timestamps read from the file.
    file, h5path : str, optional
        Where they were read, for the message.
    first : int
        Index of ``values[0]`` in its step, for the message.
    """
    values = np.asarray(values)
    check_dtype(values.dtype, file, h5path)
    if values.dtype.kind == "i" and values.size:
        neg = np.flatnonzero(values < 0)
        if len(neg):
            i = int(neg[0])
            raise TimestampError(f"timestamps must be unsigned; event {first + i} has {int(values[i])} "
                                 f"({len(neg)} negative)", file=file, h5path=h5path)
    return values.astype(np.uint64, copy=False)


class _Timestamps(Sequence):
    """A step's timestamps: ``ts[i]`` is an int; ``np.asarray(ts)`` makes the uint64 array."""

    __slots__ = ("_n",)

    def __len__(self) -> int:
        return self._n

    def _index(self, i) -> int:
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"event {i} of a step of {self._n}")
        return i

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            return self.block(start, stop)[::step] if step > 0 else np.asarray(self)[i]
        return self.at(self._index(i))

    def __array__(self, dtype=None, copy=None):
        out = self.block(0, self._n)
        return out if dtype is None else out.astype(dtype)

    def find(self, wanted: np.ndarray) -> np.ndarray:
        """Return the indices of the events whose timestamp is in ``wanted`` (block by block)."""
        found = [start + np.flatnonzero(np.isin(self.block(start, min(start + BLOCK, self._n)), wanted))
                 for start in range(0, self._n, BLOCK)]
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def __repr__(self):
        return f"<{type(self).__name__} n={self._n}>"


class SyntheticTimestamps(_Timestamps):
    """Synthesised timestamps of one step, computed on demand (see :func:`synthetic_steps`)."""

    __slots__ = ("_base_ns", "_start")

    def __init__(self, base_ns: int, start: int, n: int):
        self._base_ns, self._start, self._n = base_ns, start, n

    def at(self, i: int) -> int:
        ns = self._base_ns + (self._start + i) * SYNTHETIC_SPACING_NS
        return ((ns // _NS) << 32) | (ns % _NS)

    def block(self, start: int, stop: int) -> np.ndarray:
        ns = self._base_ns + np.arange(self._start + start, self._start + stop, dtype=np.int64) * SYNTHETIC_SPACING_NS
        return ((ns // _NS).astype(np.uint64) << np.uint64(32)) | (ns % _NS).astype(np.uint64)


def synthetic_step(run_unix_seconds: int, start: int, n: int) -> SyntheticTimestamps:
    """The synthesised timestamps of the ``n`` events from run-wide event ``start`` on: the one formula
    (the run's start, clamped to the LCLS epoch, plus ``SYNTHETIC_SPACING_NS`` per event)."""
    return SyntheticTimestamps(max(int(run_unix_seconds) - LCLS_EPOCH_OFFSET, 0) * _NS, start, n)


def synthetic_steps(run_unix_seconds: int, n_events_per_step) -> list[SyntheticTimestamps]:
    """Return :func:`synthesise`'s timestamps as lazy per-step sequences (no per-event memory)."""
    check_run_start(run_unix_seconds)
    out, k = [], 0
    for n in n_events_per_step:
        out.append(synthetic_step(run_unix_seconds, k, int(n)))
        k += int(n)
    return out


class StoredTimestamps(_Timestamps):
    """Stored timestamps of one step, read in blocks of :data:`BLOCK` events when first used.

    Parameters
    ----------
    read : callable
        ``read(start, stop)`` returns the stored values of events ``start:stop``
        (the caller's guarded read).
    n : int
        Events in the step.
    file, h5path : str
        Where they are stored, for messages.
    """

    __slots__ = ("_read", "_file", "_h5path", "_at", "_values")

    def __init__(self, read: Callable[[int, int], np.ndarray], n: int, file: str, h5path: str):
        self._read, self._n, self._file, self._h5path = read, n, file, h5path
        self._at, self._values = -1, None  # the cached block

    def _load(self, start: int, stop: int) -> np.ndarray:
        return checked(self._read(start, stop), self._file, self._h5path, first=start)

    def at(self, i: int) -> int:
        start = i - i % BLOCK
        if start != self._at:
            self._values = self._load(start, min(start + BLOCK, self._n))
            self._at = start
        return int(self._values[i - start])

    def block(self, start: int, stop: int) -> np.ndarray:
        if start == self._at and stop <= start + len(self._values):
            return self._values[: stop - start]
        return self._load(start, stop)
