"""The recognised ``scriptType`` values: what kind of run a file holds.

The list is this package's (the calibration suite keeps none). It can be
extended at run time with :func:`register_script_type`, and by other packages
through the entry-point group ``calibsuite_h5source.format.script_types``, whose
entries are objects (a string, or an iterable of strings, or a callable
returning one) naming extra types.

Matching is exact; :func:`canonical_script_type` also accepts a different
case (``'DelayScan'`` -> ``'delayScan'``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "calibsuite_h5source.format.script_types"

#: Built-in types and what they mean (shown by ``calibsuite-h5 info`` and the docs).
SCRIPT_TYPES: dict[str, str] = {
    "dark": "no beam: pedestal and noise",
    "pedestal": "pedestal run, possibly stepping through gain modes",
    "lowFlux": "sparse photons: clustering and photon counting",
    "fe55": "Fe-55 source (5.9 keV) for gain calibration",
    "intensityScan": "flux stepped or varying: linearity",
    "linearity": "same as intensityScan",
    "delayScan": "trigger/charge-injection delay stepped per step",
    "timeScan": "timing scan: acquisition time stepped per step",
    "biasScan": "sensor bias voltage stepped per step",
    "chargeInjection": "internal charge-injection pulser scan",
    "gainScan": "gain modes stepped per step",
    "thresholdScan": "comparator/threshold stepped per step",
    "temperatureScan": "temperature stepped per step",
    "flatField": "uniform illumination",
    "misc": "anything else the suite's misc analyses read",
}

_extra: dict[str, str] = {}
_entry_points_loaded = False


def register_script_type(name: str, description: str = "") -> None:
    """Add a recognised ``scriptType`` for this process.

    Parameters
    ----------
    name : str
        The type, e.g. ``'pulserScan'``.
    description : str
        One line saying what such a run holds.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"scriptType must be a non-empty string, not {name!r}")
    _extra[name] = description


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib import metadata  # only when asked: it costs a script ~25 ms of imports

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj = obj()
            names = [obj] if isinstance(obj, str) else list(obj)
            for name in names:
                _extra.setdefault(str(name), f"from entry point {ep.name}")
        except Exception as exc:  # a broken plug-in must not break reading
            log.warning("could not load scriptType entry point %s: %s", ep.name, exc)


def known_script_types() -> dict[str, str]:
    """Return every recognised ``scriptType`` with its description."""
    _load_entry_points()
    return {**SCRIPT_TYPES, **_extra}


def canonical_script_type(name: str) -> str | None:
    """Return the recognised spelling of ``name``, or None when it is unknown.

    Built-in and registered types are matched first; the entry points of
    other packages are loaded only for a name they might add.
    """
    for loaded in (False, True):
        if loaded:
            _load_entry_points()
        known = {**SCRIPT_TYPES, **_extra}
        if name in known:
            return name
        match = {k.lower(): k for k in known}.get(str(name).lower())
        if match is not None:
            return match
    return None


def is_known_script_type(name: str) -> bool:
    """True when ``name`` (in any case) is a recognised ``scriptType``."""
    return canonical_script_type(name) is not None
