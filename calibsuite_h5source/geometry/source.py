"""Which geometry a run's detector uses, and its pixel coordinates and images.

In order (as psana: the run's geometry constants, else its default file):

1. ``/<det>/calib/geometry`` in the file: psana's geometry text
   (``docs/format.rst``). Its attribute ``segments`` (optional) gives the
   geometry's segment number of each stored module (default ``0..m-1``). A
   text that cannot be parsed or does not fit the frames is an error
   (:class:`~calibsuite_h5source.geometry.text.GeometryError`).
2. psana's default geometry of the detector's type
   (:mod:`calibsuite_h5source.geometry.defaults`), when its segments have
   the frames' ``[row, col]`` and there are at least as many as modules.
   The type is found by the package's one rule,
   :func:`calibsuite_h5source.format.shapes.type_of` (``detType``, then
   ``dettype``, then the name).
3. None: ``det.raw.image`` then tiles the modules, with a one-time warning.

The archon is drawn as psana draws it, without geometry: for frames of 16
banks of 300 columns the 36 fake columns of each bank are dropped (the last
36 for ``detVersion`` 1_0_0, the first 36 otherwise); narrower frames are the
image already.

The result is cached on the detector's index record: computed once per run.
"""

from __future__ import annotations

import logging

import numpy as np

from calibsuite_h5source.format.detector_types import detector_type
from calibsuite_h5source.format.shapes import type_of
from calibsuite_h5source.geometry.defaults import default_geometry_name, default_geometry_text
from calibsuite_h5source.geometry.engine import Geometry, geometry_from_text
from calibsuite_h5source.geometry.text import GeometryError
from calibsuite_h5source.h5.dataset import read_whole

log = logging.getLogger(__name__)

__all__ = ["DetectorGeometry", "detector_geometry", "archon_image", "warn_tiled"]

GEOMETRY = "geometry"  # the calib/ dataset
ARCHON_BANKS, ARCHON_BANK, ARCHON_FAKE = 16, 300, 36
_NONE = object()
_warned: set = set()


class DetectorGeometry:
    """A geometry applied to one detector's stored modules.

    Attributes
    ----------
    geometry : Geometry
        The engine.
    segments : tuple of int
        The geometry's segment number of each stored module.
    origin : str
        ``'file'`` or ``'default:<stem>'``.
    """

    def __init__(self, geometry: Geometry, segments, origin: str):
        self.geometry = geometry
        self.segments = tuple(int(s) for s in segments)
        self.origin = origin

    def pixel_coords(self):
        """``(x, y, z)`` float64 ``[module, row, col]`` (µm), new arrays, as psana's ``det.raw._pixel_coords()``."""
        return tuple(np.take(a, self.segments, axis=-3) for a in self.geometry.pixel_coords())

    def pixel_coord_indexes(self):
        """``(rows, cols)`` uint64 ``[module, row, col]``, as psana's ``det.raw._pixel_coord_indexes()``."""
        return tuple(np.take(a, self.segments, axis=-3) for a in self.geometry.pixel_coord_indexes())

    def image(self, nda, **kwargs):
        """The image of ``nda`` (the stored modules' values), as psana's ``det.raw.image``."""
        return self.geometry.image(nda, self.segments, **kwargs)


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError(type(value).__name__)


def read_geometry_text(group):
    """The text of ``group['geometry']`` and its ``segments`` attribute (or None), or ``(None, None)``."""
    if group is None or GEOMETRY not in group:
        return None, None
    ds = group[GEOMETRY]
    try:
        text = _text(read_whole(ds))
    except (TypeError, UnicodeDecodeError, AttributeError) as exc:
        raise GeometryError(f"geometry must be a scalar UTF-8 string; found {getattr(ds, 'dtype', type(ds))} "
                            f"shape {getattr(ds, 'shape', None)}", file=group.file.filename, h5path=ds.name) from exc
    segments = ds.attrs.get("segments")
    return text, None if segments is None else [int(s) for s in np.atleast_1d(segments)]


def _fits(g: Geometry, segments, frame_shape):
    """None when ``g`` places these modules, else why not."""
    m, rows, cols = frame_shape
    if g.segment.shape != (rows, cols):
        return f"its {g.segment.name} segments are {g.segment.shape}, the frames' modules {(rows, cols)}"
    if len(segments) != m:
        return f"it names {len(segments)} segments for {m} stored modules"
    bad = [s for s in segments if not 0 <= s < g.n_segments]
    if bad or len(set(segments)) != len(segments):
        return f"segments {list(segments)} are not distinct numbers in 0..{g.n_segments - 1}"
    return None


def _resolve(src):
    shape = tuple(src.frame_shape)
    if len(shape) != 3:
        return None
    group = src.calib_group
    text, segments = read_geometry_text(group)
    if text is not None:
        where = dict(file=group.file.filename, h5path=f"{group.name}/{GEOMETRY}")
        g = geometry_from_text(text, **where)
        segments = list(range(shape[0])) if segments is None else segments
        why = _fits(g, segments, shape)
        if why:
            raise GeometryError(f"this geometry does not fit the detector's frames {list(shape)}: {why}", **where)
        return DetectorGeometry(g, segments, "file")
    stem = _default_stem(src, shape[0])
    if stem is None:
        return None
    g = geometry_from_text(default_geometry_text(stem))
    segments = list(range(shape[0]))
    why = _fits(g, segments, shape)
    if why:
        log.debug("%s: psana's default geometry %s does not fit: %s", src.name, stem, why)
        return None
    return DetectorGeometry(g, segments, f"default:{stem}")


def _str(v):
    return v.decode() if isinstance(v, bytes) else v


def _default_stem(src, modules: int) -> str | None:
    """psana's default geometry file stem for the detector's type, or None.

    The type is the one rule's (:func:`calibsuite_h5source.format.shapes.type_of`);
    the names that give that type (attributes, then the group's name) pick
    psana's variant of it (``epixhremu``, ``epixuhr3x2``; the jungfrau's by module count).
    """
    t = type_of(src.name, src.attrs)
    if t is None:
        return None
    names = [_str(src.attrs.get(k)) for k in ("detType", "dettype")] + [src.name]
    return default_geometry_name(*[n for n in names if n and detector_type(n) == t], modules=modules)


def detector_geometry(src) -> DetectorGeometry | None:
    """The :class:`DetectorGeometry` of a detector (an ``AreaSource``), or None; cached per run."""
    cached = src.__dict__.get("_geometry", _NONE)
    if cached is _NONE:
        cached = _resolve(src)
        src.__dict__["_geometry"] = cached
    return cached


def is_archon(src) -> bool:
    """True for an archon (psana draws its image without geometry)."""
    t = type_of(src.name, src.attrs)
    return t is not None and t.psana_type == "archon"


def archon_image(nda, version=None) -> np.ndarray:
    """psana's archon image: fake columns of each bank dropped from ``[row, 4800]`` frames, else the frame."""
    a = np.asarray(nda)
    a = a.reshape(a.shape[-2:]) if a.ndim > 2 and a.size == a.shape[-2] * a.shape[-1] else a
    if a.ndim != 2 or a.shape[1] != ARCHON_BANKS * ARCHON_BANK:
        return a
    real = ARCHON_BANK - ARCHON_FAKE
    first = 0 if _str(version) == "1_0_0" else ARCHON_FAKE
    return np.hstack([a[:, ARCHON_BANK * i + first:ARCHON_BANK * i + first + real] for i in range(ARCHON_BANKS)])


def warn_tiled(src) -> None:
    """Warn once per detector (name and frame shape) that its image is tiled, not drawn from a geometry."""
    key = (src.name, tuple(src.frame_shape))
    if key in _warned:
        return
    _warned.add(key)
    log.warning("%s: no geometry for this detector (none in the file, no psana default for its type that fits "
                "frames %s); det.raw.image tiles its modules instead of placing them as psana would",
                src.name, list(src.frame_shape))


def geometry_text(value) -> str:
    """The geometry text of ``value``: the text itself, or the path of a ``geometry-def-*.data`` file."""
    import os
    if isinstance(value, os.PathLike) or (isinstance(value, str) and "\n" not in value and os.path.isfile(value)):
        with open(value, encoding="utf-8") as f:
            return f.read()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"geometry must be text or a path; found {type(value).__name__}")
    return value


def prepare_geometry(value, frame_shape=None, *, file=None, h5path=None):
    """``(text, metadata)`` to store as ``calib/geometry``, checked (for :class:`RunWriter`).

    ``value`` is the text, a path, or ``(text or path, metadata dict)``; the
    metadata's ``segments`` (geometry segment of each stored module) is kept.
    Raises :class:`~calibsuite_h5source.errors.WriterError` for text that does
    not parse or does not fit ``frame_shape`` (``[module, row, col]``, when known).
    """
    from calibsuite_h5source.errors import WriterError
    value, meta = value if isinstance(value, tuple) else (value, {})
    try:
        text = geometry_text(value)
        g = geometry_from_text(text)
        if frame_shape is not None:
            segments = meta.get("segments")
            segments = list(range(frame_shape[0])) if segments is None else [int(s) for s in np.atleast_1d(segments)]
            why = _fits(g, segments, tuple(frame_shape))
            if why:
                raise GeometryError(f"this geometry does not fit the frames {list(frame_shape)}: {why}")
    except (GeometryError, TypeError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise WriterError(f"geometry: {getattr(exc, 'rule', exc)}", file=file, h5path=h5path) from exc
    return text, dict(meta)


def default_geometry_for(frame_shape, *names) -> str | None:
    """psana's default geometry text for a detector type (first known of ``names``) when it fits ``frame_shape``."""
    shape = tuple(int(n) for n in frame_shape)
    stem = default_geometry_name(*names, modules=shape[0])
    if stem is None:
        return None
    text = default_geometry_text(stem)
    return text if _fits(geometry_from_text(text), list(range(shape[0])), shape) is None else None


def geometry_problem(group, frame_shape) -> str | None:
    """Why ``group['geometry']`` (a detector's ``calib/``) does not place frames of ``frame_shape``, or None.

    None also when the group holds no geometry (for ``calibsuite-h5 validate``).
    """
    try:
        text, segments = read_geometry_text(group)
        if text is None:
            return None
        g = geometry_from_text(text)
        shape = tuple(int(n) for n in frame_shape)
        return _fits(g, list(range(shape[0])) if segments is None else segments, shape)
    except GeometryError as exc:
        return exc.rule
