"""Random access and whole arrays: a run as numpy, dask and xarray arrays.

The event loop is psana's interface; notebooks want arrays. This module gives
them, over every layout (the :class:`~calibsuite_h5source.read.index_types.RunIndex`
has already normalised it):

* :class:`TimeIndex`: ``run.times()`` and ``run.event(ts)`` (psana1's indexed mode);
* :func:`frames`, :func:`dask_array`, :func:`to_xarray`: what an area detector's
  ``det.raw.frames()``, ``.dask_array()`` and ``.xarray()`` delegate to;
* :func:`field_array` (and its dask/xarray forms): side data such as
  ``wave8.raw.array('peakAmplitude')``;
* :func:`scan_array`: a scan variable's value at every event.

Rows and selections
-------------------
An array's first axis is ``event``: the stored events of one step
(``step=k``) or of every step in run order (``step=None``). ``events`` (a
slice, an int or an index array, negative values counting from the end)
selects along that axis: event numbers within the step when ``step`` is
given, run-wide event numbers (``0 .. sum(n_events) - 1``) otherwise; an index
array's order (and repeats) are kept; an int selects one event and keeps the
event axis. ``max_events``, ``timestamps=`` and the
MPI partition of the DataSource do not apply: arrays address the stored run.

Missing events (the ``present`` mask)
-------------------------------------
Where a detector's ``present`` mask is False the event loop's
``det.raw.raw(evt)`` returns None. ``missing='drop'`` (the default) leaves
those events out, so the array equals the loop's non-None frames stacked; the
``timestamp``/``step`` coordinates of :func:`to_xarray` say which events
remain. ``missing='keep'`` returns every stored event, absent ones as stored
(zeros, docs/format.rst); ``det.raw.present()`` gives the mask.

Reads
-----
Every read goes through the dataset's one reader,
:class:`calibsuite_h5source.h5.dataset.StoredDataset`, as the event loop's do:
direct reads straight into the output (one ``preadv`` per run of events lying
back to back in the file), compressed chunks decompressed on the thread pool,
h5py's chunk-aligned reads elsewhere; the same damage checks and errors. A
:func:`frames` call that would need more than ``max_bytes`` (default
:data:`DEFAULT_MAX_BYTES`) raises :class:`~calibsuite_h5source.errors.ArrayTooLargeError`
naming the size, before reading anything.

dask blocks each cover a chunk-aligned range of one step's events. A block's
task holds only the file path, the dataset path and the event range: it opens
the file itself, so the graph pickles and runs under the threaded,
multiprocessing or ``dask.distributed`` schedulers. dask and xarray are
imported only when these functions are called (extras ``dask``, ``xarray``).
"""

from __future__ import annotations

import logging
import operator
import os

import h5py
import numpy as np

from calibsuite_h5source.errors import ArrayTooLargeError, MissingDependencyError
from calibsuite_h5source.read.selection import (
    checked_counts,
    run_counts,
    select_rows,
    selected_steps,
)

log = logging.getLogger(__name__)

#: Target bytes of one read, and of one dask block (64 MiB).
BLOCK_BYTES = 64 * 2**20


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


#: Default ``max_bytes`` of :func:`frames`: 4 GiB, or half the physical memory when smaller.
DEFAULT_MAX_BYTES = min(4 * 2**30, (_physical_memory() or 8 * 2**30) // 2)



def human_bytes(n: int) -> str:
    """Format a byte count as ``'1.5 GiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# -- random access by timestamp ------------------------------------------------------------

class TimeIndex:
    """Every stored event's timestamp, and the lookup timestamp -> ``(step, event)``.

    Built from the run index (its per-step timestamp arrays): no frame is read.
    A timestamp stored twice (a file the validator flags) finds its first event.
    """

    def __init__(self, index):
        counts = np.asarray(index.n_events, dtype=np.int64)
        parts = [np.asarray(index.timestamps[k], dtype=np.uint64) for k in range(len(counts))]
        self.times = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.counts = counts
        self._order = np.argsort(self.times, kind="stable")
        self._sorted = self.times[self._order]

    def locate(self, timestamps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(found, step, event)`` arrays for an array of timestamps."""
        t = np.asarray(timestamps, dtype=np.uint64).ravel()
        pos = np.searchsorted(self._sorted, t)
        ok = pos < len(self._sorted)
        ok[ok] = self._sorted[pos[ok]] == t[ok]
        flat = self._order[np.where(ok, pos, 0)] if len(self._order) else np.zeros(len(t), np.int64)
        step = np.searchsorted(self.starts, flat, side="right") - 1
        return ok, step, flat - self.starts[np.maximum(step, 0)]

    def find(self, timestamp) -> tuple[int, int] | None:
        """Return ``(step, event)`` of one timestamp, or None when the run does not hold it.

        Raises
        ------
        TypeError
            ``timestamp`` is not an integer (a float would lose nanoseconds).
        """
        try:
            t = operator.index(timestamp)
        except TypeError:
            raise TypeError(f"a psana timestamp is an integer ((seconds << 32) | nanoseconds); "
                            f"got {type(timestamp).__name__} {timestamp!r}") from None
        if not 0 <= t < 2**64:
            return None
        ok, step, event = self.locate([t])
        return (int(step[0]), int(event[0])) if ok[0] else None


# -- reads: every one through the dataset's StoredDataset ----------------------------------------

def _chunk_events(ds: h5py.Dataset, axis: int) -> int:
    return int(ds.chunks[axis]) if ds.chunks else 1


def gather(per_step, row_step: np.ndarray, row_event: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Fill ``out[j]`` with event ``row_event[j]`` of ``per_step[row_step[j]]`` (EventArrays)."""
    if len(row_step) == 0:
        return out
    bounds = np.flatnonzero(np.diff(row_step)) + 1
    for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(row_step)], strict=True):
        ea, ev = per_step[int(row_step[a])], row_event[a:b]
        if np.all(np.diff(ev) == 1):  # the usual case: a run of consecutive events
            ea.read_rows(ev, out, a)
            continue
        u, inv = np.unique(ev, return_inverse=True)
        tmp = np.empty((len(u), *out.shape[1:]), dtype=out.dtype)
        ea.read_rows(u, tmp)
        out[a:b] = tmp[inv.ravel()]
    return out


def _check_size(shape, dtype, max_bytes, what: str) -> None:
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes > limit:
        raise ArrayTooLargeError(
            f"{what} would need {human_bytes(nbytes)} ({shape[0]} events of {tuple(shape[1:])} {np.dtype(dtype)}), "
            f"over the limit of {human_bytes(limit)}: select one step or fewer events (events=slice(0, 1000)), "
            f"use .dask_array(), or pass max_bytes=")


# -- area detectors ---------------------------------------------------------------------

def _area(raw):
    return raw._src, getattr(raw, "_run", None)


def area_rows(raw, step=None, events=None, missing="drop"):
    """Rows ``(steps, events)`` of an area detector's selection."""
    src, _ = _area(raw)
    return select_rows(checked_counts(src.steps, step), step, events, src.present, missing)


def frames(raw, step=None, events=None, *, missing="drop", max_bytes=None) -> np.ndarray:
    """Return an area detector's frames as one ``[event, module, row, col]`` array, stored dtype.

    Parameters
    ----------
    raw : the detector's ``det.raw``
    step : int or None
        One step, or every step in run order.
    events : slice, int, array of int or None
        Events along the event axis (within the step, or run-wide when ``step`` is None).
    missing : {'drop', 'keep'}
        Events whose ``present`` mask is False: left out, or kept as stored.
    max_bytes : int, optional
        Refuse (before reading) an array larger than this; default :data:`DEFAULT_MAX_BYTES`.

    Raises
    ------
    ArrayTooLargeError
        The array would exceed ``max_bytes``; the message names its size.
    IndexError
        A step or event that does not exist.
    """
    src, _ = _area(raw)
    rows = area_rows(raw, step, events, missing)
    shape = (len(rows[0]), *src.frame_shape)
    _check_size(shape, src.dtype, max_bytes, f"frames of {src.name}")
    out = np.empty(shape, dtype=src.dtype)
    return gather(src.steps, *rows, out)


def present(raw, step=None) -> np.ndarray:
    """Return the ``present`` mask over the stored events (all True where the file has none)."""
    src, _ = _area(raw)
    parts = [np.ones(src.steps[k].n, bool) if src.present[k] is None else np.asarray(src.present[k], bool)
             for k in selected_steps(len(src.steps), step)]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


# -- dask ----------------------------------------------------------------------------------------

def _import(name: str, extra: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(f"{name} is not installed: pip install 'calibsuite_h5source[{extra}]'") from exc


def read_block(path: str, h5path: str, prefix: tuple, lo: int, hi: int, picks) -> np.ndarray:
    """A dask task: open ``path`` and read events ``lo:hi`` of ``h5path`` (or only ``picks``, absolute).

    The same reader as every other surface (:class:`calibsuite_h5source.h5.dataset.StoredDataset`):
    direct reads, decompression, damage checks, errors as ``H5SourceError``.
    """
    from calibsuite_h5source.h5.dataset import open_stored
    from calibsuite_h5source.h5.files import open_h5
    from calibsuite_h5source.h5.guard import guard

    f = open_h5(path, rdcc_nbytes=0)  # no chunk cache: chunks go straight to the block; a written file unlocked
    with f:
        with guard(path, h5path, "opening the dataset"):
            reader = open_stored(f, h5path, tuple(prefix))
        idx = np.arange(lo, hi, dtype=np.int64) if picks is None else np.asarray(picks, dtype=np.int64)
        event_shape, dtype = reader._event()
        out = np.empty((len(idx), *event_shape), dtype)
        reader.read_rows(idx, out)
    return out


def _dask_from(path: str, per_step, row_step, row_event, tail, dtype, name: str):
    da = _import("dask.array", "dask")
    from dask.base import tokenize

    dtype = np.dtype(dtype)
    if len(row_step) == 0:
        return da.from_array(np.zeros((0, *tail), dtype), chunks=-1)
    row_bytes = dtype.itemsize * int(np.prod(tail, dtype=np.int64))
    tasks, sizes = [], []
    bounds = np.flatnonzero(np.diff(row_step)) + 1
    for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(row_step)], strict=True):
        ea, ev = per_step[int(row_step[a])], row_event[a:b]
        ds = ea.dataset
        axis = len(ea.prefix)
        chunk = _chunk_events(ds, axis)
        block_events = max(chunk, (BLOCK_BYTES // max(row_bytes, 1)) // chunk * chunk)
        bid = ev // block_events
        cut = np.flatnonzero(np.diff(bid)) + 1
        for s, e in zip([0, *cut.tolist()], [*cut.tolist(), len(ev)], strict=True):
            lo, hi = int(ev[s]), int(ev[e - 1]) + 1
            picks = None if hi - lo == e - s else ev[s:e].copy()
            tasks.append((ds.file.filename, ds.name, tuple(ea.prefix), lo, hi, picks))
            sizes.append(e - s)
    key = f"{name}-{tokenize(path, tasks)}"
    graph = {(key, j) + (0,) * len(tail): (read_block, *t) for j, t in enumerate(tasks)}
    chunks = (tuple(sizes), *((n,) for n in tail))
    return da.Array(graph, key, chunks=chunks, dtype=dtype)


def dask_array(raw, step=None, *, missing="drop"):
    """Return an area detector's frames as a lazy dask array ``[event, module, row, col]``.

    One block per chunk-aligned range of one step's events (about
    :data:`BLOCK_BYTES`); each block opens the file by path, so any scheduler
    works (threads, processes, ``dask.distributed``).
    """
    src, _ = _area(raw)
    rows = area_rows(raw, step, None, missing)
    return _dask_from(src.steps[0].dataset.file.filename if src.steps else "", src.steps, *rows,
                      src.frame_shape, src.dtype, f"frames-{src.name}")


# -- xarray ------------------------------------------------------------------------------------

def coords(run, row_step: np.ndarray, row_event: np.ndarray) -> dict:
    """Per-row coordinates: ``timestamp``, ``step``, ``event`` (run-wide number) and every scan variable."""
    index = run._index
    starts = np.concatenate([[0], np.cumsum(index.n_events)[:-1]]).astype(np.int64)
    ts = np.zeros(len(row_step), np.uint64)
    for k in np.unique(row_step):
        at = row_step == k
        ts[at] = np.asarray(index.timestamps[int(k)], np.uint64)[row_event[at]]
    out = {"event": ("event", starts[row_step] + row_event if len(row_step) else row_step),
           "timestamp": ("event", ts), "step": ("event", row_step.copy())}
    for name, det in run._scan.items():
        if name == "step_docstring":
            continue
        if name in out or name in ("module", "row", "col"):
            log.debug("scan variable %r clashes with a dimension or coordinate name; left out", name)
            continue
        out[name] = ("event", scan_values(det._var, row_step, row_event))
    return out


def _xarray(data, run, rows, dims, name, attrs):
    xr = _import("xarray", "xarray")
    c = coords(run, *rows) if run is not None else {}
    if name in c and name not in dims:  # a scan variable's own array: its values are the data
        del c[name]
    return xr.DataArray(data, dims=dims, coords=c, name=name, attrs=attrs)


def to_xarray(raw, step=None, events=None, *, missing="drop", lazy=False, max_bytes=None):
    """Return an area detector's frames as an ``xarray.DataArray``.

    Dims ``(event, module, row, col)``; coordinates on ``event``: ``event``
    (the run-wide stored event number), ``timestamp``, ``step`` and every scan
    variable (``step_value`` included; ``step_docstring`` left out). The data
    is :func:`frames` (numpy), or :func:`dask_array` when ``lazy`` (then
    ``events`` must be None).
    """
    src, run = _area(raw)
    if lazy:
        if events is not None:
            raise ValueError("lazy=True reads every event of the selection; select with .isel(event=...) instead")
        data = dask_array(raw, step, missing=missing)
    else:
        data = frames(raw, step, events, missing=missing, max_bytes=max_bytes)
    rows = area_rows(raw, step, events, missing)
    return _xarray(data, run, rows, ("event", "module", "row", "col"), src.name,
                   {"detector": src.name, "file": getattr(run, "path", ""), "missing": missing})


# -- side data and scan variables ---------------------------------------------------------------

def _field(side_raw, field: str):
    fields = side_raw._fields
    if field not in fields:
        from calibsuite_h5source.errors import UnknownDetectorError

        raise UnknownDetectorError(f"{side_raw._name} stores no field {field!r}; fields: {sorted(fields)}")
    return fields[field]


def side_rows(side_raw, per_step, step=None, events=None, missing="drop"):
    """Selected ``(step, event)`` rows of side data, leaving out events its ``present`` mask marks absent."""
    masks = [side_raw.present(k) for k in range(len(per_step))]
    return select_rows(checked_counts(per_step, step), step, events, masks, missing)


def field_array(side_raw, field: str, step=None, events=None, *, missing="drop", max_bytes=None) -> np.ndarray:
    """Return one side-data field (``peakAmplitude``, ``eventcodes``...) as ``[event, ...]``, stored dtype.

    Events where the source has no data (its ``present`` mask) are left out,
    or kept as stored (zeros) with ``missing='keep'``, as for :func:`frames`.
    """
    per_step = _field(side_raw, field)
    rows = side_rows(side_raw, per_step, step, events, missing)
    ds = per_step[0].dataset
    shape = (len(rows[0]), *ds.shape[len(per_step[0].prefix) + 1:])
    _check_size(shape, ds.dtype, max_bytes, f"{side_raw._name}.{field}")
    return gather(per_step, *rows, np.empty(shape, dtype=ds.dtype))


def field_dask_array(side_raw, field: str, step=None, *, missing="drop"):
    """Lazy dask form of :func:`field_array` (same blocks as :func:`dask_array`)."""
    per_step = _field(side_raw, field)
    rows = side_rows(side_raw, per_step, step, None, missing)
    ds = per_step[0].dataset
    tail = ds.shape[len(per_step[0].prefix) + 1:]
    return _dask_from(ds.file.filename, per_step, *rows, tail, ds.dtype, f"{side_raw._name}-{field}")


def field_xarray(side_raw, field: str, step=None, events=None, *, missing="drop", max_bytes=None):
    """:func:`field_array` as a DataArray; dims ``event`` then ``dim_1``, ``dim_2``..., the run's coordinates."""
    per_step = _field(side_raw, field)
    rows = side_rows(side_raw, per_step, step, events, missing)
    data = field_array(side_raw, field, step, events, missing=missing, max_bytes=max_bytes)
    dims = ("event", *(f"dim_{j}" for j in range(1, data.ndim)))
    return _xarray(data, getattr(side_raw, "_run", None), rows, dims, field,
                   {"detector": side_raw._name, "field": field})


def scan_values(var, row_step: np.ndarray, row_event: np.ndarray) -> np.ndarray:
    """A scan variable's value at each row: per-event values when stored, else the step's."""
    if var.per_event is None:
        return np.asarray(var.per_step)[row_step]
    out = np.empty(len(row_step), dtype=np.asarray(var.per_step).dtype)
    for k in np.unique(row_step):
        at = row_step == k
        out[at] = np.asarray(var.per_event[int(k)])[row_event[at]]
    return out


def scan_array(scan_det, step=None, events=None) -> np.ndarray:
    """A scan variable's value at every selected event (``[event]``, float64; str for ``step_docstring``)."""
    run = scan_det._run
    rows = select_rows(run_counts(run._index, step), step, events)
    return scan_values(scan_det._var, *rows)


def scan_xarray(scan_det, step=None, events=None):
    """:func:`scan_array` as a DataArray over ``event`` with the run's coordinates."""
    run = scan_det._run
    rows = select_rows(run_counts(run._index, step), step, events)
    return _xarray(scan_values(scan_det._var, *rows), run, rows, ("event",), scan_det.name,
                   {"scan_variable": scan_det.name})
