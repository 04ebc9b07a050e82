"""Open a run file, read its header, detect its layout and collect its per-step members.

The four layouts of ``docs/format.rst`` (canonical, padded, step sub-groups,
legacy) are collected into one :class:`LayoutMembers` shape here;
:mod:`calibsuite_h5source.read.run_index` checks them and builds the ``RunIndex``.
Nothing here reads frame data.
"""

from __future__ import annotations

import logging

import h5py
import numpy as np

from calibsuite_h5source.errors import (
    EventCountError,
    FormatError,
    InconsistentRunError,
)
from calibsuite_h5source.format import rules
from calibsuite_h5source.format.constants import (
    HEADER,
    RESERVED_DETECTOR,
    RESERVED_ROOT,
    step_number,
)
from calibsuite_h5source.format.detector_types import DETECTOR_TYPES
from calibsuite_h5source.h5.dataset import StoredDataset
from calibsuite_h5source.h5.links import Origin, items, open_member
from calibsuite_h5source.read.index_types import EventArray
from calibsuite_h5source.read.step_counts import StepCounter, StepCounts, events_in

__all__ = ["to_python", "read_header", "detect_layout", "event_counts", "stored_counts",
           "events_in", "LayoutMembers", "StepCounter", "StepCounts", "step_number", "EAGER_STEPS"]

log = logging.getLogger(__name__)

#: A canonical run without the writer's index and with more steps than this is opened lazily
#: (names listed; each step's datasets opened, counted and checked when the step is first reached).
EAGER_STEPS = 64


def to_python(value):
    """Decode an HDF5 attribute/scalar into a plain python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.shape == ():
            return to_python(value[()])
        return [to_python(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_header(f: h5py.File, origin: Origin | None = None, *, check: bool = True) -> dict:
    """Return the header: ``/ancillaryData`` attributes and scalar datasets (legacy: root).

    Values are decoded (:func:`calibsuite_h5source.format.rules.decode`) and every
    documented one checked against its rule (:data:`calibsuite_h5source.format.rules.HEADER`).

    Raises
    ------
    HeaderError
        A documented header value of the wrong type or out of range
        (unless ``check`` is False: the validator checks each value itself).
    """
    origin = origin or Origin(f.filename)
    header = {}
    group = open_member(f, HEADER, origin)
    where = f"/{HEADER}"
    if isinstance(group, h5py.Group):
        header.update({k: rules.decode(v) for k, v in group.attrs.items()})
        for k, obj in items(group, origin):
            if isinstance(obj, h5py.Dataset) and obj.shape == () and k not in header:
                header[k] = rules.decode(obj[()])
    else:  # legacy files keep it at the root
        where = "/"
        if "scriptType" in f.attrs:
            header["scriptType"] = rules.decode(f.attrs["scriptType"])
        else:
            obj = open_member(f, "scriptType", origin)
            if isinstance(obj, h5py.Dataset) and obj.shape is not None:
                header["scriptType"] = rules.decode(obj[()])
    return rules.apply(rules.HEADER, header, origin.file, where) if check else header


def detect_layout(f: h5py.File, origin: Origin | None = None) -> str:
    """Return ``'legacy'``, ``'stepgroups'``, ``'padded'`` or ``'canonical'``."""
    origin = origin or Origin(f.filename)
    if isinstance(open_member(f, "frames", origin), h5py.Dataset):
        return "legacy"
    names = list(f.keys())
    if any(name.startswith("step") and step_number(name) is not None for name in names):
        return "stepgroups"
    if "nEvents" in names or isinstance(open_member(f, "timestamp", origin), h5py.Dataset):
        return "padded"
    if any(isinstance(open_member(f, n, origin), h5py.Dataset) for n in names if n not in RESERVED_ROOT):
        return "padded"
    return "canonical"


def event_counts(values, file: str, h5path: str, limit: int | None = None) -> np.ndarray:
    """Return declared event counts as int64 after checking the rule; raise :class:`EventCountError`.

    Counts must be non-negative integers (integral floats are accepted) and,
    when ``limit`` is given, no larger than it (the events the data holds).
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise EventCountError(f"event counts must be a 1-D array of integers; found {values.dtype} shape {values.shape}",
                              file=file, h5path=h5path)
    bad = ~np.isfinite(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    with np.errstate(invalid="ignore"):
        bad |= values < 0
        if values.dtype.kind == "f":
            bad |= values != np.round(values)
        if limit is not None:
            bad |= values > limit
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        rule = "non-negative integers" + ("" if limit is None else f" no larger than the data ({limit} events)")
        raise EventCountError(f"event counts must be {rule}; step {k} has {values[k].item()!r} "
                              f"(counts {values.tolist()[:20]})", file=file, h5path=h5path)
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        raise EventCountError(f"event counts must fit in int64; found {values.max()}", file=file, h5path=h5path)
    return values.astype(np.int64)


def stored_counts(ds, file: str, origin: Origin | None = None) -> np.ndarray:
    """The events per step an ``nEvents`` dataset stores (the writer's index, or a padded layout's),
    checked by :func:`event_counts`; anything but a 1-D dataset is an :class:`EventCountError`."""
    if not isinstance(ds, h5py.Dataset) or ds.shape is None or len(ds.shape) != 1:
        found = f"shape {ds.shape}" if isinstance(ds, h5py.Dataset) else type(ds).__name__
        raise EventCountError(f"nEvents must be a 1-D integer dataset (events per step); found {found}",
                              file=file, h5path=getattr(ds, "name", None))
    return event_counts(StoredDataset(ds, (), origin).read_range(0, ds.shape[0]), file, ds.name)


class LayoutMembers:
    """The per-step members of one file, collected by layout, not yet checked.

    ``area``: ``{name: {steps: {k: EventArray}, attrs, present, calib, h5path, headers}}``
    (``headers``: ``{field: {k: EventArray}}``, the per-event header fields
    ``/<name>/<field>/<step>`` of the canonical layout);
    ``side``: ``{name: {field: {k: EventArray}}}``; ``side_present``: ``{name: present}`` of the
    side sources with a ``present`` group (``present`` as an area entry's: ``{"group": group}`` or
    ``{k: mask}``); ``timestamps``: ``{k: EventArray}``.
    :mod:`calibsuite_h5source.read.run_index` checks and normalises them; the
    validator runs its own checks on them.
    """

    def __init__(self, f: h5py.File, path: str, origin: Origin | None = None):
        self.f = f
        self.path = path
        self.origin = origin or Origin(path)
        self.area: dict[str, dict] = {}  # name -> {steps: {k: EventArray}, present: {k: arr}, ...}
        self.side: dict[str, dict[str, dict[int, EventArray]]] = {}
        self.side_present: dict[str, dict] = {}
        self.timestamps: dict[int, EventArray] = {}
        self.ts_path = "/timestamp"
        self.ts_group = None
        self.indexed = False
        self.counter: StepCounter | None = None
        #: a run being written: every read strict, datasets may hold more than the counters cover
        self.strict = False
        self.complete = True

    def error(self, cls, h5path, message):
        return cls(message, file=self.path, h5path=h5path)

    # -- collection, one method per layout ---------------------------------------
    def member(self, group: h5py.Group, name: str):
        """``group[name]`` with its link checked (:func:`calibsuite_h5source.h5.links.open_member`); None if absent."""
        return open_member(group, name, self.origin)

    def items(self, group: h5py.Group):
        """``(name, object)`` of every member of ``group``, links checked."""
        return items(group, self.origin)

    def event_array(self, ds: h5py.Dataset) -> EventArray:
        """One dataset per step: ``[nEvents, ...]``."""
        return EventArray(ds, (), events_in(ds, self.path), origin=self.origin, strict=self.strict)

    def reader_of(self, ds: h5py.Dataset) -> StoredDataset:
        """The one reader of a dataset (:class:`calibsuite_h5source.h5.dataset.StoredDataset`)."""
        return StoredDataset(ds, (), self.origin, strict=self.strict)

    def read_whole(self, ds: h5py.Dataset, n: int | None = None):
        """Every value of a small dataset (its first ``n`` along the first axis), through its reader."""
        if ds.shape is None or ds.ndim == 0:
            return ds[()]
        return self.reader_of(ds).read_range(0, ds.shape[0] if n is None else n)

    def steps_of(self, group: h5py.Group) -> dict[int, h5py.Dataset]:
        out = {}
        for name, obj in self.items(group):
            k = step_number(name)
            if k is not None:
                if not isinstance(obj, h5py.Dataset):
                    raise self.error(FormatError, obj.name, f"step {k} must be a dataset of [nEvents, ...]; "
                                     f"found {type(obj).__name__}")
                if k in out:
                    raise self.error(FormatError, obj.name, f"step {k} is stored twice (as {name} and another name)")
                out[k] = obj
        return out

    def reserved_group(self, group: h5py.Group, name: str) -> h5py.Group | None:
        """``group/present`` or ``group/calib``: None when absent, else a group (anything else is an error)."""
        sub = self.member(group, name)
        if sub is not None and not isinstance(sub, h5py.Group):
            what = "per-step bool masks (present/<k>)" if name == "present" else "calibration constants"
            raise self.error(FormatError, f"{group.name}/{name}",
                             f"{name} must be a group of {what}; found {type(sub).__name__}")
        return sub

    def add_area(self, name, h5path, steps: dict[int, EventArray], attrs, present=None, calib=None, headers=None):
        self.area[name] = dict(steps=steps, attrs=attrs, present=present or {}, calib=calib, h5path=h5path,
                               headers=headers or {})

    def header_groups(self, group: h5py.Group) -> dict[str, h5py.Group]:
        """An area detector's header-field sub-groups: those holding step members, but not ``present``/``calib``."""
        return {name: sub for name in group if name not in RESERVED_DETECTOR and step_number(name) is None
                for sub in [self.member(group, name)]  # opened only when not a step: steps are many
                if isinstance(sub, h5py.Group) and any(step_number(m) is not None for m in sub)}

    def collect_canonical(self):
        for name, obj in self.items(self.f):
            if name in (HEADER,) or not isinstance(obj, h5py.Group):
                continue
            if name == "timestamp":
                self.timestamps = {k: self.event_array(ds) for k, ds in self.steps_of(obj).items()}
                continue
            steps = self.steps_of(obj)
            if steps:
                present = self.reserved_group(obj, "present")
                self.add_area(
                    name, obj.name,
                    {k: self.event_array(ds) for k, ds in steps.items()},
                    dict(obj.attrs),
                    present=None if present is None else {"group": present},
                    calib=self.reserved_group(obj, "calib"),
                    headers={field: {k: self.event_array(ds) for k, ds in self.steps_of(sub).items()}
                             for field, sub in self.header_groups(obj).items()},
                )
                continue
            fields = {field_name: {k: self.event_array(ds) for k, ds in self.steps_of(sub).items()}
                      for field_name, sub in self.side_fields(name, obj).items()}
            if fields:
                self.side[name] = fields
            else:
                log.debug("%s: ignoring group %s (no step datasets)", self.path, obj.name)

    def side_fields(self, name: str, group: h5py.Group) -> dict[str, h5py.Group]:
        """A side source's fields: its sub-groups holding step members (one rule for every collector).

        Sub-groups without steps (metadata) are left out; a dataset beside the
        fields is an error (it would be dropped); the source's ``present``
        group, when it has fields, is noted in :attr:`side_present`.
        """
        fields, loose = {}, []
        for field_name, sub in self.items(group):
            if field_name == "present":
                continue
            if isinstance(sub, h5py.Group):
                if any(step_number(m) is not None for m in sub):
                    fields[field_name] = sub
            elif isinstance(sub, h5py.Dataset):
                loose.append(sub.name)
        if fields:
            if loose:
                raise self.error(FormatError, loose[0], "a side-data field must be a group of per-step datasets "
                                 f"({loose[0]}/<step>); found a dataset")
            present = self.reserved_group(group, "present")
            if present is not None:  # steps with a mask only: loaded when asked for (run_index)
                self.side_present[name] = {"group": present}
        return fields

    def many_steps(self) -> bool:
        """True when the first group holding step datasets has more than :data:`EAGER_STEPS` of them."""
        for name in self.f:
            if name in RESERVED_ROOT:
                continue
            obj = self.member(self.f, name)
            if isinstance(obj, h5py.Group):
                n = sum(1 for m in obj if step_number(m) is not None)
                if n:
                    return n > EAGER_STEPS
        return False

    def collect_indexed(self, counts: np.ndarray | None, complete: bool):
        """Canonical layout with the writer's ``/ancillaryData/nEvents``: list names, open nothing per step.

        Each step's datasets are opened, and checked against ``counts``, when
        first used (``EventArray`` and ``LazySteps``). Without ``counts`` (a
        long run from another writer) a step's datasets are opened, counted
        and checked against each other when the step is first reached
        (:class:`~calibsuite_h5source.read.step_counts.StepCounter`).
        """
        self.indexed = True
        self.counter = StepCounter(self.path) if counts is None else None

        def lazy(group, **kwargs):
            return self._lazy_steps(group, self._named_steps(group, counts, complete), counts, **kwargs)

        for name, obj in self.items(self.f):
            if name == HEADER or not isinstance(obj, h5py.Group):
                continue
            if name == "timestamp":
                self.timestamps = lazy(obj, with_expect=False, kind="timestamp")
                self.ts_group = obj
                continue
            if any(step_number(m) is not None for m in obj):
                present = self.reserved_group(obj, "present")
                self.add_area(name, obj.name, lazy(obj), dict(obj.attrs),
                              present=None if present is None else {"group": present},
                              calib=self.reserved_group(obj, "calib"),
                              headers={field: lazy(sub) for field, sub in self.header_groups(obj).items()})
                continue
            fields = {field_name: lazy(sub) for field_name, sub in self.side_fields(name, obj).items()}
            if fields:
                self.side[name] = fields

    def _named_steps(self, group: h5py.Group, counts, complete: bool) -> dict[int, str]:
        """``{step: member name}`` of a group of steps, checked against the writer's index when there is one."""
        steps = {}
        for m in group:
            k = step_number(m)
            if k is not None:
                steps[k] = m
        keys = sorted(steps)
        if counts is None:  # numbering checked with the other sources (LayoutMembers.contiguous)
            return {k: steps[k] for k in keys}
        n = len(counts)
        if keys[:n] != list(range(n)) or (complete and len(keys) != n):
            raise self.error(InconsistentRunError, group.name, f"/ancillaryData/nEvents lists {n} steps; "
                             f"found steps {keys[:20]}{' ...' if len(keys) > 20 else ''}")
        return {k: steps[k] for k in range(n)}

    def _lazy_steps(self, group: h5py.Group, names: dict, counts, with_expect: bool = True,
                    kind: str = "data") -> dict[int, EventArray]:
        """Lazy EventArrays of a group's steps; the first opened now (its per-event shape and dtype are the rule)."""
        if not names:
            return {}
        k0, m0 = next(iter(names.items()))
        first = self.member(group, m0)
        if not isinstance(first, h5py.Dataset):
            raise self.error(FormatError, f"{group.name}/{m0}", f"expected a dataset; found {type(first).__name__}")
        events_in(first, self.path)
        expect = (first.shape[1:], first.dtype) if with_expect else None
        if counts is not None:
            steps = {k: EventArray(None, (), int(counts[k]), group=group, name=m, expect=expect, origin=self.origin,
                                   strict=self.strict)
                     for k, m in names.items()}
            steps[0]._dataset = steps[0]._resolve()
            return steps
        steps = {k: EventArray(None, (), None, group=group, name=m, expect=expect, origin=self.origin)
                 for k, m in names.items()}
        steps[k0]._dataset = first
        self.counter.add(f"{group.name.rstrip('/')}", kind, steps)
        return steps

    def collect_padded(self):
        def read_counts(ds):  # root, detector-group or local nEvents: the one rule
            return stored_counts(ds, self.path, self.origin)

        n_events = self.member(self.f, "nEvents")
        if n_events is None:  # a detector group's own nEvents then holds for the whole run
            n_events = next((sub for _, g in self.items(self.f) if isinstance(g, h5py.Group)
                             for sub in [self.member(g, "nEvents")] if isinstance(sub, h5py.Dataset)), None)
        root_n = None if n_events is None else read_counts(n_events)

        def padded(ds, n):
            if ds.shape is None or ds.ndim < 2:
                raise self.error(FormatError, ds.name, f"padded data must be [nSteps, maxEvents, ...]; found shape {ds.shape}")
            counts = np.full(ds.shape[0], ds.shape[1], dtype=np.int64) if n is None else n
            if len(counts) != ds.shape[0]:
                raise self.error(InconsistentRunError, ds.name,
                                 f"nEvents has {len(counts)} entries but the data has {ds.shape[0]} steps")
            if np.any(counts > ds.shape[1]) or np.any(counts < 0):
                raise self.error(EventCountError, ds.name,
                                 f"nEvents {counts.tolist()} exceeds the padded event axis ({ds.shape[1]})")
            return {k: EventArray(ds, (k,), int(counts[k]), origin=self.origin) for k in range(ds.shape[0])}

        for name, obj in self.items(self.f):
            if name in (HEADER, "nEvents"):
                continue
            if name == "timestamp":
                self.timestamps = padded(obj, root_n)
                continue
            if isinstance(obj, h5py.Dataset):
                self.add_area(name, obj.name, padded(obj, root_n), dict(obj.attrs))
            elif isinstance(obj, h5py.Group):
                members = dict(self.items(obj))
                local_n = read_counts(members["nEvents"]) if "nEvents" in members else root_n
                data = [ds for k, ds in members.items() if isinstance(ds, h5py.Dataset) and k != "nEvents"]
                if len(data) == 1 and data[0].ndim == 5 and "nEvents" in members:
                    self.add_area(name, obj.name, padded(data[0], local_n), dict(obj.attrs))
                else:
                    self.side[name] = {k: padded(ds, local_n) for k, ds in members.items()
                                       if isinstance(ds, h5py.Dataset) and k != "nEvents"}

    def collect_stepgroups(self):
        for gname, group in self.items(self.f):
            k = step_number(gname)
            if k is None or not gname.startswith("step") or not isinstance(group, h5py.Group):
                continue
            for name, obj in self.items(group):
                if name == "timestamp" and isinstance(obj, h5py.Dataset):
                    self.timestamps[k] = self.event_array(obj)
                elif isinstance(obj, h5py.Dataset):
                    entry = self.area.setdefault(name, dict(steps={}, attrs=dict(obj.attrs), present={}, calib=None,
                                                            h5path=f"/step<k>/{name}"))
                    entry["steps"][k] = self.event_array(obj)
                elif isinstance(obj, h5py.Group):
                    for field_name, ds in self.items(obj):
                        if isinstance(ds, h5py.Dataset):
                            self.side.setdefault(name, {}).setdefault(field_name, {})[k] = self.event_array(ds)
        self.ts_path = "/step<k>/timestamp"

    def collect_legacy(self):
        frames = self.member(self.f, "frames")
        if frames.shape is None or frames.ndim != 5:
            raise self.error(FormatError, frames.name,
                             f"legacy frames must be [step, event, module, row, col]; found shape {frames.shape}")
        name = to_python(frames.attrs.get("detector", "")) or _legacy_detector_name(frames.shape[2:])
        self.add_area(name, frames.name, {k: EventArray(frames, (k,), frames.shape[1], origin=self.origin)
                                                for k in range(frames.shape[0])},
                      dict(frames.attrs))

    # -- normalisation ---------------------------------------------------------------
    def contiguous(self, steps: dict, what: str, n_keep: int | None) -> list:
        keys = sorted(steps)
        if n_keep is not None:
            keys = [k for k in keys if k < n_keep]
        if keys != list(range(len(keys))):
            raise self.error(FormatError, what, f"steps must be numbered contiguously from 0; found {keys}")
        return [steps[k] for k in keys]


def _legacy_detector_name(frame_shape) -> str:
    matches = [t.name for t in DETECTOR_TYPES.values() if t.frame_shape == tuple(frame_shape)]
    return matches[0] if len(matches) == 1 else "frames"
