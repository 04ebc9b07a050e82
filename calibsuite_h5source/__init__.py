"""Read and write LCLS calibration-suite runs stored as HDF5.

``DataSource(files='run.h5')`` returns an :class:`H5DataSource` that speaks
psana2's protocol; given an ``.xtc2`` file or ``exp=``/``run=`` it returns the
real psana ``DataSource``. See ``docs/format.rst`` for the file layout.

Public names are imported on first use, so ``import calibsuite_h5source``
stays cheap and never imports an optional dependency.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import (
    ArrayTooLargeError,
    DamagedFileError,
    DataTypeError,
    EventCountError,
    FormatError,
    H5SourceError,
    HeaderError,
    InconsistentRunError,
    LinkError,
    MissingDependencyError,
    MissingScriptTypeError,
    NotHDF5Error,
    TimestampError,
    UnknownDetectorError,
    UnknownScriptTypeError,
    WriterError,
)
from .script_types import known_script_types, register_script_type

_LAZY = {
    "DataSource": "factory",
    "H5DataSource": "source",
    "RunWriter": "writer",
    "write_run_dict": "rundict",
    "read_run_dict": "rundict",
    "validate": "validate",
    "Problem": "validate",
    "summarise": "info",
    "convert": "convert",
}

__all__ = [
    "__version__",
    "ArrayTooLargeError",
    "DamagedFileError",
    "DataTypeError",
    "EventCountError",
    "FormatError",
    "H5SourceError",
    "HeaderError",
    "InconsistentRunError",
    "LinkError",
    "MissingDependencyError",
    "MissingScriptTypeError",
    "NotHDF5Error",
    "TimestampError",
    "UnknownDetectorError",
    "UnknownScriptTypeError",
    "WriterError",
    "known_script_types",
    "register_script_type",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'calibsuite_h5source' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
