"""Acceptance: the real suite scripts on synthetic runs laid out as at MFX (``timing=True``).

Unlike ``test_suite_scripts.py`` the configs do not set ``ignoreEventCodeCheck``,
so ``get_ds`` asks for ``['epixm', 'timing', 'MfxDg1BmMon']`` and the scripts
select events by their codes: the beam-monitor events (137, no frame) must be
skipped and every frame event (281, 283) used. Outputs are compared with the
synthetic truth and with the stored frames read by h5py.
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
from suite_support import EPIXM_MASK as MASK
from suite_support import mfx_config, needs_suite, run_script

from calibsuite_h5source.synthetic.run import SyntheticRun

pytestmark = [needs_suite, pytest.mark.slow]

def stored(path, step=0):
    with h5py.File(path) as f:
        return f[f"epixM/{step}"][()], f[f"epixM/present/{step}"][()], f[f"timestamp/{step}"][()]


def test_simple_photon_counter_counts_the_injected_photons(suite, workdir):
    run = workdir / "lowflux.h5"
    truth = SyntheticRun("lowFlux", "epixM", events=8, steps=1, timing=True, flux_sign=-1, seed=11).write(run)
    out = workdir / "out_spc"
    (out / "lowFlux").mkdir(parents=True)
    proc = run_script(suite, "simplePhotonCounter.py",
                      ["-cf", str(mfx_config(workdir / "cfg_spc.py")), "-r", "1", "-p", "/lowFlux/", "-F", str(run)],
                      out_root=out)
    # isBeamEvent saw the 8 frame events' 281 and 283, and skipped the 8 monitor events
    assert "0 run triggers, 8 DAQ triggers, 8 beam events" in proc.stdout
    p = truth.photons[0]
    total = float(re.search(r"total photons in detector using cut 6.00 is ([\d.]+)", proc.stdout).group(1))
    assert total == len(p) > 1000  # 8 keV photons over a 6 keV cut, noise 0.4 keV: every photon, nothing else
    fraction = np.load(out / "lowFlux" / "SimplePhotonCounter__r1_c0_h5test.npy")
    expect = np.zeros(truth.model.shape)
    np.add.at(expect, (p["module"], p["row"], p["col"]), 1.0)
    np.testing.assert_allclose(fraction, expect / 8)


def test_event_scan_reads_only_frame_events(suite, workdir):
    run = workdir / "linearity.h5"
    truth = SyntheticRun("linearity", "epixM", events=6, steps=2, timing=True, flux_sign=-1, scan_values=[1, 3],
                         adu_per_flux=100.0, seed=12).write(run)
    out = workdir / "out_esp"
    (out / "scan").mkdir(parents=True)
    roi = np.zeros((4, 192, 384), bool)
    roi[2, 10:20, 30:50] = True
    np.save(workdir / "roi.npy", roi)
    cfg = mfx_config(workdir / "cfg_esp.py", ROIs=[str(workdir / "roi.npy")])
    run_script(suite, "EventScanParallelSlice.py", ["-cf", str(cfg), "-r", "1", "-p", "/scan/", "-F", str(run)],
               out_root=out)
    with h5py.File(out / "scan" / "EventScanParallel_c0_r1__n666.h5") as f:
        ts, pulse_ids, rois = f["timestamp"][()], f["pulseIds"][()], f["rois"][()]
    frame_ts = np.concatenate([t[m] for t, m in zip(truth.timestamps, truth.frame, strict=True)])
    np.testing.assert_array_equal(ts, frame_ts.astype(np.int64))
    np.testing.assert_array_equal(pulse_ids, np.concatenate([p[m] for p, m in zip(truth.pulse_ids, truth.frame,
                                                                                   strict=True)]))
    frames = np.concatenate([stored(run, k)[0][stored(run, k)[1]] for k in range(2)])
    np.testing.assert_allclose(rois[:, 0], (frames & MASK)[:, roi].mean(1))
    # the ROI's signal above pedestal follows the flux its shot's monitor recorded
    flux = np.concatenate([f[m] for f, m in zip(truth.flux, truth.frame, strict=True)])
    signal = rois[:, 0] - truth.model.pedestal[roi].mean()
    assert np.polyfit(flux, signal, 1)[0] == pytest.approx(100.0, rel=0.02)


def test_calc_noise_and_mean_skips_the_monitor_events(suite, workdir):
    run = workdir / "dark.h5"
    truth = SyntheticRun("dark", "epixM", events=30, steps=1, timing=True, seed=13).write(run)
    out = workdir / "out_cnm"
    (out / "dark").mkdir(parents=True)
    proc = run_script(suite, "CalcNoiseAndMean.py",
                      ["-cf", str(mfx_config(workdir / "cfg_cnm.py")), "-r", "1", "-p", "/dark/", "-F", str(run)],
                      out_root=out)
    assert "None frames on beam event" not in proc.stdout
    means = np.load(out / "dark" / "CalcNoiseAndMean_mean__r1_step0.npy")
    frames, present, _ = stored(run)
    assert present.tolist() == [False, True] * 30  # the monitor events' stored zeros must not be averaged
    np.testing.assert_allclose(means, frames[present].astype(np.float64).mean(0), rtol=1e-9)
    assert np.abs(means - truth.model.pedestal).mean() < np.mean(truth.model.noise) / np.sqrt(30)
