"""Check a run file against ``docs/format.rst``: checks are plain functions returning problems.

``validate(path) -> list[Problem]``. Each check is registered with
:func:`check` and receives a :class:`Context` (the open file, its layout and
header, and the per-step members the layout module collected, not yet
checked); it yields :class:`Problem` records. Problems of one kind are folded
into one record with a ``count``. Last, the reader itself opens the file: if
it refuses it for a reason no check reported, that is reported too, so a
file that validates clean always reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import timestamps as _ts
from .errors import H5SourceError, LinkError, NotHDF5Error
from .layout import HEADER, LayoutMembers, detect_layout, open_h5, read_header
from .run_index import open_run_index
from .script_types import is_known_script_type
from .timestamps import LCLS_EPOCH_OFFSET

log = logging.getLogger(__name__)

ERROR, WARNING = "error", "warning"
UNREADABLE = "unreadable"
FOLD_AFTER = 3  # more problems of one code than this are folded into one with a count


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
    """What a check sees."""

    path: str
    file: h5py.File
    layout: str
    header: dict
    members: LayoutMembers | None
    problems: list = field(default_factory=list)

    def problem(self, code, severity, message, h5path="/", found=None, expected=None) -> Problem:
        return Problem(code, severity, message, self.path, h5path, found, expected)

    def sources(self) -> dict:
        """``{h5path: {step: EventArray}}`` of every detector and side-data field."""
        m = self.members
        out = {e["h5path"]: e["steps"] for e in m.area.values()}
        out.update({f"/{n}/{f}": steps for n, fields in m.side.items() for f, steps in fields.items()})
        return out


@dataclass(frozen=True)
class Check:
    code: str
    description: str
    func: Callable[[Context], Iterator[Problem]]


CHECKS: list[Check] = []


def check(code: str, description: str):
    """Register a check function ``func(ctx) -> iterable of Problem``."""
    def register(func):
        CHECKS.append(Check(code, description, func))
        return func
    return register


def list_checks() -> list[tuple[str, str]]:
    """``[(code, description)]`` of every registered check."""
    return [(c.code, c.description) for c in CHECKS]


# -- the checks ---------------------------------------------------------------------

@check("header", "the /ancillaryData header exists and has a recognised scriptType")
def _header(ctx: Context):
    if ctx.layout != "legacy" and not isinstance(ctx.file.get(HEADER), h5py.Group):
        yield ctx.problem("header", ERROR, "no /ancillaryData group: the header is required", f"/{HEADER}")
    st = ctx.header.get("scriptType")
    if not st:
        yield ctx.problem("header", ERROR, "no scriptType in the header (required)", f"/{HEADER}",
                          found=sorted(ctx.header), expected="scriptType")
    elif not is_known_script_type(st):
        yield ctx.problem("script-type", WARNING, f"scriptType {st!r} is not a recognised type", f"/{HEADER}",
                          found=st)


@check("run-id", "the header's run (Unix seconds) is plausible")
def _run_id(ctx: Context):
    run = ctx.header.get("run")
    if run is None:
        if ctx.layout != "legacy":
            yield ctx.problem("run-id", WARNING, "no run id: timestamps will be synthesised from 1990-01-01",
                              f"/{HEADER}", expected="run = Unix seconds of the run start")
        return
    now = time.time() + 86400
    if not isinstance(run, int) or not LCLS_EPOCH_OFFSET <= run <= now:
        yield ctx.problem("run-id", ERROR, "run must be an int of Unix seconds between 1990 and now",
                          f"/{HEADER}", found=run, expected=f"{LCLS_EPOCH_OFFSET}..{int(now)}")


@check("steps", "at least one step; steps numbered 0, 1, ...; every detector has the same steps and events")
def _steps(ctx: Context):
    sources = ctx.sources()
    if not sources:
        yield ctx.problem("steps", ERROR, "no detector or side data: a run needs at least one step", "/")
        return
    ref_path, ref = next(iter(sources.items()))
    for path, steps in sources.items():
        keys = sorted(steps)
        if keys != list(range(len(keys))):
            yield ctx.problem("step-numbering", ERROR, "steps must be numbered contiguously from 0", path,
                              found=keys, expected=list(range(len(keys))))
    if not ref:
        yield ctx.problem("steps", ERROR, "zero steps", ref_path)
    index = ctx.file.get(f"{HEADER}/nEvents")
    if ctx.layout == "canonical" and isinstance(index, h5py.Dataset):
        counts = index[()].tolist()
        actual = [ref[k].n for k in sorted(ref)][: len(counts)]
        if counts != actual:
            yield ctx.problem("nevents-index", ERROR, "/ancillaryData/nEvents disagrees with the data", index.name,
                              found=counts, expected=actual)
    for path, steps in sources.items():
        if len(steps) != len(ref):
            yield ctx.problem("same-steps", ERROR, f"{path} has {len(steps)} steps, {ref_path} has {len(ref)}",
                              path, found=len(steps), expected=len(ref))
            continue
        for k in sorted(set(steps) & set(ref)):
            if steps[k].n != ref[k].n:
                yield ctx.problem("same-events", ERROR, f"step {k}: {steps[k].n} events, {ref_path} has {ref[k].n}",
                                  path, found=steps[k].n, expected=ref[k].n)


@check("frame-shape", "per-event detector data is [module, row, col] with one shape and dtype in every step")
def _frames(ctx: Context):
    for entry in ctx.members.area.values():
        first = None
        for k, ea in sorted(entry["steps"].items()):
            shape = ea.dataset.shape[len(ea.prefix):]
            where = ea.dataset.name
            if len(shape) != 4:
                yield ctx.problem("frame-shape", ERROR, f"step {k}: per-event data must be [module, row, col]",
                                  where, found=shape[1:], expected="[module, row, col]")
                continue
            if first is None:
                first = (shape[1:], str(ea.dataset.dtype))
            elif (shape[1:], str(ea.dataset.dtype)) != first:
                yield ctx.problem("frame-consistency", ERROR, f"step {k} differs from step 0", where,
                                  found=(shape[1:], str(ea.dataset.dtype)), expected=first)


@check("timestamps", "timestamps have nEvents entries per step and strictly increase")
def _timestamps(ctx: Context):
    m = ctx.members
    if not m.timestamps:
        return
    sources = ctx.sources()
    ref = next(iter(sources.values()), {})
    last = None
    for k in sorted(m.timestamps):
        ea = m.timestamps[k]
        where = m.ts_path.replace("<k>", str(k)) if "<k>" in m.ts_path else f"{m.ts_path}/{k}"
        try:
            ts = _ts.checked(ea.read_all(), ctx.path, where).astype(np.int64)
        except H5SourceError as exc:
            yield ctx.problem("timestamp-value", ERROR, exc.rule, exc.h5path or where)
            continue
        if k in ref and ts.shape != (ref[k].n,):
            yield ctx.problem("timestamp-length", ERROR, f"step {k} needs one timestamp per event", where,
                              found=list(ts.shape), expected=[ref[k].n])
            continue
        bad = int(np.sum(np.diff(ts) <= 0))
        if bad:
            yield ctx.problem("timestamp-order", ERROR, f"step {k}: {bad} timestamps do not increase", where,
                              found=bad, expected=0)
        if last is not None and len(ts) and ts[0] <= last:
            yield ctx.problem("timestamp-order", ERROR, f"step {k} starts before step {k - 1} ends", where)
        if len(ts):
            last = ts[-1]
    if ref and sorted(m.timestamps) != sorted(ref):
        yield ctx.problem("timestamp-length", ERROR, "timestamps must exist for every step", m.ts_path,
                          found=sorted(m.timestamps), expected=sorted(ref))


@check("scan", "per-step scan values have nSteps entries; per-event values are constant within a step")
def _scan(ctx: Context):
    g = ctx.file.get(HEADER) if ctx.layout != "legacy" else ctx.file
    ref = next(iter(ctx.sources().values()), {})
    n_steps = len(ref)
    if not isinstance(g, h5py.Group) or not n_steps:
        return
    complete = bool(ctx.header.get("complete", True))
    for name, obj in g.items():
        if (ctx.layout == "legacy" and name != "step_value") or name == "nEvents":
            continue
        if isinstance(obj, h5py.Group):
            for k, ds in obj.items():
                v = ds[()]
                if v.ndim == 1 and len(v) and np.any(v != v[0]):
                    yield ctx.problem("scan-constant", WARNING, f"per-event scan value changes inside step {k}",
                                      ds.name, found=[v.min().item(), v.max().item()], expected="one value")
        elif obj.ndim == 1 and obj.dtype.kind in "biufO":
            if len(obj) != n_steps and (complete or len(obj) < n_steps):
                yield ctx.problem("scan-length", ERROR, "a per-step value needs one entry per step", obj.name,
                                  found=len(obj), expected=n_steps)


@check("complete", "the run was closed cleanly by its writer")
def _complete(ctx: Context):
    if not bool(ctx.header.get("complete", True)):
        error = ctx.header.get("error")
        yield ctx.problem("incomplete", WARNING, f"the run is incomplete: only {ctx.header.get('stepsComplete', 0)} "
                          f"steps were finished{f' ({error})' if error else ''}", f"/{HEADER}")


@check("links", "no external links or virtual datasets leaving the file's folder")
def _links(ctx: Context):
    folder = Path(ctx.path).resolve().parent
    found = []

    def visit(name, link):
        if isinstance(link, h5py.ExternalLink):
            found.append((f"/{name}", link.filename))

    ctx.file.visititems_links(visit)
    for name, obj in _datasets(ctx.file):
        if obj.is_virtual:
            found += [(f"/{name}", s.file_name) for s in obj.virtual_sources() if s.file_name != "."]
    for where, target in found:
        resolved = (folder / target).resolve()
        if folder not in resolved.parents and resolved.parent != folder:
            yield ctx.problem("external-link", ERROR, "data lives outside the file's folder", where,
                              found=str(target), expected=f"a file in {folder}")


def _datasets(f: h5py.File):
    out = []
    f.visititems(lambda n, o: out.append((n, o)) if isinstance(o, h5py.Dataset) else None)
    return out


# -- running them ---------------------------------------------------------------------

def _fold(problems: list[Problem]) -> list[Problem]:
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


def validate(path) -> list[Problem]:
    """Check ``path`` and return its problems (an empty list for a clean file)."""
    path = str(path)
    try:
        f = open_h5(path)
    except NotHDF5Error as exc:
        return [Problem(UNREADABLE, ERROR, exc.rule, path, "/")]
    with f:
        try:
            header = read_header(f)
            layout = detect_layout(f)
            members = LayoutMembers(f, path)
            getattr(members, f"collect_{layout}")()
        except H5SourceError as exc:
            code = "external-link" if isinstance(exc, LinkError) else "layout"
            return [Problem(code, ERROR, exc.rule, path, exc.h5path or "/")]
        except OSError as exc:
            return [Problem(UNREADABLE, ERROR, f"HDF5 file is damaged: {exc}", path, "/")]
        ctx = Context(path, f, layout, header, members)
        problems = []
        for c in CHECKS:
            try:
                problems.extend(c.func(ctx))
            except Exception as exc:  # a check must never hide the others
                log.debug("check %s failed", c.code, exc_info=True)
                problems.append(Problem(c.code, ERROR, f"could not be checked: {exc}", path, "/"))
    if not any(p.severity == ERROR for p in problems):
        try:
            open_run_index(path).close()
        except H5SourceError as exc:
            problems.append(Problem("reader", ERROR, f"the reader refuses the file: {exc.rule}", path, exc.h5path or "/"))
    return _fold(problems)
