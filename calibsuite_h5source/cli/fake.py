"""``calibsuite-h5 fake OUT``: write a synthetic run (see calibsuite_h5source.fake)."""

from __future__ import annotations

import sys

from . import UsageError


def add_parser(sub) -> None:
    from ..fake import RUN_TYPES
    from ..storage import COMPRESSIONS

    p = sub.add_parser("fake", help="write a synthetic run with known pedestal, noise and signal",
                       description="Write a reproducible synthetic run for tests and demonstrations.",
                       epilog="Exit codes: 0 written, 2 bad arguments or the file exists (use --overwrite).")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--detector", default="epixM", help="epixM, epix10k, jungfrau, epixUHR, epix100, ... (default epixM)")
    p.add_argument("--modules", type=int, help="module count (default: the detector's)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--events", type=int, default=10, help="events per step")
    p.add_argument("--run-type", default="dark", choices=sorted(RUN_TYPES))
    p.add_argument("--occupancy", type=float, default=0.002, help="Fe-55 photons per pixel per event (fe55)")
    p.add_argument("--compression", default=None, choices=[c for c in COMPRESSIONS if c])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..fake import SyntheticRun

    try:
        synthetic = SyntheticRun(args.run_type, detector=args.detector, events=args.events, steps=args.steps,
                                 seed=args.seed, occupancy=args.occupancy, modules=args.modules)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=args.steps * args.events, unit="event", desc=args.out, disable=not sys.stderr.isatty())
    except ImportError:
        pass
    try:
        truth = synthetic.write(args.out, compression=args.compression, overwrite=args.overwrite,
                                progress=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {args.out}: {args.run_type} run, {args.detector} {truth.model.shape}, "
          f"{args.steps} steps x {args.events} events, seed {args.seed}")
    return 0
