"""A psana1-style analysis (as LCLS-I scripts wrote them), run by tests/test_psana1.py.

usage: own_loop.py OUTDIR   (the run is found through $CALIBSUITE_H5_DIR: exp=xpptut15 run=54)
Writes OUTDIR/rank<r>.json (what this rank saw) and OUTDIR/smd.h5 (psana1 small_data).
"""

import json
import sys

import numpy as np

import calibsuite_h5source.psana1 as psana

outdir = sys.argv[1]
ds = psana.MPIDataSource("exp=xpptut15:run=54:smd")
det = psana.Detector("MfxEndstation.0:Epix10kaQuad.0", ds.env())
wave8 = psana.Detector("MfxDg1BmMon", ds.env())
control = psana.Detector("ControlData")
smd = ds.small_data(f"{outdir}/smd.h5", gather_interval=1)  # several gathers: appends across them
rows, part = [], None
for nstep, step in enumerate(ds.steps()):
    value = control().pvControls()[0].value()
    for evt in step.events():
        eid = evt.get(psana.EventId)
        sec, nsec = eid.time()
        evr = evt.get(psana.EvrData.DataV4, "NoDetector.0:Evr.0")
        kicked = all(ec.eventCode() != 137 for ec in evr.fifoEvents())
        raw = det.raw(evt) & 0x3FFF
        flux = float(wave8.get(evt).peakA()[[1, 2]].mean())
        rows.append([nstep, sec, nsec, eid.fiducials(), int(raw.sum()), flux, kicked, value])
        part = raw.astype(np.int64) if part is None else part + raw
        extra = {"odd": 1} if eid.fiducials() % 2 else {}
        if nstep == 2:
            extra["late"] = 2.5
        smd.event(mean=float(raw.mean()), roi=raw[0, :2, :2], flux={"w8": flux}, var_hits=np.arange(eid.fiducials() % 3),
                  ragged_codes=np.array([ec.eventCode() for ec in evr.fifoEvents()]), **extra)
total = smd.sum(part)
smd.save(total=total, n_ranks=ds.size)
with open(f"{outdir}/rank{ds.rank}.json", "w") as fh:
    json.dump({"rows": rows, "total": None if total is None else int(total.sum()),
               "pedestal_none": det.pedestals() is None}, fh)
