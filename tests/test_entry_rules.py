"""Rules checked where data enters, and every failure after opening wrapped (issue 10).

Each case edits one thing of a valid run written with plain h5py and checks
the exact error class and that the message names the file, the HDF5 path and
the rule.
"""

import os
import resource

import h5py
import numpy as np
import pytest
from run_support import writer_run

from calibsuite_h5source import (
    DamagedFileError,
    DataSource,
    DataTypeError,
    EventCountError,
    FormatError,
    H5SourceError,
    HeaderError,
    LinkError,
    NotHDF5Error,
    TimestampError,
)
from calibsuite_h5source.read.run_index import open_run_index
from calibsuite_h5source.testing.layouts import declare_run, write_layout


@pytest.fixture
def valid(tmp_path):
    return write_layout(tmp_path / "run.h5", declare_run(steps=(3, 2), shape=(2, 4, 4)))


def replace(f, name, data, **kw):
    del f[name]
    f.create_dataset(name, data=data, **kw)


def read_everything(path, **kw):
    run = next(DataSource(files=str(path), **kw).runs())
    det = run.Detector("epixM")
    return [(e.timestamp, det.raw.raw(e), det.raw.calib(e)) for e in run.events()]


ATTR = "ancillaryData"
CASES = [
    ("run is text", lambda f: f[ATTR].attrs.__setitem__("run", "yesterday"), HeaderError,
     r"/ancillaryData: attribute 'run' must be a non-negative integer; found str 'yesterday'"),
    ("run is negative", lambda f: f[ATTR].attrs.__setitem__("run", -5), HeaderError,
     r"/ancillaryData: attribute 'run' must be a non-negative integer \(0\.\.\d+\); found -5"),
    ("scriptType array", lambda f: f[ATTR].attrs.__setitem__("scriptType", ["dark", "fe55"]), HeaderError,
     r"/ancillaryData: attribute 'scriptType' must be a single UTF-8 string; found an array of 2"),
    ("stepsComplete text", lambda f: f[ATTR].attrs.update({"complete": False, "stepsComplete": "two"}), HeaderError,
     r"/ancillaryData: attribute 'stepsComplete' must be a non-negative integer; found str 'two'"),
    ("complete text", lambda f: f[ATTR].attrs.__setitem__("complete", "yes"), HeaderError,
     r"/ancillaryData: attribute 'complete' must be a boolean; found str 'yes'"),
    ("detType not UTF-8", lambda f: f["epixM"].attrs.__setitem__("detType", np.bytes_(b"epix\xff\xfe")), HeaderError,
     r"/epixM: attribute 'detType' must be a single UTF-8 string; found bytes"),
    ("gainBitsMask -1", lambda f: f["epixM"].attrs.__setitem__("gainBitsMask", -1), HeaderError,
     r"/epixM: attribute 'gainBitsMask' must be a non-negative integer that fits the frames' dtype uint16 \(0\.\.65535\); found -1"),
    ("gainBitsMask huge", lambda f: f["epixM"].attrs.__setitem__("gainBitsMask", 2**40), HeaderError,
     r"/epixM: attribute 'gainBitsMask' .*found 1099511627776"),
    ("pedestals of the wrong shape", lambda f: f.create_dataset("epixM/calib/pedestals", data=np.zeros((3, 3))), FormatError,
     r"/epixM/calib/pedestals: pedestals must be \[module, row, col\] = \[2, 4, 4\] or \[gain, module, row, col\]; found shape \(3, 3\)"),
    ("string frames", lambda f: replace(f, "epixM/1", np.array([[[[b"ab"] * 4] * 4] * 2] * 2)), DataTypeError,
     r"/epixM/1: frames must be numeric .*found string dtype \|S2"),
    ("compound frames", lambda f: replace(f, "epixM/1", np.zeros((2, 2, 4, 4), "u2,u2")), DataTypeError,
     r"/epixM/1: frames must be numeric .*found compound dtype"),
    ("null-dataspace step", lambda f: replace(f, "epixM/1", h5py.Empty("u2")), DataTypeError,
     r"/epixM/1: per-event data must be an array with an event axis; found a null dataspace"),
    ("compound timestamps", lambda f: replace(f, "timestamp/0", np.zeros(3, "u4,u4")), TimestampError,
     r"/timestamp/0: timestamps must be unsigned 64-bit integers \(psana's format\); found compound"),
    ("negative int64 timestamps", lambda f: replace(f, "timestamp/1", np.array([-3, 5], np.int64)), TimestampError,
     r"/timestamp/1: timestamps must be unsigned; event 0 has -3 \(1 negative\)"),
    ("NaN timestamps", lambda f: replace(f, "timestamp/1", np.array([np.nan, 5.0])), TimestampError,
     r"/timestamp/1: timestamps must be unsigned 64-bit integers .*found float64"),
    ("32-bit timestamps", lambda f: replace(f, "timestamp/1", np.array([4, 5], np.uint32)), TimestampError,
     r"/timestamp/1: timestamps must be unsigned 64-bit integers .*found uint32"),
]


@pytest.mark.parametrize("what, edit, error, message", CASES, ids=[c[0] for c in CASES])
def test_entry_rule(valid, what, edit, error, message):
    with h5py.File(valid, "a") as f:
        edit(f)
    with pytest.raises(error, match=r"run\.h5: " + message) as info:
        read_everything(valid)
    assert type(info.value) is error
    assert info.value.file == valid and info.value.h5path


def test_valid_header_values_still_read(valid):
    with h5py.File(valid, "a") as f:
        f[ATTR].attrs.update({"complete": np.True_, "runnum": np.uint32(7), "timestamp": np.uint64(2**63 + 5)})
        f["epixM"].attrs.update({"gainBitsMask": np.int64(0x3FFF), "detType": np.bytes_(b"epixm")})
        f.create_dataset("epixM/calib/pedestals", data=np.zeros((3, 2, 4, 4), np.float32))
    run = next(DataSource(files=valid).runs())
    assert run.runnum == 7 and run.timestamp == 2**63 + 5
    assert run.Detector("epixM").raw.gain_bits_mask == 0x3FFF


@pytest.mark.parametrize("counts, found", [([np.nan, 2, 4], "nan"), ([3, -2, 4], "-2"), ([3, 2.5, 4], "2.5")])
def test_writer_index_event_counts(tmp_path, counts, found):
    path = writer_run(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        replace(f, "ancillaryData/nEvents", np.array(counts))
    with pytest.raises(EventCountError, match=r"r\.h5: /ancillaryData/nEvents: event counts must be non-negative "
                                              rf"integers; step \d has {found}"):
        read_everything(path)


def test_padded_event_counts(tmp_path):
    path = write_layout(tmp_path / "p.h5", declare_run(steps=(3, 2)), "padded")
    with h5py.File(path, "a") as f:
        replace(f, "nEvents", np.array([np.nan, 2.0]))
    with pytest.raises(EventCountError, match=r"p\.h5: /nEvents: event counts must be non-negative integers; step 0 has nan"):
        read_everything(path)


def test_declared_but_unwritten_steps_allocate_nothing(tmp_path):
    """A step declared as 10^12 events (chunked, nothing written) reads max_events without allocating TiB."""
    for stored in (False, True):
        path = tmp_path / f"huge{stored}.h5"
        with h5py.File(path, "w") as f:
            f.create_group("ancillaryData").attrs.update({"scriptType": "dark", "run": 1_700_000_000})
            f.create_dataset("epixM/0", shape=(10**12, 1, 2, 2), dtype="u2", chunks=(1, 1, 2, 2))
            if stored:
                f.create_dataset("timestamp/0", shape=(10**12,), dtype="u8", chunks=(1024,))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        events = read_everything(path, max_events=3)
        assert len(events) == 3 and all(raw.sum() == 0 for _, raw, _ in events)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
    step = next(next(DataSource(files=str(tmp_path / "hugeFalse.h5")).runs()).steps())
    assert step.n_events == 10**12 and step.event(10**12 - 1).timestamp > step.event(0).timestamp


# -- every failure after opening is wrapped ------------------------------------------------

def chunk_offset(path, name, index):
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(index)
        return info.byte_offset, info.size


def test_damaged_chunk_read_mid_iteration(tmp_path):
    decl = declare_run(steps=(3, 2), shape=(2, 4, 4))
    path = write_layout(tmp_path / "run.h5", decl)
    with h5py.File(path, "a") as f:  # compressed, one chunk per event
        replace(f, "epixM/1", decl["detectors"]["epixM"][1], chunks=(1, 2, 4, 4), compression="gzip")
    offset, size = chunk_offset(path, "epixM/1", 1)
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    with open(path, "r+b") as fh:  # damage the chunk of step 1, event 1 after the run is open
        fh.seek(offset)
        fh.write(b"\xff" * size)
    with pytest.raises(DamagedFileError, match=r"run\.h5: /epixM/1: the data must be readable: the file is damaged "
                                               r"or truncated; reading .* event 1 failed with OSError") as info:
        for evt in run.events():
            det.raw.raw(evt)
    assert isinstance(info.value.__cause__, OSError)


def test_lazy_step_that_is_a_dangling_link(tmp_path):
    path = writer_run(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        del f["epixM/2"]
        f["epixM/2"] = h5py.SoftLink("/nowhere")
    with pytest.raises(LinkError, match=r"r\.h5: /epixM/2: soft link to '/nowhere' does not resolve"):
        read_everything(path)


def test_lazy_step_that_is_a_named_datatype(tmp_path):
    path = writer_run(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        del f["epixM/1"]
        f["epixM/1"] = np.dtype("u2")
    run = next(DataSource(files=path).runs())
    det = run.Detector("epixM")
    with pytest.raises(FormatError, match=r"/epixM/1: expected a dataset here; found Datatype"):
        for evt in run.events():
            det.raw.raw(evt)


@pytest.mark.parametrize("exc, error, rule", [
    (KeyError("Unable to synchronously open object (component not found)"), DamagedFileError, "the data must be readable"),
    (RuntimeError("Special link traversal failed"), DamagedFileError, "the data must be readable"),
    (PermissionError(13, "Permission denied"), NotHDF5Error, "permission denied"),
    (TypeError("'NoneType' object is not subscriptable"), FormatError, "an HDF5 object of an unexpected kind"),
    (AttributeError("'Datatype' object has no attribute 'shape'"), FormatError, "an HDF5 object of an unexpected kind"),
])
def test_failures_of_event_reads_are_wrapped(valid, mocker, exc, error, rule):
    run = next(DataSource(files=valid).runs())
    det, side = run.Detector("epixM"), run.Detector("wave8")
    evt = next(run.events())
    mocker.patch.object(h5py.Dataset, "__getitem__", side_effect=exc)
    for read in (det.raw.raw, det.raw.calib, side.raw.peakAmplitude):
        with pytest.raises(error, match=rf"run\.h5: /(epixM|wave8/peakAmplitude)/0: {rule}.*{type(exc).__name__}") as info:
            read(evt)
        assert info.value.__cause__ is exc


def test_failures_while_opening_are_wrapped(valid, mocker):
    mocker.patch.object(h5py.AttributeManager, "items", side_effect=RuntimeError("bad heap"))
    with pytest.raises(DamagedFileError, match=r"run\.h5: /ancillaryData: the data must be readable.*reading the header "
                                               r"failed with RuntimeError: bad heap"):
        open_run_index(valid)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_folder_without_search_permission(valid):
    folder = os.path.dirname(valid)
    os.chmod(folder, 0o600)
    try:
        with pytest.raises(NotHDF5Error, match="permission denied"):
            open_run_index(valid)
    finally:
        os.chmod(folder, 0o700)


def test_soft_link_loop_at_the_top(valid):
    with h5py.File(valid, "a") as f:
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")
    with pytest.raises(LinkError, match=r"run\.h5: /a: soft link to '/b' does not resolve \(dangling or a loop\)"):
        open_run_index(valid)


def test_every_error_is_an_h5source_error():
    assert all(issubclass(e, H5SourceError) for e in (HeaderError, DataTypeError, TimestampError, EventCountError,
                                                       LinkError, DamagedFileError))
