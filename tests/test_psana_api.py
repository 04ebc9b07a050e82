"""psana's other public Event and Run methods (psana2/psana_api.py), on h5 runs and against psana."""

from __future__ import annotations

import numpy as np
import pytest
from peer_support import XTC2

from calibsuite_h5source import DataSource
from calibsuite_h5source.testing.layouts import declare_run, write_layout


@pytest.fixture
def path(tmp_path):
    return write_layout(tmp_path / "run.h5", declare_run(steps=(3, 2, 4), scan="delay"))


def test_timestamp_diff_is_nanoseconds_across_the_seconds_word(path):
    evt = next(next(DataSource(files=path).runs()).events())
    ts = evt.timestamp
    assert evt.timestamp_diff(ts) == 0
    earlier = ((ts >> 32) - 2 << 32) | ((ts & 0xFFFFFFFF) + 5)  # 2 s earlier, 5 ns later in the low word
    assert evt.timestamp_diff(earlier) == 2_000_000_000 - 5
    assert evt.timestamp_diff(np.uint64(ts)) == 0
    assert not hasattr(evt, "__dict__")  # the mixin keeps Event slotted


def test_run_number_scan_names_and_step_of_an_event(path):
    run = next(DataSource(files=path, exp="x", run=7).runs())
    assert run.run() == run.runnum
    assert run.scannames == {"delay", "step_value", "step_docstring"}
    assert run.intg_det == ""
    delay = run.Detector("delay")
    seen = [(delay(run.step(evt)), delay(step)) for step in run.steps() for evt in step.events()]
    assert seen == [(10.0, 10.0)] * 3 + [(20.0, 20.0)] * 2 + [(30.0, 30.0)] * 4
    evt = next(DataSource(files=path).runs()).event(int(run.times()[4]))
    begin = run.step(evt)
    assert (begin.service(), begin.run(), run.Detector("step_value")(begin)) == (6, run, 20.0)  # step 1


def test_terminate_ends_events_and_steps_after_the_current_event(path):
    run = next(DataSource(files=path).runs())
    n = 0
    for i, _evt in enumerate(run.events()):
        if i == 4:
            run.terminate()
        n += 1
    assert n == 5  # as lcls2's run_early_termination.py asserts
    assert list(run.steps()) == [] and list(run.events()) == []

    run = next(DataSource(files=path).runs())
    counts = []
    for step in run.steps():
        counts.append(sum(1 for _ in step.events()))
        if len(counts) == 2:
            run.terminate()
    assert counts == [3, 2]


def test_analyze_calls_the_function_per_remaining_event(path):
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    first = next(run.events())
    got = []
    run.analyze(event_fn=lambda evt, d: got.append((evt.timestamp, d is det)), det=det)
    assert len(got) == 8 and got[0][0] > first.timestamp and all(same for _, same in got)
    run.analyze()  # nothing left, no function: no error
    run.close_shared_memory()


def test_build_table_then_event_by_timestamp(path):
    run = next(DataSource(files=path).runs())
    stamps = run.times()
    with run.build_table() as found:
        assert found is True
        evt = run.event(int(stamps[5]))
    assert evt.timestamp == int(stamps[5])
    np.testing.assert_array_equal(run.Detector("epixM").raw.raw(evt), run.Detector("epixM").raw.raw(
        next(e for i, e in enumerate(next(DataSource(files=path).runs()).events()) if i == 5)))


@pytest.mark.psana
def test_same_answers_as_psana_on_a_converted_run(tmp_path):
    """psana's own methods on intg_det, and ours on its conversion, answer alike."""
    pytest.importorskip("psana")
    if not (XTC2 / "intg_det").is_dir():
        pytest.skip(f"no xtc2 sample data in {XTC2}")
    from calibsuite_h5source.write.convert import convert

    out = tmp_path / "intg.h5"
    source = dict(exp="xpptut15", run=14, dir=str(XTC2 / "intg_det"))
    convert(out, progress=False, **source)
    import psana

    from calibsuite_h5source.write.convert import _OfflineLookup

    with _OfflineLookup():  # the test runs without a network, as CI does
        prun = next(psana.DataSource(skip_calib_load="all", intg_det="andor", **source).runs())
    hrun = next(DataSource(files=str(out), intg_det="andor", **source).runs())
    daq_scan = {"step_value", "step_docstring"}  # always offered here, psana only for a DAQ scan (docs)
    assert (hrun.run(), hrun.scannames - daq_scan) == (prun.run(), prun.scannames - daq_scan)
    p_events, h_events = list(prun.events()), list(hrun.events())
    assert [e.run().intg_det for e in h_events] == [e.run().intg_det for e in p_events] == ["andor"] * 17
    first = p_events[0].timestamp
    assert [e.timestamp_diff(first) for e in h_events] == [e.timestamp_diff(first) for e in p_events]
