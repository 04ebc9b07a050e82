"""``calibsuite-h5 convert OUT``: a psana run to a canonical h5 run (needs the psana extra)."""

from __future__ import annotations

from calibsuite_h5source.cli import UsageError


def add_parser(sub) -> None:
    from calibsuite_h5source.write.storage import COMPRESSIONS

    p = sub.add_parser("convert", help="convert a psana (xtc2) run to an h5 run",
                       description="Read a run with the real psana and write it as a canonical h5 run "
                                   "(pip install 'calibsuite_h5source[psana]').",
                       epilog="Exit codes: 0 converted, 2 psana missing, unreadable input or bad arguments.")
    p.add_argument("out", metavar="OUT")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--files", help="an xtc2 file")
    src.add_argument("--exp", help="experiment (with --run)")
    p.add_argument("--run", type=int, help="run number (with --exp)")
    p.add_argument("--dir", help="folder of the experiment's xtc2 files")
    p.add_argument("--det", action="append", dest="detectors", metavar="NAME", help="area detector (repeatable; default all)")
    p.add_argument("--max-events", type=int)
    p.add_argument("--script-type", help="scriptType of the run (default: from the DAQ docstring, else misc)")
    p.add_argument("--compression", choices=[c for c in COMPRESSIONS if c])
    p.add_argument("--timing", action="store_true", help="also store timing event codes and pulse ids")
    p.add_argument("--beam-monitor", action="append", default=[], metavar="NAME", help="beam monitor to store (repeatable)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from calibsuite_h5source.write.convert import convert

    if args.exp and args.run is None:
        raise UsageError("--exp needs --run")
    if args.max_events is not None and args.max_events < 1:
        raise UsageError(f"--max-events must be at least 1; found {args.max_events}")
    if args.run is not None and not args.exp:
        raise UsageError("--run goes with --exp (with --files, psana reads the file's own run)")
    summary = convert(args.out, files=args.files, exp=args.exp, run=args.run, dir=args.dir, detectors=args.detectors,
                      max_events=args.max_events, script_type=args.script_type, compression=args.compression,
                      timing=args.timing, beam_monitors=args.beam_monitor, overwrite=args.overwrite)
    print(f"wrote {args.out}: {summary['experiment']} run {summary['runnum']}, {summary['steps']} steps, "
          f"{summary['events']} events, detectors {', '.join(summary['detectors'])}")
    return 0
