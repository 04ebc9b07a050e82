"""Helpers for tests: synthetic runs in any layout, declared runs, a pytest plugin.

``make_synthetic_run(path, steps=(3, 2, 4), detector='epixM')`` writes a
reproducible synthetic run (see :mod:`calibsuite_h5source.synthetic.run`) and returns
its :class:`~calibsuite_h5source.synthetic.run.Truth`; the pytest plugin
(``calibsuite_h5source.testing.plugin``, registered as a ``pytest11`` entry
point) gives tests a ``synthetic_run`` factory fixture writing into
``tmp_path``.
"""

from __future__ import annotations

from calibsuite_h5source.synthetic.run import SyntheticRun, Truth
from calibsuite_h5source.testing.layouts import LAYOUTS, declare_run, write_layout

__all__ = ["make_synthetic_run", "declare_run", "write_layout", "LAYOUTS"]


def make_synthetic_run(path, steps=(3, 2, 4), detector="epixM", shape=None, layout="canonical",
                       run_type="dark", seed=0, compression=None, **kwargs) -> Truth:
    """Write a synthetic run to ``path`` and return what was put in it.

    Parameters
    ----------
    path : str or path
        File to write (replaced if it exists).
    steps : sequence of int
        Events in each step.
    detector : str
        A suite detector (``epixM``, ``epix10k``, ``jungfrau``...).
    shape : tuple, optional
        Per-event ``(module, row, col)``; small shapes keep tests fast.
    layout : str
        ``'canonical'`` (streamed through RunWriter), ``'padded'``,
        ``'stepgroups'`` or ``'legacy'`` (see docs/format.rst).
    run_type : str
        ``dark``, ``pedestal``, ``fe55``, ``lowFlux``, ``linearity``,
        ``intensityScan``, ``delayScan``, ``misc``.
    seed : int
        Seed of everything; the same arguments give the same file content.
    compression : str, optional
        Frame compression (canonical layout).
    **kwargs
        More :class:`~calibsuite_h5source.synthetic.run.SyntheticRun` options:
        ``timing=True`` (MFX event codes and beam-monitor events),
        ``flux_monitor``, ``flux_sign``, ``flux``, ``scan_values``,
        ``occupancy``, ``photon_energy``, ``clusters``, ``constants``...
        Calibration constants are written in the canonical layout only, and
        ``timing=True`` runs (monitor events without a frame) need it.

    Examples
    --------
    A linearity scan as at MFX, read by the suite's flux pairing::

        truth = make_synthetic_run('lin.h5', steps=(50, 50), shape=(4, 32, 32), run_type='linearity',
                                   timing=True, scan_values=[1.0, 4.0])
    """
    run = SyntheticRun(run_type=run_type, detector=detector, events=list(steps), seed=seed, shape=shape, **kwargs)
    if layout == "canonical":
        return run.write(path, compression=compression, overwrite=True)
    decl = run.declaration()
    if "present" in decl:  # only the canonical layout can mark the monitor events that hold no frame
        raise ValueError(f"the {layout!r} layout cannot mark events without a frame (timing=True runs); "
                         "use layout='canonical'")
    if layout == "legacy":
        decl.pop("timestamps")
        decl.pop("side")
    write_layout(path, decl, layout)
    return run.truth
