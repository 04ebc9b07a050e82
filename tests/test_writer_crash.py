"""A writer killed with SIGKILL mid-run leaves its finished steps readable, exactly."""

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, H5SourceError, RunWriter
from calibsuite_h5source.errors import NotHDF5Error
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
# What holds at every kill: no wrong data is ever served, and every step a file yields is whole.
# What holds at nearly every kill: every step confirmed as flushed reads back. HDF5 (without SWMR)
# is not crash-consistent while it writes metadata: a kill in the middle of the flush that adds
# the next step's links can tear a group's symbol table (B-tree node and local heap written
# apart), and the reader then refuses the file with an H5SourceError ("HDF5 file is damaged")
# although earlier steps were flushed. Measured: about 1 kill in 200-250 (docs/format.rst,
# "Crash safety"). Such kills are counted and warned about; CALIBSUITE_KILL_STRICT=1 fails on them.

KILL_RUNS = int(os.environ.get("CALIBSUITE_KILL_RUNS", "20"))  # more by hand: CALIBSUITE_KILL_RUNS=200
KILL_SEED = int(os.environ.get("CALIBSUITE_KILL_SEED", "20261126"))
KILL_STRICT = os.environ.get("CALIBSUITE_KILL_STRICT", "") not in ("", "0")
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


def _read_back(path):
    """Every step the killed file yields, as ``[(delay, [(value, amp, ts), ...]), ...]``; or the H5SourceError."""
    try:
        run = next(DataSource(files=str(path)).runs())
        det, wave8, delay = run.Detector("epixM"), run.Detector("wave8"), run.Detector("delay")
        return [(delay(step), [(det.raw.raw(e), wave8.raw.amp(e), e.timestamp) for e in step.events()])
                for step in run.steps()]
    except H5SourceError as exc:
        return exc


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_repeated_random_kills_serve_no_wrong_data_and_keep_flushed_steps(tmp_path):
    rng = random.Random(KILL_SEED)
    outcomes = {"steps read": 0, "unreadable, nothing confirmed": 0, "torn HDF5 metadata, flushed steps refused": 0}
    for n in range(KILL_RUNS):
        path = tmp_path / f"killed{n}.h5"
        delay, compression = rng.uniform(0, KILL_WINDOW_S), rng.choice(["none", "gzip"])
        code, confirmed = _kill_once(path, delay, compression)
        where = f"kill {n} (seed {KILL_SEED}, {delay:.3f} s, {compression}): {confirmed} steps confirmed"
        assert code == -signal.SIGKILL, where
        steps = _read_back(path)
        if isinstance(steps, H5SourceError):
            if confirmed == 0:  # killed before its first step was flushed
                outcomes["unreadable, nothing confirmed"] += 1
                continue
            assert not KILL_STRICT, f"{where}; file refused: {steps}"
            assert isinstance(steps, NotHDF5Error), f"{where}; file refused for another reason: {steps!r}"
            warnings.warn(f"{where}; HDF5 metadata torn by the kill, file refused: {steps}", stacklevel=1)
            outcomes["torn HDF5 metadata, flushed steps refused"] += 1
            continue
        assert len(steps) >= confirmed, f"{where}; only {len(steps)} steps read back"  # never lost silently
        _check_steps(steps, where)
        outcomes["steps read"] += len(steps)
    print(f"{KILL_RUNS} kills: {outcomes}")


# -- a kill before every write: each state the file passes through, deterministically ----------------
#
# strace injects SIGKILL when the writer enters its Nth pwrite64, so the file holds exactly the
# first N-1 writes: every state a kill between two system calls can leave. A 4-step run makes
# about 110 writes; CI tries every one of them (CALIBSUITE_KILL_EVERY=N: every Nth, quicker). Every one
# matters: a stretch of four kill points while closing once tore the header, between sampled points.
# CALIBSUITE_KILL_STEPS=12 shows HDF5's own limit: from the 9th step on, adding a step's link
# splits or regrows a group's symbol table (B-tree node, local heap) across several writes, and
# a kill between them loses earlier steps on disk (docs/format.rst, "Incomplete runs").

KILL_EVERY = int(os.environ.get("CALIBSUITE_KILL_EVERY", "1"))
ENUM_STEPS = int(os.environ.get("CALIBSUITE_KILL_STEPS", "4"))
STRACE = shutil.which("strace")


#: The looper's run, ended by an exception after its last step: the writer closes uncleanly (writes ``error``).
FAILING_LOOPER = textwrap.dedent("""
    import sys
    import numpy as np
    from calibsuite_h5source import RunWriter
    try:
        with RunWriter(sys.argv[1], 'delayScan', flush_every=4) as w:
            for k in range(100000):
                with w.step(delay=float(k)) as s:
                    for i in range(3 + k % 7):
                        s.event(epixM=np.full((2, 16, 16), (1000 * k + i) % 65536, np.uint16),
                                wave8={'amp': float(k) + i / 100}, timestamp=(1 << 60) + 1000 * k + i)
                print('closed', k, flush=True)
            raise RuntimeError('DAQ died')
    except RuntimeError:
        pass
""")


def _kill_before_write(path, n, looper=LOOPER):
    code = looper.replace("range(100000)", f"range({ENUM_STEPS})")
    proc = subprocess.run([STRACE, "-qq", "-o", os.devnull, "-e", "trace=pwrite64",
                           "-e", f"inject=pwrite64:signal=KILL:when={n}",
                           sys.executable, "-c", code, str(path), "none"], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout.count("closed")


def _on_disk(path, confirmed):
    """The confirmed steps as plain h5py reads them (the writer's part of the guarantee); None when whole."""
    if confirmed == 0:
        return None
    try:
        with h5py.File(path, "r") as f:
            for k in range(confirmed):
                m = 3 + k % 7
                frames = f[f"epixM/{k}"][()]
                assert f["ancillaryData/nEvents"][k] == m and f["ancillaryData/delay"][k] == k
                assert frames.shape == (m, 2, 16, 16)
                assert [int(fr.flat[0]) for fr in frames] == [(1000 * k + i) % 65536 for i in range(m)]
                assert f[f"timestamp/{k}"][()].tolist() == [(1 << 60) + 1000 * k + i for i in range(m)]
        return None
    except (OSError, KeyError, AssertionError) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="module", params=["clean close", "close after an error"])
def kills_before_writes(request, tmp_path_factory):
    """``[(n, confirmed, on_disk_problem, read_back)]`` for a kill before write n, every KILL_EVERY-th n.

    Both ways a writer closes: cleanly (``complete``) and after an exception (``error``).
    """
    looper = LOOPER if request.param == "clean close" else FAILING_LOOPER
    tmp = tmp_path_factory.mktemp("enum")
    out, n = [], 1
    while True:
        path = tmp / f"k{n}.h5"
        code, confirmed = _kill_before_write(path, n, looper)
        if code == 0:  # the run finished before its nth write
            with h5py.File(path, "r") as f:
                error = f["ancillaryData"].attrs.get("error")
            assert (error is None) == (looper is LOOPER), f"{request.param}: error attribute {error!r}"
            return out
        assert code == -signal.SIGKILL, f"kill before write {n}: exit {code}"
        out.append((n, confirmed, _on_disk(path, confirmed), _read_back(path) if confirmed else None))
        n += KILL_EVERY


def _check_steps(steps, where):
    """Every step the reader yields is whole and right."""
    for k, (value, events) in enumerate(steps):
        assert value == float(k) and len(events) == 3 + k % 7, f"{where}; step {k}"
        for i, (frame, amp, ts) in enumerate(events):
            assert frame.shape == (2, 16, 16) and np.all(frame == (1000 * k + i) % 65536), f"{where}; {k}/{i}"
            assert amp == float(k) + i / 100 and ts == (1 << 60) + 1000 * k + i, f"{where}; {k}/{i}"


needs_strace = pytest.mark.skipif(STRACE is None or not sys.platform.startswith("linux"), reason="needs strace (Linux)")


@pytest.mark.slow
@needs_strace
def test_kill_before_any_write_keeps_confirmed_steps_and_serves_no_wrong_data(kills_before_writes):
    assert len(kills_before_writes) >= 25 * ENUM_STEPS // KILL_EVERY
    assert [(n, confirmed, p) for n, confirmed, p, _ in kills_before_writes if p is not None] == []
    for n, confirmed, _, steps in kills_before_writes:
        where = f"kill before write {n}: {confirmed} steps confirmed"
        if isinstance(steps, list):
            assert len(steps) >= confirmed, where  # never lost silently
            _check_steps(steps, where)
        else:
            assert steps is None or isinstance(steps, NotHDF5Error), f"{where}: {steps!r}"


@pytest.mark.slow
@needs_strace
def test_kill_before_any_write_reader_reads_every_confirmed_step(kills_before_writes):
    assert [(n, confirmed, str(r)) for n, confirmed, _, r in kills_before_writes if isinstance(r, H5SourceError)] == []


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
