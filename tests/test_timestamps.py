"""psana timestamps (format/timestamps.py): a run start that no timestamp can hold is a clear error."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, H5SourceError, RunWriter
from calibsuite_h5source.errors import HeaderError
from calibsuite_h5source.format import timestamps as ts


def _run(path, run, stored):
    with RunWriter(path, "dark", run=run) as w:
        w.add_step({"epixM": np.zeros((2, 2, 3, 4), np.uint16)}, timestamps=[5, 6] if stored else None)


def _edited_run(path, run):
    """A run without timestamps whose header run another program set too large (the writer refuses it)."""
    _run(path, 1_700_000_000, stored=False)
    with h5py.File(path, "r+") as f:
        f["ancillaryData"].attrs["run"] = np.int64(run)


@pytest.mark.parametrize("run", [2**62, 2**63 - 1, ts.LAST_RUN_START + 1])
def test_a_run_start_past_what_timestamps_hold_is_a_header_error_naming_run(tmp_path, run):
    path = tmp_path / "r.h5"
    _edited_run(path, run)
    with pytest.raises(HeaderError, match=r"/ancillaryData: attribute run = \d+ .*store them, or fix run") as err:
        next(DataSource(files=str(path)).runs())
    assert err.value.file == str(path) and isinstance(err.value, H5SourceError)


def test_the_last_start_that_fits_gives_valid_timestamps(tmp_path):
    path = tmp_path / "r.h5"
    _run(path, ts.LAST_RUN_START, stored=False)
    run = next(DataSource(files=str(path)).runs())
    for evt in run.events():
        assert evt.timestamp < 2**64 and evt.datetime().year == 2126


def test_stored_timestamps_make_a_huge_run_start_harmless(tmp_path):
    path = tmp_path / "r.h5"
    _run(path, 2**62, stored=True)
    run = next(DataSource(files=str(path)).runs())
    assert [e.timestamp for e in run.events()] == [5, 6]
    with h5py.File(path, "r") as f:
        assert f["ancillaryData"].attrs["run"] == 2**62


def test_synthetic_steps_refuse_too(tmp_path):
    with pytest.raises(HeaderError, match="attribute run"):
        ts.synthetic_steps(2**40, [3])
    assert [int(t) for t in ts.synthetic_steps(ts.LCLS_EPOCH_OFFSET, [2])[0]] == [0, 1_000_000]


@pytest.mark.parametrize("n_steps", [3, 70], ids=["eager", "counted-per-step"])
def test_synthesised_timestamps_are_the_same_however_the_run_is_opened(tmp_path, n_steps):
    """A run without timestamps: the eager index and the long run counted per step (more than
    EAGER_STEPS steps, no writer's index) make them by the one formula, synthesise()'s."""
    from calibsuite_h5source.read.layout import EAGER_STEPS
    from calibsuite_h5source.testing.layouts import declare_run, write_layout

    counts = [1 + k % 3 for k in range(n_steps)]
    path = write_layout(tmp_path / "r.h5", declare_run(steps=counts, shape=(1, 2, 2), side=False, scan=None,
                                                       timestamps=False, script_type="dark"))
    run = next(DataSource(files=path).runs())
    got = [evt.timestamp for step in run.steps() for evt in step.events()]
    assert (n_steps > EAGER_STEPS) == (n_steps == 70)
    assert got == [int(t) for step in ts.synthesise(1_700_000_000, counts) for t in step]
