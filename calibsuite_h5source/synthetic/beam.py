"""Synthetic beam-line side data: the event sequence, timing event codes, flux monitor.

At MFX a frame is recorded as two events: first the beam monitor's (event
code 137: the shot's flux in ``MfxDg1BmMon``, no frame), then, a few hundred
nanoseconds later, the detector's (codes 281 and 283). Code 272 (120 Hz) is
on every event. The suite pairs a frame with the last flux seen within 1000
timestamp ticks (``psana2Base.matchedDetEvt``), tests ``ec[283]`` in
``isBeamEvent`` and ``ec[272]`` in ``isKicked``. :class:`BeamTiming` lays a
step's shots out that way; :func:`monitor_amplitudes` makes the monitor's
16-channel ``peakAmplitude``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibsuite_h5source.format import timestamps as _ts
from calibsuite_h5source.format.constants import N_EVENTCODES

__all__ = ["BeamTiming", "StepPlan", "monitor_amplitudes", "N_EVENTCODES", "N_MONITOR_CHANNELS"]

N_MONITOR_CHANNELS = 16
_NS = 1_000_000_000
#: LCLS-II pulse period: 1/929 kHz = 14/13 microseconds.
_PULSE_NUM, _PULSE_DEN_NS = 13, 14_000


@dataclass(frozen=True)
class StepPlan:
    """The events of one step: which hold a frame, their times, codes and pulse ids.

    Attributes
    ----------
    frame : numpy.ndarray
        bool ``[nEvents]``: True where the event holds a detector frame.
    shot : numpy.ndarray
        int64 ``[nEvents]``: the step's shot (0, 1, ...) each event belongs to.
    timestamps : numpy.ndarray
        uint64 ``[nEvents]``, psana's format, strictly increasing.
    pulse_ids : numpy.ndarray or None
        uint64 ``[nEvents]`` (None without timing).
    eventcodes : numpy.ndarray or None
        uint8 ``[nEvents, 288]`` (None without timing).
    """

    frame: np.ndarray
    shot: np.ndarray
    timestamps: np.ndarray
    pulse_ids: np.ndarray | None = None
    eventcodes: np.ndarray | None = None

    @property
    def n_events(self) -> int:
        return len(self.frame)


def _codes(rows: int, codes) -> np.ndarray:
    out = np.zeros((rows, N_EVENTCODES), np.uint8)
    for c in codes:
        if not 0 <= int(c) < N_EVENTCODES:
            raise ValueError(f"event codes are 0..{N_EVENTCODES - 1}; got {c}")
        out[:, int(c)] = 1
    return out


@dataclass(frozen=True)
class BeamTiming:
    """How shots become events, as at MFX.

    Parameters
    ----------
    rate_hz : float
        Shot rate (120 Hz beam).
    frame_delay_ns : int
        Time from a shot's monitor event to its frame event; under the suite's
        1000-tick pairing window.
    monitor_codes, frame_codes, common_codes : tuple of int
        Event codes of the beam-monitor events (137), of the frame events
        (281 DAQ readout, 283 beam) and of every event (272: 120 Hz).
    first_pulse_id : int
        Pulse id of the run's first shot.
    """

    rate_hz: float = 120.0
    frame_delay_ns: int = 300
    monitor_codes: tuple = (137,)
    frame_codes: tuple = (281, 283)
    common_codes: tuple = (272,)
    first_pulse_id: int = 1_000_000_000

    def __post_init__(self):
        if not self.rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, not {self.rate_hz}")
        if not 0 < self.frame_delay_ns < _NS / self.rate_hz / 2:
            raise ValueError(f"frame_delay_ns must be positive and under half the shot period; got {self.frame_delay_ns}")
        for codes in (self.monitor_codes, self.frame_codes, self.common_codes):
            _codes(0, codes)

    def plan(self, run_unix: int, n_shots: int, first_shot: int) -> StepPlan:
        """Lay out ``n_shots`` shots (run-wide index from ``first_shot``) as monitor + frame event pairs."""
        start_ns = max(int(run_unix) - _ts.LCLS_EPOCH_OFFSET, 0) * _NS
        k = np.arange(first_shot, first_shot + n_shots, dtype=np.int64)
        offset = np.rint(k * (_NS / self.rate_hz)).astype(np.int64)
        shot_ns = start_ns + offset
        # both events of a shot in the same second, so their psana timestamps differ by frame_delay_ns
        late = shot_ns % _NS >= _NS - self.frame_delay_ns
        shot_ns[late] -= self.frame_delay_ns
        ns = np.empty(2 * n_shots, np.int64)
        ns[0::2], ns[1::2] = shot_ns, shot_ns + self.frame_delay_ns
        pulses = np.repeat(self.first_pulse_id + (offset * _PULSE_NUM) // _PULSE_DEN_NS, 2).astype(np.uint64)
        frame = np.zeros(2 * n_shots, bool)
        frame[1::2] = True
        codes = np.empty((2 * n_shots, N_EVENTCODES), np.uint8)
        codes[0::2] = _codes(1, (*self.monitor_codes, *self.common_codes))
        codes[1::2] = _codes(1, (*self.frame_codes, *self.common_codes))
        return StepPlan(frame=frame, shot=np.repeat(np.arange(n_shots), 2), timestamps=_to_psana(ns),
                        pulse_ids=pulses, eventcodes=codes)


def plain_plan(run_unix: int, n_shots: int, first_shot: int) -> StepPlan:
    """One event per shot, each with a frame, 1 ms apart (the reader's synthetic spacing); no timing."""
    stamps = _ts.synthesise(run_unix, [n_shots], start_event=first_shot)[0]
    return StepPlan(frame=np.ones(n_shots, bool), shot=np.arange(n_shots), timestamps=stamps)


def _to_psana(ns: np.ndarray) -> np.ndarray:
    return ((ns // _NS).astype(np.uint64) << np.uint64(32)) | (ns % _NS).astype(np.uint64)


def monitor_amplitudes(flux: np.ndarray, sign: float = 1.0, channels: int = N_MONITOR_CHANNELS) -> np.ndarray:
    """Return the beam monitor's ``peakAmplitude`` ``[n, channels]`` float32 for fluxes ``[n]``.

    Every channel reads ``sign * flux``, so the suite's
    ``peakAmplitude(evt)[fluxChannels].mean() * fluxSign`` is the flux for any
    channel subset when ``fluxSign == sign`` (MFX's DG1 reads negative: its
    config has ``fluxSign: -1``).
    """
    flux = np.asarray(flux, np.float32)
    return np.repeat((np.float32(sign) * flux)[:, None], channels, axis=1)
