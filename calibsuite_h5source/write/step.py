"""One step being written by :class:`~calibsuite_h5source.write.writer.RunWriter`: its checks and buffered columns."""

from __future__ import annotations

import logging

import numpy as np

from calibsuite_h5source.errors import WriterError
from calibsuite_h5source.format.constants import (
    HEADER,
    step_name,
)
from calibsuite_h5source.write.rules import (
    check_scan_value,
    check_timestamp,
)
from calibsuite_h5source.write.schema import check_field, check_frame, check_value, propose_schema
from calibsuite_h5source.write.storage import (
    Column,
)

log = logging.getLogger(__name__)



class StepWriter:
    """One step being written; get it from :meth:`RunWriter.step`."""

    def __init__(self, writer, index: int, scan_values: dict):  # writer: the RunWriter
        self.writer = writer
        self.index = index
        self.scan_values = scan_values
        self.n_events = 0
        self._expected_events = 0  # events the step will hold at least, when known (add_events): chunk sizes
        self._columns: dict[tuple, Column] = {}
        self._scan: dict[str, list] = {}  # first per-event scan value of this step (the constancy rule)
        #: the last timestamp taken (of this step, else of the run's confirmed steps): the next must exceed it
        self.last_timestamp = writer.last_timestamp
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
                checked[name] = None if value is None else check_frame(w.path, schema, name, value, f"/{name}/{self.index}")
            elif value is None:  # the source has no data at this event (a beam monitor on a frame event)
                checked[name] = None
            else:
                if not isinstance(value, dict) or set(value) != set(schema["side"][name]):
                    found = sorted(map(str, value)) if isinstance(value, dict) else type(value).__name__
                    self._fail(f"/{name}", f"side data must be a dict with fields {sorted(schema['side'][name])} "
                               f"(or None for an event without data); found {found}")
                checked[name] = {f: check_field(w.path, schema, name, f, v) for f, v in value.items()}
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

    def _check_order(self, timestamps: list) -> int | None:
        """The last of ``timestamps`` (None entries: no timestamps) after checking that each exceeds the one
        before it, in this step and across the run (psana's timestamps identify events: they strictly increase)."""
        last = self.last_timestamp
        for i, t in enumerate(timestamps):
            if t is None:
                continue
            if last is not None and t <= last:
                self._fail(f"/timestamp/{self.index}", f"timestamps must strictly increase; event "
                           f"{self.n_events + i} of step {self.index} has {t}, after {last}")
            last = t
        return last

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
            out[name] = {f: check_value(w.path, f"/{name}/{f}", fields[f], v, "header field") for f, v in given.items()}
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
            def create(path, shape, dtype, block):
                return w._create(path, shape, dtype, compress, block, self._expected_events)

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
        schema = w._schema or propose_schema(w.path, w._detectors, data, timestamp is not None, scan, headers, self.scan_values)
        checked = self._check_event(schema, timestamp, scan, data, headers, {})
        last = self._check_order([checked[0]])
        w._adopt_schema(schema)
        self._append(*checked)
        self.last_timestamp = last

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
        self._expected_events = self.n_events + n
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
            schema = schema or propose_schema(w.path, w._detectors, event, ts is not None, values, head, self.scan_values)
            records.append(self._check_event(schema, ts, values, event, head, block_scan, i))
        last = self._check_order([record[0] for record in records])
        if records:
            w._adopt_schema(schema)
        for record in records:
            self._append(*record)
        self.last_timestamp = last

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
            # A mask from a step's first event without data on; and in step 0 for every source, so that
            # each ``present`` group gets its first link, and its symbol-table node, while no step is
            # confirmed: made after a confirmed step, the node (sized for expected_steps links) was
            # referenced before the file's end address covered it, and a kill in between lost the run
            # (docs/format.rst, "Crash safety").
            if present is None and (frame is None or self.index == 0):
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
            self.discard()  # refused: the writer goes on (a next step, a close), as after any discarded step
            self._fail(f"/step {self.index}", "a step must hold at least one event before the first step with "
                       "data defines the detectors; write events or declare none (the step was discarded)")
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
        w._settle_leftovers(self.n_events)
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
        """Drop this unfinished step's data (finished steps are untouched).

        Its datasets are kept, to be rewritten by the next step (which has the same index), not
        deleted: deleting a link frees its name in the group's heap, which HDF5 then shrinks and
        regrows in two places at once, and a kill between them loses the whole group.
        """
        w = self.writer
        for col in self._columns.values():
            if col.ds is not None:
                w._leftover[col.h5path] = col.ds
        self._closed = True
        w._discard_step(self)
