"""Events dealt to MPI ranks in psana's batches: each event once, steps everywhere, one sorted smalldata file."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from mpi_scripts.launch import launch, needs_mpi

from calibsuite_h5source import DataSource
from calibsuite_h5source.format import timestamps as _ts
from calibsuite_h5source.psana2 import partition
from calibsuite_h5source.testing.layouts import declare_run, write_layout


def run_script(tmp_path, n_ranks, run_file, max_events=0, batch_size=0):
    out = tmp_path / f"out{n_ranks}_{max_events}_{batch_size}"
    out.mkdir()
    launch("suite_loop.py", n_ranks, run_file, out, max_events, batch_size)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return ranks, out / "smd.h5"


def read_smd(path):
    with h5py.File(path) as f:
        rows = {k: f[k][()] for k in ("timestamp", "mean", "step", "sub/first")}
        return rows, float(f["sums/total"][()][0]), int(f["n_ranks"][()])


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("mpi") / "run.h5", declare_run(steps=(7, 2, 5), shape=(1, 4, 4)))


@pytest.mark.mpi
@pytest.mark.slow
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
    assert all(r["is_mpi"] and not r["is_srv"] and r["summary"] for r in ranks)
    assert sum(r["unique"] for r in ranks) == 1
    assert [r["sum"] for r in ranks if r["sum"] is not None] == [serial["sum"]]
    expected = {(s, i): (i // (batch_size or 1000) + s) % n_ranks for s, i, _ in serial["seen"]}
    assert {(s, i): r for r, got in enumerate(ranks) for s, i, _ in got["seen"]} == expected  # psana's batches
    rows, total, n = read_smd(smd)
    serial_rows, serial_total, _ = read_smd(serial_smd)
    assert n == n_ranks and total == serial_total
    for key in serial_rows:
        np.testing.assert_array_equal(rows[key], serial_rows[key])
    assert sorted(p.name for p in smd.parent.glob("smd.h5*")) == ["smd.h5"]


@pytest.mark.mpi
@pytest.mark.slow
@needs_mpi
def test_max_events_is_global(tmp_path, run_file):
    ranks, smd = run_script(tmp_path, 3, run_file, max_events=9, batch_size=2)
    union = sorted((e[0], e[1]) for r in ranks for e in r["seen"])
    assert union == [(0, i) for i in range(7)] + [(1, 0), (1, 1)]
    assert all(r["seen"] for r in ranks)
    with h5py.File(smd) as f:
        assert f["timestamp"].shape == (9,)


# -- intg_det: a beam-monitor event travels with the frame after it ------------------------

@pytest.fixture(scope="module")
def paired_run(tmp_path_factory):
    """3 steps of (beam-monitor event, frame event) pairs, 500 ns apart; pairs 1 ms apart; plus a lone bm event."""
    steps = (9, 7, 13)
    decl = declare_run(steps=steps, shape=(1, 4, 4), detector="epixM")
    decl["present"] = {"epixM": [np.arange(n) % 2 == 1 for n in steps]}
    start = _ts.from_unix(1_700_000_000)
    stamps, t = [], start
    for n in steps:
        ts = [t + (k // 2) * 1_000_000 + (k % 2) * 500 for k in range(n)]
        stamps.append(np.array(ts, dtype=np.uint64))
        t = ts[-1] + 10**9
    decl["timestamps"] = stamps
    return write_layout(tmp_path_factory.mktemp("pairs") / "pairs.h5", decl), sum(n // 2 for n in steps)


def pairing(tmp_path, paired_run, n_ranks, intg_det, batch_size):
    path, n_frames = paired_run
    out = tmp_path / f"{n_ranks}_{intg_det}_{batch_size}"
    out.mkdir()
    launch("pairing.py", n_ranks, path, out, intg_det, batch_size)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n_ranks)]
    frames = sorted(t for r in ranks for t in r["frames"])
    paired = sorted(t for r in ranks for t in r["paired"])
    assert len(frames) == len(set(frames)) == n_frames  # every frame read exactly once
    return ranks, frames, paired


@pytest.mark.mpi
@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("n_ranks, batch_size", [(2, 1), (3, 1), (3, 2), (2, 0)])
def test_intg_det_keeps_every_beam_monitor_frame_pair(tmp_path, paired_run, n_ranks, batch_size):
    ranks, frames, paired = pairing(tmp_path, paired_run, n_ranks, "EPIXm", batch_size)  # resolved case-insensitively
    assert paired == frames
    if batch_size:
        assert all(r["frames"] for r in ranks)  # the work is spread


@pytest.mark.mpi
@pytest.mark.slow
@needs_mpi
def test_without_intg_det_small_batches_lose_pairs(tmp_path, paired_run):
    # the control: plain 3-event batches split pairs, as psana's would
    _, frames, paired = pairing(tmp_path, paired_run, 2, "-", 3)
    assert len(paired) < len(frames)


def test_batches_end_after_every_batch_size_th_integrating_event():
    idx = np.arange(10, 20)
    ends = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 0], dtype=bool)
    cut = [b.tolist() for b in partition.batches(idx, 1, ends)]
    assert cut == [[10, 11], [12, 13, 14], [15], [16, 17], [18, 19]]
    cut = [b.tolist() for b in partition.batches(idx, 2, ends)]
    assert cut == [[10, 11, 12, 13, 14], [15, 16, 17], [18, 19]]
    assert [b.tolist() for b in partition.batches(idx, 4)] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
    assert [b.tolist() for b in partition.batches(idx, 4, np.zeros(10, bool))] == [idx.tolist()]
    assert partition.batches(idx[:0], 3) == []


class FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):  # noqa: N802
        return self.rank

    def Get_size(self):  # noqa: N802
        return self.size


@pytest.mark.parametrize("size, batch", [(2, None), (3, 1), (3, 2), (4, 5)])
def test_partition_covers_each_event_once_in_whole_batches(size, batch):
    indices = np.arange(3, 2030)
    ends = np.random.default_rng(1).random(len(indices)) < 0.3
    for step in range(3):
        for e in (None, ends):
            parts = [partition.MPIPartition(FakeComm(r, size), batch).select(step, indices, e) for r in range(size)]
            np.testing.assert_array_equal(np.sort(np.concatenate(parts)), indices)
            assert (step % size == 0) == (indices[0] in parts[0])  # the deal starts at rank step % size
    assert partition.MPIPartition(FakeComm(0, 2)).batch_size == 1000  # psana's default


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_batch_size_is_a_clear_error(bad):
    with pytest.raises(partition.PartitionError, match="batch_size must be a positive integer"):
        partition.choose(batch_size=bad)


def test_unknown_intg_det_falls_back_to_plain_batches_with_a_warning(mocker, run_file, caplog):
    mocker.patch.object(partition, "choose", return_value=partition.MPIPartition(FakeComm(1, 2), 3))
    ds = DataSource(files=run_file, intg_det="andor")
    got = [(e._step, e._i) for e in ds.events()]
    # rank 1 of 2 gets batch k of step s when (k + s) % 2 == 1: step 0 [0:3] [3:6] [6:7]; step 1 [0:2]; step 2 [0:3] [3:5]
    assert got == [(0, 3), (0, 4), (0, 5), (1, 0), (1, 1), (2, 3), (2, 4)]
    assert "intg_det='andor'" in caplog.text


def test_serial_without_launcher_does_not_import_mpi4py():
    code = ("import sys; from calibsuite_h5source.psana2 import partition; "
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
    ds = DataSource(files=run_file, intg_det="epixm", batch_size=2)
    assert ds.is_mpi() is False and len(list(ds.events())) == 14
