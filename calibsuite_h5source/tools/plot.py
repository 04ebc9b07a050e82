"""A one-page PNG overview of a run (``calibsuite-h5 plot``).

Panels: one event's frame (``det.raw.image``: placed by the detector's geometry), the
mean frame of a step, events per step, and the scan variable against step.
Needs matplotlib (``pip install 'calibsuite_h5source[plot]'``).
"""

from __future__ import annotations

import numpy as np

from calibsuite_h5source.errors import H5SourceError, MissingDependencyError


def plot_run(path, out_png, det=None, step=0, event=0, max_mean_events=50) -> str:
    """Write an overview PNG of ``path`` to ``out_png``; return its path.

    Parameters
    ----------
    det : str, optional
        Detector to show (default: the first area detector).
    step, event : int
        The event shown in the first panel; ``step`` also picks the mean frame.
    max_mean_events : int
        Events averaged (streamed) for the step's mean frame.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("plot needs matplotlib: pip install 'calibsuite_h5source[plot]'") from exc
    from calibsuite_h5source.psana2.source import H5DataSource

    run = next(H5DataSource(files=str(path)).runs())
    names = sorted(run._area)
    if not names:
        raise H5SourceError("the run has no area detector to plot", file=str(path))
    name = det or names[0]
    detector = run.Detector(name)
    steps = list(run.steps())
    if not 0 <= step < len(steps):
        raise H5SourceError(f"step {step} does not exist; the run has {len(steps)} steps", file=str(path))
    the_step = steps[step]
    evt = the_step.event(event)
    if evt is None:
        raise H5SourceError(f"step {step} has no event {event}; it has {the_step.n_events}", file=str(path))
    frame = detector.raw.image(evt)
    total, n = None, 0
    for i in range(min(the_step.n_events, max_mean_events)):
        img = detector.raw.image(the_step.event(i))
        if img is not None:
            total = img.astype(np.float64) if total is None else total + img
            n += 1
    counts = [s.n_events for s in steps]
    scan_names = [k for k in run._index.scan] or ["step_value"]
    scan = [run.Detector(scan_names[0])(s) for s in steps]

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    title = f"{path}\n{run._index.script_type}, {len(steps)} steps, {sum(counts)} events"
    fig.suptitle(title, fontsize=10)
    for ax, img, label in ((axes[0, 0], frame, f"{name}: step {step} event {event} (calib)"),
                           (axes[0, 1], None if total is None else total / n, f"{name}: step {step} mean of {n} events")):
        if img is None:
            ax.text(0.5, 0.5, "no data", ha="center", va="center")
        else:
            lo, hi = np.percentile(img, [1, 99])
            im = ax.imshow(img, vmin=lo, vmax=hi, cmap="viridis", interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, label="ADU")
        ax.set_title(label, fontsize=9)
    axes[1, 0].bar(range(len(counts)), counts, color="tab:blue")
    axes[1, 0].set(xlabel="step", ylabel="events", title="events per step")
    axes[1, 1].plot(range(len(scan)), scan, "o-", color="tab:orange")
    axes[1, 1].set(xlabel="step", ylabel=scan_names[0], title=f"{scan_names[0]} per step")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return str(out_png)
