"""Events split across MPI ranks: each event once, steps everywhere, one sorted smalldata file."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, partition
from calibsuite_h5source.testing.layouts import declare_run, write_layout

SCRIPT = Path(__file__).parent / "mpi_scripts" / "suite_loop.py"


def mpiexec() -> str | None:
    """The launcher matching mpi4py's MPI library: next to python first (pip's mpich), else PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or mpiexec() is None,
    reason="needs mpi4py and an mpiexec (pip install 'calibsuite_h5source[mpi]')",
)


def run_script(tmp_path, n_ranks, run_file, max_events=0, batch_size=0):
    out = tmp_path / f"out{n_ranks}_{max_events}_{batch_size}"
    out.mkdir()
    cmd = [sys.executable, str(SCRIPT), str(run_file), str(out), str(max_events), str(batch_size)]
    if n_ranks:
        cmd = [mpiexec(), "-n", str(n_ranks), *cmd]
    env = {k: v for k, v in os.environ.items() if k not in partition.LAUNCHER_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return ranks, out / "smd.h5"


def read_smd(path):
    with h5py.File(path) as f:
        rows = {k: f[k][()] for k in ("timestamp", "mean", "step", "sub/first")}
        return rows, float(f["sums/total"][()][0]), int(f["n_ranks"][()])


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("mpi") / "run.h5", declare_run(steps=(7, 2, 5), shape=(1, 4, 4)))


@needs_mpi
@pytest.mark.parametrize("n_ranks, batch_size", [(2, 0), (3, 0), (3, 2)])
def test_every_event_once_steps_everywhere_and_one_sorted_smalldata(tmp_path, run_file, n_ranks, batch_size):
    (serial,), serial_smd = run_script(tmp_path, 0, run_file)
    ranks, smd = run_script(tmp_path, n_ranks, run_file, batch_size=batch_size)
    assert len(ranks) == n_ranks
    union = sorted(tuple(e) for r in ranks for e in r["seen"])
    assert union == sorted(tuple(e) for e in serial["seen"])  # each event exactly once
    assert len(union) == len(set(union)) == 14
    assert all(r["step_values"] == serial["step_values"] == [10.0, 20.0, 30.0] for r in ranks)
    assert all(r["is_mpi"] and not r["is_srv"] for r in ranks)
    assert sum(r["unique"] for r in ranks) == 1 and sum(r["summary"] for r in ranks) == 1
    assert [r["sum"] for r in ranks if r["summary"]] == [serial["sum"]]
    if batch_size == 0:  # contiguous blocks: every rank reads a run of consecutive events
        for r in ranks:
            for step in range(3):
                mine = [e[1] for e in r["seen"] if e[0] == step]
                assert mine == list(range(mine[0], mine[0] + len(mine))) if mine else True
    rows, total, n = read_smd(smd)
    serial_rows, serial_total, _ = read_smd(serial_smd)
    assert n == n_ranks and total == serial_total
    for key in serial_rows:
        np.testing.assert_array_equal(rows[key], serial_rows[key])
    assert not list(smd.parent.glob("smd.h5.part*"))


@needs_mpi
def test_max_events_is_global(tmp_path, run_file):
    ranks, smd = run_script(tmp_path, 3, run_file, max_events=9)
    union = sorted((e[0], e[1]) for r in ranks for e in r["seen"])
    assert union == [(0, i) for i in range(7)] + [(1, 0), (1, 1)]
    with h5py.File(smd) as f:
        assert f["timestamp"].shape == (9,)


def test_serial_without_launcher_does_not_import_mpi4py():
    code = ("import sys; from calibsuite_h5source import partition; "
            "p = partition.choose(); print(type(p).__name__, 'mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in partition.LAUNCHER_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["SerialPartition", "False"]


def test_opt_out_and_missing_mpi4py(monkeypatch, mocker, run_file):
    monkeypatch.setenv("PMI_RANK", "0")  # pretend a launcher started us
    monkeypatch.setenv("PS_PARALLEL", "none")
    assert isinstance(partition.choose(), partition.SerialPartition)
    monkeypatch.delenv("PS_PARALLEL")
    assert isinstance(partition.choose(parallel=False), partition.SerialPartition)
    mocker.patch("importlib.util.find_spec", return_value=None)  # mpi4py not installed
    ds = DataSource(files=run_file)
    assert ds.is_mpi() is False and len(list(ds.events())) == 14


class FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):  # noqa: N802
        return self.rank

    def Get_size(self):  # noqa: N802
        return self.size


@pytest.mark.parametrize("size, batch", [(2, None), (3, None), (3, 2), (4, 5)])
def test_partition_covers_each_event_once(size, batch):
    indices = np.arange(3, 20)
    for step in range(3):
        parts = [partition.MPIPartition(FakeComm(r, size), batch).select(step, indices) for r in range(size)]
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), indices)
