"""``calibsuite-h5 demo``: write a synthetic epixM scan run and analyse it like a suite script (see DESCRIPTION)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from calibsuite_h5source.cli import UsageError
from calibsuite_h5source.cli.fake import FLAGS, describe_steps, events_per_step, steps_arg
from calibsuite_h5source.cli.progress import Progress

DESCRIPTION = """\
Write a synthetic epixM delay-scan run and analyse it as a calibration-suite
script does: through calibsuite_h5source.DataSource (next(ds.runs()),
run.steps(), step.events(), det.raw.calib(evt)), compute per-pixel pedestal
and noise per step, and compare them with the generator's truth.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="write a synthetic epixM delay-scan run and analyse it through the DataSource factory",
        description=DESCRIPTION,
        epilog="Exit codes: 0 done, 2 bad arguments or the run could not be written, 130 interrupted.",
    )
    p.add_argument("--out", metavar="FILE", help="write the run here and keep it (default: a temporary file, deleted)")
    p.add_argument("--steps", type=steps_arg, default=5, metavar="N|E,E,...",
                   help="delay steps: a count, or the events of each step (3,2,4)")
    p.add_argument("--events", type=int, default=None, metavar="N", help="events per step (default: 100)")
    p.add_argument("--det", "--detector", dest="det", default="epixM", metavar="NAME",
                   help="suite detector to simulate")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same run")
    p.set_defaults(func=run, flags=FLAGS)


def analyse(path: str, detector: str, truth, progress=None) -> dict:
    """The suite-style loop: per-step pixel mean and standard deviation, then compare with truth."""
    from calibsuite_h5source import DataSource

    t0 = time.perf_counter()
    ds = DataSource(files=path)
    run = next(ds.runs())
    det = run.Detector(detector.lower())
    scan = run.Detector(truth.scan_name) if truth.scan_name else None
    quiet = ~truth.injected if truth.injected is not None else np.ones(truth.model.shape, bool)
    rows, n_total, nbytes = [], 0, 0
    total_sum = np.zeros(truth.model.shape)
    for step in run.steps():
        s = np.zeros(truth.model.shape)
        s2 = np.zeros(truth.model.shape)
        n = 0
        for evt in step.events():
            frame = det.raw.calib(evt)  # no constants in the file: raw with the gain bits masked, float32
            s += frame
            s2 += np.square(frame, dtype=np.float64)
            n += 1
            nbytes += frame.size * 2
            if progress is not None:
                progress(1)
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0) * n / max(n - 1, 1))
        total_sum += s
        n_total += n
        injected = None
        if truth.injected is not None:
            injected = float((mean - truth.model.pedestal)[truth.injected].mean())
        rows.append({
            "step": step.index, "events": n, "scan": scan(step) if scan else None,
            "pedestal_err": float(np.abs(mean - truth.model.pedestal)[quiet].mean()),
            "noise": float(std[quiet].mean()), "noise_true": float(truth.model.noise[quiet].mean()),
            "injected": injected,
        })
    seconds = time.perf_counter() - t0
    pedestal = total_sum / n_total
    return {
        "rows": rows, "events": n_total, "seconds": seconds, "mb": nbytes / 1e6,
        "pedestal_mean": float(pedestal[quiet].mean()), "pedestal_true": float(truth.model.pedestal[quiet].mean()),
        "pedestal_err": float(np.abs(pedestal - truth.model.pedestal)[quiet].mean()),
        "pedestal_err_expected": float(truth.model.noise[quiet].mean() / np.sqrt(n_total) * np.sqrt(2 / np.pi)),
    }


def run(args) -> int:
    from calibsuite_h5source.synthetic.run import SyntheticRun

    if args.events is None and not isinstance(args.steps, tuple):
        args.events = 100
    events, steps = events_per_step(args.steps, args.events)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.out) if args.out else Path(tmp) / "demo_delayScan.h5"
        try:
            synthetic = SyntheticRun("delayScan", detector=args.det, events=events, steps=steps,
                                     seed=args.seed, constants=False)  # calib = masked raw ADU, compared in ADU
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        total = sum(synthetic.truth.n_events)
        t = time.perf_counter()
        with Progress("demo writing", total=total) as bar:
            truth = synthetic.write(path, overwrite=True, location="demo", experiment="demo", progress=bar.update)
        t_write = time.perf_counter() - t
        size = path.stat().st_size / 1e6
        print(f"wrote {path}: {args.det} {truth.model.shape} uint16, {describe_steps(steps, events)}, "
              f"{size:.0f} MB in {t_write:.1f} s", flush=True)
        print("analysing it through calibsuite_h5source.DataSource as a suite script does ...\n", flush=True)
        with Progress("demo reading", total=total) as bar:
            res = analyse(str(path), args.det, truth, progress=bar.update)
    print(f"{'step':>4} {'delay':>7} {'events':>6} {'|pedestal - true|':>18} {'noise':>7} {'true':>6} "
          f"{'injected ADU':>13} {'true':>7}")
    for r, inj in zip(res["rows"], truth.injected_adu, strict=True):
        print(f"{r['step']:>4} {r['scan']:>7.1f} {r['events']:>6} {r['pedestal_err']:>14.2f} ADU {r['noise']:>7.2f} "
              f"{r['noise_true']:>6.2f} {r['injected']:>13.1f} {inj:>7.1f}")
    print(f"\npedestal over all steps: mean {res['pedestal_mean']:.2f} ADU (true {res['pedestal_true']:.2f}); "
          f"mean |recovered - true| per pixel {res['pedestal_err']:.3f} ADU "
          f"(expected from noise/sqrt(N): {res['pedestal_err_expected']:.3f})")
    print(f"read {res['events']} events in {res['seconds']:.2f} s: {res['events'] / res['seconds']:.0f} events/s, "
          f"{res['mb'] / res['seconds']:.0f} MB/s (det.raw.calib through the factory)")
    return 0
