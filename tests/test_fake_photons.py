"""Synthetic photons (fe55, lowFlux): the recorded positions and energies are what the files hold."""

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.synthetic.photons import deposit, draw_photons
from calibsuite_h5source.synthetic.run import FE55_KEV, PHOTON_DTYPE, SyntheticRun
from calibsuite_h5source.testing import make_synthetic_run

OFFSETS = {1: [(0, 0)], 2: [(0, 0), (0, 1)], 4: [(0, 0), (0, 1), (1, 0), (1, 1)]}


def calib_frames(path, name="epixM"):
    run = next(DataSource(files=str(path), keep_module_axis=True).runs())  # index as the truth: [module, row, col]
    det = run.Detector(name)
    return [[det.raw.calib(e) for e in step.events()] for step in run.steps()]


def test_fe55_single_pixels_read_5_9_kev_at_the_recorded_positions(tmp_path):
    truth = make_synthetic_run(tmp_path / "f.h5", steps=(20, 10), shape=(2, 32, 32), run_type="fe55",
                               occupancy=0.005, seed=4)
    assert truth.photon_energy == FE55_KEV and truth.constants is not None
    frames = calib_frames(tmp_path / "f.h5")
    for k, step in enumerate(frames):
        p = truth.photons[k]
        assert p.dtype == PHOTON_DTYPE and len(p) > 0 and np.all(p["size"] == 1)
        at = np.array([step[e][m, r, c] for e, m, r, c in zip(p["event"], p["module"], p["row"], p["col"],
                                                               strict=True)])
        noise_kev = float((truth.model.noise / truth.model.gain).max())
        assert np.all(np.abs(at - FE55_KEV) < 5 * noise_kev)
        assert abs(at.mean() - FE55_KEV) < 0.05
        # nowhere else is there a photon: every pixel above 3 keV is a recorded one
        hits = np.argwhere(np.stack(step) > 3.0)
        assert sorted(map(tuple, hits.tolist())) == sorted(zip(p["event"].tolist(), p["module"].tolist(),
                                                                p["row"].tolist(), p["col"].tolist(), strict=True))
        np.testing.assert_array_equal(truth.photon_counts[k], np.bincount(p["event"], minlength=len(step)))
    total = sum(len(p) for p in truth.photons)
    assert total / (30 * 2 * 32 * 32) == pytest.approx(0.005, rel=0.15)


def test_clusters_share_the_energy_and_sum_to_it(tmp_path):
    truth = make_synthetic_run(tmp_path / "c.h5", steps=(15,), shape=(1, 40, 40), run_type="fe55",
                               occupancy=0.004, clusters=(0.4, 0.3, 0.3), seed=9)
    (step,) = calib_frames(tmp_path / "c.h5")
    p = truth.photons[0]
    assert set(np.unique(p["size"]).tolist()) == {1, 2, 4}
    assert np.all(p["seed_fraction"][p["size"] == 1] == 1)
    assert np.all((p["seed_fraction"][p["size"] > 1] >= 0.25) & (p["seed_fraction"][p["size"] > 1] <= 0.9))
    noise = float((truth.model.noise / truth.model.gain).mean())
    sums, seeds = [], []
    for ph in p:
        e, m, r, c, n = int(ph["event"]), int(ph["module"]), int(ph["row"]), int(ph["col"]), int(ph["size"])
        values = [step[e][m, r + dr, c + dc] for dr, dc in OFFSETS[n]]
        sums.append(sum(values))
        seeds.append(values[0] - ph["seed_fraction"] * ph["energy"])
        assert values[0] >= max(values) - 5 * noise  # the seed keeps the largest share
    assert abs(np.mean(sums) - FE55_KEV) < 0.1 and np.std(seeds) < 2 * noise


def test_footprints_never_overlap_within_a_frame():
    rng = np.random.default_rng(0)
    shape = (1, 6, 6)  # crowded: many clashes to drop
    photons, shares = draw_photons(rng, np.arange(50), shape, 0.2, 5.9, clusters=(0, 0.5, 0.5))
    for e in range(50):
        kev = deposit(photons, shares, e, shape)
        sel = photons[photons["event"] == e]
        assert (kev is None) == (len(sel) == 0)
        if kev is not None:
            assert kev.sum() == pytest.approx(5.9 * len(sel), rel=1e-5)
            assert np.count_nonzero(kev) == sel["size"].sum()  # disjoint footprints
    assert np.all(np.diff(photons["event"]) >= 0)


def test_low_flux_photons_only_on_frame_events_with_timing(tmp_path):
    truth = make_synthetic_run(tmp_path / "l.h5", steps=(6,), shape=(1, 24, 24), run_type="lowFlux", timing=True)
    assert truth.photon_energy == 8.0 and truth.flux_monitor == "MfxDg1BmMon"
    p = truth.photons[0]
    assert len(p) > 0 and np.all(p["event"] % 2 == 1)  # frame events are the odd ones
    assert np.all(truth.photon_counts[0][0::2] == 0)
    run = next(DataSource(files=str(tmp_path / "l.h5")).runs())
    det = run.Detector("epixM")
    values = [None if det.raw.raw(e) is None else det.raw.calib(e) for e in run.events()]  # epixM: [module, row, col]
    at = np.array([values[e][m, r, c] for e, m, r, c in zip(p["event"], p["module"], p["row"], p["col"],
                                                            strict=True)])
    assert abs(at.mean() - 8.0) < 0.2
    with pytest.raises(ValueError, match="clusters must be"):
        SyntheticRun("fe55", clusters=(1, 0))


def test_archon_one_row_only_single_pixels():
    run = SyntheticRun("lowFlux", detector="archon", shape=(1, 1, 300), events=5, steps=1,
                       clusters=(0, 0, 1), occupancy=0.02)
    list(run.step_events(0))
    p = run.truth.photons[0]
    assert len(p) > 0 and np.all(p["size"] == 1) and np.all(p["row"] == 0)
