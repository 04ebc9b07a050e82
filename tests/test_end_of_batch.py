"""``evt.EndOfBatch()`` as psana's: ``[intg_det]`` on every event holding the integrating detector, else ``[]``.

Measured on psana 4.3.4 (lcls2's ``intg_det`` and ``fakesteps`` runs): with
``intg_det='andor'`` every event holding andor says ``['andor']``, whatever
``batch_size``, serially and under MPI; without ``intg_det`` every event says
``[]``. The comparison with psana itself is in test_psana_equivalence.py; the
MPI case in test_mpi.py (``pairing.py``).
"""

import numpy as np
import pytest

from calibsuite_h5source import DataSource
from calibsuite_h5source.testing.layouts import declare_run, write_layout

PRESENT = [np.array([0, 1, 1, 0, 1], bool), np.array([0, 0, 1], bool)]


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    """2 steps (5 and 3 events); epixM in events (0,1) (0,2) (0,4) (1,2) only; wave8 in every event."""
    decl = declare_run(steps=(5, 3), shape=(1, 4, 4))
    decl["present"] = {"epixM": PRESENT}
    return write_layout(tmp_path_factory.mktemp("eob") / "run.h5", decl)


def end_of_batch(path, **kwargs):
    return [(e._step, e._i, e.EndOfBatch()) for e in DataSource(files=path, **kwargs).events()]


@pytest.mark.parametrize("batch_size", [None, 1, 2])
def test_every_event_holding_the_integrating_detector_ends_a_batch(sparse_run, batch_size):
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    got = end_of_batch(sparse_run, intg_det="epixM", **kwargs)
    expected = [(s, i, ["epixM"] if PRESENT[s][i] else []) for s in range(2) for i in range(len(PRESENT[s]))]
    assert got == expected


def test_the_list_holds_intg_det_as_passed(sparse_run):
    # the suite passes a detector type; it resolves case-insensitively, the name comes back as given
    got = end_of_batch(sparse_run, intg_det="EPIXM")
    assert [v for *_, v in got if v] == [["EPIXM"]] * 4


def test_without_intg_det_no_event_ends_a_batch(sparse_run):
    got = end_of_batch(sparse_run)
    assert len(got) == 8 and all(v == [] for *_, v in got)
    assert all(v == [] for *_, v in end_of_batch(sparse_run, batch_size=1))


def test_side_data_in_every_event_ends_every_batch(sparse_run):
    assert all(v == ["wave8"] for *_, v in end_of_batch(sparse_run, intg_det="wave8"))


def test_an_unknown_intg_det_ends_no_batch_with_a_warning(sparse_run, caplog):
    got = end_of_batch(sparse_run, intg_det="andor")
    assert all(v == [] for *_, v in got) and "intg_det='andor'" in caplog.text


def test_random_access_and_step_events_answer_too(sparse_run):
    run = next(DataSource(files=sparse_run, intg_det="epixM").runs())
    step = next(run.steps())
    assert [step.event(i).EndOfBatch() for i in range(5)] == [[], ["epixM"], ["epixM"], [], ["epixM"]]
    ts = run.times()[5 + 2]
    assert run.event(int(ts)).EndOfBatch() == ["epixM"]


def test_side_data_with_a_present_mask_ends_only_the_batches_it_is_in(tmp_path):
    """A beam monitor reading on its own events (/wave8/present): EndOfBatch follows its mask, as the
    area detector's (it once said ['wave8'] at every event, where wave8 itself reads None)."""
    decl = declare_run(steps=(5, 3), shape=(1, 4, 4))
    decl["present"] = {"wave8": PRESENT}
    path = write_layout(tmp_path / "run.h5", decl)
    got = [(s, i) for s, i, eob in end_of_batch(path, intg_det="wave8") if eob == ["wave8"]]
    assert got == [(s, i) for s, mask in enumerate(PRESENT) for i in np.flatnonzero(mask)]
    run = next(DataSource(files=path, intg_det="wave8").runs())
    wave8 = run.Detector("wave8")
    assert all((wave8.raw.peakAmplitude(e) is not None) == bool(e.EndOfBatch()) for e in run.events())
