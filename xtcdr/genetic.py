"""Single-gene knockdowns (notebook 05, the paper's Table 3 and Figure 3): what the tables need
beside `xtcdr.experiments`.

A CRISPRi knockdown's profile has two parts: the targeted gene itself, whose fall is large and
certain, and the downstream response. The target is usually the first DEG of its own knockdown,
so how a method predicts that one gene weighs on the DEG metric. This module measures it:

- `knockdown_facts`: per held-out condition, the target's measured log2 fold change, its rank
  among the condition's DEGs and the size of the whole response;
- `target_readout`: per knockdown and method, the predicted against the observed log2 fold
  change of the target, and the target's share of the method's squared error on the DEGs;
- `rescore`: the same models and baselines scored again with other `evaluate_transfer` options
  (``drop_genes="target"``: the DEG metrics without the knocked-down gene);
- `for_line`: one evaluation restricted to one cell line (Table 3 has one block per line);
- `strongest`: the k knockdowns with the largest response (the paper's Figure 3c-d: "top 5%");
- `line_probe`: does the perturbation code remember the cell line (cross-line transfer)?

Plot functions return a matplotlib Figure.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .evaluate import dense_float32, evaluate_transfer, target_positions, task_prediction
from .experiments import BASELINE_LABELS, MODEL, Evaluation

__all__ = ["PAPER_TABLES", "TWIN_LINES", "paper_tables", "line_title", "for_line", "log2_fold_change",
           "knockdown_facts", "target_readout", "readout_summary", "rescore", "strongest",
           "top_scores", "line_probe", "plot_target_readout", "plot_per_knockdown", "plot_top_knockdowns"]

# the baselines' row labels in every table (the model's is MODEL)
CONTROL, SHIFT, TRAIN_MEAN = (BASELINE_LABELS[k] for k in ("control", "source_shift", "train_mean"))
__all__ += ["CONTROL", "SHIFT", "TRAIN_MEAN", "MODEL"]

# the paper's Table 3 block printed beside each line of a dataset
PAPER_TABLES = {"synthetic_genes": {"line_A": "Table 3 K562", "line_B": "Table 3 RPE-1"},
                "replogle_k562": "Table 3 K562", "replogle_rpe1": "Table 3 RPE-1"}
# what each line of the genetic twin mirrors
TWIN_LINES = {"line_A": "K562-like", "line_B": "RPE-1-like"}


def paper_tables(dataset: str, lines: list[str]) -> dict[str, str]:
    """Line -> the paper table printed beside it (``"Table 3 K562"`` ...); empty for other data.

    The twin's ``line_A`` mirrors K562 and ``line_B`` RPE-1; a Replogle screen has one line.
    """
    entry = PAPER_TABLES.get(str(dataset))
    if entry is None:
        return {}
    if isinstance(entry, str):
        return {line: entry for line in lines[:1]}
    return {line: entry[line] for line in lines if line in entry}


def line_title(dataset: str, line: str) -> str:
    """How a line is named in titles: ``"line A (K562-like)"`` on the twin, else the line itself."""
    if dataset == "synthetic_genes" and line in TWIN_LINES:
        return f"{line.replace('_', ' ')} ({TWIN_LINES[line]})"
    return str(line)


def for_line(evaluation: Evaluation, line: str) -> Evaluation:
    """The same evaluation restricted to the tasks whose target line is ``line``.

    Every method keeps the same conditions; the trained models and their training summaries are
    kept, so tables of one line carry the verdicts and the convergence of the full run.
    """
    def keep(df: pd.DataFrame) -> pd.DataFrame:
        out = df[df["cell_type"].astype(str) == str(line)].reset_index(drop=True)
        out.attrs.update(df.attrs)
        return out

    return Evaluation(
        seeds=list(evaluation.seeds), kinds=dict(evaluation.kinds), model_label=evaluation.model_label,
        model_runs={p: [keep(r) for r in runs] for p, runs in evaluation.model_runs.items()},
        others={p: {k: keep(df) for k, df in d.items()} for p, d in evaluation.others.items()},
        models=evaluation.models, training=evaluation.training, varies=evaluation.varies)


def log2_fold_change(mean, control_mean):
    """log2 fold change of mean log1p profiles, as `xtcdr.preprocess.deg_statistics` computes it:
    ``log2((expm1(mean) + 1e-9) / (expm1(control_mean) + 1e-9))``."""
    mean, control_mean = np.asarray(mean, dtype=np.float64), np.asarray(control_mean, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log2((np.expm1(mean) + 1e-9) / (np.expm1(control_mean) + 1e-9))


def knockdown_facts(adata, split: str = "test") -> pd.DataFrame:
    """Per condition of ``split`` (all its cells against the controls of its line): the target.

    Columns: ``line``, ``knockdown``, ``target_in_genes`` (the targeted gene is a gene of the
    data), ``target_log2fc``, ``n_degs`` (the condition's DEGs, ``uns['top_degs']``),
    ``target_in_degs``, ``target_rank`` (1 = the first DEG; NaN when not a DEG) and ``shift``
    (Euclidean distance of the condition's mean profile from its line's control mean, the size of
    the whole response). Index: the condition.
    """
    X = dense_float32(adata.X)
    obs = adata.obs
    line = obs["cell_type"].astype(str).to_numpy()
    condition = obs["condition"].astype(str).to_numpy()
    control = obs["is_control"].to_numpy(bool)
    scored = (obs["split"].astype(str).to_numpy() == split) & ~control
    rows = []
    for name in sorted(set(condition[scored])):
        cells = np.flatnonzero(condition == name)
        ct, pert = line[cells[0]], str(obs["perturbation"].iloc[cells[0]])
        ctrl = np.flatnonzero(control & (line == ct))
        mean, ctrl_mean = X[cells].mean(0, dtype=np.float64), X[ctrl].mean(0, dtype=np.float64)
        target = target_positions(adata, pert)
        degs = [str(g) for g in np.asarray(adata.uns["top_degs"].get(name, [])).ravel()]
        gene = str(adata.var_names[target[0]]) if target.size else None
        rows.append({"condition": name, "line": ct, "knockdown": pert, "target_in_genes": bool(target.size),
                     "target_log2fc": float(log2_fold_change(mean[target[0]], ctrl_mean[target[0]]))
                     if target.size else np.nan,
                     "n_degs": len(degs), "target_in_degs": gene in degs,
                     "target_rank": degs.index(gene) + 1 if gene in degs else np.nan,
                     "shift": float(np.linalg.norm(mean - ctrl_mean))})
    return pd.DataFrame(rows).set_index("condition")


def target_readout(adata, tasks, predictors: dict) -> pd.DataFrame:
    """How each method predicts the knocked-down gene itself, per task and method.

    ``predictors``: label -> fitted `xtcdr.evaluate.Predictor` (or a list of them, one per
    training seed: each gives one row with its position in ``seed``). For a task whose target is
    among its scored DEGs (``task.deg_idx``, else ``uns['top_degs']``), with observed mean ``mu``
    of the scored cells, control mean ``c`` and predicted mean ``m`` (`task_prediction`):

    - ``observed_log2fc`` / ``predicted_log2fc``: the target's log2 fold change in ``mu`` and in
      ``m`` against ``c`` (`log2_fold_change`); ``read_log2fc`` the same in the cells the task
      reads (the first component of its first source);
    - ``observed_change`` / ``predicted_change``: the same on the scale the metrics use, the
      log1p expression of the target minus the control's (``mu_t - c_t`` and ``m_t - c_t``);
    - ``fall_predicted``: ``(m_t - c_t) / (mu_t - c_t)``, the share of the target's measured change
      that the prediction reproduces (1: all of it, 0: none, as the control baseline);
    - ``error_share``: the target's share of the squared error on the DEGs,
      ``(mu_t - m_t)^2 / sum_g (mu_g - m_g)^2`` (the numerator of 1 - R^2 on DEGs);
    - ``variance_share``: the target's share of the DEG variance ``sum_g (mu_g - mean)^2`` (the
      denominator).

    Tasks whose target is not a scored DEG are skipped.
    """
    from .evaluate import _deg_positions

    X = dense_float32(adata.X)
    rows = []
    for task in tasks:
        target = target_positions(adata, task.perturbation)
        degs = (np.asarray(task.deg_idx, dtype=np.int64) if task.deg_idx is not None
                else _deg_positions(adata, task.condition))
        if target.size == 0 or not np.isin(target, degs).any():
            continue
        t = int(target[0])
        observed = X[task.target_idx].mean(0, dtype=np.float64)
        ctrl = X[task.control_idx].mean(0, dtype=np.float64)
        read = X[np.asarray(task.sources[0].components[0][0])].mean(0, dtype=np.float64)
        at = degs == t
        centred = observed[degs] - observed[degs].mean()
        base = {"condition": task.condition, "line": task.cell_type, "knockdown": task.perturbation,
                "observed_log2fc": float(log2_fold_change(observed[t], ctrl[t])),
                "read_log2fc": float(log2_fold_change(read[t], ctrl[t])),
                "observed_change": float(observed[t] - ctrl[t]),
                "variance_share": float((centred[at] ** 2).sum() / (centred ** 2).sum())}
        for label, predictor in predictors.items():
            for seed, p in enumerate(predictor if isinstance(predictor, (list, tuple)) else [predictor]):
                predicted = task_prediction(p, X, task)
                error = (observed[degs] - predicted[degs]) ** 2
                change = float(predicted[t] - ctrl[t])
                rows.append({**base, "method": label, "seed": seed if isinstance(predictor, (list, tuple)) else np.nan,
                             "predicted_log2fc": float(log2_fold_change(predicted[t], ctrl[t])),
                             "predicted_change": change,
                             "fall_predicted": change / base["observed_change"] if base["observed_change"] else np.nan,
                             "error_share": float(error[at].sum() / error.sum()) if error.sum() > 0 else np.nan})
    return pd.DataFrame(rows)


def readout_summary(readout: pd.DataFrame) -> pd.DataFrame:
    """Per line and method: knockdowns, median observed and predicted target log2 fold change,
    median share of the target's change predicted (``fall_predicted``), mean share of the DEG error
    and of the DEG variance on the target (seeds first averaged per knockdown)."""
    per_kd = readout.groupby(["line", "method", "condition"], sort=False).mean(numeric_only=True)
    grouped = per_kd.groupby(level=["line", "method"], sort=False)
    return pd.DataFrame({"knockdowns": grouped.size(),
                         "observed log2fc (median)": grouped["observed_log2fc"].median(),
                         "predicted log2fc (median)": grouped["predicted_log2fc"].median(),
                         "share of the fall predicted (median)": grouped["fall_predicted"].median(),
                         "target share of DEG error (mean)": grouped["error_share"].mean(),
                         "target share of DEG variance (mean)": grouped["variance_share"].mean()})


def rescore(result: Evaluation, adata, tasks: dict, predictors: dict, **options) -> Evaluation:
    """The models of ``result`` and the fitted ``predictors`` (label -> baseline) scored again on
    ``tasks`` (protocol -> list) with other `evaluate_transfer` ``options`` (e.g.
    ``drop_genes="target"``). Models, training summaries and seeds are kept, so a table of the
    result carries the same verdict machinery."""
    from .evaluate import ModelPredictor

    runs = {p: [evaluate_transfer(ModelPredictor(result.models[p][s]), adata, tasks=tasks[p], **options)
                for s in result.seeds] for p in tasks}
    others = {p: {label: evaluate_transfer(pr, adata, tasks=tasks[p], **options)
                  for label, pr in predictors.items()} for p in tasks}
    return Evaluation(seeds=list(result.seeds), model_runs=runs, others=others,
                      kinds={label: result.kinds.get(label, "baseline") for label in predictors},
                      models=result.models, training=result.training, model_label=result.model_label,
                      varies=result.varies)


def strongest(facts: pd.DataFrame, line: str, share: float = 0.05, minimum: int = 2) -> tuple[list[str], int]:
    """The strongest held-out knockdowns of ``line`` by the size of their response (``shift``).

    The paper's Figure 3c-d shows "the top 5%"; with few held-out knockdowns that is less than one,
    so at least ``minimum`` are kept: ``k = max(minimum, ceil(share * n))``, at most n. Returns
    the conditions, strongest first, and n.
    """
    in_line = facts[facts["line"] == line].sort_values("shift", ascending=False)
    n = len(in_line)
    k = min(n, max(int(minimum), math.ceil(share * n)))
    return list(in_line.index[:k]), n


def top_scores(per_condition: dict, conditions: list[str], metrics: list[str]) -> pd.DataFrame:
    """Long table of ``metrics`` for ``conditions``: columns condition, method, metric, value.

    ``per_condition``: method -> per-condition table (`Evaluation.per_condition`)."""
    rows = []
    for method, df in per_condition.items():
        indexed = df.set_index("condition")
        for c in conditions:
            for m in metrics:
                rows.append({"condition": c, "method": method, "metric": m, "value": float(indexed.loc[c, m])})
    return pd.DataFrame(rows)


def line_probe(models: dict, adata, *, seed: int = 0) -> pd.DataFrame:
    """Per trained model: accuracy of a linear probe that reads the cell line from the
    perturbation code ``P = E_p(x)`` of the held-out knockdowns' cells, fitted on the perturbed
    cells of training knockdowns (`xtcdr.probes.probe_codes`, probe ``"P, held-out
    perturbations"``), and the chance level (always guessing the larger line)."""
    from .probes import probe_codes

    rows = []
    for key, model in models.items():
        context = probe_codes(model, adata, seed=seed).context
        row = context.set_index("probe").loc["P, held-out perturbations"]
        rows.append({"seed": key, "accuracy": float(row["accuracy"]), "chance": float(row["chance"])})
    return pd.DataFrame(rows).set_index("seed")


# ----------------------------------------------------------------------------- figures
def plot_target_readout(readout: pd.DataFrame, methods: list[str], *, title: str | None = None):
    """Left: predicted against observed change of each knockdown's own target against the control
    mean, on the log1p scale the metrics use (one marker per knockdown and method, seeds
    averaged; the diagonal is a perfect prediction).
    Right: the target's share of each method's squared error on the DEGs, per knockdown."""
    import matplotlib.pyplot as plt

    per_kd = readout.groupby(["method", "condition"], sort=False).mean(numeric_only=True).reset_index()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={"width_ratios": [1, 1.1]})
    markers = ["o", "s", "^", "D", "v"]
    lo = float(min(per_kd["observed_change"].min(), per_kd["predicted_change"].min(), 0)) * 1.08 - 0.05
    for i, method in enumerate(methods):
        rows = per_kd[per_kd["method"] == method]
        ax.scatter(rows["observed_change"], rows["predicted_change"], s=26, marker=markers[i % 5],
                   color=f"C{i}", label=method, alpha=0.8, edgecolors="white", linewidths=0.4)
        values = rows["error_share"].to_numpy(float)
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, values.size)
        bx.scatter(i + jitter, values, s=18, color=f"C{i}", alpha=0.8)
        bx.hlines(np.nanmean(values), i - 0.3, i + 0.3, color="black", lw=1.5)
    hi = 0.1 * abs(lo)
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("observed change of the target vs control\n(log1p expression, scored half)")
    ax.set_ylabel("predicted change of the target vs control")
    ax.set_title("the knocked-down gene itself (diagonal: exact)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    bx.set_xticks(range(len(methods)))
    bx.set_xticklabels(methods, rotation=20, ha="right", fontsize=9)
    bx.set_ylim(-0.02, 1.02)
    bx.set_ylabel("target's share of the squared error on DEGs")
    bx.set_title("one dot per knockdown; bar: mean", fontsize=10)
    bx.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_per_knockdown(per_line: dict, metrics: list[str], methods: list[str], *, title: str | None = None,
                       floor: float = -1.0):
    """Figure 3a-b analog: one panel per (line, metric), one box of per-knockdown scores per
    method; panels of the same metric share their y axis. Values below ``floor`` are drawn at it.

    ``per_line``: line -> {method: per-condition table}."""
    import matplotlib.pyplot as plt

    lines = list(per_line)
    fig, axes = plt.subplots(len(metrics), len(lines), figsize=(4.4 * len(lines), 3.4 * len(metrics)),
                             squeeze=False, sharey="row")
    for j, line in enumerate(lines):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            raw = [per_line[line][m][metric].to_numpy(float) for m in methods]
            data = [np.maximum(d[np.isfinite(d)], floor) for d in raw]
            below = sum(int((d < floor).sum()) for d in raw)
            ax.boxplot(data, widths=0.5, showfliers=False, medianprops={"color": "black"})
            if below:
                ax.text(0.02, 0.02, f"{below} value(s) below {floor:g} drawn at {floor:g}",
                        transform=ax.transAxes, fontsize=7)
            for k, d in enumerate(data, start=1):
                x = k + np.random.default_rng(k).uniform(-0.15, 0.15, d.size)
                ax.scatter(x, d, s=10, alpha=0.7, color=f"C{k - 1}", zorder=3)
            ax.set_xticks(range(1, len(methods) + 1))
            ax.set_xticklabels(methods if i == len(metrics) - 1 else [], rotation=25, ha="right", fontsize=8)
            ax.set_title(f"{line}: {metric}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    for i, metric in enumerate(metrics):
        axes[i, 0].set_ylabel(metric)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_top_knockdowns(scores: dict, metrics: list[str], methods: list[str], *, title: str | None = None):
    """Figure 3c-d analog: for the strongest knockdowns of each line, each method's score on each
    metric (rows: metrics, sharing the y axis; columns: lines). Missing values (e.g. a correlation
    of the control baseline, whose delta is zero) leave an empty slot.

    ``scores``: line -> `top_scores` table (its ``condition`` column may hold knockdown names)."""
    import matplotlib.pyplot as plt

    lines = list(scores)
    widths = [max(2, scores[line]["condition"].nunique()) for line in lines]
    fig, axes = plt.subplots(len(metrics), len(lines), figsize=(2.2 + 1.7 * sum(widths), 3.2 * len(metrics)),
                             squeeze=False, sharey="row", gridspec_kw={"width_ratios": widths})
    width = 0.8 / len(methods)
    for j, line in enumerate(lines):
        df = scores[line]
        conditions = list(dict.fromkeys(df["condition"]))
        x = np.arange(len(conditions))
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            for k, method in enumerate(methods):
                values = (df[(df["method"] == method) & (df["metric"] == metric)]
                          .set_index("condition")["value"].reindex(conditions).to_numpy(float))
                ax.bar(x + (k - (len(methods) - 1) / 2) * width, values, width, color=f"C{k}",
                       label=method if (i, j) == (0, 0) else None)
            ax.axhline(0, color="black", lw=0.7)
            ax.set_xticks(x)
            ax.set_xticklabels(conditions if i == len(metrics) - 1 else [], fontsize=9)
            ax.set_title(f"{line}: {metric}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if j == 0:
                ax.set_ylabel(metric)
    fig.legend(loc="lower center", ncol=len(methods), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
