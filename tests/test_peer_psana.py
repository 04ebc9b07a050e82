"""The peer suite: psana's own test scripts (``../shared/psana-tests``) on psana and on converted h5 runs.

Each script runs twice in the same test, as lcls2's ``byhand_mpi.py`` launches
it (serially, and under ``mpirun`` with its rank count and ``PS_SRV_NODES``/
``PS_EB_NODES``): unchanged on the xtc2 run through psana, and with its one
``DataSource(...)`` call switched to ``calibsuite_h5source.DataSource(files=<the
run converted at test time>, ...)`` (other keywords kept). Both must pass the
script's own asserts, and both must print the same per-batch results.
Scripts that cannot fit are listed in ``docs/psana-differences.rst``.
"""

from __future__ import annotations

import re

import pytest
from peer_support import (
    PEER_SCRIPTS,
    XTC2,
    convert_run,
    copy_for_psana,
    copy_switched,
    needs_mpiexec,
    needs_peer,
    offline_site,
    run_script,
)

pytestmark = [needs_peer, pytest.mark.psana, pytest.mark.slow]

#: byhand_mpi.py's environment for run_intg_det.py (``mpirun -n 4``: smd0, one event builder, two workers)
BYHAND_ENV = {"PS_SRV_NODES": "0", "PS_EB_NODES": "1"}


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """The shared multi-stream xtc2 runs, converted once per session (exp/run/dir mode, offline)."""
    out = tmp_path_factory.mktemp("peer_runs")
    return {name: convert_run(out / f"{name}.h5", "--exp", "xpptut15", "--run", "14", "--dir", str(XTC2 / name))
            for name in ("intg_det",)}


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    return offline_site(tmp_path_factory.mktemp("offline_site"))


def batch_lines(stdout: str) -> list[str]:
    """The script's per-integrated-frame report ('intg evt:... delta:...' and 'andor: ... sum_hsd ...'), sorted."""
    return sorted(line.strip() for line in stdout.splitlines() if re.match(r"\s+(intg evt:|andor:)", line))


def event_stamps(stdout: str) -> list[int]:
    """Every event timestamp the ranks printed ('RANK:r #evt:i ts:T'), sorted."""
    return sorted(int(t) for t in re.findall(r"RANK:\d+ #evt:\d+ ts:(\d+)", stdout))


@pytest.mark.parametrize("ranks", [0, pytest.param(4, marks=[pytest.mark.mpi, needs_mpiexec])])
def test_run_intg_det(converted, site, tmp_path, ranks):
    psana_run = run_script(copy_for_psana("run_intg_det.py", tmp_path / "psana", "intg_det"), n_ranks=ranks,
                           env=BYHAND_ENV, pythonpath=[site])
    h5_run = run_script(copy_switched("run_intg_det.py", tmp_path / "h5", converted["intg_det"]), n_ranks=ranks,
                        env=BYHAND_ENV)
    for proc in (psana_run, h5_run):  # the script asserted its known answers; it reached its end
        assert "Total events: 17 #intg_events:5" in proc.stdout
    assert event_stamps(h5_run.stdout) == event_stamps(psana_run.stdout)
    assert len(batch_lines(psana_run.stdout)) == 10
    assert batch_lines(h5_run.stdout) == batch_lines(psana_run.stdout)


def test_early_termination(converted, site, tmp_path):
    """lcls2's run_early_termination.py on intg_det (tests/peer_scripts): run.terminate() at the 5th event.

    Serial only: under byhand_mpi.py's ``mpirun -n 3`` psana 4.3.4 itself aborts on this run after
    ``terminate()`` (``XtcIterator.cc:54: corrupt xtc with too small extent: 0``).
    """
    psana_run = run_script(copy_for_psana("early_termination.py", tmp_path / "psana", "intg_det", PEER_SCRIPTS),
                           pythonpath=[site])
    h5_run = run_script(copy_switched("early_termination.py", tmp_path / "h5", converted["intg_det"], PEER_SCRIPTS))
    for proc in (psana_run, h5_run):
        assert "rank: 0 got 5 events" in proc.stdout


@pytest.mark.mpi
@needs_mpiexec
@pytest.mark.parametrize("ranks, servers", [(4, 0), (5, 1)])
def test_rank_roles(converted, site, tmp_path, ranks, servers):
    """tests/peer_scripts/rank_roles.py: every rank's is_bd/is_srv/unique_user_rank, and the run's totals."""
    env = {"PS_SRV_NODES": str(servers), "PS_EB_NODES": "1"}
    psana_run = run_script(copy_for_psana("rank_roles.py", tmp_path / "psana", "intg_det", PEER_SCRIPTS),
                           n_ranks=ranks, env=env, pythonpath=[site])
    h5_run = run_script(copy_switched("rank_roles.py", tmp_path / "h5", converted["intg_det"], PEER_SCRIPTS),
                        n_ranks=ranks, env=env)
    reports = {name: [line for line in proc.stdout.splitlines() if line.startswith(("ROLE", "TOTAL"))]
               for name, proc in (("psana", psana_run), ("h5", h5_run))}
    assert len(reports["psana"]) == ranks + 1 and reports["psana"][-1] == "TOTAL events=17 batches=5"
    assert f"ROLE rank={ranks - servers - 1} bd=True srv=False unique=True" in reports["psana"]
    assert reports["h5"] == reports["psana"]
