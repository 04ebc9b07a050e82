"""A frame's shape and ``calib`` without constants, per detector type, as psana gives them.

The file always stores frames ``[module, row, col]`` (docs/format.rst). psana's
``AreaDetectorRaw.raw`` stacks several segments into ``[segment, row, col]``
but returns a single segment's own array as the DAQ stored it
(``if len(segs) == 1: return segs[ind].raw``), so whether a one-module frame
keeps its module axis depends on the detector type, not on the module count:

* 3-D ``[1, row, col]``: jungfrau (a 0.5M gives ``(1, 512, 1024)``, measured
  on lcls2's ``test_jungfrau05M_calib.xtc2``); epixM (epixm320) and epixUHR,
  whose one DAQ segment holds all their ASICs as ``[asic, row, col]``;
* 2-D ``[row, col]``: epix100, archon (rixsCCD), epix10ka and epixhr (each
  segment is 2-D; several stack to ``[segment, row, col]``), and cameras
  (andor, opal...), hsd;
* any other type: 2-D for one module (this package's rule before types were
  told apart).

``convert`` records what psana gave in the group attribute
:data:`MODULE_AXIS_ATTR`, which wins over the type table, so a converted run
reads back exactly as psana gave it. ``keep_module_axis=True`` (DataSource or
``run.Detector``) always keeps the axis.

``calib`` without calibration constants, per psana's detector classes
(``psana/detector/*.py``): epix10ka and epixhr (``calib_epix10ka_any``) give
float32 ``raw & data_bit_mask``; jungfrau (``calib_jungfrau_versions``: "return
arr" when no pedestals), epix100 (``calib_epix100``), epixM
(``epixm320_raw.calib``), epixUHR (calib "TBD", returns raw) and archon give
``raw`` itself, in its dtype and with its gain bits. Types psana does not
know here keep this package's earlier rule: float32 ``raw & gainBitsMask``
(or float32 raw without a mask).

This module is the one owner of these rules: the reader's ``raw``,
``calib``, ``image`` input, ``_pedestals`` and other constants, the arrays
API and the psana1 surface call it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from calibsuite_h5source.format.detector_types import DetectorType, detector_type

__all__ = ["MODULE_AXIS_ATTR", "KEEPS_MODULE_AXIS", "CALIB_IS_RAW", "type_of", "keeps_module_axis",
           "module_axis_attr", "drop_module_axis", "returned_shape", "calib_is_raw"]

#: Group attribute: True when psana gives this detector's one-module frames as ``[1, row, col]``,
#: False for ``[row, col]`` (written by ``convert``; optional, the type table decides without it).
MODULE_AXIS_ATTR = "psanaModuleAxis"

#: Per :class:`DetectorType` name: does a single segment come back with its module axis?
KEEPS_MODULE_AXIS = {"jungfrau": True, "epixM": True, "epixUHR": True,
                     "epix10k": False, "epixhr": False, "epix100": False, "archon": False}
#: Types whose ``calib`` without constants is ``raw`` itself (psana's classes; see the module docstring).
CALIB_IS_RAW = {"jungfrau", "epix100", "epixM", "epixUHR", "archon"}


def _plain(value):
    return value.decode() if isinstance(value, bytes) else value


def type_of(name: str, attrs: Mapping) -> DetectorType | None:
    """The detector type of a group: its ``detType``/``dettype`` attribute, else its name."""
    for key in ("detType", "dettype"):
        t = detector_type(_plain(attrs.get(key))) if attrs.get(key) is not None else None
        if t is not None:
            return t
    return detector_type(name)


def keeps_module_axis(name: str, attrs: Mapping, frame_shape, keep_module_axis: bool = False) -> bool:
    """True when this detector's frames come back with their module axis.

    Parameters
    ----------
    name : str
        The detector's group name.
    attrs : mapping
        Its group attributes (``detType``, :data:`MODULE_AXIS_ATTR`).
    frame_shape : tuple
        The stored ``(module, row, col)``.
    keep_module_axis : bool
        The user's override: always keep it.
    """
    if keep_module_axis or len(frame_shape) != 3 or frame_shape[0] != 1:
        return True  # several modules (or not a [module, row, col] frame): nothing to drop
    recorded = attrs.get(MODULE_AXIS_ATTR)
    if recorded is not None:
        return bool(recorded)
    t = type_of(name, attrs)
    return KEEPS_MODULE_AXIS.get(t.name, False) if t is not None else False


def module_axis_attr(psana_frame) -> bool:
    """What ``convert`` records in :data:`MODULE_AXIS_ATTR` for a frame psana returned: True unless it was 2-D."""
    return np.ndim(psana_frame) != 2


def drop_module_axis(a, drop: bool):
    """``a`` without its module axis (``[..., 1, row, col]`` -> ``[..., row, col]``) when ``drop``; else ``a``."""
    if a is None or not drop or np.ndim(a) < 3 or a.shape[-3] != 1:
        return a
    return a[..., 0, :, :]


def returned_shape(frame_shape, drop: bool) -> tuple:
    """The shape of a frame as returned: the stored ``(module, row, col)`` with the module axis dropped when ``drop``."""
    shape = tuple(int(n) for n in frame_shape)
    return shape[1:] if drop and len(shape) >= 3 and shape[-3] == 1 else shape


def calib_is_raw(name: str, attrs: Mapping) -> bool:
    """True when psana's ``calib`` without constants returns ``raw`` itself for this detector's type."""
    t = type_of(name, attrs)
    return t is not None and t.name in CALIB_IS_RAW
