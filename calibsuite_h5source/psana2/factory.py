"""``DataSource(...)``: the one call a suite script switches.

Each backend answers ``guess_can_open(args, kwargs)`` (as xarray's backends
do); the factory asks them in turn and builds the first that says yes.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from calibsuite_h5source.errors import H5SourceError, MissingDependencyError, NotHDF5Error

log = logging.getLogger(__name__)

H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
XTC_SUFFIXES = (".xtc2", ".xtc")
#: Keywords that put psana in another mode than files mode (experiment folder, shared memory). psana
#: chooses its mode by the first of ``shmem``, ``exp``, ``files`` it is given, so with an xtc2 file they
#: are dropped: the file's BeginRun names its experiment and run, as psana's files mode reads them.
NOT_FILES_MODE = ("exp", "run", "dir", "shmem")
PSANA_INSTALL = ("the real psana is not installed: `apt-get install -y libkrb5-dev` then "
                 "`pip install 'calibsuite_h5source[psana]'` (see README.rst, 'psana interop')")


def _files(args, kwargs) -> list[str]:
    files = kwargs.get("files")
    if files is None and args and isinstance(args[0], (str, Path)) and "=" not in str(args[0]):
        files = args[0]
    if files is None:
        return []
    return [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]


class H5Backend:
    """This package's :class:`~calibsuite_h5source.psana2.source.H5DataSource`."""

    @staticmethod
    def guess_can_open(args, kwargs) -> bool:
        files = _files(args, kwargs)
        return bool(files) and all(f.lower().endswith(H5_SUFFIXES) for f in files)

    @staticmethod
    def open(args, kwargs):
        from calibsuite_h5source.psana2.source import H5DataSource

        files = _files(args, kwargs)
        for f in files:
            if not Path(f).is_file() and not (kwargs.get("live") and not Path(f).exists()):  # live: may appear
                raise NotHDF5Error("file does not exist", file=f)
        kwargs = {k: v for k, v in kwargs.items() if k != "files"}
        return H5DataSource(files=files, **kwargs)


class PsanaBackend:
    """The real psana2, imported only when chosen; every keyword passed through (but ``zero_copy``)."""

    @staticmethod
    def guess_can_open(args, kwargs) -> bool:
        files = _files(args, kwargs)
        if files:
            return all(f.lower().endswith(XTC_SUFFIXES) for f in files)
        psana1 = bool(args) and isinstance(args[0], str) and "exp=" in args[0]
        return psana1 or "shmem" in kwargs or ("exp" in kwargs and "run" in kwargs)

    @staticmethod
    def open(args, kwargs):
        try:
            psana = importlib.import_module("psana")
        except ImportError as exc:
            raise MissingDependencyError(PSANA_INSTALL) from exc
        if "zero_copy" in kwargs:  # how h5 frames are read; psana reads xtc2 its own way
            log.debug("zero_copy applies to h5 files; not passed to psana")
            kwargs = {k: v for k, v in kwargs.items() if k != "zero_copy"}
        if _files(args, kwargs):
            kwargs = files_mode(kwargs)
        return psana.DataSource(*args, **kwargs)


def files_mode(kwargs: dict) -> dict:
    """psana's keywords for its files mode: :data:`NOT_FILES_MODE` dropped (logged), the rest kept.

    A switched suite ``get_ds`` passes ``files=`` together with the ``exp=``
    and ``run=`` it always passed; psana would read those as a request for an
    experiment folder (``/reg/d/psdm/<exp>/xtc``) and ignore the file.
    """
    dropped = {k: kwargs[k] for k in NOT_FILES_MODE if k in kwargs}
    if dropped:
        log.info("xtc2 files=%s opened in psana's files mode; dropped %s (the file names its own run)",
                 kwargs.get("files"), dropped)
    return {k: v for k, v in kwargs.items() if k not in dropped}


BACKENDS = (H5Backend, PsanaBackend)


def DataSource(*args, **kwargs):  # noqa: N802 - psana's name
    """Return an h5 or a psana data source, chosen by the arguments.

    ``files='run.h5'`` (or ``.hdf5``/``.hdf``, or a list of them) gives an
    :class:`~calibsuite_h5source.psana2.source.H5DataSource`; ``.xtc2``/``.xtc`` files,
    ``exp=`` with ``run=``, ``shmem=`` or a psana1 string ``'exp=...:run=...'``
    give the real ``psana.DataSource``, with every keyword passed through; but
    xtc2 ``files=`` always open in psana's files mode, whatever experiment
    keywords come with them (``exp``, ``run``, ``dir`` and ``shmem`` are
    dropped, see :func:`files_mode`).

    Raises
    ------
    H5SourceError
        Mixed or unknown file types, or nothing to open.
    NotHDF5Error
        An h5 file that does not exist.
    MissingDependencyError
        psana was asked for but is not installed.
    """
    for backend in BACKENDS:
        if backend.guess_can_open(args, kwargs):
            return backend.open(args, kwargs)
    files = _files(args, kwargs)
    if files:
        kinds = sorted({Path(f).suffix or "(none)" for f in files})
        rule = "all files must be of one kind" if len(kinds) > 1 else "unknown file type"
        raise H5SourceError(f"{rule}: h5 runs end in {'/'.join(H5_SUFFIXES)}, psana runs in "
                            f"{'/'.join(XTC_SUFFIXES)}; found {kinds} in {files}")
    raise H5SourceError(f"nothing to open: pass files=... or exp=...,run=...; got args={args} kwargs={sorted(kwargs)}")
