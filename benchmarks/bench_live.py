"""Live runs: what the durability flushes cost the writer, and how soon a live reader sees an event.

Run by hand::

    python benchmarks/bench_live.py                  # 600 epixM frames per configuration (~350 MB each)
    python benchmarks/bench_live.py --events 200     # quick

1. **Flush cost.** One step of ``--events`` epixM frames (4x192x384 uint16,
   realistic noise), uncompressed and bitshuffle-LZ4, written by RunWriter
   with the durability flush (data flush + counter flush) every
   ``flush_every`` events, against the same writer flushing only at the step
   end. Printed side by side as events/s, MB/s and the ratio to no mid-step
   flush.
2. **Latency.** A writer process streams a one-step dark at each ``--rate`` Hz
   with ``flush_every`` 10; this process follows it with
   ``DataSource(files=..., live=True)`` and reads every frame. For each event:
   the time from the end of the writer's flush that made it durable to the
   moment ``step.events()`` yielded it and its frame was read. Median and
   worst are printed. The delay includes the reader's own backlog when it
   reads slower than the writer writes (a loaded machine).
3. **Consistency** (``--stress N``): a writer writes 3 steps of N small
   frames as fast as it can, flushing every 100 events; the live reader
   (polling every ``--poll`` s, 2 ms by default: many reopens, to catch the
   file mid-update) checks every event's data and counts the reads it had
   to retry.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.psana2.live import open_live_run

SHAPE = (4, 192, 384)


def make_frames(n_distinct: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    pedestal = rng.normal(1000, 50, SHAPE).astype(np.float32)
    return np.stack([(pedestal + rng.normal(0, 8, SHAPE)).astype(np.uint16) for _ in range(n_distinct)])


def write(path, frames, n, flush_every, compression) -> float:
    t0 = time.perf_counter()
    with RunWriter(path, "dark", compression=compression, flush_every=flush_every, flush_seconds=float("inf"),
                   overwrite=True) as w, w.step() as s:
        for i in range(n):
            s.event(epixM=frames[i % len(frames)])
    return time.perf_counter() - t0


def flush_cost(directory: Path, n: int, repeats: int) -> None:
    frames = make_frames()
    mb = n * frames[0].nbytes / 1e6
    configs = [("step end only", n + 1), ("every 100 (default)", 100), ("every 10", 10), ("every 1", 1)]
    print(f"\n1. write throughput, one step of {n} epixM frames ({mb:.0f} MB), best of {repeats}")
    print(f"   {'durability flush':<22}{'compression':<13}{'events/s':>10}{'MB/s':>9}{'vs step end':>13}")
    for compression in (None, "bitshuffle"):
        base = None
        for label, every in configs:
            best = min(write(directory / "w.h5", frames, n, every, compression) for _ in range(repeats))
            base = base or best
            print(f"   {label:<22}{compression or 'none':<13}{n / best:>10.0f}{mb / best:>9.0f}{base / best:>12.2f}x")
    (directory / "w.h5").unlink(missing_ok=True)


WRITER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from calibsuite_h5source import RunWriter

    path, n, rate, flush_every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(0)
    frames = rng.normal(1000, 8, (8, 4, 192, 384)).astype(np.uint16)
    flushes = []
    orig = RunWriter.flush
    def flush(self):
        orig(self)
        flushes.append((self._open_step.n_events if self._open_step else -1, time.time()))
    RunWriter.flush = flush
    with RunWriter(path, 'dark', flush_every=flush_every) as w, w.step() as s:
        t0 = time.perf_counter()
        for i in range(n):
            s.event(epixM=frames[i % 8])
            time.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
    print(json.dumps(flushes))
""")


def latency(directory: Path, n: int, rate: float, flush_every: int) -> None:
    path = directory / "live.h5"
    path.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(rate), str(flush_every)],
                            stdout=subprocess.PIPE, text=True)
    received = []
    try:
        run = next(DataSource(files=str(path), live=True, max_retries=30).runs())
        det = run.Detector("epixM")
        for step in run.steps():
            for evt in step.events():
                det.raw.raw(evt)
                received.append((evt._i, time.time()))
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    flushes = json.loads(out.strip().splitlines()[-1])
    counts = np.array([c for c, _ in flushes if c >= 0])
    times = np.array([t for c, t in flushes if c >= 0])
    delays = []
    for i, t in received:
        j = np.searchsorted(counts, i + 1)  # the first flush that made event i durable
        if j < len(counts):  # events made durable by the step-end flush are not timed here
            delays.append(t - times[j])
    d = np.array(delays) * 1e3
    print(f"\n2. latency, {n} epixM frames at {rate:g} Hz, flush_every={flush_every}, "
          f"reader polls every 50 ms: {len(received)} events read, {len(d)} timed")
    print(f"   flush -> event read by the live reader: median {np.median(d):.1f} ms, "
          f"95% {np.percentile(d, 95):.1f} ms, worst {d.max():.1f} ms")


STRESS_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from calibsuite_h5source import RunWriter

    path, steps, n, flush_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with RunWriter(path, 'dark', flush_every=flush_every) as w:
        for k in range(steps):
            with w.step() as s:
                for i in range(n):
                    v = k * n + i
                    s.event(epixM=np.full((2, 16, 16), v % 65521, np.uint16), wave8={'amp': float(v)})
""")


def stress(directory: Path, steps: int, n: int, flush_every: int, poll: float) -> None:
    path = directory / "stress.h5"
    path.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", STRESS_WRITER, str(path), str(steps), str(n), str(flush_every)])
    wrong = checked = 0
    try:
        run = open_live_run(path, max_retries=30, poll=poll)
        det, amp = run.Detector("epixM"), run.Detector("wave8")
        for evt in run.events():
            v = evt._step * n + evt._i
            wrong += not (np.all(det.raw.raw(evt) == v % 65521) and amp.raw.amp(evt) == v)
            checked += 1
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    retries = getattr(getattr(run, "_live", None), "follower", None)
    print(f"\n3. consistency: {steps} steps of {n} small frames flushed every {flush_every} events, "
          f"followed live polling every {poll * 1e3:g} ms:")
    print(f"   {checked} events checked, {wrong} wrong, "
          f"{retries.retries if retries else 0} reads retried after a failed allocation check or read")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=600, help="frames per write configuration")
    p.add_argument("--repeats", type=int, default=2, help="best of this many writes")
    p.add_argument("--rate", type=float, nargs="+", default=[20.0, 100.0],
                   help="frames per second of the latency writer (one run per rate)")
    p.add_argument("--latency-events", type=int, default=500)
    p.add_argument("--stress", type=int, default=0, metavar="N",
                   help="also follow 3 steps of N small frames written as fast as possible, checking every event")
    p.add_argument("--stress-flush-every", type=int, default=100, help="flush_every of the --stress writer")
    p.add_argument("--poll", type=float, default=0.002, help="poll interval of the --stress reader (s)")
    p.add_argument("--skip-throughput", action="store_true", help="skip part 1")
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        print(f"calibsuite_h5source live benchmark ({os.cpu_count()} cores, files in {d})")
        if not args.skip_throughput:
            flush_cost(Path(d), args.events, args.repeats)
        for rate in args.rate:
            latency(Path(d), args.latency_events, rate, 10)
        if args.stress:
            stress(Path(d), 3, args.stress, args.stress_flush_every, args.poll)


if __name__ == "__main__":
    main()
