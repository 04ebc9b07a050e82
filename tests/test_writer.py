"""RunWriter: round trips through the reader, refusals at the call, compression, failures."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import (
    DataSource,
    MissingDependencyError,
    RunWriter,
    UnknownScriptTypeError,
    WriterError,
)
from calibsuite_h5source.format import timestamps as T


def frames(n, shape=(2, 4, 6), seed=0, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 5000, (n, *shape)).astype(dtype)


def write_scan(path, counts=(3, 0, 2), **kwargs):
    data = {}
    t = T.from_unix(1_700_000_000)
    with RunWriter(path, "delayScan", location="ASC", **kwargs) as w:
        for k, n in enumerate(counts):
            f = frames(n, seed=k)
            amp = np.random.default_rng(k).random((n, 3))
            ts = t + 1000 * np.arange(1, n + 1)
            t += 1000 * (n + 1)
            data[k] = (f, amp, ts)
            with w.step(delay=10.0 * (k + 1)) as s:
                for i in range(n):
                    s.event(epixM=f[i], wave8={"peakAmplitude": amp[i]}, timestamp=int(ts[i]))
    return data


def test_streamed_run_reads_back_exactly(tmp_path):
    path = tmp_path / "r.h5"
    data = write_scan(path)
    run = next(DataSource(files=str(path)).runs())
    det, wave8, delay = run.Detector("epixm"), run.Detector("wave8"), run.Detector("delay")
    for k, step in enumerate(run.steps()):
        f, amp, ts = data[k]
        events = list(step.events())
        assert delay(step) == 10.0 * (k + 1) and len(events) == len(f)
        for i, evt in enumerate(events):
            np.testing.assert_array_equal(det.raw.raw(evt), f[i])
            np.testing.assert_array_equal(wave8.raw.peakAmplitude(evt), amp[i])
            assert evt.timestamp == ts[i]
    assert run.complete


def test_header_defaults_and_layout(tmp_path):
    path = tmp_path / "r.h5"
    write_scan(path, counts=(2,), flush_every=1)
    with h5py.File(path) as f:
        h = dict(f["ancillaryData"].attrs)
        assert f.attrs["format_version"] == "1.0" and f.attrs["default"] == "epixM"
        assert f["epixM"].attrs["NX_class"] == "NXdata" and f["epixM/0"].chunks == (1, 2, 4, 6)
        assert f["epixM/0"].shape == (2, 2, 4, 6) and f["epixM/0"].dtype == np.uint16
    assert h["scriptType"] == "delayScan" and h["location"] == "ASC" and h["complete"] and h["stepsComplete"] == 1
    assert abs(h["run"] - __import__("time").time()) < 60 and h["date"].startswith("20") and h["ancillaryDataType"] == "delay"
    for key in ("acquisitionScript", "commandLine", "version"):
        assert key in h


def test_two_dimensional_frames_are_one_module(tmp_path):
    with RunWriter(tmp_path / "r.h5", "dark") as w, w.step() as s:
        s.event(epix100=np.zeros((4, 5), np.uint16))
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["epix100/0"].shape == (1, 1, 4, 5)  # the file keeps the module axis
    run = next(DataSource(files=str(tmp_path / "r.h5")).runs())
    assert run.Detector("epix100").raw.raw(next(run.events())).shape == (4, 5)  # psana's single-segment shape


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"epixM": np.zeros((2, 4, 7), np.uint16), "wave8": {"a": 1.0}}, r"expected \(2, 4, 6\) uint16, found \(2, 4, 7\) uint16"),
        ({"epixM": np.zeros((2, 4, 6), np.float32), "wave8": {"a": 1.0}}, "found .* float32"),
        ({"wave8": {"a": 1.0}}, r"missing \['epixM'\]"),
        ({"epixM": np.zeros((2, 4, 6), np.uint16), "wave8": {"a": 1.0}, "jungfrau": np.zeros((1, 2, 2))}, r"unexpected \['jungfrau'\]"),
        ({"epixM": np.zeros((2, 4, 6), np.uint16), "wave8": {"b": 1.0}}, r"fields \['a'\]"),
        ({"epixM": np.zeros((4, 6), np.uint16)[0], "wave8": {"a": 1.0}}, r"must be \[module, row, col\]"),
    ],
)
def test_bad_events_are_refused_before_anything_is_written(tmp_path, bad, match):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w, w.step() as s:
        s.event(epixM=np.ones((2, 4, 6), np.uint16), wave8={"a": 1.0})
        with pytest.raises(WriterError, match=match):
            s.event(**bad)
        s.event(epixM=np.ones((2, 4, 6), np.uint16), wave8={"a": 2.0})
    run = next(DataSource(files=str(path)).runs())
    assert run.Detector("wave8").raw.a(list(run.events())[-1]) == 2.0  # the refused event left no trace
    with h5py.File(path) as f:
        assert f["epixM/0"].shape[0] == 2


def test_per_event_scan_value_must_not_change_inside_a_step(tmp_path):
    with RunWriter(tmp_path / "r.h5", "intensityScan") as w, w.step() as s:
        s.event(epixM=np.zeros((1, 2, 2), np.uint16), scan={"flux": 1.0})
        with pytest.raises(WriterError, match=r"must not change inside a step; step 0 started with 1.0, event 1 has 2.0"):
            s.event(epixM=np.zeros((1, 2, 2), np.uint16), scan={"flux": 2.0})


def test_timestamps_all_or_none_and_steps_same_scan_names(tmp_path):
    with RunWriter(tmp_path / "r.h5", "delayScan") as w:
        with w.step(delay=1.0) as s:
            s.event(epixM=np.zeros((1, 2, 2), np.uint16), timestamp=T.from_unix(1.7e9))
            with pytest.raises(WriterError, match="every event or with none"):
                s.event(epixM=np.zeros((1, 2, 2), np.uint16))
        with pytest.raises(WriterError, match=r"same per-step scan values; step 0 gave \['delay'\], step 1 gives \['bias'\]"):
            w.step(bias=2.0)


def test_script_type_is_checked_and_files_are_not_overwritten(tmp_path):
    with pytest.raises(UnknownScriptTypeError, match=r"'wobbleScan' is not recognised; known: .*'dark'"):
        RunWriter(tmp_path / "a.h5", "wobbleScan")
    assert not (tmp_path / "a.h5").exists()
    with RunWriter(tmp_path / "a.h5", "wobbleScan", allow_unknown_script_type=True) as w, w.step() as s:
        s.event(x={"v": 1})
    with RunWriter(tmp_path / "b.h5", "DelayScan") as w, w.step() as s:  # case fixed to the known spelling
        s.event(x={"v": 1})
    with h5py.File(tmp_path / "b.h5") as f:
        assert f["ancillaryData"].attrs["scriptType"] == "delayScan"
    with pytest.raises(WriterError, match="file exists; pass overwrite=True"):
        RunWriter(tmp_path / "b.h5", "dark")
    RunWriter(tmp_path / "b.h5", "dark", overwrite=True).close()


@pytest.mark.parametrize("compression", ["gzip", "lzf", "bitshuffle", "blosc", "zstd"])
def test_compressed_runs_read_back(tmp_path, compression):
    pytest.importorskip("hdf5plugin")
    path = tmp_path / "r.h5"
    data = write_scan(path, counts=(4, 3), compression=compression)
    run = next(DataSource(files=str(path)).runs())
    got = [run.Detector("epixM").raw.raw(e) for e in run.events()]
    np.testing.assert_array_equal(np.stack(got), np.concatenate([data[0][0], data[1][0]]))
    with h5py.File(path) as f:
        assert f["epixM/0"].compression is not None or len(f["epixM/0"]._filters) > 0


def test_missing_hdf5plugin_is_a_clear_error(tmp_path, mocker):
    import sys

    mocker.patch.dict(sys.modules, {"hdf5plugin": None})
    with pytest.raises(MissingDependencyError, match=r"needs hdf5plugin: pip install 'calibsuite_h5source\[compression\]'"):
        RunWriter(tmp_path / "r.h5", "dark", compression="bitshuffle")
    with pytest.raises(WriterError, match="unknown compression 'snappy'"):
        RunWriter(tmp_path / "r.h5", "dark", compression="snappy")


def test_exception_inside_with_keeps_finished_steps(tmp_path):
    path = tmp_path / "r.h5"
    with pytest.raises(RuntimeError, match="DAQ died"), RunWriter(path, "dark") as w:
        for k in range(3):
            with w.step() as s:
                for i in range(4):
                    if k == 2 and i == 2:
                        raise RuntimeError("DAQ died")
                    s.event(epixM=np.full((1, 2, 2), 10 * k + i, np.uint16))
    with h5py.File(path) as f:
        h = f["ancillaryData"].attrs
        assert not h["complete"] and h["stepsComplete"] == 2 and h["error"] == "RuntimeError: DAQ died"
        assert "epixM/2" not in f  # the unfinished step was dropped
    run = next(DataSource(files=str(path)).runs())
    assert run.complete is False
    det = run.Detector("epixM")
    assert [int(det.raw.raw(e)[0, 0, 0]) for e in run.events()] == [0, 1, 2, 3, 10, 11, 12, 13]


def test_a_refused_step_can_be_retried(tmp_path):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w:
        with pytest.raises(ValueError), w.step() as s:
            s.event(epixM=np.zeros((1, 2, 2), np.uint16))
            raise ValueError("bad setting")
        with w.step() as s:
            s.event(epixM=np.ones((1, 2, 2), np.uint16))
    run = next(DataSource(files=str(path)).runs())
    assert [int(run.Detector("epixM").raw.raw(e).sum()) for e in run.events()] == [4]


def test_events_without_data_and_declared_detectors(tmp_path):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w:
        with pytest.raises(WriterError, match=r"declare it with w.detector\('andor', shape=..., dtype=...\)"):
            with w.step() as s:
                s.event(andor=None)
    with RunWriter(path, "dark", overwrite=True) as w:
        w.detector("andor", shape=(1, 2, 3), dtype=np.float32, detType="andor", gainBitsMask=None,
                   calib={"pedestals": (np.ones((1, 2, 3)), {"run": 5})})
        with w.step() as s:
            s.event(andor=None)
            s.event(andor=np.full((2, 3), 7, np.float32))
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("andor")
    events = list(run.events())
    got = [det.raw.raw(e) for e in events]
    assert got[0] is None and got[1].tolist() == [[7.0] * 3] * 2
    assert det.calibconst["pedestals"][1] == {"run": 5}
    np.testing.assert_array_equal(det.raw.calib(events[1]), np.full((2, 3), 6.0))


def test_bulk_add_step_equals_streaming(tmp_path):
    f = frames(5)
    ts = T.from_unix(1.7e9) + np.arange(5)
    with RunWriter(tmp_path / "bulk.h5", "delayScan", run=1) as w:
        w.add_step({"epixM": f, "wave8": {"a": np.arange(5.0)}}, timestamps=ts,
                   present={"epixM": [True, False, True, True, True]}, delay=3.0)
    run = next(DataSource(files=str(tmp_path / "bulk.h5")).runs())
    det = run.Detector("epixM")
    events = list(run.events())
    assert [det.raw.raw(e) is None for e in events] == [False, True, False, False, False]
    np.testing.assert_array_equal(det.raw.raw(events[4]), f[4])
    assert [e.timestamp for e in events] == ts.tolist()
