"""psana's other public DataSource, Event and Run methods, for the scripts that call them.

Mixed into :class:`~calibsuite_h5source.psana2.run.Event`,
:class:`~calibsuite_h5source.psana2.run.Run` and
:class:`~calibsuite_h5source.psana2.source.H5DataSource`; each answers as psana 4.3.4's
``psana/event.py`` and ``psana/psexp/run.py`` do. The methods psana has
that the h5 source leaves out, and why, are listed in
``docs/psana-differences.rst`` (*psana's other public methods*).
"""

from __future__ import annotations

import contextlib

#: psana's transition id of a BeginStep
BEGIN_STEP = 6


class EventMethods:
    """``evt.timestamp_diff(ts)``."""

    __slots__ = ()

    def timestamp_diff(self, ts: int) -> int:
        """Return this event's time minus ``ts`` in nanoseconds, as psana's.

        Both are LCLS timestamps (32 bits of seconds, 32 bits of nanoseconds).
        """
        evt_ns = (self.timestamp >> 32 & 0xFFFFFFFF) * 1_000_000_000 + (self.timestamp & 0xFFFFFFFF)
        ts = int(ts)
        return evt_ns - ((ts >> 32 & 0xFFFFFFFF) * 1_000_000_000 + (ts & 0xFFFFFFFF))


class RunMethods:
    """``run.run()``, ``scannames``, ``terminate()``, ``analyze()``, ``step(evt)``, ``build_table()``..."""

    #: set by :meth:`terminate`; the run's cursor then finds no more steps
    _terminated = False

    def run(self) -> int:
        """Return the run number (psana's ``Run.run()``)."""
        return self.runnum

    @property
    def scannames(self) -> set:
        """Names of the scan variables (``step_value`` and ``step_docstring`` included), as psana's."""
        return {name for (name, _cls) in self.scaninfo}

    @property
    def intg_det(self) -> str:
        """The ``intg_det=`` the DataSource was given, ``''`` without one (psana's ``evt.run().intg_det``)."""
        return getattr(self, "_intg_det", None) or ""

    def terminate(self) -> None:
        """Stop the run's iteration: the ``events()``/``steps()`` loops end after the current event.

        As psana's ``run.terminate()`` in a serial run. Under MPI only this
        rank's loops end (psana's also stops the other ranks).
        """
        self._terminated = True

    def close_shared_memory(self) -> None:
        """Nothing to close: h5 runs use no shared memory (psana's no-op outside shmem mode)."""

    def analyze(self, event_fn=None, det=None) -> None:
        """Call ``event_fn(evt, det)`` for every remaining event, as psana's."""
        for evt in self.events():
            if event_fn is not None:
                event_fn(evt, det)

    def step(self, evt) -> BeginStep:
        """Return the BeginStep of the step ``evt`` belongs to, as psana's: scan detectors give its values
        (``step_value(run.step(evt))``)."""
        return BeginStep(self, evt._step)

    @contextlib.contextmanager
    def build_table(self):
        """psana's ``with run.build_table() as found:`` before ``run.event(ts)``: yields True when the
        run has events. h5 runs carry their timestamp index, so nothing is scanned."""
        yield len(self.times()) > 0


class BeginStep:
    """psana's ``run.step(evt)``: a step's BeginStep transition. Scan detectors take it as they take
    the step; h5 runs store no BeginStep time, so it has no ``timestamp``."""

    __slots__ = ("_run", "_step")

    def __init__(self, run, step: int):
        self._run = run
        self._step = step

    def service(self) -> int:
        """Return 6 (psana's BeginStep transition id)."""
        return BEGIN_STEP

    def run(self):
        """Return the run."""
        return self._run

    def __repr__(self):
        return f"<BeginStep step={self._step}>"


class DataSourceMethods:
    """``ds.is_bd()``."""

    def is_bd(self) -> bool:
        """True on the ranks that read events (psana's bigdata ranks): every rank of a serial run; under
        MPI the workers, not smd0, the event builders or the smalldata servers."""
        return not self.is_mpi() or bool(getattr(self._partition, "is_worker", True))
