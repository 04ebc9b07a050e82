"""Synthetic runs as at MFX, read back through DataSource the way the suite reads them.

Event codes (137 monitor / 281+283 frame / 272 all), the MfxDg1BmMon flux
following the scan, the suite's frame-to-flux pairing, one-module detectors
and calibration constants giving calib in keV.
"""

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.synthetic.run import BeamTiming, SyntheticRun
from calibsuite_h5source.testing import make_synthetic_run

SUITE_DETECTORS = ["epixm", "timing", "MfxDg1BmMon"]  # psana2Base.get_ds without ignoreEventCodeCheck


def open_run(path, **kw):
    return next(DataSource(files=str(path), intg_det="epixm", detectors=SUITE_DETECTORS, **kw).runs())


def matched_det_evt(run, allowed=1000, channels=(15,), sign=1.0):
    """psana2Base.matchedDetEvt + _getFlux, verbatim in logic: yield (evt, flux, fluxTS, framesTS)."""
    timing, mon = run.Detector("timing"), run.Detector("MfxDg1BmMon")
    flux, flux_ts = None, 0
    for evt in run.events():
        ec = timing.raw.eventcodes(evt)
        if ec[137]:
            flux = mon.raw.peakAmplitude(evt)[list(channels)].mean() * sign
            flux_ts = evt.timestamp
            continue
        elif ec[281]:
            frames_ts = evt.timestamp
            if frames_ts - flux_ts > allowed:
                continue
            yield evt, flux, flux_ts, frames_ts


@pytest.fixture(scope="module")
def mfx_linearity(tmp_path_factory):
    path = tmp_path_factory.mktemp("mfx") / "lin.h5"
    truth = make_synthetic_run(path, steps=(12, 12, 12), shape=(2, 8, 8), run_type="linearity", timing=True,
                               scan_values=[1.0, 2.5, 4.0], seed=3)
    return path, truth


def test_event_codes_alternate_monitor_then_frame(mfx_linearity):
    path, truth = mfx_linearity
    run = open_run(path)
    timing, det = run.Detector("timing"), run.Detector("epixm")
    for k, step in enumerate(run.steps()):
        events = list(step.events())
        assert len(events) == 24 == truth.n_events[k]
        for i, evt in enumerate(events):
            ec = timing.raw.eventcodes(evt)
            assert type(ec) is list and len(ec) == 288 and all(type(c) is int for c in ec)
            on = [c for c in range(288) if ec[c]]
            if i % 2 == 0:  # beam monitor: flux, no frame
                assert on == [137, 272] and det.raw.raw(evt) is None and det.raw.calib(evt) is None
            else:
                assert on == [272, 281, 283] and det.raw.raw(evt).shape == (2, 8, 8)
            assert on == truth.codes(k, i)
            pid = timing.raw.pulseId(evt)
            assert type(pid) is int and pid == int(truth.pulse_ids[k][i])


def test_timestamps_are_real_increasing_and_pair_within_1000_ticks(mfx_linearity):
    path, truth = mfx_linearity
    run = open_run(path)
    stamps = np.array([e.timestamp for e in run.events()], dtype=np.uint64)
    assert np.all(np.diff(stamps.astype(np.int64)) > 0)
    np.testing.assert_array_equal(stamps, np.concatenate(truth.timestamps))
    monitor, frame = stamps[0::2].astype(np.int64), stamps[1::2].astype(np.int64)
    assert np.all((frame - monitor > 0) & (frame - monitor < 1000))
    shots = np.diff(monitor) * 1e-9  # same-second differences in ns; 120 Hz shots
    assert np.median(shots[shots > 0]) == pytest.approx(1 / 120, rel=1e-3)
    assert run.Detector("epixm") is not None and abs(run.timestamp - stamps[0]) < 2**32


def test_suite_pairing_gets_each_frame_its_shots_flux_following_the_scan(mfx_linearity):
    path, truth = mfx_linearity
    run = open_run(path)
    det, flux_var = run.Detector("epixm"), run.Detector("flux")
    by_step = {}
    for evt, flux, flux_ts, frames_ts in matched_det_evt(run):
        assert det.raw.raw(evt) is not None and 0 < frames_ts - flux_ts <= 1000
        k, i = evt._step, evt._i
        assert flux == pytest.approx(float(truth.flux[k][i]), rel=1e-6)
        signal = float(det.raw.calib(evt).mean())  # keV: flux * adu_per_flux / gain
        by_step.setdefault(flux_var(evt), []).append((flux, signal))
    assert sorted(by_step) == [1.0, 2.5, 4.0] and all(len(v) == 12 for v in by_step.values())
    means = {v: np.mean([f for f, _ in pairs]) for v, pairs in by_step.items()}
    for v, m in means.items():  # flux proportional to the scan (5% jitter over 12 shots)
        assert m == pytest.approx(v, rel=0.05)
    flux, signal = np.array([p for pairs in by_step.values() for p in pairs]).T
    slope = np.polyfit(flux, signal, 1)[0]
    assert slope == pytest.approx(40.0 / 20.0, rel=0.03)


def test_flux_monitor_has_16_channels_and_the_configured_sign(tmp_path):
    truth = SyntheticRun("misc", shape=(1, 4, 4), events=4, steps=1, timing=True, flux=3.0, flux_sign=-1.0,
                         seed=1).write(tmp_path / "m.h5")
    run = open_run(tmp_path / "m.h5")
    mon = run.Detector("MfxDg1BmMon")
    for i, evt in enumerate(run.events()):
        amp = mon.raw.peakAmplitude(evt)
        if truth.frame[0][i]:   # psana's BLD: no monitor data at the frame event
            assert amp is None
            continue
        assert amp.shape == (16,)
        # epixMSuiteConfig: fluxChannels [15], fluxSign -1; the default range(8, 16) with the same sign
        assert amp[[15]].mean() * -1 == pytest.approx(truth.flux[0][i])
        assert amp[8:16].mean() * -1 == pytest.approx(truth.flux[0][i])
    assert truth.flux_monitor == "MfxDg1BmMon" and truth.scan_name is None
    assert np.mean(truth.flux[0]) == pytest.approx(3.0, rel=0.1)


def test_without_timing_every_event_is_a_frame_and_codes_are_zero(tmp_path):
    truth = make_synthetic_run(tmp_path / "d.h5", steps=(3,), shape=(1, 4, 4), run_type="dark")
    run = next(DataSource(files=str(tmp_path / "d.h5")).runs())
    det, timing = run.Detector("epixM"), run.Detector("timing")
    for evt in run.events():
        assert det.raw.raw(evt) is not None and timing.raw.eventcodes(evt) == [0] * 288
    assert truth.eventcodes == [] and truth.flux == [] and truth.flux_monitor is None
    assert [m.all() for m in truth.frame] == [True]


@pytest.mark.parametrize("detector, group, shape", [("epix100", "epix100", (1, 704, 768)),
                                                    ("Epix100a", "Epix100a", (1, 704, 768)),
                                                    ("rixsCCD", "rixsCCD", (1, 1200, 4224))])
def test_one_module_detectors_keep_the_module_axis(tmp_path, detector, group, shape):
    truth = make_synthetic_run(tmp_path / "one.h5", steps=(2,), detector=detector, run_type="dark", timing=True)
    assert truth.model.name == group and truth.model.shape == shape and not truth.model.auto_ranging
    import h5py

    with h5py.File(tmp_path / "one.h5") as f:
        assert f[f"{group}/0"].shape == (4, *shape)
        assert f[f"{group}/calib/pedestals"].shape == shape  # fixed gain: [module, row, col]
    run = next(DataSource(files=str(tmp_path / "one.h5")).runs())
    det = run.Detector(group)
    frames = [det.raw.raw(e) for e in run.events()]
    assert [f is None for f in frames] == [True, False, True, False]
    assert frames[1].shape == shape[1:] and frames[1].dtype == np.uint16  # psana's one-segment [row, col]
    run = next(DataSource(files=str(tmp_path / "one.h5")).runs())
    kept = run.Detector(group, keep_module_axis=True)
    assert [None if kept.raw.raw(e) is None else kept.raw.raw(e).shape for e in run.events()] == [None, shape] * 2


def test_fixed_gain_detectors_saturate_instead_of_switching():
    d = SyntheticRun("dark", detector="epix100", shape=(1, 2, 2)).model
    frame = d.frame(np.random.default_rng(0), signal_adu=np.float32(1e6))
    assert np.all(frame == d.g0cut - 1)


@pytest.mark.parametrize("detector", ["epixM", "epix100"])
def test_constants_make_calib_kev_in_both_gains(tmp_path, detector):
    run = SyntheticRun("linearity", detector=detector, shape=(1, 6, 6), events=3, steps=2, adu_per_flux=1000.0,
                       scan_values=[0.5, 40.0], flux_jitter=0.0, seed=2)
    truth = run.write(tmp_path / "c.h5")
    r = next(DataSource(files=str(tmp_path / "c.h5")).runs())
    det = r.Detector(detector)
    ped = det.calibconst["pedestals"][0]
    assert ped.shape == ((2, 1, 6, 6) if detector == "epixM" else (1, 6, 6))
    assert det.calibconst["pixel_gain"][1]["units"] == "ADU/keV"
    for evt in r.events():
        kev = det.raw.calib(evt)
        expected = truth.flux[evt._step][evt._i] * 1000.0 / truth.model.gain
        raw = det.raw.raw(evt)
        if evt._step == 0 or detector == "epixM":  # epixM switches to low gain at 40 000 ADU; epix100 saturates
            tol = 4 * truth.model.noise / truth.model.gain * (1 if evt._step == 0 else truth.model.low_gain_ratio)
            assert np.all(np.abs(kev - expected) < tol + 0.1)
        if evt._step == 1:
            assert np.all(raw >= truth.model.g0cut) if detector == "epixM" else np.all(raw == truth.model.g0cut - 1)


def test_no_constants_means_calib_is_masked_adu(tmp_path):
    truth = make_synthetic_run(tmp_path / "n.h5", steps=(2,), shape=(1, 4, 4), constants=False)
    assert truth.constants is None
    r = next(DataSource(files=str(tmp_path / "n.h5")).runs())
    det = r.Detector("epixM")
    assert det.calibconst == {}
    evt = next(r.events())
    np.testing.assert_array_equal(det.raw.calib(evt), (det.raw.raw(evt) & 0x7FFF).astype(np.float32))


def test_second_boundary_never_splits_a_shot():
    # a shot period 500 ns short of a second puts shot k at 500 k ns before a second boundary
    beam = BeamTiming(rate_hz=1e9 / (1e9 - 500), frame_delay_ns=900)
    plan = beam.plan(1_700_000_000, 4, first_shot=0)
    ts = plan.timestamps.astype(np.int64)
    assert (ts[2] & 0xFFFFFFFF) == 1_000_000_000 - 500 - 900  # moved back so its frame stays in the second
    assert np.all(ts[1::2] - ts[0::2] == 900) and np.all(np.diff(ts) > 0)


def test_bad_timing_and_scan_arguments():
    with pytest.raises(ValueError, match="event codes are 0..287"):
        BeamTiming(frame_codes=(300,))
    with pytest.raises(ValueError, match="frame_delay_ns"):
        BeamTiming(frame_delay_ns=0)
    with pytest.raises(ValueError, match="one value per step"):
        SyntheticRun("linearity", steps=3, scan_values=[1, 2])
    with pytest.raises(ValueError, match="scan_values is for"):
        SyntheticRun("dark", scan_values=[1, 2, 3])
