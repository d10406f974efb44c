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
"""
from __future__ import annotations

from dataclasses import dataclass, field
import warnings
import zlib

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from .pairing import require_obs

__all__ = [
    "r2", "explained_variance", "pearson", "spearman",
    "Source", "TransferTask", "transfer_tasks", "PROTOCOLS",
    "Predictor", "ModelPredictor",
    "METRIC_COLUMNS", "evaluate_transfer", "summarize", "compare", "scored_degs",
    "target_positions",
]

PROTOCOLS = ("auto", "cross", "within", "combination")
MIN_CELLS = 2          # fewest cells a scored condition may have ("cross", "combination")
MIN_CELLS_WITHIN = 4   # fewest cells for "within" (two halves of at least two cells each)

_BASE_METRICS = ("r2_all", "r2_deg", "ev_all", "ev_deg", "pcc_all", "pcc_deg")
METRIC_COLUMNS = _BASE_METRICS + tuple(f"{m}_delta" for m in _BASE_METRICS)
_TASK_COLUMNS = ("condition", "cell_type", "perturbation", "protocol", "n_cells", "n_sources", "n_degs")


# ----------------------------------------------------------------------------- metrics
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
    """

    name: str = "predictor"

    def fit(self, adata) -> "Predictor":
        return self

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement predict(X, task, source)")

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


def evaluate_transfer(predictor: Predictor, adata, *, split: str = "test", protocol: str = "auto",
                      seed: int = 0, tasks: list[TransferTask] | None = None,
                      progress: bool = False, degs_key: str = "top_degs",
                      drop_genes=None) -> pd.DataFrame:
    """Score a predictor on every transfer task; one row per task.

    Parameters
    ----------
    predictor
        A fitted `Predictor`.
    adata
        AnnData in the standard schema with ``uns['top_degs']``.
    split, protocol, seed
        Passed to `transfer_tasks` when ``tasks`` is None.
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

    Returns
    -------
    DataFrame with columns condition, cell_type, perturbation, protocol, n_cells (scored cells),
    n_sources, n_degs (DEGs scored), then `METRIC_COLUMNS`: r2/ev/pcc over all genes and over the top-50 DEGs of the
    condition, on mean profiles and (suffix ``_delta``) on deltas against the target control mean.
    ``df.attrs['predictor']`` is the predictor's name.
    """
    if tasks is None:
        tasks = transfer_tasks(adata, split=split, protocol=protocol, seed=seed)
    X = dense_float32(adata.X)
    n_genes = X.shape[1]
    iterator = tasks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(tasks, desc=f"evaluate {predictor.name}")

    rows = []
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
        if drop.size:
            keep = np.setdiff1d(np.arange(n_genes), drop)
            degs = np.searchsorted(keep, degs[~np.isin(degs, drop)])
            predicted, observed, control_mean = predicted[keep], observed[keep], control_mean[keep]
        values = _six(observed, predicted, degs) + _six(observed - control_mean, predicted - control_mean, degs)
        rows.append([task.condition, task.cell_type, task.perturbation, task.protocol,
                     int(np.asarray(task.target_idx).size), len(task.sources), int(degs.size), *values])

    df = pd.DataFrame(rows, columns=list(_TASK_COLUMNS + METRIC_COLUMNS))
    df.attrs["predictor"] = predictor.name
    if drop_genes is not None:
        df.attrs["drop_genes"] = drop_genes if isinstance(drop_genes, str) else "custom"
    return df


def summarize(df: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean and median of each metric across conditions, ignoring NaN.

    Returns a DataFrame with index ``["mean", "median"]``, one column per metric (default: every
    column of `METRIC_COLUMNS` present in ``df``), ``n_cells`` (mean and median scored cells per
    condition, when ``df`` has it) and ``n_conditions`` (number of rows).
    """
    if metrics is None:
        metrics = [m for m in METRIC_COLUMNS if m in df.columns]
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
