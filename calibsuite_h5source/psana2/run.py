"""psana2's run, step and event objects over one run file's index.

:class:`Run` (its steps and events share one cursor, as psana's do),
:class:`Step` and :class:`Event`. :class:`calibsuite_h5source.psana2.source.H5DataSource`
makes runs; :class:`calibsuite_h5source.psana2.live.LiveRun` is a run that grows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calibsuite_h5source.errors import UnknownDetectorError
from calibsuite_h5source.format import shapes
from calibsuite_h5source.format.detector_types import detector_type
from calibsuite_h5source.format.timestamps import to_datetime
from calibsuite_h5source.psana2 import partition as _partition
from calibsuite_h5source.psana2.detector import (
    AreaDetector,
    MissingDetector,
    ScanDetector,
    SideDetector,
    step_docstrings,
)
from calibsuite_h5source.psana2.psana_api import EventMethods, RunMethods
from calibsuite_h5source.read.index_types import RunIndex, ScanVariable

log = logging.getLogger(__name__)

L1ACCEPT = 12


class Event(EventMethods):
    """One event: psana's ``evt``. ``evt.timestamp`` is a python int."""

    __slots__ = ("_run", "_step", "_i", "timestamp")

    def __init__(self, run: Run, step: int, i: int, timestamp: int):
        self._run = run
        self._step = step
        self._i = i
        self.timestamp = timestamp

    def datetime(self):
        """Return the event time as a naive UTC ``datetime``."""
        return to_datetime(self.timestamp)

    def service(self) -> int:
        """Return 12 (L1Accept), as psana does for data events."""
        return L1ACCEPT

    def run(self) -> Run:
        """Return the run this event belongs to (``expt``, ``runnum``, ``timestamp``)."""
        return self._run

    def EndOfBatch(self) -> list:  # noqa: N802
        """Return ``[intg_det]`` when this event closes an integrating batch, else ``[]``, as psana does.

        psana marks every event holding the integrating detector (``intg_det=``)
        as the end of a batch, whatever ``batch_size``, serially and under MPI;
        without ``intg_det`` (or when the run has no such detector) no event is
        marked. The list holds the ``intg_det`` name as it was passed to the
        DataSource. Scripts write ``if evt.EndOfBatch():`` to close their sums
        at each integrated frame.
        """
        return self._run._end_of_batch(self._step, self._i)

    def __repr__(self):
        return f"<Event step={self._step} event={self._i} timestamp={self.timestamp}>"


class Step:
    """One step of a run (psana's BeginStep)."""

    def __init__(self, run: Run, index: int):
        self._run = run
        self._step = index
        self.index = index

    def events(self):
        """Yield this step's remaining events (the run's shared cursor advances)."""
        run = self._run
        while run._cursor_step == self._step:
            evt = run._next_in_step()
            if evt is None:
                return
            yield evt

    def event(self, i: int) -> Event | None:
        """Return event ``i`` of this step (file order), or None past its event count."""
        idx = self._run._index
        if not 0 <= i < idx.step_events(self._step):
            return None
        return Event(self._run, self._step, i, int(idx.timestamps[self._step][i]))

    @property
    def n_events(self) -> int:
        """Events stored in this step."""
        return self._run._index.step_events(self._step)

    @property
    def scan_values(self) -> dict:
        """``{name: value}`` of every scan variable at this step (plus ``step_value``)."""
        run = self._run
        return {name: run._scan[name](self) for name in run._scan if name != "step_docstring"}

    def __repr__(self):
        return f"<Step {self._step} events={self.n_events}>"


class _Selection(Sequence):
    """The selected event indices of each step, serial and by ``max_events`` only, each step's made when reached.

    Step ``k`` is selected when it exists and ``max_events`` left events for
    it; its events are ``range(min(count, left))``. Counting a step of a run
    without the writer's index opens its datasets, so nothing is counted
    before the cursor (or ``len``) needs it.
    """

    def __init__(self, counts, max_events):
        self._counts = counts
        self._left = int(max_events) if max_events else None
        self._done: list = []

    def has(self, k: int) -> bool:
        """True when step ``k`` is selected (computing the steps up to it)."""
        done, counts = self._done, self._counts
        while len(done) <= k:
            j = len(done)
            if j >= len(counts) or (self._left is not None and self._left <= 0):
                return False
            sel = range(int(counts[j]))
            if self._left is not None:
                sel = sel[: self._left]
                self._left -= len(sel)
            done.append(sel)
        return True

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if k < 0 or not self.has(k):
            raise IndexError(k)
        return self._done[k]

    def __len__(self) -> int:
        if self._left is None:
            return len(self._counts)
        k = len(self._done)
        while self.has(k):
            k += 1
        return k


class Run(RunMethods):
    """One run file, with psana2's Run interface."""

    def __init__(self, index: RunIndex, *, max_events=None, detectors=None, timestamps=None,
                 partition=None, keep_module_axis: bool = False, intg_det=None):
        self._index = index
        self.keep_module_axis = bool(keep_module_axis)
        h = index.header
        self.runnum = int(h.get("runnum", index.run_id) or 0)
        self.expt = str(h.get("experiment") or Path(index.path).stem)
        self.complete = index.complete
        self.path = index.path
        self._area = dict(index.area)
        self._side = dict(index.side)
        if detectors is not None:
            self._keep_detectors(detectors)
        self._times = None
        self._scan = self._scan_detectors()
        self._intg_det = intg_det or None
        self._intg_source = None  # the source intg_det names, found when first needed ("": none)
        self._first_ts = None
        self._selected = self._select(max_events, timestamps, partition or _partition.SerialPartition())
        self._cursor_step = 0
        self._cursor_pos = 0
        #: psana's run timestamp: the header's ``timestamp`` (BeginRun), else the first event's
        self.timestamp = int(h["timestamp"]) if "timestamp" in h else self._first_timestamp()

    # -- set-up -------------------------------------------------------------------
    def _first_timestamp(self) -> int:
        if self._first_ts is not None:  # under MPI: the run's first event, the same on every rank
            return self._first_ts
        k = next((k for k, s in enumerate(self._selected) if len(s)), None)
        return 0 if k is None else int(self._index.timestamps[k][self._selected[k][0]])

    def _keep_detectors(self, names):
        keep_area, keep_side = {}, {}
        for name in names:
            kind, real = self._resolve(name, {"area": self._area, "side": self._side})
            if kind is None:
                if name.lower() == "timing":
                    continue  # timing always answers (see SideDetector)
                raise UnknownDetectorError(
                    f"detectors=[...] names {name!r}, which this run does not hold; available: {sorted([*self._area, *self._side])}",
                    file=self.path)
            (keep_area if kind == "area" else keep_side)[real] = (self._area if kind == "area" else self._side)[real]
        self._area, self._side = keep_area, keep_side

    def _scan_detectors(self) -> dict:
        idx = self._index
        scan = {name: ScanDetector(var) for name, var in idx.scan.items()}
        if idx.step_value is not None:
            value = idx.step_value
        elif idx.scan:
            value = next(iter(idx.scan.values())).per_step
        else:
            value = np.arange(idx.n_steps, dtype=np.float64)
        scan["step_value"] = ScanDetector(ScanVariable("step_value", np.asarray(value, dtype=np.float64)))
        docs = idx.step_docstring
        if docs is None:
            detname = next(iter(self._area), next(iter(idx.area), ""))
            docs = step_docstrings(value, idx.script_type, detname)
        scan["step_docstring"] = ScanDetector(ScanVariable("step_docstring", np.array(docs, dtype=object)), str)
        return scan

    def _integrating_source(self) -> str | None:
        """The run's source that ``intg_det`` names (found once, warned once when there is none)."""
        if self._intg_source is None and self._intg_det:
            kind, real = self._resolve(self._intg_det, {"area": self._index.area, "side": self._index.side})
            if kind is None:
                log.warning("intg_det=%r: this run holds no such detector (available: %s); events are dealt "
                            "in plain batches and evt.EndOfBatch() is [], as psana does", self._intg_det,
                            sorted([*self._index.area, *self._index.side]))
            self._intg_source = real if kind is not None else ""
        return self._intg_source or None

    def _integrating_mask(self, step: int) -> np.ndarray | None:
        """The step's mask of events holding the integrating source (None: every event holds it)."""
        present = self._index.present_of(self._integrating_source())
        return None if present is None else present[step]

    def _integrating(self) -> list | None:
        """Per step, the bool mask of events holding ``intg_det`` (None: no integrating detector)."""
        if self._integrating_source() is None:
            return None
        masks = (self._integrating_mask(s) for s in range(self._index.n_steps))
        return [np.ones(int(n), dtype=bool) if m is None else np.asarray(m, dtype=bool)
                for n, m in zip(self._index.n_events, masks, strict=True)]

    def _end_of_batch(self, step: int, i: int) -> list:
        """psana's ``EndOfBatch`` of event ``i`` of ``step`` (see :meth:`Event.EndOfBatch`); a live run's
        masks are looked up as it grows."""
        if self._integrating_source() is None:
            return []
        mask = self._integrating_mask(step)
        return [self._intg_det] if mask is None or mask[i] else []

    def _select(self, max_events, timestamps, partition) -> list:
        """Event indices per step (ranges: nothing allocated per declared event), cut by ``max_events``,
        then this rank's share (:mod:`.partition`): every step on a worker, none on another rank."""
        idx = self._index
        if timestamps is None and not partition.is_mpi():
            return _Selection(idx.n_events, max_events)  # each step counted when reached
        selected = [range(int(n)) for n in idx.n_events]
        if timestamps is not None:  # the index's timestamps only: frames are read when asked for
            wanted = np.unique(np.asarray(timestamps, dtype=np.uint64).ravel())
            found, steps, events = self._time_index().locate(wanted)
            if not found.all():
                log.warning("%s: %d of the %d timestamps= are not in this run (skipped), e.g. %s", self.path,
                            int((~found).sum()), len(wanted), wanted[~found][:3].tolist())
            selected = [np.sort(events[found & (steps == k)]) for k in range(idx.n_steps)]
        if max_events:
            left = int(max_events)
            cut = []
            for sel in selected:
                if left <= 0:
                    break
                cut.append(sel[:left])
                left -= len(cut[-1])
            selected = cut
        if not partition.is_mpi():
            return selected
        k = next((k for k, sel in enumerate(selected) if len(sel)), None)
        # the run's first selected event, the same on every rank (a non-worker reads none)
        self._first_ts = 0 if k is None else int(idx.timestamps[k][selected[k][0]])
        if not partition.is_worker:
            return []  # psana's smd0, event builders and servers see the run, no step and no event
        ends = self._integrating()
        return partition.deal(selected, None if ends is None else [ends[k][sel] for k, sel in enumerate(selected)])

    # -- random access (psana1's indexed mode) -------------------------------------
    def _time_index(self):
        if self._times is None:
            from calibsuite_h5source.read.arrays import TimeIndex

            self._times = TimeIndex(self._index)
        return self._times

    def times(self) -> np.ndarray:
        """Return every stored event's timestamp in run order (uint64), from the index; no frame is read.

        All events of the file, whatever ``max_events``, ``timestamps=`` or the
        MPI partition select (as psana1's indexed ``run.times()``).
        """
        return self._time_index().times.copy()

    def event(self, timestamp) -> Event | None:
        """Return the event with this timestamp (any stored event, cursor untouched), or None.

        Raises
        ------
        TypeError
            ``timestamp`` is not an integer (a float would lose nanoseconds).
        """
        found = self._time_index().find(timestamp)
        return None if found is None else Event(self, found[0], found[1], int(timestamp))

    # -- the shared cursor --------------------------------------------------------
    def _has_step(self, k: int) -> bool:
        if self._terminated:
            return False
        sel = self._selected
        return sel.has(k) if isinstance(sel, _Selection) else k < len(sel)

    def _next_in_step(self) -> Event | None:
        step = self._cursor_step
        if not self._has_step(step):
            return None
        sel = self._selected[step]
        if self._cursor_pos >= len(sel):
            return None
        i = int(sel[self._cursor_pos])
        self._cursor_pos += 1
        return Event(self, step, i, int(self._index.timestamps[step][i]))

    def steps(self):
        """Yield a :class:`Step` per remaining step; unread events of a step are skipped."""
        while self._has_step(self._cursor_step):
            step = self._cursor_step
            yield Step(self, step)
            if self._cursor_step == step:
                self._cursor_step, self._cursor_pos = step + 1, 0

    def events(self):
        """Yield every remaining event across steps (the cursor shared with :meth:`steps`)."""
        while self._has_step(self._cursor_step):
            evt = self._next_in_step()
            if evt is None:
                self._cursor_step, self._cursor_pos = self._cursor_step + 1, 0
                continue
            yield evt

    # -- detectors ----------------------------------------------------------------
    def _resolve(self, name, tables):
        for kind, table in tables.items():
            if name in table:
                return kind, name
        matches = [(kind, real) for kind, table in tables.items() for real in table if real.lower() == str(name).lower()]
        if len(matches) == 1:
            return matches[0]
        # a suite config names the detector type ('Epix100a'), the file its group ('epix100')
        wanted = detector_type(name)
        if wanted is None or "area" not in tables:
            return None, None
        same_type = [real for real, src in tables["area"].items() if wanted == shapes.type_of(real, src.attrs)]
        return ("area", same_type[0]) if len(same_type) == 1 else (None, None)

    def _available(self) -> list[str]:
        return sorted([*self._area, *self._side, *self._scan])

    def Detector(self, name: str, accept_missing: bool = False, *, keep_module_axis: bool | None = None):  # noqa: N802
        """Return the detector ``name`` (area, side data or scan variable).

        An exact name wins; else a unique case-insensitive match (``'epixm'``
        finds ``epixM``); else the one area detector of the same detector type
        (``'Epix100a'``, as suite configs name it, finds an ``epix100`` group). ``'timing'`` always exists. Unknown names raise
        :class:`UnknownDetectorError` (a ``KeyError``) listing the available
        names, or return a detector whose calls return None when
        ``accept_missing`` is True. ``keep_module_axis`` (default: the
        DataSource's) keeps ``[1, row, col]`` frames of a single-module
        detector whatever psana's shape for its type.
        """
        kind, real = self._resolve(name, {"area": self._area, "side": self._side, "scan": self._scan})
        if kind == "area":
            keep = self.keep_module_axis if keep_module_axis is None else bool(keep_module_axis)
            return AreaDetector(self._area[real], keep_module_axis=keep, run=self)
        if kind == "side":
            return SideDetector(real, self._side[real], run=self, present=self._index.side_present)
        if kind == "scan":
            return self._scan[real].bound(self)
        if str(name).lower() == "timing":
            return SideDetector("timing", {}, run=self)
        if accept_missing:
            return MissingDetector(name)
        raise UnknownDetectorError(f"no detector {name!r} in this run; available: {self._available()}", file=self.path)

    @property
    def detnames(self) -> set:
        """Names of the area and side-data detectors."""
        return set(self._area) | set(self._side)

    @property
    def detinfo(self) -> dict:
        """``{(name, 'raw'): [methods]}``, as psana's."""
        info = {(name, "raw"): sorted(["calib", "image", "raw", *src.headers]) for name, src in self._area.items()}
        info.update({(name, "raw"): sorted(fields) for name, fields in self._side.items()})
        return info

    @property
    def xtcinfo(self) -> list:
        """``[(name, dettype, 'raw', version)]``, as psana's."""
        out = []
        for name, src in self._area.items():
            dettype = src.attrs.get("dettype", src.attrs.get("detType", name))
            out.append((name, _plain(dettype), "raw", _plain(src.attrs.get("detVersion", "0_0_0"))))
        return out

    @property
    def scaninfo(self) -> dict:
        """``{(name, 'raw'): 'raw'}`` for the scan variables."""
        return {(name, "raw"): "raw" for name in self._scan}

    @property
    def epicsinfo(self) -> dict:
        """Always empty: h5 runs hold no EPICS variables."""
        return {}

    @property
    def n_steps(self) -> int:
        """Steps this run yields."""
        return len(self._selected)

    def __repr__(self):
        return f"<Run {self.expt} runnum={self.runnum} steps={self.n_steps} {self.path}>"


def _plain(value):
    return value.decode() if isinstance(value, bytes) else str(value)
