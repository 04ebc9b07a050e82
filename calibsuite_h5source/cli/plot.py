"""``calibsuite-h5 plot FILE -o out.png``: look at a run."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="PNG overview: an event, a step's mean frame, events per step, scan values",
                       description="Draw a one-page overview of a run (needs matplotlib).",
                       epilog="Exit codes: 0 written, 2 unreadable file, unknown detector/step/event, or no matplotlib.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--det", help="detector (default: the first)")
    p.add_argument("--step", type=int, default=0)
    p.add_argument("--event", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from calibsuite_h5source.tools.plot import plot_run

    print(plot_run(args.file, args.output, det=args.det, step=args.step, event=args.event))
    return 0
