"""Check a run file against ``docs/format.rst``: checks are plain functions returning problems.

``validate(path) -> list[Problem]``. Each check is registered with
:func:`check` and receives a :class:`Context` (the open file, its layout and
header, and the per-step members the layout module collected, not yet
checked); it yields :class:`Problem` records. Problems of one kind are folded
into one record with a ``count``. Last, the reader itself opens the file: if
it refuses it for a reason no check reported, that is reported too, so a
file that validates clean always reads.

Checks run in three phases: ``file`` (every attribute readable, links,
header values: no layout needed), ``run`` (the layout's members, collected
as the reader collects them) and ``data`` (every stored chunk decoded).

``validate`` never raises and always ends: the checks run in a child process
(:mod:`calibsuite_h5source.tools.isolate`) that is killed after ``timeout`` seconds
without progress; a hang or a crash is reported as ``unreadable``, naming the
upstream fault when it is a known one (``docs/upstream-faults.rst``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import h5py
import numpy as np

from calibsuite_h5source.errors import H5SourceError, HeaderError, LinkError, NotHDF5Error
from calibsuite_h5source.format import rules
from calibsuite_h5source.format import timestamps as _ts
from calibsuite_h5source.format.constants import HEADER
from calibsuite_h5source.format.script_types import is_known_script_type
from calibsuite_h5source.format.timestamps import LCLS_EPOCH_OFFSET
from calibsuite_h5source.h5.files import open_h5
from calibsuite_h5source.h5.filters import require_filters
from calibsuite_h5source.h5.guard import translate
from calibsuite_h5source.h5.links import Origin, check_virtual, open_member
from calibsuite_h5source.h5.storage_map import filter_names, objects, stored_regions
from calibsuite_h5source.read.layout import (
    LayoutMembers,
    detect_layout,
    read_header,
)
from calibsuite_h5source.read.run_index import check_every_step, open_run_index
from calibsuite_h5source.read.scan import scan_variables
from calibsuite_h5source.tools.checks import (  # noqa: F401 - the public names, also importable from here
    BITSHUFFLE_CRASH,
    CHECKS,
    DECODE_BLOCK,
    ERROR,
    FOLD_AFTER,
    GLOBAL_HEAP_LOOP,
    OTHER_CODES,
    PHASES,
    TIMEOUT,
    UNREADABLE,
    WARNING,
    Check,
    Context,
    Problem,
    check,
    fold,
    list_checks,
    list_codes,
)
from calibsuite_h5source.tools.isolate import no_progress, run_isolated

log = logging.getLogger(__name__)


# -- the checks ---------------------------------------------------------------------

@check("attributes", "every attribute of every object can be read", phase="file")
def _attributes(ctx: Context):
    for _, obj in [("/", ctx.file), *objects(ctx.file)]:
        ctx.progress(obj.name, "reading the attributes of")
        try:
            for key in obj.attrs:
                obj.attrs[key]
        except Exception as exc:
            yield ctx.problem("attributes", ERROR, f"an attribute cannot be read: {type(exc).__name__}: {exc}",
                              obj.name)


@check("links", "links resolve; external links and virtual-dataset sources stay inside the file's folder",
       phase="file", reports={"link": "a link or virtual-dataset source is dangling, loops or leaves the file's folder"})
def _links(ctx: Context):
    found = []
    ctx.file.visititems_links(lambda name, link: found.append(name)
                              if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)) else None)
    for name in found:
        parent, _, member = f"/{name}".rpartition("/")
        ctx.progress(f"/{name}", "following the link")
        try:
            open_member(ctx.file[parent or "/"], member, ctx.origin)
        except LinkError as exc:
            yield ctx.problem("link", ERROR, exc.rule, exc.h5path or f"/{name}")
    for _, obj in objects(ctx.file):
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            try:
                check_virtual(obj, ctx.origin)
            except LinkError as exc:
                yield ctx.problem("link", ERROR, exc.rule, exc.h5path or obj.name)


@check("header-values", "every documented header value has its type and range",
       reports={"header-value": "a documented header value has the wrong type or is out of range"})
def _header_values(ctx: Context):
    where = f"/{HEADER}" if ctx.layout != "legacy" else "/"
    for name, rule in rules.HEADER.items():
        if name in ctx.header:
            try:
                rules.check(name, rule, ctx.header[name], ctx.path, where)
            except HeaderError as exc:
                yield ctx.problem("header-value", ERROR, exc.rule, where, found=repr(ctx.header[name]))


@check("header", "the /ancillaryData header exists and has a recognised scriptType",
       reports={"header": "no /ancillaryData header, or no scriptType in it",
                "script-type": "the scriptType is not a recognised type (warning)"})
def _header(ctx: Context):
    if ctx.layout != "legacy" and not isinstance(ctx.file.get(HEADER), h5py.Group):
        yield ctx.problem("header", ERROR, "no /ancillaryData group: the header is required", f"/{HEADER}")
    st = ctx.header.get("scriptType")
    if not st:
        yield ctx.problem("header", ERROR, "no scriptType in the header (required)", f"/{HEADER}",
                          found=sorted(ctx.header), expected="scriptType")
    elif isinstance(st, str) and not is_known_script_type(st):
        yield ctx.problem("script-type", WARNING, f"scriptType {st!r} is not a recognised type", f"/{HEADER}",
                          found=st)


@check("run-id", "the header's run (Unix seconds) is plausible")
def _run_id(ctx: Context):
    run = ctx.header.get("run")
    if run is None:
        if ctx.layout != "legacy":
            stored = ctx.members is not None and bool(ctx.members.timestamps)
            consequence = "run.timestamp comes from the first event" if stored else \
                "timestamps will be synthesised from 1990-01-01"
            yield ctx.problem("run-id", WARNING, f"no run id: {consequence}",
                              f"/{HEADER}", expected="run = Unix seconds of the run start")
        return
    now = time.time() + 86400
    if isinstance(run, int) and not isinstance(run, bool) and not LCLS_EPOCH_OFFSET <= run <= now:
        yield ctx.problem("run-id", ERROR, "run must be an int of Unix seconds between 1990 and now",
                          f"/{HEADER}", found=run, expected=f"{LCLS_EPOCH_OFFSET}..{int(now)}")


@check("steps", "at least one step; steps numbered 0, 1, ...; every detector has the same steps and events",
       reports={"steps": "no step, or no detector or side data",
                "step-numbering": "steps are not numbered 0, 1, ...",
                "nevents-index": "/ancillaryData/nEvents disagrees with the data",
                "same-steps": "a detector or side-data field has a different number of steps",
                "same-events": "a detector or side-data field has a different number of events in a step"},
       needs_members=True)
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


@check("frame-shape", "per-event detector data is [module, row, col] with one shape and dtype in every step",
       reports={"frame-shape": "per-event detector data is not [module, row, col]",
                "frame-dtype": "frames are not numeric",
                "frame-consistency": "a step's frames differ in shape or dtype from step 0's"},
       needs_members=True)
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
            if ea.dataset.dtype.kind not in "biuf":
                yield ctx.problem("frame-dtype", ERROR, f"step {k}: frames must be numeric", where,
                                  found=str(ea.dataset.dtype), expected="an integer, float or bool dtype")
            if first is None:
                first = (shape[1:], str(ea.dataset.dtype))
            elif (shape[1:], str(ea.dataset.dtype)) != first:
                yield ctx.problem("frame-consistency", ERROR, f"step {k} differs from step 0", where,
                                  found=(shape[1:], str(ea.dataset.dtype)), expected=first)


@check("geometry", "a detector's calib/geometry is psana geometry text whose segments place its frames",
       needs_members=True)
def _geometry(ctx: Context):
    from calibsuite_h5source.geometry.source import GEOMETRY, geometry_problem
    for entry in ctx.members.area.values():
        calib = entry["calib"]
        if calib is None or GEOMETRY not in calib or not entry["steps"]:
            continue
        ea = entry["steps"][min(entry["steps"])]
        frame = ea.dataset.shape[len(ea.prefix) + 1:]
        why = geometry_problem(calib, frame) if len(frame) == 3 else None
        if why:
            yield ctx.problem("geometry", ERROR, f"the geometry cannot draw this detector's images: {why}",
                              f"{calib.name}/{GEOMETRY}", expected="psana geometry text (docs/format.rst)")


@check("timestamps", "timestamps have nEvents entries per step and strictly increase",
       reports={"timestamp-length": "a step has not one timestamp per event, or no timestamps",
                "timestamp-value": "timestamps are not unsigned finite 64-bit integers",
                "timestamp-order": "timestamps do not strictly increase"},
       needs_members=True)
def _timestamps(ctx: Context):
    m = ctx.members
    if not m.timestamps:
        return
    sources = ctx.sources()
    ref = next(iter(sources.values()), {})
    last = prev_last = None
    for k in sorted(m.timestamps):
        ea = m.timestamps[k]
        where = m.ts_path.replace("<k>", str(k)) if "<k>" in m.ts_path else f"{m.ts_path}/{k}"
        ctx.progress(where, "checking the timestamps of")
        if k in ref and ea.n != ref[k].n:
            yield ctx.problem("timestamp-length", ERROR, f"step {k} needs one timestamp per event", where,
                              found=[ea.n], expected=[ref[k].n])
            continue
        bad, first = 0, None
        try:
            for start in range(0, ea.n, _ts.BLOCK):  # block by block: a declared extent is not allocated
                ts = _ts.checked(ea.read_range(start, min(start + _ts.BLOCK, ea.n)), ctx.path, where, first=start)
                first = ts[0] if first is None else first
                bad += int(np.sum(ts[1:] <= ts[:-1])) + int(last is not None and start > 0 and ts[0] <= last)
                last = ts[-1]
                if bad:  # one block is enough to report the step
                    break
        except H5SourceError as exc:
            yield ctx.problem("timestamp-value", ERROR, exc.rule, exc.h5path or where)
            continue
        if bad:
            yield ctx.problem("timestamp-order", ERROR, f"step {k}: timestamps do not increase", where,
                              found=bad, expected=0)
        elif first is not None and k > 0 and prev_last is not None and first <= prev_last:
            yield ctx.problem("timestamp-order", ERROR, f"step {k} starts before step {k - 1} ends", where)
        prev_last = last
    if ref and sorted(m.timestamps) != sorted(ref):
        yield ctx.problem("timestamp-length", ERROR, "timestamps must exist for every step", m.ts_path,
                          found=sorted(m.timestamps), expected=sorted(ref))


@check("scan", "scan values named in ancillaryDataType exist; per-step ones have nSteps entries; per-event "
       "ones are constant within a step",
       reports={"scan-missing": "ancillaryDataType names a scan variable that is not stored (warning)",
                "scan-length": "a per-step scan value has not one entry per step",
                "scan-constant": "a per-event scan value changes inside a step (warning)"},
       needs_members=True)
def _scan(ctx: Context):
    header = ctx.file.get(HEADER)
    stored = set(header) if isinstance(header, h5py.Group) else set()
    if isinstance(ctx.file.get("step_value"), h5py.Dataset):
        stored.add("step_value")  # legacy: at the root
    declared = ctx.header.get("ancillaryDataType") or []
    for name in [declared] if isinstance(declared, str) else list(declared):
        if name not in stored:
            yield ctx.problem("scan-missing", WARNING, f"ancillaryDataType names {name!r}, which is not stored: "
                              "the run has no such scan variable", f"/{HEADER}", found=sorted(stored),
                              expected=f"/{HEADER}/{name}")
    g = header if ctx.layout != "legacy" else ctx.file
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


@check("complete", "the run was closed cleanly by its writer",
       reports={"incomplete": "the run is incomplete: its writer did not close it cleanly (warning)"})
def _complete(ctx: Context):
    if not bool(ctx.header.get("complete", True)):
        error = ctx.header.get("error")
        yield ctx.problem("incomplete", WARNING, f"the run is incomplete: only {ctx.header.get('stepsComplete', 0)} "
                          f"steps were finished{f' ({error})' if error else ''}", f"/{HEADER}")


@check("data", "every stored chunk decodes; no declared data left unwritten", phase="data",
       reports={"damaged-data": "stored data cannot be decoded",
                "unwritten": "declared chunks were never written: they read as the fill value (warning)"})
def _data(ctx: Context):
    for _, ds in objects(ctx.file):
        if not isinstance(ds, h5py.Dataset) or ds.shape is None or ds.is_virtual:
            continue
        filters = filter_names(ds)
        strings = ds.dtype.kind == "O" or h5py.check_vlen_dtype(ds.dtype) is not None
        activity = "reading the variable-length strings of" if strings else "decoding"
        ctx.progress(ds.name, activity, filters)
        try:
            require_filters(ds)
            regions, written, declared = stored_regions(ds, DECODE_BLOCK)
            for region in regions:
                ds[region]
                ctx.progress(ds.name, activity, filters)
        except Exception as exc:
            err = translate(exc, ctx.path, ds.name, "decoding the stored data")
            yield ctx.problem("damaged-data", ERROR, err.rule, ds.name)
            continue
        if written < declared:
            yield ctx.problem("unwritten", WARNING, f"{declared - written} of {declared} chunks were never written: "
                              "their elements read as the fill value", ds.name, found=written, expected=declared)


# -- running them ---------------------------------------------------------------------

def validate(path, *, timeout: float = TIMEOUT, isolate: bool = True, on_message=None) -> list[Problem]:
    """Check ``path`` and return its problems (an empty list for a clean file). Never raises; always ends.

    Parameters
    ----------
    path : str or path
        The run file.
    timeout : float
        Seconds the checks may go without progress before the file is
        reported ``unreadable`` (a libhdf5 hang).
    isolate : bool
        Run the checks in a child process (default), so that a hang or a
        crash of an underlying library is reported instead of suffered.
    on_message : callable, optional
        With ``isolate``: called as ``on_message('wait', (seconds, (h5path,
        activity, detail)))`` about once a second while the checks make no
        progress (see :func:`~calibsuite_h5source.tools.isolate.run_isolated`).
    """
    path = str(path)
    if not isolate:
        return fold(check_here(path))
    out = run_isolated(check_here, (path,), timeout, on_message)
    if out.status == "done":
        return fold(out.result)
    h5path, activity, detail = out.at
    where = f"while {activity} {h5path}" + (f" (filters: {detail})" if detail else "")
    if out.status == "timeout":
        fault = GLOBAL_HEAP_LOOP if "attributes" in activity or "strings" in activity or activity == "starting" \
            else "an upstream fault of libhdf5 or a filter"
        message = f"no progress for {timeout:g} s {where}: {fault}"
    elif out.status == "crashed":
        fault = BITSHUFFLE_CRASH if activity == "decoding" and "bitshuffle" in detail \
            else "an upstream fault of libhdf5, h5py or a filter"
        message = f"the HDF5 library crashed ({out.signal_name}) {where}: {fault}"
    elif out.status == "raised":
        message = f"the checks failed {where}: {type(out.result).__name__}: {out.result}"
    else:
        message = f"the checks failed {where}: {out.result}"
    return [Problem(UNREADABLE, ERROR, message, path, h5path)]


def check_here(path: str, progress: Callable = no_progress) -> list[Problem]:
    """Run every check on ``path`` in this process (what :func:`validate` runs in its child). Never raises."""
    try:
        return _check_here(str(path), progress)
    except H5SourceError as exc:
        code = UNREADABLE if isinstance(exc, NotHDF5Error) else "link" if isinstance(exc, LinkError) else "layout"
        return [Problem(code, ERROR, exc.rule, str(path), exc.h5path or "/")]
    except Exception as exc:  # never a traceback: say what failed
        log.debug("validate %s", path, exc_info=True)
        err = translate(exc, str(path), "/", "checking the file")
        return [Problem(UNREADABLE, ERROR, err.rule, str(path), "/")]


def _run_phase(ctx: Context, phase: str) -> list[Problem]:
    problems = []
    for c in CHECKS:
        if c.phase != phase or (c.needs_members and ctx.members is None):
            continue
        try:
            problems.extend(c.func(ctx))
        except Exception as exc:  # a check must never hide the others
            log.debug("check %s failed", c.code, exc_info=True)
            problems.append(Problem(c.code, ERROR, f"could not be checked: {type(exc).__name__}: {exc}", ctx.path, "/"))
    return problems


def _check_here(path: str, progress: Callable) -> list[Problem]:
    progress("/", "opening")
    try:
        f = open_h5(path)
    except NotHDF5Error as exc:
        return [Problem(UNREADABLE, ERROR, exc.rule, path, "/")]
    with f:
        origin = Origin(path)
        ctx = Context(path, f, "canonical", {}, None, origin=origin, progress=progress)
        problems = _run_phase(ctx, "file")
        if any(p.code in ("attributes", "link") for p in problems):
            return problems  # the layout cannot be read safely
        progress(f"/{HEADER}", "reading the attributes of")
        ctx.header = read_header(f, origin, check=False)
        ctx.layout = detect_layout(f, origin)
        members = LayoutMembers(f, path, origin)
        try:
            getattr(members, f"collect_{ctx.layout}")()
        except H5SourceError as exc:
            problems.append(Problem("layout", ERROR, exc.rule, path, exc.h5path or "/"))
        else:
            ctx.members = members
        problems += _run_phase(ctx, "run")
        problems += _run_phase(ctx, "data")
    if not any(p.severity == ERROR for p in problems):
        progress("/", "opening with the reader")
        restated = _Restated()
        reader_logs = [logging.getLogger(m) for m in (open_run_index.__module__, scan_variables.__module__,
                                                      LayoutMembers.__module__)]
        for reader_log in reader_logs:
            reader_log.addFilter(restated)
        try:
            index = open_run_index(path)
            try:
                check_every_step(index)  # the rules the reader applies when a step is first reached
            finally:
                index.close()
        except H5SourceError as exc:
            problems.append(Problem("reader", ERROR, f"the reader refuses the file: {exc.rule}", path, exc.h5path or "/"))
        finally:
            for reader_log in reader_logs:
                reader_log.removeFilter(restated)
    return problems


class _Restated(logging.Filter):
    """Holds back the warnings the reader logs while validate opens the file with it: each restates a problem
    a check has reported (incomplete, script-type, scan-missing; timestamps out of order are an error, so
    the reader is not reached), and a warning must be said once. They go to the debug log (``-vv``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        log.debug("the reader said: %s", record.getMessage())
        return False
