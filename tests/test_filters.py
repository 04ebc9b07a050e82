"""hdf5plugin is imported only when a dataset needs one of its filters, and then reads transparently."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from calibsuite_h5source import RunWriter

pytest.importorskip("hdf5plugin")

CHILD = textwrap.dedent("""
    import json, sys
    from calibsuite_h5source import DataSource
    from calibsuite_h5source.tools.validate import validate
    path = sys.argv[1]
    run = next(DataSource(files=path).runs())
    det = run.Detector('epixM')
    opened = 'hdf5plugin' in sys.modules
    sums = [int(det.raw.raw(evt).sum()) for evt in run.events()]
    frames = int(det.raw.frames().sum())
    problems = [p.code for p in validate(path, isolate=False)]
    print(json.dumps({'at_open': opened, 'after': 'hdf5plugin' in sys.modules, 'sums': sums, 'frames': frames,
                      'problems': problems}))
""")


def _write(path, compression):
    with RunWriter(path, "dark", compression=compression) as w:
        for k in range(2):
            with w.step(step_value=float(k)) as s:
                for i in range(3):
                    s.event(epixM=np.full((2, 8, 8), 10 * k + i, np.uint16))
    return [128 * (10 * k + i) for k in range(2) for i in range(3)]


def _child(path):
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_runs_without_plugin_filters_never_import_hdf5plugin(tmp_path, compression):
    expected = _write(tmp_path / "run.h5", compression)
    got = _child(tmp_path / "run.h5")
    assert got == {"at_open": False, "after": False, "sums": expected, "frames": sum(expected), "problems": []}


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["bitshuffle", "blosc", "zstd"])
def test_plugin_filters_are_registered_when_a_dataset_needs_them(tmp_path, compression):
    expected = _write(tmp_path / "run.h5", compression)
    got = _child(tmp_path / "run.h5")
    assert got["after"] and got["sums"] == expected and got["frames"] == sum(expected) and got["problems"] == []
