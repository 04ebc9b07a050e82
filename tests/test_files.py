"""Opening a run file (h5/files.py): every surface opens through open_h5, whoever else holds the file.

HDF5 refuses a second open of a file in one process unless both opens use the same lock flag, and a
locked open of a file another process writes. Both used to surface as "truncated or corrupted"
(reading after a live look in the same process) or as a damaged-file error (dask tasks on a run
being written).
"""

import subprocess
import sys

import numpy as np
import pytest

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.errors import NotHDF5Error
from calibsuite_h5source.h5.files import is_unlocked, open_h5, open_read_only
from calibsuite_h5source.read.follow import Follower

HOLDER = """
import sys, numpy as np
from calibsuite_h5source import RunWriter
w = RunWriter(sys.argv[1], "dark")
w.add_step({"epixM": np.arange(2 * 2 * 3 * 4, dtype=np.uint16).reshape(2, 2, 3, 4)})
w.flush()
print("ready", flush=True)
sys.stdin.readline()
w.close()
"""


def _run(path):
    with RunWriter(path, "dark") as w:
        w.add_step({"epixM": np.arange(2 * 2 * 3 * 4, dtype=np.uint16).reshape(2, 2, 3, 4)})
    return path


@pytest.fixture
def held(tmp_path):
    """A run file another process writes: one confirmed step, the writer waiting (holding the lock)."""
    path = tmp_path / "held.h5"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        yield path
    finally:
        proc.communicate("\n", timeout=60)


def test_a_file_another_process_writes_is_opened_without_its_lock(held):
    with open_h5(held) as f:
        assert is_unlocked(f) and f["epixM/0"].shape == (2, 2, 3, 4)


def test_dask_tasks_read_a_run_another_process_writes(held):
    run = next(DataSource(files=str(held)).runs())
    lazy = run.Detector("epixM").raw.dask_array()
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"),
                                  np.arange(2 * 2 * 3 * 4, dtype=np.uint16).reshape(2, 2, 3, 4))


@pytest.mark.parametrize("first_locked", [False, True], ids=["follower-first", "reader-first"])
def test_a_file_already_open_in_this_process_is_shared_whatever_its_lock_flag(tmp_path, first_locked):
    """A live look (no lock) then a plain DataSource, or the other way round, in one process."""
    path = _run(tmp_path / "r.h5")
    first = open_h5(path) if first_locked else Follower(str(path))
    try:
        if not first_locked:
            first.reopen()
        run = next(DataSource(files=str(path)).runs())
        assert [evt.timestamp is not None for evt in run.events()] == [True, True]
        again = Follower(str(path))
        assert again.reopen().complete
        again.close()
        lazy = run.Detector("epixM").raw.dask_array()
        assert lazy.compute(scheduler="sync").shape == (2, 2, 3, 4)
    finally:
        first.close()


def test_open_read_only_raises_other_failures_as_they_come(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_read_only(tmp_path / "none.h5", True)


@pytest.mark.parametrize("content, rule", [(None, "does not exist"), (b"", "no HDF5 signature"),
                                           (b"\x89HDF\r\n\x1a\n" + bytes(40), "truncated or corrupted")])
def test_open_h5_names_the_file_and_the_rule(tmp_path, content, rule):
    path = tmp_path / "bad.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NotHDF5Error, match=rule) as err:
        open_h5(path)
    assert err.value.file == str(path)
