"""Random access (times, event(ts), step.event) and whole numpy arrays equal to the event loop's."""

import logging
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from calibsuite_h5source import ArrayTooLargeError, DataSource, RunWriter
from calibsuite_h5source.h5 import dataset as dataset_mod
from calibsuite_h5source.read import arrays
from calibsuite_h5source.read.index_types import EventArray
from calibsuite_h5source.testing.layouts import declare_run, write_layout

RAGGED = (3, 2, 4)


def layout_file(tmp_path, layout, steps=RAGGED, **kw):
    """A declared run in ``layout`` (legacy: equal steps, one detector, float64)."""
    if layout == "legacy":
        decl = declare_run(steps=(3, 3), shape=(2, 4, 6), side=False, timestamps=False, dtype="float64", **kw)
    else:
        decl = declare_run(steps=steps, shape=(2, 4, 6), **kw)
    return write_layout(tmp_path / f"{layout}.h5", decl, layout), decl


def writer_file(tmp_path, steps=(5, 0, 7), present=True):
    """A RunWriter run: indexed (lazy) layout, a present mask."""
    rng = np.random.default_rng(3)
    path = tmp_path / "writer.h5"
    masks = []
    with RunWriter(path, "delayScan", run=1_700_000_000) as w:
        for k, n in enumerate(steps):
            frames = rng.integers(0, 4000, (n, 2, 4, 6), dtype=np.uint16)
            mask = np.arange(n) % 3 != 1 if present else np.ones(n, bool)
            masks.append(mask)
            amp = rng.random((n, 4), dtype=np.float32)
            w.add_step({"epixM": frames, "wave8": {"peakAmplitude": amp}}, present={"epixM": mask} if present else None,
                       delay=10.0 * (k + 1))
    return str(path), masks


def loop(path, name="epixM"):
    """What the event loop sees: [(step, i, timestamp, frame or None)]."""
    run = next(DataSource(files=path).runs())
    det = run.Detector(name)
    return [(evt._step, evt._i, evt.timestamp, det.raw.raw(evt)) for evt in run.events()]


def open_run(path):
    return next(DataSource(files=path).runs())


# -- random access ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["canonical", "padded", "stepgroups", "legacy"])
def test_times_event_and_step_event_in_every_layout(tmp_path, layout):
    path, _ = layout_file(tmp_path, layout)
    seen = loop(path)
    run = open_run(path)
    det = run.Detector("epixM")
    np.testing.assert_array_equal(run.times(), [s[2] for s in seen])
    assert run.times().dtype == np.uint64
    for step, i, ts, frame in reversed(seen):  # any order: random access
        evt = run.event(ts)
        assert (evt._step, evt._i, evt.timestamp) == (step, i, ts) and isinstance(evt.timestamp, int)
        np.testing.assert_array_equal(det.raw.raw(evt), frame)
        by_index = run_step(run, step).event(i)
        assert (by_index._step, by_index._i, by_index.timestamp) == (step, i, ts)
    # the cursor is untouched: the loop still sees every event
    assert [(e._step, e._i) for e in run.events()] == [(s[0], s[1]) for s in seen]


def run_step(run, k):
    from calibsuite_h5source.psana2.source import Step

    return Step(run, k)


def test_unknown_timestamps_give_none_and_non_integers_raise(tmp_path):
    path, _ = layout_file(tmp_path, "canonical")
    run = open_run(path)
    t = run.times()
    assert run.event(int(t[0]) + 1) is None
    assert run.event(-1) is None and run.event(2**70) is None
    assert run.event(np.uint64(t[3])).timestamp == int(t[3])
    with pytest.raises(TypeError, match="integer"):
        run.event(float(t[0]))
    with pytest.raises(TypeError, match="integer"):
        run.event(str(t[0]))


def test_times_reads_no_frames_and_opens_no_step_dataset(tmp_path, mocker):
    path, _ = writer_file(tmp_path)
    read = mocker.patch.object(EventArray, "read", side_effect=AssertionError("frame read"))
    run = open_run(path)
    assert len(run.times()) == 12
    assert run.event(int(run.times()[-1]))._step == 2
    read.assert_not_called()
    lazy = run._index.area["epixM"].steps
    assert lazy[2]._dataset is None  # step 2's frame dataset was never opened


def test_timestamps_keyword_costs_the_selected_reads_only(tmp_path, mocker, caplog):
    path, _ = writer_file(tmp_path, present=False)
    times = open_run(path).times()
    wanted = [int(times[-1]), int(times[1]), int(times[1]) + 7]  # one unknown, out of order
    spy = mocker.spy(EventArray, "read")
    with caplog.at_level(logging.WARNING):
        run = next(DataSource(files=path, timestamps=wanted).runs())
    assert "1 of the 3 timestamps= are not in this run" in caplog.text
    det = run.Detector("epixM")
    got = [(e._step, e._i, det.raw.raw(e).shape) for e in run.events()]
    assert got == [(0, 1, (2, 4, 6)), (2, 6, (2, 4, 6))]  # run order
    assert spy.call_count == 2
    assert run._index.area["epixM"].steps[1]._dataset is None  # untouched step never opened


# -- frames ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["canonical", "padded", "stepgroups", "legacy"])
def test_frames_equal_the_event_loop_in_every_layout(tmp_path, layout):
    path, _ = layout_file(tmp_path, layout)
    seen = loop(path)
    raw = open_run(path).Detector("epixM").raw
    every = np.stack([s[3] for s in seen])
    got = raw.frames()
    assert got.dtype == every.dtype and got.shape == every.shape
    np.testing.assert_array_equal(got, every)
    for k in sorted({s[0] for s in seen}):
        np.testing.assert_array_equal(raw.frames(step=k), np.stack([s[3] for s in seen if s[0] == k]))
    np.testing.assert_array_equal(raw.frames(step=-1), np.stack([s[3] for s in seen if s[0] == seen[-1][0]]))
    picks = [len(seen) - 1, 0, 4, 4, -2]  # any order, repeats, negative: run-wide event numbers
    np.testing.assert_array_equal(raw.frames(events=picks), every[picks])
    np.testing.assert_array_equal(raw.frames(events=slice(1, None, 2)), every[1::2])
    np.testing.assert_array_equal(raw.frames(step=0, events=[2, 0]), every[[2, 0]])
    assert raw.frames(events=[]).shape == (0, *every.shape[1:])


def rechunk(path, h5path, events_per_chunk):
    with h5py.File(path, "a") as f:
        data = f[h5path][()]
        del f[h5path]
        f.create_dataset(h5path, data=data, chunks=(events_per_chunk, *data.shape[1:]) if len(data) else None,
                         compression="gzip")


def test_frames_of_writer_file_with_multi_event_chunks_and_empty_step(tmp_path):
    path, masks = writer_file(tmp_path, present=False)
    rechunk(path, "epixM/2", 3)
    seen = loop(path)
    raw = open_run(path).Detector("epixM").raw
    np.testing.assert_array_equal(raw.frames(), np.stack([s[3] for s in seen]))
    assert raw.frames(step=1).shape == (0, 2, 4, 6)
    np.testing.assert_array_equal(raw.frames(step=2, events=[6, 0, 3]), np.stack([seen[j][3] for j in (11, 5, 8)]))


def test_missing_events_dropped_by_default_or_kept(tmp_path):
    path, masks = writer_file(tmp_path)
    seen = loop(path)
    raw = open_run(path).Detector("epixM").raw
    np.testing.assert_array_equal(raw.frames(), np.stack([s[3] for s in seen if s[3] is not None]))
    kept = raw.frames(missing="keep")
    mask = np.concatenate(masks)
    np.testing.assert_array_equal(raw.present(), mask)
    assert len(kept) == 12 and not kept[~mask].any()  # absent events as stored: zeros
    np.testing.assert_array_equal(kept[mask], raw.frames())
    np.testing.assert_array_equal(raw.frames(step=0, events=[1, 0]), kept[[0]])  # event 1 is absent
    with pytest.raises(ValueError, match="missing must be one of"):
        raw.frames(missing="zero")


def test_frames_refuses_over_the_memory_limit_naming_the_size(tmp_path, mocker):
    path, _ = layout_file(tmp_path, "canonical")
    raw = open_run(path).Detector("epixM").raw
    direct = mocker.spy(h5py.Dataset, "read_direct")
    with pytest.raises(ArrayTooLargeError, match=r"would need 864 B \(9 events of \(2, 4, 6\) uint16\).*limit of 100 B"):
        raw.frames(max_bytes=100)
    direct.assert_not_called()
    assert isinstance(ArrayTooLargeError("x"), MemoryError)
    assert raw.frames(max_bytes=864).shape == (9, 2, 4, 6)
    assert arrays.DEFAULT_MAX_BYTES <= 4 * 2**30


def test_bad_selections_raise_clear_errors(tmp_path):
    path, _ = layout_file(tmp_path, "canonical")
    raw = open_run(path).Detector("epixM").raw
    with pytest.raises(IndexError, match="step 3 does not exist: the run has 3 steps"):
        raw.frames(step=3)
    with pytest.raises(IndexError, match="event 9 does not exist"):
        raw.frames(events=[9])
    with pytest.raises(IndexError, match="event 3 does not exist"):
        raw.frames(step=1, events=[3])
    with pytest.raises(TypeError, match="boolean mask"):
        raw.frames(events=np.ones(9, bool))


def test_block_groups_are_chunk_aligned():
    idx = np.array([0, 1, 2, 3, 4, 9, 10, 40, 41, 63, 64, 65])
    groups = dataset_mod.block_groups(idx, chunk=4, row_bytes=1, block_bytes=64)
    spans = [idx[a:b].tolist() for a, b in groups]
    # chunks 0,1,2 touch -> one group; chunk 10 is alone; 63|64 is a block boundary (block = 64 events)
    assert spans == [[0, 1, 2, 3, 4, 9, 10], [40, 41], [63], [64, 65]]
    assert dataset_mod.block_groups(np.arange(10), chunk=1, row_bytes=10, block_bytes=30) == [(0, 3), (3, 6), (6, 9), (9, 10)]


def test_sparse_picks_read_their_chunks_not_the_span(tmp_path, mocker):
    path, _ = layout_file(tmp_path, "canonical", steps=(50,))  # one event per chunk
    run = open_run(path)
    raw = run.Detector("epixM").raw
    every = raw.frames()
    raw.raw(next(run.events()))  # a per-event read plans the dataset (small first selections go through h5py)
    get = mocker.spy(h5py.Dataset, "__getitem__")
    direct = mocker.spy(h5py.Dataset, "read_direct")
    preadv = mocker.spy(os, "preadv")
    np.testing.assert_array_equal(raw.frames(events=[40, 0, 20]), every[[40, 0, 20]])
    # one direct read per chunk, straight into the output; nothing through h5py, nothing else read
    assert get.call_count == 0 and direct.call_count == 0 and preadv.call_count == 3


def test_sparse_picks_through_h5py_read_their_chunks_not_the_span(tmp_path, mocker):
    from calibsuite_h5source.h5 import fastread

    mocker.patch.object(fastread, "ENABLED", False)
    path, _ = layout_file(tmp_path, "canonical", steps=(50,))
    raw = open_run(path).Detector("epixM").raw
    every = raw.frames()
    get = mocker.spy(h5py.Dataset, "__getitem__")
    direct = mocker.spy(h5py.Dataset, "read_direct")
    np.testing.assert_array_equal(raw.frames(events=[40, 0, 20]), every[[40, 0, 20]])
    assert get.call_count == 0 and direct.call_count == 3  # one chunk each, straight into the output


def test_side_data_and_scan_arrays_equal_the_loop(tmp_path):
    for layout in ("canonical", "padded", "stepgroups"):
        path, decl = layout_file(tmp_path, layout, per_event_scan=layout != "padded")
        run = open_run(path)
        wave8, delay = run.Detector("wave8"), run.Detector("delay")
        evts = list(run.events())
        np.testing.assert_array_equal(wave8.raw.array("peakAmplitude"), [wave8.raw.peakAmplitude(e) for e in evts])
        np.testing.assert_array_equal(wave8.raw.array("peakAmplitude", step=2, events=[1]),
                                      decl["side"]["wave8"]["peakAmplitude"][2][[1]])
        np.testing.assert_array_equal(delay.array(), [delay(e) for e in evts])
        np.testing.assert_array_equal(run.Detector("step_value").array(step=1), [20.0, 20.0])
        with pytest.raises(KeyError, match="no field 'peakA'"):
            wave8.raw.array("peakA")


def test_importing_and_reading_frames_imports_neither_dask_nor_xarray(tmp_path):
    path, _ = layout_file(tmp_path, "canonical")
    code = ("import sys; from calibsuite_h5source import DataSource; "
            f"run = next(DataSource(files={path!r}).runs()); run.Detector('epixM').raw.frames(); run.times(); "
            "print([m for m in ('dask', 'xarray', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_module_frames_keep_the_module_axis(tmp_path):
    decl = declare_run(steps=(2, 1), shape=(1, 4, 6))
    run = open_run(write_layout(tmp_path / "one.h5", decl))
    raw = run.Detector("epixM").raw
    frames = raw.frames()
    assert frames.shape == (3, 1, 4, 6)  # [event, module, row, col], whatever det.raw.raw returns
    np.testing.assert_array_equal(frames[:, 0], [np.reshape(raw.raw(e), (4, 6)) for e in run.events()])


def test_a_damaged_event_index_is_a_clear_error_not_a_huge_allocation(tmp_path):
    """nEvents promising 10**11 events in step 1 once sized np.arange (MemoryError, 745 GiB) before the
    index was checked against the data."""
    from calibsuite_h5source import EventCountError

    path = tmp_path / "r.h5"
    with RunWriter(path, "delayScan") as w:
        for k, n in enumerate((3, 2)):
            w.add_step({"epixM": np.zeros((n, 1, 2, 2), np.uint16), "wave8": {"amp": np.zeros(n)}}, delay=float(k))
    with h5py.File(path, "a") as f:
        f["ancillaryData/nEvents"][1] = 10**11
    run = next(DataSource(files=str(path)).runs())
    det, wave8, delay = run.Detector("epixM"), run.Detector("wave8"), run.Detector("delay")
    for read in (lambda: det.raw.frames(events=slice(0, 2)), det.raw.dask_array, lambda: wave8.raw.array("amp"),
                 delay.array):
        with pytest.raises(EventCountError, match=r"/epixM/1: /ancillaryData/nEvents promises 100000000000 events"
                                                  r"|/wave8/amp/1: /ancillaryData/nEvents promises"):
            read()
    assert det.raw.frames(step=0).shape == (3, 1, 2, 2)  # the intact step still reads
