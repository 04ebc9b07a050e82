"""``calibsuite-h5 fake`` with the MFX, photon and constants options, read back."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.cli import main


def test_fake_mfx_linearity_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "lin.h5"
    assert main(["fake", str(out), "--run-type", "linearity", "--timing", "--steps", "2", "--events", "4",
                 "--shape", "1,4,4", "--scan-values", "2,6", "--flux-sign=-1", "--flux-jitter", "0"]) == 0
    assert "(timing, MfxDg1BmMon, constants)" in capsys.readouterr().out
    run = next(DataSource(files=str(out)).runs())
    timing, mon, det = run.Detector("timing"), run.Detector("MfxDg1BmMon"), run.Detector("epixm")
    fluxes = {}
    for step in run.steps():
        for evt in step.events():
            ec = timing.raw.eventcodes(evt)
            if ec[137]:
                assert det.raw.raw(evt) is None
                fluxes.setdefault(run.Detector("flux")(step), []).append(-mon.raw.peakAmplitude(evt)[15])
            else:
                assert ec[281] and ec[283] and ec[272] and det.raw.raw(evt).shape == (1, 4, 4)  # epixM keeps its module axis, as psana
    assert {k: np.round(v, 5).tolist() for k, v in fluxes.items()} == {2.0: [2.0] * 4, 6.0: [6.0] * 4}


def test_fake_fe55_clusters_and_no_constants(tmp_path, capsys):
    out = tmp_path / "fe.h5"
    assert main(["fake", str(out), "--run-type", "fe55", "--detector", "Epix100a", "--shape", "1,16,16",
                 "--steps", "1", "--events", "3", "--clusters", "0.5,0.5,0", "--photon-energy", "6.4",
                 "--occupancy", "0.02", "--no-constants"]) == 0
    assert "fe55 run, Epix100a (1, 16, 16)" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert "calib" not in f["Epix100a"] and f["Epix100a"].attrs["detType"] == "epix100"
    assert main(["validate", str(out)]) == 0


@pytest.mark.parametrize("bad", [["--shape", "1,2"], ["--clusters", "a,b,c"], ["--run-type", "sunshine"]])
def test_fake_rejects_bad_options(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fake", str(tmp_path / "x.h5"), *bad])
    assert exc.value.code == 2


def test_fake_reports_bad_values(tmp_path, capsys):
    assert main(["fake", str(tmp_path / "x.h5"), "--run-type", "dark", "--scan-values", "1,2,3"]) == 2
    assert "--scan-values is for" in capsys.readouterr().err
    assert main(["fake", str(tmp_path / "y.h5"), "--clusters", "0,0,0"]) == 2


@pytest.mark.parametrize("bad, said", [(["--modules", "0"], "argument --modules: expected an integer of at least 1"),
                                       (["--seed", "-1"], "argument --seed: expected an integer of at least 0")])
def test_fake_names_the_option_of_a_count_out_of_range(tmp_path, capsys, bad, said):
    """--modules 0 was silently ignored; --seed -1 failed without naming --seed."""
    with pytest.raises(SystemExit) as exc:
        main(["fake", str(tmp_path / "x.h5"), *bad])
    assert exc.value.code == 2 and said in capsys.readouterr().err and not (tmp_path / "x.h5").exists()
