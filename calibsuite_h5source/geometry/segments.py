"""Segment types: the pixel layout of one sensor in its own frame.

Each type named in psana's geometry text (``EPIX10KA:V1``, ``JUNGFRAU:V2``...)
has a pixel size, an ASIC layout and gaps (wide pixels at ASIC borders). The
facts come from psana's segment-geometry classes (``pscalib/geometry/
SegGeometry*.py``, lcls2); this is an independent numpy implementation of
them. A segment's coordinates are in µm, origin at the segment's centre,
``x`` along columns and ``y`` along rows as psana defines them, ``z`` zero.

``use_wide_pix_center`` is False everywhere except ``JUNGFRAU:V2``, as
psana's ``GeometryAccess`` (and so ``det.raw.image``) uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["Segment", "segment", "SEGMENT_NAMES"]


@dataclass(frozen=True, eq=False)
class Segment:
    """One sensor's pixel layout.

    Attributes
    ----------
    name : str
        The geometry text's name (``'EPIX10KA:V1'``).
    rows, cols : int
        Pixels per segment.
    scale : float
        The pixel size psana bins images with (µm).
    x, y : ndarray
        ``[rows, cols]`` float64 pixel-centre coordinates (µm).
    """

    name: str
    rows: int
    cols: int
    scale: float
    x: np.ndarray
    y: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    def coords(self):
        """``(x, y, z)``, each ``[rows, cols]`` float64 (µm)."""
        return self.x, self.y, np.zeros(self.shape)


def _grid(name, scale, x_cols, y_rows) -> Segment:
    x, y = np.meshgrid(x_cols, y_rows)
    x.flags.writeable = y.flags.writeable = False
    return Segment(name, len(y_rows), len(x_cols), scale, x, y)


def _two_by_two(name, rows, cols, pix, wide, y_down=True) -> Segment:
    """2x2 ASICs with a wide pixel row/column at the centre (epix10ka, epixhr 2x2, epix100)."""
    half = pix / 2
    x_half = np.arange(cols // 2) * pix + wide - half
    y_half = np.arange(rows // 2) * pix + wide - half
    x = np.hstack([-x_half[::-1], x_half])
    y = np.hstack([y_half[::-1], -y_half]) if y_down else np.hstack([-y_half[::-1], y_half])
    return _grid(name, pix, x, y)


def _epixhr_1x4(name) -> Segment:
    rows, cols, pix, wide = 144, 768, 100, 225
    half, quarter = pix / 2, cols // 4
    asic = np.arange(quarter) * pix - half
    x_half = np.hstack([asic + wide, asic + wide * 3 + (quarter - 1) * pix])
    y_half = np.arange(rows // 2) * pix - half
    return _grid(name, pix, np.hstack([-x_half[::-1], x_half]), np.hstack([y_half[::-1], -y_half]))


def _epixuhr_3x2(name) -> Segment:
    rows, cols, pix, wide, gap = 336, 576, 100, 262.5, 425
    arows, acols, half = rows // 2, cols // 3, pix // 2
    width = (acols - 1) * pix
    middle = np.arange(acols) * pix - width // 2
    x = np.hstack((middle - width - gap, middle, middle + width + gap))
    y_min = wide - half
    y_top = np.arange(y_min + (arows - 1) * pix, y_min - pix, -pix)
    return _grid(name, pix, x, np.hstack((y_top, -y_top[::-1])))


def _jungfrau(name, version) -> Segment:
    pix, asic = 75, 256
    steps = np.arange(asic) * pix
    x = np.hstack([steps + x0 for x0 in np.array((-512 - 2.5, -256.5, 1.5, 256 + 3.5)) * pix])
    if version == 1:
        y = np.hstack([y0 - steps for y0 in np.array((256.5, -1.5)) * pix])
    else:
        y = np.hstack([y0 + steps for y0 in np.array((-256.5, 1.5)) * pix])
        shift = 37.5  # wide pixels: centres moved half a pixel outwards
        for i in (255, 511, 767):
            x[i] += shift
            x[i + 1] -= shift
        y[255] += shift
        y[256] -= shift
    return _grid(name, pix, x, y)


def _matrix_v2(name, rows, cols, pix_rows, pix_cols, scale) -> Segment:
    x = (np.arange(cols) - float(cols - 1) / 2) * pix_cols
    y = (np.arange(rows) - float(rows - 1) / 2) * (-pix_rows)
    return _grid(name, scale, x, y)


def _matrix_v1(name, rows, cols, pix_rows, pix_cols, scale) -> Segment:
    # x runs along rows and y along columns in this (older) matrix type
    along_rows = np.arange(rows) * pix_rows
    along_cols = np.arange(cols) * pix_cols
    y, x = np.meshgrid(along_cols, along_rows)
    x.flags.writeable = y.flags.writeable = False
    return Segment(name, rows, cols, scale, x, y)


def _matrix_fields(name, last_four=True):
    fields = name.split(":")
    if len(fields) < 5:
        raise ValueError(f"matrix segment {name!r} needs rows:cols:pixel_rows:pixel_cols")
    f = fields[-4:] if last_four else fields[1:5]
    return int(f[0]), int(f[1]), float(f[2]), float(f[3])


_FIXED = {
    "EPIX10KA:V1": lambda n: _two_by_two(n, 352, 384, 100, 225),
    "EPIXHR2X2:V1": lambda n: _two_by_two(n, 288, 384, 100, 225),
    "EPIX100:V1": lambda n: _two_by_two(n, 704, 768, 50, 175, y_down=False),
    "EPIXHR1X4:V1": _epixhr_1x4,
    "EPIXUHR3X2:V1": _epixuhr_3x2,
    "EPIXMASIC:V1": lambda n: _matrix_v2(n, 192, 384, 50, 50, 50),
    "EPIXUHRASIC:V1": lambda n: _matrix_v2(n, 168, 192, 100, 100, 100),
    "JUNGFRAU:V1": lambda n: _jungfrau(n, 1),
    "JUNGFRAU:V2": lambda n: _jungfrau(n, 2),
    "PNCCD:V1": lambda n: _matrix_v1(n, 512, 512, 75, 75, 75),
}

#: segment names this module knows (plus ``MTRX:...`` and ``MTRX:V2:...`` matrices)
SEGMENT_NAMES = tuple(_FIXED)


def is_segment_name(name: str) -> bool:
    """True when ``name`` is a sensor type (a leaf of the geometry tree), as psana decides."""
    return name in _FIXED or name.startswith("MTRX") or name.startswith("ARCHON:") or name == "SENS2X1:V1"


@cache
def segment(name: str) -> Segment:
    """The :class:`Segment` of a geometry-text name.

    Raises
    ------
    ValueError
        For a sensor type this module does not implement (``SENS2X1:V1``,
        ``ARCHON:V1``...) or a malformed ``MTRX`` name.
    """
    if name in _FIXED:
        return _FIXED[name](name)
    if name.startswith("MTRX:V2"):
        rows, cols, pr, pc = _matrix_fields(name)
        return _matrix_v2(name, rows, cols, pr, pc, min(pr, pc))
    if name.startswith("MTRXANY"):
        raise ValueError(f"segment type {name!r} has no fixed shape; not supported")
    if name.startswith("MTRX"):
        rows, cols, pr, pc = _matrix_fields(name, last_four=False)
        return _matrix_v1(name, rows, cols, pr, pc, min(pr, pc))
    raise ValueError(f"segment type {name!r} is not supported (known: {', '.join(SEGMENT_NAMES)}, MTRX:...)")
