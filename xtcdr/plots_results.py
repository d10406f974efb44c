"""Figures of results (notebooks 04 to 08): per-condition scores by method, observed against
predicted means, per-drug scores, knockdown profiles, advantages over a baseline, combinations'
DEGs and interaction residuals, and every training seed as a dot.

Every function returns a matplotlib ``Figure`` (save it with ``xtcdr.report.save_figure``); none
calls ``plt.show``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plots_common import finish_figure

__all__ = ["plot_method_boxplots", "plot_embedding_panels", "plot_centroids_pca", "plot_mean_scatter", "plot_per_drug",
           "plot_knockdown_profile", "plot_advantage", "plot_double_degs", "plot_interaction_residuals",
           "plot_seed_dots"]


# --- notebook 04: held-out drugs (Figure 2 analogs) ---
_METRIC_LABELS = {
    "r2_all": r"$R^2$, all genes", "r2_deg": r"$R^2$, top-50 DEGs",
    "ev_all": "explained variance, all genes", "ev_deg": "explained variance, top-50 DEGs",
    "pcc_all": "Pearson r, all genes", "pcc_deg": "Pearson r, top-50 DEGs",
    "r2_all_delta": r"$R^2$ of deltas, all genes", "r2_deg_delta": r"$R^2$ of deltas, top-50 DEGs",
    "pcc_all_delta": "Pearson r of deltas, all genes", "pcc_deg_delta": "Pearson r of deltas, DEGs",
}


def plot_method_boxplots(results: dict, metrics=("r2_all", "r2_deg"), *, floor: float = -1.0,
                         title: str | None = None) -> Figure:
    """Boxplots of per-condition scores, one box per method and one panel per metric.

    ``results``: dict method -> DataFrame with one row per condition (``evaluate_transfer``
    output) holding the ``metrics`` columns. Values below ``floor`` are drawn at ``floor`` as
    downward triangles (their number is given in the x label) so one failure does not squash
    the rest of the panel.
    """
    names = list(results)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.5, 1.15 * len(names) + 1.5) * len(metrics), 4.2),
                             squeeze=False)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[0], metrics):
        data = [results[n][metric].to_numpy(float) for n in names]
        data = [d[np.isfinite(d)] for d in data]
        clipped = [np.maximum(d, floor) for d in data]
        ax.boxplot(clipped, widths=0.55, showfliers=False, medianprops={"color": "black"})
        n_below = 0
        for i, (raw, d) in enumerate(zip(data, clipped), start=1):
            x = i + rng.uniform(-0.18, 0.18, d.size)
            below = raw < floor
            n_below += int(below.sum())
            ax.scatter(x[~below], d[~below], s=9, alpha=0.6, color=f"C{(i - 1) % 10}", zorder=3)
            ax.scatter(x[below], d[below], s=22, marker="v", color="crimson", zorder=3)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=9)
        ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
        ax.set_title(_METRIC_LABELS.get(metric, metric), fontsize=10)
        if n_below:
            ax.set_xlabel(f"{n_below} value(s) below {floor:g} drawn at {floor:g} (red triangles)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    return finish_figure(fig, title)


def plot_embedding_panels(coords: np.ndarray, obs: pd.DataFrame, columns, *,
                          title: str | None = None, point_size: float = 5.0) -> Figure:
    """One scatter panel per ``obs`` column over the same 2-D embedding (e.g. a UMAP).

    ``coords``: (n_cells, 2) array; ``obs``: n_cells rows; ``columns``: the categorical columns to
    colour by. The legend of each panel sits below it.
    """
    coords = np.asarray(coords, float)
    columns = list(columns)
    fig, axes = plt.subplots(1, len(columns), figsize=(4.8 * len(columns), 5.4), squeeze=False)
    order = np.random.default_rng(0).permutation(coords.shape[0])  # no category hides another
    for ax, column in zip(axes[0], columns):
        labels = obs[column].astype(str).to_numpy()
        cats = sorted(set(labels))
        cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
        colour = {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
        ax.scatter(coords[order, 0], coords[order, 1], s=point_size, alpha=0.7, linewidths=0,
                   c=[colour[labels[i]] for i in order])
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour[c], label=c) for c in cats]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.04),
                  ncol=min(3, len(cats)), fontsize=8, frameon=False)
        ax.set_title(f"coloured by {column}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return finish_figure(fig, title)


def plot_centroids_pca(X: np.ndarray, tasks: list, predictions: dict, *, max_cells: int = 60, seed: int = 0,
                       title: str | None = None) -> Figure:
    """One panel per target context: its observed cells in a PCA of that context, and per held-out
    drug the observed centroid joined by lines to each method's predicted centroid.

    ``X``: expression (cells x genes); ``tasks``: the cross-context tasks (`xtcdr.evaluate.TransferTask`:
    ``cell_type``, ``perturbation``, ``target_idx``, ``control_idx``); ``predictions``: method ->
    {condition: predicted mean profile}. The PCA (2 components) is fitted on each context's observed
    cells of the held-out drugs and its controls; predicted means are projected into it. Dots: up to
    ``max_cells`` observed cells per drug (colour = drug); black star: the controls' centroid; circle:
    the observed centroid; one marker per method at its predicted centroid, joined to the observed one.
    A short line means the prediction lands near the drug's cells in this view; the view keeps two
    dimensions of many, so the verdicts stay with the tables.
    """
    from sklearn.decomposition import PCA

    contexts = sorted({t.cell_type for t in tasks})
    markers = ["^", "s", "D", "v", "P"]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(contexts), figsize=(5.0 * len(contexts), 4.6), squeeze=False)
    for ax, ctx in zip(axes[0], contexts):
        mine = [t for t in tasks if t.cell_type == ctx]
        rows = np.concatenate([t.target_idx for t in mine] + [mine[0].control_idx])
        pca = PCA(n_components=2, random_state=seed).fit(np.asarray(X[rows], dtype=np.float64))
        ctrl = pca.transform(np.asarray(X[mine[0].control_idx], dtype=np.float64).mean(0, keepdims=True))[0]
        ax.scatter(*ctrl, marker="*", s=180, color="black", zorder=5, label="controls (centroid)")
        for k, task in enumerate(mine):
            color = f"C{k % 10}"
            cells = task.target_idx if task.target_idx.size <= max_cells else rng.choice(task.target_idx, max_cells, replace=False)
            xy = pca.transform(np.asarray(X[cells], dtype=np.float64))
            ax.scatter(xy[:, 0], xy[:, 1], s=6, color=color, alpha=0.25, zorder=1)
            observed = pca.transform(np.asarray(X[task.target_idx], dtype=np.float64).mean(0, keepdims=True))[0]
            ax.scatter(*observed, s=70, color=color, edgecolor="black", zorder=4)
            ax.annotate(task.perturbation, observed, fontsize=7, xytext=(4, 4), textcoords="offset points")
            for j, (method, by_condition) in enumerate(predictions.items()):
                if task.condition not in by_condition:
                    continue
                predicted = pca.transform(np.asarray(by_condition[task.condition], dtype=np.float64)[None])[0]
                ax.plot(*zip(observed, predicted), color=color, lw=1, ls="-" if j == 0 else "--", zorder=2)
                ax.scatter(*predicted, marker=markers[j % len(markers)], s=45, color=color, edgecolor="black",
                           zorder=3, label=method if k == 0 else None)
        ax.scatter([], [], s=70, color="white", edgecolor="black", label="observed (centroid)")
        ax.set_title(ctx, fontsize=10)
        ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%})")
        ax.set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
        ax.legend(fontsize=7, loc="best")
    return finish_figure(fig, title)


def plot_mean_scatter(observed: dict, predictions: dict, degs: dict, *,
                      title: str | None = None) -> Figure:
    """Predicted against observed mean expression per gene: rows = conditions, columns = methods.

    ``observed``: dict condition -> observed mean profile; ``predictions``: dict method -> dict
    condition -> predicted mean profile; ``degs``: dict condition -> positions of the top-50
    DEGs (drawn in red, the other genes in grey). Each panel's title gives R^2 over all genes and
    over the DEGs.
    """
    from xtcdr.evaluate import r2

    conditions, methods = list(observed), list(predictions)
    fig, axes = plt.subplots(len(conditions), len(methods), figsize=(3.9 * len(methods), 3.6 * len(conditions)),
                             squeeze=False)
    for r, cond in enumerate(conditions):
        obs_mean = np.asarray(observed[cond], float)
        deg = np.asarray(degs[cond], int)
        other = np.setdiff1d(np.arange(obs_mean.size), deg)
        for c, method in enumerate(methods):
            ax = axes[r, c]
            pred = np.asarray(predictions[method][cond], float)
            ax.scatter(obs_mean[other], pred[other], s=4, color="0.6", alpha=0.5, linewidths=0,
                       label="other genes")
            ax.scatter(obs_mean[deg], pred[deg], s=10, color="crimson", alpha=0.8, linewidths=0,
                       label="top-50 DEGs")
            lo = min(obs_mean.min(), pred.min())
            hi = max(obs_mean.max(), pred.max())
            ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
            ax.set_title(f"{method}\n{cond}: $R^2$ all {r2(obs_mean, pred):.2f}, "
                         f"DEGs {r2(obs_mean[deg], pred[deg]):.2f}", fontsize=9)
            ax.set_xlabel("observed mean (log1p)", fontsize=8)
            ax.set_ylabel("predicted mean (log1p)", fontsize=8)
            ax.tick_params(labelsize=8)
    axes[0, 0].legend(fontsize=8, markerscale=2, loc="upper left")
    return finish_figure(fig, title)


def plot_per_drug(results: dict, metric: str = "r2_deg", *, reference: str | None = None,
                  floor: float = -1.0, title: str | None = None) -> Figure:
    """Per held-out perturbation, one marker per method: the metric averaged over cell lines.

    ``results``: dict method -> DataFrame with ``perturbation`` and ``metric`` columns (one row per
    condition). Rows are sorted by the ``reference`` method's score (default: the first method).
    Values below ``floor`` are drawn at ``floor`` with an open marker.
    """
    names = list(results)
    reference = reference or names[0]
    per_drug = pd.DataFrame({n: df.groupby("perturbation", observed=True)[metric].mean()
                             for n, df in results.items()})
    per_drug = per_drug.sort_values(reference)
    markers = ["o", "s", "D", "^", "P", "X", "v", "*"]
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(per_drug) + 1.8))
    y = np.arange(len(per_drug))
    for i, name in enumerate(names):
        values = per_drug[name].to_numpy(float)
        shown = np.maximum(values, floor)
        below = values < floor
        offset = (i - (len(names) - 1) / 2) * 0.12
        ax.scatter(shown[~below], y[~below] + offset, marker=markers[i % len(markers)], s=42,
                   color=f"C{i % 10}", label=name, zorder=3)
        if below.any():
            ax.scatter(shown[below], y[below] + offset, marker=markers[i % len(markers)], s=42,
                       facecolors="none", edgecolors=f"C{i % 10}", zorder=3)
    ax.set_yticks(y)
    ax.set_yticklabels(per_drug.index.astype(str), fontsize=9)
    ax.set_xlabel(f"{_METRIC_LABELS.get(metric, metric)} (mean over cell lines)"
                  + (f"; open markers: below {floor:g}" if (per_drug.to_numpy() < floor).any() else ""))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / max(len(per_drug), 1)),
              ncol=min(4, len(names)), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- notebook 05: single-gene knockdowns ---
def plot_knockdown_profile(mean_control: np.ndarray, mean_knockdown: np.ndarray, target: int,
                           degs: np.ndarray, target_log2fc: pd.Series, *, label: str = "",
                           min_log2fc: float = 1.0, title: str | None = None) -> Figure:
    """What one knockdown does (left) and where every knockdown's own target lands (right).

    Left: log2 fold change of each gene (knockdown mean against control mean, log1p scale
    back-transformed as in `xtcdr.preprocess.deg_statistics`) against the gene's control level;
    the condition's DEGs in red, its target gene circled. Right: the target gene's log2 fold
    change for every knockdown in ``target_log2fc`` (index: condition), with the DEG threshold.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log2((np.expm1(mean_knockdown) + 1e-9) / (np.expm1(mean_control) + 1e-9))
    lfc = np.clip(lfc, -8, 8)   # genes with no control counts would sit at -30 (pseudocount 1e-9)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
    ax.scatter(mean_control, lfc, s=5, color="0.6", label="all genes")
    ax.scatter(mean_control[degs], lfc[degs], s=12, color="crimson", label=f"top DEGs ({len(degs)})")
    ax.scatter([mean_control[target]], [lfc[target]], s=120, facecolors="none", edgecolors="black",
               linewidths=1.5, label="the knocked-down gene", zorder=4)
    for y in (-min_log2fc, min_log2fc):
        ax.axhline(y, color="0.3", lw=0.7, ls="--")
    ax.set_xlabel("control mean (log1p expression)")
    ax.set_ylabel("log2 fold change vs control (clipped at ±8)")
    ax.set_title(f"one knockdown: {label}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    values = target_log2fc.sort_values()
    bx.barh(np.arange(len(values)), values.to_numpy(), color="C0")
    bx.axvline(-min_log2fc, color="0.3", lw=0.7, ls="--")
    bx.set_yticks(np.arange(len(values)))
    bx.set_yticklabels(values.index, fontsize=7 if len(values) <= 40 else 4)
    bx.set_xlabel("log2 fold change of the targeted gene itself")
    bx.set_title("every held-out knockdown: its own target", fontsize=10)
    return finish_figure(fig, title, fontsize=11)


def plot_advantage(advantage: dict, *, title: str | None = None) -> Figure:
    """Metric differences to a reference method for a few conditions: one panel per group.

    ``advantage``: panel title -> DataFrame with rows = conditions, columns = a MultiIndex
    (method, metric) of differences (method minus reference). Bars are grouped by condition, one
    colour per metric; methods other than the first are drawn as hollow bars beside it.
    """
    panels = list(advantage)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        df = advantage[panel]
        methods = list(dict.fromkeys(df.columns.get_level_values(0)))
        metrics = list(dict.fromkeys(df.columns.get_level_values(1)))
        n_bars = len(methods) * len(metrics)
        width = 0.8 / n_bars
        x = np.arange(len(df))
        for i, method in enumerate(methods):
            for j, metric in enumerate(metrics):
                offset = (i * len(metrics) + j - (n_bars - 1) / 2) * width
                style = ({"color": f"C{j}"} if i == 0 else
                         {"facecolor": "none", "edgecolor": f"C{j}", "hatch": "//"})
                ax.bar(x + offset, df[(method, metric)].to_numpy(float), width, **style,
                       label=f"{method}: {_METRIC_LABELS.get(metric, metric)}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(df.index, rotation=20, ha="right", fontsize=9)
        ax.set_ylabel("advantage over the control baseline")
        ax.set_title(panel, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return fig


# --- notebook 06: combinations (Figure 4 analog) ---
def plot_double_degs(observed_cells: np.ndarray, predictions: dict, genes, *,
                     title: str | None = None) -> Figure:
    """Figure 4 analog: per DEG of one double, the observed cells against predicted means.

    ``observed_cells``: (cells, genes) expression of the double's scored cells for the genes
    shown; ``predictions``: dict label -> mean profile over the same genes (e.g. the model, the
    additive baseline, the control mean); ``genes``: their names. Boxes show the observed cells
    (whiskers 5-95%), a black bar their mean, one marker per prediction.
    """
    observed_cells = np.asarray(observed_cells, float)
    genes = [str(g) for g in genes]
    x = np.arange(len(genes))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.5 * len(genes) + 2.5), 4.2))
    ax.boxplot([observed_cells[:, j] for j in x], positions=x, widths=0.55, whis=(5, 95),
               showfliers=False, patch_artist=True,
               boxprops=dict(facecolor="0.88", edgecolor="0.55"), medianprops=dict(color="0.55"),
               whiskerprops=dict(color="0.55"), capprops=dict(color="0.55"))
    ax.scatter(x, observed_cells.mean(0), marker="_", s=260, color="black", linewidths=2,
               zorder=4, label="observed mean")
    markers = ["o", "s", "D", "^", "v", "P"]
    for i, (label, values) in enumerate(predictions.items()):
        offset = (i - (len(predictions) - 1) / 2) * 0.16
        ax.scatter(x + offset, np.asarray(values, float), marker=markers[i % len(markers)], s=34,
                   color=f"C{i % 10}", edgecolors="white", linewidths=0.5, zorder=5, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(genes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("expression (log1p of normalised counts)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(predictions) + 1, loc="upper center",
              bbox_to_anchor=(0.5, -0.28), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_interaction_residuals(residuals: pd.DataFrame, method: str, example: dict | None = None, *,
                               title: str | None = None) -> Figure:
    """Does a predictor capture what additivity misses?

    Left: per double, the distance of the additive prediction to the reference (``true_norm``,
    |O - A|) against the distance of ``method`` to it, sqrt((1 - residual_r2)) |O - A|, one
    marker per double, coloured by ``residuals['group']``; below the diagonal the method is closer
    to the reference than the additive baseline. Right (when ``example`` is given: dict with
    ``true``, ``pred`` gene vectors, ``degs`` positions and ``name``): for one double, the
    predicted residual M - A against the true residual O - A per gene.
    """
    rows = residuals[residuals["method"] == method]
    n_panels = 2 if example is not None else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.4), squeeze=False)
    ax = axes[0, 0]
    add_dist = rows["true_norm"].to_numpy(float)
    method_dist = np.sqrt(np.clip(1 - rows["residual_r2"].to_numpy(float), 0, None)) * add_dist
    groups = rows["group"].astype(str).to_numpy() if "group" in rows else np.full(len(rows), "doubles")
    for i, g in enumerate(sorted(set(groups))):
        keep = groups == g
        ax.scatter(add_dist[keep], method_dist[keep], s=30, color=f"C{i}", label=f"{g} ({keep.sum()})",
                   edgecolors="white", linewidths=0.5)
    hi = float(max(add_dist.max(), method_dist.max())) * 1.05 if len(rows) else 1.0
    ax.plot([0, hi], [0, hi], color="black", lw=0.8, ls="--")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("additive baseline: distance to reference |O - A|")
    ax.set_ylabel(f"{method}: distance to reference |O - M|")
    ax.set_title("per held-out double (below the line: closer than additive)", fontsize=9)
    ax.legend(fontsize=8)
    if example is not None:
        ax = axes[0, 1]
        true, pred = np.asarray(example["true"], float), np.asarray(example["pred"], float)
        deg = np.asarray(example.get("degs", []), int)
        other = np.setdiff1d(np.arange(true.size), deg)
        ax.scatter(true[other], pred[other], s=4, color="0.6", alpha=0.5, linewidths=0, label="other genes")
        ax.scatter(true[deg], pred[deg], s=12, color="crimson", linewidths=0, label="top-50 DEGs")
        lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axvline(0, color="0.3", lw=0.6)
        ax.set_xlabel("true residual O - A (what additivity misses)")
        ax.set_ylabel(f"predicted residual M - A ({method})")
        ax.set_aspect("equal", adjustable="datalim")  # the two residuals on one scale
        ax.set_title(example.get("name", ""), fontsize=9)
        ax.legend(fontsize=8, markerscale=2)
    return finish_figure(fig, title, fontsize=10)


# --- notebooks 07 and 08: every training seed as a dot ---
def plot_seed_dots(values: pd.DataFrame, columns: list[str], *, group: str = "configuration",
                   intervals: pd.DataFrame | None = None, zero_line: bool = False,
                   references: dict[str, float] | None = None, ylabel: str = "",
                   labels: dict[str, str] | None = None, ncols: int = 3,
                   pair_by: str | None = None, title: str | None = None,
                   ylim: tuple[float, float] | None = None) -> Figure:
    """One panel per column of ``values``: each group (x) with every seed as a dot and its mean.

    ``values``: one row per (group, seed) with a ``group`` column and the ``columns``.
    ``intervals`` (optional): index (group, column) with ``ci_low`` / ``ci_high`` (e.g.
    `xtcdr.ablations.paired_table`), drawn as a vertical bar around the mean. ``zero_line`` draws
    y = 0 (for differences); ``references`` maps a column to a dashed horizontal level (e.g. a
    chance level); ``labels`` gives panel titles. ``pair_by`` (e.g. ``"seed"``): dots of the same
    value sit at the same offset in every group and are joined by a thin grey line (paired runs).
    ``ylim``: one y range for every panel (panels of one kind of quantity, e.g. probe R^2 and
    accuracies in [0, 1], compare like with like instead of each zooming on its own spread).
    """
    groups = list(dict.fromkeys(values[group]))
    n = len(columns)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, 3.3 * nrows + 0.4), squeeze=False)
    rng = np.random.default_rng(0)
    pairs = list(dict.fromkeys(values[pair_by])) if pair_by else []
    offset = {p: (j - (len(pairs) - 1) / 2) * min(0.1, 0.24 / max(1, len(pairs) - 1))
              for j, p in enumerate(pairs)}
    for k, column in enumerate(columns):
        ax = axes.flat[k]
        if pair_by:
            for p in pairs:
                rows = values[values[pair_by] == p].set_index(group).reindex(groups)
                ax.plot(np.arange(len(groups)) + offset[p], rows[column].to_numpy(float), color="0.6",
                        lw=0.7, alpha=0.8, zorder=2)
        for i, g in enumerate(groups):
            sub = values[values[group] == g]
            y = sub[column].to_numpy(float)
            if pair_by:
                jitter = np.array([offset[p] for p in sub[pair_by]])
            else:
                jitter = rng.uniform(-0.12, 0.12, y.size) if y.size > 1 else np.zeros(y.size)
            ax.scatter(i + jitter, y, s=22, color=f"C{i}", alpha=0.8, zorder=3,
                       edgecolor="white", linewidth=0.5)
            if np.isfinite(y).any():
                ax.plot([i - 0.28, i + 0.28], [np.nanmean(y)] * 2, color="k", lw=1.6, zorder=4)
            if intervals is not None and (g, column) in intervals.index:
                low, high = intervals.loc[(g, column), ["ci_low", "ci_high"]].to_numpy(float)
                if np.isfinite([low, high]).all():
                    ax.plot([i + 0.34] * 2, [low, high], color="k", lw=1.0, zorder=4)
                    ax.plot([i + 0.30, i + 0.38], [low] * 2, color="k", lw=1.0)
                    ax.plot([i + 0.30, i + 0.38], [high] * 2, color="k", lw=1.0)
        if zero_line:
            ax.axhline(0, color="0.4", lw=0.9, ls="-", zorder=1)
        if references and column in references:
            ax.axhline(references[column], color="0.3", lw=1.0, ls="--", zorder=1)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([str(g).replace(" ", "\n", 1) for g in groups], fontsize=8)
        ax.set_title((labels or {}).get(column, column), fontsize=10)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if k % ncols == 0 and ylabel:
            ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return finish_figure(fig, title)
