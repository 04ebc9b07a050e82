"""psana2 on xtc2 vs our reader on the converted h5: the same frames, side by side.

    python benchmarks/bench_psana.py [--events 1000] [--workdir /tmp]

Builds a ~1000-event epixquad xtc2 from psana's sample (make_big_xtc2.py),
converts it with calibsuite_h5source.write.convert, then times the same loop
(``for evt in run.events(): det.raw.raw(evt)``) with psana on the xtc2 and
with our factory on the h5, each in a fresh subprocess, page cache warm,
alternated, best of ``--repeat``. It reports the loop's events/s and the
whole process (start, import, open, 1000 events, exit: what a script costs)
and where our whole-process time goes (interpreter, numpy, h5py, this
package, opening, the loop).
Our reader runs twice: by default (each frame copied into a new array) and
with ``zero_copy=True`` (frames as copy-on-write mappings of the file).
Targets (issue #11): ours >= 20x psana's events/s in the loop, >= 10x for the whole process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_big_xtc2 import amplify  # noqa: E402

LOOP = """
import sys, time, logging
logging.disable(logging.WARNING)
kind, path = sys.argv[1], sys.argv[2]
if kind == 'psana':
    from psana import DataSource
    ds = DataSource(files=path, skip_calib_load='all')
else:
    from calibsuite_h5source import DataSource
    ds = DataSource(files=path, zero_copy=(kind == 'h5-zero-copy'))
run = next(ds.runs())
det = run.Detector('epixquad')
t = time.perf_counter(); n = 0
for evt in run.events():
    a = det.raw.raw(evt); n += 1
print(n, time.perf_counter() - t)
"""


BREAKDOWN = """
import sys, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import h5py
t2 = time.perf_counter()
from calibsuite_h5source import DataSource
import calibsuite_h5source.psana2.source
t3 = time.perf_counter()
run = next(DataSource(files=sys.argv[1]).runs())
det = run.Detector('epixquad')
t4 = time.perf_counter()
for evt in run.events():
    det.raw.raw(evt)
t5 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
"""


#: Both readers' processes run as from an installed package: with compiled bytecode cached (pip
#: compiles at install; an editable checkout under PYTHONDONTWRITEBYTECODE=1 would recompile this
#: package at every start). The first, warm-up, run of each fills this cache.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True, env=ENV)


def timed(kind, path):
    """``(events, loop seconds, whole-process seconds)`` of one fresh process."""
    t = time.perf_counter()
    out = run(["-c", LOOP, kind, str(path)])
    whole = time.perf_counter() - t
    n, dt = out.stdout.split()[-2:]
    return int(n), float(dt), whole


def breakdown(path, repeat):
    """Best-of seconds: interpreter start+exit, numpy, h5py, this package, open, loop."""
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        run(["-c", "pass"])
        bare = time.perf_counter() - t
        out = run(["-c", BREAKDOWN, str(path)])
        parts = [bare] + [float(x) for x in out.stdout.split()]
        best = parts if best is None else [min(a, b) for a, b in zip(best, parts, strict=True)]
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--workdir", default=None)
    p.add_argument("--repeat", type=int, default=3, help="alternated runs of each reader; the best counts")
    args = p.parse_args(argv)
    from calibsuite_h5source.write.convert import convert

    load = "load average {:.2f} {:.2f} {:.2f}".format
    print(f"{os.cpu_count()} cores; before: {load(*os.getloadavg())}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "bytecode")
        xtc, h5 = Path(tmp) / "big.xtc2", Path(tmp) / "big.h5"
        amplify(Path(__file__).resolve().parents[2] / "shared/data/xtc2/test_epix_calib.xtc2", xtc, args.events)
        convert(h5, files=str(xtc), progress=False)
        for kind, path in (("psana", xtc), ("h5", h5)):
            timed(kind, path)  # warm the page cache
        runs = [(timed("psana", xtc), timed("h5", h5), timed("h5-zero-copy", h5))
                for _ in range(args.repeat)]  # alternated
        parts = breakdown(h5, args.repeat)
        mb = xtc.stat().st_size / 1e6
    ps, ours, mapped = ([r[k] for r in runs] for k in range(3))
    assert all(r[0] == args.events for r in ps + ours + mapped), runs
    n = args.events
    print(f"{n} epixquad events (4x352x384 uint16), {mb:.0f} MB xtc2, warm page cache, best of {args.repeat} alternated")
    print(f"{'reader':<30}{'loop events/s':>15}{'ms/event':>10}{'whole process s':>17}")
    readers = (("psana2 det.raw.raw on xtc2", ps), ("calibsuite_h5source on h5", ours),
               ("  ... zero_copy=True", mapped))
    for name, rs in readers:
        loop, whole = min(r[1] for r in rs), min(r[2] for r in rs)
        print(f"{name:<30}{n / loop:>15.0f}{1e3 * loop / n:>10.3f}{whole:>17.2f}")
    for label, rs in (("default (copies)", ours), ("zero_copy=True", mapped)):
        for what, col, target in (("loop", 1, 20), ("whole process", 2, 10)):
            best = min(r[col] for r in ps) / min(r[col] for r in rs)
            pairs = [p[col] / o[col] for p, o in zip(ps, rs, strict=True)]
            print(f"speed-up, {label}, {what}: {best:.1f}x best of each; per alternated run "
                  f"{min(pairs):.1f}-{max(pairs):.1f}x   (target >= {target}x)")
    names = ("interpreter start+exit", "import numpy", "import h5py", "import calibsuite_h5source", "open run",
             f"loop ({n} events)")
    print("our whole process, best of each part: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in zip(names, parts, strict=True)))
    print(f"after: {load(*os.getloadavg())}")


if __name__ == "__main__":
    main()
