"""Run psana's own test scripts (``../shared/psana-tests``) on psana and, switched, on converted h5 runs.

A script is copied to a temporary folder twice: unchanged beside a
``test_data/<run>`` link to ``../shared/data/xtc2/<run>`` (where lcls2 keeps
its data), for psana; and with its one ``DataSource(...)`` call switched to
``calibsuite_h5source.DataSource(files=<converted run>, ...)``, other keywords
kept, for the h5 source. Both run as lcls2's ``byhand_*.py`` launch them
(``python script.py``, ``mpirun -n N`` with ``PS_SRV_NODES``/``PS_EB_NODES``).

psana asks SLAC's web services for the run's files and calibration
constants; without a network (CI) the connection error escapes psana. The
psana side therefore runs with :data:`OFFLINE_SITE` (a ``sitecustomize``)
under which those services answer HTTP 404, as if unreachable, without
being asked: psana handles that answer (the file list then comes from disk,
and the detectors get no constants, as the converted runs have none), and
the outcome does not depend on whether the machine has a network.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mpi_scripts.launch import mpiexec, run_to_end

from calibsuite_h5source.psana2 import partition

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PSANA_TESTS = Path(os.environ.get("CALIBSUITE_PSANA_TESTS_DIR", SHARED / "psana-tests"))
XTC2 = Path(os.environ.get("CALIBSUITE_XTC2_DIR", SHARED / "data" / "xtc2"))
#: lcls2 test scripts adapted to the shared data (each names its original)
PEER_SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"

missing = [m for m in ("psana", "mpi4py") if importlib.util.find_spec(m) is None]
needs_peer = pytest.mark.skipif(
    bool(missing) or not (PSANA_TESTS / "run_intg_det.py").exists() or not (XTC2 / "intg_det").is_dir(),
    reason=f"needs {', '.join(missing) or 'psana'}, {PSANA_TESTS} and {XTC2}/intg_det (pip install '.[psana]')")
needs_mpiexec = pytest.mark.skipif(mpiexec() is None, reason="needs mpiexec (pip install mpich)")

#: A ``sitecustomize`` for psana's side: SLAC's web services answer 404 without being asked (module doc).
OFFLINE_SITE = '''\
"""Test-only: SLAC's web services answer HTTP 404, as if unreachable, an answer psana handles."""
import requests
import requests.adapters

_send = requests.adapters.HTTPAdapter.send


def _send_offline(self, request, *args, **kwargs):
    if "slac.stanford.edu" not in (request.url or ""):
        return _send(self, request, *args, **kwargs)
    response = requests.Response()
    response.status_code, response.url, response.request = 404, request.url, request
    response.reason = "offline (test)"
    return response


requests.adapters.HTTPAdapter.send = _send_offline
'''

#: The switched call: the script's own ``DataSource(`` call keeps its keywords after ``files=``.
CALL = re.compile(r"=\s*DataSource\(")


def offline_site(dest: Path) -> Path:
    """Write :data:`OFFLINE_SITE` as ``dest/sitecustomize.py``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "sitecustomize.py").write_text(OFFLINE_SITE)
    return dest


def copy_for_psana(script: str, dest: Path, data: str, source: Path = PSANA_TESTS) -> Path:
    """``dest/<script>`` unchanged, beside ``dest/test_data/<data>`` (a link to the shared xtc2 run)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / script, dest / script)
    (dest / "test_data").mkdir(exist_ok=True)
    (dest / "test_data" / data).symlink_to(XTC2 / data)
    return dest / script


def copy_switched(script: str, dest: Path, run_h5: Path, source: Path = PSANA_TESTS) -> Path:
    """``dest/<script>`` with its one ``DataSource(...)`` call reading ``run_h5`` through calibsuite_h5source."""
    dest.mkdir(parents=True, exist_ok=True)
    text = (source / script).read_text()
    assert len(CALL.findall(text)) == 1, f"{script}: expected one DataSource(...) call to switch"
    text = CALL.sub(f"= calibsuite_h5source.DataSource(files={str(run_h5)!r}, ", text)
    text = "import calibsuite_h5source\n" + text
    (dest / script).write_text(text)
    return dest / script


def run_script(path: Path, *args: str, n_ranks: int = 0, env: dict | None = None, pythonpath=(),
               timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``path`` from its folder as lcls2 does (``mpirun -n N`` when ``n_ranks``); fail on error or hang.

    ``pythonpath`` goes before the repository on ``PYTHONPATH`` (an :func:`offline_site`, a suite copy).
    """
    cmd = [sys.executable, path.name, *args]
    outputs = path.parent / f".{path.stem}-rank-output"
    if n_ranks:  # one file per rank: lines printed by two ranks at once would otherwise interleave
        shutil.rmtree(outputs, ignore_errors=True)
        outputs.mkdir()
        cmd = [mpiexec(), "-n", str(n_ranks), "-outfile-pattern", str(outputs / "%r"), *cmd]
    full_env = {k: v for k, v in os.environ.items() if k not in partition.LAUNCHER_ENV}
    full_env.update(PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(REPO)]), OMP_NUM_THREADS="1",
                    **(env or {}))
    proc = run_to_end(cmd, cwd=path.parent, env=full_env, timeout=timeout, what=f"{path} (ranks={n_ranks})")
    if n_ranks:  # in rank order, each rank's lines whole
        proc.stdout += "".join((outputs / str(r)).read_text() for r in range(n_ranks) if (outputs / str(r)).exists())
    assert proc.returncode == 0, f"{path} (ranks={n_ranks}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def convert_run(out: Path, *args: str) -> Path:
    """``calibsuite-h5 convert out *args`` in a child process (psana stays out of pytest's); return ``out``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "calibsuite_h5source.cli", "convert", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
