"""Live runs with calibration constants: the live reader gives the same constants and images as the finished file.

A writer process declares a jungfrau with ``calib/geometry`` (a scalar string,
with a ``segments`` attribute) and ``calib/pedestals``, writes a few events,
flushes and waits; this process follows it with ``DataSource(..., live=True)``,
then lets the writer finish and reads the finished file.
"""

import itertools
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.psana2.live import LiveRun

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX processes")

EVENTS = 3

#: ``python -c WRITER path events``: writes that many events of a two-module jungfrau with geometry and pedestals,
#: flushes, prints 'ready', waits for a line on stdin, then finishes the run and prints 'done'.
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from calibsuite_h5source import RunWriter
    from calibsuite_h5source.geometry.defaults import default_geometry_text

    path = sys.argv[1]
    rng = np.random.default_rng(7)
    pedestals = rng.normal(100, 5, (2, 512, 1024)).astype(np.float32)
    w = RunWriter(path, scriptType='dark', run=1700000000)
    w.detector('jungfrau', detType='jungfrau', geometry=(default_geometry_text('jungfrau1M'), {'segments': [1, 0]}),
               calib={'pedestals': pedestals})
    s = w.step()
    for i in range(int(sys.argv[2])):
        s.event(jungfrau=rng.integers(0, 4000, (2, 512, 1024), dtype=np.uint16))
    w.flush()
    print('ready', flush=True)
    sys.stdin.readline()
    s.close()
    w.close()
    print('done', flush=True)
""")


def _read(run):
    """``(calibconst, [image], [calib], _pedestals)`` of the run's jungfrau."""
    det = run.Detector("jungfrau")
    events = list(itertools.islice(run.events(), EVENTS))  # the live run's step is still open: no more than these
    assert [e._i for e in events] == list(range(EVENTS))
    return (det.calibconst, [det.raw.image(e) for e in events], [det.raw.calib(e) for e in events],
            det.raw._pedestals())


def _same_metadata(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_live_and_finished_readers_give_the_same_constants_and_images(tmp_path):
    path = tmp_path / "geo.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(EVENTS)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        run = next(DataSource(files=str(path), live=True, max_retries=5).runs())
        assert isinstance(run, LiveRun) and not run.complete
        live = _read(run)
        run.close()  # else HDF5 hands the finished reader this process's open file, as the live reader saw it
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdin.close()
        proc.stdout.close()
    finished = _read(next(DataSource(files=str(path)).runs()))

    const, fconst = live[0], finished[0]
    assert sorted(const) == sorted(fconst) == ["geometry", "pedestals"]
    assert isinstance(const["geometry"][0], str) and const["geometry"][0] == fconst["geometry"][0]
    np.testing.assert_array_equal(const["pedestals"][0], fconst["pedestals"][0])
    assert const["pedestals"][0].dtype == fconst["pedestals"][0].dtype == np.float32
    for k in const:
        _same_metadata(const[k][1], fconst[k][1])
    assert list(const["geometry"][1]["segments"]) == [1, 0]
    for a, b in zip(live[1] + live[2], finished[1] + finished[2], strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert live[1][0].shape == (1064, 1030)  # jungfrau1M: the geometry placed the two modules
    np.testing.assert_array_equal(live[3], finished[3])


def test_held_dataset_reads_as_the_dataset(tmp_path):
    """A constant held in memory offers what a dataset does, and read_whole gives the file's value."""
    import h5py

    from calibsuite_h5source.h5.dataset import HeldDataset, read_whole

    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f["text"] = "line 1\nline 2"
        f["text"].attrs["segments"] = [1, 0]
        f["arr"] = np.arange(12, dtype=np.float32).reshape(3, 4)
        f["num"] = np.float64(2.5)
    with h5py.File(path, "r") as f:
        for key in ("text", "arr", "num"):
            ds, held = f[key], HeldDataset(f[key])
            assert (held.name, held.shape, held.dtype, held.ndim) == (ds.name, ds.shape, ds.dtype, ds.ndim)
            assert held.file.filename == ds.file.filename
            np.testing.assert_array_equal(read_whole(held), read_whole(ds))
            np.testing.assert_array_equal(held[()], ds[()])
        held = HeldDataset(f["arr"])
        np.testing.assert_array_equal(held[1], f["arr"][1])
        read_whole(held)[0, 0] = -1  # a copy: the held value is unchanged
        assert read_whole(held)[0, 0] == 0
        assert read_whole(HeldDataset(f["text"])) == b"line 1\nline 2"
        _same_metadata(HeldDataset(f["text"]).attrs, dict(f["text"].attrs))
