"""``calibsuite-h5 fake OUT``: write a synthetic run (see calibsuite_h5source.synthetic.run)."""

from __future__ import annotations

import argparse
import sys

from calibsuite_h5source.cli import UsageError


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


def add_parser(sub) -> None:
    from calibsuite_h5source.synthetic.run import RUN_TYPES
    from calibsuite_h5source.write.storage import COMPRESSIONS

    p = sub.add_parser("fake", help="write a synthetic run with known pedestal, noise and signal",
                       description="Write a reproducible synthetic run for tests and demonstrations. "
                                   "With --timing it is laid out as at MFX: per shot a beam-monitor event "
                                   "(code 137, MfxDg1BmMon flux, no frame) then a frame event (281, 283); "
                                   "272 on both.",
                       epilog="Exit codes: 0 written, 2 bad arguments or the file exists (use --overwrite).")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--detector", default="epixM",
                   help="epixM, epix10k, jungfrau, epixUHR, epix100 (or Epix100a), archon (or rixsCCD), ... "
                        "also the group name (default epixM)")
    p.add_argument("--modules", type=int, help="module count (default: the detector's)")
    p.add_argument("--shape", type=_shape, metavar="M,R,C", help="whole per-event shape, e.g. 1,1,4224")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--events", type=int, default=10, help="shots (frames) per step; --timing doubles the events")
    p.add_argument("--run-type", default="dark", choices=sorted(RUN_TYPES))
    p.add_argument("--scan-values", type=_floats, metavar="V,V,...",
                   help="per-step flux (linearity, intensityScan) or delay (delayScan)")
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
    g.add_argument("--occupancy", type=float, help="photons per pixel per frame (fe55 0.002, lowFlux 0.01)")
    g.add_argument("--photon-energy", type=float, help="keV (fe55 5.9, lowFlux 8.0)")
    g.add_argument("--clusters", type=_floats, default=(1.0, 0.0, 0.0), metavar="P1,P2,P4",
                   help="probabilities of a photon in 1, 2 or 2x2 pixels (default 1,0,0)")
    g = p.add_argument_group("detector")
    g.add_argument("--gain", type=float, default=20.0, help="mean ADU per keV")
    g.add_argument("--noise", type=float, default=8.0, help="mean noise, ADU")
    g.add_argument("--no-constants", dest="constants", action="store_false",
                   help="do not write pedestals/pixel_gain (calib is then raw ADU)")
    p.add_argument("--compression", default=None, choices=[c for c in COMPRESSIONS if c])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from calibsuite_h5source.synthetic.run import SyntheticRun

    try:
        synthetic = SyntheticRun(
            args.run_type, detector=args.detector, events=args.events, steps=args.steps, seed=args.seed,
            occupancy=args.occupancy, modules=args.modules, shape=args.shape, adu_per_flux=args.adu_per_flux,
            photon_energy=args.photon_energy, clusters=args.clusters, flux=args.flux, flux_jitter=args.flux_jitter,
            scan_values=args.scan_values, timing=args.timing,
            flux_monitor=None if args.flux_monitor.lower() == "none" else args.flux_monitor,
            flux_sign=args.flux_sign, constants=args.constants, gain=args.gain, noise=args.noise)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=sum(synthetic.truth.n_events), unit="event", desc=args.out, disable=not sys.stderr.isatty())
    except ImportError:
        pass
    try:
        truth = synthetic.write(args.out, compression=args.compression, overwrite=args.overwrite,
                                progress=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    extras = [x for x in ("timing" if args.timing else "", truth.flux_monitor or "",
                          "constants" if truth.constants else "") if x]
    print(f"wrote {args.out}: {args.run_type} run, {truth.model.name} {truth.model.shape}, "
          f"{args.steps} steps x {args.events} events, seed {args.seed}"
          + (f" ({', '.join(extras)})" if extras else ""))
    return 0
