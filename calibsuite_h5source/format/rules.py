"""Type and range rules of header values and attributes (``docs/format.rst``), checked at open.

Each rule is a small function ``rule(value) -> value`` that returns the value
as the reader uses it or raises ``ValueError`` saying what it must be; the
tables :data:`HEADER` and :data:`DETECTOR` say which rule applies to which
name. :func:`apply` runs a table over decoded values and raises
:class:`~calibsuite_h5source.errors.HeaderError` naming the file, the HDF5
path, the attribute, the rule and what was found. Names not in a table are
kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from calibsuite_h5source.errors import HeaderError

__all__ = ["decode", "HEADER", "DETECTOR", "apply", "gain_bits_mask"]

_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Undecodable:
    """Stands for a byte string that is not UTF-8 (the text rule refuses it)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes):
        self.raw = raw

    def __repr__(self):
        return f"{self.raw!r} (not UTF-8)"

    def __str__(self):  # lenient readers (info) show it with replacement characters
        return self.raw.decode("utf-8", "replace")


def decode(value):
    """Return an HDF5 attribute or scalar value as a plain python value.

    Byte strings are decoded as UTF-8; one that is not UTF-8 becomes an
    object that every text rule refuses. Arrays become lists, numpy scalars
    python scalars, compound values tuples.
    """
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return _Undecodable(bytes(value))
    if isinstance(value, np.ndarray):
        if value.shape == ():
            return decode(value[()])
        return [decode(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return decode(value.item())
    if isinstance(value, tuple):
        return tuple(decode(v) for v in value)
    return value


# -- the rules ------------------------------------------------------------------------

def text(value) -> str:
    """A single UTF-8 string."""
    if not isinstance(value, str):
        raise ValueError(f"must be a single UTF-8 string; found {_kind(value)} {_shown(value)}")
    return value


def texts(value) -> str | list[str]:
    """A UTF-8 string or a list of them."""
    if isinstance(value, list):
        return [text(v) for v in value]
    return text(value)


def _integer(value, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be {what}; found {_kind(value)} {_shown(value)}")
    if not low <= value <= high:
        raise ValueError(f"must be {what} ({low}..{high}); found {value}")
    return value


def count(value) -> int:
    """A non-negative 64-bit integer."""
    return _integer(value, 0, _INT64_MAX, "a non-negative integer")


def timestamp(value) -> int:
    """An unsigned 64-bit integer (a psana timestamp)."""
    return _integer(value, 0, _UINT64_MAX, "an unsigned 64-bit integer")


def flag(value) -> bool:
    """A boolean (``True``/``False``, or the integers 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"must be a boolean; found {_kind(value)} {_shown(value)}")


def gain_bits_mask(value, dtype: np.dtype | None) -> int:
    """A non-negative integer that fits the frames' integer dtype (any 64-bit value for others)."""
    dtype = np.dtype(dtype) if dtype is not None else None
    high = int(np.iinfo(dtype).max) if dtype is not None and dtype.kind in "iu" else _UINT64_MAX
    return _integer(value, 0, high, f"a non-negative integer that fits the frames' dtype {dtype}")


def _kind(value) -> str:
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, _Undecodable):
        return "bytes"
    return type(value).__name__


#: Header (``/ancillaryData``) attributes: name -> rule.
HEADER: dict[str, Callable] = {
    "scriptType": text,
    "run": count,
    "runnum": count,
    "timestamp": timestamp,
    "acquisitionScript": text,
    "commandLine": text,
    "version": text,
    "date": text,
    "location": text,
    "experiment": text,
    "error": text,
    "ancillaryDataType": texts,
    "complete": flag,
    "stepsComplete": count,
}

#: Area-detector group attributes: name -> rule (``gainBitsMask`` also needs the dtype: see :func:`gain_bits_mask`).
DETECTOR: dict[str, Callable] = {
    "detType": text,
    "dettype": text,
    "detVersion": text,
    "detector": text,
}


def apply(table: Mapping[str, Callable], values: dict, file: str, h5path: str) -> dict:
    """Return ``values`` with every name of ``table`` checked by its rule.

    Raises
    ------
    HeaderError
        A value breaks its rule; the message names the attribute, the rule
        and what was found.
    """
    out = dict(values)
    for name, rule in table.items():
        if name in out:
            out[name] = check(name, rule, out[name], file, h5path)
    return out


def check(name: str, rule: Callable, value, file: str, h5path: str):
    """Return ``rule(value)``; raise :class:`HeaderError` naming ``name`` when it breaks the rule."""
    try:
        return rule(value)
    except ValueError as exc:
        raise HeaderError(f"attribute {name!r} {exc}", file=file, h5path=h5path) from None
