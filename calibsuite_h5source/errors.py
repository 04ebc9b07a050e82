"""The package's one exception family.

Every error raised for bad input names the file, the HDF5 path inside it,
the rule that was broken and what was found instead, so that the person who
wrote the file can fix it without reading this package's code::

    FormatError: run.h5: /epixM/2: per-event data must be [module, row, col]; found shape (10, 192, 384)
"""

from __future__ import annotations

__all__ = [
    "H5SourceError",
    "NotHDF5Error",
    "FormatError",
    "MissingScriptTypeError",
    "InconsistentRunError",
    "HeaderError",
    "DataTypeError",
    "TimestampError",
    "EventCountError",
    "LinkError",
    "DamagedFileError",
    "UnknownDetectorError",
    "UnknownScriptTypeError",
    "WriterError",
    "MissingDependencyError",
    "ArrayTooLargeError",
    "WriterGoneError",
]


class H5SourceError(Exception):
    """Base class of every error this package raises on purpose.

    Parameters
    ----------
    message : str
        What rule was broken and what was found.
    file : str, optional
        The file concerned.
    h5path : str, optional
        The HDF5 path inside the file (``/epixM/2``).
    """

    def __init__(self, message: str, *, file: str | None = None, h5path: str | None = None):
        self.file = None if file is None else str(file)
        self.h5path = h5path
        self.rule = message
        parts = [p for p in (self.file, h5path) if p]
        super().__init__(": ".join(parts + [message]))


class NotHDF5Error(H5SourceError, OSError):
    """The file is missing, unreadable, not HDF5, or truncated/corrupted."""


class FormatError(H5SourceError, ValueError):
    """The file is HDF5 but breaks a rule of the run layout (docs/format.rst)."""


class MissingScriptTypeError(FormatError):
    """The header has no ``scriptType``: the reader refuses such a file."""


class InconsistentRunError(FormatError):
    """Detectors, timestamps or scan values disagree on steps or events."""


class HeaderError(FormatError):
    """A header or attribute value of the wrong type or out of range (``run = 'yesterday'``)."""


class DataTypeError(FormatError):
    """Data of a kind the rule does not allow: string or compound frames, a null dataspace."""


class TimestampError(FormatError):
    """Timestamps that are not unsigned, finite 64-bit integers (negative, NaN, compound...)."""


class EventCountError(InconsistentRunError):
    """An event count that is not a non-negative integer no larger than the data."""


class LinkError(FormatError):
    """An external link or virtual-dataset source that leaves the run's folder, is missing, or loops."""


class DamagedFileError(NotHDF5Error):
    """Reading an object of an open file failed: a damaged chunk, header or heap.

    Raised by :mod:`calibsuite_h5source.h5.guard`, which wraps every failure of
    a read made after the file was opened.
    """


class UnknownDetectorError(H5SourceError, KeyError):
    """A detector name that the run does not hold (a ``KeyError``, as in psana)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0] if self.args else ""


class UnknownScriptTypeError(H5SourceError, ValueError):
    """A ``scriptType`` that is not in the recognised list (the writer refuses it)."""


class WriterError(H5SourceError, ValueError):
    """Data handed to the writer breaks a rule; raised before anything is written."""


class MissingDependencyError(H5SourceError, ImportError):
    """An optional dependency (psana, mpi4py, hdf5plugin, matplotlib) is not installed."""


class ArrayTooLargeError(H5SourceError, MemoryError):
    """A whole-array read (``det.raw.frames``) would exceed its memory limit; nothing was read."""


class WriterGoneError(H5SourceError):
    """A run followed live (``live=True``) ends incomplete: its writer died, closed it after an error, or went quiet.

    The message says why and what was read.
    """
