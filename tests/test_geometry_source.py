"""det.raw.image / _pixel_coords through the geometry a run carries (or psana's default), without psana."""

from __future__ import annotations

import hashlib
import logging
import math
import types
from pathlib import Path

import h5py
import numpy as np
import psana_standin
import pytest

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.errors import WriterError
from calibsuite_h5source.geometry import GeometryError, default_geometry_text, geometry_from_text
from calibsuite_h5source.geometry.source import archon_image
from calibsuite_h5source.synthetic.run import SyntheticRun
from calibsuite_h5source.tools.validate import validate

REF = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "geometry" / "psana_reference.npz")

TWO = """IP 0 CAM 0  0 0 1000  0 0 0  0 0 0
CAM 0 MTRX:V2:2:3:10:10 0  0 -20 0  0 0 0  0 0 0
CAM 0 MTRX:V2:2:3:10:10 1  0  20 0  0 0 0  0 0 0
"""


def write(path, frames, geometry=None, name="cam", det_type=None, **kw):
    frames = np.asarray(frames)
    with RunWriter(path, "dark", overwrite=True) as w:
        w.detector(name, detType=det_type, shape=frames.shape[1:], dtype=frames.dtype, geometry=geometry, **kw)
        with w.step() as s:
            for f in frames:
                s.event(**{name: f})
    return path


def first(path, name="cam"):
    run = next(DataSource(files=str(path)).runs())
    return run.Detector(name), next(run.events())


def test_the_files_geometry_draws_the_image(tmp_path):
    frames = np.arange(12, dtype=np.uint16).reshape(1, 2, 2, 3)
    det, evt = first(write(tmp_path / "g.h5", frames, geometry=TWO))
    img = det.raw.image(evt, fillholes=False)
    np.testing.assert_array_equal(img, [[3, 0, 0, 0, 9, 6], [4, 1, 0, 0, 10, 7], [5, 2, 0, 0, 11, 8]])
    assert img.dtype == np.float32
    x, y, z = det.raw._pixel_coords()
    assert x.shape == (2, 2, 3) and x.dtype == np.float64 and np.all(z == -1000)
    rows, cols = det.raw._pixel_coord_indexes()
    assert rows.dtype == np.uint64 and cols[1].max() == 5
    assert det.calibconst["geometry"] == (TWO, {})
    assert validate(tmp_path / "g.h5") == []


def test_writer_takes_a_path_and_segment_numbers(tmp_path):
    geo = tmp_path / "geometry-def-two.data"
    geo.write_text(TWO)
    frames = np.arange(6, dtype=np.uint16).reshape(1, 1, 2, 3)  # only the second segment stored
    det, evt = first(write(tmp_path / "p.h5", frames, geometry=(str(geo), {"segments": [1]})))
    img = det.raw.image(evt, fillholes=False)
    assert img.shape == (3, 6) and np.all(img[:, :4] == 0)
    np.testing.assert_array_equal(img[:, 4:], [[3, 0], [4, 1], [5, 2]])
    det2, evt2 = first(write(tmp_path / "p2.h5", frames, geometry=geo))  # a Path: module 0 is segment 0
    assert det2.raw.image(evt2, fillholes=False)[:, :2].tolist() == [[3, 0], [4, 1], [5, 2]]


@pytest.mark.parametrize(("geometry", "message"), [
    ("IP 0 X 0\n", "line 1: needs 13 fields"),
    (default_geometry_text("epix100a"), r"EPIX100:V1 segments are \(704, 768\), the frames' modules \(2, 3\)"),
    ((TWO, {"segments": [0, 0]}), "not distinct"),
    ((TWO, {"segments": [2]}), "names 1 segments for 2 stored modules"),
    (42, "geometry must be text or a path"),
])
def test_writer_refuses_geometry_that_cannot_draw_the_frames(tmp_path, geometry, message):
    with pytest.raises(WriterError, match=message) as exc, RunWriter(tmp_path / "w.h5", "dark") as w:
        w.detector("cam", shape=(2, 2, 3), dtype=np.uint16, geometry=geometry)
    assert exc.value.h5path == "/cam/calib/geometry"


def test_a_bad_geometry_in_a_file_is_reported_and_raised(tmp_path):
    path = write(tmp_path / "b.h5", np.zeros((1, 2, 2, 3), np.uint16), geometry=TWO)
    with h5py.File(path, "a") as f:
        del f["cam/calib/geometry"]
        f["cam/calib"].create_dataset("geometry", data="IP 0 EPIX100:V1 0 0 0 0 0 0 0 0 0 0", dtype=h5py.string_dtype())
    problems = validate(path)
    assert [(p.code, p.h5path) for p in problems] == [("geometry", "/cam/calib/geometry")]
    assert "(704, 768)" in problems[0].message
    det, evt = first(path)
    assert det.raw.raw(evt).shape == (2, 2, 3)  # the frames stay readable
    with pytest.raises(GeometryError, match="does not fit") as exc:
        det.raw.image(evt)
    assert str(path) in str(exc.value) and "/cam/calib/geometry" in str(exc.value)


def test_a_type_without_geometry_is_tiled_with_one_warning(tmp_path, caplog):
    frames = np.arange(24, dtype=np.uint16).reshape(1, 4, 2, 3)
    det, evt = first(write(tmp_path / "t.h5", frames, name="oddcam"), "oddcam")
    with caplog.at_level(logging.WARNING):
        img = det.raw.image(evt)
        det.raw.image(evt)
    assert img.shape == (4, 6)
    np.testing.assert_array_equal(img[2:, 3:], frames[0, 3])
    assert caplog.text.count("no geometry for this detector") == 1
    assert det.raw._pixel_coords() is None and det.raw._pixel_coord_indexes() is None


@pytest.mark.parametrize(("detector", "stem"), [("epixM", "epixm320"), ("epix100", "epix100a"),
                                                 ("jungfrau", "jungfrau05M"), ("epixUHR", "epixuhr")])
def test_fake_writes_the_default_and_images_match_psanas_record(tmp_path, detector, stem):
    path = tmp_path / f"{detector}.h5"
    SyntheticRun("dark", detector, events=1, steps=1).write(path)
    with h5py.File(path) as f:
        assert f[f"{detector}/calib/geometry"][()].decode() == default_geometry_text(stem)
    det, evt = first(path, detector)
    shape = tuple(REF[f"{stem}/shape"])
    nda = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    img = det.raw.image(evt, nda=nda)
    assert img.shape == tuple(REF[f"{stem}/image_shape"])
    assert hashlib.sha256(img.tobytes()).hexdigest() == str(REF[f"{stem}/image_sha"])
    calib = det.raw.calib(evt)
    np.testing.assert_array_equal(det.raw.image(evt), geometry_from_text(default_geometry_text(stem)).image(calib))
    x, _, _ = det.raw._pixel_coords()
    np.testing.assert_allclose(x.ravel()[REF[f"{stem}/pick"]], REF[f"{stem}/x"], rtol=0, atol=1e-6)


def test_psanas_default_is_used_when_the_file_has_none(tmp_path):
    path = tmp_path / "nogeo.h5"
    frames = np.arange(4 * 192 * 384, dtype=np.uint16).reshape(1, 4, 192, 384)
    det, evt = first(write(path, frames, name="epixM", det_type="epixm"), "epixM")
    assert "geometry" not in det.calibconst
    assert det.raw.image(evt).shape == tuple(REF["epixm320/image_shape"])


def test_archon_is_drawn_as_psana_draws_it():
    a = np.arange(2 * 4800).reshape(2, 4800)
    old, new = archon_image(a, "1_0_0"), archon_image(a, "1_0_3")
    assert old.shape == new.shape == (2, 4224)
    assert old[0, 263] == 263 and old[0, 264] == 300  # 1_0_0: the last 36 columns of each bank are fake
    assert new[0, 0] == 36 and new[0, 264] == 336  # later: the first 36
    frame = np.ones((1, 3, 4224))
    assert archon_image(frame).shape == (3, 4224)  # frames without the fake columns are the image already


FOUR = "IP 0 CAM 0  0 0 0  0 0 0  0 0 0\n" + "".join(
    f"CAM 0 MTRX:V2:2:3:10:10 {i}  0 {40 * i} 0  0 0 0  0 0 0\n" for i in range(4))


class StandInRun:
    """A psana-like run of one step of two (4, 2, 3) epix frames whose raw interface carries geometry."""

    def __init__(self, geometry, segments):
        self.runnum, self.expt, self.timestamp = 7, "tst", 1_000_000_000 << 32
        self.detinfo = {("epix", "raw"): ["calib", "image", "raw"]}
        self.xtcinfo = [("epix", "epixm320", "raw", "1_2_3")]
        self.scaninfo = {}
        self.events_ = [types.SimpleNamespace(timestamp=self.timestamp + i, i=i) for i in range(2)]
        self.raw = types.SimpleNamespace(raw=lambda e: np.full((4, 2, 3), e.i, np.uint16), calib=lambda e: None,
                                         _calibconst={"geometry": (geometry, {})}, _segment_numbers=segments)

    def events(self):
        return iter(self.events_)

    def steps(self):
        yield types.SimpleNamespace(events=lambda: iter(self.events_))

    def Detector(self, name):  # noqa: N802
        if name == "epix":
            return types.SimpleNamespace(raw=self.raw)
        raise KeyError(name)


@pytest.mark.parametrize(("geometry", "copied"), [(FOUR, True), (default_geometry_text("epix100a"), False)])
def test_convert_copies_psanas_geometry_when_it_fits(tmp_path, mocker, caplog, geometry, copied):
    from calibsuite_h5source.write.convert import convert
    psana_standin.install(mocker, lambda **kw: types.SimpleNamespace(runs=lambda: iter([StandInRun(geometry, [0, 1, 2, 3])])))
    out = tmp_path / "c.h5"
    with caplog.at_level(logging.WARNING):
        convert(out, exp="tst", run=7, progress=False)
    det, evt = first(out, "epix")
    if copied:
        assert det.calibconst["geometry"][0] == FOUR
        np.testing.assert_array_equal(det.calibconst["geometry"][1]["segments"], [0, 1, 2, 3])
        assert det.raw.image(evt).shape == (3, 3 * 4 + 2)  # segments 40 um = 4 bins apart, 2 bins wide
    else:
        assert "geometry" not in det.calibconst and "/epix/calib/geometry not copied" in caplog.text
        assert det.raw.raw(evt).shape == (4, 2, 3)


@pytest.mark.parametrize(("attrs", "name", "shape", "stem"), [
    ({"dettype": "epix10ka"}, "cam", (4, 352, 384), "epix10kaquad"),  # dettype alone gives the type
    ({"dettype": "epix10ka"}, "jungfrau", (4, 352, 384), "epix10kaquad"),  # dettype before the name
    ({"detType": "jungfrau", "dettype": "epix10ka"}, "cam", (1, 512, 1024), "jungfrau05M"),  # detType first
    ({"detType": "epix100", "dettype": "archon"}, "cam", (1, 704, 768), "epix100a"),  # not drawn as an archon
    ({"dettype": "jungfrauemu"}, "cam", (8, 512, 1024), "jungfrau4M"),  # psana's emulated jungfrau: its own file
])
def test_the_default_geometry_follows_the_one_type_rule(tmp_path, attrs, name, shape, stem):
    """The default geometry is that of format.shapes.type_of's type: detType, then dettype, then the name."""
    from calibsuite_h5source.format.shapes import type_of
    frames = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(1, *shape) % 1000
    path = tmp_path / "typed.h5"
    with RunWriter(path, "dark") as w:
        w.detector(name, detType=attrs.get("detType"), attrs={k: v for k, v in attrs.items() if k != "detType"})
        with w.step() as s:
            s.event(**{name: frames[0]})
    det, evt = first(path, name)
    assert type_of(name, attrs).psana_type in stem
    expected = geometry_from_text(default_geometry_text(stem)).image(det.raw.calib(evt))
    np.testing.assert_array_equal(det.raw.image(evt), expected)
