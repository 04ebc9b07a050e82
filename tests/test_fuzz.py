"""Seeded corruption fuzz: every corrupted run reads to the original data or raises an H5SourceError.

Each case copies one of a few small runs and flips bytes, truncates it, or
zeroes a byte range, then reads everything the reader serves (header values,
scan values, every event's timestamp, raw, calib and side data) in a child
process with a time limit (:func:`calibsuite_h5source.tools.isolate.run_isolated`),
and validates it. Outcomes:

* ``correct``: the same observation as the intact run;
* ``H5SourceError``: refused with one of the package's errors;
* ``changed``: different values without an error. HDF5 cannot see a changed
  byte where it keeps no checksum, so this is allowed only for the runs
  written without checksums (``checked=False``); see docs/upstream-faults.rst.
  In a checked run one corruption is undetectable too: a chunk zeroed
  together with its fletcher32 checksum (the checksum of zeros is 0); such
  a case is counted as ``changed (zeroed chunk and checksum)`` and allowed;
* ``other``: any other exception (always a failure);
* ``crash`` / ``hang``: the reading process died or stopped progressing. A
  failure unless validate names a known upstream fault for that file.

validate must end on every case without an internal error (no traceback).

CI runs ``CALIBSUITE_FUZZ_CASES`` cases (default 100, about a minute on a
busy machine). By hand: ``CALIBSUITE_FUZZ_CASES=3000 python tests/test_fuzz.py``
prints the figures.
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from calibsuite_h5source import DataSource, H5SourceError, RunWriter
from calibsuite_h5source.format import timestamps as T
from calibsuite_h5source.tools.isolate import run_isolated
from calibsuite_h5source.tools.validate import (
    BITSHUFFLE_CRASH,
    GLOBAL_HEAP_LOOP,
    UNREADABLE,
    validate,
)

CASES = int(os.environ.get("CALIBSUITE_FUZZ_CASES", "100"))
SEED = int(os.environ.get("CALIBSUITE_FUZZ_SEED", "20261126"))
TIME_LIMIT = 30.0  # seconds without progress before a case counts as a hang (generous: CI machines are busy)
STEPS = (3, 1, 2)
RUN = 1_700_000_000


def _frames(rng, n):
    return rng.integers(0, 16384, size=(n, 2, 3, 4), dtype=np.uint16)


def write_checked(path, *, compression=None, indexed=False):
    """A canonical run with checksums everywhere: new-format metadata, fletcher32 chunks, fixed-length strings."""
    rng = np.random.default_rng(7)
    opts = dict(fletcher32=True, compression=compression)
    t = T.from_unix(RUN)
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format_version"] = np.bytes_("1.0")
        g = f.create_group("ancillaryData")
        g.attrs.update({"scriptType": np.bytes_("delayScan"), "run": RUN, "ancillaryDataType": np.bytes_("delay")})
        g.create_dataset("delay", data=10.0 * np.arange(1, len(STEPS) + 1), **opts)
        if indexed:
            g.create_dataset("nEvents", data=np.array(STEPS, np.int64), **opts)
        det = f.create_group("epixM")
        det.attrs.update({"detType": np.bytes_("epixm"), "gainBitsMask": 0x3FFF})
        det.create_dataset("calib/pedestals", data=rng.normal(100, 5, (2, 3, 4)).astype(np.float32), **opts)
        for k, n in enumerate(STEPS):
            det.create_dataset(str(k), data=_frames(rng, n), chunks=(1, 2, 3, 4), **opts)
            f.create_dataset(f"wave8/peakAmplitude/{k}", data=rng.random((n, 4), dtype=np.float32), **opts)
            f.create_dataset(f"timestamp/{k}", data=t + np.arange(1, n + 1, dtype=np.uint64) * 1000, **opts)
            t += 1000 * (n + 1)
    return path


def write_plain(path, compression=None):
    """A run from RunWriter (old-format metadata, variable-length strings, no checksums)."""
    rng = np.random.default_rng(8)
    t = T.from_unix(RUN)
    with RunWriter(path, "delayScan", compression=compression, run=RUN, date="2023-11-14T22:13:20+00:00",
                   commandLine="fuzz", acquisitionScript="fuzz", version="fuzz") as w:
        for k, n in enumerate(STEPS):
            with w.step(delay=10.0 * (k + 1)) as s:
                for frame in _frames(rng, n):
                    t += 1000
                    s.event(epixM=frame, wave8={"peakAmplitude": rng.random(4, dtype=np.float32)}, timestamp=t)
    return path


#: name -> (writer, checked): checked runs must never change silently
RUNS = {
    "checked_canonical.h5": (lambda p: write_checked(p), True),
    "checked_indexed_gzip.h5": (lambda p: write_checked(p, compression="gzip", indexed=True), True),
    "plain_writer.h5": (lambda p: write_plain(p), False),
    "plain_writer_bitshuffle.h5": (lambda p: write_plain(p, compression="bitshuffle"), False),
}


def observe(path, progress=lambda *a: None):
    """Everything the reader serves, hashed per event: ``("data", [...])`` or ``("error", class, message)``."""
    try:
        out = []
        run = next(DataSource(files=str(path)).runs())
        out.append((run.runnum, run.expt, run.timestamp, run.complete, sorted(run.detnames), run.n_steps))
        det, wave8, delay = run.Detector("epixM"), run.Detector("wave8"), run.Detector("delay")
        out.append(sorted((k, np.asarray(v[0]).tobytes()) for k, v in det.calibconst.items()))
        for step in run.steps():
            out.append(("step", step.index, delay(step), run.Detector("step_docstring")(step)))
            for evt in step.events():
                progress(str(path), "reading", f"{step.index}/{evt._i}")
                h = hashlib.sha1()
                for value in (det.raw.raw(evt), det.raw.calib(evt), wave8.raw.peakAmplitude(evt)):
                    h.update(b"none" if value is None else np.ascontiguousarray(value).tobytes())
                out.append((evt.timestamp, h.hexdigest()))
        run._index.close()
        return ("data", out)
    except H5SourceError as exc:
        return ("error", type(exc).__name__, str(exc))
    except Exception as exc:
        import traceback

        return ("other", type(exc).__name__, "".join(traceback.format_exception(exc)))


def chunk_extents(path) -> list[tuple[int, int]]:
    """``(offset, size)`` in the file of every stored chunk."""
    out = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.chunks:
            obj.id.chunk_iter(lambda info: out.append((info.byte_offset, info.size)))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def zeroes_a_whole_chunk(how: str, extents) -> bool:
    """True when the corruption ``how`` zeroed at least one chunk with its checksum."""
    if not how.startswith("zero"):
        return False
    start, length = map(int, how.split()[1].split("+"))
    return any(start <= off and off + size <= start + length for off, size in extents)


def mutate(data: bytes, rng) -> tuple[bytes, str]:
    """One seeded corruption: flip 1-4 bytes, truncate, or zero a range."""
    kind = rng.choice(["flip", "truncate", "zero"], p=[0.6, 0.15, 0.25])
    b = bytearray(data)
    if kind == "flip":
        at = rng.integers(0, len(b), size=rng.integers(1, 5))
        for i in at:
            b[i] ^= int(rng.integers(1, 256))
        return bytes(b), f"flip {sorted(at.tolist())}"
    if kind == "truncate":
        n = int(rng.integers(0, len(b)))
        return bytes(b[:n]), f"truncate {n}"
    start, length = int(rng.integers(0, len(b))), int(rng.integers(1, 513))
    b[start:start + length] = bytes(len(b[start:start + length]))
    return bytes(b), f"zero {start}+{length}"


def run_fuzz(folder: Path, cases: int, seed: int = SEED) -> dict:
    """Run ``cases`` corruptions over :data:`RUNS` in ``folder``; return counts and the failing cases."""
    folder.mkdir(parents=True, exist_ok=True)
    originals = {}
    for name, (write, checked) in RUNS.items():
        path = write(folder / name)
        originals[name] = (Path(path).read_bytes(), observe(path), checked, chunk_extents(path))
        assert originals[name][1][0] == "data", originals[name][1]
    counts, failures = collections.Counter(), []
    names = sorted(RUNS)
    for case in range(cases):
        rng = np.random.default_rng([seed, case])
        name = names[case % len(names)]
        data, truth, checked, extents = originals[name]
        corrupted, how = mutate(data, rng)
        case_dir = folder / f"case{case}"
        case_dir.mkdir()
        path = case_dir / name
        path.write_bytes(corrupted)
        got = run_isolated(observe, (path,), TIME_LIMIT)
        problems = validate(path, timeout=TIME_LIMIT)
        if any(p.message.startswith("the checks failed") or "Traceback" in p.message for p in problems):
            counts["validate traceback"] += 1
            failures.append((case, name, how, "validate", problems))
        if got.status == "done":
            kind = got.result[0]
            if kind == "data":
                outcome = "correct" if got.result == truth else "changed"
                if outcome == "changed" and checked and zeroes_a_whole_chunk(how, extents):
                    outcome = "changed (zeroed chunk and checksum)"
            else:
                outcome = "H5SourceError" if kind == "error" else "other"
        else:
            outcome = "crash" if got.status == "crashed" else "hang" if got.status == "timeout" else "other"
            named = [p for p in problems if p.code == UNREADABLE
                     and (GLOBAL_HEAP_LOOP in p.message or BITSHUFFLE_CRASH in p.message)]
            outcome = f"{outcome} (upstream, named by validate)" if named else f"{outcome} (project)"
        counts[outcome] += 1
        if outcome == "other" or "(project)" in outcome or (outcome == "changed" and checked):
            failures.append((case, name, how, outcome, got.result))
        shutil.rmtree(case_dir)
    return {"cases": cases, "counts": dict(counts), "failures": failures}


@pytest.mark.slow
def test_fuzz_gives_original_data_or_an_h5source_error(tmp_path):
    report = run_fuzz(tmp_path, CASES)
    counts = report["counts"]
    print("\nfuzz:", report["cases"], "cases:", counts)
    assert not report["failures"], report["failures"][:3]
    assert counts.get("correct", 0) and counts.get("H5SourceError", 0)  # the fuzz reached both outcomes


def test_observation_sees_a_changed_value(tmp_path):
    """The oracle is sharp: one changed frame value in an unchecked run is seen as changed data."""
    path = write_plain(tmp_path / "r.h5")
    before = observe(path)
    with h5py.File(path, "a") as f:
        f["epixM/1"][0, 0, 0, 0] ^= 1
    after = observe(path)
    assert before[0] == after[0] == "data" and before != after


def test_checked_run_detects_a_changed_chunk(tmp_path):
    """The checked runs carry checksums: a flipped byte in a frame chunk is an H5SourceError, not new values."""
    path = write_checked(tmp_path / "r.h5")
    with h5py.File(path, "r") as f:
        offset = f["epixM/1"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 3] ^= 0x10
    path.write_bytes(bytes(data))
    result = observe(path)
    assert result[:2] == ("error", "DamagedFileError") and "/epixM/1" in result[2]


if __name__ == "__main__":  # a longer run by hand
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = run_fuzz(Path(tmp), CASES)
    print(f"{report['cases']} cases (seed {SEED}):")
    for outcome, n in sorted(report["counts"].items(), key=lambda kv: -kv[1]):
        print(f"  {outcome:<40} {n}")
    for failure in report["failures"][:20]:
        print("FAILED", failure[:4], str(failure[4])[:2000])
    sys.exit(1 if report["failures"] else 0)
