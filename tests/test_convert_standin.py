"""convert() paths the shared xtc2 samples cannot reach (timing, beam monitors, DAQ scans),
driven by a declared stand-in psana run; the result is read back with our reader."""

import json
import types

import numpy as np
import psana_standin
import pytest

from calibsuite_h5source import DataSource, H5SourceError
from calibsuite_h5source.cli import main
from calibsuite_h5source.write.convert import convert


class StandInRun:
    """A psana-like run: 2 steps x 3 events of epix frames, timing, a beam monitor, a DAQ scan."""

    def __init__(self):
        self.runnum, self.expt, self.timestamp = 7, "mfxtest", (1_000_000_000 << 32)
        self.detinfo = {("epix", "raw"): ["calib", "image", "raw"], ("timing", "raw"): ["eventcodes", "pulseId"],
                        ("MfxDg1BmMon", "raw"): ["config", "peakAmplitude"]}
        self.xtcinfo = [("epix", "epixm320", "raw", "1_2_3")]
        self.scaninfo = {("step_value", "raw"): "raw", ("step_docstring", "raw"): "raw"}
        self.events_ = [types.SimpleNamespace(timestamp=self.timestamp + 100 + i, step=i // 3, i=i) for i in range(6)]

    def events(self):
        return iter(self.events_)

    def steps(self):
        for k in range(2):
            yield types.SimpleNamespace(k=k, events=lambda k=k: iter(self.events_[3 * k:3 * k + 3]))

    def Detector(self, name):  # noqa: N802
        ns = types.SimpleNamespace
        if name == "epix":
            return ns(raw=ns(raw=lambda e: None if e.i == 1 else np.full((4, 2, 3), e.i + 0x8000, np.uint16),
                             calib=lambda e: None))
        if name == "timing":
            return ns(raw=ns(eventcodes=lambda e: [int(c == 283) for c in range(288)], pulseId=lambda e: 1000 + e.i))
        if name == "MfxDg1BmMon":
            return ns(raw=ns(peakAmplitude=lambda e: np.arange(16.0) * e.i, config=lambda e: None))
        if name == "step_value":
            return lambda s: float(s.k * 5)
        if name == "step_docstring":
            return lambda s: json.dumps({"detname": "epix", "scantype": "pedestal", "step": s.k, "value": s.k * 5})
        raise KeyError(name)


@pytest.fixture
def stand_in_psana(mocker):
    return psana_standin.install(
        mocker, mocker.Mock(side_effect=lambda **kw: types.SimpleNamespace(runs=lambda: iter([StandInRun()]))))


def test_timing_beam_monitor_and_daq_scan_are_converted(tmp_path, stand_in_psana):
    out = tmp_path / "c.h5"
    summary = convert(out, exp="mfxtest", run=7, timing=True, beam_monitors=["MfxDg1BmMon"], progress=False)
    assert (summary["steps"], summary["events"], summary["detectors"]) == (2, 6, ["epix"])
    run = next(DataSource(files=str(out)).runs())
    assert (run.runnum, run.expt, run.timestamp) == (7, "mfxtest", 1_000_000_000 << 32)
    epix, timing, bm = run.Detector("epix"), run.Detector("timing"), run.Detector("MfxDg1BmMon")
    events = list(run.events())
    assert [e.timestamp - (1_000_000_000 << 32) for e in events] == [100, 101, 102, 103, 104, 105]
    assert [None if (f := epix.raw.raw(e)) is None else int(f[0, 0, 0]) for e in events] == \
           [0x8000, None, 0x8002, 0x8003, 0x8004, 0x8005]
    # psana's epixm320 calib without pedestals returns raw itself (gain bit kept, uint16)
    np.testing.assert_array_equal(epix.raw.calib(events[2]), epix.raw.raw(events[2]))
    assert timing.raw.eventcodes(events[4])[283] == 1 and timing.raw.pulseId(events[4]) == 1004
    np.testing.assert_array_equal(bm.raw.peakAmplitude(events[3]), np.arange(16.0) * 3)
    run = next(DataSource(files=str(out)).runs())
    steps = list(run.steps())
    assert [run.Detector("step_value")(s) for s in steps] == [0.0, 5.0]
    assert json.loads(run.Detector("step_docstring")(steps[1]))["scantype"] == "pedestal"
    assert run._index.script_type == "pedestal"  # from the DAQ docstring
    assert run.xtcinfo == [("epix", "epixm320", "raw", "1_2_3")]


def test_max_events_cuts_inside_a_step(tmp_path, stand_in_psana):
    out, xtc2 = tmp_path / "c.h5", tmp_path / "x.xtc2"
    xtc2.touch()  # the stand-in reads nothing, but convert checks that the file exists
    assert convert(out, files=str(xtc2), max_events=4, progress=False)["events"] == 4
    run = next(DataSource(files=str(out)).runs())
    assert [len(list(s.events())) for s in run.steps()] == [3, 1]
    stand_in_psana.DataSource.assert_called_with(files=str(xtc2), skip_calib_load="all", max_events=4)


# -- errors: a clear H5SourceError (exit 2 from the CLI), and absent detectors kept as missing ------------

class MixedRateRun(StandInRun):
    """epix is read out every other event; where it is absent psana raises instead of returning None."""

    def Detector(self, name):  # noqa: N802
        det = super().Detector(name)
        if name == "epix":
            def raw(e):
                if e.i % 2:
                    raise AttributeError("'NoneType' object has no attribute 'raw'")  # psana's absent segment
                return np.full((4, 2, 3), e.i, np.uint16)
            det.raw.raw = raw
        return det


def test_detector_raising_in_some_events_is_kept_as_missing(tmp_path, stand_in_psana, caplog):
    stand_in_psana.DataSource.side_effect = lambda **kw: types.SimpleNamespace(runs=lambda: iter([MixedRateRun()]))
    out = tmp_path / "c.h5"
    assert convert(out, exp="mfxtest", run=7, progress=False)["events"] == 6
    run = next(DataSource(files=str(out)).runs())
    epix = run.Detector("epix")
    assert [None if (f := epix.raw.raw(e)) is None else int(f[0, 0, 0]) for e in run.events()] == \
           [0, None, 2, None, 4, None]
    assert "psana raised AttributeError for epix in 3 events" in caplog.text and "stored as missing" in caplog.text


class NoTimingRun(StandInRun):
    def __init__(self):
        super().__init__()
        del self.detinfo[("timing", "raw")]

    def Detector(self, name):  # noqa: N802
        if name == "timing":
            raise KeyError("No available detector class matched with timing.")  # psana's message
        return super().Detector(name)


def test_timing_or_beam_monitor_the_run_lacks_is_a_clear_error(tmp_path, stand_in_psana):
    stand_in_psana.DataSource.side_effect = lambda **kw: types.SimpleNamespace(runs=lambda: iter([NoTimingRun()]))
    out = tmp_path / "c.h5"
    with pytest.raises(H5SourceError, match=r"timing=True \(--timing\): this psana run has no detector 'timing'; "
                                            r"it has \['MfxDg1BmMon', 'epix'\]"):
        convert(out, exp="mfxtest", run=7, timing=True, progress=False)
    with pytest.raises(H5SourceError, match="beam_monitors .*no detector 'Nope'"):
        convert(out, exp="mfxtest", run=7, beam_monitors=["Nope"], progress=False)
    assert not out.exists()


def test_unreachable_logbook_and_missing_files_exit_2(tmp_path, stand_in_psana, capsys):
    stand_in_psana.DataSource.side_effect = ConnectionError("Failed to resolve 'pswww.slac.stanford.edu'")
    with pytest.raises(H5SourceError, match="psana could not open the run .*ConnectionError.*is the logbook reachable"):
        convert(tmp_path / "c.h5", exp="mfxtest", run=7, progress=False)
    assert main(["convert", str(tmp_path / "c.h5"), "--exp", "mfxtest", "--run", "7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibsuite-h5 convert: error: psana could not open the run" in err
    assert main(["convert", str(tmp_path / "c.h5"), "--files", str(tmp_path / "none.xtc2")]) == 2
    assert capsys.readouterr().err == f"calibsuite-h5 convert: error: psana source files={tmp_path / 'none.xtc2'}: " \
                                      "no such file\n"
    assert main(["convert", str(tmp_path / "c.h5"), "--exp", "x", "--run", "1", "--dir", str(tmp_path / "d")]) == 2
    assert "psana source dir=" in capsys.readouterr().err
    assert not (tmp_path / "c.h5").exists()


class MonitorOnItsOwnEventsRun(StandInRun):
    """The beam monitor reads on even events only; psana's BLD returns None on the others."""

    def Detector(self, name):  # noqa: N802
        det = super().Detector(name)
        if name == "MfxDg1BmMon":
            det.raw.peakAmplitude = lambda e: None if e.i % 2 else np.arange(16.0) * e.i
        return det


def test_beam_monitor_absent_from_some_events_reads_back_as_none(tmp_path, stand_in_psana):
    stand_in_psana.DataSource.side_effect = lambda **kw: types.SimpleNamespace(runs=lambda: iter([MonitorOnItsOwnEventsRun()]))
    out = tmp_path / "c.h5"
    convert(out, exp="mfxtest", run=7, beam_monitors=["MfxDg1BmMon"], progress=False)
    run = next(DataSource(files=str(out)).runs())
    bm = run.Detector("MfxDg1BmMon")
    got = [bm.raw.peakAmplitude(e) for e in run.events()]
    assert [a is None for a in got] == [False, True, False, True, False, True]
    np.testing.assert_array_equal(got[4], np.arange(16.0) * 4)
