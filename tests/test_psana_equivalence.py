"""The real psana on xtc2 and our factory on the converted h5 see the same run.

Runs when psana imports and the shared xtc2 data exists (``../shared/data/xtc2``
beside the checkout, or ``$CALIBSUITE_XTC2_DIR``); skipped with the reason
otherwise. One generic analysis function drives both.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import psana_standin
import pytest
from mpi_scripts.launch import launch, needs_mpi

from calibsuite_h5source import DataSource, MissingDependencyError
from calibsuite_h5source.write.convert import convert

DATA = Path(os.environ.get("CALIBSUITE_XTC2_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "xtc2"))
EPIX = DATA / "test_epix_calib.xtc2"
FAKESTEPS = DATA / "fakesteps"
INTG_DET = DATA / "intg_det"

try:
    import psana  # noqa: F401

    HAVE_PSANA = True
except Exception:  # ImportError, or libmpi missing
    HAVE_PSANA = False

_skip_without_psana = pytest.mark.skipif(not HAVE_PSANA, reason="the real psana is not installed (pip install '.[psana]')")


def needs_psana(test):
    """Mark ``test`` as a psana test (``-m psana``) that skips without psana."""
    return pytest.mark.psana(_skip_without_psana(test))
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
    module = psana_standin.install(mocker, mocker.Mock(return_value=types.SimpleNamespace(runs=lambda: iter([run]))))
    xtc2 = tmp_path / "run.xtc2"
    xtc2.touch()  # convert checks that the file exists before psana opens it
    with pytest.raises(Exception, match=r"detectors \['jungfrau'\] are not in this psana run; it has \['epixquad'\]"):
        convert(tmp_path / "x.h5", files=str(xtc2), detectors=["jungfrau"])
    module.DataSource.assert_called_with(files=str(xtc2), skip_calib_load="all")


# -- EndOfBatch and psana's rank roles under MPI -----------------------------------------------

def xtc2_to_h5(tmp_path, folder):
    out = tmp_path / f"{folder.name}.h5"
    convert(out, exp="xpptut15", run=14, dir=str(folder), progress=False)
    return out


@needs_psana
@pytest.mark.skipif(not INTG_DET.exists(), reason=f"no intg_det sample data in {DATA}")
@pytest.mark.parametrize("kwargs", [{"intg_det": "andor", "batch_size": 1}, {"intg_det": "andor"}, {}])
def test_end_of_batch_as_psana(tmp_path, offline_logbook, kwargs):
    from psana import DataSource as PsanaDataSource

    out = xtc2_to_h5(tmp_path, INTG_DET)

    def marks(ds):
        return [(e.timestamp, e.EndOfBatch()) for e in next(ds.runs()).events()]

    psana_marks = marks(PsanaDataSource(exp="xpptut15", run=14, dir=str(INTG_DET), skip_calib_load="all", **kwargs))
    h5_marks = marks(DataSource(files=str(out), **kwargs))
    assert h5_marks == psana_marks
    assert len(h5_marks) == 17 and [t for t, m in h5_marks if m] == ([7, 10, 13, 16, 19] if kwargs else [])


def roles_run(tmp_path, kind, run, n_ranks, batch_size, intg_det=None):
    out = tmp_path / f"{kind}{n_ranks}_{batch_size}_{intg_det}"
    out.mkdir()
    args = [kind, run, out, batch_size] + ([intg_det] if intg_det else [])
    launch("user_roles.py", n_ranks, *args, env={"PS_SRV_NODES": "1"})  # psana's smalldata needs a server
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(n_ranks)]


@needs_psana
@needs_data
@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("n_ranks, batch_size, data, intg_det", [
    (4, 1000, FAKESTEPS, None), (4, 2, INTG_DET, "andor"), (5, 2, FAKESTEPS, None), (5, 1, INTG_DET, "andor")])
def test_user_script_sees_what_psana_shows_each_rank(tmp_path, offline_logbook, n_ranks, batch_size, data, intg_det):
    if not data.exists():
        pytest.skip(f"no {data.name} sample data in {DATA}")
    h5 = xtc2_to_h5(tmp_path, data)
    psana_ranks = roles_run(tmp_path, "psana", data, n_ranks, batch_size, intg_det)
    h5_ranks = roles_run(tmp_path, "h5", h5, n_ranks, batch_size, intg_det)
    workers = list(range(2, n_ranks - 1))  # rank 0 smd0, rank 1 event builder, the last rank a server
    for ranks in (psana_ranks, h5_ranks):
        for r in ranks:
            if r["rank"] in workers:
                assert r["summary"] and r["runs"] == 1
            else:  # the run, no step, no event; smalldata's summary False
                assert (r["runs"], r["steps"], r["events"], r["summary"], r["total"]) == (1, [], [], False, "skipped")
        assert [r["unique"] for r in ranks] == [r == workers[-1] for r in range(n_ranks)]
        assert [r["total"] is not None for r in ranks if r["rank"] in workers] == [r == workers[0] for r in workers]
    assert h5_ranks[workers[0]]["total"] == psana_ranks[workers[0]]["total"]
    if len(workers) == 1:  # one worker: the same events, steps and EndOfBatch marks, in the same order
        for key in ("steps", "events", "eob"):
            assert h5_ranks[workers[0]][key] == psana_ranks[workers[0]][key], key
    else:  # psana deals first-come: compare the union, and that every worker sees every step
        for key in ("events", "eob"):
            assert sorted(x for r in h5_ranks for x in r[key]) == sorted(x for r in psana_ranks for x in r[key])
        n_steps = len(psana_ranks[workers[0]]["steps"])
        assert all(len(r["steps"]) == n_steps for ranks in (psana_ranks, h5_ranks) for r in ranks if r["rank"] in workers)


# -- jungfrau: psana's own detector classes on a segment as the DAQ stores it ------------------

@needs_psana
@pytest.mark.parametrize("written", ["native 2-D frames", "native 3-D frames", "as convert records it"])
def test_jungfrau_raw_and_calib_as_psana_s_classes(tmp_path, written):
    """No jungfrau xtc2 is in ../shared/data/xtc2, so psana's real jungfrau code runs on stand-in segments.

    A jungfrau 0.5M segment is ``(1, 512, 1024)`` uint16 as the DAQ stores it
    (measured on lcls2's ``test_jungfrau05M_calib.xtc2``, see
    ../shared/reference/psana2-behaviour.md, *Shapes*). psana's
    ``AreaDetectorRaw.raw`` and ``jungfrau_raw_0_1_0.calib`` (with its real
    ``DetCache``, no constants: "PEDESTALS ARE NOT AVAILABLE det.raw.calib(evt)
    will return det.raw.raw(evt)") give what the h5 source must give.
    """
    from psana.detector.areadetector import AreaDetectorRaw
    from psana.detector.jungfrau import jungfrau_raw_0_1_0

    from calibsuite_h5source import RunWriter
    from calibsuite_h5source.format.shapes import MODULE_AXIS_ATTR

    segments = np.random.default_rng(5).integers(0, 1 << 16, (3, 1, 512, 1024)).astype(np.uint16)  # gain bits too

    class PsanaJungfrau:  # the state psana's raw/calib read; the methods are psana's own
        _segment_numbers = _sorted_segment_inds = [0]
        _det_name, _calibconst, _raw_buf, _odc = "jungfrau", {}, None, None
        raw, calib = AreaDetectorRaw.raw, jungfrau_raw_0_1_0.calib

        def _segments(self, evt):
            return {0: types.SimpleNamespace(raw=segments[evt])}

        def _info_calibconst(self):
            return "no constants (skip_calib_load)"

    path = tmp_path / "jungfrau.h5"
    with RunWriter(path, "dark") as w:
        if written == "as convert records it":
            w.detector("jungfrau", detType="jungfrau", attrs={MODULE_AXIS_ATTR: True})
        with w.step() as s:
            for seg in segments:
                s.event(jungfrau=seg[0] if written == "native 2-D frames" else seg)
    run = next(DataSource(files=str(path)).runs())
    det = run.Detector("jungfrau")
    ps = PsanaJungfrau()
    for i, evt in enumerate(run.events()):
        for mine, theirs in ((det.raw.raw(evt), ps.raw(i)), (det.raw.calib(evt), ps.calib(i))):
            assert (mine.shape, mine.dtype) == (theirs.shape, theirs.dtype) == ((1, 512, 1024), np.uint16)
            np.testing.assert_array_equal(mine, theirs)
