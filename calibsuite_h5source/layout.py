"""Open a run file, detect its layout and build its :class:`RunIndex`.

Only small things are read here (header, shapes, event counts, timestamps,
scan values, ``present`` masks); frame data stays on disk behind cached
``h5py.Dataset`` handles. The four layouts of ``docs/format.rst`` (canonical,
padded, step sub-groups, legacy) are normalised into the same index.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from . import timestamps as _ts
from .detector_types import DETECTOR_TYPES
from .errors import (
    FormatError,
    H5SourceError,
    InconsistentRunError,
    MissingScriptTypeError,
    NotHDF5Error,
)
from .index_types import AreaSource, EventArray, LazySteps, RunIndex, ScanVariable
from .script_types import is_known_script_type

log = logging.getLogger(__name__)

try:  # compressed files (bitshuffle, Blosc, Zstd) open transparently when installed
    import hdf5plugin  # noqa: F401
except ImportError:  # pragma: no cover - optional
    pass

HEADER = "ancillaryData"
RESERVED_ROOT = {HEADER, "timestamp", "nEvents"}
RESERVED_DETECTOR = {"present", "calib", "nEvents"}
_STEP_RE = re.compile(r"^(?:step_?)?(\d+)$")


def step_number(name: str) -> int | None:
    """Return the step number of a member named ``3``, ``step3`` or ``step_3``; else None."""
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def open_h5(path) -> h5py.File:
    """Open ``path`` read-only, turning every failure into a clear :class:`NotHDF5Error`."""
    p = Path(path)
    if not p.exists():
        raise NotHDF5Error("file does not exist", file=str(p))
    if p.is_dir():
        raise NotHDF5Error("is a directory, not an HDF5 file", file=str(p))
    if not os.access(p, os.R_OK):
        raise NotHDF5Error("permission denied: the file is not readable", file=str(p))
    if not h5py.is_hdf5(p):
        with open(p, "rb") as fh:
            head = fh.read(8)
        raise NotHDF5Error(
            f"not an HDF5 file: no HDF5 signature; found first bytes {head!r} (size {p.stat().st_size} bytes)",
            file=str(p),
        )
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise NotHDF5Error(f"HDF5 file is truncated or corrupted: {exc}", file=str(p)) from exc


def _py(value):
    """Decode an HDF5 attribute/scalar into a plain python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.shape == ():
            return _py(value[()])
        return [_py(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_header(f: h5py.File) -> dict:
    """Return the header: ``/ancillaryData`` attributes and scalar datasets (legacy: root)."""
    header = {}
    group = f.get(HEADER)
    if isinstance(group, h5py.Group):
        header.update({k: _py(v) for k, v in group.attrs.items()})
        for k, obj in group.items():
            if isinstance(obj, h5py.Dataset) and obj.shape == () and k not in header:
                header[k] = _py(obj[()])
    elif "scriptType" not in header:  # legacy files keep it at the root
        if "scriptType" in f.attrs:
            header["scriptType"] = _py(f.attrs["scriptType"])
        elif isinstance(f.get("scriptType"), h5py.Dataset):
            header["scriptType"] = _py(f["scriptType"][()])
    return header


def detect_layout(f: h5py.File) -> str:
    """Return ``'legacy'``, ``'stepgroups'``, ``'padded'`` or ``'canonical'``."""
    if isinstance(f.get("frames"), h5py.Dataset):
        return "legacy"
    names = list(f.keys())
    if any(name.startswith("step") and step_number(name) is not None for name in names):
        return "stepgroups"
    if "nEvents" in names or isinstance(f.get("timestamp"), h5py.Dataset):
        return "padded"
    if any(isinstance(f[n], h5py.Dataset) for n in names if n not in RESERVED_ROOT):
        return "padded"
    return "canonical"


class _Builder:
    """Collects per-step sources from one file, then checks and normalises them."""

    def __init__(self, f: h5py.File, path: str):
        self.f = f
        self.path = path
        self.area: dict[str, dict] = {}  # name -> {steps: {k: EventArray}, present: {k: arr}, ...}
        self.side: dict[str, dict[str, dict[int, EventArray]]] = {}
        self.timestamps: dict[int, np.ndarray] = {}
        self.ts_path = "/timestamp"
        self.ts_group = None
        self.indexed = False

    def error(self, cls, h5path, message):
        return cls(message, file=self.path, h5path=h5path)

    # -- collection, one method per layout ---------------------------------------
    def steps_of(self, group: h5py.Group) -> dict[int, h5py.Dataset]:
        out = {}
        for name, obj in group.items():
            k = step_number(name)
            if k is not None and isinstance(obj, h5py.Dataset):
                if k in out:
                    raise self.error(FormatError, obj.name, f"step {k} is stored twice (as {name} and another name)")
                out[k] = obj
        return out

    def add_area(self, name, h5path, steps: dict[int, EventArray], attrs, present=None, calib=None):
        self.area[name] = dict(steps=steps, attrs=attrs, present=present or {}, calib=calib, h5path=h5path)

    def collect_canonical(self):
        for name, obj in self.f.items():
            if name in (HEADER,) or not isinstance(obj, h5py.Group):
                continue
            if name == "timestamp":
                self.timestamps = {k: ds[()] for k, ds in self.steps_of(obj).items()}
                continue
            steps = self.steps_of(obj)
            if steps:
                present = obj.get("present")
                self.add_area(
                    name, obj.name,
                    {k: EventArray(ds, (), ds.shape[0] if ds.ndim else 0) for k, ds in steps.items()},
                    dict(obj.attrs),
                    present={k: ds[()].astype(bool) for k, ds in self.steps_of(present).items()}
                    if isinstance(present, h5py.Group) else None,
                    calib=obj.get("calib") if isinstance(obj.get("calib"), h5py.Group) else None,
                )
                continue
            fields = {}
            for field_name, sub in obj.items():
                if isinstance(sub, h5py.Group):
                    fsteps = self.steps_of(sub)
                    if fsteps:
                        fields[field_name] = {k: EventArray(ds, (), ds.shape[0] if ds.ndim else 0) for k, ds in fsteps.items()}
            if fields:
                self.side[name] = fields
            else:
                log.debug("%s: ignoring group %s (no step datasets)", self.path, obj.name)

    def collect_indexed(self, counts: np.ndarray, complete: bool):
        """Canonical layout with the writer's ``/ancillaryData/nEvents``: list names, open nothing per step.

        Each step's datasets are opened, and checked against ``counts``, when
        first used (``EventArray`` and ``LazySteps``).
        """
        self.indexed = True
        n = len(counts)

        def named_steps(group, what):
            steps = {}
            for m in group:
                k = step_number(m)
                if k is not None:
                    steps[k] = m
            keys = sorted(steps)
            if keys[:n] != list(range(n)) or (complete and len(keys) != n):
                raise self.error(InconsistentRunError, what, f"/ancillaryData/nEvents lists {n} steps; "
                                 f"found steps {keys[:20]}{' ...' if len(keys) > 20 else ''}")
            return {k: steps[k] for k in range(n)}

        def lazy(group, names, with_expect=True):
            first = group[names[0]]
            expect = (first.shape[1:], first.dtype) if with_expect else None
            return {k: EventArray(first if k == 0 else None, (), int(counts[k]), group=group, name=m, expect=expect)
                    for k, m in names.items()}

        for name, obj in self.f.items():
            if name == HEADER or not isinstance(obj, h5py.Group):
                continue
            if name == "timestamp":
                self.timestamps = named_steps(obj, obj.name)
                self.ts_group = obj
                continue
            step_members = [m for m in obj if step_number(m) is not None]
            if step_members:
                names = named_steps(obj, obj.name)
                present = obj.get("present")
                calib = obj.get("calib")
                self.add_area(name, obj.name, lazy(obj, names), dict(obj.attrs),
                              present={"group": present} if isinstance(present, h5py.Group) else None,
                              calib=calib if isinstance(calib, h5py.Group) else None)
                continue
            fields = {}
            for field_name in obj:
                sub = obj[field_name]
                if isinstance(sub, h5py.Group):
                    fields[field_name] = lazy(sub, named_steps(sub, sub.name))
            if fields:
                self.side[name] = fields

    def collect_padded(self):
        n_events = self.f.get("nEvents")
        if n_events is None:  # a detector group's own nEvents then holds for the whole run
            n_events = next((g["nEvents"] for g in self.f.values()
                             if isinstance(g, h5py.Group) and isinstance(g.get("nEvents"), h5py.Dataset)), None)
        root_n = None if n_events is None else np.asarray(n_events[()], dtype=np.int64)

        def padded(ds, n):
            if ds.ndim < 2:
                raise self.error(FormatError, ds.name, f"padded data must be [nSteps, maxEvents, ...]; found shape {ds.shape}")
            counts = np.full(ds.shape[0], ds.shape[1], dtype=np.int64) if n is None else n
            if len(counts) != ds.shape[0]:
                raise self.error(InconsistentRunError, ds.name,
                                 f"nEvents has {len(counts)} entries but the data has {ds.shape[0]} steps")
            if np.any(counts > ds.shape[1]) or np.any(counts < 0):
                raise self.error(InconsistentRunError, ds.name,
                                 f"nEvents {counts.tolist()} exceeds the padded event axis ({ds.shape[1]})")
            return {k: EventArray(ds, (k,), int(counts[k])) for k in range(ds.shape[0])}

        for name, obj in self.f.items():
            if name in (HEADER, "nEvents"):
                continue
            if name == "timestamp":
                self.timestamps = {k: ea.read_all() for k, ea in padded(obj, root_n).items()}
                continue
            if isinstance(obj, h5py.Dataset):
                self.add_area(name, obj.name, padded(obj, root_n), dict(obj.attrs))
            elif isinstance(obj, h5py.Group):
                local_n = np.asarray(obj["nEvents"][()], dtype=np.int64) if "nEvents" in obj else root_n
                data = [ds for k, ds in obj.items() if isinstance(ds, h5py.Dataset) and k != "nEvents"]
                if len(data) == 1 and data[0].ndim == 5 and "nEvents" in obj:
                    self.add_area(name, obj.name, padded(data[0], local_n), dict(obj.attrs))
                else:
                    self.side[name] = {k: padded(ds, local_n) for k, ds in obj.items()
                                       if isinstance(ds, h5py.Dataset) and k != "nEvents"}

    def collect_stepgroups(self):
        for gname, group in self.f.items():
            k = step_number(gname)
            if k is None or not gname.startswith("step") or not isinstance(group, h5py.Group):
                continue
            for name, obj in group.items():
                if name == "timestamp" and isinstance(obj, h5py.Dataset):
                    self.timestamps[k] = obj[()]
                elif isinstance(obj, h5py.Dataset):
                    entry = self.area.setdefault(name, dict(steps={}, attrs=dict(obj.attrs), present={}, calib=None,
                                                            h5path=f"/step<k>/{name}"))
                    entry["steps"][k] = EventArray(obj, (), obj.shape[0] if obj.ndim else 0)
                elif isinstance(obj, h5py.Group):
                    for field_name, ds in obj.items():
                        if isinstance(ds, h5py.Dataset):
                            self.side.setdefault(name, {}).setdefault(field_name, {})[k] = EventArray(ds, (), ds.shape[0])
        self.ts_path = "/step<k>/timestamp"

    def collect_legacy(self):
        frames = self.f["frames"]
        if frames.ndim != 5:
            raise self.error(FormatError, frames.name,
                             f"legacy frames must be [step, event, module, row, col]; found shape {frames.shape}")
        name = _py(frames.attrs.get("detector", "")) or _legacy_detector_name(frames.shape[2:])
        self.add_area(name, frames.name, {k: EventArray(frames, (k,), frames.shape[1]) for k in range(frames.shape[0])},
                      dict(frames.attrs))

    # -- normalisation ---------------------------------------------------------------
    def contiguous(self, steps: dict, what: str, n_keep: int | None) -> list:
        keys = sorted(steps)
        if n_keep is not None:
            keys = [k for k in keys if k < n_keep]
        if keys != list(range(len(keys))):
            raise self.error(FormatError, what, f"steps must be numbered contiguously from 0; found {keys}")
        return [steps[k] for k in keys]


def _present_masks(b: _Builder, entry: dict, steps: list) -> Sequence:
    present = entry["present"]
    if "group" not in present:
        return [present.get(k) for k in range(len(steps))]
    group = present["group"]

    def load(k):
        names = {step_number(m): m for m in group}
        if k not in names:
            return None
        mask = group[names[k]][()].astype(bool)
        if mask.shape != (steps[k].n,):
            raise b.error(InconsistentRunError, f"{group.name}/{names[k]}",
                          f"present mask must have nEvents={steps[k].n} entries; found {mask.shape}")
        return mask

    return LazySteps(len(steps), load)


def _step_timestamps(b: _Builder, k: int, n: int) -> np.ndarray:
    name = b.timestamps[k]
    ts = b.ts_group[name][()]
    if ts.shape != (n,):
        raise b.error(InconsistentRunError, f"{b.ts_group.name}/{name}",
                      f"timestamps of step {k} must be [nEvents={n}]; found shape {ts.shape}")
    return ts.astype(np.uint64)


def _legacy_detector_name(frame_shape) -> str:
    matches = [t.name for t in DETECTOR_TYPES.values() if t.frame_shape == tuple(frame_shape)]
    return matches[0] if len(matches) == 1 else "frames"


def _check_area(b: _Builder, name: str, steps: list[EventArray], h5path: str):
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
        if first is None:
            first = (shape[1:], ds.dtype)
        elif (shape[1:], ds.dtype) != first:
            raise b.error(FormatError, where, f"per-event shape/dtype must be the same in every step; step 0 has "
                          f"{first[0]} {first[1]}, step {k} has {shape[1:]} {ds.dtype}")
    return first


def _scan_variables(b: _Builder, header: dict, n_events: np.ndarray) -> tuple[dict, np.ndarray | None, list | None]:
    f, n_steps = b.f, len(n_events)
    group = f.get(HEADER)
    scan, step_value, step_doc = {}, None, None
    members = dict(group.items()) if isinstance(group, h5py.Group) else {}
    if "step_value" not in members and isinstance(f.get("step_value"), h5py.Dataset):
        members["step_value"] = f["step_value"]  # legacy: at the root
    declared = header.get("ancillaryDataType") or []
    declared = [declared] if isinstance(declared, str) else list(declared)
    for name in declared:
        if name not in members:
            log.warning("%s: ancillaryDataType names %r but /%s/%s does not exist", b.path, name, HEADER, name)
    members.pop("nEvents", None)  # the writer's index of events per step
    for name, obj in members.items():
        where = obj.name
        if isinstance(obj, h5py.Dataset) and obj.shape == ():
            continue  # header value
        if name == "step_docstring":
            vals = [_py(v) for v in obj[()][:n_steps]] if obj.ndim == 1 else []
            if len(vals) != n_steps:
                raise b.error(InconsistentRunError, where, f"step_docstring must have nSteps={n_steps} entries; found {obj.shape}")
            step_doc = [str(v) for v in vals]
            continue
        if isinstance(obj, h5py.Group):
            per = b.steps_of(obj)
            arrays = []
            for k in range(n_steps):
                if k not in per:
                    raise b.error(InconsistentRunError, f"{where}/{k}", f"per-event scan variable has no dataset for step {k}")
                arr = per[k][()]
                if arr.shape[:1] != (n_events[k],):
                    raise b.error(InconsistentRunError, per[k].name,
                                  f"per-event scan variable must have nEvents={n_events[k]} values; found shape {arr.shape}")
                arrays.append(arr)
        elif obj.dtype.kind not in "biuf":
            log.debug("%s: %s is not numeric; not a scan variable", b.path, where)
            continue
        elif obj.ndim == 1:
            data = obj[()]
            if data.shape[0] < n_steps or (data.shape[0] != n_steps and b.complete):
                raise b.error(InconsistentRunError, where,
                              f"per-step scan variable must have nSteps={n_steps} values; found {data.shape[0]}")
            data = data[:n_steps].astype(np.float64)
            if name == "step_value":
                step_value = data
            else:
                scan[name] = ScanVariable(name, data)
            continue
        elif obj.ndim == 2:
            if obj.shape[0] < n_steps or obj.shape[1] < (n_events.max() if n_steps else 0):
                raise b.error(InconsistentRunError, where,
                              f"padded per-event scan variable must be [nSteps={n_steps}, maxEvents>={n_events.max()}]; found {obj.shape}")
            data = obj[()]
            arrays = [data[k, : n_events[k]] for k in range(n_steps)]
        else:
            raise b.error(FormatError, where, f"a scan variable must be [nSteps], [nSteps, maxEvents] or a group of steps; found shape {obj.shape}")
        per_step = np.array([float(a[0]) if len(a) else np.nan for a in arrays], dtype=np.float64)
        var = ScanVariable(name, per_step, [np.asarray(a) for a in arrays])
        if name == "step_value":
            step_value = per_step
        else:
            scan[name] = var
    return scan, step_value, step_doc


def open_run_index(path) -> RunIndex:
    """Open ``path`` and build its :class:`RunIndex` (see ``docs/architecture.rst``).

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
    f = open_h5(path)
    try:
        return _build(f, path)
    except H5SourceError:
        f.close()
        raise
    except (OSError, KeyError, RuntimeError) as exc:  # h5py errors on damaged objects
        f.close()
        raise NotHDF5Error(f"HDF5 file is damaged: {exc}", file=path) from exc
    except BaseException:
        f.close()
        raise


def _build(f: h5py.File, path: str) -> RunIndex:
    b = _Builder(f, path)
    try:
        header = read_header(f)
    except OSError as exc:
        raise NotHDF5Error(f"cannot read the header: HDF5 file is damaged ({exc})", file=path, h5path=f"/{HEADER}") from exc
    script_type = header.get("scriptType")
    if not script_type:
        found = sorted(header) or "nothing"
        raise MissingScriptTypeError(
            f"the header must have a 'scriptType' attribute (docs/format.rst); found {found}",
            file=path, h5path=f"/{HEADER}")
    if not is_known_script_type(script_type):
        log.warning("%s: scriptType %r is not a recognised type (see calibsuite_h5source.known_script_types())",
                    path, script_type)
    layout = detect_layout(f)
    complete = bool(header.get("complete", True))
    n_keep = None
    if not complete:
        n_keep = int(header.get("stepsComplete", 0))
        log.warning("%s: the run is incomplete (its writer did not close it); reading its %d finished steps%s",
                    path, n_keep, f" (error: {header['error']})" if header.get("error") else "")
    b.complete = complete
    index = f.get(f"{HEADER}/nEvents") if layout == "canonical" else None
    try:
        if isinstance(index, h5py.Dataset) and index.ndim == 1:
            counts = np.asarray(index[()], dtype=np.int64)
            b.collect_indexed(counts if n_keep is None else counts[:n_keep], complete)
        else:
            getattr(b, f"collect_{layout}")()
    except OSError as exc:
        raise NotHDF5Error(f"HDF5 file is damaged while reading the {layout} layout: {exc}", file=path) from exc

    # every source as a list of per-step EventArrays; all must agree on steps and events
    sources: list[tuple[str, list[EventArray]]] = []
    area = {}
    for name, entry in b.area.items():
        steps = b.contiguous(entry["steps"], entry["h5path"], n_keep)
        frame = _check_area(b, name, steps, entry["h5path"])
        present = _present_masks(b, entry, steps)
        area[name] = AreaSource(name, steps, tuple(frame[0]) if frame else (), frame[1] if frame else None,
                                present, entry["attrs"], entry["calib"], entry["h5path"])
        sources.append((entry["h5path"], steps))
    side = {}
    for name, fields in b.side.items():
        side[name] = {}
        for field_name, steps in fields.items():
            lst = b.contiguous(steps, f"/{name}/{field_name}", n_keep)
            side[name][field_name] = lst
            sources.append((f"/{name}/{field_name}", lst))
    if not sources:
        raise b.error(FormatError, "/", "a run must have at least one step of detector or side data; found none "
                      f"(top-level members: {sorted(f.keys())})")
    ref_path, ref = sources[0]
    n_events = np.array([ea.n for ea in ref], dtype=np.int64)
    for spath, steps in sources[1:]:
        if len(steps) != len(ref):
            raise b.error(InconsistentRunError, spath,
                          f"every detector must have the same steps; {ref_path} has {len(ref)} steps, {spath} has {len(steps)}")
        counts = [ea.n for ea in steps]
        bad = [k for k in range(len(ref)) if counts[k] != n_events[k]]
        if bad:
            k = bad[0]
            raise b.error(InconsistentRunError, spath,
                          f"every detector must have the same events per step; step {k}: {ref_path} has "
                          f"{n_events[k]} events, {spath} has {counts[k]}")
    for name, src in area.items():
        for k, mask in enumerate(src.present):
            if mask is not None and mask.shape != (n_events[k],):
                raise b.error(InconsistentRunError, f"/{name}/present/{k}",
                              f"present mask must have nEvents={n_events[k]} entries; found {mask.shape}")
    if len(n_events) == 0:
        raise b.error(FormatError, ref_path, "a run must have at least one step; found 0 steps")

    run_id = int(header.get("run", 0) or 0)
    if b.timestamps and b.indexed:
        timestamps = LazySteps(len(n_events), lambda k: _step_timestamps(b, k, n_events[k]))
        synthesised = False
    elif b.timestamps:
        ts_list = b.contiguous(b.timestamps, b.ts_path, n_keep)
        if len(ts_list) != len(n_events):
            raise b.error(InconsistentRunError, b.ts_path,
                          f"timestamps must exist for every step; found {len(ts_list)} of {len(n_events)} steps")
        timestamps = []
        for k, ts in enumerate(ts_list):
            ts = np.asarray(ts)
            if ts.shape[:1] != (n_events[k],) or ts.ndim != 1:
                raise b.error(InconsistentRunError, b.ts_path.replace("<k>", str(k)) + ("" if "<k>" in b.ts_path else f"/{k}"),
                              f"timestamps of step {k} must be [nEvents={n_events[k]}]; found shape {ts.shape}")
            timestamps.append(ts.astype(np.uint64))
        flat = np.concatenate(timestamps) if timestamps else np.zeros(0, np.uint64)
        if len(flat) > 1 and np.any(flat[1:] <= flat[:-1]):
            log.warning("%s: timestamps are not strictly increasing (validate reports where)", path)
        synthesised = False
    else:
        timestamps = _ts.synthesise(run_id, n_events)
        synthesised = True

    scan, step_value, step_doc = _scan_variables(b, header, n_events)
    return RunIndex(
        path=path, file=f, layout=layout, header=header, script_type=str(script_type), run_id=run_id,
        complete=complete, n_events=n_events, timestamps=timestamps, timestamps_synthesised=synthesised,
        area=area, side=side, scan=scan, step_value=step_value, step_docstring=step_doc,
    )
