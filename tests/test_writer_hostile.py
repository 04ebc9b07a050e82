"""The writer misused: every bad call is refused at the call with a WriterError, and changes nothing.

Each test writes a run twice, once with the bad calls interleaved (each
refused and caught) and once without them, and asserts that both read back
identically.
"""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, RunWriter, WriterError, read_run_dict, write_run_dict

SHAPE = (1, 2, 3)
TS0 = 1 << 60
HEADER = {"run": 1_700_000_000, "date": "2026-11-26T00:00:00+00:00", "commandLine": "test", "acquisitionScript": "t"}


def frame(v, dtype=np.uint16):
    return np.full(SHAPE, v, dtype)


def good_event(s, i):
    s.event(epixM=frame(i), wave8={"amp": float(i)}, timestamp=TS0 + i, scan={"gain": 1.0})


def write(path, bad=None, steps=2, events=3):
    """Write ``steps`` x ``events`` good events; call ``bad(w, s, k, i)`` before every event when given."""
    with RunWriter(path, "delayScan", **HEADER) as w:
        for k in range(steps):
            with w.step(delay=float(k)) as s:
                for i in range(events):
                    if bad is not None:
                        bad(w, s, k, i)
                    good_event(s, 10 * k + i)
    return path


def same(a, b):
    """Assert two read_run_dict results are identical (arrays by value and dtype)."""
    assert type(a) is type(b) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray))
    if isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.fixture
def reference(tmp_path):
    return read_run_dict(write(tmp_path / "reference.h5"))


BAD_EVENTS = {
    "nan timestamp": (dict(timestamp=float("nan")), "a timestamp must be an integer.*float nan"),
    "negative timestamp": (dict(timestamp=-1), r"unsigned 64-bit integer \(0 <= t < 2\*\*64\); found -1"),
    "timestamp 2**64": (dict(timestamp=2**64), "unsigned 64-bit.*found 18446744073709551616"),
    "float timestamp": (dict(timestamp=float(TS0)), "a timestamp must be an integer.*float"),
    "str timestamp": (dict(timestamp="123"), "a timestamp must be an integer.*str '123'"),
    "bool timestamp": (dict(timestamp=True), "a timestamp must be an integer.*bool"),
    "no timestamp": (dict(timestamp=None), "give a timestamp with every event or with none"),
    "wrong frame shape": (dict(epixM=np.zeros((1, 3, 3), np.uint16)), r"must match its first: expected \(1, 2, 3\)"),
    "wrong frame dtype": (dict(epixM=np.zeros(SHAPE, np.float32)), "must match its first.*float32"),
    "str frame": (dict(epixM=np.full(SHAPE, "x")), "must be numeric; found <U1"),
    "object frame": (dict(epixM=np.full(SHAPE, None)), "must be numeric; found object"),
    "ragged frame": (dict(epixM=[[1, 2], [3]]), "a frame of epixM must be a numeric array"),
    "1-D frame": (dict(epixM=np.zeros(6, np.uint16)), r"\[module, row, col\].*found shape \(6,\)"),
    "missing detector": (dict(epixM="DROP"), r"same detectors.*missing \['epixM'\]"),
    "extra detector": (dict(jungfrau=frame(0)), r"unexpected \['jungfrau'\]"),
    "side data not a dict": (dict(wave8=1.0), "side data must be a dict with fields"),
    "side field missing": (dict(wave8={"other": 1.0}), r"fields \['amp'\]"),
    "side value str": (dict(wave8={"amp": "high"}), "side data wave8.amp must be numeric"),
    "side value shape": (dict(wave8={"amp": [1.0, 2.0]}), r"wave8.amp must match its first: expected \(\)"),
    "scan changes in step": (dict(scan={"gain": 2.0}), "must not change inside a step.*started with 1.0"),
    "scan value list": (dict(scan={"gain": [1.0]}), "scan value gain must be one real number.*list"),
    "scan value str": (dict(scan={"gain": "1"}), "scan value gain must be one real number.*str"),
    "scan missing": (dict(scan=None), "same per-event scan values"),
    "scan not a dict": (dict(scan=[1.0]), "scan= must be a dict"),
}


def event_kwargs(i, override):
    kw = dict(epixM=frame(i), wave8={"amp": float(i)}, timestamp=TS0 + i, scan={"gain": 1.0})
    kw.update(override)
    return {k: v for k, v in kw.items() if not (isinstance(v, str) and v == "DROP")}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_bad_event_is_refused_and_changes_nothing(tmp_path, reference, case):
    override, message = BAD_EVENTS[case]

    def bad(w, s, k, i):
        if i == 0:
            return  # the first event of the run defines the detectors, of a step its scan values
        with pytest.raises(WriterError, match=message) as info:
            s.event(**event_kwargs(999, override))
        assert str(tmp_path / "run.h5") in str(info.value)

    same(read_run_dict(write(tmp_path / "run.h5", bad)), reference)


@pytest.mark.parametrize("case", ["nan timestamp", "negative timestamp", "ragged frame", "str frame"])
def test_bad_first_event_does_not_fix_the_schema(tmp_path, reference, case):
    """A refused first event must not decide the run's detectors, shapes or timestamps."""
    override, message = BAD_EVENTS[case]
    with RunWriter(tmp_path / "run.h5", "delayScan", **HEADER) as w:
        for k in range(2):
            with w.step(delay=float(k)) as s:
                if k == 0:
                    with pytest.raises(WriterError, match=message):
                        s.event(**event_kwargs(999, {**override, "jungfrau": np.zeros((4, 4), np.int8)}))
                for i in range(3):
                    good_event(s, 10 * k + i)
    same(read_run_dict(tmp_path / "run.h5"), reference)


def test_rejected_nan_timestamp_does_not_leak_its_frame(tmp_path):
    """The issue's case: the good event after a refused one read back with the refused frame."""
    with RunWriter(tmp_path / "r.h5", "dark") as w, w.step() as s:
        s.event(epixM=frame(1), timestamp=TS0)
        with pytest.raises(WriterError):
            s.event(epixM=frame(666), timestamp=float("nan"))
        s.event(epixM=frame(2), timestamp=TS0 + 1)
    run = next(DataSource(files=str(tmp_path / "r.h5")).runs())
    det = run.Detector("epixM")
    assert [(int(det.raw.raw(e).flat[0]), e.timestamp) for e in run.events()] == [(1, TS0), (2, TS0 + 1)]
    assert run.complete


def test_out_of_range_timestamp_no_longer_loses_the_run(tmp_path):
    """-1 and 2**64 used to be accepted, then an OverflowError at the step's end lost the rest of the run."""
    with RunWriter(tmp_path / "r.h5", "dark") as w:
        for k in range(3):
            with w.step() as s:
                for bad in (-1, 2**64):
                    with pytest.raises(WriterError, match="unsigned 64-bit"):
                        s.event(epixM=frame(k), timestamp=bad)
                s.event(epixM=frame(k), timestamp=np.uint64(2**64 - 3 + k))
    run = next(DataSource(files=str(tmp_path / "r.h5")).runs())
    assert run.complete and [e.timestamp for e in run.events()] == [2**64 - 3, 2**64 - 2, 2**64 - 1]


def test_bad_block_is_refused_whole(tmp_path, reference):
    """add_events/add_step check every event of the block before buffering any."""
    def bad(w, s, k, i):
        if i == 1:
            block = {"epixM": np.stack([frame(j) for j in range(5)]), "wave8": {"amp": np.arange(5.0)}}
            ts = np.array([TS0, TS0, TS0, -5, TS0], dtype=np.int64)
            with pytest.raises(WriterError, match="found -5"):
                s.add_events(block, timestamps=ts, scan={"gain": np.ones(5)})
            with pytest.raises(WriterError, match="started with 1.0, event 4 has 7"):
                s.add_events(block, timestamps=np.full(5, TS0, np.uint64), scan={"gain": [1.0, 1, 1, 7, 1]})
            with pytest.raises(WriterError, match="same number of events"):
                s.add_events(block, timestamps=np.full(4, TS0, np.uint64), scan={"gain": np.ones(5)})
            with pytest.raises(WriterError, match="present= names detectors that are not in data"):
                s.add_events(block, timestamps=np.full(5, TS0, np.uint64), scan={"gain": np.ones(5)},
                             present={"jungfrau": np.ones(5, bool)})

    same(read_run_dict(write(tmp_path / "run.h5", bad)), reference)


def test_bad_add_step_adds_no_step(tmp_path):
    with RunWriter(tmp_path / "r.h5", "dark") as w:
        w.add_step({"epixM": np.zeros((2, *SHAPE), np.uint16)}, timestamps=[TS0, TS0 + 1])
        with pytest.raises(WriterError, match="a timestamp must be an integer"):
            w.add_step({"epixM": np.ones((2, *SHAPE), np.uint16)}, timestamps=[TS0, float("nan")])
        w.add_step({"epixM": np.full((1, *SHAPE), 2, np.uint16)}, timestamps=[TS0 + 2])
    back = read_run_dict(tmp_path / "r.h5")
    assert sorted(back["epixM"]) == [0, 1] and back["epixM"][1].tolist() == [np.full(SHAPE, 2).tolist()]


BAD_STEPS = {
    "list": ({"delay": [1.0, 2.0]}, "scan value delay must be one real number.*list"),
    "dict": ({"delay": {"a": 1}}, "scan value delay must be one real number.*dict"),
    "str": ({"delay": "late"}, "scan value delay must be one real number.*str 'late'"),
    "None": ({"delay": None}, "scan value delay must be one real number.*NoneType"),
    "different names": ({"flux": 1.0}, "every step must give the same per-step scan values"),
    "reserved name": ({"delay": 1.0, "nEvents": 3}, "'nEvents' is reserved"),
    "slash in name": ({"delay": 1.0, "a/b": 3}, "a plain HDF5 name"),
    "per-event name": ({"delay": 1.0, "gain": 1.0}, "already a per-event scan variable"),
}


@pytest.mark.parametrize("case", sorted(BAD_STEPS))
def test_bad_step_scan_value_is_refused_at_step(tmp_path, reference, case):
    values, message = BAD_STEPS[case]

    # refused at w.step(), before any event: the open step is not disturbed
    with RunWriter(tmp_path / "run.h5", "delayScan", **HEADER) as w:
        for k in range(2):
            if k == 1:
                with pytest.raises(WriterError, match=message):
                    w.step(**values)
            with w.step(delay=float(k)) as s:
                for i in range(3):
                    good_event(s, 10 * k + i)
    same(read_run_dict(tmp_path / "run.h5"), reference)


def test_writing_after_an_unclean_close_is_refused(tmp_path):
    w = RunWriter(tmp_path / "r.h5", "dark")
    w.add_step({"epixM": np.zeros((1, *SHAPE), np.uint16)})
    s = w.step()
    w.close(RuntimeError("DAQ died"))
    with pytest.raises(WriterError, match="the writer is closed"):
        s.event(epixM=frame(1))
    assert len(read_run_dict(tmp_path / "r.h5")["epixM"]) == 1


def test_nan_scan_value_is_a_value(tmp_path):
    """NaN is a number: allowed per step, and constant when every event of a step gives it."""
    with RunWriter(tmp_path / "r.h5", "dark") as w, w.step(delay=float("nan")) as s:
        for i in range(2):
            s.event(epixM=frame(i), scan={"gain": float("nan")})
        with pytest.raises(WriterError, match="started with nan, event 2 has 1.0"):
            s.event(epixM=frame(3), scan={"gain": 1.0})
    assert np.isnan(read_run_dict(tmp_path / "r.h5")["ancillaryData"]["gain"][0]).tolist() == [True, True]


def test_step_docstring_must_be_str_and_step_value_a_number(tmp_path):
    with RunWriter(tmp_path / "r.h5", "dark") as w:
        with pytest.raises(WriterError, match="step_docstring must be a str"):
            w.step(step_docstring=5)
        with pytest.raises(WriterError, match="scan value step_value must be one real number"):
            w.step(step_value="0")
        w.add_step({"epixM": np.zeros((1, *SHAPE), np.uint16)}, step_value=0.5, step_docstring='{"value": 0.5}')
    run = next(DataSource(files=str(tmp_path / "r.h5")).runs())
    assert [run.Detector("step_value")(s) for s in run.steps()] == [0.5]


BAD_NAMES = {
    "ancillaryData": "is reserved", "nEvents": "is reserved", "timestamp": "is reserved",
    "step_value": "is reserved", "step_docstring": "is reserved",
    "step0": "must not look like a step", "step_12": "must not look like a step", "7": "must not look like a step",
    "epix/M": "a plain HDF5 name", "": "a plain HDF5 name", ".": "a plain HDF5 name", "..": "a plain HDF5 name",
    "a\0b": "a plain HDF5 name", 5: "must be a str; found int 5", ("a",): "must be a str",
}


@pytest.mark.parametrize("name", list(BAD_NAMES), ids=repr)
def test_unreadable_detector_names_are_refused(tmp_path, reference, name):
    message = BAD_NAMES[name]

    def bad(w, s, k, i):
        if k == 0 and i == 0:
            with pytest.raises(WriterError, match=message):
                w.detector(name, shape=SHAPE, dtype=np.uint16)
        with pytest.raises(WriterError, match=message if k == 0 and i == 0 else "same detectors"):
            s.add_events({"epixM": frame(0)[None], "wave8": {"amp": [0.0]}, name: frame(0)[None]},
                         timestamps=[TS0], scan={"gain": [1.0]})
        if isinstance(name, str) and name not in ("timestamp", "scan"):  # those are event()'s own keywords
            with pytest.raises(WriterError, match=message if k == 0 and i == 0 else "same detectors"):
                s.event(**{**event_kwargs(0, {}), name: frame(0)})

    path = write(tmp_path / "run.h5", bad)
    same(read_run_dict(path), reference)
    with h5py.File(path) as f:
        assert sorted(f) == ["ancillaryData", "epixM", "timestamp", "wave8"]


@pytest.mark.parametrize("field,message", [("0", "look like a step"), ("present", "must not be"),
                                           ("a/b", "a plain HDF5 name"), ("", "a plain HDF5 name")])
def test_unreadable_field_names_are_refused(tmp_path, field, message):
    with RunWriter(tmp_path / "r.h5", "dark") as w, w.step() as s:
        with pytest.raises(WriterError, match=message):
            s.event(epixM=frame(0), wave8={field: 1.0})
        with pytest.raises(WriterError, match=message):
            w.detector("epix", calib={field: np.zeros(SHAPE)})
        s.event(epixM=frame(0), wave8={"amp": 1.0})
    assert sorted(read_run_dict(tmp_path / "r.h5")) == ["ancillaryData", "epixM", "wave8"]


def test_bad_detector_declarations_write_nothing(tmp_path):
    with RunWriter(tmp_path / "r.h5", "dark") as w:
        with pytest.raises(WriterError, match="calibration constant pedestals must be numeric"):
            w.detector("epixM", detType="epixm", calib={"pedestals": np.array(["a"])})
        with pytest.raises(WriterError, match="attributes must be a dict"):
            w.detector("epixM", calib={"pedestals": (np.zeros(SHAPE), "meta")})
        with pytest.raises(WriterError, match="header attribute gainBitsMask must be"):
            w.detector("epixM", gainBitsMask=2**70)
        with pytest.raises(WriterError, match=r"\[module, row, col\].*dtype"):
            w.detector("epixM", shape=(2, 3, 4), dtype=str)
        assert "epixM" not in w._file
        w.detector("epixM", detType="epixm", shape=SHAPE, dtype=np.uint16)
        with pytest.raises(WriterError, match="already declared"):
            w.detector("epixM")
        w.add_step({"epixM": np.zeros((1, *SHAPE), np.uint16)})
    with h5py.File(tmp_path / "r.h5") as f:
        assert dict(f["epixM"].attrs)["detType"] == "epixm" and "calib" not in f["epixM"]


def test_bad_header_creates_no_file(tmp_path):
    path = tmp_path / "r.h5"
    with pytest.raises(WriterError, match="flush_every must be a positive int; found 'often'"):
        RunWriter(path, "dark", flush_every="often")
    with pytest.raises(WriterError, match="header attribute location must be a str, a real number"):
        RunWriter(path, "dark", location={"building": 84})
    with pytest.raises(WriterError, match="scriptType must be a str; found list"):
        RunWriter(path, ["dark"])
    with pytest.raises(WriterError, match=r"\['complete'\] are set by the writer"):
        RunWriter(path, "dark", complete=True)
    assert not path.exists()


# -- overwrite ---------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    import numpy as np
    from calibsuite_h5source import RunWriter
    with RunWriter(sys.argv[1], 'dark', flush_every=1) as w:
        with w.step() as s:
            s.event(epixM=np.full((1, 2, 3), 7, np.uint16))
        print('ready', flush=True)
        sys.stdin.readline()             # hold the file until the parent says so
        with w.step() as s:
            s.event(epixM=np.full((1, 2, 3), 8, np.uint16))
""")


def test_overwrite_never_destroys_a_run_being_written(tmp_path):
    path = tmp_path / "busy.h5"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        size = path.stat().st_size
        for overwrite in (True, False):
            with pytest.raises(WriterError, match="being written") as info:
                RunWriter(path, "dark", overwrite=overwrite)
            assert str(path) in str(info.value)
            assert path.stat().st_size == size
        proc.stdin.write("go\n")
        proc.stdin.flush()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    run = next(DataSource(files=str(path)).runs())
    assert run.complete and [int(run.Detector("epixM").raw.raw(e).flat[0]) for e in run.events()] == [7, 8]


def test_overwrite_refuses_a_file_open_for_reading_and_replaces_a_free_one(tmp_path):
    path = write(tmp_path / "run.h5")
    with h5py.File(path, "r"):
        with pytest.raises(WriterError, match="open for reading elsewhere"):
            RunWriter(path, "dark", overwrite=True)
    assert read_run_dict(path)["epixM"][1].shape == (3, *SHAPE)
    with RunWriter(path, "dark", overwrite=True) as w:
        w.add_step({"epixM": np.zeros((1, 4, 4), np.uint8)})
    assert read_run_dict(path)["epixM"][0].shape == (1, 1, 4, 4)
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]  # nothing left beside it
    with pytest.raises(WriterError, match="file exists; pass overwrite=True"):
        RunWriter(path, "dark")


# -- write_run_dict ------------------------------------------------------------------------------

def run_dict(**anc):
    return {"ancillaryData": anc, "epixM": {0: np.zeros((2, *SHAPE), np.uint16)}}


def test_write_run_dict_script_type_keyword(tmp_path):
    write_run_dict(tmp_path / "a.h5", run_dict(), scriptType="dark")
    assert read_run_dict(tmp_path / "a.h5")["ancillaryData"]["scriptType"] == "dark"
    write_run_dict(tmp_path / "b.h5", run_dict(scriptType="dark"), scriptType="dark")
    with pytest.raises(WriterError, match="scriptType='fe55' contradicts the runDict's ancillaryData/scriptType 'dark'"):
        write_run_dict(tmp_path / "c.h5", run_dict(scriptType="dark"), scriptType="fe55")
    with pytest.raises(WriterError, match="no ancillaryData/scriptType; add it or pass scriptType"):
        write_run_dict(tmp_path / "d.h5", run_dict())
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "d.h5").exists()


@pytest.mark.parametrize("change,message", [
    (lambda d: d["ancillaryData"].update(delay={0: [[1.0], [1.0]]}, ancillaryDataType="delay"), "one real number"),
    (lambda d: d["ancillaryData"].update(delay={0: "x"}, ancillaryDataType="delay"), "one real number.*str 'x'"),
    (lambda d: d.update(timestamp={0: [1.5, 2.5]}), "a timestamp must be an integer"),
    (lambda d: d.update(timestamp={0: [-1, 2]}), "unsigned 64-bit"),
    (lambda d: d.update(step0={0: np.zeros((2, *SHAPE))}), "must not look like a step"),
    (lambda d: d.update(epixM={0: [[1], [2, 3]]}), "epixM must be a numeric array"),
    (lambda d: d.update(epixM=5), "must hold one entry per step"),
    (lambda d: d.update(nEvents=["a"]), "nEvents must be integers"),
])
def test_write_run_dict_refuses_bad_values_and_leaves_no_file(tmp_path, change, message):
    d = run_dict(scriptType="dark")
    change(d)
    with pytest.raises(WriterError, match=message):
        write_run_dict(tmp_path / "r.h5", d)
    assert not (tmp_path / "r.h5").exists()


def test_a_scan_variable_named_as_a_source_is_refused_before_anything_is_written(tmp_path):
    frame = np.ones((1, 1, 2, 2), np.uint16)
    with RunWriter(tmp_path / "a.h5", "delayScan") as w:
        with pytest.raises(WriterError, match="has the name of the source 'delay'"):
            w.add_step({"delay": frame}, delay=1.0)
        w.add_step({"epixM": frame}, delay=1.0)
        with pytest.raises(WriterError, match="has the name of the source 'epixM'"):
            w.step(epixm=2.0)
    run = next(DataSource(files=tmp_path / "a.h5").runs())
    assert run.Detector("delay")(next(run.steps())) == 1.0
    with RunWriter(tmp_path / "b.h5", "delayScan") as w, w.step() as s:
        with pytest.raises(WriterError, match="has the name of the source 'wave8'"):
            s.event(wave8={"a": 1.0}, scan={"Wave8": 2.0})
        s.event(wave8={"a": 1.0}, scan={"x": 2.0})


def test_a_run_id_the_reader_cannot_make_timestamps_from_is_refused_at_the_first_event(tmp_path):
    """run in milliseconds by mistake: without timestamps the file would be unreadable."""
    path = tmp_path / "ms.h5"
    frame = np.ones((1, 1, 2, 2), np.uint16)
    with RunWriter(path, "dark", run=1_700_000_000_000) as w:
        with pytest.raises(WriterError, match=r"run = 1700000000000 .*give every event a timestamp="):
            w.add_step({"epixM": frame})
        w.add_step({"epixM": frame}, timestamps=[(1 << 60) + 1])  # with timestamps, run is not needed
    assert len(list(next(DataSource(files=path).runs()).events())) == 1


@pytest.mark.parametrize("field, first, later, rule", [
    ("pulseId", np.int32(1), np.int64(2**40 + 7), r"wave8\.pulseId = 1099511627783 does not fit its column's int32"),
    ("amp", np.float32(1), 1e300, r"wave8\.amp = 1e\+300 overflows its column's float32"),
], ids=["int-wraps", "float-overflows"])
def test_a_later_value_that_does_not_fit_its_column_is_refused_not_wrapped(tmp_path, field, first, later, rule):
    """Casting by kind let int64 2**40+7 into an int32 column as 7, and 1e300 into float32 as inf."""
    path = tmp_path / "r.h5"
    frame = np.zeros((1, 2, 2), np.uint16)
    with RunWriter(path, "dark") as w:
        w.detector("epixM", header_fields={"frameNo": ((), "uint16")})
        with w.step() as s:
            s.event(epixM=frame, wave8={field: first}, headers={"epixM": {"frameNo": 1}})
            with pytest.raises(WriterError, match=rule):
                s.event(epixM=frame, wave8={field: later}, headers={"epixM": {"frameNo": 2}})
            with pytest.raises(WriterError, match=r"epixM\.frameNo = 70000 does not fit its column's uint16"):
                s.event(epixM=frame, wave8={field: first}, headers={"epixM": {"frameNo": np.uint64(70000)}})
            s.event(epixM=frame, wave8={field: first}, headers={"epixM": {"frameNo": np.uint64(3)}})  # fits: taken
    run = next(DataSource(files=str(path)).runs())
    det, wave8 = run.Detector("epixM"), run.Detector("wave8")
    assert [(det.raw.frameNo(e), getattr(wave8.raw, field)(e)) for e in run.events()] == [(1, 1), (3, 1)]


@pytest.mark.parametrize("header, rule", [
    ({"run": 1_700_000_000.5}, r"/ancillaryData: attribute 'run' must be a non-negative integer; found float"),
    ({"runnum": "42"}, r"/ancillaryData: attribute 'runnum' must be a non-negative integer; found str"),
    ({"experiment": 123}, r"/ancillaryData: attribute 'experiment' must be a single UTF-8 string; found int"),
], ids=["float-run", "str-runnum", "int-experiment"])
def test_a_header_the_reader_would_refuse_is_refused_before_the_file_exists(tmp_path, header, rule):
    """Written with complete=True, such a run could not be opened by anything of this package."""
    with pytest.raises(WriterError, match=rule + r".*\(the reader would refuse the file\)"):
        RunWriter(tmp_path / "r.h5", "dark", **header)
    assert not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("declare, rule", [
    ({"detType": 5}, r"/epixM: attribute 'detType' must be a single UTF-8 string; found int"),
    ({"gainBitsMask": 0x1FFFF}, r"/epixM: attribute 'gainBitsMask' must be a non-negative integer that fits the "
                                r"frames' dtype uint16"),
], ids=["int-detType", "mask-too-wide"])
def test_detector_attributes_the_reader_would_refuse_are_refused(tmp_path, declare, rule):
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w:
        with pytest.raises(WriterError, match=rule):
            w.detector("epixM", **declare)
            w.add_step({"epixM": np.zeros((2, 1, 2, 2), np.uint16)})  # the mask meets the frames' dtype here
        w.add_step({"epixM": np.zeros((2, 1, 2, 2), np.uint16)}) if "detType" in declare else None
    if "detType" in declare:
        assert len(list(next(DataSource(files=str(path)).runs()).events())) == 2


def test_a_scan_value_only_a_discarded_step_0_gave_is_not_left_in_the_run(tmp_path):
    """Step 0 failed with delay=, was retried with bias=: the finished run once read delay = 10.0 at step 0."""
    path = tmp_path / "r.h5"
    with RunWriter(path, "biasScan") as w:
        with pytest.raises(RuntimeError), w.step(delay=10.0) as s:
            s.event(epixM=np.zeros((1, 4, 4), np.uint16))
            raise RuntimeError("DAQ hiccup")
        with w.step(bias=200.0) as s:
            s.event(epixM=np.ones((1, 4, 4), np.uint16))
    run = next(DataSource(files=str(path)).runs())
    assert "delay" not in run.scannames and run.Detector("bias")(next(run.steps())) == 200.0
    with h5py.File(path, "r") as f:
        assert "delay" not in f["ancillaryData"] and f["ancillaryData"].attrs["ancillaryDataType"] == "bias"


def test_timestamps_that_do_not_increase_are_refused_and_a_discarded_steps_do_not_count(tmp_path):
    """The writer once wrote backwards and repeated timestamps, which validate then called an error."""
    path = tmp_path / "r.h5"
    block = {"epixM": np.zeros((3, 1, 2, 2), np.uint16)}
    with RunWriter(path, "dark") as w:
        with w.step() as s:
            s.event(epixM=np.zeros((1, 2, 2), np.uint16), timestamp=TS0 + 10)
            with pytest.raises(WriterError, match=r"/timestamp/0: timestamps must strictly increase; event 1 of "
                                                  rf"step 0 has {TS0 + 10}, after {TS0 + 10}"):
                s.event(epixM=np.zeros((1, 2, 2), np.uint16), timestamp=TS0 + 10)
            with pytest.raises(WriterError, match=r"event 3 of step 0 has"):  # inside a block: refused whole
                s.add_events(block, timestamps=[TS0 + 11, TS0 + 12, TS0 + 12])
            s.add_events(block, timestamps=[TS0 + 11, TS0 + 12, TS0 + 13])
        with pytest.raises(WriterError, match=r"/timestamp/1: .*event 0 of step 1 has"):  # across steps
            w.add_step(block, timestamps=[TS0 + 5, TS0 + 20, TS0 + 21])
        with pytest.raises(RuntimeError), w.step() as s:
            s.event(epixM=np.zeros((1, 2, 2), np.uint16), timestamp=TS0 + 100)
            raise RuntimeError("discarded")
        w.add_step(block, timestamps=[TS0 + 20, TS0 + 21, TS0 + 22])  # after the confirmed TS0 + 13: taken
    assert [e.timestamp for e in next(DataSource(files=str(path)).runs()).events()] == [
        TS0 + 10, TS0 + 11, TS0 + 12, TS0 + 13, TS0 + 20, TS0 + 21, TS0 + 22]


def test_the_first_frame_must_match_the_declared_shape_and_dtype(tmp_path):
    """w.detector(shape=, dtype=) was silently overridden by the first frame (and a geometry checked
    against the declaration then did not fit the stored frames)."""
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w:
        w.detector("epixM", shape=(4, 6, 8), dtype="uint16")
        with pytest.raises(WriterError, match=r"/epixM: the first frame of epixM must have its declared shape and "
                                              r"dtype: declared \(4, 6, 8\) uint16, found \(1, 6, 8\) float32"):
            w.add_step({"epixM": np.zeros((2, 6, 8), np.float32)})
        w.add_step({"epixM": np.ones((2, 4, 6, 8), np.uint16)})
    evt = next(next(DataSource(files=str(path)).runs()).events())
    assert evt.run().Detector("epixM").raw.raw(evt).dtype == np.uint16


def test_an_empty_first_step_is_refused_and_the_writer_goes_on(tmp_path):
    """It once stayed open: every later w.step() and the close raised 'step 0 is still open', and the
    file was never closed."""
    path = tmp_path / "r.h5"
    with RunWriter(path, "dark") as w:
        with pytest.raises(WriterError, match=r"a step must hold at least one event .*\(the step was discarded\)"):
            with w.step():
                pass
        w.add_step({"epixM": np.zeros((2, 1, 2, 2), np.uint16)})
    run = next(DataSource(files=str(path)).runs())
    assert run.complete and [len(list(s.events())) for s in run.steps()] == [2]
