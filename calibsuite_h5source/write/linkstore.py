"""How a group stores its links: the HDF5 C calls h5py does not expose, through ctypes.

h5py's property lists have no ``H5Pset_sym_k`` (file creation),
``H5Pset_local_heap_size_hint``, ``H5Pset_link_phase_change`` nor
``H5Pset_est_link_info`` (group creation). They are called here through
``ctypes``, on the very libhdf5 that h5py has loaded (found in this
process's memory map, so both share the library's state and its ``hid_t``
identifiers); nothing else in the package calls the C API.

The writer uses the first two (:func:`presized_plists`): every group of a
run keeps its links in a symbol table (HDF5's original format) whose node
and name heap are made, when the file is created, big enough for the run's
links, so that adding a step's link rewrites one node and one heap in place
and never splits or regrows them (``docs/format.rst``, "Crash safety").
The other two (compact link storage, HDF5 1.8 format) were measured against
it (``benchmarks/bench_write.py --links``).
"""

from __future__ import annotations

import ctypes
import functools
import re

import h5py

#: HDF5's limit on the number of links kept compact (``H5Pset_link_phase_change``'s max_compact).
MAX_COMPACT = 65535


@functools.lru_cache(maxsize=1)
def libhdf5() -> ctypes.CDLL:
    """The libhdf5 that h5py loaded (the same handle, not a second copy of the library).

    Raises
    ------
    OSError
        No libhdf5 is mapped in this process (cannot happen once h5py is imported).
    """
    import h5py.h5p  # noqa: F401  (maps libhdf5 into the process)

    with open("/proc/self/maps") as maps:
        paths = {m.group(0) for m in re.finditer(r"/\S*libhdf5[-.][^/\s]*\.so[.\d]*", maps.read())
                 if "_hl" not in m.group(0)}
    candidates = sorted(paths) or [_from_h5py_module()]
    for path in candidates:
        lib = ctypes.CDLL(path)
        if hasattr(lib, "H5Pset_link_phase_change"):
            return lib
    raise OSError(f"no libhdf5 with H5Pset_link_phase_change among {candidates}")


def _from_h5py_module() -> str:  # pragma: no cover - only where /proc/self/maps lists nothing
    import h5py.defs

    return h5py.defs.__file__


def _call(name: str, obj, *args) -> None:
    """libhdf5's ``name(obj's hid_t, *args)`` (ctypes values); a negative status raises RuntimeError."""
    status = getattr(libhdf5(), name)(ctypes.c_int64(obj.id), *args)
    if status < 0:
        raise RuntimeError(f"{name} failed (HDF5 status {status})")


def _get(name: str, obj, *kinds) -> tuple:
    """The values libhdf5's getter ``name(obj's hid_t, kind *...)`` writes, one of each ctypes ``kind``."""
    out = [kind() for kind in kinds]
    _call(name, obj, *map(ctypes.byref, out))
    return tuple(v.value for v in out)


def set_link_phase_change(gcpl: h5py.h5p.PropGCID, max_compact: int, min_dense: int) -> None:
    """``H5Pset_link_phase_change``: compact storage up to ``max_compact`` links, back below ``min_dense``."""
    if not 0 <= min_dense <= max_compact + 1 or max_compact > MAX_COMPACT:
        raise ValueError(f"need 0 <= min_dense <= max_compact + 1 and max_compact <= {MAX_COMPACT}; "
                         f"found {max_compact}, {min_dense}")
    _call("H5Pset_link_phase_change", gcpl, ctypes.c_uint(max_compact), ctypes.c_uint(min_dense))


def get_link_phase_change(gcpl: h5py.h5p.PropGCID) -> tuple[int, int]:
    """``H5Pget_link_phase_change``: ``(max_compact, min_dense)``."""
    return _get("H5Pget_link_phase_change", gcpl, ctypes.c_uint, ctypes.c_uint)


def set_est_link_info(gcpl: h5py.h5p.PropGCID, est_num_entries: int, est_name_len: int) -> None:
    """``H5Pset_est_link_info``: room made at creation for this many links of names this long."""
    if not (0 <= est_num_entries <= MAX_COMPACT and 0 <= est_name_len <= MAX_COMPACT):
        raise ValueError(f"estimates must be 0..{MAX_COMPACT}; found {est_num_entries}, {est_name_len}")
    _call("H5Pset_est_link_info", gcpl, ctypes.c_uint(est_num_entries), ctypes.c_uint(est_name_len))


def get_est_link_info(gcpl: h5py.h5p.PropGCID) -> tuple[int, int]:
    """``H5Pget_est_link_info``: ``(est_num_entries, est_name_len)``."""
    return _get("H5Pget_est_link_info", gcpl, ctypes.c_uint, ctypes.c_uint)


def set_sym_k(fcpl: h5py.h5p.PropFCID, ik: int, lk: int) -> None:
    """``H5Pset_sym_k``: a group B-tree node holds 2*ik children, a symbol-table node 2*lk links."""
    if not (0 < ik < 2**15 and 0 < lk <= MAX_COMPACT):
        raise ValueError(f"need 0 < ik < 32768 and 0 < lk <= {MAX_COMPACT}; found {ik}, {lk}")
    _call("H5Pset_sym_k", fcpl, ctypes.c_uint(ik), ctypes.c_uint(lk))


def get_sym_k(fcpl: h5py.h5p.PropFCID) -> tuple[int, int]:
    """``H5Pget_sym_k``: ``(ik, lk)``."""
    return _get("H5Pget_sym_k", fcpl, ctypes.c_uint, ctypes.c_uint)


def set_local_heap_size_hint(gcpl: h5py.h5p.PropGCID, size: int) -> None:
    """``H5Pset_local_heap_size_hint``: bytes of a new symbol-table group's name heap."""
    if size < 0:
        raise ValueError(f"size must be >= 0; found {size}")
    _call("H5Pset_local_heap_size_hint", gcpl, ctypes.c_size_t(size))


def get_local_heap_size_hint(gcpl: h5py.h5p.PropGCID) -> int:
    """``H5Pget_local_heap_size_hint``."""
    (size,) = _get("H5Pget_local_heap_size_hint", gcpl, ctypes.c_size_t)
    return size


#: Bytes a link's name takes in a local heap: names of up to 7 characters and their NUL, 8-byte aligned.
HEAP_BYTES_PER_LINK = 8


def presized_plists(links: int, track_times: bool = False):
    """``(fapl, fcpl, gcpl)``: file access and creation, group creation, for symbol tables holding
    ``links`` links without growing.

    The file access list keeps HDF5 1.x's original format (the low bound ``earliest``, as h5py's
    default; HDF5 2.0's own default would make new-style groups). The file's symbol-table nodes get
    room for ``links`` links (``H5Pset_sym_k``), every group made with the group list a name heap
    for as many short names (plus room for longer ones).
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    lk = max(4, min(MAX_COMPACT, -(-links // 2)))
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(track_times)
    set_sym_k(fcpl, 16, lk)
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    set_local_heap_size_hint(gcpl, HEAP_BYTES_PER_LINK * 2 * lk + 1024)
    return fapl, fcpl, gcpl


def compact_group_plist(est_links: int, est_name_len: int = 4,
                        max_compact: int = MAX_COMPACT) -> h5py.h5p.PropGCID:
    """A group-creation property list: compact link storage with room for ``est_links`` links.

    Needs a file whose low format bound is at least HDF5 1.8 (``libver=('v108', ...)``) for the
    group to use it; in an older-format file HDF5 makes a symbol table anyway.
    """
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    set_link_phase_change(gcpl, max_compact, min(max_compact, 6))
    set_est_link_info(gcpl, min(est_links, max_compact), est_name_len)
    return gcpl


def link_storage(group: h5py.Group) -> str:
    """How ``group`` stores its links: ``'compact'``, ``'dense'`` or ``'symbol table'``.

    Read from the group's info (``H5Gget_info``'s storage type), through h5py.
    """
    kind = h5py.h5g.get_info(group.id).storage_type if hasattr(h5py.h5g, "get_info") else None
    if kind is None:
        kind = _storage_type(group)
    return {0: "symbol table", 1: "compact", 2: "dense"}.get(int(kind), f"unknown ({kind})")


class _GInfo(ctypes.Structure):
    _fields_ = [("storage_type", ctypes.c_int), ("nlinks", ctypes.c_uint64),
                ("max_corder", ctypes.c_int64), ("mounted", ctypes.c_bool)]


def _storage_type(group: h5py.Group) -> int:
    info = _GInfo()
    _call("H5Gget_info", group.id, ctypes.byref(info))
    return info.storage_type
