"""Follow a run while its writer is still writing it: ``DataSource(files='run.h5', live=True)``.

:class:`LiveRun` is a :class:`~calibsuite_h5source.psana2.source.Run` whose steps and
events grow: ``run.steps()``, ``step.events()`` and ``run.events()`` yield the
events :class:`~calibsuite_h5source.write.writer.RunWriter` has made durable, in
order and each once, and wait for more. They end when the writer marks the
run complete, and raise :class:`~calibsuite_h5source.errors.WriterGoneError`
when the writer died, closed the run after an error, or wrote nothing new for
``max_retries`` seconds (psana's ``PS_R_MAX_RETRIES``, default 60).

How it stays correct (``docs/format.rst``, "What a live file looks like"):

* the writer flushes the data first and only then, in a second flush, the
  header counters ``stepsComplete`` and ``openStepEvents`` that make it
  visible; the reader serves nothing the counters do not cover;
* the reader opens the file without HDF5's lock (the writer holds it) and
  reopens it to see more (HDF5 caches what it read, so an open file never
  shows new data reliably);
* a finished step's datasets are never touched again, so they read safely;
  in the step being written, the writer's next appends can rewrite chunk-index
  nodes while the reader looks them up, so every read there first checks that
  the chunks it reads are allocated (a half-written index shows an unallocated
  chunk, which HDF5 would silently read as zeros); a failed check or read is
  retried after a reopen.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import h5py

from calibsuite_h5source.errors import H5SourceError, NotHDF5Error, WriterGoneError
from calibsuite_h5source.h5.retry import retry
from calibsuite_h5source.psana2.run import Event, Run, Step
from calibsuite_h5source.read.follow import (
    READ_ATTEMPTS,
    TRANSIENT,
    Follower,
    LiveIndex,
    WriterState,
    writer_gone,
)

log = logging.getLogger(__name__)

__all__ = ["LiveRun", "open_live_run", "resolve_max_retries", "Follower", "LiveIndex", "WriterState", "writer_gone"]

#: psana's default of ``PS_R_MAX_RETRIES``: seconds without new data before giving up
DEFAULT_MAX_RETRIES = 60.0
#: seconds between two looks at the file while waiting for more
POLL_SECONDS = 0.05


def resolve_max_retries(max_retries=None) -> float:
    """Seconds to wait for new data: ``max_retries``, else ``PS_R_MAX_RETRIES``, else 60.

    As in psana, ``PS_R_MAX_RETRIES`` is read from the environment (note that
    psana itself sets it to 0 in its process whenever it opens a non-live
    DataSource, and so does not wait afterwards; pass ``max_retries=`` to be
    independent of that).

    Raises
    ------
    H5SourceError
        The value is not a number of seconds ``>= 0``.
    """
    where = "max_retries=" if max_retries is not None else "PS_R_MAX_RETRIES"
    value = max_retries if max_retries is not None else os.environ.get("PS_R_MAX_RETRIES", DEFAULT_MAX_RETRIES)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise H5SourceError(f"{where} must be a number of seconds >= 0 (how long a live run waits for new data); "
                            f"found {value!r}")
    return seconds


class LiveRun(Run):
    """A run being written, followed live (see the module's docstring).

    Made by :func:`open_live_run` (``DataSource(files=..., live=True)``).
    """

    def __init__(self, live: LiveIndex, *, max_retries: float, max_events=None, detectors=None,
                 keep_module_axis: bool = False, poll: float = POLL_SECONDS, intg_det=None):
        self._live = live
        self._max_retries = max_retries
        self._poll = poll
        self._max_events = int(max_events or 0)
        self._served = 0
        self._last_progress = time.monotonic()
        super().__init__(live.index, detectors=detectors, keep_module_axis=keep_module_axis, intg_det=intg_det)

    # ``Run`` sets ``complete`` once; here it follows the writer
    @property
    def complete(self) -> bool:
        """True once the writer has marked the run complete."""
        return bool(self._live.index.complete)

    @complete.setter
    def complete(self, value) -> None:
        pass

    def _refresh_scan(self) -> None:
        """Bring ``step_value``/``step_docstring`` up to the grown index (their detector objects are kept)."""
        fresh = Run._scan_detectors(self)
        for name in ("step_value", "step_docstring"):
            self._scan[name]._var.per_step = fresh[name]._var.per_step

    @property
    def n_steps(self) -> int:
        """Steps seen so far (the run may grow)."""
        return len(self._live.counts)

    # -- following ----------------------------------------------------------------
    def _summary(self) -> str:
        k, i = self._cursor_step, self._cursor_pos
        return f"read {self._served} events in {min(k + 1, self.n_steps)} steps (stopped at step {k}, event {i})"

    def _wait(self) -> None:
        """Wait until the writer makes more durable or completes the run; raise when it will not."""
        live, follower = self._live, self._live.follower
        while True:
            state = follower.reopen()
            if live.update():
                self._refresh_scan()
                self._last_progress = time.monotonic()
                return
            if state.complete:
                return
            gone = writer_gone(follower.path, state)
            if gone:
                state = follower.reopen()  # it may have completed the run just before
                if live.update():
                    self._refresh_scan()
                    return
                if state.complete:
                    return
                raise WriterGoneError(f"{gone}; the run is incomplete: {self._summary()}", file=follower.path)
            if time.monotonic() - self._last_progress >= self._max_retries:
                raise WriterGoneError(f"no new data for {self._max_retries:g} s (PS_R_MAX_RETRIES or max_retries=): "
                                      f"the writer went quiet; {self._summary()}", file=follower.path)
            time.sleep(self._poll)

    def _has_step(self, k: int) -> bool:
        """Wait until step ``k`` exists (True) or the run completed without it (False)."""
        while k >= len(self._live.counts):
            if self.complete:
                return False
            self._wait()
        return True

    def _max_reached(self) -> bool:
        return self._terminated or (bool(self._max_events) and self._served >= self._max_events)

    def _next_in_step(self) -> Event | None:
        k, i = self._cursor_step, self._cursor_pos
        if self._max_reached() or not self._has_step(k):
            return None
        live = self._live
        while i >= live.counts[k]:
            if k < live.finished or self.complete:
                return None
            self._wait()
        self._cursor_pos += 1
        self._served += 1
        return Event(self, k, i, int(self._index.timestamps[k][i]))

    def steps(self):
        """Yield each step as it begins; waits for the writer (unread events of a step are skipped)."""
        while not self._max_reached() and self._has_step(self._cursor_step):
            k = self._cursor_step
            yield Step(self, k)
            if self._cursor_step == k:
                self._cursor_step, self._cursor_pos = k + 1, 0

    def events(self):
        """Yield every remaining event across steps as the writer makes it durable."""
        while True:
            evt = self._next_in_step()
            if evt is not None:
                yield evt
                continue
            if self._max_reached() or not self._has_step(self._cursor_step + 1):
                return
            self._cursor_step, self._cursor_pos = self._cursor_step + 1, 0

    def close(self) -> None:
        """Close the file."""
        self._live.follower.close()

    def __repr__(self):
        return f"<LiveRun {self.expt} runnum={self.runnum} steps so far={self.n_steps} {self.path}>"


def _first_index(follower: Follower) -> LiveIndex:
    """Build the index once two looks at the file agree on its structure (a look can be caught mid-update)."""
    previous = []

    def look():
        live = LiveIndex(follower)
        if not previous or live.structure != previous[-1]:
            previous.append(live.structure)
            raise NotHDF5Error("the file's structure changed between two looks (caught mid-update)",
                               file=follower.path)
        return live

    return retry(look, attempts=READ_ATTEMPTS, on=TRANSIENT, recover=follower.recover, delay=0.005,
                 what=f"the first look at {follower.path}")


def open_live_run(path, *, max_retries=None, max_events=None, detectors=None, timestamps=None,
                  keep_module_axis: bool = False, poll: float = POLL_SECONDS, intg_det=None) -> Run:
    """Open a run to follow as its writer writes it (what ``DataSource(files=..., live=True)`` yields).

    Waits (up to ``max_retries`` seconds) for the file to appear and for its
    first durable event. A run that is already complete opens as a finished
    run (a plain :class:`~calibsuite_h5source.psana2.source.Run`).

    Raises
    ------
    NotHDF5Error
        The path is not an HDF5 file.
    WriterGoneError
        The writer died, or nothing came within ``max_retries`` seconds.
    H5SourceError
        ``timestamps=`` (an offline selection) was given.
    """
    path = str(path)
    seconds = resolve_max_retries(max_retries)
    if timestamps is not None:
        raise H5SourceError("live=True follows the run in order; timestamps= selects events of a finished run",
                            file=path)
    start = time.monotonic()
    follower = Follower(path)
    while True:
        p = Path(path)
        state = None
        if p.is_file() and p.stat().st_size > 0:
            if not h5py.is_hdf5(p):
                raise NotHDF5Error("not an HDF5 file (no HDF5 signature)", file=path)
            state = follower.reopen()
            if state.complete:
                follower.close()
                from calibsuite_h5source.read.run_index import open_run_index

                index = open_run_index(path)
                return Run(index, max_events=max_events, detectors=detectors, keep_module_axis=keep_module_axis,
                           intg_det=intg_det)
            if sum(state.counts) > 0:
                try:
                    live = _first_index(follower)
                except BaseException:
                    follower.close()
                    raise
                return LiveRun(live, max_retries=seconds, max_events=max_events, detectors=detectors,
                               keep_module_axis=keep_module_axis, poll=poll, intg_det=intg_det)
            gone = writer_gone(path, state)
            if gone:
                follower.close()
                raise WriterGoneError(f"{gone}; the run is incomplete and holds no events", file=path)
        if time.monotonic() - start >= seconds:
            follower.close()
            what = "no event" if state is not None else "the file did not appear"
            raise WriterGoneError(f"{what} within {seconds:g} s (PS_R_MAX_RETRIES or max_retries=)", file=path)
        time.sleep(poll)
