"""Convert a psana2 run into a canonical h5 run (``calibsuite-h5 convert``).

Reads the run with the real psana (``files=`` or ``exp=``/``run=``/``dir=``,
always with ``skip_calib_load='all'``; without a network too, see
:class:`_OfflineLookup`) and writes it with
:class:`~calibsuite_h5source.write.writer.RunWriter`:

* area detectors (default: every detector whose psana interface has ``raw``
  or ``calib``): ``det.raw.raw(evt)``, or ``det.raw.calib(evt)`` for
  detectors psana exposes only that way (``andor``, ``hsd`` in psana's test
  data), as ``[module, row, col]``: 2-D data (one segment: andor, hsd,
  epix100, archon) is stored with one module; the group attribute
  ``psanaModuleAxis`` records whether psana gave 2-D or ``[1, row, col]``
  (jungfrau) frames, so the reader gives them back as psana did; events where psana returns None, or raises because the
  detector is absent from that event (mixed readout rates), stay missing (the
  reader returns None again);
* every step and event in order, with psana's timestamps; ``max_events``
  (honoured in every mode, unlike psana's ``files=`` mode);
* scan variables (``run.scaninfo``), ``step_value`` and ``step_docstring``
  when the run has them, per step;
* with ``timing=True``: ``timing/eventcodes`` (uint8 ``[288]``) and
  ``timing/pulseId``; with ``beam_monitors=[...]``: every field psana lists
  for those detectors (e.g. ``peakAmplitude``);
* header: ``scriptType`` (the option, else the docstring's ``scantype`` when
  it is a recognised type, else ``misc``), ``run`` (Unix seconds of the run
  start), ``timestamp`` (psana's run timestamp), ``runnum``, ``experiment``;
  per detector ``dettype``/``detVersion`` (psana's ``xtcinfo``) and the
  ``gainBitsMask`` psana applies in ``calib`` without constants;
* psana's geometry of each area detector (its geometry constants, else its
  default file) as ``calib/geometry``, with psana's segment numbers, so that
  ``det.raw.image`` draws as psana does (left out, with a warning, when it
  does not fit the stored frames).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import logging
import os

import numpy as np

from calibsuite_h5source.errors import H5SourceError, MissingDependencyError, WriterError
from calibsuite_h5source.format import shapes as frame_shapes
from calibsuite_h5source.format.constants import N_EVENTCODES
from calibsuite_h5source.format.detector_types import detector_type
from calibsuite_h5source.format.script_types import canonical_script_type
from calibsuite_h5source.format.timestamps import LCLS_EPOCH_OFFSET, to_datetime
from calibsuite_h5source.psana2.factory import PSANA_INSTALL
from calibsuite_h5source.write.writer import RunWriter

log = logging.getLogger(__name__)

DEFAULT_SCRIPT_TYPE = "misc"
NOT_AREA = {"timing", "runinfo", "smdinfo", "scan", "epics"}


def _psana():
    try:
        return importlib.import_module("psana")
    except ImportError as exc:
        raise MissingDependencyError(PSANA_INSTALL) from exc


#: What psana's detector interface raises for an event the detector is absent from.
ABSENT_ERRORS = (AttributeError, IndexError, KeyError, TypeError, ValueError)


def _open(psana, source: dict):
    """Open the psana run, turning psana's failures (missing files, unreachable logbook) into H5SourceError."""
    for key in ("files", "dir"):
        paths = source.get(key)
        for path in [paths] if isinstance(paths, (str, os.PathLike)) else (paths or []):
            try:
                os.stat(path)
            except PermissionError as exc:  # a directory on its path this user may not search
                raise H5SourceError(f"psana source {key}={path}: cannot be read: permission denied") from exc
            except OSError as exc:
                raise H5SourceError(f"psana source {key}={path}: no such {'file' if key == 'files' else 'folder'}") from exc
    lookup = _OfflineLookup() if "exp" in source and not source.get("live") else contextlib.nullcontext()
    try:
        with lookup:
            ds = psana.DataSource(**source)
            run = next(ds.runs(), None)
    except Exception as exc:  # noqa: BLE001 - psana's many failure types (OSError, ConnectionError, RuntimeError...)
        hint = ""
        if "exp" in source and "dir" not in source:
            failed = getattr(lookup, "failures", None)
            hint = (f" (the logbook was unreachable: {failed[0]};" if failed else " (is the logbook reachable?") + \
                " give dir= to read the files directly)"
        raise H5SourceError(f"psana could not open the run ({_describe(source)}): {type(exc).__name__}: {exc}{hint}") from exc
    if run is None:
        raise H5SourceError(f"psana found no run in {_describe(source)}")
    return ds, run


class _OfflineLookup:
    """While psana opens an ``exp=``/``run=`` run, its logbook lookup fails the way psana handles.

    psana's experiment mode first asks the logbook web service for the run's
    live-mode file list (``DataSourceBase._get_file_info_from_db``). It catches
    an HTTP error (then finds the run's ``-sNNN-`` stream files on disk, under
    ``dir=`` or the facility path), but the connection error of a machine
    without a network escapes it. Inside this context, and only for psana's
    ``ds_base`` module, an unreachable logbook answers as an HTTP error
    (status 503 naming the failure); a reachable one is used as before.
    """

    #: psana's loggers (named after the DataSource class) that report the failed lookup
    PSANA_LOGGERS = ("SerialDataSource", "MPIDataSource")

    def __init__(self):
        self.module = importlib.import_module("psana.psexp.ds_base")
        self.requests = self.module.requests
        self.failures: list[str] = []

    def get(self, url, *args, **kwargs):
        """``requests.get``, with a connection failure turned into an HTTP 503 response."""
        requests = self.requests
        try:
            return requests.get(url, *args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            log.info("the logbook is unreachable (%s): psana looks for the run's stream files on disk", exc)
            self.failures.append(f"{type(exc).__name__}: {exc}")
            response = requests.Response()
            response.status_code, response.url = 503, url
            response.reason = f"unreachable ({type(exc).__name__})"
            return response

    def __getattr__(self, name):  # the rest of the requests module, unchanged
        return getattr(self.requests, name)

    def filter(self, record) -> bool:
        """Drop psana's own "unable to connect" line for a lookup this context answered (logged here once)."""
        return not (self.failures and str(record.msg).startswith("Warning: unable to connect to"))

    def __enter__(self):
        self.module.requests = self
        for name in self.PSANA_LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc):
        self.module.requests = self.requests
        for name in self.PSANA_LOGGERS:
            logging.getLogger(name).removeFilter(self)
        return False


def _detector(prun, name: str, option: str):
    """``prun.Detector(name)``, or a clear error naming the option and what the run has."""
    try:
        return prun.Detector(name)
    except (KeyError, AttributeError) as exc:
        have = sorted(n for (n, _cls) in getattr(prun, "detinfo", {}))
        raise H5SourceError(f"{option}: this psana run has no detector {name!r}; it has {have}") from exc


class _Reads:
    """Per-event detector reads that keep an event where psana raises for an absent detector as missing."""

    def __init__(self, out_path):
        self.out_path = out_path
        self.failures: dict[str, list] = {}
        self.module_axis: dict[str, bool] = {}  # per detector: psana gave [1, row, col] (True) or [row, col]

    def __call__(self, name, read, evt):
        try:
            a = read(evt)
        except ABSENT_ERRORS as exc:
            count = self.failures.setdefault(name, [0, exc])
            count[0] += 1
            return None
        if a is not None and name not in self.module_axis:
            self.module_axis[name] = frame_shapes.module_axis_attr(a)
        return _as_frame(a)

    def report(self) -> None:
        for name, (n, exc) in self.failures.items():
            log.warning("%s: psana raised %s for %s in %d events (%s); stored as missing",
                        self.out_path, type(exc).__name__, name, n, exc)


def _area_names(run, wanted) -> list[str]:
    methods = {name: set(m) for (name, _cls), m in run.detinfo.items()}
    if wanted:
        unknown = [n for n in wanted if n not in methods]
        if unknown:
            raise H5SourceError(f"detectors {unknown} are not in this psana run; it has {sorted(methods)}")
        return list(wanted)
    return sorted(n for n, m in methods.items() if n not in NOT_AREA and m & {"raw", "calib"})


def _reader(det):
    return (det.raw.raw, "raw") if hasattr(det.raw, "raw") else (det.raw.calib, "calib")


def _as_frame(a):
    if a is None:
        return None
    a = np.asarray(a)
    return a[None] if a.ndim == 2 else a


def _probe(psana, source, names, max_events) -> dict:
    """First pass: each detector's frame shape and dtype (from its first event with data)."""
    _ds, run = _open(psana, source)
    readers = {n: _reader(run.Detector(n))[0] for n in names}
    found, seen, reads = {}, 0, _Reads(None)
    for evt in run.events():
        for n, read in readers.items():
            if n not in found:
                a = reads(n, read, evt)
                if a is not None:
                    found[n] = (a.shape, a.dtype, reads.module_axis[n])
        seen += 1
        if len(found) == len(readers) or (max_events and seen >= max_events):
            break
    return found


def _script_type(option, docstring):
    if option:
        return option
    try:
        scantype = json.loads(docstring).get("scantype") if docstring else None
    except (ValueError, AttributeError):
        scantype = None
    return canonical_script_type(scantype) if scantype and canonical_script_type(scantype) else DEFAULT_SCRIPT_TYPE


def convert(out_path, *, files=None, exp=None, run=None, dir=None, detectors=None, max_events=None,  # noqa: A002
            script_type=None, compression=None, timing=False, beam_monitors=(), progress=True,
            overwrite=False, **psana_kwargs) -> dict:
    """Convert a psana run to a canonical h5 run file.

    Parameters
    ----------
    out_path : str or path
        The h5 file to write.
    files, exp, run, dir
        psana's source: an xtc2 file, or experiment + run (+ folder).
    detectors : list of str, optional
        Area detectors to keep (default: all).
    max_events : int, optional
        Stop after this many events.
    script_type : str, optional
        The run's ``scriptType`` (default: from the docstring, else ``misc``).
    compression : str, optional
        As :class:`RunWriter`.
    timing : bool
        Also store timing event codes and pulse ids.
    beam_monitors : sequence of str
        Beam-monitor (BLD) detectors whose fields to store.
    progress : bool or callable
        True: show a tqdm progress bar when tqdm is installed; a callable:
        called with 1 after every event (the command line's progress).
    **psana_kwargs
        More psana ``DataSource`` keywords.

    Returns
    -------
    dict
        What was written: steps, events, detectors, scan variables.
    """
    psana = _psana()
    source = {"skip_calib_load": "all", **psana_kwargs}
    source.update({k: v for k, v in dict(files=files, exp=exp, run=run, dir=dir).items() if v is not None})
    if max_events:
        source["max_events"] = int(max_events)
    ds, prun = _open(psana, source)
    names = _area_names(prun, detectors)
    shapes = _probe(psana, source, names, max_events)
    for n in [n for n in names if n not in shapes]:
        log.warning("%s: psana returned no data for %s in any event; not converted", out_path, n)
    names = [n for n in names if n in shapes]
    dets = {n: prun.Detector(n) for n in names}
    readers = {n: _reader(d) for n, d in dets.items()}
    xtc = {name: (dettype, version) for name, dettype, cls, version in prun.xtcinfo if cls == "raw"}
    scan = {n: prun.Detector(n) for (n, _cls) in prun.scaninfo if n not in ("step_value", "step_docstring")}
    daq_scan = {}
    for n in ("step_value", "step_docstring"):
        try:
            daq_scan[n] = prun.Detector(n)
        except (KeyError, AttributeError):
            pass
    extras = {}
    if timing:
        extras["timing"] = _detector(prun, "timing", "timing=True (--timing)")
    for bm in beam_monitors:
        extras[bm] = _detector(prun, bm, "beam_monitors (--beam-monitor)")
    reads = _Reads(out_path)
    bar = _progress(progress)
    steps_iter = prun.steps()
    first_step = next(steps_iter, None)
    if first_step is None:
        raise H5SourceError("the psana run has no steps", file=str(out_path))
    doc = daq_scan["step_docstring"](first_step) if "step_docstring" in daq_scan else None
    header = {
        "run": int((prun.timestamp >> 32) + LCLS_EPOCH_OFFSET), "timestamp": int(prun.timestamp),
        "date": to_datetime(prun.timestamp).replace(tzinfo=datetime.timezone.utc).isoformat(),
        "runnum": int(prun.runnum), "experiment": str(prun.expt), "convertedFrom": _describe(source),
    }
    n_events = 0
    with RunWriter(out_path, _script_type(script_type, doc), compression=compression, overwrite=overwrite,
                   allow_unknown_script_type=bool(script_type), **header) as w:
        for n in names:
            dettype, version = xtc.get(n, (n, "0_0_0"))
            t = detector_type(dettype) or detector_type(n)
            method = readers[n][1]
            declare = dict(detType=dettype, gainBitsMask=t.gain_bits_mask if t and method == "raw" else None,
                           shape=shapes[n][0], dtype=shapes[n][1],
                           attrs={"dettype": dettype, "detVersion": version, "psanaMethod": method,
                                  frame_shapes.MODULE_AXIS_ATTR: shapes[n][2]})
            try:
                w.detector(n, geometry=_geometry(dets[n]), **declare)
            except WriterError as exc:  # psana's geometry does not fit what is stored: keep the data
                log.warning("%s: %s not copied: %s", out_path, exc.h5path, exc.rule)
                w.detector(n, **declare)
        step, stop = first_step, False
        while step is not None and not stop:
            values = {n: float(d(step)) for n, d in scan.items()}
            values.update({n: (str(d(step)) if n == "step_docstring" else float(d(step))) for n, d in daq_scan.items()})
            with w.step(**values) as s:
                for evt in step.events():
                    data = {n: reads(n, read, evt) for n, (read, _m) in readers.items()}
                    data.update({n: _fields(n, d, evt) for n, d in extras.items()})
                    s.event(timestamp=int(evt.timestamp), **data)
                    n_events += 1
                    if bar is not None:
                        bar.update(1)
                    if max_events and n_events >= max_events:
                        stop = True
                        break
            step = None if stop else next(steps_iter, None)
        n_steps = w.n_steps
    if bar is not None:
        bar.close()
    reads.report()
    return {"steps": n_steps, "events": n_events, "detectors": names, "scan": sorted(scan) + sorted(daq_scan),
            "runnum": int(prun.runnum), "experiment": str(prun.expt)}


def _geometry(det):
    """psana's geometry text of a detector (its constants, else its default file) with its segment numbers, or None."""
    raw = det.raw
    text = ((getattr(raw, "_calibconst", None) or {}).get("geometry") or (None,))[0]
    if text is None and getattr(raw, "_path_geo_default", None):
        try:
            text = raw._det_geotxt_default()
        except (OSError, AttributeError, TypeError) as exc:
            log.debug("%s: no default geometry: %s", getattr(raw, "_det_name", "?"), exc)
    if not isinstance(text, str) or not text.strip():
        return None
    segments = getattr(raw, "_segment_numbers", None)
    return (text, {} if segments is None else {"segments": [int(s) for s in segments]})


def _fields(name, det, evt) -> dict:
    if name == "timing":
        codes = det.raw.eventcodes(evt)
        return {"eventcodes": np.zeros(N_EVENTCODES, np.uint8) if codes is None else np.asarray(codes, np.uint8),
                "pulseId": np.uint64(det.raw.pulseId(evt) or 0)}
    values = {m: getattr(det.raw, m)(evt) for m in dir(det.raw) if not m.startswith("_") and m not in ("config", "calib")}
    if all(v is None for v in values.values()):
        return None  # the source has no data at this event (a beam monitor at a frame event): stored as absent
    return {m: np.zeros(0) if v is None else np.asarray(v) for m, v in values.items()}


def _describe(source: dict) -> str:
    keys = ("files", "exp", "run", "dir")
    return "psana " + " ".join(f"{k}={source[k]}" for k in keys if k in source)


def _progress(enabled):
    if not enabled:
        return None
    if callable(enabled):
        return _Counter(enabled)
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(unit="event", desc="convert")


class _Counter:
    """``progress=callable``: the bar's ``update``/``close`` calling it."""

    def __init__(self, func):
        self.update = func

    def close(self) -> None:
        pass
