"""Read speed, memory and open time of H5DataSource, side by side with raw h5py.

Run by hand::

    python benchmarks/bench_read.py                # ~1 GB run of 4x352x384 uint16 frames
    python benchmarks/bench_read.py --gb 2         # the RSS target is stated for 2 GB
    python benchmarks/bench_read.py --gb 0.1       # quick

Prints, measured in this one run: events/s of a raw h5py loop over cached
datasets (``dset[i]``), events/s of ``det.raw.raw(evt)`` through the factory,
their ratio; peak RSS of each loop (each in a fresh subprocess, so the numbers
are its own); time to open a 1000-step, 3-detector run.
Targets: ratio >= 0.9; peak RSS < 150 MB for a 2 GB run; open < 50 ms.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

SHAPE = (4, 352, 384)


def write_run(path: Path, gb: float, steps: int) -> int:
    """Write a canonical run of ~``gb`` GB with plain h5py; return the event count."""
    frame_bytes = int(np.prod(SHAPE)) * 2
    n_total = max(steps, int(gb * 1e9 / frame_bytes))
    per_step = [n_total // steps + (k < n_total % steps) for k in range(steps)]
    rng = np.random.default_rng(0)
    block = rng.integers(900, 1200, size=(50, *SHAPE), dtype=np.uint16)
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs.update({"scriptType": "dark", "run": 1_700_000_000})
        for k, n in enumerate(per_step):
            ds = f.create_dataset(f"epixM/{k}", shape=(n, *SHAPE), dtype=np.uint16, chunks=(1, *SHAPE))
            for start in range(0, n, len(block)):
                stop = min(n, start + len(block))
                ds[start:stop] = block[: stop - start]
    return n_total


def write_many_steps(path: Path, steps: int = 1000, detectors: int = 3, index: bool = True) -> None:
    """A run of ``steps`` steps x ``detectors`` detectors of tiny frames, with timestamps.

    ``index``: store ``/ancillaryData/nEvents`` as RunWriter does (else: a file from another writer).
    """
    t = 0
    with h5py.File(path, "w") as f:
        f.create_group("ancillaryData").attrs.update({"scriptType": "delayScan", "run": 1_700_000_000})
        f["ancillaryData/delay"] = np.arange(steps, dtype=np.float64)
        if index:
            f["ancillaryData/nEvents"] = np.full(steps, 3, dtype=np.int64)
        for k in range(steps):
            for d in range(detectors):
                f.create_dataset(f"det{d}/{k}", data=np.zeros((3, 1, 4, 4), np.uint16))
            f.create_dataset(f"timestamp/{k}", data=np.arange(t, t + 3, dtype=np.uint64) + 1)
            t += 3


RAW_LOOP = """
import sys, time, h5py, resource
f = h5py.File(sys.argv[1], 'r')
dsets = [f['epixM'][k] for k in sorted(f['epixM'], key=int)]
t = time.perf_counter(); n = 0
for ds in dsets:
    for i in range(ds.shape[0]):
        a = ds[i]; n += 1
dt = time.perf_counter() - t
print(n, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

OUR_LOOP = """
import sys, time, resource
from calibsuite_h5source import DataSource
run = next(DataSource(files=sys.argv[1]).runs())
det = run.Detector('epixm')
t = time.perf_counter(); n = 0
for step in run.steps():
    for evt in step.events():
        a = det.raw.raw(evt); n += 1
dt = time.perf_counter() - t
print(n, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def measure(code: str, path: Path) -> tuple[int, float, float]:
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    n, dt, rss = out.stdout.split()
    return int(n), float(dt), float(rss)


def time_open(path: Path, repeat: int = 5) -> float:
    from calibsuite_h5source.run_index import open_run_index

    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        idx = open_run_index(path)
        best = min(best, time.perf_counter() - t)
        idx.close()
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="run size in GB (default 1)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--workdir", default=None, help="where to write the runs (default: a temp dir)")
    p.add_argument("--repeat", type=int, default=3, help="alternated measurements of each loop; the best counts")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        big, many = Path(tmp) / "big.h5", Path(tmp) / "many.h5"
        n = write_run(big, args.gb, args.steps)
        size_mb = big.stat().st_size / 1e6
        measure(RAW_LOOP, big)  # warm the page cache so both loops read from memory
        runs = [(measure(RAW_LOOP, big), measure(OUR_LOOP, big)) for _ in range(args.repeat)]  # alternated
        raw_n, raw_dt, raw_rss = min((r for r, _ in runs), key=lambda m: m[1])
        our_n, our_dt, our_rss = min((o for _, o in runs), key=lambda m: m[1])
        assert raw_n == our_n == n
        write_many_steps(many)
        t_open = time_open(many)
        plain = Path(tmp) / "many_plain.h5"
        write_many_steps(plain, index=False)
        t_open_plain = time_open(plain)
    raw_rate, our_rate = raw_n / raw_dt, our_n / our_dt
    print(f"run: {n} events of {SHAPE} uint16 in {args.steps} steps, {size_mb:.0f} MB (hot page cache, best of {args.repeat} alternated runs)")
    print(f"{'loop':<28}{'events/s':>10}{'MB/s':>9}{'peak RSS MB':>13}")
    for name, rate, rss in (("raw h5py dset[i]", raw_rate, raw_rss), ("det.raw.raw(evt)", our_rate, our_rss)):
        print(f"{name:<28}{rate:>10.0f}{rate * size_mb / n:>9.0f}{rss:>13.0f}")
    print(f"ratio ours/raw: {our_rate / raw_rate:.2f}   (target >= 0.9)")
    print(f"peak RSS while iterating: {our_rss:.0f} MB   (target < 150 MB for a 2 GB run)")
    print(f"open 1000 steps x 3 detectors: {t_open * 1e3:.1f} ms with the writer's nEvents index (target < 50 ms); "
          f"{t_open_plain * 1e3:.0f} ms without it (every step dataset opened)")


if __name__ == "__main__":
    main()
