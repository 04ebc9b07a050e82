"""One stored per-event dataset, and the one way of reading it.

Every surface reads frames and per-event values through a
:class:`StoredDataset` (after EXtra-data's ``KeyData``): the event loop
(``EventArray.read``), random access, whole arrays (``frames``,
``dask_array``, ``xarray``), live following and psana1. None of them reads
an ``h5py.Dataset`` itself, so the same bytes give the same array, at the
same speed, and a damaged chunk is the same
:class:`~calibsuite_h5source.errors.DamagedFileError` whichever surface
reads it.

A ``StoredDataset`` owns, for one dataset and one step (event ``i`` is
``dataset[prefix + (i,)]``):

* the read plan: direct chunk reads with ``os.preadv`` where they are exact
  (:mod:`calibsuite_h5source.h5.fastread`), threaded decompression of
  bitshuffle-LZ4, Blosc and Zstd chunks (:mod:`calibsuite_h5source.h5.fastcompressed`),
  h5py everywhere else (with hdf5plugin loaded by
  :func:`calibsuite_h5source.h5.filters.require_filters` when the dataset needs it);
* the damage checks of those paths (a chunk's stored size, its framing,
  a file that ends early) and the translation of every failure into an
  :class:`~calibsuite_h5source.errors.H5SourceError` (:mod:`calibsuite_h5source.h5.guard`);
* ``zero_copy`` (large uncompressed events returned as copy-on-write mappings);
* ``strict`` reads, for the step a writer is still writing: a chunk the chunk
  index does not (yet) list is an error to retry, never HDF5's fill values.

Reads: :meth:`StoredDataset.read` (one event), :meth:`StoredDataset.read_rows`
(a sorted selection, straight into the caller's array) and
:meth:`StoredDataset.read_range` (a range of events).
"""

from __future__ import annotations

import logging

import h5py
import numpy as np

from calibsuite_h5source.h5 import fastread
from calibsuite_h5source.h5.fastread import NotYetVisible
from calibsuite_h5source.h5.filters import require_filters
from calibsuite_h5source.h5.guard import guarded

log = logging.getLogger(__name__)

__all__ = ["StoredDataset", "HeldDataset", "HeldFile", "NotYetVisible", "open_stored", "read_whole", "block_groups",
           "BLOCK_BYTES"]

#: Target bytes of one h5py block read of a selection (64 MiB).
BLOCK_BYTES = 64 * 2**20
#: A selection or range of an unfiltered dataset smaller than this, asked for before any
#: per-event read, is read through h5py without planning (a plan pays off over many reads).
PLAN_MIN_BYTES = 256 * 1024


def _where(self, *args, **kwargs):
    file, h5path = self.where()
    what = f" event {args[0]}" if args and isinstance(args[0], (int, np.integer)) else ""
    return file, h5path, f"reading {h5path}{what}"


class StoredDataset:
    """Reads the events of one step of one stored dataset.

    Parameters
    ----------
    dataset : h5py.Dataset
        The open dataset (opened through :func:`calibsuite_h5source.h5.links.open_member`,
        or :func:`open_stored`).
    prefix : tuple
        ``()`` for one dataset per step, ``(step,)`` for padded ``[nSteps, maxEvents, ...]``.
    origin : calibsuite_h5source.h5.links.Origin, optional
        The run file (direct reads only for datasets inside it; its ``zero_copy``).
    strict : bool
        The step is still being written: a chunk not in the chunk index is a
        :class:`NotYetVisible` error (HDF5 would read it as zeros), and a
        direct read that differs from h5py's is an error, not a fallback.
    limit : int, optional
        Events that may be read ahead (prefetch never passes it): the events
        a writer's counters cover.
    """

    __slots__ = ("dataset", "prefix", "_origin", "_plan", "strict", "limit", "_filtered")

    def __init__(self, dataset: h5py.Dataset, prefix: tuple = (), origin=None, *, strict: bool = False,
                 limit: int | None = None):
        self.dataset, self.prefix, self._origin = dataset, tuple(prefix), origin
        self._plan = None  # decided at the first read (fastread.plan_for)
        self.strict, self.limit = bool(strict), limit
        require_filters(dataset)
        self._filtered = None  # has a filter pipeline (asked when first needed)

    def where(self) -> tuple[str | None, str | None]:
        """``(file, h5path)`` of the data (never raises)."""
        try:
            file = self._origin.file if self._origin is not None else self.dataset.file.filename
            name = self.dataset.name
        except (AttributeError, ValueError, RuntimeError, OSError):
            return None, None
        return file, name + (f"[{', '.join(map(str, self.prefix))}]" if self.prefix else "")

    @property
    def plan(self):
        """The read plan (:class:`~calibsuite_h5source.h5.fastread.DirectPlan`,
        :class:`~calibsuite_h5source.h5.fastcompressed.CompressedPlan`) or False (h5py reads)."""
        plan = self._plan
        if plan is None:
            plan = self._plan = fastread.plan_for(self)
            if plan and self.limit is not None and hasattr(plan, "limit"):
                plan.limit = self.limit
        return plan

    def _plan_for(self, nbytes: int):
        """The plan, or False for a small first read of an unfiltered dataset (not decided yet: h5py reads it).

        Filtered datasets are always planned, so that every surface checks
        their chunks' framing the same way.
        """
        if self._plan is not None:
            return self._plan
        if nbytes < PLAN_MIN_BYTES:
            if self._filtered is None:
                self._filtered = self.dataset.id.get_create_plist().get_nfilters() > 0
            if not self._filtered:
                return fastread.NO_PLAN
        return self.plan

    def disable(self) -> None:
        """Read everything through h5py from now on (a direct read differed from h5py's)."""
        plan, self._plan = self._plan, fastread.NO_PLAN
        if hasattr(plan, "close"):
            plan.close()

    # -- one event -----------------------------------------------------------------
    @guarded(_where)
    def read(self, i: int):
        """Event ``i``: a new array of the event's shape and stored dtype (a numpy scalar for a scalar event).

        Exactly what ``dataset[prefix + (i,)]`` returns, read directly where
        that is exact. Raises an :class:`~calibsuite_h5source.errors.H5SourceError`
        (a damaged chunk: ``DamagedFileError``) naming the file and dataset.
        """
        plan = self.plan
        if plan:
            out = fastread._direct(plan, self, i)
            if out is not None:
                return out
        if self.strict:
            self._check_allocated(i, i + 1)
        return self.dataset[self.prefix + (i,)]

    # -- selections ---------------------------------------------------------------
    @guarded(_where)
    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Events ``start:stop`` as a new array."""
        start, stop = int(start), int(stop)
        event_shape, dtype = self._event()
        plan = self._plan_for((stop - start) * dtype.itemsize * int(np.prod(event_shape, dtype=np.int64)))
        if plan and stop > start:
            out = np.empty((stop - start, *event_shape), dtype)
            self._rows(np.arange(start, stop, dtype=np.int64), out, 0)
            return out
        if self.strict:
            self._check_allocated(start, stop)
        return self.dataset[self.prefix + (slice(start, stop),)]

    @guarded(_where)
    def read_rows(self, idx: np.ndarray, out: np.ndarray, at: int = 0) -> None:
        """Read events ``idx`` (sorted, unique, in range) into ``out[at:at + len(idx)]``.

        Direct reads (merged where events lie back to back in the file) or
        decompression on the thread pool where the dataset has a plan, else
        chunk-aligned h5py reads straight into ``out``.
        """
        self._rows(np.asarray(idx, dtype=np.int64), out, at)

    def _event(self):
        ds = self.dataset
        return ds.shape[len(self.prefix) + 1:], ds.dtype

    def _rows(self, idx: np.ndarray, out: np.ndarray, at: int) -> None:
        if len(idx) == 0:
            return
        plan = self._plan_for(len(idx) * out.dtype.itemsize * int(np.prod(out.shape[1:], dtype=np.int64)))
        if plan and not plan.verified:  # the first direct read is compared with h5py's
            out[at] = self.read(int(idx[0]))
            idx, at = idx[1:], at + 1
            plan = self._plan
        if plan and plan.dsid.valid and out.dtype == plan.dtype and out[at:].flags.c_contiguous:
            left = plan.read_rows(idx, out, at)
            if left is None:
                return
            idx, at_rows = idx[left], at + left  # unwritten chunks: fill values (or, strict, an error)
            if self.strict:
                raise NotYetVisible(f"event {int(idx[0])} of {self.dataset.name} is not in the chunk index yet")
            for i, j in zip(idx.tolist(), at_rows.tolist(), strict=True):
                out[j] = self.dataset[self.prefix + (i,)]
            return
        if self.strict:
            self._check_allocated(int(idx[0]), int(idx[-1]) + 1)
        _h5py_rows(self.dataset, self.prefix, idx, out, at)

    def _check_allocated(self, start: int, stop: int) -> None:
        """Strict reads through h5py: every chunk holding events ``start:stop`` must be in the chunk index."""
        ds = self.dataset
        if ds.chunks is None or stop <= start:
            return
        axis = len(self.prefix)
        c = ds.chunks[axis]
        lead = tuple(p // k * k for p, k in zip(self.prefix, ds.chunks[:axis], strict=True))
        rest = (0,) * (ds.ndim - axis - 1)
        for j in range(start // c, (stop - 1) // c + 1):
            if ds.id.get_chunk_info_by_coord((*lead, j * c, *rest)).byte_offset is None:
                raise NotYetVisible(f"chunk at event {j * c} of {ds.name} is not in the chunk index yet")

    def __repr__(self):
        return f"<StoredDataset {self.where()[1]}{' strict' if self.strict else ''}>"


def open_stored(f: h5py.File, h5path: str, prefix: tuple = (), origin=None) -> StoredDataset:
    """The :class:`StoredDataset` of ``h5path`` in the open file ``f``, its link checked
    (:func:`calibsuite_h5source.h5.links.open_member`)."""
    from calibsuite_h5source.errors import FormatError
    from calibsuite_h5source.h5.links import Origin, open_member

    origin = origin or Origin(f.filename)
    parent, _, name = h5path.rstrip("/").rpartition("/")
    ds = open_member(f[parent or "/"], name, origin)
    if not isinstance(ds, h5py.Dataset):
        raise FormatError(f"expected a dataset here; found {type(ds).__name__}", file=origin.file, h5path=h5path)
    return StoredDataset(ds, prefix, origin)


def read_whole(obj):
    """Every value of a small dataset (a calibration constant...): the one way to read a constant.

    An ``h5py.Dataset`` with an axis is read through its :class:`StoredDataset`;
    a :class:`HeldDataset` (a constant read earlier, held in memory by the live
    reader) gives a copy of what that read returned, so both give the same
    value. Anything else (a scalar dataset, an array) is returned as ``obj[()]``.
    """
    if isinstance(obj, HeldDataset):
        return obj.value()
    if isinstance(obj, h5py.Dataset) and obj.shape:
        return StoredDataset(obj).read_range(0, obj.shape[0])
    return obj[()]


class HeldDataset:
    """A small dataset read once and held in memory, standing in for its ``h5py.Dataset``.

    It offers what readers of a constant use: ``name``, ``shape``, ``dtype``,
    ``ndim``, ``attrs``, ``file.filename``, ``ds[()]`` and :func:`read_whole`
    (each a copy of the value read, as a new read of the file would give).

    Parameters
    ----------
    ds : h5py.Dataset
        The dataset, read now with :func:`read_whole`.
    """

    __slots__ = ("_value", "name", "shape", "dtype", "attrs", "file")

    def __init__(self, ds: h5py.Dataset):
        self._value = read_whole(ds)
        self.name, self.shape, self.dtype = ds.name, tuple(ds.shape), ds.dtype
        self.attrs = dict(ds.attrs)
        self.file = HeldFile(ds.file.filename)

    @property
    def ndim(self) -> int:
        """Number of axes (0 for a scalar)."""
        return len(self.shape)

    def value(self):
        """The value read (a new array for an array, else the scalar: a string is ``bytes``, as h5py gives it)."""
        v = self._value
        return v.copy() if isinstance(v, np.ndarray) else v

    def __getitem__(self, key):
        if key is Ellipsis or (isinstance(key, tuple) and not key):
            return self.value()
        if not self.shape:
            raise ValueError(f"{self.name}: a scalar dataset is read with [()], not [{key!r}]")
        v = self._value[key]
        return v.copy() if isinstance(v, np.ndarray) else v

    def __repr__(self):
        return f"<HeldDataset {self.name} shape {self.shape} {self.dtype}>"


class HeldFile:
    """``.file`` of what is held in memory (a :class:`HeldDataset`, the live reader's calib group): its ``filename``."""

    __slots__ = ("filename",)

    def __init__(self, filename: str):
        self.filename = filename


# -- h5py reads of a selection --------------------------------------------------------------

def block_groups(idx: np.ndarray, chunk: int, row_bytes: int, block_bytes: int = BLOCK_BYTES) -> list[tuple[int, int]]:
    """Split sorted unique event numbers into chunk-aligned read groups.

    Indices whose chunks touch are grouped; a group never crosses a
    boundary of ``block_events`` (a multiple of ``chunk`` holding about
    ``block_bytes``). Returns ``[(start, stop)]`` positions into ``idx``.
    """
    if len(idx) == 0:
        return []
    block_events = max(chunk, (block_bytes // max(row_bytes, 1)) // chunk * chunk)
    cid = idx // chunk
    bid = idx // block_events
    cut = np.flatnonzero((np.diff(cid) > 1) | (np.diff(bid) != 0)) + 1
    edges = [0, *cut.tolist(), len(idx)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _uncached(ds: h5py.Dataset) -> h5py.Dataset:
    """The same dataset opened without a chunk cache (whole-chunk reads go straight into the output)."""
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(0, 0, 1.0)
    return h5py.Dataset(h5py.h5d.open(ds.file.id, ds.name.encode(), dapl))


def _h5py_rows(ds: h5py.Dataset, prefix: tuple, idx: np.ndarray, out: np.ndarray, at: int) -> None:
    axis = len(prefix)
    if len(idx) > 1 and ds.chunks is not None:
        ds = _uncached(ds)
    chunk = int(ds.chunks[axis]) if ds.chunks else 1
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[axis + 1:], dtype=np.int64))
    for a, b in block_groups(idx, chunk, row_bytes):
        lo, hi = int(idx[a]), int(idx[b - 1]) + 1
        if hi - lo == b - a:  # contiguous: straight into the output
            ds.read_direct(out, np.s_[prefix + (slice(lo, hi),)], np.s_[at + a:at + b])
        else:
            block = ds[prefix + (slice(lo, hi),)]
            out[at + a:at + b] = block[idx[a:b] - lo]
