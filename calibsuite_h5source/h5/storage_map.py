"""Where a dataset's data is stored: its objects, filters and stored chunks (what ``validate`` decodes)."""

from __future__ import annotations

import math

import h5py

from calibsuite_h5source.format.constants import BITSHUFFLE

__all__ = ["objects", "filter_names", "stored_regions"]


def objects(f: h5py.File) -> list[tuple[str, object]]:
    """Every object reachable by hard links (each once)."""
    out = []
    f.visititems(lambda n, o: out.append((n, o)))
    return out


def filter_names(ds: h5py.Dataset) -> str:
    """The dataset's filters, comma-separated (``bitshuffle`` named; others by their HDF5 name or code)."""
    plist = ds.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        names.append("bitshuffle" if code == BITSHUFFLE else name.decode("ascii", "replace") or str(code))
    return ",".join(names)


def stored_regions(ds: h5py.Dataset, block_bytes: int):
    """``(regions, written, declared)``: selections covering the stored data, and chunks written / declared.

    Chunked data: one region per stored chunk (nothing read for a declared but
    unwritten extent). Contiguous data: blocks of ``block_bytes`` bytes
    along the first axis (none when no storage was allocated).
    """
    if ds.shape == ():
        return [()], 1, 1
    if ds.chunks is None:
        if ds.size == 0 or ds.id.get_storage_size() == 0:
            return [], 0, 0
        rows = max(1, block_bytes // max(1, ds.dtype.itemsize * math.prod(ds.shape[1:])))
        return [slice(a, min(a + rows, ds.shape[0])) for a in range(0, ds.shape[0], rows)], 0, 0
    offsets = []
    ds.id.chunk_iter(lambda info: offsets.append(info.chunk_offset))
    regions = [tuple(slice(o, min(o + c, n)) for o, c, n in zip(off, ds.chunks, ds.shape, strict=True))
               for off in offsets if all(o < n for o, n in zip(off, ds.shape, strict=True))]
    declared = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True))
    return regions, len(offsets), declared
