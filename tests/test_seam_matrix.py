"""The seam matrix: every access mode x every storage variant gives the same arrays and the same errors.

Access modes: the event loop, ``live=True`` on a finished run, live following
while the run is written (a child process that has not imported hdf5plugin),
``step.event(i)``, ``run.event(ts)``, ``frames()``, ``dask_array()``,
``xarray()``, ``zero_copy=True`` and psana1's ``det.raw(evt)``.
Storage variants: the four layouts; uncompressed, gzip, bitshuffle-LZ4, Blosc,
Zstd; files from plain h5py and from ``RunWriter``; one- and multi-module
detectors. A damaged chunk is a ``DamagedFileError`` in every mode.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DamagedFileError, DataSource, RunWriter
from calibsuite_h5source.testing.layouts import declare_run, write_layout

hdf5plugin = pytest.importorskip("hdf5plugin")

COMPRESSIONS = (None, "gzip", "bitshuffle", "blosc", "zstd")
STEPS = (3, 2)
T0 = (1 << 40)


def _filter_kwargs(compression):
    from calibsuite_h5source.write.storage import compression_kwargs

    return compression_kwargs(compression)


def _frames(shape, dtype="uint16", seed=0, layout="canonical", compressible=False):
    legacy = layout == "legacy"  # one detector, equal steps, no timestamps
    decl = declare_run(steps=(3, 3) if legacy else STEPS, shape=shape, dtype=dtype, seed=seed, side=False,
                       scan=None, timestamps=not legacy)
    if compressible:  # small values: every filter stores compressed chunks (with framing to check)
        decl["detectors"]["epixM"] = [f % 8 for f in decl["detectors"]["epixM"]]
    return decl, decl["detectors"]["epixM"]


def write_plain(path, layout, shape, compression=None, compressible=False):
    """A run written with plain h5py: any layout uncompressed; the canonical layout with a filter."""
    decl, frames = _frames(shape, layout=layout, compressible=compressible)
    if compression is None:
        return write_layout(path, decl, layout), frames
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs["scriptType"] = "dark"
        for k, data in enumerate(frames):
            f.create_dataset(f"epixM/{k}", data=data, chunks=(1, *shape), **_filter_kwargs(compression))
            f.create_dataset(f"timestamp/{k}", data=T0 + 1000 * k + np.arange(len(data), dtype=np.uint64))
    return str(path), frames


def write_writer(path, shape, compression=None, compressible=False):
    """The same frames written by RunWriter."""
    _, frames = _frames(shape, compressible=compressible)
    with RunWriter(path, "dark", compression=compression) as w:
        for k, data in enumerate(frames):
            with w.step(delay=float(k)) as s:
                for i, frame in enumerate(data):
                    s.event(epixM=frame, timestamp=T0 + 1000 * k + i)
    return str(path), frames


VARIANTS = (
    [pytest.param(("plain", layout, (2, 8, 16), None), id=f"plain-{layout}") for layout in
     ("canonical", "padded", "stepgroups", "legacy")]
    + [pytest.param(("plain", "canonical", (2, 8, 16), c), id=f"plain-{c}") for c in COMPRESSIONS[1:]]
    + [pytest.param(("writer", "canonical", shape, c), id=f"writer-{c or 'none'}-{shape[0]}module")
       for c in COMPRESSIONS for shape in ((1, 8, 16), (3, 8, 16))]
)


def make(tmp_path, variant, compressible=False):
    origin, layout, shape, compression = variant
    path = tmp_path / "run.h5"
    if origin == "plain":
        return write_plain(path, layout, shape, compression, compressible)
    return write_writer(path, shape, compression, compressible)


def _run(path, **kwargs):
    return next(DataSource(files=path, keep_module_axis=True, **kwargs).runs())


# -- the access modes: each returns the frames of every event, [event, module, row, col] --------------

def by_event_loop(path, **kwargs):
    run = _run(path, **kwargs)
    raw = run.Detector("epixM").raw
    return np.stack([raw.raw(evt) for evt in run.events()])


def by_live_finished(path):
    return by_event_loop(path, live=True, max_retries=0)


def by_zero_copy(path):
    return by_event_loop(path, zero_copy=True)


def by_step_event(path):
    run = _run(path)
    raw = run.Detector("epixM").raw
    return np.stack([raw.raw(step.event(i)) for step in run.steps() for i in range(step.n_events)])


def by_run_event(path):
    run = _run(path)
    raw = run.Detector("epixM").raw
    return np.stack([raw.raw(run.event(int(ts))) for ts in run.times()])


def by_frames(path):
    return _run(path).Detector("epixM").raw.frames()


def by_frames_per_step(path):
    run = _run(path)
    raw = run.Detector("epixM").raw
    return np.concatenate([raw.frames(step=k) for k in range(run.n_steps)])


def by_dask(path):
    pytest.importorskip("dask")
    return _run(path).Detector("epixM").raw.dask_array().compute(scheduler="synchronous")


def by_xarray(path):
    pytest.importorskip("xarray")
    return _run(path).Detector("epixM").raw.xarray().values


def by_psana1(path):
    import calibsuite_h5source.psana1 as psana

    ds = psana.DataSource(files=path)
    det = psana.Detector("epixM")
    frames = [det.raw(evt) for evt in ds.events()]
    shape = det.shape()
    assert all(f.shape == frames[0].shape for f in frames)
    assert int(np.prod(shape)) == frames[0].size  # the same pixels (the one-module axis is the roles rule's)
    return np.stack(frames)


MODES = [by_event_loop, by_live_finished, by_zero_copy, by_step_event, by_run_event, by_frames,
         by_frames_per_step, by_dask, by_xarray, by_psana1]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.__name__[3:])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_mode_gives_the_stored_frames(tmp_path, variant, mode):
    path, frames = make(tmp_path, variant)
    want = np.concatenate(frames)
    got = np.asarray(mode(path))
    assert got.dtype == want.dtype
    assert got.reshape(want.shape).tobytes() == want.tobytes()


# -- a damaged chunk --------------------------------------------------------------------------

def damage(path, h5path="/epixM/1", event=0):
    """Overwrite the first 16 bytes of one event's stored chunk (its compression header)."""
    with h5py.File(path, "r") as f:
        ds = f[h5path]
        info = ds.id.get_chunk_info_by_coord((event, *(0,) * (ds.ndim - 1)))
        addr = info.byte_offset
    with open(path, "r+b") as fh:
        fh.seek(addr)
        fh.write(b"\xff" * 16)


DAMAGED = ([pytest.param(("plain", "canonical", (2, 8, 16), c), id=f"plain-{c}") for c in COMPRESSIONS[1:]]
           + [pytest.param(("writer", "canonical", (2, 8, 16), c), id=f"writer-{c}") for c in COMPRESSIONS[1:]])


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.__name__[3:])
@pytest.mark.parametrize("variant", DAMAGED)
def test_a_damaged_chunk_is_the_same_error_in_every_mode(tmp_path, variant, mode):
    path, _ = make(tmp_path, variant, compressible=True)
    damage(path)
    with pytest.raises(DamagedFileError, match="epixM"):
        mode(path)


def test_an_undamaged_event_of_a_damaged_run_still_reads(tmp_path):
    path, frames = make(tmp_path, ("writer", "canonical", (2, 8, 16), "zstd"))
    damage(path)
    raw = _run(path).Detector("epixM").raw
    np.testing.assert_array_equal(raw.frames(step=0), frames[0])
    np.testing.assert_array_equal(raw.frames(step=1, events=[1]), frames[1][1:])


# -- live following while the run is written ----------------------------------------------------------

WRITER = textwrap.dedent("""
    import pathlib, sys, time
    import numpy as np
    from calibsuite_h5source import RunWriter
    from calibsuite_h5source.testing.layouts import declare_run

    path, compression, modules = sys.argv[1], sys.argv[2], int(sys.argv[3])
    frames = declare_run(steps=STEPS, shape=(modules, 8, 16), side=False, scan=None)["detectors"]["epixM"]
    go = pathlib.Path(path + '.go')  # the reader made it: it follows the run from here on
    with RunWriter(path, 'dark', compression=None if compression == 'none' else compression,
                   flush_every=2, flush_seconds=0.02) as w:
        for k, data in enumerate(frames):
            with w.step(delay=float(k)) as s:
                for i, frame in enumerate(data):
                    s.event(epixM=frame, timestamp=T0 + 1000 * k + i)
                    if k == 0 and i == 0:
                        w.flush()
                        deadline = time.monotonic() + 60
                        while not go.exists() and time.monotonic() < deadline:
                            time.sleep(0.01)
                    time.sleep(0.02)
""").replace("STEPS", repr(STEPS)).replace("T0", str(T0))

READER = textwrap.dedent("""
    import sys
    import numpy as np
    from calibsuite_h5source import DataSource
    from calibsuite_h5source.psana2.live import LiveRun

    path, out = sys.argv[1], sys.argv[2]
    run = next(DataSource(files=path, live=True, max_retries=30, keep_module_axis=True).runs())
    open(path + '.go', 'w').close()
    raw = run.Detector('epixM').raw
    frames = [raw.raw(evt) for evt in run.events()]
    np.save(out, np.stack(frames))
    print(isinstance(run, LiveRun), 'hdf5plugin' in sys.modules)
""")


@pytest.mark.slow
@pytest.mark.parametrize("modules", [1, 3])
@pytest.mark.parametrize("compression", ["none", "gzip", "bitshuffle", "blosc", "zstd"])
def test_live_following_while_written_in_a_process_without_hdf5plugin(tmp_path, compression, modules):
    path, out = tmp_path / "live.h5", tmp_path / "got.npy"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), compression, str(modules)])
    try:
        import time

        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        reader = subprocess.run([sys.executable, "-c", READER, str(path), str(out)], capture_output=True,
                                text=True, timeout=120)
        assert reader.returncode == 0, reader.stderr
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    live, plugin = reader.stdout.split()
    assert live == "True", "the run was complete before the reader opened it: nothing was followed"
    assert plugin == str(compression in ("bitshuffle", "blosc", "zstd"))  # imported only when a filter needs it
    _, frames = _frames((modules, 8, 16))
    assert np.load(out).tobytes() == np.concatenate(frames).tobytes()
