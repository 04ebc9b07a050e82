"""The writer's per-step HDF5 calls, through h5py's low-level API.

A step of a few small events costs the writer a handful of dataset
creations, appends and attribute updates. Through h5py's high-level API
each one spends tens of microseconds in Python (property lists rebuilt,
selections parsed, attributes deleted and re-created, group lookups);
that, not HDF5, was most of a step's time. These helpers do the same HDF5
operations directly:

* :class:`DatasetMaker` creates the first dataset of a kind through h5py
  (so its creation properties, chunks and filters are exactly h5py's) and
  every later one from that dataset's creation property list and type,
  where that list makes the same filters again (bitshuffle's does not:
  those datasets are made through h5py every time);
* :func:`append_rows` grows a resizable dataset along its first axis and
  writes the new rows with one hyperslab write;
* :class:`ValueAppender` appends one value per step to a 1-D dataset (the
  per-step scan values, the ``nEvents`` index) by writing its current chunk
  whole from memory (``write_direct_chunk``): no chunk cache, no selection,
  no type conversion;
* :class:`AttrSetter` overwrites a group's existing attributes in place,
  and only when their value changed.

They change nothing in the file's layout (the same datasets, creation
properties, attributes and types) nor in the order of the writer's flushes.
"""

from __future__ import annotations

import h5py
import numpy as np


class DatasetMaker:
    """Creates datasets like the first one of their kind, without h5py's per-call set-up.

    Parameters
    ----------
    f : h5py.File
        The file being written.
    """

    def __init__(self, f: h5py.File):
        self._fid = f.id
        self._templates: dict = {}
        self._lcpl = h5py.h5p.create(h5py.h5p.LINK_CREATE)
        self._lcpl.set_create_intermediate_group(True)

    def create(self, key, h5path: str, data: np.ndarray, resizable: bool, make) -> h5py.Dataset:
        """Create ``h5path`` holding ``data``, resizable along its first axis or fixed.

        ``make()`` creates it through h5py the first time a ``key`` is seen;
        the key must name everything the creation depends on apart from the
        first axis's length (per-event shape, dtype, filters, chunks).
        """
        template = self._templates.get(key, _NEW)
        if template is _NEW:
            ds = make()
            dcpl, tid = ds.id.get_create_plist(), ds.id.get_type()
            self._templates[key] = (dcpl, tid) if _reproduces(dcpl, tid, ds.shape) else None
            return ds
        if template is None:  # a filter rewrites its parameters when a dataset is made: h5py's way
            return make()
        dcpl, tid = template
        maxshape = (h5py.h5s.UNLIMITED, *data.shape[1:]) if resizable else None
        space = h5py.h5s.create_simple(data.shape, maxshape)
        dsid = h5py.h5d.create(self._fid, h5path.encode(), tid, space, dcpl=dcpl, lcpl=self._lcpl)
        if data.size:
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
        return h5py.Dataset(dsid)


_NEW = object()


def _filters(dcpl) -> list:
    return [dcpl.get_filter(k)[:3] for k in range(dcpl.get_nfilters())]


def _reproduces(dcpl, tid, shape) -> bool:
    """Whether a dataset made from ``dcpl`` gets the same filter parameters as the one it came from.

    A filter's ``set_local`` call may rewrite its parameters when a dataset is
    created: bitshuffle prepends its version and element size to what it was
    given, so a dataset made from an existing one's creation properties gets
    them twice and stores its chunks shuffled but not LZ4-compressed. A
    scratch dataset in memory tells.
    """
    if not dcpl.get_nfilters():
        return True
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fapl_core(backing_store=False)
    scratch = h5py.h5f.create(b"calibsuite_h5source-dcpl-check", h5py.h5f.ACC_TRUNC, fapl=fapl)
    try:
        space = h5py.h5s.create_simple(tuple(shape), (h5py.h5s.UNLIMITED, *shape[1:]) if len(shape) else None)
        made = h5py.h5d.create(scratch, b"x", tid, space, dcpl=dcpl)
        return _filters(made.get_create_plist()) == _filters(dcpl)
    finally:
        scratch.close()


def append_rows(ds: h5py.Dataset, start: int, block: np.ndarray) -> None:
    """Grow the resizable ``ds`` to ``start + len(block)`` rows and write ``block`` from row ``start``."""
    block = np.ascontiguousarray(block, dtype=ds.dtype)
    if not len(block):
        return
    dsid = ds.id
    dsid.set_extent((start + len(block), *block.shape[1:]))
    space = dsid.get_space()
    space.select_hyperslab((start,) + (0,) * (block.ndim - 1), block.shape)
    dsid.write(h5py.h5s.create_simple(block.shape), space, block)


class ValueAppender:
    """Appends one value at a time to a 1-D resizable dataset, by writing its current chunk whole.

    The chunk being filled is kept in memory; each :meth:`append` sets the
    value, grows the dataset's extent and writes that chunk with
    ``write_direct_chunk``. Used only where that is exact: a 1-D chunked
    dataset without filters, of a native numeric type, written only through
    this appender. Otherwise it falls back to :func:`append_rows`.

    Parameters
    ----------
    ds : h5py.Dataset
        The dataset; its current rows are kept.
    """

    def __init__(self, ds: h5py.Dataset):
        self.ds = ds
        dcpl = ds.id.get_create_plist()
        self.direct = (ds.ndim == 1 and ds.chunks is not None and dcpl.get_nfilters() == 0
                       and ds.dtype.kind in "biuf" and ds.dtype.isnative)
        self.chunk = ds.chunks[0] if ds.chunks else 0
        self._buf = None
        self._start = -1  # first row of the chunk held in _buf

    def append(self, index: int, value) -> None:
        """Set row ``index`` (the dataset then has ``index + 1`` rows) to ``value``."""
        if not self.direct:
            append_rows(self.ds, index, np.asarray([value]))
            return
        start = index - index % self.chunk
        if start != self._start:  # a new chunk: start from what the file holds there (fill values past the end)
            self._buf = np.zeros(self.chunk, self.ds.dtype)
            kept = min(self.ds.shape[0], index) - start
            if kept > 0:
                self._buf[:kept] = self.ds[start:start + kept]
            self._start = start
        self._buf[index - start] = value
        dsid = self.ds.id
        dsid.set_extent((index + 1,))
        dsid.write_direct_chunk((start,), self._buf)


class AttrSetter:
    """Overwrites existing scalar attributes of one group in place, only when their value changes.

    Unlike ``group.attrs[name] = value`` (which deletes the attribute and
    creates a new one), an attribute keeps its place and type in the object
    header; a value is converted to that type. Every write of these
    attributes must go through this setter (it remembers what it wrote).

    Parameters
    ----------
    group : h5py.Group
        Whose attributes; they must exist already.
    """

    def __init__(self, group: h5py.Group):
        self._gid = group.id
        self._written: dict = {}

    def __setitem__(self, name: str, value) -> None:
        if name in self._written and self._written[name] == value:
            return
        aid = h5py.h5a.open(self._gid, name.encode())
        aid.write(np.asarray(value, dtype=aid.dtype))
        self._written[name] = value
