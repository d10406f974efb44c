"""Metric functions: agreement of one profile with another, discrimination among conditions, and
the distance between two sets of cells.

Agreement (one predicted mean profile against one observed mean profile, 1-D over genes):
`r2`, `explained_variance`, `pearson`, `spearman` (the paper's metrics, as sklearn/scipy compute
them) and `pearson_delta` (Pearson of deltas against a chosen reference; with the mean of the
training perturbations' centroids as reference this is Systema's perturbed-centroid reference,
Vinas Torne et al., Nat. Biotechnol. 2025).

Discrimination (many held-out conditions of one context at once; rows are conditions):

- `discrimination_ranks`: PerturBench's rank metric (Wu et al. 2024, ``altoslabs/perturbench``,
  ``analysis/benchmarks/metrics.py: rank_helper``): 0 when every prediction is closer to its own
  observed profile than to any other condition's, about 0.5 for predictions that do not tell the
  conditions apart, 1 at worst. Cosine distance by default, the distance PerturBench's
  ``Evaluator`` ranks log fold-changes with (it ranks mean profiles by RMSE).
- `centroid_accuracy`: Systema's centroid accuracy (Euclidean distance to each observed
  condition centroid): whether a prediction is nearest its own condition's centroid.

Cells: `energy_distance` between a predicted and an observed population of cells (Székely &
Rizzo's energy distance with Euclidean distances, as pertpy's ``Edistance``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import rankdata

__all__ = ["r2", "explained_variance", "pearson", "spearman", "pearson_delta",
           "mean_of_centroids", "discrimination_ranks", "centroid_accuracy", "energy_distance"]

# A delta whose norm is below this has no direction: rounding noise in a prediction that equals the
# control mean (e.g. the control baseline averaged over three sources) must not decide its rank.
ZERO_NORM = 1e-10


# ----------------------------------------------------------------------------- agreement
def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(
            f"metrics take 1-D vectors over genes, got shapes {y_true.shape} and {y_pred.shape}; "
            "pass mean profiles such as X[idx].mean(0)"
        )
    if y_true.shape != y_pred.shape:
        raise ValueError(f"length mismatch: y_true has {y_true.size} values, y_pred has {y_pred.size}")
    return y_true, y_pred


def _force_finite(numerator: float, denominator: float) -> float:
    # sklearn's force_finite=True: perfect prediction -> 1.0, constant y_true otherwise -> 0.0
    if numerator == 0.0:
        return 1.0
    if denominator == 0.0:
        return 0.0
    return float(1.0 - numerator / denominator)


def r2(y_true, y_pred) -> float:
    """Coefficient of determination, as ``sklearn.metrics.r2_score``.

    Returns 1.0 for a perfect prediction, 0.0 for an imperfect prediction of a constant
    ``y_true`` (sklearn's ``force_finite``), NaN for fewer than 2 values or NaN inputs.
    Raises ValueError when the lengths differ.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    if y_true.size < 2:
        return float("nan")
    numerator = float(np.sum((y_true - y_pred) ** 2))
    denominator = float(np.sum((y_true - y_true.mean()) ** 2))
    if np.isnan(numerator) or np.isnan(denominator):
        return float("nan")
    return _force_finite(numerator, denominator)


def explained_variance(y_true, y_pred) -> float:
    """Explained variance, as ``sklearn.metrics.explained_variance_score``.

    ``1 - Var(y_true - y_pred) / Var(y_true)``; ignores a constant offset, unlike `r2`.
    Same edge cases as `r2`: constant ``y_true`` gives 1.0 if the residual is constant
    (variance 0) else 0.0; fewer than 2 values gives NaN; length mismatch raises ValueError.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    if y_true.size < 2:
        return float("nan")
    residual = y_true - y_pred
    numerator = float(np.mean((residual - residual.mean()) ** 2))
    denominator = float(np.mean((y_true - y_true.mean()) ** 2))
    if np.isnan(numerator) or np.isnan(denominator):
        return float("nan")
    return _force_finite(numerator, denominator)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    if (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    xm = x - x.mean()
    ym = y - y.mean()
    norm_x, norm_y = np.linalg.norm(xm), np.linalg.norm(ym)
    if norm_x == 0.0 or norm_y == 0.0:
        return float("nan")
    return float(np.clip(np.dot(xm / norm_x, ym / norm_y), -1.0, 1.0))


def pearson(y_true, y_pred) -> float:
    """Pearson correlation, as ``scipy.stats.pearsonr(y_true, y_pred).statistic``.

    NaN (without a warning) when either input is constant, has fewer than 2 values or holds NaN.
    Raises ValueError when the lengths differ.
    """
    return _correlation(*_pair(y_true, y_pred))


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation, as ``scipy.stats.spearmanr(y_true, y_pred).statistic``.

    Pearson correlation of average ranks; same edge cases as `pearson`.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    if y_true.size < 2 or np.isnan(y_true).any() or np.isnan(y_pred).any():
        return float("nan")
    return _correlation(rankdata(y_true), rankdata(y_pred))


def pearson_delta(y_true, y_pred, reference) -> float:
    """Pearson correlation of deltas against a reference: ``pearson(y_true - ref, y_pred - ref)``.

    With the control mean as reference this is the usual delta correlation; with the mean of the
    training perturbations' centroids (`mean_of_centroids`) it is Systema's perturbed-centroid
    reference (``corr_all_allpert``, mlbio-epfl/systema ``evaluation/pearson_delta_reference_metrics.py``):
    the part of a response that every perturbation shares no longer counts, so a prediction must
    get what sets this perturbation apart. NaN when either delta is constant, and when the
    predicted delta's norm is below ``ZERO_NORM`` (a prediction equal to the reference up to
    rounding, such as the train-mean baseline against the perturbed centroid).
    """
    y_true, y_pred = _pair(y_true, y_pred)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != y_true.shape:
        raise ValueError(f"reference has shape {reference.shape}, the profiles {y_true.shape}")
    if np.linalg.norm(y_pred - reference) <= ZERO_NORM:
        return float("nan")
    return pearson(y_true - reference, y_pred - reference)


def mean_of_centroids(X, groups: Sequence) -> np.ndarray:
    """Equal-weight mean of group means: ``mean_k X[groups[k]].mean(0)``.

    Systema's ``average_of_perturbation_centroids``: every perturbation counts once, however many
    cells it has. ``groups`` is a sequence of row-index arrays, none empty.
    """
    if len(groups) == 0:
        raise ValueError("mean_of_centroids needs at least one group of rows")
    means = []
    for rows in groups:
        rows = np.asarray(rows)
        if rows.size == 0:
            raise ValueError("mean_of_centroids got an empty group of rows")
        means.append(np.asarray(X[rows], dtype=np.float64).mean(axis=0))
    return np.mean(means, axis=0)


# ----------------------------------------------------------------------------- discrimination
def _profiles(predicted, observed) -> tuple[np.ndarray, np.ndarray]:
    predicted = np.asarray(predicted, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    if predicted.ndim != 2 or predicted.shape != observed.shape:
        raise ValueError(f"predicted and observed must be 2-D arrays of the same shape (conditions x "
                         f"genes), got {predicted.shape} and {observed.shape}")
    return predicted, observed


def _gene_sets(genes, n: int, n_genes: int) -> list[np.ndarray]:
    if genes is None:
        return [np.arange(n_genes)] * n
    if len(genes) != n:
        raise ValueError(f"genes must hold one index array per condition ({n}), got {len(genes)}")
    return [np.asarray(g, dtype=np.int64) for g in genes]


def _distances(anchor: np.ndarray, others: np.ndarray, distance: str) -> np.ndarray:
    """Distances from one vector to each row of ``others``."""
    if distance == "euclidean":
        return np.sqrt(np.sum((others - anchor) ** 2, axis=1))
    if distance == "cosine":
        # sklearn's convention: a vector without direction has cosine similarity 0 with everything
        norm_a = np.linalg.norm(anchor)
        norms = np.linalg.norm(others, axis=1)
        similarity = np.zeros(others.shape[0])
        ok = (norms > ZERO_NORM) & (norm_a > ZERO_NORM)
        similarity[ok] = (others[ok] @ anchor) / (norms[ok] * norm_a)
        return 1.0 - np.clip(similarity, -1.0, 1.0)
    raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")


def discrimination_ranks(predicted, observed, *, genes=None, distance: str = "cosine",
                         anchor: str = "prediction") -> np.ndarray:
    """PerturBench's rank metric for each condition: 0 perfect, about 0.5 random, 1 worst.

    Parameters
    ----------
    predicted, observed
        Arrays (n_conditions, n_genes); row i of each belongs to condition i. Pass deltas (profile
        minus the context's control mean), as PerturBench ranks log fold-changes.
    genes
        None (every gene) or one index array per condition: condition i is compared on its own
        genes (e.g. its DEGs) in every comparison that involves it.
    distance
        ``"cosine"`` (default; PerturBench's ``Evaluator`` ranks log fold-changes by cosine) or
        ``"euclidean"``. A vector with norm below ``ZERO_NORM`` has cosine similarity 0 with every
        vector (sklearn's convention), so a prediction with no delta ties with every condition.
    anchor
        ``"prediction"`` (default): rank_i is the share of the other conditions j whose observed
        profile is closer to prediction p_i than o_i is. ``"observed"`` (PerturBench's
        ``rank_helper`` orientation): the share of the other conditions' predictions p_j that are
        closer to o_i than p_i is.

    Returns
    -------
    One value per condition. Ties count one half (the expected value of PerturBench's random
    shuffle before sorting). The count is divided by n - 1, the number of other conditions, so
    the worst is 1 (PerturBench divides the 0-based position by n, so its worst is (n - 1) / n).
    All NaN with fewer than 2 conditions; NaN for a condition with fewer than 2 genes or with NaN
    in its distances.
    """
    if anchor not in ("prediction", "observed"):
        raise ValueError(f"anchor must be 'prediction' or 'observed', got {anchor!r}")
    predicted, observed = _profiles(predicted, observed)
    n = predicted.shape[0]
    ranks = np.full(n, np.nan)
    if n < 2:
        return ranks
    for i, g in enumerate(_gene_sets(genes, n, predicted.shape[1])):
        if g.size < 2:
            continue
        if anchor == "prediction":
            d = _distances(predicted[i, g], observed[:, g], distance)
        else:
            d = _distances(observed[i, g], predicted[:, g], distance)
        if np.isnan(d).any():
            continue
        others = np.delete(d, i)
        ranks[i] = (np.sum(others < d[i]) + 0.5 * np.sum(others == d[i])) / (n - 1)
    return ranks


def centroid_accuracy(predicted, observed, *, genes=None, graded: bool = False) -> np.ndarray:
    """Systema's centroid accuracy per condition, by Euclidean distance to observed centroids.

    ``predicted`` and ``observed`` are (n_conditions, n_genes) mean profiles (or deltas against
    one shared reference: Euclidean distance ignores a common shift); ``genes`` as in
    `discrimination_ranks`.

    ``graded=False`` (default): 1.0 when prediction p_i is strictly nearer its own centroid o_i
    than any other condition's centroid, else 0.0; the mean over conditions is the top-1
    accuracy. ``graded=True``: the share of the other centroids that lie farther from p_i than
    o_i does, as Systema's ``calculate_centroid_accuracies`` scores it (``centroid_accuracy.py``);
    it equals ``1 - discrimination_ranks(..., distance="euclidean")`` up to ties.
    All NaN with fewer than 2 conditions (no other centroid to tell apart).
    """
    predicted, observed = _profiles(predicted, observed)
    n = predicted.shape[0]
    scores = np.full(n, np.nan)
    if n < 2:
        return scores
    for i, g in enumerate(_gene_sets(genes, n, predicted.shape[1])):
        if g.size == 0:
            continue
        d = _distances(predicted[i, g], observed[:, g], "euclidean")
        if np.isnan(d).any():
            continue
        others = np.delete(d, i)
        scores[i] = np.mean(others > d[i]) if graded else float(d[i] < others.min())
    return scores


# ----------------------------------------------------------------------------- cells
def energy_distance(cells_a, cells_b, *, squared: bool = False) -> float:
    """Energy distance ``2 E|a - b| - E|a - a'| - E|b - b'|`` between two sets of cells.

    Parameters
    ----------
    cells_a, cells_b
        Arrays (n_cells, n_features), e.g. cells in a PCA space; 1-D arrays are read as samples of
        one feature.
    squared
        False (default): Euclidean distances between cells, as pertpy's ``Edistance`` and Székely &
        Rizzo define it; the value is 0 only when the two empirical distributions are equal.
        True: squared Euclidean distances, scPerturb's ``edist`` default; then the value reduces to
        ``2 |mean_a - mean_b|^2`` (a comparison of means only), so it is not the default here.

    Returns
    -------
    The plug-in (V-statistic) estimate: every mean runs over all pairs, i = j included, as pertpy
    computes it (scPerturb leaves the i = j pairs out of the within-set means). It is symmetric,
    0 for identical sets and never negative beyond rounding. In 1-D it equals the square of
    ``scipy.stats.energy_distance``, which returns the square root.
    """
    a = np.asarray(cells_a, dtype=np.float64)
    b = np.asarray(cells_b, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"energy_distance takes two (n_cells, n_features) arrays with the same "
                         f"features, got shapes {np.shape(cells_a)} and {np.shape(cells_b)}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("energy_distance needs at least one cell in each set")
    metric = "sqeuclidean" if squared else "euclidean"
    between = cdist(a, b, metric).mean()
    return float(2.0 * between - cdist(a, a, metric).mean() - cdist(b, b, metric).mean())
