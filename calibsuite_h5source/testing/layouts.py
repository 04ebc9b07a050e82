"""Declared runs, written with plain h5py in any of the four layouts.

A run is declared as a dict, the way the seed describes a ``runDict``::

    run = {
        'header': {'scriptType': 'delayScan', 'run': 1700000000},
        'detectors': {'epixM': [frames_step0, frames_step1]},   # [nEvents, module, row, col]
        'present': {'epixM': [mask0, None]},                   # optional bool [nEvents] or None (side data too)
        'side': {'wave8': {'peakAmplitude': [a0, a1]}},         # [nEvents, ...]
        'timestamps': [ts0, ts1],                               # optional uint64 [nEvents]
        'scan': {'delay': np.array([10., 20.])},                # [nSteps] or a list of [nEvents]
        'step_value': ..., 'step_docstring': [...],             # optional
    }

:func:`write_layout` writes it as ``'canonical'``, ``'padded'``,
``'stepgroups'`` or ``'legacy'`` (docs/format.rst), so a test can check that
every layout reads to the same results. :func:`declare_run` makes such a
declaration with deterministic random data.
"""

from __future__ import annotations

import h5py
import numpy as np

from calibsuite_h5source.format import timestamps as _ts
from calibsuite_h5source.format.constants import HEADER

LAYOUTS = ("canonical", "padded", "stepgroups", "legacy")


def declare_run(steps=(3, 2, 4), shape=(2, 8, 16), dtype="uint16", seed=0, detector="epixM",
                side=True, scan="delay", per_event_scan=False, timestamps=True, script_type="delayScan",
                run=1_700_000_000) -> dict:
    """Return a declared run with deterministic random content.

    Parameters
    ----------
    steps : sequence of int
        Events in each step.
    shape : tuple of int
        Per-event ``(module, row, col)``.
    side : bool
        Add ``wave8/peakAmplitude`` (``[nEvents, 4]`` float32) side data.
    scan : str or None
        Name of a per-step scan variable (values ``10, 20, ...``).
    per_event_scan : bool
        Store the scan variable per event instead (constant within a step).
    timestamps : bool
        Store timestamps (1 ms apart from ``run``), else let the reader synthesise.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    frames = []
    for n in steps:
        if dtype.kind == "f":
            frames.append(rng.normal(1000, 10, size=(n, *shape)).astype(dtype))
        else:
            frames.append(rng.integers(0, min(np.iinfo(dtype).max, 16383), size=(n, *shape), dtype=dtype))
    decl = {"header": {"scriptType": script_type, "run": run}, "detectors": {detector: frames}}
    if side:
        decl["side"] = {"wave8": {"peakAmplitude": [rng.random((n, 4), dtype=np.float32) for n in steps]}}
    if scan:
        values = 10.0 * (np.arange(len(steps)) + 1)
        decl["scan"] = {scan: [np.full(n, v) for n, v in zip(steps, values, strict=True)] if per_event_scan else values}
        decl["header"]["ancillaryDataType"] = scan
    if timestamps:
        decl["timestamps"] = _ts.synthesise(run + 5, steps)
    return decl


def _n_events(run: dict) -> list[int]:
    for per_step in run.get("detectors", {}).values():
        return [len(a) for a in per_step]
    for fields in run.get("side", {}).values():
        for per_step in fields.values():
            return [len(a) for a in per_step]
    return [len(a) for a in run.get("timestamps") or []]


def _write_header(f: h5py.File, run: dict, n_events: list[int], layout: str) -> None:
    f.attrs["format_version"] = "1.0"
    g = f.create_group(HEADER)
    for key, value in run.get("header", {}).items():
        if value is not None:
            g.attrs[key] = value
    for name, values in run.get("scan", {}).items():
        if isinstance(values, np.ndarray):  # per step
            g.create_dataset(name, data=values)
        elif layout == "padded":
            g.create_dataset(name, data=_pad(values, n_events))
        else:
            sub = g.create_group(name)
            for k, v in enumerate(values):
                sub.create_dataset(str(k), data=np.asarray(v))
    if run.get("step_value") is not None:
        g.create_dataset("step_value", data=np.asarray(run["step_value"], dtype=np.float64))
    if run.get("step_docstring") is not None:
        g.create_dataset("step_docstring", data=list(run["step_docstring"]), dtype=h5py.string_dtype())


def _pad(arrays, n_events) -> np.ndarray:
    arrays = [np.asarray(a) for a in arrays]
    tail = arrays[0].shape[1:]
    out = np.zeros((len(arrays), max(n_events), *tail), dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        out[k, : len(a)] = a
    return out


def _write_masks(group: h5py.Group, masks) -> None:
    """``present/<k>`` for each step's mask; a None mask (the source is in every event of the step) is not written."""
    for k, m in enumerate(masks):
        if m is not None:
            group.create_dataset(str(k), data=np.asarray(m, dtype=bool))


def write_layout(path, run: dict, layout: str = "canonical") -> str:
    """Write the declared ``run`` to ``path`` in ``layout``; return the path.

    ``legacy`` holds one detector (as root ``frames``) and the first scan
    variable (as root ``step_value``); it cannot hold side data, timestamps or
    ragged steps, and raises ValueError if asked to.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    n_events = _n_events(run)
    with h5py.File(path, "w") as f:
        if layout == "legacy":
            _write_legacy(f, run, n_events)
            return str(path)
        _write_header(f, run, n_events, layout)
        dets, side = run.get("detectors", {}), run.get("side", {})
        ts, present = run.get("timestamps"), run.get("present", {})
        if layout == "canonical":
            for name, per_step in dets.items():
                g = f.create_group(name)
                for k, a in enumerate(per_step):
                    g.create_dataset(str(k), data=a, chunks=(1, *a.shape[1:]) if len(a) else None)
                if name in present:
                    _write_masks(g.create_group("present"), present[name])
            for name, fields in side.items():
                for field_name, per_step in fields.items():
                    g = f.create_group(f"{name}/{field_name}")
                    for k, a in enumerate(per_step):
                        g.create_dataset(str(k), data=a)
            for name in set(present) - set(dets):  # side data absent from some events
                _write_masks(f.create_group(f"{name}/present"), present[name])
            if ts is not None:
                g = f.create_group("timestamp")
                for k, a in enumerate(ts):
                    g.create_dataset(str(k), data=np.asarray(a, dtype=np.uint64))
        elif layout == "padded":
            f.create_dataset("nEvents", data=np.asarray(n_events, dtype=np.int64))
            for name, per_step in dets.items():
                f.create_dataset(name, data=_pad(per_step, n_events))
            for name, fields in side.items():
                for field_name, per_step in fields.items():
                    f.create_dataset(f"{name}/{field_name}", data=_pad(per_step, n_events))
            if ts is not None:
                f.create_dataset("timestamp", data=_pad([np.asarray(a, np.uint64) for a in ts], n_events))
        else:  # stepgroups
            for k in range(len(n_events)):
                g = f.create_group(f"step{k}")
                for name, per_step in dets.items():
                    g.create_dataset(name, data=per_step[k])
                for name, fields in side.items():
                    for field_name, per_step in fields.items():
                        g.create_dataset(f"{name}/{field_name}", data=per_step[k])
                if ts is not None:
                    g.create_dataset("timestamp", data=np.asarray(ts[k], dtype=np.uint64))
    return str(path)


def _write_legacy(f: h5py.File, run: dict, n_events: list[int]) -> None:
    dets = run.get("detectors", {})
    if len(dets) != 1 or run.get("side") or run.get("timestamps") is not None or len(set(n_events)) > 1:
        raise ValueError("the legacy layout holds exactly one detector, equal steps, no side data, no timestamps")
    (name, per_step), = dets.items()
    frames = f.create_dataset("frames", data=np.stack(per_step))
    frames.attrs["detector"] = name
    f.create_dataset("scriptType", data=run["header"]["scriptType"])
    scans = [v for v in run.get("scan", {}).values() if isinstance(v, np.ndarray)]
    if scans:
        f.create_dataset("step_value", data=scans[0].astype(np.float64))
    f.create_dataset("step", data=np.arange(len(n_events)))
