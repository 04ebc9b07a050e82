"""``calibsuite-h5 convert OUT``: a psana run to a canonical h5 run (needs the psana extra)."""

from __future__ import annotations

from calibsuite_h5source.cli import UsageError
from calibsuite_h5source.cli.isolation import ISOLATION_HELP, add_timeout, run_guarded
from calibsuite_h5source.cli.progress import Progress, plural

#: Python argument names in convert's messages, as this command's flags.
FLAGS = [(r"\btiming=True \(--timing\)", "--timing"), (r"\bbeam_monitors \(--beam-monitor\)", "--beam-monitor"),
         (r"\bmax_events\b", "--max-events"), (r"\bscript_type\b", "--script-type")]
#: Default --timeout of convert: psana may wait on its calibration database or logbook before the first event.
TIMEOUT = 60.0


def add_parser(sub) -> None:
    from calibsuite_h5source.write.storage import COMPRESSIONS

    p = sub.add_parser("convert", help="convert a psana (xtc2) run to an h5 run",
                       description="Read a run with the real psana and write it as a canonical h5 run "
                                   "(pip install 'calibsuite_h5source[psana]'). " + ISOLATION_HELP,
                       epilog="Exit codes: 0 converted, 2 psana missing, unreadable input or bad arguments, "
                              "130 interrupted.")
    p.add_argument("out", metavar="OUT", help="the h5 run file to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--files", metavar="XTC2", help="an xtc2 file (or --exp)")
    src.add_argument("--exp", help="experiment, with --run (or --files)")
    p.add_argument("--run", type=int, help="run number, with --exp (default: none)")
    p.add_argument("--dir", help="folder of the experiment's xtc2 files (default: psana's)")
    p.add_argument("--det", "--detector", action="append", dest="detectors", metavar="NAME",
                   help="area detector to convert (repeatable; default: all)")
    p.add_argument("--max-events", type=int, metavar="N", help="stop after N events (default: all)")
    p.add_argument("--script-type", help="scriptType of the run (default: from the DAQ docstring, else misc)")
    p.add_argument("--compression", choices=[c for c in COMPRESSIONS if c],
                   help="frame compression (bitshuffle, blosc, zstd need the compression extra; default: none)")
    p.add_argument("--timing", action="store_true", help="also store timing event codes and pulse ids")
    p.add_argument("--beam-monitor", action="append", default=[], metavar="NAME",
                   help="beam monitor to store (repeatable; default: none)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)")
    add_timeout(p, default=TIMEOUT, extra=" (psana may wait on its calibration database before the first event)")
    p.set_defaults(func=run, flags=FLAGS)


def convert_job(out, kwargs, reporter):
    """The part of ``convert`` that reads the psana run (run in the child process)."""
    from calibsuite_h5source.write.convert import convert

    done = [0]

    def count(n):
        done[0] += n
        reporter(f"event {done[0]}", "converting")
        reporter.send("count", (done[0], kwargs.get("max_events")), throttle=True)
    return convert(out, progress=count, **kwargs)


def run(args) -> int:
    if args.exp and args.run is None:
        raise UsageError("--exp needs --run")
    if args.max_events is not None and args.max_events < 1:
        raise UsageError(f"--max-events must be at least 1; found {args.max_events}")
    if args.run is not None and not args.exp:
        raise UsageError("--run goes with --exp (with --files, psana reads the file's own run)")
    kwargs = dict(files=args.files, exp=args.exp, run=args.run, dir=args.dir, detectors=args.detectors,
                  max_events=args.max_events, script_type=args.script_type, compression=args.compression,
                  timing=args.timing, beam_monitors=args.beam_monitor, overwrite=args.overwrite)
    source = args.files or f"exp={args.exp} run={args.run}"
    with Progress(f"convert {source}", total=args.max_events) as bar:
        summary = run_guarded(convert_job, (args.out, kwargs), file=source, timeout=args.timeout, progress=bar,
                              notes=False)
    print(f"wrote {args.out}: {summary['experiment']} run {summary['runnum']}, {plural(summary['steps'], 'step')}, "
          f"{plural(summary['events'], 'event')}, detectors {', '.join(summary['detectors'])}")
    return 0
