"""run.Detector(name) finds a detector by its group name, case-insensitively, or by its type."""

import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.errors import UnknownDetectorError
from calibsuite_h5source.testing import make_synthetic_run


def test_suite_type_name_finds_the_group(tmp_path):
    path = tmp_path / "e100.h5"
    make_synthetic_run(path, steps=(2,), detector="epix100")
    run = next(DataSource(files=path, detectors=["Epix100a"]).runs())
    det = run.Detector("Epix100a")          # the suite's epix100SuiteConfig names the type
    evt = next(run.events())
    assert det.raw.raw(evt).shape == (704, 768)
    assert run.Detector("EPIX100").name == "epix100"


def test_type_match_must_be_unique(tmp_path):
    path = tmp_path / "e100.h5"
    make_synthetic_run(path, steps=(1,), detector="epix100")
    run = next(DataSource(files=path).runs())
    with pytest.raises(UnknownDetectorError, match="jungfrau"):
        run.Detector("jungfrau")            # another type never matches
