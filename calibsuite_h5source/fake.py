"""Synthetic, physically plausible detector runs with known truth.

The successor of the suite's ``writeFakeRogueH5.py``. A :class:`DetectorModel`
holds per-pixel truth (pedestal, noise, gain in ADU/keV); a
:class:`SyntheticRun` turns it into events for a run type:

============== ==============================================================
``dark``       pedestal + gaussian noise (also ``pedestal``)
``fe55``       plus Fe-55 photons (5.9 keV) at ``occupancy`` per pixel per event
``linearity``  flux per event (``wave8/peakAmplitude``) rising step by step;
               signal = flux x ``adu_per_flux`` on every pixel (also ``intensityScan``)
``delayScan``  charge injected into every 8th column; its amplitude follows
               a pulse in the per-step ``delay``
============== ==============================================================

Raw values are ``uint16``: the ADU below the detector's gain bit; a pixel
whose signal would exceed it switches to low gain (the gain bit set, ADU
divided by ``low_gain_ratio``), as auto-ranging detectors do. Everything is
seeded and reproducible. ``SyntheticRun.write`` streams through
:class:`~calibsuite_h5source.writer.RunWriter` (memory stays flat);
``SyntheticRun.declaration`` gives the whole run in memory for
:func:`~calibsuite_h5source.testing.layouts.write_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import timestamps as _ts
from .detector_types import DETECTOR_TYPES, detector_type

FE55_KEV = 5.9
RUN_TYPES = {"dark": "dark", "pedestal": "pedestal", "fe55": "fe55", "linearity": "linearity",
             "intensityScan": "intensityScan", "delayScan": "delayScan"}


@dataclass
class DetectorModel:
    """Per-pixel truth of a synthetic detector."""

    name: str
    shape: tuple
    g0cut: int
    pedestal: np.ndarray
    noise: np.ndarray
    gain: np.ndarray  # ADU per keV
    low_gain_ratio: float = 30.0

    @classmethod
    def create(cls, detector="epixM", modules=None, shape=None, seed=0, pedestal=1000.0, pedestal_spread=60.0,
               noise=8.0, noise_spread=1.0, gain=20.0, gain_spread=0.5) -> DetectorModel:
        """Make a detector: ``detector`` names a suite detector (its shape and gain bit) or anything else."""
        t = detector_type(detector)
        if shape is None:
            if t is None:
                raise ValueError(f"unknown detector {detector!r}: give shape=(module, row, col); known: {sorted(DETECTOR_TYPES)}")
            shape = (modules or t.modules, t.rows, t.cols)
        shape = tuple(int(s) for s in shape)
        rng = np.random.default_rng(seed)
        return cls(
            name=t.name if t and detector.lower() == t.name.lower() else detector,
            shape=shape,
            g0cut=t.g0cut if t else 1 << 14,
            pedestal=rng.normal(pedestal, pedestal_spread, shape).astype(np.float32),
            noise=np.abs(rng.normal(noise, noise_spread, shape)).astype(np.float32) + 0.5,
            gain=rng.normal(gain, gain_spread, shape).astype(np.float32),
        )

    def digitise(self, adu: np.ndarray) -> np.ndarray:
        """Turn float ADU into uint16 raw values, switching saturated pixels to low gain."""
        top = self.g0cut - 1
        out = np.rint(adu, out=adu)
        high = out > top
        if high.any():
            out[high] = np.minimum(out[high] / self.low_gain_ratio, top) + self.g0cut
        np.clip(out, 0, min(2 * self.g0cut - 1, 65535), out=out)
        return out.astype(np.uint16)

    def frame(self, rng: np.random.Generator, signal_adu=None) -> np.ndarray:
        """One raw frame: pedestal + noise (+ signal, in ADU)."""
        adu = rng.standard_normal(self.shape, dtype=np.float32)
        adu *= self.noise
        adu += self.pedestal
        if signal_adu is not None:
            adu += signal_adu
        return self.digitise(adu)


@dataclass
class Truth:
    """What the generator put in: compare an analysis against it."""

    model: DetectorModel
    run_type: str
    scan_name: str | None
    scan_values: list = field(default_factory=list)  # per step
    n_events: list = field(default_factory=list)
    flux: list = field(default_factory=list)  # per step: [nEvents] (linearity)
    photons: list = field(default_factory=list)  # per step: [nEvents] photon counts (fe55)
    injected: np.ndarray | None = None  # bool mask of injected pixels (delayScan)
    injected_adu: list = field(default_factory=list)  # per step (delayScan)


class SyntheticRun:
    """A reproducible synthetic run.

    Parameters
    ----------
    run_type : str
        One of ``RUN_TYPES``.
    detector : str
        Suite detector name (``epixM``, ``epix10k``, ``jungfrau``, ``epixUHR``, ``epix100``...).
    events : int or sequence of int
        Events per step (an int with ``steps``).
    steps : int
        Number of steps when ``events`` is an int.
    seed : int
        Seed of everything.
    occupancy : float
        Fe-55 photons per pixel per event (``fe55``).
    adu_per_flux : float
        Signal per unit flux (``linearity``).
    modules, shape
        Override the detector's module count or whole per-event shape.
    run : int
        The run's Unix start time (timestamps are 1 ms apart from it).
    """

    def __init__(self, run_type="dark", detector="epixM", events=10, steps=3, seed=0, occupancy=0.002,
                 adu_per_flux=40.0, modules=None, shape=None, run=1_700_000_000):
        if run_type not in RUN_TYPES:
            raise ValueError(f"run_type must be one of {sorted(RUN_TYPES)}, not {run_type!r}")
        self.run_type = run_type
        self.seed = seed
        self.occupancy = occupancy
        self.adu_per_flux = adu_per_flux
        self.run = int(run)
        self.model = DetectorModel.create(detector, modules=modules, shape=shape, seed=seed)
        self.counts = [int(events)] * int(steps) if np.ndim(events) == 0 else [int(n) for n in events]
        if not self.counts or min(self.counts) < 1:
            raise ValueError(f"every synthetic step needs at least one event; got {self.counts}")
        n_steps = len(self.counts)
        self.scan_name, self.scan_values = {
            "linearity": ("flux", [float(k + 1) for k in range(n_steps)]),
            "intensityScan": ("flux", [float(k + 1) for k in range(n_steps)]),
            "delayScan": ("delay", [float(v) for v in np.linspace(0, 100, n_steps)] if n_steps > 1 else [50.0]),
        }.get(run_type, (None, []))
        self.truth = Truth(self.model, run_type, self.scan_name, list(self.scan_values), list(self.counts))
        if run_type == "delayScan":
            mask = np.zeros(self.model.shape, bool)
            mask[..., ::8] = True
            self.truth.injected = mask
            self.truth.injected_adu = [self.pulse(d) for d in self.scan_values]

    @staticmethod
    def pulse(delay: float) -> float:
        """Injected amplitude (ADU) at a delay: a gaussian pulse peaking at 50."""
        return float(500.0 * np.exp(-0.5 * ((delay - 50.0) / 15.0) ** 2))

    @property
    def script_type(self) -> str:
        return RUN_TYPES[self.run_type]

    def step_events(self, step: int):
        """Yield ``(frame, side, timestamp)`` for every event of ``step`` (reproducible per step)."""
        rng = np.random.default_rng([self.seed, step])
        n = self.counts[step]
        first = sum(self.counts[:step])
        stamps = _ts.synthesise(self.run, [n], start_event=first)[0]
        flux = photons = None
        if self.run_type in ("linearity", "intensityScan"):
            flux = rng.normal(self.scan_values[step], 0.05 * self.scan_values[step], n).clip(0).astype(np.float32)
            self._record("flux", step, flux)
        if self.run_type == "fe55":
            photons = []
        pixels = int(np.prod(self.model.shape))
        for i in range(n):
            signal = None
            if flux is not None:
                signal = np.float32(flux[i] * self.adu_per_flux)
            elif self.run_type == "fe55":
                hits = rng.poisson(self.occupancy * pixels)
                signal = np.zeros(self.model.shape, np.float32)
                idx = rng.choice(pixels, hits, replace=False)
                signal.flat[idx] = self.model.gain.flat[idx] * FE55_KEV
                photons.append(hits)
            elif self.run_type == "delayScan":
                signal = self.truth.injected * np.float32(self.truth.injected_adu[step])
            side = {}
            if flux is not None:
                side["wave8"] = {"peakAmplitude": np.full(8, flux[i], np.float32)}
            yield self.model.frame(rng, signal), side, int(stamps[i])
        if photons is not None:
            self._record("photons", step, np.asarray(photons))

    def _record(self, what, step, values):
        lst = getattr(self.truth, what)
        while len(lst) <= step:
            lst.append(None)
        lst[step] = values

    def write(self, path, compression=None, progress=None, overwrite=False, **header) -> Truth:
        """Stream the run into a canonical file with RunWriter; return the truth.

        ``progress(n)`` is called after every event with the number written.
        """
        from .writer import RunWriter

        d = self.model
        with RunWriter(path, self.script_type, compression=compression, overwrite=overwrite, run=self.run,
                       **header) as w:
            w.detector(d.name, detType=(detector_type(d.name).psana_type if detector_type(d.name) else None),
                       gainBitsMask=d.g0cut - 1)
            for k in range(len(self.counts)):
                scan = {self.scan_name: self.scan_values[k]} if self.scan_name else {}
                with w.step(**scan) as s:
                    for frame, side, ts in self.step_events(k):
                        s.event(timestamp=ts, **{d.name: frame}, **side)
                        if progress:
                            progress(1)
        return self.truth

    def declaration(self) -> dict:
        """The whole run as a declared dict for ``testing.layouts.write_layout`` (in memory)."""
        frames, side, stamps = [], {}, []
        for k in range(len(self.counts)):
            events = list(self.step_events(k))
            frames.append(np.stack([e[0] for e in events]))
            stamps.append(np.array([e[2] for e in events], np.uint64))
            for name, fields in (events[0][1] if events else {}).items():
                for f in fields:
                    side.setdefault(name, {}).setdefault(f, []).append(np.stack([e[1][name][f] for e in events]))
        decl = {"header": {"scriptType": self.script_type, "run": self.run},
                "detectors": {self.model.name: frames}, "side": side, "timestamps": stamps}
        if self.scan_name:
            decl["scan"] = {self.scan_name: np.asarray(self.scan_values)}
            decl["header"]["ancillaryDataType"] = self.scan_name
        return decl
