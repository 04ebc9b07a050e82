"""Every sub-command run on real files: output and exit codes."""

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from calibsuite_h5source.cli import main
from calibsuite_h5source.testing import make_synthetic_run
from calibsuite_h5source.testing.layouts import declare_run, write_layout
from calibsuite_h5source.tools.info import summarise


@pytest.fixture
def scan_run(tmp_path):
    path = tmp_path / "scan.h5"
    make_synthetic_run(path, steps=(4, 2, 3), shape=(2, 16, 24), run_type="linearity", compression="gzip")
    return path


def test_info_summary_and_json(scan_run, capsys):
    assert main(["info", str(scan_run)]) == 0
    out = capsys.readouterr().out
    assert "scriptType linearity" in out and "canonical layout" in out
    assert "3 steps, 9 events  (per step: 4, 2, 3)" in out
    assert "epixM            (2, 16, 24) uint16   gzip" in out
    assert "wave8            peakAmplitude (8,) float32" in out and "flux             per step  [1, 2, 3]" in out
    assert main(["info", "--json", str(scan_run)]) == 0
    (s,) = json.loads(capsys.readouterr().out)
    assert s["events_per_step"] == [4, 2, 3] and s["detectors"]["epixM"]["compression"] == "gzip"
    assert 0 < s["detectors"]["epixM"]["stored_MB"] < s["detectors"]["epixM"]["raw_MB"]
    assert s["timestamps"]["duration_s"] == 0.008 and s["timestamps"]["stored"]


def test_info_reads_no_frame_data(scan_run, mocker):
    from calibsuite_h5source.read.index_types import EventArray

    spy = mocker.spy(EventArray, "read")
    summarise(scan_run)
    assert spy.call_count == 0


def test_info_unreadable_file_exits_2(tmp_path, capsys):
    (tmp_path / "bad.h5").write_text("x")
    assert main(["info", str(tmp_path / "bad.h5")]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err


def test_validate_exit_codes(tmp_path, scan_run, capsys):
    assert main(["validate", str(scan_run)]) == 0
    warn = write_layout(tmp_path / "warn.h5", declare_run(steps=(2,), script_type="wobbleScan"))
    assert main(["validate", warn]) == 0
    assert main(["validate", "--strict", warn]) == 1
    bad = write_layout(tmp_path / "bad.h5", declare_run(steps=(2, 2)))
    with h5py.File(bad, "a") as f:
        f["timestamp/1"][0] = 1
    capsys.readouterr()
    assert main(["validate", "--json", str(scan_run), bad]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert [(p["code"], p["h5path"]) for p in problems] == [("timestamp-order", "/timestamp/1")]
    (tmp_path / "x.h5").write_text("x")
    assert main(["validate", str(tmp_path / "x.h5"), str(scan_run)]) == 2
    assert main(["validate", "--list-checks"]) == 0 and "timestamps" in capsys.readouterr().out


def test_validate_ctrl_c_prints_what_was_found(tmp_path, mocker, capsys):
    from calibsuite_h5source.tools import validate as v

    bad = write_layout(tmp_path / "bad.h5", declare_run(steps=(2,), script_type="wobbleScan"))
    real = v.validate
    mocker.patch.object(v, "validate", side_effect=[real(bad), KeyboardInterrupt()])
    assert main(["validate", bad, bad]) == 130
    captured = capsys.readouterr()
    assert "script-type" in captured.out and "1 of 2 files checked" in captured.err and "interrupted" in captured.err


def test_fake_writes_a_valid_run(tmp_path, capsys):
    out = tmp_path / "f.h5"
    assert main(["fake", str(out), "--detector", "epixUHR", "--run-type", "fe55", "--steps", "2", "--events", "3",
                 "--compression", "gzip", "--seed", "7"]) == 0
    assert "fe55 run, epixUHR (4, 168, 192), 2 steps x 3 events" in capsys.readouterr().out
    assert main(["validate", str(out)]) == 0
    assert main(["fake", str(out)]) == 2  # exists, no --overwrite
    assert main(["fake", str(tmp_path / "g.h5"), "--detector", "cspad"]) == 2


@pytest.mark.slow
def test_plot_draws_the_right_things(scan_run, tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["plot", str(scan_run), "-o", str(a), "--step", "2"]) == 0
    assert main(["plot", str(scan_run), "-o", str(b), "--step", "2", "--event", "1"]) == 0
    img_a, img_b = mpimg.imread(a), mpimg.imread(b)
    assert img_a.shape[:2] == (680, 880)
    h, w = img_a.shape[:2]
    frame_a, frame_b = img_a[: h // 2, : w // 2], img_b[: h // 2, : w // 2]
    assert frame_a.std() > 0.05  # an image, not a blank panel
    assert not np.array_equal(frame_a, frame_b)  # a different event shows a different frame
    def has_colour(region, rgb):
        return np.any(np.all(np.abs(region[..., :3] - np.array(rgb) / 255) < 0.02, axis=-1))
    assert has_colour(img_a[h // 2:, : w // 2], (31, 119, 180))  # the events-per-step bars (tab:blue)
    assert has_colour(img_a[h // 2:, w // 2:], (255, 127, 14))  # the scan-value line (tab:orange)
    assert not has_colour(img_a[h // 2:, w // 2:], (31, 119, 180))
    assert main(["plot", str(scan_run), "-o", str(a), "--step", "7"]) == 2


def test_console_script_help_and_subprocess(scan_run):
    out = subprocess.run([sys.executable, "-m", "calibsuite_h5source.cli", "info", str(scan_run)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "3 steps, 9 events" in out.stdout
    out = subprocess.run([sys.executable, "-m", "calibsuite_h5source.cli", "--help"], capture_output=True, text=True)
    for command in ("demo", "info", "validate", "fake", "plot"):
        assert command in out.stdout
    assert "Exit codes" in out.stdout


# -- units, vocabulary, progress -------------------------------------------------------------------

def test_plot_labels_kev_for_calib_with_gain_and_adu_otherwise(tmp_path):
    pytest.importorskip("matplotlib")
    from calibsuite_h5source.tools.plot import plot_run

    with_gain, without = tmp_path / "gain.h5", tmp_path / "nogain.h5"
    make_synthetic_run(with_gain, steps=(3, 2), shape=(1, 8, 8))  # pedestals and pixel_gain stored
    assert main(["fake", str(without), "--steps", "2", "--shape", "1,8,8", "--no-constants"]) == 0
    with h5py.File(with_gain) as f:
        assert {"pedestals", "pixel_gain"} <= set(f["epixM/calib"])
    drawn = plot_run(with_gain, tmp_path / "a.png", step=1, event=1)
    assert drawn["colorbar_labels"] == ["keV", "keV"] and drawn["unit"] == "keV"
    assert drawn["title"].startswith("run ") and "step 1, event 1, epixM (calib, keV)" in drawn["title"]
    assert plot_run(with_gain, tmp_path / "b.png", raw=True)["colorbar_labels"] == ["ADU", "ADU"]
    assert plot_run(without, tmp_path / "c.png")["colorbar_labels"] == ["ADU", "ADU"]


def test_plot_command_says_the_unit_and_refuses_non_area_detectors(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "gain.h5"
    make_synthetic_run(path, steps=(2,), shape=(1, 8, 8))
    assert main(["plot", str(path), "-o", str(tmp_path / "p.png"), "--event", "1"]) == 0
    assert re.search(r"wrote .*p.png: run \d+, step 0, event 1, epixM \(calib, keV\)$", capsys.readouterr().out)
    assert main(["plot", str(path), "-o", str(tmp_path / "p.png"), "--det", "step_value"]) == 2
    assert "no area detector 'step_value' in this run; area detectors: ['epixM']" in capsys.readouterr().err


def test_info_hides_writer_internals_unless_verbose(scan_run, tmp_path, capsys):
    assert main(["info", str(scan_run)]) == 0
    out = capsys.readouterr().out
    for internal in ("writerLock", "writerPid", "writerHost", "openStepEvents", "location ?"):
        assert internal not in out
    assert main(["info", "--verbose", str(scan_run)]) == 0
    out = capsys.readouterr().out
    assert "writerPid:" in out and "openStepEvents: -1" in out
    assert main(["info", "--json", str(scan_run)]) == 0
    assert "writerPid" not in json.loads(capsys.readouterr().out)[0]["header"]
    assert main(["info", str(Path(__file__).resolve().parents[1] / "fixtures" / "legacy_suite.h5")]) == 0
    assert "(0.0 MB, legacy layout)" in capsys.readouterr().out  # no 'format ?' for a file without a version
    one = tmp_path / "one.h5"
    make_synthetic_run(one, steps=(1,), shape=(1, 4, 4))
    assert main(["info", str(one)]) == 0
    assert "  1 step, 1 event  (per step: 1)" in capsys.readouterr().out


def test_problem_codes_are_the_names_list_checks_prints(tmp_path, capsys):
    from calibsuite_h5source.tools import validate as v

    assert main(["validate", "--list-checks"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    source = Path(v.__file__).read_text()
    emitted = set(re.findall(r'problem\(\s*"([a-z-]+)"', source)) | set(re.findall(r'Problem\(\s*"([a-z-]+)"', source))
    emitted |= {v.UNREADABLE}
    assert emitted and emitted <= listed, emitted - listed
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    found = {p.code for f in sorted(fixtures.glob("*.h5")) for p in v.validate(f)}
    assert {"timestamp-order", "same-events"} & found and found <= listed, found - listed


def test_validate_summary_has_correct_plurals(tmp_path, capsys):
    warn = write_layout(tmp_path / "warn.h5", declare_run(steps=(2,), script_type="wobbleScan"))
    assert main(["validate", warn]) == 0
    assert capsys.readouterr().err == "1 of 1 file checked: 0 errors, 1 warning\n"


def test_long_work_prints_progress_lines_without_a_terminal(tmp_path, capsys, monkeypatch):
    from calibsuite_h5source.cli import progress

    monkeypatch.setattr(progress, "FIRST", 0.0)
    monkeypatch.setattr(progress, "EVERY", 0.0)
    assert main(["fake", str(tmp_path / "f.h5"), "--steps", "2", "--events", "3", "--shape", "1,4,4"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith(f"fake {tmp_path / 'f.h5'}: 6 of 6 events (100%), ")
    assert len(lines) == 6
    assert main(["validate", str(tmp_path / "f.h5"), str(tmp_path / "f.h5")]) == 0
    err = capsys.readouterr().err
    assert "validate: 1 of 2 files (50%)" in err and "validate: 2 of 2 files (100%)" in err
    assert f"validate: {tmp_path / 'f.h5'}: decoding /epixM/1, " in err  # what a long check is doing


@pytest.mark.parametrize("columns", [100, 0])
def test_progress_is_a_bar_on_a_terminal_and_lines_on_one_of_no_width(monkeypatch, columns):
    import fcntl
    import os
    import pty
    import struct
    import termios

    from calibsuite_h5source.cli import progress

    pytest.importorskip("tqdm")
    monkeypatch.setattr(progress, "FIRST", 0.0)
    monkeypatch.setattr(progress, "EVERY", 0.0)
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    with open(child, "w") as terminal, progress.Progress("fake run.h5", total=10, stream=terminal) as bar:
        for _ in range(10):
            bar.update()
        terminal.flush()
    import select

    chunks = []  # a pty hands its bytes over in pieces: read until nothing more comes
    while select.select([parent], [], [], 0.5)[0]:
        try:
            data = os.read(parent, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    shown = b"".join(chunks).decode()
    os.close(parent)
    if columns:
        assert "fake run.h5: 100%|" in shown and "10/10" in shown and "event/s" in shown, shown
    else:
        assert "fake run.h5: 10 of 10 events (100%), 0 s" in shown, shown
