"""Build a larger xtc2 run from psana's epix sample by repeating its L1Accept datagrams.

    python benchmarks/make_big_xtc2.py OUT.xtc2 --events 1000 [--source ../shared/data/xtc2/test_epix_calib.xtc2]

An LCLS-II datagram starts with a 24-byte header: timestamp (u64: seconds
<< 32 | ns), env (u32; the transition id in bits 24-27, 12 = L1Accept) and
the top Xtc (src u32, damage u16, contains u16, extent u32); the whole
datagram is ``12 + extent`` bytes. The transitions before the first
L1Accept are copied as they are; the L1Accepts are cycled with timestamps
1 ms apart, then any transitions after them, with later timestamps. Write the
result outside the repository (it is ~1 GB for 1000 epixquad events).
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

HEADER = struct.Struct("<QIIHHI")
L1ACCEPT = 12


def datagrams(data: bytes):
    """Yield ``(service, timestamp, bytes)`` of every datagram."""
    off = 0
    while off < len(data):
        ts, env, _src, _damage, _contains, extent = HEADER.unpack_from(data, off)
        size = 12 + extent
        if size < HEADER.size or off + size > len(data):
            raise ValueError(f"datagram at byte {off} claims {size} bytes: not an xtc2 file or truncated")
        yield (env >> 24) & 0xF, ts, data[off:off + size]
        off += size


def with_timestamp(dgram: bytes, ts: int) -> bytes:
    return struct.pack("<Q", ts) + dgram[8:]


def amplify(source: Path, out: Path, events: int) -> int:
    dgrams = list(datagrams(source.read_bytes()))
    first_l1 = next(i for i, d in enumerate(dgrams) if d[0] == L1ACCEPT)
    l1 = [d for d in dgrams if d[0] == L1ACCEPT]
    after = [d for d in dgrams[first_l1:] if d[0] != L1ACCEPT]
    ts = l1[0][1]
    with open(out, "wb") as fh:
        for _service, _ts, raw in dgrams[:first_l1]:
            fh.write(raw)
        for i in range(events):
            ns = (ts & 0xFFFFFFFF) + 1_000_000
            ts = (((ts >> 32) + ns // 1_000_000_000) << 32) | (ns % 1_000_000_000)
            fh.write(with_timestamp(l1[i % len(l1)][2], ts))
        for _service, _ts, raw in after:
            ts += 1
            fh.write(with_timestamp(raw, ts))
    return events


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared/data/xtc2/test_epix_calib.xtc2"))
    args = p.parse_args(argv)
    amplify(Path(args.source), Path(args.out), args.events)
    print(f"wrote {args.out}: {args.events} L1Accepts")


if __name__ == "__main__":
    main()
