"""Read and write LCLS calibration-suite runs stored as HDF5.

``DataSource(files='run.h5')`` returns an :class:`H5DataSource` that speaks
psana2's protocol; given an ``.xtc2`` file or ``exp=``/``run=`` it returns the
real psana ``DataSource``. See ``docs/format.rst`` for the file layout.

Public names are imported on first use, so ``import calibsuite_h5source``
stays cheap and never imports an optional dependency.
"""

from __future__ import annotations

import importlib

from calibsuite_h5source._version import __version__
from calibsuite_h5source.errors import (
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
from calibsuite_h5source.format.script_types import known_script_types, register_script_type

_LAZY = {
    "DataSource": "psana2.factory",
    "H5DataSource": "psana2.source",
    "RunWriter": "write.writer",
    "write_run_dict": "write.rundict",
    "read_run_dict": "write.rundict",
    "validate": "tools.validate",
    "Problem": "tools.validate",
    "summarise": "tools.info",
    "convert": "write.convert",
    "SyntheticRun": "synthetic.run",
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
