"""A user-style script run on the real psana and on the h5 source under mpiexec (tests/test_mpi_psana.py).

usage: user_roles.py psana|h5 RUN OUTDIR [BATCH_SIZE [INTG_DET]]
RUN is the xtc2 folder (psana, exp xpptut15 run 14) or the converted h5 file.
Writes OUTDIR/rank<r>.json: what this rank saw (steps, events, smalldata flags).
"""

import json
import sys

import numpy as np
from mpi4py import MPI

kind, path, outdir = sys.argv[1:4]
batch_size = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
intg_det = sys.argv[5] if len(sys.argv) > 5 else None
kwargs = {"batch_size": batch_size}
if intg_det:
    kwargs["intg_det"] = intg_det
if kind == "psana":
    from unittest import mock

    import psana.psexp.ds_base as ds_base
    import requests

    response = mock.Mock()
    response.raise_for_status.side_effect = requests.HTTPError("offline")
    ds_base.requests.get = lambda *a, **k: response  # psana scans dir= when the logbook fails
    from psana import DataSource

    ds = DataSource(exp="xpptut15", run=14, dir=path, skip_calib_load="all", **kwargs)
else:
    from calibsuite_h5source import DataSource

    ds = DataSource(files=path, **kwargs)
rank = MPI.COMM_WORLD.Get_rank()
smd = ds.smalldata(filename=f"{outdir}/smd.h5")
runs, steps, events, eob = 0, [], [], []
n_andor = 0
for run in ds.runs():
    runs += 1
    andor = run.Detector("andor")
    for step in run.steps():
        got = []
        for evt in step.events():
            got.append(evt.timestamp)
            eob.append([evt.timestamp, bool(evt.EndOfBatch())])
            frame = andor.raw.calib(evt)
            if frame is not None:
                n_andor += 1
                smd.event(evt, andor_mean=float(np.mean(frame)))
        steps.append(got)
        events += got
total = smd.sum(n_andor) if smd.summary else "skipped"
smd.done()
with open(f"{outdir}/rank{rank}.json", "w") as fh:
    json.dump({"rank": rank, "runs": runs, "steps": steps, "events": events, "eob": eob,
               "summary": bool(smd.summary), "unique": bool(ds.unique_user_rank()),
               "total": total if total in (None, "skipped") else np.asarray(total).tolist()}, fh)
