"""``DataSource(..., zero_copy=True)``: large frames as private copy-on-write mappings of the file."""

import gc
import mmap
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, H5SourceError, RunWriter
from calibsuite_h5source.h5 import fastread

BIG = (4, 176, 192)  # 270 KB of uint16: mapped
SMALL = (2, 16, 16)  # copied


def _mapped(a) -> bool:
    """True when the array's memory is an mmap (through its bases, and a memoryview's object)."""
    while a is not None:
        if isinstance(a, mmap.mmap):
            return True
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return False


def _frames(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 2**14, (n, *shape)).astype(np.uint16)


def _write(path, frames, compression=None):
    with RunWriter(path, "dark", compression=compression) as w:
        for k in range(2):
            with w.step(step_value=float(k)) as s:
                for fr in frames[k::2]:
                    s.event(epixM=fr)
    return [fr for k in range(2) for fr in frames[k::2]]


def _read(path, **kwargs):
    run = next(DataSource(files=str(path), **kwargs).runs())
    det = run.Detector("epixM")
    return [det.raw.raw(evt) for evt in run.events()]


def test_mapped_frames_equal_copies_and_are_the_callers_own(tmp_path):
    expected = _write(tmp_path / "r.h5", _frames(6, BIG))
    got = _read(tmp_path / "r.h5", zero_copy=True)
    assert all(_mapped(a) and a.flags.writeable for a in got)
    assert all(np.array_equal(a, e) and a.dtype == e.dtype for a, e in zip(got, expected, strict=True))
    got[0][:] = 7  # private: neither the file nor a later read sees it
    again = _read(tmp_path / "r.h5", zero_copy=True)
    assert np.array_equal(again[0], expected[0]) and np.all(got[0] == 7)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert np.array_equal(f["epixM/0"][0], expected[0])


def test_contiguous_and_multi_event_chunks_map_too(tmp_path):
    data = _frames(5, BIG, seed=3)
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        f.create_dataset("epixM/0", data=data)  # contiguous
        f.create_dataset("epixM/1", data=data[::-1], chunks=(2, *BIG))  # two events per chunk, a partial last
    got = _read(path, zero_copy=True)
    assert all(_mapped(a) for a in got)
    assert all(np.array_equal(a, e) for a, e in zip(got, [*data, *data[::-1]], strict=True))


def test_small_and_compressed_frames_are_copied(tmp_path):
    small = _write(tmp_path / "small.h5", _frames(4, SMALL))
    got = _read(tmp_path / "small.h5", zero_copy=True)
    assert not any(_mapped(a) for a in got) and all(np.array_equal(a, e) for a, e in zip(got, small, strict=True))
    big = _write(tmp_path / "gz.h5", _frames(4, BIG), compression="gzip")
    got = _read(tmp_path / "gz.h5", zero_copy=True)
    assert not any(_mapped(a) for a in got) and all(np.array_equal(a, e) for a, e in zip(got, big, strict=True))


def test_default_reads_copy(tmp_path):
    _write(tmp_path / "r.h5", _frames(2, BIG))
    assert not any(_mapped(a) for a in _read(tmp_path / "r.h5"))


def test_live_mappings_are_capped(tmp_path, monkeypatch):
    expected = _write(tmp_path / "r.h5", _frames(6, BIG))
    gc.collect()
    monkeypatch.setattr(fastread, "MAX_MAPPED", fastread._n_mapped + 2)
    got = _read(tmp_path / "r.h5", zero_copy=True)
    assert [_mapped(a) for a in got] == [True, True, False, False, False, False]
    assert all(np.array_equal(a, e) for a, e in zip(got, expected, strict=True))
    del got
    gc.collect()  # the mappings are released with their arrays: mapping resumes
    assert all(_mapped(a) for a in _read(tmp_path / "r.h5", zero_copy=True)[:2])


def test_a_file_truncated_after_opening_is_an_error_not_a_crash(tmp_path):
    _write(tmp_path / "r.h5", _frames(6, BIG))
    code = """
import os, sys
from calibsuite_h5source import DataSource, DamagedFileError
run = next(DataSource(files=sys.argv[1], zero_copy=True).runs())
det = run.Detector('epixM')
events = run.events()
det.raw.raw(next(events))
os.truncate(sys.argv[1], os.path.getsize(sys.argv[1]) // 2)
try:
    for evt in events:
        det.raw.raw(evt)
except DamagedFileError as exc:
    print('DAMAGED', exc)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.h5")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("DAMAGED") and "truncated" in out.stdout and "/epixM/" in out.stdout


def test_zero_copy_and_live_are_refused_together(tmp_path):
    with pytest.raises(H5SourceError, match="zero_copy"):
        DataSource(files=str(tmp_path / "r.h5"), zero_copy=True, live=True)


def test_the_factory_does_not_pass_zero_copy_to_psana(mocker, tmp_path):
    fake = mocker.MagicMock()
    mocker.patch.dict(sys.modules, {"psana": fake})
    path = tmp_path / "r.xtc2"
    path.write_bytes(b"")
    DataSource(files=str(path), zero_copy=True, max_events=3)
    fake.DataSource.assert_called_once_with(files=str(path), max_events=3)


@pytest.mark.skipif(not hasattr(os, "preadv"), reason="the direct read path needs os.preadv")
def test_mapping_needs_the_direct_path(tmp_path, monkeypatch):
    monkeypatch.setattr(fastread, "ENABLED", False)  # CALIBSUITE_DIRECT_READ=0: h5py reads, copies
    expected = _write(tmp_path / "r.h5", _frames(2, BIG))
    got = _read(tmp_path / "r.h5", zero_copy=True)
    assert not any(_mapped(a) for a in got) and all(np.array_equal(a, e) for a, e in zip(got, expected, strict=True))
