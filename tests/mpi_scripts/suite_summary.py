"""A suite-style reduction and summary, run under mpiexec by tests/test_smalldata.py.

usage: suite_summary.py RUN.h5 OUTDIR [timestamps|none]
``none`` selects no event at all (``timestamps=[1]``), so every rank reduces
nothing. Writes OUTDIR/smd.h5 and OUTDIR/rank<r>.json.
"""

import json
import sys

import numpy as np

from calibsuite_h5source import DataSource

path, outdir = sys.argv[1], sys.argv[2]
kwargs = {"timestamps": [1]} if sys.argv[3:] == ["none"] else {}
ds = DataSource(files=path, **kwargs)
smd = ds.smalldata(filename=f"{outdir}/smd.h5")
run = next(ds.runs())
det = run.Detector("epixm")
part = hi = lo = None  # stay None on a rank that reads no event
total = count = count64 = high = low = None  # stay None on a rank that is not a worker
ones = np.ones(2)
n = 0
for evt in run.events():
    frame = det.raw.raw(evt).astype(np.float64)
    part = frame if part is None else part + frame
    hi = frame if hi is None else np.maximum(hi, frame)
    lo = frame if lo is None else np.minimum(lo, frame)
    n += 1
    smd.event(evt, mean=float(frame.mean()))
if smd.summary:  # the suite's pattern: every worker must enter
    total = smd.sum(part)
    count = smd.sum(n)
    count64 = smd.sum(np.int64(n))  # a numpy scalar counts too (psana's own reduction drops it)
    smd.sum(ones, inplace=True)  # rank 0's array becomes the sum
    high = smd.max(hi)
    low = smd.min(lo)
    smd.save_summary({"sums": {"total": total, "count": count}, "high": high, "low": low,
                      "config": {"hash": "a1b2c3d", "detector": "epixM", "names": ["ped", "noise"],
                                 "flag": True, "gain": np.float32(2.5), "steps": [10, 20, 30],
                                 "nested": {"1000": np.arange(3)}}})
smd.done()
with open(f"{outdir}/rank{ds._partition.rank}.json", "w") as fh:
    json.dump({"n": n, "summary": smd.summary, "has_total": total is not None,
               "count": None if count is None else count.tolist(),
               "count64": None if count64 is None else count64.tolist(), "ones": ones.tolist()}, fh)
