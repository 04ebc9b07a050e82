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


@pytest.mark.parametrize("attr", ["detType", "dettype"])
def test_a_type_given_by_either_attribute_is_the_type_everywhere(tmp_path, attr):
    """format/shapes.type_of is the one rule (detType, then dettype, then the name): the gain-bits mask of
    calib and the lookup by type once read detType only, so a 'dettype' epix10ka kept its gain bits."""
    import h5py
    import numpy as np

    path = tmp_path / "cam.h5"
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs.update({"scriptType": "dark", "run": 1_700_000_000})
        f.create_dataset("cam/0", data=np.full((2, 1, 4, 4), 0xC000 | 123, np.uint16))  # gain bits set, ADU 123
        f["cam"].attrs[attr] = "epix10ka"
    run = next(DataSource(files=path).runs())
    det = run.Detector("Epix10ka")  # by type: the suite's config names it so
    evt = next(run.events())
    assert det.name == "cam" and det.raw.gain_bits_mask == 0x3FFF
    assert det.raw.raw(evt).shape == (4, 4) and det.raw.calib(evt)[0, 0] == 123.0
