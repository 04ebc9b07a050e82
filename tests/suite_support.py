"""Run the real calibration-suite scripts (``../shared/suite``) on h5 runs.

The suite is copied to a temporary folder and its one ``psana.DataSource``
call in ``calibrationSuite/psana2Base.get_ds`` is switched to
``calibsuite_h5source.DataSource(files=self.args.nonXtcFiles, ...)``, exactly as
``../shared/suite/NOTICE.md`` describes; nothing else in the suite changes.
The h5 run reaches ``get_ds`` through the suite's own ``-F/--nonXtcFiles`` option (its
``-f/--files`` is taken: several scripts use it to re-analyse their own output);
without ``-F`` the factory hands ``exp=``/``run=`` to the real psana.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mpi_scripts.launch import mpiexec, run_to_end

from calibsuite_h5source.psana2 import partition

REPO = Path(__file__).resolve().parents[1]
SUITE = Path(os.environ.get("CALIBSUITE_SUITE_DIR", REPO.parent / "shared" / "suite"))

#: The one call the switch replaces, and what replaces it.
ORIGINAL_CALL = "ds = psana.DataSource(\n            exp=self.exp,"
SWITCHED_CALL = "ds = calibsuite_h5source.DataSource(\n            files=self.args.nonXtcFiles,\n            exp=self.exp,"

SUITE_DEPS = ("psana", "scipy", "statsmodels", "matplotlib", "mpi4py")
missing = [m for m in SUITE_DEPS if importlib.util.find_spec(m) is None]
needs_suite = pytest.mark.skipif(
    not SUITE.is_dir() or bool(missing),
    reason=f"needs ../shared/suite and {', '.join(missing) or 'its dependencies'} "
           "(pip install -e '.[test,psana,suite]')",
)


def switched_suite(dest: Path) -> Path:
    """Copy the suite to ``dest`` with its one ``get_ds`` call switched; return the copy."""
    dest = Path(dest)
    shutil.copytree(SUITE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    base = dest / "calibrationSuite" / "psana2Base.py"
    text = base.read_text()
    assert text.count(ORIGINAL_CALL) == 1, "the suite's get_ds call changed; update ORIGINAL_CALL"
    text = text.replace(ORIGINAL_CALL, SWITCHED_CALL)
    text = text.replace("import psana\n", "import psana\nimport calibsuite_h5source\n", 1)
    base.write_text(text)
    (dest / "logs").mkdir(exist_ok=True)
    return dest


def write_config(path: Path, experiment_hash: dict) -> Path:
    """Write a suite config file (an ``experimentHash`` dict) whose values are python literals."""
    body = "import numpy as np\n\nexperimentHash = {\n"
    for key, value in experiment_hash.items():
        body += f"    {key!r}: {value},\n" if key == "regionSlice" else f"    {key!r}: {value!r},\n"
    Path(path).write_text(body + "}\n")
    return Path(path)


def run_script(suite: Path, script: str, args: list[str], *, out_root: Path, n_ranks: int = 0,
               timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``suite_scripts/<script>`` as its users do (``mpiexec -n N`` when ``n_ranks``: psana's roles,
    with ``psana2Base``'s ``PS_SRV_NODES=1``, so N=4 is one worker and N=6 three).

    Returns the finished process; the caller asserts on its outputs. A hang is
    a test failure (``timeout``), never a stuck CI job.
    """
    cmd = [sys.executable, script, *args]
    if n_ranks:
        cmd = [mpiexec(), "-n", str(n_ranks), *cmd]
    # psana2Base sets PS_SRV_NODES=1 itself; no role setting of the caller's shell leaks in
    drop = (*partition.LAUNCHER_ENV, "PS_PARALLEL", "PS_EB_NODES", "PS_SRV_NODES", partition.EVERY_RANK_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(foo="psana2", OUTPUT_ROOT=str(out_root), MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(suite), str(REPO)]), OMP_NUM_THREADS="1")
    env.pop("SUITE_CONFIG", None)
    proc = run_to_end(cmd, cwd=suite / "suite_scripts", env=env, timeout=timeout, what=f"{script} (ranks={n_ranks})")
    assert proc.returncode == 0, f"{script} (ranks={n_ranks}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def run_on(suite: Path, script: str, run, config, out: Path, analysis: str, *extra: str,
           n_ranks: int = 0) -> tuple[Path, subprocess.CompletedProcess]:
    """Run a suite script on the h5 ``run`` (run number 1) with ``config``, writing under ``out``.

    Returns the script's output folder (``out/<analysis>``) and the finished process.
    """
    outdir = Path(out) / analysis
    outdir.mkdir(parents=True)
    args = ["-cf", str(config), "-r", "1", "-p", f"/{analysis}/", "-F", str(run), *extra]
    return outdir, run_script(suite, script, args, out_root=Path(out), n_ranks=n_ranks)


#: The suite's epixMSuiteConfig pixels (modules 2 and 3) and the ADU mask of its gain bit.
EPIXM_PIXELS = [[2, 55, 10], [2, 120, 10], [3, 55, 200], [3, 120, 300]]
EPIXM_MASK = (1 << 15) - 1


def mfx_config(path, **extra):
    """An epixM at MFX as the suite's epixMSuiteConfig: event codes checked, flux from MfxDg1BmMon
    channel 15 with sign -1."""
    h = {"detectorType": "epixm", "detectorVersion": 1, "exp": "h5test", "location": "MfxEndstation",
         "analyzedModules": [2, 3], "fluxSource": "MfxDg1BmMon", "fluxChannels": [15], "fluxSign": -1,
         "singlePixels": EPIXM_PIXELS, "regionSlice": "np.s_[0:4, 0:192, 0:384]"}
    h.update(extra)
    return write_config(path, h)
