"""Compressed chunks decompressed outside h5py (calibsuite_h5source.h5.fastcompressed): identical, or h5py reads."""

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DamagedFileError, DataSource
from calibsuite_h5source.h5 import fastcompressed, fastread
from calibsuite_h5source.read.run_index import open_run_index

hdf5plugin = pytest.importorskip("hdf5plugin")

SHAPE = (2, 16, 24)


def noisy(n=9, dtype="uint16", seed=0):
    """Pedestal plus noise, as detector frames are."""
    rng = np.random.default_rng(seed)
    ped = rng.normal(1000, 50, SHAPE)
    return np.stack([(ped + rng.normal(0, 8, SHAPE)) for _ in range(n)]).astype(dtype)


@pytest.fixture(autouse=True)
def _fresh_decoders():
    """Decoders are made once per process; tests that hide a library or package need them made afresh."""
    fastcompressed._decoder.cache_clear()
    yield
    fastcompressed._decoder.cache_clear()


def filters():
    return {
        "bitshuffle": (dict(hdf5plugin.Bitshuffle(cname="lz4")), "bitshuffle"),
        "bitshuffle-block": (dict(hdf5plugin.Bitshuffle(nelems=64, cname="lz4")), "bitshuffle"),
        "blosc-lz4": (dict(hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE)), "blosc2"),
        "blosc-zstd-bitshuffle": (dict(hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.BITSHUFFLE)), "blosc2"),
        "zstd": (dict(hdf5plugin.Zstd()), "zstandard"),
    }


def write(path, data, chunks=(1, *SHAPE), **kwargs):
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        f.create_dataset("epixM/0", data=data, chunks=chunks, **kwargs)
    return str(path)


def read_all(path):
    index = open_run_index(path)
    try:
        ea = index.area["epixM"].steps[0]
        got = [ea.read(i) for i in range(ea.n)]
        want = [ea.dataset[i] for i in range(ea.n)]
        return ea._plan, got, want
    finally:
        index.close()


@pytest.mark.parametrize("name", sorted(filters()))
@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32", "uint8", "float64"])
def test_compressed_events_are_byte_identical_to_h5py(tmp_path, name, dtype, mocker):
    kwargs, package = filters()[name]
    pytest.importorskip(package)
    data = noisy(11, dtype) if dtype != "float32" else noisy(11, "float32") / 7
    path = write(tmp_path / "r.h5", data, **kwargs)
    spy = mocker.spy(fastread, "_direct")
    plan, got, want = read_all(path)
    assert isinstance(plan, fastcompressed.CompressedPlan)
    assert all(r is not None for r in spy.spy_return_list) and spy.call_count == len(data)
    for g, w, d in zip(got, want, data, strict=True):
        assert g.dtype == w.dtype == d.dtype and g.tobytes() == w.tobytes() == d.tobytes()
        assert g.flags.writeable and g.flags.owndata


@pytest.mark.parametrize("kwargs", [
    dict(chunks=(3, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4")),   # several events per chunk
    dict(chunks=(1, 1, 16, 24), **hdf5plugin.Zstd()),                 # an event over two chunks
    dict(chunks=(1, *SHAPE), shuffle=True, compression="gzip"),       # two filters
    dict(chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(cname="zstd")),  # bitshuffle's zstd: h5py reads it
    dict(chunks=(1, *SHAPE), **hdf5plugin.LZ4()),                     # a filter we leave to h5py
])
def test_other_compressed_layouts_read_through_h5py(tmp_path, kwargs, mocker):
    path = write(tmp_path / "r.h5", noisy(7), **kwargs)
    spy = mocker.spy(fastread, "_direct")
    plan, got, want = read_all(path)
    assert plan is False and spy.call_count == 0
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("package, name", [("bitshuffle", "bitshuffle"), ("blosc2", "blosc-lz4"), ("zstandard", "zstd")])
def test_without_any_decompressor_h5py_reads(tmp_path, mocker, package, name):
    mocker.patch.dict(sys.modules, {package: None})  # import -> ImportError
    mocker.patch.object(fastcompressed, "_plugin_library", return_value=None)  # nor hdf5plugin's library
    path = write(tmp_path / "r.h5", noisy(5), **filters()[name][0])
    plan, got, want = read_all(path)
    assert plan is False
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


LIBRARIES = {"bitshuffle": ("h5bshuf", "bshuf_decompress_lz4"), "blosc2": ("h5blosc", "blosc_decompress_ctx"),
             "zstandard": ("h5zstd", "ZSTD_decompress")}


def test_a_library_without_the_function_is_not_used():
    assert fastcompressed._plugin_library("h5zstd", "ZSTD_decompress") is not None
    assert fastcompressed._plugin_library("h5zstd", "no_such_function") is None
    assert fastcompressed._plugin_library("no_such_library", "ZSTD_decompress") is None


@pytest.mark.parametrize("package, name", [("bitshuffle", "bitshuffle"), ("blosc2", "blosc-lz4"), ("zstandard", "zstd")])
def test_hdf5plugins_library_needs_no_package(tmp_path, mocker, package, name):
    assert fastcompressed._plugin_library(*LIBRARIES[package]) is not None
    mocker.patch.dict(sys.modules, {package: None})
    plan, got, want = read_all(write(tmp_path / "r.h5", noisy(7), **filters()[name][0]))
    assert isinstance(plan, fastcompressed.CompressedPlan) and plan.decode.parallel
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("package, name", [("bitshuffle", "bitshuffle"), ("blosc2", "blosc-lz4"), ("zstandard", "zstd")])
def test_the_packages_decompress_without_hdf5plugins_library(tmp_path, mocker, package, name):
    pytest.importorskip(package)
    mocker.patch.object(fastcompressed, "_plugin_library", return_value=None)
    plan, got, want = read_all(write(tmp_path / "r.h5", noisy(7), **filters()[name][0]))
    assert isinstance(plan, fastcompressed.CompressedPlan)
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


def test_sequential_reads_prefetch_a_bounded_few_and_random_reads_drop_them(tmp_path, monkeypatch, mocker):
    pytest.importorskip("zstandard")
    monkeypatch.setattr(fastcompressed, "PREFETCH", 3)
    data = noisy(20)
    path = write(tmp_path / "r.h5", data, **filters()["zstd"][0])
    index = open_run_index(path)
    try:
        ea = index.area["epixM"].steps[0]
        ea.read(0)
        plan = ea._plan
        submit = mocker.spy(fastcompressed._executor(), "submit")
        for i in range(1, 10):
            assert np.array_equal(ea.read(i), data[i])
            assert len(plan._ahead) <= 3
            assert [j for j, _ in plan._ahead] == list(range(i + 1, i + 1 + len(plan._ahead)))
        assert submit.call_count >= 8
        assert np.array_equal(ea.read(15), data[15])  # a jump: what was ahead is dropped
        assert not plan._ahead
        for i in range(16, 20):  # to the end: nothing scheduled past it
            assert np.array_equal(ea.read(i), data[i])
        assert not plan._ahead
        assert np.array_equal(ea.read(3), data[3])
    finally:
        index.close()


@pytest.mark.parametrize("name", ["bitshuffle", "blosc-lz4"])
def test_decompressors_holding_the_gil_use_no_thread_pool(tmp_path, mocker, name):
    kwargs, package = filters()[name]
    pytest.importorskip(package)
    # without a C library: bitshuffle.decompress_lz4 holds the GIL; blosc2 uses its own threads
    mocker.patch.object(fastcompressed, "_bshuf_c_decompress", return_value=None)
    mocker.patch.object(fastcompressed, "_plugin_library", return_value=None)
    executor = mocker.spy(fastcompressed, "_executor")
    plan, got, want = read_all(write(tmp_path / "r.h5", noisy(6), **kwargs))
    assert isinstance(plan, fastcompressed.CompressedPlan) and executor.call_count == 0
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


def test_bitshuffle_c_call_decompresses_on_the_pool(tmp_path, mocker):
    pytest.importorskip("bitshuffle")
    assert fastcompressed._bshuf_c_decompress() is not None, "a bitshuffle C library must be reachable here"
    executor = mocker.spy(fastcompressed, "_executor")
    plan, got, want = read_all(write(tmp_path / "r.h5", noisy(9), **filters()["bitshuffle"][0]))
    assert isinstance(plan, fastcompressed.CompressedPlan) and plan.decode.parallel and executor.call_count > 0
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


def test_no_prefetch_means_no_thread_pool(tmp_path, monkeypatch, mocker):
    pytest.importorskip("zstandard")
    monkeypatch.setattr(fastcompressed, "PREFETCH", 0)
    executor = mocker.spy(fastcompressed, "_executor")
    plan, got, want = read_all(write(tmp_path / "r.h5", noisy(6), **filters()["zstd"][0]))
    assert isinstance(plan, fastcompressed.CompressedPlan) and executor.call_count == 0
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


def test_unwritten_compressed_chunks_read_fill_values_through_h5py(tmp_path):
    pytest.importorskip("bitshuffle")
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        ds = f.create_dataset("epixM/0", shape=(4, *SHAPE), dtype="uint16", chunks=(1, *SHAPE), fillvalue=3,
                              **filters()["bitshuffle"][0])
        ds[0], ds[3] = noisy(2)
    plan, got, want = read_all(path)
    assert isinstance(plan, fastcompressed.CompressedPlan)
    assert np.all(got[1] == 3) and all(g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


def damage(path, event, at, new: bytes):
    """Overwrite bytes ``at`` (an offset inside the chunk, negative from its end) of event ``event``'s chunk."""
    with h5py.File(path, "r") as f:
        info = f["epixM/0"].id.get_chunk_info_by_coord((event, 0, 0, 0))
    pos = info.byte_offset + (at if at >= 0 else info.size + at)
    with open(path, "r+b") as fh:
        fh.seek(pos)
        fh.write(new)


CORRUPTIONS = {
    "bitshuffle": [(0, b"\x00\x00\x00\x00\x00\x10\x00\x00", "declares"),      # uncompressed size
                   (8, b"\x00\x00\x00\x07", "block size"),                     # block size
                   (12, b"\x7f\xff\xff\xff", "damaged bitshuffle chunk")],                  # first block's compressed size
    "blosc-lz4": [(4, b"\x00\x00\x10\x00", "declares"), (12, b"\x01\x00\x00\x00", "declares")],
    "zstd": [(5, b"\x00\x00\x40\x00", "damaged Zstd chunk"), (-6, b"\xff\xff\xff\xff", "damaged Zstd chunk")],
}


@pytest.mark.parametrize("name, at, new, match", [(n, *c) for n, cs in CORRUPTIONS.items() for c in cs])
def test_damaged_chunks_are_errors_never_crashes_or_wrong_data(tmp_path, name, at, new, match):
    kwargs, package = filters()[name]
    pytest.importorskip(package)
    path = write(tmp_path / "r.h5", noisy(4), **kwargs)
    damage(path, 2, at, new)
    code = """
import sys
from calibsuite_h5source import DamagedFileError
from calibsuite_h5source.read.run_index import open_run_index
ea = open_run_index(sys.argv[1]).area['epixM'].steps[0]
ea.read(0); ea.read(1)
try:
    ea.read(2)
except DamagedFileError as exc:
    print('DAMAGED', exc)
else:
    print('READ')
"""
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("DAMAGED") and match in out.stdout and "/epixM/0" in out.stdout
    with pytest.raises(DamagedFileError):  # and in this process, through the public API
        run = next(DataSource(files=path).runs())
        det = run.Detector("epixM")
        for evt in run.events():
            det.raw.raw(evt)


def test_importing_the_package_imports_no_decompressor():
    code = ("import sys, calibsuite_h5source; "
            "print([m for m in ('bitshuffle', 'blosc2', 'zstandard', 'hdf5plugin', "
            "'calibsuite_h5source.h5.fastcompressed') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_copy_of_a_compressed_run_reads_the_same_through_the_api(tmp_path):
    pytest.importorskip("bitshuffle")
    data = noisy(12)
    path = write(tmp_path / "r.h5", data, **filters()["bitshuffle"][0])
    shutil.copy(path, tmp_path / "copy.h5")
    for p in (path, tmp_path / "copy.h5"):
        run = next(DataSource(files=str(p), keep_module_axis=True).runs())
        det = run.Detector("epixM")
        got = np.stack([det.raw.raw(e) for e in run.events()])
        assert np.array_equal(got, data)
