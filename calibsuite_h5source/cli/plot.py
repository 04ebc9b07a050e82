"""``calibsuite-h5 plot FILE -o out.png``: look at a run."""

from __future__ import annotations

from calibsuite_h5source.cli.isolation import ISOLATION_HELP, add_timeout, run_guarded


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="PNG overview: an event, a step's mean frame, events per step, scan values",
                       description="Draw a one-page overview of a run (needs matplotlib: the plot extra). "
                                   "Frames are calib, in keV when the run stores pedestals and pixel_gain, in "
                                   "ADU otherwise; --raw shows the stored ADU. " + ISOLATION_HELP,
                       epilog="Exit codes: 0 written, 2 unreadable file, unknown detector/step/event, or no "
                              "matplotlib, 130 interrupted.")
    p.add_argument("file", metavar="FILE", help="the run file (.h5)")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="PNG to write (required)")
    p.add_argument("--det", "--detector", dest="det", metavar="NAME", help="area detector (default: the first)")
    p.add_argument("--step", type=int, default=0, help="step of the event shown, and of the mean frame")
    p.add_argument("--event", type=int, default=0, help="event within --step shown in the first panel")
    p.add_argument("--raw", action="store_true", help="show raw frames in ADU (default: calib)")
    add_timeout(p)
    p.set_defaults(func=run)


def plot_job(path, output, det, step, event, raw, reporter) -> dict:
    """The part of ``plot`` that reads the file (run in the child process)."""
    from calibsuite_h5source.tools.plot import plot_run

    return plot_run(path, output, det=det, step=step, event=event, raw=raw, progress=reporter)


def run(args) -> int:
    drawn = run_guarded(plot_job, (args.file, args.output, args.det, args.step, args.event, args.raw),
                        file=args.file, timeout=args.timeout)
    print(f"wrote {drawn['png']}: {drawn['title'].splitlines()[0]}")
    return 0
