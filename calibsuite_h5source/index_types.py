"""The in-memory index of one run file (what ``layout.open_run_index`` builds).

These are plain records: every layout is normalised into them, so nothing
downstream of :mod:`calibsuite_h5source.layout` knows which layout a file has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np


@dataclass(frozen=True)
class EventArray:
    """The per-event values of one quantity in one step.

    Event ``i`` is ``dataset[prefix + (i,)]``; ``prefix`` is ``()`` for one
    dataset per step and ``(step,)`` for padded ``[nSteps, maxEvents, ...]``.
    """

    dataset: h5py.Dataset
    prefix: tuple
    n: int

    def read(self, i: int) -> np.ndarray:
        """Read event ``i`` (one HDF5 read of one event)."""
        return self.dataset[self.prefix + (i,)]

    def read_all(self) -> np.ndarray:
        """Read every event of the step (for small side data only)."""
        return self.dataset[self.prefix + (slice(0, self.n),)]


@dataclass
class AreaSource:
    """An area detector: one EventArray per step of ``[module, row, col]`` frames."""

    name: str
    steps: list[EventArray]
    frame_shape: tuple[int, int, int]
    dtype: np.dtype
    present: list[np.ndarray | None]
    attrs: dict = field(default_factory=dict)
    calib_group: h5py.Group | None = None
    h5path: str = ""


@dataclass
class ScanVariable:
    """A scan variable: its value per step, and per event when stored so."""

    name: str
    per_step: np.ndarray
    per_event: list[np.ndarray] | None = None


@dataclass
class RunIndex:
    """Everything small about a run, read once at open; frames stay on disk."""

    path: str
    file: h5py.File
    layout: str
    header: dict
    script_type: str
    run_id: int
    complete: bool
    n_events: np.ndarray
    timestamps: list[np.ndarray]
    timestamps_synthesised: bool
    area: dict[str, AreaSource]
    side: dict[str, dict[str, list[EventArray]]]
    scan: dict[str, ScanVariable]
    step_value: np.ndarray | None = None
    step_docstring: list[str] | None = None

    @property
    def n_steps(self) -> int:
        """Number of (readable) steps."""
        return len(self.n_events)

    def close(self) -> None:
        """Close the HDF5 file."""
        try:
            self.file.close()
        except Exception:  # already closed
            pass
