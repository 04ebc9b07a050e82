"""Compressed chunks (bitshuffle-LZ4, Blosc, Zstd) decompressed outside h5py, a few events ahead.

h5py serialises every read behind its global lock, so a compressed run is
decompressed on one core however many the machine has. For a dataset whose
chunks each hold one event, compressed by exactly one of the filters below,
:mod:`calibsuite_h5source.h5.fastread` hands reads to a :class:`CompressedPlan`:
the chunk's bytes are read with ``os.preadv`` and decompressed without the
GIL on a small thread pool that works, in order, up to :data:`PREFETCH`
events ahead of a sequential reader. Memory stays bounded: at most
``PREFETCH`` decompressed events wait per dataset being read.

The decompressors were picked on merit, measured on 2 cores. Best is the
filter's own C code in hdf5plugin's compiled filter libraries (what h5py's
reads run, so the bytes are the same by construction), called through
``ctypes``, which releases the GIL: bitshuffle and Zstd use it. The Python
packages are fallbacks: ``bitshuffle``'s extension (its C function through
``ctypes``; its Python call holds the GIL, so then no pool), ``zstandard``
(releases the GIL but decompressed these frames ~40% slower), ``blosc2``
(spreads one chunk over its own threads: no pool).

==================== ========= ===================================================
HDF5 filter          id        decompressed by
==================== ========= ===================================================
bitshuffle + LZ4     32008     ``bshuf_decompress_lz4`` of hdf5plugin's ``h5bshuf``
                               (else of the ``bitshuffle`` package)
Blosc (any codec)    32001     ``blosc_decompress_ctx`` of hdf5plugin's ``h5blosc`` (else
                               ``blosc2.decompress``, which reads Blosc-1 chunks)
Zstd                 32015     ``ZSTD_decompress`` of hdf5plugin's ``h5zstd`` (else
                               ``zstandard``, one frame per chunk)
==================== ========= ===================================================

Without any of them, or for any other filter pipeline, h5py reads the data.
Before anything is decompressed the chunk's framing is checked (the
uncompressed size it declares is the event's byte count; bitshuffle's block
table ends exactly at the end of the chunk; Blosc's compressed size is the
stored size; Zstd's frame content size is the event's byte count), so a
damaged chunk gives a :class:`~calibsuite_h5source.errors.DamagedFileError`
and never reaches a decompressor that trusts it. ``CALIBSUITE_PREFETCH=0``
turns the thread pool off (decompression then happens in the reading thread).
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import struct
import threading

import numpy as np

from calibsuite_h5source.format.constants import BITSHUFFLE, BLOSC, ZSTD

log = logging.getLogger(__name__)

__all__ = ["decoder_for", "CompressedPlan", "PREFETCH", "WORKERS"]

_BSHUF_LZ4 = 2
_BSHUF_MULT = 8  # bitshuffle blocks hold a multiple of 8 elements

#: Events decompressed ahead of a sequential reader, per dataset (0: no thread pool).
PREFETCH = max(0, int(os.environ.get("CALIBSUITE_PREFETCH", "4")))
#: Threads of the decompression pool.
WORKERS = max(1, min(2, os.cpu_count() or 1))

_pool = None
_pool_lock = threading.Lock()


def _executor():
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                from concurrent.futures import ThreadPoolExecutor

                _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="calibsuite-decompress")
    return _pool


class Damaged(OSError):
    """A compressed chunk whose framing is not what its dataset says (becomes a DamagedFileError)."""


# -- decoders: (bytes of one chunk, shape, dtype) -> new array ---------------------------------

def _bitshuffle_lz4(bitshuffle):
    unpack = struct.Struct(">QI").unpack_from
    block_header = struct.Struct(">I").unpack_from

    def decode(buf, shape, dtype, out=None):
        itemsize = dtype.itemsize
        nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
        if len(buf) < 12:
            raise Damaged(f"damaged bitshuffle chunk: {len(buf)} bytes, shorter than its header")
        size, block_bytes = unpack(buf, 0)
        if size != nbytes:
            raise Damaged(f"damaged bitshuffle chunk: declares {size} bytes uncompressed, the event has {nbytes}")
        if block_bytes <= 0 or block_bytes % (itemsize * _BSHUF_MULT):
            raise Damaged(f"damaged bitshuffle chunk: block size {block_bytes} bytes")
        # walk the block table: every block's compressed size must stay inside the chunk, and end at its end
        block = block_bytes // itemsize
        n = nbytes // itemsize
        sizes = [block] * (n // block)
        last = n % block - (n % block) % _BSHUF_MULT
        if last:
            sizes.append(last)
        pos, end = 12, len(buf) - (n % _BSHUF_MULT) * itemsize
        for _ in sizes:
            if pos + 4 > end:
                raise Damaged("damaged bitshuffle chunk: its block table runs past the chunk")
            pos += 4 + block_header(buf, pos)[0]
        if pos != end:
            raise Damaged(f"damaged bitshuffle chunk: its blocks end at byte {pos}, the chunk's data at {end}")
        if c_decompress is None:
            try:
                got = bitshuffle.decompress_lz4(np.frombuffer(buf, np.uint8, offset=12), shape, dtype, block)
            except (ValueError, RuntimeError, OSError) as exc:  # the library refused the bytes
                raise Damaged(f"damaged bitshuffle chunk: {exc}") from exc
            if out is None:
                return got
            out[...] = got
            return out
        out = np.empty(shape, dtype) if out is None else out
        consumed = c_decompress(buf, out, n, itemsize, block)
        if consumed != len(buf) - 12:
            raise Damaged(f"damaged bitshuffle chunk: decompression {'failed' if consumed < 0 else 'stopped'} "
                          f"({consumed}) in a chunk of {len(buf) - 12} bytes after its header")
        return out

    c_decompress = _bshuf_c_decompress()
    if c_decompress is None and bitshuffle is None:
        return None
    # bitshuffle's Python call holds the GIL (threads then only add contention); its C function called
    # through ctypes releases it, so the pool's threads decompress side by side
    decode.parallel = c_decompress is not None
    return decode


def _bshuf_c_decompress():
    """The filter's C ``bshuf_decompress_lz4``, called through ctypes (no GIL held); None if unavailable.

    Taken from hdf5plugin's own bitshuffle library (the code h5py's reads
    run), else from the ``bitshuffle`` package's extension. Returns
    ``decompress(chunk, out, n_elements, itemsize, block) -> bytes consumed or < 0``.
    The bitshuffle wheel runs each call on an OpenMP team; there every
    decompressing thread asks for a team of one (the pool already uses
    the cores, and OpenMP teams competing for 2 busy cores were measured
    several times slower).
    """
    import ctypes

    lib = _plugin_library("h5bshuf", "bshuf_decompress_lz4")
    if lib is None:
        try:
            import bitshuffle.ext

            lib = ctypes.CDLL(bitshuffle.ext.__file__)
        except (ImportError, OSError) as exc:
            log.debug("no bitshuffle C library: %s", exc)
            return None
    func = getattr(lib, "bshuf_decompress_lz4", None)
    if func is None:
        return None
    func.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
    func.restype = ctypes.c_int64
    set_threads = getattr(lib, "omp_set_num_threads", None)
    local = threading.local()

    def decompress(buf: np.ndarray, out: np.ndarray, n: int, itemsize: int, block: int) -> int:
        if set_threads is not None and not getattr(local, "one_thread", False):
            set_threads(1)
            local.one_thread = True
        return func(buf.ctypes.data + 12, out.ctypes.data, n, itemsize, block)

    return decompress


def _blosc(blosc2, lib=None):
    """Blosc through ``blosc_decompress_ctx`` of hdf5plugin's ``h5blosc`` (ctypes: no GIL held), else ``blosc2``."""
    header = struct.Struct("<BBBBIII").unpack_from
    if lib is not None:
        import ctypes

        c_decompress = lib.blosc_decompress_ctx
        c_decompress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        c_decompress.restype = ctypes.c_int

    def decode(buf, shape, dtype, out=None):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(buf) < 16:
            raise Damaged(f"damaged Blosc chunk: {len(buf)} bytes, shorter than its header")
        _version, _lz, _flags, _typesize, size, _blocksize, cbytes = header(buf, 0)
        if size != nbytes or cbytes != len(buf):
            raise Damaged(f"damaged Blosc chunk: declares {size} bytes uncompressed and {cbytes} compressed; "
                          f"the event has {nbytes}, the chunk {len(buf)}")
        out = np.empty(shape, dtype) if out is None else out
        if lib is not None:
            got = c_decompress(buf.ctypes.data, out.ctypes.data, nbytes, 1)  # one thread: the pool has the cores
            if got != nbytes:
                raise Damaged(f"damaged Blosc chunk: decompression gave {got}, the event has {nbytes} bytes")
            return out
        try:
            blosc2.decompress(buf, dst=out)
        except (RuntimeError, ValueError) as exc:  # blosc2's refusals of damaged bytes
            raise Damaged(f"damaged Blosc chunk: {exc}") from exc
        return out

    # blosc2 decompresses one chunk on its own threads (blosc2.nthreads); the C call runs on the pool
    decode.parallel = lib is not None
    return decode


def _zstd_c(lib):
    """Zstd through ``ZSTD_decompress`` of hdf5plugin's own filter library (ctypes: no GIL held)."""
    import ctypes

    content_size, decompress, is_error = lib.ZSTD_getFrameContentSize, lib.ZSTD_decompress, lib.ZSTD_isError
    content_size.argtypes, content_size.restype = [ctypes.c_void_p, ctypes.c_size_t], ctypes.c_ulonglong
    decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    decompress.restype = ctypes.c_size_t
    is_error.argtypes, is_error.restype = [ctypes.c_size_t], ctypes.c_uint

    def decode(buf, shape, dtype, out=None):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        declared = content_size(buf.ctypes.data, len(buf))
        if declared != nbytes:  # also ZSTD_CONTENTSIZE_UNKNOWN / _ERROR (2**64 - 1, - 2)
            raise Damaged(f"damaged Zstd chunk: declares {declared} bytes uncompressed, the event has {nbytes}")
        out = np.empty(shape, dtype) if out is None else out
        got = decompress(out.ctypes.data, nbytes, buf.ctypes.data, len(buf))
        if is_error(got) or got != nbytes:
            raise Damaged(f"damaged Zstd chunk: decompression gave {'an error' if is_error(got) else got}, "
                          f"the event has {nbytes} bytes")
        return out

    decode.parallel = True
    return decode


def _plugin_library(name: str, needs: str):
    """hdf5plugin's compiled filter library ``name`` (e.g. ``'h5zstd'``) through ctypes, or None.

    None too when the library does not export the function ``needs`` (an
    hdf5plugin built with hidden symbols): the Python packages then decide.
    """
    import ctypes
    import glob
    import importlib.util

    spec = importlib.util.find_spec("hdf5plugin")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(glob.glob(os.path.join(folder, "plugins", f"*{name}.*"))):
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                log.debug("cannot load %s: %s", path, exc)
                continue
            if hasattr(lib, needs):
                return lib
            log.debug("%s does not export %s", path, needs)
    return None


def _zstd(zstandard):
    local = threading.local()

    def decode(buf, shape, dtype, out=None):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        try:
            declared = zstandard.frame_content_size(buf)
        except zstandard.ZstdError as exc:
            raise Damaged(f"damaged Zstd chunk: {exc}") from exc
        if declared != nbytes:
            raise Damaged(f"damaged Zstd chunk: declares {declared} bytes uncompressed, the event has {nbytes}")
        dctx = getattr(local, "dctx", None)
        if dctx is None:
            dctx = local.dctx = zstandard.ZstdDecompressor()
        try:
            data = dctx.decompress(buf, max_output_size=nbytes)
        except zstandard.ZstdError as exc:
            raise Damaged(f"damaged Zstd chunk: {exc}") from exc
        if len(data) != nbytes:
            raise Damaged(f"damaged Zstd chunk: {len(data)} bytes decompressed, the event has {nbytes}")
        out = np.empty(shape, dtype) if out is None else out
        memoryview(out).cast("B")[:] = data
        return out

    decode.parallel = True  # zstandard releases the GIL: the pool's threads decompress side by side
    return decode


def decoder_for(filters: list):
    """Return ``decode(buffer, shape, dtype, out=None) -> ndarray`` (into ``out`` when given) for a filter pipeline, or None (h5py reads it).

    Parameters
    ----------
    filters : list of (id, cd_values)
        The dataset's pipeline (``dcpl.get_filter(k)[0]`` and ``[2]``).
    """
    if len(filters) != 1:
        return None
    fid, cd = filters[0]
    if fid == BITSHUFFLE:
        fid = BITSHUFFLE if len(cd) > 4 and cd[4] == _BSHUF_LZ4 else None  # bitshuffle's zstd: h5py
    return _decoder(fid) if fid in (BITSHUFFLE, BLOSC, ZSTD) else None


@functools.cache
def _decoder(fid: int):
    """The decoder of one filter, made once per process (finding and loading a library costs ~0.2 ms)."""
    try:
        if fid == BITSHUFFLE:
            try:
                import bitshuffle
            except ImportError:
                bitshuffle = None
            return _bitshuffle_lz4(bitshuffle)
        if fid == BLOSC:
            lib = _plugin_library("h5blosc", "blosc_decompress_ctx")
            if lib is not None:
                return _blosc(None, lib)
            import blosc2

            return _blosc(blosc2)
        if fid == ZSTD:
            lib = _plugin_library("h5zstd", "ZSTD_decompress")
            if lib is not None:
                return _zstd_c(lib)
            import zstandard

            return _zstd(zstandard)
    except ImportError as exc:
        log.debug("no direct decompression of filter %d: %s (pip install 'calibsuite_h5source[fast]')", fid, exc)
    return None


class CompressedPlan:
    """Reads one-event chunks and decompresses them, in order, a few events ahead of the reader.

    Parameters
    ----------
    direct : calibsuite_h5source.h5.fastread.DirectPlan
        Where each chunk lies (``per_chunk`` is 1) and the file descriptor.
    decode : callable
        From :func:`decoder_for`.
    skipped : numpy.ndarray of bool
        Per chunk: stored without the filter (libhdf5 does so when
        compressing would not make it smaller); read as it is.
    """

    __slots__ = ("direct", "decode", "skipped", "verified", "scalar", "limit", "_ahead", "_last", "_lock")

    def __init__(self, direct, decode, skipped):
        self.direct, self.decode, self.skipped = direct, decode, skipped
        self.verified = False
        #: events that may be read ahead (a step being written: those its writer's counters cover)
        self.limit = None
        self.scalar = direct.scalar
        self._ahead: collections.deque = collections.deque()  # (event, future), in event order
        self._last = None
        self._lock = threading.Lock()

    @property
    def dsid(self):
        return self.direct.dsid

    @property
    def dtype(self):
        return self.direct.dtype

    def _chunk(self, i: int):
        """``(address, stored size)`` of event ``i``'s chunk, or None (not written: h5py serves fill values)."""
        d = self.direct
        if not 0 <= i < d.n_axis:
            return None
        addr = int(d.offsets[i])
        return None if addr < 0 else (addr, int(d.sizes[i]), bool(self.skipped[i]))

    def _load(self, addr: int, size: int, raw: bool, out: np.ndarray | None = None) -> np.ndarray:
        d = self.direct
        if raw:  # stored unfiltered: exactly the event's bytes
            if size != d.chunk_bytes:
                raise Damaged(f"damaged chunk: stored size {size} bytes at address {addr}, expected {d.chunk_bytes}")
            if out is None:
                out = np.empty(d.event_shape, d.dtype)
            d.read_into(out, addr)
            return out
        if size <= 0 or size > 2 * d.chunk_bytes + 4096:
            raise Damaged(f"damaged chunk: stored size {size} bytes at address {addr} for {d.chunk_bytes} bytes of data")
        buf = np.empty(size, np.uint8)
        view, done = memoryview(buf), 0
        while done < size:
            n = os.preadv(d.fd, [view[done:]], addr + done)
            if n <= 0:
                raise OSError(f"truncated file: {size} bytes expected at address {addr}, the file ends after {done}")
            done += n
        return self.decode(buf, d.event_shape, d.dtype, out)

    def read_rows(self, idx: np.ndarray, out: np.ndarray, at: int):
        """Decompress events ``idx`` into ``out[at:]`` on the thread pool (in this thread without one).

        Returns None, or the positions (into ``idx``) of events whose chunk is not written.
        """
        where = [self._chunk(int(i)) for i in idx]
        missing = [j for j, w in enumerate(where) if w is None]
        todo = [(j, w) for j, w in enumerate(where) if w is not None]
        if PREFETCH and self.decode.parallel and len(todo) > 1:
            pool = _executor()
            futures = [pool.submit(self._load, *w, out[at + j]) for j, w in todo]
            try:
                for fut in futures:
                    fut.result()
            finally:
                for fut in futures:
                    fut.cancel()
        else:
            for j, w in todo:
                self._load(*w, out[at + j])
        return np.asarray(missing, dtype=np.int64) if missing else None

    def read(self, i: int):
        """Event ``i`` as a new array, or None to read it through h5py."""
        with self._lock:
            where = self._chunk(i)
            if where is None:
                self._drop()
                return None
            future = None
            if self._ahead and self._ahead[0][0] == i:
                future = self._ahead.popleft()[1]
            elif self._ahead:
                self._drop()
            sequential = self._last is not None and i == self._last + 1
            self._last = i
            if PREFETCH and sequential and self.decode.parallel:
                self._schedule(i + 1)
        return self._load(*where) if future is None else future.result()

    def _schedule(self, start: int) -> None:
        nxt = self._ahead[-1][0] + 1 if self._ahead else start
        pool = _executor()
        while len(self._ahead) < PREFETCH and (self.limit is None or nxt < self.limit):
            where = self._chunk(nxt)
            if where is None:
                return
            self._ahead.append((nxt, pool.submit(self._load, *where)))
            nxt += 1

    def _drop(self) -> None:
        """Forget the events decompressed ahead (the reader went elsewhere)."""
        while self._ahead:
            self._ahead.popleft()[1].cancel()

    def close(self) -> None:
        """Cancel what is queued (nothing is read after this for this plan)."""
        with self._lock:
            self._drop()
