"""MPI: psana's rank roles vs every rank a worker, side by side (events/s, CPU, pairs kept).

    python benchmarks/bench_mpi.py [--shots 300] [--steps 4] [--ranks 4] [--repeat 3]

Writes a synthetic epixM linearity run with MFX timing (every shot is a
beam-monitor event followed 300 ns later by a frame event), frames compressed
with bitshuffle-LZ4 (reading is decompression-bound, i.e. CPU-bound). Then
runs the same suite-style loop (``det.raw.calib`` of each frame, a flux
paired with the frame when the monitor event is within 1000 ticks before it,
``smd.sum``) serially and under ``mpiexec -n N``, page cache warm, in:

``roles``         psana's roles (the default): rank 0 smd0, rank 1 event
                  builder, ranks 2..N-1 workers (``PS_SRV_NODES=0``), so N-2 readers
``every``         the opt-in ``CALIBSUITE_EVERY_RANK_A_WORKER=1``: N readers

each with ``batch B`` (psana's batches of B events, taken across steps;
1000 is psana's default, so a run of fewer events goes to ONE worker) or
``intg B`` (``intg_det='epixm'``: a batch closes after every B-th frame, so a
monitor event travels with its frame). It prints events/s, the speed-up over
one process, the CPU time all ranks spent per frame (ranks without events
wait for the others with sleeps, as the package makes them wait at exit) and the frame/flux pairs
kept. Runs are alternated and the best of ``--repeat`` is kept (the machine
may be shared). Needs mpi4py, an mpiexec and hdf5plugin.
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
import numpy as np
from mpi4py import MPI
from calibsuite_h5source import DataSource

path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
kwargs = {"batch_size": n}
if mode == "intg":
    kwargs["intg_det"] = "epixm"
ds = DataSource(files=path, **kwargs)
smd = ds.smalldata()
run = next(ds.runs())
det, bm = run.Detector("epixm"), run.Detector("MfxDg1BmMon")
MPI.COMM_WORLD.Barrier()
t, c = time.perf_counter(), time.process_time()
n_evt = pairs = 0
flux_ts = None
for evt in run.events():
    n_evt += 1
    frame = det.raw.calib(evt)
    if frame is None:
        flux_ts, flux = evt.timestamp, float(bm.raw.peakAmplitude(evt)[:4].mean())
        continue
    frame.sum()
    if flux_ts is not None and evt.timestamp - flux_ts <= 1000:
        pairs += 1
request = MPI.COMM_WORLD.Ibarrier()  # ranks without events wait as a script's end does (sleeping)
while not request.Test():
    time.sleep(0.005)
dt = time.perf_counter() - t
cpu_all = MPI.COMM_WORLD.allreduce(time.process_time() - c)  # every rank's CPU, waiting ones too
counts = smd.sum(np.array([n_evt, pairs]))
if counts is not None:
    print(int(counts[0]), int(counts[1]), cpu_all, dt)
"""

#: (roles mode, dealing, batch size)
MODES = [("roles", "batch", 1000), ("roles", "batch", 50), ("roles", "intg", 25),
         ("every", "batch", 1000), ("every", "batch", 50), ("every", "intg", 25)]


def mpiexec() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")


def timed(path, ranks, roles, mode, n):
    drop = ("PS_PARALLEL", "PS_EB_NODES", "PS_SRV_NODES", "CALIBSUITE_EVERY_RANK_A_WORKER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if roles == "every":
        env["CALIBSUITE_EVERY_RANK_A_WORKER"] = "1"
    cmd = [sys.executable, "-c", LOOP, str(path), mode, str(n)]
    if ranks > 1:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    else:  # one process: the serial reference (no launcher, no mpi4py partition)
        cmd = [mpiexec(), "-n", "1", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, timeout=900)
    n_evt, pairs, cpu, dt = out.stdout.split()[-4:]
    return int(n_evt), int(pairs), float(cpu), float(dt)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", type=int, default=300, help="frames in the run (each with its monitor event)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--ranks", type=int, default=4, help="mpiexec -n (psana needs 3 at least)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    from calibsuite_h5source.synthetic.run import SyntheticRun

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "bslz4.h5"
        SyntheticRun("linearity", events=args.shots // args.steps, steps=args.steps, timing=True).write(
            path, compression="bitshuffle")
        timed(path, 1, "every", "batch", 1000)  # warm the page cache
        cases = [(1, "serial", "batch", 1000)] + [(args.ranks, r, m, n) for r, m, n in MODES]
        best = {}
        for _ in range(args.repeat):  # alternate, keep the best of each
            for case in cases:
                n_evt, pairs, cpu, dt = timed(path, *case)
                old = best.get(case, (0, 0, float("inf"), float("inf")))
                best[case] = (n_evt, pairs, min(cpu, old[2]), min(dt, old[3]))
        mb = path.stat().st_size / 1e6
    shots = (args.shots // args.steps) * args.steps
    base = best[cases[0]][3]
    print(f"{shots} shots = {2 * shots} events (monitor + epixM frame 4x192x384 uint16) in {args.steps} steps, "
          f"bitshuffle-LZ4, {mb:.0f} MB, {os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'ranks':>5}  {'mode':<7}{'readers':>8}  {'dealing':<12}{'events/s':>10}{'speed-up':>10}"
          f"{'CPU ms/frame':>14}{'pairs kept':>12}")
    for (ranks, roles, mode, n), (n_evt, pairs, cpu, dt) in best.items():
        assert n_evt == 2 * shots, (ranks, roles, mode, n, n_evt)
        readers = ranks if roles != "roles" else ranks - 2
        print(f"{ranks:>5}  {roles:<7}{readers:>8}  {f'{mode} {n}':<12}{n_evt / dt:>10.0f}{base / dt:>10.2f}"
              f"{1e3 * cpu / shots:>14.1f}{pairs:>7}/{shots}")


if __name__ == "__main__":
    main()
