"""A LinearityPlotsParallelSlice-style loop built from the suite's own library.

Pairs each frame event with the flux of the beam-monitor event before it
(``psana2Base.matchedDetEvt``), as the suite's linearity analyses do, and
writes one smalldata row per pair. Run from the switched suite's
``suite_scripts`` folder, serially or under mpiexec.
"""

from calibrationSuite.basicSuiteScript import BasicSuiteScript

if __name__ == "__main__":
    bss = BasicSuiteScript("scan")
    bss.setupPsana()
    smd = bss.ds.smalldata(filename=f"{bss.outputDir}/pairs.h5")
    step_value = bss.myrun.Detector("step_value")
    for evt in bss.matchedDetEvt():
        frames = bss.getRawData(evt)
        smd.event(evt, flux=bss.getFlux(evt), step=step_value(evt), roi=float(frames[2, 10:20, 10:20].mean()))
    smd.done()
