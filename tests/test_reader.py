"""H5DataSource against psana2's protocol, on real files in every layout."""

import json

import numpy as np
import pytest

from calibsuite_h5source import DataSource, H5DataSource, UnknownDetectorError
from calibsuite_h5source.testing.layouts import declare_run, write_layout


def analyse(path, **kwargs):
    """A generic suite-style analysis: everything a script can observe, in order."""
    run = next(DataSource(files=str(path), **kwargs).runs())
    det = run.Detector("epixm")
    wave8 = run.Detector("wave8", accept_missing=True)
    step_value = run.Detector("step_value")
    out = {"runnum": run.runnum, "detnames": run.detnames, "steps": []}
    for step in run.steps():
        events = []
        for evt in step.events():
            amp = wave8.raw.peakAmplitude(evt)
            events.append((evt.timestamp, det.raw.raw(evt).tolist(), None if amp is None else amp.tolist()))
        out["steps"].append((step_value(step), run.Detector("step_docstring")(step), events))
    return out


@pytest.fixture
def declared():
    return declare_run(steps=(3, 2, 4), shape=(2, 4, 6), per_event_scan=False)


@pytest.mark.parametrize("layout", ["padded", "stepgroups"])
def test_alternative_layouts_iterate_exactly_like_canonical(tmp_path, layout):
    decl = declare_run(steps=(3, 2, 4), shape=(2, 4, 6), per_event_scan=True)
    canonical = analyse(write_layout(tmp_path / "c.h5", decl, "canonical"))
    assert canonical == analyse(write_layout(tmp_path / "a.h5", decl, layout))
    assert [len(s[2]) for s in canonical["steps"]] == [3, 2, 4]


def test_legacy_layout_iterates_like_canonical(tmp_path):
    decl = declare_run(steps=(2, 2), shape=(4, 192, 384), side=False, timestamps=False, dtype="float64")
    canonical = analyse(write_layout(tmp_path / "c.h5", decl, "canonical"))
    legacy = analyse(write_layout(tmp_path / "l.h5", decl, "legacy"))
    # the legacy file has no run id, so its synthesised timestamps start at the LCLS epoch
    strip = [[(v, [e[1:] for e in events]) for v, _, events in r["steps"]] for r in (canonical, legacy)]
    assert strip[0] == strip[1]
    run = next(DataSource(files=str(tmp_path / "l.h5")).runs())
    assert run.detnames == {"epixM"}  # named from the epixM frame shape
    assert run.Detector("step_value")(next(run.steps())) == 10.0


def test_values_shapes_and_dtypes_match_the_declaration(tmp_path, declared):
    path = write_layout(tmp_path / "r.h5", declared)
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    for k, step in enumerate(run.steps()):
        for i, evt in enumerate(step.events()):
            frame = det.raw.raw(evt)
            assert frame.dtype == np.uint16 and frame.shape == (2, 4, 6)
            np.testing.assert_array_equal(frame, declared["detectors"]["epixM"][k][i])
            assert evt.timestamp == int(declared["timestamps"][k][i])
            assert isinstance(evt.timestamp, int) and evt.service() == 12 and evt.run() is run


def test_run_and_steps_share_one_cursor(tmp_path, declared):
    path = write_layout(tmp_path / "r.h5", declared)
    run = next(DataSource(files=path).runs())
    seen = []
    while True:  # the suite's getEvt(): next(myrun.events()) until StopIteration
        try:
            evt = next(run.events())
        except StopIteration:
            break
        seen.append((evt._step, evt._i))
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert list(run.steps()) == [] and list(run.events()) == []

    run = next(DataSource(files=path).runs())
    steps = run.steps()
    first = next(steps)
    assert next(first.events())._i == 0  # read one event of step 0, then move on
    assert [e._i for e in next(steps).events()] == [0, 1]
    assert [(e._step, e._i) for e in run.events()] == [(2, 0), (2, 1), (2, 2), (2, 3)]


def test_step_event_returns_none_past_the_count(tmp_path, declared):
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", declared)).runs())
    step = next(run.steps())
    assert step.event(2).timestamp == int(declared["timestamps"][0][2])
    assert step.event(3) is None and step.event(-1) is None
    assert step.scan_values["delay"] == 10.0


def test_max_events_cuts_steps_short_and_detectors_filter(tmp_path, declared):
    path = write_layout(tmp_path / "r.h5", declared)
    run = next(DataSource(files=path, max_events=4).runs())
    assert [len(list(s.events())) for s in run.steps()] == [3, 1]
    run = next(DataSource(files=path, detectors=["epixm", "timing"]).runs())
    assert run.detnames == {"epixM"}
    with pytest.raises(UnknownDetectorError, match="wave8"):
        run.Detector("wave8")
    with pytest.raises(UnknownDetectorError, match=r"names 'jungfrau'.*available"):
        next(DataSource(files=path, detectors=["jungfrau"]).runs())


def test_timestamps_keyword_selects_events(tmp_path, declared):
    path = write_layout(tmp_path / "r.h5", declared)
    wanted = [declared["timestamps"][0][1], declared["timestamps"][2][3]]
    events = list(next(DataSource(files=path, timestamps=wanted).runs()).events())
    assert [(e._step, e._i) for e in events] == [(0, 1), (2, 3)]


def test_ignored_psana_keywords_and_ds_level_api(tmp_path, declared):
    path = write_layout(tmp_path / "r.h5", declared)
    ds = DataSource(files=path, exp="rixx1005922", run=6, intg_det="epixm", batch_size=10,
                    skip_calib_load="all", dir="/nowhere", live=False)
    assert isinstance(ds, H5DataSource)
    assert ds.is_mpi() is False and ds.is_srv() is False and ds.unique_user_rank() is True
    assert len(list(ds.events())) == 9


def test_unknown_detector_lists_names_and_accept_missing(tmp_path, declared):
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", declared)).runs())
    with pytest.raises(KeyError, match=r"no detector 'andor'.*epixM.*wave8"):
        run.Detector("andor")
    missing = run.Detector("andor", accept_missing=True)
    evt = next(run.events())
    assert missing.raw.raw(evt) is None and missing(evt) is None
    det = run.Detector("epixM")
    assert det.raw.raw(None) is None and det.raw.calib(None) is None and det.raw.image(None) is None


def test_case_insensitive_lookup_must_be_unique(tmp_path):
    decl = declare_run(steps=(2,), side=False)
    decl["detectors"]["EPIXM"] = decl["detectors"]["epixM"]
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    assert run.Detector("epixM").name == "epixM"
    with pytest.raises(KeyError):
        run.Detector("epixm")  # two case-insensitive matches: ambiguous


def test_present_mask_gives_none(tmp_path):
    decl = declare_run(steps=(3,), side=False)
    decl["present"] = {"epixM": [np.array([True, False, True])]}
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    det = run.Detector("epixM")
    assert [det.raw.raw(e) is None for e in run.events()] == [False, True, False]


def test_calib_without_constants_as_psana_s_class(tmp_path):
    # epix10ka (psana's calib_epix10ka_any): float32 raw & 0x3fff
    decl = declare_run(steps=(1,), side=False, detector="epix10k")
    frames = decl["detectors"]["epix10k"][0]
    frames[:] = (frames & 0x3FFF) | np.uint16(0x4000)  # epix10ka: gain bit 1<<14
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    calib = run.Detector("epix10k").raw.calib(next(run.events()))
    assert calib.dtype == np.float32
    np.testing.assert_array_equal(calib, (frames[0] & 0x3FFF).astype(np.float32))
    # epixM (psana's epixm320 calib): no pedestals, raw itself, gain bit kept
    decl = declare_run(steps=(1,), side=False)
    frames = decl["detectors"]["epixM"][0]
    frames[:] = (frames & 0x3FFF) | np.uint16(0x8000)  # epixM: gain bit 1<<15
    run = next(DataSource(files=write_layout(tmp_path / "m.h5", decl)).runs())
    calib = run.Detector("epixM").raw.calib(next(run.events()))
    assert calib.dtype == np.uint16
    np.testing.assert_array_equal(calib, frames[0])
    assert run.Detector("epixM").calibconst == {}


def test_calib_subtracts_pedestals_and_divides_gain(tmp_path):
    import h5py

    decl = declare_run(steps=(2,), shape=(1, 4, 6), side=False)
    path = write_layout(tmp_path / "r.h5", decl)
    ped = np.full((1, 4, 6), 100.0, np.float32)
    with h5py.File(path, "a") as f:
        f["epixM/calib/pedestals"] = ped
        f["epixM/calib/pedestals"].attrs["run"] = 7
        f["epixM/calib/pixel_gain"] = np.full((1, 4, 6), 2.0, np.float32)
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    evt = next(run.events())
    raw = det.raw.raw(evt)
    np.testing.assert_allclose(det.raw.calib(evt), ((raw & 0x7FFF) - 100.0) / 2.0)
    arr, meta = det.calibconst["pedestals"]
    np.testing.assert_array_equal(arr, ped)
    assert meta["run"] == 7


def test_calib_with_per_gain_pedestals_uses_the_gain_bits(tmp_path):
    import h5py

    decl = declare_run(steps=(1,), shape=(1, 2, 2), side=False)
    decl["detectors"]["epixM"][0][0] = np.array([[[10, 0x8000 | 20], [30, 40]]], np.uint16)
    path = write_layout(tmp_path / "r.h5", decl)
    with h5py.File(path, "a") as f:
        f["epixM/calib/pedestals"] = np.stack([np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 5.0)])
    run = next(DataSource(files=path).runs())
    calib = run.Detector("epixM").raw.calib(next(run.events()))
    np.testing.assert_array_equal(calib, [[[9, 15], [29, 39]]])  # epixM keeps its module axis, as psana


def test_image_tiles_modules(tmp_path):
    decl = declare_run(steps=(1,), shape=(4, 3, 5), side=False, dtype="float32")
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    det = run.Detector("epixM")
    evt = next(run.events())
    img = det.raw.image(evt)
    raw = det.raw.raw(evt)
    assert img.shape == (6, 10)
    np.testing.assert_array_equal(img[3:, :5], raw[2])
    np.testing.assert_array_equal(det.raw.image(evt, raw * 0 + 1), np.ones((6, 10)))


def test_timing_and_side_data_types(tmp_path):
    decl = declare_run(steps=(2,), side=True)
    codes = np.zeros((2, 288), np.uint8)
    codes[:, 283] = 1
    decl["side"]["timing"] = {"eventcodes": [codes], "pulseId": [np.array([11, 12], np.uint64)]}
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    timing, wave8 = run.Detector("timing"), run.Detector("wave8")
    evt = next(run.events())
    ec = timing.raw.eventcodes(evt)
    assert type(ec) is list and len(ec) == 288 and ec[283] == 1 and ec != []
    assert timing.raw.pulseId(evt) == 11 and type(timing.raw.pulseId(evt)) is int
    assert wave8.raw.peakAmplitude(evt).shape == (4,)
    with pytest.raises(AttributeError, match="peakAmplitude"):
        wave8.raw.nosuchfield(evt)


def test_timing_without_stored_timing(tmp_path, declared):
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", declared)).runs())
    timing = run.Detector("timing")
    evt = next(run.events())
    assert timing.raw.eventcodes(evt) == [0] * 288
    assert timing.raw.pulseId(evt) == 0


def test_scan_detector_on_steps_events_and_lists(tmp_path):
    decl = declare_run(steps=(2, 3), per_event_scan=True)
    run = next(DataSource(files=write_layout(tmp_path / "r.h5", decl)).runs())
    delay = run.Detector("delay")
    events = list(run.events())
    assert delay(events) == [10.0, 10.0, 20.0, 20.0, 20.0]
    assert isinstance(delay(events[0]), float)


def test_step_docstring_from_file_or_derived(tmp_path):
    decl = declare_run(steps=(1, 1))
    run = next(DataSource(files=write_layout(tmp_path / "a.h5", decl)).runs())
    doc = run.Detector("step_docstring")(next(run.steps()))
    assert json.loads(doc) == {"detname": "epixM", "scantype": "delayScan", "step": 0, "value": 10.0}
    assert eval(doc.split()[-1][:-1]) == 10.0  # how time-scan scripts parse it
    decl["step_value"] = [5.0, 6.0]
    decl["step_docstring"] = ['{"scantype": "x", "step": 0}', '{"scantype": "x", "step": 1}']
    run = next(DataSource(files=write_layout(tmp_path / "b.h5", decl)).runs())
    values = [(run.Detector("step_value")(s), run.Detector("step_docstring")(s)) for s in run.steps()]
    assert values == [(5.0, decl["step_docstring"][0]), (6.0, decl["step_docstring"][1])]


def test_runs_yields_one_run_per_file_and_header_fields(tmp_path):
    a = declare_run(steps=(1,))
    a["header"].update(runnum=6, experiment="rixx1005922")
    b = declare_run(steps=(2,), run=1_700_000_100)
    paths = [write_layout(tmp_path / "a.h5", a), write_layout(tmp_path / "b.h5", b)]
    runs = list(DataSource(files=paths).runs())
    assert [(r.runnum, r.expt) for r in runs] == [(6, "rixx1005922"), (1_700_000_100, "b")]
    assert runs[0].timestamp == int(a["timestamps"][0][0])
    assert len(list(DataSource(files=paths).events())) == 3


def test_frames_are_read_one_event_at_a_time(tmp_path, mocker):
    """Opening reads no frame data; each raw() call reads exactly one event."""
    from calibsuite_h5source.read.index_types import EventArray

    decl = declare_run(steps=(5, 5), shape=(2, 4, 6))
    path = write_layout(tmp_path / "r.h5", decl)
    spy = mocker.spy(EventArray, "read")
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    assert spy.call_count == 0
    for n, evt in enumerate(run.events(), start=1):
        det.raw.raw(evt)
        assert spy.call_count == n


def test_padded_detector_group_with_its_own_nevents(tmp_path):
    import h5py

    decl = declare_run(steps=(3, 1), side=False)
    canonical = analyse(write_layout(tmp_path / "c.h5", decl))
    path = write_layout(tmp_path / "p.h5", decl, "padded")
    with h5py.File(path, "a") as f:
        data, n = f["epixM"][()], f["nEvents"][()]
        del f["epixM"], f["nEvents"]
        f["epixM/data"] = data
        f["epixM/nEvents"] = n  # holds for the padded timestamps too
    assert analyse(path) == canonical
