"""Small runs written the way users write them, shared by the tests of the reader's rules."""

from __future__ import annotations

import numpy as np

from calibsuite_h5source import RunWriter
from calibsuite_h5source.format import timestamps as T


def writer_run(path, counts=(3, 2, 4)) -> str:
    """A run streamed through :class:`RunWriter`: ``counts`` events per step of (1, 2, 2) uint16 epixM frames,
    timestamps 1000 ticks apart. Canonical, with the writer's ``/ancillaryData/nEvents`` index, so the reader
    opens the steps lazily (the first when the run opens, the others when first read)."""
    t = T.from_unix(1_700_000_000)
    with RunWriter(path, "dark") as w:
        for n in counts:
            with w.step() as s:
                for _ in range(n):
                    t += 1000
                    s.event(epixM=np.zeros((1, 2, 2), np.uint16), timestamp=t)
    return str(path)
