"""``det.raw.image`` from geometry: this package's engine against psana's, side by side.

Run by hand (psana needed for its half)::

    python benchmarks/bench_geometry.py

For psana's default geometry of epixM, the epix10ka quad, epix100 and
jungfrau 0.5M/4M: the first image (coordinates, indexes and image maps built)
and the median of ``--repeat`` later images, for psana's
``CalibConstants.image`` and for :class:`calibsuite_h5source.geometry.Geometry`,
with their ratio. Both draw the same float32 array; the images are checked equal.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from calibsuite_h5source.geometry import default_geometry_text
from calibsuite_h5source.geometry.engine import Geometry
from calibsuite_h5source.geometry.text import parse_geometry

STEMS = ("epixm320", "epix10kaquad", "epix100a", "jungfrau05M", "jungfrau4M")


def timed(fn, repeat):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, first, statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args(argv)
    try:
        from psana.detector.calibconstants import CalibConstants
    except ImportError:
        CalibConstants = None  # noqa: N806
    print(f"{'geometry':14s} {'image':>12s} {'ours first':>11s} {'psana first':>12s} {'ratio':>6s}"
          f" {'ours next':>10s} {'psana next':>11s} {'ratio':>6s}")
    for k, stem in enumerate(STEMS):
        text = default_geometry_text(stem)
        g = Geometry(parse_geometry(text), text)  # not the cached one: the first image pays everything
        nda = np.random.default_rng(k).normal(100, 20, g.shape).astype(np.float32)
        ours, o1, on = timed(lambda g=g, nda=nda: g.image(nda), args.repeat)
        row = f"{stem:14s} {str(ours.shape):>12s} {o1 * 1e3:9.1f}ms"
        if CalibConstants is not None:
            cc = CalibConstants({"geometry": (text, {})}, f"bench_{stem}")
            theirs, p1, pn = timed(lambda cc=cc, nda=nda, n=g.n_segments: cc.image(nda, segnums=list(range(n))),
                                   args.repeat)
            assert np.array_equal(ours, theirs), stem
            row += f" {p1 * 1e3:10.1f}ms {p1 / o1:6.1f} {on * 1e3:8.2f}ms {pn * 1e3:9.2f}ms {pn / on:6.1f}"
        else:
            row += f" {'-':>12s} {'-':>6s} {on * 1e3:8.2f}ms"
        print(row)


if __name__ == "__main__":
    main()
