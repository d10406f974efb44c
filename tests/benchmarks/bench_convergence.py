"""Learning curves on development worlds: how the quick profile's defaults were chosen.

Every default of the quick profile (network, batch, learning rate, warm-up, patience, margin, cap,
the share of training perturbations held back for the transfer validation) is chosen here, on
**development worlds** (`DEV_WORLDS`: twins drawn with seeds that no report uses) and from
**validation signals only**: the within-line validation loss (``valid_total``) and the transfer
validation (``transfer_loss``: 1 - pooled R^2 on DEGs of the cross-context prediction of training
perturbations held back in one line, see `xtcdr.train`). No test split is scored here.

For each twin and development world one model per setting is trained far past convergence
(``--max-steps``, no early stopping, a validation every ``eval_every`` steps). From the curves the
script replays stopping rules (`RULES`): where each would stop, which step's weights it would
keep for each signal, how far those weights are from the signal's minimum over the whole curve,
and whether the kept weights sit at the end of the warm-up (then the warm-up, not the data, picked
them). Results: ``reports/benchmarks/convergence_dev.json`` and ``convergence_dev.png``.

Usage::

    python tests/benchmarks/bench_convergence.py                 # every setting, twin and dev world
    python tests/benchmarks/bench_convergence.py --settings quick --datasets synthetic_drugs
    python tests/benchmarks/bench_convergence.py --analyse       # replay rules on the saved curves
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from xtcdr.config import get_profile  # noqa: E402

# Development worlds: seeds of twin draws that no report, notebook or table uses (a test checks
# that they are disjoint from the worlds of `make replicate` and `--seeds N`).
DEV_WORLDS = (100, 101, 102)
DATASETS = ("synthetic_drugs", "synthetic_drugs4", "synthetic_genes", "synthetic_combo")
OUT = REPO / "reports" / "benchmarks"

# The settings compared (overrides of the quick profile as it stands). "transfer_share_20" is the
# transfer validation of the previous profile (20% of the eligible training perturbations).
# The curves of the settings other than "quick" were drawn when the quick profile used batch 128,
# so they pin it; "batch_128" is that earlier quick profile.
SETTINGS: dict[str, dict] = {
    "quick": {},
    "batch_128": {"train": {"batch_size": 128}},
    "transfer_share_20": {"data": {"transfer_share": 0.2}, "train": {"batch_size": 128}},
    "lr_2e-3": {"train": {"lr": 2e-3, "batch_size": 128}},
    "batch_256": {"train": {"batch_size": 256}},
    "hidden_256": {"model": {"hidden": (256,)}},
}


def _profile(setting: str):
    prof = get_profile("quick")
    over = SETTINGS[setting]
    return replace(prof, data=replace(prof.data, **over.get("data", {})),
                   model=replace(prof.model, **over.get("model", {})),
                   train=replace(prof.train, **over.get("train", {})))


def run_curve(dataset: str, world: int, setting: str, max_steps: int, data_dir: str) -> dict:
    """Train one model on development world ``world`` to ``max_steps`` (no early stopping) and
    return its validation history (a worker process runs this)."""
    import warnings

    from xtcdr import pipeline
    from xtcdr.model import XTransferCDR
    from xtcdr.train import fit, set_seed

    prof = _profile(setting)
    adata = pipeline.prepare(dataset, profile=prof, seed=world, data_dir=data_dir, verbose=False)
    config = replace(prof.train, seed=world, max_steps=max_steps, min_steps=max_steps, patience=max_steps)
    set_seed(world)
    model = XTransferCDR(adata.n_vars, prof.model)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = fit(model, adata, config, device="cpu", checkpoint_dir=tmp, progress=False)
    seconds = time.perf_counter() - t0
    keep = [c for c in ("step", "epoch", "valid_total", "transfer_loss", "transfer_r2_deg") if c in history]
    split = adata.uns["xtcdr"]["split"]
    return {"dataset": dataset, "world": world, "setting": setting, "seconds": seconds,
            "seconds_per_step": seconds / max_steps, "n_transfer_valid": len(split.get("transfer_valid", [])),
            "history": history[keep].to_dict("list")}


# ------------------------------------------------------------------------------------- rules
def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` validations (NaN-aware; the first ones use fewer)."""
    s = pd.Series(values)
    return s.rolling(window, min_periods=1).mean().to_numpy()


def early_stop(steps, values, *, patience, min_delta, warmup=0):
    """Replay `xtcdr.train.fit`'s rule on one signal: (stop step, best step, converged)."""
    best, best_step = None, None
    for step, value in zip(steps, values):
        if step < warmup:
            continue
        if np.isfinite(value) and (best is None or value < best - min_delta * abs(best)):
            best, best_step = value, step
        if best_step is not None and step - best_step >= patience:
            return int(step), int(best_step), True
    return int(steps[-1]), (int(best_step) if best_step is not None else None), False


# name -> (warm-up of the valid monitor, warm-up of the transfer monitor, smoothing window of the
# transfer monitor, patience, relative margin)
RULES = {
    "warm-up 500 both (before)": (500, 500, 1, 400, 0.005),
    "warm-up 500 valid, none transfer": (500, 0, 1, 400, 0.005),
    "warm-up 500, transfer smoothed over 5": (500, 500, 5, 400, 0.005),
    "warm-up 500 valid, transfer smoothed over 5, none": (500, 0, 5, 400, 0.005),
    "warm-up 500 valid, transfer smoothed over 5 from 250": (500, 250, 5, 400, 0.005),
    "patience 600, margin 0.5%": (500, 500, 1, 600, 0.005),
    "patience 400, margin 0.2%": (500, 500, 1, 400, 0.002),
    "patience 400, margin 1%": (500, 500, 1, 400, 0.01),
}


def replay(curve: dict, rule: tuple) -> dict:
    warm_valid, warm_transfer, window, patience, margin = rule
    h = pd.DataFrame(curve["history"])
    steps = h["step"].to_numpy()
    out = {}
    stops = []
    for name, column, warm, win in (("valid", "valid_total", warm_valid, 1),
                                    ("transfer", "transfer_loss", warm_transfer, window)):
        if column not in h:
            continue
        raw = h[column].to_numpy(float)
        signal = smoothed(raw, win) if win > 1 else raw
        stop, best, converged = early_stop(steps, signal, patience=patience, min_delta=margin, warmup=warm)
        stops.append(stop)
        # quality of the kept weights: the raw signal at the kept step against the raw signal's
        # minimum over the steps after any warm-up (relative excess; 0 = the best there is)
        floor = np.nanmin(smoothed(raw, 5)[steps >= 250]) if (steps >= 250).any() else np.nanmin(raw)
        at = smoothed(raw, 5)[steps == best][0] if best is not None else np.nan
        out[name] = {"best_step": best, "stop_step": stop, "converged": converged,
                     "at_warmup_end": bool(best is not None and warm > 0 and best <= warm),
                     "excess_over_min": float(at / floor - 1) if np.isfinite(at) else None,
                     "raw_minimum_step": int(steps[np.nanargmin(raw)])}
    out["stop_step"] = max(stops) if stops else None
    return out


def analyse(curves: list[dict]) -> dict:
    rows = []
    for c in curves:
        for rule_name, rule in RULES.items():
            r = replay(c, rule)
            for signal in ("valid", "transfer"):
                if signal in r:
                    rows.append({"setting": c["setting"], "dataset": c["dataset"], "world": c["world"],
                                 "rule": rule_name, "signal": signal, "stop_step": r["stop_step"],
                                 **r[signal]})
    table = pd.DataFrame(rows)
    summary = (table.groupby(["setting", "rule", "signal"])
               .agg(stop_median=("stop_step", "median"), stop_max=("stop_step", "max"),
                    best_median=("best_step", "median"), at_warmup_end=("at_warmup_end", "sum"),
                    n=("at_warmup_end", "size"), excess_median=("excess_over_min", "median"),
                    excess_max=("excess_over_min", "max"), converged=("converged", "sum"))
               .reset_index())
    quality = []
    for c in curves:  # the level each setting reaches: minimum of the smoothed signals
        h = pd.DataFrame(c["history"])
        row = {"setting": c["setting"], "dataset": c["dataset"], "world": c["world"],
               "seconds_per_step": c["seconds_per_step"], "n_transfer_valid": c.get("n_transfer_valid")}
        for column in ("valid_total", "transfer_loss"):
            if column in h:
                s = smoothed(h[column].to_numpy(float), 5)[h["step"].to_numpy() >= 250]
                row[f"min_{column}"] = float(np.nanmin(s)) if s.size else None
                late = h[column].to_numpy(float)[h["step"].to_numpy() >= 1000]
                row[f"noise_{column}"] = float(np.nanstd(np.diff(late)) / np.nanmean(late)) if late.size > 2 else None
        quality.append(row)
    return {"rules": summary.to_dict("records"), "replays": table.to_dict("records"),
            "quality": quality}


def figure(curves: list[dict], path: Path, setting: str = "quick") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [c for c in curves if c["setting"] == setting]
    datasets = [d for d in DATASETS if any(c["dataset"] == d for c in chosen)]
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.0 * len(datasets), 6.2), squeeze=False, sharex=True)
    for j, d in enumerate(datasets):
        for c in (c for c in chosen if c["dataset"] == d):
            h = pd.DataFrame(c["history"])
            for i, column in enumerate(("valid_total", "transfer_loss")):
                if column in h:
                    ax = axes[i][j]
                    ax.plot(h["step"], h[column], lw=0.8, alpha=0.45, label=f"world {c['world']}")
                    ax.plot(h["step"], smoothed(h[column].to_numpy(float), 5), lw=1.4,
                            color=ax.lines[-1].get_color())
        axes[0][j].set_title(d, fontsize=10)
        for i, label in enumerate(("within-line validation loss", "transfer validation (1 - R2 DEGs)")):
            ax = axes[i][j]
            ax.axvspan(0, 500, color="0.92", zorder=0)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            ax.set_xlabel("optimizer step" if i == 1 else "")
            if ax.lines:
                values = np.concatenate([ln.get_ydata() for ln in ax.lines])
                low, high = np.nanpercentile(values, 1), np.nanpercentile(values, 90)
                ax.set_ylim(low - 0.05 * (high - low), high)
        axes[0][j].legend(fontsize=7)
    fig.suptitle(f"Development worlds {list(DEV_WORLDS)}, setting '{setting}': validation signals only "
                 "(thin: every validation; thick: mean of the last 5, what the transfer monitor reads; grey: the 500-step warm-up)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--worlds", nargs="+", type=int, default=list(DEV_WORLDS))
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=str(REPO / "data" / "benchmarks" / "convergence"))
    parser.add_argument("--analyse", action="store_true", help="only replay the rules on the saved curves")
    args = parser.parse_args(argv)
    if any(w not in DEV_WORLDS for w in args.worlds):
        parser.error(f"only development worlds {DEV_WORLDS} may be used here")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "convergence_dev.json"
    saved = json.loads(path.read_text()) if path.exists() else {"curves": []}
    curves = saved["curves"]
    if not args.analyse:
        done = {(c["dataset"], c["world"], c["setting"]) for c in curves}
        jobs = [(d, w, s) for s in args.settings for d in args.datasets for w in args.worlds
                if (d, w, s) not in done]
        for d in args.datasets:  # prepare each world once, before the workers
            from xtcdr import pipeline
            for w in args.worlds:
                for s in {_profile(s).data for s in args.settings}:
                    pipeline.prepare(d, profile=replace(get_profile("quick"), data=s), seed=w,
                                     data_dir=args.data_dir, verbose=False)
        print(f"[convergence] {len(jobs)} curves to train, {args.workers} workers", flush=True)
        t0 = time.perf_counter()
        with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_curve, d, w, s, args.max_steps, args.data_dir): (d, w, s) for d, w, s in jobs}
            for future in cf.as_completed(futures):
                curves.append(future.result())
                d, w, s = futures[future]
                print(f"[convergence] {s} {d} world {w}: {curves[-1]['seconds']:.0f} s "
                      f"({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
                path.write_text(json.dumps({"dev_worlds": list(DEV_WORLDS), "max_steps": args.max_steps,
                                            "curves": curves}, default=float))
    result = analyse(curves)
    path.write_text(json.dumps({"dev_worlds": list(DEV_WORLDS), "max_steps": args.max_steps,
                                "curves": curves, **result}, default=float))
    figure(curves, OUT / "convergence_dev.png")
    rules = pd.DataFrame(result["rules"])
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(rules.round(3).to_string(index=False))
        print(pd.DataFrame(result["quality"]).groupby("setting").median(numeric_only=True).round(4))
    print(f"[convergence] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
