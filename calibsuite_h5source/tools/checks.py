"""The checks' framework: :class:`Problem`, :class:`Context`, and the registry :func:`check` fills.

:mod:`calibsuite_h5source.tools.validate` registers its checks here and runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import h5py

from calibsuite_h5source.h5.links import Origin
from calibsuite_h5source.read.layout import LayoutMembers
from calibsuite_h5source.tools.isolate import no_progress

__all__ = ["ERROR", "WARNING", "UNREADABLE", "FOLD_AFTER", "TIMEOUT", "DECODE_BLOCK", "GLOBAL_HEAP_LOOP",
           "BITSHUFFLE_CRASH", "Problem", "Context", "Check", "CHECKS", "PHASES", "OTHER_CODES", "check",
           "list_checks", "list_codes", "fold"]

ERROR, WARNING = "error", "warning"
UNREADABLE = "unreadable"
FOLD_AFTER = 3  # more problems of one code than this are folded into one with a count
#: Seconds a check may run without progress before the file is declared unreadable.
TIMEOUT = 15.0
#: Bytes decoded per read when a dataset is not chunked.
DECODE_BLOCK = 16 << 20

#: Known faults of the libraries below us (docs/upstream-faults.rst), named in reports.
GLOBAL_HEAP_LOOP = ("libhdf5 2.0.0 loops forever reading a variable-length string whose global-heap object is "
                    "corrupted (docs/upstream-faults.rst, 'global heap loop')")
BITSHUFFLE_CRASH = ("the hdf5plugin bitshuffle filter crashes on a chunk whose header is corrupted "
                    "(docs/upstream-faults.rst, 'bitshuffle crash')")


@dataclass
class Problem:
    """One thing wrong with a file."""

    code: str
    severity: str
    message: str
    file: str
    h5path: str = "/"
    found: object = None
    expected: object = None
    count: int = 1

    def __str__(self) -> str:
        more = f" [{self.count} like this]" if self.count > 1 else ""
        return f"{self.file}: {self.h5path}: {self.severity} {self.code}: {self.message}{more}"

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("found", "expected"):
            if d[key] is not None and not isinstance(d[key], (int, float, str, bool, list)):
                d[key] = str(d[key])
        return d


@dataclass
class Context:
    """What a check sees (``members`` is None in the ``file`` phase, or when collection failed)."""

    path: str
    file: h5py.File
    layout: str
    header: dict
    members: LayoutMembers | None
    problems: list = field(default_factory=list)
    origin: Origin | None = None
    progress: Callable = no_progress

    def problem(self, code, severity, message, h5path="/", found=None, expected=None) -> Problem:
        return Problem(code, severity, message, self.path, h5path, found, expected)

    def sources(self) -> dict:
        """``{h5path: {step: EventArray}}`` of every detector and side-data field."""
        m = self.members
        if m is None:
            return {}
        out = {e["h5path"]: e["steps"] for e in m.area.values()}
        out.update({f"/{n}/{f}": steps for n, fields in m.side.items() for f, steps in fields.items()})
        return out


@dataclass(frozen=True)
class Check:
    code: str
    description: str
    func: Callable[[Context], Iterator[Problem]]
    phase: str = "run"
    reports: tuple = ()  # ((problem code, what it means), ...)
    needs_members: bool = False  # skipped when the layout's members could not be collected (reported)


CHECKS: list[Check] = []
PHASES = ("file", "run", "data")
#: Problem codes reported outside the checks: ``(code, what it means)``.
OTHER_CODES = (
    (UNREADABLE, "the file cannot be opened or read at all (not HDF5, truncated, or a library hang or crash on it)"),
    ("layout", "the run's steps cannot be collected from the layout"),
    ("reader", "the reader refuses the file for a reason no check reported"),
)


def check(code: str, description: str, phase: str = "run", reports: dict | None = None,
          needs_members: bool = False):
    """Register a check function ``func(ctx) -> iterable of Problem`` for ``phase`` (see the module doc).

    ``reports``: ``{problem code: what it means}`` of every code the check
    reports (default: its own name, ``code``); ``--list-checks`` lists them.
    ``needs_members``: the check reads ``ctx.members`` and is not run when
    the layout could not be collected (that is reported already).
    """
    assert phase in PHASES, phase

    def register(func):
        CHECKS.append(Check(code, description, func, phase, tuple((reports or {code: description}).items()),
                            needs_members))
        return func
    return register


def list_checks() -> list[tuple[str, str]]:
    """``[(code, description)]`` of every registered check, in the order they run."""
    return [(c.code, c.description) for phase in PHASES for c in CHECKS if c.phase == phase]


def list_codes() -> list[tuple[str, str, str]]:
    """``[(problem code, check, what it means)]``: every code a :class:`Problem` can carry, in check order."""
    out = [(code, c.code, text) for phase in PHASES for c in CHECKS if c.phase == phase for code, text in c.reports]
    return out + [(code, "-", text) for code, text in OTHER_CODES]


def fold(problems: list[Problem]) -> list[Problem]:
    """Fold more than :data:`FOLD_AFTER` problems of one code into one with a ``count``."""
    by_code: dict[str, list[Problem]] = {}
    for p in problems:
        by_code.setdefault(p.code, []).append(p)
    out = []
    for group in by_code.values():
        if len(group) > FOLD_AFTER:
            first = group[0]
            first.count = sum(p.count for p in group)
            first.message += f" (and {len(group) - 1} more like it)"
            out.append(first)
        else:
            out.extend(group)
    return out
