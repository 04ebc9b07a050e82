"""The seed's ``runDict`` form: a whole run as nested python dicts.

::

    runDict = {
        'ancillaryData': {'scriptType': 'delayScan', 'location': 'ASC',
                          'ancillaryDataType': 'delay',
                          'delay': {0: 10.0, 1: 20.0}},           # per step (or a list)
        'epixM': {0: frames0, 1: frames1},                        # [event, module, row, col] per step
        'wave8': {'peakAmplitude': {0: amp0, 1: amp1}},           # side data per step
        'timestamp': {0: ts0, 1: ts1},                            # optional
    }

Accepted variants: steps as ``0``/``'0'``/``'step0'`` keys or a list; a
detector as one padded array ``[step, event, ...]`` with ``runDict['nEvents']``;
per-event scan values as ``{step: {event: v}}``, ``{step: array}`` or nested
lists. :func:`read_run_dict` returns the normalised form: ``{step: value}``
for per-step scan values, ``{step: array}`` for everything per event.
It reads the whole run into memory: use it for small runs and tests.
"""

from __future__ import annotations

import numpy as np

from .errors import WriterError
from .layout import HEADER, step_number
from .run_index import open_run_index
from .writer import RunWriter

RESERVED = {HEADER, "nEvents", "timestamp"}
_WRITER_SET = {"complete", "stepsComplete", "error"}


def _per_step(value, n_events=None, what=""):
    """``{step: x}`` / list / padded array -> list indexed by step."""
    if isinstance(value, dict):
        keys = {(k if isinstance(k, int) else step_number(str(k))): v for k, v in value.items()}
        if None in keys or sorted(keys) != list(range(len(keys))):
            raise WriterError(f"{what}: steps must be keyed 0, 1, ... (or 'step0', ...); found {list(value)}")
        return [keys[k] for k in range(len(keys))]
    if isinstance(value, np.ndarray) and n_events is not None and value.ndim >= 2:
        return [value[k, :n] for k, n in enumerate(n_events)]
    return list(value)


def _events(value):
    """``{event: v}`` / list / array -> ndarray in event order."""
    if isinstance(value, dict):
        return np.asarray([value[k] for k in sorted(value, key=int)])
    return np.asarray(value)


def write_run_dict(path, runDict: dict, **writer_kwargs) -> str:  # noqa: N803
    """Write a seed-style ``runDict`` as a canonical run file; return the path.

    Parameters
    ----------
    path : str or path
        The file to create.
    runDict : dict
        See the module docstring.
    **writer_kwargs
        Passed to :class:`RunWriter` (``compression``, ``overwrite``...).
    """
    anc = dict(runDict.get(HEADER, {}))
    n_events = runDict.get("nEvents")
    n_events = None if n_events is None else [int(n) for n in np.asarray(n_events)]
    detectors, side = {}, {}
    for name, value in runDict.items():
        if name in RESERVED:
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()) \
                and not all(step_number(str(k)) is not None for k in value):
            side[name] = {f: [np.asarray(a) for a in _per_step(v, n_events, f"{name}/{f}")] for f, v in value.items()}
        else:
            detectors[name] = [np.asarray(a) for a in _per_step(value, n_events, name)]
    lengths = [len(v) for v in detectors.values()] + [len(f) for s in side.values() for f in s.values()]
    if not lengths:
        raise WriterError("runDict holds no detector or side data", file=str(path))
    n_steps = lengths[0]
    if any(n != n_steps for n in lengths):
        raise WriterError(f"every detector must have the same steps; found step counts {lengths}", file=str(path))
    ts = runDict.get("timestamp")
    ts = None if ts is None else _per_step(ts, n_events, "timestamp")
    declared = anc.get("ancillaryDataType") or []
    declared = [declared] if isinstance(declared, str) else list(declared)
    scan_per_step, scan_per_event = {}, {}
    for name in declared + [k for k in ("step_value", "step_docstring") if k in anc]:
        if name not in anc:
            continue
        steps = _per_step(anc.pop(name), n_events, f"{HEADER}/{name}")
        if len(steps) != n_steps:
            raise WriterError(f"scan variable {name} must have {n_steps} steps; found {len(steps)}", file=str(path))
        if np.ndim(_events(steps[0])) == 0:
            scan_per_step[name] = steps
        else:
            scan_per_event[name] = [_events(v) for v in steps]
    script_type = anc.pop("scriptType", None)
    for key in _WRITER_SET:
        anc.pop(key, None)
    with RunWriter(path, script_type, **{**anc, **writer_kwargs}) as w:
        for k in range(n_steps):
            data = {name: steps[k] for name, steps in detectors.items()}
            data.update({name: {f: steps[k] for f, steps in fields.items()} for name, fields in side.items()})
            w.add_step(data, timestamps=None if ts is None else np.asarray(ts[k]),
                       scan={n: v[k] for n, v in scan_per_event.items()} or None,
                       **{n: (v[k] if isinstance(v[k], str) else float(v[k])) for n, v in scan_per_step.items()})
    return str(path)


def read_run_dict(path) -> dict:
    """Read any run file (every layout) into the normalised ``runDict`` form."""
    idx = open_run_index(path)
    try:
        out = {HEADER: {k: v for k, v in idx.header.items() if k not in _WRITER_SET}}
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
        if not idx.timestamps_synthesised:
            out["timestamp"] = {k: np.asarray(ts) for k, ts in enumerate(idx.timestamps)}
        return out
    finally:
        idx.close()
