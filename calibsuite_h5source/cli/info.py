"""``calibsuite-h5 info FILE...``: what is in a run, from its index only."""

from __future__ import annotations

import json

from calibsuite_h5source.cli import error
from calibsuite_h5source.errors import H5SourceError


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="summarise run files: header, layout, steps, detectors, scan values",
                       description="Summarise run files without reading frame data (fast on large files).",
                       epilog="Exit codes: 0 every file summarised, 2 a file could not be read.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per file")
    p.set_defaults(func=run)


def run(args) -> int:
    from calibsuite_h5source.tools.info import format_summary, summarise

    out, status = [], 0
    for path in args.files:
        try:
            s = summarise(path)
        except H5SourceError as exc:
            error("calibsuite-h5 info", exc)  # and go on with the next file
            status = 2
            continue
        if args.json:
            out.append(s)
        else:
            print(format_summary(s))
    if args.json:
        print(json.dumps(out, indent=1))
    return status
