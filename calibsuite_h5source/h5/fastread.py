"""The engine of direct reads: where each event lies in the file, read with ``os.preadv``.

:class:`calibsuite_h5source.h5.dataset.StoredDataset` (the one object that
reads a stored dataset) asks :func:`plan_for` once per dataset and reads
through the plan; this module does not decide anything else. Reading one event through h5py
(``dataset[i]``) costs, beyond the copy from the page cache, HDF5 copying its
chunk buffer into the result, h5py zero-filling the result and the selection
machinery. Where the bytes on disk *are* the event, that work can be skipped:
this module reads them with ``os.preadv`` straight into a fresh array.

A dataset gets a :class:`DirectPlan` once, on its first read, when all of these hold
(checked once per dataset); otherwise every read goes through h5py:

* it is a plain dataset of the run file itself (not virtual, not reached
  through an external link: those keep :mod:`calibsuite_h5source.h5.links`'s
  checks and h5py's read), opened with the default ``sec2`` driver;
* its HDF5 type is exactly the native one of its numpy dtype (integers and
  floats in the machine's byte order; no conversion);
* its layout is contiguous (no external storage), or chunked with each
  chunk holding whole events (chunk ``[1, ..., 1, c, *event shape]``: one or
  ``c`` events per chunk, stored C-ordered);
* it has no filters; or (:mod:`calibsuite_h5source.h5.fastcompressed`) one event per
  chunk compressed by exactly one of bitshuffle-LZ4, Blosc or Zstd, with a
  decompressor at hand (hdf5plugin's filter libraries, or their Python
  packages): those chunks are decompressed outside h5py's lock on a small
  thread pool, a few events ahead.

Every direct read checks what it relies on: the chunk exists (an unwritten
chunk, which HDF5 serves as fill values, is read through h5py), its stored
size is the expected byte count and the file holds all of its bytes (else a
:class:`~calibsuite_h5source.errors.DamagedFileError`). The first direct read
of each dataset is compared byte for byte with h5py's read of the same event;
a difference disables the direct path for that dataset.

Arrays returned are new (``np.empty`` per read) and writable: they belong to
the caller and are never overwritten by a later read. Set
``CALIBSUITE_DIRECT_READ=0`` in the environment to read everything through h5py.

With ``DataSource(..., zero_copy=True)`` an uncompressed event of
:data:`MAP_MIN_BYTES` or more is not copied: it is returned as a private
copy-on-write mapping of its bytes in the file (``mmap`` ``ACCESS_COPY``),
one mapping per read. Such an array is still writable and the caller's own
(writes go to private pages; a later read maps afresh), it costs a mapping
instead of a 1 MB copy (the copy is this reader's floor: ~150 us per MB here),
and pages are read from the page cache when touched. The price: the first
write to each 4 KiB page copies it (in-place work on a whole frame is several
times slower than on a copy), and if another program truncates the file while
such an array is alive, reading the array crashes the process (SIGBUS), as
with ``numpy.memmap``; hence it is not the default.
"""

from __future__ import annotations

import logging
import mmap
import os
import weakref

import h5py
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["plan_for", "DirectPlan", "ENABLED", "NO_PLAN", "preadv_exact"]

#: False when the environment asks for h5py reads only (``CALIBSUITE_DIRECT_READ=0``).
ENABLED = os.environ.get("CALIBSUITE_DIRECT_READ", "1").strip().lower() not in ("0", "no", "false", "off")

#: zero_copy: events at least this large are mapped (smaller ones are cheaper to copy than to map).
MAP_MIN_BYTES = 256 * 1024
#: zero_copy: at most this many mapped events alive at once (Linux allows a process 65530 mappings).
MAX_MAPPED = 8192
_n_mapped = 0

#: Chunks along the event axis above which a dataset is read through h5py (the chunk table
#: would be allocated in proportion to a declared, not a written, extent).
MAX_TABLE = 1 << 24

_HAVE_PREADV = hasattr(os, "preadv")
class NotYetVisible(OSError):
    """A strict read found a chunk the writer's counters promise missing from the chunk index (retry it)."""


NO_PLAN = _NO_PLAN = False  # the reader's marker: decided, read through h5py


def preadv_exact(fd: int, view: memoryview, addr: int) -> None:
    """Fill ``view`` with the bytes at ``addr``; raise ``OSError`` on a short read (a truncated file)."""
    done, want = 0, len(view)
    while done < want:
        n = os.preadv(fd, [view[done:]], addr + done)
        if n <= 0:
            raise OSError(f"truncated file: {want} bytes expected at address {addr}, the file ends after {done}")
        done += n


class DirectPlan:
    """Where each event of one step's dataset lies in the file, for reads with ``os.preadv``.

    Parameters
    ----------
    dsid : h5py.h5d.DatasetID
        The dataset (its validity is checked at every read: a closed file is
        read through h5py, which raises).
    fd : int
        The file descriptor libhdf5's ``sec2`` driver reads through.
    event_shape : tuple
        Shape of one event.
    dtype : numpy.dtype
        The dataset's (native) dtype.
    offsets, sizes : numpy.ndarray
        Per chunk of this step: file address (-1 when the chunk is not
        written) and stored size in bytes. A contiguous dataset is one
        "chunk" holding every event.
    per_chunk : int
        Events per chunk.
    n_axis : int
        Length of the event axis (other indices are read through h5py).
    first : int
        Index (in chunk units) of this step's first event, for padded
        ``[step, event, ...]`` datasets stored contiguously.
    zero_copy : bool
        Return events of :data:`MAP_MIN_BYTES` or more as copy-on-write
        mappings of the file (:func:`_map_event`) instead of copies.
    """

    __slots__ = ("dsid", "fd", "event_shape", "dtype", "event_bytes", "chunk_bytes", "offsets", "sizes",
                 "per_chunk", "first", "n_axis", "verified", "scalar", "mapped")

    def __init__(self, dsid, fd, event_shape, dtype, offsets, sizes, per_chunk, n_axis, first=0, zero_copy=False):
        self.dsid, self.fd = dsid, fd
        self.event_shape, self.dtype = tuple(event_shape), np.dtype(dtype)
        self.event_bytes = int(np.prod(self.event_shape, dtype=np.int64)) * self.dtype.itemsize
        self.per_chunk = int(per_chunk)
        self.chunk_bytes = self.event_bytes * self.per_chunk
        self.offsets, self.sizes = offsets, sizes
        self.first, self.n_axis = int(first), int(n_axis)
        self.verified = False
        self.scalar = self.event_shape == ()
        self.mapped = bool(zero_copy) and self.event_bytes >= MAP_MIN_BYTES

    def locate(self, i: int) -> int | None:
        """File address of event ``i``'s bytes; None when its chunk is not written (h5py serves fill values).

        Raises
        ------
        OSError
            The chunk's stored size is not the expected byte count (a damaged chunk).
        """
        if not 0 <= i < self.n_axis:
            return None  # h5py's indexing rules (and errors) apply
        c, j = divmod(self.first + i, self.per_chunk)
        if not 0 <= c < len(self.offsets):
            return None
        addr = int(self.offsets[c])
        if addr < 0:
            return None
        if int(self.sizes[c]) != self.chunk_bytes:
            raise OSError(f"damaged chunk: stored size {int(self.sizes[c])} bytes at address {addr}, "
                          f"expected {self.chunk_bytes} bytes")
        return addr + j * self.event_bytes

    def read(self, i: int):
        """Event ``i`` as a new array, or None to read it through h5py."""
        addr = self.locate(i)
        if addr is None:
            return None
        if self.mapped:
            out = _map_event(self, addr)
            if out is not None:
                return out
        out = np.empty(self.event_shape, self.dtype)
        self.read_into(out, addr)
        return out

    def read_into(self, out: np.ndarray, addr: int) -> None:
        """Fill ``out`` with the ``event_bytes`` at ``addr``; raise ``OSError`` on a short read (truncated file)."""
        preadv_exact(self.fd, memoryview(out).cast("B"), addr)

    def addresses(self, idx: np.ndarray) -> np.ndarray:
        """File address of each event of ``idx`` (in range), -1 where its chunk is not written.

        Raises
        ------
        OSError
            A chunk's stored size is not the expected byte count (a damaged chunk).
        """
        c, j = np.divmod(self.first + idx, self.per_chunk)
        base = self.offsets[c]
        bad = (base >= 0) & (self.sizes[c] != self.chunk_bytes)
        if bad.any():
            k = int(c[np.argmax(bad)])
            raise OSError(f"damaged chunk: stored size {int(self.sizes[k])} bytes at address {int(self.offsets[k])}, "
                          f"expected {self.chunk_bytes} bytes")
        return np.where(base >= 0, base + j * self.event_bytes, -1)

    def read_rows(self, idx: np.ndarray, out: np.ndarray, at: int):
        """Read events ``idx`` into ``out[at:]``, one ``preadv`` per run of back-to-back events.

        Returns None, or the positions (into ``idx``) of events whose chunk is
        not written (the caller reads their fill values, or refuses them).
        """
        addr = self.addresses(idx)
        written = addr >= 0
        pos = np.flatnonzero(written)
        if len(pos):
            a = addr[pos]
            cut = np.flatnonzero((np.diff(a) != self.event_bytes) | (np.diff(pos) != 1)) + 1
            flat = memoryview(out.reshape(out.shape[0], -1)).cast("B")
            eb = self.event_bytes
            for s, e in zip([0, *cut.tolist()], [*cut.tolist(), len(pos)], strict=True):
                row = at + int(pos[s])
                preadv_exact(self.fd, flat[row * eb:(row + int(pos[e - 1] - pos[s]) + 1) * eb], int(a[s]))
        return None if len(pos) == len(idx) else np.flatnonzero(~written)


def _map_event(plan: DirectPlan, addr: int):
    """Event bytes at ``addr`` as a private copy-on-write mapping of the file; None to copy them instead.

    Checked first: the file still holds every byte (a mapping past its end
    would crash the reader with SIGBUS when read). None when too many mapped
    events are alive (:data:`MAX_MAPPED`, so the process keeps mappings for
    its own allocations) or the system refuses the mapping.
    """
    global _n_mapped
    if _n_mapped >= MAX_MAPPED:
        return None
    end = addr + plan.event_bytes
    size = os.fstat(plan.fd).st_size
    if size < end:
        raise OSError(f"truncated file: {plan.event_bytes} bytes expected at address {addr}, the file ends at {size}")
    start = addr - addr % mmap.ALLOCATIONGRANULARITY
    try:
        m = mmap.mmap(plan.fd, end - start, access=mmap.ACCESS_COPY, offset=start)
    except (OSError, ValueError) as exc:
        log.debug("cannot map %d bytes at %d (%s): copying", end - start, start, exc)
        return None
    _n_mapped += 1
    weakref.finalize(m, _unmapped)
    count = plan.event_bytes // plan.dtype.itemsize
    return np.frombuffer(m, plan.dtype, count=count, offset=addr - start).reshape(plan.event_shape)


def _unmapped() -> None:
    global _n_mapped
    _n_mapped -= 1


def _native_type_matches(ds: h5py.Dataset) -> bool:
    dtype = ds.dtype
    if dtype.kind not in "iuf" or not dtype.isnative or dtype.names is not None or dtype.subdtype is not None:
        return False
    try:
        return bool(ds.id.get_type().equal(h5py.h5t.py_create(dtype)))
    except (TypeError, ValueError):  # an HDF5 type h5py cannot describe: h5py's read decides
        return False


def _same_file(ds: h5py.Dataset, origin) -> bool:
    """True when ``ds`` lives in the run file itself (not reached through an external link)."""
    if origin is None:
        return False
    try:
        return os.path.samefile(ds.file.filename, origin.file)
    except OSError:
        return False


def _chunk_table(dsid, chunks: tuple, prefix: tuple, n_chunks_axis: int, skipped=None):
    """Addresses and stored sizes of the chunks of one step (``prefix``) along the event axis.

    A chunk stored without its (optional) filter, which libhdf5 marks in its
    filter mask, is listed with address -1 (h5py reads it), unless
    ``skipped`` (a bool array) is given: then it is listed and marked there.
    """
    offsets = np.full(n_chunks_axis, -1, dtype=np.int64)
    sizes = np.zeros(n_chunks_axis, dtype=np.int64)
    axis = len(prefix)
    c_event = chunks[axis]
    prefix_coord = tuple(p * c for p, c in zip(prefix, chunks[:axis], strict=True))

    def visit(info):
        coord = info.chunk_offset
        if coord[:axis] == prefix_coord and (info.filter_mask == 0 or skipped is not None):
            c = coord[axis] // c_event
            if 0 <= c < n_chunks_axis:
                offsets[c], sizes[c] = info.byte_offset, info.size
                if info.filter_mask:
                    skipped[c] = True

    if hasattr(dsid, "chunk_iter"):
        dsid.chunk_iter(visit)
    else:  # pragma: no cover - libhdf5 < 1.12.3
        for k in range(dsid.get_num_chunks()):
            visit(dsid.get_chunk_info(k))
    return offsets, sizes


def plan_for(reader):
    """Return the plan of a reader's dataset (``.dataset``, ``.prefix``, ``._origin``), or False (h5py reads it).

    Checked once per dataset (see the module docstring). A dataset whose
    storage libhdf5 cannot describe (an ``OSError``/``RuntimeError``/
    ``ValueError``/``KeyError`` from h5py while planning) is read through
    h5py, which then reports its errors; any other exception is a bug here
    and is raised, never hidden behind the slow path.
    """
    if not ENABLED or not _HAVE_PREADV:
        return _NO_PLAN
    ds = reader.dataset
    try:
        return _plan(ds, tuple(reader.prefix), getattr(reader, "_origin", None))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # libhdf5 refused: h5py reads it
        log.debug("%s: no direct reads (%s: %s)", ds.name, type(exc).__name__, exc)
        return _NO_PLAN


def _plan(ds: h5py.Dataset, prefix: tuple, origin):
    if ds.shape is None or len(ds.shape) <= len(prefix) or ds.is_virtual:
        return _NO_PLAN
    if not _native_type_matches(ds):
        return _NO_PLAN
    f = ds.file
    if f.driver != "sec2" or not _same_file(ds, origin):
        return _NO_PLAN
    dcpl = ds.id.get_create_plist()
    if dcpl.get_external_count():
        return _NO_PLAN
    decode = None
    if dcpl.get_nfilters():
        from calibsuite_h5source.h5.fastcompressed import decoder_for

        filters = [dcpl.get_filter(k) for k in range(dcpl.get_nfilters())]
        decode = decoder_for([(flt[0], tuple(flt[2])) for flt in filters])
        if decode is None:
            return _NO_PLAN  # a pipeline we do not decompress ourselves: h5py (with hdf5plugin)
    axis = len(prefix)
    event_shape = ds.shape[axis + 1:]
    n_axis = ds.shape[axis]
    fd = f.id.get_vfd_handle()
    if not isinstance(fd, int) or fd < 0:
        return _NO_PLAN
    zero_copy = bool(getattr(origin, "zero_copy", False))
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS and decode is None:
        addr = ds.id.get_offset()
        size = ds.id.get_storage_size()
        total = int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize
        if addr is None or size != total:
            return _NO_PLAN  # not allocated (fill values) or not what it should be: h5py decides
        # the whole dataset is one "chunk" of every event; this step starts at event prefix * n_axis
        first = int(np.ravel_multi_index(prefix + (0,), ds.shape[: axis + 1])) if prefix else 0
        n_events_total = int(np.prod(ds.shape[: axis + 1], dtype=np.int64))
        return DirectPlan(ds.id, fd, event_shape, ds.dtype, np.array([addr], np.int64),
                          np.array([total], np.int64), n_events_total, n_axis, first, zero_copy)
    if layout != h5py.h5d.CHUNKED:
        return _NO_PLAN  # compact: tiny data in the object header
    chunks = ds.chunks
    if any(c != 1 for c in chunks[:axis]) or tuple(chunks[axis + 1:]) != tuple(event_shape):
        return _NO_PLAN  # an event spread over several chunks
    if decode is not None and chunks[axis] != 1:
        return _NO_PLAN  # several events per compressed chunk: h5py's chunk cache serves them
    n_chunks = -(-n_axis // chunks[axis])
    if n_chunks > MAX_TABLE:
        return _NO_PLAN  # a declared extent far beyond any written data: no table in proportion to it
    skipped = np.zeros(n_chunks, bool) if decode is not None else None
    offsets, sizes = _chunk_table(ds.id, chunks, prefix, n_chunks, skipped)
    plan = DirectPlan(ds.id, fd, event_shape, ds.dtype, offsets, sizes, chunks[axis], n_axis,
                      zero_copy=zero_copy and decode is None)
    if decode is not None:
        from calibsuite_h5source.h5.fastcompressed import CompressedPlan

        return CompressedPlan(plan, decode, skipped)
    return plan


def _direct(plan, reader, i: int):
    """Event ``i`` read with ``os.preadv`` (and decompressed), or None to read it through h5py.

    The first direct read of each dataset is compared byte for byte with
    h5py's: a difference disables the direct path for the dataset (and, for
    a ``strict`` reader of a step being written, is an error to retry: the
    writer may have been caught mid-flush).
    """
    if not plan.dsid.valid:
        return None  # the file was closed: h5py raises the right error
    out = plan.read(i)
    if out is None:
        return None
    if not plan.verified:
        expected = reader.dataset[reader.prefix + (i,)]
        if np.asarray(expected).tobytes() != out.tobytes():
            if reader.strict:
                raise NotYetVisible(f"a direct read of event {i} differs from h5py's (a flush caught half-done?)")
            log.warning("%s: a direct read differs from h5py's; reading this dataset through h5py",
                        reader.where()[1])
            reader.disable()
            return expected
        plan.verified = True
    return out[()] if plan.scalar else out
