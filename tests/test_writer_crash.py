"""A writer killed with SIGKILL mid-run leaves its finished steps readable, exactly."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from calibsuite_h5source import DataSource

WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from calibsuite_h5source import RunWriter
    with RunWriter(sys.argv[1], 'dark', flush_every=5) as w:
        for k in range(100):
            with w.step(step_value=float(k)) as s:
                for i in range(12):
                    s.event(epixM=np.full((2, 3, 4), 100 * k + i, np.uint16), wave8={'amp': float(i)})
                    if k == 2 and i == 7:          # mid-step, after 2 finished steps and a flush
                        print('ready', flush=True)
                        time.sleep(60)             # the parent kills us here
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_step_keeps_finished_steps(tmp_path):
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    run = next(DataSource(files=str(path)).runs())
    assert run.complete is False
    det = run.Detector("epixM")
    steps = [[int(det.raw.raw(e)[0, 0, 0]) for e in step.events()] for step in run.steps()]
    assert steps == [list(range(12)), list(range(100, 112))]
    run = next(DataSource(files=str(path)).runs())
    assert [run.Detector("step_value")(s) for s in run.steps()] == [0.0, 1.0]
    assert np.all([run.Detector("wave8").raw.amp(e) == e._i for e in run.events()])
