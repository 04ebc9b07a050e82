"""psana's default geometry per detector type, carried as package data.

When a run holds no geometry for a detector, psana's ``det.raw.image`` uses
its default file for the detector's class (``_path_geo_default``). The same
files travel in ``calibsuite_h5source/geometry/data/`` with their licence
(``NOTICE`` there). Which file, as psana's classes choose it:

=================================== =========================================
type (``detType``/``dettype``/name) default file
=================================== =========================================
epixm, epixm320                     ``geometry-def-epixm320.data``
epix10ka, epix10kaquad, epixquad    ``geometry-def-epix10kaquad.data``
epix100, epix100a                   ``geometry-def-epix100a.data``
jungfrau                            ``geometry-def-jungfrau{05M,1M,4M,16M}.data``
                                    by module count (1, 2, up to 8, more)
jungfrauemu                         ``geometry-def-jungfrau4M.data``
epixhr, epixhr2x2                   ``geometry-def-epixhr2x2.data``
epixhremu                           ``geometry-def-epixhr1x4-20.data``
epixuhr                             ``geometry-def-epixuhr.data``
epixuhr3x2                          ``geometry-def-epixuhr3x2-02.data``
=================================== =========================================

The archon has no default here: psana draws its image without geometry
(the banks side by side, fake pixels dropped).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from calibsuite_h5source.format.detector_types import detector_type

__all__ = ["default_geometry_name", "default_geometry_text"]

#: psana type names (lower case) -> default file stem
_BY_PSANA_TYPE = {
    "epixm": "epixm320", "epixm320": "epixm320",
    "epix10ka": "epix10kaquad", "epix10kaquad": "epix10kaquad", "epixquad": "epix10kaquad",
    "epix10ka2m": "epix10kaquad",
    "epix100": "epix100a", "epix100a": "epix100a",
    "jungfrauemu": "jungfrau4M",
    "epixhr": "epixhr2x2", "epixhr2x2": "epixhr2x2", "epixhremu": "epixhr1x4-20",
    "epixuhr": "epixuhr", "epixuhr3x2": "epixuhr3x2-02",
}


def _jungfrau(modules: int) -> str:
    last = max(int(modules), 1) - 1  # psana: from the largest segment number
    return "jungfrau" + ("05M" if last < 1 else "1M" if last < 2 else "4M" if last < 8 else "16M")


def default_geometry_name(*names: str | None, modules: int = 1) -> str | None:
    """The default file stem (``'epixm320'``) for the first of ``names`` that names a known type, or None."""
    for name in names:
        if not name:
            continue
        key = str(name).lower()
        if key in _BY_PSANA_TYPE:
            return _BY_PSANA_TYPE[key]
        t = detector_type(name)
        if t is None:
            continue
        if t.psana_type == "jungfrau":
            return _jungfrau(modules)
        if t.psana_type in _BY_PSANA_TYPE:
            return _BY_PSANA_TYPE[t.psana_type]
        return None  # a known type without a default geometry (archon)
    return None


@cache
def default_geometry_text(stem: str) -> str:
    """The text of ``geometry-def-<stem>.data`` carried in this package."""
    path = resources.files("calibsuite_h5source.geometry") / "data" / f"geometry-def-{stem}.data"
    return path.read_text(encoding="utf-8")
