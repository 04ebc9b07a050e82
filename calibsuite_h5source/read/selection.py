"""Which events a whole-array read selects: ``(step, event)`` rows from the events per step, a step,
an event selection and the ``present`` masks (:func:`select_rows`), the counts checked against the
data first (:func:`checked_counts`). Used by :mod:`calibsuite_h5source.read.arrays`.
"""

from __future__ import annotations

import operator

import numpy as np

#: what ``missing=`` accepts: leave out events without data, or keep them (stored zeros)
MISSING_CHOICES = ("drop", "keep")


def selected_steps(n_steps: int, step) -> list[int]:
    """The steps a selection covers: every step in run order (``step=None``) or the one given."""
    if step is None:
        return list(range(n_steps))
    try:
        k = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an int or None; got {type(step).__name__}") from None
    if not -n_steps <= k < n_steps:
        raise IndexError(f"step {k} does not exist: the run has {n_steps} steps")
    return [k % n_steps]


def checked_counts(per_step, step=None) -> list[int]:
    """Events per step of one quantity, each selected step's dataset opened first: opening checks the
    index's count against the data, so a damaged ``nEvents`` cannot size a selection (np.arange of
    10**11 rows)."""
    for k in selected_steps(len(per_step), step):
        per_step[k].dataset  # noqa: B018 - opening checks it
    return [ea.n for ea in per_step]


def run_counts(index, step) -> list[int]:
    """:func:`checked_counts` of a run: its first detector's, or first side-data field's, steps."""
    ref = next((src.steps for src in index.area.values()), None)
    if ref is None:
        ref = next(steps for fields in index.side.values() for steps in fields.values())
    return checked_counts(ref, step)


def select_rows(counts, step=None, events=None, present=None, missing="drop") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(steps, events)``: the step and in-step event number of every output row.

    Parameters
    ----------
    counts : sequence of int
        Stored events per step.
    step : int or None
        One step, or every step in run order.
    events : slice, int, array of int or None
        Selection along the event axis (see the module docstring).
    present : sequence of (bool ndarray or None), optional
        Per-step ``present`` masks.
    missing : {'drop', 'keep'}
        Leave out events whose ``present`` is False, or keep them.
    """
    if missing not in MISSING_CHOICES:
        raise ValueError(f"missing must be one of {MISSING_CHOICES}; got {missing!r}")
    counts = np.asarray(counts, dtype=np.int64)
    steps = selected_steps(len(counts), step)
    n = int(counts[steps].sum())
    if events is None:
        rows = np.arange(n, dtype=np.int64)
    elif isinstance(events, slice):
        rows = np.arange(n, dtype=np.int64)[events]
    else:
        rows = np.asarray(events)
        if rows.dtype == bool:
            raise TypeError("events must be a slice, an int or an array of event numbers, not a boolean mask "
                            "(use np.flatnonzero(mask))")
        if rows.size == 0:
            rows = rows.astype(np.int64)
        if rows.dtype.kind not in "iu":
            raise TypeError(f"events must be a slice, an int or an array of int; got dtype {rows.dtype}")
        rows = rows.astype(np.int64).ravel()
        bad = (rows < -n) | (rows >= n)
        if bad.any():
            raise IndexError(f"event {int(rows[bad][0])} does not exist: the selection has {n} events")
        rows = rows % max(n, 1)
    starts = np.concatenate([[0], np.cumsum(counts[steps])[:-1]]).astype(np.int64)
    which = np.searchsorted(starts, rows, side="right") - 1
    row_step = np.asarray(steps, dtype=np.int64)[which] if len(rows) else np.zeros(0, np.int64)
    row_event = rows - starts[which] if len(rows) else np.zeros(0, np.int64)
    if missing == "drop" and present is not None:
        keep = np.ones(len(rows), dtype=bool)
        for k in np.unique(row_step):
            mask = present[int(k)]
            if mask is not None:
                at = row_step == k
                keep[at] = mask[row_event[at]]
        row_step, row_event = row_step[keep], row_event[keep]
    return row_step, row_event
