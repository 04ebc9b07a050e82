"""The ``calibsuite-h5`` command line.

Each sub-command lives in its own module of this package and provides
``add_parser(subparsers)`` and ``run(args) -> int``.

Exit codes: 0 success; 1 the command ran and found problems (``validate``);
2 a file could not be read or the command line was wrong; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .._version import __version__
from ..errors import H5SourceError

#: Sub-commands in the order ``--help`` lists them.
COMMANDS = ("demo", "info", "validate", "fake", "plot", "convert")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="calibsuite-h5",
        description="Write, inspect, check and convert calibration-suite HDF5 runs.",
        epilog="Exit codes: 0 ok, 1 problems found, 2 unreadable input or bad usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``calibsuite-h5`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except H5SourceError as exc:
        print(f"calibsuite-h5 {args.command}: error: {exc}", file=sys.stderr)
        return 2
