"""smalldata writes psana's layout: fill values, ragged var_ keys, nested summaries."""

import json

import h5py
import numpy as np
import pytest
from mpi_scripts.launch import launch, needs_mpi

from calibsuite_h5source import DataSource
from calibsuite_h5source.psana2.smalldata import SmallData, SmallDataError
from calibsuite_h5source.testing.layouts import declare_run, write_layout


def contents(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, (o.dtype, o[()].tolist())) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_rows_merge_fill_and_ragged_keys(tmp_path, batch_size):
    smd = SmallData(filename=tmp_path / "sd.h5", batch_size=batch_size)
    for ts in range(1, 6):
        d = {"a": ts, "f": ts * 0.5, "arr": np.arange(3, dtype=np.uint16) + ts, "nest": {"x": ts}}
        if ts == 3:
            del d["a"], d["f"]
        if ts >= 4:
            d["late"] = 1.5
        if ts % 2:
            d["var_hits"] = np.arange(ts)
        smd.event(ts, d)
        smd.event(ts, extra=ts * 10)  # same timestamp: merged into the same row
    assert smd.sum(7) == 7 and smd.summary is True
    smd.save_summary({"means": {"1000": np.arange(3.0)}}, total=5)
    smd.done()
    got = contents(tmp_path / "sd.h5")
    assert got["timestamp"] == (np.dtype("i8"), [1, 2, 3, 4, 5])
    assert got["a"] == (np.dtype("i8"), [1, 2, -99999, 4, 5])
    f = got["f"][1]
    assert got["f"][0] == np.dtype("f8") and f[:2] == [0.5, 1.0] and np.isnan(f[2]) and f[3:] == [2.0, 2.5]
    assert got["arr"][0] == np.dtype("uint16") and got["arr"][1][4] == [5, 6, 7]
    assert got["nest/x"][1] == [1, 2, 3, 4, 5] and got["extra"][1] == [10, 20, 30, 40, 50]
    assert got["late"][1] == [0.0, 0.0, 0.0, 1.5, 1.5]  # back-filled with 0 before it first appears, as psana
    assert got["var_hits"][1] == [0, 0, 1, 2, 0, 1, 2, 3, 4]
    assert got["var_hits_len"][1] == [1, 0, 3, 0, 5]
    assert got["means/1000"][1] == [0.0, 1.0, 2.0] and got["total"][1] == 5


def test_old_timestamps_are_dropped_with_a_warning(tmp_path, caplog):
    smd = SmallData(filename=tmp_path / "sd.h5")
    smd.event(5, x=1)
    smd.event(3, x=2)
    smd.done()
    assert contents(tmp_path / "sd.h5")["x"][1] == [1]
    assert "timestamps must increase" in caplog.text


def test_without_filename_nothing_is_written_but_the_api_works(tmp_path):
    smd = SmallData(filename=None)
    smd.event(1, x=1)
    assert smd.max(np.array([1, 5])).tolist() == [1, 5] and smd.min(2.0) == 2.0
    smd.save_summary(y=1)
    smd.done()
    assert list(tmp_path.iterdir()) == []


def test_smalldata_from_a_data_source_with_events(tmp_path):
    path = write_layout(tmp_path / "r.h5", declare_run(steps=(2, 2)))
    ds = DataSource(files=path)
    smd = ds.smalldata(filename=tmp_path / "out.h5")
    run = next(ds.runs())
    det = run.Detector("epixm")
    stamps = []
    for evt in run.events():
        smd.event(evt, mean=float(det.raw.raw(evt).mean()))
        stamps.append(evt.timestamp)
    smd.done()
    assert contents(tmp_path / "out.h5")["timestamp"][1] == stamps


def test_non_numeric_values_are_refused(tmp_path):
    smd = SmallData(filename=tmp_path / "sd.h5")
    smd.event(1, name="abc")
    with pytest.raises(SmallDataError, match="'name' at timestamp 1: values must be numbers or numeric arrays"):
        smd.done()


# -- bad or missing values: checked per block before anything is written -----------------------

@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_a_key_none_in_every_row_of_a_batch_loses_no_column(tmp_path, batch_size, caplog):
    """A detector returning None (img=None) for a whole batch: every other column is written whole."""
    smd = SmallData(filename=tmp_path / "sd.h5", batch_size=batch_size)
    for ts in range(1, 6):
        smd.event(ts, sum=float(ts), img=None, after=ts)
    smd.done()
    got = contents(tmp_path / "sd.h5")
    assert got["timestamp"][1] == [1, 2, 3, 4, 5] and got["sum"][1] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert got["after"][1] == [1, 2, 3, 4, 5] and "img" not in got
    assert "'img' was None in every event" in caplog.text


def test_none_inside_a_generator_is_no_stop_iteration(tmp_path):
    def gen():
        smd = SmallData(filename=tmp_path / "sd.h5", batch_size=1)
        smd.event(1, a=None)
        smd.event(2, a=None)
        smd.done()
        yield 1

    assert list(gen()) == [1]


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_none_in_some_rows_is_the_missing_value(tmp_path, batch_size):
    """None rows hold NaN / -99999, also before the first value (absent keys there get psana's 0)."""
    smd = SmallData(filename=tmp_path / "sd.h5", batch_size=batch_size)
    smd.event(1, x=None, f=None, roi=None)
    smd.event(2, x=None, f=None)  # roi absent
    smd.event(3, x=3, f=1.5, roi=np.ones(2, np.float32))
    smd.event(4, x=None, f=None, roi=None)
    smd.event(5, x=5, f=2.5, roi=np.zeros(2, np.float32))
    smd.done()
    got = contents(tmp_path / "sd.h5")
    assert got["x"] == (np.dtype("i8"), [-99999, -99999, 3, -99999, 5])
    f = np.array(got["f"][1])
    assert np.isnan(f[[0, 1, 3]]).all() and f[[2, 4]].tolist() == [1.5, 2.5]
    roi = np.array(got["roi"][1])
    assert got["roi"][0] == np.float32 and np.isnan(roi[[0, 3]]).all()
    assert roi[[1, 2, 4]].tolist() == [[0, 0], [1, 1], [0, 0]]


BAD_ROWS = {
    "nan into int": ([{"x": 1}, {"x": float("nan")}], "'x' at timestamp 2: the column holds int64; found nan"),
    "float into int": ([{"x": 1}, {"x": 2.7}], "'x' at timestamp 2: the column holds int64; found 2.7"),
    "shape change": ([{"roi": np.ones(2)}, {"roi": np.ones(3)}],
                     r"'roi' at timestamp 2: the column holds float64 arrays of shape \(2,\); found float64 arrays "
                     r"of shape \(3,\) \(an array whose shape changes needs a \"var_\" key\)"),
    "int overflows uint16": ([{"u": np.uint16(1)}, {"u": 70000}], "'u' at timestamp 2: the column holds uint16"),
    "var_ element shape": ([{"var_p": np.ones((2, 3))}, {"var_p": np.ones((1, 4))}], "'var_p' at timestamp 2"),
    "var_ lengths differ": ([{"var_g": {"a": [1, 2], "b": [1.0]}}],
                            "'var_g/b' at timestamp 1: length 1, but another key sharing 'var_g_len' has length 2"),
}


@pytest.mark.parametrize("name", BAD_ROWS)
@pytest.mark.parametrize("batch_size", [1, 1000])
def test_bad_rows_are_refused_naming_key_timestamp_column_and_value(tmp_path, name, batch_size):
    rows, message = BAD_ROWS[name]
    smd = SmallData(filename=tmp_path / "sd.h5", batch_size=batch_size)
    smd.event(100, ok=1.0)  # a good first row
    for ts, row in enumerate(rows, 1):
        smd.event(100 + ts, ok=2.0, **row)
    with pytest.raises(SmallDataError, match=message.replace("timestamp 1", "timestamp 101")
                       .replace("timestamp 2", "timestamp 102")):
        smd.done()
    with h5py.File(tmp_path / "sd.h5") as f:  # a refused block writes nothing: every column has one length
        lengths = {f[k].shape[0] for k in f if not k.startswith("var_")}
        assert len(lengths) <= 1
        assert batch_size > 1 or f["ok"][()].tolist()[:1] == [1.0]  # blocks before the bad one are kept


def test_values_the_column_holds_exactly_are_stored(tmp_path):
    """An int into a float column, a fitting int into uint16, bool into int: stored as the column's type."""
    smd = SmallData(filename=tmp_path / "sd.h5")
    smd.event(1, f=1.5, u=np.uint16(1), i=1)
    smd.event(2, f=2, u=7, i=True)
    smd.done()
    got = contents(tmp_path / "sd.h5")
    assert got["f"] == (np.dtype("f8"), [1.5, 2.0]) and got["u"] == (np.dtype("u2"), [1, 7])
    assert got["i"] == (np.dtype("i8"), [1, 1])


# -- summaries: strings, nested dicts, None --------------------------------------------------

def test_save_summary_stores_strings_bools_lists_and_skips_none(tmp_path, caplog):
    smd = SmallData(filename=tmp_path / "sd.h5")
    smd.event(1, x=1)
    smd.save_summary({"config": {"hash": "a1b2c3d", "names": ["ped", "noise"], "flag": True,
                                 "gain": np.float32(2.5), "steps": [10, 20.5], "raw": b"xy",
                                 "tuple_names": ("a", "bc")}, "skipped": None},
                     count=np.int64(3), arr=np.array(["u", "vw"]))
    smd.done()
    with h5py.File(tmp_path / "sd.h5") as f:
        assert f["config/hash"].asstr()[()] == "a1b2c3d"
        assert list(f["config/names"].asstr()[()]) == ["ped", "noise"]
        assert list(f["config/tuple_names"].asstr()[()]) == ["a", "bc"]
        assert list(f["arr"].asstr()[()]) == ["u", "vw"]
        assert f["config/flag"].dtype == np.bool_ and f["config/flag"][()]
        assert f["config/gain"].dtype == np.float32 and f["config/gain"][()] == 2.5
        assert f["config/steps"][()].tolist() == [10.0, 20.5] and f["count"][()] == 3
        assert f["config/raw"][()] == b"xy"
        assert "skipped" not in f and f["x"][()].tolist() == [1]
    assert "'skipped' was passed None" in caplog.text


@pytest.mark.parametrize("value", [{1, 2}, [1, "a", None], object()])
def test_save_summary_refuses_what_hdf5_cannot_hold_at_the_call(tmp_path, value):
    smd = SmallData(filename=tmp_path / "sd.h5")
    with pytest.raises(SmallDataError, match="'bad'"):
        smd.save_summary(bad=value)


def test_summary_is_true_and_reductions_pass_through_in_serial():
    smd = SmallData()
    arr = np.arange(3)
    assert smd.summary is True and smd.sum(arr) is arr and smd.sum(None) is None and smd.max(4) == 4


# -- under MPI: psana's workers (ranks 2..) reduce; smd0, event builders and servers do nothing --------

@pytest.fixture(scope="module")
def mpi_run(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("smdmpi") / "run.h5", declare_run(steps=(4, 3), shape=(2, 4, 4)))


def frames_of(path):
    with h5py.File(path) as f:
        return np.concatenate([f["epixM"][k][()].astype(np.float64) for k in sorted(f["epixM"], key=int)])


@pytest.mark.mpi
@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("n_ranks, env, workers", [
    (3, {}, [2]), (4, {"PS_SRV_NODES": "1"}, [2]), (5, {}, [2, 3, 4]), (2, {"CALIBSUITE_EVERY_RANK_A_WORKER": "1"}, [0, 1])])
def test_suite_summary_block_finishes_with_right_totals_and_one_file(tmp_path, mpi_run, n_ranks, env, workers):
    # 7 events in 2 steps, fewer than psana's 1000-event batch: the whole run is one batch, read by the first worker
    launch("suite_summary.py", n_ranks, mpi_run, tmp_path, env=env)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(n_ranks)]
    assert [r["summary"] for r in ranks] == [r in workers for r in range(n_ranks)]
    assert [r["has_total"] for r in ranks] == [r == workers[0] for r in range(n_ranks)]
    first = ranks[workers[0]]
    assert first["count"] == first["count64"] == [7] and [r["n"] for r in ranks] == [7 * (r == workers[0]) for r in range(n_ranks)]
    assert first["ones"] == [len(workers)] * 2 and all(r["ones"] == [1, 1] for k, r in enumerate(ranks) if k != workers[0])
    frames = frames_of(mpi_run)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"rank{r}.json" for r in range(n_ranks)] + ["smd.h5"])
    with h5py.File(tmp_path / "smd.h5") as f:
        np.testing.assert_array_equal(f["sums/total"][()], frames.sum(axis=0))
        np.testing.assert_array_equal(f["high"][()], frames.max(axis=0))
        np.testing.assert_array_equal(f["low"][()], frames.min(axis=0))
        assert f["sums/count"][()].tolist() == [7]
        assert f["config/hash"].asstr()[()] == "a1b2c3d"
        assert list(f["config/names"].asstr()[()]) == ["ped", "noise"]
        assert f["config/flag"][()] and f["config/nested/1000"][()].tolist() == [0, 1, 2]
        assert f["timestamp"].shape == (7,) and np.all(np.diff(f["timestamp"][()]) > 0)


@pytest.mark.mpi
@pytest.mark.slow
@needs_mpi
def test_no_rank_reads_an_event(tmp_path, mpi_run):
    launch("suite_summary.py", 4, mpi_run, tmp_path, "none")  # two workers, ranks 2 and 3
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert [r["n"] for r in ranks] == [0, 0, 0, 0] and ranks[2]["count"] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"rank{r}.json" for r in range(4)] + ["smd.h5"]
    with h5py.File(tmp_path / "smd.h5") as f:  # reductions of nothing are None: skipped
        assert sorted(f) == ["config", "sums"] and list(f["sums"]) == ["count"]
