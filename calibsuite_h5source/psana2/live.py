"""Follow a run while its writer is still writing it: ``DataSource(files='run.h5', live=True)``.

:class:`LiveRun` is a :class:`~calibsuite_h5source.psana2.source.Run` whose steps and
events grow: ``run.steps()``, ``step.events()`` and ``run.events()`` yield the
events :class:`~calibsuite_h5source.write.writer.RunWriter` has made durable, in
order and each once, and wait for more. They end when the writer marks the
run complete, and raise :class:`~calibsuite_h5source.errors.WriterGoneError`
when the writer died, closed the run after an error, or wrote nothing new for
``max_retries`` seconds (psana's ``PS_R_MAX_RETRIES``, default 60).

How it stays correct (``docs/format.rst``, "What a live file looks like"):

* the writer flushes the data first and only then, in a second flush, the
  header counters ``stepsComplete`` and ``openStepEvents`` that make it
  visible; the reader serves nothing the counters do not cover;
* the reader opens the file without HDF5's lock (the writer holds it) and
  reopens it to see more (HDF5 caches what it read, so an open file never
  shows new data reliably);
* a finished step's datasets are never touched again, so they read safely;
  in the step being written, the writer's next appends can rewrite chunk-index
  nodes while the reader looks them up, so every read there first checks that
  the chunks it reads are allocated (a half-written index shows an unallocated
  chunk, which HDF5 would silently read as zeros); a failed check or read is
  retried after a reopen.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import h5py
import numpy as np

from calibsuite_h5source.errors import FormatError, H5SourceError, NotHDF5Error, WriterGoneError
from calibsuite_h5source.format.constants import HEADER, step_number
from calibsuite_h5source.format.timestamps import StoredTimestamps, synthetic_steps
from calibsuite_h5source.h5.guard import translate
from calibsuite_h5source.psana2.detector import step_docstrings
from calibsuite_h5source.psana2.source import Event, Run, Step
from calibsuite_h5source.read.index_types import AreaSource, EventArray, RunIndex, ScanVariable
from calibsuite_h5source.read.layout import to_python
from calibsuite_h5source.write.storage import lock_state

log = logging.getLogger(__name__)

#: psana's default of ``PS_R_MAX_RETRIES``: seconds without new data before giving up
DEFAULT_MAX_RETRIES = 60.0
#: seconds between two looks at the file while waiting for more
POLL_SECONDS = 0.05
#: reads (and opens) tried before a failure is raised; each retry reopens the file
READ_ATTEMPTS = 20
#: ``/<detector>`` members that are not header fields
_NOT_FIELDS = {"present", "calib", "nEvents"}


def resolve_max_retries(max_retries=None) -> float:
    """Seconds to wait for new data: ``max_retries``, else ``PS_R_MAX_RETRIES``, else 60.

    As in psana, ``PS_R_MAX_RETRIES`` is read from the environment (note that
    psana itself sets it to 0 in its process whenever it opens a non-live
    DataSource, and so does not wait afterwards; pass ``max_retries=`` to be
    independent of that).

    Raises
    ------
    H5SourceError
        The value is not a number of seconds ``>= 0``.
    """
    where = "max_retries=" if max_retries is not None else "PS_R_MAX_RETRIES"
    value = max_retries if max_retries is not None else os.environ.get("PS_R_MAX_RETRIES", DEFAULT_MAX_RETRIES)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise H5SourceError(f"{where} must be a number of seconds >= 0 (how long a live run waits for new data); "
                            f"found {value!r}")
    return seconds


class WriterState:
    """What one look at the header says about the writer (see ``docs/format.rst``)."""

    __slots__ = ("complete", "steps_complete", "open_events", "n_events", "error", "host", "pid", "lock",
                 "discarded")

    def __init__(self, f: h5py.File):
        g = f[HEADER]
        a = {k: to_python(v) for k, v in g.attrs.items()}
        self.complete = bool(a.get("complete", True))
        index = g.get("nEvents")
        counts = np.asarray(index[()], dtype=np.int64) if isinstance(index, h5py.Dataset) else np.zeros(0, np.int64)
        self.steps_complete = len(counts) if self.complete else min(int(a.get("stepsComplete", 0)), len(counts))
        self.n_events = counts[: self.steps_complete]
        self.open_events = -1 if self.complete else int(a.get("openStepEvents", -1))
        self.error = a.get("error")
        self.host, self.pid, self.lock = a.get("writerHost"), a.get("writerPid"), bool(a.get("writerLock", False))
        self.discarded = int(a.get("stepsDiscarded", 0))

    @property
    def counts(self) -> list[int]:
        """Durable events per step: the finished steps, then the open one (when there is one)."""
        return [int(n) for n in self.n_events] + ([self.open_events] if self.open_events >= 0 else [])

    def __repr__(self):
        return (f"<WriterState complete={self.complete} stepsComplete={self.steps_complete} "
                f"openStepEvents={self.open_events}>")


def writer_gone(path: str, state: WriterState) -> str | None:
    """Why the writer of an incomplete run will write no more, or None when it may still.

    The writer is gone when it closed the run after an error, when HDF5's write
    lock it held (``writerLock``) is free, or, on the writer's host, when its
    process (``writerPid``) has ended.
    """
    if state.complete:
        return None
    if state.error:
        return f"the writer closed the run after an error ({state.error})"
    if state.lock and lock_state(path) != "written":
        return "the writer no longer holds the file (it died: HDF5's write lock is free)"
    if state.host == socket.gethostname() and state.pid is not None and not _pid_alive(int(state.pid)):
        return f"the writer (pid {state.pid}) is no longer running"
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _open(path: str) -> h5py.File:
    """Open without HDF5's lock; in a process that already holds the file, share its open file."""
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        if "locking flag" in str(exc):  # this process has it open with the lock (its writer, or a reader)
            return h5py.File(path, "r")
        raise


class _NotYetVisible(Exception):
    """A chunk the counters promise is not in the chunk index yet (caught mid-update)."""


def _check_allocated(ds: h5py.Dataset, start: int, stop: int) -> None:
    """Raise :class:`_NotYetVisible` unless every chunk holding events ``start:stop`` is allocated."""
    if ds.chunks is None or stop <= start:
        return
    c = ds.chunks[0]
    rest = (0,) * (ds.ndim - 1)
    for j in range(start // c, (stop - 1) // c + 1):
        if ds.id.get_chunk_info_by_coord((j * c, *rest)).byte_offset is None:
            raise _NotYetVisible(f"chunk at event {j * c} of {ds.name} is not allocated yet")


def _read_chunks(ds: h5py.Dataset, start: int, stop: int):
    """Events ``start:stop`` read chunk by chunk with ``read_direct_chunk``; None where that is not exact.

    A chunk that HDF5 cannot find (its index caught mid-update) raises here,
    where ``ds[start:stop]`` would silently return fill values (zeros). Used
    for unfiltered datasets whose chunks hold whole events, of plain numeric
    types; others are read through h5py after :func:`_check_allocated`.
    """
    chunks = ds.chunks
    if (chunks is None or stop <= start or ds.dtype.kind not in "biuf" or ds.dtype.names is not None
            or tuple(chunks[1:]) != tuple(ds.shape[1:]) or ds.id.get_create_plist().get_nfilters()):
        return None
    c, rest = chunks[0], (0,) * (ds.ndim - 1)
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    out = np.empty((stop - start, *ds.shape[1:]), ds.dtype)
    for j in range(start // c, (stop - 1) // c + 1):
        _mask, data = ds.id.read_direct_chunk((j * c, *rest))
        if len(data) != c * row_bytes:
            raise _NotYetVisible(f"chunk at event {j * c} of {ds.name} holds {len(data)} bytes, "
                                 f"not {c * row_bytes}")
        rows = np.frombuffer(data, ds.dtype).reshape((c, *ds.shape[1:]))
        lo, hi = max(start, j * c), min(stop, (j + 1) * c)
        out[lo - start:hi - start] = rows[lo - j * c:hi - j * c]
    return out


class Follower:
    """The open file of a run being written, reopened to see more.

    Parameters
    ----------
    path : str
        The run file.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self.file: h5py.File | None = None
        self.state: WriterState | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        #: reads retried after a failed allocation check or read (caught mid-update)
        self.retries = 0

    def reopen(self) -> WriterState:
        """Close and reopen the file; return the header's state. Transient failures are retried."""
        last = None
        for attempt in range(READ_ATTEMPTS):
            self.close()
            try:
                f = _open(self.path)
            except FileNotFoundError:
                raise
            except OSError as exc:
                last = exc
                time.sleep(0.005 * (attempt + 1))
                continue
            try:
                self.state = WriterState(f)
            except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
                f.close()
                last = exc
                time.sleep(0.005 * (attempt + 1))
                continue
            self.file = f
            return self.state
        raise translate(last, self.path, f"/{HEADER}", "opening the run being written")

    def close(self) -> None:
        """Close the file (every object of it)."""
        self._datasets = {}
        if self.file is not None:
            try:
                self.file.close()
            except Exception:  # already closed
                pass
            self.file = None

    def dataset(self, h5path: str) -> h5py.Dataset:
        """The dataset at ``h5path`` in the file as now open."""
        ds = self._datasets.get(h5path)
        if ds is None:
            ds = self.file[h5path]
            if not isinstance(ds, h5py.Dataset):
                raise FormatError(f"expected a dataset; found {type(ds).__name__}", file=self.path, h5path=h5path)
            self._datasets[h5path] = ds
        return ds

    def read(self, h5path: str, step: int | None, start: int, stop: int | None = None) -> np.ndarray:
        """Read event ``start`` (``stop`` None) or events ``start:stop`` of step ``step``'s dataset.

        In a step that was still open when the file was opened (and always
        when ``step`` is None: a dataset that grows with the steps), the chunks
        are checked to be allocated first. A failure reopens the file and retries.
        """
        last = None
        for attempt in range(READ_ATTEMPTS):
            try:
                ds = self.dataset(h5path)
                if step is None or step >= self.state.steps_complete:
                    end = start + 1 if stop is None else stop
                    direct = _read_chunks(ds, start, end)  # raises on a chunk it cannot find
                    if direct is not None:
                        return direct[0] if stop is None else direct
                    _check_allocated(ds, start, end)
                return ds[start] if stop is None else ds[start:stop]
            except H5SourceError:
                raise
            except (_NotYetVisible, OSError, KeyError, RuntimeError, ValueError) as exc:
                last = exc
                self.retries += 1
                log.debug("%s: %s; reopening (attempt %d)", self.path, exc, attempt + 1)
                time.sleep(0.002 * (attempt + 1))
                self.reopen()
        what = f"event {start}" if stop is None else f"events {start}:{stop}"
        raise translate(last if not isinstance(last, _NotYetVisible) else OSError(str(last)),
                        self.path, h5path, f"reading {what} of a run being written")


class LiveEventArray(EventArray):
    """An :class:`EventArray` of a run being written: read through its :class:`Follower`."""

    __slots__ = ("_follower", "_path", "_step")

    def __init__(self, follower: Follower, h5path: str, step: int, n: int):
        super().__init__(None, (), n)
        self._follower, self._path, self._step = follower, h5path, step

    def where(self):
        return self._follower.path, self._path

    @property
    def dataset(self) -> h5py.Dataset:
        return self._follower.dataset(self._path)

    def read(self, i: int) -> np.ndarray:
        return self._follower.read(self._path, self._step, int(i))

    def read_range(self, start: int, stop: int) -> np.ndarray:
        return self._follower.read(self._path, self._step, int(start), int(stop))

    def __repr__(self):
        return f"<LiveEventArray {self._path} n={self.n}>"


class _MemoryDataset:
    """A calibration constant held in memory (they do not change while a run is written)."""

    def __init__(self, array, attrs):
        self._array, self.attrs = array, attrs

    def __getitem__(self, key):
        return self._array[key]


class _MemoryGroup(dict):
    """``/<detector>/calib`` held in memory: ``ctype in g``, ``g[ctype][()]``, ``g.items()``."""

    def __init__(self, group: h5py.Group):
        super().__init__({k: _MemoryDataset(ds[()], dict(ds.attrs)) for k, ds in group.items()
                          if isinstance(ds, h5py.Dataset)})
        self.name = group.name
        self.file = type("_File", (), {"filename": group.file.filename})()


class LiveIndex:
    """A :class:`RunIndex` that grows as the writer writes (its lists are updated in place).

    Detector objects keep the lists of their :class:`AreaSource` and side
    fields, so they see every new step without being made again.
    """

    def __init__(self, follower: Follower):
        self.follower = follower
        f, path = follower.file, follower.path
        state = follower.state
        from calibsuite_h5source.read.layout import read_header

        header = read_header(f)
        if not header.get("scriptType"):
            from calibsuite_h5source.errors import MissingScriptTypeError

            raise MissingScriptTypeError("the header must have a 'scriptType' attribute (docs/format.rst)",
                                         file=path, h5path=f"/{HEADER}")
        area, side, has_ts = {}, {}, False
        for name, obj in f.items():
            if name == HEADER or not isinstance(obj, h5py.Group):
                continue
            if name == "timestamp":
                has_ts = True
                continue
            first = obj.get("0")
            if isinstance(first, h5py.Dataset):
                if first.ndim != 4:
                    raise FormatError(f"per-event data must be [module, row, col]; found shape {first.shape[1:]}",
                                      file=path, h5path=first.name)
                calib = obj.get("calib")
                fields = {field: [] for field, sub in obj.items() if field not in _NOT_FIELDS
                          and isinstance(sub, h5py.Group) and step_number(field) is None and "0" in sub}
                area[name] = AreaSource(name, [], tuple(first.shape[1:]), first.dtype, [],
                                        {k: to_python(v) for k, v in obj.attrs.items()},
                                        _MemoryGroup(calib) if isinstance(calib, h5py.Group) else None,
                                        obj.name, fields)
            else:
                fields = {field: [] for field, sub in obj.items() if isinstance(sub, h5py.Group) and "0" in sub}
                if fields:
                    side[name] = fields
        g = f[HEADER]
        scan = {}  # in the file's member order, as the finished-run index has them
        for name, obj in g.items():
            if isinstance(obj, h5py.Group) and "0" in obj:
                scan[name] = ScanVariable(name, np.zeros(0), [])
            elif (isinstance(obj, h5py.Dataset) and obj.ndim == 1 and obj.dtype.kind in "biuf"
                  and name not in ("nEvents", "step_value", "step_docstring")):
                scan[name] = ScanVariable(name, np.zeros(0))
        self.per_step = [name for name, var in scan.items() if var.per_event is None]
        self.per_event = [name for name, var in scan.items() if var.per_event is not None]
        self.has_step_value = isinstance(g.get("step_value"), h5py.Dataset)
        self.has_step_docstring = isinstance(g.get("step_docstring"), h5py.Dataset)
        self.index = RunIndex(
            path=path, file=f, layout="canonical", header=header, script_type=str(header["scriptType"]),
            run_id=int(header.get("run", 0) or 0), complete=state.complete, n_events=np.zeros(0, np.int64),
            timestamps=[], timestamps_synthesised=not has_ts, area=area, side=side, scan=scan,
        )
        #: what was found: detectors, their fields, scan variables (compared between two looks)
        self.structure = (sorted((n, a.frame_shape, str(a.dtype), sorted(a.headers), a.calib_group is not None)
                                 for n, a in area.items()),
                          sorted((n, sorted(fields)) for n, fields in side.items()), has_ts, list(scan),
                          self.has_step_value, self.has_step_docstring)
        self.step_value = ScanVariable("step_value", np.zeros(0))
        self.step_docstring = ScanVariable("step_docstring", np.array([], dtype=object))
        self.discarded = state.discarded
        self.counts: list[int] = []
        self.finished = 0
        self.update()

    def _ea(self, h5path: str, k: int, n: int) -> LiveEventArray:
        return LiveEventArray(self.follower, h5path, k, n)

    def _read_all(self, h5path: str, k: int, n: int, required: bool = False):
        """Read ``n`` events of a step's small dataset (None when an optional one does not exist).

        A required dataset is read (and retried, reopening the file) until
        found. An optional one found missing is looked for again in the file
        reopened: a look taken while the writer flushed can miss a link that
        is there (a group's symbol table being rewritten).
        """
        if n == 0:
            return None
        if not required:
            for look in range(2):
                try:
                    exists = h5path in self.follower.file
                except Exception:  # caught mid-update: let the read retry
                    exists = True
                if exists:
                    break
                if look == 0:
                    self.follower.reopen()
            else:
                return None
        return self.follower.read(h5path, k, 0, n)

    def update(self) -> bool:
        """Bring the index up to the follower's current state; return True when it grew.

        Raises
        ------
        WriterGoneError
            The writer discarded the step being followed (it failed inside it).
        """
        state = self.follower.state
        idx = self.index
        counts = state.counts
        if state.discarded != self.discarded:
            raise WriterGoneError(f"the writer discarded step {len(self.counts) - 1} after an error inside it"
                                  f"{f' ({state.error})' if state.error else ''}; its events read so far are void",
                                  file=self.follower.path)
        if len(counts) < len(self.counts) or any(new < old for new, old in zip(counts, self.counts, strict=False)):
            # Fewer events than before without a discard: a look taken while the writer's counter flush was
            # half on disk (stepsComplete and the nEvents index are separate objects, written in HDF5's
            # order). Keep what was seen and look again.
            log.debug("%s: counts %s went back to %s mid-flush; looking again", self.follower.path, self.counts, counts)
            return False
        grew = counts != self.counts or state.steps_complete != self.finished or state.complete != idx.complete
        idx.complete = state.complete
        if not grew:
            return False
        for k, n in enumerate(counts):
            if k < len(self.counts) and n == self.counts[k] and k < self.finished:
                continue  # unchanged finished step
            self._set_step(k, n, counts, new=k >= len(self.counts))
        self.counts = counts
        self.finished = state.steps_complete
        idx.n_events = np.asarray(counts, dtype=np.int64)
        idx.file = self.follower.file
        self._scan_update(len(counts))
        return True

    def _set_step(self, k: int, n: int, counts: list[int], new: bool) -> None:
        idx = self.index

        def put(lst, value):
            if new:
                lst.append(value)
            else:
                lst[k] = value

        for name, src in idx.area.items():
            put(src.steps, self._ea(f"/{name}/{k}", k, n))
            put(src.present, None if n == 0 else self._mask(f"/{name}/present/{k}", k, n))
            for field, lst in src.headers.items():
                put(lst, self._ea(f"/{name}/{field}/{k}", k, n))
        for name, fields in idx.side.items():
            for field, lst in fields.items():
                put(lst, self._ea(f"/{name}/{field}/{k}", k, n))
        if idx.timestamps_synthesised:  # as a finished run's: event k of the run at run + k ms
            put(idx.timestamps, synthetic_steps(idx.run_id, counts[: k + 1])[k])
        else:
            ea = self._ea(f"/timestamp/{k}", k, n)
            put(idx.timestamps, StoredTimestamps(ea.read_range, n, self.follower.path, f"/timestamp/{k}"))
        for name in self.per_event:
            var = idx.scan[name]
            values = self._read_all(f"/{HEADER}/{name}/{k}", k, n, required=True)  # every step has it
            put(var.per_event, np.zeros(0) if values is None else np.asarray(values))

    def _mask(self, h5path: str, k: int, n: int):
        mask = self._read_all(h5path, k, n)
        return None if mask is None else np.asarray(mask, dtype=bool)

    def _scan_update(self, n_steps: int) -> None:
        idx = self.index

        def per_step(name):
            return self.follower.read(f"/{HEADER}/{name}", None, 0, n_steps)

        for name in self.per_step:
            idx.scan[name].per_step = np.asarray(per_step(name), dtype=np.float64)
        for name in self.per_event:
            var = idx.scan[name]
            var.per_step = np.array([float(a[0]) if len(a) else np.nan for a in var.per_event], dtype=np.float64)
        if self.has_step_value:
            value = np.asarray(per_step("step_value"), dtype=np.float64)
        elif idx.scan:
            value = next(iter(idx.scan.values())).per_step
        else:
            value = np.arange(n_steps, dtype=np.float64)
        idx.step_value = self.step_value.per_step = value
        if self.has_step_docstring:
            docs = [str(to_python(v)) for v in per_step("step_docstring")]
        else:
            detname = next(iter(idx.area), "")
            docs = step_docstrings(value, idx.script_type, detname)
        idx.step_docstring = docs
        self.step_docstring.per_step = np.array(docs, dtype=object)


class LiveRun(Run):
    """A run being written, followed live (see the module's docstring).

    Made by :func:`open_live_run` (``DataSource(files=..., live=True)``).
    """

    def __init__(self, live: LiveIndex, *, max_retries: float, max_events=None, detectors=None,
                 keep_module_axis: bool = False, poll: float = POLL_SECONDS):
        self._live = live
        self._max_retries = max_retries
        self._poll = poll
        self._max_events = int(max_events or 0)
        self._served = 0
        self._last_progress = time.monotonic()
        super().__init__(live.index, detectors=detectors, keep_module_axis=keep_module_axis)

    # ``Run`` sets ``complete`` once; here it follows the writer
    @property
    def complete(self) -> bool:
        """True once the writer has marked the run complete."""
        return bool(self._live.index.complete)

    @complete.setter
    def complete(self, value) -> None:
        pass

    def _scan_detectors(self) -> dict:
        from calibsuite_h5source.psana2.detector import ScanDetector

        scan = {name: ScanDetector(var) for name, var in self._live.index.scan.items()}
        scan["step_value"] = ScanDetector(self._live.step_value)
        scan["step_docstring"] = ScanDetector(self._live.step_docstring, str)
        return scan

    @property
    def n_steps(self) -> int:
        """Steps seen so far (the run may grow)."""
        return len(self._live.counts)

    # -- following ----------------------------------------------------------------
    def _summary(self) -> str:
        k, i = self._cursor_step, self._cursor_pos
        return f"read {self._served} events in {min(k + 1, self.n_steps)} steps (stopped at step {k}, event {i})"

    def _wait(self) -> None:
        """Wait until the writer makes more durable or completes the run; raise when it will not."""
        live, follower = self._live, self._live.follower
        while True:
            state = follower.reopen()
            if live.update():
                self._last_progress = time.monotonic()
                return
            if state.complete:
                return
            gone = writer_gone(follower.path, state)
            if gone:
                state = follower.reopen()  # it may have completed the run just before
                if live.update() or state.complete:
                    return
                raise WriterGoneError(f"{gone}; the run is incomplete: {self._summary()}", file=follower.path)
            if time.monotonic() - self._last_progress >= self._max_retries:
                raise WriterGoneError(f"no new data for {self._max_retries:g} s (PS_R_MAX_RETRIES or max_retries=): "
                                      f"the writer went quiet; {self._summary()}", file=follower.path)
            time.sleep(self._poll)

    def _has_step(self, k: int) -> bool:
        """Wait until step ``k`` exists (True) or the run completed without it (False)."""
        while k >= len(self._live.counts):
            if self.complete:
                return False
            self._wait()
        return True

    def _max_reached(self) -> bool:
        return bool(self._max_events) and self._served >= self._max_events

    def _next_in_step(self) -> Event | None:
        k, i = self._cursor_step, self._cursor_pos
        if self._max_reached() or not self._has_step(k):
            return None
        live = self._live
        while i >= live.counts[k]:
            if k < live.finished or self.complete:
                return None
            self._wait()
        self._cursor_pos += 1
        self._served += 1
        return Event(self, k, i, int(self._index.timestamps[k][i]))

    def steps(self):
        """Yield each step as it begins; waits for the writer (unread events of a step are skipped)."""
        while not self._max_reached() and self._has_step(self._cursor_step):
            k = self._cursor_step
            yield Step(self, k)
            if self._cursor_step == k:
                self._cursor_step, self._cursor_pos = k + 1, 0

    def events(self):
        """Yield every remaining event across steps as the writer makes it durable."""
        while True:
            evt = self._next_in_step()
            if evt is not None:
                yield evt
                continue
            if self._max_reached() or not self._has_step(self._cursor_step + 1):
                return
            self._cursor_step, self._cursor_pos = self._cursor_step + 1, 0

    def close(self) -> None:
        """Close the file."""
        self._live.follower.close()

    def __repr__(self):
        return f"<LiveRun {self.expt} runnum={self.runnum} steps so far={self.n_steps} {self.path}>"


def _first_index(follower: Follower) -> LiveIndex:
    """Build the index once two looks at the file agree on its structure (a look can be caught mid-update)."""
    last, previous = None, None
    for attempt in range(READ_ATTEMPTS):
        try:
            live = LiveIndex(follower)
            if previous is not None and live.structure == previous:
                return live
            previous = live.structure
        except H5SourceError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
            last = exc
            time.sleep(0.005 * (attempt + 1))
        follower.reopen()
    raise translate(last or OSError("the file's structure kept changing"), follower.path, "/",
                    "reading the structure of the run being written")


def open_live_run(path, *, max_retries=None, max_events=None, detectors=None, timestamps=None,
                  keep_module_axis: bool = False, poll: float = POLL_SECONDS) -> Run:
    """Open a run to follow as its writer writes it (what ``DataSource(files=..., live=True)`` yields).

    Waits (up to ``max_retries`` seconds) for the file to appear and for its
    first durable event. A run that is already complete opens as a finished
    run (a plain :class:`~calibsuite_h5source.psana2.source.Run`).

    Raises
    ------
    NotHDF5Error
        The path is not an HDF5 file.
    WriterGoneError
        The writer died, or nothing came within ``max_retries`` seconds.
    H5SourceError
        ``timestamps=`` (an offline selection) was given.
    """
    path = str(path)
    seconds = resolve_max_retries(max_retries)
    if timestamps is not None:
        raise H5SourceError("live=True follows the run in order; timestamps= selects events of a finished run",
                            file=path)
    start = time.monotonic()
    follower = Follower(path)
    while True:
        p = Path(path)
        state = None
        if p.is_file() and p.stat().st_size > 0:
            if not h5py.is_hdf5(p):
                raise NotHDF5Error("not an HDF5 file (no HDF5 signature)", file=path)
            state = follower.reopen()
            if state.complete:
                follower.close()
                from calibsuite_h5source.psana2.source import Run as _Run
                from calibsuite_h5source.read.run_index import open_run_index

                index = open_run_index(path)
                return _Run(index, max_events=max_events, detectors=detectors, keep_module_axis=keep_module_axis)
            if sum(state.counts) > 0:
                try:
                    live = _first_index(follower)
                except BaseException:
                    follower.close()
                    raise
                return LiveRun(live, max_retries=seconds, max_events=max_events, detectors=detectors,
                               keep_module_axis=keep_module_axis, poll=poll)
            gone = writer_gone(path, state)
            if gone:
                follower.close()
                raise WriterGoneError(f"{gone}; the run is incomplete and holds no events", file=path)
        if time.monotonic() - start >= seconds:
            follower.close()
            what = "no event" if state is not None else "the file did not appear"
            raise WriterGoneError(f"{what} within {seconds:g} s (PS_R_MAX_RETRIES or max_retries=)", file=path)
        time.sleep(poll)
