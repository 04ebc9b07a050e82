"""Each check, by corrupting exactly one thing of a valid file."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from calibsuite_h5source.testing.layouts import declare_run, write_layout
from calibsuite_h5source.tools.validate import ERROR, WARNING, list_checks, validate


@pytest.fixture
def valid(tmp_path):
    return write_layout(tmp_path / "run.h5", declare_run(steps=(3, 2, 4)))


@pytest.mark.parametrize("layout", ["canonical", "padded", "stepgroups", "legacy"])
def test_valid_files_have_no_problems(tmp_path, layout):
    decl = declare_run(steps=(3, 3) if layout == "legacy" else (3, 2, 4), side=layout != "legacy",
                       timestamps=layout != "legacy", per_event_scan=layout in ("padded", "stepgroups"))
    assert validate(write_layout(tmp_path / "r.h5", decl, layout)) == []


def corrupt(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return validate(path)


def only(problems):
    assert len(problems) == 1, problems
    return problems[0]


def replace(f, name, data):
    del f[name]
    f[name] = data


CASES = [
    ("missing scriptType", lambda f: f["ancillaryData"].attrs.__delitem__("scriptType"), "header", ERROR, "/ancillaryData"),
    ("unknown scriptType", lambda f: f["ancillaryData"].attrs.__setitem__("scriptType", "wobbleScan"), "script-type", WARNING, "/ancillaryData"),
    ("run in 1970", lambda f: f["ancillaryData"].attrs.__setitem__("run", 5), "run-id", ERROR, "/ancillaryData"),
    ("step renumbered", lambda f: f.move("wave8/peakAmplitude/2", "wave8/peakAmplitude/5"), "step-numbering", ERROR, "/wave8/peakAmplitude"),
    ("one event less", lambda f: replace(f, "wave8/peakAmplitude/1", np.zeros((1, 4), np.float32)), "same-events", ERROR, "/wave8/peakAmplitude"),
    ("not [module,row,col]", lambda f: replace(f, "epixM/1", np.zeros((2, 8, 16), np.uint16)), "frame-shape", ERROR, "/epixM/1"),
    ("dtype change", lambda f: replace(f, "epixM/2", np.zeros((4, 2, 8, 16), np.int32)), "frame-consistency", ERROR, "/epixM/2"),
    ("timestamp order", lambda f: f["timestamp/2"].__setitem__(3, 1), "timestamp-order", ERROR, "/timestamp/2"),
    ("timestamp length", lambda f: replace(f, "timestamp/1", np.arange(1, 6, dtype=np.uint64)), "timestamp-length", ERROR, "/timestamp/1"),
    ("scan length", lambda f: replace(f, "ancillaryData/delay", np.arange(4.0)), "scan-length", ERROR, "/ancillaryData/delay"),
    ("incomplete", lambda f: f["ancillaryData"].attrs.update({"complete": False, "stepsComplete": 3}), "incomplete", WARNING, "/ancillaryData"),
]


@pytest.mark.parametrize("what, fn, code, severity, h5path", CASES, ids=[c[0] for c in CASES])
def test_each_check_catches_one_corruption(valid, what, fn, code, severity, h5path):
    p = only(corrupt(valid, fn))
    assert (p.code, p.severity, p.h5path) == (code, severity, h5path)
    assert p.file == valid and p.message


def test_per_event_scan_value_changing_inside_a_step(tmp_path):
    path = write_layout(tmp_path / "r.h5", declare_run(steps=(3, 2), per_event_scan=True))
    p = only(corrupt(path, lambda f: f["ancillaryData/delay/0"].__setitem__(2, 99.0)))
    assert (p.code, p.severity, p.h5path, p.found) == ("scan-constant", WARNING, "/ancillaryData/delay/0", [10.0, 99.0])


def test_padded_nevents(tmp_path):
    path = write_layout(tmp_path / "p.h5", declare_run(steps=(3, 2)), "padded")
    p = only(corrupt(path, lambda f: f["nEvents"].__setitem__(1, 9)))
    assert (p.code, p.h5path) == ("layout", "/epixM")
    assert p.message == "nEvents [3, 9] exceeds the padded event axis (3)"


def test_external_link_out_of_the_folder(tmp_path, valid):
    other = tmp_path.parent / "elsewhere.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros(3)
    p = only(corrupt(valid, lambda f: f["wave8"].__setitem__("extra", h5py.ExternalLink(str(other), "/data"))))
    assert (p.code, p.h5path) == ("link", "/wave8/extra")
    assert str(other) in p.message and "only inside the run file's folder" in p.message


def test_many_problems_of_one_kind_are_folded(tmp_path):
    valid = write_layout(tmp_path / "r.h5", declare_run(steps=(3,) * 6))

    def scramble(f):
        for k in range(6):
            f[f"timestamp/{k}"][...] = f[f"timestamp/{k}"][()][::-1]
    p = only(corrupt(valid, scramble))
    assert p.code == "timestamp-order" and p.count >= 6 and "more like it" in p.message


def test_unreadable_files(tmp_path):
    (tmp_path / "x.h5").write_text("not hdf5")
    assert [(p.code, p.severity) for p in validate(tmp_path / "x.h5")] == [("unreadable", ERROR)]
    assert "does not exist" in validate(tmp_path / "nope.h5")[0].message


def test_every_check_is_listed():
    codes = [c for c, _ in list_checks()]
    assert codes == ["attributes", "links", "header-values", "header", "run-id", "steps", "frame-shape", "geometry",
                     "timestamps", "scan", "complete", "data"]


def test_no_run_id_with_stored_timestamps_does_not_say_they_will_be_synthesised(valid):
    p = only(corrupt(valid, lambda f: f["ancillaryData"].attrs.__delitem__("run")))
    assert (p.code, p.severity) == ("run-id", WARNING)
    assert "synthesised" not in p.message and "first event" in p.message


def test_no_run_id_without_timestamps_says_they_will_be_synthesised(tmp_path):
    path = write_layout(tmp_path / "r.h5", declare_run(steps=(2,), timestamps=False, run=None))
    assert "timestamps will be synthesised" in only(validate(path)).message


def test_header_values_of_the_wrong_type(valid):
    p = only(corrupt(valid, lambda f: f["ancillaryData"].attrs.__setitem__("run", "yesterday")))
    assert (p.code, p.severity, p.h5path) == ("header-value", ERROR, "/ancillaryData")
    assert p.message == "attribute 'run' must be a non-negative integer; found str 'yesterday'"


def test_a_damaged_chunk_is_reported(tmp_path):
    decl = declare_run(steps=(2, 2))
    path = write_layout(tmp_path / "r.h5", decl)
    with h5py.File(path, "a") as f:
        del f["epixM/1"]
        f.create_dataset("epixM/1", data=decl["detectors"]["epixM"][1], chunks=(1, 2, 8, 16), compression="gzip")
    with h5py.File(path, "r") as f:
        info = f["epixM/1"].id.get_chunk_info(1)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\0\1" * (info.size // 2))
    p = only(validate(path))
    assert (p.code, p.severity, p.h5path) == ("damaged-data", ERROR, "/epixM/1")
    assert "filter returned failure" in p.message


def test_missing_virtual_dataset_source_is_an_error(tmp_path, valid):
    def make_virtual(f):
        layout = h5py.VirtualLayout(shape=(3, 4), dtype="f4")
        layout[...] = h5py.VirtualSource("gone.h5", "/x", shape=(3, 4))
        del f["wave8/peakAmplitude/0"]
        f["wave8/peakAmplitude"].create_virtual_dataset("0", layout)
    p = only(corrupt(valid, make_virtual))
    assert (p.code, p.severity, p.h5path) == ("link", ERROR, "/wave8/peakAmplitude/0")
    assert "names 'gone.h5', which does not exist" in p.message


def test_a_failing_check_is_reported_not_raised(valid, mocker):
    mocker.patch("calibsuite_h5source.tools.validate.filter_names", side_effect=RuntimeError("boom"))
    problems = validate(valid, isolate=False)
    assert [(p.code, p.message) for p in problems] == [("data", "could not be checked: RuntimeError: boom")]


def test_in_process_and_isolated_agree(tmp_path, valid):
    corrupt(valid, lambda f: f["timestamp/2"].__setitem__(3, 1))
    assert validate(valid, isolate=False) == validate(valid)


KILLED_WRITER = """
import os, sys
import numpy as np
from calibsuite_h5source import RunWriter
w = RunWriter(sys.argv[1], "dark")
for k in range(2):
    with w.step() as s:
        for i in range(3):
            s.event(epixM=np.full((1, 2, 2), k, np.uint16))
os._exit(0)  # killed before close: the header still says incomplete
"""


def killed_writer_run(path):
    """A run whose writer process ended after 2 finished steps without closing it."""
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], check=True, timeout=60)
    return str(path)


def cli_validate(path):
    proc = subprocess.run([sys.executable, "-m", "calibsuite_h5source.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


SAID_ONCE = [  # (case, how the file is made, the words of the condition, code)
    ("killed writer", lambda tmp: killed_writer_run(tmp / "r.h5"), "the run is incomplete", "incomplete"),
    ("unknown scriptType", lambda tmp: corrupted(tmp, lambda f: f["ancillaryData"].attrs.__setitem__(
        "scriptType", "wobbleScan")), "wobbleScan", "script-type"),
    ("declared scan variable missing", lambda tmp: corrupted(tmp, lambda f: f["ancillaryData"].attrs.__setitem__(
        "ancillaryDataType", ["delay", "voltage"])), "voltage", "scan-missing"),
]


def corrupted(tmp, fn):
    path = write_layout(tmp / "r.h5", declare_run(steps=(3, 2)))
    with h5py.File(path, "a") as f:
        fn(f)
    return path


@pytest.mark.parametrize("case, make, words, code", SAID_ONCE, ids=[c[0] for c in SAID_ONCE])
def test_the_command_says_a_warning_once(tmp_path, case, make, words, code):
    """Each warning is one problem line: the reader validate opens last does not log it again."""
    path = make(tmp_path)
    assert [(p.code, p.severity) for p in validate(path)] == [(code, WARNING)]
    rc, said = cli_validate(path)
    assert rc == 0, said
    assert said.count(words) == 1, said
    assert f"{path}: /ancillaryData: warning {code}: " in said


def _indexed(path):
    """A run by RunWriter: the writer's index, so the reader opens each step when first reached."""
    from calibsuite_h5source import RunWriter

    with RunWriter(path, "dark") as w:
        for n in (3, 2):
            w.add_step({"epixM": np.zeros((n, 1, 2, 2), np.uint16), "wave8": {"peakAmplitude": np.zeros(n)}})
    return str(path)


@pytest.mark.parametrize("edit, rule, h5path", [
    (lambda f: replace(f, "epixM/present/0", np.full(3, 0.5)), "present mask must be bool", "/epixM/present/0"),
    (lambda f: f.__setitem__("wave8/present/1", np.ones(1, bool)), "present mask must have nEvents=2 entries",
     "/wave8/present/1"),
    (lambda f: replace(f, "wave8/peakAmplitude/1", np.zeros(2, "S3")), "per-event shape/dtype must be the same",
     "/wave8/peakAmplitude/1"),
], ids=["float-mask", "short-side-mask", "side-dtype"])
def test_rules_the_reader_applies_when_a_step_is_reached_are_validated(tmp_path, edit, rule, h5path):
    """validate once passed files whose later steps the reader refuses (it opened only the first step)."""
    path = _indexed(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        f.require_group("wave8/present")
        edit(f)
    problem = next(p for p in validate(path) if p.severity == ERROR)
    assert rule in problem.message and problem.h5path == h5path, problem
