"""The index of a run being written, kept up to date as its writer writes.

Live following (:mod:`calibsuite_h5source.psana2.live`) parses nothing itself:
each look at the file re-reads the writer's counters (:class:`WriterState`)
and builds the index of what they cover with the one layout parser
(:func:`calibsuite_h5source.read.run_index.build_index`, ``visible=`` the
counters), then extends the long-lived :class:`~calibsuite_h5source.read.index_types.RunIndex`
in place (detector objects keep its lists, and so see every new step).

Every read goes through the one reader of each dataset
(:class:`calibsuite_h5source.h5.dataset.StoredDataset`), strict: a chunk the
counters promise but the chunk index does not (yet) list is an error, never
HDF5's zeros. A read or a look that fails, possibly because it was caught
mid-flush, is tried again after reopening the file, through the one retry
helper (:func:`calibsuite_h5source.h5.retry.retry`).
"""

from __future__ import annotations

import logging
import os
import socket

import h5py
import numpy as np

from calibsuite_h5source.errors import FormatError, NotHDF5Error, WriterGoneError
from calibsuite_h5source.format.constants import HEADER
from calibsuite_h5source.format.timestamps import StoredTimestamps
from calibsuite_h5source.h5.dataset import HeldDataset, HeldFile, StoredDataset
from calibsuite_h5source.h5.files import open_read_only
from calibsuite_h5source.h5.guard import guard, translate
from calibsuite_h5source.h5.links import Origin, open_member
from calibsuite_h5source.h5.retry import retry
from calibsuite_h5source.read.index_types import EventArray, RunIndex
from calibsuite_h5source.read.layout import stored_counts, to_python
from calibsuite_h5source.read.run_index import build_index

log = logging.getLogger(__name__)

#: reads (and opens) tried before a failure is raised; each retry reopens the file
READ_ATTEMPTS = 20
#: failures of a look at a file being written that a later look may not have (caught mid-flush)
TRANSIENT = (NotHDF5Error, FormatError)  # NotHDF5Error includes DamagedFileError


class WriterState:
    """What one look at the header says about the writer (see ``docs/format.rst``)."""

    __slots__ = ("complete", "steps_complete", "open_events", "n_events", "error", "host", "pid", "lock",
                 "discarded")

    def __init__(self, f: h5py.File):
        g = f.get(HEADER)
        if not isinstance(g, h5py.Group):  # a legacy file (header at the root): not a writer's, complete
            g = f
        a = {k: to_python(v) for k, v in g.attrs.items()}
        self.complete = bool(a.get("complete", True))
        index = g.get("nEvents")
        counts = np.zeros(0, np.int64) if index is None else stored_counts(index, f.filename)
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
    from calibsuite_h5source.write.storage import lock_state

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
        return open_read_only(path, False)
    except FileNotFoundError as exc:
        raise NotHDF5Error("file does not exist", file=path) from exc


class Follower:
    """The open file of a run being written, reopened to see more.

    Parameters
    ----------
    path : str
        The run file.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self.origin = Origin(self.path)
        self.file: h5py.File | None = None
        self.state: WriterState | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        #: reads retried after a failed check or read (caught mid-update)
        self.retries = 0

    def _look(self) -> WriterState:
        self.close()
        f = _open(self.path)
        try:
            self.state = WriterState(f)
        except BaseException:
            f.close()
            raise
        self.file = f
        return self.state

    def reopen(self) -> WriterState:
        """Close and reopen the file; return the header's state. Transient failures are retried."""
        try:
            return retry(self._look, attempts=READ_ATTEMPTS, on=(OSError, KeyError, RuntimeError, ValueError, TypeError),
                         delay=0.005, what=f"opening {self.path}")
        except NotHDF5Error:
            raise
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise translate(exc, self.path, f"/{HEADER}", "opening the run being written") from exc

    def recover(self) -> None:
        """After a failed read: count it, and reopen the file."""
        self.retries += 1
        self.reopen()

    def close(self) -> None:
        """Close the file (every object of it)."""
        self._datasets = {}
        if self.file is not None:
            if self.file.id.valid:
                self.file.close()
            self.file = None

    def dataset(self, h5path: str) -> h5py.Dataset:
        """The dataset at ``h5path`` in the file as now open (its link checked, its filters loaded)."""
        ds = self._datasets.get(h5path)
        if ds is None:
            parent, _, name = h5path.rpartition("/")
            with guard(self.path, h5path, "opening a dataset of the run being written"):
                ds = open_member(self.file[parent or "/"], name, self.origin)
            if not isinstance(ds, h5py.Dataset):
                raise FormatError(f"expected a dataset; found {type(ds).__name__}", file=self.path, h5path=h5path)
            self._datasets[h5path] = ds
        return ds


class LiveEventArray(EventArray):
    """An :class:`EventArray` of a run being written: found by path in the follower's file as now open.

    Its reader (a strict :class:`~calibsuite_h5source.h5.dataset.StoredDataset`)
    is made again after every reopen; a failed read reopens the file and is
    tried again (up to :data:`READ_ATTEMPTS` times).
    """

    __slots__ = ("_follower", "_path", "_step")

    def __init__(self, follower: Follower, h5path: str, step: int, n: int):
        super().__init__(None, (), n, strict=True)
        self._follower, self._path, self._step = follower, h5path, step

    def where(self):
        return self._follower.path, self._path

    @property
    def dataset(self) -> h5py.Dataset:
        return self._follower.dataset(self._path)

    @property
    def reader(self) -> StoredDataset:
        ds = self.dataset
        r = self._reader
        if r is None or r.dataset is not ds:  # the file was reopened
            with guard(self._follower.path, self._path, "opening a dataset of the run being written"):
                r = self._reader = StoredDataset(ds, (), self._follower.origin, strict=True, limit=self.n)
        return r

    def _retrying(self, action, what: str):
        return retry(action, attempts=READ_ATTEMPTS, on=TRANSIENT, recover=self._follower.recover,
                     what=f"{self._path} {what}")

    def read(self, i: int):
        return self._retrying(lambda: self.reader.read(int(i)), f"event {i}")

    def read_range(self, start: int, stop: int) -> np.ndarray:
        return self._retrying(lambda: self.reader.read_range(int(start), int(stop)), f"events {start}:{stop}")

    def read_rows(self, idx: np.ndarray, out: np.ndarray, at: int = 0) -> None:
        self._retrying(lambda: self.reader.read_rows(idx, out, at), f"{len(idx)} events")

    def __repr__(self):
        return f"<LiveEventArray {self._path} n={self.n}>"


class _MemoryGroup(dict):
    """``/<detector>/calib`` held in memory: ``ctype in g``, ``g[ctype]``, ``g.items()``, ``g.name``, ``g.file``.

    Its constants (they do not change while a run is written) are
    :class:`~calibsuite_h5source.h5.dataset.HeldDataset`, read once as
    :func:`~calibsuite_h5source.h5.dataset.read_whole` reads them, so the
    live and finished readers give the same constants.
    """

    def __init__(self, group: h5py.Group, origin: Origin):
        super().__init__({k: HeldDataset(ds) for k, ds in group.items() if isinstance(ds, h5py.Dataset)})
        self.name = group.name
        self.file = HeldFile(group.file.filename)


def structure(idx: RunIndex) -> tuple:
    """What a look found: detectors, their fields, scan variables (compared between two looks)."""
    return (sorted((n, a.frame_shape, str(a.dtype), sorted(a.headers), a.calib_group is not None)
                   for n, a in idx.area.items()),
            sorted((n, sorted(fields)) for n, fields in idx.side.items()), idx.timestamps_synthesised,
            list(idx.scan), idx.step_value is not None, idx.step_docstring is not None)


class LiveIndex:
    """A :class:`RunIndex` that grows as the writer writes (its lists are updated in place).

    Parameters
    ----------
    follower : Follower
        The file, open, with its first state read.
    """

    def __init__(self, follower: Follower):
        self.follower = follower
        self.discarded = follower.state.discarded
        self.counts: list[int] = []
        self.finished = 0
        self.index = None
        found = self._look()
        if found is None:
            raise FormatError("the writer's counters went back between two looks", file=follower.path)
        fresh, state = found
        self.structure = structure(fresh)
        self.index = fresh
        self._merge(fresh, state)

    # -- one look ------------------------------------------------------------------
    def _look(self):
        """``(index of what the counters cover, their state)``, bound to the follower; None when they went back."""
        def build():
            state = self.follower.state
            self._check_discard(state)
            counts = state.counts
            if self._went_back(counts):
                return None
            fresh = build_index(self.follower.file, self.follower.path, visible=counts)
            if self.index is not None and structure(fresh) != self.structure:
                raise FormatError(f"the run's detectors changed between two looks: {structure(fresh)}",
                                  file=self.follower.path)
            self._bind(fresh)
            return fresh, state

        return retry(build, attempts=READ_ATTEMPTS, on=TRANSIENT, recover=self.follower.recover, delay=0.005,
                     what=f"a look at {self.follower.path}")

    def _check_discard(self, state: WriterState) -> None:
        if state.discarded != self.discarded:
            raise WriterGoneError(f"the writer discarded step {len(self.counts) - 1} after an error inside it"
                                  f"{f' ({state.error})' if state.error else ''}; its events read so far are void",
                                  file=self.follower.path)

    def _went_back(self, counts: list[int]) -> bool:
        # Fewer events than before without a discard: a look taken while the writer's counter flush was
        # half on disk (stepsComplete and the nEvents index are separate objects, written in HDF5's order).
        if len(counts) < len(self.counts) or any(new < old for new, old in zip(counts, self.counts, strict=False)):
            log.debug("%s: counts %s went back to %s mid-flush; looking again", self.follower.path, self.counts, counts)
            return True
        return False

    def _bind(self, fresh: RunIndex) -> None:
        """Rebind a freshly built index to the follower (found by path after reopens); read what is small now."""
        f, keep = self.follower, self.finished
        for src in fresh.area.values():
            src.steps = [self._live(ea, k) for k, ea in enumerate(src.steps)]
            src.present = [None if k < keep else src.present[k] for k in range(len(src.steps))]
            src.headers = {field: [self._live(ea, k) for k, ea in enumerate(lst)] for field, lst in src.headers.items()}
            if isinstance(src.calib_group, h5py.Group):
                src.calib_group = _MemoryGroup(src.calib_group, f.origin)
        fresh.side = {name: {field: [self._live(ea, k) for k, ea in enumerate(lst)] for field, lst in fields.items()}
                      for name, fields in fresh.side.items()}
        fresh.side_present = {name: [None if k < keep else masks[k] for k in range(len(masks))]
                              for name, masks in fresh.side_present.items()}
        if not fresh.timestamps_synthesised:
            fresh.timestamps = [ts if k < keep else self._live_timestamps(ts, k)
                                for k, ts in enumerate(fresh.timestamps)]

    def _live(self, ea: EventArray, k: int) -> LiveEventArray:
        return LiveEventArray(self.follower, ea.where()[1], k, ea.n)

    def _live_timestamps(self, ts: StoredTimestamps, k: int) -> StoredTimestamps:
        ea = LiveEventArray(self.follower, ts._h5path, k, len(ts))
        return StoredTimestamps(ea.read_range, len(ts), self.follower.path, ts._h5path)

    # -- growing ---------------------------------------------------------------------
    def update(self) -> bool:
        """Bring the index up to the follower's current state; return True when it grew.

        Raises
        ------
        WriterGoneError
            The writer discarded the step being followed (it failed inside it).
        """
        state = self.follower.state
        self._check_discard(state)
        counts = state.counts
        if self._went_back(counts):
            return False
        idx = self.index
        if counts == self.counts and state.steps_complete == self.finished and state.complete == idx.complete:
            return False
        found = self._look()
        if found is None:
            return False
        self._merge(*found)
        return True

    def _merge(self, fresh: RunIndex, state: WriterState) -> None:
        """Extend the long-lived index with a fresh look (finished steps already seen are kept)."""
        idx, keep = self.index, self.finished
        if fresh is not idx:
            for name, src in idx.area.items():
                new = fresh.area[name]
                src.steps[keep:] = new.steps[keep:]
                src.present[keep:] = new.present[keep:]
                for field, lst in src.headers.items():
                    lst[keep:] = new.headers[field][keep:]
            for name, fields in idx.side.items():
                for field, lst in fields.items():
                    lst[keep:] = fresh.side[name][field][keep:]
            for name, masks in fresh.side_present.items():  # a source's present group may appear later
                idx.side_present.setdefault(name, [None] * keep)[keep:] = masks[keep:]
            idx.timestamps[keep:] = fresh.timestamps[keep:]
            for name, var in idx.scan.items():
                var.per_step, var.per_event = fresh.scan[name].per_step, fresh.scan[name].per_event
            idx.step_value, idx.step_docstring = fresh.step_value, fresh.step_docstring
        self.counts = state.counts
        self.finished = state.steps_complete
        idx.complete = state.complete
        idx.n_events = np.asarray(self.counts, dtype=np.int64)
        idx.file = self.follower.file
