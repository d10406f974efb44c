"""Figures of training (notebooks 02, 03 and 08): the loss terms over steps, cosine similarities
of the codes, one pair's codes, training histories, the two validation signals, linear probes and
embeddings.

Every function returns a matplotlib ``Figure`` (save it with ``xtcdr.report.save_figure``); none
calls ``plt.show``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plots_common import finish_figure, hide_unused_axes

__all__ = ["plot_loss_trace", "plot_cosine_shift", "plot_tiny_run_summary", "plot_pair_codes",
           "plot_training_history", "plot_validation_signals", "plot_probes", "plot_embedding_pca"]


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
    hide_unused_axes(axes, len(terms))
    return finish_figure(fig, title)


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
    return finish_figure(fig, title)


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
    return finish_figure(fig, title, fontsize=10)


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
    return finish_figure(fig, f"{title}\n{same_cell}" if title else same_cell, fontsize=10)


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
            ax.set_title("validation $R^2$ on top DEGs\n(within-line swap $D(S^b + P^a)$)", fontsize=9)
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
    hide_unused_axes(axes, len(panels))
    return finish_figure(fig, title)


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
            smoothed = f"{column}_smoothed"
            if smoothed in history:  # the monitor reads the mean of the last checks: draw both
                ax.plot(history["step"], values / np.nanmin(values), color=color, lw=0.8, alpha=0.45)
                values = history[smoothed].to_numpy(float)
                name = f"{name} (mean of its last checks: what stops and selects)"
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
    return finish_figure(fig, title, fontsize=11)


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
    return finish_figure(fig, title)


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
    return finish_figure(fig, title)
