"""make_synthetic_run in every layout, and the pytest plugin fixture."""

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.testing import LAYOUTS, make_synthetic_run


def iterate(path):
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixm")
    return [[(e.timestamp, det.raw.raw(e).tobytes()) for e in step.events()] for step in run.steps()]


@pytest.mark.parametrize("layout", [lay for lay in LAYOUTS if lay != "canonical"])
def test_layouts_hold_the_same_synthetic_run(tmp_path, layout):
    steps = (3, 3) if layout == "legacy" else (3, 2, 4)
    a = make_synthetic_run(tmp_path / "c.h5", steps=steps, shape=(2, 4, 4), run_type="delayScan")
    b = make_synthetic_run(tmp_path / "x.h5", steps=steps, shape=(2, 4, 4), run_type="delayScan", layout=layout)
    assert a.scan_values == b.scan_values
    canonical, other = iterate(tmp_path / "c.h5"), iterate(tmp_path / "x.h5")
    if layout == "legacy":  # no timestamps stored: compare frames only
        canonical = [[f for _, f in s] for s in canonical]
        other = [[f for _, f in s] for s in other]
    assert canonical == other and [len(s) for s in other] == list(steps)


def test_synthetic_run_fixture(synthetic_run):
    path, truth = synthetic_run(steps=(50,), shape=(1, 6, 6), seed=4)
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    mean = np.mean([det.raw.raw(e) for e in run.events()], axis=0)
    assert np.abs(mean - truth.model.pedestal).max() < 5 * truth.model.noise.max() / np.sqrt(50)
    path2, _ = synthetic_run(steps=(1,), shape=(1, 2, 2))
    assert path2 != path


@pytest.mark.parametrize("layout", ["padded", "stepgroups", "legacy"])
def test_timing_runs_need_the_canonical_layout(tmp_path, layout):
    with pytest.raises(ValueError, match="cannot mark events without a frame"):
        make_synthetic_run(tmp_path / "t.h5", steps=(2,), shape=(1, 2, 2), timing=True, layout=layout)
    assert not (tmp_path / "t.h5").exists()


def test_synthetic_run_fixture_passes_mfx_options(synthetic_run):
    path, truth = synthetic_run(steps=(3,), shape=(2, 4, 4), run_type="fe55", timing=True, occupancy=0.05)
    run = next(DataSource(files=path).runs())
    assert len(list(run.events())) == 6 == truth.n_events[0] and len(truth.photons[0]) > 0
    assert truth.codes(0, 0) == [137, 272] and truth.codes(0, 1) == [272, 281, 283]


def test_declared_timing_run_reads_as_the_streamed_one(tmp_path):
    from calibsuite_h5source.synthetic.run import SyntheticRun
    from calibsuite_h5source.testing import write_layout

    def content(path):
        run = next(DataSource(files=str(path)).runs())
        det, timing, mon = run.Detector("epixM"), run.Detector("timing"), run.Detector("MfxDg1BmMon")
        return [(e.timestamp, None if det.raw.raw(e) is None else det.raw.raw(e).tobytes(),
                 timing.raw.eventcodes(e), timing.raw.pulseId(e),
                 None if mon.raw.peakAmplitude(e) is None else mon.raw.peakAmplitude(e).tolist())
                for e in run.events()]

    kw = dict(run_type="misc", shape=(2, 3, 3), events=[2, 3], timing=True, seed=8)
    SyntheticRun(**kw).write(tmp_path / "w.h5")
    write_layout(tmp_path / "d.h5", SyntheticRun(**kw).declaration(), "canonical")
    a, b = content(tmp_path / "w.h5"), content(tmp_path / "d.h5")
    assert a == b and len(a) == 10 and [x[1] is None for x in a[:4]] == [True, False, True, False]
    assert [x[4] is None for x in a[:4]] == [False, True, False, True]   # the monitor: its own events only
