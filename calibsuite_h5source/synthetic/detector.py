"""Synthetic detector models: per-pixel truth, digitisation, calibration constants.

A :class:`DetectorModel` holds the truth of every pixel (pedestal and noise
in ADU, gain in ADU per keV) and turns signal into raw ``uint16`` frames the
way the suite's detectors do: the ADU below the first gain bit (``g0cut``);
an auto-ranging detector switches a pixel whose signal would exceed it to low
gain (gain bit set, ADU divided by ``low_gain_ratio``); a fixed-gain detector
(epix100, archon/rixsCCD) saturates instead.

:meth:`DetectorModel.constants` gives psana-style calibration constants
(``pedestals``, ``pixel_gain`` in ADU/keV), so that a file holding them reads
``det.raw.calib(evt)`` in keV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibsuite_h5source.format.detector_types import DETECTOR_TYPES, detector_type

__all__ = ["DetectorModel", "FIXED_GAIN_TYPES"]

#: Seed names of the detectors that do not auto-range (the suite's ``autoRanging = False``).
FIXED_GAIN_TYPES = frozenset({"epix100", "archon"})


@dataclass
class DetectorModel:
    """Per-pixel truth of a synthetic detector.

    Attributes
    ----------
    name : str
        The detector's group name in the file (``'epixM'``, ``'Epix100a'``...).
    shape : tuple of int
        Per-event ``(module, row, col)``; one-module detectors keep the module axis.
    g0cut : int
        First gain bit; raw values below it are ADU.
    pedestal, noise : numpy.ndarray
        float32 ``shape``, in ADU (high gain).
    gain : numpy.ndarray
        float32 ``shape``, ADU per keV (high gain).
    low_gain_ratio : float
        High-gain over low-gain ADU per keV (auto-ranging detectors).
    auto_ranging : bool
        False for fixed-gain detectors, which saturate instead of switching gain.
    det_type : str or None
        psana's type name (``'epixm'``), stored as the group's ``detType``.
    """

    name: str
    shape: tuple
    g0cut: int
    pedestal: np.ndarray
    noise: np.ndarray
    gain: np.ndarray
    low_gain_ratio: float = 30.0
    auto_ranging: bool = True
    det_type: str | None = None

    @classmethod
    def create(cls, detector="epixM", modules=None, shape=None, seed=0, pedestal=1000.0, pedestal_spread=60.0,
               noise=8.0, noise_spread=1.0, gain=20.0, gain_spread=0.5) -> DetectorModel:
        """Make a detector model.

        Parameters
        ----------
        detector : str
            A suite detector (its shape and gain bit; ``'rixsCCD'`` is the
            archon), or any name when ``shape`` is given.
        modules : int, optional
            Module count instead of the detector's default.
        shape : tuple, optional
            Whole per-event ``(module, row, col)``.
        seed : int
            Seed of the per-pixel truth.
        pedestal, pedestal_spread, noise, noise_spread, gain, gain_spread : float
            Means and spreads (ADU; gain in ADU/keV) of the per-pixel truth.
        """
        t = detector_type(detector)
        if shape is None:
            if t is None:
                raise ValueError(f"unknown detector {detector!r}: give shape=(module, row, col); "
                                 f"known: {sorted(DETECTOR_TYPES)}")
            shape = (modules or t.modules, t.rows, t.cols)
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (module, row, col) of positive sizes, not {shape}")
        rng = np.random.default_rng(seed)
        return cls(
            name=t.name if t and detector.lower() == t.name.lower() else detector,
            shape=shape,
            g0cut=t.g0cut if t else 1 << 14,
            pedestal=rng.normal(pedestal, pedestal_spread, shape).astype(np.float32),
            noise=(np.abs(rng.normal(noise, noise_spread, shape)) + 0.5).astype(np.float32),
            gain=rng.normal(gain, gain_spread, shape).astype(np.float32),
            auto_ranging=not (t and t.name in FIXED_GAIN_TYPES),
            det_type=t.psana_type if t else None,
        )

    @property
    def gain_bits_mask(self) -> int:
        """Mask of the ADU bits (``g0cut - 1``)."""
        return self.g0cut - 1

    def digitise(self, adu: np.ndarray) -> np.ndarray:
        """Turn float ADU (any leading shape) into uint16 raw values, in place where possible."""
        top = self.g0cut - 1
        out = np.rint(adu, out=adu)
        high = out > top
        if self.auto_ranging and high.any():
            out[high] = np.minimum(out[high] / self.low_gain_ratio, top) + self.g0cut
            np.clip(out, 0, min(2 * self.g0cut - 1, 65535), out=out)
        else:
            np.clip(out, 0, min(top, 65535), out=out)
        return out.astype(np.uint16)

    def frame(self, rng: np.random.Generator, signal_adu=None) -> np.ndarray:
        """Return one raw frame: pedestal + noise (+ ``signal_adu``, broadcast to the shape)."""
        adu = rng.standard_normal(self.shape, dtype=np.float32)
        adu *= self.noise
        adu += self.pedestal
        if signal_adu is not None:
            adu += signal_adu
        return self.digitise(adu)

    def constants(self) -> dict:
        """Return the true calibration constants as ``{ctype: (array, metadata)}``.

        ``pedestals`` and ``pixel_gain`` (ADU per keV) are ``[module, row, col]``
        for a fixed-gain detector and ``[gain, module, row, col]`` (high, low)
        for an auto-ranging one, as psana's calibration database gives them;
        ``pixel_rms`` is the noise. With them ``det.raw.calib`` is in keV.
        """
        ped, gain = self.pedestal, self.gain
        if self.auto_ranging:
            ped = np.stack([ped, ped / self.low_gain_ratio])
            gain = np.stack([gain, gain / self.low_gain_ratio])
        meta = {"source": "calibsuite_h5source.synthetic.run", "detector": self.name}
        return {"pedestals": (ped.astype(np.float32), {**meta, "units": "ADU"}),
                "pixel_gain": (gain.astype(np.float32), {**meta, "units": "ADU/keV"}),
                "pixel_rms": (self.noise.astype(np.float32), {**meta, "units": "ADU"})}
