"""Write speed of RunWriter vs a raw h5py block-append loop, side by side.

Run by hand::

    python benchmarks/bench_write.py               # 1000 epixM frames (4x192x384 uint16, ~590 MB)
    python benchmarks/bench_write.py --events 200  # quick

Both writers get the same realistic frames (per-pixel pedestal + gaussian
noise, the epixM gain bit clear), uncompressed and with bitshuffle-LZ4.
The raw loop is what a careful h5py user writes: one resizable dataset,
chunks of one event, blocks of ``--block`` events appended with one resize
and one write. Targets: RunWriter >= 0.9x raw uncompressed; bitshuffle-LZ4
>= 800 MB/s.

Then the per-step overhead (``--steps``, default 1000): a scan of steps of 10
small events (2x16x16 uint16) with a per-step ``step_value``, written by
RunWriter (its crash-safe flushes: data, then the counters) against raw h5py
making one dataset per step and flushing once per step. Target: RunWriter
<= 1 ms per step.

Then how groups store their links (``--links``, docs/format.rst "Crash safety"):
the same scan written with each layout of ``storage.LINK_LAYOUT`` -- ``plain``
(HDF5's default groups: the writer before presized tables), ``presized`` (the
writer's) and ``compact`` (HDF5 1.8 compact links, measured and not chosen) --
and read back through ``DataSource`` (every frame of every step: the reader's
fast path), ms per step each, side by side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.write import storage
from calibsuite_h5source.write.storage import compression_kwargs

SHAPE = (4, 192, 384)


def make_frames(n_distinct: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    pedestal = rng.normal(1000, 50, SHAPE).astype(np.float32)
    return np.stack([(pedestal + rng.normal(0, 8, SHAPE)).astype(np.uint16) for _ in range(n_distinct)])


def raw_h5py(path, frames, n, block, compression):
    kwargs = compression_kwargs(compression)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("epixM/0", shape=(0, *SHAPE), maxshape=(None, *SHAPE), dtype=np.uint16,
                              chunks=(1, *SHAPE), **kwargs)
        buf = np.empty((block, *SHAPE), np.uint16)
        k = 0
        for i in range(n):
            buf[k] = frames[i % len(frames)]
            k += 1
            if k == block or i == n - 1:
                m = ds.shape[0]
                ds.resize(m + k, axis=0)
                ds[m:] = buf[:k]
                k = 0


def run_writer(path, frames, n, block, compression):
    with RunWriter(path, "dark", compression=compression, flush_every=block, overwrite=True) as w, w.step() as s:
        for i in range(n):
            s.event(epixM=frames[i % len(frames)])


SMALL = (2, 16, 16)


def raw_steps(path, frames, n_steps):
    with h5py.File(path, "w") as f:
        for k in range(n_steps):
            f.create_dataset(f"epixM/{k}", data=frames)
            f.flush()


def run_writer_steps(path, frames, n_steps):
    with RunWriter(path, "dark", overwrite=True) as w:
        for k in range(n_steps):
            with w.step(step_value=float(k)) as s:
                for frame in frames:
                    s.event(epixM=frame)


def read_steps(path):
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("epixM")
    total = 0
    for step in run.steps():
        for evt in step.events():
            total += int(det.raw.raw(evt)[0, 0, 0])
    return total


def write_with_layout(layout, path, frames, n_steps):
    storage.LINK_LAYOUT = layout
    try:
        run_writer_steps(path, frames, n_steps)
    finally:
        storage.LINK_LAYOUT = "presized"


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--block", type=int, default=100, help="events per block (RunWriter: flush_every)")
    p.add_argument("--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                   help="where to write (default /dev/shm: measures the writers, not the disk's write-back)")
    p.add_argument("--steps", type=int, default=1000, help="steps of the per-step overhead run")
    p.add_argument("--repeat", type=int, default=3, help="alternated runs of each writer; the best counts")
    p.add_argument("--links", type=int, default=1000, metavar="STEPS",
                   help="steps of the link-layout comparison (0: skip it)")
    p.add_argument("--only-links", action="store_true", help="run only the link-layout comparison")
    args = p.parse_args(argv)
    if args.only_links:
        return compare_links(args)
    frames = make_frames()
    mb = args.events * frames[0].nbytes / 1e6
    print(f"{args.events} frames of {SHAPE} uint16 ({mb:.0f} MB), blocks of {args.block}, best of {args.repeat} alternated runs")
    print(f"{'compression':<12}{'writer':<12}{'events/s':>10}{'MB/s':>9}{'ratio':>8}{'file MB':>9}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for compression in (None, "bitshuffle"):
            raw_path, our_path = Path(tmp) / "raw.h5", Path(tmp) / "ours.h5"
            times = [(timed(raw_h5py, raw_path, frames, args.events, args.block, compression),
                      timed(run_writer, our_path, frames, args.events, args.block, compression))
                     for _ in range(args.repeat)]  # alternated, so both see the same machine state
            t_raw, t_our = min(t for t, _ in times), min(t for _, t in times)
            for name, t, path in (("raw h5py", t_raw, raw_path), ("RunWriter", t_our, our_path)):
                ratio = f"{t_raw / t:.2f}" if name == "RunWriter" else ""
                print(f"{compression or 'none':<12}{name:<12}{args.events / t:>10.0f}{mb / t:>9.0f}{ratio:>8}"
                      f"{path.stat().st_size / 1e6:>9.0f}")
        print("targets: RunWriter/raw >= 0.9 uncompressed; bitshuffle-LZ4 >= 800 MB/s")
        small = np.random.default_rng(1).integers(900, 1100, (10, *SMALL)).astype(np.uint16)
        raw_path, our_path = Path(tmp) / "raw_steps.h5", Path(tmp) / "our_steps.h5"
        times = [(timed(raw_steps, raw_path, small, args.steps), timed(run_writer_steps, our_path, small, args.steps))
                 for _ in range(args.repeat)]
        print(f"\n{args.steps} steps of 10 events of {SMALL} uint16, best of {args.repeat} alternated runs "
              f"(spread over the runs in brackets)")
        for name, ts in (("raw h5py, 1 dataset + 1 flush per step", [t for t, _ in times]),
                         ("RunWriter", [t for _, t in times])):
            per = [1e3 * t / args.steps for t in ts]
            print(f"  {name:<42}{min(per):6.3f} ms/step ({min(per):.3f}-{max(per):.3f})")
        print("target: RunWriter <= 1 ms per step")
    if args.links:
        compare_links(args)


def compare_links(args):
    """Write and read the same scan with each link layout, alternated; best of ``--repeat``."""
    small = np.random.default_rng(1).integers(900, 1100, (10, *SMALL)).astype(np.uint16)
    layouts = ("plain", "presized", "compact")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        paths = {name: Path(tmp) / f"{name}.h5" for name in layouts}
        times = {name: ([], []) for name in layouts}
        for _ in range(args.repeat):
            for name in layouts:
                times[name][0].append(timed(write_with_layout, name, paths[name], small, args.links))
                times[name][1].append(timed(read_steps, paths[name]))
        print(f"\n{args.links} steps of 10 events of {SMALL} uint16 by link layout, best of {args.repeat} "
              f"alternated runs: ms per step written, read (every frame, DataSource)")
        base_w, base_r = min(times["plain"][0]), min(times["plain"][1])
        for name in layouts:
            w, r = min(times[name][0]), min(times[name][1])
            print(f"  {name:<10} write {1e3 * w / args.links:6.3f} ms/step ({base_w / w:.2f}x plain)   "
                  f"read {1e3 * r / args.links:6.3f} ms/step ({base_r / r:.2f}x plain)   "
                  f"file {paths[name].stat().st_size / 1e6:6.1f} MB")


if __name__ == "__main__":
    main()
