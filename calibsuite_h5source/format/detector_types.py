"""Facts about the detectors the calibration suite reads.

Shapes, gain bits and psana's type names, in one place, so that the reader
(``calib`` without constants), the synthetic generator and the writer agree.
``gain_bits_mask = g0cut - 1``: the bits of a raw value that hold the ADU.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DetectorType", "DETECTOR_TYPES", "detector_type"]


@dataclass(frozen=True)
class DetectorType:
    """One kind of detector.

    Attributes
    ----------
    name : str
        The seed's group name (``'epixM'``).
    psana_type : str
        psana's lower-case type/name (``'epixm'``).
    modules : int
        Default number of modules.
    rows, cols : int
        Pixels per module.
    g0cut : int
        First gain bit; raw values below it are ADU.
    aliases : tuple of str
        Other names that mean this type (lower case).
    """

    name: str
    psana_type: str
    modules: int
    rows: int
    cols: int
    g0cut: int
    aliases: tuple[str, ...] = ()

    @property
    def gain_bits_mask(self) -> int:
        """Mask of the ADU bits (``g0cut - 1``)."""
        return self.g0cut - 1

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Default per-event shape ``(module, row, col)``."""
        return (self.modules, self.rows, self.cols)


DETECTOR_TYPES: dict[str, DetectorType] = {
    t.name: t
    for t in (
        DetectorType("epixM", "epixm", 4, 192, 384, 1 << 15, ("epixm320",)),
        DetectorType("epix10k", "epix10ka", 1, 352, 384, 1 << 14, ("epix10ka", "epix10kaquad", "epix10ka2m", "epixquad")),
        DetectorType("epixhr", "epixhr", 1, 288, 284, 1 << 14, ("epixhr2x2", "epixhremu")),
        DetectorType("epixUHR", "epixuhr", 4, 168, 192, 1 << 11, ()),
        DetectorType("jungfrau", "jungfrau", 1, 512, 1024, 1 << 14, ("jungfrau05m", "jungfrau1m", "jungfrau4m", "jungfrauemu")),
        DetectorType("epix100", "epix100", 1, 704, 768, 1 << 15, ("epix100a",)),
        DetectorType("archon", "archon", 1, 1200, 4224, 1 << 16, ("rixsccd",)),
    )
}


def detector_type(name: str | None) -> DetectorType | None:
    """Return the :class:`DetectorType` a detector or type name refers to.

    Matches the seed's name, psana's type and aliases, case-insensitively, and
    also names that start with one of them followed by ``_`` or a digit
    (``'epixquad_0'``, ``'jungfrau1M'``). Returns None for anything else.
    """
    if not name:
        return None
    key = str(name).lower()
    table = {}
    for t in DETECTOR_TYPES.values():
        for alias in (t.name.lower(), t.psana_type, *t.aliases):
            table[alias] = t
    if key in table:
        return table[key]
    for alias in sorted(table, key=len, reverse=True):
        if key.startswith(alias) and (len(key) == len(alias) or key[len(alias)] in "_0123456789"):
            return table[alias]
    return None
