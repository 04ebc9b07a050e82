"""The ``calibsuite-h5`` command line.

Each sub-command lives in its own module of this package and provides
``add_parser(subparsers)`` and ``run(args) -> int``.

Exit codes: 0 success; 1 the command ran and found problems (``validate``);
2 a file could not be read or the command line was wrong; 130 interrupted;
128 + the signal when terminated (SIGTERM 143, SIGHUP 129); 141 the reader of
our output went away (``calibsuite-h5 info --json | head``).

Commands that open a user's file read it in a child process
(:mod:`calibsuite_h5source.cli.isolation`), so that a library hang or crash
on a damaged file ends the command with exit 2 instead of taking it down.
A command's errors name its flags, not the Python arguments of the function
it calls: each command may give ``set_defaults(flags=[(regex, flag), ...])``
and :func:`run_command` translates the message.

Errors are handled in one place, :func:`main`: a command raises (an
:class:`~calibsuite_h5source.errors.H5SourceError`, :class:`UsageError`,
an ``OSError``...) and ``main`` prints one line, never a traceback (``-vv``
shows the traceback of an unexpected error).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import sys
import threading

from calibsuite_h5source._version import __version__
from calibsuite_h5source.errors import H5SourceError

log = logging.getLogger(__name__)

#: Exit codes.
EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


class UsageError(H5SourceError):
    """The command line is wrong in a way argparse cannot tell (exit 2, one line)."""


class Terminated(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """The command got SIGTERM or SIGHUP (a batch system, a closed terminal): unwind, ending any child."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: Python argument names that reach users in messages, as every command's flags name them.
COMMON_FLAGS = [(r"\boverwrite=True\b", "--overwrite")]


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):  # a switch
            return f"{text} (default: {'on' if action.default else 'off'})"
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """The parser of every sub-command: :class:`HelpFormatter` unless told otherwise."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


#: Sub-commands in the order ``--help`` lists them.
COMMANDS = ("demo", "info", "validate", "fake", "plot", "convert", "watch")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="calibsuite-h5", formatter_class=HelpFormatter,
        description="Write, inspect, check and convert calibration-suite HDF5 runs.",
        epilog="Exit codes: 0 ok, 1 problems found, 2 unreadable input or bad usage, 130 interrupted, "
               "143/129 terminated (SIGTERM/SIGHUP), 141 output pipe closed. 'calibsuite-h5 COMMAND --help' "
               "shows a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv: debug, and the traceback of an unexpected error)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
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
        return EXIT_ERROR
    return run_command(args)


def run_command(args) -> int:
    """Run the parsed command; turn every failure into one line on stderr and an exit code."""
    prog = f"calibsuite-h5 {args.command}"
    flags = list(getattr(args, "flags", []))
    previous = _on_termination()
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here at the latest
        return code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        print(f"{prog}: terminated ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except H5SourceError as exc:
        error(prog, exc, flags)
    except (OSError, MemoryError) as exc:
        error(prog, f"{type(exc).__name__}: {exc}", flags)
    except Exception as exc:  # noqa: BLE001 - the one place every other failure becomes a line
        if args.verbose >= 2:
            raise
        log.debug("traceback", exc_info=True)
        error(prog, f"unexpected {type(exc).__name__}: {exc} (please report it; -vv shows the traceback)")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return EXIT_ERROR


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _on_termination() -> dict:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while a command runs; return the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _raise_terminated)
    return previous


def flag_names(message: str, flags=()) -> str:
    """``message`` with the Python argument names in ``flags`` (``[(regex, flag)]``) replaced by the flags."""
    for pattern, flag in [*COMMON_FLAGS, *flags]:
        message = re.sub(pattern, flag, message)
    return message


def error(prog: str, message, flags=()) -> None:
    """Print ``prog: error: message`` on stderr, on one line, naming flags (see :func:`flag_names`)."""
    print(f"{prog}: error: {flag_names(' '.join(str(message).split()), flags)}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured): nothing to flush at exit
        pass
