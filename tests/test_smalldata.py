"""smalldata writes psana's layout: fill values, ragged var_ keys, nested summaries."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.smalldata import SmallData
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
    with pytest.raises(TypeError, match="numbers or numeric arrays"):
        smd.done()
