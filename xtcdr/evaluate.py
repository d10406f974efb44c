"""Metrics, transfer protocols and the predictor interface shared by the model and the baselines.

A *task* asks for one held-out condition (cell type B under perturbation d). Every task holds the
cells that are scored (``target_idx``), the control cells of B that give the basal state
(``control_idx``) and one or more *sources*: measured cells of the held-out perturbation that the
predictor may read, each with the controls of its own context. Three protocols build the sources:

- ``"cross"``: d measured in every other cell type A; one source per A (paper Tables 1-2).
- ``"within"``: one cell type only; the cells of (B, d) are split with a seeded generator into two
  disjoint halves, the first half is the source input and the second half is scored (Table 3).
  The same cells are never used for input and scoring, and the DEGs of such a task are computed
  from the scored half alone (`scored_degs`).
- ``"combination"``: a double a+b is predicted from the measured singles a and b in the same
  context, read only from cells outside the test split (Table 4).

Scoring (`evaluate_transfer`): a predictor returns a predicted *mean profile* for each source;
the task's prediction is the equal-weight average of these per-source profiles. It is compared
with the observed mean profile of the scored cells by R^2, explained variance and Pearson
correlation, over all genes and over the condition's top-50 DEGs (``uns['top_degs']``), and the
same six metrics on deltas against the mean of the target's controls (suffix ``_delta``).
The DEGs (the paper's rule: top 50 by t-score among genes with log2 |fc| >= 1) are chosen with the
test ground truth (observed cells vs controls), as in the paper; read the ``_deg`` columns with
that in mind. A condition with fewer than 2 DEGs passing the rule gets NaN DEG metrics.

Beyond the paper (`DISCRIMINATION_COLUMNS`, metric functions in `xtcdr.metrics`): mean-profile
R^2 rewards a prediction that is right about what all perturbations share, even when it cannot
tell them apart. So each row also carries PerturBench's rank of the prediction among the held-out
conditions of its target context (on deltas, all genes and DEGs), Systema's centroid hit and
Pearson of deltas against the perturbed centroid (the mean of the training perturbations of the
target context instead of its controls), and, on request, an energy distance between predicted
and observed cells.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import warnings
import zlib

import numpy as np
import pandas as pd
from scipy import sparse

from .metrics import (centroid_accuracy, discrimination_ranks, energy_distance,
                      explained_variance, mean_of_centroids, pearson, pearson_delta, r2,
                      spearman)
from .pairing import require_obs

__all__ = [
    "r2", "explained_variance", "pearson", "spearman",  # re-exported from xtcdr.metrics
    "Source", "TransferTask", "transfer_tasks", "PROTOCOLS",
    "Predictor", "ModelPredictor",
    "METRIC_COLUMNS", "DISCRIMINATION_COLUMNS", "EDIST_COMPONENTS", "EDIST_MAX_CELLS",
    "evaluate_transfer", "summarize", "compare", "scored_degs", "target_positions",
]

PROTOCOLS = ("auto", "cross", "within", "combination")
MIN_CELLS = 2          # fewest cells a scored condition may have ("cross", "combination")
MIN_CELLS_WITHIN = 4   # fewest cells for "within" (two halves of at least two cells each)

_BASE_METRICS = ("r2_all", "r2_deg", "ev_all", "ev_deg", "pcc_all", "pcc_deg")
METRIC_COLUMNS = _BASE_METRICS + tuple(f"{m}_delta" for m in _BASE_METRICS)
# Beyond the paper: discrimination among the held-out conditions of a target context (rank,
# centroid), deltas against the perturbed centroid, and the cell-level energy distance (NaN
# unless evaluate_transfer(cell_metrics=True)).
DISCRIMINATION_COLUMNS = ("rank_all_delta", "rank_deg_delta", "centroid_hit",
                          "pcc_all_pert_delta", "pcc_deg_pert_delta", "edist")
EDIST_COMPONENTS = 20     # PCA components (fitted on training cells) the energy distance is computed in
EDIST_MAX_CELLS = 300     # cells per condition and side, drawn with a seeded generator
EDIST_MAX_FIT_CELLS = 20000  # training cells the PCA is fitted on, at most
_TASK_COLUMNS = ("condition", "cell_type", "perturbation", "protocol", "n_cells", "n_sources", "n_degs")


# ----------------------------------------------------------------------------- tasks
@dataclass
class Source:
    """One source of the held-out perturbation's measured response.

    ``context`` is the cell type the perturbed cells come from; ``components`` holds one
    ``(perturbed cell rows, control cell rows of that same context)`` tuple per single
    perturbation: one for a single perturbation, two for a double a+b.
    """

    context: str
    components: list[tuple[np.ndarray, np.ndarray]]


@dataclass
class TransferTask:
    """One held-out condition to predict: cells to score, basal-state controls and sources."""

    condition: str
    cell_type: str
    perturbation: str
    protocol: str                       # 'cross' | 'within' | 'combination'
    target_idx: np.ndarray              # observed cells that are scored
    control_idx: np.ndarray             # control cells of the target context
    sources: list[Source] = field(default_factory=list)  # predictions are averaged over sources
    deg_idx: np.ndarray | None = None   # gene positions of the DEGs scored; None: uns['top_degs']


def _groups(keys: pd.DataFrame, rows: np.ndarray) -> dict:
    """Map each distinct key (row of ``keys``) to the sorted positions in ``rows``."""
    if rows.size == 0:
        return {}
    grouped = keys.iloc[rows].groupby(list(keys.columns), sort=True, observed=True).indices
    unwrap = keys.shape[1] == 1  # one column: plain keys, whatever the pandas version
    return {(key[0] if unwrap and isinstance(key, tuple) else key): np.sort(rows[pos])
            for key, pos in grouped.items()}


def _stable_rng(seed: int, name: str) -> np.random.Generator:
    # seeded by the condition name so a task does not depend on which other tasks exist
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def transfer_tasks(adata, *, split: str = "test", protocol: str = "auto", seed: int = 0) -> list[TransferTask]:
    """Build one `TransferTask` per non-control condition that has cells in ``split``.

    Parameters
    ----------
    adata
        AnnData in the standard schema with ``obs['split']``.
    split
        Which cells are scored (``obs['split'] == split``).
    protocol
        ``"auto"``: doubles -> ``"combination"``; singles -> ``"cross"`` when another cell type
        has the perturbation, else ``"within"``. ``"cross"``: singles only by cross transfer
        (singles measured in no other cell type are skipped). ``"within"``: singles only by
        within-context halves. Doubles are always ``"combination"`` tasks.
        ``"combination"``: only the doubles.
    seed
        Seeds the within-context halves (per condition).

    Returns
    -------
    Tasks sorted by condition. Skipped conditions (too few cells, no controls, missing singles,
    no other context) are listed in one UserWarning. Controls of a context are all cells with
    ``is_control`` in that cell type (any split); cross sources use every cell of (A, d) for each
    other cell type A that has controls; combination sources use only the singles' cells outside
    the test split. Sources need at least one cell.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    require_obs(adata, ["cell_type", "perturbation", "split"])
    obs = adata.obs
    cell_type = obs["cell_type"].astype(str).to_numpy()
    perturbation = obs["perturbation"].astype(str).to_numpy()
    splits = obs["split"].astype(str).to_numpy()
    if "is_control" in obs:
        is_control = obs["is_control"].to_numpy().astype(bool)
    else:
        is_control = perturbation == "control"
    if "condition" in obs:
        condition = obs["condition"].astype(str).to_numpy()
    else:
        condition = np.char.add(np.char.add(cell_type.astype(str), "_"), perturbation.astype(str))
    if not (splits == split).any():
        raise ValueError(f"no cells with obs['split'] == {split!r}; present: {sorted(set(splits))}")

    keys = pd.DataFrame({"cell_type": cell_type, "perturbation": perturbation})
    perturbed = _groups(keys, np.flatnonzero(~is_control))
    controls = _groups(keys[["cell_type"]], np.flatnonzero(is_control))
    contexts_of: dict[str, list[str]] = {}
    for ct, pert in perturbed:
        contexts_of.setdefault(pert, []).append(ct)

    tasks, skipped = [], []
    for (ct, pert), rows in perturbed.items():
        scored = rows[splits[rows] == split]
        if scored.size == 0:
            continue
        name = str(condition[scored[0]])
        is_double = "+" in pert
        if protocol == "combination" and not is_double:
            continue
        ctrl = controls.get(ct, np.array([], dtype=np.int64))
        if ctrl.size == 0:
            skipped.append(f"{name} (no control cells of {ct!r})")
            continue

        if is_double:
            if scored.size < MIN_CELLS:
                skipped.append(f"{name} ({scored.size} cell(s) < {MIN_CELLS})")
                continue
            components, missing = [], []
            for single in pert.split("+"):
                single_rows = perturbed.get((ct, single), np.array([], dtype=np.int64))
                single_rows = single_rows[splits[single_rows] != "test"]
                if single_rows.size == 0:
                    missing.append(single)
                components.append((single_rows, ctrl))
            if missing:
                skipped.append(f"{name} (single(s) {missing} not measured in {ct!r} outside the test split)")
                continue
            tasks.append(TransferTask(name, ct, pert, "combination", scored, ctrl,
                                      [Source(ct, components)]))
            continue

        others = [a for a in contexts_of[pert] if a != ct and a in controls]
        mode = protocol if protocol in ("cross", "within") else ("cross" if others else "within")
        if mode == "cross":
            if not others:
                skipped.append(f"{name} (no other cell type has {pert!r}; try protocol='within')")
                continue
            if scored.size < MIN_CELLS:
                skipped.append(f"{name} ({scored.size} cell(s) < {MIN_CELLS})")
                continue
            sources = [Source(a, [(perturbed[(a, pert)], controls[a])]) for a in others]
            tasks.append(TransferTask(name, ct, pert, "cross", scored, ctrl, sources))
        else:
            if scored.size < MIN_CELLS_WITHIN:
                skipped.append(f"{name} ({scored.size} cell(s) < {MIN_CELLS_WITHIN} for 'within')")
                continue
            order = _stable_rng(seed, name).permutation(scored)
            half = scored.size // 2
            source_rows, target_rows = np.sort(order[:half]), np.sort(order[half:])
            tasks.append(TransferTask(name, ct, pert, "within", target_rows, ctrl,
                                      [Source(ct, [(source_rows, ctrl)])],
                                      deg_idx=scored_degs(adata, target_rows, ctrl)))

    if skipped:
        warnings.warn(f"transfer_tasks skipped {len(skipped)} condition(s): " + "; ".join(skipped),
                      UserWarning, stacklevel=2)
    return sorted(tasks, key=lambda t: t.condition)


def scored_degs(adata, target_rows, control_rows) -> np.ndarray:
    """DEG positions of a condition computed from the scored cells only, with the data's DEG rule.

    The within-context reading reads half of a condition's cells; DEGs chosen on all of its cells
    would let that input half choose the genes it is scored on (and favour any predictor that
    copies it). The rule and its parameters are those of ``uns['xtcdr']['preprocess']``
    (`xtcdr.preprocess.top_degs`).
    """
    from .preprocess import deg_statistics, select_degs

    params = adata.uns.get("xtcdr", {}).get("preprocess", {})
    scores, log2fc = deg_statistics(adata.X, target_rows, control_rows)
    return select_degs(scores, log2fc, n_degs=int(params.get("n_degs", 50)),
                       min_log2fc=float(params.get("min_log2fc", 1.0)),
                       rule=str(params.get("deg_rule", "fold_change")))


# ----------------------------------------------------------------------------- predictors
class Predictor:
    """Interface shared by the model and every baseline.

    ``fit(adata)`` may read only cells with ``obs['split'] == 'train'`` and returns self.
    ``predict(X, task, source)`` returns the predicted mean profile, shape ``(n_genes,)``, of the
    task's target cells from one source; ``X`` is the dense float32 expression matrix.
    ``predict_cells(X, task, source, rng)`` returns predicted single cells (the energy distance of
    `evaluate_transfer` reads them).
    """

    name: str = "predictor"

    def fit(self, adata) -> "Predictor":
        return self

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement predict(X, task, source)")

    def predict_cells(self, X: np.ndarray, task: TransferTask, source: Source,
                      rng: np.random.Generator, n_cells: int | None = None) -> np.ndarray:
        """Predicted cells of the target from one source, shape ``(n, n_genes)``.

        Default for predictors of mean profiles: the target's control cells, each shifted by
        ``predict(X, task, source) - mean of the target's controls``, so the cells keep the
        controls' spread around the predicted mean. ``n_cells``: how many (drawn from the
        controls with ``rng``, without replacement while there are enough); None: every control.
        """
        controls = np.asarray(task.control_idx)
        if controls.size == 0:
            raise ValueError(f"task {task.condition!r} has no control cells to shift")
        if n_cells is not None:
            controls = rng.choice(controls, int(n_cells), replace=controls.size < int(n_cells))
        shift = (np.asarray(self.predict(X, task, source), dtype=np.float64)
                 - X[task.control_idx].mean(axis=0, dtype=np.float64))
        return X[controls].astype(np.float64) + shift

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ModelPredictor(Predictor):
    """Wrap a trained XTransferCDR model: mean over target controls of D(E_s(x_ctrl) + sum_k E_p(x_k)).

    Each target control cell i is paired with perturbed cell ``perm_k[i % n_k]`` of component k,
    where ``perm_k`` is a permutation drawn from ``np.random.default_rng(seed)`` (one per component,
    in order, fresh generator at each call). Runs in eval mode under ``torch.no_grad()`` in batches
    of ``batch_size`` cells on the model's device; the model's training mode is restored afterwards.

    ``offset="swap"`` (notebook 08, not in the paper): each component's codes lose the mean code
    ``E_p`` gives the controls of its own context, and the target context's control mean code is
    added once, ``D(E_s(x_ctrl,B) + sum_k [E_p(x_k) - mean E_p(ctrl_A_k)] + mean E_p(ctrl_B))``: the
    part of ``P`` that a line's unperturbed cells already carry is swapped for the target's.
    """

    def __init__(self, model, *, batch_size: int = 4096, seed: int = 0, name: str = "XTransferCDR",
                 offset: str = "none"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if offset not in ("none", "swap"):
            raise ValueError(f"offset must be 'none' or 'swap', got {offset!r}")
        self.model = model
        self.batch_size = int(batch_size)
        self.seed = seed
        self.name = name
        self.offset = offset

    def _encode(self, encoder, X: np.ndarray, rows: np.ndarray, device):
        import torch

        parts = [encoder(torch.as_tensor(np.ascontiguousarray(X[rows[i:i + self.batch_size]]),
                                         dtype=torch.float32, device=device))
                 for i in range(0, rows.size, self.batch_size)]
        return torch.cat(parts, dim=0)

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        import torch

        model = self.model
        device = next(model.parameters()).device
        rng = np.random.default_rng(self.seed)
        control_idx = np.asarray(task.control_idx)
        n_controls = control_idx.size
        if n_controls == 0:
            raise ValueError(f"task {task.condition!r} has no control cells to encode")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                basal = self._encode(model.encode_basal, X, control_idx, device)
                if self.offset == "swap":
                    basal = basal + self._encode(model.encode_perturbation, X, control_idx, device).mean(0)
                partners = []
                for perturbed_idx, source_controls in source.components:
                    perturbed_idx = np.asarray(perturbed_idx)
                    if perturbed_idx.size == 0:
                        raise ValueError(f"task {task.condition!r}: a source component has no cells")
                    codes = self._encode(model.encode_perturbation, X, perturbed_idx, device)
                    if self.offset == "swap":
                        codes = codes - self._encode(model.encode_perturbation, X,
                                                     np.asarray(source_controls), device).mean(0)
                    perm = rng.permutation(perturbed_idx.size)
                    pick = torch.as_tensor(perm[np.arange(n_controls) % perturbed_idx.size], device=device)
                    partners.append((codes, pick))
                total = torch.zeros(X.shape[1], dtype=torch.float64, device=device)
                for start in range(0, n_controls, self.batch_size):
                    stop = min(start + self.batch_size, n_controls)
                    z = basal[start:stop]
                    for codes, pick in partners:
                        z = z + codes[pick[start:stop]]
                    total += model.decode(z).to(torch.float64).sum(dim=0)
        finally:
            model.train(was_training)
        return (total / n_controls).cpu().numpy()

    def predict_cells(self, X: np.ndarray, task: TransferTask, source: Source,
                      rng: np.random.Generator, n_cells: int | None = None) -> np.ndarray:
        """Decoded single cells ``D(E_s(x_ctrl) + sum_k E_p(x_k))`` (with this predictor's offset).

        Each of the ``n_cells`` cells (default: as many as the task scores) pairs a control cell of
        the target drawn with ``rng`` with one perturbed cell of each source component drawn with
        ``rng`` (without replacement while there are enough), as `predicted_cells` does.
        """
        import torch

        model = self.model
        device = next(model.parameters()).device
        n = int(n_cells) if n_cells is not None else int(np.asarray(task.target_idx).size)
        control_idx = np.asarray(task.control_idx)
        if control_idx.size == 0:
            raise ValueError(f"task {task.condition!r} has no control cells to encode")
        picked = rng.choice(control_idx, n, replace=control_idx.size < n)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                z = self._encode(model.encode_basal, X, picked, device)
                if self.offset == "swap":
                    z = z + self._encode(model.encode_perturbation, X, control_idx, device).mean(0)
                for perturbed_idx, source_controls in source.components:
                    perturbed_idx = np.asarray(perturbed_idx)
                    if perturbed_idx.size == 0:
                        raise ValueError(f"task {task.condition!r}: a source component has no cells")
                    partners = rng.choice(perturbed_idx, n, replace=perturbed_idx.size < n)
                    codes = self._encode(model.encode_perturbation, X, partners, device)
                    if self.offset == "swap":
                        codes = codes - self._encode(model.encode_perturbation, X,
                                                     np.asarray(source_controls), device).mean(0)
                    z = z + codes
                cells = torch.cat([model.decode(z[i:i + self.batch_size])
                                   for i in range(0, n, self.batch_size)], dim=0)
        finally:
            model.train(was_training)
        return cells.to(torch.float64).cpu().numpy()


# ----------------------------------------------------------------------------- evaluation
def dense_float32(X) -> np.ndarray:
    """``X`` (dense or sparse) as a C-contiguous float32 array (no copy when it already is one)."""
    if sparse.issparse(X):
        X = X.toarray()
    return np.ascontiguousarray(X, dtype=np.float32)


def _deg_positions(adata, condition: str, key: str = "top_degs") -> np.ndarray:
    top_degs = adata.uns.get(key)
    if top_degs is None:
        raise KeyError(f"adata.uns[{key!r}] is missing; run xtcdr.preprocess.preprocess first")
    if condition not in top_degs:
        raise KeyError(f"condition {condition!r} is missing from adata.uns['top_degs'] "
                       f"({len(top_degs)} conditions stored); recompute the DEGs with "
                       "xtcdr.preprocess.preprocess on this AnnData")
    names = [str(n) for n in np.asarray(top_degs[condition]).ravel()]
    positions = pd.Index(adata.var_names).get_indexer(names)
    return pd.unique(positions[positions >= 0])


def _six(observed: np.ndarray, predicted: np.ndarray, degs: np.ndarray) -> list[float]:
    return [r2(observed, predicted), r2(observed[degs], predicted[degs]),
            explained_variance(observed, predicted), explained_variance(observed[degs], predicted[degs]),
            pearson(observed, predicted), pearson(observed[degs], predicted[degs])]


def target_positions(adata, perturbation: str, sep: str = "+") -> np.ndarray:
    """Positions in ``adata.var_names`` of the genes a genetic perturbation names (its targets).

    ``"RPL23A"`` -> the position of RPL23A; ``"FOSB+CEBPB"`` -> both; names that are not genes of
    ``adata`` (drugs, or a target not among the kept genes) give nothing.
    """
    positions = pd.Index(adata.var_names).get_indexer([p for p in str(perturbation).split(sep) if p])
    return np.unique(positions[positions >= 0])


def _dropped(adata, task: TransferTask, drop_genes) -> np.ndarray:
    if drop_genes is None:
        return np.array([], dtype=np.int64)
    if drop_genes == "target":
        return target_positions(adata, task.perturbation)
    if callable(drop_genes):
        names = list(drop_genes(task))
        positions = pd.Index(adata.var_names).get_indexer(names)
        return np.unique(positions[positions >= 0])
    raise ValueError(f"drop_genes must be None, 'target' or a function task -> gene names, "
                     f"got {drop_genes!r}")


def _perturbed_centroids(adata, X: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell type, the equal-weight mean of its training perturbations' mean profiles.

    Systema's perturbed-centroid reference: cells with ``obs['split'] == 'train'`` that are not
    controls, one centroid per perturbation (`xtcdr.metrics.mean_of_centroids`). Cell types
    without a training perturbation (or data without ``obs['split']``) are absent.
    """
    obs = adata.obs
    if "split" not in obs or "cell_type" not in obs or "perturbation" not in obs:
        return {}
    perturbation = obs["perturbation"].astype(str).to_numpy()
    is_control = (obs["is_control"].to_numpy().astype(bool) if "is_control" in obs
                  else perturbation == "control")
    train = obs["split"].astype(str).to_numpy() == "train"
    keys = pd.DataFrame({"cell_type": obs["cell_type"].astype(str).to_numpy(), "perturbation": perturbation})
    by_context: dict[str, list[np.ndarray]] = {}
    for (context, _), rows in _groups(keys, np.flatnonzero(train & ~is_control)).items():
        by_context.setdefault(context, []).append(rows)
    return {context: mean_of_centroids(X, groups) for context, groups in by_context.items()}


def _cell_space(adata, X: np.ndarray, seed: int):
    """PCA (``EDIST_COMPONENTS`` components) fitted on training cells only, at most
    ``EDIST_MAX_FIT_CELLS`` of them drawn with a seeded generator."""
    from sklearn.decomposition import PCA

    if "split" not in adata.obs:
        raise ValueError("cell_metrics=True fits its PCA on the training cells, but adata.obs has no "
                         "'split' column; assign one (xtcdr.pairing.assign_split) or pass cell_metrics=False")
    train = np.flatnonzero(adata.obs["split"].astype(str).to_numpy() == "train")
    if train.size < 3:
        raise ValueError(f"cell_metrics=True needs training cells (obs['split'] == 'train') to fit "
                         f"its PCA; found {train.size}. Pass cell_metrics=False")
    if train.size > EDIST_MAX_FIT_CELLS:
        train = np.sort(np.random.default_rng(seed).choice(train, EDIST_MAX_FIT_CELLS, replace=False))
    n_components = min(EDIST_COMPONENTS, train.size - 1, X.shape[1])
    # exact from the gene covariance while it is small; a seeded randomized SVD for many genes
    solver = "covariance_eigh" if X.shape[1] <= 2000 and train.size > X.shape[1] else "randomized"
    pca = PCA(n_components=n_components, svd_solver=solver, random_state=seed)
    return pca.fit(X[train]), int(train.size)


def _edist(predictor: Predictor, X: np.ndarray, task: TransferTask, pca, drop: np.ndarray,
           seed: int) -> float:
    """Energy distance between predicted and observed cells of one task in the PCA space."""
    rng = _stable_rng(seed, task.condition)
    observed = np.asarray(task.target_idx)
    if observed.size > EDIST_MAX_CELLS:
        observed = rng.choice(observed, EDIST_MAX_CELLS, replace=False)
    per_source = -(-observed.size // len(task.sources))     # equal share of cells per source
    predicted = np.concatenate([np.array(predictor.predict_cells(X, task, source, rng, n_cells=per_source),
                                         dtype=np.float64) for source in task.sources])
    observed = X[observed].astype(np.float64)
    if drop.size:  # a dropped gene set to the PCA mean on both sides adds nothing to the projection
        predicted[:, drop] = pca.mean_[drop]
        observed[:, drop] = pca.mean_[drop]
    return energy_distance(pca.transform(predicted), pca.transform(observed))


def _discrimination(records: list[dict]) -> dict[str, np.ndarray]:
    """Rank and centroid columns: each task against the other tasks of its target cell type."""
    n = len(records)
    out = {name: np.full(n, np.nan) for name in ("rank_all_delta", "rank_deg_delta", "centroid_hit")}
    contexts = pd.Series([r["context"] for r in records])
    for _, positions in contexts.groupby(contexts, sort=False).indices.items():
        group = [records[i] for i in positions]
        predicted = np.stack([r["predicted_delta"] for r in group])
        observed = np.stack([r["observed_delta"] for r in group])
        keep = [r["keep"] for r in group]
        out["rank_all_delta"][positions] = discrimination_ranks(predicted, observed, genes=keep)
        out["rank_deg_delta"][positions] = discrimination_ranks(
            predicted, observed, genes=[r["degs"] for r in group])
        out["centroid_hit"][positions] = centroid_accuracy(predicted, observed, genes=keep)
    return out


def evaluate_transfer(predictor: Predictor, adata, *, split: str = "test", protocol: str = "auto",
                      seed: int = 0, tasks: list[TransferTask] | None = None,
                      progress: bool = False, degs_key: str = "top_degs",
                      drop_genes=None, cell_metrics: bool = False) -> pd.DataFrame:
    """Score a predictor on every transfer task; one row per task.

    Parameters
    ----------
    predictor
        A fitted `Predictor`.
    adata
        AnnData in the standard schema with ``uns['top_degs']``.
    split, protocol, seed
        Passed to `transfer_tasks` when ``tasks`` is None. ``seed`` also seeds the cells the energy
        distance draws (per condition) and its PCA.
    tasks
        Precomputed tasks (reuse them so that every predictor sees the same halves).
    progress
        Show a tqdm progress bar.
    degs_key
        The ``uns`` entry holding each condition's DEGs (``"top_degs_score"``: the t-score-only
        lists, for comparison). Tasks that carry their own ``deg_idx`` (within-context) keep it.
    drop_genes
        Genes left out of both gene sets (all genes and DEGs) of each task before scoring:
        ``None`` (default) keeps every gene; ``"target"`` leaves out the gene(s) the perturbation
        names (`target_positions`: a knockdown's own target, whose measured fall is part of the
        readout rather than of the response); a function ``task -> gene names`` any others.
    cell_metrics
        Also compute ``edist`` (it calls ``predictor.predict_cells``, slower); False leaves it NaN.

    Returns
    -------
    DataFrame with columns condition, cell_type, perturbation, protocol, n_cells (scored cells),
    n_sources, n_degs (DEGs scored), then `METRIC_COLUMNS`: r2/ev/pcc over all genes and over the
    top-50 DEGs of the condition, on mean profiles and (suffix ``_delta``) on deltas against the
    target control mean; then `DISCRIMINATION_COLUMNS`:

    - ``rank_all_delta``, ``rank_deg_delta``: PerturBench's rank (`xtcdr.metrics.discrimination_ranks`,
      cosine distance) of the predicted delta among the observed deltas of the conditions scored
      here in the same target cell type, over all genes and over this condition's DEGs.
    - ``centroid_hit``: 1 when the prediction is nearer (Euclidean, all genes) its own observed
      mean than that of any other condition scored in its target cell type, else 0
      (`xtcdr.metrics.centroid_accuracy`; its mean is Systema's centroid accuracy).
      Rank and hit compare a task with the other tasks of its cell type (whatever their protocol):
      NaN where a cell type has a single task.
    - ``pcc_all_pert_delta``, ``pcc_deg_pert_delta``: Pearson of deltas against the perturbed
      centroid of the target cell type (mean of its training perturbations' mean profiles,
      `xtcdr.metrics.pearson_delta`); NaN where the cell type has no training perturbation and
      where the prediction equals that centroid.
    - ``edist``: energy distance (`xtcdr.metrics.energy_distance`, Euclidean) between predicted
      and observed cells in a PCA of ``EDIST_COMPONENTS`` components fitted on training cells
      only, with at most ``EDIST_MAX_CELLS`` cells per side; predicted cells are shared equally
      between the sources. Dropped genes are set to the PCA mean on both sides.

    ``df.attrs``: ``predictor`` (its name), ``cell_metrics``, and with cell metrics the PCA's
    ``edist_components``, ``edist_max_cells`` and ``edist_fit_cells``.
    """
    if tasks is None:
        tasks = transfer_tasks(adata, split=split, protocol=protocol, seed=seed)
    X = dense_float32(adata.X)
    n_genes = X.shape[1]
    centroids = _perturbed_centroids(adata, X)
    pca, n_fit = _cell_space(adata, X, seed) if cell_metrics else (None, 0)
    iterator = tasks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(tasks, desc=f"evaluate {predictor.name}")

    rows, records = [], []
    for task in iterator:
        degs = (np.asarray(task.deg_idx, dtype=np.int64) if task.deg_idx is not None
                else _deg_positions(adata, task.condition, degs_key))
        if not task.sources:
            raise ValueError(f"task {task.condition!r} has no sources to predict from")
        predictions = []
        for source in task.sources:
            predicted = np.asarray(predictor.predict(X, task, source), dtype=np.float64)
            if predicted.shape != (n_genes,):
                raise ValueError(f"{predictor.name}.predict returned shape {predicted.shape} for "
                                 f"{task.condition!r}; expected ({n_genes},), a mean profile over genes")
            predictions.append(predicted)
        predicted = np.mean(predictions, axis=0)
        observed = X[task.target_idx].mean(axis=0, dtype=np.float64)
        control_mean = X[task.control_idx].mean(axis=0, dtype=np.float64)
        drop = _dropped(adata, task, drop_genes)
        keep = np.setdiff1d(np.arange(n_genes), drop)
        degs = degs[~np.isin(degs, drop)]           # positions among all genes
        records.append({"context": task.cell_type, "keep": keep, "degs": degs,
                        "predicted_delta": predicted - control_mean, "observed_delta": observed - control_mean})
        centroid = centroids.get(task.cell_type)
        pert_delta = ([pearson_delta(observed[g], predicted[g], centroid[g]) for g in (keep, degs)]
                      if centroid is not None else [np.nan, np.nan])
        edist = _edist(predictor, X, task, pca, drop, seed) if cell_metrics else np.nan
        local = np.searchsorted(keep, degs)           # positions among the kept genes
        predicted, observed, control_mean = predicted[keep], observed[keep], control_mean[keep]
        values = _six(observed, predicted, local) + _six(observed - control_mean, predicted - control_mean, local)
        rows.append([task.condition, task.cell_type, task.perturbation, task.protocol,
                     int(np.asarray(task.target_idx).size), len(task.sources), int(degs.size), *values,
                     np.nan, np.nan, np.nan, *pert_delta, edist])

    df = pd.DataFrame(rows, columns=list(_TASK_COLUMNS + METRIC_COLUMNS + DISCRIMINATION_COLUMNS))
    if records:
        for column, values in _discrimination(records).items():
            df[column] = values
    df.attrs["predictor"] = predictor.name
    df.attrs["cell_metrics"] = bool(cell_metrics)
    if cell_metrics:
        df.attrs.update(edist_components=int(pca.n_components_), edist_max_cells=EDIST_MAX_CELLS,
                        edist_fit_cells=n_fit)
    if drop_genes is not None:
        df.attrs["drop_genes"] = drop_genes if isinstance(drop_genes, str) else "custom"
    return df


def summarize(df: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean and median of each metric across conditions, ignoring NaN.

    Returns a DataFrame with index ``["mean", "median"]``, one column per metric (default: every
    column of `METRIC_COLUMNS` and `DISCRIMINATION_COLUMNS` present in ``df``), ``n_cells`` (mean
    and median scored cells per condition, when ``df`` has it) and ``n_conditions`` (number of rows).
    The mean of ``centroid_hit`` is the centroid accuracy.
    """
    if metrics is None:
        metrics = [m for m in METRIC_COLUMNS + DISCRIMINATION_COLUMNS if m in df.columns]
    else:
        unknown = [m for m in metrics if m not in df.columns]
        if unknown:
            raise KeyError(f"metric(s) {unknown} not in the results; available: {list(df.columns)}")
    columns = list(metrics) + (["n_cells"] if "n_cells" in df.columns else [])
    values = df[columns].astype(float)
    summary = pd.DataFrame({"mean": values.mean(skipna=True), "median": values.median(skipna=True)}).T
    summary["n_conditions"] = len(df)
    summary.index.name = "statistic"
    return summary


def compare(results: dict[str, pd.DataFrame], metrics: list[str] | None = None) -> pd.DataFrame:
    """Stack the summaries of several predictors: rows (predictor, statistic), columns metrics.

    ``results`` maps a predictor name to its `evaluate_transfer` table. Print with
    ``compare(results).round(3)``, or ``.xs('mean', level='statistic')`` for one row per predictor.
    """
    if not results:
        raise ValueError("compare needs at least one result table, got an empty dict")
    summaries = {name: summarize(df, metrics) for name, df in results.items()}
    return pd.concat(summaries, names=["predictor", "statistic"])


def task_prediction(predictor: Predictor, X: np.ndarray, task: TransferTask) -> np.ndarray:
    """A task's predicted mean profile: the average over its sources, as `evaluate_transfer` scores it."""
    return np.mean([np.asarray(predictor.predict(X, task, s), dtype=np.float64) for s in task.sources], axis=0)


def predicted_cells(model, task: TransferTask, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Single-cell predictions of a cross task, as many as scored cells: each a random control cell
    of the target paired with a random source cell of another line, ``D(E_s(x_ctrl) + E_p(x_A))``."""
    import torch

    n = task.target_idx.size
    ctrl = rng.choice(task.control_idx, n, replace=task.control_idx.size < n)
    src = np.concatenate([s.components[0][0] for s in task.sources])
    src = rng.choice(src, n, replace=src.size < n)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        out = model.predict_transfer(torch.as_tensor(X[src], device=device), torch.as_tensor(X[ctrl], device=device))
    return out.cpu().numpy()


__all__ += ["task_prediction", "predicted_cells"]
