"""When a value may go into a column of another dtype: the one rule of the writer and of smalldata.

A column (a side-data field, a header field, a smalldata key) has the dtype of
its first value or of its declaration; a later value of another dtype is
stored only when every value survives the cast.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cast_exactly"]


def cast_exactly(arr, dtype) -> np.ndarray | None:
    """``arr`` as ``dtype`` when every value survives, else None.

    Integers (and bools) go into an integer or bool column only when each is
    in its range (never wrapped); numbers go into a float or complex column of
    the same or a wider kind, but not when a finite value would become inf; a
    float never goes into an integer column (2.7 would become 2, NaN cannot be
    stored), nor a complex into a real one. Float precision may be lost
    (float64 into float32).
    """
    arr, dtype = np.asarray(arr), np.dtype(dtype)
    if arr.dtype == dtype:
        return arr
    have, want = arr.dtype.kind, dtype.kind
    if have in "biu" and want in "biu":
        if arr.size:
            low, high = (0, 1) if want == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
            if arr.min() < low or arr.max() > high:
                return None
        return arr.astype(dtype)
    if want in "fc" and (have in "biu" or np.can_cast(arr.dtype, dtype, "same_kind")):
        with np.errstate(over="ignore", invalid="ignore"):
            cast = arr.astype(dtype)
        if have in "fc" and np.any(np.isfinite(arr) & ~np.isfinite(cast)):
            return None
        return cast
    return None
