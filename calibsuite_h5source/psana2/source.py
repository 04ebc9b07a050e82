"""psana2's DataSource protocol over HDF5 run files.

``H5DataSource(files='run.h5')`` behaves like ``psana.DataSource(files=...)``:
``ds.runs()`` yields one :class:`~calibsuite_h5source.psana2.run.Run` per file;
a run's ``steps()`` and ``events()`` share one cursor, as psana's do; detectors
are looked up with ``run.Detector(name)``. See ``../shared/reference/psana2-behaviour.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from calibsuite_h5source.errors import H5SourceError
from calibsuite_h5source.h5.guard import guard
from calibsuite_h5source.psana2 import partition as _partition
from calibsuite_h5source.psana2.psana_api import DataSourceMethods
from calibsuite_h5source.psana2.run import L1ACCEPT, Event, Run, Step  # noqa: F401 - the public names
from calibsuite_h5source.read.run_index import open_run_index

log = logging.getLogger(__name__)

#: psana keywords that mean nothing for an h5 file: accepted and ignored.
IGNORED_KWARGS = {
    "exp", "run", "dir", "skip_calib_load", "log_level",
    "smalldata_kwargs", "xdetectors", "monitor", "small_xtc", "shmem", "mpi_ts", "dbsuffix",
    "destination", "filter", "prom_jobid", "psmon_publish", "use_calib_cache",
}
#: psana keywords that decide which events an MPI rank reads (:mod:`.partition`).
PARTITION_KWARGS = {"batch_size", "intg_det", "parallel", "every_rank_a_worker"}


class H5DataSource(DataSourceMethods):
    """psana2's ``DataSource`` for h5 run files.

    Parameters
    ----------
    files : str, path or list of them
        One run per file.
    max_events : int, optional
        Read exactly this many events per run (steps are cut short).
    detectors : list of str, optional
        Keep only these detectors; an unknown name raises.
    timestamps : array of int, optional
        Read only the events with these timestamps.
    batch_size, intg_det : optional
        Under MPI, how events are dealt to the worker ranks, as psana deals
        them (:mod:`calibsuite_h5source.psana2.partition`). ``intg_det`` also
        makes ``evt.EndOfBatch()`` name it on every event that holds it,
        serially too, as psana's.
    every_rank_a_worker : bool, optional
        Under MPI, make every rank read events instead of psana's roles (rank
        0 smd0, ranks 1..``PS_EB_NODES`` event builders, the last
        ``PS_SRV_NODES`` servers, workers between). Default: the environment
        variable ``CALIBSUITE_EVERY_RANK_A_WORKER``, else False. A script
        written for psana's worker count may then hang or abort (see
        ``docs/psana-differences.rst``).
    keep_module_axis : bool
        False (default): a single-module detector's frames from
        ``det.raw.raw/calib`` have the shape psana gives for its type
        (``[row, col]`` for epix100, ``[1, row, col]`` for jungfrau:
        :mod:`calibsuite_h5source.format.shapes`). True: always ``[1, row,
        col]``, as stored. ``run.Detector(name, keep_module_axis=...)``
        overrides it per detector.
    live : bool
        Follow runs that are still being written (:mod:`calibsuite_h5source.psana2.live`):
        events come as the writer makes them durable, and the run ends when
        the writer completes it (or raises ``WriterGoneError`` when it died).
    max_retries : float, optional
        With ``live``: seconds to wait for new data before giving up; default
        ``PS_R_MAX_RETRIES``, else 60 (psana's).
    zero_copy : bool
        Return large uncompressed frames (256 KiB or more) as private
        copy-on-write mappings of the file instead of copies: several times
        faster to get, as fast to read, and still writable and the caller's
        own; but writing into one costs a page copy per 4 KiB touched, and a
        file truncated by another program while such an array is alive
        crashes the process when the array is next read (SIGBUS), as with
        ``numpy.memmap``. Default False (see ``docs/psana-differences.rst``).
    **kwargs
        Other psana keywords (``exp``, ``run``, ``dir``, ``skip_calib_load``...)
        are accepted and ignored.
    """

    def __init__(self, files=None, *, max_events=0, detectors=None, timestamps=None, keep_module_axis=False,
                 live=False, max_retries=None, zero_copy=False, **kwargs):
        if files is None:
            raise TypeError("H5DataSource needs files= (a path or a list of paths)")
        self.files = [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]
        self.max_events = max_events
        self.detectors = detectors
        self.timestamps = timestamps
        self.keep_module_axis = bool(keep_module_axis)
        unknown = set(kwargs) - IGNORED_KWARGS - PARTITION_KWARGS
        if unknown:
            log.info("H5DataSource: ignoring unknown keywords %s", sorted(unknown))
        for key in sorted(set(kwargs) & IGNORED_KWARGS):
            log.debug("H5DataSource: keyword %s=%r has no meaning for h5 files; ignored", key, kwargs[key])
        self._kwargs = kwargs
        self._partition = _partition.choose(max_events=max_events, **kwargs)
        self.live, self.max_retries = bool(live), max_retries
        self.zero_copy = bool(zero_copy)
        if self.live and self.zero_copy:
            raise H5SourceError("zero_copy=True maps finished data; a live run is still being written: "
                                "use one or the other", file=", ".join(self.files))
        if self.live:
            from calibsuite_h5source.psana2.live import resolve_max_retries

            resolve_max_retries(max_retries)  # a bad value fails here, not at the first wait
            if self._partition.is_mpi():
                raise H5SourceError("live=True reads a run in order on one process; run the script without MPI",
                                    file=", ".join(self.files))
        self.exp = kwargs.get("exp")
        self.runnum = kwargs.get("run")

    def runs(self):
        """Yield one :class:`Run` per file."""
        for path in self.files:
            if self.live:
                from calibsuite_h5source.psana2.live import open_live_run

                run = open_live_run(path, max_retries=self.max_retries, max_events=self.max_events,
                                    detectors=self.detectors, timestamps=self.timestamps,
                                    keep_module_axis=self.keep_module_axis, intg_det=self._kwargs.get("intg_det"))
                self.exp = self.exp or run.expt
                self.runnum = self.runnum or run.runnum
                yield run
                continue
            index = open_run_index(path, zero_copy=self.zero_copy)
            try:
                with guard(path, None, "selecting the run's events"):
                    run = Run(index, max_events=self.max_events, detectors=self.detectors,
                              timestamps=self.timestamps, partition=self._partition,
                              keep_module_axis=self.keep_module_axis,
                              intg_det=self._kwargs.get("intg_det"))
            except BaseException:
                index.close()
                raise
            self.exp = self.exp or run.expt
            self.runnum = self.runnum or run.runnum
            yield run

    def events(self):
        """Yield every event of every run."""
        for run in self.runs():
            yield from run.events()

    def smalldata(self, **kwargs):
        """Return a psana-compatible ``SmallData`` writer (see :mod:`calibsuite_h5source.psana2.smalldata`)."""
        from calibsuite_h5source.psana2.smalldata import SmallData

        return SmallData(self, **kwargs)

    def is_mpi(self) -> bool:
        """True when events are split across MPI ranks."""
        return self._partition.is_mpi()

    def is_srv(self) -> bool:
        """True on the ranks psana gives to its smalldata servers (the last ``PS_SRV_NODES``), as psana's.

        Such a rank serves nothing here (smalldata needs no server: the workers
        write part files that the first worker joins at ``smd.done()``); like
        psana's, it sees the run without steps or events.
        """
        return getattr(self._partition, "role", "bd") == "srv"

    def unique_user_rank(self) -> bool:
        """True on exactly one rank: the last worker under MPI, as psana's."""
        return self._partition.unique_user_rank()

    def __repr__(self):
        return f"<H5DataSource files={self.files}>"
