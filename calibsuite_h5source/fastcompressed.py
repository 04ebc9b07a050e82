"""Compressed chunks (bitshuffle-LZ4, Blosc, Zstd) decompressed outside h5py, a few events ahead.

h5py serialises every read behind its global lock, so a compressed run is
decompressed on one core however many the machine has. For a dataset whose
chunks each hold one event, compressed by exactly one of the filters below,
:mod:`calibsuite_h5source.fastread` hands reads to a :class:`CompressedPlan`:
the chunk's bytes are read with ``os.preadv`` and decompressed by a Python
package that releases the GIL, on a small thread pool that works, in order,
up to :data:`PREFETCH` events ahead of a sequential reader. Memory stays
bounded: at most ``PREFETCH`` decompressed events wait per dataset being read.

==================== ========= ===================================================
HDF5 filter          id        decompressed by (optional extra ``fast``)
==================== ========= ===================================================
bitshuffle + LZ4     32008     ``bitshuffle.decompress_lz4`` (the filter's own code)
Blosc (any codec)    32001     ``blosc2.decompress`` (reads Blosc-1 chunks)
Zstd                 32015     ``zstandard`` (one frame per chunk)
==================== ========= ===================================================

Without the package, or for any other filter pipeline, h5py reads the data.
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
import logging
import os
import struct
import threading

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["decoder_for", "CompressedPlan", "PREFETCH", "WORKERS"]

BITSHUFFLE, BLOSC, ZSTD = 32008, 32001, 32015
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

    def decode(buf, shape, dtype):
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
        try:
            out = bitshuffle.decompress_lz4(np.frombuffer(buf, np.uint8, offset=12), shape, dtype, block)
        except Exception as exc:
            raise Damaged(f"damaged bitshuffle chunk: {exc}") from exc
        return out

    return decode


def _blosc(blosc2):
    header = struct.Struct("<BBBBIII").unpack_from
    blosc2.set_releasegil(True)  # let the pool's threads decompress in parallel

    def decode(buf, shape, dtype):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(buf) < 16:
            raise Damaged(f"damaged Blosc chunk: {len(buf)} bytes, shorter than its header")
        _version, _lz, _flags, _typesize, size, _blocksize, cbytes = header(buf, 0)
        if size != nbytes or cbytes != len(buf):
            raise Damaged(f"damaged Blosc chunk: declares {size} bytes uncompressed and {cbytes} compressed; "
                          f"the event has {nbytes}, the chunk {len(buf)}")
        out = np.empty(shape, dtype)
        try:
            blosc2.decompress(buf, dst=out)
        except Exception as exc:
            raise Damaged(f"damaged Blosc chunk: {exc}") from exc
        return out

    return decode


def _zstd(zstandard):
    local = threading.local()

    def decode(buf, shape, dtype):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        try:
            declared = zstandard.frame_content_size(buf)
        except Exception as exc:
            raise Damaged(f"damaged Zstd chunk: {exc}") from exc
        if declared != nbytes:
            raise Damaged(f"damaged Zstd chunk: declares {declared} bytes uncompressed, the event has {nbytes}")
        dctx = getattr(local, "dctx", None)
        if dctx is None:
            dctx = local.dctx = zstandard.ZstdDecompressor()
        try:
            data = dctx.decompress(buf, max_output_size=nbytes)
        except Exception as exc:
            raise Damaged(f"damaged Zstd chunk: {exc}") from exc
        if len(data) != nbytes:
            raise Damaged(f"damaged Zstd chunk: {len(data)} bytes decompressed, the event has {nbytes}")
        out = np.empty(shape, dtype)
        memoryview(out).cast("B")[:] = data
        return out

    return decode


def decoder_for(filters: list):
    """Return ``decode(buffer, shape, dtype) -> ndarray`` for a filter pipeline, or None (h5py reads it).

    Parameters
    ----------
    filters : list of (id, cd_values)
        The dataset's pipeline (``dcpl.get_filter(k)[0]`` and ``[2]``).
    """
    if len(filters) != 1:
        return None
    fid, cd = filters[0]
    try:
        if fid == BITSHUFFLE and len(cd) > 4 and cd[4] == _BSHUF_LZ4:
            import bitshuffle

            return _bitshuffle_lz4(bitshuffle)
        if fid == BLOSC:
            import blosc2

            return _blosc(blosc2)
        if fid == ZSTD:
            import zstandard

            return _zstd(zstandard)
    except ImportError as exc:
        log.debug("no direct decompression of filter %d: %s (pip install 'calibsuite_h5source[fast]')", fid, exc)
    return None


class CompressedPlan:
    """Reads one-event chunks and decompresses them, in order, a few events ahead of the reader.

    Parameters
    ----------
    direct : calibsuite_h5source.fastread.DirectPlan
        Where each chunk lies (``per_chunk`` is 1) and the file descriptor.
    decode : callable
        From :func:`decoder_for`.
    skipped : numpy.ndarray of bool
        Per chunk: stored without the filter (libhdf5 does so when
        compressing would not make it smaller); read as it is.
    """

    __slots__ = ("direct", "decode", "skipped", "verified", "scalar", "_ahead", "_last", "_lock")

    def __init__(self, direct, decode, skipped):
        self.direct, self.decode, self.skipped = direct, decode, skipped
        self.verified = False
        self.scalar = direct.scalar
        self._ahead: collections.deque = collections.deque()  # (event, future), in event order
        self._last = None
        self._lock = threading.Lock()

    @property
    def dsid(self):
        return self.direct.dsid

    def _chunk(self, i: int):
        """``(address, stored size)`` of event ``i``'s chunk, or None (not written: h5py serves fill values)."""
        d = self.direct
        if not 0 <= i < d.n_axis:
            return None
        addr = int(d.offsets[i])
        return None if addr < 0 else (addr, int(d.sizes[i]), bool(self.skipped[i]))

    def _load(self, addr: int, size: int, raw: bool) -> np.ndarray:
        d = self.direct
        if raw:  # stored unfiltered: exactly the event's bytes
            if size != d.chunk_bytes:
                raise Damaged(f"damaged chunk: stored size {size} bytes at address {addr}, expected {d.chunk_bytes}")
            out = np.empty(d.event_shape, d.dtype)
            d.read_into(out, addr)
            return out
        if size <= 0 or size > 2 * d.chunk_bytes + 4096:
            raise Damaged(f"damaged chunk: stored size {size} bytes at address {addr} for {d.chunk_bytes} bytes of data")
        buf = bytearray(size)
        view, done = memoryview(buf), 0
        while done < size:
            n = os.preadv(d.fd, [view[done:]], addr + done)
            if n <= 0:
                raise OSError(f"truncated file: {size} bytes expected at address {addr}, the file ends after {done}")
            done += n
        return self.decode(buf, d.event_shape, d.dtype)

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
            if PREFETCH and sequential:
                self._schedule(i + 1)
        return self._load(*where) if future is None else future.result()

    def _schedule(self, start: int) -> None:
        nxt = self._ahead[-1][0] + 1 if self._ahead else start
        pool = _executor()
        while len(self._ahead) < PREFETCH:
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
