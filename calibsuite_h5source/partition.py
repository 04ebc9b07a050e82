"""Which events this process reads.

Serial runs read every selected event. Under MPI (``mpirun -n 8 python
script.py``) every rank sees every step, and each step's selected events are
split among ranks in contiguous batches, so a rank reads whole chunks:
``batch_size`` events per batch, batches dealt round-robin (starting at rank
``step % size`` so that short steps still spread), or, without
``batch_size``, one near-equal contiguous block per rank. ``max_events`` and
``timestamps`` are applied before the split, so they are global.

mpi4py is imported only when the process was started by an MPI launcher
(its environment says so) and ``PS_PARALLEL`` is not ``none``; plain
``python script.py`` never imports it.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

#: Environment variables set by MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's srun with PMI).
LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMI_FD")


class SerialPartition:
    """One process reads every event."""

    rank = 0
    size = 1
    comm = None

    def select(self, step: int, indices: np.ndarray) -> np.ndarray:
        """Return the event indices of ``step`` this process reads (all of them)."""
        return indices

    def is_mpi(self) -> bool:
        """False: not running under MPI."""
        return False

    def unique_user_rank(self) -> bool:
        """True: the only process is the unique user rank."""
        return True


class MPIPartition(SerialPartition):
    """Events of each step split among the ranks of ``comm``.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator (``COMM_WORLD``).
    batch_size : int, optional
        Events per batch; batches are dealt round-robin. None: one contiguous
        block per rank.
    """

    def __init__(self, comm, batch_size: int | None = None):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.batch_size = int(batch_size) if batch_size else None

    def select(self, step: int, indices: np.ndarray) -> np.ndarray:
        n = len(indices)
        if self.batch_size is None:
            bounds = np.linspace(0, n, self.size + 1).astype(int)
            return indices[bounds[self.rank]:bounds[self.rank + 1]]
        starts = np.arange(0, n, self.batch_size)
        mine = [s for b, s in enumerate(starts) if (b + step) % self.size == self.rank]
        if not mine:
            return indices[:0]
        return np.concatenate([indices[s:s + self.batch_size] for s in mine])

    def is_mpi(self) -> bool:
        """True: events are split across ranks."""
        return True

    def unique_user_rank(self) -> bool:
        """True on rank 0 only."""
        return self.rank == 0


def under_mpi_launcher() -> bool:
    """True when an MPI launcher started this process."""
    return any(k in os.environ for k in LAUNCHER_ENV)


def choose(*, parallel: bool | None = None, batch_size: int | None = None, **kwargs) -> SerialPartition:
    """Return the partition for a DataSource.

    MPI when mpi4py is installed, the process runs under an MPI launcher with
    more than one rank, ``parallel`` is not False and the environment variable
    ``PS_PARALLEL`` is not ``none``; otherwise serial.
    """
    if parallel is False or os.environ.get("PS_PARALLEL", "").lower() == "none":
        return SerialPartition()
    if not under_mpi_launcher() or importlib.util.find_spec("mpi4py") is None:
        return SerialPartition()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return SerialPartition()
    log.debug("rank %d of %d: reading its share of each step", comm.Get_rank(), comm.Get_size())
    return MPIPartition(comm, batch_size)
