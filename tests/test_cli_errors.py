"""Bad input to ``calibsuite-h5``: exit 2 and one line on stderr, never a traceback; a closed pipe is quiet."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibsuite_h5source.cli import EXIT_BROKEN_PIPE, main
from calibsuite_h5source.testing import make_synthetic_run


@pytest.fixture
def run_file(tmp_path):
    path = tmp_path / "run.h5"
    make_synthetic_run(path, steps=(3, 2), shape=(1, 4, 6))
    return path


def bad_inputs(tmp_path, run_file):
    (tmp_path / "text.h5").write_text("not hdf5")
    (tmp_path / "folder.h5").mkdir()
    missing = tmp_path / "no" / "such" / "folder"
    return {
        "info missing file": (["info", str(tmp_path / "nope.h5")], "file does not exist"),
        "info folder": (["info", str(tmp_path / "folder.h5")], "is a directory"),
        "info not hdf5": (["info", str(tmp_path / "text.h5")], "not an HDF5 file"),
        "fake exists": (["fake", str(run_file)], "file exists; pass --overwrite to replace it"),
        "fake unknown detector": (["fake", str(tmp_path / "f.h5"), "--detector", "cspad"], "unknown detector 'cspad'"),
        "fake no events": (["fake", str(tmp_path / "f.h5"), "--events", "0"], "at least one event"),
        "fake missing folder": (["fake", str(missing / "f.h5")], "cannot create the file"),
        "demo no steps": (["demo", "--steps", "0"], "at least one event"),
        "plot unknown detector": (["plot", str(run_file), "-o", str(tmp_path / "p.png"), "--det", "cspad"],
                                  "no area detector 'cspad' in this run; area detectors: ['epixM']"),
        "plot missing step": (["plot", str(run_file), "-o", str(tmp_path / "p.png"), "--step", "5"],
                              "step 5 does not exist"),
        "convert exp without run": (["convert", str(tmp_path / "c.h5"), "--exp", "xpptut15"], "--exp needs --run"),
        "convert run with files": (["convert", str(tmp_path / "c.h5"), "--files", "x.xtc2", "--run", "3"],
                                   "--run goes with --exp"),
        "convert max events": (["convert", str(tmp_path / "c.h5"), "--files", "x.xtc2", "--max-events", "0"],
                               "--max-events must be at least 1; found 0"),
    }


CASES = ["info missing file", "info folder", "info not hdf5", "fake exists", "fake unknown detector", "fake no events",
         "fake missing folder", "demo no steps", "plot unknown detector", "plot missing step",
         "convert exp without run", "convert run with files", "convert max events"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(tmp_path, run_file, capsys, case):
    argv, message = bad_inputs(tmp_path, run_file)[case]
    if argv[0] == "plot":
        pytest.importorskip("matplotlib")
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"calibsuite-h5 {argv[0]}: error: ") and message in lines[0], err
    assert "Traceback" not in err


def test_unexpected_errors_are_one_line_unless_asked_for(run_file, mocker, capsys):
    mocker.patch("calibsuite_h5source.tools.info.summarise", side_effect=RuntimeError("boom\nsecond line"))
    assert main(["info", str(run_file)]) == 2
    err = capsys.readouterr().err
    assert err == "calibsuite-h5 info: error: unexpected RuntimeError: boom second line " \
                  "(please report it; -vv shows the traceback)\n"
    with pytest.raises(RuntimeError, match="boom"):
        main(["-vv", "info", str(run_file)])


def test_os_errors_and_interrupts(run_file, mocker, capsys):
    mocker.patch("calibsuite_h5source.tools.info.summarise", side_effect=PermissionError(13, "Permission denied", "x.h5"))
    assert main(["info", str(run_file)]) == 2
    assert capsys.readouterr().err == "calibsuite-h5 info: error: PermissionError: [Errno 13] Permission denied: 'x.h5'\n"
    mocker.patch("calibsuite_h5source.tools.info.summarise", side_effect=KeyboardInterrupt)
    assert main(["info", str(run_file)]) == 130


def test_info_json_into_a_closed_pipe_is_quiet(run_file):
    """``calibsuite-h5 info --json run.h5 ... | head -1``: no BrokenPipeError, exit 141 (128 + SIGPIPE).

    300 files: about 290 kB of JSON, far more than a pipe holds (64 kB), so the write must meet the closed pipe.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "calibsuite_h5source.cli", "info", "--json", *[str(run_file)] * 300],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"["  # what head -1 reads, then it exits
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == ""


# -- convert with the real psana on the shared xtc2 samples ------------------------------------------

XTC2 = Path(os.environ.get("CALIBSUITE_XTC2_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "xtc2"))
try:
    import psana  # noqa: F401

    HAVE_PSANA = True
except Exception:  # ImportError, or libmpi missing
    HAVE_PSANA = False
needs_real_psana = pytest.mark.skipif(not HAVE_PSANA or not (XTC2 / "test_epix_calib.xtc2").exists(),
                                      reason=f"needs the real psana and the xtc2 samples in {XTC2}")


@needs_real_psana
def test_real_psana_convert_errors_exit_2(tmp_path, mocker, capsys):
    import psana.psexp.ds_base as ds_base

    out = tmp_path / "c.h5"
    assert main(["convert", str(out), "--files", str(XTC2 / "test_epix_calib.xtc2"), "--timing"]) == 2
    assert capsys.readouterr().err == "calibsuite-h5 convert: error: --timing: this psana run has no " \
                                      "detector 'timing'; it has ['epixquad']\n"
    mocker.patch.object(ds_base.requests, "get", side_effect=ds_base.requests.ConnectionError("logbook unreachable"))
    assert main(["convert", str(out), "--exp", "xpptut15", "--run", "14"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("calibsuite-h5 convert: error: psana could not open the run (psana exp=xpptut15 run=14): ")
    assert "logbook unreachable" in err and err.count("\n") == 1
    assert not out.exists()
