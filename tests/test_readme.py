"""README.rst as a new user meets it: its examples run after the base install (``pip install .``).

A fresh virtual environment (not ``--system-site-packages``) gets ``pip install
<this repository>`` and nothing else: h5py and numpy come from the package
index as for any user. Then, in one folder, in README order:

* every ``.. code-block:: python`` block runs, or, when the line above it
  names an extra, runs or fails with the documented
  ``MissingDependencyError`` (the extra is not installed here); a block the
  line above calls a fragment (it needs the calibration suite around it) must
  compile;
* every shell line starting with ``calibsuite-h5`` runs (a line of a block
  whose line above names an extra may instead end with exit 2 saying what to
  ``pip install``).

The files the examples name (``run.h5``, ``scan.h5``, the psana1 run) are
made first with ``calibsuite-h5 fake``, as the README tells a user to.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.rst").read_text()
EXTRA = re.compile(r"\bextras?\b")
pytestmark = pytest.mark.slow


def blocks(text: str):
    """``[(kind, line above, code)]``: kind 'python' (code-block) or 'shell' (a literal block after ``::``)."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        kind = "python" if line.strip() == ".. code-block:: python" else \
            "shell" if line.rstrip().endswith("::") and not line.lstrip().startswith("..") else None
        if kind is None:
            i += 1
            continue
        # the prose that introduces the block: the line above the directive, or the line ending in '::'
        above = next((x for x in reversed(lines[:i]) if x.strip()), "") if kind == "python" else line
        i += 1
        body = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            body.append(lines[i])
            i += 1
        indent = min((len(x) - len(x.lstrip()) for x in body if x.strip()), default=0)
        code = "\n".join(x[indent:] for x in body).strip("\n")
        if code:
            out.append((kind, above, code))
    return out


def test_the_readme_has_the_blocks_this_test_runs():
    found = blocks(README)
    assert sum(k == "python" for k, _, _ in found) >= 7
    shell = "\n".join(c for k, _, c in found if k == "shell")
    assert "pip install . && calibsuite-h5 demo" in shell
    assert 'python3 -m pytest -q -m "not slow"' in shell  # the quick tests


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    env_dir = root / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(env_dir)], capture_output=True, text=True)
    if made.returncode and "ensurepip" in made.stderr + made.stdout:
        pytest.skip("python -m venv has no ensurepip here (Debian: apt-get install python3-venv)")
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    source = root / "source"  # a copy: building in the checkout would leave build/ and *.egg-info there
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                ".pytest_cache", ".hypothesis", ".ruff_cache"))
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], capture_output=True, text=True,
                         env=env, cwd=root, timeout=900)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return python, env, root


def run(python, env, cwd, args, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, env={**env, "PATH": f"{python.parent}:{env['PATH']}"},
                          cwd=cwd, timeout=timeout)


def test_readme_examples_run_after_the_base_install(venv):
    python, env, root = venv
    work = root / "work"
    work.mkdir()
    installed = run(python, env, work, [str(python), "-m", "pip", "list", "--format=freeze"]).stdout
    assert "calibsuite" in installed and not re.search(r"^(tqdm|matplotlib|xarray|dask|hdf5plugin|psana)=", installed,
                                                       re.M), installed
    (work / "psana1").mkdir()
    for args in (["fake", "run.h5", "--run-type", "delayScan", "--steps", "3", "--events", "12"],
                 ["fake", "scan.h5", "--run-type", "delayScan", "--steps", "3", "--events", "12"],
                 ["fake", "psana1/xpptut15-r0054.h5", "--det", "epix10k", "--run-type", "delayScan", "--steps", "2",
                  "--events", "4"]):
        made = run(python, env, work, ["calibsuite-h5", *args])
        assert made.returncode == 0, made.stderr
    env = {**env, "CALIBSUITE_H5_DIR": str(work / "psana1")}
    ran = []
    for n, (kind, above, code) in enumerate(blocks(README)):
        needs_extra = bool(EXTRA.search(above))
        if kind == "python":
            if "fragment" in above:
                compile(code, f"README block {n}", "exec")
                ran.append(("compiled", n))
                continue
            script = work / f"block{n}.py"
            script.write_text(code + "\n")
            out = run(python, env, work, [str(python), str(script)])
            if needs_extra and out.returncode:
                assert "MissingDependencyError" in out.stderr and "pip install" in out.stderr, \
                    (above, code, out.stderr)
                ran.append(("needs an extra", n))
            else:
                assert out.returncode == 0, (above, code, out.stderr)
                ran.append(("ran", n))
            continue
        for line in code.splitlines():
            command = line.split("&&")[-1].split("  #")[0].strip()
            if not command.startswith("calibsuite-h5 "):
                continue
            out = run(python, env, work, ["bash", "-c", command])
            if needs_extra and out.returncode == 2 and "pip install" in out.stderr:
                ran.append(("needs an extra", command))
                continue
            assert out.returncode == 0, (command, out.stdout, out.stderr)
            ran.append(("ran", command))
    assert ("ran", "calibsuite-h5 demo") in ran
    assert sum(r[0] == "ran" for r in ran) >= 10, ran
    # the base install has no xarray, dask or matplotlib: those blocks must have said so, not passed by luck
    assert sum(r[0] == "needs an extra" for r in ran) == 2, ran
