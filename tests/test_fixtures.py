"""The committed fixtures: every valid layout reads alike, every broken file is refused."""

from pathlib import Path

import numpy as np
import pytest

from calibsuite_h5source import (
    DataSource,
    FormatError,
    InconsistentRunError,
    MissingScriptTypeError,
    NotHDF5Error,
)
from calibsuite_h5source.tools.validate import validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def observe(name):
    run = next(DataSource(files=str(FIXTURES / name)).runs())
    det, wave8, delay = run.Detector("epixm"), run.Detector("wave8"), run.Detector("delay")
    return [(delay(step), [(e.timestamp, det.raw.raw(e).tobytes(), wave8.raw.peakAmplitude(e).tobytes())
                           for e in step.events()]) for step in run.steps()]


@pytest.mark.parametrize("name", ["padded.h5", "stepgroups.h5", "canonical_per_event_scan.h5"])
def test_layouts_read_like_canonical(name):
    assert observe(name) == observe("canonical.h5")
    assert validate(FIXTURES / name) == []


def test_legacy_suite_file():
    run = next(DataSource(files=str(FIXTURES / "legacy_suite.h5")).runs())
    det = run.Detector("epixM")
    frames = [det.raw.raw(e) for e in run.events()]
    assert len(frames) == 6 and frames[0].dtype == np.float64 and frames[0].shape == (2, 6, 8)
    assert validate(FIXTURES / "legacy_suite.h5") == []


def test_incomplete_run_reads_its_finished_steps():
    run = next(DataSource(files=str(FIXTURES / "incomplete.h5")).runs())
    assert run.complete is False
    assert [len(list(s.events())) for s in run.steps()] == [3, 2]
    assert [p.code for p in validate(FIXTURES / "incomplete.h5")] == ["incomplete"]


@pytest.mark.parametrize(
    "name, error, code",
    [
        ("broken_no_scripttype.h5", MissingScriptTypeError, "header"),
        ("broken_event_counts.h5", InconsistentRunError, "same-events"),
        ("broken_timestamp_length.h5", InconsistentRunError, "timestamp-length"),
        ("broken_not_module_row_col.h5", FormatError, "frame-shape"),
        ("broken_truncated.h5", NotHDF5Error, "unreadable"),
        ("broken_not_hdf5.h5", NotHDF5Error, "unreadable"),
    ],
)
def test_broken_files_are_refused_and_reported(name, error, code):
    with pytest.raises(error, match=name):
        next(DataSource(files=str(FIXTURES / name)).runs())
    assert code in [p.code for p in validate(FIXTURES / name)]


def test_readable_but_wrong_files_are_reported():
    assert [p.code for p in validate(FIXTURES / "broken_timestamp_order.h5")] == ["timestamp-order"]
    assert [(p.code, p.severity) for p in validate(FIXTURES / "broken_scan_changes_in_step.h5")] == [("scan-constant", "warning")]


@pytest.mark.slow
def test_fixtures_are_small_and_reproducible(tmp_path):
    import sys

    sys.path.insert(0, str(FIXTURES))
    from make_fixtures import make

    made = make(tmp_path)
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*.h5")) < 1_000_000
    assert sorted(p.relative_to(tmp_path) for p in made) == sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*.h5"))
    for p in made:  # same content (bytes may differ between HDF5 library versions)
        committed = FIXTURES / p.relative_to(tmp_path)
        if p.name.startswith("upstream_"):  # reading them is the upstream fault: same size is all we ask
            assert p.stat().st_size == pytest.approx(committed.stat().st_size, rel=0.2)
            continue
        if p.name in ("broken_truncated.h5", "broken_not_hdf5.h5"):
            assert p.stat().st_size == pytest.approx(committed.stat().st_size, rel=0.2)
            continue
        assert content(p) == content(committed), p.name


def content(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset) and obj.shape is not None and obj.size > 1_000_000:
                out[name] = (obj.shape, str(obj.dtype), attrs)  # a declared, unwritten extent
            elif isinstance(obj, h5py.Dataset):
                out[name] = (obj.shape if obj.shape is None else _comparable(np.asarray(obj[()])), str(obj.dtype), attrs)
            else:
                out[name] = (None, type(obj).__name__, attrs)
        f.visititems(visit)
        out["/"] = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
    return out


def _comparable(a: np.ndarray):
    """Values that compare equal when the data is the same (NaN included)."""
    return a.tolist() if a.dtype.kind == "O" else (a.shape, a.tobytes())
