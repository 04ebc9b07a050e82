"""Side data absent from some events: written as None, stored with a present mask, read as None (psana's BLD)."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.errors import WriterError


def write(path):
    frame = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    amp = np.linspace(1, 16, 16, dtype=np.float32)
    with RunWriter(path, "linearity") as w:
        w.detector("epixM", shape=frame.shape, dtype=frame.dtype)
        with w.step(flux=1.0) as s:          # monitor event, then its frame event, twice
            s.event(epixM=None, mon={"peakAmplitude": amp}, timestamp=10)
            s.event(epixM=frame, mon=None, timestamp=11)
            s.event(epixM=None, mon={"peakAmplitude": 2 * amp}, timestamp=12)
            s.event(epixM=frame + 1, mon=None, timestamp=13)
        w.add_step({"epixM": np.stack([frame, frame]), "mon": {"peakAmplitude": np.stack([amp, amp])}},
                   timestamps=[20, 21], present={"epixM": [False, True], "mon": [True, False]}, flux=2.0)
    return amp


def test_absent_side_data_reads_as_none(tmp_path):
    path = tmp_path / "r.h5"
    amp = write(path)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["mon/present/0"][()], [True, False, True, False])
        np.testing.assert_array_equal(f["mon/peakAmplitude/0"][1], np.zeros(16))   # zeros where absent
    run = next(DataSource(files=path, detectors=["epixM", "mon"]).runs())
    mon, det = run.Detector("mon"), run.Detector("epixM")
    got = [(mon.raw.peakAmplitude(e), det.raw.raw(e)) for e in run.events()]
    assert [a is None for a, _ in got] == [False, True, False, True, False, True]
    assert [f is None for _, f in got] == [True, False, True, False, True, False]
    np.testing.assert_array_equal(got[2][0], 2 * amp)
    assert "present" not in dir(mon.raw)
    with pytest.raises(AttributeError):
        mon.raw.present_field_that_does_not_exist  # noqa: B018
    # whole arrays leave the absent events out, as frames() does
    np.testing.assert_array_equal(mon.raw.array("peakAmplitude"), np.stack([amp, 2 * amp, amp]))
    assert mon.raw.array("peakAmplitude", missing="keep").shape == (6, 16)


def test_a_bad_side_value_is_still_refused(tmp_path):
    with RunWriter(tmp_path / "r.h5", "linearity") as w:
        with w.step(flux=1.0) as s:
            s.event(mon={"peakAmplitude": np.ones(4, np.float32)}, timestamp=1)
            with pytest.raises(WriterError, match="or None for an event without data"):
                s.event(mon=[1.0, 2.0], timestamp=2)
            s.event(mon=None, timestamp=3)
    run = next(DataSource(files=tmp_path / "r.h5").runs())
    assert [run.Detector("mon").raw.peakAmplitude(e) is None for e in run.events()] == [False, True]
