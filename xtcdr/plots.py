"""Figures. Every function returns a matplotlib ``Figure`` (save it with
``xtcdr.report.save_figure``); none calls ``plt.show``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__: list[str] = []


# --- notebooks 02 and 03: loss terms, disentanglement, training history, probes -------------
_TERM_LABELS = {
    "orth": r"$\mathcal{L}_{orth}$ (Eq. 1)",
    "sim": r"$\mathcal{L}_{sim}$ (Eq. 2)",
    "reco_basal": r"$\mathcal{L}_{reco}^{(1)}$ basal (Eq. 3)",
    "reco_self": r"$\mathcal{L}_{reco}^{(2)}$ self (Eq. 4)",
    "cross": r"$\mathcal{L}_{cross}$ (Eq. 5)",
    "total": r"$\mathcal{L}$ weighted total (Eq. 6)",
}


def plot_loss_trace(trace: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Every loss term against the optimisation step, one panel per term (log scale).

    ``trace``: one row per step, a ``step`` column and one column per term (``orth``, ``sim``,
    ``reco_basal``, ``reco_self``, ``cross``, ``total``).
    """
    terms = [t for t in _TERM_LABELS if t in trace.columns]
    ncols = 3
    nrows = -(-len(terms) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        values = trace[term].to_numpy(float)
        ax.plot(trace["step"], values, color="C0")
        if np.all(values > 0):
            ax.set_yscale("log")
        ax.set_title(_TERM_LABELS[term], fontsize=10)
        ax.set_xlabel("Adam step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_loss_trace"]


def plot_cosine_shift(before: dict, after: dict, *, title: str | None = None) -> Figure:
    """Histograms of cosine similarities before and after training, one panel per kind.

    ``before`` / ``after``: dicts name -> array of cosines (e.g. from
    ``xtcdr.widgets.representation_cosines``).
    """
    names = list(before)
    fig, axes = plt.subplots(1, len(names), figsize=(4.3 * len(names), 3.3), squeeze=False)
    bins = np.linspace(-1, 1, 41)
    for ax, name in zip(axes[0], names):
        for values, label, color in ((before[name], "before", "0.6"), (after[name], "after", "C1")):
            values = np.asarray(values, float)
            ax.hist(values, bins=bins, color=color, alpha=0.6,
                    label=f"{label} (median {np.median(values):+.2f})")
            ax.axvline(np.median(values), color=color, lw=1.5, ls="--")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("cosine similarity")
        ax.set_xlim(-1.02, 1.02)
        ax.legend(fontsize=8, loc="upper left")
    axes[0, 0].set_ylabel("count")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_cosine_shift"]


def plot_tiny_run_summary(trace: pd.DataFrame, before: dict, after: dict, *,
                          title: str | None = None) -> Figure:
    """Compact view of a tiny optimisation: the loss terms over steps and the cosines.

    Left: every term (and the weighted total) against the step, log scale. Right: box plots of
    each cosine similarity before (grey) and after (orange) the steps.
    """
    fig, (ax_loss, ax_cos) = plt.subplots(1, 2, figsize=(12, 3.8),
                                          gridspec_kw={"width_ratios": [1, 1.2]})
    for i, term in enumerate(t for t in _TERM_LABELS if t in trace.columns):
        values = trace[term].to_numpy(float)
        ax_loss.plot(trace["step"], np.where(values > 0, values, np.nan), label=_TERM_LABELS[term],
                     color="k" if term == "total" else f"C{i}", lw=2 if term == "total" else 1.2)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("Adam step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=7, loc="upper right")
    ax_loss.grid(alpha=0.3)
    names = list(before)
    positions = np.arange(len(names)) * 3.0
    for offset, data, color, label in ((-0.5, before, "0.6", "before"), (0.5, after, "C1", "after")):
        box = ax_cos.boxplot([np.asarray(data[n], float) for n in names], positions=positions + offset,
                             widths=0.8, patch_artist=True, showfliers=False,
                             medianprops={"color": "k"})
        for patch in box["boxes"]:
            patch.set_facecolor(color)
        ax_cos.plot([], [], color=color, lw=6, label=label)
    ax_cos.axhline(0, color="k", lw=0.8)
    ax_cos.set_xticks(positions)
    ax_cos.set_xticklabels([n.replace(" (", "\n(") for n in names], fontsize=8)
    ax_cos.set_ylabel("cosine similarity")
    ax_cos.set_ylim(-1.05, 1.05)
    ax_cos.legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ += ["plot_tiny_run_summary"]


def plot_pair_codes(codes: dict, *, title: str | None = None) -> Figure:
    """The latent codes of one pair: ``S^a`` and ``S^b`` (left), ``P^a`` and ``P^b`` (right).

    ``codes``: dict with keys ``"S^a"``, ``"S^b"``, ``"P^a"``, ``"P^b"`` -> 1-d arrays.
    """
    def cos(u, v):
        return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12))

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), sharey=False)
    for ax, (k1, k2) in zip(axes, (("S^a", "S^b"), ("P^a", "P^b"))):
        u, v = np.asarray(codes[k1], float), np.asarray(codes[k2], float)
        units = np.arange(u.size)
        ax.bar(units - 0.2, u, width=0.4, label=f"${k1}$", color="C0")
        ax.bar(units + 0.2, v, width=0.4, label=f"${k2}$", color="C1")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("latent unit")
        ax.set_title(f"${k1}$ vs ${k2}$: cosine {cos(u, v):+.2f}", fontsize=10)
        ax.legend(fontsize=8)
    sa, pa, sb, pb = (np.asarray(codes[k], float) for k in ("S^a", "P^a", "S^b", "P^b"))
    same_cell = f"same cell: cos($P^a$, $S^a$) = {cos(pa, sa):+.2f}, cos($P^b$, $S^b$) = {cos(pb, sb):+.2f}"
    fig.suptitle(f"{title}\n{same_cell}" if title else same_cell, fontsize=10)
    fig.tight_layout()
    return fig


__all__ += ["plot_pair_codes"]


def plot_training_history(history: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Train and validation curves of every loss term over optimizer steps, plus ``valid_r2_deg``
    and ``lr``.

    ``history``: the DataFrame returned by ``xtcdr.train.fit`` (``step``, ``train_<term>``,
    ``valid_<term>``, ``valid_r2_deg``, ``lr``).
    """
    terms = [t for t in _TERM_LABELS if f"train_{t}" in history.columns]
    extra = [c for c in ("valid_r2_deg", "lr") if c in history.columns]
    panels = terms + extra
    ncols = 4
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, 2.9 * nrows), squeeze=False)
    epoch = history["step"] if "step" in history.columns else np.arange(1, len(history) + 1)
    for ax, name in zip(axes.flat, panels):
        if name in terms:
            for split, color in (("train", "C0"), ("valid", "C1")):
                col = f"{split}_{name}"
                if col in history.columns:
                    ax.plot(epoch, history[col], color=color, label=split, marker=".", ms=3)
            values = history[[c for c in (f"train_{name}", f"valid_{name}") if c in history]].to_numpy(float)
            if np.all(values[np.isfinite(values)] > 0):
                ax.set_yscale("log")
            ax.set_title(_TERM_LABELS[name], fontsize=10)
            ax.legend(fontsize=8)
        elif name == "valid_r2_deg":
            ax.plot(epoch, history[name], color="C2", marker=".", ms=3)
            ax.set_title("validation $R^2$ on top DEGs\n(cross transfer, per condition)", fontsize=9)
            finite = history[name].to_numpy(float)
            finite = finite[np.isfinite(finite)]
            if finite.size:
                ax.set_ylim(max(-1.0, finite.min() - 0.05), 1.0)
        else:
            ax.plot(epoch, history[name], color="0.3")
            ax.set_title("learning rate", fontsize=10)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_training_history"]


_SIGNALS = {"valid_total": ("within-line validation loss (Eq. 6)", "C1"),
            "transfer_loss": ("transfer validation: 1 - pooled $R^2$ on DEGs", "C2")}


def plot_validation_signals(histories: dict[str, pd.DataFrame], *, test: dict | None = None,
                            title: str | None = None) -> Figure:
    """The two validation signals of each training over optimizer steps, side by side.

    ``histories``: label -> a `xtcdr.train.fit` history (its ``attrs['training']`` marks each
    monitor's best step and where training stopped). Each signal is drawn relative to its own
    minimum (1 = its best value), so both fit one axis. ``test``: label -> DataFrame with ``step``
    and a test metric column ``r2_deg`` (teaching only; never used for selection), drawn on a
    second axis.
    """
    fig, axes = plt.subplots(1, len(histories), figsize=(5.2 * len(histories), 3.8), squeeze=False)
    for ax, (label, history) in zip(axes[0], histories.items()):
        info = history.attrs.get("training", {})
        for column, (name, color) in _SIGNALS.items():
            if column not in history:
                continue
            values = history[column].to_numpy(float)
            ax.plot(history["step"], values / np.nanmin(values), color=color, label=name)
            monitor = "valid" if column == "valid_total" else "transfer"
            best = info.get("monitors", {}).get(monitor, {}).get("best_step")
            if best is not None:
                ax.axvline(best, color=color, ls=":", lw=1.2)
        if info.get("steps"):
            ax.axvline(info["steps"], color="0.3", lw=1, label=f"stopped ({info.get('stop_reason')})")
        ax.set_ylim(0.95, 2.5)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("value / its minimum")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if test and label in test:
            ax2 = ax.twinx()
            curve = test[label]
            ax2.plot(curve["step"], curve["r2_deg"], color="k", ls="--", lw=1, label="test $R^2$ DEGs (teaching only)")
            ax2.set_ylabel("test $R^2$ on DEGs")
            ax2.legend(fontsize=7, loc="lower right")
        ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


__all__ += ["plot_validation_signals"]


def plot_probes(r2: pd.DataFrame | None, context: pd.DataFrame | None = None, *,
                title: str | None = None) -> Figure:
    """Linear-probe results: R^2 from each embedding to each true factor, and context accuracy.

    ``r2`` (or None): columns ``embedding`` (e.g. ``"S = E_s(x)"``), ``target`` (e.g.
    ``"true basal"``) and ``r2`` (held-out R^2); grouped bars, one group per embedding, one colour
    per target. ``context`` (or None): columns ``probe`` (label), ``accuracy`` and ``chance`` of a
    classifier predicting the cell line; bars with the chance level dashed. At least one is needed.
    """
    has_r2 = r2 is not None and len(r2) > 0
    has_context = context is not None and len(context) > 0
    if not (has_r2 or has_context):
        raise ValueError("plot_probes needs a non-empty r2 table, a non-empty context table, or both")
    ratios = [1.3] * has_r2 + [1.0] * has_context
    fig, axes = plt.subplots(1, len(ratios), figsize=(5 * sum(ratios) + 0.5, 4.0), squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    panels = list(axes[0])
    if has_r2:
        _probe_r2_panel(panels.pop(0), r2)
    if has_context:
        _probe_context_panel(panels.pop(0), context)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _probe_r2_panel(ax, r2: pd.DataFrame) -> None:
    table = r2.pivot(index="embedding", columns="target", values="r2")
    table = table.reindex(index=list(dict.fromkeys(r2["embedding"])),
                          columns=list(dict.fromkeys(r2["target"])))
    x = np.arange(len(table))
    width = 0.8 / max(1, table.shape[1])
    for j, col in enumerate(table.columns):
        vals = table[col].to_numpy(float)
        bars = ax.bar(x + (j - (table.shape[1] - 1) / 2) * width, vals, width=width, label=col,
                      color=f"C{j}")
        for bar, v in zip(bars, vals):
            if np.isfinite(v):
                ax.text(bar.get_x() + bar.get_width() / 2, max(v, 0) + 0.02, f"{v:.2f}",
                        ha="center", fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(table.index, fontsize=9)
    ax.set_ylabel("held-out $R^2$ (linear probe)")
    values = table.to_numpy(float)
    low = np.nanmin(values) if np.isfinite(values).any() else 0.0
    ax.set_ylim(min(-0.05, low - 0.05), 1.22)
    ax.legend(fontsize=8, loc="upper center", ncol=max(1, table.shape[1]), title="predicted factor",
              title_fontsize=8)
    ax.set_title("what each embedding encodes linearly", fontsize=10)


def _probe_context_panel(ax, context: pd.DataFrame) -> None:
    x = np.arange(len(context))
    ax.bar(x, context["accuracy"], color=[f"C{i + 3}" for i in range(len(context))])
    for i, (acc, chance) in enumerate(zip(context["accuracy"], context["chance"])):
        ax.plot([i - 0.4, i + 0.4], [chance, chance], color="k", ls="--", lw=1)
        ax.text(i, acc + 0.02, f"{acc:.2f}", ha="center", fontsize=8)
    ax.plot([], [], color="k", ls="--", lw=1, label="chance (largest class)")
    ax.set_xticks(x)
    ax.set_xticklabels([str(p).replace(", ", "\n") for p in context["probe"]], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("cell line predicted from the embedding", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")


__all__ += ["plot_probes"]


def plot_embedding_pca(embeddings: dict, labels, *, title: str | None = None,
                       max_points: int = 3000, seed: int = 0) -> Figure:
    """First two principal components of each embedding, coloured by ``labels`` (e.g. cell line).

    ``embeddings``: dict name -> (n_cells, d) array; ``labels``: n_cells labels.
    """
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(labels.size, min(max_points, labels.size), replace=False))
    cats = sorted(set(labels))
    fig, axes = plt.subplots(1, len(embeddings), figsize=(4.4 * len(embeddings), 3.9), squeeze=False)
    for ax, (name, emb) in zip(axes[0], embeddings.items()):
        Z = np.asarray(emb, float)[keep]
        Z = Z - Z.mean(0)
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        pcs = Z @ vt[:2].T
        share = s[:2] ** 2 / max(np.sum(s ** 2), 1e-12)
        for i, c in enumerate(cats):
            rows = labels[keep] == c
            ax.scatter(pcs[rows, 0], pcs[rows, 1], s=4, alpha=0.5, color=f"C{i}", label=c)
        ax.set_xlabel(f"PC1 ({share[0]:.0%})")
        ax.set_ylabel(f"PC2 ({share[1]:.0%})")
        ax.set_title(name, fontsize=10)
    axes[0, -1].legend(fontsize=8, markerscale=3, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_embedding_pca"]


# --- notebook 04: held-out drug evaluation (Figure 2 analogs) ---------------------------------
_METRIC_LABELS_04 = {
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
        ax.set_ylabel(_METRIC_LABELS_04.get(metric, metric))
        ax.set_title(_METRIC_LABELS_04.get(metric, metric), fontsize=10)
        if n_below:
            ax.set_xlabel(f"{n_below} value(s) below {floor:g} drawn at {floor:g} (red triangles)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_method_boxplots"]


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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_embedding_panels"]


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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_mean_scatter"]


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
    ax.set_xlabel(f"{_METRIC_LABELS_04.get(metric, metric)} (mean over cell lines)"
                  + (f"; open markers: below {floor:g}" if (per_drug.to_numpy() < floor).any() else ""))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / max(len(per_drug), 1)),
              ncol=min(4, len(names)), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ += ["plot_per_drug"]


# --- notebook 01: datasets, synthetic ground truth, DEGs, split and pairing -----------------
def plot_synthetic_truth(adata, *, example_condition: str | None = None,
                         title: str | None = None) -> Figure:
    """Four views of a synthetic twin's ground truth (``uns['truth']``) and its counts.

    (a) the true latent effects of the perturbations in every cell type, projected on their first
    two principal axes, coloured by mechanism (the same perturbation in different cell types is
    joined by a line: the context-specific modulation); (b) the effect magnitudes; (c) library
    sizes (total counts per cell) by cell type; (d) observed mean counts of one condition
    against its true means, ``condition_mean`` times the mean library size factor.
    ``adata``: the simulator's output with raw counts in ``X``.
    """
    from matplotlib.ticker import NullFormatter

    truth = adata.uns["truth"]
    cell_types = list(truth["cell_types"])
    effects = np.asarray(truth["effect_latent_by_context"], dtype=float)   # (C, P, k)
    n_ct, n_p, k = effects.shape
    flat = effects.reshape(n_ct * n_p, k)
    centred = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = (centred @ vt[:2].T).reshape(n_ct, n_p, 2)
    mechanism = np.asarray(truth["mechanism"])
    colours = plt.get_cmap("tab10")
    markers = ["o", "s", "^", "D", "v", "P"]

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.0))
    ax = axes[0]
    if n_ct > 1:
        for p in range(n_p):
            ax.plot(xy[:, p, 0], xy[:, p, 1], color="0.8", lw=0.7, zorder=1)
    for c in range(n_ct):
        ax.scatter(xy[c, :, 0], xy[c, :, 1], c=[colours(m % 10) for m in mechanism], s=22,
                   marker=markers[c % len(markers)], edgecolor="k", linewidth=0.3, zorder=2,
                   label=cell_types[c])
    ax.set_xlabel("latent PC 1")
    ax.set_ylabel("latent PC 2")
    ax.set_title("(a) true latent effects $e_{p,c}$\ncolour = mechanism, marker = cell type",
                 fontsize=9)
    if n_ct > 1:
        ax.legend(fontsize=7, loc="best", markerscale=0.8)

    ax = axes[1]
    magnitude = np.asarray(truth["magnitude"], dtype=float)
    ax.hist(magnitude, bins=np.logspace(np.log10(magnitude.min()), np.log10(magnitude.max()), 15),
            color="C0", edgecolor="white")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(r"effect magnitude $m_p = \|e_p\|$")
    ax.set_ylabel("perturbations")
    ax.set_title("(b) log-normal magnitudes:\nmany weak perturbations, a few strong", fontsize=9)

    ax = axes[2]
    X = adata.X
    totals = np.asarray(X.sum(1)).ravel()
    ct_of_cell = adata.obs["cell_type"].astype(str).to_numpy()
    bins = np.logspace(np.log10(max(totals.min(), 1)), np.log10(totals.max()), 40)
    for c, ct in enumerate(cell_types):
        ax.hist(totals[ct_of_cell == ct], bins=bins, histtype="step", lw=1.5, label=ct,
                color=f"C{c}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("total counts per cell")
    ax.set_ylabel("cells")
    ax.set_title("(c) library sizes (log-normal size factor)", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[3]
    conditions = list(truth["conditions"])
    if example_condition is None:
        example_condition = next(c for c in conditions if not c.endswith("_control"))
    rows = adata.obs["condition"].astype(str).to_numpy() == example_condition
    observed = np.asarray(X[rows].mean(0)).ravel()
    true_mean = np.asarray(truth["condition_mean"][conditions.index(example_condition)], float)
    # the expected counts are the true means times the mean size factor of the cells
    scale = observed.sum() / true_mean.sum()
    expected = true_mean * scale
    ax.loglog(expected + 1e-3, observed + 1e-3, ".", ms=3, alpha=0.5, color="C2")
    lim = [1e-3, max(expected.max(), observed.max()) * 1.5]
    ax.plot(lim, lim, color="k", lw=0.8)
    r = np.corrcoef(np.log1p(expected), np.log1p(observed))[0, 1]
    ax.set_xlabel("true mean x size factor")
    ax.set_ylabel(f"observed mean counts ({int(rows.sum())} cells)")
    ax.set_title(f"(d) truth vs counts: {example_condition}\n"
                 f"r(log1p) = {r:.3f}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_synthetic_truth"]


def plot_deg_example(adata, condition: str, *, n_cells: int = 60, seed: int = 0,
                     title: str | None = None) -> Figure:
    """What the top DEGs of one condition are, against the controls of its cell type.

    (a) every gene's log2 fold change against the controls (the DEG rule's, from
    `xtcdr.preprocess.deg_statistics`) and its Welch t statistic, the condition's top DEGs
    (``uns['top_degs'][condition]``) in red, the rule's threshold |log2 fc| = 1 dashed; (b) expression of those DEGs
    (z-scored per gene) in up to ``n_cells`` control cells and ``n_cells`` cells of the condition.
    ``adata``: preprocessed (log1p-normalised ``X``, standard obs, ``uns['top_degs']``).
    """
    obs = adata.obs
    cell_type = obs.loc[obs["condition"].astype(str) == condition, "cell_type"].astype(str).iloc[0]
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    in_condition = (obs["condition"].astype(str) == condition).to_numpy()
    controls = (obs["is_control"].to_numpy(bool)
                & (obs["cell_type"].astype(str) == cell_type).to_numpy())
    a, b = X[in_condition], X[controls]
    diff = a.mean(0) - b.mean(0)
    se = np.sqrt(a.var(0, ddof=1) / a.shape[0] + b.var(0, ddof=1) / b.shape[0])
    t = np.divide(diff, se, out=np.zeros_like(diff), where=se > 0)
    from .preprocess import deg_statistics

    _, log2fc = deg_statistics(X, np.flatnonzero(in_condition), np.flatnonzero(controls))  # the rule's fold change
    genes = list(adata.var_names)
    degs = [g for g in adata.uns["top_degs"][condition] if g in genes]
    deg_idx = np.array([genes.index(g) for g in degs], dtype=int)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.5]})
    ax = axes[0]
    others = np.setdiff1d(np.arange(len(genes)), deg_idx)
    ax.scatter(log2fc[others], np.abs(t[others]), s=5, color="0.6", alpha=0.6, label="other genes")
    ax.scatter(log2fc[deg_idx], np.abs(t[deg_idx]), s=12, color="C3",
               label=f"top {len(deg_idx)} DEGs (|log2 fc| >= 1, then |t|)")
    for g in deg_idx[:5]:
        ax.annotate(genes[g], (log2fc[g], abs(t[g])), fontsize=7, xytext=(3, 2),
                    textcoords="offset points")
    ax.axvline(0, color="k", lw=0.5)
    for edge in (-1, 1):
        ax.axvline(edge, color="k", lw=0.7, ls="--")
    ax.set_xlabel("log2 fold change vs controls")
    ax.set_ylabel("|Welch t|")
    ax.set_title(f"(a) {condition} vs {int(controls.sum())} controls of {cell_type}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    rng = np.random.default_rng(seed)
    pick_b = rng.choice(np.flatnonzero(controls), min(n_cells, int(controls.sum())), replace=False)
    pick_a = rng.choice(np.flatnonzero(in_condition), min(n_cells, int(in_condition.sum())),
                        replace=False)
    order = deg_idx[np.argsort(-diff[deg_idx])]                  # up-regulated first
    block = X[np.r_[pick_b, pick_a]][:, order]
    z = (block - block.mean(0)) / (block.std(0) + 1e-8)
    im = ax.imshow(z.T, aspect="auto", cmap="RdBu_r", vmin=-2.5, vmax=2.5,
                   interpolation="nearest")
    ax.axvline(len(pick_b) - 0.5, color="k", lw=1.2)
    ax.set_xticks([len(pick_b) / 2, len(pick_b) + len(pick_a) / 2])
    ax.set_xticklabels([f"control cells ({len(pick_b)})", f"{condition} cells ({len(pick_a)})"],
                       fontsize=8)
    step = max(1, len(order) // 25)
    ax.set_yticks(np.arange(0, len(order), step))
    ax.set_yticklabels([genes[g] for g in order[::step]], fontsize=7)
    ax.set_ylabel("top DEGs (up-regulated first)")
    ax.set_title("(b) the DEGs cell by cell (z-score per gene)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_deg_example"]


def plot_pairing(adata, pairs, *, context: str | None = None, n_examples: int = 12,
                 seed: int = 0, max_labels: int = 30, title: str | None = None) -> Figure:
    """The paper's pairing drawn for one context, and the number of pairs per context.

    (a) within ``context`` the training perturbations form two groups (left, right); each line
    is one example pair (a cell of the left group with a cell of the right group), and every
    side also gets a control cell of the same context. (b) pairs and training perturbed cells
    per context. ``pairs``: ``xtcdr.pairing.training_pairs`` output for ``adata``.
    """
    obs = adata.obs
    pert = obs["perturbation"].astype(str).to_numpy()
    ctype = obs["cell_type"].astype(str).to_numpy()
    contexts = sorted(set(ctype[pairs.a]))
    context = context or contexts[0]
    here = ctype[pairs.a] == context
    a_rows, b_rows = pairs.a[here], pairs.b[here]
    group_a, group_b = sorted(set(pert[a_rows])), sorted(set(pert[b_rows]))
    n_ctrl = len(set(pairs.ctrl_a[here]) | set(pairs.ctrl_b[here]))

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [1.5, 1]})
    ax = axes[0]
    height = max(len(group_a), len(group_b), 2)

    def y_of(group):
        return {p: height - 1 - i * (height - 1) / max(len(group) - 1, 1)
                for i, p in enumerate(group)}

    ya, yb = y_of(group_a), y_of(group_b)
    rng = np.random.default_rng(seed)
    examples = rng.choice(a_rows.size, min(n_examples, a_rows.size), replace=False)
    for i, e in enumerate(examples):
        pa, pb = pert[a_rows[e]], pert[b_rows[e]]
        ax.plot([0, 1], [ya[pa], yb[pb]], color=plt.get_cmap("tab20")(i % 20), lw=1.3, alpha=0.9)
    ax.scatter(np.zeros(len(group_a)), list(ya.values()), color="C0", s=25, zorder=3)
    ax.scatter(np.ones(len(group_b)), list(yb.values()), color="C1", s=25, zorder=3)
    labelled = max(len(group_a), len(group_b)) <= max_labels
    if labelled:
        fontsize = 8 if height <= 20 else 6
        for p, y in ya.items():
            ax.text(-0.04, y, p, ha="right", va="center", fontsize=fontsize)
        for p, y in yb.items():
            ax.text(1.04, y, p, ha="left", va="center", fontsize=fontsize)
    ax.text(0, height + 0.6, f"group A\n{len(group_a)} perturbations", ha="center", fontsize=9,
            color="C0", weight="bold")
    ax.text(1, height + 0.6, f"group B\n{len(group_b)} perturbations", ha="center", fontsize=9,
            color="C1", weight="bold")
    ax.text(0.5, -1.6, f"+ one control cell of {context} per side "
            f"({n_ctrl} distinct controls used)", ha="center", fontsize=8, style="italic")
    ax.set_xlim(-0.55, 1.55)
    ax.set_ylim(-2.2, height + 2.2)
    ax.axis("off")
    ax.set_title(f"(a) {context}: {here.sum():,} pairs; {len(examples)} example pairs drawn\n"
                 "(a pair = one cell of group A + one cell of group B)", fontsize=9)

    ax = axes[1]
    n_pairs, cells_a, cells_b = [], [], []
    for c in contexts:
        in_c = ctype[pairs.a] == c
        n_pairs.append(int(in_c.sum()))
        cells_a.append(len(set(pairs.a[in_c])))
        cells_b.append(len(set(pairs.b[in_c])))
    x = np.arange(len(contexts))
    ax.bar(x - 0.27, cells_a, width=0.27, label="cells of group A", color="C0")
    ax.bar(x, cells_b, width=0.27, label="cells of group B", color="C1")
    ax.bar(x + 0.27, n_pairs, width=0.27, label="training pairs", color="C2")
    for xi, n in zip(x, n_pairs):
        ax.text(xi + 0.27, n, f"{n:,}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(contexts, rotation=20 if len(contexts) > 3 else 0)
    ax.set_ylabel("count")
    ax.set_title("(b) per context: pairs = cells of the larger group\n"
                 "(the smaller group's cells are reused)", fontsize=9)
    ax.set_ylim(0, max(n_pairs + cells_a + cells_b) * 1.12)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_pairing"]


def plot_effect_ranking(effects: pd.DataFrame, held_out, *, transfer=(), title: str | None = None) -> Figure:
    """Where the held-out perturbations sit in the measured effect ranking.

    ``effects``: `xtcdr.pairing.perturbation_effects` (index perturbation, columns ``n_degs``,
    ``shift``, ``rank``), strongest first. Bars are the number of DEGs; held-out ones in red,
    ``transfer`` (perturbations held back in one line for the transfer validation) in orange.
    """
    held = effects.index.isin(list(held_out))
    moved = effects.index.isin(list(transfer)) & ~held
    colors = np.where(held, "tab:red", np.where(moved, "C1", "0.7"))
    fig, (ax_bar, ax_scatter) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
    ax_bar.bar(np.arange(len(effects)), effects["n_degs"], color=colors)
    ax_bar.set_xlabel("perturbations, strongest first (rank)")
    ax_bar.set_ylabel("DEGs vs controls\n(|log2 fc| >= 1, q < 0.05)")
    ax_bar.set_xticks(np.arange(0, len(effects), max(1, len(effects) // 12)))
    ax_bar.set_xticklabels(np.arange(1, len(effects) + 1, max(1, len(effects) // 12)))
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:red"), plt.Rectangle((0, 0), 1, 1, color="0.7")]
    labels = ["held out", "training"]
    if moved.any():
        handles.insert(1, plt.Rectangle((0, 0), 1, 1, color="C1"))
        labels.insert(1, "held back in one line (transfer validation)")
    ax_bar.legend(handles=handles, labels=labels, frameon=False)
    ax_bar.set_title("(a) measured effect ranking")
    ax_scatter.scatter(effects["shift"], effects["n_degs"], c=colors, s=18)
    ax_scatter.set_xlabel("L2 shift of the mean profile")
    ax_scatter.set_ylabel("DEGs")
    ax_scatter.set_title("(b) two measures of effect agree")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
__all__ += ["plot_effect_ranking"]


# --- notebook 06: combinations ----------------------------------------------------------------
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
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ += ["plot_double_degs", "plot_interaction_residuals"]


# --- notebook 05: single-gene knockdowns ------------------------------------------------------
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
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


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
                       label=f"{method}: {_METRIC_LABELS_04.get(metric, metric)}")
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


__all__ += ["plot_knockdown_profile", "plot_advantage"]


# --- notebook 07: ablations, every training seed as a dot -------------------------------------
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ += ["plot_seed_dots"]
