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


def write_gaps(path):
    """Absent only after step 0: epixM at step 2 event 1, mon at step 1 event 2."""
    with RunWriter(path, "linearity") as w:
        for k in range(3):
            with w.step(flux=float(k)) as s:
                for i in range(4):
                    s.event(epixM=None if (k, i) == (2, 1) else np.full((1, 2, 2), 10 * k + i, np.uint16),
                            mon=None if (k, i) == (1, 2) else {"amp": float(10 * k + i)}, timestamp=100 * k + i + 1)


def test_a_source_first_absent_after_step_0_reads_in_every_access_mode(tmp_path):
    """The writer masks step 0 of every source (all True) and later steps from their first absent event;
    every reader agrees on which events hold data."""
    from calibsuite_h5source.tools.info import summarise
    from calibsuite_h5source.write.rundict import read_run_dict

    path = tmp_path / "gaps.h5"
    write_gaps(path)
    with h5py.File(path) as f:
        assert sorted(f["mon/present"]) == ["0", "1"] and sorted(f["epixM/present"]) == ["0", "2"]
        assert f["mon/present/0"][()].all() and f["mon/present/1"][()].tolist() == [True, True, False, True]
    run = next(DataSource(files=path).runs())
    mon = run.Detector("mon")
    amps = [[mon.raw.amp(e) for e in step.events()] for step in run.steps()]
    assert amps == [[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, None, 13.0], [20.0, 21.0, 22.0, 23.0]]
    run = next(DataSource(files=path).runs())
    frames = [[None if (f := det.raw.raw(e)) is None else int(f.flat[0]) for e in step.events()]
              for step in run.steps() for det in [run.Detector("epixM")]]
    assert frames == [[0, 1, 2, 3], [10, 11, 12, 13], [20, None, 22, 23]]
    assert run.Detector("mon").raw.array("amp").tolist() == [0, 1, 2, 3, 10, 11, 13, 20, 21, 22, 23]
    assert [int(f.flat[0]) for f in run.Detector("epixM").raw.frames(missing="drop")] == [
        0, 1, 2, 3, 10, 11, 12, 13, 20, 22, 23]
    info = summarise(path)
    assert info["side_events_without_data"] == {"mon": 1} and info["detectors"]["epixM"]["events_without_data"] == 1
    rd = read_run_dict(path)
    assert sorted(rd["present"]) == ["epixM", "mon"]
    assert rd["present"]["mon"][1].tolist() == [True, True, False, True] and rd["present"]["mon"][0].all()


def test_masks_for_some_steps_only_read_as_older_writers_left_them(tmp_path):
    """A ``present`` group holding masks of some steps only (no mask: the source is in every event of
    the step), for side data as for a detector: once refused for side data ("nEvents lists 3 steps")."""
    from calibsuite_h5source.testing.layouts import declare_run, write_layout

    decl = declare_run(steps=(2, 3, 2))
    decl["present"] = {"wave8": [None, np.array([True, False, True]), None],
                       "epixM": [None, None, np.array([False, True])]}
    path = write_layout(tmp_path / "sparse.h5", decl)
    run = next(DataSource(files=path).runs())
    w8, det = run.Detector("wave8"), run.Detector("epixM")
    got = [[(w8.raw.peakAmplitude(e) is None, det.raw.raw(e) is None) for e in step.events()] for step in run.steps()]
    assert got == [[(False, False)] * 2, [(False, False), (True, False), (False, False)], [(False, True), (False, False)]]
    np.testing.assert_array_equal(w8.raw.array("peakAmplitude")[3], decl["side"]["wave8"]["peakAmplitude"][1][2])
