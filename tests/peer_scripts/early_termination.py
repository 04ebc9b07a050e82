"""lcls2's run_early_termination.py on the shared intg_det run: run.terminate() at the 5th event ends the loop.

Adapted from slac-lcls/lcls2 psana/psana/tests/run_early_termination.py (commit 4e09af7, BSD-style
licence, ../shared/psana-tests/LICENSE.md): the data is ``test_data/intg_det`` beside this script, the
detector ``hsd``; the asserts are the original's.
"""
import os

from mpi4py import MPI
from psana import DataSource

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
size = comm.Get_size()


def run_terminate(ds):
    for run in ds.runs():
        run.Detector("hsd")
        cn_events = 0
        for i_evt, _evt in enumerate(run.events()):
            if i_evt == 4:
                run.terminate()
            cn_events += 1

        if rank == 2 or size == 1:
            print(f"rank: {rank} got {cn_events} events")
            assert cn_events == 5


if __name__ == "__main__":
    os.environ["PS_SMD_N_EVENTS"] = "2"
    xtc_dir = os.path.join(os.path.dirname(os.path.realpath(__file__)), "test_data", "intg_det")
    ds = DataSource(exp="xpptut15", run=14, dir=xtc_dir)
    run_terminate(ds)
