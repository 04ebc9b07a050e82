"""dask arrays (any scheduler) and xarray DataArrays equal to the event loop's."""

import pickle

import numpy as np
import pytest
from test_arrays import layout_file, loop, open_run, rechunk, writer_file

from calibsuite_h5source import DataSource, MissingDependencyError
from calibsuite_h5source.testing.layouts import declare_run, write_layout

da = pytest.importorskip("dask.array")


@pytest.mark.parametrize("layout", ["canonical", "padded", "stepgroups", "legacy"])
def test_dask_array_equals_the_loop_in_every_layout(tmp_path, layout):
    path, _ = layout_file(tmp_path, layout)
    seen = loop(path)
    raw = open_run(path).Detector("epixM").raw
    lazy = raw.dask_array()
    every = np.stack([s[3] for s in seen])
    assert lazy.shape == every.shape and lazy.dtype == every.dtype
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), every)
    np.testing.assert_array_equal(raw.dask_array(step=1).compute(scheduler="threads"),
                                  np.stack([s[3] for s in seen if s[0] == 1]))
    np.testing.assert_allclose(lazy.mean(0).compute(), every.mean(0))


def test_blocks_follow_chunks_steps_and_present_mask(tmp_path, monkeypatch):
    from calibsuite_h5source.read import arrays

    path, masks = writer_file(tmp_path, steps=(5, 0, 7))
    rechunk(path, "epixM/2", 3)
    raw = open_run(path).Detector("epixM").raw
    monkeypatch.setattr(arrays, "BLOCK_BYTES", 1)  # one chunk per block
    lazy = raw.dask_array(missing="keep")
    # step 0: chunks of one event (the writer's); step 1 empty; step 2: chunks of 3 events
    assert lazy.chunks[0] == (1, 1, 1, 1, 1, 3, 3, 1)
    dropped = raw.dask_array()
    mask = np.concatenate(masks)
    assert dropped.shape[0] == int(mask.sum())
    np.testing.assert_array_equal(dropped.compute(), raw.frames())
    np.testing.assert_array_equal(lazy.compute(), raw.frames(missing="keep"))
    assert raw.dask_array(step=1).shape == (0, 2, 4, 6)


@pytest.mark.slow
def test_graph_pickles_and_runs_under_processes(tmp_path):
    path, _ = layout_file(tmp_path, "canonical")
    lazy = open_run(path).Detector("epixM").raw.dask_array()
    graph = dict(lazy.__dask_graph__())
    blob = pickle.dumps(graph)  # no h5py object inside: tasks open the file by path
    assert b"h5py" not in blob
    np.testing.assert_array_equal(lazy.sum(0).compute(scheduler="processes", num_workers=2),
                                  open_run(path).Detector("epixM").raw.frames().sum(0, dtype=np.uint64))


@pytest.mark.slow
def test_runs_on_a_distributed_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    path, _ = layout_file(tmp_path, "canonical")
    raw = open_run(path).Detector("epixM").raw
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        got = client.compute(raw.dask_array().max(0)).result()
    np.testing.assert_array_equal(got, raw.frames().max(0))


def test_side_field_dask_array(tmp_path):
    path, decl = layout_file(tmp_path, "padded")
    wave8 = open_run(path).Detector("wave8")
    np.testing.assert_array_equal(wave8.raw.dask_array("peakAmplitude").compute(),
                                  np.concatenate(decl["side"]["wave8"]["peakAmplitude"]))


def test_missing_dask_is_a_clear_error(tmp_path, mocker):
    import sys

    path, _ = layout_file(tmp_path, "canonical")
    raw = open_run(path).Detector("epixM").raw
    mocker.patch.dict(sys.modules, {"dask.array": None})
    with pytest.raises(MissingDependencyError, match=r"pip install 'calibsuite_h5source\[dask\]'"):
        raw.dask_array()


# -- xarray ---------------------------------------------------------------------------------

xr = pytest.importorskip("xarray")


@pytest.mark.parametrize("layout", ["canonical", "padded", "stepgroups"])
def test_xarray_dims_and_coordinates(tmp_path, layout):
    path, decl = layout_file(tmp_path, layout, per_event_scan=layout == "stepgroups")
    seen = loop(path)
    x = open_run(path).Detector("epixM").raw.xarray()
    assert x.dims == ("event", "module", "row", "col") and x.name == "epixM"
    np.testing.assert_array_equal(x.values, np.stack([s[3] for s in seen]))
    np.testing.assert_array_equal(x["timestamp"], [s[2] for s in seen])
    np.testing.assert_array_equal(x["step"], [s[0] for s in seen])
    np.testing.assert_array_equal(x["event"], np.arange(len(seen)))
    np.testing.assert_array_equal(x["delay"], [10.0 * (s[0] + 1) for s in seen])
    np.testing.assert_array_equal(x["step_value"], x["delay"])
    # the notebook idiom: per-step mean, pixel against the scan variable
    curve = x.groupby("delay").mean()[:, 1, 2, 3]
    for k, d in enumerate((10.0, 20.0, 30.0)):
        assert float(curve.sel(delay=d)) == pytest.approx(np.mean([s[3][1, 2, 3] for s in seen if s[0] == k]))


def test_xarray_selection_lazy_and_missing(tmp_path):
    path, masks = writer_file(tmp_path)
    raw = open_run(path).Detector("epixM").raw
    x = raw.xarray(step=2, events=[6, 0])
    np.testing.assert_array_equal(x["event"], [11, 5])
    np.testing.assert_array_equal(x["step"], [2, 2])
    dropped = raw.xarray()  # absent events left out; their run-wide numbers too
    np.testing.assert_array_equal(dropped["event"], np.flatnonzero(np.concatenate(masks)))
    lazy = raw.xarray(lazy=True)
    assert isinstance(lazy.data, da.Array)
    xr.testing.assert_equal(lazy.compute(), dropped)
    with pytest.raises(ValueError, match="lazy=True"):
        raw.xarray(lazy=True, events=[0])


def test_side_and_scan_xarray(tmp_path):
    decl = declare_run(steps=(2, 3), shape=(1, 2, 2))
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    amp = run.Detector("wave8").raw.xarray("peakAmplitude")
    assert amp.dims == ("event", "dim_1") and amp.shape == (5, 4)
    np.testing.assert_array_equal(amp["delay"], [10, 10, 20, 20, 20])
    delay = run.Detector("delay").xarray()
    assert delay.name == "delay" and "delay" not in delay.coords
    np.testing.assert_array_equal(delay.values, [10, 10, 20, 20, 20])
    np.testing.assert_array_equal(delay["timestamp"], run.times())
