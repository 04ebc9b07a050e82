"""psana1 detectors over h5 runs: ``Detector(source, env)`` and what ``evt.get`` returns.

Name matching (:func:`resolve`), first rule that matches wins:

1. ``ControlData`` (scan values); a scan variable's exact name (an EPICS-like
   detector: ``det()`` is the current step's value); EVR names (``evr0``,
   ``...:Evr.N``) when the run stores ``timing/eventcodes``;
2. a detector group whose ``alias`` attribute equals the name, or its
   source part (case-insensitive);
3. a group named as the name (case-insensitive): ``'epix10k2M'``, ``'wave8'``;
4. for a source string ``'Detector.N:Device.M'`` (``DetInfo(...)``/``BldInfo(...)``
   wrappers allowed): a group whose ``detType``/``dettype`` attribute or name
   equals the device type, case-insensitively (``Wave8`` -> ``wave8``); then
   a group of the same detector family (``Epix10ka2M`` -> a group of type
   ``epix10ka`` or named ``epix10k``, see :mod:`calibsuite_h5source.format.detector_types`).

Two groups matching at the same rule is an error naming them: give one an
``alias`` attribute. No match raises ``KeyError`` (``UnknownDetectorError``)
listing the run's groups.
"""

from __future__ import annotations

import logging
import re

import h5py
import numpy as np

from calibsuite_h5source.errors import UnknownDetectorError
from calibsuite_h5source.format import shapes
from calibsuite_h5source.format.detector_types import detector_type
from calibsuite_h5source.psana1.events import (  # noqa: F401 - psana1's names, also importable from here
    EVR_TYPES,
    FIDUCIAL_MASK,
    Event,
    EventId,
    EvrData,
    FIFOEvent,
    _timing_fields,
    current_env,
    event_codes,
    event_get,
    fiducial,
    run_fiducials,
    unix_time,
)

log = logging.getLogger(__name__)

#: psana1 BLD method names -> stored field names tried in order.
FIELD_ALIASES = {
    "peakA": ("peakA", "peakAmplitude"),
    "peakT": ("peakT", "peakTime"),
    "TotalIntensity": ("TotalIntensity", "totalIntensity", "total_intensity"),
    "X_Position": ("X_Position", "xPosition", "x_position"),
    "Y_Position": ("Y_Position", "yPosition", "y_position"),
}


def _str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _device(name: str) -> str | None:
    """``'MfxEndstation.0:Epix10ka2M.0'`` -> ``'Epix10ka2M'``; None for a plain alias."""
    inner = re.sub(r"^\s*(?:DetInfo|BldInfo|ProcInfo)\((.*)\)\s*$", r"\1", name)
    if ":" not in inner:
        return None
    return inner.split(":", 1)[1].split(".", 1)[0]


def _bare(name: str) -> str:
    return re.sub(r"^\s*(?:DetInfo|BldInfo|ProcInfo)\((.*)\)\s*$", r"\1", name).strip()


def _group_attrs(run, name: str, kind: str) -> dict:
    if kind == "area":
        return dict(run._area[name].attrs)
    obj = run._index.file.get(name)
    return dict(obj.attrs) if isinstance(obj, (h5py.Group, h5py.Dataset)) else {}


def resolve(run, source: str) -> tuple[str, str]:
    """Return ``(kind, group)`` of a psana1 source string or alias in ``run`` (see the module docstring)."""
    name = str(source)
    bare = _bare(name)
    groups = [("area", g) for g in run._area] + [("side", g) for g in run._side]
    rules = [
        ("alias attribute", lambda k, g, a: _str(a.get("alias", "")).lower() in (name.lower(), bare.lower())),
        ("group name", lambda k, g, a: g.lower() in (name.lower(), bare.lower())),
    ]
    device = _device(name)
    if device:
        dev = device.lower()
        rules.append(("device type", lambda k, g, a: dev in (g.lower(), _str(a.get("detType", "")).lower(),
                                                            _str(a.get("dettype", "")).lower())))
        family = detector_type(dev)
        if family is not None:
            rules.append(("detector family", lambda k, g, a: k == "area" and shapes.type_of(g, a) == family))
    attrs = {g: _group_attrs(run, g, k) for k, g in groups}
    for rule, match in rules:
        hits = [(k, g) for k, g in groups if match(k, g, attrs[g])]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise UnknownDetectorError(f"{name!r} matches several detector groups by {rule}: "
                                       f"{sorted(g for _, g in hits)}; give one an 'alias' attribute", file=run.path)
    raise UnknownDetectorError(f"no detector group matches {name!r} (rules: alias attribute, group name, device "
                               f"type, detector family); groups: {sorted(g for _, g in groups)}", file=run.path)


# -- per-run resolution ---------------------------------------------------------------------------

class _PerRun:
    """Resolves the psana2-level detector of the run an event belongs to (cached for the last run)."""

    def __init__(self, source, env):
        self.name = str(source)
        self._env = env
        run = env._run()
        if run is None:
            raise RuntimeError("the DataSource has no run open")
        self.kind, self.group = resolve(run, self.name)
        self._cache = (None, None)

    def _det(self, evt=None):
        run = evt._evt._run if isinstance(evt, Event) else self._env._run()
        if self._cache[0] is not run:
            self._cache = (run, run.Detector(self.group))
        return self._cache[1]


class AreaDetector(_PerRun):
    """psana1's area detector: ``raw``, ``calib``, ``image``, ``pedestals``, ``gain``, ``rms``, ``status``."""

    def raw(self, evt):
        """Raw frame (stored dtype; the package's shape rules), or None."""
        return None if evt is None else self._det(evt).raw.raw(evt._evt)

    raw_data = raw

    def calib(self, evt, cmpars=None, **kwargs):
        """Calibrated frame (the package's ``det.raw.calib``: its dtype and shape rules), or None. ``cmpars`` is ignored."""
        return None if evt is None else self._det(evt).raw.calib(evt._evt)

    def image(self, evt, nda_in=None, **kwargs):
        """2-D image of ``nda_in`` or of the calibrated frame, or None."""
        if evt is None and nda_in is None:
            return None
        return self._det(evt).raw.image(None if evt is None else evt._evt, nda_in)

    def _const(self, ctype, par):
        det = self._det(par if isinstance(par, Event) else None)
        const = det.calibconst.get(ctype)  # shaped as raw (psana's single-segment rule: format/shapes.py)
        return None if const is None else shapes.drop_module_axis(np.asarray(const[0]), det.raw.drops_module_axis)

    def pedestals(self, par=None):
        """``calib/pedestals`` of the run, or None (psana1 returns None without constants)."""
        return self._const("pedestals", par)

    def gain(self, par=None):
        return self._const("pixel_gain", par)

    def rms(self, par=None):
        return self._const("pixel_rms", par)

    def status(self, par=None):
        return self._const("pixel_status", par)

    def shape(self, par=None):
        """The shape :meth:`raw` gives (psana's single-segment rule for the type: ``format/shapes.py``)."""
        raw = self._det(par if isinstance(par, Event) else None).raw
        return shapes.returned_shape(raw._src.frame_shape, raw.drops_module_axis)

    def size(self, par=None):
        return int(np.prod(self.shape(par)))

    def ndim(self, par=None):
        return len(self.shape(par))

    def __repr__(self):
        return f"<psana1 AreaDetector {self.name} -> {self.group}>"


class BldData:
    """What a beam monitor's ``det.get(evt)`` returns: ``peakA()``, ``peakT()``, any stored field as a method."""

    def __init__(self, raw, evt):
        self._raw = raw
        self._evt = evt

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        fields = self._raw._fields
        for field in FIELD_ALIASES.get(name, (name,)):
            if field in fields:
                return lambda: self._raw._value(field, self._evt)
        raise AttributeError(f"{self._raw._name} has no {name!r}; stored fields: {sorted(fields)}")


class BldDetector(_PerRun):
    """A beam monitor or other side data: ``det.get(evt).peakA()``."""

    def get(self, evt):
        """The event's data, or None when the source has none at this event (its ``present`` mask), as psana1."""
        if evt is None:
            return None
        raw, e = self._det(evt).raw, evt._evt
        mask = raw.present(e._step)
        return None if mask is not None and not mask[e._i] else BldData(raw, e)

    def __repr__(self):
        return f"<psana1 BldDetector {self.name} -> {self.group}>"


class EvrDetector(_PerRun):
    """An EVR (``Detector('evr0')``): ``eventCodes(evt)``."""

    def __init__(self, source, env):
        self.name = str(source)
        self._env = env
        self.kind, self.group = "side", "timing"

    def eventCodes(self, evt, this_fiducial_only=False):  # noqa: N802
        return None if evt is None else event_codes(evt._evt)


# -- ControlData (scan values) ----------------------------------------------------------------------

class ControlPV:
    """One scanned PV: ``name()``, ``value()``, ``index()``, ``array()``."""

    def __init__(self, name: str, value: float):
        self._name, self._value = name, value

    def name(self) -> str:
        return self._name

    def value(self) -> float:
        return self._value

    def index(self) -> int:
        return 0

    def array(self) -> bool:
        return False

    def __repr__(self):
        return f"ControlPV({self._name}={self._value})"


class ControlConfig:
    """A step's control configuration: ``pvControls()``, ``npvControls()``, ``events()``..."""

    def __init__(self, pvs: list[ControlPV], n_events: int):
        self._pvs, self._n = pvs, n_events

    def pvControls(self) -> list[ControlPV]:  # noqa: N802
        return list(self._pvs)

    def npvControls(self) -> int:  # noqa: N802
        return len(self._pvs)

    def pvControl(self, i: int) -> ControlPV:  # noqa: N802
        return self._pvs[i]

    def pvMonitors(self) -> list:  # noqa: N802
        return []

    def pvLabels(self) -> list:  # noqa: N802
        return []

    def uses_duration(self) -> bool:
        return False

    def uses_events(self) -> bool:
        return True

    def events(self) -> int:
        return self._n


def scan_names(run) -> list[str]:
    """The run's scan variables in ``pvControls()`` order: ``ancillaryDataType`` first; else ``step_value``."""
    declared = run._index.header.get("ancillaryDataType") or []
    declared = [declared] if isinstance(declared, str) else list(declared)
    names = [n for n in run._scan if n not in ("step_value", "step_docstring")]
    ordered = [n for n in declared if n in names] + [n for n in names if n not in declared]
    return ordered or ["step_value"]


def _run_and_step(env, evt):
    """``(run, step)`` of an event, else of the step being read (the run's first step before any)."""
    if isinstance(evt, Event):
        return evt._evt._run, evt._evt._step
    return env._ds._current_step or (env._run(), 0)


class ControlDataDetector:
    """``Detector('ControlData')``: ``det()`` (current step) or ``det(evt)`` -> :class:`ControlConfig`."""

    name = "ControlData"

    def __init__(self, env):
        self._env = env

    def __call__(self, evt=None):
        run, step = _run_and_step(self._env, evt)
        if run is None:
            return None
        pvs = [ControlPV(n, float(run._scan[n]._var.per_step[step])) for n in scan_names(run)]
        return ControlConfig(pvs, int(run._index.n_events[step]))


class EpicsDetector:
    """A scan variable asked for by its name (psana1's EPICS ``Detector('PV:NAME')``): ``det()`` or ``det(evt)``."""

    def __init__(self, name: str, env):
        self.name = name
        self._env = env

    def __call__(self, evt=None):
        run, step = _run_and_step(self._env, evt)
        return None if run is None else float(run._scan[self.name]._var.per_step[step])


# -- the factory --------------------------------------------------------------------------------------

def Detector(source, env=None, accept_missing=False):  # noqa: N802 - psana1's name
    """Return the psana1 detector for a source string or alias (module docstring: the matching rule).

    ``env`` defaults to the most recently created DataSource's.
    """
    env = env if env is not None else current_env()
    if env is None:
        raise RuntimeError("create a DataSource before a Detector (psana1 finds detectors through its env)")
    name = str(source)
    if name.lower() in ("controldata", "controldataconfig"):
        return ControlDataDetector(env)
    run = env._run()
    device = _device(name) or ""
    if (name.lower().startswith("evr") or device.lower() == "evr") and run is not None \
            and "eventcodes" in _timing_fields(run):
        return EvrDetector(name, env)
    if run is not None and name in run._scan and name != "step_docstring":
        return EpicsDetector(name, env)
    try:
        probe = _PerRun(name, env)
    except UnknownDetectorError:
        if accept_missing:
            return None
        raise
    cls = AreaDetector if probe.kind == "area" else BldDetector
    det = cls.__new__(cls)
    det.__dict__.update(probe.__dict__)
    return det


def DetNames(which="detectors", local_env=None):  # noqa: N802
    """``[(name, alias, '')]`` of the run's detector groups (``alias`` attribute or '')."""
    env = local_env if local_env is not None else current_env()
    run = None if env is None else env._run()
    if run is None:
        return []
    out = []
    for kind, names in (("area", run._area), ("side", run._side)):
        for g in names:
            out.append((g, _str(_group_attrs(run, g, kind).get("alias", "")), ""))
    return out


class Source:
    """psana1's ``Source('DetInfo(...)')``: a source string for :func:`Detector`."""

    def __init__(self, spec: str):
        self.spec = str(spec)

    def __str__(self):
        return self.spec

    def __repr__(self):
        return f"Source({self.spec!r})"


class Store:
    """A config/calib store: ``get(...)`` returns None (h5 runs hold no psana1 config objects)."""

    def get(self, *args, **kwargs):
        return None

    def keys(self):
        return []


class EpicsStore:
    """``env.epicsStore()``: ``value(name)`` gives a scan variable's value at the current step, else None."""

    def __init__(self, ds):
        self._ds = ds

    def value(self, name):
        run, step = self._ds._current_step or (None, 0)
        if run is None or name not in run._scan or name == "step_docstring":
            return None
        return float(run._scan[name]._var.per_step[step])

    def names(self):
        run = (self._ds._current_step or (None, 0))[0]
        return [] if run is None else [n for n in run._scan if n != "step_docstring"]

    pvNames = names  # noqa: N815 - psana1's name
