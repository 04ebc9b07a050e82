"""``calibsuite-h5 watch``: through main() while a writer process streams, and as a subprocess."""

import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from test_live import frame, start_writer, stop

from calibsuite_h5source import RunWriter
from calibsuite_h5source.cli import main

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX processes")


@pytest.fixture(autouse=True)
def _no_inherited_retry_limit(monkeypatch):
    monkeypatch.delenv("PS_R_MAX_RETRIES", raising=False)


def expected_stats(k, events):
    frames = np.array([frame(1000 * k + i) for i in range(events) if i % 5 != 4], dtype=np.float64)
    return frames.mean(), frames.std(axis=0).mean()


def test_watch_main_follows_a_run_to_completion(tmp_path, capsys):
    path = tmp_path / "live.h5"
    proc = start_writer(path, steps=3, events=20, sleep=0.004, flush_every=4)
    try:
        code = main(["watch", str(path), "--progress-every", "0", "--max-retries", "30"])
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(lines) == 3
    for k, line in enumerate(lines):
        m = re.fullmatch(rf"step {k}  delay={0.5 * k:g}  gain={k % 2}  events 20  mean ([\d.]+)  rms ([\d.]+)", line)
        assert m, line
        mean, rms = expected_stats(k, 20)
        assert float(m.group(1)) == pytest.approx(mean, abs=0.006)
        assert float(m.group(2)) == pytest.approx(rms, abs=0.006)
    assert out.splitlines()[-1] == "run complete: 3 steps, 60 events"
    assert re.search(r"^step \d+  delay=\S+  gain=\d  \.\.\. events \d+ .* so far$", err, re.M)


def test_watch_prints_flux_of_a_beam_monitor(tmp_path, capsys):
    path = tmp_path / "flux.h5"
    with RunWriter(path, "intensityScan") as w:
        for k, flux in enumerate((100.0, 200.0)):
            with w.step(step_value=float(k)) as s:
                for i in range(4):
                    s.event(epix100=np.full((1, 2, 2), 10 * k + i, np.uint16),
                            MfxDg1BmMon={"peakAmplitude": np.full(4, -flux, np.float32)})
    assert main(["watch", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "flux(MfxDg1BmMon.peakAmplitude)" in out[0]
    assert out[1] == "step 0  step_value=0  events 4  mean 1.50  rms 1.12  flux 100"
    assert out[2] == "step 1  step_value=1  events 4  mean 11.50  rms 1.12  flux 200"


@pytest.mark.slow
def test_watch_subprocess_exits_1_when_the_writer_dies(tmp_path):
    path = tmp_path / "killed.h5"
    proc = start_writer(path, steps=4, events=12, sleep=0, flush_every=5, mode="hang")
    try:
        assert proc.stdout.readline().strip() == "ready"
        watch = subprocess.Popen([sys.executable, "-m", "calibsuite_h5source.cli", "watch", str(path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PS_R_MAX_RETRIES": "60"})
        timer = threading.Timer(60, watch.kill)  # no hang, whatever happens
        timer.start()
        lines = [watch.stdout.readline() for _ in range(3)]  # 'watching ...', steps 0 and 1: it is following
        os.kill(proc.pid, signal.SIGKILL)
        out = "".join(lines) + watch.stdout.read()
        err = watch.stderr.read()
        watch.wait(timeout=60)
        timer.cancel()
    finally:
        stop(proc)
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 1, err

    assert [line.split("  ")[0] for line in out.splitlines() if line.startswith("step ")] == ["step 0", "step 1"], (out, err)
    assert "the run is incomplete" in err and "34 events" in err and str(path) in err


def test_watch_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert main(["watch", str(bad)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    assert main(["watch", str(tmp_path / "missing.h5"), "--max-retries", "0.2"]) == 2
    assert "does not exist" in capsys.readouterr().err
