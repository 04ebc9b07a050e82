"""Direct reads (calibsuite_h5source.h5.fastread): byte-identical to h5py's, taken only where exact."""

import os

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DamagedFileError, DataSource, H5SourceError
from calibsuite_h5source.h5 import fastread
from calibsuite_h5source.read.run_index import open_run_index
from calibsuite_h5source.testing.layouts import LAYOUTS, declare_run, write_layout

DTYPES = ("uint16", "int32", "float32", "float64", "uint8", "int64")


def every_event(index):
    """Yield ``(EventArray, i)`` for every event of every area and side source."""
    sources = [ea for src in index.area.values() for ea in src.steps]
    sources += [ea for fields in index.side.values() for per in fields.values() for ea in per]
    for ea in sources:
        for i in range(ea.n):
            yield ea, i


def assert_identical(ours, theirs):
    assert type(ours) is type(theirs)
    assert np.asarray(ours).dtype == np.asarray(theirs).dtype
    assert np.shape(ours) == np.shape(theirs)
    assert np.asarray(ours).tobytes() == np.asarray(theirs).tobytes()


def check_all(path, direct_expected=True):
    """Every event read by fastread equals h5py's read; return the kinds of plan taken."""
    index = open_run_index(path)
    try:
        plans = set()
        for ea, i in every_event(index):
            ours = ea.read(i)
            assert_identical(ours, ea.dataset[ea.prefix + (i,)])
            plans.add(type(ea._plan).__name__ if ea._plan else "h5py")
        return plans
    finally:
        index.close()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_layout_and_dtype_reads_byte_identical_directly(tmp_path, layout, dtype, mocker):
    steps = (3, 3) if layout == "legacy" else (3, 1, 4)
    decl = declare_run(steps=steps, dtype=dtype, side=layout != "legacy", timestamps=layout != "legacy")
    path = write_layout(tmp_path / f"{layout}.h5", decl, layout)
    spy = mocker.spy(fastread, "_direct")
    assert check_all(path) == {"DirectPlan"}
    assert spy.call_count > 0 and all(r is not None for r in spy.spy_return_list)
    # and through the public API: the frames declared
    run = next(DataSource(files=path, keep_module_axis=True).runs())
    det = run.Detector("epixM")
    got = [det.raw.raw(e) for e in run.events()]
    want = [f for per in decl["detectors"]["epixM"] for f in per]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and np.array_equal(g, w)


def write_one(path, data, **kwargs):
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        f.create_dataset("epixM/0", data=data, **kwargs)
    return str(path)


def frames(n=10, shape=(2, 8, 16), dtype="uint16", seed=1):
    return np.random.default_rng(seed).integers(0, 4000, size=(n, *shape)).astype(dtype)


@pytest.mark.parametrize("per_chunk", [1, 3, 4, 10, 16])
def test_multi_event_and_edge_chunks_read_directly(tmp_path, per_chunk):
    data = frames(10)
    path = write_one(tmp_path / "r.h5", data, chunks=(per_chunk, 2, 8, 16), maxshape=(None, 2, 8, 16))
    assert check_all(path) == {"DirectPlan"}


def test_userblock_file_reads_directly(tmp_path):
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        f.create_dataset("epixM/0", data=frames(5), chunks=(1, 2, 8, 16))
    assert check_all(path) == {"DirectPlan"}


@pytest.mark.parametrize("kwargs", [
    dict(chunks=(1, 1, 8, 16)),              # an event spread over two chunks
    dict(chunks=(2, 2, 4, 16)),
    dict(chunks=(1, 2, 8, 16), compression="gzip"),
    dict(chunks=(1, 2, 8, 16), compression="lzf"),
    dict(chunks=(1, 2, 8, 16), shuffle=True),
    dict(chunks=(1, 2, 8, 16), fletcher32=True),
    dict(dtype=">u2"),                       # not the native byte order: HDF5 converts
    dict(dtype="<u2", chunks=None),          # contiguous, still direct (control)
])
def test_fallback_to_h5py_where_direct_is_not_exact(tmp_path, kwargs, mocker):
    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", "uint16")
    path = write_one(tmp_path / "r.h5", frames(6, dtype=dtype), **kwargs)
    spy = mocker.spy(fastread, "_direct")
    plans = check_all(path)
    if kwargs.get("chunks", 0) is None:
        assert plans == {"DirectPlan"}
    else:
        assert plans == {"h5py"}
        assert spy.call_count == 0


def test_bool_and_compact_data_read_through_h5py(tmp_path):
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        f.create_dataset("epixM/0", data=frames(3))
        f.create_dataset("flags/on/0", data=np.array([True, False, True]))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((3,))
        h5py.h5d.create(f.require_group("flags/count").id, b"0", h5py.h5t.NATIVE_INT32, space, dcpl=dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.arange(3, dtype=np.int32))
    index = open_run_index(path)
    try:
        for field in ("on", "count"):
            ea = index.side["flags"][field][0]
            for i in range(3):
                assert_identical(ea.read(i), ea.dataset[i])
            assert ea._plan is False
        assert isinstance(index.area["epixM"].steps[0]._plan or fastread.plan_for(index.area["epixM"].steps[0]),
                          fastread.DirectPlan)
    finally:
        index.close()


def test_external_link_and_virtual_dataset_read_through_h5py(tmp_path, mocker):
    data = frames(4)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("frames", data=data, chunks=(1, 2, 8, 16))
    path = tmp_path / "run.h5"
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        f["epixM/0"] = h5py.ExternalLink("data.h5", "/frames")
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[:] = h5py.VirtualSource("data.h5", "frames", shape=data.shape)
        f.create_virtual_dataset("epixM/1", layout)
    spy = mocker.spy(fastread, "_direct")
    assert check_all(path) == {"h5py"}
    assert spy.call_count == 0
    run = next(DataSource(files=str(path), keep_module_axis=True).runs())
    det = run.Detector("epixM")
    got = np.stack([det.raw.raw(e) for e in run.events()])
    assert np.array_equal(got, np.concatenate([data, data]))


def test_unwritten_chunk_reads_fill_values_through_h5py(tmp_path, mocker):
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        ds = f.create_dataset("epixM/0", shape=(4, 2, 8, 16), dtype="uint16", chunks=(1, 2, 8, 16), fillvalue=7)
        ds[0] = frames(1)[0]
        ds[2] = frames(1, seed=2)[0]
    spy = mocker.spy(fastread, "_direct")
    index = open_run_index(path)
    try:
        ea = index.area["epixM"].steps[0]
        got = [ea.read(i) for i in range(4)]
        assert [r is None for r in spy.spy_return_list] == [False, True, False, True]
        assert np.all(got[1] == 7) and np.all(got[3] == 7)
        for i in range(4):
            assert_identical(got[i], ea.dataset[i])
    finally:
        index.close()


def test_arrays_belong_to_the_caller(tmp_path):
    path = write_one(tmp_path / "r.h5", frames(5), chunks=(1, 2, 8, 16))
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    events = list(run.events())
    a = det.raw.raw(events[0])
    keep = a.copy()
    b = det.raw.raw(events[1])
    c = det.raw.raw(events[0])
    assert a.flags.writeable and a.flags.owndata and a.flags.c_contiguous
    assert not np.shares_memory(a, b) and not np.shares_memory(a, c)
    assert np.array_equal(a, keep) and np.array_equal(a, c)
    a[...] = 0  # writing ours changes nothing of later reads
    assert np.array_equal(det.raw.raw(events[0]), keep)


def plan_of(path):
    index = open_run_index(path)
    ea = index.area["epixM"].steps[0]
    ea.read(0)
    assert isinstance(ea._plan, fastread.DirectPlan)
    return index, ea


def test_damaged_chunk_size_is_an_error_not_wrong_data(tmp_path):
    index, ea = plan_of(write_one(tmp_path / "r.h5", frames(4), chunks=(1, 2, 8, 16)))
    try:
        ea._plan.sizes[2] -= 2  # what a damaged chunk index would say
        assert ea.read(1).shape == (2, 8, 16)
        with pytest.raises(DamagedFileError, match=r"r\.h5: /epixM/0: .*event 2.*damaged chunk: stored size"):
            ea.read(2)
    finally:
        index.close()


def test_chunk_past_the_end_of_the_file_is_an_error(tmp_path):
    path = write_one(tmp_path / "r.h5", frames(4), chunks=(1, 2, 8, 16))
    index, ea = plan_of(path)
    try:
        ea._plan.offsets[3] = os.path.getsize(path) - 100
        with pytest.raises(DamagedFileError, match="truncated file"):
            ea.read(3)
    finally:
        index.close()


def test_first_read_is_verified_and_a_mismatch_falls_back(tmp_path, caplog):
    path = write_one(tmp_path / "r.h5", frames(4), chunks=(1, 2, 8, 16))
    index = open_run_index(path)
    try:
        ea = index.area["epixM"].steps[0]
        plan = ea._plan = fastread.plan_for(ea)
        plan.offsets[0] = plan.offsets[1]  # as if addresses meant something else
        assert_identical(ea.read(0), ea.dataset[0])
        assert ea._plan is False and "differs from h5py's" in caplog.text
        assert_identical(ea.read(1), ea.dataset[1])
    finally:
        index.close()


def test_read_after_close_raises_never_reads_another_file(tmp_path):
    path = write_one(tmp_path / "r.h5", frames(4), chunks=(1, 2, 8, 16))
    index, ea = plan_of(path)
    index.close()
    other = open(path, "rb")  # may reuse the closed descriptor's number
    try:
        with pytest.raises(H5SourceError):
            ea.read(1)
    finally:
        other.close()


def test_disabled_by_environment(tmp_path, monkeypatch, mocker):
    monkeypatch.setattr(fastread, "ENABLED", False)
    path = write_one(tmp_path / "r.h5", frames(3), chunks=(1, 2, 8, 16))
    spy = mocker.spy(fastread, "_direct")
    assert check_all(path) == {"h5py"}
    assert spy.call_count == 0


def test_negative_and_out_of_range_indices_behave_as_h5py(tmp_path):
    path = write_one(tmp_path / "r.h5", frames(4), chunks=(1, 2, 8, 16))
    index, ea = plan_of(path)
    try:
        assert_identical(ea.read(-1), ea.dataset[-1])
        with pytest.raises(H5SourceError):
            ea.read(4)
    finally:
        index.close()
