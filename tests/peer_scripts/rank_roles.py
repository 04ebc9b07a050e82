"""Each rank reports what psana's DataSource says of it (``is_bd``, ``is_srv``, ``unique_user_rank``),
and rank 0 the events and integrating batches (``evt.EndOfBatch()``) all ranks read, on intg_det.

Written for the peer suite after lcls2's user_loops.py and run_smalldata.py, which branch on these
methods; run under ``mpirun`` with ``PS_EB_NODES``/``PS_SRV_NODES`` as lcls2's byhand_mpi.py does.
"""
import os

from mpi4py import MPI
from psana import DataSource

comm = MPI.COMM_WORLD
rank = comm.Get_rank()

if __name__ == "__main__":
    xtc_dir = os.path.join(os.path.dirname(os.path.realpath(__file__)), "test_data", "intg_det")
    ds = DataSource(exp="xpptut15", run=14, dir=xtc_dir, intg_det="andor", batch_size=1)
    n_events = n_batches = 0
    for run in ds.runs():
        for evt in run.events():
            n_events += 1
            n_batches += bool(evt.EndOfBatch())
    report = (rank, ds.is_bd(), ds.is_srv(), ds.unique_user_rank())
    reports = comm.gather(report, root=0)
    totals = comm.gather((n_events, n_batches), root=0)
    if rank == 0:
        for r in reports:
            print("ROLE rank={} bd={} srv={} unique={}".format(*r))
        print(f"TOTAL events={sum(t[0] for t in totals)} batches={sum(t[1] for t in totals)}")
