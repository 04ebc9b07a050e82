"""The geometry engine: pixel coordinates, pixel indexes and images.

:class:`Geometry` turns parsed geometry text into per-pixel coordinates in the
top (IP) frame, and images as psana's ``det.raw.image`` builds them:

* **Coordinates.** Each object's pixels (a segment's own layout, or its
  children's pixels stacked in line order) are rotated about z, then y, then
  x by ``rotation + tilt`` (degrees), then moved by ``position``, into the
  parent's frame, level by level up to the top. The arithmetic is done in the
  same order psana does it, so coordinates agree to the last bit.
* **Indexes.** ``row = uint((x - xmin) / p)``, ``col = uint((y - ymin) / p)``
  with ``xmin = x.min() - p/2`` over all segments and ``p`` the first
  segment's pixel size.
* **Images** (:class:`ImageMap`): float32, shape ``max(row)+1, max(col)+1``
  over all segments of the geometry, zero where no pixel lands. Where several
  pixels land in one bin the bin keeps the last of them in ``[segment, row,
  col]`` order: psana 4.3.4 means to keep the largest (``mapmode=2``) or the
  mean (3), but its list of shared bins is always empty (the counting loop of
  ``statistics_of_pixel_arrays`` consumes the ``zip`` iterator the list is then
  built from), so every mode but 0 (the counts per bin) draws the last value,
  and so does this. An empty bin whose four neighbours are all filled takes
  the smallest of them (``fillholes=True``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from calibsuite_h5source.geometry.segments import segment
from calibsuite_h5source.geometry.text import GeometryError, GeoObject, parse_geometry

__all__ = ["Geometry", "ImageMap", "geometry_from_text"]


def _rotate(a, b, degrees):
    """Rotate the pair of coordinate arrays ``(a, b)`` by ``degrees`` in their plane."""
    r = math.radians(degrees)
    s, c = math.sin(r), math.cos(r)
    return a * c - b * s, b * c + a * s


def _to_parent(obj: GeoObject, x, y, z):
    """An object's pixel coordinates moved into its parent's frame."""
    az, ay, ax = (rot + tilt for rot, tilt in zip(obj.rotation, obj.tilt, strict=True))
    x1, y1 = _rotate(x, y, az)
    z2, x2 = _rotate(z, x1, ay)
    y3, z3 = _rotate(y1, z2, ax)
    x0, y0, z0 = obj.position
    return x2 + x0, y3 + y0, z3 + z0


def _coords(obj: GeoObject):
    if obj.is_segment:
        x, y, z = segment(obj.name).coords()
    else:
        parts = [_coords(child) for child in obj.children]
        shapes = {p[0].shape for p in parts}
        if len(shapes) != 1:
            raise GeometryError(f"the children of {obj.name}:{obj.index} have different shapes {sorted(shapes)}")
        x, y, z = (np.stack([p[i] for p in parts]) for i in range(3))
        if x.ndim > 3:
            x, y, z = (a.reshape(-1, *a.shape[-2:]) for a in (x, y, z))
    return _to_parent(obj, x, y, z)


class Geometry:
    """A detector's geometry: segments, coordinates, indexes, image maps.

    Parameters
    ----------
    top : GeoObject
        The parsed tree (:func:`~calibsuite_h5source.geometry.text.parse_geometry`).
    text : str, optional
        The text it came from (kept for :attr:`text`).
    """

    def __init__(self, top: GeoObject, text: str | None = None):
        self.top = top
        self.text = text
        segs = top.segments()
        kinds = {s.name for s in segs}
        if len(kinds) != 1:
            raise GeometryError(f"geometry mixes segment types {sorted(kinds)}; one type per detector is supported")
        self.segment = segment(segs[0].name)
        self.n_segments = len(segs)
        self._coords = None
        self._indexes = None
        self._maps: dict = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(segments, rows, cols)`` of the arrays this geometry places."""
        return (self.n_segments, self.segment.rows, self.segment.cols)

    def pixel_coords(self):
        """``(x, y, z)``: float64 ``[segment, row, col]`` pixel coordinates (µm) in the top frame."""
        if self._coords is None:
            x, y, z = (a.reshape(self.shape) for a in _coords(self.top))
            for a in (x, y, z):
                a.flags.writeable = False
            self._coords = (x, y, z)
        return self._coords

    def pixel_coord_indexes(self):
        """``(rows, cols)``: uint64 ``[segment, row, col]`` image indexes of every pixel."""
        if self._indexes is None:
            x, y, _z = self.pixel_coords()
            p = self.segment.scale
            xmin, ymin = x.min() - p / 2, y.min() - p / 2
            rows = np.array((x - xmin) / p, dtype=np.uint)
            cols = np.array((y - ymin) / p, dtype=np.uint)
            rows.flags.writeable = cols.flags.writeable = False
            self._indexes = (rows, cols)
        return self._indexes

    def image_map(self, segments=None) -> ImageMap:
        """The :class:`ImageMap` for arrays holding ``segments`` (geometry indexes; default all)."""
        key = tuple(range(self.n_segments)) if segments is None else tuple(int(s) for s in segments)
        if key not in self._maps:
            bad = [s for s in key if not 0 <= s < self.n_segments]
            if bad or not key:
                raise GeometryError(f"segments {list(key)} are not all in this geometry's 0..{self.n_segments - 1}")
            rows, cols = self.pixel_coord_indexes()
            self._maps[key] = ImageMap(rows, cols, key)
        return self._maps[key]

    def image(self, nda, segments=None, **kwargs) -> np.ndarray:
        """Image of ``nda`` (any shape holding ``[segment, row, col]`` values), as psana's ``det.raw.image``."""
        return self.image_map(segments).image(nda, **kwargs)


class ImageMap:
    """Where each pixel of an array lands in the image, and which bins are shared or holes.

    Parameters
    ----------
    rows, cols : ndarray
        Image indexes of every pixel of the whole geometry ``[segment, row, col]``.
    segments : tuple of int
        The segments the arrays to draw hold, in their order.
    """

    def __init__(self, rows, cols, segments):
        self.shape = (int(rows.max()) + 1, int(cols.max()) + 1)
        sel = list(segments)
        r = rows[sel].ravel().astype(np.intp)
        c = cols[sel].ravel().astype(np.intp)
        self.rows, self.cols = r, c
        self.size = r.size
        # statistics over the drawn segments only (their own extent), as psana keeps them
        sub_cols = int(c.max()) + 1
        sub_shape = (int(r.max()) + 1, sub_cols)
        counts = np.bincount(r * sub_cols + c, minlength=sub_shape[0] * sub_cols).reshape(sub_shape)
        self.entries = counts.astype(np.uint16)
        self.shared = int(np.count_nonzero(counts > 1))
        self.holes = _holes(counts > 0)

    def image(self, nda, mapmode=2, fillholes=True, vbase=0, **_ignored) -> np.ndarray:
        """Draw ``nda`` (``[segment, row, col]``, or anything with the same number of values).

        ``mapmode=0`` returns the uint16 count of pixels per bin; any other
        mode draws the values (see the module doc for shared bins).
        ``fillholes`` fills isolated empty bins; ``vbase`` is the value of
        bins no pixel reaches.
        """
        if mapmode == 0:
            return self.entries.copy()
        weight = np.asarray(nda).ravel()
        if weight.size != self.size:
            raise ValueError(f"image: the array has {weight.size} values; this geometry places {self.size} "
                             f"(segments x rows x cols)")
        img = np.ones(self.shape, np.float32) * vbase if vbase else np.zeros(self.shape, np.float32)
        img[self.rows, self.cols] = weight
        if fillholes and self.holes[0].size:
            hr, hc = self.holes
            below = np.minimum(hr + 1, self.shape[0] - 1)
            right = np.minimum(hc + 1, self.shape[1] - 1)
            img[hr, hc] = np.minimum(np.minimum(img[hr - 1, hc], img[below, hc]),
                                     np.minimum(img[hr, hc - 1], img[hr, right]))
        return img


def _holes(busy: np.ndarray):
    """``(rows, cols)`` of empty bins whose four neighbours hold pixels (psana's ``image_of_holes``)."""
    n_rows, n_cols = busy.shape
    empty = ~busy
    empty[:n_rows - 1, :] &= busy[1:, :]
    empty[1:, :] &= busy[:n_rows - 1, :]
    empty[:, :n_cols - 1] &= busy[:, 1:]
    empty[:, 1:] &= busy[:, :n_cols - 1]
    return np.nonzero(empty)


@lru_cache(maxsize=4)
def geometry_from_text(text: str, file: str | None = None, h5path: str | None = None) -> Geometry:
    """Parse ``text`` into a :class:`Geometry` (cached: one engine per distinct text)."""
    return Geometry(parse_geometry(text, file=file, h5path=h5path), text)
