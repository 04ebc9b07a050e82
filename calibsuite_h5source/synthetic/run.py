"""Synthetic, physically plausible runs with known truth.

The successor of the suite's ``writeFakeRogueH5.py``. A
:class:`~calibsuite_h5source.synthetic.detector.DetectorModel` holds per-pixel
truth (pedestal, noise, gain in ADU/keV); a :class:`SyntheticRun` turns it
into the events of a run type and records what it put in (:class:`Truth`):

================= ============================================================
``dark``          pedestal + gaussian noise (also ``pedestal``)
``fe55``          plus Fe-55 photons (5.9 keV Mn K-alpha) at ``occupancy``
                  per pixel per frame, in single pixels or small clusters
``lowFlux``       the same with beam photons (``photon_energy``, 8 keV) at a
                  higher default occupancy
``linearity``     flux stepped per step (scan variable ``flux``) and jittered
                  per shot; signal = flux x ``adu_per_flux`` on every pixel
                  (also ``intensityScan``)
``misc``          beam frames at one nominal ``flux`` (signal as linearity)
``delayScan``     charge injected into every 8th column; its amplitude follows
                  a pulse in the per-step ``delay``
================= ============================================================

Side data, as at MFX (:mod:`~calibsuite_h5source.synthetic.beam`): with
``timing=True`` every shot is two events, a beam-monitor event (code 137, the
flux monitor ``MfxDg1BmMon``, no frame) and then a frame event (281, 283),
with 272 on both; timestamps at 120 Hz, the frame 300 ns after its monitor.
Without timing each shot is one event (1 ms apart) and a flux scan records
its flux in ``wave8``. With ``constants=True`` (default) the file holds the
true ``pedestals`` and ``pixel_gain``, so ``det.raw.calib(evt)`` is in keV.

Everything is seeded and reproducible. ``SyntheticRun.write`` streams through
:class:`~calibsuite_h5source.write.writer.RunWriter` (memory stays flat);
``SyntheticRun.declaration`` gives the whole run in memory for
:func:`~calibsuite_h5source.testing.layouts.write_layout`.
"""

from __future__ import annotations

import numpy as np

from calibsuite_h5source.synthetic.beam import (
    N_MONITOR_CHANNELS,
    BeamTiming,
    StepPlan,
    monitor_amplitudes,
    plain_plan,
)
from calibsuite_h5source.synthetic.detector import DetectorModel
from calibsuite_h5source.synthetic.photons import (
    PHOTON_DTYPE,
    cluster_probabilities,
    deposit,
    draw_photons,
)
from calibsuite_h5source.synthetic.truth import Truth
from calibsuite_h5source.synthetic.truth import record as _record

__all__ = ["SyntheticRun", "Truth", "DetectorModel", "BeamTiming", "RUN_TYPES", "FE55_KEV", "PHOTON_DTYPE"]

FE55_KEV = 5.9
#: run type -> the scriptType written to the file
RUN_TYPES = {
    "dark": "dark", "pedestal": "pedestal", "fe55": "fe55", "lowFlux": "lowFlux", "linearity": "linearity",
    "intensityScan": "intensityScan", "delayScan": "delayScan", "misc": "misc",
}
_PHOTONS = {"fe55": (FE55_KEV, 0.002), "lowFlux": (8.0, 0.01)}  # default photon energy (keV), occupancy
_FLUX_SCANS = ("linearity", "intensityScan")
_FLUX_SIGNAL = (*_FLUX_SCANS, "misc")
AUTO = "auto"


class SyntheticRun:
    """A reproducible synthetic run.

    Parameters
    ----------
    run_type : str
        One of ``RUN_TYPES``.
    detector : str
        Suite detector (``epixM``, ``epix10k``, ``jungfrau``, ``epixUHR``,
        ``epix100``, ``archon``/``rixsCCD``...); also the group name, so
        ``'Epix100a'`` makes an epix100 stored as ``/Epix100a``.
    events : int or sequence of int
        Shots (frames) per step (an int with ``steps``). With ``timing`` each
        shot is two events.
    steps : int
        Number of steps when ``events`` is an int.
    seed : int
        Seed of everything.
    occupancy : float, optional
        Photons per pixel per frame (fe55 0.002, lowFlux 0.01).
    photon_energy : float, optional
        keV (fe55 5.9, lowFlux 8.0).
    clusters : sequence of 3 floats
        Probabilities of a photon depositing in 1, 2 or 2x2 pixels.
    adu_per_flux : float
        Signal per unit flux (linearity, intensityScan, misc).
    flux : float
        Nominal flux of runs that do not scan it.
    flux_jitter : float
        Relative shot-to-shot flux spread.
    scan_values : sequence of float, optional
        Per-step flux (flux scans) or delay (delayScan) instead of the defaults.
    timing : bool
        Write MFX's timing (event codes, pulse ids) and beam-monitor events.
    flux_monitor : str or None
        Name of the flux monitor; ``'auto'``: ``MfxDg1BmMon`` with timing,
        else ``wave8`` for runs with flux signal, else none.
    flux_sign : float
        Sign of the monitor's reading (MFX DG1: -1, its config's ``fluxSign``).
    flux_channels : int, optional
        Channels of the monitor's ``peakAmplitude`` (16; ``wave8``: 8).
    beam : BeamTiming, optional
        Rate, codes and monitor-to-frame delay of the timing.
    constants : bool
        Write the true ``pedestals``/``pixel_gain``/``pixel_rms`` (calib in keV).
    modules, shape
        Override the detector's module count or whole per-event shape.
    gain, noise : float
        Mean ADU per keV and mean noise (ADU) of the pixels.
    run : int
        The run's Unix start time.
    """

    def __init__(self, run_type="dark", detector="epixM", events=10, steps=3, seed=0, occupancy=None,
                 adu_per_flux=40.0, modules=None, shape=None, run=1_700_000_000, *, photon_energy=None,
                 clusters=(1.0, 0.0, 0.0), flux=1.0, flux_jitter=0.05, scan_values=None, timing=False,
                 flux_monitor=AUTO, flux_sign=1.0, flux_channels=None, beam=None, constants=True, gain=20.0, noise=8.0):
        if run_type not in RUN_TYPES:
            raise ValueError(f"run_type must be one of {sorted(RUN_TYPES)}, not {run_type!r}")
        self.run_type, self.seed, self.run = run_type, seed, int(run)
        self.adu_per_flux, self.flux, self.flux_jitter = float(adu_per_flux), float(flux), float(flux_jitter)
        self.clusters = tuple(cluster_probabilities(clusters))
        energy, occ = _PHOTONS.get(run_type, (None, 0.0))
        self.photon_energy = float(photon_energy if photon_energy is not None else energy or FE55_KEV)
        self.occupancy = float(occupancy if occupancy is not None else occ)
        self.model = DetectorModel.create(detector, modules=modules, shape=shape, seed=seed, gain=gain, noise=noise)
        self.counts = [int(events)] * int(steps) if np.ndim(events) == 0 else [int(n) for n in events]
        if not self.counts or min(self.counts) < 1:
            raise ValueError(f"every synthetic step needs at least one event; got {self.counts}")
        self.beam = (beam or BeamTiming()) if timing else None
        if flux_monitor == AUTO:
            flux_monitor = "MfxDg1BmMon" if timing else ("wave8" if run_type in _FLUX_SIGNAL else None)
        self.flux_monitor = flux_monitor or None
        self.flux_channels = int(flux_channels or (8 if self.flux_monitor == "wave8" else N_MONITOR_CHANNELS))
        self.scan_name, self.scan_values = self._scan(scan_values)
        t = self.truth = Truth(self.model, run_type, self.scan_name, list(self.scan_values), flux_monitor=self.flux_monitor,
                               flux_sign=float(flux_sign), adu_per_flux=self.adu_per_flux)
        t.n_events = [n * (2 if self.beam else 1) for n in self.counts]
        if run_type in _PHOTONS:
            t.photon_energy = self.photon_energy
        if run_type == "delayScan":
            t.injected = np.zeros(self.model.shape, bool)
            t.injected[..., ::8] = True
            t.injected_adu = [self.pulse(d) for d in self.scan_values]
        if constants:
            t.constants = self.model.constants()

    def _scan(self, values):
        n = len(self.counts)
        if self.run_type in _FLUX_SCANS:
            name, default = "flux", [float(k + 1) for k in range(n)]
        elif self.run_type == "delayScan":
            name, default = "delay", [float(v) for v in np.linspace(0, 100, n)] if n > 1 else [50.0]
        else:
            if values is not None:
                raise ValueError(f"scan_values is for linearity, intensityScan and delayScan runs, not {self.run_type}")
            return None, []
        values = default if values is None else [float(v) for v in values]
        if len(values) != n:
            raise ValueError(f"scan_values needs one value per step ({n}); got {len(values)}")
        return name, values

    @staticmethod
    def pulse(delay: float) -> float:
        """Injected amplitude (ADU) at a delay: a gaussian pulse peaking at 50."""
        return float(500.0 * np.exp(-0.5 * ((delay - 50.0) / 15.0) ** 2))

    @property
    def script_type(self) -> str:
        return RUN_TYPES[self.run_type]

    @property
    def has_flux(self) -> bool:
        """True when shots carry a flux (a monitor records it or the signal follows it)."""
        return self.flux_monitor is not None or self.run_type in _FLUX_SIGNAL

    def plan(self, step: int) -> StepPlan:
        """The events of ``step``: frames, timestamps, codes, pulse ids."""
        first = sum(self.counts[:step])
        if self.beam is None:
            return plain_plan(self.run, self.counts[step], first)
        return self.beam.plan(self.run, self.counts[step], first)

    def step_events(self, step: int):
        """Yield ``(frame or None, side, timestamp)`` for every event of ``step`` (reproducible per step)."""
        rng = np.random.default_rng([self.seed, step])
        plan, t, d = self.plan(step), self.truth, self.model
        frames = np.flatnonzero(plan.frame)
        _record(t.n_events, step, plan.n_events)
        _record(t.frame, step, plan.frame)
        _record(t.timestamps, step, plan.timestamps)
        if plan.eventcodes is not None:
            _record(t.eventcodes, step, plan.eventcodes)
            _record(t.pulse_ids, step, plan.pulse_ids)
        flux = amps = photons = None
        if self.has_flux:
            nominal = self.scan_values[step] if self.run_type in _FLUX_SCANS else self.flux
            shot_flux = rng.normal(nominal, self.flux_jitter * abs(nominal), self.counts[step]).clip(0)
            flux = shot_flux.astype(np.float32)[plan.shot]
            _record(t.flux, step, flux)
            if self.flux_monitor:
                amps = monitor_amplitudes(flux, t.flux_sign, self.flux_channels)
        if self.run_type in _PHOTONS:
            photons, shares = draw_photons(rng, frames, d.shape, self.occupancy, self.photon_energy, self.clusters)
            _record(t.photons, step, photons)
            _record(t.photon_counts, step, np.bincount(photons["event"], minlength=plan.n_events))
        for i in range(plan.n_events):
            frame = None
            if plan.frame[i]:
                signal = None
                if self.run_type in _FLUX_SIGNAL:
                    signal = np.float32(flux[i] * self.adu_per_flux)
                elif photons is not None:
                    kev = deposit(photons, shares, i, d.shape)
                    signal = None if kev is None else kev * d.gain
                elif self.run_type == "delayScan":
                    signal = t.injected * np.float32(t.injected_adu[step])
                frame = d.frame(rng, signal)
            side = {}
            if plan.eventcodes is not None:
                side["timing"] = {"eventcodes": plan.eventcodes[i], "pulseId": plan.pulse_ids[i]}
            if amps is not None:  # with timing the monitor reads on its own events only, as BLD at MFX
                at_monitor = plan.eventcodes is None or not plan.frame[i]
                side[self.flux_monitor] = {"peakAmplitude": amps[i]} if at_monitor else None
            yield frame, side, int(plan.timestamps[i])

    def write(self, path, compression=None, progress=None, overwrite=False, **header) -> Truth:
        """Stream the run into a canonical file with RunWriter; return the truth.

        The detector's ``calib/geometry`` is psana's default geometry of its
        type, when one fits the frames.

        ``progress(n)`` is called after every event with the number written.
        """
        from calibsuite_h5source.geometry.source import default_geometry_for
        from calibsuite_h5source.write.writer import RunWriter

        d = self.model
        with RunWriter(path, self.script_type, compression=compression, overwrite=overwrite, run=self.run,
                       **header) as w:
            w.detector(d.name, detType=d.det_type, gainBitsMask=d.gain_bits_mask, calib=self.truth.constants,
                       shape=d.shape, dtype=np.uint16, geometry=default_geometry_for(d.shape, d.det_type, d.name))
            for k in range(len(self.counts)):
                scan = {self.scan_name: self.scan_values[k]} if self.scan_name else {}
                with w.step(**scan) as s:
                    for frame, side, ts in self.step_events(k):
                        s.event(timestamp=ts, **{d.name: frame}, **side)
                        if progress:
                            progress(1)
        return self.truth

    def declaration(self) -> dict:
        """The whole run as a declared dict for ``testing.layouts.write_layout`` (in memory; no constants)."""
        frames, present, side, stamps, side_present = [], [], {}, [], {}
        for k in range(len(self.counts)):
            events = list(self.step_events(k))
            mask = np.array([e[0] is not None for e in events])
            zeros = np.zeros(self.model.shape, np.uint16)
            frames.append(np.stack([zeros if e[0] is None else e[0] for e in events]))
            present.append(mask)
            stamps.append(np.array([e[2] for e in events], np.uint64))
            for name, fields in next((e[1] for e in events if all(v is not None for v in e[1].values())), {}).items():
                has = np.array([e[1][name] is not None for e in events])
                for f, v in fields.items():
                    zero = np.zeros_like(np.asarray(v))
                    side.setdefault(name, {}).setdefault(f, []).append(
                        np.stack([e[1][name][f] if e[1][name] is not None else zero for e in events]))
                if not has.all() or name in side_present:
                    side_present.setdefault(name, [np.ones(len(m), bool) for m in present[:-1]]).append(has)
        decl = {"header": {"scriptType": self.script_type, "run": self.run},
                "detectors": {self.model.name: frames}, "side": side, "timestamps": stamps}
        if not all(m.all() for m in present):
            decl["present"] = {self.model.name: present}
        if side_present:
            decl.setdefault("present", {}).update(side_present)
        if self.scan_name:
            decl["scan"] = {self.scan_name: np.asarray(self.scan_values)}
            decl["header"]["ancillaryDataType"] = self.scan_name
        return decl
