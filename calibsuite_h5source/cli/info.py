"""``calibsuite-h5 info FILE...``: what is in a run, from its index only."""

from __future__ import annotations

import json

from calibsuite_h5source.cli import error
from calibsuite_h5source.cli.isolation import ISOLATION_HELP, add_timeout, run_guarded
from calibsuite_h5source.errors import H5SourceError

PROG = "calibsuite-h5 info"


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


def summaries_job(paths: list, reporter) -> None:
    """Summarise ``paths`` one after the other (in the child process), sending each summary or error."""
    from calibsuite_h5source.tools.info import summarise

    for i, path in enumerate(paths):
        reporter(path, "opening")
        try:
            s = summarise(path, reporter)
        except (H5SourceError, OSError) as exc:
            text = str(exc) if isinstance(exc, H5SourceError) else f"{type(exc).__name__}: {exc}"
            reporter.send("file-error", (i, text))
        else:
            reporter.send("summary", (i, s))


def run(args) -> int:
    out, status, pending = [], 0, list(args.files)
    while pending:  # one reading process for all the files, a new one after a file it hung on
        done, failed = _summarise(pending, args, out)
        status = 2 if failed else status
        pending = pending[done:]
    if args.json:
        print(json.dumps(out, indent=1))
    return status


def _summarise(paths: list, args, out: list) -> tuple[int, bool]:
    """Summarise ``paths`` in one reading process; return (files dealt with, whether any failed)."""
    from calibsuite_h5source.tools.info import WRITER_INTERNALS, format_summary

    done, failed = [], []

    def show(kind, payload):
        if kind == "summary":
            s = payload[1]
            if args.json:
                if not args.internals:
                    s["header"] = {k: v for k, v in s["header"].items() if k not in WRITER_INTERNALS}
                out.append(s)
            else:
                print(format_summary(s, verbose=args.internals), flush=True)
        elif kind == "file-error":
            error(PROG, payload[1])  # and go on with the next file
            failed.append(payload[0])
        else:
            return False
        done.append(payload[0])
        return True

    try:
        run_guarded(summaries_job, (paths,), file=lambda: paths[len(done)], timeout=args.timeout, handler=show)
    except H5SourceError as exc:  # a hang or crash on paths[len(done)]
        error(PROG, exc)
        return len(done) + 1, True
    return len(done), bool(failed)
