"""A writer killed with SIGKILL mid-run leaves its finished steps readable, exactly."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import killpoints
import numpy as np
import pytest

from calibsuite_h5source import DataSource, H5SourceError, RunWriter
from calibsuite_h5source.write.writer import ERROR_BYTES

WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from calibsuite_h5source import RunWriter
    with RunWriter(sys.argv[1], 'dark', flush_every=5) as w:
        for k in range(100):
            with w.step(step_value=float(k)) as s:
                for i in range(12):
                    s.event(epixM=np.full((2, 3, 4), 100 * k + i, np.uint16), wave8={'amp': float(i)})
                    if k == 2 and i == 7:          # mid-step, after 2 finished steps and a flush
                        print('ready', flush=True)
                        time.sleep(60)             # the parent kills us here
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_step_keeps_finished_steps(tmp_path):
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    run = next(DataSource(files=str(path)).runs())
    assert run.complete is False
    det = run.Detector("epixM")
    steps = [[int(det.raw.raw(e)[0, 0, 0]) for e in step.events()] for step in run.steps()]
    assert steps == [list(range(12)), list(range(100, 112))]
    run = next(DataSource(files=str(path)).runs())
    assert [run.Detector("step_value")(s) for s in run.steps()] == [0.0, 1.0]
    assert np.all([run.Detector("wave8").raw.amp(e) == e._i for e in run.events()])


# -- repeated kills at random moments ------------------------------------------------------------
#
# At every kill: no wrong data is ever served, every step a file yields is whole, and every step
# confirmed as flushed reads back (the writer's groups have room for their links from the start:
# adding a step's link never splits or regrows a symbol table; docs/format.rst, "Crash safety").

KILL_RUNS = int(os.environ.get("CALIBSUITE_KILL_RUNS", "20"))  # more by hand: CALIBSUITE_KILL_RUNS=200
KILL_SEED = int(os.environ.get("CALIBSUITE_KILL_SEED", "20261126"))
KILL_WINDOW_S = 0.4

LOOPER = textwrap.dedent("""
    import sys
    import numpy as np
    from calibsuite_h5source import RunWriter
    compression = None if sys.argv[2] == 'none' else sys.argv[2]
    with RunWriter(sys.argv[1], 'delayScan', flush_every=4, compression=compression) as w:
        print('start', flush=True)        # the kill comes 0 to KILL_WINDOW_S after the file is created
        for k in range(100000):
            with w.step(delay=float(k)) as s:
                for i in range(3 + k % 7):
                    s.event(epixM=np.full((2, 16, 16), (1000 * k + i) % 65536, np.uint16),
                            wave8={'amp': float(k) + i / 100}, timestamp=(1 << 60) + 1000 * k + i)
            print('closed', k, flush=True)    # the step is flushed: it must survive any kill from now on
""")


def _kill_once(path, delay, compression):
    proc = subprocess.Popen([sys.executable, "-c", LOOPER, str(path), compression],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "start"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        confirmed = sum(line.startswith("closed") for line in proc.stdout)
    finally:
        proc.wait(timeout=30)
    return proc.returncode, confirmed


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_repeated_random_kills_serve_no_wrong_data_and_keep_confirmed_steps(tmp_path):
    rng = random.Random(KILL_SEED)
    outcomes = {"steps read": 0, "unreadable, nothing confirmed": 0}
    for n in range(KILL_RUNS):
        path = tmp_path / f"killed{n}.h5"
        delay, compression = rng.uniform(0, KILL_WINDOW_S), rng.choice(["none", "gzip"])
        code, confirmed = _kill_once(path, delay, compression)
        where = f"kill {n} (seed {KILL_SEED}, {delay:.3f} s, {compression}): {confirmed} steps confirmed"
        assert code == -signal.SIGKILL, where
        steps = killpoints.read_back(path)
        if isinstance(steps, H5SourceError):
            assert confirmed == 0, f"{where}; file refused: {steps}"
            outcomes["unreadable, nothing confirmed"] += 1
            continue
        assert len(steps) >= confirmed, f"{where}; only {len(steps)} steps read back"  # never lost silently
        assert killpoints.wrong_steps(steps) == [], where
        outcomes["steps read"] += len(steps)
    print(f"{KILL_RUNS} kills: {outcomes}")


# -- a kill before every write: each state the file passes through, deterministically ----------------
#
# A writer killed as it enters its Nth pwrite64 leaves exactly its first N-1 writes on disk. One run
# traced by strace gives every such state (tests/killpoints.py rebuilds them), checked here against
# real kills (strace -e inject=pwrite64:signal=KILL:when=N, one writer per kill point) at sampled
# points. Checked in every state: the confirmed steps are whole on disk (plain h5py) and the reader
# reads them all, and nothing it serves is wrong. Endings: a clean close, a close after an exception
# (writes 'error'), and a run with discarded steps (each followed by a flush that writes stepsDiscarded).

needs_strace = pytest.mark.skipif(killpoints.STRACE is None or not sys.platform.startswith("linux"),
                                  reason="needs strace (Linux)")
#: Every kill point of the 12- and 40-step runs and the long runs take about 17 minutes on 2 cores:
#: by hand, ``CALIBSUITE_KILL_FULL=1 python -m pytest -m slow tests/test_writer_crash.py``.
by_hand = pytest.mark.skipif(os.environ.get("CALIBSUITE_KILL_FULL", "") in ("", "0"),
                             reason="every kill point: by hand, CALIBSUITE_KILL_FULL=1 (about 17 min)")
ENDINGS = ["clean", "error", "discard"]


def _summary(outcomes):
    """Kill points, those losing a confirmed step, steps lost, wrong data: the figures of docs/format.rst."""
    lost = [o for o in outcomes if o.lost]
    return {"kill points": len(outcomes), "losing steps": len(lost), "steps lost": sum(o.lost for o in lost),
            "wrong": sum(bool(o.wrong) for o in outcomes), "with confirmed steps": sum(o.confirmed > 0 for o in outcomes),
            "first losses": [(o.n, o.confirmed, o.on_disk or o.refused) for o in lost[:3]]}


def _assert_none_lost(outcomes, where):
    summary = _summary(outcomes)
    print(f"{where}: {summary}")
    assert summary["losing steps"] == 0 and summary["wrong"] == 0, f"{where}: {summary}"
    assert all(o.read is None or o.read >= o.confirmed for o in outcomes)


#: the quick set (``-m "not slow"``) keeps one of them; CI runs all
SAMPLED = [pytest.param(ending, gaps, id=f"{ending}-{'gaps' if gaps else 'plain'}",
                        marks=() if (ending, gaps) == ("discard", True) else pytest.mark.slow)
           for ending in ENDINGS for gaps in (False, True)]


@needs_strace
@pytest.mark.parametrize("ending, gaps", SAMPLED)
def test_kill_points_sampled_over_a_12_step_run_lose_no_confirmed_step(tmp_path, ending, gaps):
    """CI's share of the next test: 40 kill points drawn with a fixed seed. ``gaps``: sources absent
    from events after the first confirmed steps, and a growing step_docstring (killpoints.LOOPER)."""
    tr, outcomes = killpoints.run_kills(tmp_path, 12, 4, ending, samples=40, seed=KILL_SEED, gaps=gaps)
    assert len(outcomes) == 40 and tr.n_writes > 250
    _assert_none_lost(outcomes, f"12 steps, {ending}, {'gaps, ' * gaps}40 sampled")


@needs_strace
@by_hand
@pytest.mark.slow
@pytest.mark.parametrize("gaps", [False, True], ids=["plain", "gaps"])
@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("n_steps", [12, 40])
def test_kill_before_every_write_loses_no_confirmed_step(tmp_path, n_steps, ending, gaps):
    tr, outcomes = killpoints.run_kills(tmp_path, n_steps, 4, ending, gaps=gaps)
    assert len(outcomes) == tr.n_writes > 20 * n_steps
    assert outcomes[-1].confirmed == n_steps
    _assert_none_lost(outcomes, f"{n_steps} steps, {ending}{', gaps' * gaps}")


LONG_RUNS = [(400, 1, "clean", False), (400, 10, "discard", False), (400, 100, "error", False),
             (1000, 3, "clean", False), (1000, 7, "discard", False), (1000, 50, "error", False),
             (400, 10, "discard", True), (1000, 7, "clean", True)]


@needs_strace
@by_hand
@pytest.mark.slow
@pytest.mark.parametrize("n_steps,flush_every,ending,gaps", LONG_RUNS)
def test_kill_points_sampled_over_long_runs_lose_no_confirmed_step(tmp_path, n_steps, flush_every, ending, gaps):
    """Over each run's whole write sequence: 30 kill points per run (seeded)."""
    tr, outcomes = killpoints.run_kills(tmp_path, n_steps, flush_every, ending, samples=30,
                                        seed=KILL_SEED + n_steps + flush_every, gaps=gaps)
    assert len(outcomes) == 30 and max(o.confirmed for o in outcomes) > n_steps // 2
    _assert_none_lost(outcomes, f"{n_steps} steps, flush_every {flush_every}, {ending}{', gaps' * gaps}")


def _real_kill(path, n, n_steps, flush_every, ending):
    """Run the looper under strace, killed as it enters its nth pwrite64; return what it printed."""
    proc = subprocess.run([killpoints.STRACE, "-qq", "-o", os.devnull, "-e", "trace=pwrite64",
                           "-e", f"inject=pwrite64:signal=KILL:when={n}",
                           *killpoints.python_argv(killpoints.LOOPER, str(path), str(n_steps), str(flush_every), ending)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"kill before write {n}: exit {proc.returncode} {proc.stderr[-300:]}"
    return proc.stdout


@needs_strace
@pytest.mark.parametrize("ending", ["clean", "discard"])
def test_rebuilt_states_are_the_states_real_kills_leave(tmp_path, ending):
    """The traced-run states match real kills (strace fault injection) at sampled kill points:
    same size, same bytes but for the writer's identity and times, same outcome."""
    tr, outcomes = killpoints.run_kills(tmp_path / "traced", 12, 4, ending, samples=4, seed=KILL_SEED)
    state = tmp_path / "state.h5"
    for o, (n, printed) in zip(outcomes, killpoints.states(tr, [o.n for o in outcomes], str(state)), strict=True):
        rebuilt = state.read_bytes()
        real = tmp_path / f"real{n}.h5"
        stdout = _real_kill(real, n, 12, 4, ending)
        assert stdout.count("closed") == printed.count("closed") == o.confirmed
        got = real.read_bytes()
        assert len(got) == len(rebuilt), f"kill before write {n}"
        differ = sum(a != b for a, b in zip(got, rebuilt, strict=True))
        assert differ <= 1000, f"kill before write {n}: {differ} bytes differ"  # pid, date, run, object times
        real_outcome = killpoints.check_state(real, n, stdout)
        assert (real_outcome.lost, real_outcome.read, real_outcome.wrong) == (o.lost, o.read, o.wrong)


def test_steps_discarded_is_counted_in_place(tmp_path):
    """``stepsDiscarded`` exists from the start and is overwritten in place: the header keeps its
    attributes, in the same places, and the file does not grow for the count."""
    path = tmp_path / "d.h5"
    with RunWriter(path, "dark") as w:
        w.add_step({"epixM": np.zeros((2, 2, 3, 4), np.uint16)})
        w.flush()
        with h5py.File(path, "r") as f:
            before = list(f["ancillaryData"].attrs)
            assert f["ancillaryData"].attrs["stepsDiscarded"] == 0
        for _ in range(3):
            with pytest.raises(KeyError), w.step() as s:
                s.event(epixM=np.ones((2, 3, 4), np.uint16))
                raise KeyError("discard")
        w.flush()
        with h5py.File(path, "r") as f:
            assert list(f["ancillaryData"].attrs) == before
            assert f["ancillaryData"].attrs["stepsDiscarded"] == 3
        w.add_step({"epixM": np.full((1, 2, 3, 4), 5, np.uint16)})
    run = next(DataSource(files=str(path)).runs())
    assert [len(list(s.events())) for s in run.steps()] == [2, 1]


@pytest.mark.parametrize("error", [None, "short", "x" * 5000, "é" * 900], ids=["clean", "short", "long", "utf8"])
def test_closing_allocates_nothing_in_the_file(tmp_path, error):
    """What a close writes (``complete``, or ``error``) fits where the file already has room: the file
    does not grow while closing, so a kill while closing cannot leave metadata pointing past its end."""
    path = tmp_path / "r.h5"
    try:
        with RunWriter(path, "dark", commandLine="y" * 3000, experiment="z" * 500) as w:
            for k in range(3):
                with w.step(step_value=float(k)) as s:
                    for _ in range(3):
                        s.event(epixM=np.zeros((2, 4, 4), np.uint16))
            before = os.path.getsize(path)
            if error:
                raise RuntimeError(error)
    except RuntimeError:
        pass
    assert os.path.getsize(path) == before
    with h5py.File(path, "r") as f:
        attrs = f["ancillaryData"].attrs
        stored = attrs.get("error")
        assert bool(attrs["complete"]) == (error is None) and "_room" not in attrs and "_room_text" not in attrs
    if error is None:
        assert stored is None
    else:
        assert isinstance(stored, str) and len(stored.encode()) <= ERROR_BYTES
        full = f"RuntimeError: {error}"
        assert stored == full if len(full.encode()) <= ERROR_BYTES else (
            stored.endswith("...") and full.startswith(stored[:-3]))


@needs_strace
@by_hand
@pytest.mark.slow
def test_kill_before_every_write_around_step_256_loses_no_confirmed_step(tmp_path):
    """Step 256 once started a new chunk of the per-step datasets (chunks of 256), referenced before the
    file's end address was written back: 8 of 57 kill points there lost the run. Every write from the
    confirmation of step 255 to that of step 257 (a discard at 256, since 256 % 9 == 4)."""
    tr = killpoints.trace(killpoints.python_argv(killpoints.LOOPER, str(tmp_path / "r.h5"), "300", "10", "discard"),
                          str(tmp_path / "r.h5"))
    writes = [i for i, op in enumerate(tr.ops) if op[0] == "w"]
    window = [k + 1 for k, i in enumerate(writes)
              if "closed 255\n" in tr.printed[i] and "closed 257\n" not in tr.printed[i]]
    state = str(tmp_path / "state.h5")
    outcomes = [killpoints.check_state(state, n, printed) for n, printed in killpoints.states(tr, window, state)]
    assert len(outcomes) > 40
    _assert_none_lost(outcomes, "300 steps, every write around step 256")


def test_per_step_datasets_hold_expected_steps_in_one_chunk(tmp_path):
    """Every entry of /ancillaryData/<name> up to expected_steps is written in place, in one chunk
    allocated at the first step (no allocation a kill could leave referenced but not covered)."""
    path = tmp_path / "c.h5"
    with RunWriter(path, "delayScan", expected_steps=300) as w:
        for k in range(3):
            w.add_step({"epixM": np.zeros((1, 1, 2, 2), np.uint16)}, delay=float(k))
    with h5py.File(path, "r") as f:
        assert f["ancillaryData/nEvents"].chunks == f["ancillaryData/delay"].chunks == (300,)
        assert f["ancillaryData/delay"][()].tolist() == [0.0, 1.0, 2.0]


def test_a_run_past_expected_steps_is_written_whole_and_warned_about_once(tmp_path, caplog):
    path = tmp_path / "long.h5"
    with caplog.at_level("WARNING", logger="calibsuite_h5source.write.writer"):
        with RunWriter(path, "delayScan", expected_steps=3) as w:
            for k in range(6):
                w.add_step({"epixM": np.full((2, 1, 2, 2), k, np.uint16)}, delay=float(k))
    warned = [r.getMessage() for r in caplog.records if "expected_steps" in r.getMessage()]
    assert len(warned) == 1 and "step 3 goes past expected_steps=3" in warned[0]
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    assert [int(det.raw.raw(e).flat[0]) for e in run.events()] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_every_source_links_its_present_group_in_step_0(tmp_path):
    """Step 0 writes ``present/0`` of every source, all True when it misses no event, so that a
    source's first absent event later adds one link to a group that already has room for it
    (made after a confirmed step, the group's node lost the run at 37 of 423 kill points)."""
    path = tmp_path / "p.h5"
    with RunWriter(path, "delayScan") as w:
        for k in range(2):
            with w.step(delay=float(k)) as s:
                for i in range(3):
                    s.event(epixM=np.zeros((1, 2, 2), np.uint16), wave8={"amp": 1.0, "sum": 2.0}, timestamp=10 * k + i + 1)
    with h5py.File(path, "r") as f:
        for name in ("epixM", "wave8"):
            assert list(f[f"{name}/present"]) == ["0"] and f[f"{name}/present/0"][()].tolist() == [True] * 3
    run = next(DataSource(files=path).runs())
    assert all(run.Detector("epixM").raw.raw(e) is not None for e in run.events())


def test_uncompressed_chunks_fit_the_steps_not_64_kib(tmp_path):
    """A chunk is allocated whole: per-step datasets of short steps get chunks of their size (a power of two
    holding the events add_events was given, the step's first block, or the longest earlier step),
    capped at CHUNK_BYTES."""
    from calibsuite_h5source.write.writer import CHUNK_BYTES

    path = tmp_path / "c.h5"
    with RunWriter(path, "delayScan", flush_every=4) as w:
        for k, n in enumerate([3, 10, 2]):
            w.add_step({"epixM": np.zeros((n, 1, 2, 2), np.uint16), "wave8": {"amp": np.ones(n)}},
                       timestamps=np.arange(n) + 100 * k + 1, delay=float(k))
        with w.step(delay=3.0) as s:  # a long step of big rows, flushed every 4 events
            for i in range(40):
                s.event(epixM=np.zeros((1, 2, 2), np.uint16), wave8={"amp": np.float64(i)}, timestamp=1000 + i)
    with h5py.File(path, "r") as f:
        # steps 0 and 1: the events add_step was given; steps 2 and 3 (event by event): step 1's 10 events
        assert [f[f"wave8/amp/{k}"].chunks for k in range(4)] == [(4,), (16,), (16,), (16,)]
        assert [f[f"timestamp/{k}"].chunks for k in range(4)] == [(4,), (16,), (16,), (16,)]
        assert f["wave8/amp/3"][()].tolist() == list(range(40))
    with RunWriter(tmp_path / "big.h5", "delayScan") as w:
        w.add_step({"wave8": {"amp": np.zeros((5000, 4))}}, delay=0.0)
    with h5py.File(tmp_path / "big.h5", "r") as f:
        assert f["wave8/amp/0"].chunks == (CHUNK_BYTES // 32, 4)
