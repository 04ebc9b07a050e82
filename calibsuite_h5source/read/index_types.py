"""The in-memory index of one run file (what ``layout.open_run_index`` builds).

These are plain records: every layout is normalised into them, so nothing
downstream of :mod:`calibsuite_h5source.read.layout` knows which layout a file has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np

from calibsuite_h5source.h5.dataset import StoredDataset
from calibsuite_h5source.h5.guard import guarded


def _ea_where(self, *args, **kwargs):
    """``(file, h5path, doing)`` of an EventArray, for :func:`~calibsuite_h5source.h5.guard.guarded`."""
    return self.where() + (f"reading {self!r}" + (f" event {args[0]}" if args else ""),)


def check_same_event(expect: tuple, ds: h5py.Dataset, prefix: tuple, where: tuple, step: int | None = None) -> tuple:
    """The one rule of per-step data: every step's events have step 0's shape and dtype.

    Returns ``(per-event shape, dtype)`` of ``ds`` (events ``ds[prefix + (i,)]``);
    raises a :class:`~calibsuite_h5source.errors.FormatError` at ``where = (file, h5path)``
    when ``expect`` (step 0's, or None) differs.
    """
    got = (None if ds.shape is None else ds.shape[len(prefix) + 1:], ds.dtype)
    if expect is not None and got != expect:
        from calibsuite_h5source.errors import FormatError

        raise FormatError(f"per-event shape/dtype must be the same in every step; step 0 has {expect[0]} "
                          f"{expect[1]}, {'this step' if step is None else f'step {step}'} has {got[0]} {got[1]}",
                          file=where[0], h5path=where[1])
    return got


def _steps_where(self, k):
    return self._file, self._h5path, f"loading step {k}"


class EventArray:
    """The per-event values of one quantity in one step.

    Event ``i`` is ``dataset[prefix + (i,)]``; ``prefix`` is ``()`` for one
    dataset per step and ``(step,)`` for padded ``[nSteps, maxEvents, ...]``.

    A lazy array (``group`` and ``name`` instead of ``dataset``) opens its
    dataset on first use (through :func:`calibsuite_h5source.h5.links.open_member`,
    so its link is checked against ``origin``) and checks it against what the
    index promised: ``n`` events and, when given, ``expect = (per-event shape,
    dtype)``.

    Every read goes through the dataset's one reader,
    :class:`calibsuite_h5source.h5.dataset.StoredDataset` (:attr:`reader`):
    direct chunk reads, decompression, damage checks, and a failure raised as
    an :class:`~calibsuite_h5source.errors.H5SourceError` naming the file and
    dataset.
    """

    __slots__ = ("_dataset", "prefix", "_n", "_group", "_name", "_expect", "_origin", "_reader", "_count", "_strict")

    def __init__(self, dataset, prefix: tuple, n: int | None, *, group=None, name=None, expect=None, origin=None,
                 count=None, strict: bool = False):
        self._dataset = dataset
        self.prefix = prefix
        self._n = n
        self._count = count  # n is None: count() opens and counts the step's datasets (layout.StepCounter)
        self._group, self._name, self._expect, self._origin = group, name, expect, origin
        self._reader = None  # the StoredDataset that reads it, made at the first read
        #: a step of a run being written: reads are strict, the dataset may hold more than ``n`` events
        self._strict = strict

    @property
    def n(self) -> int:
        """Events in the step (counted when first asked for, for a run without the writer's index)."""
        n = self._n
        if n is None:
            self._count()
            n = self._n
        return n

    def where(self) -> tuple[str | None, str | None]:
        """``(file, h5path)`` of the data (never raises)."""
        try:
            if self._dataset is not None:
                return self._dataset.file.filename, self._dataset.name
            return self._group.file.filename, f"{self._group.name.rstrip('/')}/{self._name}"
        except (AttributeError, ValueError, RuntimeError, OSError):  # a closed file or an unreadable name
            return None, self._name

    @property
    def dataset(self) -> h5py.Dataset:
        ds = self._dataset
        if ds is None:
            ds = self._dataset = self._resolve()
        return ds

    @guarded(_ea_where)
    def _open(self) -> h5py.Dataset:
        """Open the lazy dataset through its checked link; check its kind and its per-event shape and dtype."""
        from calibsuite_h5source.errors import FormatError
        from calibsuite_h5source.h5.links import open_member

        group, name = self._group, self._name
        ds = open_member(group, name, self._origin) if self._origin is not None else group.get(name)
        if not isinstance(ds, h5py.Dataset):
            file, where = self.where()
            raise FormatError(f"expected a dataset here; found {type(ds).__name__}", file=file, h5path=where)
        if ds.shape is not None:
            check_same_event(self._expect, ds, (), self.where())
        return ds

    @guarded(_ea_where)
    def _resolve(self) -> h5py.Dataset:
        from calibsuite_h5source.errors import EventCountError

        if self._n is None:  # counted with the other datasets of its step, which opens it
            self._count()
            return self._dataset
        ds = self._open()
        file, where = self.where()
        if ds.shape is None or (ds.shape[:1] != (self.n,) if not self._strict else ds.shape[0] < self.n):
            raise EventCountError(f"/ancillaryData/nEvents promises {self.n} events; the dataset has shape {ds.shape}",
                                  file=file, h5path=where)
        return ds

    @property
    def reader(self) -> StoredDataset:
        """The :class:`~calibsuite_h5source.h5.dataset.StoredDataset` that reads this step's events."""
        r = self._reader
        if r is None:
            r = self._reader = self._make_reader()
        return r

    @guarded(_ea_where)
    def _make_reader(self) -> StoredDataset:
        return StoredDataset(self.dataset, self.prefix, self._origin, strict=self._strict,
                             limit=self.n if self._strict else None)

    @property
    def _plan(self):
        """The reader's plan (None before the first read; False: h5py reads it)."""
        return None if self._reader is None else self._reader._plan

    @_plan.setter
    def _plan(self, plan) -> None:
        self.reader._plan = plan

    def read(self, i: int) -> np.ndarray:
        """Read event ``i``: a new array, directly from the file where exact, else one h5py read."""
        return self.reader.read(i)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Read events ``start:stop``."""
        return self.reader.read_range(start, stop)

    def read_rows(self, idx: np.ndarray, out: np.ndarray, at: int = 0) -> None:
        """Read events ``idx`` (sorted, unique) into ``out[at:at + len(idx)]``."""
        self.reader.read_rows(idx, out, at)

    def read_all(self) -> np.ndarray:
        """Read every event of the step (for small side data only)."""
        return self.read_range(0, self.n)

    def __repr__(self):
        return f"<EventArray {self._name or self._dataset} n={'?' if self._n is None else self._n}>"


class LazySteps(Sequence):
    """A per-step sequence whose items are loaded on first access and cached.

    ``load(k)`` runs under :func:`calibsuite_h5source.h5.guard.guarded`, with
    ``file`` and ``h5path`` naming what it loads.
    """

    def __init__(self, n: int, load, file: str | None = None, h5path: str | None = None):
        self._n, self._load, self._cache = n, load, {}
        self._file, self._h5path = file, h5path

    def __len__(self) -> int:
        return self._n

    @guarded(_steps_where)
    def _load_step(self, k):
        return self._load(k)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._n))]
        if not -self._n <= k < self._n:
            raise IndexError(k)
        k %= self._n
        try:
            return self._cache[k]
        except KeyError:
            value = self._cache[k] = self._load_step(k)
            return value


@dataclass
class AreaSource:
    """An area detector: one EventArray per step of ``[module, row, col]`` frames, and of each header field."""

    name: str
    steps: list[EventArray]
    frame_shape: tuple[int, int, int]
    dtype: np.dtype
    present: Sequence  # per step: bool ndarray or None
    attrs: dict = field(default_factory=dict)
    calib_group: h5py.Group | None = None
    h5path: str = ""
    headers: dict = field(default_factory=dict)  # per-event header fields: {field: [EventArray per step]}


@dataclass
class ScanVariable:
    """A scan variable: its value per step, and per event when stored so."""

    name: str
    per_step: np.ndarray
    per_event: list[np.ndarray] | None = None


@dataclass
class RunIndex:
    """Everything small about a run, read once at open; frames stay on disk."""

    path: str
    file: h5py.File
    layout: str
    header: dict
    script_type: str
    run_id: int
    complete: bool
    n_events: Sequence  # events per step: int64 ndarray, or layout.StepCounts (each step counted when first asked for)
    timestamps: Sequence  # per step: uint64 ndarray (may load on first access)
    timestamps_synthesised: bool
    area: dict[str, AreaSource]
    side: dict[str, dict[str, list[EventArray]]]
    scan: dict[str, ScanVariable]
    step_value: np.ndarray | None = None
    step_docstring: list[str] | None = None
    #: per side source with a ``present`` group: per step, a bool mask or None (the source is in every event)
    side_present: dict[str, Sequence] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        """Number of (readable) steps."""
        return len(self.n_events)

    def present_of(self, name: str) -> Sequence | None:
        """Per-step ``present`` masks of the area or side source ``name`` (an entry None: the source is
        in every event of that step), or None when it has no masks."""
        src = self.area.get(name)
        return src.present if src is not None else self.side_present.get(name)

    def step_events(self, k: int) -> int:
        """Events in step ``k`` (counting only that step when it was not yet counted)."""
        return int(self.n_events[k])

    def close(self) -> None:
        """Close the HDF5 file."""
        if self.file.id.valid:
            self.file.close()
