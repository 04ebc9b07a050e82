"""``calibsuite-h5 fake OUT``: write a synthetic run (see calibsuite_h5source.synthetic.run)."""

from __future__ import annotations

import argparse

from calibsuite_h5source.cli import UsageError
from calibsuite_h5source.cli.progress import Progress, plural

#: Python argument names in the messages of SyntheticRun, as this command's flags.
FLAGS = [
    (r"give shape=\(module, row, col\)", "give --shape M,R,C"),
    (r"\bshape must be \(module, row, col\)", "--shape must be M,R,C"),
    (r"\bscan_values\b", "--scan-values"),
    (r"\bclusters must\b", "--clusters must"),
    (r"\boccupancy must\b", "--occupancy must"),
    (r"\brun_type must\b", "--run-type must"),
    (r"every synthetic step needs at least one event", "every step needs at least one event (--steps, --events)"),
]
DEFAULT_EVENTS = 10


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, not {text!r}") from exc


def _shape(text: str) -> tuple[int, int, int]:
    values = _floats(text)
    if len(values) != 3 or any(v != int(v) or v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected MODULES,ROWS,COLS (positive integers), not {text!r}")
    return tuple(int(v) for v in values)


def _count(low: int):
    """An argparse type: an integer of at least ``low`` (argparse names the option in its message)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {low}, not {text!r}")
        return value
    return parse


def steps_arg(text: str) -> int | tuple[int, ...]:
    """``--steps``: a step count (``3``) or the events of each step (``3,2,4``)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a step count (3) or events per step (3,2,4), not {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError(f"expected a step count (3) or events per step (3,2,4), not {text!r}")
    return values[0] if "," not in text else tuple(values)


def events_per_step(steps, events) -> tuple[int | list[int], int]:
    """``(events, steps)`` for SyntheticRun from ``--steps`` and ``--events`` (None: not given)."""
    if isinstance(steps, tuple):
        if events is not None:
            raise UsageError(f"--events goes with a step count; --steps {','.join(map(str, steps))} already gives "
                             "the events of each step")
        return list(steps), len(steps)
    return (DEFAULT_EVENTS if events is None else events), steps


def describe_steps(steps, events) -> str:
    """``'3 steps x 10 events'`` or ``'3 steps (3, 2, 4 events)'``."""
    if isinstance(events, list):
        return f"{plural(len(events), 'step')} ({', '.join(map(str, events))} events)"
    return f"{plural(steps, 'step')} x {plural(events, 'event')}"


def add_parser(sub) -> None:
    from calibsuite_h5source.synthetic.run import RUN_TYPES
    from calibsuite_h5source.write.storage import COMPRESSIONS

    p = sub.add_parser("fake", help="write a synthetic run with known pedestal, noise and signal",
                       description="Write a reproducible synthetic run for tests and demonstrations. "
                                   "With --timing it is laid out as at MFX: per shot a beam-monitor event "
                                   "(code 137, MfxDg1BmMon flux, no frame) then a frame event (281, 283); "
                                   "272 on both.",
                       epilog="Exit codes: 0 written, 2 bad arguments or the file exists (use --overwrite), "
                              "130 interrupted (the steps finished so far stay readable).")
    p.add_argument("out", metavar="OUT", help="the run file to write (.h5)")
    p.add_argument("--det", "--detector", dest="det", default="epixM", metavar="NAME",
                   help="epixM, epix10k, jungfrau, epixUHR, epix100 (or Epix100a), archon (or rixsCCD), ... "
                        "also the group name")
    p.add_argument("--modules", type=_count(1), help="module count (default: the detector's)")
    p.add_argument("--shape", type=_shape, metavar="M,R,C",
                   help="whole per-event shape, e.g. 1,1,4224 (default: the detector's)")
    p.add_argument("--steps", type=steps_arg, default=3, metavar="N|E,E,...",
                   help="a step count, or the events of each step (3,2,4: three steps of 3, 2 and 4 events)")
    p.add_argument("--events", type=int, default=None, metavar="N",
                   help=f"shots (frames) per step; --timing doubles the events (default: {DEFAULT_EVENTS})")
    p.add_argument("--run-type", default="dark", choices=sorted(RUN_TYPES), help="what the run simulates")
    p.add_argument("--scan-values", type=_floats, metavar="V,V,...",
                   help="per-step flux (linearity, intensityScan) or delay (delayScan) (default: the run type's)")
    g = p.add_argument_group("beam and timing")
    g.add_argument("--timing", action="store_true",
                   help="MFX timing: event codes, pulse ids, beam-monitor events at 120 Hz")
    g.add_argument("--flux-monitor", default="auto", metavar="NAME",
                   help="flux monitor source; 'auto': MfxDg1BmMon with --timing, wave8 for flux runs; 'none'")
    g.add_argument("--flux-sign", type=float, default=1.0, help="sign of the monitor reading (MFX DG1: -1)")
    g.add_argument("--flux", type=float, default=1.0, help="nominal flux of runs that do not scan it")
    g.add_argument("--flux-jitter", type=float, default=0.05, help="relative shot-to-shot flux spread")
    g.add_argument("--adu-per-flux", type=float, default=40.0, help="signal per unit flux (linearity, misc)")
    g = p.add_argument_group("photons (fe55, lowFlux)")
    g.add_argument("--occupancy", type=float, help="photons per pixel per frame (default: fe55 0.002, lowFlux 0.01)")
    g.add_argument("--photon-energy", type=float, help="keV (default: fe55 5.9, lowFlux 8.0)")
    g.add_argument("--clusters", type=_floats, default=(1.0, 0.0, 0.0), metavar="P1,P2,P4",
                   help="probabilities of a photon in 1, 2 or 2x2 pixels (default: 1,0,0)")
    g = p.add_argument_group("detector")
    g.add_argument("--gain", type=float, default=20.0, help="mean ADU per keV")
    g.add_argument("--noise", type=float, default=8.0, help="mean noise, ADU")
    g.add_argument("--no-constants", dest="constants", action="store_false",
                   help="do not write pedestals/pixel_gain (calib is then raw ADU; default: written, calib in keV)")
    p.add_argument("--compression", default=None, choices=[c for c in COMPRESSIONS if c],
                   help="frame compression (bitshuffle, blosc, zstd need the compression extra; default: none)")
    p.add_argument("--seed", type=_count(0), default=0, help="random seed: the same seed writes the same run")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)")
    p.set_defaults(func=run, flags=FLAGS)


def run(args) -> int:
    from calibsuite_h5source.synthetic.run import SyntheticRun

    events, steps = events_per_step(args.steps, args.events)
    try:
        synthetic = SyntheticRun(
            args.run_type, detector=args.det, events=events, steps=steps, seed=args.seed,
            occupancy=args.occupancy, modules=args.modules, shape=args.shape, adu_per_flux=args.adu_per_flux,
            photon_energy=args.photon_energy, clusters=args.clusters, flux=args.flux, flux_jitter=args.flux_jitter,
            scan_values=args.scan_values, timing=args.timing,
            flux_monitor=None if args.flux_monitor.lower() == "none" else args.flux_monitor,
            flux_sign=args.flux_sign, constants=args.constants, gain=args.gain, noise=args.noise)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    with Progress(f"fake {args.out}", total=sum(synthetic.truth.n_events)) as bar:
        truth = synthetic.write(args.out, compression=args.compression, overwrite=args.overwrite, progress=bar.update)
    extras = [x for x in ("timing" if args.timing else "", truth.flux_monitor or "",
                          "constants" if truth.constants else "") if x]
    print(f"wrote {args.out}: {args.run_type} run, {truth.model.name} {truth.model.shape}, "
          f"{describe_steps(steps, events)}, seed {args.seed}"
          + (f" ({', '.join(extras)})" if extras else ""))
    return 0
