"""``calibsuite-h5 info FILE...``: what is in a run, from its index only."""

from __future__ import annotations

import json

from calibsuite_h5source.cli import error
from calibsuite_h5source.cli.isolation import ISOLATION_HELP, add_timeout, run_guarded
from calibsuite_h5source.errors import H5SourceError


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="summarise run files: header, layout, steps, detectors, scan values",
                       description="Summarise run files without reading frame data (fast on large files). "
                                   + ISOLATION_HELP,
                       epilog="Exit codes: 0 every file summarised, 2 a file could not be read (the others are "
                              "still summarised), 130 interrupted.")
    p.add_argument("files", nargs="+", metavar="FILE", help="run files (.h5)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per file (default: text)")
    p.add_argument("--verbose", dest="internals", action="store_true",
                   help="also show the writer's bookkeeping in the header (writerPid, openStepEvents, ...; "
                        "default: hidden)")
    add_timeout(p)
    p.set_defaults(func=run)


def summary_job(path: str, reporter) -> dict:
    """The part of ``info`` that reads the file (run in the child process)."""
    from calibsuite_h5source.tools.info import summarise

    return summarise(path, reporter)


def run(args) -> int:
    from calibsuite_h5source.tools.info import WRITER_INTERNALS, format_summary

    out, status = [], 0
    for path in args.files:
        try:
            s = run_guarded(summary_job, (path,), file=path, timeout=args.timeout)
        except H5SourceError as exc:
            error("calibsuite-h5 info", exc)  # and go on with the next file
            status = 2
            continue
        if args.json:
            if not args.internals:
                s["header"] = {k: v for k, v in s["header"].items() if k not in WRITER_INTERNALS}
            out.append(s)
        else:
            print(format_summary(s, verbose=args.internals), flush=True)
    if args.json:
        print(json.dumps(out, indent=1))
    return status
