"""psana's geometry text: parse the table and build the object tree.

The format (``geometry-def-*.data``, psana's ``geometry`` calibration type) is
one object per line::

    PARENT IND  OBJECT IND  X0 Y0 Z0  ROT-Z ROT-Y ROT-X  TILT-Z TILT-Y TILT-X

positions in µm, angles in degrees, each relative to the parent's frame;
``#`` starts a comment line, blank lines are skipped. An object whose name is
a sensor type (:mod:`calibsuite_h5source.geometry.segments`) is a segment (a
leaf); any other object holds the objects that name it as parent, in the
order of their lines. A parent named by no line (usually ``IP``) is the top.
As psana does, a positive ``Z0`` of an object whose parent's name starts with
``IP`` is made negative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from calibsuite_h5source.errors import FormatError
from calibsuite_h5source.geometry.segments import is_segment_name

__all__ = ["GeometryError", "GeoObject", "parse_geometry"]

N_FIELDS = 13


class GeometryError(FormatError):
    """Geometry text that cannot be parsed or does not describe one tree of segments."""


@dataclass(eq=False)
class GeoObject:
    """One object of the geometry tree (a line of the text, or the implied top)."""

    name: str
    index: int
    parent: tuple[str, int] | None = None
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # about z, y, x (degrees)
    tilt: tuple[float, float, float] = (0.0, 0.0, 0.0)  # about z, y, x (degrees)
    children: list = field(default_factory=list)

    @property
    def is_segment(self) -> bool:
        return is_segment_name(self.name)

    def segments(self):
        """The segment objects under this one, in psana's order (depth first, line order)."""
        if self.is_segment:
            return [self]
        return [s for child in self.children for s in child.segments()]


def _fail(msg, file, h5path, line_no=None):
    where = f"line {line_no}: " if line_no is not None else ""
    return GeometryError(f"geometry text {where}{msg}", file=file, h5path=h5path)


def _parse_line(line, line_no, file, h5path) -> GeoObject:
    f = line.split()
    if len(f) != N_FIELDS:
        raise _fail(f"needs {N_FIELDS} fields (PARENT IND OBJECT IND X0 Y0 Z0 ROT-Z ROT-Y ROT-X TILT-Z TILT-Y "
                    f"TILT-X); found {len(f)}: {line.strip()!r}", file, h5path, line_no)
    try:
        pindex, oindex = int(f[1]), int(f[3])
        v = [float(x) for x in f[4:]]
    except ValueError as exc:
        raise _fail(f"indexes must be integers and positions/angles numbers: {line.strip()!r}",
                    file, h5path, line_no) from exc
    if f[0][:2] == "IP" and v[2] > 0:
        v[2] = -v[2]
    return GeoObject(f[2], oindex, (f[0], pindex), tuple(v[0:3]), tuple(v[3:6]), tuple(v[6:9]))


def parse_geometry(text: str, *, file: str | None = None, h5path: str | None = None) -> GeoObject:
    """Parse geometry text and return the top object of its tree.

    Parameters
    ----------
    text : str
        psana's geometry text.
    file, h5path : str, optional
        Where the text came from, for error messages.

    Raises
    ------
    GeometryError
        Malformed lines, no objects, a line naming itself or a loop as parent,
        an object without segments, or more than one top.
    """
    if not isinstance(text, str):
        raise GeometryError(f"geometry must be text; found {type(text).__name__}", file=file, h5path=h5path)
    objects: list[GeoObject] = []
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line[0] == "#":
            continue
        objects.append(_parse_line(line, no, file, h5path))
    if not objects:
        raise GeometryError("geometry text has no object lines", file=file, h5path=h5path)
    by_key: dict[tuple[str, int], GeoObject] = {}
    for obj in objects:
        by_key.setdefault((obj.name, obj.index), obj)
    tops: dict[tuple[str, int], GeoObject] = {}
    for obj in objects:
        parent = by_key.get(obj.parent) if obj.parent != (obj.name, obj.index) else None
        if parent is None:
            if obj.parent == (obj.name, obj.index):
                raise GeometryError(f"object {obj.name}:{obj.index} names itself as parent", file=file, h5path=h5path)
            parent = tops.setdefault(obj.parent, GeoObject(*obj.parent))
        parent.children.append(obj)
    if len(tops) != 1:
        names = sorted(f"{n}:{i}" for n, i in tops) or ["none (every object has a parent: a loop)"]
        raise GeometryError(f"geometry must have exactly one top object (a parent no line defines); found "
                            f"{', '.join(names)}", file=file, h5path=h5path)
    top = next(iter(tops.values()))
    _check_tree(top, file, h5path)
    return top


def _check_tree(top: GeoObject, file, h5path) -> None:
    seen = set()
    stack = [top]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            raise GeometryError(f"object {obj.name}:{obj.index} is reached twice (a loop)", file=file, h5path=h5path)
        seen.add(id(obj))
        if obj.is_segment and obj.children:
            raise GeometryError(f"segment {obj.name}:{obj.index} cannot be a parent", file=file, h5path=h5path)
        if not obj.is_segment and not obj.children:
            raise GeometryError(f"object {obj.name}:{obj.index} is neither a known segment type nor a parent of "
                                f"one", file=file, h5path=h5path)
        stack.extend(obj.children)
