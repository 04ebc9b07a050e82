"""The HDF5 C calls h5py does not expose (write/linkstore.py) set what HDF5 then reports and uses."""

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, RunWriter
from calibsuite_h5source.write import linkstore, storage


def test_the_library_is_the_one_h5py_loaded():
    lib = linkstore.libhdf5()
    assert "hdf5" in lib._name and "_hl" not in lib._name
    assert linkstore.libhdf5() is lib


def test_setters_round_trip_through_hdf5():
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    linkstore.set_link_phase_change(gcpl, 300, 6)
    linkstore.set_est_link_info(gcpl, 200, 5)
    linkstore.set_local_heap_size_hint(gcpl, 12345)
    assert linkstore.get_link_phase_change(gcpl) == (300, 6)
    assert linkstore.get_est_link_info(gcpl) == (200, 5)
    assert linkstore.get_local_heap_size_hint(gcpl) == 12345
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    linkstore.set_sym_k(fcpl, 16, 700)
    assert linkstore.get_sym_k(fcpl) == (16, 700)


@pytest.mark.parametrize("call,args", [(linkstore.set_link_phase_change, (70000, 6)),
                                       (linkstore.set_link_phase_change, (10, 20)),
                                       (linkstore.set_est_link_info, (-1, 4)),
                                       (linkstore.set_local_heap_size_hint, (-5,))])
def test_out_of_range_values_are_refused_before_hdf5(call, args):
    with pytest.raises(ValueError):
        call(h5py.h5p.create(h5py.h5p.GROUP_CREATE), *args)


def test_hdf5_failure_is_an_error_not_a_silent_status():
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    with pytest.raises(RuntimeError, match="H5Pset_sym_k"):
        linkstore.set_sym_k(gcpl, 16, 100)  # a group list has no sym_k: HDF5 says no


def test_presized_file_stores_its_room_in_the_superblock_and_groups_stay_symbol_tables(tmp_path):
    fapl, fcpl, gcpl = linkstore.presized_plists(1000)
    path = str(tmp_path / "p.h5")
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_EXCL, fcpl=fcpl, fapl=fapl))
    h5py.h5g.create(f.id, b"det", gcpl=gcpl)
    for k in range(1000):
        f[f"det/{k}"] = np.arange(2)
    assert linkstore.link_storage(f["det"]) == "symbol table"
    f.close()
    with h5py.File(path, "r") as f:
        assert linkstore.get_sym_k(f.id.get_create_plist()) == (16, 500)
        assert sorted(map(int, f["det"])) == list(range(1000))
    assert open(path, "rb").read(9)[8] == 0  # superblock version 0: HDF5 1.x's original format


def test_compact_plist_keeps_links_compact_in_the_18_format(tmp_path):
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V18, h5py.h5f.LIBVER_V18)
    with h5py.File(h5py.h5f.create(str(tmp_path / "c.h5").encode(), h5py.h5f.ACC_EXCL, fapl=fapl)) as f:
        h5py.h5g.create(f.id, b"det", gcpl=linkstore.compact_group_plist(50))
        f.create_group("plain")
        for k in range(20):
            f[f"det/{k}"] = f[f"plain/{k}"] = np.arange(2)
        assert linkstore.link_storage(f["det"]) == "compact"
        assert linkstore.link_storage(f["plain"]) == "dense"  # HDF5's default: compact up to 8 links


def test_writer_files_have_room_for_expected_steps(tmp_path):
    for steps, lk in ((None, storage.EXPECTED_STEPS // 2), (100, 50), (5000, 2500)):
        path = tmp_path / f"w{steps}.h5"
        kwargs = {} if steps is None else {"expected_steps": steps}
        with RunWriter(path, "dark", **kwargs) as w:
            w.add_step({"epixM": np.ones((2, 2, 3, 4), np.uint16)})
        with h5py.File(path, "r") as f:
            assert linkstore.get_sym_k(f.id.get_create_plist())[1] == lk
            for name in ("epixM", "ancillaryData", "/"):
                assert linkstore.link_storage(f[name]) == "symbol table"


def test_files_written_the_old_way_read_the_same(tmp_path, monkeypatch):
    """The reader does not care how a group stores its links: HDF5's default groups (the writer
    before presized tables), presized tables and compact links read alike."""
    def write(path):
        with RunWriter(path, "delayScan") as w:
            for k in range(12):
                w.add_step({"epixM": np.full((2, 2, 3, 4), k, np.uint16), "wave8": {"amp": np.arange(2.0) + k}},
                           timestamps=[(1 << 60) + 2 * k, (1 << 60) + 2 * k + 1], delay=float(k))

    def read(path):
        run = next(DataSource(files=str(path)).runs())
        det, amp = run.Detector("epixM"), run.Detector("wave8")
        return [(run.Detector("delay")(s), [(int(det.raw.raw(e)[0, 0, 0]), amp.raw.amp(e), e.timestamp)
                                            for e in s.events()]) for s in run.steps()]

    got = {}
    for layout in ("plain", "presized", "compact"):
        monkeypatch.setattr(storage, "LINK_LAYOUT", layout)
        write(tmp_path / f"{layout}.h5")
        got[layout] = read(tmp_path / f"{layout}.h5")
    assert got["plain"] == got["presized"] == got["compact"]
    assert got["plain"][11] == (11.0, [(11, 11.0, (1 << 60) + 22), (11, 12.0, (1 << 60) + 23)])
