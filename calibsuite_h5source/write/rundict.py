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
        'attrs': {'epixM': {'detType': 'epix10ka', 'gainBitsMask': 0x3FFF}},      # optional
        'calib': {'epixM': {'pedestals': ped, 'geometry': text}},                # optional
        'headers': {'epixM': {'frameNo': {0: frame_no0, 1: frame_no1}}},          # optional
    }

Accepted variants: steps as ``0``/``'0'``/``'step0'`` keys or a list; a
detector as one padded array ``[step, event, ...]`` with ``runDict['nEvents']``;
per-event scan values as ``{step: {event: v}}``, ``{step: array}`` or nested
lists. ``present`` names the detectors and sources that miss some events
(a bool mask per step; the stored values of a missing event are zeros, as
:class:`RunWriter` stores them). The scan variables are the header entries
named in ``ancillaryDataType`` (and ``step_value``, ``step_docstring``).

``attrs``, ``calib`` and ``headers`` hold, per area detector, what its group
holds besides its frames (:data:`DETECTOR_PARTS`, the one list both directions
use), as :meth:`RunWriter.detector` and ``add_step`` take it:

* ``attrs``: the group's attributes (``detType``, ``gainBitsMask``,
  ``psanaModuleAxis``...), without the ones the writer sets itself
  (:data:`~calibsuite_h5source.write.writer.DETECTOR_GROUP_ATTRS`);
* ``calib``: ``/<detector>/calib/*``, ``{ctype: array}`` for the constants and
  ``{'geometry': text}`` for the geometry; an entry with metadata (the
  dataset's attributes, e.g. the geometry's ``segments``) is
  ``(value, {name: value})``;
* ``headers``: the per-event header fields ``{field: {step: values[nEvents, ...]}}``
  (``det.raw.<field>(evt)``).

:func:`read_run_dict` returns the normalised form: ``{step: value}`` for
per-step scan values, ``{step: array}`` for everything per event; the header
without the attributes the writer owns (``format.constants.WRITER_OWNED``),
with ``ancillaryDataType`` naming every scan variable the reader found (the
file's value when it names exactly those); ``attrs``, ``calib``, ``headers``
and ``present`` only when some detector has any. So ``write_run_dict(p,
read_run_dict(f))`` writes the same run again; what a runDict cannot hold (a
non-numeric constant, an attribute HDF5 gives as something else than a str,
a number or a 1-D list, a source named as a runDict key) is refused with a
:class:`~calibsuite_h5source.errors.WriterError`, never dropped.
It reads the whole run into memory: use it for small runs and tests.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from calibsuite_h5source.errors import H5SourceError, WriterError
from calibsuite_h5source.format import rules
from calibsuite_h5source.format.constants import HEADER, WRITER_OWNED, step_number
from calibsuite_h5source.geometry.source import GEOMETRY, read_geometry_text
from calibsuite_h5source.h5.dataset import read_whole
from calibsuite_h5source.read.index_types import AreaSource
from calibsuite_h5source.read.run_index import open_run_index
from calibsuite_h5source.write.rules import NUMERIC_KINDS, check_numeric_array
from calibsuite_h5source.write.writer import DETECTOR_GROUP_ATTRS, RunWriter


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


# -- what an area detector holds besides its frames: one table, both directions -----------------

def _read_attrs(src: AreaSource, path: str) -> dict:
    """The group's attributes but the writer's own (:data:`DETECTOR_GROUP_ATTRS`)."""
    return {k: v for k, v in src.attrs.items() if k not in DETECTOR_GROUP_ATTRS}


def _write_attrs(name: str, value, n_events, path: str) -> tuple[dict, dict]:
    """``attrs={...}`` of ``RunWriter.detector`` (``detType``, ``gainBitsMask`` are attributes too)."""
    return {"attrs": _as_dict(value, f"attrs/{name}", "{attribute: value}", path)}, {}


def _read_calib(src: AreaSource, path: str) -> dict:
    """``calib/``: numeric constants as arrays, ``geometry`` as its text; ``(value, metadata)`` with attributes."""
    out = {}
    for ctype, ds in ({} if src.calib_group is None else src.calib_group.items()):
        meta = {k: rules.decode(v) for k, v in ds.attrs.items()}
        if ctype == GEOMETRY:
            value = read_geometry_text(src.calib_group)[0]
        elif ds.dtype.kind in NUMERIC_KINDS:
            value = np.asarray(read_whole(ds))
        else:
            raise WriterError(f"calibration constant {ctype} of {src.name} is not numeric ({ds.dtype}): a runDict holds "
                              "numeric constants and the geometry text only", file=path, h5path=ds.name)
        out[ctype] = (value, meta) if meta else value
    return out


def _write_calib(name: str, value, n_events, path: str) -> tuple[dict, dict]:
    """``calib=`` and ``geometry=`` of ``RunWriter.detector``."""
    calib = _as_dict(value, f"calib/{name}", "{ctype: array or (array, metadata)}", path)
    geometry = calib.pop(GEOMETRY, None)
    return {"calib": calib} if geometry is None else {"calib": calib, "geometry": geometry}, {}


def _read_headers(src: AreaSource, path: str) -> dict:
    """``{field: {step: values[nEvents, ...]}}``."""
    return {f: {k: ea.read_all() for k, ea in enumerate(steps)} for f, steps in src.headers.items()}


def _write_headers(name: str, value, n_events, path: str) -> tuple[dict, dict]:
    """``header_fields=`` of ``RunWriter.detector`` (as stored: shape and dtype), and the values per step."""
    fields = _as_dict(value, f"headers/{name}", "{field: {step: values[nEvents, ...]}}", path)
    steps = {f: [check_numeric_array(a, f"headers/{name}/{f}", file=path)
                 for a in _per_step(v, n_events, f"headers/{name}/{f}")] for f, v in fields.items()}
    for f, arrays in steps.items():
        if not arrays or arrays[0].ndim == 0:
            raise WriterError(f"headers/{name}/{f} must hold values[nEvents, ...] for each step",
                              file=path, h5path=f"/{name}/{f}")
    return {"header_fields": {f: (a[0].shape[1:], a[0].dtype) for f, a in steps.items()}}, steps


def _as_dict(value, what: str, form: str, path: str) -> dict:
    """``value`` (a dict) copied, or a WriterError saying which ``form`` it must have."""
    if not isinstance(value, dict):
        raise WriterError(f"{what} must be a dict {form}; found {type(value).__name__}", file=path)
    return dict(value)


class DetectorPart(NamedTuple):
    """How one top-level runDict key ``{detector: value}`` travels.

    ``read(src, path)`` takes the value off the reader's
    :class:`~calibsuite_h5source.read.index_types.AreaSource` (empty: nothing
    to carry); ``write(name, value, n_events, path)`` checks it and returns
    ``(RunWriter.detector keywords, {field: [values per step]} for add_step's headers)``.
    """

    read: Callable
    write: Callable


#: What an area detector holds besides its frames and ``present`` masks, by runDict key.
DETECTOR_PARTS = {
    "attrs": DetectorPart(_read_attrs, _write_attrs),
    "calib": DetectorPart(_read_calib, _write_calib),
    "headers": DetectorPart(_read_headers, _write_headers),
}

#: Top-level runDict keys that are not detectors.
RESERVED = {HEADER, "nEvents", "timestamp", "present", *DETECTOR_PARTS}


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
    parts = _detector_parts(runDict, detectors, n_events, n_steps, path)
    w = RunWriter(path, script_type, **{**anc, **writer_kwargs})
    try:
        with w:
            for name, (declaration, _) in parts.items():
                _declare(w, name, declaration)
            for k in range(n_steps):
                data = {name: steps[k] for name, steps in detectors.items()}
                data.update({name: {f: steps[k] for f, steps in fields.items()} for name, fields in side.items()})
                headers = {name: {f: steps[k] for f, steps in fields.items()} for name, (_, fields) in parts.items()}
                w.add_step(data, timestamps=None if ts is None else _events(ts[k], "timestamp"),
                           present={n: m[k] for n, m in present.items()} or None,
                           scan={n: v[k] for n, v in scan_per_event.items()} or None,
                           headers={n: h for n, h in headers.items() if h} or None,
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


def _detector_parts(runDict, detectors, n_events, n_steps, path) -> dict:
    """The runDict's :data:`DETECTOR_PARTS`, checked: ``{detector: (RunWriter.detector keywords,
    {header field: [values per step]})}``."""
    out = {}
    for key, part in DETECTOR_PARTS.items():
        for name, value in _as_dict(runDict.get(key, {}), key, "{detector: ...}", path).items():
            if name not in detectors:
                raise WriterError(f"{key} names {name!r}, which is not an area detector of the runDict; "
                                  f"found {sorted(map(str, detectors))}", file=str(path))
            declaration, steps = part.write(name, value, n_events, str(path))
            for field, values in steps.items():
                if len(values) != n_steps:
                    raise WriterError(f"{key}/{name}/{field} must have {n_steps} steps; found {len(values)}",
                                      file=str(path))
            entry = out.setdefault(name, ({}, {}))
            entry[0].update(declaration)
            entry[1].update(steps)
    return out


def _declare(w: RunWriter, name: str, declaration: dict) -> None:
    """``w.detector(name, **declaration)``; a refused attribute is named as the detector's, not the header's."""
    try:
        w.detector(name, **declaration)
    except WriterError as exc:
        if exc.h5path != f"/{HEADER}":
            raise
        raise WriterError(f"detector {name}'s attrs or calib metadata: {exc.rule}", file=exc.file,
                          h5path=f"/{name}") from exc


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
        clash = sorted(RESERVED & (set(idx.area) | set(idx.side)))
        if clash:
            raise WriterError(f"sources {clash} have the names of runDict keys {sorted(RESERVED)}: a runDict "
                              "cannot hold them", file=str(path))
        out = {HEADER: {k: v for k, v in idx.header.items() if k not in WRITER_OWNED}}
        anc = out[HEADER]
        _declare_scan(anc, idx.scan)
        for name, var in idx.scan.items():
            anc[name] = ({k: a for k, a in enumerate(var.per_event)} if var.per_event is not None
                         else {k: float(v) for k, v in enumerate(var.per_step)})
        if idx.step_value is not None:
            anc["step_value"] = {k: float(v) for k, v in enumerate(idx.step_value)}
        if idx.step_docstring is not None:
            anc["step_docstring"] = dict(enumerate(idx.step_docstring))
        for name, src in idx.area.items():
            out[name] = {k: ea.read_all() for k, ea in enumerate(src.steps)}
            for key, part in DETECTOR_PARTS.items():
                value = part.read(src, str(path))
                if value:
                    out.setdefault(key, {})[name] = value
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


def _declare_scan(anc: dict, scan: dict) -> None:
    """List the reader's scan variables in ``anc['ancillaryDataType']``, which ``write_run_dict`` takes as
    the scan variables: the file's value when it names exactly those, else them in the order
    :class:`RunWriter` writes them (per-step ones, then per-event ones, each sorted)."""
    declared = anc.get("ancillaryDataType") or []
    declared = [declared] if isinstance(declared, str) else list(declared)
    if sorted(map(str, declared)) == sorted(scan):
        return
    names = (sorted(n for n, v in scan.items() if v.per_event is None)
             + sorted(n for n, v in scan.items() if v.per_event is not None))
    anc.pop("ancillaryDataType", None)
    if names:
        anc["ancillaryDataType"] = names[0] if len(names) == 1 else names
