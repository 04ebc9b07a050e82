"""One switched suite script reads an xtc2 file (through psana) and its converted h5 run alike.

The suite's ``get_ds``, switched as ``../shared/suite/NOTICE.md`` says, calls
``calibsuite_h5source.DataSource(files=<-F run>, exp=..., run=..., intg_det=...,
max_events=..., detectors=[...])``. Given an ``.xtc2`` file the factory opens it
in psana's files mode (psana alone would read ``exp``/``run`` as a request for
an experiment folder). The same script with the same config then runs on
``test_epix_calib.xtc2`` through psana and on its conversion through the h5
source, and its outputs are equal.

The suite names a detector by its type (its ``DetectorInfo`` accepts only
``Epix10ka``, ``epix10k``, ...) and psana by the DAQ's alias, which in this
file is ``epixquad``: no config can satisfy both on the original file. The
test therefore reads a copy whose alias is written as ``Epix10ka`` (same
length, NUL-ended, in the detector's Names only); its data are the file's.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from peer_support import XTC2, convert_run, needs_peer, offline_site, run_script
from suite_support import needs_suite, write_config

pytestmark = [needs_suite, needs_peer, pytest.mark.psana, pytest.mark.slow]

EPIX = XTC2 / "test_epix_calib.xtc2"
NAME_SIZE = 256  # XtcData's MaxNameSize: a Names holds detType, then detName, in fields of this size


def aliased(dest):
    """``test_epix_calib.xtc2`` with the detector alias ``epixquad`` written ``Epix10ka``; return ``dest``.

    Only name fields equal to ``epixquad`` change: not ``epixquadhw`` (another
    detector), and not the detector type ``epixquad`` of ``epixquadhw`` (the
    field followed by the name ``epixquadhw``).
    """
    if not EPIX.exists():
        pytest.skip(f"no {EPIX}")
    data = EPIX.read_bytes()
    out = bytearray(data)
    changed = 0
    for m in re.finditer(rb"(?<=\0)epixquad\0", data):
        if data[m.start() + NAME_SIZE:m.start() + NAME_SIZE + 10] != b"epixquadhw":
            out[m.start():m.start() + 8] = b"Epix10ka"
            changed += 1
    assert changed == 8, f"{EPIX}: expected 8 name fields 'epixquad', changed {changed}"
    dest.write_bytes(bytes(out))
    return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The aliased xtc2 file, its conversion, a config naming ``Epix10ka``, and the offline site."""
    tmp = tmp_path_factory.mktemp("get_ds")
    xtc2 = aliased(tmp / "epix10ka.xtc2")
    h5 = convert_run(tmp / "epix10ka.h5", "--files", str(xtc2))
    cfg = write_config(tmp / "cfg.py", {
        "detectorType": "Epix10ka", "exp": "detdaq21", "location": "DetLab", "ignoreEventCodeCheck": True,
        "analyzedModules": [0, 1, 2, 3], "singlePixels": [[0, 10, 10], [1, 100, 100], [2, 150, 150], [3, 80, 20]],
        "regionSlice": "np.s_[0:4, 0:352, 0:384]"})
    return {"psana": xtc2, "h5": h5, "cfg": cfg, "site": offline_site(tmp / "site")}


#: script, its options, and the outputs compared. ``simplePhotonCounter``'s ``_image`` is assembled with
#: the geometry convert copied from psana; its ``_spectrum``, all zeros on this dark file, is left out.
SCRIPTS = [
    ("CalcNoiseAndMean.py", [], ["CalcNoiseAndMean__rms_r1_step0.npy", "CalcNoiseAndMean_mean__r1_step0.npy"]),
    ("roiFromThreshold.py", ["-t", "3000"], ["roiFromAboveThreshold_r1_c0_raw.npy"]),
    ("simplePhotonCounter.py", [], ["SimplePhotonCounter__r1_c0_detdaq21.npy",
                                    "SimplePhotonCounter__r1_c0_detdaq21_image.npy"]),
]


@pytest.mark.parametrize("script, options, expected", SCRIPTS, ids=[s for s, _o, _e in SCRIPTS])
def test_suite_script_reads_xtc2_and_its_h5_alike(suite, runs, tmp_path, script, options, expected):
    outputs = {}
    for name in ("psana", "h5"):
        out = tmp_path / name
        (out / "x").mkdir(parents=True)
        proc = run_script(suite / "suite_scripts" / script, "-cf", str(runs["cfg"]), "-r", "1", "-p", "/x/",
                          "-d", "Epix10kaQuad", *options, "-F", str(runs[name]),
                          env={"foo": "psana2", "OUTPUT_ROOT": str(out), "MPLBACKEND": "Agg"},
                          pythonpath=[runs["site"], suite])
        assert "psana2" in proc.stdout
        outputs[name] = {p.name: np.load(p) for p in (out / "x").glob("*.npy")}
    assert set(expected) <= set(outputs["psana"]), sorted(outputs["psana"])
    assert sorted(outputs["h5"]) == sorted(outputs["psana"])
    for key in expected:
        ps = outputs["psana"][key]
        assert np.isfinite(ps).all() and ps.any(), key  # something was measured
        assert outputs["h5"][key].dtype == ps.dtype, key
        np.testing.assert_array_equal(outputs["h5"][key], ps, err_msg=key)
