"""Which events this process reads.

Serial runs read every selected event. Under MPI (see :func:`choose`) each
rank reads its share. The reader asks the partition once per step, at open.
"""

from __future__ import annotations

import numpy as np


class SerialPartition:
    """One process reads every event."""

    rank = 0
    size = 1

    def select(self, step: int, indices: np.ndarray) -> np.ndarray:
        """Return the event indices of ``step`` this process reads (all of them)."""
        return indices

    def is_mpi(self) -> bool:
        """False: not running under MPI."""
        return False

    def unique_user_rank(self) -> bool:
        """True: the only process is the unique user rank."""
        return True


def choose(**kwargs) -> SerialPartition:
    """Return the partition for a DataSource built with ``kwargs``."""
    return SerialPartition()
