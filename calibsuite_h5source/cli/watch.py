"""``calibsuite-h5 watch RUN``: follow a run while it is written, one line per finished step.

Each finished step prints one line on stdout::

    step 3  delay=1.5  events 120  mean 1000.13  rms 8.02  flux(MfxDg1BmMon) 10342

(``mean``: the mean ADU of the area detector's raw frames over pixels and
events; ``rms``: the pixel noise, each pixel's rms over the step's events,
averaged over pixels; ``flux``: the mean of a beam monitor's ``peakAmplitude``
(or ``flux``) over the events that have one, when the run has one.) The step
being written shows as a progress line on stderr, refreshed every
``--progress-every`` seconds. A run file that does not exist yet is waited
for, as long as new data is (``--max-retries``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from calibsuite_h5source.cli.isolation import ISOLATION_HELP, add_timeout, run_guarded
from calibsuite_h5source.errors import NotHDF5Error, WriterGoneError

EXIT_COMPLETE, EXIT_WRITER_GONE = 0, 1
FLUX_FIELDS = ("flux", "peakAmplitude")


def add_parser(sub) -> None:
    p = sub.add_parser("watch", help="follow a run being written: a line per finished step, progress of the current",
                       description="Follow a run while its writer writes it (DataSource(..., live=True)): print "
                                   "one line per finished step (scan value, events, mean and rms of the frames, "
                                   "flux when there is a beam monitor) and a progress line for the current step. "
                                   + ISOLATION_HELP + " (For watch, the limit is --max-retries plus --timeout: "
                                   "waiting for the writer is not a hang.)",
                       epilog="Exit codes: 0 the run completed, 1 the writer died or went quiet (the run is "
                              "incomplete), 2 unreadable input or bad usage, 130 interrupted.")
    p.add_argument("file", metavar="RUN", help="the run file being written (.h5); waited for if it does not exist")
    p.add_argument("--det", "--detector", dest="det", metavar="NAME",
                   help="area detector for mean and rms (default: the first)")
    p.add_argument("--max-retries", type=float, default=None, metavar="SECONDS",
                   help="give up after this long without new data (default: PS_R_MAX_RETRIES, else 60)")
    p.add_argument("--progress-every", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between progress lines of the current step")
    add_timeout(p, extra=", beyond --max-retries")
    p.set_defaults(func=run)


class StepStats:
    """Running mean and per-pixel rms of one step's frames, and its mean flux."""

    def __init__(self):
        self.events = self.frames = self.flux_n = 0
        self.flux_sum = 0.0
        self._sum = self._sumsq = None

    def add(self, frame, flux) -> None:
        self.events += 1
        if frame is not None:
            f = np.asarray(frame, dtype=np.float64)
            if self._sum is None:
                self._sum, self._sumsq = np.zeros_like(f), np.zeros_like(f)
            self._sum += f
            self._sumsq += f * f
            self.frames += 1
        if flux is not None:
            self.flux_sum += flux
            self.flux_n += 1

    def summary(self) -> str:
        out = [f"events {self.events}"]
        if self.frames:
            mean = self._sum / self.frames
            var = np.clip(self._sumsq / self.frames - mean * mean, 0, None)
            out.append(f"mean {mean.mean():.2f}  rms {np.sqrt(var).mean():.2f}")
        if self.flux_n:
            out.append(f"flux {self.flux_sum / self.flux_n:.4g}")
        return "  ".join(out)


def _flux_source(run):
    """``(name, field)`` of a beam monitor's flux, or None."""
    for name in sorted(run._side):
        for field in FLUX_FIELDS:
            if field in run._side[name]:
                return name, field
    return None


def _flux(det, field, evt):
    value = getattr(det.raw, field)(evt)
    if value is None:
        return None
    v = float(np.mean(value))
    return abs(v) if v else None  # events without a monitor reading store zeros


def _scan_text(run, step) -> str:
    names = [n for n in run._index.scan] or ["step_value"]
    values = []
    for name in names:
        v = run.Detector(name)(step)
        values.append(f"{name}={v:g}" if isinstance(v, float) else f"{name}={v}")
    return "  ".join(values)


def watch_job(path, det_name, max_retries, progress_every, reporter):
    """Follow the run (in the child process): lines go to the caller through ``reporter.send``."""
    from calibsuite_h5source.psana2.factory import DataSource

    reporter("/", "opening")
    ds = DataSource(files=path, live=True, max_retries=max_retries)
    the_run = next(ds.runs())
    area = sorted(the_run._area)
    name = det_name or (area[0] if area else None)
    det = the_run.Detector(name) if name else None
    flux_src = _flux_source(the_run)
    flux_det = the_run.Detector(flux_src[0]) if flux_src else None
    label = f"flux({flux_src[0]}.{flux_src[1]})" if flux_src else None
    reporter.send("out", f"watching {path}: {the_run._index.script_type}"
                         f"{f', frames of {name}' if name else ''}{f', {label}' if label else ''}")
    n_steps = n_events = 0
    for step in the_run.steps():
        stats, last = StepStats(), time.monotonic()
        for evt in step.events():
            reporter(f"/{name}/{step.index}", "reading the events of")
            stats.add(det.raw.raw(evt) if det is not None else None,
                      _flux(flux_det, flux_src[1], evt) if flux_det is not None else None)
            if time.monotonic() - last >= progress_every:
                last = time.monotonic()
                reporter.send("status", f"step {step.index}  {_scan_text(the_run, step)}  ... {stats.summary()} so far")
        reporter.send("out", f"step {step.index}  {_scan_text(the_run, step)}  {stats.summary()}")
        n_steps += 1
        n_events += stats.events
    return n_steps, n_events


def run(args) -> int:
    from calibsuite_h5source.psana2.live import resolve_max_retries

    tty = sys.stderr.isatty()
    shown = []

    def show(kind, payload):
        if kind == "status":
            print(f"\r{payload}\033[K" if tty else payload, end="" if tty else "\n", file=sys.stderr, flush=True)
            shown[:] = [True]
            return True
        if kind == "out" and tty and shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            shown.clear()
        return False

    limit = args.timeout and args.timeout + resolve_max_retries(args.max_retries)
    try:
        n_steps, n_events = run_guarded(watch_job, (args.file, args.det, args.max_retries, args.progress_every),
                                        file=args.file, timeout=limit, handler=show)
    except WriterGoneError as exc:
        if not Path(args.file).exists():  # nothing appeared to watch: bad input
            raise NotHDF5Error(f"file does not exist ({exc.rule})", file=args.file) from exc
        print(f"calibsuite-h5 watch: the run is incomplete: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_WRITER_GONE
    print(f"run complete: {n_steps} steps, {n_events} events", flush=True)
    return EXIT_COMPLETE

