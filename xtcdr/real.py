"""Notebook 09: the paper's protocol on the two real screens shipped with the repository.

Two small real screens (`xtcdr.realdata`) ask the paper's questions on measured cells:

- ``datlinger2021_jurkat``: 20 knockouts in Jurkat T cells, each measured unstimulated and
  stimulated (two contexts): a real **cross-context** task and a within-context one;
- ``papalexi2021_thp1``: 25 knockouts in THP-1 cells (one context): a real **within-context**
  task (the reading of the paper's Table 3).

Real data have no second draw, so **folds over knockouts play the role of worlds**
(`xtcdr.pairing.assign_split`, ``test_rule="kfold"``): fold *k* holds out its knockouts in every
context and world *k* is ``pipeline.prepare(name, seed=k)`` with a model trained with seed *k*.
Held-out *conditions* (``test_rule="conditions"``) ask the covariate-transfer question beside it.

This module holds what notebook 09 and the training grid share, so that they agree by
construction:

- `run_trainings` / `notebook_trainings`: the notebook's trainings as `xtcdr.record.Training`
  records, and `profile_of` the profile each evaluation passes to
  `xtcdr.experiments.evaluate_worlds` (same checkpoint folders);
- `noise_floor`: per knockout and context, does it move expression beyond noise? DEG counts
  against same-context controls, a half-split oracle (one half's measured change predicts the
  other half's, with independent control halves), a replicate split (by guide or biological
  replicate) and a permutation test of the half-split agreement; `below_noise` is the rule;
- `real_table`, `rank_verdicts`: the saved tables (with a scoreboard claim) and verdicts on the
  rank metric, whose lower values are better;
- `plot_knockout_scores`, `plot_delta_profile`: the notebook's figures.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy import sparse

__all__ = ["JURKAT", "THP1", "DATASETS", "SCREENS", "NOISE_LABELS", "REMEDY", "SWAP", "COLUMNS", "VERDICT_METRICS", "RANK_METRIC",
           "ALPHA", "FOLDS", "CONDITION_FOLDS", "run_trainings", "notebook_trainings", "profile_of", "evaluate", "half_split_scores",
           "draw_halves", "noise_floor", "below_noise", "real_table", "rank_verdicts",
           "strongest_baseline", "section", "plot_knockout_scores", "plot_delta_profile"]

JURKAT = "datlinger2021_jurkat"
THP1 = "papalexi2021_thp1"
DATASETS = (JURKAT, THP1)
SCREENS = {"jurkat": JURKAT, "thp1": THP1}
# notebook 08's remedies (xtcdr.transfer.VARIANTS): one changes prediction only, one is trained
SWAP = "control offset swap"
REMEDY = "cross-line pairs"
# the columns of every table of notebook 09 and the metrics its verdicts are printed on
COLUMNS = ["r2_all", "r2_deg", "r2_deg_delta", "pcc_all_delta", "rank_deg_delta"]
VERDICT_METRICS = ["r2_deg", "r2_deg_delta"]
RANK_METRIC = "rank_deg_delta"
# what the worlds of notebook 09 vary (the verdicts' words)
FOLDS = "folds (held-out knockouts and training seed)"
CONDITION_FOLDS = "folds (held-out conditions and training seed)"
# the columns of `noise_floor` in words, for display
NOISE_LABELS = {"n_cells": "cells", "n_controls": "controls", "genes_fc": "genes |log2 fc| >= 1",
                "degs_q": "of them q < 0.05", "oracle_pcc_delta": "half split: Pearson of changes",
                "oracle_r2_deg_delta": "half split: R2 DEGs of changes",
                "replicate_pcc_delta": "replicate split: Pearson of changes", "p_value": "p (permutations)",
                "q_value": "q (BH)", "below_noise": "below noise"}
# the level of the noise test (Benjamini-Hochberg over a dataset's conditions), as the effect ranking
ALPHA = 0.05


# ---------------------------------------------------------------------------------------------
# the trainings of notebook 09 (shared with xtcdr.grid)
# ---------------------------------------------------------------------------------------------
def run_trainings(n_folds: int, *, profile: str = "quick", remedy: bool = True, conditions: bool = True,
                  notebooks=()) -> dict[str, list]:
    """Every training notebook 09 makes, as `xtcdr.record.Training` records per evaluation.

    Returns evaluation -> one record per fold (fold *k*: ``prepare_seed=k``, training seed *k*):

    - ``"jurkat"``: Jurkat, k-fold over knockouts (its cross- and within-context tables);
    - ``"thp1"``: THP-1, k-fold over knockouts (within-context);
    - ``"jurkat_conditions"`` (``conditions``): Jurkat, held-out conditions by folds;
    - ``"jurkat_remedy"`` (``remedy``): Jurkat k-fold with notebook 08's trained remedy
      (`REMEDY`, ``LossWeights(cross_line=1)``).

    The control offset swap (`SWAP`) changes prediction only and reuses the ``"jurkat"`` models.
    """
    from .record import Training
    from .transfer import VARIANTS

    n_folds = int(n_folds)
    if n_folds < 2:
        raise ValueError(f"n_folds must be an integer of at least 2 (every knockout held out once), got {n_folds!r}")
    kfold = {"test_rule": "kfold", "n_folds": n_folds}
    specs = {"jurkat": (JURKAT, kfold, {}), "thp1": (THP1, kfold, {})}
    if conditions:
        specs["jurkat_conditions"] = (JURKAT, {"test_rule": "conditions", "n_folds": n_folds}, {})
    if remedy:
        specs["jurkat_remedy"] = (JURKAT, kfold, dict(VARIANTS[REMEDY]["training"]["weights"]))
    return {name: [Training.make(dataset, profile=profile, seed=k, prepare_seed=k, data=data,
                                 weights=weights or None, notebooks=tuple(notebooks)) for k in range(n_folds)]
            for name, (dataset, data, weights) in specs.items()}


def notebook_trainings(params: dict, *, profile: str = "quick", notebooks=()) -> list:
    """The flat list of `run_trainings` for notebook 09's parameters (``n_folds``,
    ``trained_remedy``, ``held_out_conditions``): what `xtcdr.grid.notebook_trainings` plans."""
    runs = run_trainings(int(params.get("n_folds", 4)), profile=profile,
                         remedy=bool(params.get("trained_remedy", True)),
                         conditions=bool(params.get("held_out_conditions", True)), notebooks=notebooks)
    return [t for records in runs.values() for t in records]


def profile_of(records) -> object:
    """The `xtcdr.config.Profile` of an evaluation's records (the same for every fold: they differ
    by seed only), to pass as ``profile=`` to `xtcdr.experiments.evaluate_worlds`."""
    profiles = {repr(r.resolved_profile()) for r in records}
    if len(profiles) != 1:
        raise ValueError("the records of one evaluation must share their profile (they differ by seed only)")
    return records[0].resolved_profile()


def evaluate(records, protocols, *, progress: bool = False, **kwargs):
    """`xtcdr.experiments.evaluate_worlds` over the folds of ``records`` (one evaluation of
    `run_trainings`): world *k* is fold *k* of the records' dataset, its model the record's
    training (the same checkpoint folder as the grid's), scored on ``protocols`` (e.g.
    ``("cross", "within")``) with the baselines of each protocol. ``kwargs`` go to
    ``evaluate_worlds`` (``predictor_kwargs={"offset": "swap"}``, ``baselines=()`` ...). The
    cell-level energy distance is off by default (``cell_metrics=False``): notebook 09's tables do
    not show it, and it costs most of the scoring time."""
    from .experiments import evaluate_worlds, tasks_for

    records = list(records)
    rules = {dict(r.data).get("test_rule") for r in records}
    varies = CONDITION_FOLDS if rules == {"conditions"} else FOLDS
    kwargs.setdefault("cell_metrics", False)
    return evaluate_worlds(records[0].dataset, tasks_for(*protocols), worlds=[r.prepare_seed for r in records],
                           training_seeds=[r.seed for r in records], profile=profile_of(records),
                           progress=progress, varies=kwargs.pop("varies", varies), **kwargs)


# ---------------------------------------------------------------------------------------------
# does a knockout move expression at all?
# ---------------------------------------------------------------------------------------------
def half_split_scores(X, a, b, control_a, control_b, degs) -> dict[str, float]:
    """How well half ``a``'s measured change predicts half ``b``'s, on one split.

    The change of each half is its mean minus the mean of its own control half
    (``control_a`` / ``control_b``, disjoint, so that the noise of one control mean is not shared
    by both sides). Returns ``pcc_delta`` (Pearson correlation of the two changes over all genes)
    and ``r2_deg_delta`` (R^2 of half ``b``'s change predicted by half ``a``'s on the gene
    positions ``degs``; NaN with fewer than two DEGs).
    """
    from .metrics import pearson, r2

    def mean(rows):
        block = X[np.asarray(rows)]
        return np.asarray(block.toarray() if sparse.issparse(block) else block, dtype=np.float64).mean(0)

    predicted = mean(a) - mean(control_a)
    observed = mean(b) - mean(control_b)
    degs = np.asarray(degs, dtype=np.int64)
    return {"pcc_delta": pearson(observed, predicted),
            "r2_deg_delta": r2(observed[degs], predicted[degs]) if degs.size >= 2 else float("nan")}


def draw_halves(rng: np.random.Generator, rows, controls, n_splits: int | None = None) -> tuple[np.ndarray, ...]:
    """Seeded splits ``(a, b, control_a, control_b)``: the condition's cells and its controls each
    cut into two disjoint halves (the second half takes the odd cell). One split (1-D arrays), or
    with ``n_splits`` that many independent splits at once (arrays of shape ``(n_splits, size)``)."""
    rows, controls = np.asarray(rows), np.asarray(controls)
    if rows.size < 4 or controls.size < 4:
        raise ValueError(f"a half split needs at least 4 cells and 4 controls, got {rows.size} and {controls.size}")
    k = 1 if n_splits is None else int(n_splits)
    order = rng.permuted(np.tile(rows, (k, 1)), axis=1)
    control_order = rng.permuted(np.tile(controls, (k, 1)), axis=1)
    half, control_half = rows.size // 2, controls.size // 2
    out = (order[:, :half], order[:, half:], control_order[:, :control_half], control_order[:, control_half:])
    return tuple(part[0] for part in out) if n_splits is None else out


def _split_agreement(X: np.ndarray, a, b, control_a, control_b) -> np.ndarray:
    """Pearson correlation of the two halves' changes (`half_split_scores`) of many splits at once.

    ``a``, ``b``, ``control_a``, ``control_b``: row positions in ``X``, shape ``(n, size)`` (one
    row per split). The group means are one product of a dense indicator with ``X``, so ``X``
    should hold only the rows the splits use (a condition's cells and its controls).
    """
    parts = [np.atleast_2d(np.asarray(g)) for g in (a, b, control_a, control_b)]
    n = parts[0].shape[0]
    indicator = np.zeros((n, 4, X.shape[0]), dtype=X.dtype)
    for j, rows in enumerate(parts):
        np.put_along_axis(indicator[:, j], rows, np.asarray(1.0 / rows.shape[1], dtype=X.dtype), axis=1)
    means = (indicator.reshape(4 * n, -1) @ X).reshape(n, 4, X.shape[1]).astype(np.float64)
    predicted = means[:, 0] - means[:, 2]
    observed = means[:, 1] - means[:, 3]
    predicted = predicted - predicted.mean(1, keepdims=True)
    observed = observed - observed.mean(1, keepdims=True)
    norm = np.linalg.norm(predicted, axis=1) * np.linalg.norm(observed, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (predicted * observed).sum(1) / np.where(norm > 0, norm, 1.0), np.nan)


def _replicate_agreement(X, values: np.ndarray, rows, controls, rng) -> float:
    """Pearson of the changes of one replicate group against the others, averaged over groups.

    Each group (a value of ``values``, e.g. ``obs["replicate"]``, among the condition's cells) is
    compared with the rest.
    Controls split by the same key where they carry its values (biological replicates); else
    (guides: controls have no target guide) into seeded halves. NaN with fewer than two groups.
    """
    groups = sorted(set(values[rows]))
    if len(groups) < 2:
        return float("nan")
    values_local = []
    for g in groups:
        a, b = rows[values[rows] == g], rows[values[rows] != g]
        control_a, control_b = controls[values[controls] == g], controls[values[controls] != g]
        if control_a.size < 2 or control_b.size < 2:
            shuffled = rng.permutation(controls)
            control_a, control_b = shuffled[:controls.size // 2], shuffled[controls.size // 2:]
        used = np.concatenate([a, b, control_a, control_b])
        local = [np.searchsorted(np.sort(used), g_) for g_ in (a, b, control_a, control_b)]
        values_local.append(_split_agreement(X[np.sort(used)], *local)[0])
    return float(np.nanmean(values_local))


def noise_floor(adata, *, n_splits: int = 5, n_permutations: int = 199, replicate_key: str | None = None,
                seed: int = 0, alpha: float = ALPHA) -> pd.DataFrame:
    """Per knockout and context: how much it moves expression, and whether that is above noise.

    ``adata``: prepared data (`xtcdr.pipeline.prepare`: log1p expression, every cell; the split
    is not read). For each condition (context, single knockout), against the control cells of
    the same context:

    - ``genes_fc``: genes with ``|log2 fold change| >= min_log2fc`` (the paper's DEG threshold,
      ``uns['xtcdr']['preprocess']``), all cells of the condition;
    - ``degs_q``: of those, genes with a Benjamini-Hochberg q below ``alpha`` (Welch t-test;
      `xtcdr.pairing.perturbation_effects`, the sci-Plex authors' count);
    - ``oracle_pcc_delta``, ``oracle_r2_deg_delta``: the **half-split oracle**, the mean over
      ``n_splits`` seeded splits (`draw_halves`, `half_split_scores`) of how well one half's
      measured change predicts the other's; the DEGs are the paper's rule on the scored half
      (`xtcdr.evaluate.scored_degs`), as under the within-context reading. Knowing the
      condition's own cells, no predictor can expect more: the noise floor of the condition;
    - ``replicate_pcc_delta`` (with ``replicate_key``, e.g. ``"guide"`` or ``"replicate"``): the
      same agreement between groups of cells that share no guide, resp. biological replicate;
    - ``p_value``: a permutation test of ``oracle_pcc_delta``: the condition's cells and its
      controls pooled and relabelled at random ``n_permutations`` times (same sizes), each
      relabelling split as the observed ones; p = (1 + #{null >= observed}) / (1 + n_permutations);
    - ``q_value``: Benjamini-Hochberg over every condition of ``adata``; ``below_noise``:
      ``q_value >= alpha`` (`below_noise`).

    Returns one row per condition, indexed by condition name, sorted by context then knockout.
    """
    from scipy import stats

    from .evaluate import dense_float32, scored_degs
    from .pairing import is_combination, perturbation_effects
    from .preprocess import deg_statistics

    if int(n_splits) < 1 or int(n_permutations) < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_splits >= 1, n_permutations >= 1 and 0 < alpha < 1, got {n_splits!r}, "
                         f"{n_permutations!r}, {alpha!r}")
    if replicate_key is not None and replicate_key not in adata.obs:
        raise KeyError(f"replicate_key {replicate_key!r} is not an obs column; columns: {list(adata.obs.columns)}")
    X = dense_float32(adata.X)
    obs = adata.obs
    context = obs["cell_type"].astype(str).to_numpy()
    perturbation = obs["perturbation"].astype(str).to_numpy()
    control = obs["is_control"].to_numpy(bool)
    condition = obs["condition"].astype(str).to_numpy()
    replicates = obs[replicate_key].astype(str).to_numpy() if replicate_key is not None else None
    min_log2fc = float(adata.uns.get("xtcdr", {}).get("preprocess", {}).get("min_log2fc", 1.0))
    records = []
    for ct in sorted(set(context[~control])):
        controls = np.flatnonzero((context == ct) & control)
        if controls.size < 4:
            continue
        significant = perturbation_effects(adata[context == ct], min_log2fc=min_log2fc, alpha=alpha)["n_degs"]
        for pert in sorted(set(perturbation[(context == ct) & ~control])):
            rows = np.flatnonzero((context == ct) & (perturbation == pert))
            if is_combination(pert) or rows.size < 4:
                continue
            name = str(condition[rows[0]])
            rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
            # the agreement and its permutations read only this condition's cells and its controls
            index = np.concatenate([rows, controls])
            pool = X[index]
            own, others = np.arange(rows.size), np.arange(rows.size, index.size)
            splits = draw_halves(rng, own, others, n_splits)   # positions in pool; index[...] in adata
            observed = float(np.nanmean(_split_agreement(pool, *splits)))
            scores = [half_split_scores(pool, *(part[i] for part in splits),
                                        scored_degs(adata, index[splits[1][i]], index[splits[3][i]]))
                      for i in range(int(n_splits))]
            null = _permutation_null(pool, own, others, rng, int(n_splits), int(n_permutations))
            _, log2fc = deg_statistics(X, rows, controls)
            record = {"condition": name, "context": ct, "knockout": pert, "n_cells": int(rows.size),
                      "n_controls": int(controls.size), "genes_fc": int((np.abs(log2fc) >= min_log2fc).sum()),
                      "degs_q": int(significant.get(pert, 0)),
                      "oracle_pcc_delta": observed,
                      "oracle_r2_deg_delta": float(np.nanmean([s["r2_deg_delta"] for s in scores])),
                      "p_value": float((1 + np.sum(null >= observed)) / (1 + null.size))}
            if replicate_key is not None:
                record["replicate_pcc_delta"] = _replicate_agreement(X, replicates, rows, controls, rng)
            records.append(record)
    if not records:
        raise ValueError("no condition with at least 4 cells and a context with at least 4 controls")
    table = pd.DataFrame(records).set_index("condition")
    table["q_value"] = stats.false_discovery_control(table["p_value"].to_numpy())
    table["below_noise"] = below_noise(table, alpha=alpha)
    return table


def _permutation_null(X, rows, controls, rng, n_splits: int, n_permutations: int, chunk: int = 40) -> np.ndarray:
    """The half-split agreement (mean over ``n_splits`` splits) of ``n_permutations`` random
    relabellings of the condition's cells and its controls (pooled, same group sizes); ``rows``
    and ``controls`` are row positions in ``X``. Each relabelling is split as the observed cells
    are (`draw_halves`)."""
    pool = np.concatenate([rows, controls])
    null = []
    for start in range(0, n_permutations, chunk):
        k = min(chunk, n_permutations - start)
        relabelled = rng.permuted(np.tile(pool, (k, 1)), axis=1)
        fake_rows = np.repeat(relabelled[:, :rows.size], n_splits, axis=0)
        fake_controls = np.repeat(relabelled[:, rows.size:], n_splits, axis=0)
        fake_rows, fake_controls = rng.permuted(fake_rows, axis=1), rng.permuted(fake_controls, axis=1)
        half, control_half = rows.size // 2, controls.size // 2
        agreement = _split_agreement(X, fake_rows[:, :half], fake_rows[:, half:], fake_controls[:, :control_half],
                                     fake_controls[:, control_half:])
        null.append(np.nanmean(agreement.reshape(k, n_splits), axis=1))
    return np.concatenate(null)


def below_noise(table: pd.DataFrame, *, alpha: float = ALPHA) -> pd.Series:
    """The rule of notebook 09: a knockout in a context is *below noise* when its two halves agree
    no better than halves of cells relabelled at random (`noise_floor`'s permutation test, after
    Benjamini-Hochberg over the dataset's conditions): ``q_value >= alpha``, or no q value."""
    if "q_value" not in table:
        raise KeyError("below_noise needs the q_value column of noise_floor(adata)")
    q = table["q_value"].astype(float)
    return (q.isna() | (q >= alpha)).rename("below_noise")


# ---------------------------------------------------------------------------------------------
# tables and verdicts
# ---------------------------------------------------------------------------------------------
def strongest_baseline(table: pd.DataFrame, metric: str = "r2_deg") -> str:
    """The baseline row with the highest mean ``metric`` (as the scoreboard picks it)."""
    baselines = table[table["kind"] == "baseline"]
    if baselines.empty:
        raise ValueError("the table has no baseline row")
    return str(baselines[metric].astype(float).idxmax())


def real_table(result, protocol: str, *, name: str, title: str, dataset: str, profile: str, order: str,
               split: str, out_dir, claim: str | None = None, analog: str | None = None,
               columns=None, note: str | None = None):
    """Build, save (``part="real"``) and return ``(table, meta)`` of one evaluation's protocol.

    ``claim`` (a plain sentence) with ``analog`` (``"cross-context"`` or ``"within-context"``)
    makes it a scoreboard row of the real-data column (metric ``r2_deg``, ``"not in the paper"``).
    """
    from .experiments import result_meta
    from .report import save_table

    columns = list(columns or COLUMNS)
    fields = {}
    if claim is not None:
        if analog not in ("cross-context", "within-context"):
            raise ValueError(f"a real-data claim needs analog 'cross-context' or 'within-context', got {analog!r}")
        fields["claim"] = {"claim": claim, "paper": "not in the paper", "metric": "r2_deg", "section": "real",
                           "analog": analog, "order": order}
    meta = result_meta(result, protocol, columns, part="real", order=order, title=title, dataset=dataset,
                       profile=profile, split=split, verdict_metrics=list(VERDICT_METRICS), note=note, **fields)
    table = result.table(protocol, columns)
    save_table(table, name, meta=meta, out_dir=out_dir)
    return table, meta


def rank_verdicts(table: pd.DataFrame, meta: dict, metric: str = RANK_METRIC, against=None) -> list:
    """Verdicts of the model on a rank metric, where lower is better (0: every prediction nearest
    its own condition; about 0.5: no discrimination). `xtcdr.verdicts.verdict` knows the direction
    of rank metrics, so "beats" means a lower (better) rank. ``against``: the baseline rows
    (default: every baseline).
    """
    from .verdicts import _converged, _world_values, verdict

    model = str(table.index[table["kind"] == "model"][0])
    others = list(against or table.index[table["kind"] == "baseline"])
    return [verdict(_world_values(table, meta, model, metric), _world_values(table, meta, other, metric),
                    method=model, other_name=other, metric=metric, converged=_converged(meta, model),
                    varies=str(meta.get("varies")), margin=None)
            for other in others]


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def plot_knockout_scores(panels: list[dict], *, metric: str = "r2_deg", floor: float = -1.0, title=None):
    """Per held-out condition, the model's score against the strongest baseline's (one panel each).

    Each panel: ``{"title", "model": Series condition -> value, "baseline": Series, "baseline_name",
    "below": set of conditions below noise}``. A point above the diagonal is a condition the model
    predicts better. Filled: above noise; open: below noise. Values below ``floor`` are drawn at
    ``floor`` with a triangle.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        both = pd.DataFrame({"model": panel["model"], "baseline": panel["baseline"]}).dropna()
        below = both.index.isin(list(panel.get("below", ())))
        x, y = both["baseline"].to_numpy(float), both["model"].to_numpy(float)
        clipped = (x < floor) | (y < floor)
        x, y = np.maximum(x, floor), np.maximum(y, floor)
        for mask, face, label in ((~below, "C0", "above noise"), (below, "none", "below noise")):
            ax.scatter(x[mask & ~clipped], y[mask & ~clipped], s=30, facecolors=face, edgecolors="C0",
                       label=f"{label} ({int(mask.sum())})")
            ax.scatter(x[mask & clipped], y[mask & clipped], s=36, marker="v", facecolors=face, edgecolors="C3")
        low = min(floor, float(np.nanmin(np.r_[x, y]))) if len(both) else floor
        high = max(1.0, float(np.nanmax(np.r_[x, y]))) if len(both) else 1.0
        ax.plot([low, high], [low, high], color="0.4", lw=0.8, ls="--")
        ax.set_xlabel(f"{panel['baseline_name']}: {metric}"
                      + (f"\n{int(clipped.sum())} below {floor:g} drawn at {floor:g} (red triangles)" if clipped.any() else ""),
                      fontsize=9)
        ax.set_ylabel(f"model: {metric}", fontsize=9)
        ax.set_title(panel["title"], fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_delta_profile(genes, observed, predicted: dict, *, n_genes: int = 30, title=None):
    """Observed change against predicted changes of one condition on its strongest genes.

    ``observed``: the observed mean minus the target's control mean over ``genes``;
    ``predicted``: method -> predicted mean minus the same control mean. Left: the ``n_genes``
    genes with the largest observed change, sorted by it; right: every gene, predicted against
    observed change, with each method's Pearson correlation.
    """
    import matplotlib.pyplot as plt

    from .metrics import pearson

    genes = np.asarray(genes).astype(str)
    observed = np.asarray(observed, dtype=float)
    top = np.argsort(-np.abs(observed))[:int(n_genes)]
    top = top[np.argsort(observed[top])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [2.2, 1]})
    x = np.arange(top.size)
    left.bar(x, observed[top], color="0.75", label="observed")
    markers = ["o", "s", "D", "^"]
    for i, (name, values) in enumerate(predicted.items()):
        values = np.asarray(values, dtype=float)
        left.scatter(x, values[top], marker=markers[i % len(markers)], s=26, color=f"C{i}", zorder=3, label=name)
        right.scatter(observed, values, s=7, alpha=0.6, color=f"C{i}", linewidths=0,
                      label=f"{name}: Pearson {pearson(observed, values):.2f}")
    left.axhline(0, color="0.3", lw=0.8)
    left.set_xticks(x)
    left.set_xticklabels(genes[top], rotation=90, fontsize=7)
    left.set_ylabel("change against control (log1p)")
    left.set_title(f"the {top.size} genes with the largest observed change", fontsize=10)
    left.legend(fontsize=8)
    span = [float(np.min(observed)), float(np.max(observed))]
    right.plot(span, span, color="0.4", lw=0.8, ls="--")
    right.set_xlabel("observed change", fontsize=9)
    right.set_ylabel("predicted change", fontsize=9)
    right.set_title("every gene", fontsize=10)
    right.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def section(table: pd.DataFrame, meta: dict, name: str) -> str:
    """One saved table as the notebook shows it: `xtcdr.report.section_markdown` (facts, table,
    verdicts on `VERDICT_METRICS`) and the verdicts on the rank metric (`rank_verdicts`)."""
    from .report import section_markdown

    text = section_markdown(meta | {"name": name}, table)
    if RANK_METRIC in table.columns and not meta.get("paired_reference"):
        found = rank_verdicts(table, meta)
        text += "\n\nOn the rank metric (lower is better; the difference is model - other):\n\n" + "\n".join(
            f"- {v.sentence()}" for v in found)
    return text
