"""The one reader of a stored dataset (calibsuite_h5source.h5.dataset.StoredDataset)."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DamagedFileError, FormatError, H5SourceError
from calibsuite_h5source.h5 import fastread
from calibsuite_h5source.h5.dataset import NotYetVisible, StoredDataset, block_groups, open_stored
from calibsuite_h5source.h5.links import Origin

hdf5plugin = pytest.importorskip("hdf5plugin")

DATA = (np.arange(9 * 2 * 4 * 6, dtype=np.uint16).reshape(9, 2, 4, 6) % 13)

STORAGE = {
    "one-event chunks": dict(chunks=(1, 2, 4, 6)),
    "three-event chunks": dict(chunks=(3, 2, 4, 6)),
    "contiguous": dict(),
    "gzip": dict(chunks=(1, 2, 4, 6), compression="gzip"),
    "zstd": dict(chunks=(1, 2, 4, 6), **hdf5plugin.Zstd()),
    "bitshuffle": dict(chunks=(1, 2, 4, 6), **hdf5plugin.Bitshuffle(cname="lz4")),
    "blosc": dict(chunks=(1, 2, 4, 6), **hdf5plugin.Blosc(cname="lz4")),
}


@pytest.fixture
def stored(tmp_path):
    def make(name, data=DATA, path="d.h5"):
        p = tmp_path / path
        with h5py.File(p, "w") as f:
            f.create_dataset("d", data=data, **STORAGE[name])
        f = h5py.File(p, "r")
        return f, open_stored(f, "/d", (), Origin(p))
    return make


@pytest.mark.parametrize("name", STORAGE)
def test_event_range_and_selection_equal_h5py(stored, name):
    f, r = stored(name)
    with f:
        for i in range(len(DATA)):
            got = r.read(i)
            assert got.dtype == DATA.dtype and got.tobytes() == DATA[i].tobytes()
        np.testing.assert_array_equal(r.read_range(2, 7), DATA[2:7])
        for idx in ([0, 1, 2], [1, 4, 8], [8], list(range(9))):
            out = np.full((len(idx) + 2, *DATA.shape[1:]), 7, DATA.dtype)
            r.read_rows(np.array(idx), out, 1)
            np.testing.assert_array_equal(out[1:-1], DATA[idx])
            assert (out[0] == 7).all() and (out[-1] == 7).all()  # nothing written outside the rows


def test_planned_where_exact(stored):
    kinds = {}
    for name in STORAGE:
        f, r = stored(name, path=f"{name}.h5")
        with f:
            r.read(0)
            kinds[name] = type(r.plan).__name__ if r.plan else "h5py"
    assert kinds == {"one-event chunks": "DirectPlan", "three-event chunks": "DirectPlan", "contiguous": "DirectPlan",
                     "gzip": "h5py", "zstd": "CompressedPlan", "bitshuffle": "CompressedPlan",
                     "blosc": "CompressedPlan"}


def test_padded_prefix(tmp_path):
    data = np.arange(2 * 5 * 3, dtype=np.int32).reshape(2, 5, 3)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.create_dataset("d", data=data, chunks=(1, 5, 3))
    with h5py.File(tmp_path / "p.h5", "r") as f:
        r = StoredDataset(f["d"], (1,), Origin(tmp_path / "p.h5"))
        np.testing.assert_array_equal(r.read(3), data[1, 3])
        out = np.empty((2, 3), np.int32)
        r.read_rows(np.array([0, 4]), out)
        np.testing.assert_array_equal(out, data[1, [0, 4]])


def test_unwritten_chunks_are_fill_values_unless_strict(tmp_path):
    with h5py.File(tmp_path / "u.h5", "w") as f:
        ds = f.create_dataset("d", shape=(6, 2, 4, 6), dtype=np.uint16, chunks=(1, 2, 4, 6))
        ds[0:3] = DATA[0:3]
    with h5py.File(tmp_path / "u.h5", "r") as f:
        r = StoredDataset(f["d"], (), Origin(tmp_path / "u.h5"))
        out = np.ones((6, 2, 4, 6), np.uint16)
        r.read_rows(np.arange(6), out)
        np.testing.assert_array_equal(out[:3], DATA[:3])
        assert not out[3:].any()
        strict = StoredDataset(f["d"], (), Origin(tmp_path / "u.h5"), strict=True)
        np.testing.assert_array_equal(strict.read_range(0, 3), DATA[:3])
        with pytest.raises(DamagedFileError, match="u.h5") as err:
            strict.read_rows(np.arange(6), out)
        assert isinstance(err.value.__cause__, NotYetVisible)


@pytest.mark.parametrize("name", ["zstd", "bitshuffle", "gzip"])
def test_a_damaged_chunk_is_a_damaged_file_error_in_every_read(stored, tmp_path, name):
    f, r = stored(name)
    info = f["d"].id.get_chunk_info_by_coord((4, 0, 0, 0))
    f.close()
    with open(tmp_path / "d.h5", "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * 16)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        for read in (lambda r: r.read(4), lambda r: r.read_range(3, 6),
                     lambda r: r.read_rows(np.arange(9), np.empty_like(DATA))):
            r = StoredDataset(f["d"], (), Origin(tmp_path / "d.h5"))
            with pytest.raises(DamagedFileError, match=r"d\.h5: /d"):
                read(r)


def test_a_planner_bug_is_raised_not_hidden_behind_h5py(stored, monkeypatch):
    f, r = stored("one-event chunks")

    def broken(*args):
        raise AttributeError("a bug")

    monkeypatch.setattr(fastread, "_plan", broken)
    with f, pytest.raises(H5SourceError) as err:
        r.read(0)
    assert isinstance(err.value.__cause__, AttributeError)


def test_a_storage_libhdf5_refuses_to_describe_is_read_through_h5py(stored, monkeypatch):
    f, r = stored("one-event chunks")

    def refused(*args):
        raise OSError("libhdf5 cannot say")

    monkeypatch.setattr(fastread, "_plan", refused)
    with f:
        np.testing.assert_array_equal(r.read(2), DATA[2])
        assert r.plan is False


def test_open_stored_checks_what_it_opens(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as g:
        g.create_group("grp")
    with h5py.File(tmp_path / "d.h5", "r") as f:
        with pytest.raises(FormatError, match="expected a dataset"):
            open_stored(f, "/grp")


def test_block_groups_are_chunk_aligned():
    idx = np.array([0, 1, 2, 3, 4, 9, 10, 40, 41, 63, 64, 65])
    spans = [idx[a:b].tolist() for a, b in block_groups(idx, chunk=4, row_bytes=1, block_bytes=64)]
    assert spans == [[0, 1, 2, 3, 4, 9, 10], [40, 41], [63], [64, 65]]


def test_the_filter_plugin_is_loaded_when_a_dataset_needs_it(stored, tmp_path):
    f, _ = stored("bitshuffle")
    f.close()
    code = ("import sys, h5py, numpy as np\n"
            "from calibsuite_h5source.h5.dataset import open_stored\n"
            f"f = h5py.File({str(tmp_path / 'd.h5')!r}, 'r')\n"
            "assert 'hdf5plugin' not in sys.modules\n"
            "r = open_stored(f, '/d')\n"
            "out = np.empty((9, 2, 4, 6), np.uint16); r.read_rows(np.arange(9), out)\n"
            "print(int(out.sum()), 'hdf5plugin' in sys.modules)")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert got == [str(int(DATA.sum())), "True"]


def test_a_small_first_read_of_unfiltered_data_is_not_planned_but_filtered_data_always_is(stored):
    f, r = stored("one-event chunks", path="u.h5")
    with f:
        np.testing.assert_array_equal(r.read_range(0, 2), DATA[:2])
        assert r._plan is None  # h5py read it; nothing decided
        r.read(0)
        assert isinstance(r._plan, fastread.DirectPlan)  # the event loop plans it
    f, r = stored("zstd", path="z.h5")
    with f:
        np.testing.assert_array_equal(r.read_range(0, 2), DATA[:2])
        assert type(r._plan).__name__ == "CompressedPlan"  # framing checked by every surface alike
