"""Every command that opens a user's file survives a library hang on it, and leaves no process behind.

``fixtures/hostile/upstream_global_heap_loop.h5`` makes libhdf5 2.0.0 loop
forever at 100 % CPU, ignoring SIGINT (docs/upstream-faults.rst). The
commands read it in a child process: exit 2 naming the file after
``--timeout``; Ctrl-C ends them with 130; SIGTERM/SIGHUP/SIGKILL end the
child too, and the caller's output pipe is released.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calibsuite_h5source.cli import main
from calibsuite_h5source.testing import make_synthetic_run
from calibsuite_h5source.tools import isolate

HANG = Path(__file__).resolve().parents[1] / "fixtures" / "hostile" / "upstream_global_heap_loop.h5"
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not sys.platform.startswith("linux"),
                                reason="needs POSIX signals and /proc")


def _interruptible():
    """Ctrl-C as at a terminal: a test run started in the background (``cmd &``, nohup) ignores SIGINT,
    and a Python started with SIGINT ignored never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "calibsuite_h5source.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_interruptible, **kwargs)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc: ``ps`` may not be installed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for_child(proc, seconds=30.0) -> int:
    """The pid of the command's reading process, once it is spinning on the file."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        kids = set(children(proc.pid))
        time.sleep(0.5)  # let it reach the hang: still there half a second later
        steady = [k for k in kids & set(children(proc.pid)) if alive(k)]
        if steady:
            return steady[0]
    raise AssertionError("the command started no reading process")


def test_info_hang_exits_2_naming_the_file(capsys):
    t = time.monotonic()
    assert main(["info", "--timeout", "1", str(HANG)]) == 2
    seconds = time.monotonic() - t
    err = capsys.readouterr().err
    assert err.startswith(f"calibsuite-h5 info: error: {HANG}: no progress for 1 s while opening /: "
                          "the HDF5 library hangs on this file"), err
    assert err.count("\n") == 1 and seconds < 10


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["plot", "-o", "{tmp}/p.png"], ["watch", "--max-retries", "0.5"],
                                  ["validate"]], ids=["plot", "watch", "validate"])
def test_every_reading_command_reports_the_hang(tmp_path, capsys, argv):
    if argv[0] == "plot":
        pytest.importorskip("matplotlib")
    argv = [a.format(tmp=tmp_path) for a in argv]
    t = time.monotonic()
    assert main([argv[0], str(HANG), *argv[1:], "--timeout", "1"]) == 2
    assert time.monotonic() - t < 12
    out, err = capsys.readouterr()
    said = out + err  # validate prints problems on stdout
    limit = "1.5" if argv[0] == "watch" else "1"  # watch: --timeout beyond --max-retries
    assert str(HANG) in said and f"no progress for {limit} s" in said, said


def test_a_job_that_raises_gives_its_exception_with_its_attributes(tmp_path, capsys):
    out = isolate.run_isolated(make_synthetic_run, (tmp_path / "x.h5",), 30)  # progress lands in steps=
    assert out.status == "raised" and isinstance(out.result, TypeError)
    assert main(["info", "--timeout", "5", str(tmp_path / "missing.h5")]) == 2
    assert "file does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM),
                                       (signal.SIGHUP, 128 + signal.SIGHUP), (signal.SIGKILL, -signal.SIGKILL)],
                         ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_signal_ends_the_command_and_its_reader(sig, code):
    """Whatever ends the command ends its reading process and releases the caller's output pipe."""
    proc = cli("info", "--timeout", "300", HANG)
    try:
        child = wait_for_child(proc)
        assert alive(child)
        t = time.monotonic()
        proc.send_signal(sig)
        proc.stdout.read()  # EOF only when every holder of the pipe is gone
        proc.stderr.read()
        assert proc.wait(timeout=10) == code
        assert time.monotonic() - t < 5
        end = time.monotonic() + 5
        while alive(child) and time.monotonic() < end:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigterm_of_validate_ends_its_checking_process():
    proc = cli("validate", HANG, "--timeout", "300")
    try:
        child = wait_for_child(proc)
        proc.send_signal(signal.SIGTERM)
        proc.stdout.read()
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert b"terminated (SIGTERM)" in proc.stderr.read()
        time.sleep(0.5)
        assert not alive(child)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_ctrl_c_of_validate_prints_what_was_found_and_exits_130(tmp_path):
    good = tmp_path / "good.h5"
    make_synthetic_run(good, steps=(2,), shape=(1, 4, 4))
    proc = cli("validate", good, HANG, "--timeout", "300")
    try:
        time.sleep(4)  # the first file is checked, the second one's reader spins
        child = wait_for_child(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert b"1 of 2 files checked: 0 errors, 0 warnings (interrupted)" in err
    assert not alive(child)


def test_info_goes_on_after_a_file_it_hangs_on(tmp_path, capsys):
    good = tmp_path / "good.h5"
    make_synthetic_run(good, steps=(2, 1), shape=(1, 4, 4))
    (tmp_path / "text.h5").write_text("not hdf5")
    assert main(["info", "--timeout", "1", str(good), str(HANG), str(tmp_path / "text.h5"), str(good)]) == 2
    out, err = capsys.readouterr()
    assert out.count("2 steps, 3 events  (per step: 2, 1)") == 2
    lines = err.splitlines()
    assert len(lines) == 2 and str(HANG) in lines[0] and "no progress for 1 s" in lines[0]
    assert "text.h5" in lines[1] and "not an HDF5 file" in lines[1]
