"""psana's rank roles and batches under MPI: workers between smd0/event builders and servers,
batches across steps, each event once, every step on every worker, one sorted smalldata file."""

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


def run_script(tmp_path, n_ranks, run_file, max_events=0, batch_size=0, env=None):
    out = tmp_path / f"out{n_ranks}_{max_events}_{batch_size}"
    out.mkdir()
    launch("suite_loop.py", n_ranks, run_file, out, max_events, batch_size, env=env)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"), key=lambda p: int(p.stem[4:]))]
    return ranks, out / "smd.h5"


def read_smd(path):
    with h5py.File(path) as f:
        rows = {k: f[k][()] for k in ("timestamp", "mean", "step", "sub/first")}
        return rows, float(f["sums/total"][()][0]), int(f["n_ranks"][()])


def expected_deal(seen, batch_size, workers):
    """psana's batches taken across steps, dealt round-robin to the workers: {(step, event): rank}."""
    order = [(s, i) for s, i, _ in seen]
    return {e: workers[(k // batch_size) % len(workers)] for k, e in enumerate(order)}


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("mpi") / "run.h5", declare_run(steps=(7, 2, 5), shape=(1, 4, 4)))


#: (ranks, environment, batch_size, worker ranks): psana's roles (node.py) and the opt-in mode
LAUNCHES = [
    (3, {}, 0, [2]),                                  # smd0, eb, one worker: the whole run on rank 2
    (4, {"PS_SRV_NODES": "1"}, 0, [2]),               # the suite's psana2Base: one worker, rank 3 a server
    (5, {}, 2, [2, 3, 4]),                            # three workers, 2-event batches across steps
    (6, {"PS_SRV_NODES": "1", "PS_EB_NODES": "2"}, 3, [3, 4]),
    (2, {partition.EVERY_RANK_ENV: "1"}, 3, [0, 1]),  # opt-in: every rank a worker
]


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("n_ranks, env, batch_size, workers", LAUNCHES)
def test_roles_batches_steps_and_one_sorted_smalldata(tmp_path, run_file, n_ranks, env, batch_size, workers):
    (serial,), serial_smd = run_script(tmp_path, 0, run_file)
    ranks, smd = run_script(tmp_path, n_ranks, run_file, batch_size=batch_size, env=env)
    assert len(ranks) == n_ranks
    union = sorted(tuple(e) for r in ranks for e in r["seen"])
    assert union == sorted(tuple(e) for e in serial["seen"])  # each event exactly once
    assert len(union) == len(set(union)) == 14
    for rank, r in enumerate(ranks):
        assert r["is_mpi"] and r["timestamp"] == serial["timestamp"]
        if rank in workers:  # every step on every worker, possibly without events
            assert r["step_values"] == serial["step_values"] == [10.0, 20.0, 30.0] and r["n_steps"] == 3
            assert r["summary"] and not r["is_srv"]
        else:  # psana's smd0, event builders and servers: the run, no step, no event
            assert r["step_values"] == [] and r["seen"] == [] and r["n_steps"] == 0
            assert not r["summary"] and r["sum"] is None
            assert r["is_srv"] == (rank >= n_ranks - int(env.get("PS_SRV_NODES", 0)) and not len(workers) == n_ranks)
    assert [r["unique"] for r in ranks] == [rank == workers[-1] for rank in range(n_ranks)]  # the last worker
    assert [rank for rank, r in enumerate(ranks) if r["sum"] is not None] == [workers[0]]
    assert ranks[workers[0]]["sum"] == serial["sum"]
    expected = expected_deal(serial["seen"], batch_size or 1000, workers)
    assert {(s, i): rank for rank, got in enumerate(ranks) for s, i, _ in got["seen"]} == expected
    rows, total, n = read_smd(smd)
    serial_rows, serial_total, _ = read_smd(serial_smd)
    assert n == n_ranks and total == serial_total
    for key in serial_rows:
        np.testing.assert_array_equal(rows[key], serial_rows[key])
    assert sorted(p.name for p in smd.parent.glob("smd.h5*")) == ["smd.h5"]


@pytest.mark.slow
@needs_mpi
def test_too_few_ranks_for_psana_roles_is_refused_with_what_to_do(tmp_path, run_file):
    out = tmp_path / "refused"
    out.mkdir()
    proc = launch("suite_loop.py", 3, run_file, out, env={"PS_SRV_NODES": "1"}, check=False)
    assert proc.returncode != 0
    assert "MPIRolesError" in proc.stderr and "3 + PS_SRV_NODES = 4" in proc.stderr and "mpirun -n 4" in proc.stderr
    assert not list(out.iterdir())


@pytest.mark.slow
@needs_mpi
def test_max_events_is_global(tmp_path, run_file):
    ranks, smd = run_script(tmp_path, 5, run_file, max_events=9, batch_size=2)
    union = sorted((e[0], e[1]) for r in ranks for e in r["seen"])
    assert union == [(0, i) for i in range(7)] + [(1, 0), (1, 1)]
    assert [bool(r["seen"]) for r in ranks] == [False, False, True, True, True]
    assert [(e[0], e[1]) for e in ranks[2]["seen"]] == [(0, 0), (0, 1), (0, 6), (1, 0)]  # a batch across the step
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


def pairing(tmp_path, paired_run, n_ranks, intg_det, batch_size, env=None):
    path, n_frames = paired_run
    out = tmp_path / f"{n_ranks}_{intg_det}_{batch_size}"
    out.mkdir()
    launch("pairing.py", n_ranks, path, out, intg_det, batch_size, env=env)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n_ranks)]
    frames = sorted(t for r in ranks for t in r["frames"])
    paired = sorted(t for r in ranks for t in r["paired"])
    assert len(frames) == len(set(frames)) == n_frames  # every frame read exactly once
    return ranks, frames, paired


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("n_ranks, batch_size, env", [(3, 1, {}), (4, 1, {}), (5, 2, {}), (3, 0, {}),
                                                      (2, 1, {partition.EVERY_RANK_ENV: "1"})])
def test_intg_det_keeps_every_beam_monitor_frame_pair(tmp_path, paired_run, n_ranks, batch_size, env):
    ranks, frames, paired = pairing(tmp_path, paired_run, n_ranks, "EPIXm", batch_size, env)  # resolved case-insensitively
    assert paired == frames
    workers = range(n_ranks) if env else range(2, n_ranks)
    assert all(bool(r["frames"]) == (rank in workers) for rank, r in enumerate(ranks))  # the work is spread
    # psana's EndOfBatch: ['EPIXm'] on every frame event (the integrating detector), [] elsewhere
    assert sorted(t for r in ranks for t in r["end_of_batch"]) == frames
    assert all(r["end_of_batch_value"] in ([], ["EPIXm"]) for r in ranks)


@pytest.mark.slow
@needs_mpi
def test_without_intg_det_small_batches_lose_pairs(tmp_path, paired_run):
    # the control: plain 3-event batches split pairs, as psana's would; no event ends an integrating batch
    ranks, frames, paired = pairing(tmp_path, paired_run, 4, "-", 3)
    assert len(paired) < len(frames)
    assert all(r["end_of_batch"] == [] for r in ranks)


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


@pytest.mark.parametrize("size, eb, srv, workers", [
    (3, 1, 0, [2]), (4, 1, 1, [2]), (6, 1, 1, [2, 3, 4]), (5, 1, 0, [2, 3, 4]), (7, 2, 1, [3, 4, 5]), (4, 0, 0, [2, 3])])
def test_worker_ranks_are_psana_s(size, eb, srv, workers):
    # psana/psexp/node.py: rank 0 smd0, 1..PS_EB_NODES event builders, the last PS_SRV_NODES servers
    assert list(partition.worker_ranks(size, eb, srv)) == workers
    got = [partition.role(r, size, partition.worker_ranks(size, eb, srv)) for r in range(size)]
    assert got == ["smd0"] + ["eb"] * (workers[0] - 1) + ["bd"] * len(workers) + ["srv"] * srv


def test_worker_ranks_read_psana_s_environment(monkeypatch):
    monkeypatch.setenv("PS_SRV_NODES", "1")
    monkeypatch.setenv("PS_EB_NODES", "2")
    assert list(partition.worker_ranks(7)) == [3, 4, 5]
    monkeypatch.setenv("PS_SRV_NODES", "x")
    with pytest.raises(partition.PartitionError, match="PS_SRV_NODES='x' is not an integer"):
        partition.worker_ranks(7)


@pytest.mark.parametrize("size, eb, srv, match", [
    (2, 1, 0, r"2 ranks, PS_SRV_NODES=0; psana needs 3 \+ PS_SRV_NODES = 3 at least.*mpirun -n 3"),
    (3, 1, 1, r"3 ranks, PS_SRV_NODES=1; psana needs 3 \+ PS_SRV_NODES = 4 at least.*mpirun -n 4"),
    (3, 2, 0, r"no worker rank: 3 ranks, PS_EB_NODES=2.*mpirun -n 4")])
def test_too_few_ranks_is_refused_saying_why_and_what_to_do(size, eb, srv, match):
    with pytest.raises(partition.MPIRolesError, match=match) as err:
        partition.worker_ranks(size, eb, srv)
    assert isinstance(err.value, partition.PartitionError)


def deal_all(size, workers, batch, selected, ends=None):
    return [partition.MPIPartition(FakeComm(r, size), batch, workers).deal(selected, ends) for r in range(size)]


@pytest.mark.parametrize("workers, batch", [([2], None), ([2, 3], 1), ([2, 3, 4], 2), ([0, 1, 2, 3], 5)])
def test_deal_covers_each_event_once_in_whole_batches_across_steps(workers, batch):
    size = workers[-1] + 2
    selected = [np.arange(3, 700), np.arange(0), np.arange(10, 1400)]
    rng = np.random.default_rng(1)
    ends = [rng.random(len(s)) < 0.3 for s in selected]
    for e in (None, ends):
        parts = deal_all(size, range(workers[0], workers[-1] + 1), batch, selected, e)
        for r, got in enumerate(parts):
            assert len(got) == (3 if r in workers else 0)  # every step on a worker, none elsewhere
        for s, sel in enumerate(selected):
            np.testing.assert_array_equal(np.sort(np.concatenate([p[s] for p in parts if p])), sel)
        flat = [(s, i) for s, sel in enumerate(selected) for i in sel]
        cuts = partition.batches(np.arange(len(flat)), batch or 1000, None if e is None else np.concatenate(e))
        for k, piece in enumerate(cuts):  # batch k of the run (across steps) on worker k % n_workers
            owner = parts[workers[k % len(workers)]]
            assert all(i in owner[s] for s, i in (flat[j] for j in piece))
    assert partition.MPIPartition(FakeComm(0, 2)).batch_size == 1000  # psana's default


def test_a_batch_crosses_a_step_boundary():
    selected = [range(3), range(4)]
    parts = deal_all(4, range(2, 4), 2, selected)
    # run order s0:0 s0:1 | s0:2 s1:0 | s1:1 s1:2 | s1:3, dealt to workers 2, 3, 2, 3
    assert [[s.tolist() for s in p] for p in parts] == [[], [], [[0, 1], [1, 2]], [[2], [0, 3]]]
    parts = deal_all(3, range(2, 3), 1000, selected)
    assert [[s.tolist() for s in p] for p in parts] == [[], [], [[0, 1, 2], [0, 1, 2, 3]]]  # one worker: all


def test_unique_user_rank_is_the_last_worker():
    flags = [partition.MPIPartition(FakeComm(r, 6), None, range(2, 5)).unique_user_rank() for r in range(6)]
    assert flags == [False, False, False, False, True, False]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_batch_size_is_a_clear_error(bad):
    with pytest.raises(partition.PartitionError, match="batch_size must be a positive integer"):
        partition.choose(batch_size=bad)


def test_unknown_intg_det_falls_back_to_plain_batches_with_a_warning(mocker, run_file, caplog):
    mocker.patch.object(partition, "choose", return_value=partition.MPIPartition(FakeComm(3, 4), 3, range(2, 4)))
    ds = DataSource(files=run_file, intg_det="andor")
    events = list(ds.events())
    # steps of 7, 2, 5 events in 3-event batches across steps: worker 3 (the second of 2) gets batches 1 and 3
    assert [(e._step, e._i) for e in events] == [(0, 3), (0, 4), (0, 5), (2, 0), (2, 1), (2, 2)]
    assert "intg_det='andor'" in caplog.text and all(e.EndOfBatch() == [] for e in events)


def test_a_non_worker_rank_sees_the_run_without_steps(mocker, run_file):
    mocker.patch.object(partition, "choose", return_value=partition.MPIPartition(FakeComm(0, 4), 3, range(2, 4)))
    ds = DataSource(files=run_file)
    run = next(ds.runs())
    serial = next(DataSource(files=run_file).runs())
    assert (run.runnum, run.expt, run.timestamp) == (serial.runnum, serial.expt, serial.timestamp)
    assert list(run.steps()) == [] and list(run.events()) == [] and run.n_steps == 0
    assert ds.is_mpi() and not ds.is_srv() and not ds.unique_user_rank()
    smd = ds.smalldata(filename=None)
    assert smd.summary is False and smd.sum(np.ones(2)) is None and smd.max(3) is None


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


def test_every_rank_a_worker_is_opt_in(monkeypatch):
    monkeypatch.delenv(partition.EVERY_RANK_ENV, raising=False)
    assert partition.every_rank_mode() is False and partition.every_rank_mode(True) is True
    monkeypatch.setenv(partition.EVERY_RANK_ENV, "1")
    assert partition.every_rank_mode() is True and partition.every_rank_mode(False) is False
    monkeypatch.setenv(partition.EVERY_RANK_ENV, "no")
    assert partition.every_rank_mode() is False
    p = partition.MPIPartition(FakeComm(0, 2), 3)  # workers default: every rank
    assert p.is_worker and p.role == "bd" and not p.unique_user_rank()
    assert [[s.tolist() for s in d] for d in (p.deal([range(4)]),)] == [[[0, 1, 2]]]
