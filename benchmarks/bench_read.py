"""Read speed, memory and open time of H5DataSource, side by side with raw h5py.

Run by hand::

    python benchmarks/bench_read.py                # ~1 GB run of 4x352x384 uint16 frames
    python benchmarks/bench_read.py --gb 2         # the RSS target is stated for 2 GB
    python benchmarks/bench_read.py --gb 0.1       # quick

Prints, measured in this one run: events/s of a raw h5py loop over cached
datasets (``dset[i]``), events/s of ``det.raw.raw(evt)`` through the factory
(and with ``zero_copy=True``), of the copy floor (``os.preadv`` of each
event's bytes into a new array, addresses known beforehand: what any reader
returning new arrays must at least do),
their ratio by wall time and by CPU time (best of alternated runs, each loop
in a fresh subprocess, page cache warm); peak RSS of each loop; the time and
peak RSS of ``next(DataSource(files=p).runs())`` on a 1000-step, 3-detector run
with and without the writer's ``nEvents`` index (each open in a fresh
process, after its imports). ``uptime``'s load is printed with the figures.
Targets (issue #11): ratio >= 1.5 by wall and CPU time; peak RSS < 150 MB
for a 2 GB run; un-indexed open <= 2x the indexed one, peak RSS within 20 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
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


# peak RSS of this process image (ru_maxrss would include the parent's, kept across exec)
_HWM = "def hwm():\n    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"

RAW_LOOP = """
import sys, time, h5py
HWM
f = h5py.File(sys.argv[1], 'r')
dsets = [f['epixM'][k] for k in sorted(f['epixM'], key=int)]
t = time.perf_counter(); c = time.process_time(); n = 0
for ds in dsets:
    for i in range(ds.shape[0]):
        a = ds[i]; n += 1
dt, dc = time.perf_counter() - t, time.process_time() - c
print(n, dt, dc, hwm())
""".replace("HWM", _HWM)

FLOOR_LOOP = """
import os, sys, time, h5py, numpy as np
HWM
f = h5py.File(sys.argv[1], 'r')
where = []
for k in sorted(f['epixM'], key=int):
    ds = f['epixM'][k]
    where += [ds.id.get_chunk_info_by_coord((i, 0, 0, 0)).byte_offset for i in range(ds.shape[0])]
shape, dtype = ds.shape[1:], ds.dtype
fd = os.open(sys.argv[1], os.O_RDONLY)
t = time.perf_counter(); c = time.process_time(); n = 0
for addr in where:
    a = np.empty(shape, dtype); os.preadv(fd, [a], addr); n += 1
dt, dc = time.perf_counter() - t, time.process_time() - c
print(n, dt, dc, hwm())
""".replace("HWM", _HWM)

OUR_LOOP = """
import sys, time
HWM
from calibsuite_h5source import DataSource
run = next(DataSource(files=sys.argv[1], zero_copy=len(sys.argv) > 2).runs())
det = run.Detector('epixm')
t = time.perf_counter(); c = time.process_time(); n = 0
for step in run.steps():
    for evt in step.events():
        a = det.raw.raw(evt); n += 1
dt, dc = time.perf_counter() - t, time.process_time() - c
print(n, dt, dc, hwm())
""".replace("HWM", _HWM)

OPEN = """
import sys, time
HWM
import calibsuite_h5source.psana2.source
from calibsuite_h5source import DataSource
rss0 = hwm()
t = time.perf_counter()
run = next(DataSource(files=sys.argv[1]).runs())
dt = time.perf_counter() - t
print(dt, hwm(), rss0)
""".replace("HWM", _HWM)


def measure(code: str, path: Path, *extra: str) -> tuple[int, float, float, float]:
    out = subprocess.run([sys.executable, "-c", code, str(path), *extra], capture_output=True, text=True,
                         check=True)
    n, dt, dc, rss = out.stdout.split()
    return int(n), float(dt), float(dc), float(rss)


def time_open(path: Path) -> tuple[float, float]:
    """``(seconds, peak RSS MB)`` of opening ``path`` in a fresh process (imports done before the clock)."""
    out = subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True, check=True)
    dt, rss, _ = out.stdout.split()
    return float(dt), float(rss)


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="run size in GB (default 1)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--workdir", default=None, help="where to write the runs (default: a temp dir)")
    p.add_argument("--repeat", type=int, default=3, help="alternated measurements of each loop; the best counts")
    args = p.parse_args(argv)
    print(f"{os.cpu_count()} cores; before: {load()}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        big, many = Path(tmp) / "big.h5", Path(tmp) / "many.h5"
        n = write_run(big, args.gb, args.steps)
        size_mb = big.stat().st_size / 1e6
        measure(RAW_LOOP, big)  # warm the page cache so both loops read from memory
        runs = [(measure(RAW_LOOP, big), measure(OUR_LOOP, big), measure(FLOOR_LOOP, big),
                 measure(OUR_LOOP, big, "zero_copy")) for _ in range(args.repeat)]  # alternated
        plain = Path(tmp) / "many_plain.h5"
        write_many_steps(many)
        write_many_steps(plain, index=False)
        opens = [(time_open(many), time_open(plain)) for _ in range(max(5, args.repeat))]  # alternated
    raw, ours, floor, mapped = ([r[k] for r in runs] for k in range(4))
    assert all(m[0] == n for m in raw + ours + floor + mapped)
    print(f"run: {n} events of {SHAPE} uint16 in {args.steps} steps, {size_mb:.0f} MB (hot page cache, "
          f"{args.repeat} alternated runs; best, and the spread min-max)")
    print(f"{'loop':<22}{'events/s wall':>15}{'events/s CPU':>14}{'MB/s':>7}{'peak RSS MB':>13}")
    for name, ms in (("raw h5py dset[i]", raw), ("det.raw.raw(evt)", ours),
                     ("copy floor (preadv)", floor), ("  ... zero_copy=True", mapped)):
        wall, cpu = n / min(m[1] for m in ms), n / min(m[2] for m in ms)
        print(f"{name:<22}{wall:>15.0f}{cpu:>14.0f}{wall * size_mb / n:>7.0f}{max(m[3] for m in ms):>13.0f}")
    for what, col in (("wall", 1), ("CPU", 2)):
        best = min(m[col] for m in raw) / min(m[col] for m in ours)
        pairs = [r[col] / o[col] for r, o in zip(raw, ours, strict=True)]
        print(f"ratio ours/raw by {what} time: {best:.2f} (best of each); per alternated pair "
              f"{min(pairs):.2f}-{max(pairs):.2f}   (target >= 1.5)")
    print(f"ours / the copy floor (os.preadv of each event into a new array, nothing else): "
          f"{min(m[1] for m in floor) / min(m[1] for m in ours):.2f} by wall time")
    print(f"peak RSS while iterating: {max(m[3] for m in ours):.0f} MB   (target < 150 MB for a 2 GB run)")
    t_idx, rss_idx = min(o[0][0] for o in opens), min(o[0][1] for o in opens)
    t_plain, rss_plain = min(o[1][0] for o in opens), min(o[1][1] for o in opens)
    print(f"open 1000 steps x 3 detectors (best of {len(opens)} alternated; fresh process each):")
    print(f"  with the writer's nEvents index: {t_idx * 1e3:6.1f} ms, peak RSS {rss_idx:.0f} MB")
    print(f"  without it (another writer):     {t_plain * 1e3:6.1f} ms, peak RSS {rss_plain:.0f} MB")
    print(f"  ratio {t_plain / t_idx:.2f} (target <= 2), RSS difference {rss_plain - rss_idx:+.0f} MB (target <= 20)")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
