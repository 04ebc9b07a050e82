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


def test_calc_noise_and_mean_reads_xtc2_and_its_h5_alike(suite, tmp_path):
    xtc2 = aliased(tmp_path / "epix10ka.xtc2")
    h5 = convert_run(tmp_path / "epix10ka.h5", "--files", str(xtc2))
    cfg = write_config(tmp_path / "cfg.py", {
        "detectorType": "Epix10ka", "exp": "detdaq21", "location": "DetLab", "ignoreEventCodeCheck": True,
        "analyzedModules": [0, 1, 2, 3], "singlePixels": [[0, 10, 10], [1, 100, 100], [2, 150, 150], [3, 80, 20]],
        "regionSlice": "np.s_[0:4, 0:352, 0:384]"})
    site = offline_site(tmp_path / "site")
    script = suite / "suite_scripts" / "CalcNoiseAndMean.py"
    outputs = {}
    for name, run in (("psana", xtc2), ("h5", h5)):
        out = tmp_path / name
        (out / "dark").mkdir(parents=True)
        proc = run_script(script, "-cf", str(cfg), "-r", "1", "-p", "/dark/", "-d", "Epix10kaQuad", "-F", str(run),
                          env={"foo": "psana2", "OUTPUT_ROOT": str(out), "MPLBACKEND": "Agg"},
                          pythonpath=[site, suite])
        assert "Starting with" in proc.stdout  # it reached the event loop
        outputs[name] = {p.name: np.load(p) for p in sorted((out / "dark").glob("*.npy"))}
    assert sorted(outputs["psana"]) == ["CalcNoiseAndMean__rms_r1_step0.npy", "CalcNoiseAndMean_mean__r1_step0.npy"]
    assert sorted(outputs["h5"]) == sorted(outputs["psana"])
    for key, ps in outputs["psana"].items():
        assert ps.shape == (4, 352, 384) and np.isfinite(ps).all() and ps.any(), key
        np.testing.assert_array_equal(outputs["h5"][key], ps, err_msg=key)
