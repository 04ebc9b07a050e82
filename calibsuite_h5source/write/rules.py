"""What the writer accepts: one check function per rule, shared by every write path.

``RunWriter.step``, ``StepWriter.event``, ``StepWriter.add_events``,
``RunWriter.add_step``, ``RunWriter.detector`` and ``write_run_dict`` all go
through these functions, before anything is buffered or written, so a refused
call leaves the file exactly as it was. Each raises :class:`WriterError`
naming the file, the HDF5 path, the rule and what was found.

The name rules mirror what the reader treats as special
(:mod:`calibsuite_h5source.read.layout`): a name the reader would take for the
header, the event index, the timestamps or a step would not read back.
"""

from __future__ import annotations

import operator

import numpy as np

from calibsuite_h5source.errors import WriterError
from calibsuite_h5source.format.constants import (
    HEADER,
    RESERVED_DETECTOR,
    RESERVED_SCAN,
    RESERVED_SOURCE,
    step_number,
)

#: ``det.raw`` methods a per-event header field must not shadow.
AREA_METHODS = {"raw", "calib", "image"}
#: Numeric dtype kinds: bool, signed, unsigned, float (frames, side data and scan values).
NUMERIC_KINDS = "biuf"
TIMESTAMP_LIMIT = 2**64


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_hdf5_name(name, what: str, *, file, h5path) -> None:
    if not isinstance(name, str):
        raise WriterError(f"a {what} name must be a str; found {_describe(name)}", file=file, h5path=h5path)
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise WriterError(f"a {what} name must be a plain HDF5 name (not empty, '.', '..', and without '/' "
                          f"or NUL); found {name!r}", file=file, h5path=h5path)


def check_source_name(name, *, file=None) -> str:
    """Refuse a detector or side-data source name the reader could not read back.

    Parameters
    ----------
    name : object
        The proposed name (a keyword of ``event`` or a key of ``add_events``).
    file : str, optional
        The run file, for the message.

    Returns
    -------
    str
        ``name``, unchanged.
    """
    _check_hdf5_name(name, "detector", file=file, h5path="/")
    if name in RESERVED_SOURCE:
        raise WriterError(f"{name!r} is reserved (the reader's {sorted(RESERVED_SOURCE)}); "
                          "pick another detector name", file=file, h5path=f"/{name}")
    if step_number(name) is not None:
        raise WriterError(f"a detector name must not look like a step ('0', 'step0', 'step_0'); found {name!r}",
                          file=file, h5path=f"/{name}")
    return name


def check_field_name(source: str, field, *, file=None) -> str:
    """Refuse a side-data field (or calibration constant) name the reader could not read back."""
    _check_hdf5_name(field, "side-data field", file=file, h5path=f"/{source}")
    if field in RESERVED_DETECTOR or step_number(field) is not None:
        raise WriterError(f"a field name must not be {sorted(RESERVED_DETECTOR)} or look like a step; "
                          f"found {field!r}", file=file, h5path=f"/{source}/{field}")
    return field


def check_header_field_name(detector: str, field, *, file=None) -> str:
    """Refuse a per-event header field name: a field name that is also not private nor a ``det.raw`` method."""
    try:
        check_field_name(detector, field, file=file)
        ok = not field.startswith("_") and field not in AREA_METHODS
    except WriterError:
        ok = False
    if not ok:
        raise WriterError(f"{field!r} cannot name a header field: it must be a non-empty str without '/', not "
                          f"start with '_', not look like a step (3, step3) nor be one of "
                          f"{sorted(RESERVED_DETECTOR | AREA_METHODS)}", file=file, h5path=f"/{detector}/{field}")
    return field


def check_scan_name(name, *, file=None) -> str:
    """Refuse a scan-variable name that is not a plain name or is the writer's ``nEvents`` index."""
    _check_hdf5_name(name, "scan variable", file=file, h5path=f"/{HEADER}")
    if name in RESERVED_SCAN:
        raise WriterError(f"{name!r} is reserved (the writer's index of events per step); pick another "
                          "scan-variable name", file=file, h5path=f"/{HEADER}/{name}")
    return name


def check_timestamp(value, *, file=None, h5path="/timestamp") -> int:
    """Return a psana timestamp as an int, or refuse it.

    A timestamp must be an integer (python or numpy, not bool or float:
    a float cannot hold a 64-bit timestamp exactly) with
    ``0 <= value < 2**64``.
    """
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (float, np.floating)):
        ts = None
    else:
        try:
            ts = operator.index(value)
        except TypeError:
            ts = None
    if ts is None:
        raise WriterError("a timestamp must be an integer (psana's seconds << 32 | nanoseconds); "
                          f"found {_describe(value)}", file=file, h5path=h5path)
    if not 0 <= ts < TIMESTAMP_LIMIT:
        raise WriterError(f"a timestamp must be an unsigned 64-bit integer (0 <= t < 2**64); found {ts}",
                          file=file, h5path=h5path)
    return ts


def check_scan_value(name: str, value, *, file=None, h5path=None):
    """Return a scan value as a python number (``step_docstring``: a str), or refuse it.

    Scan values are read back as float64 (``docs/format.rst``), so each is
    one real number; ``step_docstring`` alone is a str.
    """
    h5path = h5path or f"/{HEADER}/{name}"
    if name == "step_docstring":
        if not isinstance(value, str):
            raise WriterError(f"step_docstring must be a str (a JSON object); found {_describe(value)}",
                              file=file, h5path=h5path)
        return str(value)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 0 or arr.dtype.kind not in NUMERIC_KINDS:
        raise WriterError(f"scan value {name} must be one real number (bool, int or float); "
                          f"found {_describe(value)}", file=file, h5path=h5path)
    return arr.item()


def check_numeric_array(value, what: str, *, file=None, h5path=None) -> np.ndarray:
    """Return ``value`` as an ndarray of a numeric dtype (frames, side data, constants), or refuse it."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise WriterError(f"{what} must be a numeric array; found {_describe(value)} ({exc})",
                          file=file, h5path=h5path) from exc
    if arr.dtype.kind not in NUMERIC_KINDS:
        raise WriterError(f"{what} must be numeric; found {arr.dtype} from {_describe(value)} "
                          "(use bool, int, uint or float)", file=file, h5path=h5path)
    return arr


def check_header(header: dict, *, file=None) -> dict:
    """Refuse ``/ancillaryData`` attributes HDF5 cannot store as plain values.

    A value must be a str, a real number, or a 1-D list/array of either
    (``ancillaryDataType``); keys must be plain names.
    """
    if not isinstance(header, dict):
        raise WriterError(f"attributes must be a dict {{name: value}}; found {_describe(header)}", file=file)
    for key, value in header.items():
        _check_hdf5_name(key, "header attribute", file=file, h5path=f"/{HEADER}")
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.ndim > 1 or arr.dtype.kind not in NUMERIC_KINDS + "US":  # too-large ints are 'O'
            raise WriterError(f"header attribute {key} must be a str, a real number or a 1-D list of them; "
                              f"found {_describe(value)}", file=file, h5path=f"/{HEADER}")
    return header
