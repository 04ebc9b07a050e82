"""Detector extras the suite calls: per-event header fields and psana's ``det.raw._pedestals()`` family."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from calibsuite_h5source import (
    DataSource,
    H5SourceError,
    InconsistentRunError,
    RunWriter,
    WriterError,
)

SUITE = Path(os.environ.get("CALIBSUITE_SUITE_DIR", Path(__file__).resolve().parents[2] / "shared" / "suite"))
ROOT = Path(__file__).resolve().parents[1]


def epixm_headers(k, i):
    """epixM's header fields as psana gives them: one value per ASIC."""
    return {"frameNo": np.full(4, 100 * k + i, np.uint32), "asicNo": np.arange(4, dtype=np.uint8),
            "autoFillMask": np.array([0xF, 0xF0, 0, 0xFFFF_FFFF], np.uint32), "fixedMask": np.zeros(4, np.uint32)}


def write_epixm(path, counts=(3, 2), present=None):
    with RunWriter(path, "dark") as w:
        for k, n in enumerate(counts):
            with w.step() as s:
                for i in range(n):
                    frame = None if present is not None and not present[k][i] else np.full((4, 2, 3), i, np.uint16)
                    s.event(epixM=frame, headers=None if frame is None else {"epixM": epixm_headers(k, i)})
    return path


# -- header fields ---------------------------------------------------------------------

@pytest.mark.parametrize("indexed", [True, False], ids=["with-nEvents-index", "scanned"])
def test_header_fields_round_trip(tmp_path, indexed):
    path = write_epixm(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        assert f["epixM/frameNo/1"].shape == (2, 4) and f["epixM/frameNo/1"].dtype == np.uint32
        if not indexed:
            del f["ancillaryData/nEvents"]
    run = next(DataSource(files=str(path)).runs())
    assert run.detnames == {"epixM"} and run.n_steps == 2  # the sub-groups are neither detectors nor steps
    det = run.Detector("epixm")
    got = [(det.raw.frameNo(e), det.raw.asicNo(e), det.raw.autoFillMask(e)) for e in run.events()]
    assert got[4] == ([101] * 4, [0, 1, 2, 3], [0xF, 0xF0, 0, 0xFFFF_FFFF])
    assert [g[0][0] for g in got] == [0, 1, 2, 100, 101]
    assert all(type(v) is int for g in got for field in g for v in field)  # python ints, as psana's lists
    assert det.raw.frameNo(None) is None
    assert run.detinfo[("epixM", "raw")] == ["asicNo", "autoFillMask", "calib", "fixedMask", "frameNo", "image", "raw"]


def test_scalar_header_field_is_a_python_number(tmp_path):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w, w.step() as s:
        for i in range(3):
            s.event(epix100=np.zeros((2, 3), np.uint16), headers={"epix100": {"frameNo": i + 7, "temp": 20.5 + i}})
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epix100")
    assert [(det.raw.frameNo(e), det.raw.temp(e)) for e in run.events()] == [(7, 20.5), (8, 21.5), (9, 22.5)]


def test_the_suites_dumpEpixMHeaderInfo_runs(tmp_path):  # noqa: N802
    """The suite's own ``PsanaBase.dumpEpixMHeaderInfo`` on our detector (in a subprocess: it imports psana and MPI)."""
    if not (SUITE / "calibrationSuite" / "psana2Base.py").exists():
        pytest.skip(f"the calibration suite is not in {SUITE}")
    pytest.importorskip("psana", reason="the suite imports the real psana")
    path = write_epixm(tmp_path / "r.h5", counts=(2,))
    script = f"""
import types
from calibrationSuite.psana2Base import PsanaBase
from calibsuite_h5source import DataSource
run = next(DataSource(files={str(path)!r}).runs())
me = types.SimpleNamespace(det=run.Detector("epixm"))
for evt in run.events():
    PsanaBase.dumpEpixMHeaderInfo(me, evt)
"""
    env = {**os.environ, "PYTHONPATH": f"{SUITE}{os.pathsep}{ROOT}", "PS_PARALLEL": "none"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        f"frameNo: [{i}, {i}, {i}, {i}], asicNo: [0, 1, 2, 3], "
        "autoFillMask: ['0xf', '0xf0', '0x0', '0xffffffff'], fixedMask: [0, 0, 0, 0]" for i in range(2)]


def test_header_fields_of_an_event_without_data_are_none(tmp_path):
    path = write_epixm(tmp_path / "r.h5", counts=(3,), present=[[True, False, True]])
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["epixM/frameNo/0"][1], np.zeros(4))  # zeros stored for the missing event
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    assert [det.raw.frameNo(e) for e in run.events()] == [[0] * 4, None, [2] * 4]


def test_declared_header_fields_and_a_whole_step(tmp_path):
    path = tmp_path / "r.h5"
    frames = np.arange(24, dtype=np.uint16).reshape(4, 1, 2, 3)
    with RunWriter(path, "dark") as w:
        w.detector("epix100", shape=(1, 2, 3), dtype=np.uint16, header_fields={"frameNo": ((), "uint32")})
        w.add_step({"epix100": frames}, headers={"epix100": {"frameNo": np.array([5, 6, 7, 8])}},
                   present={"epix100": [False, True, True, True]})
    with h5py.File(path) as f:
        assert f["epix100/frameNo/0"].dtype == np.uint32  # python/int64 values cast to the declared dtype
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epix100")
    assert [det.raw.frameNo(e) for e in run.events()] == [None, 6, 7, 8]


@pytest.mark.parametrize("headers, match", [
    ({"epixM": {"calib": 1}}, r"'calib' cannot name a header field"),
    ({"epixM": {"3": 1}}, r"'3' cannot name a header field"),
    ({"epixM": {"raw": 1}}, r"'raw' cannot name a header field"),
    ({"epixM": {"_x": 1}}, r"'_x' cannot name a header field"),
    ({"wave8": {"frameNo": 1}}, r"'wave8' is not one \(area detectors: \['epixM'\]\)"),
    ({"epixM": {"frameNo": "seven"}}, r"header field 'frameNo' must be numeric; found <U5"),
    ({"epixM": {}}, r"must be a non-empty \{field: value\} dict"),
])
def test_writer_refuses_bad_header_fields(tmp_path, headers, match):
    with pytest.raises(WriterError, match=match), RunWriter(tmp_path / "r.h5", "dark") as w, w.step() as s:
        s.event(epixM=np.zeros((1, 2, 2), np.uint16), wave8={"a": 1.0}, headers=headers)


@pytest.mark.parametrize("second, match", [
    ({}, r"every event with data for epixM must give the header fields \['frameNo'\]; found None"),
    ({"epixM": {"frameNo": 1, "asicNo": 2}}, r"must give the header fields \['frameNo'\]; found \['asicNo', 'frameNo'\]"),
    ({"epixM": {"frameNo": [1, 2]}}, r"every value of epixM.frameNo must match its first: expected \(\) int64, found \(2,\)"),
    ({"epixM": {"frameNo": 1.5}}, r"expected \(\) int64, found \(\) float64"),
    ({"jungfrau": {"frameNo": 1}}, r"detectors with header fields \[.epixM.\] .*; found \[.jungfrau.\]"),
])
def test_writer_refuses_an_event_whose_header_fields_differ(tmp_path, second, match):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w, w.step() as s:
        s.event(epixM=np.zeros((1, 2, 2), np.uint16), headers={"epixM": {"frameNo": 0}})
        with pytest.raises(WriterError, match=match):
            s.event(epixM=np.zeros((1, 2, 2), np.uint16), headers=second)
        s.event(epixM=np.zeros((1, 2, 2), np.uint16), headers={"epixM": {"frameNo": 1}})  # nothing was written
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    assert [det.raw.frameNo(e) for e in run.events()] == [0, 1]


def test_reader_checks_header_fields_against_the_detector(tmp_path):
    path = write_epixm(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        del f["ancillaryData/nEvents"]
        del f["epixM/frameNo/1"]
        f["epixM/frameNo/1"] = np.zeros((5, 4), np.uint32)  # step 1 has 2 events
    with pytest.raises(InconsistentRunError, match=r"step 1: /epixM has 2 events, /epixM/frameNo has 5") as info:
        next(DataSource(files=str(path)).runs())
    assert info.value.h5path == "/epixM/frameNo"
    with h5py.File(path, "a") as f:
        del f["epixM/frameNo/1"]
    with pytest.raises(InconsistentRunError, match=r"/epixM has 2 steps, /epixM/frameNo has 1"):
        next(DataSource(files=str(path)).runs())


def test_indexed_reader_checks_a_header_field_when_first_read(tmp_path):
    path = write_epixm(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        del f["epixM/asicNo/1"]
        f["epixM/asicNo/1"] = np.zeros((5, 4), np.uint8)
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    with pytest.raises(H5SourceError, match=r"nEvents promises 2 events; the dataset has shape \(5, 4\)"):
        [det.raw.asicNo(e) for e in run.events()]


def test_other_sub_groups_of_a_detector_are_not_header_fields(tmp_path):
    path = write_epixm(tmp_path / "r.h5", counts=(2,))
    with h5py.File(path, "a") as f:
        f["epixM"].create_group("config").attrs["gain"] = "high"  # no step members: ignored
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    assert "config" not in run.detinfo[("epixM", "raw")]
    with pytest.raises(AttributeError, match=r"epixM.raw has no method or header field 'config'; header fields: \['asicNo'"):
        _ = det.raw.config


def test_detector_without_header_fields_has_none(tmp_path):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w, w.step() as s:
        s.event(epixM=np.zeros((1, 2, 2), np.uint16))
    det = next(DataSource(files=str(path)).runs()).Detector("epixM")
    assert not hasattr(det.raw, "frameNo") and hasattr(det.raw, "raw")


# -- det.raw._pedestals() and friends ---------------------------------------------------

def write_with_constants(path, shape=(1, 2, 3), calib=None, name="epixM"):
    with RunWriter(path, "dark") as w:
        if calib is not None:
            w.detector(name, calib=calib)
        with w.step() as s:
            s.event(**{name: np.full(shape, 7, np.uint16)})
    return next(DataSource(files=str(path)).runs())


def test_no_constants_gives_none_as_psana(tmp_path):
    run = write_with_constants(tmp_path / "r.h5")
    raw = run.Detector("epixM").raw
    assert (raw._pedestals(), raw._gain(), raw._rms(), raw._status()) == (None, None, None, None)
    assert raw._pedestals(all_segs=True) is None  # psana's keywords are accepted


def test_constants_of_a_single_module_detector_follow_the_frame_shape(tmp_path):
    ped = np.arange(12, dtype=np.float32).reshape(2, 1, 2, 3)  # [gain, module, row, col]
    gain = np.full((1, 2, 3), 4.0, np.float32)
    status = np.array([[[0, 1, 0], [8, 0, 0]]], np.uint16)
    run = write_with_constants(tmp_path / "r.h5", calib={"pedestals": ped, "pixel_gain": gain, "pixel_status": status,
                                                         "pixel_rms": gain / 2})
    raw = run.Detector("epixM").raw  # epixM's one segment keeps its axis in psana: constants as stored
    assert raw._pedestals().shape == (2, 1, 2, 3) and raw._status().shape == (1, 2, 3)
    raw = run.Detector("epixM", keep_module_axis=False).raw
    assert raw._pedestals().shape == (2, 1, 2, 3)  # keep_module_axis=False is the default: the type decides
    run = write_with_constants(tmp_path / "e.h5", name="epix100",
                               calib={"pedestals": ped, "pixel_gain": gain, "pixel_status": status, "pixel_rms": gain / 2})
    raw = run.Detector("epix100").raw  # epix100's one segment is 2-D: constants shaped as its frames
    np.testing.assert_array_equal(raw._pedestals(), ped[:, 0])
    assert raw._pedestals().shape == (2, 2, 3) and raw._pedestals().dtype == np.float32
    np.testing.assert_array_equal(raw._gain(), gain[0])
    np.testing.assert_array_equal(raw._rms(), np.full((2, 3), 2.0))
    assert raw._status().dtype == np.uint64 and raw._status().tolist() == [[0, 1, 0], [8, 0, 0]]
    kept = run.Detector("epix100", keep_module_axis=True).raw
    assert kept._pedestals().shape == (2, 1, 2, 3) and kept._status().shape == (1, 2, 3)


def test_constants_of_a_multi_module_detector_as_stored(tmp_path):
    ped = np.random.default_rng(0).random((4, 2, 3)).astype(np.float32)
    run = write_with_constants(tmp_path / "r.h5", shape=(4, 2, 3), calib={"pedestals": ped})
    det = run.Detector("epixM")
    np.testing.assert_array_equal(det.raw._pedestals(), ped)
    assert det.raw._gain() is None and det.raw._status() is None
    evt = next(run.events())
    np.testing.assert_allclose(det.raw.calib(evt), det.raw.raw(evt) - det.raw._pedestals())


def test_header_fields_the_first_event_did_not_give_need_declaring(tmp_path):
    with RunWriter(tmp_path / "r.h5", "dark") as w, w.step() as s:
        s.event(epixM=np.zeros((1, 2, 2), np.uint16), wave8={"a": 1.0})
        with pytest.raises(WriterError, match=r"or w.detector\(name, header_fields=...\)\); found \['epixM'\]"):
            s.event(epixM=np.zeros((1, 2, 2), np.uint16), wave8={"a": 1.0}, headers={"epixM": {"frameNo": 1}})
