"""Open a run file read-only: the one place a reader opens an HDF5 file.

Every failure becomes a clear :class:`~calibsuite_h5source.errors.NotHDF5Error`
naming the file; a file a writer holds is opened without HDF5's file lock
(``docs/format.rst``, "What a live file looks like").
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from calibsuite_h5source.errors import NotHDF5Error
from calibsuite_h5source.h5.guard import guard
from calibsuite_h5source.h5.retry import retry

__all__ = ["open_h5", "open_unlocked", "is_unlocked"]


def open_h5(path) -> h5py.File:
    """Open ``path`` read-only, turning every failure into a clear :class:`NotHDF5Error`."""
    with guard(str(path), None, "opening the file"):
        return _open_h5(Path(path))


def _open_h5(p: Path) -> h5py.File:
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
        return h5py.File(p, "r")
    except OSError as exc:
        if "unable to lock file" not in str(exc).lower():
            raise NotHDF5Error(f"HDF5 file is truncated or corrupted: {exc}", file=str(p)) from exc
        try:  # a writer holds it: read what it has made durable (docs/format.rst, "What a live file looks like")
            return open_unlocked(p)
        except OSError as exc2:
            raise NotHDF5Error(f"the file is being written and could not be read without its lock: {exc2}",
                               file=str(p)) from exc2


def open_unlocked(path, attempts: int = 5) -> h5py.File:
    """Open a file that a writer holds, read-only and without HDF5's file lock.

    A flush of the writer can be caught half-done, so a failed open is
    retried a few times (``attempts``, 20 ms apart) before its error is raised.
    """
    return retry(lambda: h5py.File(path, "r", locking=False), attempts=attempts, on=(OSError,), delay=0.02,
                 what=f"opening {path} without its lock")


def is_unlocked(f: h5py.File) -> bool:
    """True when ``f`` was opened without HDF5's file lock (:func:`open_unlocked`: a writer holds it)."""
    try:
        return not f.id.get_access_plist().get_file_locking()[0]
    except (AttributeError, OSError):
        return False
