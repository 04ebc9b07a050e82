"""The main job: calibsuite-h5 demo writes a run and recovers its truth."""

import re
import subprocess
import sys

from calibsuite_h5source.cli import main


def test_demo_recovers_pedestal_noise_and_injection(tmp_path, capsys):
    out_file = tmp_path / "demo.h5"
    assert main(["demo", "--steps", "3", "--events", "40", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert out_file.exists()
    rows = re.findall(r"^\s+(\d)\s+([\d.]+)\s+(\d+)\s+([\d.]+) ADU\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [r[:3] for r in rows] == [("0", "0.0", "40"), ("1", "50.0", "40"), ("2", "100.0", "40")]
    for _, _, _, ped_err, noise, noise_true, injected, injected_true in rows:
        assert float(ped_err) < 1.5  # noise 8.5 / sqrt(40) * 0.8 ~ 1.07
        assert abs(float(noise) / float(noise_true) - 1) < 0.03
        assert abs(float(injected) - float(injected_true)) < 1.0
    m = re.search(r"mean \|recovered - true\| per pixel ([\d.]+) ADU \(expected from noise/sqrt\(N\): ([\d.]+)\)", out)
    assert abs(float(m.group(1)) / float(m.group(2)) - 1) < 0.05
    assert re.search(r"read 120 events in [\d.]+ s: \d+ events/s, \d+ MB/s", out)


def test_console_script_runs_the_demo():
    proc = subprocess.run([sys.executable, "-m", "calibsuite_h5source.cli", "demo", "--steps", "2", "--events", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pedestal over all steps" in proc.stdout and "temporary" not in proc.stderr
