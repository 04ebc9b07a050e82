"""The one place where failures of reads from an open file become :class:`H5SourceError`.

Once a run file is open, anything can still go wrong when a chunk, an object
header or a heap is read: h5py raises ``OSError`` for a damaged chunk,
``KeyError`` for an object that cannot be opened, ``RuntimeError`` for a
soft-link loop, ``PermissionError`` when the folder loses its permissions,
and ``AttributeError``/``TypeError``/``ValueError`` where it returns None, a
named ``Datatype`` or data of an unexpected kind. Every read made after the
file was opened goes through :func:`guarded` (a decorator, for per-event
reads: nothing is computed unless the read fails) or :class:`guard` (a
context manager, for blocks of code such as opening a run or loading a lazy
step), and both translate with :func:`translate`.

A new read path (for instance a direct-chunk reader) reuses this by
decorating its read function with ``@guarded(locate)``.

Errors that are already :class:`H5SourceError`, and ``BaseException``\\ s
that are not ``Exception`` (``KeyboardInterrupt``, ``SystemExit``), pass
through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from calibsuite_h5source.errors import DamagedFileError, FormatError, H5SourceError, NotHDF5Error

__all__ = ["translate", "guard", "guarded"]

#: h5py/libhdf5 failures: the bytes on disk could not be read or decoded.
_LIBRARY = (OSError, KeyError, RuntimeError)


def translate(exc: BaseException, file: str | None, h5path: str | None, doing: str) -> H5SourceError:
    """Return the :class:`H5SourceError` that stands for ``exc``, raised while ``doing``.

    Parameters
    ----------
    exc : BaseException
        What h5py, numpy or python raised.
    file, h5path : str or None
        Where: the file and the HDF5 path inside it.
    doing : str
        What was being done (``"reading event 3"``), for the message.

    Returns
    -------
    H5SourceError
        ``exc`` itself when it already is one; a :class:`NotHDF5Error` for
        ``PermissionError``; a :class:`DamagedFileError` for library failures
        (``OSError``, ``KeyError``, ``RuntimeError``); else a
        :class:`FormatError` (an object of an unexpected kind or value).
    """
    if isinstance(exc, H5SourceError):
        return exc
    found = f"{type(exc).__name__}: {_text(exc)}"
    if isinstance(exc, PermissionError):
        cls, rule = NotHDF5Error, "permission denied: the file and its folder must stay readable"
    elif isinstance(exc, _LIBRARY):
        cls, rule = DamagedFileError, "the data must be readable: the file is damaged or truncated"
    else:
        cls, rule = FormatError, "an HDF5 object of an unexpected kind or value"
    return cls(f"{rule}; {doing} failed with {found}", file=file, h5path=h5path)


def _text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:  # KeyError repr()s its message
        return str(exc.args[0])
    return str(exc)


class guard:  # noqa: N801 - used as a context manager, like contextlib's
    """Context manager: translate every failure inside the block with :func:`translate`.

    Parameters
    ----------
    file, h5path : str or None
        Where the block reads.
    doing : str
        What the block does, for the message.

    Examples
    --------
    >>> with guard("run.h5", "/timestamp/3", "loading the timestamps of step 3"):
    ...     ts = group["3"][()]                                 # doctest: +SKIP
    """

    __slots__ = ("file", "h5path", "doing")

    def __init__(self, file: str | None, h5path: str | None = None, doing: str = "reading"):
        self.file, self.h5path, self.doing = file, h5path, doing

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, H5SourceError):
            return False
        raise translate(exc, self.file, self.h5path, self.doing) from exc


def guarded(locate: Callable[..., tuple[str | None, str | None, str]]):
    """Decorator: translate every failure of the decorated function with :func:`translate`.

    Parameters
    ----------
    locate : callable
        Called with the decorated function's arguments only when it fails;
        returns ``(file, h5path, doing)``. It must not raise (a failing
        ``locate`` falls back to no location).

    Notes
    -----
    When the function succeeds this costs one extra call and a ``try``
    block: cheap enough for per-event reads.
    """

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except H5SourceError:
                raise
            except Exception as exc:
                try:
                    file, h5path, doing = locate(*args, **kwargs)
                except Exception:  # the location itself is unreadable
                    file, h5path, doing = None, None, f"{func.__qualname__}"
                raise translate(exc, file, h5path, doing) from exc

        return wrapper

    return decorate
