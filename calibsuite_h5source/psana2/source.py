"""psana2's DataSource protocol over HDF5 run files.

``H5DataSource(files='run.h5')`` behaves like ``psana.DataSource(files=...)``:
``ds.runs()`` yields one :class:`Run` per file; a run's ``steps()`` and
``events()`` share one cursor, as psana's do; detectors are looked up with
``run.Detector(name)``. See ``../shared/reference/psana2-behaviour.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calibsuite_h5source.errors import H5SourceError, UnknownDetectorError
from calibsuite_h5source.format.detector_types import detector_type
from calibsuite_h5source.format.timestamps import to_datetime
from calibsuite_h5source.h5.guard import guard
from calibsuite_h5source.psana2 import partition as _partition
from calibsuite_h5source.psana2.detector import (
    AreaDetector,
    MissingDetector,
    ScanDetector,
    SideDetector,
    step_docstrings,
)
from calibsuite_h5source.psana2.psana_api import DataSourceMethods, EventMethods, RunMethods
from calibsuite_h5source.read.index_types import RunIndex, ScanVariable
from calibsuite_h5source.read.run_index import open_run_index

log = logging.getLogger(__name__)

#: psana keywords that mean nothing for an h5 file: accepted and ignored.
IGNORED_KWARGS = {
    "exp", "run", "dir", "skip_calib_load", "log_level",
    "smalldata_kwargs", "xdetectors", "monitor", "small_xtc", "shmem", "mpi_ts", "dbsuffix",
    "destination", "filter", "prom_jobid", "psmon_publish", "use_calib_cache",
}
#: psana keywords that decide which events an MPI rank reads (:mod:`.partition`).
PARTITION_KWARGS = {"batch_size", "intg_det", "parallel"}
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
        self._selected = self._select(max_events, timestamps, partition or _partition.SerialPartition(), intg_det)
        self._cursor_step = 0
        self._cursor_pos = 0
        #: psana's run timestamp: the header's ``timestamp`` (BeginRun), else the first event's
        self.timestamp = int(h["timestamp"]) if "timestamp" in h else self._first_timestamp()

    # -- set-up -------------------------------------------------------------------
    def _first_timestamp(self) -> int:
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

    def _integrating(self, intg_det):
        """Per step, the bool mask of events holding ``intg_det`` (None: no integrating detector)."""
        if not intg_det:
            return None
        kind, real = self._resolve(intg_det, {"area": self._index.area, "side": self._index.side})
        if kind is None:
            log.warning("intg_det=%r: this run holds no such detector (available: %s); events are dealt "
                        "in plain batches, as psana does", intg_det, sorted([*self._index.area, *self._index.side]))
            return None
        n = self._index.n_events
        if kind == "side":  # side data is in every event
            return [np.ones(k, dtype=bool) for k in n]
        present = self._index.area[real].present
        return [np.ones(k, dtype=bool) if present[s] is None else np.asarray(present[s], dtype=bool)
                for s, k in enumerate(n)]

    def _select(self, max_events, timestamps, partition, intg_det=None) -> list:
        """Event indices per step (ranges: nothing allocated per declared event), cut by ``max_events``,
        then this rank's share (:mod:`.partition`)."""
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
        ends = self._integrating(intg_det)
        return [partition.select(k, sel, None if ends is None else ends[k][sel]) for k, sel in enumerate(selected)]

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
        same_type = [real for real, src in tables["area"].items()
                     if wanted in (detector_type(real), detector_type(_plain(src.attrs.get("detType", ""))))]
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
        detector instead of psana's ``[row, col]``.
        """
        kind, real = self._resolve(name, {"area": self._area, "side": self._side, "scan": self._scan})
        if kind == "area":
            keep = self.keep_module_axis if keep_module_axis is None else bool(keep_module_axis)
            return AreaDetector(self._area[real], keep_module_axis=keep, run=self)
        if kind == "side":
            return SideDetector(real, self._side[real], run=self)
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


class H5DataSource(DataSourceMethods):
    """psana2's ``DataSource`` for h5 run files.

    Parameters
    ----------
    files : str, path or list of them
        One run per file.
    max_events : int, optional
        Read exactly this many events per run (steps are cut short).
    detectors : list of str, optional
        Keep only these detectors; an unknown name raises.
    timestamps : array of int, optional
        Read only the events with these timestamps.
    batch_size, intg_det : optional
        Under MPI, how events are dealt to ranks, as psana deals them
        (:mod:`calibsuite_h5source.psana2.partition`); no effect in serial runs.
    keep_module_axis : bool
        False (default): a single-module detector gives ``[row, col]`` frames
        from ``det.raw.raw/calib/image``, as psana does for one segment.
        True: ``[1, row, col]``, as stored. ``run.Detector(name,
        keep_module_axis=...)`` overrides it per detector.
    live : bool
        Follow runs that are still being written (:mod:`calibsuite_h5source.psana2.live`):
        events come as the writer makes them durable, and the run ends when
        the writer completes it (or raises ``WriterGoneError`` when it died).
    max_retries : float, optional
        With ``live``: seconds to wait for new data before giving up; default
        ``PS_R_MAX_RETRIES``, else 60 (psana's).
    zero_copy : bool
        Return large uncompressed frames (256 KiB or more) as private
        copy-on-write mappings of the file instead of copies: several times
        faster to get, as fast to read, and still writable and the caller's
        own; but writing into one costs a page copy per 4 KiB touched, and a
        file truncated by another program while such an array is alive
        crashes the process when the array is next read (SIGBUS), as with
        ``numpy.memmap``. Default False (see ``docs/psana-differences.rst``).
    **kwargs
        Other psana keywords (``exp``, ``run``, ``dir``, ``skip_calib_load``...)
        are accepted and ignored.
    """

    def __init__(self, files=None, *, max_events=0, detectors=None, timestamps=None, keep_module_axis=False,
                 live=False, max_retries=None, zero_copy=False, **kwargs):
        if files is None:
            raise TypeError("H5DataSource needs files= (a path or a list of paths)")
        self.files = [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]
        self.max_events = max_events
        self.detectors = detectors
        self.timestamps = timestamps
        self.keep_module_axis = bool(keep_module_axis)
        unknown = set(kwargs) - IGNORED_KWARGS - PARTITION_KWARGS
        if unknown:
            log.info("H5DataSource: ignoring unknown keywords %s", sorted(unknown))
        for key in sorted(set(kwargs) & IGNORED_KWARGS):
            log.debug("H5DataSource: keyword %s=%r has no meaning for h5 files; ignored", key, kwargs[key])
        self._kwargs = kwargs
        self._partition = _partition.choose(max_events=max_events, **kwargs)
        self.live, self.max_retries = bool(live), max_retries
        self.zero_copy = bool(zero_copy)
        if self.live and self.zero_copy:
            raise H5SourceError("zero_copy=True maps finished data; a live run is still being written: "
                                "use one or the other", file=", ".join(self.files))
        if self.live:
            from calibsuite_h5source.psana2.live import resolve_max_retries

            resolve_max_retries(max_retries)  # a bad value fails here, not at the first wait
            if self._partition.is_mpi():
                raise H5SourceError("live=True reads a run in order on one process; run the script without MPI",
                                    file=", ".join(self.files))
        self.exp = kwargs.get("exp")
        self.runnum = kwargs.get("run")

    def runs(self):
        """Yield one :class:`Run` per file."""
        for path in self.files:
            if self.live:
                from calibsuite_h5source.psana2.live import open_live_run

                run = open_live_run(path, max_retries=self.max_retries, max_events=self.max_events,
                                    detectors=self.detectors, timestamps=self.timestamps,
                                    keep_module_axis=self.keep_module_axis)
                self.exp = self.exp or run.expt
                self.runnum = self.runnum or run.runnum
                yield run
                continue
            index = open_run_index(path, zero_copy=self.zero_copy)
            try:
                with guard(path, None, "selecting the run's events"):
                    run = Run(index, max_events=self.max_events, detectors=self.detectors,
                              timestamps=self.timestamps, partition=self._partition,
                              keep_module_axis=self.keep_module_axis,
                              intg_det=self._kwargs.get("intg_det"))
            except BaseException:
                index.close()
                raise
            self.exp = self.exp or run.expt
            self.runnum = self.runnum or run.runnum
            yield run

    def events(self):
        """Yield every event of every run."""
        for run in self.runs():
            yield from run.events()

    def smalldata(self, **kwargs):
        """Return a psana-compatible ``SmallData`` writer (see :mod:`calibsuite_h5source.psana2.smalldata`)."""
        from calibsuite_h5source.psana2.smalldata import SmallData

        return SmallData(self, **kwargs)

    def is_mpi(self) -> bool:
        """True when events are split across MPI ranks."""
        return self._partition.is_mpi()

    def is_srv(self) -> bool:
        """False: h5 sources have no server ranks."""
        return False

    def unique_user_rank(self) -> bool:
        """True on exactly one rank."""
        return self._partition.unique_user_rank()

    def __repr__(self):
        return f"<H5DataSource files={self.files}>"
