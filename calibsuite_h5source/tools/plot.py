"""A one-page PNG overview of a run (``calibsuite-h5 plot``).

Panels: one event's frame (``det.raw.image``: placed by the detector's
geometry), the mean frame of a step, events per step, and the scan variable
against step. Frames are ``calib`` by default, labelled in keV when the run
stores ``pedestals`` and ``pixel_gain`` (calib is then energy), in ADU above
pedestal with pedestals only, in ADU without constants; ``raw`` shows the
stored ADU. Needs matplotlib (``pip install 'calibsuite_h5source[plot]'``).
"""

from __future__ import annotations

import numpy as np

from calibsuite_h5source.errors import H5SourceError, MissingDependencyError, UnknownDetectorError
from calibsuite_h5source.tools.isolate import no_progress


def frame_unit(detector, raw: bool) -> str:
    """The unit of ``detector``'s frames: raw ADU, or what ``det.raw.calib`` gives with the run's constants."""
    if raw:
        return "ADU"
    has_pedestals = detector.raw._pedestals() is not None
    if has_pedestals and detector.raw._gain() is not None:
        return "keV"
    return "ADU above pedestal" if has_pedestals else "ADU"


def plot_run(path, out_png, det=None, step=0, event=0, max_mean_events=50, raw=False, progress=no_progress) -> dict:
    """Write an overview PNG of ``path`` to ``out_png``; return what was drawn.

    Parameters
    ----------
    det : str, optional
        Area detector to show (default: the first).
    step, event : int
        The event shown in the first panel; ``step`` also picks the mean frame.
    max_mean_events : int
        Events averaged (streamed) for the step's mean frame.
    raw : bool
        Show raw frames (ADU) instead of ``calib``.
    progress : callable
        ``progress(h5path, activity)``, called as it reads.

    Returns
    -------
    dict
        ``png``, ``detector``, ``unit``, ``title`` and ``colorbar_labels``
        (read back from the drawn figure).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("plot needs matplotlib: pip install 'calibsuite_h5source[plot]'") from exc
    from calibsuite_h5source.psana2.source import H5DataSource

    progress("/", "opening")
    run = next(H5DataSource(files=str(path)).runs())
    names = sorted(run._area)
    if not names:
        raise H5SourceError("the run has no area detector to plot", file=str(path))
    kind, name = run._resolve(det, {"area": run._area}) if det else ("area", names[0])
    if kind != "area":
        raise UnknownDetectorError(f"no area detector {det!r} in this run; area detectors: {names}", file=str(path))
    detector = run.Detector(name)
    steps = list(run.steps())
    if not 0 <= step < len(steps):
        raise H5SourceError(f"step {step} does not exist; the run has {len(steps)} steps", file=str(path))
    the_step = steps[step]
    evt = the_step.event(event)
    if evt is None:
        raise H5SourceError(f"step {step} has no event {event}; it has {the_step.n_events}", file=str(path))

    def image(e):
        return detector.raw.image(e, nda=detector.raw.raw(e)) if raw else detector.raw.image(e)

    progress(f"/{name}/{step}", "reading an event of")
    frame = image(evt)
    total, n = None, 0
    for i in range(min(the_step.n_events, max_mean_events)):
        progress(f"/{name}/{step}", "averaging the events of", str(i))
        img = image(the_step.event(i))
        if img is not None:
            total = img.astype(np.float64) if total is None else total + img
            n += 1
    counts = [s.n_events for s in steps]
    scan_names = [k for k in run._index.scan] or ["step_value"]
    scan = [run.Detector(scan_names[0])(s) for s in steps]
    unit = frame_unit(detector, raw)
    what = "raw" if raw else "calib"

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    title = f"run {run.runnum}, step {step}, event {event}, {name} ({what}, {unit})"
    fig.suptitle(f"{title}\n{path}: {run._index.script_type}, {len(steps)} steps, {sum(counts)} events",
                 fontsize=10)
    colorbars = []
    for ax, img, label in ((axes[0, 0], frame, f"{name} {what}: run {run.runnum}, step {step}, event {event}"),
                           (axes[0, 1], None if total is None else total / n,
                            f"{name} {what}: step {step}, mean of {n} events")):
        if img is None:
            ax.text(0.5, 0.5, "no data", ha="center", va="center")
        else:
            lo, hi = np.percentile(img, [1, 99])
            im = ax.imshow(img, vmin=lo, vmax=hi, cmap="viridis", interpolation="nearest")
            colorbars.append(fig.colorbar(im, ax=ax, fraction=0.046, label=unit))
        ax.set_title(label, fontsize=9)
    axes[1, 0].bar(range(len(counts)), counts, color="tab:blue")
    axes[1, 0].set(xlabel="step", ylabel="events", title="events per step")
    axes[1, 1].plot(range(len(scan)), scan, "o-", color="tab:orange")
    axes[1, 1].set(xlabel="step", ylabel=scan_names[0], title=f"{scan_names[0]} per step")
    fig.tight_layout()
    progress("/", "drawing")
    fig.savefig(out_png, dpi=80)
    drawn = {"png": str(out_png), "detector": name, "unit": unit, "title": fig._suptitle.get_text(),
             "colorbar_labels": [cb.ax.get_ylabel() for cb in colorbars]}
    plt.close(fig)
    return drawn
