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
