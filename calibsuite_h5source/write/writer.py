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
from calibsuite_h5source.errors import UnknownScriptTypeError, WriterError
from calibsuite_h5source.format.constants import (
    FORMAT_VERSION,
    HEADER,
    LIVE_ATTRS,
    WRITER_COUNTERS,
    step_name,
)
from calibsuite_h5source.format.script_types import canonical_script_type, known_script_types
from calibsuite_h5source.write.fastwrite import AttrSetter, DatasetMaker, ValueAppender
from calibsuite_h5source.write.rules import (
    check_field_name,
    check_header,
    check_header_field_name,
    check_numeric_array,
    check_scan_name,
    check_scan_value,
    check_source_name,
    check_timestamp,
)
from calibsuite_h5source.write.storage import Column, compression_kwargs, create_file, lock_state

log = logging.getLogger(__name__)

#: header attributes the writer keeps for live readers (``docs/format.rst``, "What a live file looks like")


def writer_identity(path: str) -> dict:
    """The ``writerHost``/``writerPid``/``writerLock`` header attributes of the process writing ``path``.

    ``writerLock`` is True when HDF5's write lock on the file is in effect
    (not disabled by ``HDF5_USE_FILE_LOCKING=FALSE`` or the filesystem): a
    reader that then finds the lock free knows the writer has gone.
    """
    return {"writerHost": socket.gethostname(), "writerPid": os.getpid(), "writerLock": lock_state(path) == "written"}


#: Longest ``error`` text stored, in UTF-8 bytes (longer ones are cut, ending in '...'); the writer
#: keeps room for it in the file from the start.
ERROR_BYTES = 1000


class StepWriter:
    """One step being written; get it from :meth:`RunWriter.step`."""

    def __init__(self, writer: RunWriter, index: int, scan_values: dict):
        self.writer = writer
        self.index = index
        self.scan_values = scan_values
        self.n_events = 0
        self._columns: dict[tuple, Column] = {}
        self._scan: dict[str, list] = {}  # first per-event scan value of this step (the constancy rule)
        self._closed = False

    # -- checks (nothing is buffered or written until every check of a call passed) --------
    def _fail(self, h5path, rule):
        raise WriterError(rule, file=self.writer.path, h5path=h5path)

    def _check_event(self, schema: dict, timestamp, scan, data: dict, headers, block_scan: dict,
                     position: int = 0) -> tuple:
        """Check one event against ``schema``; return ``(timestamp, data, scan, headers)`` ready to append.

        ``block_scan`` holds the first per-event scan values of the call's
        block (``add_events``), for the constant-within-a-step rule;
        ``position`` is the event's place in that block.
        """
        w = self.writer
        checked = {}
        expected = schema["sources"]
        if data.keys() != expected:
            missing = sorted(expected - set(data))
            extra = sorted(map(str, set(data) - expected))
            self._fail("/", f"every event must hold the same detectors (pass None for an event without data); "
                       f"expected {sorted(expected)}, missing {missing}, unexpected {extra}")
        for name, value in data.items():
            if name in schema["area"]:
                checked[name] = None if value is None else w._check_frame(schema, name, value, f"/{name}/{self.index}")
            elif value is None:  # the source has no data at this event (a beam monitor on a frame event)
                checked[name] = None
            else:
                if not isinstance(value, dict) or set(value) != set(schema["side"][name]):
                    found = sorted(map(str, value)) if isinstance(value, dict) else type(value).__name__
                    self._fail(f"/{name}", f"side data must be a dict with fields {sorted(schema['side'][name])} "
                               f"(or None for an event without data); found {found}")
                checked[name] = {f: w._check_field(schema, name, f, v) for f, v in value.items()}
        checked_headers = self._check_headers(schema, headers or {}, checked)
        if (timestamp is not None) != schema["timestamps"]:
            self._fail("/timestamp", "give a timestamp with every event or with none; "
                       f"the first event {'had' if schema['timestamps'] else 'had none'}, this one "
                       f"{'has' if timestamp is not None else 'has none'}")
        if timestamp is not None:
            timestamp = check_timestamp(timestamp, file=w.path, h5path=f"/timestamp/{self.index}")
        if scan is not None and not isinstance(scan, dict):
            self._fail(f"/{HEADER}", f"scan= must be a dict {{name: value}}; found {type(scan).__name__}")
        scan = scan or {}
        if set(scan) != schema["scan"]:
            self._fail(f"/{HEADER}", f"every event must give the same per-event scan values "
                       f"{sorted(schema['scan'])}; found {sorted(map(str, scan))}")
        values = {}
        for name, v in scan.items():
            h5path = f"/{HEADER}/{name}/{self.index}"
            v = values[name] = check_scan_value(name, v, file=w.path, h5path=h5path)
            first = self._scan[name][0] if self._scan.get(name) else block_scan.setdefault(name, v)
            if first != v and not (first != first and v != v):  # NaN throughout a step is constant too
                self._fail(h5path, f"a per-event scan value must not change inside a step; step {self.index} "
                           f"started with {first!r}, event {self.n_events + position} has {v!r}")
        return timestamp, checked, values, checked_headers

    def _check_headers(self, schema: dict, headers: dict, frames: dict) -> dict:
        """Check one event's header fields against the schema; fill a frameless detector's with zeros."""
        w = self.writer
        schema = schema["headers"]
        if not isinstance(headers, dict) or set(headers) - set(schema):
            extra = sorted(map(str, set(headers) - set(schema))) if isinstance(headers, dict) else type(headers).__name__
            self._fail("/", f"headers must be {{detector: {{field: value}}}} for the detectors with header fields "
                       f"{sorted(schema)} (set by the first event, or w.detector(name, header_fields=...)); "
                       f"found {extra}")
        out = {}
        for name, fields in schema.items():
            given = headers.get(name)
            if given is None and frames.get(name) is None:
                out[name] = {f: np.zeros(shape, dtype) for f, (shape, dtype) in fields.items()}
                continue
            if not isinstance(given, dict) or set(given) != set(fields):
                found = sorted(map(str, given)) if isinstance(given, dict) else repr(given)
                self._fail(f"/{name}", f"every event with data for {name} must give the header fields "
                           f"{sorted(fields)}; found {found}")
            out[name] = {f: w._check_value(f"/{name}/{f}", fields[f], v, "header field") for f, v in given.items()}
        return out

    # -- writing --------------------------------------------------------------
    def _column(self, key: tuple, shape, dtype, compress=False) -> Column:
        """The buffered column ``key`` of this step (made at its first use; ``key`` names its dataset).

        ``("area", det)``: ``/<det>/<step>``; ``("side"|"header", source, field)``:
        ``/<source>/<field>/<step>``; ``("present", source)``: ``/<source>/present/<step>``;
        ``("timestamp",)``: ``/timestamp/<step>``; ``("scan", name)``: ``/ancillaryData/<name>/<step>``.
        """
        col = self._columns.get(key)
        if col is None:
            kind, *names = key
            parts = {"present": [*names, "present"], "timestamp": ["timestamp"], "scan": [HEADER, *names]}
            h5path = "/" + "/".join([*parts.get(kind, names), step_name(self.index)])
            w = self.writer
            create = lambda path, shape, dtype, block: w._create(path, shape, dtype, compress, block)  # noqa: E731
            col = self._columns[key] = Column(create, h5path, shape, dtype, w.flush_every)
        return col

    def _check_open(self) -> None:
        self.writer._check_open()
        if self._closed:
            raise WriterError("this step is closed; open a new one with w.step()", file=self.writer.path)

    def event(self, timestamp=None, scan=None, headers=None, **data) -> None:
        """Add one event.

        Parameters
        ----------
        timestamp : int, optional
            psana timestamp (``seconds since 1990 << 32 | ns``, an integer
            ``0 <= t < 2**64``); all events or none.
        scan : dict, optional
            Per-event scan values ``{name: number}``, constant within a step.
        headers : dict, optional
            Per-event header fields of area detectors,
            ``{detector: {field: value}}`` (a number or a small array, e.g.
            ``{'epixM': {'frameNo': 7, 'autoFillMask': [0, 0, 0, 0]}}``),
            read back as ``det.raw.<field>(evt)``. Every event with data for
            that detector gives the same fields; an event without data (None)
            may omit them (zeros are stored).
        **data
            ``detector=frame`` (``[module, row, col]``, or 2-D for one module;
            None when the event holds no data for it), or
            ``source={field: value}`` for side data (None when the source has
            no data at this event: ``/<source>/present/<step>`` records it).

        Raises
        ------
        WriterError
            The event breaks a rule; nothing of it was buffered or written.
        """
        self._check_open()
        w = self.writer
        schema = w._schema or w._propose_schema(data, timestamp is not None, scan, headers, self.scan_values)
        checked = self._check_event(schema, timestamp, scan, data, headers, {})
        w._adopt_schema(schema)
        self._append(*checked)

    def add_events(self, data: dict, *, timestamps=None, present=None, scan=None, headers=None) -> None:
        """Add a block of events: ``data = {'epixM': frames[n, ...], 'wave8': {'peakAmplitude': a[n, ...]}}``.

        Parameters
        ----------
        data : dict
            Per detector an array ``[n, ...]``; per side-data source a dict of
            such arrays.
        timestamps : array-like of int, optional
            ``[n]`` psana timestamps.
        present : dict, optional
            ``{detector: bool[n]}``; False marks an event without data.
        scan : dict, optional
            ``{name: values[n]}`` per-event scan values.
        headers : dict, optional
            ``{'epixM': {'frameNo': values[n, ...]}}``, as :meth:`event`'s, one row per event.

        Raises
        ------
        WriterError
            Any event of the block breaks a rule; nothing of the block was
            buffered or written.
        """
        self._check_open()
        n = self._block_length(data, timestamps, present, scan, headers)
        w = self.writer
        present = present or {}
        schema, block_scan, records = w._schema, {}, []
        for i in range(n):
            event = {name: (v[i] if not isinstance(v, dict) else {f: a[i] for f, a in v.items()})
                     for name, v in data.items()}
            for name, mask in present.items():
                if not mask[i]:
                    event[name] = None
            ts = None if timestamps is None else timestamps[i]
            values = None if scan is None else {k: v[i] for k, v in scan.items()}
            head = None if headers is None else {d: {f: a[i] for f, a in fields.items()} for d, fields in headers.items()}
            schema = schema or w._propose_schema(event, ts is not None, values, head, self.scan_values)
            records.append(self._check_event(schema, ts, values, event, head, block_scan, i))
        if records:
            w._adopt_schema(schema)
        for record in records:
            self._append(*record)

    def _block_length(self, data, timestamps, present, scan, headers) -> int:
        if not isinstance(data, dict) or not data:
            self._fail("/", f"data must be a non-empty dict {{detector: array}}; found {type(data).__name__}")
        lengths = {}
        named = [(str(name), v) for name, v in data.items() if not isinstance(v, dict)]
        named += [(f"{name}.{f}", a) for name, v in data.items() if isinstance(v, dict) for f, a in v.items()]
        named += [("timestamps", timestamps)] if timestamps is not None else []
        named += [(f"present[{name}]", m) for name, m in (present or {}).items()]
        named += [(f"scan[{name}]", v) for name, v in (scan or {}).items()] if isinstance(scan, dict) else []
        if headers is not None and (not isinstance(headers, dict) or not all(isinstance(h, dict) for h in headers.values())):
            self._fail("/", f"headers= must be {{detector: {{field: values[n]}}}}; found {type(headers).__name__}")
        named += [(f"headers[{d}][{f}]", a) for d, fields in (headers or {}).items() for f, a in fields.items()]
        for what, v in named:
            try:
                lengths[what] = len(v)
            except TypeError:
                self._fail("/", f"{what} must be a sequence of per-event values; found {type(v).__name__}")
        unknown = sorted(set(map(str, present or {})) - set(map(str, data)))
        if unknown:
            self._fail("/", f"present= names detectors that are not in data: {unknown}")
        if scan is not None and not isinstance(scan, dict):
            self._fail(f"/{HEADER}", f"scan= must be a dict {{name: values}}; found {type(scan).__name__}")
        if not lengths or len(set(lengths.values())) != 1:
            self._fail("/", f"every array of a block must hold the same number of events; found {lengths}")
        return next(iter(lengths.values()))

    def _append(self, timestamp, checked: dict, scan: dict, headers: dict) -> None:
        """Buffer one checked event (every check has passed)."""
        schema = self.writer._schema
        for name, frame in checked.items():
            present = self._columns.get(("present", name))
            if present is None and frame is None:  # the first event without data: mask from here on
                present = self._column(("present", name), (), np.dtype(bool))
                present.write_block(np.ones(self.n_events, bool))
            if present is not None:
                present.append(frame is not None)
            if name in schema["area"]:
                shape, dtype = schema["area"][name]
                col = self._column(("area", name), shape, dtype, True)
                col.append(0 if frame is None else frame)
            else:
                for field, (shape, dtype) in schema["side"][name].items():
                    value = 0 if frame is None else frame[field]
                    self._column(("side", name, field), shape, dtype).append(value)
        for name, fields in headers.items():
            for field, value in fields.items():
                shape, dtype = schema["headers"][name][field]
                self._column(("header", name, field), shape, dtype).append(value)
        if timestamp is not None:
            self._column(("timestamp",), (), np.dtype(np.uint64)).append(timestamp)
        for name, v in scan.items():
            self._scan.setdefault(name, [v])
            self._column(("scan", name), (), np.asarray(v).dtype).append(v)
        self.n_events += 1
        self.writer._event_written()

    def close(self) -> None:
        """Finish the step: write its buffers (frames, masks, timestamps, scan values); flush."""
        if self._closed:
            return
        w = self.writer
        schema = w._schema
        if schema is None:
            self._fail(f"/step {self.index}", "a step must hold at least one event before the first step with "
                       "data defines the detectors; write events or declare none")
        for name, (shape, dtype) in schema["area"].items():
            self._column(("area", name), shape, dtype, True).flush()
        for name, fields in schema["side"].items():
            for field, (shape, dtype) in fields.items():
                self._column(("side", name, field), shape, dtype).flush()
        for name, fields in schema["headers"].items():
            for field, (shape, dtype) in fields.items():
                self._column(("header", name, field), shape, dtype).flush()
        for key, col in self._columns.items():
            if key[0] == "present":
                col.flush()
        if schema["timestamps"]:
            self._column(("timestamp",), (), np.dtype(np.uint64)).flush()
        for name in schema["scan"]:  # an empty step still gets its (empty) dataset
            self._column(("scan", name), (), np.dtype(np.float64)).flush()
        w._finish_step(self)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.discard()
        return False

    def discard(self) -> None:
        """Drop this unfinished step's data (finished steps are untouched)."""
        f = self.writer._file
        for col in self._columns.values():
            if col.ds is not None and col.h5path in f:
                del f[col.h5path]
        self._closed = True
        self.writer._discard_step(self)


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
    **header
        More ``/ancillaryData`` attributes (``location``, ``experiment``,
        ``runnum``...). ``acquisitionScript``, ``commandLine``, ``date``,
        ``version`` and ``run`` (Unix seconds) are filled in unless given.
    """

    def __init__(self, path, scriptType, *, compression=None, compression_opts=None,  # noqa: N803
                 flush_every: int = 100, flush_seconds: float = 2.0, allow_unknown_script_type: bool = False,
                 overwrite: bool = False, **header):
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
        self._file = f = create_file(self.path, overwrite)
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["NX_class"] = "NXroot"
        g = f.create_group(HEADER)
        for key, value in self.header.items():
            g.attrs[key] = value
        g.attrs["complete"] = False
        g.attrs["stepsComplete"] = 0
        g.attrs.update(writer_identity(self.path))
        g.attrs["openStepEvents"] = -1
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
        group_attrs = {k: v for k, v in {"detType": detType, "gainBitsMask": gainBitsMask, **(attrs or {})}.items()
                       if v is not None}
        check_header(group_attrs, file=self.path)
        fields = {}
        for field, spec in (header_fields or {}).items():
            check_header_field_name(name, field, file=self.path)
            try:
                fshape, fdtype = spec
                fields[field] = (tuple(int(n) for n in fshape), np.dtype(fdtype))
            except (TypeError, ValueError) as exc:
                raise WriterError(f"header_fields[{field!r}] must be (shape, dtype); found {spec!r}",
                                  file=self.path, h5path=f"/{name}/{field}") from exc
            if fields[field][1].kind not in "biuf":
                raise WriterError(f"header field {field!r} must be numeric; found {fields[field][1]}",
                                  file=self.path, h5path=f"/{name}/{field}")
        constants = {}
        for ctype, value in (calib or {}).items():
            check_field_name(f"{name}/calib", ctype, file=self.path)
            array, meta = value if isinstance(value, tuple) else (value, {})
            constants[ctype] = (check_numeric_array(array, f"calibration constant {ctype}", file=self.path,
                                                    h5path=f"/{name}/calib/{ctype}"), check_header(meta, file=self.path))
        try:
            shape = None if shape is None else tuple(int(n) for n in shape)
            dtype = None if dtype is None else np.dtype(dtype)
        except (TypeError, ValueError) as exc:
            raise WriterError(f"shape must be a sequence of ints and dtype a numpy dtype: {exc}",
                              file=self.path, h5path=f"/{name}") from exc
        if shape is not None and len(shape) == 2:
            shape = (1, *shape)
        if (shape is not None and (len(shape) != 3 or min(shape) < 1)) or (dtype is not None and dtype.kind not in "biuf"):
            raise WriterError(f"a declared frame must be [module, row, col] (or 2-D for one module) of a numeric "
                              f"dtype; found shape {shape} dtype {dtype}", file=self.path, h5path=f"/{name}")
        if geometry is not None:
            from calibsuite_h5source.geometry.source import prepare_geometry
            geometry = prepare_geometry(geometry, shape, file=self.path, h5path=f"/{name}/calib/geometry")
        g = self._file.require_group(name)
        g.attrs.update(group_attrs)
        if geometry is not None:
            g.create_dataset("calib/geometry", data=geometry[0], dtype=h5py.string_dtype()).attrs.update(geometry[1])
        for ctype, (array, meta) in constants.items():
            g.create_dataset(f"calib/{ctype}", data=array).attrs.update(meta)
        self._detectors[name] = {"shape": shape, "dtype": dtype, "headers": fields}

    def _learn_headers(self, area: dict, headers) -> dict:
        """Header-field schema: declared with ``w.detector(header_fields=...)``, else the first event's."""
        if headers is not None and not isinstance(headers, dict):
            raise WriterError(f"headers must be {{detector: {{field: value}}}}; found {type(headers).__name__}",
                              file=self.path)
        out = {name: dict(d["headers"]) for name, d in self._detectors.items() if d.get("headers") and name in area}
        for name, fields in (headers or {}).items():
            if name not in area:
                raise WriterError(f"headers are for area detectors of the event; {name!r} is not one "
                                  f"(area detectors: {sorted(area)})", file=self.path, h5path=f"/{name}")
            if name in out:
                continue
            if not isinstance(fields, dict) or not fields:
                raise WriterError(f"headers[{name!r}] must be a non-empty {{field: value}} dict; found {fields!r}",
                                  file=self.path, h5path=f"/{name}")
            for field, value in fields.items():
                check_header_field_name(name, field, file=self.path)
                arr = check_numeric_array(value, f"header field {field!r}", file=self.path, h5path=f"/{name}/{field}")
                out.setdefault(name, {})[field] = (arr.shape, arr.dtype)
        return out

    def _propose_schema(self, data: dict, has_timestamps: bool, scan, headers, step_scan: dict) -> dict:
        """The run's schema as the first event defines it; checked, nothing written (see :meth:`_adopt_schema`)."""
        area, side = {}, {}
        for name, value in data.items():
            check_source_name(name, file=self.path)
            if isinstance(value, dict):
                if not value:
                    raise WriterError("side data must hold at least one field", file=self.path, h5path=f"/{name}")
                side[name] = {}
                for f, v in value.items():
                    check_field_name(name, f, file=self.path)
                    arr = check_numeric_array(v, f"side data {name}.{f}", file=self.path, h5path=f"/{name}/{f}")
                    side[name][f] = (arr.shape, arr.dtype)
            else:
                declared = self._detectors.get(name, {})
                if value is None:
                    if declared.get("shape") is None:
                        raise WriterError(f"the first event holds no data for {name}, so its frame shape is unknown; "
                                          f"declare it with w.detector({name!r}, shape=..., dtype=...)",
                                          file=self.path, h5path=f"/{name}")
                    area[name] = (declared["shape"], declared["dtype"] or np.dtype(np.uint16))
                else:
                    frame = self._as_frame(name, value)
                    area[name] = (frame.shape, frame.dtype)
        if not area and not side:
            raise WriterError("an event must hold at least one detector or side-data source", file=self.path)
        if scan is not None and not isinstance(scan, dict):
            raise WriterError(f"scan= must be a dict {{name: value}}; found {type(scan).__name__}",
                              file=self.path, h5path=f"/{HEADER}")
        for name in scan or {}:
            check_scan_name(name, file=self.path)
            if name == "step_docstring" or name in step_scan:
                raise WriterError(f"{name!r} cannot be a per-event scan variable: it is "
                                  f"{'a per-step value of this run' if name in step_scan else 'one str per step'}",
                                  file=self.path, h5path=f"/{HEADER}/{name}")
        return {"area": area, "side": side, "sources": set(area) | set(side), "timestamps": has_timestamps,
                "scan": set(scan or {}),
                "headers": self._learn_headers(area, headers)}

    def _adopt_schema(self, schema: dict) -> None:
        """Fix the run's schema at its first accepted event (no-op afterwards)."""
        if self._schema is not None:
            return
        self._schema = schema
        for name in schema["area"]:
            g = self._file.require_group(name)
            g.attrs.update({"NX_class": "NXdata", "signal": "0"})
        self._file.attrs["default"] = next(iter(schema["area"]), next(iter(schema["side"]), ""))

    def _as_frame(self, name, value) -> np.ndarray:
        frame = check_numeric_array(value, f"a frame of {name}", file=self.path, h5path=f"/{name}")
        if frame.ndim == 2:
            frame = frame[None]
        if frame.ndim != 3:
            raise WriterError(f"a frame must be [module, row, col] (or 2-D for one module); found shape {frame.shape}",
                              file=self.path, h5path=f"/{name}")
        return frame

    def _check_frame(self, schema, name, value, h5path) -> np.ndarray:
        frame = self._as_frame(name, value)
        shape, dtype = schema["area"][name]
        if frame.shape != shape or frame.dtype != dtype:
            raise WriterError(f"every frame of {name} must match its first: expected {shape} {dtype}, "
                              f"found {frame.shape} {frame.dtype}", file=self.path, h5path=h5path)
        return frame

    def _check_field(self, schema, name, field, value):
        return self._check_value(f"/{name}/{field}", schema["side"][name][field], value)

    def _check_value(self, h5path, expected, value, kind="side data"):
        what = h5path.lstrip("/").replace("/", ".")
        arr = check_numeric_array(value, f"{kind} {what}", file=self.path, h5path=h5path)
        shape, dtype = expected
        if (arr.dtype != dtype and arr.dtype.kind in "biu" and dtype.kind in "iu" and arr.size
                and np.iinfo(dtype).min <= arr.min() and arr.max() <= np.iinfo(dtype).max):
            arr = arr.astype(dtype)  # integers that fit, e.g. frameNo=7 for a uint32 field
        if arr.shape != shape or (arr.dtype != dtype and not np.can_cast(arr.dtype, dtype, "same_kind")):
            raise WriterError(f"every value of {what} must match its first: expected {shape} {dtype}, "
                              f"found {arr.shape} {arr.dtype}", file=self.path, h5path=h5path)
        return arr

    def _create(self, h5path, shape, dtype, compress, block) -> h5py.Dataset:
        """A per-step dataset ``[n, *shape]``, resizable along n, holding ``block`` (its first n events)."""
        kwargs = self._compression if compress else {}
        chunks = (1, *shape) if compress else (max(1, 2**16 // max(1, dtype.itemsize * int(np.prod(shape)))), *shape)

        def make():
            return self._file.create_dataset(h5path, data=block, maxshape=(None, *shape), chunks=chunks, **kwargs)

        return self._maker.create((tuple(shape), dtype.str, compress), h5path, block, True, make)

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
        if self._scan_names is not None and names != self._scan_names:
            raise WriterError(f"every step must give the same per-step scan values; step 0 gave {self._scan_names}, "
                              f"step {self.n_steps} gives {names}", file=self.path, h5path=f"/{HEADER}")
        self._open_step = StepWriter(self, self.n_steps, values)
        for name, value in values.items():  # written now, so that the step's first flush carries them
            self._append_per_step(name, value, h5py.string_dtype() if isinstance(value, str) else np.float64)
        # A live reader sees the step (and its scan values) from its first flush on (flush_every events,
        # flush_seconds, or its end), which sets openStepEvents: no flush here, which would cost every
        # step of a scan a third flush.
        return self._open_step

    def _append_per_step(self, name: str, value, dtype, chunk: int = 256) -> None:
        """Write step ``n_steps``'s entry of the per-step dataset ``/ancillaryData/<name>`` (made on first use)."""
        column = self._per_step.get(name)
        if column is None:
            g = self._header_group
            if name not in g:
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk,))
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

    def _discard_step(self, step: StepWriter) -> None:
        """Forget a discarded step: its per-step scan values go, a live reader no longer sees it."""
        g = self._header_group
        for name in step.scan_values:
            if name in g:
                g[name].resize(self.n_steps, axis=0)
        self._counters["openStepEvents"] = -1
        g.attrs["stepsDiscarded"] = int(g.attrs.get("stepsDiscarded", 0)) + 1
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
        self._append_per_step("nEvents", step.n_events, np.int64, chunk=1024)
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
