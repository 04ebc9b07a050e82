"""``calibsuite-h5 validate FILE...``: will the suite accept these runs?"""

from __future__ import annotations

import json
import sys

from calibsuite_h5source.cli.isolation import ISOLATION_HELP, NOTE_AFTER, add_timeout
from calibsuite_h5source.cli.progress import Progress, plural


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check run files against the run format; print every problem",
                       description="Check run files against the run format (the layout the reader accepts: "
                                   "header, steps, detectors, timestamps, scan values; every stored chunk "
                                   "decoded) and print every problem, one line each: FILE: H5PATH: SEVERITY "
                                   "CODE: MESSAGE. --list-checks lists the codes. " + ISOLATION_HELP,
                       epilog="Exit codes: 0 no problems (warnings allowed unless --strict), 1 problems found, "
                              "2 a file could not be read (including a library hang or crash on it, "
                              "reported by name), 130 interrupted (what was found so far is printed).")
    p.add_argument("files", nargs="*", metavar="FILE", help="run files (.h5)")
    p.add_argument("--strict", action="store_true", help="warnings fail too (default: only errors fail)")
    p.add_argument("--json", action="store_true", help="print problems as a JSON list (default: one line each)")
    p.add_argument("--list-checks", action="store_true",
                   help="list the problem codes (the CODE of each problem line), with the check that reports "
                        "each, and exit")
    add_timeout(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from calibsuite_h5source.tools.validate import ERROR, UNREADABLE, list_codes, validate

    if args.list_checks:
        codes = list_codes()
        width = max(len(c) for c, _, _ in codes)
        print(f"{'CODE':<{width}}  {'CHECK':<13} WHAT IT MEANS")
        for code, check, text in codes:
            print(f"{code:<{width}}  {check:<13} {text}")
        return 0
    if not args.files:
        print("calibsuite-h5 validate: error: give at least one FILE (or --list-checks)", file=sys.stderr)
        return 2
    problems, checked, interrupted = [], 0, False
    bar = Progress("validate", total=len(args.files), unit="file")
    try:
        for path in args.files:
            def waiting(kind, payload, path=path):
                if kind == "at":  # shown every few seconds: a long check of a big file is not silent
                    bar.note(f"{path}: {payload[1]} {payload[0]}")
                elif kind == "wait" and payload[0] >= NOTE_AFTER:
                    h5path, activity, _ = payload[1]
                    bar.note(f"{path}: no progress for {payload[0]:.0f} s while {activity} {h5path} "
                             f"(gives up after {args.timeout:g} s)")
            found = validate(path, timeout=args.timeout, isolate=bool(args.timeout), on_message=waiting)
            problems += found
            checked += 1
            bar.update()
            if not args.json:
                for p in found:
                    print(p, flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if args.json:
        print(json.dumps([p.to_dict() for p in problems], indent=1))
    failing = [p for p in problems if p.severity == ERROR or args.strict]
    errors = sum(p.severity == ERROR for p in problems)
    summary = (f"{checked} of {plural(len(args.files), 'file')} checked: {plural(errors, 'error')}, "
               f"{plural(len(problems) - errors, 'warning')}")
    print(summary + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    if interrupted:
        return 130
    if any(p.code == UNREADABLE for p in problems):
        return 2
    return 1 if failing else 0
