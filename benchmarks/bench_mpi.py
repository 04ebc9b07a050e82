"""Events/s with 1 and 2 MPI ranks on a bitshuffle-LZ4 run, side by side.

    python benchmarks/bench_mpi.py [--events 600] [--ranks 1 2]

Writes a synthetic epixM run compressed with bitshuffle-LZ4 (reading it is
decompression-bound, i.e. CPU-bound), then runs the same suite-style loop
(``det.raw.calib`` and a per-pixel sum reduced with ``smd.sum``) under
``mpiexec -n N`` for each N, page cache warm, and prints events/s and the
speed-up. Needs mpi4py and an mpiexec (the ``mpi`` extra) and hdf5plugin.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LOOP = """
import sys, time
from mpi4py import MPI
from calibsuite_h5source import DataSource
ds = DataSource(files=sys.argv[1])
smd = ds.smalldata()
run = next(ds.runs())
det = run.Detector('epixm')
MPI.COMM_WORLD.Barrier()
t = time.perf_counter(); n = 0; total = 0.0
for evt in run.events():
    total += float(det.raw.calib(evt).sum()); n += 1
MPI.COMM_WORLD.Barrier()
dt = time.perf_counter() - t
n_all = smd.sum(n)
if smd.summary:
    print(n_all, dt)
"""


def mpiexec() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")


def timed(path, ranks):
    env = {k: v for k, v in os.environ.items() if k != "PS_PARALLEL"}
    out = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-c", LOOP, str(path)],
                         capture_output=True, text=True, check=True, env=env, timeout=600)
    n, dt = out.stdout.split()[-2:]
    return int(float(n)), float(dt)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=600)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    from calibsuite_h5source.fake import SyntheticRun

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "bslz4.h5"
        SyntheticRun("dark", events=args.events // 4, steps=4).write(path, compression="bitshuffle")
        timed(path, 1)  # warm the page cache
        results = {r: timed(path, r) for r in args.ranks}
        mb = path.stat().st_size / 1e6
    base = results[args.ranks[0]]
    print(f"{args.events} epixM events (4x192x384 uint16), bitshuffle-LZ4, {mb:.0f} MB on disk, {os.cpu_count()} cores")
    print(f"{'ranks':>5}{'events/s':>10}{'speed-up':>10}")
    for r, (n, dt) in results.items():
        assert n == args.events, (r, n)
        print(f"{r:>5}{n / dt:>10.0f}{(base[1] / dt):>10.2f}")


if __name__ == "__main__":
    main()
