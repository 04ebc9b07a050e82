"""Which events this process reads: psana's rank roles and batches under MPI.

Serial runs read every selected event. Under MPI (``mpirun -n 8 python
script.py``) the ranks take psana's roles (``psana/psexp/node.py``), from
``PS_EB_NODES`` (default 1) and ``PS_SRV_NODES`` (default 0):

* rank 0 is psana's smd0, ranks ``1..PS_EB_NODES`` its event builders, the
  last ``PS_SRV_NODES`` ranks its smalldata servers; the ranks between are
  the **workers**. Only workers read events. The other ranks still run the
  script: ``ds.runs()`` yields the run, but its ``steps()`` and ``events()``
  yield nothing, ``smd.summary`` is False and reductions return None;
* fewer than ``3 + PS_SRV_NODES`` ranks (or no worker left) is refused with
  :class:`MPIRolesError`, as psana refuses it;
* ``ds.unique_user_rank()`` is True on the last worker
  (``size - PS_SRV_NODES - 1``), as psana's.

Events reach the workers in **batches** taken from the run's selected event
sequence, across step boundaries (a batch does not end at a step):

* a batch is ``batch_size`` consecutive events (psana's default, 1000), so a
  short run goes wholly to one worker, as with psana;
* with ``intg_det=<detector>`` (psana's integrating detector; the suite's
  ``get_ds`` passes its detector type) a batch instead closes right after
  every ``batch_size``-th event that holds that detector, so the fast events
  before such an event travel with it to the same worker. Events after the
  run's last such event form the last batch. psana's smd0 cuts such batches
  too (``SmdReader.build_batch_view`` counts integrating events), but counts
  ``PS_SMD_N_EVENTS`` of them per batch (default 20000; 1000 for ``mfx``
  experiments, the suite's), not ``batch_size``, which its event builder
  ignores in that mode (measured with psana 4.3.4 on lcls2's ``intg_det``
  run: ``PS_SMD_N_EVENTS=2`` gives batches of two andor frames whatever
  ``batch_size``). With the suite's default ``batch_size`` (1000) both cut
  MFX runs alike.

Every worker sees every step (same scan values), possibly with no events.
Dealing is deterministic: batch ``k`` goes to worker ``k % n_workers`` (the
``k``-th batch of the run, counted across steps), so a run is split the same
way every time. psana deals first-come (whichever worker asks first), so
with several workers its split varies from run to run; with one worker both
give that worker every event.

Opt-in, **every rank a worker** (``DataSource(..., every_rank_a_worker=True)``
or ``CALIBSUITE_EVERY_RANK_A_WORKER=1``): all ranks read events and
``PS_EB_NODES``/``PS_SRV_NODES`` are ignored; more readers on the same ranks,
but a script written for psana's worker count may then see a different split
(a rank 0 that was idle now reads events, steps without events on more ranks)
and a script whose collectives depend on having events can hang or abort.

mpi4py is imported only when the process was started by an MPI launcher
(its environment says so) and ``PS_PARALLEL`` is not ``none``; plain
``python script.py`` never imports it.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import time

import numpy as np

from calibsuite_h5source.errors import H5SourceError

log = logging.getLogger(__name__)

#: Environment variables set by MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's srun with PMI).
LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMI_FD")
#: psana's default ``batch_size``.
DEFAULT_BATCH_SIZE = 1000
#: Environment variable of the opt-in mode in which every rank reads events.
EVERY_RANK_ENV = "CALIBSUITE_EVERY_RANK_A_WORKER"


class PartitionError(H5SourceError, ValueError):
    """A partition keyword (``batch_size``) has a value that cannot be used."""


class MPIRolesError(PartitionError):
    """The MPI launch leaves psana no worker rank (too few ranks for ``PS_EB_NODES``/``PS_SRV_NODES``)."""


def batches(indices: np.ndarray, batch_size: int, ends: np.ndarray | None = None) -> list[np.ndarray]:
    """Cut a sequence of selected events into psana's batches.

    Parameters
    ----------
    indices : ndarray or range
        The selected events, in run order (any array whose first axis is the event).
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


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise PartitionError(f"environment variable {name}={text!r} is not an integer (psana reads it as one)") from None
    if value < 0:
        raise PartitionError(f"environment variable {name}={value} must not be negative")
    return value


def worker_ranks(size: int, eb_nodes: int | None = None, srv_nodes: int | None = None) -> range:
    """Return the world ranks that are psana's workers among ``size`` ranks.

    Parameters
    ----------
    size : int
        Ranks in the launch (``mpirun -n size``).
    eb_nodes, srv_nodes : int, optional
        Event builders and smalldata servers; default ``PS_EB_NODES`` (1) and
        ``PS_SRV_NODES`` (0) from the environment, as psana reads them.

    Raises
    ------
    MPIRolesError
        Fewer than ``3 + srv_nodes`` ranks (psana refuses the launch), or no
        rank left for a worker.
    """
    eb = _env_int("PS_EB_NODES", 1) if eb_nodes is None else int(eb_nodes)
    srv = _env_int("PS_SRV_NODES", 0) if srv_nodes is None else int(srv_nodes)
    eb = max(eb, 1)  # psana counts at least one event builder
    if size - srv < 3:
        raise MPIRolesError(
            f"too few MPI ranks for psana's roles: {size} ranks, PS_SRV_NODES={srv}; psana needs 3 + PS_SRV_NODES "
            f"= {3 + srv} at least (rank 0 smd0, rank 1 event builder, then workers, then {srv} server ranks). "
            f"Launch with mpirun -n {3 + srv} or more, run without mpirun (serial), or pass "
            f"every_rank_a_worker=True / set {EVERY_RANK_ENV}=1 to make every rank a worker (see its risk in "
            "docs/psana-differences.rst)")
    workers = range(1 + eb, size - srv)
    if not len(workers):
        raise MPIRolesError(
            f"no worker rank: {size} ranks, PS_EB_NODES={eb}, PS_SRV_NODES={srv} leave none between the "
            f"event builders (ranks 1..{eb}) and the servers; launch with mpirun -n {2 + eb + srv} or more")
    return workers


def role(rank: int, size: int, workers: range) -> str:
    """psana's name for the role of ``rank``: ``'smd0'``, ``'eb'``, ``'bd'`` (worker) or ``'srv'``."""
    if rank in workers:
        return "bd"
    if rank == 0 and workers.start > 0:
        return "smd0"
    return "eb" if rank < workers.start else "srv"


class SerialPartition:
    """One process reads every event."""

    rank = 0
    size = 1
    comm = None
    worker_comm = None
    is_worker = True

    def deal(self, selected: list, ends: list | None = None) -> list:
        """Return the per-step event indices this process reads: all of them, as given."""
        return selected

    def is_mpi(self) -> bool:
        """False: not running under MPI."""
        return False

    def unique_user_rank(self) -> bool:
        """True: the only process is the unique user rank."""
        return True


class MPIPartition(SerialPartition):
    """A run's selected events dealt to the worker ranks of ``comm`` in psana's batches.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator (``COMM_WORLD``).
    batch_size : int, optional
        Events per batch (integrating events per batch when ``ends`` are
        given to :meth:`deal`); None: psana's default, 1000.
    workers : range, optional
        The worker ranks; default every rank (:func:`choose` passes psana's).
    worker_comm : mpi4py.MPI.Comm, optional
        A communicator of the workers only (``comm.Split``), for smalldata's
        collectives; None on a rank that is not a worker.
    """

    def __init__(self, comm, batch_size: int | None = None, workers: range | None = None, worker_comm=None):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.batch_size = check_batch_size(batch_size)
        self.workers = range(self.size) if workers is None else workers
        self.is_worker = self.rank in self.workers
        self.worker_comm = worker_comm

    @property
    def role(self) -> str:
        """psana's name for this rank's role (``'smd0'``, ``'eb'``, ``'bd'``, ``'srv'``)."""
        return role(self.rank, self.size, self.workers)

    def deal(self, selected: list, ends: list | None = None) -> list:
        """Return this rank's share of a run's ``selected`` event indices, per step.

        Parameters
        ----------
        selected : list of int arrays (or ranges)
            Per step, the selected event indices, in order.
        ends : list of bool arrays, optional
            Per step, ``ends[s][j]``: event ``selected[s][j]`` holds the
            integrating detector (see :func:`batches`).

        Returns
        -------
        list of int64 ndarray
            On a worker: one entry per step (every step, possibly empty), the
            events of the batches dealt to it. On any other rank: ``[]``, no
            step at all.
        """
        if not self.is_worker:
            return []
        steps = [np.asarray(sel, dtype=np.int64) for sel in selected]
        counts = [len(s) for s in steps]
        flat = np.concatenate(steps) if steps else np.zeros(0, np.int64)
        which = np.repeat(np.arange(len(steps)), counts)
        flat_ends = None if ends is None else np.concatenate([np.asarray(e, bool) for e in ends] or [np.zeros(0, bool)])
        me = self.workers.index(self.rank)
        mine = np.zeros(len(flat), bool)
        start = 0
        for k, piece in enumerate(batches(np.arange(len(flat)), self.batch_size, flat_ends)):
            if k % len(self.workers) == me:
                mine[start:start + len(piece)] = True
            start += len(piece)
        return [flat[mine & (which == s)] for s in range(len(steps))]

    def is_mpi(self) -> bool:
        """True: events are split across ranks."""
        return True

    def unique_user_rank(self) -> bool:
        """True on the last worker rank only, as psana's."""
        return self.rank == self.workers[-1]


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


def every_rank_mode(value: bool | None = None) -> bool:
    """The opt-in every-rank-a-worker mode: ``value`` when given, else ``CALIBSUITE_EVERY_RANK_A_WORKER``."""
    if value is not None:
        return bool(value)
    return os.environ.get(EVERY_RANK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def choose(*, parallel: bool | None = None, batch_size: int | None = None,
           every_rank_a_worker: bool | None = None, **kwargs) -> SerialPartition:
    """Return the partition for a DataSource.

    MPI when mpi4py is installed, the process runs under an MPI launcher with
    more than one rank, ``parallel`` is not False and the environment variable
    ``PS_PARALLEL`` is not ``none``; otherwise serial. ``batch_size`` is
    checked in either case. Under MPI the ranks take psana's roles
    (:func:`worker_ranks`) unless ``every_rank_a_worker`` (or
    ``CALIBSUITE_EVERY_RANK_A_WORKER=1``) makes them all workers. Every rank
    must call it (it splits the communicator).

    Raises
    ------
    MPIRolesError
        Too few ranks for psana's roles (on every rank alike).
    """
    batch_size = check_batch_size(batch_size)
    if parallel is False or os.environ.get("PS_PARALLEL", "").lower() == "none":
        return SerialPartition()
    if not under_mpi_launcher() or importlib.util.find_spec("mpi4py") is None:
        return SerialPartition()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    if size == 1:
        return SerialPartition()
    all_workers = every_rank_mode(every_rank_a_worker)
    workers = range(size) if all_workers else worker_ranks(size)
    rank = comm.Get_rank()
    worker_comm = comm.Split(0 if rank in workers else MPI.UNDEFINED, rank)
    if worker_comm == MPI.COMM_NULL:
        worker_comm = None
    log.debug("rank %d of %d: role %s (workers %s)", rank, size, role(rank, size, workers), list(workers))
    _wait_quietly_at_exit(comm)
    return MPIPartition(comm, batch_size, workers, worker_comm)


_exit_wait_registered = False


def _wait_quietly_at_exit(comm, interval: float = 0.005) -> None:
    """At exit, wait for every rank with a non-blocking barrier polled with sleeps.

    A rank with no events (smd0, event-builder and server ranks here) ends
    its script long before the workers and then waits for them in MPI's
    finalize, which polls. Measured with ``mpiexec -n 4`` on 2 busy cores (one
    worker computing 3 s, three idle ranks): 3.3-3.4 s of CPU for the whole
    job without this wait, 3.0-3.1 s with it. Registered once per process, on
    every rank (each calls ``choose``); MPI's own finalize runs after Python's
    ``atexit`` handlers.
    """
    global _exit_wait_registered
    if _exit_wait_registered:
        return
    _exit_wait_registered = True

    def wait():
        request = comm.Ibarrier()
        while not request.Test():
            time.sleep(interval)

    atexit.register(wait)

