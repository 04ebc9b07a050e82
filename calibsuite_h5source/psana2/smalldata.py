"""psana-compatible ``smalldata``: per-event rows and summaries in one h5 file.

``smd = ds.smalldata(filename='out.h5')``; ``smd.event(evt, x=1, y={'a': 2.0})``;
``smd.sum(x)``; ``if smd.summary: smd.save_summary({'means': {'1000': m}})``;
``smd.done()``. The file layout is psana's:

* root ``timestamp`` (int64) and one dataset per key (nested dicts flatten
  with ``/``); python int -> int64, float -> float64, arrays keep their dtype
  and add their shape;
* a key missing from a row is filled with NaN (floats) or -99999 (ints); a
  key that first appears after some rows is back-filled with 0 for those rows
  (as psana does); a row passed None holds NaN / -99999 (psana: NaN in a float
  column, a TypeError in an int column or for a new key);
  a key None in every event gets no dataset (a warning);
* each block is checked whole before any of it is written
  (:mod:`~calibsuite_h5source.psana2.smalldata_blocks`): a value its column
  cannot hold (2.7 or NaN into an int column, another shape) raises
  :class:`SmallDataError` naming the key, timestamp, column and value;
* keys with a ``var_`` part hold ragged data: values are concatenated along
  axis 0 and ``<...var_x>_len`` holds each row's length (0 when missing);
* ``save_summary`` datasets at their (nested) paths.

Rows are buffered and appended in blocks of ``batch_size``.

Under MPI only psana's worker ranks (its smalldata "clients") read events
(:mod:`calibsuite_h5source.psana2.partition`); as psana's clients do:

* ``smd.summary`` is True on every worker (and in serial mode), False on
  the other ranks (psana's smd0, event builders and servers): scripts write
  ``if smd.summary: total = smd.sum(part)`` and every worker must enter;
* ``sum``/``max``/``min`` are collectives over the workers: the result is on
  the first worker, None elsewhere; a worker passing None (it saw no
  events) contributes nothing; python scalars come back as shape ``(1,)``
  arrays, as psana's do; on a non-worker they return None at once;
* ``save_summary`` stores on the first worker only;
* no server rank is needed (psana refuses ``ds.smalldata()`` under MPI
  without ``PS_SRV_NODES >= 1``; here it works with 0): each worker buffers
  its rows in ``<filename>.part<k>`` (``k`` its place among the workers) and
  ``done()`` joins them on the first worker into ONE file sorted by
  timestamp (psana's servers write in arrival order and leave the part
  files behind a virtual dataset) and removes the parts. Server ranks, when
  ``PS_SRV_NODES`` makes some, stay idle, like the other non-workers.

In the opt-in every-rank-a-worker mode every rank is a worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import h5py
import numpy as np

from calibsuite_h5source.psana2.smalldata_blocks import (  # noqa: F401  (SmallDataError, MISSING_*: this module's API)
    MISSING_FLOAT,
    MISSING_INT,
    SmallDataError,
    column_block,
    missing_value,
    ragged_block,
    same_lengths,
)

log = logging.getLogger(__name__)

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


class _RowFile:
    """Appends row blocks to an h5 file with psana's schema rules; a block is checked whole before any write."""

    def __init__(self, filename: str):
        self.file = h5py.File(filename, "w")
        self.n_rows = 0
        self.schema: dict[str, tuple] = {}  # key -> (shape, dtype)
        self.len_keys: set[str] = set()
        self.none_rows: dict[str, list] = {}  # key with no column yet -> [(first row, mask of rows passed None)]

    def _create(self, key, shape, dtype):
        self.schema[key] = (shape, dtype)
        self.file.create_dataset(key, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                 chunks=(max(1, min(1000, 2**20 // max(1, dtype.itemsize * int(np.prod(shape))))), *shape))

    def _append(self, key, block):
        ds = self.file[key]
        n = ds.shape[0]
        ds.resize(n + len(block), axis=0)
        ds[n:] = block

    def _backfill(self, key, shape, dtype):
        """Rows written before ``key`` had a column: 0 (psana's back-fill), the missing value where None was passed."""
        block = np.zeros((self.n_rows, *shape), dtype)
        for start, mask in self.none_rows.get(key, []):
            block[start:start + len(mask)][mask] = missing_value(dtype)
        return block

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        n = len(rows)
        stamps = [row["timestamp"] for row in rows]
        keys = list(dict.fromkeys(k for row in rows for k in row))
        plan, lens, unknown = [], {}, []  # everything is checked first: a bad value leaves the file as it was
        for key in keys:
            values = [row.get(key) for row in rows]
            lk = len_key(key)
            if lk is not None:  # ragged: concatenate, record lengths
                shape, dtype, data, lengths = ragged_block(key, values, stamps, self.schema.get(key))
                if lk in lens:
                    same_lengths(key, lk, lengths, lens[lk], stamps)
                lens[lk] = lengths
                if data is not None:
                    plan.append((key, key not in self.schema and (shape, dtype), None, data))
                continue
            got = column_block(key, values, stamps, self.schema.get(key))
            if got is None:  # None (or absent) in every row and no column yet: its type is not known
                unknown.append(key)
                continue
            shape, dtype, block = got
            if key in self.schema:
                plan.append((key, False, None, block))
                continue
            # rows before a key's first value are back-filled with 0, as psana does; rows passed None are missing
            first = next(i for i, v in enumerate(values) if v is not None)
            block[[i for i in range(first) if key not in rows[i]]] = 0
            plan.append((key, (shape, dtype), self._backfill(key, shape, dtype), block))
        for key in unknown:
            self.none_rows.setdefault(key, []).append((self.n_rows, np.array([key in r for r in rows])))
        for key, new, backfill, block in plan:
            if new:
                self.none_rows.pop(key, None)
                self._create(key, *new)
            if backfill is not None and len(backfill):
                self._append(key, backfill)
            self._append(key, block)
        for lk, lengths in lens.items():
            if lk not in self.schema:
                self._create(lk, (), np.dtype("i8"))
                self._append(lk, np.zeros(self.n_rows, np.int64))
                self.len_keys.add(lk)
            self._append(lk, lengths)
        for key, (shape, dtype) in self.schema.items():  # keys absent from this whole block
            if key in keys or key in lens:
                continue
            if key in self.len_keys:
                self._append(key, np.zeros(n, dtype=dtype))
            elif len_key(key) is None:
                self._append(key, np.full((n, *shape), missing_value(dtype), dtype=dtype))
        self.n_rows += n

    def close(self):
        never = sorted(k for k, parts in self.none_rows.items() if any(m.any() for _, m in parts))
        if never:
            log.warning("smalldata: %s was None in every event: no dataset written (its type is unknown)",
                        ", ".join(map(repr, never)))
        self.file.close()


def summary_value(key: str, value):
    """Return ``value`` in a form ``h5file[key] = value`` stores, or raise :class:`SmallDataError`.

    Numbers, bools, numpy scalars and numeric arrays or lists are stored as
    they are (h5py's ``f[name] = value``, as psana does); a ``str`` becomes a
    UTF-8 HDF5 string, ``bytes`` a byte string, and a list or array of ``str``
    an array of variable-length UTF-8 strings (h5py cannot store numpy's
    ``<U`` dtype, which is where psana's own ``save_summary`` fails).
    """
    if isinstance(value, (str, bytes, bool, int, float, complex, np.generic)):
        if isinstance(value, np.generic) and value.dtype.kind not in "biufcSU":
            raise SmallDataError(f"save_summary: {key!r}: cannot store a {value.dtype} scalar")
        return value.item() if isinstance(value, np.str_) else value
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged lists
        raise SmallDataError(f"save_summary: {key!r}: cannot store {type(value).__name__}: {err}") from None
    if arr.dtype.kind in "biufcS":
        return arr
    if arr.dtype.kind == "U" or (arr.dtype.kind == "O" and arr.size and all(isinstance(v, str) for v in arr.flat)):
        return arr.astype(h5py.string_dtype())
    raise SmallDataError(f"save_summary: {key!r}: cannot store {type(value).__name__} "
                         f"(numbers, strings, or arrays/lists of either)")


def _as_array(value):
    """A reduction operand as an ndarray (scalars become shape ``(1,)``, as psana's), or None."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float, complex, np.generic)):
        return np.array([value])
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise SmallDataError(f"smalldata reduction: values must be numbers or numeric arrays; got {type(value).__name__}")
    return arr


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

    Notes
    -----
    Under MPI the workers are psana's "clients": :attr:`summary` is True on
    them, reductions are collectives that every worker must call, and the
    first worker holds their results and writes the summary. On the other
    ranks everything is a no-op (:attr:`summary` False, reductions None).
    """

    def __init__(self, ds=None, filename=None, batch_size: int = 1000, **kwargs):
        partition = getattr(ds, "_partition", None)
        self._worker = bool(getattr(partition, "is_worker", True))
        self._comm = getattr(partition, "worker_comm", None)  # the workers only (None: serial, or not a worker)
        #: this rank's place among the workers (0: the first worker, which holds results)
        self.rank = 0 if self._comm is None else self._comm.Get_rank()
        #: workers taking part
        self.size = 1 if self._comm is None else self._comm.Get_size()
        self.filename = None if filename is None else str(filename)
        self.batch_size = int(batch_size)
        self._rows: list[dict] = []
        self._last_ts = -1
        self._summary: dict = {}
        self._file = None
        if self.filename is not None and self._worker:
            self._file = _RowFile(self.filename if self._comm is None else self._part_name(self.rank))
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
        """True in serial mode and on every worker rank, False on psana's other ranks (as psana's).

        Scripts write ``if smd.summary: total = smd.sum(part)``; the reduction
        is a collective, so every worker rank must enter that block.
        """
        return self._worker

    def _reduce(self, value, op: str, inplace: bool = False):
        if not self._worker:
            return None  # psana's smd0/eb/srv ranks: no part in the collective
        if self._comm is None:
            return value
        from mpi4py import MPI

        arr = _as_array(value)
        want_range = op in ("max", "min") and arr is not None and arr.size
        info = None if arr is None else (arr.shape, arr.dtype.str,
                                         arr.min() if want_range else None, arr.max() if want_range else None)
        known = [i for i in self._comm.allgather(info) if i is not None]  # every rank sees the same list
        if not known:
            log.warning("smalldata %s: no rank has a value; returning None", op)
            return None
        shape, dtype = known[0][0], np.dtype(known[0][1])
        if any(i[:2] != known[0][:2] for i in known):
            raise SmallDataError(f"smalldata {op}: ranks hold incompatible shapes/dtypes "
                                 f"{sorted({(i[0], i[1]) for i in known})}")
        if arr is None:  # a rank that saw no data contributes a value that cannot change the result
            if op == "sum":
                arr = np.zeros(shape, dtype)
            else:  # psana's trick: the global max for min, the global min for max
                ranged = [i for i in known if i[2] is not None]
                fill = (max(i[3] for i in ranged) if op == "min" else min(i[2] for i in ranged)) if ranged else 0
                arr = np.full(shape, fill, dtype)
        mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        if inplace and isinstance(value, np.ndarray) and value.flags.c_contiguous:
            if self.rank == 0:
                self._comm.Reduce(MPI.IN_PLACE, value, op=mpi_op, root=0)
            else:
                self._comm.Reduce(value, None, op=mpi_op, root=0)
            return value
        send = np.ascontiguousarray(arr)
        recv = np.empty_like(send) if self.rank == 0 else None
        self._comm.Reduce(send, recv, op=mpi_op, root=0)
        return recv

    def sum(self, value, inplace: bool = False):
        """Sum ``value`` over the ranks.

        Parameters
        ----------
        value : number, array, list of numbers, or None
            This rank's part; None when this rank has nothing (it then adds nothing).
        inplace : bool
            Reduce into ``value`` itself (an ndarray) on the first rank, as psana's.

        Returns
        -------
        Serial: ``value`` unchanged. MPI: on the first worker the sum, an
        ndarray (a scalar becomes shape ``(1,)``, as in psana); None on the
        other ranks. Every worker must call it.
        """
        return self._reduce(value, "sum", inplace)

    def max(self, value, inplace: bool = False):
        """Element-wise maximum over the ranks (see :meth:`sum`)."""
        return self._reduce(value, "max", inplace)

    def min(self, value, inplace: bool = False):
        """Element-wise minimum over the ranks (see :meth:`sum`)."""
        return self._reduce(value, "min", inplace)

    # -- summary and closing -----------------------------------------------------
    def save_summary(self, *dicts, **kwargs) -> None:
        """Save non-per-event data, written at :meth:`done`.

        Nested dicts become groups (``{'means': {'1000': m}}`` -> ``means/1000``).
        Only the first worker stores anything (a no-op elsewhere, as in psana);
        a value of None is skipped with a warning; see :func:`summary_value`
        for what can be stored. Bad values raise :class:`SmallDataError` here.
        """
        if self.rank != 0 or not self._worker:
            return
        data = dict(kwargs)
        for d in dicts:
            data.update(d)
        for key, value in flatten(data).items():
            if value is None:
                log.warning("smalldata: save_summary dataset %r was passed None; ignoring that dataset", key)
                continue
            self._summary[key] = summary_value(key, value)
        if self.filename is None:
            log.warning("smalldata: no filename given: the summary is not saved")

    def done(self) -> None:
        """Write what is buffered, merge the ranks' rows into one file sorted by timestamp, close.

        Every worker must call it (on another rank it does nothing). Leaves
        exactly one file, ``filename`` (no part files), even when some or all
        workers saw no events.
        """
        if not self._worker:
            return
        error = None  # raised after the last barrier, so that no other rank is left waiting
        try:
            self._flush()
        except Exception as err:  # e.g. a value that is not a number
            error = err
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._comm is not None:
            self._comm.Barrier()
        if self.rank == 0 and self.filename is not None and error is None:
            try:
                if self._comm is not None:
                    _merge_sorted([self._part_name(r) for r in range(self.size)], self.filename)
                if self._summary:
                    _write_summary(self.filename, self._summary)
            except Exception as err:
                error = err
        if self._comm is not None:
            self._comm.Barrier()
        if error is not None:
            raise error


def _write_summary(path: str, summary: dict) -> None:
    with h5py.File(path, "a") as f:
        for key, value in summary.items():
            if key in f:
                log.warning("smalldata: save_summary %r replaces the dataset of that name", key)
                del f[key]
            f[key] = value


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
        if columns:
            _write_merged(f, columns, lengths, dtypes, shapes)
    for path in parts:
        os.remove(path)


def _write_merged(f, columns: dict, lengths: list, dtypes: dict, shapes: dict) -> None:
    """Write the concatenated columns of all parts, rows ordered by timestamp (ragged keys row by row)."""
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
