"""Single-gene knockdowns (notebook 05, the paper's Table 3 and Figure 3): what the tables need
beside `xtcdr.experiments`.

A CRISPRi knockdown's profile has two parts: the targeted gene itself, whose fall is large and
certain, and the downstream response. The target is usually the first DEG of its own knockdown,
so how a method predicts that one gene weighs on the DEG metric. This module measures it on every
world of an `xtcdr.experiments.Evaluation` (`xtcdr.experiments.evaluate_worlds`):

- `knockdown_facts`: per held-out condition of one prepared dataset (one world), the target's
  measured log2 fold change, its rank among the condition's DEGs and the size of the response;
- `world_predictors`: one world's model and baselines as predictors (the baselines refitted on
  that world's training cells, as `evaluate_worlds` fits them);
- `readout_rows` / `target_readout`: per knockdown and method, the predicted against the observed
  change of the target and the target's share of the method's squared error on the DEGs, for one
  world's tasks / for every world of an evaluation (stacked with a ``world`` column);
  `readout_summary` and `readout_per_world` summarise them;
- `rescore`: every world's model and baselines scored again on that world's tasks with other
  `evaluate_transfer` options (``drop_genes="target"``: the DEG metrics without the knocked-down
  gene), as an `Evaluation` with the same worlds, models and training;
- `for_line`: an evaluation restricted to one target cell line (Table 3 has one block per line);
- `strongest`: the k knockdowns with the largest response (the paper's Figure 3c-d: "top 5%");
- `line_probe`: does the perturbation code remember the cell line (cross-line transfer), per world?

Plot functions return a matplotlib Figure.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd

from .evaluate import ModelPredictor, dense_float32, evaluate_transfer, target_positions, task_prediction
from .experiments import BASELINE_LABELS, MODEL, ORACLE, Evaluation

__all__ = ["PAPER_TABLES", "TWIN_LINES", "paper_tables", "line_title", "for_line", "log2_fold_change",
           "knockdown_facts", "world_predictors", "readout_rows", "target_readout", "readout_summary",
           "readout_per_world", "rescore", "strongest", "top_scores", "line_probe", "plot_target_readout",
           "plot_per_knockdown", "plot_top_knockdowns"]

# the baselines' row labels in every table (the model's is MODEL, the oracle's ORACLE)
CONTROL, SHIFT, TRAIN_MEAN, LINEAR_TRANSFER, ADDITIVE_LINEAR = (
    BASELINE_LABELS[k] for k in ("control", "source_shift", "train_mean", "linear_transfer", "additive_linear"))
__all__ += ["CONTROL", "SHIFT", "TRAIN_MEAN", "LINEAR_TRANSFER", "ADDITIVE_LINEAR", "MODEL", "ORACLE"]
_BASELINE_OF = {label: name for name, label in BASELINE_LABELS.items()}  # row label -> baseline name

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
    """The same evaluation restricted to the conditions whose target line is ``line``
    (`Evaluation.restrict`): every method and world keeps the same conditions; the worlds, models
    and training summaries stay, so a table of one line carries the verdicts and the convergence
    of the full run."""
    return evaluation.restrict(lambda df: df["cell_type"].astype(str) == str(line))


def log2_fold_change(mean, control_mean):
    """log2 fold change of mean log1p profiles, as `xtcdr.preprocess.deg_statistics` computes it:
    ``log2((expm1(mean) + 1e-9) / (expm1(control_mean) + 1e-9))``."""
    mean, control_mean = np.asarray(mean, dtype=np.float64), np.asarray(control_mean, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log2((np.expm1(mean) + 1e-9) / (np.expm1(control_mean) + 1e-9))


def knockdown_facts(adata, split: str = "test") -> pd.DataFrame:
    """Per condition of ``split`` (all its cells against the controls of its line): the target.

    One prepared dataset, i.e. one world. Columns: ``line``, ``knockdown``, ``target_in_genes``
    (the targeted gene is a gene of the data), ``target_log2fc``, ``n_degs`` (the condition's
    DEGs, ``uns['top_degs']``), ``target_in_degs``, ``target_rank`` (1 = the first DEG; NaN when
    not a DEG) and ``shift`` (Euclidean distance of the condition's mean profile from its line's
    control mean, the size of the whole response). Index: the condition.
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


def world_predictors(result: Evaluation, world: int, protocol: str, labels=None) -> dict:
    """The rows of ``result`` on world number ``world`` (its index) as fitted predictors.

    The model row is `xtcdr.evaluate.ModelPredictor` of ``result.model(world, protocol)`` (the
    weights that protocol scores); a baseline row is refitted on the world's data
    (`xtcdr.baselines.get_baseline`; the fits are deterministic, so they equal those
    `evaluate_worlds` scored); the oracle row is the world's replicate
    (`xtcdr.baselines.ReplicateOracle.from_synthetic`). ``labels``: the rows to build, in order
    (default: every row of ``result.runs[protocol]``). Returns label -> predictor.
    """
    from .baselines import ReplicateOracle, get_baseline
    from .pipeline import dataset_name

    adata = result.worlds[world].adata
    out = {}
    for label in (list(labels) if labels is not None else list(result.runs[protocol])):
        if label == result.model_label:
            out[label] = ModelPredictor(result.model(world, protocol))
        elif label == ORACLE:
            out[label] = ReplicateOracle.from_synthetic(dataset_name(adata), adata).fit(adata)
        elif label in _BASELINE_OF:
            out[label] = get_baseline(_BASELINE_OF[label]).fit(adata)
        else:
            raise ValueError(f"no predictor for the row {label!r}: valid rows are the model "
                             f"({result.model_label!r}), the baselines {sorted(_BASELINE_OF)} and {ORACLE!r}")
    return out


def readout_rows(adata, tasks, predictors: dict) -> pd.DataFrame:
    """How each method predicts the knocked-down gene itself, per task and method (one world).

    ``predictors``: label -> fitted `xtcdr.evaluate.Predictor`. For a task whose target is among
    its scored DEGs (``task.deg_idx``, else ``uns['top_degs']``), with observed mean ``mu`` of the
    scored cells, control mean ``c`` and predicted mean ``m`` (`task_prediction`):

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
            predicted = task_prediction(predictor, X, task)
            error = (observed[degs] - predicted[degs]) ** 2
            change = float(predicted[t] - ctrl[t])
            rows.append({**base, "method": label,
                         "predicted_log2fc": float(log2_fold_change(predicted[t], ctrl[t])),
                         "predicted_change": change,
                         "fall_predicted": change / base["observed_change"] if base["observed_change"] else np.nan,
                         "error_share": float(error[at].sum() / error.sum()) if error.sum() > 0 else np.nan})
    return pd.DataFrame(rows)


def target_readout(result: Evaluation, protocol: str = "within", labels=None, *,
                   extra: dict[str, Callable] | None = None) -> pd.DataFrame:
    """`readout_rows` on every world of ``result``: each world's tasks of ``protocol``, its model
    and baselines (`world_predictors` with ``labels``), stacked with a ``world`` column (the world
    seed; a condition of world 1 is another knockdown draw than the same name in world 0).

    ``extra``: label -> function ``model -> Predictor`` for further predictors built from each
    world's model (e.g. its reconstruction of the read cells).
    """
    frames = []
    for i, w in enumerate(result.worlds):
        predictors = world_predictors(result, i, protocol, labels)
        predictors.update({label: make(result.model(i, protocol)) for label, make in (extra or {}).items()})
        frames.append(readout_rows(w.adata, w.tasks[protocol], predictors).assign(world=w.seed))
    return pd.concat(frames, ignore_index=True)


def readout_summary(readout: pd.DataFrame) -> pd.DataFrame:
    """Per line and method, over the knockdowns of every world in ``readout``: how many (and in
    how many worlds), the median observed and predicted target log2 fold change, the median share
    of the target's change predicted (``fall_predicted``), the mean share of the DEG error and of
    the DEG variance on the target."""
    grouped = readout.groupby(["line", "method"], sort=False)
    return pd.DataFrame({"knockdowns": grouped.size(), "worlds": grouped["world"].nunique(),
                         "observed log2fc (median)": grouped["observed_log2fc"].median(),
                         "predicted log2fc (median)": grouped["predicted_log2fc"].median(),
                         "share of the fall predicted (median)": grouped["fall_predicted"].median(),
                         "target share of DEG error (mean)": grouped["error_share"].mean(),
                         "target share of DEG variance (mean)": grouped["variance_share"].mean()})


def readout_per_world(readout: pd.DataFrame, column: str = "fall_predicted", statistic: str = "median",
                      line: str | None = None) -> pd.DataFrame:
    """One value per world and method: ``statistic`` (``"median"`` or ``"mean"``) of ``column``
    over the world's knockdowns (of ``line`` only, when given). Rows: worlds in order; columns:
    methods. What `xtcdr.verdicts.verdict` pairs, world by world."""
    rows = readout if line is None else readout[readout["line"].astype(str) == str(line)]
    if rows.empty:
        raise ValueError(f"no readout rows{'' if line is None else f' of line {line!r}'}; lines: "
                         f"{sorted(readout['line'].astype(str).unique())}")
    return rows.pivot_table(index="world", columns="method", values=column, aggfunc=statistic, sort=False)


def rescore(result: Evaluation, protocols=None, *, labels=None, world_options: Callable | None = None,
            **options) -> Evaluation:
    """Every world's model and baselines scored again on that world's tasks with other
    `evaluate_transfer` ``options`` (e.g. ``drop_genes="target"``).

    ``protocols``: those of ``result`` to rescore (default: all); ``labels``: the rows (default:
    every row of each protocol, the oracle included; `world_predictors` rebuilds them);
    ``world_options``: a function ``World -> dict`` of options that depend on the world (e.g.
    genes chosen on its training cells), merged over ``options``. The returned `Evaluation` has
    the same worlds, models, training summaries and kinds, so its tables carry the same verdict
    machinery and convergence lines.
    """
    runs = {}
    for protocol in (list(protocols) if protocols is not None else list(result.runs)):
        runs[protocol] = {}
        for i, w in enumerate(result.worlds):
            chosen = {**options, **(world_options(w) if world_options else {})}
            for label, predictor in world_predictors(result, i, protocol, labels).items():
                runs[protocol].setdefault(label, []).append(
                    evaluate_transfer(predictor, w.adata, tasks=w.tasks[protocol], seed=w.seed, **chosen))
    kinds = {label: result.kinds[label] for by_label in runs.values() for label in by_label}
    return replace(result, runs=runs, kinds=kinds)


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

    ``per_condition``: method -> per-condition table of one world (`Evaluation.per_condition`
    with ``world=``), so that a condition names one knockdown."""
    rows = []
    for method, df in per_condition.items():
        if "world" in df and df["world"].nunique() > 1:
            raise ValueError("top_scores needs the conditions of one world; pass per_condition(protocol, world=i)")
        indexed = df.set_index("condition")
        for c in conditions:
            for m in metrics:
                rows.append({"condition": c, "method": method, "metric": m, "value": float(indexed.loc[c, m])})
    return pd.DataFrame(rows)


def line_probe(result: Evaluation, protocol: str = "cross") -> pd.DataFrame:
    """Per world: accuracy of a linear probe that reads the cell line from the perturbation code
    ``P = E_p(x)`` of the held-out knockdowns' cells, fitted on the perturbed cells of training
    knockdowns (`xtcdr.probes.probe_codes`, probe ``"P, held-out perturbations"``, seeded by the
    world), and the chance level (always guessing the larger line). The model of each world is
    the one scored on ``protocol``. Index: the world seed."""
    from .probes import probe_codes

    rows = []
    for i, w in enumerate(result.worlds):
        context = probe_codes(result.model(i, protocol), w.adata, seed=w.seed).context
        row = context.set_index("probe").loc["P, held-out perturbations"]
        rows.append({"world": w.seed, "accuracy": float(row["accuracy"]), "chance": float(row["chance"])})
    return pd.DataFrame(rows).set_index("world")


# ----------------------------------------------------------------------------- figures
def plot_target_readout(readout: pd.DataFrame, methods: list[str], *, title: str | None = None):
    """Left: predicted against observed change of each knockdown's own target against the control
    mean, on the log1p scale the metrics use (one marker per knockdown of each world and method;
    the diagonal is a perfect prediction).
    Right: the target's share of each method's squared error on the DEGs, per knockdown of each
    world (bar: the mean)."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={"width_ratios": [1, 1.1]})
    markers = ["o", "s", "^", "D", "v"]
    lo = float(min(readout["observed_change"].min(), readout["predicted_change"].min(), 0)) * 1.08 - 0.05
    for i, method in enumerate(methods):
        rows = readout[readout["method"] == method]
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
    bx.set_title("one dot per knockdown and world; bar: mean", fontsize=10)
    bx.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_per_knockdown(per_line: dict, metrics: list[str], methods: list[str], *, title: str | None = None,
                       floor: float = -1.0):
    """Figure 3a-b analog: one panel per (line, metric), one box of per-knockdown scores per
    method (one point per row of the per-condition tables: with every world stacked, one per
    knockdown of each world); panels of the same metric share their y axis. Values below
    ``floor`` are drawn at it.

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
