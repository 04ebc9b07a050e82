"""psana1's DataSource, MPIDataSource, runs, steps, events and env over h5 runs."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import weakref
from pathlib import Path

from calibsuite_h5source.errors import NotHDF5Error
from calibsuite_h5source.psana1.events import (  # noqa: F401 - psana1's names, also importable from here
    Event,
    EventTime,
    _current,
    current_env,
    unix_time,
)
from calibsuite_h5source.psana2 import partition as _partition
from calibsuite_h5source.psana2.source import H5DataSource

log = logging.getLogger(__name__)

#: Folder searched for ``exp=E:run=R`` runs when the string has no ``dir=``.
H5_DIR_ENV = "CALIBSUITE_H5_DIR"
#: File names tried for ``exp=E:run=R``, relative to the folder.
RUN_PATTERNS = ("{exp}-r{run:04d}.h5", "{exp}/r{run:04d}.h5")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")

# -- the data-source string ---------------------------------------------------------------

def parse_runs(text: str) -> list[int]:
    """``'54'``, ``'3,5'``, ``'3-5'`` -> list of run numbers."""
    runs = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"run={text!r}: expected numbers such as 54, 3,5 or 3-5")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        runs.extend(range(lo, hi + 1))
    return runs


def parse_spec(spec: str) -> tuple[dict, set]:
    """Split ``'exp=xpptut15:run=54:smd:dir=/d'`` into ``({'exp':..., 'run':..., 'dir':...}, {'smd'})``."""
    keys, flags = {}, set()
    for part in str(spec).split(":"):
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            keys[k.strip()] = v.strip()
        else:
            flags.add(part.strip())
    return keys, flags


def run_files(spec=None, files=None) -> list[str]:
    """Resolve a psana1 data-source string or ``files=`` to h5 run files (one per run).

    A path (or list of paths) ending in ``.h5``/``.hdf5``/``.hdf`` is used as
    it is. ``exp=E:run=R`` looks for :data:`RUN_PATTERNS` in ``dir=`` (from the
    string), else ``$CALIBSUITE_H5_DIR``, else the working directory.
    """
    if files is not None:
        return [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]
    if spec is None:
        raise TypeError("DataSource needs a data-source string ('exp=xpptut15:run=54:smd' or a path) or files=")
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    text = str(spec)
    if text.lower().endswith(H5_SUFFIXES) and "exp=" not in text:
        return [text]
    keys, _ = parse_spec(text)
    if "files" in keys:
        return keys["files"].split(",")
    if "exp" not in keys or "run" not in keys:
        raise ValueError(f"data-source string {text!r}: expected 'exp=E:run=R[:dir=D][:smd]' or an h5 path")
    folder = Path(keys.get("dir") or os.environ.get(H5_DIR_ENV) or ".")
    out = []
    for run in parse_runs(keys["run"]):
        tried = [folder / p.format(exp=keys["exp"], run=run) for p in RUN_PATTERNS]
        found = next((p for p in tried if p.is_file()), None)
        if found is None:
            raise NotHDF5Error(f"no h5 file for exp={keys['exp']} run={run}: looked for "
                               f"{', '.join(str(p) for p in tried)} (set dir= or ${H5_DIR_ENV})")
        out.append(str(found))
    return out


# -- runs and steps ------------------------------------------------------------------------------

class Step:
    """A calib cycle: ``step.events()``, ``step.env()``."""

    def __init__(self, step, ds):
        self._step = step
        self._ds = ds

    def _raw_events(self):
        for evt in self._step.events():
            yield self._ds._deliver(evt)

    def events(self):
        """This step's events (under MPIDataSource: this rank's share)."""
        return self._ds._event_gen(self._raw_events)

    def env(self):
        return self._ds.env()

    def __repr__(self):
        return f"<psana1 Step {self._step.index}>"


class Run:
    """A psana1 run: ``events()``, ``steps()``, ``env()``, ``run()``; indexed ``times()``/``event(t)``."""

    def __init__(self, run, ds):
        self._run = run  # the package's Run
        self._ds = ds

    def _raw_events(self):
        for evt in self._run.events():
            yield self._ds._deliver(evt)

    def events(self):
        return self._ds._event_gen(self._raw_events)

    def steps(self):
        for step in self._run.steps():
            self._ds._current_step = (self._run, step.index)
            yield Step(step, self._ds)

    def env(self):
        return self._ds.env()

    def run(self) -> int:
        return self._run.runnum

    def nsteps(self) -> int:
        return self._run.n_steps

    def times(self) -> list[EventTime]:
        """Every event's time, in run order, from the index (psana1's indexed mode)."""
        from calibsuite_h5source.psana1.detectors import run_fiducials

        return [EventTime.from_psana2(int(t), int(fid))
                for t, fid in zip(self._run.times(), run_fiducials(self._run), strict=True)]

    def event(self, time) -> Event | None:
        """The event at ``time`` (an :class:`EventTime` or a psana2 timestamp int), or None."""
        ts = time.psana2() if isinstance(time, EventTime) else time
        evt = self._run.event(ts)
        return None if evt is None else self._ds._deliver(evt)

    def __repr__(self):
        return f"<psana1 Run {self._run.runnum} {self._run.path}>"


# -- data sources -------------------------------------------------------------------------------

class Env:
    """psana1's ``env``: experiment, run and store accessors for the current run."""

    def __init__(self, ds):
        self._ds = ds

    def _run(self):
        return self._ds._current_run()

    def experiment(self) -> str:
        run = self._run()
        return run.expt if run is not None else ""

    def instrument(self) -> str:
        return self.experiment()[:3].upper()

    def expNum(self) -> int:  # noqa: N802 - psana1's name
        return 0

    def calibDir(self) -> str:  # noqa: N802
        run = self._run()
        return str(Path(run.path).parent) if run is not None else ""

    def fwkName(self) -> str:  # noqa: N802
        return "psana"

    def jobName(self) -> str:  # noqa: N802
        run = self._run()
        return f"{self.experiment()}:run={run.runnum}" if run is not None else ""

    def subprocess(self) -> int:
        return 0

    def configStore(self):  # noqa: N802
        from calibsuite_h5source.psana1.detectors import Store

        return Store()

    def calibStore(self):  # noqa: N802
        from calibsuite_h5source.psana1.detectors import Store

        return Store()

    def epicsStore(self):  # noqa: N802
        from calibsuite_h5source.psana1.detectors import EpicsStore

        return EpicsStore(self._ds)


class DataSource:
    """psana1's ``DataSource`` over h5 runs.

    Parameters
    ----------
    spec : str or list, optional
        ``'exp=E:run=R[:dir=D][:smd|:idx]'`` or an h5 path (see :func:`run_files`).
    files : str or list, optional
        h5 path(s), one run each.
    **kwargs
        ``max_events`` is honoured; other keywords are logged and ignored.
    """

    def __init__(self, spec=None, files=None, **kwargs):
        self.files = run_files(spec, files)
        self.spec = spec
        max_events = kwargs.pop("max_events", 0)
        if kwargs:
            log.info("psana1 DataSource: ignoring keywords %s", sorted(kwargs))
        # psana1's plain DataSource reads every event on every rank: no partition here
        self._h5 = H5DataSource(files=self.files, max_events=max_events, parallel=False)
        self._runs = self._h5.runs()
        self._run = None
        self._currevt = None
        self._current_step = None
        self._env = Env(self)
        self._advance()
        _current["ds"] = weakref.ref(self)

    # the current run, advanced when its events are exhausted
    def _advance(self):
        nxt = next(self._runs, None)
        self._run = None if nxt is None else Run(nxt, self)
        if self._run is not None:
            self._current_step = (self._run._run, 0)

    def _current_run(self):
        if self._run is not None:
            return self._run._run
        return self._current_step[0] if self._current_step else None

    def _deliver(self, evt) -> Event:
        wrapped = Event(evt)
        self._current_step = (evt._run, evt._step)
        self._currevt = wrapped
        return wrapped

    def _raw_events(self):
        while self._run is not None:
            yield from self._run._raw_events()
            self._advance()

    def _event_gen(self, source):
        """Yield the events of ``source()`` (serial: all of them)."""
        yield from source()

    def events(self):
        """Every remaining event of every run (successive calls continue: one cursor)."""
        return self._event_gen(self._raw_events)

    def steps(self):
        """Every remaining step of every run."""
        while self._run is not None:
            yield from self._run.steps()
            self._advance()

    def runs(self):
        """The remaining runs."""
        while self._run is not None:
            yield self._run
            self._advance()

    def env(self) -> Env:
        return self._env

    def small_data(self, filename=None, keys_to_save=(), gather_interval=100, **kwargs):
        """psana1's ``SmallData`` (see :mod:`calibsuite_h5source.psana1.smalldata`)."""
        from calibsuite_h5source.psana1.smalldata import SmallData

        sd = SmallData(self, filename=filename, keys_to_save=keys_to_save, **kwargs)
        self._attach_small_data(sd, gather_interval)
        return sd

    def _attach_small_data(self, sd, gather_interval):
        self.sd = sd

    def __repr__(self):
        return f"<psana1 {type(self).__name__} {self.files}>"


def _world():
    if os.environ.get("PS_PARALLEL", "").lower() == "none" or not _partition.under_mpi_launcher() \
            or importlib.util.find_spec("mpi4py") is None:
        return None, 0, 1
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm, comm.Get_rank(), comm.Get_size()


class MPIDataSource(DataSource):
    """psana1's ``MPIDataSource``: event ``n`` of each ``events()`` loop goes to rank ``n % size``.

    As psana1's: every rank walks the whole stream (skipped events cost no
    frame read here) so the event numbering, the ``gather_interval`` gathers
    of :meth:`small_data` and a final gather at the end of each loop happen
    on every rank together. Each ``events()`` (or ``step.events()``) call
    numbers its events from 0. ``break_after(n)`` stops every rank after ``n``
    global events. Without an MPI launcher it is serial (rank 0 of 1).
    Unlike psana1 (which raised ``NotImplementedError``), ``runs()`` works;
    a run's ``events()`` is dealt the same way.
    """

    def __init__(self, spec=None, files=None, **kwargs):
        super().__init__(spec, files, **kwargs)
        self.comm, self.rank, self.size = _world()
        self.nevent = -1
        self._break_after = 2**62
        self.global_gather_interval = None
        self.sd = None

    def _event_gen(self, source):
        self.nevent = -1
        it = source()
        while self.nevent < self._break_after - 1:
            self.nevent += 1
            try:
                evt = next(it)
            except StopIteration:
                break
            if self.global_gather_interval is not None and self.sd is not None and self.nevent > 1 \
                    and self.nevent % self.global_gather_interval == 0:
                self.sd.gather()
            if self.nevent % self.size == self.rank:
                self._currevt = evt
                yield evt
        if self.sd is not None:
            self.sd.gather()

    def _deliver(self, evt) -> Event:
        wrapped = Event(evt)
        self._current_step = (evt._run, evt._step)
        return wrapped  # _currevt is set only for this rank's events

    def event_number(self) -> int:
        """The global number of the current event in this loop."""
        return self.nevent

    def break_after(self, n_events: int) -> None:
        """Stop every rank's loop after ``n_events`` global events."""
        self._break_after = int(n_events)

    @property
    def master(self) -> bool:
        return self.rank == 0

    def _attach_small_data(self, sd, gather_interval):
        self.sd = sd
        self.global_gather_interval = None if not gather_interval else int(gather_interval) * self.size
