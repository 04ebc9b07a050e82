"""The truth of a synthetic run: what :class:`~calibsuite_h5source.synthetic.run.SyntheticRun` put in."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calibsuite_h5source.synthetic.detector import DetectorModel

__all__ = ["Truth", "record"]


@dataclass
class Truth:
    """What the generator put in: compare an analysis against it.

    Per-step lists hold one entry per step; per-event arrays have one value
    per event of the file's step (monitor events included).

    Attributes
    ----------
    model : DetectorModel
        Per-pixel pedestal, noise and gain (ADU/keV).
    run_type, scan_name : str
        ``scan_name`` is None for runs without a scan variable.
    scan_values, n_events : list
        Per step: the scan value, the number of events in the file.
    frame : list of bool ndarray
        Per step: True where the event holds a frame.
    timestamps, pulse_ids, eventcodes : list of ndarray
        Per step: uint64 timestamps; uint64 pulse ids and uint8 ``[n, 288]``
        event codes (empty lists without timing).
    flux : list of float32 ndarray
        Per step: each event's shot flux (empty when the run has no flux).
    flux_monitor : str or None
        Name of the flux monitor source; it reads ``flux_sign * flux`` on all
        its channels.
    flux_sign, adu_per_flux : float
    photons : list of ndarray
        Per step: ``PHOTON_DTYPE`` records (event, module, row, col, energy
        keV, size 1/2/4 pixels, seed_fraction), fe55 and lowFlux.
    photon_counts : list of int ndarray
        Per step: photons per event.
    photon_energy : float or None
    injected, injected_adu
        delayScan: bool mask of injected pixels; ADU per step.
    constants : dict or None
        ``{ctype: (array, metadata)}`` written to the file.
    """

    model: DetectorModel
    run_type: str
    scan_name: str | None
    scan_values: list = field(default_factory=list)
    n_events: list = field(default_factory=list)
    frame: list = field(default_factory=list)
    timestamps: list = field(default_factory=list)
    pulse_ids: list = field(default_factory=list)
    eventcodes: list = field(default_factory=list)
    flux: list = field(default_factory=list)
    flux_monitor: str | None = None
    flux_sign: float = 1.0
    adu_per_flux: float = 0.0
    photons: list = field(default_factory=list)
    photon_counts: list = field(default_factory=list)
    photon_energy: float | None = None
    injected: np.ndarray | None = None
    injected_adu: list = field(default_factory=list)
    constants: dict | None = None

    def codes(self, step: int, event: int) -> list[int]:
        """Return the event codes set at an event (``[]`` without timing)."""
        if not self.eventcodes:
            return []
        return np.flatnonzero(self.eventcodes[step][event]).tolist()


def record(lst: list, step: int, value) -> None:
    """Set ``lst[step]`` (growing the list), so re-generating a step replaces its truth."""
    while len(lst) <= step:
        lst.append(None)
    lst[step] = value
