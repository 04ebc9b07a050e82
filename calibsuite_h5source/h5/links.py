"""Links may point only inside the run file's folder; every member is opened through here.

An HDF5 file can hold soft links, external links (to an object in another
file) and virtual datasets (whose data lives in source datasets, possibly in
other files). A run file may use them to keep its data beside it, e.g. a
master file linking the data files written in the same folder. The rules:

* an external link or virtual-dataset source must resolve to an existing file
  inside the run file's folder (or a sub-folder), and its target object must
  exist: otherwise :class:`~calibsuite_h5source.errors.LinkError`;
* a soft link must resolve (no dangling links, no loops);
* a virtual dataset with a missing source file or dataset is an error, never
  the fill value (libhdf5 would silently serve zeros).

:func:`open_member` checks one link and returns the object; the layout
collectors open every member they use through it (or :func:`items`).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from calibsuite_h5source.errors import LinkError
from calibsuite_h5source.h5.filters import require_filters

__all__ = ["Origin", "open_member", "items", "check_virtual"]


class Origin:
    """The run file whose folder bounds every link; also names the file in errors.

    Parameters
    ----------
    path : str
        The run file as the user named it.
    zero_copy : bool
        How its large frames are read (:mod:`calibsuite_h5source.h5.fastread`):
        as private copy-on-write mappings of the file instead of copies.
    """

    __slots__ = ("file", "folder", "zero_copy", "_checked")

    def __init__(self, path, zero_copy: bool = False):
        self.file = str(path)
        self.zero_copy = bool(zero_copy)
        self.folder = Path(path).resolve().parent
        self._checked: dict[tuple[str, str], None] = {}  # virtual sources already found

    def inside(self, target: Path) -> bool:
        """True when ``target`` (resolved) is the run folder or below it."""
        return target == self.folder or self.folder in target.parents

    def resolve_target(self, containing_file: str, filename: str, where: str, what: str) -> Path:
        """Return the file an external link/VDS source names, or raise :class:`LinkError`."""
        if "%" in filename:
            raise LinkError(f"{what} names {filename!r}: printf-style source names are not supported",
                            file=self.file, h5path=where)
        base = Path(containing_file).resolve().parent
        target = (base / filename).resolve()
        if not self.inside(target):
            raise LinkError(f"{what} may point only inside the run file's folder {self.folder}; "
                            f"found {filename!r} (resolves to {target})", file=self.file, h5path=where)
        if not target.is_file():
            raise LinkError(f"{what} names {filename!r}, which does not exist (looked for {target})",
                            file=self.file, h5path=where)
        return target


def _where(group: h5py.Group, name: str) -> str:
    return f"{group.name.rstrip('/')}/{name}"


def open_member(group: h5py.Group, name: str, origin: Origin):
    """Return ``group[name]`` after checking its link; None when there is no such member.

    Raises
    ------
    LinkError
        A dangling or looping soft link; an external link leaving the run
        folder or whose file or object is missing; a virtual dataset whose
        source is outside the folder or missing.
    """
    links, key = group.id.links, name.encode("utf-8")
    if not links.exists(key):
        return None
    kind = links.get_info(key).type  # cheap: no object built; hard links, by far the most common, open directly
    if kind == h5py.h5l.TYPE_HARD:
        obj = group[name]
        if isinstance(obj, h5py.Dataset):
            require_filters(obj)
            if obj.is_virtual:
                check_virtual(obj, origin)
        return obj
    where = _where(group, name)
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        target = origin.resolve_target(group.file.filename, link.filename, where, "an external link")
    try:
        obj = group[name]
    except (KeyError, RuntimeError) as exc:
        if isinstance(link, h5py.SoftLink):
            raise LinkError(f"soft link to {link.path!r} does not resolve (dangling or a loop): {exc}",
                            file=origin.file, h5path=where) from exc
        if isinstance(link, h5py.ExternalLink):
            raise LinkError(f"external link to {link.filename}:{link.path} does not resolve: {exc}",
                            file=origin.file, h5path=where) from exc
        raise
    if isinstance(link, h5py.ExternalLink):
        opened = Path(obj.file.filename).resolve()
        if opened != target:  # e.g. HDF5_EXT_PREFIX made libhdf5 open another file
            raise LinkError(f"external link to {link.filename!r} opened {opened}, not {target}",
                            file=origin.file, h5path=where)
    if isinstance(obj, h5py.Dataset):
        require_filters(obj)
        if obj.is_virtual:
            check_virtual(obj, origin)
    return obj


def items(group: h5py.Group, origin: Origin):
    """Yield ``(name, object)`` for every member of ``group``, each opened by :func:`open_member`."""
    for name in group:
        yield name, open_member(group, name, origin)


def check_virtual(ds: h5py.Dataset, origin: Origin) -> None:
    """Raise :class:`LinkError` unless every source of the virtual dataset ``ds`` exists in the run folder."""
    here = ds.file.filename
    for src in ds.virtual_sources():
        key = (src.file_name, src.dset_name)
        if key in origin._checked:
            continue
        what = f"a virtual-dataset source ({src.file_name}:{src.dset_name})"
        if src.file_name == ".":
            found = ds.file.get(src.dset_name)
        else:
            target = origin.resolve_target(here, src.file_name, ds.name, what)
            with h5py.File(target, "r") as f:
                found = f.get(src.dset_name)
                found = found if not isinstance(found, h5py.Dataset) else True
        if found is not True and not isinstance(found, h5py.Dataset):
            raise LinkError(f"{what} does not exist: the data would read as fill values",
                            file=origin.file, h5path=ds.name)
        origin._checked[key] = None
