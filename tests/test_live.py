"""Live runs: a writer process streams a run; this process follows it with ``DataSource(..., live=True)``."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.errors import H5SourceError, NotHDF5Error, WriterGoneError
from calibsuite_h5source.psana2.live import LiveRun, resolve_max_retries

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX processes")

#: The writer: ``python -c WRITER path steps events sleep flush_every mode``. Event ``i`` of step ``k``
#: has value ``v = 1000 k + i`` everywhere (frame from a seeded rng, side data, header field, timestamp);
#: every 5th event has no frame. ``mode``: ``end`` (complete), ``hang`` (after step 2's 10th event: flush,
#: print 'ready', sleep), ``pause`` (after step 0: print 'ready', sleep), ``runs:N`` (write N runs path.0.h5 ... one after the other).
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from calibsuite_h5source import RunWriter

    def frame(v):
        return np.random.default_rng(v).integers(0, 2**16, (2, 3, 4), dtype=np.uint16)

    def write(path, steps, events, sleep, flush_every, hang=None):
        with RunWriter(path, 'delayScan', flush_every=flush_every, flush_seconds=0.05) as w:
            for k in range(steps):
                with w.step(delay=0.5 * k) as s:
                    for i in range(events):
                        v = 1000 * k + i
                        s.event(epixM=None if i % 5 == 4 else frame(v), wave8={'amp': float(v)},
                                timestamp=(1 << 40) + v, headers={'epixM': {'frameNo': v}}, scan={'gain': k % 2})
                        if sleep:
                            time.sleep(sleep)
                        if hang == 'hang' and k == 2 and i == 9:
                            w.flush()
                            print('ready', flush=True)
                            time.sleep(120)
                if hang == 'pause' and k == 0:  # between steps
                    print('ready', flush=True)
                    time.sleep(120)

    path, steps, events, sleep, flush_every, mode = sys.argv[1:7]
    steps, events, sleep, flush_every = int(steps), int(events), float(sleep), int(flush_every)
    if mode.startswith('runs:'):
        for j in range(int(mode[5:])):
            write(f'{path}.{j}.h5', steps, events, sleep, flush_every)
    else:
        write(path, steps, events, sleep, flush_every, hang=mode)
        print('done', flush=True)
""")


@pytest.fixture(autouse=True)
def _no_inherited_retry_limit(monkeypatch):
    """psana sets PS_R_MAX_RETRIES=0 in its process for every non-live DataSource (an earlier test's)."""
    monkeypatch.delenv("PS_R_MAX_RETRIES", raising=False)


def frame(v):
    return np.random.default_rng(v).integers(0, 2**16, (2, 3, 4), dtype=np.uint16)


def start_writer(path, steps, events, sleep, flush_every, mode="end"):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(steps), str(events), str(sleep),
                             str(flush_every), mode], stdout=subprocess.PIPE, text=True)


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()


def check_event(run, step, evt, k, i):
    """Assert that event ``i`` of step ``k`` holds exactly what the writer wrote."""
    v = 1000 * k + i
    raw = run.Detector("epixM").raw
    assert (evt._step, evt._i) == (k, i)
    if i % 5 == 4:
        assert raw.raw(evt) is None and raw.frameNo(evt) is None
    else:
        np.testing.assert_array_equal(raw.raw(evt), frame(v))
        assert raw.frameNo(evt) == v
    assert run.Detector("wave8").raw.amp(evt) == v
    assert evt.timestamp == (1 << 40) + v
    assert run.Detector("delay")(step) == 0.5 * k
    assert run.Detector("gain")(evt) == k % 2
    assert run.Detector("step_value")(step) == 0.5 * k


def follow(path, steps, events, max_retries=60, require_live=True):
    """Follow a run with steps()/events(); check every event; return (run, events read, saw it incomplete).

    A run already complete when opened is a plain Run (allowed unless ``require_live``).
    """
    ds = DataSource(files=str(path), live=True, max_retries=max_retries)
    run = next(ds.runs())
    assert isinstance(run, LiveRun) or not require_live
    saw_incomplete, n = False, 0
    for k, step in enumerate(run.steps()):
        assert step.index == k
        for i, evt in enumerate(step.events()):
            saw_incomplete |= not run.complete
            check_event(run, step, evt, k, i)
            n += 1
        assert i == events - 1
    assert k == steps - 1
    assert run.complete
    return run, n, saw_incomplete


def test_live_reader_sees_every_event_once_in_order(tmp_path):
    path = tmp_path / "live.h5"
    proc = start_writer(path, steps=4, events=30, sleep=0.004, flush_every=7)
    try:
        run, n, saw_incomplete = follow(path, 4, 30)
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    assert n == 4 * 30
    assert saw_incomplete, "the reader must have followed the run while it was written"
    assert run.n_steps == 4 and list(run._index.n_events) == [30] * 4


def test_live_run_events_shared_cursor_and_max_events(tmp_path):
    path = tmp_path / "live.h5"
    proc = start_writer(path, steps=3, events=10, sleep=0.003, flush_every=3)
    try:
        run = next(DataSource(files=str(path), live=True, max_events=25).runs())
        got = [(e._step, e._i) for e in run.events()]
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    assert got == [(k, i) for k in range(3) for i in range(10)][:25]


def test_live_reader_ends_with_clear_error_when_writer_is_killed(tmp_path):
    path = tmp_path / "killed.h5"
    proc = start_writer(path, steps=4, events=12, sleep=0, flush_every=5, mode="hang")
    try:
        assert proc.stdout.readline().strip() == "ready"
        run = next(DataSource(files=str(path), live=True, max_retries=60).runs())
        seen = []
        t0 = None
        with pytest.raises(WriterGoneError) as info:
            for evt in run.events():
                check_event(run, _StepAt(evt._step), evt, evt._step, evt._i)
                seen.append((evt._step, evt._i))
                if (evt._step, evt._i) == (2, 9):  # the last durable event: kill the writer while we wait
                    os.kill(proc.pid, signal.SIGKILL)
                    t0 = time.monotonic()
        waited = time.monotonic() - t0
    finally:
        stop(proc)
    assert seen == [(k, i) for k in range(2) for i in range(12)] + [(2, i) for i in range(10)]
    message = str(info.value)
    assert str(path) in message and "34 events" in message and "step 2, event 10" in message
    assert "died" in message or "no longer running" in message
    assert waited < 30, "a dead writer is noticed, not waited out to the limit"
    assert run.complete is False


class _StepAt:
    """Stands for a Step in check_event (scan values are looked up by ``_step``)."""

    def __init__(self, k):
        self._step = k


def test_a_step_ends_when_the_writer_closes_it_not_when_the_next_begins(tmp_path):
    path = tmp_path / "pause.h5"
    proc = start_writer(path, steps=3, events=10, sleep=0, flush_every=5, mode="pause")
    try:
        assert proc.stdout.readline().strip() == "ready"
        run = next(DataSource(files=str(path), live=True, max_retries=60).runs())
        steps = run.steps()
        step = next(steps)
        t0 = time.monotonic()
        assert len(list(step.events())) == 10
        assert time.monotonic() - t0 < 30  # not the 60 s limit: the step's end is seen
        os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(WriterGoneError, match="read 10 events"):
            next(steps)
    finally:
        stop(proc)


def test_live_reader_gives_up_when_writer_goes_quiet(tmp_path):
    path = tmp_path / "quiet.h5"
    proc = start_writer(path, steps=4, events=12, sleep=0, flush_every=5, mode="hang")
    try:
        assert proc.stdout.readline().strip() == "ready"
        run = next(DataSource(files=str(path), live=True, max_retries=0.5).runs())
        with pytest.raises(WriterGoneError, match=r"no new data for 0.5 s .*went quiet.*read 34 events"):
            for _ in run.events():
                pass
        assert proc.poll() is None  # the writer is alive, only quiet
    finally:
        stop(proc)


@pytest.mark.slow
def test_live_repetitions_never_give_wrong_data(tmp_path):
    """Many fast runs, flushed every 3 events, followed while written; CALIBSUITE_LIVE_RUNS sets how many (10)."""
    runs = int(os.environ.get("CALIBSUITE_LIVE_RUNS", "10"))
    base = tmp_path / "rep"
    # 2 ms per event keeps each run being written for a while (the writer takes < 1 ms per step),
    # so the reader catches runs mid-write
    proc = start_writer(base, steps=3, events=40, sleep=0.002, flush_every=3, mode=f"runs:{runs}")
    live = 0
    try:
        for j in range(runs):
            run, n, saw_incomplete = follow(f"{base}.{j}.h5", 3, 40, max_retries=30, require_live=False)
            assert n == 120
            live += saw_incomplete
        assert proc.wait(timeout=120) == 0
    finally:
        stop(proc)
    logging.getLogger(__name__).info("%d of %d runs were read while being written", live, runs)
    assert live > 0


def test_reading_a_run_being_written_without_live_reads_its_finished_steps(tmp_path, caplog):
    path = tmp_path / "writing.h5"
    proc = start_writer(path, steps=4, events=12, sleep=0, flush_every=5, mode="hang")
    try:
        assert proc.stdout.readline().strip() == "ready"
        with caplog.at_level(logging.WARNING):
            run = next(DataSource(files=str(path)).runs())
            got = [(e._step, e._i) for e in run.events()]
        assert got == [(k, i) for k in range(2) for i in range(12)]
        assert run.complete is False
        warnings = [r.getMessage() for r in caplog.records if "being written" in r.getMessage()]
        assert len(warnings) == 1 and "2 finished steps" in warnings[0]
    finally:
        stop(proc)


def test_live_on_a_finished_run_reads_it_as_finished(tmp_path):
    path = tmp_path / "done.h5"
    proc = start_writer(path, steps=2, events=5, sleep=0, flush_every=2)
    assert proc.wait(timeout=60) == 0
    stop(proc)
    run = next(DataSource(files=str(path), live=True).runs())
    assert not isinstance(run, LiveRun) and run.complete
    assert len(list(run.events())) == 10


def test_live_bad_input(tmp_path, monkeypatch):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(NotHDF5Error, match="bad.h5"):
        next(DataSource(files=str(bad), live=True).runs())
    with pytest.raises(WriterGoneError, match="did not appear within 0.2 s"):
        next(DataSource(files=str(tmp_path / "never.h5"), live=True, max_retries=0.2).runs())
    with pytest.raises(H5SourceError, match="max_retries"):
        DataSource(files=str(bad), live=True, max_retries=-1)
    monkeypatch.setenv("PS_R_MAX_RETRIES", "soon")
    with pytest.raises(H5SourceError, match="PS_R_MAX_RETRIES must be a number of seconds"):
        resolve_max_retries()
    monkeypatch.setenv("PS_R_MAX_RETRIES", "7")
    assert resolve_max_retries() == 7.0 and resolve_max_retries(2) == 2.0
    monkeypatch.delenv("PS_R_MAX_RETRIES")
    assert resolve_max_retries() == 60.0


def test_smalldata_of_a_live_run(tmp_path):
    import h5py

    path, out = tmp_path / "live.h5", tmp_path / "smd.h5"
    proc = start_writer(path, steps=3, events=10, sleep=0.003, flush_every=3)
    try:
        ds = DataSource(files=str(path), live=True, max_retries=60)
        smd = ds.smalldata(filename=str(out))
        run = next(ds.runs())
        amp = run.Detector("wave8")
        for evt in run.events():
            smd.event(evt, amp=amp.raw.amp(evt))
        smd.done()
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["amp"][()], [1000.0 * k + i for k in range(3) for i in range(10)])
        np.testing.assert_array_equal(f["timestamp"][()], [(1 << 40) + 1000 * k + i for k in range(3) for i in range(10)])


def test_open_step_reads_are_strict_and_never_fill_values(tmp_path):
    """In the open step, a chunk HDF5 cannot find is an error to retry, not zeros (StoredDataset(strict=True))."""
    import h5py

    from calibsuite_h5source.errors import DamagedFileError
    from calibsuite_h5source.h5.dataset import NotYetVisible, StoredDataset

    data = np.arange(7 * 2 * 3, dtype=np.uint16).reshape(7, 2, 3) + 1
    with h5py.File(tmp_path / "c.h5", "w") as f:
        one = f.create_dataset("one", data=data, chunks=(1, 2, 3), maxshape=(None, 2, 3))
        three = f.create_dataset("three", data=data.astype(">i4"), chunks=(3, 2, 3))
        scalars = f.create_dataset("scalars", data=np.arange(10.0), chunks=(4,))
        gz = f.create_dataset("gz", data=data, chunks=(1, 2, 3), maxshape=(None, 2, 3), compression="gzip")
        for ds in (one, three, gz):
            for lo, hi in ((0, 1), (2, 7), (1, 5), (6, 7)):
                got = StoredDataset(ds, strict=True).read_range(lo, hi)
                assert got.dtype == ds.dtype and np.array_equal(got, ds[lo:hi]) and got.flags.writeable
        assert np.array_equal(StoredDataset(scalars, strict=True).read_range(3, 9), np.arange(3.0, 9.0))
        for ds in (one, gz):  # events 7 and 8 declared, their chunks never written: h5py would give zeros
            ds.resize(9, axis=0)
            assert not ds[8].any()
            for read in (lambda r: r.read_range(6, 9), lambda r: r.read(8)):
                with pytest.raises(DamagedFileError) as err:  # LiveEventArray retries it, reopening
                    read(StoredDataset(ds, strict=True))
                assert isinstance(err.value.__cause__, NotYetVisible)
            assert not StoredDataset(ds).read(8).any()  # a finished run's reader: HDF5's fill values


@pytest.mark.parametrize("intg_det", ["epixM", "wave8"])
def test_end_of_batch_follows_the_integrating_detector_while_the_run_grows(tmp_path, intg_det):
    """live=True once dropped intg_det (EndOfBatch() always []), and a finished run's masks were made once."""
    path = tmp_path / "live.h5"
    proc = start_writer(path, steps=3, events=12, sleep=0.01, flush_every=3)
    try:
        run = next(DataSource(files=str(path), live=True, max_retries=60, intg_det=intg_det).runs())
        assert isinstance(run, LiveRun) and run.intg_det == intg_det
        det = run.Detector(intg_det)
        got, saw_incomplete = [], False
        for evt in run.events():
            saw_incomplete |= not run.complete
            holds = (det.raw.raw(evt) if intg_det == "epixM" else det.raw.amp(evt)) is not None
            got.append((evt.EndOfBatch(), holds))
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    assert saw_incomplete and len(got) == 36
    assert all(eob == ([intg_det] if holds else []) for eob, holds in got)
    assert sum(holds for _, holds in got) == (36 - 3 * 2 if intg_det == "epixM" else 36)
