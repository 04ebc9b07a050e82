"""Bad input gets one clear error naming the file, the HDF5 path and the rule."""

import logging

import h5py
import numpy as np
import pytest
from run_support import writer_run

from calibsuite_h5source import (
    DataSource,
    FormatError,
    InconsistentRunError,
    MissingScriptTypeError,
    NotHDF5Error,
)
from calibsuite_h5source.read.run_index import open_run_index
from calibsuite_h5source.testing.layouts import declare_run, write_layout


@pytest.fixture
def valid(tmp_path):
    return write_layout(tmp_path / "run.h5", declare_run(steps=(3, 2)))


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("pedestal run notes\n")
    with pytest.raises(NotHDF5Error, match=r"notes\.h5: not an HDF5 file: no HDF5 signature; found first bytes b'pedestal'"):
        open_run_index(path)


def test_truncated_file_is_told_from_a_missing_one(tmp_path, valid):
    data = open(valid, "rb").read()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(NotHDF5Error, match=r"cut\.h5: HDF5 file is truncated or corrupted"):
        open_run_index(cut)
    with pytest.raises(NotHDF5Error, match=r"gone\.h5: file does not exist"):
        open_run_index(tmp_path / "gone.h5")
    with pytest.raises(NotHDF5Error, match="is a directory"):
        open_run_index(tmp_path)


def test_missing_script_type(valid):
    with h5py.File(valid, "a") as f:
        del f["ancillaryData"].attrs["scriptType"]
    with pytest.raises(MissingScriptTypeError, match=r"run\.h5: /ancillaryData: the header must have a 'scriptType'.*found \['ancillaryDataType', 'run'\]"):
        next(DataSource(files=valid).runs())


def test_unrecognised_script_type_is_a_warning(valid, caplog):
    with h5py.File(valid, "a") as f:
        f["ancillaryData"].attrs["scriptType"] = "wobbleScan"
    with caplog.at_level(logging.WARNING):
        run = next(DataSource(files=valid).runs())
    assert "'wobbleScan' is not a recognised type" in caplog.text
    assert len(list(run.events())) == 5


def test_zero_steps(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
    with pytest.raises(FormatError, match=r"empty\.h5: /: a run must have at least one step"):
        open_run_index(tmp_path / "empty.h5")


def test_detectors_with_different_event_counts(valid):
    with h5py.File(valid, "a") as f:
        del f["wave8/peakAmplitude/1"]
        f["wave8/peakAmplitude/1"] = np.zeros((1, 4), np.float32)
    with pytest.raises(InconsistentRunError, match=r"/wave8/peakAmplitude: every detector must have the same events "
                       r"per step; step 1: /epixM has 2 events, /wave8/peakAmplitude has 1"):
        open_run_index(valid)


def test_detectors_with_different_step_counts(valid):
    with h5py.File(valid, "a") as f:
        del f["wave8/peakAmplitude/1"]
    with pytest.raises(InconsistentRunError, match=r"/epixM has 2 steps, /wave8/peakAmplitude has 1"):
        open_run_index(valid)


def test_timestamps_of_the_wrong_length(valid):
    with h5py.File(valid, "a") as f:
        del f["timestamp/1"]
        f["timestamp/1"] = np.arange(5, dtype=np.uint64)
    with pytest.raises(InconsistentRunError, match=r"run\.h5: /timestamp/1: timestamps of step 1 must be \[nEvents=2\]; found shape \(5,\)"):
        open_run_index(valid)


def test_per_event_data_must_be_module_row_col(valid):
    with h5py.File(valid, "a") as f:
        del f["epixM/1"]
        f["epixM/1"] = np.zeros((2, 8, 16), np.uint16)
    with pytest.raises(FormatError, match=r"/epixM/1: epixM step 1 has shape \(2, 8, 16\): per-event data must be \[module, row, col\]"):
        open_run_index(valid)


def test_dtype_change_between_steps(valid):
    with h5py.File(valid, "a") as f:
        del f["epixM/1"]
        f["epixM/1"] = np.zeros((2, 2, 8, 16), np.float32)
    with pytest.raises(FormatError, match="same in every step"):
        open_run_index(valid)


def test_steps_must_be_contiguous(valid):
    with h5py.File(valid, "a") as f:
        f.move("epixM/1", "epixM/2")
    with pytest.raises(FormatError, match=r"/epixM: steps must be numbered contiguously from 0; found \[0, 2\]"):
        open_run_index(valid)


def test_per_step_scan_variable_of_the_wrong_length(valid):
    with h5py.File(valid, "a") as f:
        del f["ancillaryData/delay"]
        f["ancillaryData/delay"] = np.arange(5.0)
    with pytest.raises(InconsistentRunError, match=r"/ancillaryData/delay: per-step scan variable must have nSteps=2 values; found 5"):
        open_run_index(valid)


def test_padded_nevents_beyond_the_padding(tmp_path):
    path = write_layout(tmp_path / "p.h5", declare_run(steps=(3, 2)), "padded")
    with h5py.File(path, "a") as f:
        f["nEvents"][1] = 7
    with pytest.raises(InconsistentRunError, match=r"nEvents \[3, 7\] exceeds the padded event axis \(3\)"):
        open_run_index(path)


def test_incomplete_run_reads_finished_steps(valid, caplog):
    with h5py.File(valid, "a") as f:
        f["ancillaryData"].attrs["complete"] = False
        f["ancillaryData"].attrs["stepsComplete"] = 1
        f["ancillaryData"].attrs["error"] = "RuntimeError: DAQ died"
    with caplog.at_level(logging.WARNING):
        run = next(DataSource(files=valid).runs())
    assert run.complete is False
    assert "incomplete" in caplog.text and "DAQ died" in caplog.text
    assert [len(list(s.events())) for s in run.steps()] == [3]


def test_file_is_closed_after_an_error(valid):
    with h5py.File(valid, "a") as f:
        del f["epixM/1"]
        f["epixM/1"] = np.zeros((2, 8, 16), np.uint16)
    with pytest.raises(FormatError):
        open_run_index(valid)
    with h5py.File(valid, "w"):  # would fail if the reader still held the file open
        pass


def test_writer_index_opens_steps_lazily(tmp_path):
    path = writer_run(tmp_path / "r.h5")
    idx = open_run_index(path)
    assert idx.n_events.tolist() == [3, 2, 4] and "nEvents" not in idx.scan
    assert [ea._dataset is None for ea in idx.area["epixM"].steps] == [False, True, True]
    idx.close()
    run = next(DataSource(files=path).runs())
    assert [len(list(s.events())) for s in run.steps()] == [3, 2, 4]


def test_a_stale_writer_index_is_caught_when_the_step_is_read(tmp_path):
    from calibsuite_h5source.tools.validate import validate

    path = writer_run(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        f["ancillaryData/nEvents"][1] = 5
    with pytest.raises(InconsistentRunError, match=r"/timestamp/1: /ancillaryData/nEvents promises 5 events; the dataset has shape \(2,\)"):
        list(next(DataSource(files=path).runs()).events())
    with h5py.File(path, "a") as f:
        del f["timestamp"]
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    with pytest.raises(InconsistentRunError, match=r"/epixM/1: /ancillaryData/nEvents promises 5 events; the dataset has shape \(2, 1, 2, 2\)"):
        for evt in run.events():
            det.raw.raw(evt)
    assert [p.code for p in validate(path)] == ["nevents-index"]


def test_writer_index_with_missing_steps(tmp_path):
    path = writer_run(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        del f["epixM/2"]
    with pytest.raises(InconsistentRunError, match=r"/epixM: /ancillaryData/nEvents lists 3 steps; found steps \[0, 1\]"):
        open_run_index(path)


def _both_ways(tmp_path, eager):
    """A run read eagerly (no writer's index) or lazily (the writer's, with wave8 side data)."""
    if eager:
        return write_layout(tmp_path / "run.h5", declare_run(steps=(3, 2)))
    from calibsuite_h5source import RunWriter
    path = tmp_path / "run.h5"
    with RunWriter(path, "dark") as w:
        for n in (3, 2):
            w.add_step({"epixM": np.zeros((n, 1, 2, 2), np.uint16), "wave8": {"peakAmplitude": np.zeros(n)}})
    return str(path)


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "indexed"])
@pytest.mark.parametrize("h5path, rule", [("/epixM/present", r"present must be a group of per-step bool masks \(present/<k>\)"),
                                          ("/epixM/calib", "calib must be a group of calibration constants"),
                                          ("/wave8/present", r"present must be a group of per-step bool masks \(present/<k>\)")])
def test_present_or_calib_stored_as_a_dataset_is_an_error_not_ignored(tmp_path, eager, h5path, rule):
    path = _both_ways(tmp_path, eager)
    with h5py.File(path, "a") as f:
        if h5path in f:
            del f[h5path]
        f[h5path] = np.zeros(5, bool)  # all absent: ignoring it would serve every frame
    with pytest.raises(FormatError, match=rf"run\.h5: {h5path}: {rule}; found Dataset"):
        next(DataSource(files=path).runs())


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "indexed"])
def test_a_float_present_mask_is_refused_in_every_layout(tmp_path, eager):
    """The eager layout once read masks with astype(bool), past the dtype rule the lazy one applies."""
    path = _both_ways(tmp_path, eager)
    with h5py.File(path, "a") as f:
        f.require_group("epixM/present")
        if "0" in f["epixM/present"]:
            del f["epixM/present/0"]
        f["epixM/present/0"] = np.full(3, 0.5)
    with pytest.raises(FormatError, match=r"/epixM/present/0: present mask must be bool; found float64"):
        run = next(DataSource(files=path).runs())
        det = run.Detector("epixM")
        [det.raw.raw(evt) for evt in run.events()]


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "indexed"])
@pytest.mark.parametrize("value", [np.zeros(2, "S3"), np.zeros((2, 3))], ids=["dtype", "shape"])
def test_a_side_field_step_unlike_step_0_is_refused(tmp_path, eager, value):
    """The eager layout once served such a step as it was (bytes, or another shape)."""
    path = _both_ways(tmp_path, eager)
    with h5py.File(path, "a") as f:
        del f["wave8/peakAmplitude/1"]
        f["wave8/peakAmplitude/1"] = value
    with pytest.raises(FormatError, match=r"/wave8/peakAmplitude/1: per-event shape/dtype must be the same in every "
                                          r"step; step 0 has \(.*\) float.., (step 1|this step) has"):
        run = next(DataSource(files=path).runs())
        [run.Detector("wave8").raw.peakAmplitude(evt) for evt in run.events()]


@pytest.mark.parametrize("value", [np.int64(5), np.array([[3, 2]]), np.array([3.5, 2])], ids=["scalar", "2-D", "float"])
def test_a_malformed_writer_index_is_an_error_not_ignored(tmp_path, value):
    """/ancillaryData/nEvents that is not 1-D was skipped (the run read as if it had no index), and the live
    reader saw such a run as empty."""
    from calibsuite_h5source import EventCountError
    from calibsuite_h5source.read.follow import Follower

    path = _both_ways(tmp_path, eager=False)
    with h5py.File(path, "a") as f:
        del f["ancillaryData/nEvents"]
        f["ancillaryData/nEvents"] = value
    with pytest.raises(EventCountError, match=r"run\.h5: /ancillaryData/nEvents: (nEvents must be a 1-D integer "
                                              r"dataset|event counts must be non-negative integers)"):
        next(DataSource(files=path).runs())
    follower = Follower(path)
    with pytest.raises(EventCountError, match=r"/ancillaryData/nEvents"):
        follower.reopen()
    follower.close()


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "indexed"])
@pytest.mark.parametrize("edit, h5path, rule", [
    (lambda f: f.__setitem__("wave8/intensity", np.zeros(3)), "/wave8/intensity",
     r"a side-data field must be a group of per-step datasets \(/wave8/intensity/<step>\); found a dataset"),
    (lambda f: (f.__delitem__("epixM/1"), f.create_group("epixM/1")), "/epixM/1",
     r"step 1 must be a dataset of \[nEvents, ...\]; found Group|expected a dataset here; found Group"),
], ids=["side-dataset", "step-group"])
def test_malformed_members_are_errors_not_dropped(tmp_path, eager, edit, h5path, rule):
    """A side field stored as one dataset, or a step stored as a group, was skipped without a word."""
    path = _both_ways(tmp_path, eager)
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(FormatError, match=rf"run\.h5: {h5path}: ({rule})"):
        run = next(DataSource(files=path).runs())
        [run.Detector("epixM").raw.raw(evt) for evt in run.events()]


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "indexed"])
def test_a_side_sources_metadata_group_is_read_past_in_every_layout(tmp_path, eager):
    """A sub-group without steps (/wave8/settings, attributes only): the eager reader left it out, the
    indexed one (writer's nEvents, or over 64 steps) refused the run for it. One rule: side_fields."""
    path = _both_ways(tmp_path, eager)
    with h5py.File(path, "a") as f:
        f.create_group("wave8/settings").attrs["gain"] = 3
    run = next(DataSource(files=path).runs())
    assert sorted(run._side["wave8"]) == ["peakAmplitude"]
    assert [run.Detector("wave8").raw.peakAmplitude(evt) is not None for evt in run.events()] == [True] * 5
