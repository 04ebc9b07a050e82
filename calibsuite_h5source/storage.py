"""How run data is stored: compression filters and buffered, block-appended columns."""

from __future__ import annotations

import numpy as np

from .errors import MissingDependencyError, WriterError

COMPRESSIONS = (None, "gzip", "lzf", "bitshuffle", "blosc", "zstd")
BLOCK_BYTES = 32 * 2**20  # buffer up to this much per dataset before writing a block


def compression_kwargs(compression, opts=None) -> dict:
    """Return ``create_dataset`` keywords for a compression name (see ``COMPRESSIONS``)."""
    if compression in (None, "none"):
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4 if opts is None else opts}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression in ("bitshuffle", "blosc", "zstd"):
        try:
            import hdf5plugin
        except ImportError as exc:
            raise MissingDependencyError(f"compression={compression!r} needs hdf5plugin: "
                                         "pip install 'calibsuite_h5source[compression]'") from exc
        opts = dict(opts or {})
        if compression == "bitshuffle":
            return dict(hdf5plugin.Bitshuffle(cname="lz4", **opts))
        if compression == "blosc":
            return dict(hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE, **opts))
        return dict(hdf5plugin.Zstd(**opts))
    raise WriterError(f"unknown compression {compression!r}; choose one of {COMPRESSIONS}")


class Column:
    """Buffered per-event values of one dataset of one step, appended in blocks.

    Parameters
    ----------
    create : callable
        ``create(h5path, shape, dtype) -> h5py.Dataset``, called at the first write.
    h5path : str
        Where the dataset goes.
    shape, dtype
        Per-event shape and dtype.
    block_events : int
        Events buffered per block (capped at ``BLOCK_BYTES`` of data).
    """

    def __init__(self, create, h5path: str, shape: tuple, dtype, block_events: int):
        self.create, self.h5path, self.shape, self.dtype = create, h5path, shape, np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * self.dtype.itemsize)
        self.buf = np.empty((max(1, min(block_events, BLOCK_BYTES // nbytes)), *shape), self.dtype)
        self.n_buf = 0
        self.ds = None

    def append(self, value) -> None:
        self.buf[self.n_buf] = value
        self.n_buf += 1
        if self.n_buf == len(self.buf):
            self.flush()

    def write_block(self, block: np.ndarray) -> None:
        self.flush()
        self._write(block)

    def flush(self) -> None:
        if self.n_buf or self.ds is None:
            self._write(self.buf[: self.n_buf])
            self.n_buf = 0

    def _write(self, block) -> None:
        if self.ds is None:
            self.ds = self.create(self.h5path, self.shape, self.dtype)
        n = self.ds.shape[0]
        if len(block):
            self.ds.resize(n + len(block), axis=0)
            self.ds[n:] = block
