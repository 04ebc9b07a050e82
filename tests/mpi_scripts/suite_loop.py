"""A suite-style script run under mpiexec by tests/test_mpi.py.

usage: suite_loop.py RUN.h5 OUTDIR [max_events] [batch_size]
Writes OUTDIR/rank<r>.json (what this rank saw) and OUTDIR/smd.h5 (smalldata).
"""

import json
import sys

import numpy as np

from calibsuite_h5source import DataSource

path, outdir = sys.argv[1], sys.argv[2]
kwargs = {}
if len(sys.argv) > 3 and int(sys.argv[3]):
    kwargs["max_events"] = int(sys.argv[3])
if len(sys.argv) > 4 and int(sys.argv[4]):
    kwargs["batch_size"] = int(sys.argv[4])
ds = DataSource(files=path, **kwargs)
smd = ds.smalldata(filename=f"{outdir}/smd.h5", batch_size=3)
run = next(ds.runs())
det = run.Detector("epixm")
seen, step_values, total = [], [], np.zeros(1)
for step in run.steps():
    step_values.append(run.Detector("step_value")(step))
    for evt in step.events():
        frame = det.raw.raw(evt)
        seen.append([step.index, evt._i, evt.timestamp])
        total += frame.sum()
        smd.event(evt, mean=float(frame.mean()), step=step.index, sub={"first": int(frame.flat[0])})
summed = smd.sum(total)
if smd.summary:
    smd.save_summary({"sums": {"total": summed}}, n_ranks=ds._partition.size)
smd.done()
rank = ds._partition.rank
with open(f"{outdir}/rank{rank}.json", "w") as fh:
    json.dump({"seen": seen, "step_values": step_values, "is_mpi": ds.is_mpi(), "n_steps": run.n_steps,
               "unique": ds.unique_user_rank(), "is_srv": ds.is_srv(),
               "summary": smd.summary, "timestamp": run.timestamp, "sum": None if summed is None else float(np.asarray(summed).ravel()[0])}, fh)
