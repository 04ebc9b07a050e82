"""psana1 (LCLS-I) scripts on h5 runs: ``import calibsuite_h5source.psana1 as psana``.

The import line is the one change::

    import calibsuite_h5source.psana1 as psana

    ds = psana.MPIDataSource('exp=xpptut15:run=54:smd')      # finds xpptut15-r0054.h5 (see below)
    det = psana.Detector('MfxEndstation.0:Epix10ka2M.0', ds.env())
    wave8 = psana.Detector('MfxDg1BmMon')
    control = psana.Detector('ControlData')
    smd = ds.small_data('out.h5', gather_interval=100)
    for step in ds.steps():
        delay = control().pvControls()[0].value()
        for evt in step.events():
            sec, nsec = evt.get(psana.EventId).time()         # Unix seconds, as psana1
            frame = det.raw(evt)                              # also calib, image, pedestals
            flux = wave8.get(evt).peakA()
            smd.event(mean=float(frame.mean()))
    smd.save()

What maps to what
-----------------
* ``DataSource(spec)`` / ``MPIDataSource(spec)``: ``spec`` is an h5 path, or
  ``'exp=E:run=R[:dir=D][:smd|:idx]'`` (runs ``3,5`` or ``3-5`` too), found
  as ``D/E-rRRRR.h5`` or ``D/E/rRRRR.h5`` with ``D`` from ``dir=``, else
  ``$CALIBSUITE_H5_DIR``, else the working directory; ``files=`` takes paths.
  ``ds.runs()``, ``ds.steps()``, ``ds.events()`` share one cursor (successive
  ``next(ds.events())`` give successive events); ``ds.env()``.
* ``MPIDataSource``: event ``n`` of each ``events()`` / ``step.events()`` loop
  (counted from 0 per loop, as psana1) goes to rank ``n % size``; every rank
  sees every step; ``break_after(n)``, ``event_number()``, ``master``.
* ``Detector(name, env=None)``: psana1 source strings, aliases and group names
  matched to the run's groups by the rule in
  :mod:`calibsuite_h5source.psana1.detectors`; area detectors answer
  ``raw/calib/image/pedestals/gain/rms/status/shape``; side data
  ``get(evt).peakA()`` (``peakAmplitude``), ``peakT()``, any stored field;
  ``Detector('ControlData')()`` the step's scan values (``pvControls()``, the
  file's scan variables, ``ancillaryDataType`` first, else ``step_value``).
* ``evt.get(EventId).time()`` -> ``(Unix seconds, ns)``; ``fiducials()`` is
  ``pulseId & 0x1FFFF`` where timing is stored, else the run-wide event
  number's low 17 bits. ``evt.get(EvrData.DataV4, src)`` gives
  ``fifoEvents()`` (the set codes of ``timing/eventcodes``) where timing is
  stored, else None; ``src`` is not checked.
* Indexed mode: ``run.times()`` (``EventTime`` list) and ``run.event(t)``.
* ``ds.small_data(filename, gather_interval=100)``: psana1's file layout
  (:mod:`calibsuite_h5source.psana1.smalldata`).
"""

from __future__ import annotations

import logging

from calibsuite_h5source.psana1.datasource import (
    DataSource,
    Env,
    Event,
    EventTime,
    MPIDataSource,
    Run,
    Step,
    parse_spec,
    run_files,
)
from calibsuite_h5source.psana1.detectors import (
    ControlDataDetector,
    Detector,
    DetNames,
    EventId,
    EvrData,
    Source,
    resolve,
)
from calibsuite_h5source.psana1.smalldata import SmallData

log = logging.getLogger(__name__)

__all__ = [
    "DataSource", "MPIDataSource", "Detector", "DetNames", "EventId", "EvrData", "EventTime", "Source",
    "Env", "Event", "Run", "Step", "SmallData", "ControlDataDetector", "resolve", "parse_spec", "run_files",
    "setOption", "setOptions", "setConfigFile",
]


def setOption(name, value):  # noqa: N802 - psana1's name
    """Accepted and ignored (psana1 framework options mean nothing for h5 runs)."""
    log.debug("psana1.setOption(%r, %r) ignored", name, value)


def setOptions(options):  # noqa: N802
    """Accepted and ignored."""
    log.debug("psana1.setOptions(%r) ignored", options)


def setConfigFile(path):  # noqa: N802
    """Accepted and ignored."""
    log.debug("psana1.setConfigFile(%r) ignored", path)
