"""Compression filters for reading: hdf5plugin is imported when a dataset first needs it.

hdf5plugin registers bitshuffle-LZ4, Blosc, Zstd and other filters with
HDF5 when it is imported, which costs a script about 20 ms. Most runs are
uncompressed or gzip-compressed (built into HDF5), so the reader imports
hdf5plugin only when a dataset it opens uses a filter HDF5 does not have
(:func:`require_filters`, called wherever the reader opens a dataset).
Without hdf5plugin installed, such a dataset reads as before: HDF5's own
error, translated by :mod:`calibsuite_h5source.h5.guard`.
"""

from __future__ import annotations

import logging

import h5py

log = logging.getLogger(__name__)

_imported = False


def require_filters(ds: h5py.Dataset) -> None:
    """Make the filters of ``ds`` available: import hdf5plugin if one is not registered with HDF5."""
    if _imported:
        return
    dcpl = ds.id.get_create_plist()
    for k in range(dcpl.get_nfilters()):
        if not h5py.h5z.filter_avail(dcpl.get_filter(k)[0]):
            import_hdf5plugin()
            return


def import_hdf5plugin() -> bool:
    """Import hdf5plugin (registering its filters) once; False when it is not installed."""
    global _imported
    _imported = True
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        log.debug("hdf5plugin is not installed: compressed datasets that need it cannot be read")
        return False
    return True
