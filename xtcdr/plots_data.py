"""Figures of the data (notebook 01): a synthetic twin's ground truth, one condition's DEGs, the
paper's pairing and the measured effect ranking of the perturbations.

Every function returns a matplotlib ``Figure`` (save it with ``xtcdr.report.save_figure``); none
calls ``plt.show``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plots_common import finish_figure

__all__ = ["plot_synthetic_truth", "plot_deg_example", "plot_pairing", "plot_effect_ranking"]


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
    return finish_figure(fig, title)


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
    return finish_figure(fig, title)


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
    return finish_figure(fig, title)


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
    return finish_figure(fig, title)
