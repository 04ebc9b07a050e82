"""psana-compatible ``smalldata``: per-event rows and summaries in one h5 file.

``smd = ds.smalldata(filename='out.h5')``; ``smd.event(evt, x=1, y={'a': 2.0})``;
``smd.sum(x)``; ``if smd.summary: smd.save_summary({'means': {'1000': m}})``;
``smd.done()``. The file layout is psana's:

* root ``timestamp`` (int64) and one dataset per key (nested dicts flatten
  with ``/``); python int -> int64, float -> float64, arrays keep their dtype
  and add their shape;
* a key missing from a row is filled with NaN (floats) or -99999 (ints); a
  key that first appears after some rows is back-filled with 0 for those rows
  (as psana does);
* keys with a ``var_`` part hold ragged data: values are concatenated along
  axis 0 and ``<...var_x>_len`` holds each row's length (0 when missing);
* ``save_summary`` datasets at their (nested) paths.

Rows are buffered and appended in blocks of ``batch_size``. Under MPI every
rank buffers its rows in a part file; ``done()`` merges them into ONE file,
sorted by timestamp (psana leaves them in server order), and reductions land
on rank 0, where ``summary`` is True.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import h5py
import numpy as np

log = logging.getLogger(__name__)

MISSING_INT = -99999
MISSING_FLOAT = np.nan
VAR_PREFIX = "var_"
LEN_SUFFIX = "_len"


def flatten(d: Mapping, parent: str = "") -> dict:
    """Flatten nested dicts into ``{'a/b': value}``."""
    out = {}
    for k, v in d.items():
        key = f"{parent}/{k}" if parent else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def len_key(key: str) -> str | None:
    """The ``_len`` key of a ragged (``var_``) key, else None."""
    parts = key.split("/")
    for i, p in enumerate(parts):
        if p.startswith(VAR_PREFIX):
            return "/".join(parts[: i + 1]) + LEN_SUFFIX
    return None


def missing_value(dtype: np.dtype):
    """psana's fill value for a row that lacks a key.

    NaN for floats; -99999 for integers, cast to the dtype as psana's numpy
    does (an unsigned ``uint16`` column gets ``np.uint16(-99999 % 2**16)``).
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return MISSING_FLOAT
    return np.array(MISSING_INT).astype(dtype)[()]


def _info(value):
    if isinstance(value, bool):
        return (), np.dtype(bool)
    if isinstance(value, int):
        return (), np.dtype("i8")
    if isinstance(value, float):
        return (), np.dtype("f8")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"smalldata values must be numbers or numeric arrays; got {type(value).__name__}")
    return arr.shape, arr.dtype


class _RowFile:
    """Appends row blocks to an h5 file with psana's schema rules."""

    def __init__(self, filename: str):
        self.file = h5py.File(filename, "w")
        self.n_rows = 0
        self.schema: dict[str, tuple] = {}  # key -> (shape, dtype)
        self.len_keys: set[str] = set()

    def _create(self, key, shape, dtype, backfill):
        self.schema[key] = (shape, dtype)
        ds = self.file.create_dataset(key, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                      chunks=(max(1, min(1000, 2**20 // max(1, dtype.itemsize * int(np.prod(shape))))), *shape))
        if backfill:
            self._append(key, np.zeros((backfill, *shape), dtype))
        return ds

    def _append(self, key, block):
        ds = self.file[key]
        n = ds.shape[0]
        ds.resize(n + len(block), axis=0)
        ds[n:] = block

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        n = len(rows)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        lens_done: set[str] = set()
        for key in keys:
            lk = len_key(key)
            values = [row.get(key) for row in rows]
            first = next(v for v in values if v is not None)
            if lk is not None:  # ragged: concatenate, record lengths
                arrays = [np.asarray(v) for v in values if v is not None]
                shape, dtype = arrays[0].shape[1:], arrays[0].dtype
                if key not in self.schema:
                    self._create(key, shape, dtype, 0)
                self._append(key, np.concatenate(arrays).astype(self.schema[key][1], copy=False))
                if lk not in self.schema:
                    self._create(lk, (), np.dtype("i8"), self.n_rows)
                    self.len_keys.add(lk)
                if lk not in lens_done:
                    lens = np.array([0 if v is None else len(np.asarray(v)) for v in values], dtype=np.int64)
                    self._append(lk, lens)
                    lens_done.add(lk)
                continue
            new = key not in self.schema
            if new:
                shape, dtype = _info(first)
                self._create(key, shape, dtype, self.n_rows)
            shape, dtype = self.schema[key]
            block = np.full((n, *shape), missing_value(dtype), dtype=dtype)
            if new:  # rows before a key's first appearance are back-filled with 0, as psana does
                block[: next(i for i, v in enumerate(values) if v is not None)] = 0
            for i, v in enumerate(values):
                if v is not None:
                    block[i] = v
            self._append(key, block)
        for key, (shape, dtype) in self.schema.items():  # keys absent from this whole block
            if key in keys or key in lens_done:
                continue
            if key in self.len_keys:
                self._append(key, np.zeros(n, dtype=dtype))
            elif len_key(key) is None:
                self._append(key, np.full((n, *shape), missing_value(dtype), dtype=dtype))
        self.n_rows += n

    def close(self):
        self.file.close()


class SmallData:
    """psana's smalldata interface for an h5 DataSource.

    Parameters
    ----------
    ds : H5DataSource, optional
        The source; under MPI its partition supplies the communicator.
    filename : str, optional
        Output file; None keeps the API working without writing anything.
    batch_size : int
        Rows buffered before a block is written.
    """

    def __init__(self, ds=None, filename=None, batch_size: int = 1000, **kwargs):
        partition = getattr(ds, "_partition", None)
        self._comm = getattr(partition, "comm", None)
        self.rank = 0 if self._comm is None else self._comm.Get_rank()
        self.size = 1 if self._comm is None else self._comm.Get_size()
        self.filename = None if filename is None else str(filename)
        self.batch_size = int(batch_size)
        self._rows: list[dict] = []
        self._last_ts = -1
        self._summary: dict = {}
        self._file = None
        if self.filename is not None:
            self._file = _RowFile(self.filename if self.size == 1 else self._part_name(self.rank))
        if kwargs:
            log.debug("smalldata: ignoring keywords %s", sorted(kwargs))

    def _part_name(self, rank: int) -> str:
        return f"{self.filename}.part{rank}"

    # -- per-event rows ---------------------------------------------------------
    def event(self, evt, *dicts, **kwargs) -> None:
        """Add data to the row of ``evt`` (an event or an int timestamp)."""
        ts = int(evt) if isinstance(evt, (int, np.integer)) else int(evt.timestamp)
        data = dict(kwargs)
        for d in dicts:
            data.update(flatten(d))
        data = flatten(data)
        if ts == self._last_ts and self._rows:
            self._rows[-1].update(data)
            return
        if ts < self._last_ts:
            log.warning("smalldata: event data is old (timestamp %d after %d): timestamps must increase; dropped",
                        ts, self._last_ts)
            return
        if len(self._rows) >= self.batch_size:
            self._flush()
        data["timestamp"] = ts
        self._rows.append(data)
        self._last_ts = ts

    def _flush(self):
        if self._file is not None:
            self._file.write(self._rows)
        self._rows = []

    # -- reductions --------------------------------------------------------------
    @property
    def summary(self) -> bool:
        """True where reduced values are valid and summaries are saved (rank 0)."""
        return self.rank == 0

    def _reduce(self, value, op):
        if self._comm is None:
            return value
        from mpi4py import MPI

        arr = None if value is None else np.asarray(value)
        infos = self._comm.allgather(None if arr is None else (arr.shape, arr.dtype.str))
        known = [i for i in infos if i is not None]
        if not known:
            raise ValueError("smalldata reduction: no rank has a value")
        shape, dtype = known[0][0], np.dtype(known[0][1])
        if any(i != known[0] for i in known):
            raise ValueError(f"smalldata reduction: ranks hold incompatible shapes/dtypes {sorted(set(known))}")
        if arr is None:  # a rank that saw no data contributes the identity
            ident = {"sum": 0}.get(op)
            if ident is None:
                big = np.finfo(dtype).max if dtype.kind == "f" else np.iinfo(dtype).max
                ident = -big if op == "max" else big
            arr = np.full(shape, ident, dtype=dtype)
        send = np.ascontiguousarray(arr.reshape(shape) if shape else arr.reshape(1))
        recv = np.empty_like(send) if self.rank == 0 else None
        self._comm.Reduce(send, recv, op={"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op], root=0)
        if self.rank != 0:
            return None
        if not shape:
            return recv[0].item() if isinstance(value, (int, float)) else recv[0]
        return recv

    def sum(self, value):
        """Sum over ranks; serial: ``value``; MPI: the sum on rank 0, None elsewhere."""
        return self._reduce(value, "sum")

    def max(self, value):
        """Maximum over ranks (see :meth:`sum`)."""
        return self._reduce(value, "max")

    def min(self, value):
        """Minimum over ranks (see :meth:`sum`)."""
        return self._reduce(value, "min")

    # -- summary and closing -----------------------------------------------------
    def save_summary(self, *dicts, **kwargs) -> None:
        """Save non-per-event data; nested dicts become groups (``means/1000``)."""
        if not self.summary:
            return
        data = dict(kwargs)
        for d in dicts:
            data.update(d)
        self._summary.update(flatten(data))

    def done(self) -> None:
        """Write what is buffered, merge ranks' rows sorted by timestamp, close."""
        self._flush()
        if self._file is not None:
            self._file.close()
        if self._comm is not None:
            self._comm.Barrier()
            if self.rank == 0 and self.filename is not None:
                _merge_sorted([self._part_name(r) for r in range(self.size)], self.filename)
        if self.rank == 0 and self.filename is not None and self._summary:
            with h5py.File(self.filename, "a") as f:
                for key, value in self._summary.items():
                    if key in f:
                        del f[key]
                    f.create_dataset(key, data=np.asarray(value))
        if self._comm is not None:
            self._comm.Barrier()


def _merge_sorted(parts: list[str], out: str) -> None:
    """Join ranks' part files into one file, rows sorted by timestamp."""
    columns: dict[str, list] = {}
    lengths, dtypes, shapes = [], {}, {}
    for path in parts:
        with h5py.File(path, "r") as f:
            n = f["timestamp"].shape[0] if "timestamp" in f else 0
            lengths.append(n)
            names = []
            f.visititems(lambda name, obj, names=names: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            for name in names:
                columns.setdefault(name, [None] * len(parts))[len(lengths) - 1] = f[name][()]
                dtypes[name], shapes[name] = f[name].dtype, f[name].shape[1:]
    with h5py.File(out, "w") as f:
        if not columns:
            return
        ts = np.concatenate([c if c is not None else np.zeros(0, np.int64) for c in columns["timestamp"]])
        order = np.argsort(ts, kind="stable")
        for name, per_part in columns.items():
            lk = len_key(name)
            if lk is not None and not name.endswith(LEN_SUFFIX):
                # ragged values: reorder per row using the lengths
                rows = []
                for p, data in enumerate(per_part):
                    lens = columns[lk][p] if columns[lk][p] is not None else np.zeros(lengths[p], np.int64)
                    data = data if data is not None else np.zeros((0, *shapes[name]), dtypes[name])
                    rows += np.split(data, np.cumsum(lens)[:-1]) if len(lens) else []
                f.create_dataset(name, data=np.concatenate([rows[i] for i in order]) if rows else data)
                continue
            fill = 0 if name.endswith(LEN_SUFFIX) else missing_value(dtypes[name])
            full = [d if d is not None else np.full((lengths[p], *shapes[name]), fill, dtypes[name])
                    for p, d in enumerate(per_part)]
            f.create_dataset(name, data=np.concatenate(full)[order])
    for path in parts:
        os.remove(path)
