"""The run's schema (sources, shapes, dtypes, header fields, scan names) and the checks of values against it.

The first event of a run defines the schema (:func:`propose_schema`), with what
``RunWriter.detector`` declared (:func:`parse_declaration`); every later event's
frames, side data and header fields are checked against it
(:func:`check_frame`, :func:`check_field`, :func:`check_value`) before anything
of the event is buffered. Nothing here writes to the file.
"""

from __future__ import annotations

import numpy as np

from calibsuite_h5source.errors import HeaderError, WriterError
from calibsuite_h5source.format import rules
from calibsuite_h5source.format.casting import cast_exactly
from calibsuite_h5source.format.constants import HEADER
from calibsuite_h5source.write.rules import (
    check_field_name,
    check_header,
    check_header_field_name,
    check_numeric_array,
    check_scan_name,
    check_source_name,
)


def check_reader_rules(table: dict, values: dict, path: str, h5path: str, dtype=None) -> None:
    """The reader's rules on attributes about to be written, so that the writer never writes a file the
    reader refuses: ``table`` is :data:`calibsuite_h5source.format.rules.HEADER` (``/ancillaryData``) or
    ``rules.DETECTOR`` (an area detector's group, whose ``gainBitsMask`` must fit the frames' ``dtype``)."""
    try:
        decoded = rules.apply(table, {k: rules.decode(v) for k, v in values.items()}, path, h5path)
        if table is rules.DETECTOR and "gainBitsMask" in decoded:
            rules.check("gainBitsMask", lambda v: rules.gain_bits_mask(v, dtype), decoded["gainBitsMask"], path, h5path)
    except HeaderError as exc:
        raise WriterError(f"{exc.rule} (the reader would refuse the file)", file=path, h5path=h5path) from exc


def parse_declaration(path: str, name: str, *, detType=None, gainBitsMask=None, calib=None, attrs=None,  # noqa: N803
                      shape=None, dtype=None, header_fields=None, geometry=None) -> dict:
    """Check ``RunWriter.detector``'s arguments; return ``{group_attrs, headers, constants, shape, dtype, geometry}``.

    ``constants`` is ``{ctype: (array, metadata)}``; ``geometry`` is None or ``(text, metadata)``; a
    declared 2-D frame shape becomes ``(1, row, col)``.
    """
    check_source_name(name, file=path)
    group_attrs = {k: v for k, v in {"detType": detType, "gainBitsMask": gainBitsMask, **(attrs or {})}.items()
                   if v is not None}
    check_header(group_attrs, file=path)
    check_reader_rules(rules.DETECTOR, group_attrs, path, f"/{name}", dtype)
    fields = {}
    for field, spec in (header_fields or {}).items():
        check_header_field_name(name, field, file=path)
        try:
            fshape, fdtype = spec
            fields[field] = (tuple(int(n) for n in fshape), np.dtype(fdtype))
        except (TypeError, ValueError) as exc:
            raise WriterError(f"header_fields[{field!r}] must be (shape, dtype); found {spec!r}",
                              file=path, h5path=f"/{name}/{field}") from exc
        if fields[field][1].kind not in "biuf":
            raise WriterError(f"header field {field!r} must be numeric; found {fields[field][1]}",
                              file=path, h5path=f"/{name}/{field}")
    constants = {}
    for ctype, value in (calib or {}).items():
        check_field_name(f"{name}/calib", ctype, file=path)
        array, meta = value if isinstance(value, tuple) else (value, {})
        constants[ctype] = (check_numeric_array(array, f"calibration constant {ctype}", file=path,
                                                h5path=f"/{name}/calib/{ctype}"), check_header(meta, file=path))
    try:
        shape = None if shape is None else tuple(int(n) for n in shape)
        dtype = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise WriterError(f"shape must be a sequence of ints and dtype a numpy dtype: {exc}",
                          file=path, h5path=f"/{name}") from exc
    if shape is not None and len(shape) == 2:
        shape = (1, *shape)
    if (shape is not None and (len(shape) != 3 or min(shape) < 1)) or (dtype is not None and dtype.kind not in "biuf"):
        raise WriterError(f"a declared frame must be [module, row, col] (or 2-D for one module) of a numeric "
                          f"dtype; found shape {shape} dtype {dtype}", file=path, h5path=f"/{name}")
    if geometry is not None:
        from calibsuite_h5source.geometry.source import prepare_geometry
        geometry = prepare_geometry(geometry, shape, file=path, h5path=f"/{name}/calib/geometry")
    return {"group_attrs": group_attrs, "headers": fields, "constants": constants, "shape": shape, "dtype": dtype,
            "geometry": geometry}


def learn_headers(path: str, detectors: dict, area: dict, headers) -> dict:
    """Header-field schema: declared with ``w.detector(header_fields=...)``, else the first event's."""
    if headers is not None and not isinstance(headers, dict):
        raise WriterError(f"headers must be {{detector: {{field: value}}}}; found {type(headers).__name__}",
                          file=path)
    out = {name: dict(d["headers"]) for name, d in detectors.items() if d.get("headers") and name in area}
    for name, fields in (headers or {}).items():
        if name not in area:
            raise WriterError(f"headers are for area detectors of the event; {name!r} is not one "
                              f"(area detectors: {sorted(area)})", file=path, h5path=f"/{name}")
        if name in out:
            continue
        if not isinstance(fields, dict) or not fields:
            raise WriterError(f"headers[{name!r}] must be a non-empty {{field: value}} dict; found {fields!r}",
                              file=path, h5path=f"/{name}")
        for field, value in fields.items():
            check_header_field_name(name, field, file=path)
            arr = check_numeric_array(value, f"header field {field!r}", file=path, h5path=f"/{name}/{field}")
            out.setdefault(name, {})[field] = (arr.shape, arr.dtype)
    return out


def propose_schema(path: str, detectors: dict, data: dict, has_timestamps: bool, scan, headers, step_scan: dict) -> dict:
    """The run's schema as the first event defines it; checked, nothing written (the writer adopts it at the first accepted event)."""
    area, side = {}, {}
    for name, value in data.items():
        check_source_name(name, file=path)
        if isinstance(value, dict):
            if not value:
                raise WriterError("side data must hold at least one field", file=path, h5path=f"/{name}")
            side[name] = {}
            for f, v in value.items():
                check_field_name(name, f, file=path)
                arr = check_numeric_array(v, f"side data {name}.{f}", file=path, h5path=f"/{name}/{f}")
                side[name][f] = (arr.shape, arr.dtype)
        else:
            declared = detectors.get(name, {})
            if value is None:
                if declared.get("shape") is None:
                    raise WriterError(f"the first event holds no data for {name}, so its frame shape is unknown; "
                                      f"declare it with w.detector({name!r}, shape=..., dtype=...)",
                                      file=path, h5path=f"/{name}")
                area[name] = (declared["shape"], declared["dtype"] or np.dtype(np.uint16))
            else:
                frame = as_frame(path, name, value)
                area[name] = (frame.shape, frame.dtype)
                want = (declared.get("shape") or frame.shape, declared.get("dtype") or frame.dtype)
                if area[name] != want:
                    raise WriterError(f"the first frame of {name} must have its declared shape and dtype: declared "
                                      f"{want[0]} {want[1]}, found {frame.shape} {frame.dtype} (w.detector("
                                      f"{name!r}, shape=, dtype=))", file=path, h5path=f"/{name}")
    if not area and not side:
        raise WriterError("an event must hold at least one detector or side-data source", file=path)
    if scan is not None and not isinstance(scan, dict):
        raise WriterError(f"scan= must be a dict {{name: value}}; found {type(scan).__name__}",
                          file=path, h5path=f"/{HEADER}")
    for name in scan or {}:
        check_scan_name(name, file=path)
        if name == "step_docstring" or name in step_scan:
            raise WriterError(f"{name!r} cannot be a per-event scan variable: it is "
                              f"{'a per-step value of this run' if name in step_scan else 'one str per step'}",
                              file=path, h5path=f"/{HEADER}/{name}")
    check_distinct_names(path, set(area) | set(side), [*step_scan, *(scan or {})])
    return {"area": area, "side": side, "sources": set(area) | set(side), "timestamps": has_timestamps,
            "scan": set(scan or {}),
            "headers": learn_headers(path, detectors, area, headers)}


def check_distinct_names(path: str, sources, scan_names) -> None:
    """Refuse a scan variable named as a detector or side-data source (case aside): ``run.Detector(name)``
    answers one of them, and the other's values could never be read."""
    lower = {str(s).lower(): s for s in sources}
    for name in scan_names:
        if str(name).lower() in lower:
            raise WriterError(f"scan variable {name!r} has the name of the source {lower[str(name).lower()]!r}; "
                              "run.Detector(name) could read only one of them: rename one",
                              file=path, h5path=f"/{HEADER}/{name}")


def as_frame(path: str, name, value) -> np.ndarray:
    frame = check_numeric_array(value, f"a frame of {name}", file=path, h5path=f"/{name}")
    if frame.ndim == 2:
        frame = frame[None]
    if frame.ndim != 3:
        raise WriterError(f"a frame must be [module, row, col] (or 2-D for one module); found shape {frame.shape}",
                          file=path, h5path=f"/{name}")
    return frame

def check_frame(path: str, schema, name, value, h5path) -> np.ndarray:
    frame = as_frame(path, name, value)
    shape, dtype = schema["area"][name]
    if frame.shape != shape or frame.dtype != dtype:
        raise WriterError(f"every frame of {name} must match its first: expected {shape} {dtype}, "
                          f"found {frame.shape} {frame.dtype}", file=path, h5path=h5path)
    return frame

def check_field(path: str, schema, name, field, value):
    return check_value(path, f"/{name}/{field}", schema["side"][name][field], value)

def check_value(path: str, h5path, expected, value, kind="side data"):
    what = h5path.lstrip("/").replace("/", ".")
    arr = check_numeric_array(value, f"{kind} {what}", file=path, h5path=h5path)
    shape, dtype = expected
    if arr.shape != shape or (arr.dtype != dtype and not (arr.dtype.kind in "biu" and dtype.kind in "iu")
                              and not np.can_cast(arr.dtype, dtype, "same_kind")):
        raise WriterError(f"every value of {what} must match its first: expected {shape} {dtype}, "
                          f"found {arr.shape} {arr.dtype}", file=path, h5path=h5path)
    return arr if arr.dtype == dtype else _into_column(path, h5path, what, arr, dtype)


def _into_column(path: str, h5path, what: str, arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``arr`` as the column's ``dtype`` (set by the first value or a declaration), only when every value
    survives (:func:`calibsuite_h5source.format.casting.cast_exactly`): never wrapped, never made inf."""
    cast = cast_exactly(arr, dtype)
    if cast is not None:
        return cast
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        bad = arr.max() if arr.max() > info.max else arr.min()
        raise WriterError(f"{what} = {bad} does not fit its column's {dtype} ({info.min} to {info.max}, set "
                          "by its first value or its declaration): declare a wider dtype", file=path, h5path=h5path)
    with np.errstate(over="ignore"):
        lost = np.isfinite(arr) & ~np.isfinite(arr.astype(dtype))
    raise WriterError(f"{what} = {arr[lost].flat[0]} overflows its column's {dtype} (set by its first value "
                      "or its declaration): declare a wider dtype", file=path, h5path=h5path)
