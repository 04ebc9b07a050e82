"""The file format's names and numbers, in one place (``docs/format.rst``).

Everything that reads, writes, validates, summarises, converts or fakes a run
file takes these names from here: the header group, the names the format
reserves, the attributes only the writer may set, the step naming rule, the
event-code count and the HDF5 filter ids.
"""

from __future__ import annotations

import re

#: Version written to the root attribute ``format_version``.
FORMAT_VERSION = "1.0"

#: The run header group: ``/ancillaryData``.
HEADER = "ancillaryData"

#: Root members that are not detectors.
RESERVED_ROOT = frozenset({HEADER, "timestamp", "nEvents"})
#: Members of a detector group that are not data fields.
RESERVED_DETECTOR = frozenset({"present", "calib", "nEvents"})
#: Names a writer may not give a detector or side-data source (psana's DAQ scan detectors too).
RESERVED_SOURCE = RESERVED_ROOT | {"step_value", "step_docstring"}
#: Names a writer may not give a scan variable.
RESERVED_SCAN = frozenset({"nEvents"})

#: Header attributes that tell a reader how far the writer got (``complete``,
#: ``stepsComplete``; ``error`` after an unclean close).
WRITER_COUNTERS = ("complete", "stepsComplete", "error")
#: Header attributes that a live reader uses to follow the writer.
LIVE_ATTRS = ("openStepEvents", "stepsDiscarded", "writerHost", "writerPid", "writerLock")
#: Every header attribute the writer owns: a caller may not pass them, and a
#: run's user-visible header (runDict, ``info`` without ``--verbose``) leaves them out.
WRITER_OWNED = frozenset(WRITER_COUNTERS + LIVE_ATTRS)

#: Length of the ``timing/eventcodes`` row: psana's ``eventcodes(evt)`` list.
N_EVENTCODES = 288

#: HDF5 filter ids of the compressions the format allows.
GZIP, SHUFFLE, LZF = 1, 2, 32000
BLOSC, LZ4, BITSHUFFLE, ZSTD = 32001, 32004, 32008, 32015
#: Filter id -> the name ``RunWriter(compression=...)`` and ``info`` use.
FILTER_NAMES = {GZIP: "gzip", SHUFFLE: "shuffle", LZF: "lzf", BLOSC: "blosc", LZ4: "lz4",
                BITSHUFFLE: "bitshuffle", ZSTD: "zstd"}

_STEP_RE = re.compile(r"^(?:step_?)?(\d+)$")


def step_number(name: str) -> int | None:
    """Return the step number of a member named ``3``, ``step3`` or ``step_3``; else None."""
    if name.isdigit() and name.isascii():  # the canonical layout's names: no regex
        return int(name)
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def step_name(step: int) -> str:
    """Return the canonical layout's member name of step ``step``: ``'0'``, ``'1'``..."""
    return str(int(step))
