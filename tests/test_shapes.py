"""Frame shapes as psana returns them: one module gives ``[row, col]``; ``keep_module_axis`` keeps it.

psana's ``AreaDetectorRaw.raw`` returns a single segment's array as it is
(``if len(segs) == 1: return segs[ind].raw``); the file keeps ``[module, row,
col]`` (docs/format.rst).
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
        assert (raw.dtype, calib.dtype, image.dtype) == (np.uint16, np.float32, np.float32)
        np.testing.assert_array_equal(raw, frames[i])
        np.testing.assert_array_equal(calib, frames[i].astype(np.float32))  # epix100: no gain bits


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
def test_every_layout_gives_row_col_for_one_module(tmp_path, layout):
    decl = declare_run(steps=(2, 2), shape=(1, 4, 6), side=False, timestamps=layout != "legacy")
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl, layout)).runs())
    det = run.Detector(next(iter(run.detnames)))
    got = [det.raw.raw(e) for e in run.events()]
    assert [g.shape for g in got] == [(4, 6)] * 4
    np.testing.assert_array_equal(got[3], decl["detectors"]["epixM"][1][1][0])


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
    """Constants stay ``[gain, module, row, col]`` in the file; calib comes back ``[row, col]``."""
    path = tmp_path / "r.h5"
    raw = np.array([[[10, 0x8000 | 20], [30, 40]]], np.uint16)  # epixM-like gain bit 1 << 15
    with RunWriter(path, "dark") as w:
        w.detector("epixM", calib={"pedestals": np.stack([np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 5.0)]),
                                   "pixel_gain": np.stack([np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 3.0)])})
        with w.step() as s:
            s.event(epixM=raw)
    run = next(DataSource(files=str(path)).runs())
    calib = run.Detector("epixM").raw.calib(next(run.events()))
    np.testing.assert_array_equal(calib, [[9, 5], [29, 39]])


def test_user_supplied_nda_for_image(tmp_path):
    path = tmp_path / "r.h5"
    write_epix100(path)
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epix100")
    evt = next(run.events())
    np.testing.assert_array_equal(det.raw.image(evt, det.raw.raw(evt) * 0 + 2), np.full((8, 12), 2.0))
