"""How run data is stored: creating the file safely, compression filters, buffered block-appended columns."""

from __future__ import annotations

import logging
import os

import h5py
import numpy as np

from calibsuite_h5source.errors import MissingDependencyError, WriterError
from calibsuite_h5source.write import linkstore
from calibsuite_h5source.write.fastwrite import append_rows

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock probing
    fcntl = None

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


def lock_state(path) -> str | None:
    """Tell whether another process holds ``path`` open through HDF5's file lock.

    HDF5 takes an exclusive ``flock`` for writing and a shared one for
    reading; this probes both without blocking and without changing the file.

    Returns
    -------
    {'written', 'read', None}
        ``'written'`` when a writer holds it, ``'read'`` when only readers do,
        None when nobody does (or locks cannot be probed here).
    """
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        for state, op in ((None, fcntl.LOCK_EX), ("read", fcntl.LOCK_SH)):
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            except OSError:  # a filesystem without flock: cannot tell
                return None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return state
        return "written"
    finally:
        os.close(fd)


def _held_message(state: str) -> str:
    if state == "written":
        return "the file is being written (another writer holds HDF5's write lock); not replaced"
    return "the file is open for reading elsewhere (a reader holds HDF5's read lock); close it first; not replaced"


#: Room made when a file is created, in links per group: steps a run can have before a group's
#: symbol table must split or regrow (RunWriter's ``expected_steps``; docs/format.rst, "Crash safety").
EXPECTED_STEPS = 2048
#: How groups store their links: ``'presized'`` (the writer's), ``'plain'`` (HDF5's defaults, the
#: writer before 0.x: for comparison only) or ``'compact'`` (HDF5 1.8 format, measured and not
#: chosen). Only ``benchmarks/bench_write.py`` changes it.
LINK_LAYOUT = "presized"


def _plists(expected_steps: int):
    """``(fapl, fcpl, gcpl)`` of a run file."""
    if LINK_LAYOUT == "presized":
        fapl, fcpl, gcpl = linkstore.presized_plists(expected_steps)
        linkstore.set_local_heap_size_hint(fcpl, 4096)  # the root group: the run's few sources
        return fapl, fcpl, gcpl
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)  # h5py's default
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    if LINK_LAYOUT == "compact":
        fapl.set_libver_bounds(h5py.h5f.LIBVER_V18, h5py.h5f.LIBVER_V18)
        gcpl = linkstore.compact_group_plist(expected_steps)
    return fapl, fcpl, gcpl


def _new_file(path: str, expected_steps: int) -> tuple[h5py.File, h5py.h5p.PropGCID]:
    """A new file at ``path`` (an error if it exists) in the writer's format; and its group-creation list."""
    fapl, fcpl, gcpl = _plists(expected_steps)
    try:
        fid = h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_EXCL, fcpl=fcpl, fapl=fapl)
    except FileExistsError:
        raise
    except OSError as exc:
        if os.path.lexists(path):
            raise FileExistsError(str(exc)) from exc
        raise
    return h5py.File(fid), gcpl


class GroupMaker:
    """Creates the run's groups, every one with the file's group-creation property list.

    Parameters
    ----------
    f : h5py.File
        The run file.
    gcpl : h5py.h5p.PropGCID
        Its group-creation property list (from :func:`create_file`).
    """

    def __init__(self, f: h5py.File, gcpl: h5py.h5p.PropGCID):
        self._f = f
        self._gcpl = gcpl
        self._made: set[str] = set()

    def require(self, h5path: str) -> h5py.Group:
        """The group ``h5path``, made (with its missing parents) when absent."""
        self.make(h5path)
        return self._f[h5path]

    def make(self, h5path: str) -> None:
        """Make the group ``h5path`` and its missing parents (nothing when it exists)."""
        h5path = h5path.strip("/")
        if not h5path or h5path in self._made:
            return
        f = self._f
        parts = h5path.split("/")
        for k in range(1, len(parts) + 1):
            sub = "/".join(parts[:k])
            if sub not in self._made and sub not in f:
                h5py.h5g.create(f.id, sub.encode(), gcpl=self._gcpl)
            self._made.add(sub)


def create_file(path: str, overwrite: bool = False,
                expected_steps: int = EXPECTED_STEPS) -> tuple[h5py.File, GroupMaker]:
    """Create a new run file at ``path`` without ever destroying a file another process holds.

    Returns the open file and the :class:`GroupMaker` that makes its groups, with symbol tables
    sized for ``expected_steps`` steps.

    Without ``overwrite`` an existing file is an error. With it, the existing
    file is locked exclusively first (refused when another process holds it),
    the new file is created beside it and renamed over it while the lock is
    held, so the old file is never truncated in place.

    Raises
    ------
    WriterError
        The file exists (without ``overwrite``), is held by another process,
        or cannot be created.
    """
    try:
        if not overwrite or not os.path.lexists(path):
            f, gcpl = _new_file(path, expected_steps)
            return f, GroupMaker(f, gcpl)
    except FileExistsError as exc:
        state = lock_state(path)
        raise WriterError(_held_message(state) if state else "file exists; pass overwrite=True to replace it",
                          file=path) from exc
    except OSError as exc:
        raise WriterError(f"cannot create the file: {exc}", file=path) from exc
    target = os.path.realpath(path)
    if not os.path.isfile(target):
        raise WriterError("exists and is not a regular file; not replaced", file=path)
    try:
        fd = os.open(target, os.O_RDONLY)
    except OSError as exc:
        raise WriterError(f"cannot open the existing file to replace it: {exc}", file=path) from exc
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{os.getpid()}.tmp")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise WriterError(_held_message(lock_state(target) or "written"), file=path) from exc
            except OSError:  # a filesystem without flock: nothing to probe
                log.debug("%s: cannot lock; replacing without the probe", path)
        try:
            f, gcpl = _new_file(tmp, expected_steps)
        except OSError as exc:
            raise WriterError(f"cannot create the file beside the one it replaces: {exc}", file=path) from exc
        try:
            os.replace(tmp, target)
        except OSError as exc:
            f.close()
            os.unlink(tmp)
            raise WriterError(f"cannot replace the file: {exc}", file=path) from exc
        return f, GroupMaker(f, gcpl)
    finally:
        os.close(fd)  # releases the lock on the old file, which is no longer at this path


class Column:
    """Buffered per-event values of one dataset of one step, appended in blocks.

    Parameters
    ----------
    create : callable
        ``create(h5path, shape, dtype, block) -> h5py.Dataset``, called at the first write: a
        dataset resizable along its first axis, holding ``block`` (``[n, *shape]``, n may be 0).
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
        self.n_rows = 0

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
        if self.ds is None:  # created holding its first block: one HDF5 call for a short step
            self.ds = self.create(self.h5path, self.shape, self.dtype, block)
            self.n_rows = len(block)
        elif len(block):
            append_rows(self.ds, self.n_rows, block)
            self.n_rows += len(block)
