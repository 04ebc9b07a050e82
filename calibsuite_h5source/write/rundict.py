"""The seed's ``runDict`` form: a whole run as nested python dicts.

::

    runDict = {
        'ancillaryData': {'scriptType': 'delayScan', 'location': 'ASC',
                          'ancillaryDataType': 'delay',
                          'delay': {0: 10.0, 1: 20.0}},           # per step (or a list)
        'epixM': {0: frames0, 1: frames1},                        # [event, module, row, col] per step
        'wave8': {'peakAmplitude': {0: amp0, 1: amp1}},           # side data per step
        'timestamp': {0: ts0, 1: ts1},                            # optional
        'present': {'wave8': {0: mask0, 1: mask1}},               # optional: False = no data
    }

Accepted variants: steps as ``0``/``'0'``/``'step0'`` keys or a list; a
detector as one padded array ``[step, event, ...]`` with ``runDict['nEvents']``;
per-event scan values as ``{step: {event: v}}``, ``{step: array}`` or nested
lists. ``present`` names the detectors and sources that miss some events
(a bool mask per step; the stored values of a missing event are zeros, as
:class:`RunWriter` stores them). :func:`read_run_dict` returns the normalised
form: ``{step: value}`` for per-step scan values, ``{step: array}`` for
everything per event; the header without the attributes the writer owns
(``format.constants.WRITER_OWNED``), so that ``write_run_dict(p,
read_run_dict(f))`` writes the same run again.
It reads the whole run into memory: use it for small runs and tests.
"""

from __future__ import annotations

import operator
import os

import numpy as np

from calibsuite_h5source.errors import H5SourceError, WriterError
from calibsuite_h5source.format.constants import HEADER, WRITER_OWNED, step_number
from calibsuite_h5source.read.run_index import open_run_index
from calibsuite_h5source.write.rules import check_numeric_array
from calibsuite_h5source.write.writer import RunWriter

#: Top-level runDict keys that are not detectors.
RESERVED = {HEADER, "nEvents", "timestamp", "present"}


def _per_step(value, n_events=None, what=""):
    """``{step: x}`` / list / padded array -> list indexed by step."""
    if isinstance(value, dict):
        keys = {(k if isinstance(k, int) else step_number(str(k))): v for k, v in value.items()}
        if None in keys or sorted(keys) != list(range(len(keys))):
            raise WriterError(f"{what}: steps must be keyed 0, 1, ... (or 'step0', ...); found {list(value)}")
        return [keys[k] for k in range(len(keys))]
    if isinstance(value, np.ndarray) and n_events is not None and value.ndim >= 2:
        return [value[k, :n] for k, n in enumerate(n_events)]
    if isinstance(value, (str, bytes)) or np.ndim(value) == 0:
        raise WriterError(f"{what}: must hold one entry per step ({{step: value}}, a list or an array); "
                          f"found {type(value).__name__} {value!r}"[:200])
    return list(value)


def _events(value, what=""):
    """``{event: v}`` / list / array -> ndarray in event order."""
    if isinstance(value, dict):
        keys = {step_number(str(k)): k for k in value}
        if None in keys or sorted(keys) != list(range(len(keys))):
            raise WriterError(f"{what}: events must be keyed 0, 1, ...; found {list(value)[:10]}")
        return np.asarray([value[keys[i]] for i in range(len(keys))])
    return np.asarray(value)


def write_run_dict(path, runDict: dict, *, scriptType=None, **writer_kwargs) -> str:  # noqa: N803
    """Write a seed-style ``runDict`` as a canonical run file; return the path.

    Every value goes through the same checks as :class:`RunWriter`'s; a
    runDict that breaks a rule leaves no file (with ``overwrite=True`` the
    file it replaced is gone already).

    Parameters
    ----------
    path : str or path
        The file to create.
    runDict : dict
        See the module docstring.
    scriptType : str, optional
        The run's ``scriptType`` when ``runDict['ancillaryData']`` has none
        (giving a different one than it has is an error).
    **writer_kwargs
        Passed to :class:`RunWriter` (``compression``, ``overwrite``...).

    Raises
    ------
    WriterError
        The runDict breaks a rule of the format or of :class:`RunWriter`.
    """
    if not isinstance(runDict, dict) or not isinstance(runDict.get(HEADER, {}), dict):
        raise WriterError(f"runDict must be a dict with a dict {HEADER!r}; found {type(runDict).__name__}", file=str(path))
    anc = dict(runDict.get(HEADER, {}))
    script_type = _script_type(anc.pop("scriptType", None), scriptType, path)
    n_events = _n_events(runDict.get("nEvents"), path)
    detectors, side = _sources(runDict, n_events, path)
    n_steps = _n_steps(detectors, side, path)
    ts = runDict.get("timestamp")
    ts = None if ts is None else _per_step(ts, n_events, "timestamp")
    scan_per_step, scan_per_event = _scan_values(anc, n_events, n_steps, path)
    for key in WRITER_OWNED:
        anc.pop(key, None)
    present = _present_masks(runDict.get("present"), detectors, side, n_steps, path)
    w = RunWriter(path, script_type, **{**anc, **writer_kwargs})
    try:
        with w:
            for k in range(n_steps):
                data = {name: steps[k] for name, steps in detectors.items()}
                data.update({name: {f: steps[k] for f, steps in fields.items()} for name, fields in side.items()})
                w.add_step(data, timestamps=None if ts is None else _events(ts[k], "timestamp"),
                           present={n: m[k] for n, m in present.items()} or None,
                           scan={n: v[k] for n, v in scan_per_event.items()} or None,
                           **{n: v[k] for n, v in scan_per_step.items()})
    except H5SourceError:
        os.unlink(w.path)  # a runDict is written whole or not at all
        raise
    return str(path)


def _script_type(in_dict, given, path) -> str:
    """The run's scriptType: from the runDict's header or the call, not contradicting each other."""
    if given is not None and in_dict is not None and given != in_dict:
        raise WriterError(f"scriptType={given!r} contradicts the runDict's {HEADER}/scriptType {in_dict!r}; "
                          "give it in one place", file=str(path), h5path=f"/{HEADER}")
    script_type = given if in_dict is None else in_dict
    if script_type is None:
        raise WriterError(f"the runDict has no {HEADER}/scriptType; add it or pass scriptType=...",
                          file=str(path), h5path=f"/{HEADER}")
    return script_type


def _n_events(value, path) -> list[int] | None:
    """``runDict['nEvents']`` (needed by padded ``[step, event, ...]`` arrays) as a list of ints."""
    try:
        return None if value is None else [operator.index(n) for n in np.asarray(value).tolist()]
    except TypeError as exc:
        raise WriterError(f"nEvents must be integers, one per step; found {value!r}"[:200], file=str(path)) from exc


def _sources(runDict, n_events, path) -> tuple[dict, dict]:
    """Split the runDict's data into area detectors ``{name: [per step]}`` and side data ``{name: {field: [...]}}``."""
    detectors, side = {}, {}
    for name, value in runDict.items():
        if name in RESERVED:
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()) \
                and not all(step_number(str(k)) is not None for k in value):
            side[name] = {f: [check_numeric_array(a, f"{name}/{f}", file=str(path))
                              for a in _per_step(v, n_events, f"{name}/{f}")] for f, v in value.items()}
        else:
            detectors[name] = [check_numeric_array(a, str(name), file=str(path)) for a in _per_step(value, n_events, name)]
    return detectors, side


def _n_steps(detectors, side, path) -> int:
    """The step count every detector and field agrees on."""
    lengths = [len(v) for v in detectors.values()] + [len(f) for s in side.values() for f in s.values()]
    if not lengths:
        raise WriterError("runDict holds no detector or side data", file=str(path))
    if any(n != lengths[0] for n in lengths):
        raise WriterError(f"every detector must have the same steps; found step counts {lengths}", file=str(path))
    return lengths[0]


def _scan_values(anc, n_events, n_steps, path) -> tuple[dict, dict]:
    """Pop the scan variables (``ancillaryDataType``, ``step_value``, ``step_docstring``) off the header.

    Returns ``{name: [value per step]}`` and ``{name: [values per event, per step]}``.
    """
    declared = anc.get("ancillaryDataType") or []
    declared = [declared] if isinstance(declared, str) else list(declared)
    per_step, per_event = {}, {}
    for name in declared + [k for k in ("step_value", "step_docstring") if k in anc]:
        if name not in anc:
            continue
        steps = _per_step(anc.pop(name), n_events, f"{HEADER}/{name}")
        if len(steps) != n_steps:
            raise WriterError(f"scan variable {name} must have {n_steps} steps; found {len(steps)}", file=str(path))
        if isinstance(steps[0], str) or np.ndim(_events(steps[0], name)) == 0:
            per_step[name] = steps
        else:
            per_event[name] = [_events(v, name) for v in steps]
    return per_step, per_event


def _present_masks(value, detectors, side, n_steps, path) -> dict:
    """``runDict['present']`` -> ``{name: [bool mask per step]}``, checked against the data."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WriterError(f"present must be a dict {{detector: {{step: bool mask}}}}; found {type(value).__name__}",
                          file=str(path))
    out = {}
    for name, steps in value.items():
        data = detectors.get(name)
        if data is None and name in side:
            data = next(iter(side[name].values()))
        if data is None:
            raise WriterError(f"present names {name!r}, which is not a detector or source of the runDict; "
                              f"found {sorted(detectors) + sorted(side)}", file=str(path))
        masks = [np.asarray(_events(m, f"present/{name}")) for m in _per_step(steps, None, f"present/{name}")]
        if len(masks) != n_steps:
            raise WriterError(f"present/{name} must have {n_steps} steps; found {len(masks)}", file=str(path))
        for k, (m, a) in enumerate(zip(masks, data, strict=True)):
            if m.dtype != bool or m.shape != (len(a),):
                raise WriterError(f"present/{name} step {k} must be a bool mask of {len(a)} events; "
                                  f"found {m.dtype} {m.shape}", file=str(path))
        out[name] = masks
    return out


def read_run_dict(path) -> dict:
    """Read any run file (every layout) into the normalised ``runDict`` form."""
    idx = open_run_index(path)
    try:
        out = {HEADER: {k: v for k, v in idx.header.items() if k not in WRITER_OWNED}}
        anc = out[HEADER]
        for name, var in idx.scan.items():
            anc[name] = ({k: a for k, a in enumerate(var.per_event)} if var.per_event is not None
                         else {k: float(v) for k, v in enumerate(var.per_step)})
        if idx.step_value is not None:
            anc["step_value"] = {k: float(v) for k, v in enumerate(idx.step_value)}
        if idx.step_docstring is not None:
            anc["step_docstring"] = dict(enumerate(idx.step_docstring))
        for name, src in idx.area.items():
            out[name] = {k: ea.read_all() for k, ea in enumerate(src.steps)}
        for name, fields in idx.side.items():
            out[name] = {f: {k: ea.read_all() for k, ea in enumerate(steps)} for f, steps in fields.items()}
        present = {}
        for name, masks in {**{n: src.present for n, src in idx.area.items()}, **idx.side_present}.items():
            masks = [None if m is None else np.asarray(m, bool) for m in masks]
            if any(m is not None and not m.all() for m in masks):  # RunWriter writes step 0's, all True
                present[name] = masks
        if present:
            out["present"] = {name: {k: (np.ones(idx.n_events[k], bool) if m is None else m)
                                     for k, m in enumerate(masks)} for name, masks in present.items()}
        if not idx.timestamps_synthesised:
            out["timestamp"] = {k: np.asarray(ts) for k, ts in enumerate(idx.timestamps)}
        return out
    finally:
        idx.close()
