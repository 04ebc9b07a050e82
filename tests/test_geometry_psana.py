"""Images and coordinates against the real psana (skipped without psana or ../shared/data/xtc2).

* every event of ``test_epix_calib.xtc2``, converted: ``det.raw.image`` identical
  to psana's (shape, dtype, values), coordinates within 1e-6 µm, indexes equal;
* natively written epixM, epix100 and jungfrau runs: the image equals what
  psana's own geometry code (``CalibConstants.image``) makes of the same array
  from psana's installed default geometry file;
* every default geometry's coordinates equal psana's ``GeometryAccess``
  (jungfrau16M left out: psana takes half a minute on it);
* the recorded fixture (fixtures/geometry) is what psana gives today.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.geometry import default_geometry_text, geometry_from_text
from calibsuite_h5source.synthetic.run import SyntheticRun

DATA = Path(os.environ.get("CALIBSUITE_XTC2_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "xtc2"))
EPIX = DATA / "test_epix_calib.xtc2"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "geometry"

try:
    import psana  # noqa: F401

    HAVE_PSANA = True
except Exception:  # ImportError, or libmpi missing
    HAVE_PSANA = False

pytestmark = [pytest.mark.psana,
              pytest.mark.skipif(not HAVE_PSANA, reason="the real psana is not installed (pip install '.[psana]')")]
_names = itertools.count()


def psana_text(stem: str) -> str:
    import psana
    return (Path(psana.__file__).parent / "pscalib" / "geometry" / "data" / f"geometry-def-{stem}.data").read_text()


_psana_maps: dict = {}


def psana_image(stem, nda, segnums, **kwargs):
    """psana's ``CalibConstants.image`` of ``nda`` from psana's default file (one CalibConstants per stem and segments)."""
    from psana.detector.calibconstants import CalibConstants
    key = (stem, tuple(segnums))
    if key not in _psana_maps:
        cc = _psana_maps[key] = CalibConstants({"geometry": (psana_text(stem), {})}, f"h5source_test_{next(_names)}")
        cc.image(nda, segnums=list(segnums))  # psana 4.3.4 fails on keywords at its first call: build its maps first
    return _psana_maps[key].image(nda, segnums=list(segnums), **kwargs)


@pytest.mark.slow
@pytest.mark.skipif(not EPIX.exists(), reason=f"no xtc2 sample data in {DATA}")
def test_converted_epix_quad_images_are_psanas(tmp_path):
    import psana

    from calibsuite_h5source.write.convert import convert
    out = tmp_path / "epix.h5"
    convert(out, files=str(EPIX), progress=False)
    run = next(DataSource(files=str(out)).runs())
    det = run.Detector("epixquad")
    ours = [det.raw.image(evt) for evt in run.events()]
    prun = next(psana.DataSource(files=str(EPIX), skip_calib_load="all").runs())
    pdet = prun.Detector("epixquad")
    theirs = [pdet.raw.image(evt) for evt in prun.events()]
    assert len(ours) == len(theirs) >= 2
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (775, 793) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for a, b in zip(det.raw._pixel_coords(), pdet.raw._pixel_coords(), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(det.raw._pixel_coord_indexes(), pdet.raw._pixel_coord_indexes(), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("detector", "stem"), [("epixM", "epixm320"), ("epix100", "epix100a"),
                                                 ("jungfrau", "jungfrau05M")])
def test_native_runs_draw_what_psanas_geometry_code_draws(tmp_path, detector, stem):
    path = tmp_path / f"{detector}.h5"
    SyntheticRun("fe55", detector, events=2, steps=2, occupancy=0.01).write(path)
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector(detector)
    n = 0
    for evt in run.events():
        calib = det.raw.calib(evt)
        img = det.raw.image(evt)
        expected = psana_image(stem, calib.reshape(-1, *calib.shape[-2:]), range(calib.size // np.prod(calib.shape[-2:])))
        assert img.shape == expected.shape and img.dtype == expected.dtype
        np.testing.assert_array_equal(img, expected)
        raw = det.raw.raw(evt)
        np.testing.assert_array_equal(det.raw.image(evt, nda=raw), psana_image(stem, raw, range(raw.size // np.prod(raw.shape[-2:]))))
        n += 1
    assert n == 4


@pytest.mark.parametrize("stem", ["epixm320", "epix10kaquad", "epix100a", "jungfrau05M", "jungfrau1M",
                                  "epixhr2x2", "epixuhr", "epixuhr3x2-02",
                                  *(pytest.param(s, marks=pytest.mark.slow) for s in ("jungfrau4M", "epixhr1x4-20"))])
def test_default_coordinates_are_psanas(stem):
    from psana.pscalib.geometry.GeometryAccess import GeometryAccess
    text = psana_text(stem)
    assert default_geometry_text(stem) == text  # the carried copy is psana's file
    ga = GeometryAccess()
    ga.load_pars_from_str(text)
    g = geometry_from_text(text)
    for a, b in zip(g.pixel_coords(), ga.get_pixel_coords(), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(g.pixel_coord_indexes(), ga.get_pixel_coord_indexes(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_odd_inputs_match_psana_too():
    """NaN values, a subset of segments, and psana's keywords."""
    rng = np.random.default_rng(3)
    g = geometry_from_text(default_geometry_text("epix10kaquad"))
    nda = rng.normal(100, 30, g.shape).astype(np.float32)
    nda.ravel()[rng.integers(0, nda.size, 500)] = np.nan
    np.testing.assert_array_equal(g.image(nda), psana_image("epix10kaquad", nda, range(4)))
    np.testing.assert_array_equal(g.image(nda[[0, 2]], segments=[0, 2]), psana_image("epix10kaquad", nda[[0, 2]], [0, 2]))
    for kw in ({"fillholes": False}, {"vbase": 5}, {"mapmode": 3}, {"mapmode": 1}, {"mapmode": 0}):
        np.testing.assert_array_equal(g.image(nda, **kw), psana_image("epix10kaquad", nda, range(4), **kw))


def test_the_recorded_fixture_is_what_psana_gives(tmp_path):
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_geometry_fixtures as mk
    finally:
        sys.path.remove(str(FIXTURES))
    ref = np.load(FIXTURES / "psana_reference.npz")
    for stem in ("epixm320", "epix100a", "jungfrau05M"):
        fresh = mk.record(stem)
        for key, value in fresh.items():
            if key.endswith(("/x", "/y", "/z")):
                np.testing.assert_allclose(value, ref[key], rtol=0, atol=1e-6)
            else:
                np.testing.assert_array_equal(value, ref[key], err_msg=key)
