"""The index of a run being written (calibsuite_h5source.read.follow): one parser, grown in place."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import RunWriter
from calibsuite_h5source.errors import NotHDF5Error
from calibsuite_h5source.read.follow import Follower, LiveEventArray, LiveIndex, WriterState
from calibsuite_h5source.testing.layouts import declare_run, write_layout


def frame(v):
    return np.full((2, 3, 4), v, dtype=np.uint16)


def test_the_index_of_a_run_being_written_grows_in_place(tmp_path):
    path = tmp_path / "r.h5"
    w = RunWriter(path, "dark", compression="gzip", flush_every=1000, flush_seconds=1000)  # closed in the test
    s = w.step(delay=0.5)
    for i in range(3):
        s.event(epixM=frame(i), wave8={"amp": float(i)}, timestamp=(1 << 40) + i)
    w.flush()
    follower = Follower(str(path))
    try:
        follower.reopen()
        live = LiveIndex(follower)
        idx = live.index
        steps, amps = idx.area["epixM"].steps, idx.side["wave8"]["amp"]
        assert live.counts == [3] and live.finished == 0 and not idx.complete
        assert all(isinstance(ea, LiveEventArray) for ea in steps)
        np.testing.assert_array_equal(steps[0].read(2), frame(2))
        assert list(idx.timestamps[0]) == [(1 << 40) + i for i in range(3)]
        assert not live.update()  # nothing new
        for i in range(3, 5):
            s.event(epixM=frame(i), wave8={"amp": float(i)}, timestamp=(1 << 40) + i)
        s.close()
        s = w.step(delay=1.5)
        s.event(epixM=frame(10), wave8={"amp": 10.0}, timestamp=(1 << 40) + 10)
        w.flush()
        follower.reopen()
        assert live.update()
        assert live.counts == [5, 1] and live.finished == 1
        assert idx.area["epixM"].steps is steps and idx.side["wave8"]["amp"] is amps  # the same lists, extended
        out = np.empty((5, 2, 3, 4), np.uint16)
        steps[0].read_rows(np.arange(5), out)
        np.testing.assert_array_equal(out, [frame(i) for i in range(5)])
        np.testing.assert_array_equal(steps[1].read(0), frame(10))
        assert amps[1].read(0) == 10.0
        assert idx.scan["delay"].per_step.tolist() == [0.5, 1.5]
        s.close()
        w.close()
        follower.reopen()
        assert live.update() and idx.complete and live.counts == [5, 1]
    finally:
        follower.close()


def test_writer_state_of_finished_and_legacy_files(tmp_path):
    path = write_layout(tmp_path / "legacy.h5", declare_run(steps=(2, 2), side=False, timestamps=False), "legacy")
    with h5py.File(path, "r") as f:
        state = WriterState(f)
    assert state.complete and state.counts == []
    p = tmp_path / "w.h5"
    with RunWriter(p, "dark") as w, w.step() as s:
        s.event(epixM=frame(1))
    with h5py.File(p, "r") as f:
        state = WriterState(f)
    assert state.complete and state.counts == [1] and state.steps_complete == 1


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(NotHDF5Error, match="does not exist"):
        Follower(str(tmp_path / "nope.h5")).reopen()
