"""What is in a run file, at a glance (``calibsuite-h5 info``).

:func:`summarise` reads the index only (header, shapes, counts, timestamps,
scan values, storage sizes): no frame data, so it is fast on large files.
:func:`format_summary` renders it for people; the writer's bookkeeping in
the header (``writerPid``, ``openStepEvents``...: :data:`WRITER_INTERNALS`)
only when asked for.
"""

from __future__ import annotations

import os

import numpy as np

from calibsuite_h5source.format.constants import FILTER_NAMES, LIVE_ATTRS
from calibsuite_h5source.format.timestamps import to_datetime
from calibsuite_h5source.read.run_index import open_run_index
from calibsuite_h5source.tools.isolate import no_progress

#: Header attributes that are the writer's bookkeeping, not the run's description (shown with ``verbose``;
#: an incomplete run's ``error`` is always shown).
WRITER_INTERNALS = frozenset(LIVE_ATTRS) | {"complete", "stepsComplete", "ancillaryDataType"}


def _storage(datasets) -> tuple[str, int, int]:
    """(compression, stored bytes, raw bytes) of some datasets."""
    names, stored, raw = set(), 0, 0
    for ds in datasets:
        plist = ds.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            names.add(FILTER_NAMES.get(code, f"filter {code}"))
        stored += ds.id.get_storage_size()
        raw += ds.size * ds.dtype.itemsize
    names.discard("shuffle") if len(names) > 1 else None
    return ("+".join(sorted(names)) or "none"), stored, raw


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def summarise(path, progress=no_progress) -> dict:
    """Return a json-serialisable summary of the run file ``path``.

    ``progress(h5path, activity)`` is called as it goes (see
    :func:`calibsuite_h5source.tools.isolate.run_isolated`).
    """
    progress("/", "opening")
    idx = open_run_index(path)
    try:
        n = idx.n_events
        progress("/timestamp", "reading the first and last timestamps of")
        ts = [t for t in idx.timestamps if len(t)]
        first, last = (int(ts[0][0]), int(ts[-1][-1])) if ts else (None, None)
        detectors = {}
        for name, src in idx.area.items():
            progress(f"/{name}", "reading the storage of")
            datasets = list({id(ea.dataset): ea.dataset for ea in src.steps}.values())
            comp, stored, raw = _storage(datasets)
            if src.steps and src.steps[0].prefix:  # padded or legacy: count only real events
                raw = int(n.sum()) * int(np.prod(src.frame_shape)) * src.dtype.itemsize
            missing = sum(int((~p).sum()) for p in src.present if p is not None)
            detectors[name] = {
                "shape": list(src.frame_shape), "dtype": str(src.dtype), "compression": comp,
                "stored_MB": round(stored / 1e6, 3), "raw_MB": round(raw / 1e6, 3),
                "events_without_data": missing,
                "calib": sorted(src.calib_group) if src.calib_group is not None else [],
                "attrs": {k: _plain(v) for k, v in src.attrs.items() if k not in ("NX_class", "signal")},
            }
        side = {name: {f: {"shape": list(steps[0].dataset.shape[1 + len(steps[0].prefix):]) if steps else [],
                           "dtype": str(steps[0].dataset.dtype) if steps else ""}
                       for f, steps in fields.items()}
                for name, fields in idx.side.items()}
        progress("/", "reading the side data and scan values of")
        side_missing = {name: sum(int((~m).sum()) for m in masks if m is not None)
                        for name, masks in idx.side_present.items()}
        scan = {name: {"per": "event" if var.per_event is not None else "step", "values": var.per_step.tolist()}
                for name, var in idx.scan.items()}
        if idx.step_value is not None:
            scan["step_value"] = {"per": "step", "values": idx.step_value.tolist()}
        return {
            "file": str(path), "file_MB": round(os.path.getsize(path) / 1e6, 3),
            "format_version": _plain(idx.file.attrs.get("format_version", "")) or None,
            "layout": idx.layout, "complete": idx.complete,
            "header": {k: _plain(v) for k, v in idx.header.items()},
            "steps": idx.n_steps, "events": int(n.sum()), "events_per_step": n.tolist(),
            "detectors": detectors, "side_data": side, "side_events_without_data": side_missing, "scan": scan,
            "timestamps": {
                "stored": not idx.timestamps_synthesised,
                "first": None if first is None else to_datetime(first).isoformat(),
                "last": None if last is None else to_datetime(last).isoformat(),
                "duration_s": None if first is None else round(((last >> 32) - (first >> 32)) + ((last & 0xFFFFFFFF) - (first & 0xFFFFFFFF)) / 1e9, 6),
            },
        }
    finally:
        idx.close()


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_summary(s: dict, verbose: bool = False) -> str:
    """Render :func:`summarise`'s dict for people (``verbose``: with the writer's bookkeeping too)."""
    h = s["header"]
    first = [f"run {h['run']}" if "run" in h else "no run id", f"scriptType {h.get('scriptType')}"]
    first += [f"{k} {h[k]}" for k in ("date", "location") if k in h]
    lines = [
        f"{s['file']}  ({s['file_MB']:.1f} MB, "
        f"{'format ' + str(s['format_version']) + ', ' if s['format_version'] else ''}{s['layout']} layout"
        f"{'' if s['complete'] else ', INCOMPLETE'})",
        "  " + "  ".join(first),
    ]
    hidden = set() if verbose else WRITER_INTERNALS
    extra = {k: v for k, v in h.items() if k not in {"run", "scriptType", "date", "location"} | hidden}
    for k, v in extra.items():
        lines.append(f"  {k}: {v}")
    per = s["events_per_step"]
    shown = ", ".join(map(str, per[:12])) + (", ..." if len(per) > 12 else "")
    lines.append(f"  {_n(s['steps'], 'step')}, {_n(s['events'], 'event')}  (per step: {shown})")
    t = s["timestamps"]
    lines.append(f"  time {t['first']} .. {t['last']}  ({t['duration_s']} s){'' if t['stored'] else '  [synthesised]'}")
    lines.append("  detectors:")
    for name, d in s["detectors"].items():
        ratio = f", x{d['raw_MB'] / d['stored_MB']:.1f}" if d["stored_MB"] else ""
        lines.append(f"    {name:<16} {tuple(d['shape'])} {d['dtype']:<8} {d['compression']:<10} "
                     f"{d['stored_MB']:.1f} MB stored{ratio}"
                     + (f", {_n(d['events_without_data'], 'event')} without data" if d["events_without_data"] else "")
                     + (f", calib: {', '.join(d['calib'])}" if d["calib"] else ""))
    if s["side_data"]:
        lines.append("  side data:")
        for name, fields in s["side_data"].items():
            missing = s["side_events_without_data"].get(name)
            lines.append(f"    {name:<16} " + ", ".join(f"{f} {tuple(v['shape'])} {v['dtype']}" for f, v in fields.items())
                         + (f", {_n(missing, 'event')} without data" if missing else ""))
    if s["scan"]:
        lines.append("  scan variables:")
        for name, v in s["scan"].items():
            vals = ", ".join(f"{x:g}" for x in v["values"][:10]) + (", ..." if len(v["values"]) > 10 else "")
            lines.append(f"    {name:<16} per {v['per']:<5} [{vals}]")
    return "\n".join(lines)

