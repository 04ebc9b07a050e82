"""The psana1 surface: psana1-style scripts (our own, and the suite's real psana1Base) on h5 runs,
serially and under ``mpiexec -n 2``, checked against the file read with plain h5py."""

import gc
import importlib.util
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi_scripts.launch import mpiexec, run_to_end

import calibsuite_h5source.psana1 as psana
from calibsuite_h5source import NotHDF5Error, UnknownDetectorError
from calibsuite_h5source.format.timestamps import LCLS_EPOCH_OFFSET
from calibsuite_h5source.psana1.smalldata import SmallDataError
from calibsuite_h5source.psana2 import partition
from calibsuite_h5source.testing.layouts import declare_run, write_layout

HERE = Path(__file__).parent
REPO = HERE.parent
SUITE = REPO.parent / "shared" / "suite"
STEPS = (5, 2, 4)
SHAPE = (4, 8, 8)


needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or mpiexec() is None,
                               reason="needs mpi4py and an mpiexec (pip install 'calibsuite_h5source[mpi]')")


def make_run(path):
    """exp=xpptut15 run=54: an Epix10kaQuad-like group 'epix10k', a wave8 aliased MfxDg1BmMon, timing, pedestals."""
    decl = declare_run(steps=STEPS, shape=SHAPE, seed=4)
    codes, pulse = [], []
    for k, n in enumerate(STEPS):
        c = np.zeros((n, 288), np.uint8)
        c[:, 40] = 1
        c[1::2, 137] = 1
        codes.append(c)
        pulse.append(np.arange(n, dtype=np.uint64) + 1000 * k + 131070)  # wraps the 17-bit fiducials
    decl["side"]["timing"] = {"eventcodes": codes, "pulseId": pulse}
    decl["detectors"] = {"epix10k": decl["detectors"].pop("epixM")}
    write_layout(path, decl)
    with h5py.File(path, "a") as f:
        f["epix10k"].attrs["detType"] = "epix10ka"
        f["wave8"].attrs["alias"] = "MfxDg1BmMon"
        f["epix10k/calib/pedestals"] = np.arange(3 * np.prod(SHAPE), dtype=np.float32).reshape(3, *SHAPE)
    return decl


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("psana1")
    make_run(d / "xpptut15-r0054.h5")
    return d


def oracle(run_dir):
    """Every event of the file with plain h5py: [step, sec, nsec, fiducial, raw sum, flux, kicked, value]."""
    rows = []
    with h5py.File(run_dir / "xpptut15-r0054.h5") as f:
        for k, n in enumerate(STEPS):
            for i in range(n):
                ts = int(f[f"timestamp/{k}"][i])
                raw = f[f"epix10k/{k}"][i] & 0x3FFF
                flux = float(f[f"wave8/peakAmplitude/{k}"][i][[1, 2]].mean())
                kicked = not f[f"timing/eventcodes/{k}"][i][137]
                fid = int(f[f"timing/pulseId/{k}"][i]) & 0x1FFFF
                rows.append([k, (ts >> 32) + LCLS_EPOCH_OFFSET, ts & 0xFFFFFFFF, fid, int(raw.sum()), flux, kicked,
                             10.0 * (k + 1)])
    return rows


def run(script, args, out, n_ranks, run_dir, pythonpath=()):
    (out / "scan").mkdir(parents=True)  # the suite's output dir for analysisType "scan"
    cmd = [sys.executable, str(HERE / "psana1_scripts" / script), str(out), *args]
    if n_ranks:
        cmd = [mpiexec(), "-n", str(n_ranks), *cmd]
    env = {k: v for k, v in os.environ.items() if k not in partition.LAUNCHER_ENV}
    env.update(CALIBSUITE_H5_DIR=str(run_dir), PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(REPO)]),
               MPLBACKEND="Agg", OUTPUT_ROOT=str(out), foo="1")
    proc = run_to_end(cmd, cwd=out, env=env, timeout=180, what=f"{script} (ranks={n_ranks})")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


def check_dealing(ranks, expected):
    """Each step's n-th event went to rank n % size; together the ranks saw every event once."""
    size = len(ranks)
    seen = sorted((tuple(r[:8]), rank) for rank, rd in enumerate(ranks) for r in rd["rows"])
    assert [list(s[0]) for s in seen] == expected
    for rank, rd in enumerate(ranks):
        for row in rd["rows"]:
            n = [e for e in expected if e[0] == row[0]].index(row[:8])
            assert n % size == rank


# -- our own psana1-style script ---------------------------------------------------------------

@pytest.mark.parametrize("n_ranks", [0, pytest.param(2, marks=[needs_mpi, pytest.mark.mpi, pytest.mark.slow])])
def test_psana1_script_serial_and_mpi(tmp_path, run_dir, n_ranks):
    ranks = run("own_loop.py", [], tmp_path / "out", n_ranks, run_dir)
    expected = oracle(run_dir)
    assert len(ranks) == max(n_ranks, 1)
    check_dealing(ranks, expected)
    totals = [r["total"] for r in ranks]
    assert totals[0] == sum(e[4] for e in expected) and all(t is None for t in totals[1:])  # reduced on rank 0
    assert all(r["pedestal_none"] is False for r in ranks)
    with h5py.File(tmp_path / "out" / "smd.h5") as f:
        times = f["event_time"][()]
        assert f["event_time"].dtype == np.int64 and f["fiducials"].dtype == np.int64
        np.testing.assert_array_equal(times, [e[1] << 32 | e[2] for e in expected])  # sorted, Unix seconds
        np.testing.assert_array_equal(f["fiducials"][()], [e[3] for e in expected])
        np.testing.assert_allclose(f["flux/w8"][()], [e[5] for e in expected])
        assert f["roi"].shape == (11, 2, 2) and f["roi"].dtype == np.uint16
        np.testing.assert_array_equal(f["odd"][()], [1 if e[3] % 2 else -99999 for e in expected])
        late = f["late"][()]
        assert np.isnan(late[:7]).all() and (late[7:] == 2.5).all()  # rows before a key's first value: NaN
        np.testing.assert_array_equal(f["var_hits_len"][()], [e[3] % 3 for e in expected])
        assert f["var_hits"].shape == (sum(e[3] % 3 for e in expected),)
        assert [list(c) for c in f["ragged_codes"][()]] == [[40] if e[6] else [40, 137] for e in expected]
        assert f["total"][()].sum() == sum(e[4] for e in expected)
        np.testing.assert_array_equal(f["n_ranks"][()], [max(n_ranks, 1)])  # numbers saved as [value]


# -- the suite's real psana1Base ------------------------------------------------------------------

needs_suite = pytest.mark.skipif(not (SUITE / "calibrationSuite" / "psana1Base.py").is_file()
                                 or importlib.util.find_spec("scipy") is None,
                                 reason="needs ../shared/suite and scipy")


@needs_suite
@pytest.mark.parametrize("n_ranks", [0, pytest.param(2, marks=[needs_mpi, pytest.mark.mpi, pytest.mark.slow])])
def test_suite_psana1base_serial_and_mpi(tmp_path, run_dir, n_ranks):
    config = tmp_path / "config.py"
    config.write_text("import numpy as np\nexperimentHash = {'detectorType': 'epix10k', 'exp': 'xpptut15', "
                      "'location': 'MfxEndstation', 'fluxSource': 'MfxDg1BmMon', 'fluxChannels': [1, 2], "
                      "'regionSlice': np.s_[0:4, 0:8, 0:8], 'ignoreEventCodeCheck': True}\n")
    ranks = run("suite_loop.py", ["-r", "54", "-e", "xpptut15", "-n", "4", "-cf", str(config)],
                tmp_path / "out", n_ranks, run_dir, pythonpath=[SUITE])
    assert ranks[0]["cameraType"] == "Epix10kaQuad"  # its source string found the 'epix10k' group
    expected = oracle(run_dir)
    check_dealing(ranks, expected)
    ped_g1 = float(np.arange(np.prod(SHAPE), 2 * np.prod(SHAPE), dtype=np.float32).sum())
    assert all(r[8] == ped_g1 for rd in ranks for r in rd["rows"])


# -- pieces -----------------------------------------------------------------------------------------

def test_data_source_strings_and_files(tmp_path, monkeypatch):
    make_run(tmp_path / "xpptut15-r0054.h5")
    (tmp_path / "xpptut15").mkdir()
    make_run(tmp_path / "xpptut15" / "r0055.h5")
    assert psana.run_files(f"exp=xpptut15:run=54-55:dir={tmp_path}:smd") == [
        str(tmp_path / "xpptut15-r0054.h5"), str(tmp_path / "xpptut15" / "r0055.h5")]
    monkeypatch.setenv("CALIBSUITE_H5_DIR", str(tmp_path))
    assert psana.run_files("exp=xpptut15:run=54") == [str(tmp_path / "xpptut15-r0054.h5")]
    assert psana.run_files(str(tmp_path / "a.h5")) == [str(tmp_path / "a.h5")]
    assert psana.run_files(files=["a.h5", "b.h5"]) == ["a.h5", "b.h5"]
    with pytest.raises(NotHDF5Error, match=r"no h5 file for exp=xpptut15 run=56: looked for .*xpptut15-r0056.h5"):
        psana.DataSource("exp=xpptut15:run=56")
    with pytest.raises(ValueError, match="expected 'exp=E:run=R"):
        psana.DataSource("run=54")
    ds = psana.DataSource("exp=xpptut15:run=54,55:smd")
    assert [r.run() for r in ds.runs()] == [1_700_000_000, 1_700_000_000]


def test_one_cursor_env_and_indexed_mode(run_dir):
    ds = psana.DataSource(files=str(run_dir / "xpptut15-r0054.h5"))
    first, second = next(ds.events()), next(ds.events())  # psana1Base.getEvt: successive events
    t1, t2 = first.get(psana.EventId).time(), second.get(psana.EventId).time()
    assert t2[1] - t1[1] == 1_000_000 and t1[0] == 1_700_000_005
    assert ds.env().experiment() == "xpptut15-r0054" and ds.env().fwkName() == "psana"
    assert sum(1 for _ in ds.events()) == sum(STEPS) - 2
    assert ds.env().epicsStore().value("delay") == 30.0  # the current (last) step's value
    run = next(psana.DataSource(f"exp=xpptut15:run=54:idx:dir={run_dir}").runs())
    times = run.times()
    assert len(times) == sum(STEPS) and times[3].seconds() == 1_700_000_005 and times[3].fiducial() == 131073 & 0x1FFFF
    evt = run.event(times[6])
    assert evt.get(psana.EventId).time() == (times[6].seconds(), times[6].nanoseconds())
    assert psana.Detector("ControlData")(evt).pvControls()[0].value() == 20.0
    assert run.event(psana.EventTime(5, 0)) is None


def test_detector_matching_rules(tmp_path):
    decl = declare_run(steps=(2,), shape=(1, 2, 2))
    decl["detectors"]["jungfrau4M"] = decl["detectors"]["epixM"]
    path = write_layout(tmp_path / "r.h5", decl)
    with h5py.File(path, "a") as f:
        f["epixM"].attrs["alias"] = "MyEpix"
    ds = psana.DataSource(path)
    env = ds.env()
    assert psana.Detector("MyEpix", env).group == "epixM"  # alias attribute
    assert psana.Detector("EPIXM", env).group == "epixM"  # group name, case-insensitive
    assert psana.Detector("MfxEndstation.0:Jungfrau.0", env).group == "jungfrau4M"  # detector family
    assert psana.Detector("DetInfo(MfxEndstation.0:Wave8.0)", env).group == "wave8"  # device type
    assert psana.Detector("BldInfo(MfxDg1BmMon)", env, accept_missing=True) is None
    with pytest.raises(UnknownDetectorError, match=r"no detector group matches 'Lab.0:Andor.0'.*groups: \['epixM'"):
        psana.Detector("Lab.0:Andor.0", env)
    del ds, env
    gc.collect()  # the psana1 objects reference each other: the file closes when they are collected
    with h5py.File(path, "a") as f:
        f["jungfrau4M"].attrs["alias"] = "myepix"
    with pytest.raises(UnknownDetectorError, match=r"matches several detector groups by alias attribute"):
        psana.Detector("MyEpix", psana.DataSource(path).env())


def test_evr_absent_without_timing_and_detector_needs_a_datasource(tmp_path, monkeypatch):
    path = write_layout(tmp_path / "r.h5", declare_run(steps=(3,), shape=(1, 2, 2)))
    ds = psana.DataSource(path)
    evt = next(ds.events())
    assert evt.get(psana.EvrData.DataV4, "evr0") is None and evt.get(object) is None
    assert evt.get(psana.EventId).fiducials() == 0 and next(ds.events()).get(psana.EventId).fiducials() == 1
    assert psana.Detector("ControlData")().pvControls()[0].name() == "delay"
    monkeypatch.setitem(psana.datasource._current, "ds", None)
    with pytest.raises(RuntimeError, match="create a DataSource before a Detector"):
        psana.Detector("epixM")


def test_area_methods_equal_the_package_and_break_after(run_dir):
    path = str(run_dir / "xpptut15-r0054.h5")
    ds = psana.MPIDataSource(files=path)
    det = psana.Detector("epix10k", ds.env())
    ref = next(__import__("calibsuite_h5source").DataSource(files=path).runs()).Detector("epix10k")
    ds.break_after(3)
    seen = []
    for evt in ds.events():
        seen.append(ds.event_number())
        pevt = evt._evt
        np.testing.assert_array_equal(det.raw(evt), ref.raw.raw(pevt))
        np.testing.assert_array_equal(det.calib(evt), ref.raw.calib(pevt))
        np.testing.assert_array_equal(det.image(evt), ref.raw.image(pevt))
    assert seen == [0, 1, 2]
    np.testing.assert_array_equal(det.pedestals(), ref.calibconst["pedestals"][0])
    assert det.gain() is None and det.shape() == SHAPE and det.size() == int(np.prod(SHAPE))
    assert det.raw(None) is None and psana.Detector("MfxDg1BmMon").get(None) is None
    assert psana.Detector("delay")() == 10.0  # a scan variable by name (EPICS-like), current step


def test_bld_get_is_none_where_the_monitor_has_no_data(tmp_path):
    """psana1's ``Detector('wave8').get(evt)`` is None at an event without the monitor's data (its
    ``present`` mask False), not an object whose getters answer None."""
    decl = declare_run(steps=(3, 2), shape=(1, 2, 2))
    decl["present"] = {"wave8": [np.array([True, False, True]), None]}
    write_layout(tmp_path / "r.h5", decl)
    ds = psana.DataSource(files=str(tmp_path / "r.h5"))
    w8 = psana.Detector("wave8", ds.env())
    got = [w8.get(evt) for evt in ds.events()]
    assert [g is None for g in got] == [False, True, False, False, False]
    np.testing.assert_array_equal(got[2].peakAmplitude(), decl["side"]["wave8"]["peakAmplitude"][0][2])


def test_evr_and_fiducials_follow_the_timing_present_mask(tmp_path):
    """Where ``/timing/present/<k>`` is False, psana1's EVR is absent (``evt.get`` and ``eventCodes`` None) and the
    fiducials are psana2's ``pulseId`` there (0), even though the stored rows hold non-zero codes and pulse ids."""
    steps = (3, 2)
    decl = declare_run(steps=steps, shape=(1, 2, 2))
    codes = [np.zeros((n, 288), np.uint8) for n in steps]
    for c in codes:
        c[:, 40] = 1
    decl["side"]["timing"] = {"eventcodes": codes,
                              "pulseId": [np.arange(n, dtype=np.uint64) + 1000 * (k + 1) for k, n in enumerate(steps)]}
    decl["present"] = {"timing": [np.array([True, False, True]), None]}
    path = write_layout(tmp_path / "r.h5", decl)
    run = next(__import__("calibsuite_h5source").DataSource(files=str(path)).runs())
    timing = run.Detector("timing").raw
    psana2 = [(timing.eventcodes(e) is None, timing.pulseId(e)) for e in run.events()]
    assert psana2 == [(False, 1000), (True, 0), (False, 1002), (False, 2000), (False, 2001)]

    ds = psana.DataSource(str(path))
    evr = psana.Detector("evr0", ds.env())
    got = []
    for evt in ds.events():
        data = evt.get(psana.EvrData.DataV4, "evr0")
        got.append((None if data is None else [f.eventCode() for f in data.fifoEvents()], evr.eventCodes(evt),
                    evt.get(psana.EventId).fiducials()))
    assert got == [([40], [40], 1000), (None, None, 0), ([40], [40], 1002), ([40], [40], 2000), ([40], [40], 2001)]
    assert [t.fiducial() for t in next(psana.DataSource(str(path)).runs()).times()] == [1000, 0, 1002, 2000, 2001]


# -- small_data: None and bad values (the block checks are psana2's, calibsuite_h5source.psana2.smalldata_blocks) --

def test_small_data_none_rows_and_bad_values(run_dir, tmp_path):
    ds = psana.DataSource(files=str(run_dir / "xpptut15-r0054.h5"))
    smd = ds.small_data(str(tmp_path / "smd.h5"), gather_interval=100)
    times = []
    for n, evt in enumerate(ds.events()):
        if n == 4:
            break
        sec, nsec = evt.get(psana.EventId).time()
        times.append(sec << 32 | nsec)
        smd.event(img=None, x=None if n % 2 else n, mean=float(n))
    smd.save()
    with h5py.File(tmp_path / "smd.h5") as f:
        assert f["event_time"][()].tolist() == times and f["mean"][()].tolist() == [0.0, 1.0, 2.0, 3.0]
        assert f["x"][()].tolist() == [0, -99999, 2, -99999] and "img" not in f
    for rows, message in [([{"x": 1}, {"x": float("nan")}], "'x' at timestamp .*: the column holds int64; found nan"),
                          ([{"roi": np.ones(2)}, {"roi": np.ones(3)}], 'shape \\(3,\\) \\(.*"ragged_"')]:
        smd = ds.small_data(str(tmp_path / "bad.h5"))
        for row, _evt in zip(rows, ds.events(), strict=False):
            smd.event(ok=1.0, **row)
        with pytest.raises(SmallDataError, match=message):
            smd.save()
        with h5py.File(tmp_path / "bad.h5") as f:  # nothing of the refused gather is written
            assert list(f) == []
