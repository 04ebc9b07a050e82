"""DataSource picks the h5 source or the real psana from its arguments."""

import sys

import psana_standin
import pytest

from calibsuite_h5source import (
    DataSource,
    H5DataSource,
    H5SourceError,
    MissingDependencyError,
    NotHDF5Error,
)
from calibsuite_h5source.testing.layouts import declare_run, write_layout


@pytest.fixture
def fake_psana(mocker):
    """A stand-in psana module recording how DataSource was called."""
    return psana_standin.install(mocker, mocker.Mock(name="psana.DataSource", return_value="psana-ds"))


@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".hdf"])
def test_h5_suffixes_give_the_h5_source(tmp_path, suffix, fake_psana):
    path = write_layout(tmp_path / f"run{suffix}", declare_run(steps=(1,)))
    assert isinstance(DataSource(files=path), H5DataSource)
    assert isinstance(DataSource(path), H5DataSource)
    assert isinstance(DataSource(files=[path, path], max_events=1), H5DataSource)
    fake_psana.DataSource.assert_not_called()


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((), {"files": "/data/run.xtc2", "skip_calib_load": "all"}),
        ((), {"files": ["a.xtc2", "b.xtc"]}),
        ((), {"exp": "rixx1005922", "run": 6, "max_events": 1000, "detectors": ["epixM"]}),
        ((), {"shmem": "rix.0"}),
        (("exp=xpptut15:run=54:smd",), {}),
    ],
)
def test_psana_arguments_go_to_the_real_psana_unchanged(fake_psana, args, kwargs):
    assert DataSource(*args, **kwargs) == "psana-ds"
    fake_psana.DataSource.assert_called_once_with(*args, **kwargs)


def test_missing_psana_says_how_to_install(mocker):
    mocker.patch.dict(sys.modules, {"psana": None})  # import psana -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'calibsuite_h5source\[psana\]'"):
        DataSource(files="run.xtc2")


def test_mixed_unknown_and_missing_files(tmp_path, fake_psana):
    with pytest.raises(H5SourceError, match=r"all files must be of one kind.*\['.h5', '.xtc2'\]"):
        DataSource(files=["a.h5", "b.xtc2"])
    with pytest.raises(H5SourceError, match=r"unknown file type.*\['.txt'\]"):
        DataSource(files="notes.txt")
    with pytest.raises(NotHDF5Error, match=r"missing\.h5: file does not exist"):
        DataSource(files=str(tmp_path / "missing.h5"))
    with pytest.raises(H5SourceError, match="nothing to open"):
        DataSource()
    fake_psana.DataSource.assert_not_called()


def test_importing_the_package_does_not_import_optional_dependencies():
    import subprocess

    code = ("import sys, calibsuite_h5source as c; c.DataSource; c.H5DataSource; "
            "bad = [m for m in ('psana', 'mpi4py', 'matplotlib', 'tqdm') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_xtc2_files_open_in_psana_files_mode_whatever_experiment_keywords_come(fake_psana):
    """The suite's switched get_ds passes files= with its exp=, run=, intg_det=...: psana gets files mode."""
    kwargs = dict(files="/data/run.xtc2", exp="detdaq21", run=1, dir="/x", shmem="tmo.0", intg_det="Epix10ka",
                  max_events=0, detectors=["Epix10ka"], skip_calib_load="all")
    assert DataSource(**kwargs) == "psana-ds"
    fake_psana.DataSource.assert_called_once_with(files="/data/run.xtc2", intg_det="Epix10ka", max_events=0,
                                                  detectors=["Epix10ka"], skip_calib_load="all")
    fake_psana.DataSource.reset_mock()
    DataSource(exp="detdaq21", run=1, dir="/x")  # no files: experiment mode, unchanged
    fake_psana.DataSource.assert_called_once_with(exp="detdaq21", run=1, dir="/x")


@pytest.mark.psana
def test_real_psana_opens_an_xtc2_file_given_with_experiment_keywords():
    from pathlib import Path

    from peer_support import XTC2

    pytest.importorskip("psana")
    xtc2 = Path(XTC2) / "test_epix_calib.xtc2"
    if not xtc2.exists():
        pytest.skip(f"no xtc2 sample data in {XTC2}")
    # psana alone: exp+run ask for /reg/d/psdm/det/detdaq21/xtc and fail (AssertionError: no smalldata files)
    ds = DataSource(files=str(xtc2), exp="detdaq21", run=1, intg_det="epixquad", max_events=0,
                    detectors=["epixquad"], skip_calib_load="all")
    run = next(ds.runs())
    assert (run.expt, run.runnum) == ("ueddaq02", 109)  # the file's own run, not the keywords'
    assert sum(1 for _ in run.events()) == 2
