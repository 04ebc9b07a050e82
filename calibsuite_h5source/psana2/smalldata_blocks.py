"""Checking a block of smalldata rows before any of it is written: the one place for psana2's
``smalldata`` and psana1's ``small_data``.

A column takes the shape and dtype of its first value (python int -> int64, float -> float64,
arrays keep theirs). Rows without a value (the key absent, or passed None) hold the missing
value. A value the column cannot hold is refused with :class:`SmallDataError` naming the key,
the event's timestamp, what the column holds and what was found: a shape change, a non-number,
a float (2.7, NaN) into an integer column, an integer that overflows its column. psana stores
such values as numpy's assignment does (2.7 -> 2 without a word) or fails with numpy's bare
error; its writer (``psana/smalldata.py``, ``CacheArray.append``: ``self.data[self.n_events, ...] = data``)
checks nothing.
"""

from __future__ import annotations

import numpy as np

from calibsuite_h5source.errors import H5SourceError
from calibsuite_h5source.format.casting import cast_exactly

MISSING_INT = -99999
MISSING_FLOAT = np.nan


def missing_value(dtype: np.dtype):
    """psana's fill value for a row that lacks a key.

    NaN for floats; -99999 for integers, cast to the dtype as psana's numpy
    does (an unsigned ``uint16`` column gets ``np.uint16(-99999 % 2**16)``).
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return MISSING_FLOAT
    return np.array(MISSING_INT).astype(dtype)[()]


class SmallDataError(H5SourceError, ValueError):
    """A smalldata call got data it cannot reduce or store (names the key and the value's type)."""


# -- checking a block of per-event values (the one place; psana1's small_data uses it too) ----------

def value_info(key: str, ts, value, kinds: str = "biufc") -> tuple:
    """``(shape, dtype)`` of one event value (python int -> int64, float -> float64), or :class:`SmallDataError`."""
    if isinstance(value, bool):
        return (), np.dtype(bool)
    if isinstance(value, int):
        return ((), np.dtype("i8")) if -2**63 <= value < 2**63 else ((), np.dtype(object))
    if isinstance(value, float):
        return (), np.dtype("f8")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):  # ragged lists
        arr = np.asarray(None)
    if arr.dtype.kind not in kinds:
        raise SmallDataError(f"smalldata: {key!r} at timestamp {ts}: values must be numbers or numeric arrays; "
                             f"got {type(value).__name__}")
    return arr.shape, arr.dtype


def _storable(arr: np.ndarray, dtype: np.dtype) -> bool:
    """True if ``arr`` goes into a ``dtype`` column with every value kept (the writer's rule,
    :func:`calibsuite_h5source.format.casting.cast_exactly`): no wrap-around, no float into an
    integer column (2.7 would become 2, NaN cannot be stored), no complex into a float one."""
    return cast_exactly(arr, dtype) is not None


def _what(shape, dtype) -> str:
    return f"{dtype}" if shape == () else f"{dtype} arrays of shape {tuple(shape)}"


def _refuse(key, ts, held: str, value, advice: str = ""):
    found = repr(value) if np.ndim(value) == 0 and not isinstance(value, np.ndarray) else \
        _what(np.shape(value), np.asarray(value).dtype)
    raise SmallDataError(f"smalldata: {key!r} at timestamp {ts}: the column holds {held}; found {found}"
                         + (f" ({advice})" if advice else ""))


def _checked(key, ts, value, shape, dtype, kinds, shape_advice):
    vshape, vdtype = value_info(key, ts, value, kinds)
    arr = np.asarray(value, dtype=vdtype)
    if tuple(vshape) != tuple(shape):
        _refuse(key, ts, _what(shape, dtype), value, shape_advice)
    if not _storable(arr, dtype):
        _refuse(key, ts, _what(shape, dtype), value, "a column keeps the type of its first value: "
                "pass float(x) from the first event if the values can be fractional or NaN")
    return arr


def column_block(key: str, values: list, stamps: list, schema: tuple | None = None, kinds: str = "biufc",
                 shape_advice: str = 'an array whose shape changes needs a "var_" key'):
    """Check one key's values for a block of rows; return ``(shape, dtype, block)`` to append, or None.

    ``values`` has one entry per row, None where the row has no value (the key was absent or
    passed None); those rows hold the missing value (NaN / -99999). ``schema`` is the column's
    ``(shape, dtype)``, None for a new column (then the first value's). Returns None when the
    column is new and every value is None (its type is not known yet). Every value is checked
    before anything is written: a shape change, a non-number, or a value the column's dtype
    cannot hold (a float or NaN into an integer column, an integer that overflows it) raises
    :class:`SmallDataError` naming the key, the row's timestamp, the column and the value.
    """
    present = [i for i, v in enumerate(values) if v is not None]
    if schema is None:
        if not present:
            return None
        schema = value_info(key, stamps[present[0]], values[present[0]], kinds)
    shape, dtype = tuple(schema[0]), np.dtype(schema[1])
    block = np.full((len(values), *shape), missing_value(dtype), dtype=dtype)
    for i in present:
        block[i] = _checked(key, stamps[i], values[i], shape, dtype, kinds, shape_advice)
    return shape, dtype, block


def ragged_block(key: str, values: list, stamps: list, schema: tuple | None = None, kinds: str = "biufc"):
    """Check one ``var_`` key's values for a block of rows: ``(shape, dtype, data, lengths)``.

    Each value is an array whose first axis varies (None: length 0); ``shape`` is the shape of
    one element (``value.shape[1:]``), fixed for the column. ``data`` (the values concatenated
    along axis 0) is None when no row has an element; ``shape``/``dtype`` are None too when the
    column is new. Raises :class:`SmallDataError` as :func:`column_block`.
    """
    arrays, lengths = [], np.zeros(len(values), np.int64)
    for i, v in enumerate(values):
        if v is None:
            continue
        vshape, vdtype = value_info(key, stamps[i], v, kinds)
        if not vshape:
            _refuse(key, stamps[i], "arrays (a var_ key)", v, "a var_ key takes an array or list per event")
        if schema is None and not arrays and vshape[0]:
            schema = (vshape[1:], vdtype)
        if schema is not None:
            arr = _checked(key, stamps[i], v, (vshape[0], *schema[0]), np.dtype(schema[1]), kinds,
                           "the elements of a var_ key keep one shape")
            if len(arr):
                arrays.append(arr)
        lengths[i] = vshape[0]
    if schema is None:
        return None, None, None, lengths
    shape, dtype = tuple(schema[0]), np.dtype(schema[1])
    data = np.concatenate(arrays).astype(dtype, copy=False) if arrays else None
    return shape, dtype, data, lengths


def same_lengths(key: str, lk: str, lengths, expected, stamps) -> None:
    """Keys sharing one ``_len`` dataset must have the same length in every row (psana's rule)."""
    bad = np.flatnonzero(np.asarray(lengths) != np.asarray(expected))
    if len(bad):
        i = int(bad[0])
        raise SmallDataError(f"smalldata: {key!r} at timestamp {stamps[i]}: length {lengths[i]}, but another key "
                             f"sharing {lk!r} has length {expected[i]} in that row")
