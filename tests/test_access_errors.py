"""A run inside a directory this user may not search: an H5SourceError naming the file, from the
factory and from every CLI command; never a bare PermissionError.

Permissions are tested for real, not simulated: as an ordinary user the directory is made
unsearchable (mode 000); as root (which ignores directory permissions) the check runs in a child
process stripped of the two capabilities that let root ignore them (``setpriv --bounding-set
-dac_override,-dac_read_search``), with the directory owned by ``nobody``, mode 700.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from calibsuite_h5source import RunWriter

ROOT = os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or (ROOT and SETPRIV is None),
                                reason="needs Linux (and setpriv when run as root)")
XTC2 = Path(os.environ.get("CALIBSUITE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "xtc2"


@pytest.fixture
def locked(tmp_path):
    """``(dir, run file inside it)``: the directory cannot be searched by the user running the checks."""
    folder = tmp_path / "locked"
    folder.mkdir()
    run = folder / "run.h5"
    with RunWriter(run, "dark") as w:
        w.add_step({"epixM": np.ones((2, 2, 3, 4), np.uint16)})
    if ROOT:
        os.chown(folder, 65534, -1)  # nobody
        folder.chmod(0o700)
    else:
        folder.chmod(0)
    yield folder, run
    folder.chmod(0o755)


def _as_user(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run python ``code`` as a user that directory permissions apply to."""
    cmd = [sys.executable, "-c", code, *args]
    if ROOT:
        cmd = [SETPRIV, "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_the_check_really_cannot_search_the_directory(locked):
    folder, run = locked
    out = _as_user("import os, sys\ntry:\n    os.stat(sys.argv[1])\nexcept PermissionError:\n    print('denied')",
                   str(run))
    assert out.stdout.strip() == "denied", out.stderr


def test_datasource_names_the_file_and_says_it_cannot_be_read(locked):
    folder, run = locked
    code = textwrap.dedent("""
        import sys
        from calibsuite_h5source import DataSource, H5SourceError
        for kwargs in ({}, {'live': True}):
            try:
                DataSource(files=sys.argv[1], **kwargs)
            except H5SourceError as exc:
                print(type(exc).__name__, '|', exc.file, '|', exc)
    """)
    out = _as_user(code, str(run))
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stderr
    for line in lines:
        kind, file, message = line.split(" | ")
        assert kind == "NotHDF5Error" and file == str(run) and "cannot be read: Permission denied" in message


def _cli_cases(folder, run, tmp_path):
    cases = {
        "info": ["info", str(run)],
        "validate": ["validate", str(run)],
        "plot": ["plot", str(run), "-o", str(tmp_path / "p.png")],
        "watch": ["watch", str(run)],
        "fake into it": ["fake", str(folder / "new.h5")],
        "demo into it": ["demo", "--out", str(folder / "demo.h5"), "--steps", "1", "--events", "2"],
    }
    xtc = sorted(XTC2.glob("*.xtc2"))
    if xtc:
        copy = folder / xtc[0].name
        cases["convert from it"] = ["convert", "--files", str(copy), str(tmp_path / "c.h5")]
    return cases, (xtc[0] if xtc else None)


def test_every_cli_command_names_the_file_in_one_line(locked, tmp_path):
    folder, run = locked
    cases, xtc = _cli_cases(folder, run, tmp_path)
    if xtc is not None:
        folder.chmod(0o755)
        shutil.copy(xtc, folder / xtc.name)
        folder.chmod(0o700 if ROOT else 0)
    code = "import sys\nfrom calibsuite_h5source.cli import main\nsys.exit(main(sys.argv[1:]))"
    for name, argv in cases.items():
        out = _as_user(code, *argv)
        err = out.stderr.strip().splitlines()
        where = f"{name}: exit {out.returncode}, stdout {out.stdout[-300:]!r}, stderr {out.stderr[-500:]!r}"
        assert "Traceback" not in out.stderr and out.returncode in (1, 2), where
        text = out.stdout + out.stderr
        assert str(folder) in text and ("ermission denied" in text or "cannot be read" in text), where
        assert len(err) <= 2, where
