"""A run's scan variables: ``/ancillaryData/<name>`` per step or per event, ``step_value`` and
``step_docstring`` (docs/format.rst, "Scan variables"), read and checked when the run is opened."""

from __future__ import annotations

import logging

import h5py
import numpy as np

from calibsuite_h5source.errors import FormatError, InconsistentRunError
from calibsuite_h5source.format.constants import HEADER
from calibsuite_h5source.read.index_types import ScanVariable
from calibsuite_h5source.read.layout import LayoutMembers, to_python

log = logging.getLogger(__name__)


def scan_variables(b: LayoutMembers, header: dict, n_events: np.ndarray) -> tuple[dict, np.ndarray | None, list | None]:
    """``(scan variables, step_value, step_docstring)`` of a run from its ``/ancillaryData`` members
    (per-step ``[nSteps]``, padded ``[nSteps, maxEvents]`` or a group of per-event steps), checked
    against the events per step ``n_events``."""
    f, n_steps = b.f, len(n_events)
    group = f.get(HEADER)
    scan, step_value, step_doc = {}, None, None
    members = dict(group.items()) if isinstance(group, h5py.Group) else {}
    if "step_value" not in members and isinstance(f.get("step_value"), h5py.Dataset):
        members["step_value"] = f["step_value"]  # legacy: at the root
    declared = header.get("ancillaryDataType") or []
    declared = [declared] if isinstance(declared, str) else list(declared)
    for name in declared:
        if name not in members:
            log.warning("%s: ancillaryDataType names %r but /%s/%s does not exist", b.path, name, HEADER, name)
    members.pop("nEvents", None)  # the writer's index of events per step
    for name, obj in members.items():
        where = obj.name
        if isinstance(obj, h5py.Dataset) and obj.shape == ():
            continue  # header value
        if name == "step_docstring":
            # the first n_steps only: an entry past them (a step being written) may point into a global heap
            # collection a killed writer left beyond the file's end
            vals = [to_python(v) for v in b.read_whole(obj, min(n_steps, obj.shape[0]))] if obj.ndim == 1 else []
            if len(vals) != n_steps:
                raise b.error(InconsistentRunError, where, f"step_docstring must have nSteps={n_steps} entries; found {obj.shape}")
            step_doc = [str(v) for v in vals]
            continue
        if isinstance(obj, h5py.Group):
            per = b.steps_of(obj)
            arrays = []
            for k in range(n_steps):
                if k not in per:
                    raise b.error(InconsistentRunError, f"{where}/{k}", f"per-event scan variable has no dataset for step {k}")
                arr = b.read_whole(per[k])
                if b.strict and arr.shape[:1] > (n_events[k],):  # the writer's next block: not counted yet
                    arr = arr[: n_events[k]]
                if arr.shape[:1] != (n_events[k],):
                    raise b.error(InconsistentRunError, per[k].name,
                                  f"per-event scan variable must have nEvents={n_events[k]} values; found shape {arr.shape}")
                arrays.append(arr)
        elif obj.dtype.kind not in "biuf":
            log.debug("%s: %s is not numeric; not a scan variable", b.path, where)
            continue
        elif obj.ndim == 1:
            data = b.read_whole(obj)
            if data.shape[0] < n_steps or (data.shape[0] != n_steps and b.complete):
                raise b.error(InconsistentRunError, where,
                              f"per-step scan variable must have nSteps={n_steps} values; found {data.shape[0]}")
            data = data[:n_steps].astype(np.float64)
            if name == "step_value":
                step_value = data
            else:
                scan[name] = ScanVariable(name, data)
            continue
        elif obj.ndim == 2:
            most = int(np.max(n_events)) if n_steps else 0
            if obj.shape[0] < n_steps or obj.shape[1] < most:
                raise b.error(InconsistentRunError, where,
                              f"padded per-event scan variable must be [nSteps={n_steps}, maxEvents>={most}]; found {obj.shape}")
            data = b.read_whole(obj)
            arrays = [data[k, : n_events[k]] for k in range(n_steps)]
        else:
            raise b.error(FormatError, where, f"a scan variable must be [nSteps], [nSteps, maxEvents] or a group of steps; found shape {obj.shape}")
        per_step = np.array([float(a[0]) if len(a) else np.nan for a in arrays], dtype=np.float64)
        var = ScanVariable(name, per_step, [np.asarray(a) for a in arrays])
        if name == "step_value":
            step_value = per_step
        else:
            scan[name] = var
    return scan, step_value, step_doc
