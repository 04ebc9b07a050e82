"""format/casting.py: when a later value may go into a column of another dtype (writer and smalldata)."""

import numpy as np
import pytest

from calibsuite_h5source.format.casting import cast_exactly


@pytest.mark.parametrize("value, dtype, kept", [
    (np.int64(7), "uint16", True), (np.uint64(70000), "uint16", False), (np.int64(-1), "uint32", False),
    (np.uint64(2**63), "int64", False), (np.int64(1), "bool", True), (np.int64(2), "bool", False),
    (np.int64(2**40), "float32", True), (np.float64(1e300), "float32", False), (np.float64(np.nan), "float32", True),
    (np.float64(np.inf), "float32", True), (np.float64(2.7), "int64", False), (np.complex128(1j), "float64", False),
    (np.float32(1.5), "complex64", True),
], ids=lambda v: str(v))
def test_a_value_goes_into_a_column_only_when_it_survives(value, dtype, kept):
    cast = cast_exactly(np.asarray(value), dtype)
    assert (cast is not None) == kept
    if kept:
        assert cast.dtype == np.dtype(dtype)
        assert np.array_equal(cast, np.asarray(value).astype(dtype), equal_nan=True)


def test_the_same_dtype_is_returned_as_is():
    arr = np.arange(3, dtype=np.uint8)
    assert cast_exactly(arr, np.uint8) is arr
