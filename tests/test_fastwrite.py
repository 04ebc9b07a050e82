"""The writer's low-level per-step calls (fastwrite) make exactly what h5py's high-level calls make."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.write.fastwrite import AttrSetter, DatasetMaker, ValueAppender, append_rows


def _creation(ds):
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(k)[0] for k in range(dcpl.get_nfilters())]
    return ds.shape, ds.maxshape, ds.chunks, ds.dtype, filters, ds.fillvalue


@pytest.mark.parametrize("kwargs", [{}, {"compression": "gzip", "compression_opts": 4}, {"compression": "lzf"}])
def test_dataset_maker_copies_the_first_datasets_creation_properties(tmp_path, kwargs):
    rng = np.random.default_rng(1)
    blocks = [rng.integers(0, 4000, (n, 2, 3, 4)).astype(np.uint16) for n in (5, 0, 7)]
    with h5py.File(tmp_path / "m.h5", "w") as f:
        maker = DatasetMaker(f)
        made = [maker.create("k", f"det/{k}", b, True,
                             lambda b=b, k=k: f.create_dataset(f"det/{k}", data=b, maxshape=(None, 2, 3, 4),
                                                               chunks=(1, 2, 3, 4), **kwargs))
                for k, b in enumerate(blocks)]
        fixed = maker.create("fixed", "ts/0", np.arange(3, dtype=np.uint64), False,
                             lambda: f.create_dataset("ts/0", data=np.arange(3, dtype=np.uint64)))
        fixed2 = maker.create("fixed", "ts/1", np.arange(4, dtype=np.uint64), False, None)
        for k, ds in enumerate(made):
            reference = f.create_dataset(f"ref/{k}", data=blocks[k], maxshape=(None, 2, 3, 4), chunks=(1, 2, 3, 4),
                                         **kwargs)
            assert _creation(ds) == _creation(reference)
            np.testing.assert_array_equal(ds[()], blocks[k])
        assert fixed2.maxshape == (4,) and fixed2[()].tolist() == [0, 1, 2, 3] and fixed.chunks is None


def test_append_rows_grows_and_writes_rows(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        ds = f.create_dataset("d", shape=(0, 3), maxshape=(None, 3), dtype=np.float32, chunks=(4, 3))
        append_rows(ds, 0, np.ones((5, 3)))
        append_rows(ds, 5, np.zeros((0, 3)))
        append_rows(ds, 5, [[1, 2, 3]])
        assert ds.shape == (6, 3)
        np.testing.assert_array_equal(ds[()], np.vstack([np.ones((5, 3)), [[1, 2, 3]]]))


@pytest.mark.parametrize("dtype, chunk", [(np.int64, 4), (np.float64, 256)])
def test_value_appender_across_chunks_and_shrinks(tmp_path, dtype, chunk):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        ds = f.create_dataset("n", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk,))
        appender = ValueAppender(ds)
        assert appender.direct
        for i in range(600):
            appender.append(i, i * 3)
        ds.resize(598, axis=0)  # a discarded step shrinks it; the next one takes its place
        appender.append(598, -1)
        f.flush()
    with h5py.File(tmp_path / "v.h5", "r") as f:
        assert f["n"][()].tolist() == [i * 3 for i in range(598)] + [-1]


def test_value_appender_keeps_existing_rows_and_falls_back_for_filters(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        ds = f.create_dataset("n", data=np.arange(6), maxshape=(None,), chunks=(4,))
        appender = ValueAppender(ds)
        appender.append(6, 60)
        appender.append(7, 70)
        assert ds[()].tolist() == [0, 1, 2, 3, 4, 5, 60, 70]
        gz = f.create_dataset("g", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4,), compression="gzip")
        slow = ValueAppender(gz)
        assert not slow.direct
        for i in range(9):
            slow.append(i, i)
        assert gz[()].tolist() == list(range(9))


def test_attr_setter_writes_in_place_only_on_change(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        g = f.create_group("g")
        g.attrs["count"] = np.int64(0)
        g.attrs["other"] = "x"
        setter = AttrSetter(g)
        setter["count"] = 5
        assert g.attrs["count"] == 5 and g.attrs["count"].dtype == np.int64
        g.attrs.modify("count", 9)  # written behind the setter's back: the setter skips an unchanged value
        setter["count"] = 5
        assert g.attrs["count"] == 9
        setter["count"] = 6
        assert g.attrs["count"] == 6 and list(g.attrs) == ["count", "other"]


def test_many_short_steps_with_a_discard_read_back(tmp_path):
    """300 steps cross the per-step datasets' chunks; a discarded step leaves no trace."""
    path = tmp_path / "steps.h5"
    with RunWriter(path, "dark", compression="gzip") as w:
        for k in range(300):
            if k == 150:
                with pytest.raises(RuntimeError), w.step(step_value=-1.0) as s:
                    s.event(epixM=np.full((2, 4, 4), 7, np.uint16), timestamp=(1 << 40) + 10 * k + 9)  # not counted
                    raise RuntimeError("dropped")
            with w.step(step_value=float(k)) as s:
                for i in range(1 + k % 3):
                    s.event(epixM=np.full((2, 4, 4), k + i, np.uint16), timestamp=(1 << 40) + 10 * k + i)
    with h5py.File(path, "r") as f:
        assert f["ancillaryData/nEvents"][()].tolist() == [1 + k % 3 for k in range(300)]
        assert f["ancillaryData"].attrs["stepsComplete"] == 300 and f["ancillaryData"].attrs["openStepEvents"] == -1
    run = next(DataSource(files=str(path)).runs())
    det, value = run.Detector("epixM"), run.Detector("step_value")
    for k, step in enumerate(run.steps()):
        assert value(step) == float(k)
        frames = [det.raw.raw(e) for e in step.events()]
        assert [int(fr[0, 0, 0]) for fr in frames] == [k + i for i in range(1 + k % 3)]


@pytest.mark.parametrize("compression", ["bitshuffle", "blosc", "zstd", "gzip", "lzf"])
def test_every_step_gets_the_filters_of_the_first(tmp_path, compression):
    """bitshuffle's set_local rewrites its parameters: a copied creation list would store chunks unframed."""
    pytest.importorskip("hdf5plugin")
    path = tmp_path / "r.h5"
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 100, (3, 1, 32, 32), dtype=np.uint16) for _ in range(3)]
    with RunWriter(path, "dark", compression=compression) as w:
        for block in frames:
            w.add_step({"epixM": block})
    with h5py.File(path, "r") as f:
        pipelines = [[f[f"epixM/{k}"].id.get_create_plist().get_filter(i)[:3]
                      for i in range(f[f"epixM/{k}"].id.get_create_plist().get_nfilters())] for k in range(3)]
        sizes = [f[f"epixM/{k}"].id.get_storage_size() for k in range(3)]
    assert pipelines[1] == pipelines[0] and pipelines[2] == pipelines[0]
    assert max(sizes) < frames[0].nbytes  # compressed in every step, not only the first
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    got = [det.raw.raw(e) for e in run.events()]
    np.testing.assert_array_equal(np.concatenate(frames).ravel(), np.stack(got).ravel())
