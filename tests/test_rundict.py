"""The seed's runDict form round-trips through files, for any shape of run."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibsuite_h5source import DataSource, RunWriter, WriterError, read_run_dict, write_run_dict
from calibsuite_h5source.format.constants import WRITER_OWNED
from calibsuite_h5source.testing.layouts import declare_run, write_layout
from calibsuite_h5source.write.writer import DETECTOR_GROUP_ATTRS


@st.composite
def run_dicts(draw):
    counts = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4).filter(lambda c: c[0] > 0))
    modules = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["uint16", "int32", "float32", "float64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (modules, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = {
        "ancillaryData": {"scriptType": "delayScan", "location": "ASC", "ancillaryDataType": "delay"},
        "epixM": {k: (rng.random((n, *shape)) * 1000).astype(dtype) for k, n in enumerate(counts)},
        "wave8": {"peakAmplitude": {k: rng.random((n, 2)) for k, n in enumerate(counts)}},
        "timestamp": {k: np.arange(n, dtype=np.uint64) + 10 * k + (1 << 40) for k, n in enumerate(counts)},
    }
    if draw(st.booleans()):
        d["ancillaryData"]["delay"] = {k: float(k) * 1.5 for k in range(len(counts))}
    else:  # per event, constant within a step
        d["ancillaryData"]["delay"] = {k: {i: float(k) for i in range(n)} for k, n in enumerate(counts)}
    return d


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d=run_dicts())
def test_round_trip(tmp_path, d):
    path = tmp_path / "r.h5"
    write_run_dict(path, d, overwrite=True)
    back = read_run_dict(path)
    assert back["ancillaryData"]["scriptType"] == "delayScan" and back["ancillaryData"]["location"] == "ASC"
    for k, frames in d["epixM"].items():
        assert back["epixM"][k].dtype == frames.dtype
        np.testing.assert_array_equal(back["epixM"][k], frames)
        np.testing.assert_array_equal(back["wave8"]["peakAmplitude"][k], d["wave8"]["peakAmplitude"][k])
        np.testing.assert_array_equal(back["timestamp"][k], d["timestamp"][k])
        delay = d["ancillaryData"]["delay"][k]
        if isinstance(delay, dict):
            assert back["ancillaryData"]["delay"][k].tolist() == [delay[i] for i in sorted(delay)]
        else:
            assert back["ancillaryData"]["delay"][k] == delay


def test_padded_array_with_nevents_and_list_steps(tmp_path):
    padded = np.arange(2 * 3 * 1 * 2 * 2, dtype=np.uint16).reshape(2, 3, 1, 2, 2)
    d = {"ancillaryData": {"scriptType": "dark", "step_value": [0.0, 1.0]}, "nEvents": [3, 1], "epixM": padded}
    write_run_dict(tmp_path / "r.h5", d)
    back = read_run_dict(tmp_path / "r.h5")
    np.testing.assert_array_equal(back["epixM"][0], padded[0])
    np.testing.assert_array_equal(back["epixM"][1], padded[1, :1])
    assert back["ancillaryData"]["step_value"] == {0: 0.0, 1: 1.0}
    assert "timestamp" not in back  # the file stores none; the reader synthesises them


def test_reads_every_layout(tmp_path):
    decl = declare_run(steps=(2, 3), per_event_scan=True)
    results = [read_run_dict(write_layout(tmp_path / f"{lay}.h5", decl, lay)) for lay in ("canonical", "padded", "stepgroups")]
    for r in results[1:]:
        for k in (0, 1):
            np.testing.assert_array_equal(r["epixM"][k], results[0]["epixM"][k])
            np.testing.assert_array_equal(r["ancillaryData"]["delay"][k], results[0]["ancillaryData"]["delay"][k])


def test_bad_run_dicts(tmp_path):
    with pytest.raises(WriterError, match="holds no detector"):
        write_run_dict(tmp_path / "a.h5", {"ancillaryData": {"scriptType": "dark"}})
    with pytest.raises(WriterError, match=r"same steps; found step counts \[2, 1\]"):
        write_run_dict(tmp_path / "b.h5", {"ancillaryData": {"scriptType": "dark"},
                                          "a": {0: np.zeros((1, 1, 1, 1)), 1: np.zeros((1, 1, 1, 1))},
                                          "b": {0: np.zeros((1, 1, 1, 1))}})
    with pytest.raises(WriterError, match=r"steps must be keyed 0, 1"):
        write_run_dict(tmp_path / "c.h5", {"ancillaryData": {"scriptType": "dark"}, "a": {0: np.zeros((1, 1, 1, 1)), 5: np.zeros((1, 1, 1, 1))}})


# --- the round trip of every RunWriter file and of every readable fixture -------------------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: Every fixture that follows the format's rules (the ``broken_*`` ones break one on purpose).
VALID_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.h5") if not p.name.startswith("broken_"))


def assert_same(a, b, where="runDict"):
    """Deep equality of two runDicts: same keys, same values, same array dtypes."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (tuple, list)):  # (constant, metadata), list-valued attributes
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, f"{where}: {a.dtype} != {getattr(b, 'dtype', b)}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b)), f"{where}: {a!r} != {b!r}"


#: Provenance the writer records when the header lacks it (files not written by RunWriter).
PROVENANCE = {"acquisitionScript", "commandLine", "date", "version", "run"}


def round_trip(path, tmp_path):
    first = read_run_dict(path)
    again = tmp_path / "again.h5"
    write_run_dict(again, first)
    second = read_run_dict(again)
    added = set(second["ancillaryData"]) - set(first["ancillaryData"])
    assert added <= PROVENANCE, f"header fields appeared: {sorted(added)}"
    for key in added:
        del second["ancillaryData"][key]
    assert_same(first, second)
    return first


@pytest.mark.parametrize("name", VALID_FIXTURES)
def test_every_valid_fixture_round_trips(name, tmp_path):
    round_trip(FIXTURES / name, tmp_path)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_run_writer_file_round_trips_with_missing_events(tmp_path, compression):
    rng = np.random.default_rng(3)
    path = tmp_path / "w.h5"
    with RunWriter(path, "delayScan", location="ASC", compression=compression) as w:
        for k, n in enumerate((3, 4)):
            w.add_step({"epixM": rng.integers(0, 4000, (n, 1, 4, 5), dtype=np.uint16),
                        "wave8": {"peakAmplitude": rng.random((n, 8))}},
                       timestamps=np.arange(n, dtype=np.uint64) + (1 << 40) + 10 * k,
                       present={"wave8": np.arange(n) % 2 == 0, "epixM": np.arange(n) != 1},
                       delay=10.0 * k)
    d = round_trip(path, tmp_path)
    assert set(d["ancillaryData"]) & WRITER_OWNED == set()
    assert set(d["wave8"]) == {"peakAmplitude"}  # the mask is not a field
    assert d["present"]["wave8"][1].tolist() == [True, False, True, False]
    assert d["present"]["epixM"][0].tolist() == [True, False, True]
    again = tmp_path / "again.h5"
    run = next(DataSource(files=str(again)).runs())
    wave8, epix = run.Detector("wave8"), run.Detector("epixM")
    got = [(wave8.raw.peakAmplitude(e) is None, epix.raw.raw(e) is None) for e in run.events()]
    assert got == [(False, False), (True, True), (False, False),
                   (False, False), (True, True), (False, False), (True, False)]


def test_present_that_does_not_fit_is_refused(tmp_path):
    d = {"ancillaryData": {"scriptType": "dark"}, "epixM": {0: np.zeros((2, 1, 2, 2), np.uint16)},
         "present": {"epixM": {0: np.array([True, False, True])}}}
    with pytest.raises(WriterError, match="present/epixM step 0 must be a bool mask of 2 events"):
        write_run_dict(tmp_path / "r.h5", d)
    d["present"] = {"nosuch": {0: np.array([True, False])}}
    with pytest.raises(WriterError, match="present names 'nosuch'"):
        write_run_dict(tmp_path / "r.h5", d)
    assert not (tmp_path / "r.h5").exists()


# --- a detector's attributes, calibration constants and header fields travel too ----------------

#: Two 2x3 segments; the test's one-module detector stores the second (metadata ``segments``).
GEOMETRY = """IP 0 CAM 0  0 0 1000  0 0 0  0 0 0
CAM 0 MTRX:V2:2:3:10:10 0  0 -20 0  0 0 0  0 0 0
CAM 0 MTRX:V2:2:3:10:10 1  0  20 0  0 0 0  0 0 0
"""


def plain(value):
    """``value`` with arrays as ``(dtype, shape, values)`` and numpy scalars as python ones, for ``==``."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tolist())
    return value.item() if isinstance(value, np.generic) else value


def served(path) -> dict:
    """Everything the reader serves of the run at ``path``: per event and per detector."""
    run = next(DataSource(files=str(path)).runs())
    epix, wave8, delay = run.Detector("epixM"), run.Detector("wave8"), run.Detector("delay")
    fields = sorted(epix._src.headers)
    events = []
    for step in run.steps():
        for evt in step.events():
            events.append({"step": step.index, "timestamp": evt.timestamp, "delay": delay(evt),
                           "raw": epix.raw.raw(evt), "calib": epix.raw.calib(evt),
                           "image": epix.raw.image(evt, fillholes=False),
                           "headers": {f: getattr(epix.raw, f)(evt) for f in fields},
                           "peakAmplitude": wave8.raw.peakAmplitude(evt)})
    return plain({"events": events, "fields": fields, "calibconst": epix.calibconst,
                  "pedestals": epix.raw._pedestals(), "gain": epix.raw._gain(),
                  "attrs": {k: v for k, v in epix._src.attrs.items() if k not in DETECTOR_GROUP_ATTRS},
                  "frame_shape": epix._src.frame_shape, "dtype": str(epix._src.dtype)})


def test_detector_attrs_calib_and_header_fields_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "w.h5"
    with RunWriter(path, "delayScan", location="ASC", run=1700000000) as w:
        w.detector("epixM", detType="epix10ka", gainBitsMask=0x3FFF, attrs={"psanaModuleAxis": False},
                   calib={"pedestals": (np.full((1, 2, 3), 100, np.float32), {"run": 42, "note": "dark"}),
                          "pixel_gain": np.full((1, 2, 3), 2.0)},
                   geometry=(GEOMETRY, {"segments": [1]}))
        for k, n in enumerate((3, 2)):
            w.add_step({"epixM": (0x4000 + 150 + rng.integers(0, 50, (n, 1, 2, 3))).astype(np.uint16),
                        "wave8": {"peakAmplitude": rng.random((n, 4))}},
                       timestamps=np.arange(n, dtype=np.uint64) + (1 << 40) + 10 * k,
                       present={"wave8": np.arange(n) != 1, "epixM": np.arange(n) != n - 1},
                       headers={"epixM": {"frameNo": np.arange(n, dtype=np.uint32) + 7 + 10 * k,
                                          "autoFillMask": rng.integers(0, 9, (n, 4)).astype(np.uint16)}},
                       delay=10.0 * k)
    d = round_trip(path, tmp_path)
    source, copy = served(path), served(tmp_path / "again.h5")
    assert source["fields"] == ["autoFillMask", "frameNo"] and source["frame_shape"] == [1, 2, 3]
    assert source["events"][0]["raw"][1] == (2, 3)  # one module read as [row, col] (psanaModuleAxis False)
    assert source["events"][0]["calib"][2] != source["events"][0]["raw"][2]  # pedestals, gain bits applied
    assert copy == source
    assert set(d["attrs"]["epixM"]) == {"detType", "gainBitsMask", "psanaModuleAxis"}  # not NX_class, signal
    assert set(d["calib"]["epixM"]) == {"pedestals", "pixel_gain", "geometry"}
    assert d["calib"]["epixM"]["geometry"] == (GEOMETRY, {"segments": [1]})
    assert set(d["headers"]["epixM"]) == {"frameNo", "autoFillMask"}


def test_undeclared_scan_variable_round_trips(tmp_path):
    decl = declare_run(steps=(2, 2), side=False, scan="delay")
    del decl["header"]["ancillaryDataType"]  # the scan variable is found by its shape only
    path = write_layout(tmp_path / "u.h5", decl)
    d = round_trip(path, tmp_path)
    assert d["ancillaryData"]["ancillaryDataType"] == "delay"
    source = next(DataSource(files=str(path)).runs())
    copy = next(DataSource(files=str(tmp_path / "again.h5")).runs())
    assert sorted(copy._index.scan) == ["delay"] and "delay" not in copy._index.header
    np.testing.assert_array_equal(copy._index.scan["delay"].per_step, source._index.scan["delay"].per_step)


def test_what_cannot_travel_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    with RunWriter(path, "dark") as w:
        w.detector("epixM", calib={"pedestals": np.zeros((1, 2, 2))})
        w.add_step({"epixM": np.zeros((2, 1, 2, 2), np.uint16)})
    with h5py.File(path, "a") as f:
        f["epixM/calib/notes"] = "taken after the bake-out"
    with pytest.raises(WriterError, match=r"calibration constant notes of epixM is not numeric \(object\): a runDict holds numeric"):
        read_run_dict(path)
    d = {"ancillaryData": {"scriptType": "dark"}, "epixM": {0: np.zeros((2, 1, 2, 2), np.uint16)},
         "wave8": {"peakAmplitude": {0: np.zeros(2)}}, "headers": {"wave8": {"frameNo": {0: np.zeros(2)}}}}
    with pytest.raises(WriterError, match="headers names 'wave8', which is not an area detector"):
        write_run_dict(tmp_path / "r.h5", d)
    d["headers"] = {}
    d["attrs"] = {"epixM": {"detType": {"not": "storable"}}}
    with pytest.raises(WriterError, match="detector epixM's attrs or calib metadata: header attribute detType"):
        write_run_dict(tmp_path / "r.h5", d)
    assert not (tmp_path / "r.h5").exists()
