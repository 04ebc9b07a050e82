"""The geometry engine against psana's own results, recorded (fixtures/geometry), without psana."""

from __future__ import annotations

import hashlib
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from calibsuite_h5source.errors import FormatError
from calibsuite_h5source.geometry import (
    GeometryError,
    default_geometry_name,
    default_geometry_text,
    geometry_from_text,
    parse_geometry,
)
from calibsuite_h5source.geometry.engine import Geometry

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "geometry" / "psana_reference.npz"
REF = np.load(REFERENCE)
STEMS = sorted({k.split("/")[0] for k in REF.files if "/" in k})


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def pick(size, n=256):
    return np.unique(np.linspace(0, size - 1, n).astype(np.int64))


def test_reference_covers_the_defaults_and_is_small():
    assert REFERENCE.stat().st_size < 100_000
    assert {"epixm320", "epix10kaquad", "epix100a", "jungfrau05M", "jungfrau1M", "jungfrau4M", "epixhr2x2",
            "epixuhr"} <= set(STEMS)


@pytest.mark.parametrize("stem", [pytest.param(s, marks=pytest.mark.slow) if s in ("jungfrau4M", "epixhr1x4-20") else s
                                  for s in STEMS])
def test_coordinates_indexes_and_image_match_psana(stem):
    g = geometry_from_text(default_geometry_text(stem))
    shape = tuple(REF[f"{stem}/shape"])
    assert g.shape == shape
    x, y, z = g.pixel_coords()
    assert x.dtype == np.float64 and x.shape == shape
    p = REF[f"{stem}/pick"]
    for axis, a in zip("xyz", (x, y, z), strict=True):
        np.testing.assert_allclose(a.ravel()[p], REF[f"{stem}/{axis}"], rtol=0, atol=1e-6)
    rows, cols = g.pixel_coord_indexes()
    assert rows.dtype == np.uint64 and rows.shape == shape
    assert sha(rows) == str(REF[f"{stem}/rows_sha"]) and sha(cols) == str(REF[f"{stem}/cols_sha"])
    img = g.image(np.arange(math.prod(shape), dtype=np.float32).reshape(shape))
    assert img.shape == tuple(REF[f"{stem}/image_shape"]) and str(img.dtype) == str(REF[f"{stem}/image_dtype"])
    np.testing.assert_array_equal(img.ravel()[pick(img.size)], REF[f"{stem}/image_pick"])
    assert sha(img) == str(REF[f"{stem}/image_sha"])


def test_the_issues_measured_shapes():
    quad = geometry_from_text(default_geometry_text("epix10kaquad"))
    assert quad.image(np.zeros(quad.shape, np.uint16)).shape == (775, 793)
    jf = geometry_from_text(default_geometry_text("jungfrau05M"))
    assert jf.image(np.zeros((1, 512, 1024))).shape == (514, 1030)


TWO = """# two 2x3 matrices of 10 um pixels side by side; rows of the image run along x
IP 0 CAM 0  0 0 1000  0 0 0  0 0 0
CAM 0 MTRX:V2:2:3:10:10 0  0 -20 0  0 0 0  0 0 0
CAM 0 MTRX:V2:2:3:10:10 1  0  20 0  0 0 0  0 0 0
"""


def test_a_hand_computed_geometry():
    g = geometry_from_text(TWO)
    x, y, z = g.pixel_coords()
    np.testing.assert_array_equal(x[0], [[-10, 0, 10], [-10, 0, 10]])
    np.testing.assert_array_equal(y[0], [[-15, -15, -15], [-25, -25, -25]])
    np.testing.assert_array_equal(y[1] - y[0], np.full((2, 3), 40.0))
    assert np.all(z == -1000)  # a positive Z0 under IP is made negative, as psana does
    rows, cols = g.pixel_coord_indexes()
    np.testing.assert_array_equal(rows[0], [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(cols[0], [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(cols[1], [[5, 5, 5], [4, 4, 4]])
    nda = np.arange(12, dtype=np.uint16).reshape(2, 2, 3)
    img = g.image(nda, fillholes=False)
    assert img.dtype == np.float32 and img.shape == (3, 6)
    np.testing.assert_array_equal(img, [[3, 0, 0, 0, 9, 6], [4, 1, 0, 0, 10, 7], [5, 2, 0, 0, 11, 8]])
    np.testing.assert_array_equal(g.image(nda, vbase=-1, fillholes=False)[:, 2:4], -np.ones((3, 2)))
    np.testing.assert_array_equal(g.image(nda, mapmode=0)[:, :2], np.ones((3, 2)))
    # only the second segment stored: the image keeps the whole geometry's extent
    only = g.image(nda[1], segments=[1], fillholes=False)
    assert only.shape == (3, 6) and np.all(only[:, :4] == 0)
    np.testing.assert_array_equal(only[:, 4:], img[:, 4:])


def test_rotation_and_tilt_compose_about_z_then_y_then_x():
    text = "IP 0 MTRX:V2:1:2:10:10 0  100 0 0  {rz} 0 0  {tz} 0 0\n"
    x, y, _ = geometry_from_text(text.format(rz=90, tz=0)).pixel_coords()
    np.testing.assert_allclose(x[0, 0], [100, 100], atol=1e-9)
    np.testing.assert_allclose(y[0, 0], [-5, 5], atol=1e-9)
    x2, y2, _ = geometry_from_text(text.format(rz=45, tz=45)).pixel_coords()  # tilt adds to the rotation
    np.testing.assert_allclose(x2, x, atol=1e-9)
    np.testing.assert_allclose(y2, y, atol=1e-9)
    _, y3, z3 = geometry_from_text("IP 0 MTRX:V2:1:2:10:10 0  0 0 0  90 0 90  0 0 0\n").pixel_coords()
    np.testing.assert_allclose(y3[0, 0], [0, 0], atol=1e-9)
    np.testing.assert_allclose(z3[0, 0], [-5, 5], atol=1e-9)


def test_holes_take_the_smallest_neighbour():
    # four one-pixel segments around an empty centre: the centre is a hole with four filled neighbours
    text = "IP 0 CAM 0  0 0 0  0 0 0  0 0 0\n" + "".join(
        f"CAM 0 MTRX:V2:1:1:10:10 {i}  {x} {y} 0  0 0 0  0 0 0\n"
        for i, (x, y) in enumerate([(-10, 0), (10, 0), (0, -10), (0, 10)]))
    g = geometry_from_text(text)
    nda = np.array([4.0, 7.0, 3.0, 9.0], np.float32)
    raw = g.image(nda, fillholes=False)
    np.testing.assert_array_equal(raw, [[0, 4, 0], [3, 0, 9], [0, 7, 0]])
    assert g.image(nda)[1, 1] == 3.0


def test_several_pixels_in_one_bin_keep_the_last():
    text = """IP 0 CAM 0  0 0 0  0 0 0  0 0 0
CAM 0 MTRX:V2:1:1:10:10 0  0 0 0  0 0 0  0 0 0
CAM 0 MTRX:V2:1:1:10:10 1  1 1 0  0 0 0  0 0 0
"""
    g = geometry_from_text(text)
    assert g.image_map().shared == 1
    assert g.image(np.array([5.0, 2.0])).tolist() == [[2.0]]  # psana 4.3.4: the last, not the largest
    assert g.image(np.array([5.0, 2.0]), mapmode=0).tolist() == [[2]]


@pytest.mark.parametrize(("text", "message"), [
    ("", "no object lines"),
    ("# only a comment\n", "no object lines"),
    ("IP 0 EPIX100:V1 0 0 0 0 90 180 0 0 0\n", "line 1: needs 13 fields"),
    ("IP 0 EPIX100:V1 0 0 0 zero 90 180 0 0 0 0\n", "must be integers and positions/angles numbers"),
    ("IP 0 CAM 0 0 0 0 0 0 0 0 0 0\n", "neither a known segment type nor a parent"),
    ("A 0 EPIX100:V1 0 0 0 0 0 0 0 0 0 0\nB 0 EPIX100:V1 1 0 0 0 0 0 0 0 0 0\n", "exactly one top object"),
    ("IP 0 EPIX100:V1 0 0 0 0 0 0 0 0 0 0\nEPIX100:V1 0 EPIX100:V1 1 0 0 0 0 0 0 0 0 0\n", "cannot be a parent"),
    ("IP 0 SENS2X1:V1 0 0 0 0 0 0 0 0 0 0\n", "SENS2X1:V1' is not supported"),
    ("IP 0 MTRX:1:2 0 0 0 0 0 0 0 0 0 0\n", "needs rows:cols"),
    ("IP 0 CAM 0 0 0 0 0 0 0 0 0 0\nCAM 0 EPIX100:V1 0 0 0 0 0 0 0 0 0 0\nCAM 0 EPIX10KA:V1 1 0 0 0 0 0 0 0 0 0\n",
     "mixes segment types"),
])
def test_bad_text_is_a_clear_error(text, message):
    with pytest.raises((GeometryError, ValueError), match=message):
        Geometry(parse_geometry(text, file="run.h5", h5path="/d/calib/geometry"))


def test_geometry_error_names_where():
    with pytest.raises(GeometryError) as exc:
        parse_geometry("IP 0 X\n", file="run.h5", h5path="/epixM/calib/geometry")
    assert isinstance(exc.value, FormatError)
    assert "run.h5" in str(exc.value) and "/epixM/calib/geometry" in str(exc.value) and "line 1" in str(exc.value)


def test_image_refuses_an_array_of_another_size():
    g = geometry_from_text(default_geometry_text("epixm320"))
    with pytest.raises(ValueError, match="has 10 values; this geometry places 294912"):
        g.image(np.zeros(10))


@pytest.mark.parametrize(("names", "modules", "stem"), [
    (("epixm",), 4, "epixm320"), (("epixM",), 1, "epixm320"), (("epix10ka",), 4, "epix10kaquad"),
    (("epixquad_0",), 4, "epix10kaquad"), (("Epix100a",), 1, "epix100a"), (("jungfrau",), 1, "jungfrau05M"),
    (("jungfrau",), 2, "jungfrau1M"), (("jungfrau",), 5, "jungfrau4M"), (("jungfrau4M",), 8, "jungfrau4M"),
    (("jungfrau",), 32, "jungfrau16M"), (("epixhremu",), 20, "epixhr1x4-20"), (("epixhr",), 1, "epixhr2x2"),
    (("epixUHR",), 4, "epixuhr"), (("archon",), 1, None), (("andor",), 1, None), ((None, "", "epix100"), 1, "epix100a"),
])
def test_default_geometry_per_type(names, modules, stem):
    assert default_geometry_name(*names, modules=modules) == stem


def test_defaults_travel_with_their_notice():
    data = resources.files("calibsuite_h5source.geometry") / "data"
    notice = (data / "NOTICE").read_text()
    assert "Leland Stanford Junior University" in notice and "Redistributions" in notice
    stems = {p.name[len("geometry-def-"):-len(".data")] for p in data.iterdir() if p.name.endswith(".data")}
    assert set(STEMS) < stems
    for stem in stems:
        assert geometry_from_text(default_geometry_text(stem)).n_segments >= 1
