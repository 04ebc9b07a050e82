"""Streaming writer of canonical run files (``docs/format.rst``).

::

    with RunWriter('run.h5', scriptType='delayScan', location='ASC') as w:
        for delay in delays:
            with w.step(delay=delay) as s:                       # per-step scan value
                for frame, amp, ts in acquire():
                    s.event(epixM=frame, wave8={'peakAmplitude': amp}, timestamp=ts,
                            headers={'epixM': {'frameNo': frame_no}})   # optional per-event header fields

Events are checked at the call, before anything is written, buffered, and
appended in blocks (one resize and one write per block and dataset). The file
is flushed at the end of every step, every ``flush_every`` events and every
``flush_seconds``; the header says ``complete = False`` until a clean close,
``stepsComplete`` counts the finished steps and ``openStepEvents`` the durable
events of the step being written (each set only after the data it counts was
flushed), so a crash loses at most the events since the last flush, and a live
reader (:mod:`calibsuite_h5source.psana2.live`) follows the run as it grows.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shlex
import socket
import sys
import time

import h5py
import numpy as np

from calibsuite_h5source._version import __version__
from calibsuite_h5source.errors import HeaderError, UnknownScriptTypeError, WriterError
from calibsuite_h5source.format import rules
from calibsuite_h5source.format.constants import (
    FORMAT_VERSION,
    HEADER,
    LIVE_ATTRS,
    WRITER_COUNTERS,
)
from calibsuite_h5source.format.script_types import canonical_script_type, known_script_types
from calibsuite_h5source.format.timestamps import check_run_start
from calibsuite_h5source.write.fastwrite import AttrSetter, DatasetMaker, ValueAppender, append_rows
from calibsuite_h5source.write.rules import (
    check_header,
    check_scan_name,
    check_scan_value,
    check_source_name,
)
from calibsuite_h5source.write.schema import (
    check_distinct_names,
    check_reader_rules,
    parse_declaration,
)
from calibsuite_h5source.write.step import StepWriter
from calibsuite_h5source.write.storage import (
    EXPECTED_STEPS,
    compression_kwargs,
    create_file,
    lock_state,
)

log = logging.getLogger(__name__)



def writer_identity(path: str) -> dict:
    """The ``writerHost``/``writerPid``/``writerLock`` header attributes of the process writing ``path``.

    ``writerLock`` is True when HDF5's write lock on the file is in effect
    (not disabled by ``HDF5_USE_FILE_LOCKING=FALSE`` or the filesystem): a
    reader that then finds the lock free knows the writer has gone.
    """
    return {"writerHost": socket.gethostname(), "writerPid": os.getpid(), "writerLock": lock_state(path) == "written"}


#: Largest ``expected_steps``: a symbol-table node holds at most 2 * 65535 links.
MAX_EXPECTED_STEPS = 2 * 65535

#: Largest chunk of an uncompressed per-step dataset, in bytes (a chunk holds one frame at least).
CHUNK_BYTES = 2**16

#: Longest ``error`` text stored, in UTF-8 bytes (longer ones are cut, ending in '...'); the writer
#: keeps room for it in the file from the start.
ERROR_BYTES = 1000

#: Attributes the writer gives every area detector's group (NeXus): not the caller's to set, and
#: left out of a detector's attributes where they are handed back (``read_run_dict``).
DETECTOR_GROUP_ATTRS = {"NX_class": "NXdata", "signal": "0"}


class RunWriter:
    """Write one run file in the canonical layout.

    Parameters
    ----------
    path : str or path
        The file to create.
    scriptType : str
        Kind of run; must be recognised (``known_script_types()``) unless
        ``allow_unknown_script_type`` is True.
    compression : {None, 'gzip', 'lzf', 'bitshuffle', 'blosc', 'zstd'}
        Compression of detector frames (the last three need hdf5plugin).
    compression_opts : optional
        gzip level, or keywords of the hdf5plugin filter.
    flush_every : int
        Make the events durable (flushed, and counted in ``openStepEvents``
        for live readers) every this many events; default 100.
    flush_seconds : float
        ... and whenever this many seconds have passed since the last flush
        (checked at each event); default 2.0. Steps end with a flush too.
    overwrite : bool
        Replace an existing file; otherwise an existing file is an error.
    expected_steps : int
        Steps the file makes room for when it is created (default 2048, at
        most 131070): up to this many, a writer killed at any moment keeps
        every step it confirmed. A run may go past it; a kill while one of
        the later steps is added can then tear a group's link table
        (``docs/format.rst``, "Crash safety"). The room costs about 50 bytes
        per step and group.
    **header
        More ``/ancillaryData`` attributes (``location``, ``experiment``,
        ``runnum``...). ``acquisitionScript``, ``commandLine``, ``date``,
        ``version`` and ``run`` (Unix seconds) are filled in unless given.
    """

    def __init__(self, path, scriptType, *, compression=None, compression_opts=None,  # noqa: N803
                 flush_every: int = 100, flush_seconds: float = 2.0, allow_unknown_script_type: bool = False,
                 overwrite: bool = False, expected_steps: int = EXPECTED_STEPS, **header):
        self.path = str(path)
        if not isinstance(scriptType, str):
            raise WriterError(f"scriptType must be a str; found {type(scriptType).__name__} {scriptType!r}",
                              file=self.path, h5path=f"/{HEADER}")
        canonical = canonical_script_type(scriptType) if scriptType else None
        if canonical is None and not allow_unknown_script_type:
            raise UnknownScriptTypeError(f"scriptType {scriptType!r} is not recognised; known: "
                                         f"{sorted(known_script_types())} (or pass allow_unknown_script_type=True, "
                                         "or register_script_type())", file=self.path)
        self._compression = compression_kwargs(compression, compression_opts)
        self.compression = compression
        if isinstance(flush_every, bool) or not isinstance(flush_every, (int, np.integer)) or flush_every < 1:
            raise WriterError(f"flush_every must be a positive int; found {flush_every!r}", file=self.path)
        self.flush_every = int(flush_every)
        self.flush_seconds = float(flush_seconds)
        if (isinstance(expected_steps, bool) or not isinstance(expected_steps, (int, np.integer))
                or not 1 <= expected_steps <= MAX_EXPECTED_STEPS):
            raise WriterError(f"expected_steps must be an int from 1 to {MAX_EXPECTED_STEPS}; found {expected_steps!r}",
                              file=self.path)
        self.expected_steps = int(expected_steps)
        reserved = sorted({*WRITER_COUNTERS, *LIVE_ATTRS} & set(header))
        if reserved:
            raise WriterError(f"header attributes {reserved} are set by the writer; do not pass them",
                              file=self.path, h5path=f"/{HEADER}")
        check_header({k: v for k, v in header.items() if v is not None}, file=self.path)
        now = time.time()
        defaults = {
            "acquisitionScript": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",
            "commandLine": shlex.join(sys.argv) if sys.argv else "",
            "date": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds"),
            "version": f"calibsuite_h5source {__version__}",
            "run": int(now),
        }
        self.header = {**defaults, **{k: v for k, v in header.items() if v is not None},
                       "scriptType": canonical or scriptType}
        check_reader_rules(rules.HEADER, self.header, self.path, f"/{HEADER}")
        f, self._groups = create_file(self.path, overwrite, self.expected_steps)
        self._file = f
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["NX_class"] = "NXroot"
        g = self._groups.require(HEADER)
        for key, value in self.header.items():
            g.attrs[key] = value
        g.attrs["complete"] = False
        g.attrs["stepsComplete"] = 0
        g.attrs.update(writer_identity(self.path))
        g.attrs["openStepEvents"] = -1
        g.attrs["stepsDiscarded"] = 0  # counted in place (AttrSetter): a re-created attribute could tear the header
        # Room for the error message of an unclean close, in the header's object header and in the
        # global heap that holds its strings: a message that did not fit would be written in a new block
        # past the end of the file, and a kill while closing could then tear the header and lose every
        # confirmed step (see close()). Attributes as large as the longest message, deleted, leave it.
        g.attrs.create("_room", np.zeros(ERROR_BYTES, np.uint8))  # object header
        g.attrs["_room_text"] = "." * ERROR_BYTES  # global heap
        del g.attrs["_room_text"], g.attrs["_room"]
        self._header_group = g
        self._counters = AttrSetter(g)  # stepsComplete, openStepEvents, complete: every write goes through it
        self._per_step: dict[str, h5py.Dataset | ValueAppender] = {}  # /ancillaryData/<name>, nEvents
        self._maker = DatasetMaker(f)
        self._detectors: dict[str, dict] = {}
        self._schema = None
        self._scan_names: list[str] | None = None
        self._open_step: StepWriter | None = None
        self.n_steps = 0
        self._longest_step = 0  # events of the longest finished step: the next steps' chunk size hint
        #: the last timestamp of the confirmed steps (a discarded step's do not count)
        self.last_timestamp: int | None = None
        self._discarded = 0
        self._leftover: dict[str, h5py.Dataset] = {}  # a discarded step's datasets, for the next step
        self._since_flush = 0
        self._last_flush = time.monotonic()
        self._closed = False
        f.flush()

    # -- declarations and schema ---------------------------------------------
    def detector(self, name: str, *, detType=None, gainBitsMask=None, calib=None, attrs=None,  # noqa: N803
                 shape=None, dtype=None, header_fields=None, geometry=None) -> None:
        """Declare an area detector's metadata (and optionally its frame shape/dtype) before its data.

        Parameters
        ----------
        detType : str, optional
            psana's type (``'epixm'``).
        gainBitsMask : int, optional
            ADU bits, for ``calib`` without constants.
        calib : dict, optional
            Constants ``{'pedestals': array, ...}``, written to ``/<name>/calib/``;
            a value may be ``(array, metadata_dict)``.
        attrs : dict, optional
            More group attributes.
        shape, dtype : optional
            Frame ``[module, row, col]`` and dtype, needed only when the first
            events hold no data for this detector.
        header_fields : dict, optional
            Per-event header fields ``{field: (shape, dtype)}``, e.g.
            ``{'frameNo': ((), 'uint32'), 'autoFillMask': ((4,), 'uint32')}``;
            without it they are learnt from the first event's ``headers``.
        geometry : str or path, optional
            psana's geometry text, or the path of a ``geometry-def-*.data``
            file (or ``(text or path, metadata)``), written to
            ``/<name>/calib/geometry``; checked against ``shape`` when given.
        """
        self._check_open()
        check_source_name(name, file=self.path)
        if self._schema is not None:
            raise WriterError("declare detectors before the first event", file=self.path, h5path=f"/{name}")
        if name in self._detectors:
            raise WriterError("this detector is already declared", file=self.path, h5path=f"/{name}")
        d = parse_declaration(self.path, name, detType=detType, gainBitsMask=gainBitsMask, calib=calib, attrs=attrs,
                              shape=shape, dtype=dtype, header_fields=header_fields, geometry=geometry)
        constants, geometry = d["constants"], d["geometry"]
        g = self._groups.require(name)
        g.attrs.update(d["group_attrs"])
        if constants or geometry is not None:
            self._groups.make(f"{name}/calib")
        if geometry is not None:
            g.create_dataset("calib/geometry", data=geometry[0], dtype=h5py.string_dtype()).attrs.update(geometry[1])
        for ctype, (array, meta) in constants.items():
            g.create_dataset(f"calib/{ctype}", data=array).attrs.update(meta)
        self._detectors[name] = {"shape": d["shape"], "dtype": d["dtype"], "headers": d["headers"],
                                 "gainBitsMask": d["group_attrs"].get("gainBitsMask")}

    def _adopt_schema(self, schema: dict) -> None:
        """Fix the run's schema at its first accepted event (no-op afterwards)."""
        if self._schema is not None:
            return
        if not schema["timestamps"] and isinstance(self.header["run"], (int, np.integer)):  # the reader
            # makes timestamps from ``run``: it must be able to
            try:
                check_run_start(self.header["run"], file=self.path)
            except HeaderError as exc:
                raise WriterError(f"{exc.rule}; or give every event a timestamp=",
                                  file=self.path, h5path=f"/{HEADER}") from exc
        for name, (_, dtype) in schema["area"].items():  # gainBitsMask fits the frames' dtype, now known
            mask = self._detectors.get(name, {}).get("gainBitsMask")
            if mask is not None:
                check_reader_rules(rules.DETECTOR, {"gainBitsMask": mask}, self.path, f"/{name}", dtype)
        self._schema = schema
        for name in schema["area"]:
            g = self._groups.require(name)
            g.attrs.update(DETECTOR_GROUP_ATTRS)
        self._file.attrs["default"] = next(iter(schema["area"]), next(iter(schema["side"]), ""))

    def _create(self, h5path, shape, dtype, compress, block, expected: int = 0) -> h5py.Dataset:
        """A per-step dataset ``[n, *shape]``, resizable along n, holding ``block`` (its first n events).

        A dataset a discarded step left at ``h5path`` is rewritten instead (see :meth:`StepWriter.discard`).
        """
        ds = self._leftover.pop(h5path, None)
        if ds is not None:
            if ds.shape[1:] == tuple(shape) and ds.dtype == dtype:
                ds.id.set_extent((len(block), *shape))
                append_rows(ds, 0, block)
                return ds
            del self._file[h5path]  # cannot happen with one schema per run; kept correct anyway
        self._groups.make(h5path.rsplit("/", 1)[0])
        kwargs = self._compression if compress else {}
        chunks = (1, *shape) if compress else (self._chunk_rows(max(len(block), expected), dtype.itemsize * int(np.prod(shape))), *shape)

        def make():
            return self._file.create_dataset(h5path, data=block, maxshape=(None, *shape), chunks=chunks, **kwargs)

        return self._maker.create((tuple(shape), dtype.str, compress, chunks), h5path, block, True, make)

    def _chunk_rows(self, first: int, row_bytes: int) -> int:
        """Events per chunk of an uncompressed per-step dataset: a power of two holding ``first`` (the
        step's first block, or the events ``add_events`` was given), or the longest earlier step when
        longer (steps of a run are usually alike), and at most
        ``CHUNK_BYTES``. HDF5 allocates a whole chunk on disk: a fixed 64 KiB chunk made a short step of
        small events take 64 KiB per dataset."""
        want = max(1, first, self._longest_step)
        return max(1, min(CHUNK_BYTES // max(1, row_bytes), 1 << (want - 1).bit_length()))

    # -- steps ----------------------------------------------------------------
    def step(self, **scan_values) -> StepWriter:
        """Open the next step; keywords are its per-step scan values (numbers, or str for ``step_docstring``)."""
        self._check_open()
        if self._open_step is not None:
            raise WriterError(f"step {self._open_step.index} is still open; close it first", file=self.path)
        values = {}
        for name, value in scan_values.items():
            check_scan_name(name, file=self.path)
            if self._schema is not None and name in self._schema["scan"]:
                raise WriterError(f"{name!r} is already a per-event scan variable of this run",
                                  file=self.path, h5path=f"/{HEADER}/{name}")
            values[name] = check_scan_value(name, value, file=self.path, h5path=f"/{HEADER}/{name}/{self.n_steps}")
        names = sorted(scan_values)
        check_distinct_names(self.path, [*self._detectors, *(self._schema["sources"] if self._schema else ())], names)
        if self._scan_names is not None and names != self._scan_names:
            raise WriterError(f"every step must give the same per-step scan values; step 0 gave {self._scan_names}, "
                              f"step {self.n_steps} gives {names}", file=self.path, h5path=f"/{HEADER}")
        if self.n_steps == self.expected_steps:
            log.warning("%s: step %d goes past expected_steps=%d: from here on a writer killed while adding a "
                        "step can lose confirmed steps (docs/format.rst, \"Crash safety\"); give "
                        "RunWriter(..., expected_steps=) the run's length", self.path, self.n_steps, self.expected_steps)
        self._open_step = StepWriter(self, self.n_steps, values)
        for name, value in values.items():  # written now, so that the step's first flush carries them
            self._append_per_step(name, value, h5py.string_dtype() if isinstance(value, str) else np.float64)
        # A live reader sees the step (and its scan values) from its first flush on (flush_every events,
        # flush_seconds, or its end), which sets openStepEvents: no flush here, which would cost every
        # step of a scan a third flush.
        return self._open_step

    def _append_per_step(self, name: str, value, dtype) -> None:
        """Write step ``n_steps``'s entry of the per-step dataset ``/ancillaryData/<name>`` (made on first use).

        One chunk holds ``expected_steps`` entries: it is allocated at the first step, and every later
        entry is written in place. A new chunk would be allocated at the file's end and referenced
        before the file's end address is written back: a kill in between would make the whole
        dataset, which readers read at once, unreadable.
        """
        column = self._per_step.get(name)
        if column is None:
            g = self._header_group
            if name not in g:
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(self.expected_steps,))
            column = self._per_step[name] = g[name] if isinstance(value, str) else ValueAppender(g[name])
        if isinstance(column, ValueAppender):
            column.append(self.n_steps, value)
        else:
            column.resize(self.n_steps + 1, axis=0)
            column[self.n_steps] = value

    def add_step(self, data: dict, *, timestamps=None, present=None, scan=None, headers=None, **scan_values) -> None:
        """Write a whole step at once: ``data = {'epixM': frames[nEvents, ...], ...}`` (see ``add_events``)."""
        with self.step(**scan_values) as s:
            s.add_events(data, timestamps=timestamps, present=present, scan=scan, headers=headers)

    def _event_written(self) -> None:
        self._since_flush += 1
        if self._since_flush >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Flush the open step's events now and count them in ``openStepEvents`` (see ``docs/format.rst``).

        The data is flushed first and the counter after, in a second flush, so
        a reader that sees the counter finds everything it counts on disk.
        """
        self._check_open()
        step = self._open_step
        if step is not None:
            for col in step._columns.values():
                col.flush()
        self._file.flush()
        if step is not None:
            self._counters["openStepEvents"] = step.n_events
            self._file.flush()
        self._since_flush = 0
        self._last_flush = time.monotonic()

    def _settle_leftovers(self, n_events: int) -> None:
        """A discarded step's datasets this step did not rewrite: a ``present`` mask becomes all True
        (as if absent); anything else (none with one schema per run) is deleted."""
        for h5path, ds in self._leftover.items():
            if h5path.rsplit("/", 2)[-2:-1] == ["present"] and ds.dtype == bool:
                ds.id.set_extent((n_events,))
                append_rows(ds, 0, np.ones(n_events, bool))
            else:
                del self._file[h5path]
        self._leftover.clear()

    def _discard_step(self, step: StepWriter) -> None:
        """Forget a discarded step: a live reader no longer sees it (``openStepEvents = -1``).

        Its per-step scan values stay, past ``stepsComplete``, until the next step writes its own in
        their place: shrinking the datasets could free a chunk that the next step then allocates
        again, and a kill before the file's end address is written back would lose the dataset.
        """
        self._counters["openStepEvents"] = -1
        self._discarded += 1
        self._counters["stepsDiscarded"] = self._discarded
        self._open_step = None

    def _finish_step(self, step: StepWriter) -> None:
        f = self._file
        g = self._header_group
        # The step's data first; the header that counts it after, in a second flush (a live reader trusts the
        # header, and HDF5 writes one flush's metadata in its own order, so a kill during a flush can leave
        # any part of it unwritten: the index on disk must never count a step not wholly on disk).
        f.flush()
        if self._scan_names is None:
            self._scan_names = sorted(step.scan_values)
            declared = [n for n in self._scan_names if n not in ("step_value", "step_docstring")]
            declared += sorted(self._schema["scan"])
            if declared:
                g.attrs["ancillaryDataType"] = declared[0] if len(declared) == 1 else declared
        # the index that lets the reader open a run without touching every step
        self._append_per_step("nEvents", step.n_events, np.int64)
        self._longest_step = max(self._longest_step, step.n_events)
        self.last_timestamp = step.last_timestamp
        self.n_steps += 1
        self._open_step = None
        self._counters["stepsComplete"] = self.n_steps
        self._counters["openStepEvents"] = -1
        f.flush()
        self._since_flush = 0
        self._last_flush = time.monotonic()

    # -- closing ----------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            raise WriterError("the writer is closed", file=self.path)

    def close(self, error: BaseException | None = None) -> None:
        """Close the file; a clean close marks the run complete."""
        if self._closed:
            return
        g = self._header_group
        if error is None and self._open_step is not None:
            self._open_step.close()
        if error is None and self.n_steps == 0:
            error = WriterError("a run must have at least one step", file=self.path)
        if error is None:  # a complete run holds its steps only (past a final discarded step: its leftovers)
            for h5path in self._leftover:
                del self._file[h5path]
            self._leftover.clear()
            for name in [n for n in self._per_step if n != "nEvents" and n not in (self._scan_names or ())]:
                del self._per_step[name]  # a scan value only a discarded step gave (before step 0 was confirmed)
                del self._header_group[name]
            for column in self._per_step.values():
                ds = column.ds if isinstance(column, ValueAppender) else column
                if ds.shape[0] > self.n_steps:
                    ds.resize(self.n_steps, axis=0)
        if error is None:
            self._counters["complete"] = True  # in place: a kill while closing cannot tear the header
        else:
            # in the room made at open: nothing is allocated while closing
            message = f"{type(error).__name__}: {error}"
            if len(message.encode()) > ERROR_BYTES:
                message = message.encode()[: ERROR_BYTES - 3].decode("utf-8", "ignore") + "..."
            g.attrs["error"] = message
            log.warning("%s: closed after an error; its %d finished steps are readable: %s", self.path, self.n_steps, error)
        self._file.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(exc)
        return False
