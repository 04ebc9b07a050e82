"""Open a run file read-only: the one place a reader opens an HDF5 file.

Every failure becomes a clear :class:`~calibsuite_h5source.errors.NotHDF5Error`
naming the file; a file a writer holds is opened without HDF5's file lock
(``docs/format.rst``, "What a live file looks like").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py

from calibsuite_h5source.errors import NotHDF5Error
from calibsuite_h5source.h5.guard import guard
from calibsuite_h5source.h5.retry import retry

__all__ = ["open_h5", "open_read_only", "open_unlocked", "is_unlocked"]

log = logging.getLogger(__name__)


def open_h5(path, **options) -> h5py.File:
    """Open ``path`` read-only, turning every failure into a clear :class:`NotHDF5Error`.

    A file another process writes (it holds HDF5's lock) is opened without the
    lock (:func:`open_unlocked`); a file this process already has open is
    shared, whichever lock flag that open used. ``options`` go to
    ``h5py.File`` (``rdcc_nbytes=`` and such).
    """
    with guard(str(path), None, "opening the file"):
        return _open_h5(Path(path), options)


def open_read_only(path, locking: bool | None, **options) -> h5py.File:
    """``h5py.File(path, "r", locking=locking)``, sharing an open of this process.

    HDF5 refuses a second open of a file in one process unless both opens
    use the same locking settings (``None``, HDF5's default, is a third
    setting); when this process already has the file open (its writer, a
    reader), that open is shared instead, with its settings. Other failures
    raise h5py's ``OSError`` as they come (callers retry or translate it).
    """
    mismatch = None
    for flag in (locking, *(other for other in (None, True, False) if other is not locking)):
        try:
            f = h5py.File(path, "r", locking=flag, **options)
        except OSError as exc:
            if "locking" not in str(exc) or "don't match" not in str(exc):
                raise  # not HDF5's "already open with other lock settings"
            mismatch = mismatch or exc
            continue
        if flag is not locking:
            log.debug("%s: already open in this process with locking=%s: shared", path, flag)
        return f
    raise mismatch


def _open_h5(p: Path, options: dict) -> h5py.File:
    if not p.exists():
        raise NotHDF5Error("file does not exist", file=str(p))
    if p.is_dir():
        raise NotHDF5Error("is a directory, not an HDF5 file", file=str(p))
    if not os.access(p, os.R_OK):
        raise NotHDF5Error("permission denied: the file is not readable", file=str(p))
    if not h5py.is_hdf5(p):
        with open(p, "rb") as fh:
            head = fh.read(8)
        raise NotHDF5Error(
            f"not an HDF5 file: no HDF5 signature; found first bytes {head!r} (size {p.stat().st_size} bytes)",
            file=str(p),
        )
    try:
        return open_read_only(p, None, **options)
    except OSError as exc:
        if "unable to lock file" not in str(exc).lower():
            raise NotHDF5Error(f"HDF5 file is truncated or corrupted: {exc}", file=str(p)) from exc
        try:  # a writer holds it: read what it has made durable (docs/format.rst, "What a live file looks like")
            return open_unlocked(p, **options)
        except OSError as exc2:
            raise NotHDF5Error(f"the file is being written and could not be read without its lock: {exc2}",
                               file=str(p)) from exc2


def open_unlocked(path, attempts: int = 5, **options) -> h5py.File:
    """Open a file that a writer holds, read-only and without HDF5's file lock.

    A flush of the writer can be caught half-done, so a failed open is
    retried a few times (``attempts``, 20 ms apart) before its error is raised.
    """
    return retry(lambda: open_read_only(path, False, **options), attempts=attempts, on=(OSError,), delay=0.02,
                 what=f"opening {path} without its lock")


def is_unlocked(f: h5py.File) -> bool:
    """True when ``f`` was opened without HDF5's file lock (:func:`open_unlocked`: a writer holds it)."""
    try:
        return not f.id.get_access_plist().get_file_locking()[0]
    except (AttributeError, OSError):
        return False
