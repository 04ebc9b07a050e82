"""The synthetic generator: reproducible, physically right, recoverable truth."""

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.synthetic.run import FE55_KEV, DetectorModel, SyntheticRun


@pytest.mark.parametrize(
    "detector, modules, shape",
    [("epixM", None, (4, 192, 384)), ("epix10k", 4, (4, 352, 384)), ("jungfrau", 2, (2, 512, 1024)),
     ("epixUHR", None, (4, 168, 192)), ("epix100", None, (1, 704, 768))],
)
def test_suite_detector_shapes_and_gain_bits(detector, modules, shape):
    model = DetectorModel.create(detector, modules=modules)
    frame = model.frame(np.random.default_rng(0))
    assert frame.shape == shape and frame.dtype == np.uint16
    assert frame.max() < model.g0cut  # dark: every pixel in high gain


def test_saturated_pixels_switch_to_low_gain():
    model = DetectorModel.create("epixM", shape=(1, 4, 4))
    frame = model.frame(np.random.default_rng(0), signal_adu=np.float32(40000))
    assert np.all(frame & 0x8000)
    np.testing.assert_allclose((frame & 0x7FFF), (model.pedestal + 40000) / model.low_gain_ratio, atol=2)


def test_dark_run_recovers_pedestal_and_noise(tmp_path):
    run = SyntheticRun("dark", detector="epixM", shape=(1, 16, 16), events=400, steps=1, seed=3)
    truth = run.write(tmp_path / "d.h5")
    r = next(DataSource(files=str(tmp_path / "d.h5")).runs())
    det = r.Detector("epixm")
    stack = np.stack([det.raw.raw(e) for e in r.events()]).astype(float)  # epixM keeps its module axis, as psana
    np.testing.assert_allclose(stack.mean(0), truth.model.pedestal, atol=5 * truth.model.noise.max() / 20)
    assert abs(np.mean(stack.std(0, ddof=1) / truth.model.noise) - 1) < 0.02


def test_fe55_photons_have_the_right_energy(tmp_path):
    run = SyntheticRun("fe55", shape=(1, 64, 64), events=30, steps=1, occupancy=0.01, seed=1)
    truth = run.write(tmp_path / "f.h5")
    r = next(DataSource(files=str(tmp_path / "f.h5")).runs())
    det = r.Detector("epixM")
    energies, counts = [], []
    for evt in r.events():
        kev = (det.raw.raw(evt) - truth.model.pedestal) / truth.model.gain
        hits = kev > 3.0  # 3 keV threshold, far above noise (~0.4 keV)
        counts.append(int(hits.sum()))
        energies.append(kev[hits])
    assert counts == truth.photon_counts[0].tolist()
    assert abs(np.concatenate(energies).mean() - FE55_KEV) < 0.05
    assert abs(np.mean(counts) / (64 * 64) - 0.01) < 0.002


def test_linearity_signal_rises_with_flux(tmp_path):
    truth = SyntheticRun("linearity", shape=(1, 8, 8), events=20, steps=3, seed=2).write(tmp_path / "l.h5")
    r = next(DataSource(files=str(tmp_path / "l.h5")).runs())
    det, wave8 = r.Detector("epixM"), r.Detector("wave8")
    flux, signal = [], []
    for evt in r.events():
        flux.append(wave8.raw.peakAmplitude(evt)[:4].mean())
        signal.append(float((det.raw.raw(evt) - truth.model.pedestal).mean()))
    slope = np.polyfit(flux, signal, 1)[0]
    assert abs(slope - 40.0) < 1.0
    np.testing.assert_allclose(flux, np.concatenate(truth.flux), rtol=1e-6)
    assert [r.Detector("flux")(s) for s in next(DataSource(files=str(tmp_path / "l.h5")).runs()).steps()] == [1.0, 2.0, 3.0]


def test_reproducible_and_seed_dependent(tmp_path):
    a = list(SyntheticRun("delayScan", shape=(1, 4, 4), events=3, steps=2, seed=5).step_events(1))
    b = list(SyntheticRun("delayScan", shape=(1, 4, 4), events=3, steps=2, seed=5).step_events(1))
    c = list(SyntheticRun("delayScan", shape=(1, 4, 4), events=3, steps=2, seed=6).step_events(1))
    assert all(np.array_equal(x[0], y[0]) and x[2] == y[2] for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], c[0][0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="run_type must be one of"):
        SyntheticRun("sunshine")
    with pytest.raises(ValueError, match="unknown detector 'cspad'"):
        SyntheticRun("dark", detector="cspad")
    with pytest.raises(ValueError, match="at least one event"):
        SyntheticRun("dark", events=[3, 0])
