"""A suite-style per-step sum whose collectives run only where this rank saw events in the step.

Built from the suite's own library (``BasicSuiteScript``), like its scan
analyses: per step, sum the frames this rank read, and call ``smd.sum`` only
``if n_in_step:``. With psana's roles and ``psana2Base``'s ``PS_SRV_NODES=1``,
``mpiexec -n 4`` has one worker, which sees every event, so the collectives
match (as with psana); with every rank a worker they would not.
Writes ``<outputDir>/step_sums.h5``.
"""

from calibrationSuite.basicSuiteScript import BasicSuiteScript

if __name__ == "__main__":
    bss = BasicSuiteScript("scan")
    bss.setupPsana()
    smd = bss.ds.smalldata(filename=f"{bss.outputDir}/step_sums.h5")
    for k, step in enumerate(bss.myrun.steps()):
        part, n_in_step = None, 0
        for evt in step.events():
            frames = bss.getRawData(evt)
            if frames is None:
                continue
            part = frames.astype(float) if part is None else part + frames
            n_in_step += 1
        if n_in_step:  # issue 20's pattern: the collectives only where events were seen
            total = smd.sum(part)
            count = smd.sum(n_in_step)
            if total is not None:
                smd.save_summary({f"step{k}": {"sum": total, "n": count}})
    smd.done()
