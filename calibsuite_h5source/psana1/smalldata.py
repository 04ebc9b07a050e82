"""psana1's ``small_data``: per-event rows gathered to rank 0 and one h5 file in psana1's layout.

``smd = ds.small_data('out.h5', gather_interval=100)``; in the loop
``smd.event(x=1, roi=arr, d={'a': 2})`` (no event argument: the data source's
current event is used); after it ``total = smd.sum(part)`` and
``smd.save(total=total)``. The file (written by rank 0) is psana1's layout:

* root ``event_time`` (int64, ``(Unix seconds << 32) | nanoseconds``) and
  ``fiducials`` (int64), one row per event, rows of each gather sorted by
  ``event_time``;
* one dataset per key, nested dicts as groups (``d/a``); numbers as int64 /
  float64 (bool as bool), arrays with their dtype and shape;
* a key missing from a row holds NaN (floats) or -99999 (integers), also
  for rows before the key first appeared; keys whose last part starts with
  ``ragged_`` are variable-length (h5py vlen, 1-D); keys with a ``var_`` part
  are concatenated along axis 0 with ``<..var_x>_len`` (0 when missing);
* ``save(**summary)``: datasets at their (nested) paths, numbers stored as
  ``[value]`` as psana1 did.

Differences from psana1: calls for the same event are merged by
``event_time`` (psana1 compared fiducials); h5py replaces pytables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import h5py
import numpy as np

from calibsuite_h5source.psana2.smalldata import flatten, len_key
from calibsuite_h5source.psana2.smalldata_blocks import (
    SmallDataError,
    column_block,
    missing_value,
    ragged_block,
    same_lengths,
    value_info,
)

log = logging.getLogger(__name__)

RESERVED = ("event_time", "fiducials")
RAGGED_PREFIX = "ragged_"
KINDS = "biuf"  # numbers psana1 stores (no complex)
RAGGED_ADVICE = 'an array whose shape changes needs a name starting "ragged_" (or a "var_" part)'
__all__ = ["SmallData", "SmallDataError"]


def _is_ragged(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith(RAGGED_PREFIX)


def _schema(ds):
    return None if ds is None else (ds.shape[1:], ds.dtype)


class SmallData:
    """psana1's ``SmallData`` for a psana1 DataSource (serial or MPIDataSource)."""

    def __init__(self, ds, filename=None, keys_to_save=(), **kwargs):
        self._ds = ds
        self._comm = getattr(ds, "comm", None)
        self.rank = getattr(ds, "rank", 0)
        self.size = getattr(ds, "size", 1)
        self.filename = None if filename is None else str(filename)
        self.keys_to_save = list(keys_to_save)
        self._rows: list[dict] = []
        self._n_disk = 0
        self._event_keys: set[str] = set()
        if kwargs:
            log.debug("small_data: ignoring keywords %s", sorted(kwargs))
        if self.master and self.filename:
            h5py.File(self.filename, "w").close()

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def currevt(self):
        return self._ds._currevt

    # -- per-event data ------------------------------------------------------------------
    def event(self, *args, **kwargs) -> None:
        """Add data to the current event's row (nested dicts become groups)."""
        from calibsuite_h5source.psana1.events import EventId

        evt = self.currevt
        if evt is None:
            return
        if any(k in kwargs for k in RESERVED):
            raise KeyError("`event_time` and `fiducials` are special names reserved for timestamping "
                           "-- choose a different name")
        data = dict(kwargs)
        for d in args:
            data.update(flatten(d))
        data = flatten(data)
        eid = evt.get(EventId)
        sec, nsec = eid.time()
        time = sec << 32 | nsec
        if self._rows and self._rows[-1]["event_time"] == time:
            row = self._rows[-1]
            for k in data:
                if k in row:
                    log.warning("small_data: duplicate key %s for event time %d", k, time)
            row.update(data)
            return
        self._rows.append({"event_time": time, "fiducials": eid.fiducials(), **data})

    def gather(self) -> None:
        """Collect every rank's rows on rank 0 and append them (sorted by time) to the file. Collective."""
        rows, self._rows = self._rows, []
        if self._comm is not None:
            parts = self._comm.gather(rows, root=0)
            rows = [r for part in parts for r in part] if self.master else []
        if self.master and rows and self.filename:
            rows.sort(key=lambda r: r["event_time"])
            self._append(rows)

    def _append(self, rows: list[dict]) -> None:
        """Append rows to the file; every value is checked first (psana2's block checks), so a bad value
        raises :class:`SmallDataError` naming the key and event time and leaves the file as it was."""
        keys = list(dict.fromkeys(k for r in rows for k in r))
        if self.keys_to_save:
            keys = [k for k in keys if k in RESERVED or k in self.keys_to_save]
        n0, n = self._n_disk, len(rows)
        stamps = [r["event_time"] for r in rows]
        with h5py.File(self.filename, "a") as f:
            plan, lens = [], {}
            for key in keys:
                values = [r.get(key) for r in rows]
                ds = f.get(key)
                lk = len_key(key)
                if lk is not None:  # var_: concatenated, lengths per row
                    _, _, data, lengths = ragged_block(key, values, stamps, _schema(ds), KINDS)
                    if lk in lens:
                        same_lengths(key, lk, lengths, lens[lk], stamps)
                    lens[lk] = lengths
                    if data is not None:
                        plan.append(("var", key, data))
                    continue
                if _is_ragged(key):
                    base = h5py.check_vlen_dtype(ds.dtype) if ds is not None else None
                    arrays = []
                    for v, ts in zip(values, stamps, strict=True):
                        if v is not None and base is None:
                            base = value_info(key, ts, v, KINDS)[1]
                        arrays.append(None if v is None else column_block(
                            key, [np.ravel(v)], [ts], (np.shape(np.ravel(v)), base), KINDS)[2][0])
                    if base is not None:
                        plan.append(("vlen", key, (base, arrays)))
                    continue
                got = column_block(key, values, stamps, _schema(ds), KINDS, RAGGED_ADVICE)
                if got is not None:  # None: no value yet, so no type: the column comes with its first value
                    plan.append(("col", key, got))
            for how, key, what in plan:
                if how == "var":
                    ds = f.get(key) or f.create_dataset(key, shape=(0, *what.shape[1:]), dtype=what.dtype,
                                                        maxshape=(None, *what.shape[1:]))
                    m = ds.shape[0]
                    ds.resize(m + len(what), axis=0)
                    ds[m:] = what
                elif how == "vlen":
                    base, arrays = what
                    ds = self._column(f, key, (), h5py.vlen_dtype(base), None, n0, n)
                    for i, v in enumerate(arrays):
                        ds[n0 + i] = np.zeros(0, base) if v is None else v
                else:
                    shape, dtype, block = what
                    self._column(f, key, shape, dtype, missing_value(dtype), n0, n)[n0:n0 + n] = block
            for lk, lengths in lens.items():
                self._column(f, lk, (), np.dtype("i8"), 0, n0, n)[n0:n0 + n] = lengths
            for key in self._event_keys:  # columns absent from these rows grow too (fill values)
                if f[key].shape[0] < n0 + n:
                    f[key].resize(n0 + n, axis=0)
        self._n_disk = n0 + n

    def _column(self, f, key, shape, dtype, fill, n0, n):
        """The per-event dataset ``key`` grown to ``n0 + n`` rows (created back-filled when new)."""
        ds = f.get(key)
        if ds is None:
            kw = {} if fill is None else {"fillvalue": fill}
            rows = max(1, min(1024, 2**20 // max(1, np.dtype(dtype).itemsize * int(np.prod(shape)))))
            ds = f.create_dataset(key, shape=(n0, *shape), maxshape=(None, *shape), dtype=dtype,
                                  chunks=(rows, *shape), **kw)
            self._event_keys.add(key)
        ds.resize(n0 + n, axis=0)
        return ds

    # -- reductions ---------------------------------------------------------------------
    def _reduce(self, value, op):
        if self._comm is None:
            return value
        from mpi4py import MPI

        mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        info = None if value is None else ((), type(value)) if np.ndim(value) == 0 and not isinstance(value, np.ndarray) \
            else (np.shape(value), np.asarray(value).dtype.str)
        known = [i for i in self._comm.allgather(info) if i is not None]
        if not known:
            raise ValueError("No data found for MPI reduce")
        if any(i != known[0] for i in known):
            raise ValueError(f"Unable to reduce incompatible shapes/types: {known}")
        shape, dtype = known[0]
        if shape == ():  # a number
            if value is None:
                value = {"sum": 0, "max": -np.inf, "min": np.inf}[op]
            return self._comm.reduce(value, op=mpi_op, root=0)
        dtype = np.dtype(dtype)
        if value is None:
            if op == "sum":
                value = np.zeros(shape, dtype)
            else:
                big = np.finfo(dtype).max if dtype.kind == "f" else np.iinfo(dtype).max
                value = np.full(shape, -big if op == "max" else big, dtype)
        send = np.ascontiguousarray(value, dtype=dtype)
        recv = np.empty_like(send) if self.master else None
        self._comm.Reduce(send, recv, op=mpi_op, root=0)
        return recv

    def sum(self, value):
        """Sum over ranks, on rank 0 (None elsewhere); serial: ``value``."""
        return self._reduce(value, "sum")

    def max(self, value):
        return self._reduce(value, "max")

    def min(self, value):
        return self._reduce(value, "min")

    # -- summary ---------------------------------------------------------------------------
    def save(self, *args, **kwargs) -> None:
        """Gather the event rows, then (rank 0) write summary data: ``save(total=x)``, ``save({'a': {'b': y}})``.

        Collective under MPI: every rank calls it.
        """
        self.gather()
        if not self.master:
            return
        if not self.filename:
            raise OSError("No filename to save to provided")
        data = dict(kwargs)
        for d in args:
            if isinstance(d, Mapping):
                data.update(flatten(d))
        with h5py.File(self.filename, "a") as f:
            for key, value in flatten(data).items():
                if value is None:
                    log.warning("small_data.save: %s is None; not saved", key)
                    continue
                arr = value if isinstance(value, np.ndarray) else np.array([value])
                if key in f:
                    del f[key]
                f.create_dataset(key, data=arr)

    def close(self) -> None:
        """Nothing to close: the file is closed after every write."""
