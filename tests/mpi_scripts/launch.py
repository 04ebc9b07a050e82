"""Run a script of this directory under ``mpiexec -n N`` (for tests/test_mpi.py and test_smalldata.py).

Also the one :func:`mpiexec` and :func:`run_to_end` of the tests that launch scripts (suite, peer, psana1).
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from calibsuite_h5source.psana2 import partition

HERE = Path(__file__).parent
#: Seconds a launched script may take: a deadlock fails the test instead of hanging it.
TIMEOUT = 120


def mpiexec() -> str | None:
    """The launcher matching mpi4py's MPI library: next to python first (pip's mpich), else PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


_skip_without_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or mpiexec() is None,
    reason="needs mpi4py and an mpiexec (pip install 'calibsuite_h5source[mpi]')",
)


def run_to_end(cmd: list, *, cwd=None, env: dict | None = None, timeout: float = TIMEOUT,
               what: str = "") -> subprocess.CompletedProcess:
    """Run ``cmd`` (in its own session) to its end and return it, whatever its exit code; the caller asserts.

    A hang is a test failure naming ``what`` (default: the command) with the
    last output, never a stuck CI job: after ``timeout`` seconds the whole
    session (mpiexec and every rank) is killed.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{what or cmd} did not finish in {timeout} s (hung, or a deadlock); last output:\n"
                    f"{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def needs_mpi(test):
    """Mark ``test`` as an MPI test (``-m mpi``) that skips without mpi4py or an mpiexec."""
    return pytest.mark.mpi(_skip_without_mpi(test))


#: Variables that decide MPI roles: a test sets the ones it means, the caller's shell none.
ROLE_ENV = ("PS_PARALLEL", "PS_EB_NODES", "PS_SRV_NODES", partition.EVERY_RANK_ENV)


def launch(script: str, n_ranks: int, *args, timeout: float = TIMEOUT, env: dict | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run ``mpi_scripts/<script>`` on ``n_ranks`` ranks (0: plain python); fail on error or timeout.

    ``env`` adds environment variables (``PS_SRV_NODES``...); ``check=False``
    returns a failed run instead of failing the test.
    """
    cmd = [sys.executable, str(HERE / script), *map(str, args)]
    if n_ranks:
        cmd = [mpiexec(), "-n", str(n_ranks), *cmd]
    env = {**{k: v for k, v in os.environ.items() if k not in partition.LAUNCHER_ENV and k not in ROLE_ENV},
           **(env or {})}
    proc = run_to_end(cmd, env=env, timeout=timeout, what=f"{script} on {n_ranks} ranks")
    assert proc.returncode == 0 or not check, proc.stderr
    return proc
