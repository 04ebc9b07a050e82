"""Frame shapes as psana returns them, per detector type (format/shapes.py); ``keep_module_axis`` keeps the axis.

psana's ``AreaDetectorRaw.raw`` returns a single segment's array as it is
(``if len(segs) == 1: return segs[ind].raw``): 2-D for epix100, archon,
epix10ka, epixhr and cameras, ``[1, row, col]`` for jungfrau, epixM and
epixUHR. The file keeps ``[module, row, col]`` (docs/format.rst); ``convert``
records what psana gave (``psanaModuleAxis``), which wins over the table.
``calib`` without constants follows psana's class per type, dtype included.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.testing import LAYOUTS, declare_run, write_layout


def write_epix100(path, n=3, shape=(8, 12), calib=None):
    """A single-module run written as psana hands frames over: 2-D."""
    frames = np.random.default_rng(1).integers(0, 1 << 14, (n, *shape)).astype(np.uint16)
    with RunWriter(path, "dark") as w:
        if calib:
            w.detector("epix100", calib=calib)
        with w.step() as s:
            for f in frames:
                s.event(epix100=f)
    return frames


def test_single_module_reads_as_row_col_and_the_file_keeps_the_module_axis(tmp_path):
    path = tmp_path / "r.h5"
    frames = write_epix100(path)
    with h5py.File(path) as f:
        assert f["epix100/0"].shape == (3, 1, 8, 12)
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epix100")
    for i, evt in enumerate(run.events()):
        raw, calib, image = det.raw.raw(evt), det.raw.calib(evt), det.raw.image(evt)
        assert raw.shape == calib.shape == image.shape == (8, 12)
        assert (raw.dtype, calib.dtype, image.dtype) == (np.uint16, np.uint16, np.float32)
        np.testing.assert_array_equal(raw, frames[i])
        np.testing.assert_array_equal(calib, frames[i])  # psana's calib_epix100 without pedestals: raw itself


def test_the_suites_pixel_list_indexes_a_single_module_frame(tmp_path):
    """CalcNoiseAndMean does ``frames[tuple(p)]`` for ``singlePixels = [[row, col], ...]`` of a 2-D detector."""
    path = tmp_path / "r.h5"
    frames = write_epix100(path)
    run = next(DataSource(files=str(path)).runs())
    frame = run.Detector("epix100").raw.raw(next(run.events()))
    pixels = [[2, 3], [7, 11]]
    assert [int(frame[tuple(p)]) for p in pixels] == [int(frames[0][2, 3]), int(frames[0][7, 11])]


def test_keep_module_axis_on_the_data_source(tmp_path):
    path = tmp_path / "r.h5"
    frames = write_epix100(path)
    run = next(DataSource(files=str(path), keep_module_axis=True).runs())
    det = run.Detector("epix100")
    evt = next(run.events())
    assert det.raw.raw(evt).shape == det.raw.calib(evt).shape == (1, 8, 12)
    assert det.raw.image(evt).shape == (8, 12)  # an image is 2-D either way
    np.testing.assert_array_equal(det.raw.raw(evt), frames[0][None])


@pytest.mark.parametrize("source_keeps, detector_keeps, shape", [
    (False, True, (1, 8, 12)), (True, False, (8, 12)), (True, None, (1, 8, 12)), (False, None, (8, 12)),
])
def test_keep_module_axis_on_the_detector_overrides_the_data_source(tmp_path, source_keeps, detector_keeps, shape):
    path = tmp_path / "r.h5"
    write_epix100(path)
    run = next(DataSource(files=str(path), keep_module_axis=source_keeps).runs())
    det = run.Detector("epix100", keep_module_axis=detector_keeps)
    assert det.raw.raw(next(run.events())).shape == shape


def test_several_modules_keep_their_axis(tmp_path):
    decl = declare_run(steps=(2,), shape=(4, 3, 5), side=False)
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    det = run.Detector("epixM")
    evt = next(run.events())
    assert det.raw.raw(evt).shape == det.raw.calib(evt).shape == (4, 3, 5)
    assert det.raw.image(evt).shape == (6, 10)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("detector, shape", [("epix100", (4, 6)), ("jungfrau", (1, 4, 6))])
def test_every_layout_gives_psana_s_shape_for_one_module(tmp_path, layout, detector, shape):
    decl = declare_run(steps=(2, 2), shape=(1, 4, 6), side=False, timestamps=layout != "legacy", detector=detector)
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl, layout)).runs())
    det = run.Detector(next(iter(run.detnames)))
    got = [det.raw.raw(e) for e in run.events()]
    assert [g.shape for g in got] == [shape] * 4
    np.testing.assert_array_equal(got[3], decl["detectors"][detector][1][1].reshape(shape))


def test_missing_event_is_still_none(tmp_path):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w:
        w.detector("epix100", shape=(1, 2, 3), dtype=np.uint16)
        with w.step() as s:
            s.event(epix100=None)
            s.event(epix100=np.ones((2, 3), np.uint16))
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epix100")
    evt0, evt1 = run.events()
    assert det.raw.raw(evt0) is None and det.raw.calib(evt0) is None and det.raw.image(evt0) is None
    assert det.raw.raw(evt1).shape == (2, 3)


def test_calib_of_one_module_with_per_gain_pedestals(tmp_path):
    """Constants stay ``[gain, module, row, col]`` in the file; calib comes back shaped as raw (epixM: 3-D)."""
    path = tmp_path / "r.h5"
    raw = np.array([[[10, 0x8000 | 20], [30, 40]]], np.uint16)  # epixM-like gain bit 1 << 15
    with RunWriter(path, "dark") as w:
        w.detector("epixM", calib={"pedestals": np.stack([np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 5.0)]),
                                   "pixel_gain": np.stack([np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 3.0)])})
        with w.step() as s:
            s.event(epixM=raw)
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    calib = det.raw.calib(next(run.events()))
    np.testing.assert_array_equal(calib, [[[9, 5], [29, 39]]])
    assert calib.dtype == np.float32 and det.raw._pedestals().shape == (2, 1, 2, 2)


def test_user_supplied_nda_for_image(tmp_path):
    path = tmp_path / "r.h5"
    write_epix100(path)
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epix100")
    evt = next(run.events())
    np.testing.assert_array_equal(det.raw.image(evt, det.raw.raw(evt) * 0 + 2), np.full((8, 12), 2.0))


# -- the type table (format/shapes.py), every call site ----------------------------------------

#: type -> (does one module keep its axis, is calib without constants raw itself), from psana's classes
TYPES = {"epixM": (True, True), "epix10k": (False, False), "epixhr": (False, False), "epixUHR": (True, True),
         "jungfrau": (True, True), "epix100": (False, True), "archon": (False, True), "andor": (False, False)}


def one_module_run(path, name, attrs=None, calib=None, n=2):
    frames = np.random.default_rng(2).integers(0, 1 << 16, (n, 1, 3, 5)).astype(np.uint16)
    with RunWriter(path, "dark") as w:
        w.detector(name, calib=calib, attrs=attrs)
        with w.step() as s:
            for f in frames:
                s.event(**{name: f})
    return frames


@pytest.mark.parametrize("name", sorted(TYPES))
def test_each_type_s_single_segment_shape_everywhere(tmp_path, name):
    from calibsuite_h5source import psana1
    from calibsuite_h5source.format.detector_types import detector_type

    keeps, calib_raw = TYPES[name]
    path = tmp_path / f"{name}.h5"
    frames = one_module_run(path, name, calib={"pixel_rms": np.ones((1, 3, 5), np.float32)})
    want = lambda a: a if keeps else a[..., 0, :, :]  # noqa: E731
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector(name)
    evts = list(run.events())
    for i, evt in enumerate(evts):
        raw, calib = det.raw.raw(evt), det.raw.calib(evt)
        np.testing.assert_array_equal(raw, want(frames[i]))
        assert raw.shape == calib.shape and raw.dtype == np.uint16
        t = detector_type(name)
        if calib_raw:  # psana: no pedestals, calib returns raw (its dtype, its gain bits)
            assert calib.dtype == np.uint16
            np.testing.assert_array_equal(calib, raw)
        else:  # epix10ka/epixhr: float32 raw & data_bit_mask; unknown types as before: float32 (masked when known)
            assert calib.dtype == np.float32
            np.testing.assert_array_equal(calib, (raw & t.gain_bits_mask) if t else raw)
        assert det.raw.image(evt).ndim == 2
    assert det.raw._rms().shape == want(np.ones((1, 3, 5))).shape  # constants shaped as raw
    assert det.raw.frames().shape == (2, *want(frames[0]).shape)  # arrays API: frames[j] shaped as raw(evt j)
    np.testing.assert_array_equal(det.raw.frames(), want(frames))
    ds1 = psana1.DataSource(str(path))
    det1 = psana1.Detector(name)
    evt1 = next(ds1.events())
    assert det1.shape() == det1.raw(evt1).shape == want(frames[0]).shape  # psana1's shape() agrees with raw
    assert det1.rms().shape == want(frames[0]).shape


@pytest.mark.parametrize("name, recorded, shape", [("jungfrau", False, (3, 5)), ("epix100", True, (1, 3, 5)),
                                                   ("andor", True, (1, 3, 5)), ("epixM", False, (3, 5))])
def test_the_shape_convert_recorded_wins_over_the_type_table(tmp_path, name, recorded, shape):
    from calibsuite_h5source.format.shapes import MODULE_AXIS_ATTR

    path = tmp_path / "r.h5"
    one_module_run(path, name, attrs={MODULE_AXIS_ATTR: recorded})
    run = next(DataSource(files=str(path)).runs())
    assert run.Detector(name).raw.raw(next(run.events())).shape == shape
    run = next(DataSource(files=str(path), keep_module_axis=True).runs())
    assert run.Detector(name).raw.raw(next(run.events())).shape == (1, 3, 5)


def test_the_type_comes_from_det_type_before_the_name(tmp_path):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w:
        w.detector("cam", detType="jungfrau")
        with w.step() as s:
            s.event(cam=np.zeros((1, 3, 5), np.uint16))
    run = next(DataSource(files=str(path)).runs())
    assert run.Detector("cam").raw.raw(next(run.events())).shape == (1, 3, 5)


def test_the_rule_s_helpers():
    from calibsuite_h5source.format import shapes

    assert shapes.keeps_module_axis("x", {}, (4, 3, 5)) and shapes.keeps_module_axis("x", {}, (1, 3, 5), True)
    assert not shapes.keeps_module_axis("x", {}, (1, 3, 5))
    assert shapes.keeps_module_axis("jungfrau1M", {}, (1, 3, 5))
    assert shapes.keeps_module_axis("x", {"detType": b"jungfrau"}, (1, 3, 5))
    assert shapes.module_axis_attr(np.zeros((3, 5))) is False and shapes.module_axis_attr(np.zeros((1, 3, 5)))
    assert shapes.returned_shape((1, 3, 5), True) == (3, 5) and shapes.returned_shape((2, 3, 5), True) == (2, 3, 5)
    assert shapes.drop_module_axis(np.zeros((7, 1, 3, 5)), True).shape == (7, 3, 5)
    assert shapes.drop_module_axis(None, True) is None
