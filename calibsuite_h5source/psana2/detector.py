"""psana-style detector objects: what ``run.Detector(name)`` returns.

* :class:`AreaDetector`: ``det.raw.raw(evt)``, ``.calib(evt)``, ``.image(evt)``,
  ``det.calibconst``. A single-module frame comes back in the shape psana
  gives for that detector type (``[row, col]`` for epix100, ``[1, row, col]``
  for jungfrau: :mod:`calibsuite_h5source.format.shapes`), or always with
  its module axis when ``keep_module_axis`` is True. Stored
  per-event header fields answer as ``det.raw.<field>(evt)`` (epixM's
  ``frameNo``, ``asicNo``, ``autoFillMask``, ``fixedMask``), and the file's
  constants as psana's ``det.raw._pedestals()``, ``_gain()``, ``_rms()``,
  ``_status()``.
* :class:`SideDetector`: ``det.raw.<field>(evt)`` for each stored field; the
  ``timing`` source also answers ``eventcodes`` (a python list of 288 ints) and
  ``pulseId`` (an int, 0 when not stored) even when the file stores neither.
* :class:`ScanDetector`: ``det(step)``, ``det(evt)``, ``det([evts])``.
* :class:`MissingDetector`: ``accept_missing=True`` for an absent name.
"""

from __future__ import annotations

import json
import math

import numpy as np

from calibsuite_h5source.format import shapes
from calibsuite_h5source.format.constants import N_EVENTCODES
from calibsuite_h5source.h5.dataset import read_whole
from calibsuite_h5source.h5.guard import guarded
from calibsuite_h5source.read.index_types import AreaSource, EventArray, ScanVariable


def _calib_where(self, *args, **kwargs):
    """Where a calibration-constant read failed (for :func:`~calibsuite_h5source.h5.guard.guarded`)."""
    group = self._src.calib_group
    return group.file.filename, group.name, "reading the calibration constants"


def _located(evt):
    """Return ``(step, i)`` of an event, or None."""
    return None if evt is None else (evt._step, evt._i)


#: ``det.raw._<method>()`` -> the ``calib/`` dataset psana reads it from
CALIB_METHODS = {"_pedestals": "pedestals", "_gain": "pixel_gain", "_rms": "pixel_rms", "_status": "pixel_status"}
STATUS_DTYPE = np.uint64  # psana's DTYPE_STATUS


class _AreaRaw:
    """``det.raw`` of an area detector.

    Parameters
    ----------
    src : AreaSource
        The detector's index record.
    keep_module_axis : bool
        Return ``[1, row, col]`` for a single-module detector instead of
        psana's ``[row, col]``.
    run : Run, optional
        The run (for the coordinates of whole arrays).
    """

    def __init__(self, src: AreaSource, keep_module_axis: bool = False, run=None):
        self._steps = src.steps
        self._present = src.present
        self._src = src
        self._run = run
        mask = src.attrs.get("gainBitsMask")
        if mask is None:
            dtype = shapes.type_of(src.name, src.attrs)
            mask = dtype.gain_bits_mask if dtype else None
        self.gain_bits_mask = None if mask is None or src.dtype is None or src.dtype.kind not in "iu" else int(mask)
        self._constants = None
        self._stored_constants = {}
        #: True when frames lose their one-module axis (psana's single-segment shape for this type)
        self.drops_module_axis = not shapes.keeps_module_axis(src.name, src.attrs, src.frame_shape, keep_module_axis)
        #: True when ``calib`` without constants is ``raw`` itself (psana's class for this type)
        self.calib_is_raw = shapes.calib_is_raw(src.name, src.attrs)

    def _shaped(self, a):
        """Drop the module axis of a ``[..., 1, row, col]`` array when this detector does so."""
        return shapes.drop_module_axis(a, self.drops_module_axis)

    def _frame(self, evt):
        """The stored ``[module, row, col]`` frame of an event, or None."""
        if evt is None:
            return None
        step, i = evt._step, evt._i
        present = self._present[step]
        if present is not None and not present[i]:
            return None
        return self._steps[step].read(i)

    def raw(self, evt):
        """Return the event's frame in the stored dtype, or None.

        ``[module, row, col]``; a single-module frame in psana's shape for the
        detector type (:mod:`calibsuite_h5source.format.shapes`), unless the
        module axis is kept.
        """
        return self._shaped(self._frame(evt))

    def __getattr__(self, field):
        """``det.raw.<field>(evt)`` for a stored per-event header field (e.g. epixM's ``frameNo``)."""
        src = self.__dict__.get("_src")  # absent while unpickling: no recursion
        headers = src.headers if src is not None else {}
        if field.startswith("_") or field not in headers:
            raise AttributeError(f"{getattr(src, 'name', 'area detector')}.raw has no method or header field "
                                 f"{field!r}; header fields: {sorted(headers)}")
        return lambda evt: self._header(field, evt)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._src.headers))

    def _header(self, field, evt):
        """A header field's value at an event: a python number, or a list for an array (as psana); None without data."""
        if evt is None:
            return None
        present = self._present[evt._step]
        if present is not None and not present[evt._i]:
            return None
        value = self._src.headers[field][evt._step].read(evt._i)
        return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value

    @guarded(_calib_where)
    def _constant(self, method, **kwa):
        """The file's ``calib/<ctype>`` for psana's ``det.raw._<method>()``, shaped as :meth:`raw`; None when absent."""
        cache = self._stored_constants
        if method not in cache:
            group, ctype = self._src.calib_group, CALIB_METHODS[method]
            value = read_whole(group[ctype]) if group is not None and ctype in group else None
            if value is not None and method == "_status":
                value = value.astype(STATUS_DTYPE)
            cache[method] = self._shaped(value)
        return cache[method]

    def _pedestals(self, **kwa):
        """``calib/pedestals`` (``[module, row, col]`` or ``[gain, module, row, col]``), or None, as psana's."""
        return self._constant("_pedestals", **kwa)

    def _gain(self, **kwa):
        """``calib/pixel_gain`` (ADU per keV), or None, as psana's."""
        return self._constant("_gain", **kwa)

    def _rms(self, **kwa):
        """``calib/pixel_rms``, or None, as psana's."""
        return self._constant("_rms", **kwa)

    def _status(self, **kwa):
        """``calib/pixel_status`` as uint64 (psana's status dtype), or None, as psana's."""
        return self._constant("_status", **kwa)

    @guarded(_calib_where)
    def _calib_constants(self):
        if self._constants is None:
            group = self._src.calib_group
            const = {}
            if group is not None:
                for ctype in ("pedestals", "pixel_gain"):
                    if ctype in group:
                        const[ctype] = read_whole(group[ctype]).astype(np.float32)
            self._constants = const
        return self._constants

    def calib(self, evt):
        """Return the event's calibrated frame, or None.

        With ``calib/pedestals`` in the file: float32 ``raw - pedestals``
        (``[gain, ...]`` pedestals indexed by the pixel's gain bits), divided
        by ``pixel_gain`` when present. Without constants, as psana's class for
        the type: ``raw`` itself (jungfrau, epix100, epixM, epixUHR, archon),
        else float32 ``raw & gainBitsMask`` (epix10ka, epixhr; other types:
        float32 raw without a mask). Shaped as :meth:`raw`.
        """
        raw = self._frame(evt)
        if raw is None:
            return None
        if self.calib_is_raw and self._calib_constants().get("pedestals") is None:
            return self._shaped(raw)
        return self._shaped(self._calibrated(raw))

    def _calibrated(self, raw):
        mask = self.gain_bits_mask
        adu = (raw & mask) if mask is not None else raw
        const = self._calib_constants()
        ped = const.get("pedestals")
        if ped is None:
            return adu.astype(np.float32)
        out = adu.astype(np.float32)
        if ped.ndim == raw.ndim + 1:
            shift = int(mask).bit_length() if mask is not None else 0
            gain = np.minimum(raw >> shift, ped.shape[0] - 1) if shift else np.zeros(raw.shape, np.intp)
            out -= np.take_along_axis(ped, gain[None].astype(np.intp), axis=0)[0]
            g = const.get("pixel_gain")
            if g is not None and g.ndim == ped.ndim:
                g = np.take_along_axis(g, gain[None].astype(np.intp), axis=0)[0]
        else:
            out -= ped
            g = const.get("pixel_gain")
        if g is not None:
            np.divide(out, g, out=out, where=g != 0)
        return out

    # whole arrays: see calibsuite_h5source.read.arrays
    def frames(self, step=None, events=None, **kwargs):
        """Frames ``[event, *raw's shape]`` of one step or all (:func:`calibsuite_h5source.read.arrays.frames`).

        Each ``frames(...)[j]`` has the shape :meth:`raw` gives for that event.
        """
        from calibsuite_h5source.read import arrays
        return self._shaped(arrays.frames(self, step, events, **kwargs))

    def dask_array(self, step=None, **kwargs):
        """Lazy dask frames ``[event, *raw's shape]`` (:func:`calibsuite_h5source.read.arrays.dask_array`)."""
        from calibsuite_h5source.read import arrays
        return self._shaped(arrays.dask_array(self, step, **kwargs))

    def xarray(self, step=None, events=None, **kwargs):
        """Frames as an ``xarray.DataArray`` with run coordinates (:func:`calibsuite_h5source.read.arrays.to_xarray`).

        Dims ``(event, module, row, col)``, or ``(event, row, col)`` where :meth:`raw` is 2-D.
        """
        from calibsuite_h5source.read import arrays
        x = arrays.to_xarray(self, step, events, **kwargs)
        return x.isel(module=0) if self.drops_module_axis and x.sizes.get("module") == 1 else x

    def present(self, step=None):
        """The ``present`` mask over the stored events of one step or all."""
        from calibsuite_h5source.read import arrays
        return arrays.present(self, step)

    def image(self, evt, nda=None, **kwargs):
        """Return the event's image (2-D float32) as psana's ``det.raw.image`` draws it, or None.

        ``nda`` (default: :meth:`calib`) is placed by the detector's geometry
        (:mod:`calibsuite_h5source.geometry.source`: the file's
        ``calib/geometry``, else psana's default for the type); psana's
        ``mapmode``, ``fillholes`` and ``vbase`` keywords are accepted. An
        archon is drawn as psana draws it (banks side by side). A detector
        without geometry gets its modules tiled row-major in
        ``ceil(sqrt(m))`` columns, with a one-time warning.
        """
        if nda is None:
            nda = self.calib(evt)
            if nda is None:
                return None
        from calibsuite_h5source.geometry import source as geo
        if geo.is_archon(self._src):
            return geo.archon_image(nda, self._src.attrs.get("detVersion"))
        placed = geo.detector_geometry(self._src)
        if placed is not None:
            return placed.image(nda, **kwargs)
        geo.warn_tiled(self._src)
        return _tiled(nda)

    def _pixel_coords(self, **kwa):
        """``(x, y, z)`` float64 ``[module, row, col]`` pixel coordinates (µm), or None without geometry (psana's)."""
        from calibsuite_h5source.geometry.source import detector_geometry
        placed = detector_geometry(self._src)
        return None if placed is None else placed.pixel_coords()

    def _pixel_coord_indexes(self, **kwa):
        """``(rows, cols)`` uint64 ``[module, row, col]`` image indexes, or None without geometry (psana's)."""
        from calibsuite_h5source.geometry.source import detector_geometry
        placed = detector_geometry(self._src)
        return None if placed is None else placed.pixel_coord_indexes()


def _tiled(nda) -> np.ndarray:
    """Modules tiled row-major in ``ceil(sqrt(m))`` columns (float32): the image without a geometry."""
    nda = np.asarray(nda)
    if nda.ndim == 2:
        return nda.astype(np.float32)
    m, r, c = nda.shape[-3:]
    ncols = math.ceil(math.sqrt(m))
    nrows = math.ceil(m / ncols)
    img = np.zeros((nrows * r, ncols * c), dtype=np.float32)
    for k in range(m):
        y, x = divmod(k, ncols)
        img[y * r:(y + 1) * r, x * c:(x + 1) * c] = nda[k]
    return img


def _str(value):
    return value.decode() if isinstance(value, bytes) else value


class AreaDetector:
    """An image detector, as ``run.Detector('epixm')`` in psana."""

    def __init__(self, src: AreaSource, keep_module_axis: bool = False, run=None):
        self.name = src.name
        self.raw = _AreaRaw(src, keep_module_axis, run)
        self._src = src

    @property
    @guarded(_calib_where)
    def calibconst(self) -> dict:
        """``{ctype: (array, metadata)}`` from ``calib/``; ``{}`` when the file holds none.

        ``'geometry'`` (psana's geometry text) is a str, as psana's.
        """
        group = self._src.calib_group
        if group is None:
            return {}
        return {k: (_str(read_whole(ds)) if k == "geometry" else read_whole(ds), dict(ds.attrs))
                for k, ds in group.items()}

    def __repr__(self):
        return f"<AreaDetector {self.name} {self._src.frame_shape} {self._src.dtype}>"


class _SideRaw:
    """``det.raw`` of side data: one method per stored field.

    Where the source's ``present`` mask (``/<source>/present/<step>``) is
    False, every field returns None for that event, as psana's BLD detectors
    do at events without their data (a beam monitor at a frame event).
    """

    def __init__(self, name: str, fields: dict[str, list[EventArray]], run=None, present=None):
        self._name = name
        self._fields = fields
        self._present = present  # RunIndex.side_present: looked up at each call, as a live run grows it
        self._run = run

    def present(self, step: int) -> np.ndarray | None:
        """The step's ``present`` mask (bool per stored event), or None when the source is in every event of it."""
        masks = None if self._present is None else self._present.get(self._name)
        return None if masks is None else masks[step]

    def _value(self, field, evt):
        if evt is None:
            return None
        mask = self.present(evt._step)
        if mask is not None and not mask[evt._i]:
            return None
        v = self._fields[field][evt._step].read(evt._i)
        return v.item() if isinstance(v, np.generic) else v

    def __getattr__(self, field):
        if field.startswith("_") or field not in self._fields:
            raise AttributeError(f"{self._name}.raw has no field {field!r}; fields: {sorted(self._fields)}")
        return lambda evt: self._value(field, evt)

    def __dir__(self):
        return sorted(self._fields)

    # whole arrays of one field: see calibsuite_h5source.read.arrays
    def array(self, field, step=None, events=None, **kwargs):
        """The field's values ``[event, ...]`` (:func:`calibsuite_h5source.read.arrays.field_array`)."""
        from calibsuite_h5source.read import arrays
        return arrays.field_array(self, field, step, events, **kwargs)

    def dask_array(self, field, step=None, **kwargs):
        """The field as a lazy dask array (:func:`calibsuite_h5source.read.arrays.field_dask_array`)."""
        from calibsuite_h5source.read import arrays
        return arrays.field_dask_array(self, field, step, **kwargs)

    def xarray(self, field, step=None, events=None, **kwargs):
        """The field as an ``xarray.DataArray`` (:func:`calibsuite_h5source.read.arrays.field_xarray`)."""
        from calibsuite_h5source.read import arrays
        return arrays.field_xarray(self, field, step, events, **kwargs)


class _TimingRaw(_SideRaw):
    """``timing.raw``: ``eventcodes`` as a list of 288 ints, ``pulseId`` as an int."""

    def eventcodes(self, evt):
        """Return the event codes as a python list of 288 ints (all 0 when not stored)."""
        if evt is None:
            return None
        if "eventcodes" not in self._fields:
            return [0] * N_EVENTCODES
        codes = self._value("eventcodes", evt)
        if codes is None:
            return None
        codes = [int(c) for c in codes]
        return codes + [0] * (N_EVENTCODES - len(codes))

    def pulseId(self, evt):  # noqa: N802 - psana's name
        """Return the pulse id as an int; 0 when the file stores none (never None)."""
        if evt is None or "pulseId" not in self._fields:
            return 0
        value = self._value("pulseId", evt)
        return 0 if value is None else int(value)


class SideDetector:
    """Per-event side data (beam monitors, timing), as psana's BLD detectors."""

    def __init__(self, name: str, fields: dict[str, list[EventArray]], run=None, present=None):
        """``present``: ``{source: per-step masks}`` (the run index's ``side_present``)."""
        self.name = name
        self.raw = (_TimingRaw if name == "timing" else _SideRaw)(name, fields, run, present)

    def __repr__(self):
        return f"<SideDetector {self.name} fields={sorted(self.raw._fields)}>"


class ScanDetector:
    """A scan variable, called like psana's: ``det(step)``, ``det(evt)``, ``det([evts])``."""

    def __init__(self, var: ScanVariable, convert=float, run=None):
        self.name = var.name
        self._var = var
        self._convert = convert
        self._run = run

    def __call__(self, x):
        if x is None:
            return None
        if isinstance(x, (list, tuple)):
            return [self(e) for e in x]
        if hasattr(x, "_i") and self._var.per_event is not None:  # an Event
            return self._convert(self._var.per_event[x._step][x._i])
        return self._convert(self._var.per_step[x._step])

    def bound(self, run):
        """This variable bound to ``run`` (for :meth:`array`); the run keeps unbound ones (no cycle)."""
        return ScanDetector(self._var, self._convert, run)

    def array(self, step=None, events=None):
        """The value at every event ``[event]`` (:func:`calibsuite_h5source.read.arrays.scan_array`)."""
        from calibsuite_h5source.read import arrays
        return arrays.scan_array(self, step, events)

    def xarray(self, step=None, events=None):
        """:meth:`array` as an ``xarray.DataArray`` (:func:`calibsuite_h5source.read.arrays.scan_xarray`)."""
        from calibsuite_h5source.read import arrays
        return arrays.scan_xarray(self, step, events)

    def __repr__(self):
        return f"<ScanDetector {self.name}>"


class MissingDetector:
    """What ``run.Detector(name, accept_missing=True)`` returns for an absent name."""

    def __init__(self, name: str):
        self.name = name
        self.raw = self

    def __call__(self, *args, **kwargs):
        return None

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return self


def step_docstrings(step_value: np.ndarray, script_type: str, detname: str) -> list[str]:
    """Derive psana-style ``step_docstring`` values, with ``"value"`` as the last key."""
    return [json.dumps({"detname": detname, "scantype": script_type, "step": k, "value": float(v)})
            for k, v in enumerate(step_value)]
