"""Whole arrays against the event loop: ``det.raw.frames()`` and ``dask_array().mean(0)``.

Run by hand::

    python benchmarks/bench_arrays.py              # ~0.5 GB run of 4x192x384 uint16 frames
    python benchmarks/bench_arrays.py --gb 2       # the issue's 2 GB run (needs ~2 GB free RAM)
    python benchmarks/bench_arrays.py --gb 0.1     # quick

The run is written to tmpfs (``/dev/shm`` when present) so that the numbers
measure the reader, not the disk; each figure is the best of ``--repeat``
alternated runs. Printed side by side, from this one run:

* read every frame: the event loop (``det.raw.raw(evt)`` into a preallocated
  array) vs ``det.raw.frames()`` (all steps), and ``frames(step=k)`` per step;
* mean frame: the event loop (``sum += frame``) vs
  ``dask_array().mean(0).compute()`` (threads, ``--workers``) vs
  ``frames().mean(0)``;
* for chunks of one event (the writer's) and of 16 events;
* ``alloc+touch``: filling a fresh array of the run's size, the floor of any
  method that returns the frames (page faults; large on a loaded VM).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from calibsuite_h5source import DataSource

log = logging.getLogger("bench_arrays")
SHAPE = (4, 192, 384)


def write_run(path: Path, gb: float, steps: int, chunk_events: int) -> int:
    """A canonical run of ~``gb`` GB, ``steps`` steps, chunks of ``chunk_events`` events; return the event count."""
    frame_bytes = int(np.prod(SHAPE)) * 2
    n_total = max(steps, int(gb * 1e9 / frame_bytes))
    per_step = [n_total // steps + (k < n_total % steps) for k in range(steps)]
    block = np.random.default_rng(0).integers(900, 1200, size=(64, *SHAPE), dtype=np.uint16)
    with h5py.File(path, "w") as f:
        g = f.create_group("ancillaryData")
        g.attrs.update({"scriptType": "delayScan", "run": 1_700_000_000, "ancillaryDataType": "delay"})
        g["delay"] = np.arange(steps, dtype=np.float64)
        for k, n in enumerate(per_step):
            ds = f.create_dataset(f"epixM/{k}", shape=(n, *SHAPE), dtype=np.uint16, chunks=(chunk_events, *SHAPE))
            for start in range(0, n, len(block)):
                stop = min(n, start + len(block))
                ds[start:stop] = block[: stop - start]
    return n_total


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def loop_frames(path):
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    n = int(run._index.n_events.sum())
    out = np.empty((n, *SHAPE), np.uint16)
    for j, evt in enumerate(run.events()):
        out[j] = det.raw.raw(evt)
    return out


def loop_mean(path):
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    total, n = np.zeros(SHAPE, np.float64), 0
    for evt in run.events():
        total += det.raw.raw(evt)
        n += 1
    return total / n


def raw_of(path):
    return next(DataSource(files=str(path)).runs()).Detector("epixM").raw


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=0.5, help="run size in GB (default 0.5)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="alternated runs; the best counts")
    p.add_argument("--workers", type=int, default=2, help="dask threads")
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import dask

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for chunk in (1, 16):
            path = Path(tmp) / f"run_c{chunk}.h5"
            n = write_run(path, args.gb, args.steps, chunk)
            gb = n * np.prod(SHAPE) * 2 / 1e9
            log.info("\n%d events of %s uint16 (%.2f GB), %d steps, chunks of %d event(s), %s",
                     n, SHAPE, gb, args.steps, chunk, tmp)
            results = {}
            for _ in range(args.repeat):  # alternate the contenders so drift hits them alike
                for name, fn in (
                    ("alloc+touch", lambda n=n: np.ones((n, *SHAPE), np.uint16)),
                    ("loop frames", lambda p=path: loop_frames(p)),
                    ("frames()", lambda p=path: raw_of(p).frames(max_bytes=2**40)),
                    ("frames(step=k)", lambda p=path: [raw_of(p).frames(step=k) for k in range(args.steps)]),
                    ("loop mean", lambda p=path: loop_mean(p)),
                    ("dask mean", lambda p=path: raw_of(p).dask_array().mean(0).compute(
                        scheduler="threads", num_workers=args.workers)),
                    ("frames().mean(0)", lambda p=path: raw_of(p).frames(max_bytes=2**40).mean(0)),
                ):
                    t, out = best(fn, 1)
                    prev = results.get(name)
                    results[name] = (min(t, prev[0]) if prev else t, out)
                    del out
            results["alloc+touch"] = (results["alloc+touch"][0], None)
            ref_frames = results["loop frames"][1]
            assert np.array_equal(results["frames()"][1], ref_frames)
            np.testing.assert_allclose(results["dask mean"][1], results["loop mean"][1])
            base_read, base_mean = results["loop frames"][0], results["loop mean"][0]
            log.info("%-18s %9s %9s %12s", "", "seconds", "GB/s", "vs loop")
            for name, (t, _) in results.items():
                base = base_mean if "mean" in name else base_read
                log.info("%-18s %9.3f %9.2f %11.2fx", name, t, gb / t, base / t)
            del results, ref_frames
            path.unlink()
    log.info("\ndask %s, threads=%d, cores=%d", dask.__version__, args.workers, os.cpu_count())


if __name__ == "__main__":
    main()
