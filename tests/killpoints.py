"""Every state a killed writer can leave on disk, from one traced run (used by test_writer_crash.py).

A process killed (SIGKILL) as it enters its Nth ``pwrite64`` leaves a file
holding exactly its first N-1 writes: the page cache keeps what was written,
nothing else reaches the file. ``strace`` records one whole run (every
``pwrite64`` and ``ftruncate`` on the run file with its bytes, and what the
process printed in between); :func:`states` then rebuilds the file a kill
before any chosen write leaves, without running the writer again. One traced
run of a 1000-step writer gives all of its ~30,000 kill points in seconds;
the slow alternative (``strace -e inject=pwrite64:signal=KILL:when=N``, one
run per kill point) checks this one against real kills
(``test_writer_crash.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

STRACE = shutil.which("strace")
_CALL = re.compile(r'^(\w+)\((.*)\)\s+=\s+(-?\d+)')
_OPEN = re.compile(r'^AT_FDCWD, "((?:\\x[0-9a-f]{2})*)", ([A-Z_|]+)')
_PWRITE = re.compile(r'^(\d+), "((?:\\x[0-9a-f]{2})*)", (\d+), (\d+)$')
_FTRUNC = re.compile(r'^(\d+), (\d+)$')


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace("\\x", ""))


@dataclass
class Trace:
    """One traced writer run: its file operations in order, and what it had printed before each."""

    ops: list  # ("w", offset, data) | ("t", length)
    printed: list  # printed[i]: stdout text written before ops[i]
    stdout: str
    returncode: int
    stderr: str = ""

    @property
    def n_writes(self) -> int:
        return sum(op[0] == "w" for op in self.ops)


def trace(argv: list[str], path: str, timeout: float = 600) -> Trace:
    """Run ``argv`` (a writer making ``path``) under strace; return its :class:`Trace`."""
    log = f"{path}.strace"
    cmd = [STRACE, "-qq", "-o", log, "-e", "trace=openat,close,pwrite64,ftruncate,write", "-s", str(2**28), "-xx",
           *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    target = os.path.realpath(path).encode()
    fds, ops, printed, out = set(), [], [], []
    with open(log) as lines:
        for line in lines:
            m = _CALL.match(line)
            if not m:
                continue
            call, args, ret = m.group(1), m.group(2), int(m.group(3))
            if call == "openat":
                o = _OPEN.match(args)
                if o and ret >= 0 and "O_RDWR" in o.group(2) and os.path.realpath(_hex(o.group(1))) == target:
                    fds.add(ret)
            elif call == "close":
                fds.discard(int(args))
            elif call == "write" and args.startswith("1, "):
                out.append(_hex(args.split('"')[1]).decode())
            elif call == "pwrite64":
                w = _PWRITE.match(args)
                if w and int(w.group(1)) in fds:
                    data = _hex(w.group(2))
                    assert len(data) == int(w.group(3)) == ret, f"short or cut pwrite64 in the trace: {line[:200]}"
                    ops.append(("w", int(w.group(4)), data))
                    printed.append("".join(out))
            elif call == "ftruncate":
                t = _FTRUNC.match(args)
                if t and int(t.group(1)) in fds:
                    ops.append(("t", int(t.group(2))))
                    printed.append("".join(out))
    os.unlink(log)
    return Trace(ops, printed, "".join(out), proc.returncode, proc.stderr)


def states(tr: Trace, kill_before, out_path: str):
    """For each n of ``kill_before`` (1-based write numbers): make ``out_path`` the file a kill before
    write n leaves and yield ``(n, printed_before_n)``. The file is brought from one state to the next
    by applying only the writes between them (the caller must not change it)."""
    with open(out_path, "wb"):
        pass
    done, writes = 0, 0
    for n in sorted(kill_before):
        with open(out_path, "r+b") as f:
            while done < len(tr.ops):
                op = tr.ops[done]
                if op[0] == "w" and writes + 1 == n:
                    break
                if op[0] == "w":
                    os.pwrite(f.fileno(), op[2], op[1])
                    writes += 1
                else:
                    os.ftruncate(f.fileno(), op[1])
                done += 1
        if done == len(tr.ops):
            return
        yield n, tr.printed[done]


def python_argv(code: str, *args: str) -> list[str]:
    """``python -c code args``, able to import this module."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r})\n{code}", *args]


# -- the writer traced, and what is checked in every state it leaves ----------------------------------

#: A run of ``argv[2]`` steps (3 + k % 7 events each, every value telling its step and event), flushed
#: every ``argv[3]`` events, ended by ``argv[4]``: ``clean`` (complete), ``error`` (an exception after
#: the last step: the writer closes writing ``error``), ``discard`` (clean, but every step k with
#: k % 9 == 4 is first tried and discarded after 5 events, so a flush follows each discard).
#: ``argv[5] == 'gaps'`` (optional) adds what happens after the first confirmed steps: events without
#: data (:func:`epix_missing`, :func:`wave8_missing`) and a ``step_docstring`` per step
#: (:func:`docstring`) that outgrows HDF5's first global heap collection.
LOOPER = """
import sys
import numpy as np
from calibsuite_h5source import RunWriter
from killpoints import docstring, epix_missing, wave8_missing
path, n_steps, flush_every, ending = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
gaps = sys.argv[5:] == ['gaps']
try:
    with RunWriter(path, 'delayScan', flush_every=flush_every) as w:
        for k in range(n_steps):
            extra = {'step_docstring': docstring(k)} if gaps else {}
            if ending == 'discard' and k % 9 == 4:
                try:
                    with w.step(delay=-1.0, **({'step_docstring': 'discarded ' * 30} if gaps else {})) as s:
                        for i in range(5):
                            s.event(epixM=np.full((2, 16, 16), 7, np.uint16), wave8={'amp': -1.0},
                                    timestamp=(1 << 60) + 1000 * k + 500 + i)
                        raise KeyError('discard')
                except KeyError:
                    pass
            with w.step(delay=float(k), **extra) as s:
                for i in range(3 + k % 7):
                    frame = np.full((2, 16, 16), (1000 * k + i) % 65536, np.uint16)
                    s.event(epixM=None if gaps and epix_missing(k, i) else frame,
                            wave8=None if gaps and wave8_missing(k, i) else {'amp': float(k) + i / 100},
                            timestamp=(1 << 60) + 1000 * k + i)
            print('closed', k, flush=True)    # the step is confirmed: it must survive any kill from now on
        if ending == 'error':
            raise RuntimeError('DAQ died')
except RuntimeError:
    pass
"""


def epix_missing(k: int, i: int) -> bool:
    """The looper's epixM has no data at event i of step k (never in steps 0 and 1)."""
    return k >= 2 and (7 * k + i) % 11 == 5


def wave8_missing(k: int, i: int) -> bool:
    """The looper's wave8 has no data at event i of step k (never in steps 0 to 2)."""
    return k >= 3 and (5 * k + i) % 13 == 6


def docstring(k: int) -> str:
    """Step k's ``step_docstring`` in a ``gaps`` run: 100 to 500 characters, telling its step."""
    return f'{{"step": {k}, "pad": "{"x" * (100 + 37 * k % 400)}"}}'


def on_disk(path, confirmed, gaps=False):
    """The confirmed steps as plain h5py reads them (the writer's part of the guarantee); None when whole."""
    import h5py

    if confirmed == 0:
        return None
    try:
        with h5py.File(path, "r") as f:
            for k in range(confirmed):
                m = 3 + k % 7
                frames = f[f"epixM/{k}"][()]
                assert f["ancillaryData/nEvents"][k] == m and f["ancillaryData/delay"][k] == k
                assert frames.shape == (m, 2, 16, 16)
                epix = [not (gaps and epix_missing(k, i)) for i in range(m)]
                wave8 = [not (gaps and wave8_missing(k, i)) for i in range(m)]
                assert [int(fr.flat[0]) for fr, p in zip(frames, epix, strict=True) if p] == [
                    (1000 * k + i) % 65536 for i in range(m) if epix[i]]
                assert f[f"timestamp/{k}"][()].tolist() == [(1 << 60) + 1000 * k + i for i in range(m)]
                amps = f[f"wave8/amp/{k}"][()].tolist()
                assert [a for a, p in zip(amps, wave8, strict=True) if p] == [float(k) + i / 100 for i in range(m) if wave8[i]]
                for name, mask in (("epixM", epix), ("wave8", wave8)):
                    if not all(mask):
                        assert f[f"{name}/present/{k}"][()].tolist() == mask
                if gaps:
                    assert f["ancillaryData/step_docstring"][k].decode() == docstring(k)
        return None
    except (OSError, KeyError, AssertionError, RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def read_back(path, gaps=False):
    """Every step the killed file yields, as ``[(delay, docstring, [(frame, amp, ts), ...]), ...]``; or
    the H5SourceError."""
    from calibsuite_h5source import DataSource, H5SourceError

    try:
        run = next(DataSource(files=str(path)).runs())
        det, wave8, delay = run.Detector("epixM"), run.Detector("wave8"), run.Detector("delay")
        doc = run.Detector("step_docstring") if gaps else (lambda step: None)
        return [(delay(step), doc(step), [(det.raw.raw(e), wave8.raw.amp(e), e.timestamp) for e in step.events()])
                for step in run.steps()]
    except H5SourceError as exc:
        return exc


def wrong_steps(steps, gaps=False) -> list:
    """Where the steps the reader yields are not whole and right (empty when they all are)."""
    import numpy as np

    bad = []
    for k, (value, doc, events) in enumerate(steps):
        if value != float(k) or len(events) != 3 + k % 7 or doc != (docstring(k) if gaps else None):
            bad.append(f"step {k}: delay {value}, {len(events)} events, docstring {str(doc)[:20]}")
            continue
        for i, (frame, amp, ts) in enumerate(events):
            frame_ok = (frame is None if gaps and epix_missing(k, i) else
                        frame is not None and frame.shape == (2, 16, 16) and np.all(frame == (1000 * k + i) % 65536))
            amp_ok = amp is None if gaps and wave8_missing(k, i) else amp == float(k) + i / 100
            if not (frame_ok and amp_ok and ts == (1 << 60) + 1000 * k + i):
                bad.append(f"step {k} event {i}")
    return bad


@dataclass
class Outcome:
    """What a kill before write ``n`` left: ``confirmed`` steps, problems on disk and in the reader."""

    n: int
    confirmed: int
    on_disk: str | None  # plain h5py could not read a confirmed step whole (None: all whole)
    read: int | None  # steps the reader yielded (None: it refused the file)
    refused: str | None  # the reader's H5SourceError, when it refused a file with confirmed steps
    wrong: list  # steps/events the reader served wrong

    @property
    def lost(self) -> int:
        """Confirmed steps not readable (on disk or through the reader)."""
        if self.on_disk is not None or self.read is None:
            return self.confirmed
        return max(0, self.confirmed - self.read)


def check_state(path, n: int, printed: str, gaps: bool = False) -> Outcome:
    confirmed = printed.count("closed")
    disk = on_disk(path, confirmed, gaps)
    steps = read_back(path, gaps) if confirmed else []
    if isinstance(steps, Exception):
        return Outcome(n, confirmed, disk, None, f"{type(steps).__name__}: {steps}", [])
    return Outcome(n, confirmed, disk, len(steps), None, wrong_steps(steps, gaps))


def run_kills(workdir, n_steps: int, flush_every: int, ending: str, kill_before=None, seed=None,
              samples: int | None = None, gaps: bool = False):
    """Trace one looper run and check the state a kill before each chosen write leaves.

    ``kill_before``: the write numbers (default: every write; or ``samples`` of them drawn with
    ``seed``); ``gaps``: the looper's ``gaps`` run. Returns ``(trace, [Outcome, ...])``.
    """
    import random

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"run{n_steps}_{flush_every}_{ending}{'_gaps' * gaps}.h5")
    if os.path.exists(path):
        os.unlink(path)
    tr = trace(python_argv(LOOPER, path, str(n_steps), str(flush_every), ending, *["gaps"] * gaps), path)
    if tr.returncode != 0:
        raise RuntimeError(f"the traced writer failed ({tr.returncode}); stderr {tr.stderr[-800:]!r}")
    points = range(1, tr.n_writes + 1) if kill_before is None else kill_before
    if samples is not None:
        points = sorted(random.Random(seed).sample(range(1, tr.n_writes + 1), min(samples, tr.n_writes)))
    state = os.path.join(workdir, "state.h5")
    return tr, [check_state(state, n, printed, gaps) for n, printed in states(tr, points, state)]
