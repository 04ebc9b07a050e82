"""``calibsuite-h5 demo``: write a synthetic epixM scan run and analyse it like a suite script.

The analysis goes through ``calibsuite_h5source.DataSource`` exactly as a
calibration-suite script does (``next(ds.runs())``, ``run.steps()``,
``step.events()``, ``det.raw.calib(evt)``), computes per-pixel pedestal and
noise per step, and compares them with the generator's truth.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from calibsuite_h5source.cli import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="write a synthetic epixM delay-scan run and analyse it through the DataSource factory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", help="write the run here and keep it (default: a temporary file, deleted)")
    p.add_argument("--steps", type=int, default=5, help="delay steps (default 5)")
    p.add_argument("--events", type=int, default=100, help="events per step (default 100)")
    p.add_argument("--detector", default="epixM", help="suite detector to simulate (default epixM)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def analyse(path: str, detector: str, truth) -> dict:
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

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.out) if args.out else Path(tmp) / "demo_delayScan.h5"
        try:
            synthetic = SyntheticRun("delayScan", detector=args.detector, events=args.events, steps=args.steps,
                                     seed=args.seed, constants=False)  # calib = masked raw ADU, compared in ADU
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        t = time.perf_counter()
        truth = synthetic.write(path, overwrite=True, location="demo", experiment="demo")
        t_write = time.perf_counter() - t
        size = path.stat().st_size / 1e6
        print(f"wrote {path}: {args.detector} {truth.model.shape} uint16, {args.steps} steps x {args.events} events, "
              f"{size:.0f} MB in {t_write:.1f} s")
        print("analysing it through calibsuite_h5source.DataSource as a suite script does ...\n")
        res = analyse(str(path), args.detector, truth)
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
