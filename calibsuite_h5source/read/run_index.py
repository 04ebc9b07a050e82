"""Build the cached :class:`~calibsuite_h5source.read.index_types.RunIndex` of a run file.

``open_run_index(path)`` opens the file, collects its members by layout
(:mod:`calibsuite_h5source.read.layout`), checks every rule of ``docs/format.rst``
that can be checked without reading frame data, and reads the small things
once: event counts, timestamps, scan values, ``present`` masks. With the
writer's ``/ancillaryData/nEvents`` index, per-step datasets and timestamps
are opened (and checked) on first use instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import h5py
import numpy as np

from calibsuite_h5source.errors import (
    DataTypeError,
    FormatError,
    InconsistentRunError,
    MissingScriptTypeError,
    NotHDF5Error,
)
from calibsuite_h5source.format import rules
from calibsuite_h5source.format import timestamps as _ts
from calibsuite_h5source.format.constants import HEADER, step_number
from calibsuite_h5source.format.script_types import is_known_script_type
from calibsuite_h5source.h5.files import is_unlocked, open_h5
from calibsuite_h5source.h5.guard import guard
from calibsuite_h5source.h5.links import Origin
from calibsuite_h5source.h5.retry import retry
from calibsuite_h5source.read.index_types import (
    AreaSource,
    EventArray,
    LazySteps,
    RunIndex,
    check_same_event,
)
from calibsuite_h5source.read.layout import (
    LayoutMembers,
    StepCounts,
    detect_layout,
    read_header,
    stored_counts,
)
from calibsuite_h5source.read.scan import scan_variables

log = logging.getLogger(__name__)

def _present_masks(b: LayoutMembers, entry: dict, steps: list) -> Sequence:
    present = entry["present"]
    if "group" not in present:
        return [present.get(k) for k in range(len(steps))]
    group = present["group"]

    names = {}

    def load(k):
        if not names:  # listed once, at the first load
            names.update({step_number(m): m for m in group})
            names.setdefault(None, None)
        if k not in names:
            return None
        ds = b.member(group, names[k])
        where = f"{group.name}/{names[k]}"
        n = steps[k].n
        if not isinstance(ds, h5py.Dataset) or not (ds.shape == (n,) or b.strict and len(ds.shape or ()) == 1
                                                    and ds.shape[0] >= n):
            raise b.error(InconsistentRunError, where, f"present mask must have nEvents={steps[k].n} entries; "
                          f"found {getattr(ds, 'shape', type(ds).__name__)}")
        if ds.dtype.kind not in "biu":
            raise b.error(DataTypeError, where, f"present mask must be bool; found {ds.dtype}")
        return np.asarray(b.read_whole(ds, n), dtype=bool)

    if not b.indexed:  # a small run: every mask read, and checked, now
        return [load(k) for k in range(len(steps))]
    return LazySteps(len(steps), load, b.path, group.name)


def _timestamp_steps(b: LayoutMembers, arrays: list[EventArray], n_events: np.ndarray, where) -> list:
    """Stored timestamps as lazy per-step sequences; opened steps have their shape and dtype checked now."""
    out = []
    for k, ea in enumerate(arrays):
        n = int(n_events[k])

        def read(start, stop, ea=ea, k=k, n=n):
            with guard(b.path, where(k), f"reading the timestamps of step {k}"):
                _check_timestamp_dataset(b, ea, k, n, where(k))
                return ea.read_range(start, stop)

        if ea._dataset is not None:
            _check_timestamp_dataset(b, ea, k, n, where(k))
        out.append(_ts.StoredTimestamps(read, n, b.path, where(k)))
    return out


def _check_timestamp_dataset(b: LayoutMembers, ea: EventArray, k: int, n: int, where: str) -> None:
    ds = ea.dataset
    shape = None if ds.shape is None else ds.shape[len(ea.prefix):]
    if shape is None or len(shape) != 1 or shape[0] < n:
        raise b.error(InconsistentRunError, where, f"timestamps of step {k} must be [nEvents={n}]; found shape {shape}")
    _ts.check_dtype(ds.dtype, b.path, where)


def _check_alike(steps: list[EventArray]) -> None:
    """Every opened step of a side-data or header field has step 0's per-event shape and dtype (a lazy
    step is checked when opened, against the first step's: ``EventArray(expect=)``)."""
    first = None
    for k, ea in enumerate(steps):
        if ea._dataset is not None and ea.dataset.shape is not None:
            first = check_same_event(first, ea.dataset, ea.prefix, ea.where(), k)


def _check_area(b: LayoutMembers, name: str, steps: list[EventArray], h5path: str):
    """Return ``(frame shape, dtype)`` after checking every opened step: numeric ``[module, row, col]`` alike."""
    first = None
    for k, ea in enumerate(steps):
        if ea._dataset is None:  # lazy: checked against step 0 when first used
            continue
        ds = ea.dataset
        shape = ds.shape[len(ea.prefix):]
        where = f"{ds.name}" + (f"[{k}]" if ea.prefix else "")
        if len(shape) != 4:
            raise b.error(FormatError, where, f"{name} step {k} has shape {shape}: per-event data must be "
                          "[module, row, col] (a single module still has the module axis)")
        if ds.dtype.kind not in "biuf":
            raise b.error(DataTypeError, where, f"frames must be numeric (integer, float or bool); found "
                          f"{'compound' if ds.dtype.names else 'string' if ds.dtype.kind in 'SUO' else ds.dtype.kind} "
                          f"dtype {ds.dtype}")
        first = check_same_event(first, ds, ea.prefix, (b.path, where), k)
    return first


#: calibration constants whose shape must be the frame's or ``[gain, *frame]``.
SHAPED_CONSTANTS = ("pedestals", "pixel_gain", "pixel_rms", "pixel_status")


def _check_calib(b: LayoutMembers, calib: h5py.Group | None, frame_shape: tuple) -> None:
    """Every member of ``calib/`` is a numeric dataset; the known constants have the frame's shape."""
    if calib is None:
        return
    for ctype, ds in b.items(calib):
        where = f"{calib.name}/{ctype}"
        if not isinstance(ds, h5py.Dataset) or ds.shape is None:
            raise b.error(DataTypeError, where, f"a calibration constant must be an array; found {type(ds).__name__}")
        if ctype in SHAPED_CONSTANTS:
            if ds.dtype.kind not in "biuf":
                raise b.error(DataTypeError, where, f"{ctype} must be numeric; found dtype {ds.dtype}")
            if frame_shape and ds.shape not in (frame_shape, ds.shape[:1] + frame_shape) or len(ds.shape) not in (3, 4):
                raise b.error(FormatError, where, f"{ctype} must be [module, row, col] = {list(frame_shape)} or "
                              f"[gain, module, row, col]; found shape {ds.shape}")


def _detector_attrs(b: LayoutMembers, attrs: dict, dtype, h5path: str) -> dict:
    """Decoded group attributes with the documented ones checked (:data:`calibsuite_h5source.format.rules.DETECTOR`)."""
    values = rules.apply(rules.DETECTOR, {k: rules.decode(v) for k, v in attrs.items()}, b.path, h5path)
    if "gainBitsMask" in values:
        values["gainBitsMask"] = rules.check("gainBitsMask", lambda v: rules.gain_bits_mask(v, dtype),
                                             values["gainBitsMask"], b.path, h5path)
    return values


def check_every_step(index: RunIndex) -> None:
    """Apply now every rule the index would apply when a step is first reached (for validation).

    Each step is counted, every dataset of it opened and checked against the
    index (events, per-event shape and dtype), and every ``present`` mask
    loaded and checked; the first broken rule is raised as an
    :class:`~calibsuite_h5source.errors.H5SourceError`. Frame data is not read.
    """
    for k in range(index.n_steps):
        index.step_events(k)
    arrays = [src.steps for src in index.area.values()]
    arrays += [steps for src in index.area.values() for steps in src.headers.values()]
    arrays += [steps for fields in index.side.values() for steps in fields.values()]
    for steps in arrays:
        for ea in steps:
            ea.dataset  # noqa: B018 - opening checks it
    for name in [*index.area, *index.side_present]:
        masks = index.present_of(name)
        for k in range(len(masks)):
            masks[k]  # noqa: B018 - loading checks it


def open_run_index(path, zero_copy: bool = False) -> RunIndex:
    """Open ``path`` and build its :class:`RunIndex` (see ``docs/architecture.rst``).

    ``zero_copy``: read large frames as copy-on-write mappings of the file
    (see :mod:`calibsuite_h5source.h5.fastread`).

    Raises
    ------
    NotHDF5Error
        Missing, unreadable, not HDF5, truncated or corrupted.
    MissingScriptTypeError
        No ``scriptType`` in the header.
    FormatError, InconsistentRunError
        Any other broken rule of ``docs/format.rst``.
    """
    path = str(path)

    def attempt() -> RunIndex:
        f = open_h5(path)
        try:
            return build_index(f, path, zero_copy=zero_copy)
        except NotHDF5Error as exc:  # includes DamagedFileError: a writer's flush may have been half-done
            unlocked = is_unlocked(f)
            f.close()
            if unlocked:
                raise _MidFlush() from exc
            raise
        except BaseException:
            f.close()
            raise

    try:
        return retry(attempt, attempts=3, on=(_MidFlush,), what=f"opening {path} while it is written")
    except _MidFlush as exc:
        raise exc.__cause__ from exc.__cause__.__cause__


class _MidFlush(Exception):
    """Opening a file its writer holds failed: look again (the failure is the ``__cause__``)."""


def build_index(f: h5py.File, path: str, *, zero_copy: bool = False, visible: list[int] | None = None) -> RunIndex:
    """Build the :class:`RunIndex` of an open file: the one layout parser of finished and live runs.

    Parameters
    ----------
    f : h5py.File
        The open run file.
    path : str
        The run file as named (for errors).
    zero_copy : bool
        Large frames read as copy-on-write mappings.
    visible : list of int, optional
        A run being written (:mod:`calibsuite_h5source.psana2.live`): the
        events per step its writer's counters cover, finished steps then the
        open one. Only those are indexed; datasets may hold more (the
        writer's next block); every read is strict (a chunk the counters
        promise but the chunk index does not list is an error to retry,
        never zeros).

    Every failure is raised as an :class:`~calibsuite_h5source.errors.H5SourceError`
    (:mod:`calibsuite_h5source.h5.guard`).
    """
    with guard(path, None, "opening the run" if visible is None else "reading the run being written"):
        return _build_index(f, path, zero_copy, visible)


def _build_index(f: h5py.File, path: str, zero_copy: bool, visible) -> RunIndex:
    origin = Origin(path, zero_copy)
    b = LayoutMembers(f, path, origin)
    b.strict = visible is not None
    header, script_type, layout = _header_and_layout(b, f, path)
    complete, n_keep = _completeness(b, f, path, header, visible)
    _collect(b, f, layout, complete, n_keep, visible)
    area, sources = _area_sources(b, n_keep)
    side, side_present = _side_sources(b, n_keep, sources)
    if not sources:
        raise b.error(FormatError, "/", "a run must have at least one step of detector or side data; found none "
                      f"(top-level members: {sorted(f.keys())})")
    n_events, ref_path = _event_counts(b, sources)
    timestamps, synthesised = _timestamps(b, header, n_events, n_keep, ref_path)
    scan, step_value, step_doc = scan_variables(b, header, n_events)
    return RunIndex(
        path=path, file=f, layout=layout, header=header, script_type=str(script_type), run_id=header.get("run", 0),
        complete=complete, n_events=n_events, timestamps=timestamps, timestamps_synthesised=synthesised,
        area=area, side=side, side_present=side_present, scan=scan, step_value=step_value, step_docstring=step_doc,
    )


def _header_and_layout(b: LayoutMembers, f: h5py.File, path: str):
    with guard(path, f"/{HEADER}", "reading the header"):
        header = read_header(f, b.origin)
    script_type = header.get("scriptType")
    if not script_type:
        found = sorted(header) or "nothing"
        raise MissingScriptTypeError(
            f"the header must have a 'scriptType' attribute (docs/format.rst); found {found}",
            file=path, h5path=f"/{HEADER}")
    if not is_known_script_type(script_type):
        log.warning("%s: scriptType %r is not a recognised type (see calibsuite_h5source.known_script_types())",
                    path, script_type)
    return header, script_type, detect_layout(f, b.origin)


def _completeness(b: LayoutMembers, f: h5py.File, path: str, header: dict, visible):
    """``(complete, n_keep)``: steps to index of an incomplete run (None: all)."""
    complete = header.get("complete", True)
    if visible is not None:
        complete = bool(complete) and len(visible) >= int(header.get("stepsComplete", len(visible)) or 0)
        b.complete = complete
        return complete, len(visible)
    n_keep = None
    if not complete:
        n_keep = header.get("stepsComplete", 0)
        if is_unlocked(f) and not header.get("error"):
            log.warning("%s: the run is being written; reading its %d finished steps "
                        "(DataSource(files=..., live=True) follows it as it grows)", path, n_keep)
        else:
            log.warning("%s: the run is incomplete (its writer did not close it); reading its %d finished steps%s",
                        path, n_keep, f" (error: {header['error']})" if header.get("error") else "")
    b.complete = complete
    return complete, n_keep


def _collect(b: LayoutMembers, f: h5py.File, layout: str, complete, n_keep, visible) -> None:
    """Collect the members by layout (with the writer's index: lazily, names only)."""
    group = b.member(f, HEADER) if layout == "canonical" else None
    index = b.member(group, "nEvents") if isinstance(group, h5py.Group) else None
    if visible is not None:
        if layout != "canonical":
            raise b.error(FormatError, "/", f"a run being written must have the canonical layout; found {layout}")
        b.collect_indexed(np.asarray(visible, dtype=np.int64), False)
    elif index is not None:
        counts = stored_counts(index, b.path, b.origin)
        b.collect_indexed(counts if n_keep is None else counts[:n_keep], complete)
    elif layout == "canonical" and b.many_steps():
        b.collect_indexed(None, complete)
    else:
        getattr(b, f"collect_{layout}")()


def _area_sources(b: LayoutMembers, n_keep):
    """Area detectors as :class:`AreaSource` s, and ``[(h5path, per-step EventArrays)]`` of them and their header fields."""
    sources: list[tuple[str, list[EventArray]]] = []
    area = {}
    for name, entry in b.area.items():
        steps = b.contiguous(entry["steps"], entry["h5path"], n_keep)
        frame = _check_area(b, name, steps, entry["h5path"])
        present = _present_masks(b, entry, steps)
        frame_shape, dtype = (tuple(frame[0]), frame[1]) if frame else ((), None)
        attrs = _detector_attrs(b, entry["attrs"], dtype, entry["h5path"])
        _check_calib(b, entry["calib"], frame_shape)
        sources.append((entry["h5path"], steps))
        headers = {}
        for field_name, fsteps in entry.get("headers", {}).items():  # per-event header fields
            hpath = f"{entry['h5path']}/{field_name}"
            headers[field_name] = b.contiguous(fsteps, hpath, n_keep)
            _check_alike(headers[field_name])
            sources.append((hpath, headers[field_name]))
        area[name] = AreaSource(name, steps, frame_shape, dtype, present, attrs, entry["calib"], entry["h5path"], headers)
    return area, sources


def _side_sources(b: LayoutMembers, n_keep, sources: list) -> tuple[dict, dict]:
    """Side data ``{name: {field: per-step EventArrays}}``, and ``{name: per-step present mask or None}``
    of the sources with a ``present`` group (the same rule as an area detector's masks)."""
    side, present = {}, {}
    for name, fields in b.side.items():
        side[name] = {}
        for field_name, steps in fields.items():
            lst = b.contiguous(steps, f"/{name}/{field_name}", n_keep)
            _check_alike(lst)
            side[name][field_name] = lst
            sources.append((f"/{name}/{field_name}", lst))
        if name in b.side_present and side[name]:
            present[name] = _present_masks(b, {"present": b.side_present[name]}, next(iter(side[name].values())))
    return side, present


def _event_counts(b: LayoutMembers, sources: list):
    """Events per step, after checking that every source has the same steps and events (each ``present``
    mask is checked against its source's events when loaded: :func:`_present_masks`)."""
    ref_path, ref = sources[0]
    for spath, steps in sources[1:]:
        if len(steps) != len(ref):
            raise b.error(InconsistentRunError, spath,
                          f"every detector must have the same steps; {ref_path} has {len(ref)} steps, {spath} has {len(steps)}")
    if b.counter is not None:  # a long run without the writer's index: each step counted when first reached
        n_events = StepCounts(len(ref), b.counter)
        sources = []
    else:
        n_events = np.array([ea.n for ea in ref], dtype=np.int64)
    for spath, steps in sources[1:]:
        counts = [ea.n for ea in steps]
        bad = [k for k in range(len(ref)) if counts[k] != n_events[k]]
        if bad:
            k = bad[0]
            raise b.error(InconsistentRunError, spath,
                          f"every detector must have the same events per step; step {k}: {ref_path} has "
                          f"{n_events[k]} events, {spath} has {counts[k]}")
    if len(n_events) == 0:
        raise b.error(FormatError, ref_path, "a run must have at least one step; found 0 steps")
    return n_events, ref_path


def _timestamps(b: LayoutMembers, header: dict, n_events, n_keep, ref_path: str):
    """``(per-step timestamps, synthesised)``: stored ones (lazy, checked), else psana-like synthetic ones."""
    run_id = header.get("run", 0)
    path = b.path
    if not b.timestamps:
        _ts.check_run_start(run_id, file=path)
    if b.timestamps:
        ts_list = b.contiguous(b.timestamps, b.ts_path, n_keep)
        if len(ts_list) != len(n_events):
            raise b.error(InconsistentRunError, b.ts_path,
                          f"timestamps must exist for every step; found {len(ts_list)} of {len(n_events)} steps")
        for k, ea in enumerate(ts_list):
            if ea._dataset is not None and ea.n != n_events[k]:
                raise b.error(InconsistentRunError, _ts_where(b, k, ea),
                              f"timestamps of step {k} must be [nEvents={n_events[k]}]; found shape {ea.dataset.shape}")
        if b.counter is not None:
            timestamps = LazySteps(len(ts_list), lambda k: _timestamp_steps(
                b, [ts_list[k]], [n_events[k]], lambda _: _ts_where(b, k, ts_list[k]))[0], path, b.ts_path)
        else:
            timestamps = _timestamp_steps(b, ts_list, n_events, lambda k: _ts_where(b, k, ts_list[k]))
        if not b.indexed:  # small runs: every rule checked now; large ones block by block when read
            _check_first_blocks(path, timestamps)
        return timestamps, False
    if b.counter is not None:
        return LazySteps(len(n_events), lambda k: _ts.synthetic_step(run_id, n_events.start(k), int(n_events[k])),
                         path, None), True
    return _ts.synthetic_steps(run_id, n_events), True


def _ts_where(b: LayoutMembers, k: int, ea: EventArray) -> str:
    if "<k>" in b.ts_path:
        return b.ts_path.replace("<k>", str(k))
    if ea._dataset is None and b.ts_group is not None:  # lazy: named without opening anything
        return f"{b.ts_path}/{ea._name}"
    file, h5path = ea.where()
    return h5path if not ea.prefix else f"{h5path}[{k}]"


def _check_first_blocks(path: str, timestamps: list) -> None:
    """Load (and so check) the first block of every step; warn when those do not strictly increase."""
    last = None
    for ts in timestamps:
        if not len(ts):
            continue
        block = ts.block(0, min(len(ts), _ts.BLOCK))
        ts.at(0)  # keep the block cached for the first reads
        if (len(block) > 1 and np.any(block[1:] <= block[:-1])) or (last is not None and block[0] <= last):
            log.warning("%s: timestamps are not strictly increasing (validate reports where)", path)
            return
        last = block[-1] if len(block) == len(ts) else None
