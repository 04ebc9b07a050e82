"""``calibsuite-h5 validate FILE...``: will the suite accept these runs?"""

from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check run files against docs/format.rst",
                       description="Check run files against the format (docs/format.rst); print every problem.",
                       epilog="Exit codes: 0 no problems (warnings allowed unless --strict), 1 problems found, "
                              "2 a file could not be read (including a library hang or crash on it, "
                              "reported by name), 130 interrupted (what was found so far is printed).")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--json", action="store_true", help="print problems as a JSON list")
    p.add_argument("--list-checks", action="store_true", help="list the checks and exit")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="report a file as unreadable after this long without progress (a library hang); "
                        "default 60")
    p.set_defaults(func=run)


def _progress(files):
    if len(files) < 2 or not sys.stderr.isatty():
        return files
    try:
        from tqdm import tqdm
    except ImportError:
        return files
    return tqdm(files, desc="validate", unit="file")


def run(args) -> int:
    from calibsuite_h5source.tools.validate import ERROR, TIMEOUT, UNREADABLE, list_checks, validate

    if args.list_checks:
        for code, description in list_checks():
            print(f"{code:<14} {description}")
        return 0
    if not args.files:
        print("calibsuite-h5 validate: error: give at least one FILE (or --list-checks)", file=sys.stderr)
        return 2
    problems, checked, interrupted = [], 0, False
    try:
        for path in _progress(args.files):
            found = validate(path, timeout=args.timeout or TIMEOUT)
            problems += found
            checked += 1
            if not args.json:
                for p in found:
                    print(p)
    except KeyboardInterrupt:
        interrupted = True
    if args.json:
        print(json.dumps([p.to_dict() for p in problems], indent=1))
    failing = [p for p in problems if p.severity == ERROR or args.strict]
    errors = sum(p.severity == ERROR for p in problems)
    summary = f"{checked} of {len(args.files)} files checked: {errors} errors, {len(problems) - errors} warnings"
    print(summary + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    if interrupted:
        return 130
    if any(p.code == UNREADABLE for p in problems):
        return 2
    return 1 if failing else 0
