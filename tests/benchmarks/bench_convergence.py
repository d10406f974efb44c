"""Learning curves of a profile on the synthetic twins: where each validation signal stops training.

For each twin one model is trained far past convergence (``--max-steps``, no early stopping) and,
every ``--chunk`` steps, the current weights are scored on the **test** conditions with the
protocol of the twin's table (for teaching and for choosing the profile's defaults only: the
test curve never selects a model). The training history holds both validation signals
(``valid_total``: within-line validation pairs; ``transfer_loss``: 1 - R^2 on DEGs of the
cross-context prediction of held-back training conditions, see `xtcdr.train`).

From the curves the script reports, per signal, where early stopping with the profile's
``patience`` and ``min_delta`` would stop and which step's weights it would keep, the test scores
of those weights, the test scores' own best step, and the seconds per optimizer step. Results go
to ``reports/benchmarks/convergence_<profile>.json`` and a figure to
``reports/benchmarks/convergence_<profile>.png``.

Usage: ``python tests/benchmarks/bench_convergence.py --datasets synthetic_drugs synthetic_combo``
(``--lr``, ``--batch-size``, ``--genes`` override the profile to compare settings; ``--tag`` names
the output files of such a variant).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from xtcdr import evaluate, pipeline  # noqa: E402
from xtcdr.config import get_profile  # noqa: E402
from xtcdr.model import XTransferCDR  # noqa: E402
from xtcdr.train import CHECKPOINT_NAME, fit, load_checkpoint, set_seed  # noqa: E402

# The protocol(s) of each twin's table, scored on the test split.
PROTOCOLS = {"synthetic_drugs": ("cross", "within"), "synthetic_drugs4": ("cross", "within"),
             "synthetic_genes": ("within", "cross"), "synthetic_combo": ("combination",)}
# The validation signal that matches each protocol (what the notebooks select with).
MATCHING = {"cross": "transfer", "within": "valid", "combination": "valid"}
COLUMN = {"valid": "valid_total", "transfer": "transfer_loss"}


def early_stop(steps, values, patience, min_delta, min_steps=0):
    """Replay `xtcdr.train.fit`'s rule on one signal: (stop step, best step, converged)."""
    best, best_step = None, None
    for step, value in zip(steps, values):
        if step < min_steps:
            continue
        if np.isfinite(value) and (best is None or value < best - min_delta * abs(best)):
            best, best_step = value, step
        if best_step is not None and step >= min_steps and step - best_step >= patience:
            return int(step), int(best_step), True
    return int(steps[-1]), (int(best_step) if best_step is not None else None), False


def curve(dataset, profile, seed, max_steps, chunk, data_dir):
    adata = pipeline.prepare(dataset, profile=profile, seed=0, data_dir=data_dir, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tasks = {p: evaluate.transfer_tasks(adata, split="test", protocol=p, seed=0)
                 for p in PROTOCOLS[dataset]}
    tasks = {p: t for p, t in tasks.items() if t}
    config = replace(profile.train, seed=seed, max_steps=max_steps, patience=max_steps)
    set_seed(seed)
    model = XTransferCDR(adata.n_vars, profile.model)
    test_rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for stop in range(chunk, max_steps + 1, chunk):
            history = fit(model, adata, replace(config, max_steps=stop), device="cpu",
                          checkpoint_dir=tmp, resume=True, progress=False)
            current, _ = load_checkpoint(Path(tmp) / CHECKPOINT_NAME, select=None)
            for protocol, task_list in tasks.items():
                scores = evaluate.evaluate_transfer(evaluate.ModelPredictor(current), adata, tasks=task_list)
                test_rows.append({"step": stop, "protocol": protocol,
                                  **scores[["r2_all", "r2_deg", "r2_all_delta", "r2_deg_delta"]].mean().to_dict()})
    seconds = time.perf_counter() - t0
    return adata, history, pd.DataFrame(test_rows), seconds


def summarise(dataset, history, test, profile, seconds):
    cfg = profile.train
    out = {"dataset": dataset, "seconds": seconds,
           "seconds_per_step": float(history["seconds"].sum() / history["step"].iloc[-1])
           if "seconds" in history else float("nan"),
           "steps_per_epoch": float(history["step"].iloc[-1] / history["epoch"].iloc[-1])
           if "epoch" in history else float("nan"),
           "signals": {}, "protocols": {}}
    steps = history["step"].to_numpy()
    for name, column in COLUMN.items():
        if column not in history:
            continue
        values = history[column].to_numpy(float)
        stop, best_step, converged = early_stop(steps, values, cfg.patience, cfg.min_delta, cfg.min_steps)
        out["signals"][name] = {"stop_step": stop, "best_step": best_step, "converged": converged,
                                "minimum_step": int(steps[np.nanargmin(values)])}
    for protocol, rows in test.groupby("protocol"):
        rows = rows.set_index("step")
        signal = MATCHING[protocol] if MATCHING[protocol] in out["signals"] else "valid"
        chosen = out["signals"][signal]["best_step"]
        nearest = rows.index[np.argmin(np.abs(rows.index - chosen))]
        out["protocols"][protocol] = {
            "selected_by": signal, "selected_step": int(chosen),
            "test_at_selected": rows.loc[nearest].to_dict(),
            "test_best_step_r2_deg": int(rows["r2_deg"].idxmax()),
            "test_best_r2_deg": float(rows["r2_deg"].max()),
            "test_at_last": rows.iloc[-1].to_dict()}
    return out


def figure(results, histories, tests, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        h, t = histories[res["dataset"]], tests[res["dataset"]]
        ax.plot(h["step"], h["valid_total"] / h["valid_total"].min(), color="C1", label="valid loss / its min")
        if "transfer_loss" in h:
            ax.plot(h["step"], h["transfer_loss"] / h["transfer_loss"].min(), color="C2",
                    label="transfer loss / its min")
        ax.set_ylim(0.9, 2.0)
        ax.set_xlabel("optimizer step")
        ax2 = ax.twinx()
        colors = {"cross": "C0", "within": "C3", "combination": "C0"}
        for protocol, rows in t.groupby("protocol"):
            ax2.plot(rows["step"], rows["r2_deg"], ls="--", color=colors.get(protocol, "k"),
                     label=f"test R2 DEGs ({protocol}; teaching only)")
        ax.axvspan(0, res.get("min_steps", 0), color="0.9", zorder=0)
        for name, sig in res["signals"].items():
            ax.axvline(sig["stop_step"], color="C1" if name == "valid" else "C2", ls=":", lw=1)
        ax.set_title(res["dataset"], fontsize=10)
        if ax is axes[0][0]:
            ax.legend(fontsize=7, loc="upper right")
        ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(PROTOCOLS))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=6000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--genes", type=int, default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--hidden", default=None, help="hidden widths, e.g. 128 or 256,128")
    parser.add_argument("--latent", type=int, default=None)
    parser.add_argument("--tag", default="")
    parser.add_argument("--data-dir", default=str(REPO / "data" / "benchmarks" / "convergence"))
    parser.add_argument("--resummarise", nargs="+", default=None, metavar="JSON",
                        help="recompute the summaries of saved runs with the profile's current early-stopping "
                             "rule (no training) and write them together under --tag")
    args = parser.parse_args(argv)
    if args.resummarise:
        return resummarise(args.resummarise, get_profile(args.profile), args.profile, args.tag)
    profile = get_profile(args.profile)
    train = replace(profile.train, **{k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size),
                                                        ("weight_decay", args.weight_decay))
                                      if v is not None})
    data = replace(profile.data, n_top_genes=args.genes) if args.genes else profile.data
    model = profile.model
    if args.hidden:
        model = replace(model, hidden=tuple(int(h) for h in args.hidden.split(",")))
    if args.latent:
        model = replace(model, latent=args.latent)
    profile = replace(profile, train=train, data=data, model=model, name=profile.name)
    results, histories, tests = [], {}, {}
    for dataset in args.datasets:
        print(f"[convergence] {dataset}: up to {args.max_steps} steps, test every {args.chunk}", flush=True)
        _, history, test, seconds = curve(dataset, profile, args.seed, args.max_steps, args.chunk,
                                          Path(args.data_dir))
        res = summarise(dataset, history, test, profile, seconds)
        results.append(res)
        histories[dataset], tests[dataset] = history, test
        print(json.dumps(res, indent=1, default=float), flush=True)
    out = REPO / "reports" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    name = f"convergence_{args.profile}{('_' + args.tag) if args.tag else ''}"
    payload = {"profile": args.profile, "lr": train.lr, "batch_size": train.batch_size,
               "weight_decay": train.weight_decay, "hidden": list(model.hidden), "latent": model.latent,
               "genes": data.n_top_genes, "patience": train.patience, "min_delta": train.min_delta,
               "eval_every": train.eval_every, "seed": args.seed, "results": results,
               "curves": {d: {"history": histories[d][[c for c in ("step", "valid_total", "transfer_loss")
                                                         if c in histories[d]]].to_dict("list"),
                              "test": tests[d].to_dict("list")} for d in histories}}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
    figure(results, histories, tests, out / f"{name}.png")
    print(f"[convergence] wrote {out / (name + '.json')}")


def resummarise(paths, profile, name, tag):
    """Summaries of saved curves under the profile's current rule (warm-up, patience, margin)."""
    results, histories, tests, curves, settings = [], {}, {}, {}, {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        settings = {k: saved[k] for k in ("lr", "batch_size", "genes", "hidden", "latent", "weight_decay")
                    if k in saved}
        old = {r["dataset"]: r for r in saved["results"]}
        for dataset, curve in saved["curves"].items():
            history, test = pd.DataFrame(curve["history"]), pd.DataFrame(curve["test"])
            res = summarise(dataset, history, test, profile, old[dataset]["seconds"])
            res["seconds_per_step"] = old[dataset]["seconds_per_step"]
            res["steps_per_epoch"] = old[dataset]["steps_per_epoch"]
            res["stop_step"] = max(s["stop_step"] for s in res["signals"].values())
            res["min_steps"] = profile.train.min_steps
            results.append(res)
            histories[dataset], tests[dataset], curves[dataset] = history, test, curve
            print(json.dumps({k: res[k] for k in ("dataset", "stop_step", "signals")}, default=float))
    train = profile.train
    out = REPO / "reports" / "benchmarks"
    stem = f"convergence_{name}{('_' + tag) if tag else ''}"
    payload = {"profile": name, **settings, "min_steps": train.min_steps, "patience": train.patience,
               "min_delta": train.min_delta, "eval_every": train.eval_every, "results": results,
               "curves": curves, "from": [str(p) for p in paths]}
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=float))
    figure(results, histories, tests, out / f"{stem}.png")
    print(f"[convergence] wrote {out / (stem + '.json')}")


if __name__ == "__main__":
    main()
