"""The real psana on xtc2 and our factory on the converted h5 see the same run.

Runs when psana imports and the shared xtc2 data exists (``../shared/data/xtc2``
beside the checkout, or ``$CALIBSUITE_XTC2_DIR``); skipped with the reason
otherwise. One generic analysis function drives both.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, MissingDependencyError
from calibsuite_h5source.write.convert import convert

DATA = Path(os.environ.get("CALIBSUITE_XTC2_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "xtc2"))
EPIX = DATA / "test_epix_calib.xtc2"
FAKESTEPS = DATA / "fakesteps"

try:
    import psana  # noqa: F401

    HAVE_PSANA = True
except Exception:  # ImportError, or libmpi missing
    HAVE_PSANA = False

needs_psana = pytest.mark.skipif(not HAVE_PSANA, reason="the real psana is not installed (pip install '.[psana]')")
needs_data = pytest.mark.skipif(not EPIX.exists() or not FAKESTEPS.exists(), reason=f"no xtc2 sample data in {DATA}")


@pytest.fixture
def offline_logbook(mocker):
    """psana's exp/run mode asks a web logbook for the file list; make it fail so psana scans dir=."""
    import psana.psexp.ds_base as ds_base
    import requests

    response = mocker.Mock()
    response.raise_for_status.side_effect = requests.HTTPError("offline")
    mocker.patch.object(ds_base.requests, "get", return_value=response)


def observe(ds, detectors, scans):
    """Everything a suite script can see of a run, in iteration order."""
    run = next(ds.runs())
    dets = {n: run.Detector(n) for n in detectors}
    scan_dets = {n: run.Detector(n) for n in scans}
    out = {"runnum": run.runnum, "expt": run.expt, "detnames": set(run.detnames), "timestamp": run.timestamp, "steps": []}
    for step in run.steps():
        events = []
        for evt in step.events():
            e = {"timestamp": evt.timestamp, "service": evt.service(), "datetime": evt.datetime()}
            for n, d in dets.items():
                data = d.raw.raw(evt) if hasattr(d.raw, "raw") else None
                e[n] = (None if data is None else np.array(data), None if (c := d.raw.calib(evt)) is None else np.array(c))
            e["scan"] = {n: d(evt) for n, d in scan_dets.items()}
            events.append(e)
        out["steps"].append({"scan": {n: d(step) for n, d in scan_dets.items()}, "events": events})
    return out


def assert_same(psana_view, h5_view, raw_from_calib=()):
    """Equal: same values, dtypes and shapes (2-D psana data reads back 2-D, as psana gives it)."""
    for key in ("runnum", "expt", "detnames", "timestamp"):
        assert psana_view[key] == h5_view[key], key
    assert [len(s["events"]) for s in psana_view["steps"]] == [len(s["events"]) for s in h5_view["steps"]]
    for ps, hs in zip(psana_view["steps"], h5_view["steps"], strict=True):
        assert ps["scan"] == hs["scan"]
        for pe, he in zip(ps["events"], hs["events"], strict=True):
            assert (pe["timestamp"], pe["service"], pe["datetime"], pe["scan"]) == \
                   (he["timestamp"], he["service"], he["datetime"], he["scan"])
            for name in pe:
                if not isinstance(pe[name], tuple):
                    continue
                (p_raw, p_calib), (h_raw, h_calib) = pe[name], he[name]
                if name in raw_from_calib:  # psana has only calib for it: the h5 run stores that as raw
                    p_raw = p_calib
                for p, h in ((p_raw, h_raw), (p_calib, h_calib)):
                    assert (p is None) == (h is None), name
                    if p is not None:
                        assert (p.dtype, p.shape) == (h.dtype, h.shape), name
                        np.testing.assert_array_equal(h, p)


@needs_psana
@needs_data
def test_epix_files_mode(tmp_path):
    from psana import DataSource as PsanaDataSource

    out = tmp_path / "epix.h5"
    summary = convert(out, files=str(EPIX), progress=False)
    assert summary["detectors"] == ["epixquad"] and summary["events"] == 2
    psana_view = observe(PsanaDataSource(files=str(EPIX), skip_calib_load="all"), ["epixquad"], [])
    h5_view = observe(DataSource(files=str(out)), ["epixquad"], [])
    assert_same(psana_view, h5_view)
    raw, calib = h5_view["steps"][0]["events"][0]["epixquad"]
    assert raw.shape == (4, 352, 384) and raw.dtype == np.uint16
    np.testing.assert_array_equal(calib, (raw & 0x3FFF).astype(np.float32))  # psana's calib without constants
    # no DAQ scan in this run: psana raises KeyError for step_value; we derive one
    run = next(DataSource(files=str(out)).runs())
    assert run.Detector("step_value")(next(run.steps())) == 0.0


FAKESTEPS_KWARGS = dict(exp="xpptut15", run=14, dir=str(FAKESTEPS), skip_calib_load="all")


@pytest.fixture
def fakesteps_h5(tmp_path, offline_logbook):
    """fakesteps/ converted to h5 (exp/run/dir mode)."""
    out = tmp_path / "fakesteps.h5"
    convert(out, exp="xpptut15", run=14, dir=str(FAKESTEPS), progress=False)
    return out


@needs_psana
@needs_data
def test_fakesteps_exp_run_dir_mode(fakesteps_h5):
    from psana import DataSource as PsanaDataSource

    out, kwargs = fakesteps_h5, FAKESTEPS_KWARGS
    scans = ["motor1", "motor2"]
    psana_view = observe(PsanaDataSource(**kwargs), ["andor", "hsd"], scans)
    h5_view = observe(DataSource(files=str(out)), ["andor", "hsd"], scans)
    assert_same(psana_view, h5_view, raw_from_calib=("andor", "hsd"))
    nones = [e["andor"][1] is None for s in h5_view["steps"] for e in s["events"]]
    assert any(nones) and not all(nones)  # andor is missing in some events, in both
    shapes = {n: {e[n][1].shape for s in h5_view["steps"] for e in s["events"] if e[n][1] is not None}
              for n in ("andor", "hsd")}
    assert all(len(s) == 1 and len(next(iter(s))) == 2 for s in shapes.values()), shapes  # 2-D, as psana
    with h5py.File(out) as f:  # the file keeps the module axis
        assert f["andor/0"].ndim == 4 and f["andor/0"].shape[1] == 1
    assert [len(s["events"]) for s in h5_view["steps"]] == [5, 5]


@needs_psana
@needs_data
def test_max_events_and_shared_cursor(tmp_path, fakesteps_h5):
    from psana import DataSource as PsanaDataSource

    out, kwargs = fakesteps_h5, FAKESTEPS_KWARGS
    for max_events in (3, 7):
        p = observe(PsanaDataSource(max_events=max_events, **kwargs), ["andor"], [])
        h = observe(DataSource(files=str(out), max_events=max_events), ["andor"], [])
        assert_same(p, h, raw_from_calib=("andor",))
        assert sum(len(s["events"]) for s in h["steps"]) == max_events

    def get_evts(ds):  # the suite's getEvt(): next(myrun.events()) until StopIteration
        run, stamps = next(ds.runs()), []
        while True:
            try:
                stamps.append(next(run.events()).timestamp)
            except StopIteration:
                return stamps

    assert get_evts(PsanaDataSource(**kwargs)) == get_evts(DataSource(files=str(out))) != []

    small = tmp_path / "small.h5"
    assert convert(small, exp="xpptut15", run=14, dir=str(FAKESTEPS), max_events=6, progress=False)["events"] == 6
    assert [len(s["events"]) for s in observe(DataSource(files=str(small)), [], [])["steps"]] == [5, 1]


@needs_psana
@needs_data
def test_factory_gives_the_real_psana_for_xtc2():
    ds = DataSource(files=str(EPIX), skip_calib_load="all")
    assert type(ds).__module__.startswith("psana.")
    assert next(ds.runs()).runnum == 109


@needs_psana
@needs_data
def test_convert_command_line(tmp_path, capsys):
    from calibsuite_h5source.cli import main

    out = tmp_path / "c.h5"
    assert main(["convert", str(out), "--files", str(EPIX), "--script-type", "pedestal", "--compression", "gzip"]) == 0
    assert "ueddaq02 run 109, 1 step, 2 events, detectors epixquad" in capsys.readouterr().out
    assert main(["validate", str(out)]) == 0
    run = next(DataSource(files=str(out)).runs())
    assert run.xtcinfo == [("epixquad", "epix10ka", "raw", "2_0_1")]


def test_convert_without_psana_says_how_to_install(tmp_path, mocker):
    mocker.patch.dict(sys.modules, {"psana": None})
    with pytest.raises(MissingDependencyError, match=r"pip install 'calibsuite_h5source\[psana\]'"):
        convert(tmp_path / "x.h5", files="run.xtc2")
    assert not (tmp_path / "x.h5").exists()


def test_convert_with_a_stand_in_psana_refuses_unknown_detectors(tmp_path, mocker):
    run = types.SimpleNamespace(detinfo={("epixquad", "raw"): ["raw", "calib"]}, xtcinfo=[], scaninfo={},
                                timestamp=1 << 32, runnum=1, expt="x")
    module = types.ModuleType("psana")
    module.DataSource = mocker.Mock(return_value=types.SimpleNamespace(runs=lambda: iter([run])))
    mocker.patch.dict(sys.modules, {"psana": module})
    xtc2 = tmp_path / "run.xtc2"
    xtc2.touch()  # convert checks that the file exists before psana opens it
    with pytest.raises(Exception, match=r"detectors \['jungfrau'\] are not in this psana run; it has \['epixquad'\]"):
        convert(tmp_path / "x.h5", files=str(xtc2), detectors=["jungfrau"])
    module.DataSource.assert_called_with(files=str(xtc2), skip_calib_load="all")
