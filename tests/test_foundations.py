"""Timestamps, scriptType registry, detector facts and the error family."""

import datetime as dt
from importlib import metadata

import numpy as np
import pytest

from calibsuite_h5source import errors
from calibsuite_h5source.format import script_types, timestamps
from calibsuite_h5source.format.detector_types import detector_type

# -- timestamps ---------------------------------------------------------------

def test_psana_timestamp_round_trip_and_lcls_epoch():
    ts = timestamps.from_unix(1_700_000_000, 123_456_789)
    assert ts >> 32 == 1_700_000_000 - 631_152_000
    assert ts & 0xFFFFFFFF == 123_456_789
    assert timestamps.to_unix(ts) == pytest.approx(1_700_000_000.123456789)
    assert timestamps.to_datetime(ts) == dt.datetime(2023, 11, 14, 22, 13, 20, 123457)  # rounded, as psana
    assert timestamps.to_datetime(ts).tzinfo is None  # naive UTC, as evt.datetime()


def test_from_unix_carries_fraction_into_nanoseconds_and_rejects_pre_1990():
    assert timestamps.from_unix(631_152_000.5) == 500_000_000
    with pytest.raises(ValueError, match="before the LCLS epoch"):
        timestamps.from_unix(0)


def test_synthesised_timestamps_are_strictly_increasing_across_steps():
    steps = timestamps.synthesise(1_700_000_000, [3, 0, 1500])
    assert [len(s) for s in steps] == [3, 0, 1500]
    flat = np.concatenate(steps).astype(np.int64)
    assert steps[0].dtype == np.uint64
    assert np.all(np.diff(flat) > 0)
    # event k is k milliseconds after the run start, seconds rolling over at 1000 events
    assert int(steps[0][0]) == timestamps.from_unix(1_700_000_000)
    assert int(steps[2][997]) == timestamps.from_unix(1_700_000_001)
    assert int(steps[2][0]) == timestamps.from_unix(1_700_000_000, 3_000_000)


# -- scriptType ---------------------------------------------------------------

def test_script_types_known_case_insensitive_and_extensible(monkeypatch):
    assert script_types.canonical_script_type("DelayScan") == "delayScan"
    assert not script_types.is_known_script_type("pulserScan")
    monkeypatch.setattr(script_types, "_extra", {})
    script_types.register_script_type("pulserScan", "internal pulser")
    assert script_types.is_known_script_type("pulserScan")
    with pytest.raises(ValueError):
        script_types.register_script_type("")


def test_script_types_from_entry_point_group(monkeypatch, mocker):
    ep = mocker.Mock()
    ep.name = "mylab"
    ep.load.return_value = lambda: ["laserScan", "pumpProbe"]
    broken = mocker.Mock()
    broken.name = "broken"
    broken.load.side_effect = ImportError("no module")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [ep, broken])
    monkeypatch.setattr(script_types, "_extra", {})
    monkeypatch.setattr(script_types, "_entry_points_loaded", False)
    known = script_types.known_script_types()
    assert "laserScan" in known and "pumpProbe" in known and "dark" in known


# -- detector facts -----------------------------------------------------------

@pytest.mark.parametrize(
    "name, seed_name, mask",
    [
        ("epixM", "epixM", 0x7FFF),
        ("epixm", "epixM", 0x7FFF),
        ("epixquad", "epix10k", 0x3FFF),
        ("epixquad_0", "epix10k", 0x3FFF),
        ("jungfrau1M", "jungfrau", 0x3FFF),
        ("epixUHR", "epixUHR", 0x7FF),
        ("rixsCCD", "archon", 0xFFFF),
    ],
)
def test_detector_type_lookup(name, seed_name, mask):
    t = detector_type(name)
    assert t.name == seed_name
    assert t.gain_bits_mask == mask


def test_detector_type_unknown_names():
    assert detector_type("wave8") is None
    assert detector_type("epixmx") is None
    assert detector_type(None) is None
    assert detector_type("epixM").frame_shape == (4, 192, 384)


# -- errors -------------------------------------------------------------------

def test_error_message_names_file_path_and_rule():
    exc = errors.FormatError(
        "per-event data must be [module, row, col]; found shape (10, 192, 384)",
        file="run.h5",
        h5path="/epixM/2",
    )
    assert str(exc) == "run.h5: /epixM/2: per-event data must be [module, row, col]; found shape (10, 192, 384)"
    assert isinstance(exc, ValueError) and isinstance(exc, errors.H5SourceError)
    assert (exc.file, exc.h5path) == ("run.h5", "/epixM/2")


def test_unknown_detector_error_is_a_readable_keyerror():
    exc = errors.UnknownDetectorError("no detector 'foo'; available: epixM", file="r.h5")
    assert isinstance(exc, KeyError)
    assert str(exc) == "r.h5: no detector 'foo'; available: epixM"
