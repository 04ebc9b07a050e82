"""psana2 on xtc2 vs our reader on the converted h5: the same frames, side by side.

    python benchmarks/bench_psana.py [--events 1000] [--workdir /tmp]

Builds a ~1000-event epixquad xtc2 from psana's sample (make_big_xtc2.py),
converts it with calibsuite_h5source.convert, then times the same loop
(``for evt in run.events(): det.raw.raw(evt)``) with psana on the xtc2 and
with our factory on the h5, each in a fresh subprocess, page cache warm.
Target: ours >= 10x psana's events/s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
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
    ds = DataSource(files=path)
run = next(ds.runs())
det = run.Detector('epixquad')
t = time.perf_counter(); n = 0
for evt in run.events():
    a = det.raw.raw(evt); n += 1
print(n, time.perf_counter() - t)
"""


def timed(kind, path):
    out = subprocess.run([sys.executable, "-c", LOOP, kind, str(path)], capture_output=True, text=True, check=True)
    n, dt = out.stdout.split()[-2:]
    return int(n), float(dt)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    from calibsuite_h5source import convert

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        xtc, h5 = Path(tmp) / "big.xtc2", Path(tmp) / "big.h5"
        amplify(Path(__file__).resolve().parents[2] / "shared/data/xtc2/test_epix_calib.xtc2", xtc, args.events)
        convert(h5, files=str(xtc), progress=False)
        for kind, path in (("psana", xtc), ("h5", h5)):
            timed(kind, path)  # warm the page cache
        (n_p, t_p), (n_h, t_h) = timed("psana", xtc), timed("h5", h5)
        assert n_p == n_h == args.events, (n_p, n_h)
        mb = xtc.stat().st_size / 1e6
    print(f"{args.events} epixquad events (4x352x384 uint16), {mb:.0f} MB xtc2, warm page cache")
    print(f"{'reader':<32}{'events/s':>10}{'ms/event':>10}")
    print(f"{'psana2 det.raw.raw on xtc2':<32}{n_p / t_p:>10.0f}{1e3 * t_p / n_p:>10.2f}")
    print(f"{'calibsuite_h5source on h5':<32}{n_h / t_h:>10.0f}{1e3 * t_h / n_h:>10.2f}")
    print(f"speed-up: {t_p / n_p / (t_h / n_h):.1f}x   (target >= 10x)")


if __name__ == "__main__":
    main()
