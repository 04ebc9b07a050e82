"""Long runs without the writer's index open lazily: names listed, each step counted when reached."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, FormatError, InconsistentRunError
from calibsuite_h5source.read import layout
from calibsuite_h5source.read.layout import StepCounter
from calibsuite_h5source.read.run_index import open_run_index
from calibsuite_h5source.testing.layouts import declare_run, write_layout

STEPS = tuple(1 + k % 4 for k in range(100))  # > layout.EAGER_STEPS


def long_run(path, timestamps=True, present=True):
    decl = declare_run(steps=STEPS, shape=(1, 2, 3), timestamps=timestamps)
    if present:
        decl["present"] = {"epixM": [np.arange(n) % 3 != 1 for n in STEPS]}
    return write_layout(path, decl, "canonical")


def everything(path, **kwargs):
    """What a script sees: per step the scan value and per event timestamp, frame, side data."""
    run = next(DataSource(files=path, **kwargs).runs())
    det, wave8, delay = run.Detector("epixM"), run.Detector("wave8"), run.Detector("delay")
    out = [run.timestamp, run.n_steps]
    for step in run.steps():
        out.append(("step", step.index, delay(step), step.n_events))
        for evt in step.events():
            raw = det.raw.raw(evt)
            out.append((evt.timestamp, None if raw is None else raw.tolist(), wave8.raw.peakAmplitude(evt).tolist()))
    return out


@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize("max_events", [0, 7, 150])
def test_lazy_open_reads_exactly_what_the_eager_open_reads(tmp_path, monkeypatch, timestamps, max_events):
    path = long_run(tmp_path / "long.h5", timestamps=timestamps)
    lazy = everything(path, max_events=max_events)
    index = open_run_index(path)
    assert index.n_events.__class__.__name__ == "StepCounts"
    index.close()
    monkeypatch.setattr(layout, "EAGER_STEPS", 1000)
    index = open_run_index(path)
    assert isinstance(index.n_events, np.ndarray)
    eager_times = None
    index.close()
    eager = everything(path, max_events=max_events)
    assert lazy == eager
    monkeypatch.setattr(layout, "EAGER_STEPS", 64)
    run = next(DataSource(files=path).runs())
    eager_times = run.times()
    assert np.asarray(run._index.n_events).tolist() == list(STEPS) == run._index.n_events.tolist()
    assert np.array_equal(eager_times, np.concatenate([np.asarray(ts) for ts in run._index.timestamps]))


def test_open_counts_no_step_beyond_the_first(tmp_path, mocker):
    path = long_run(tmp_path / "long.h5")
    spy = mocker.spy(StepCounter, "count")
    run = next(DataSource(files=path).runs())
    assert {c.args[1] for c in spy.call_args_list} <= {0}
    assert run.n_steps == 100
    step = next(run.steps())
    list(step.events())
    counted = run._index.n_events._counter.counts
    assert set(counted) <= {0, 1}
    assert len(run._index.n_events) == 100 and len(counted) <= 2  # len: nothing counted
    assert run._index.n_events.sum() == sum(STEPS) and len(counted) == 100  # the total: all counted


def test_a_step_whose_sources_disagree_fails_when_reached(tmp_path):
    path = long_run(tmp_path / "long.h5", present=False)
    with h5py.File(path, "a") as f:
        del f["wave8/peakAmplitude/80"]
        f["wave8/peakAmplitude/80"] = np.zeros((STEPS[80] + 1, 4), np.float32)
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    seen = 0
    with pytest.raises(InconsistentRunError, match=r"long\.h5: /wave8/peakAmplitude: .*step 80: .* has 1 events, "
                                                   r"/wave8/peakAmplitude has 2"):
        for evt in run.events():
            det.raw.raw(evt)
            seen += 1
    assert seen == sum(STEPS[:80])


def test_timestamps_of_the_wrong_length_fail_when_reached(tmp_path):
    path = long_run(tmp_path / "long.h5", present=False)
    with h5py.File(path, "a") as f:
        del f["timestamp/70"]
        f["timestamp/70"] = np.arange(STEPS[70] + 2, dtype=np.uint64) + (1 << 62)
    run = next(DataSource(files=path).runs())
    with pytest.raises(InconsistentRunError, match=r"/timestamp/70: timestamps of step 70 must be \[nEvents=3\]"):
        list(run.events())


def test_missing_step_and_wrong_frame_shape_are_still_found(tmp_path):
    path = long_run(tmp_path / "long.h5", present=False)
    with h5py.File(path, "a") as f:
        del f["epixM/50"]
    with pytest.raises(FormatError, match="steps must be numbered contiguously from 0"):
        open_run_index(path)
    path = long_run(tmp_path / "long2.h5", present=False)
    with h5py.File(path, "a") as f:
        del f["epixM/60"]
        f["epixM/60"] = np.zeros((STEPS[60], 1, 2, 4), np.uint16)
    run = next(DataSource(files=path).runs())
    with pytest.raises(Exception, match="per-event shape/dtype must be the same in every step"):
        list(run.events())


def test_present_masks_are_checked_when_loaded(tmp_path):
    path = long_run(tmp_path / "long.h5")
    with h5py.File(path, "a") as f:
        del f["epixM/present/90"]
        f["epixM/present/90"] = np.ones(STEPS[90] + 1, bool)
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    with pytest.raises(InconsistentRunError, match="present mask must have nEvents"):
        for evt in run.events():
            det.raw.raw(evt)
