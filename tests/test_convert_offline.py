"""``convert`` of ``exp=``/``run=``/``dir=`` runs on a machine without a network (write/convert.py's _OfflineLookup).

psana's experiment mode asks the logbook for the run's live-mode file list
and catches an HTTP error but not a connection error; convert makes that one
lookup fail as an HTTP error, so psana finds the run's stream files on disk.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
from peer_support import REPO, XTC2

from calibsuite_h5source import DataSource, H5SourceError

pytestmark = pytest.mark.psana
psana = pytest.importorskip("psana", reason="the real psana is not installed (pip install '.[psana]')")
if not (XTC2 / "intg_det").is_dir() or not (XTC2 / "fakesteps").is_dir():
    pytest.skip(f"no xtc2 sample data in {XTC2}", allow_module_level=True)

LOGBOOK = "pswww.slac.stanford.edu"


def offline_prefix() -> list[str]:
    """A command prefix that runs a child without a network, or skip when none can be had."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]  # a new network namespace: loopback only
    try:
        socket.getaddrinfo(LOGBOOK, 443)
    except OSError:
        return []  # this machine cannot reach the logbook anyway
    pytest.skip(f"cannot take the network away (no unprivileged `unshare -n`) and {LOGBOOK} resolves")


def convert_cli(out, *args, prefix=()):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*prefix, sys.executable, "-m", "calibsuite_h5source.cli", "convert", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("run, streams, events", [("intg_det", 3, 17), ("fakesteps", 2, 10)])
def test_multi_stream_run_converts_without_a_network(tmp_path, run, streams, events):
    assert len(list((XTC2 / run).glob("*-s*-c000.xtc2"))) == streams
    out = tmp_path / f"{run}.h5"
    prefix = offline_prefix()
    proc = convert_cli(out, "--exp", "xpptut15", "--run", "14", "--dir", str(XTC2 / run), prefix=prefix)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{events} events" in proc.stdout
    h5run = next(DataSource(files=str(out)).runs())
    assert sum(1 for _ in h5run.events()) == events
    # every stream's detectors made it (one stream per detector in these runs)
    assert len(h5run.detnames) >= streams, h5run.detnames


@pytest.mark.slow
def test_without_dir_the_error_names_the_unreachable_logbook(tmp_path):
    prefix = offline_prefix()
    proc = convert_cli(tmp_path / "c.h5", "--exp", "xpptut15", "--run", "14", prefix=prefix)
    assert proc.returncode == 2
    assert "No smalldata files found" in proc.stderr and "the logbook was unreachable" in proc.stderr
    assert "give dir= to read the files directly" in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # psana's own "unable to connect" line is not repeated


def test_only_the_lookup_is_changed_and_only_while_psana_opens(tmp_path, mocker):
    """Fault injection: the logbook raises ConnectionError; an HTTP error and a reachable logbook are psana's."""
    import psana.psexp.ds_base as ds_base
    import requests

    from calibsuite_h5source.write.convert import convert

    get = mocker.patch.object(requests, "get", side_effect=requests.ConnectionError("no route to host"))
    summary = convert(tmp_path / "a.h5", exp="xpptut15", run=14, dir=str(XTC2 / "intg_det"), progress=False)
    assert (summary["events"], summary["detectors"]) == (17, ["andor", "epix", "hsd"]) and get.call_count >= 1
    assert "current_files_for_live_mode" in get.call_args.args[0]
    assert ds_base.requests is requests  # restored

    # a reachable logbook naming the run's streams: psana uses its list, as before
    answer = requests.Response()
    answer.status_code = 200
    answer._content = b'{"value": ["/xpp/xpptut15/xtc/xpptut15-r0014-s000-c000.xtc2", ' \
                      b'"/xpp/xpptut15/xtc/xpptut15-r0014-s001-c000.xtc2"]}'
    get.side_effect, get.return_value = None, answer
    summary = convert(tmp_path / "b.h5", exp="xpptut15", run=14, dir=str(XTC2 / "intg_det"), progress=False)
    assert len(summary["detectors"]) == 2  # the logbook's two streams only: its answer was used
    assert ds_base.requests is requests

    # any other failure of psana is still an error naming the run
    get.side_effect = requests.ConnectionError("no route to host")
    with pytest.raises(H5SourceError, match=r"psana could not open the run .*the logbook was unreachable: "
                                            r"ConnectionError: no route to host"):
        convert(tmp_path / "c.h5", exp="xpptut15", run=14, progress=False)
    assert ds_base.requests is requests
