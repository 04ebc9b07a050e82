"""Events per step of a run without the writer's index, counted when a step is first reached.

A long canonical run from another writer (no ``/ancillaryData/nEvents``) is
opened lazily (:meth:`calibsuite_h5source.read.layout.LayoutMembers.collect_indexed`):
its steps are counted, and their sources checked against each other, only
when first used.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import h5py
import numpy as np

from calibsuite_h5source.errors import DataTypeError, InconsistentRunError
from calibsuite_h5source.h5.guard import guard

__all__ = ["events_in", "StepCounter", "StepCounts"]


def events_in(ds: h5py.Dataset, file: str) -> int:
    """Return the length of ``ds``'s event axis; raise :class:`DataTypeError` when it has none."""
    if ds.shape is None:
        raise DataTypeError("per-event data must be an array with an event axis; found a null dataspace (no data)",
                            file=file, h5path=ds.name)
    if ds.ndim == 0:
        raise DataTypeError("per-event data must be an array with an event axis; found a scalar",
                            file=file, h5path=ds.name)
    return ds.shape[0]


class StepCounter:
    """Counts the events of one step of a run without the writer's index, when first asked.

    Every per-step source (area detector, header field, side field,
    timestamps) registers its lazy :class:`EventArray` s; counting step ``k``
    opens step ``k``'s dataset of each, checks that all hold the same number
    of events (the rule the eager open checks for every step), and sets each
    array's ``n``.
    """

    def __init__(self, path: str):
        self.path = path
        self.sources: list[tuple[str, str, dict]] = []  # (h5path, kind, {k: EventArray})
        self.counts: dict[int, int] = {}

    def add(self, h5path: str, kind: str, steps: dict) -> None:
        """Register a source's lazy arrays (``kind``: ``'data'`` or ``'timestamp'``)."""
        self.sources.append((h5path, kind, steps))
        for k, ea in steps.items():
            ea._count = functools.partial(self.count, k)

    def count(self, k: int) -> int:
        """Return the events of step ``k``, opening and checking its datasets the first time.

        Raises
        ------
        InconsistentRunError
            The sources disagree on the step's events.
        DataTypeError, FormatError, LinkError
            A step member that is not per-event data of the expected kind.
        """
        n = self.counts.get(k)
        if n is not None:
            return n
        with guard(self.path, None, f"counting the events of step {k}"):
            opened, ref = [], None
            for h5path, kind, steps in self.sources:
                ea = steps.get(k)
                if ea is None:
                    continue  # steps missing in one source are reported when the index is built
                ds = ea._dataset if ea._dataset is not None else ea._open()
                where = f"{h5path}/{ea._name}"
                m = events_in(ds, self.path)
                if kind == "timestamp":
                    opened.append((ea, ds, m, where, kind))
                    continue
                if ref is None:
                    ref = (h5path, m)
                elif m != ref[1]:
                    raise InconsistentRunError(f"every detector must have the same events per step; step {k}: "
                                               f"{ref[0]} has {ref[1]} events, {h5path} has {m}",
                                               file=self.path, h5path=h5path)
                opened.append((ea, ds, m, where, kind))
            if ref is None:
                ref = (None, opened[0][2] if opened else 0)
            for ea, ds, m, where, kind in opened:
                if kind == "timestamp" and m != ref[1]:
                    raise InconsistentRunError(f"timestamps of step {k} must be [nEvents={ref[1]}]; found shape {ds.shape}",
                                               file=self.path, h5path=where)
                ea._dataset, ea._n = ds, m
            self.counts[k] = ref[1]
            return ref[1]


class StepCounts(Sequence):
    """Events per step of a lazily opened run: ``counts[k]`` counts step ``k`` only; ``np.asarray`` counts all.

    Parameters
    ----------
    n_steps : int
        Steps of the run.
    counter : StepCounter
        What counts a step.
    """

    def __init__(self, n_steps: int, counter: StepCounter):
        self._n, self._counter = n_steps, counter
        self._all = None
        self._starts = [0]  # run-wide index of each step's first event, as far as counted in order

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k):
        if isinstance(k, slice):
            return np.asarray(self)[k]
        k = int(k)
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError(f"step {k} of {self._n}")
        return np.int64(self._counter.count(k))

    def __array__(self, dtype=None, copy=None):
        if self._all is None:
            self._all = np.array([self._counter.count(k) for k in range(self._n)], dtype=np.int64)
        return self._all if dtype is None else self._all.astype(dtype)

    # the ndarray methods callers use on ``RunIndex.n_events`` (each counts every step)
    def tolist(self) -> list:
        return np.asarray(self).tolist()

    def sum(self, *args, **kwargs):
        return np.asarray(self).sum(*args, **kwargs)

    def max(self, *args, **kwargs):
        return np.asarray(self).max(*args, **kwargs)

    def min(self, *args, **kwargs):
        return np.asarray(self).min(*args, **kwargs)

    def astype(self, dtype, **kwargs):
        return np.asarray(self).astype(dtype, **kwargs)

    def start(self, k: int) -> int:
        """Run-wide index of step ``k``'s first event (counts the steps before it)."""
        while len(self._starts) <= k:
            j = len(self._starts) - 1
            self._starts.append(self._starts[j] + self._counter.count(j))
        return self._starts[k]

    def __repr__(self):
        return f"<StepCounts {len(self._counter.counts)} of {self._n} steps counted>"
