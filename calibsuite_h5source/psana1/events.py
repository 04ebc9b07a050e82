"""psana1 events, their times and timing data, and the current environment.

The small types every psana1 module shares (:class:`Event`, :class:`EventTime`,
:class:`EventId`, EVR data) live here, below
:mod:`~calibsuite_h5source.psana1.datasource`,
:mod:`~calibsuite_h5source.psana1.detectors` and
:mod:`~calibsuite_h5source.psana1.smalldata`, so none of those imports another
that imports it back.
"""

from __future__ import annotations

import weakref

import numpy as np

from calibsuite_h5source.format.timestamps import LCLS_EPOCH_OFFSET

#: psana1 fiducials: the low 17 bits of the pulse id.
FIDUCIAL_MASK = 0x1FFFF

_current = {"ds": None}  # a weak reference: the module does not keep a DataSource (and its file) open


def current_env():
    """The env of the most recently created DataSource still alive (what ``Detector(name)`` uses without one)."""
    ref = _current["ds"]
    ds = None if ref is None else ref()
    return None if ds is None else ds.env()


# -- time and events ------------------------------------------------------------------------

def unix_time(timestamp: int) -> tuple[int, int]:
    """psana2 timestamp (seconds since 1990) -> psana1 ``(Unix seconds, nanoseconds)``."""
    timestamp = int(timestamp)
    return (timestamp >> 32) + LCLS_EPOCH_OFFSET, timestamp & 0xFFFFFFFF


class EventTime:
    """psana1's ``EventTime``: ``time()`` is ``(Unix seconds << 32) | nanoseconds``."""

    __slots__ = ("_value", "_fiducial")

    def __init__(self, value: int, fiducial: int = 0):
        self._value = int(value)
        self._fiducial = int(fiducial)

    @classmethod
    def from_psana2(cls, timestamp: int, fiducial: int = 0) -> EventTime:
        sec, nsec = unix_time(timestamp)
        return cls(sec << 32 | nsec, fiducial)

    def psana2(self) -> int:
        """The psana2 timestamp (seconds since 1990) of this time."""
        return ((self.seconds() - LCLS_EPOCH_OFFSET) << 32) | self.nanoseconds()

    def time(self) -> int:
        return self._value

    def seconds(self) -> int:
        return self._value >> 32

    def nanoseconds(self) -> int:
        return self._value & 0xFFFFFFFF

    def fiducial(self) -> int:
        return self._fiducial

    def __eq__(self, other):
        return isinstance(other, EventTime) and other._value == self._value

    def __hash__(self):
        return hash(self._value)

    def __repr__(self):
        return f"EventTime({self.seconds()}, {self.nanoseconds()})"


class Event:
    """A psana1 event: ``evt.get(EventId)``, ``evt.get(EvrData.DataV4, src)``, ``evt.run()``."""

    __slots__ = ("_evt",)

    def __init__(self, evt):
        self._evt = evt  # the package's (psana2-style) Event

    def get(self, type_, src=None, key=None):
        """Return ``EventId``, EVR data (``EvrData.DataV3/V4``) or None, as psana1's ``evt.get``."""
        return event_get(self, type_, src)

    def run(self) -> int:
        """The run number."""
        return self._evt._run.runnum

    def keys(self) -> list:
        """The event's keys (here: none are enumerated)."""
        return []

    def __repr__(self):
        return f"<psana1 Event step={self._evt._step} event={self._evt._i}>"


# -- timing: EventId and EVR ---------------------------------------------------------------------

#: per run, its timing detector and field names: made at the run's first look, not at every event
_TIMING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _timing(run):
    """The run's psana2 timing detector (``run.Detector('timing')``) and the names of its stored fields.

    psana1 reads timing only through it, so it gives what psana2 gives: None
    (EVR) and 0 (pulse id) at events where the source's ``present`` mask is False.
    Made once per run (a run's fields are fixed at its first event).
    """
    got = _TIMING.get(run)
    if got is None:
        t = run.Detector("timing")
        got = _TIMING[run] = (t, frozenset(dir(t.raw)))
    return got


def _timing_fields(run) -> frozenset:
    """The names of the timing source's stored fields (``eventcodes``, ``pulseId``...)."""
    return _timing(run)[1]


def fiducial(evt) -> int:
    """psana1 fiducials: ``pulseId & 0x1FFFF`` when timing is stored, else the run-wide event number's.

    The pulse id is psana2's ``run.Detector('timing').raw.pulseId(evt)``: 0 at
    an event without timing data.
    """
    run = evt._run
    t, fields = _timing(run)
    if "pulseId" in fields:
        return t.raw.pulseId(evt) & FIDUCIAL_MASK
    starts = np.concatenate([[0], np.cumsum(run._index.n_events)[:-1]])
    return int(starts[evt._step] + evt._i) & FIDUCIAL_MASK


def run_fiducials(run) -> np.ndarray:
    """The fiducials of every stored event in run order (see :func:`fiducial`), one read per step."""
    t, fields = _timing(run)
    if "pulseId" not in fields:
        return np.arange(int(run._index.n_events.sum()), dtype=np.int64) & FIDUCIAL_MASK
    pulse = np.asarray(t.raw.array("pulseId", missing="keep"), dtype=np.int64)
    masks = [t.raw.present(k) for k in range(len(run._index.n_events))]
    if any(m is not None for m in masks):  # no timing data at these events: pulse id 0, as pulseId(evt)
        present = np.concatenate([np.ones(int(n), bool) if m is None else np.asarray(m, bool)
                                  for m, n in zip(masks, run._index.n_events, strict=True)])
        pulse[~present] = 0
    return pulse & FIDUCIAL_MASK


class EventId:
    """psana1's ``EventId``: use as ``evt.get(EventId)``; ``time()`` is ``(Unix seconds, nanoseconds)``."""

    def __init__(self, evt):
        self._evt = evt

    def time(self) -> tuple[int, int]:
        return unix_time(self._evt.timestamp)

    def fiducials(self) -> int:
        return fiducial(self._evt)

    def ticks(self) -> int:
        return 0

    def vector(self) -> int:
        return 0

    def run(self) -> int:
        return self._evt._run.runnum

    def idxtime(self):
        return EventTime.from_psana2(self._evt.timestamp, self.fiducials())

    def __repr__(self):
        sec, nsec = self.time()
        return f"EventId(time={sec}.{nsec:09d}, fiducials={self.fiducials()}, run={self.run()})"


class FIFOEvent:
    """One EVR FIFO entry: ``eventCode()``, ``timestampHigh()`` (fiducials), ``timestampLow()``."""

    def __init__(self, code: int, fid: int):
        self._code, self._fid = int(code), int(fid)

    def eventCode(self) -> int:  # noqa: N802 - psana1's name
        return self._code

    def timestampHigh(self) -> int:  # noqa: N802
        return self._fid

    def timestampLow(self) -> int:  # noqa: N802
        return 0

    def __repr__(self):
        return f"FIFOEvent({self._code})"


class _EvrDataV4:
    """EVR data of one event: ``fifoEvents()``, ``numFifoEvents()``, ``present(code)``."""

    def __init__(self, codes: list[int], fid: int):
        self._codes = codes
        self._fid = fid

    def fifoEvents(self) -> list[FIFOEvent]:  # noqa: N802
        return [FIFOEvent(c, self._fid) for c in self._codes]

    def numFifoEvents(self) -> int:  # noqa: N802
        return len(self._codes)

    def present(self, code: int) -> bool:
        return int(code) in self._codes


class EvrData:
    """psana1's ``EvrData`` types, used as ``evt.get(EvrData.DataV4, src)``."""

    class DataV3:
        pass

    class DataV4:
        pass


EVR_TYPES = (EvrData.DataV3, EvrData.DataV4)


def event_codes(evt) -> list[int] | None:
    """The event codes set in an event, or None: no ``timing/eventcodes`` stored, or none at this event.

    Read by the timing detector's one side-data rule (None where the timing
    source's ``present`` mask is False, as psana2's ``raw.eventcodes(evt)``),
    as the stored array: psana1's EVR is absent from an event without EVR data.
    """
    t, fields = _timing(evt._run)
    if "eventcodes" not in fields:
        return None
    codes = t.raw._value("eventcodes", evt)
    return None if codes is None else [int(c) for c in np.flatnonzero(codes)]


def event_get(pevt: Event, type_, src=None):
    """``evt.get(type, src)``: ``EventId`` always; EVR data where the event has timing data (any ``src``); else None."""
    evt = pevt._evt
    if type_ is EventId:
        return EventId(evt)
    if type_ in EVR_TYPES:
        codes = event_codes(evt)
        return None if codes is None else _EvrDataV4(codes, fiducial(evt))
    return None
