"""Events per step counted when first asked for (calibsuite_h5source.read.step_counts)."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataTypeError, InconsistentRunError
from calibsuite_h5source.read.index_types import EventArray
from calibsuite_h5source.read.step_counts import StepCounter, StepCounts, events_in


def lazy_steps(f, group, counts):
    g = f.require_group(group)
    for k, n in enumerate(counts):
        g.create_dataset(str(k), data=np.zeros((n, 2)))
    return {k: EventArray(None, (), None, group=g, name=str(k)) for k in range(len(counts))}


def test_each_step_is_counted_once_when_asked(tmp_path):
    with h5py.File(tmp_path / "r.h5", "w") as f:
        counter = StepCounter(str(tmp_path / "r.h5"))
        data = lazy_steps(f, "det", [3, 0, 5])
        counter.add("/det", "data", data)
        counter.add("/timestamp", "timestamp", lazy_steps(f, "timestamp", [3, 0, 5]))
        counts = StepCounts(3, counter)
        assert len(counts) == 3 and counter.counts == {}
        assert counts[2] == 5 and counter.counts == {2: 5}  # only step 2 opened
        assert data[2].n == 5 and data[2]._dataset is not None and data[0]._dataset is None
        assert counts[-3] == 3 and counts.start(2) == 3 and counts.tolist() == [3, 0, 5] and counts.sum() == 8
        with pytest.raises(IndexError):
            counts[3]


def test_sources_that_disagree_on_a_step_are_named(tmp_path):
    with h5py.File(tmp_path / "r.h5", "w") as f:
        counter = StepCounter(str(tmp_path / "r.h5"))
        counter.add("/a", "data", lazy_steps(f, "a", [2, 2]))
        counter.add("/b", "data", lazy_steps(f, "b", [2, 3]))
        counter.add("/timestamp", "timestamp", lazy_steps(f, "timestamp", [2, 2]))
        assert counter.count(0) == 2
        with pytest.raises(InconsistentRunError, match="step 1: /a has 2 events, /b has 3"):
            counter.count(1)


def test_events_in_needs_an_event_axis(tmp_path):
    with h5py.File(tmp_path / "r.h5", "w") as f:
        assert events_in(f.create_dataset("a", data=np.zeros((4, 2))), "r.h5") == 4
        with pytest.raises(DataTypeError, match="scalar"):
            events_in(f.create_dataset("s", data=1.0), "r.h5")
