"""LinearityPlots-style pairing of a frame with the beam-monitor event just before it.

usage: pairing.py RUN.h5 OUTDIR INTG_DET|- BATCH_SIZE
Run under mpiexec by tests/test_mpi.py; writes OUTDIR/rank<r>.json with the
frame events this rank read and the ones it could pair with a flux value.
"""

import json
import sys

from calibsuite_h5source import DataSource

path, outdir, intg_det, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
kwargs = {"batch_size": batch_size} if batch_size else {}
if intg_det != "-":
    kwargs["intg_det"] = intg_det
ds = DataSource(files=path, **kwargs)
run = next(ds.runs())
det, bm = run.Detector("epixm"), run.Detector("wave8")
flux_ts = None
frames, paired, end_of_batch, values = [], [], [], []
for evt in run.events():
    if evt.EndOfBatch():
        end_of_batch.append(evt.timestamp)
        values = evt.EndOfBatch()
    frame = det.raw.raw(evt)
    if frame is None:  # a beam-monitor-only event: remember its flux
        flux_ts, flux = evt.timestamp, float(bm.raw.peakAmplitude(evt)[:2].mean())
        continue
    frames.append(evt.timestamp)
    if flux_ts is not None and evt.timestamp - flux_ts <= 1000:  # the suite's pairing window (ticks)
        paired.append(evt.timestamp)
with open(f"{outdir}/rank{ds._partition.rank}.json", "w") as fh:
    json.dump({"frames": frames, "paired": paired, "end_of_batch": end_of_batch, "end_of_batch_value": values}, fh)
