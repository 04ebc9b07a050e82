"""The seed's runDict form round-trips through files, for any shape of run."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibsuite_h5source import DataSource, RunWriter, WriterError, read_run_dict, write_run_dict
from calibsuite_h5source.format.constants import WRITER_OWNED
from calibsuite_h5source.testing.layouts import declare_run, write_layout


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
