"""Which events this process reads.

Serial runs read every selected event. Under MPI (``mpirun -n 8 python
script.py``) every rank sees every step (same scan values), and each step's
selected events are dealt to the ranks in batches, as psana2 deals them to
its workers:

* a batch is ``batch_size`` consecutive events (psana's default, 1000);
* with ``intg_det=<detector>`` (psana's integrating detector; the suite's
  ``get_ds`` passes its detector type) a batch instead closes right after
  every ``batch_size``-th event that holds that detector, so the fast events
  before such an event (a beam-monitor-only event before its frame) travel
  with it to the same rank. This is psana's rule: its ``SmdReader.build_batch_view``
  counts ``batch_size`` integrating events per batch, and its ``EventBuilder``
  ignores the plain ``batch_size`` cap in integrating mode. With
  ``batch_size=1`` every batch ends at the next event holding the detector.
  Events after the step's last such event form the step's last batch.

Batches are dealt round-robin, starting at rank ``step % size`` so that
short steps still spread over the ranks. ``max_events`` and ``timestamps``
are applied before the split, so they are global.

Differences from psana: psana reserves ranks for itself (smd0, event
builders, smalldata servers; ``PS_EB_NODES``, ``PS_SRV_NODES``) and hands
batches to whichever worker asks first; here every rank is a worker and the
deal is fixed, so a run is split the same way every time. As in psana, a
step with fewer than ``batch_size`` events is one batch, read by one rank:
pass a smaller ``batch_size`` to spread small runs.

mpi4py is imported only when the process was started by an MPI launcher
(its environment says so) and ``PS_PARALLEL`` is not ``none``; plain
``python script.py`` never imports it.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import numpy as np

from calibsuite_h5source.errors import H5SourceError

log = logging.getLogger(__name__)

#: Environment variables set by MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's srun with PMI).
LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMI_FD")
#: psana's default ``batch_size``.
DEFAULT_BATCH_SIZE = 1000


class PartitionError(H5SourceError, ValueError):
    """A partition keyword (``batch_size``) has a value that cannot be used."""


def batches(indices: np.ndarray, batch_size: int, ends: np.ndarray | None = None) -> list[np.ndarray]:
    """Cut a step's selected event indices into psana's batches.

    Parameters
    ----------
    indices : ndarray or range
        The step's selected event indices, in order.
    batch_size : int
        Events per batch; with ``ends``, integrating events per batch.
    ends : bool ndarray, optional
        ``ends[i]``: event ``indices[i]`` holds the integrating detector. A
        batch closes right after every ``batch_size``-th such event.

    Returns
    -------
    list of ndarray
        Consecutive, non-empty pieces of ``indices``.
    """
    n = len(indices)
    if ends is None:
        cuts = np.arange(batch_size, n, batch_size)
    else:
        cuts = np.flatnonzero(ends)[batch_size - 1::batch_size] + 1
        cuts = cuts[cuts < n]
    return np.split(indices, cuts) if n else []


class SerialPartition:
    """One process reads every event."""

    rank = 0
    size = 1
    comm = None

    def select(self, step: int, indices, ends: np.ndarray | None = None):
        """Return the event indices of ``step`` this process reads (all of them, as given)."""
        return indices

    def is_mpi(self) -> bool:
        """False: not running under MPI."""
        return False

    def unique_user_rank(self) -> bool:
        """True: the only process is the unique user rank."""
        return True


class MPIPartition(SerialPartition):
    """Events of each step dealt to the ranks of ``comm`` in psana's batches.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator (``COMM_WORLD``).
    batch_size : int, optional
        Events per batch (integrating events per batch when the run passes
        ``ends``); None: psana's default, 1000.
    """

    def __init__(self, comm, batch_size: int | None = None):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.batch_size = check_batch_size(batch_size)

    def select(self, step: int, indices: np.ndarray, ends: np.ndarray | None = None) -> np.ndarray:
        """Return this rank's share of ``step``'s selected ``indices``.

        ``ends`` (bool, one per index) marks the events holding the
        integrating detector (see :func:`batches`).
        """
        indices = np.asarray(indices, dtype=np.int64)  # a range when nothing was filtered
        mine = [b for k, b in enumerate(batches(indices, self.batch_size, ends))
                if (k + step) % self.size == self.rank]
        return np.concatenate(mine) if mine else indices[:0]

    def is_mpi(self) -> bool:
        """True: events are split across ranks."""
        return True

    def unique_user_rank(self) -> bool:
        """True on rank 0 only."""
        return self.rank == 0


def check_batch_size(batch_size) -> int:
    """Return ``batch_size`` as a positive int (None: 1000), or raise :class:`PartitionError`."""
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise PartitionError(f"batch_size must be a positive integer (events per batch); got {batch_size!r}")
    return int(batch_size)


def under_mpi_launcher() -> bool:
    """True when an MPI launcher started this process."""
    return any(k in os.environ for k in LAUNCHER_ENV)


def choose(*, parallel: bool | None = None, batch_size: int | None = None, **kwargs) -> SerialPartition:
    """Return the partition for a DataSource.

    MPI when mpi4py is installed, the process runs under an MPI launcher with
    more than one rank, ``parallel`` is not False and the environment variable
    ``PS_PARALLEL`` is not ``none``; otherwise serial. ``batch_size`` is
    checked in either case.
    """
    batch_size = check_batch_size(batch_size)
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
