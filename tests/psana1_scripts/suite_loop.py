"""The suite's real psana1Base (../shared/suite) driven on an h5 run, run by tests/test_psana1.py.

usage: suite_loop.py OUTDIR -r 54 -e xpptut15 -n 4 -cf CONFIG   (PYTHONPATH holds the suite)
``psana`` is this package's psana1 surface: the one change a psana1 user makes.
"""

import json
import sys

import calibsuite_h5source.psana1 as psana

sys.modules["psana"] = psana  # what `import psana` finds in the suite
outdir = sys.argv.pop(1)

from calibrationSuite.basicSuiteScript import BasicSuiteScript  # noqa: E402

bss = BasicSuiteScript("scan")
bss.setupPsana()
bss.evrs = ["NoDetector.0:Evr.0"]  # psana1Base leaves evrs None and its get_evrs() does not exist
rows = []
for nstep, step in enumerate(bss.getStepGen()):
    value = bss.getScanValue(step)
    for evt in step.events():
        sec, nsec = evt.get(psana.EventId).time()
        raw = bss.getRawData(evt)
        assert bss.getCalibData(evt).dtype.kind == "f"
        assert bss.getImage(evt).ndim == 2
        ped = bss.getPedestal(evt, 1)
        rows.append([nstep, sec, nsec, evt.get(psana.EventId).fiducials(), int(raw.sum()), float(bss.getFlux(evt)),
                     bss.isKicked(evt), value, float(ped.sum())])
with open(f"{outdir}/rank{bss.ds.rank}.json", "w") as fh:
    json.dump({"rows": rows, "cameraType": bss.detectorInfo.cameraType}, fh)
