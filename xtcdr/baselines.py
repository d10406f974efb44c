"""Simple baselines that read the same inputs as the model.

At test time the model reads the held-out perturbation's measured response in a source, so the
fair baselines may read it too. Each is a `xtcdr.evaluate.Predictor` returning a mean profile:

- ``control``: the target's control mean (the paper's "Baseline").
- ``source_shift``: target control mean + sum over components of
  (perturbed mean - control mean) measured in the source context, in expression space.
- ``additive``: the same formula for combinations, ctrl + (a - ctrl) + (b - ctrl).
- ``train_mean``: target control mean + the mean effect of the training perturbations in the
  target's cell type; it ignores the source, so it shows how much of a score is generic response.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from xtcdr.evaluate import Predictor, Source, TransferTask

__all__ = ["ControlBaseline", "SourceShiftBaseline", "AdditiveBaseline", "TrainMeanBaseline",
           "BASELINES", "get_baseline"]


def _mean(X: np.ndarray, rows) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.size == 0:
        raise ValueError("cannot average an empty set of cells")
    return X[rows].mean(axis=0, dtype=np.float64)


class ControlBaseline(Predictor):
    """Predict the target context's control mean (the paper's "Baseline")."""

    name = "control"

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        return _mean(X, task.control_idx)


class SourceShiftBaseline(Predictor):
    """Target control mean plus each component's measured shift in the source context.

    ``mean X[control_idx] + sum_k (mean X[perturbed_k] - mean X[controls_k])``.
    """

    name = "source_shift"

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        prediction = _mean(X, task.control_idx)
        for perturbed_idx, control_idx in source.components:
            prediction = prediction + (_mean(X, perturbed_idx) - _mean(X, control_idx))
        return prediction


class AdditiveBaseline(SourceShiftBaseline):
    """Additive combination: ctrl + (single a - ctrl) + (single b - ctrl)."""

    name = "additive"


class TrainMeanBaseline(Predictor):
    """Target control mean plus the mean effect of the training perturbations in that cell type.

    `fit` reads only ``obs['split'] == 'train'`` cells: for each cell type, the average over
    training single perturbations p (equal weight per p) of
    ``mean X[(cell type, p)] - mean X[training controls of the cell type]``. A cell type with no
    training perturbation gets the average of the other cell types' effects.
    """

    name = "train_mean"

    def __init__(self):
        self.effects_: dict[str, np.ndarray] | None = None
        self.fallback_: np.ndarray | None = None

    def fit(self, adata) -> "TrainMeanBaseline":
        obs = adata.obs
        missing = [c for c in ("cell_type", "perturbation", "split") if c not in obs]
        if missing:
            raise KeyError(f"adata.obs lacks column(s) {missing}; run xtcdr.pairing.assign_split first")
        train = np.flatnonzero(obs["split"].astype(str).to_numpy() == "train")
        perturbation = obs["perturbation"].astype(str).to_numpy()[train]
        cell_type = obs["cell_type"].astype(str).to_numpy()[train]
        if "is_control" in obs:
            is_control = obs["is_control"].to_numpy().astype(bool)[train]
        else:
            is_control = perturbation == "control"
        X = adata.X[train]
        X = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float32)

        effects = {}
        single = ~is_control & ~pd.Series(perturbation).str.contains("+", regex=False).to_numpy()
        for context in np.unique(cell_type):
            in_context = cell_type == context
            controls = np.flatnonzero(in_context & is_control)
            perts = np.unique(perturbation[in_context & single])
            if controls.size == 0 or perts.size == 0:
                continue
            control_mean = _mean(X, controls)
            shifts = [_mean(X, np.flatnonzero(in_context & (perturbation == p))) - control_mean for p in perts]
            effects[str(context)] = np.mean(shifts, axis=0)
        if not effects:
            raise ValueError("TrainMeanBaseline.fit found no cell type with both training controls and "
                             "training single perturbations (obs['split'] == 'train')")
        self.effects_ = effects
        self.fallback_ = np.mean(list(effects.values()), axis=0)
        return self

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        if self.effects_ is None:
            raise RuntimeError("TrainMeanBaseline is not fitted; call .fit(adata) before predict")
        effect = self.effects_.get(str(task.cell_type), self.fallback_)
        if effect.shape[0] != X.shape[1]:
            raise ValueError(f"TrainMeanBaseline was fitted on {effect.shape[0]} genes, X has {X.shape[1]}")
        return _mean(X, task.control_idx) + effect


BASELINES: dict[str, type[Predictor]] = {
    "control": ControlBaseline,
    "source_shift": SourceShiftBaseline,
    "train_mean": TrainMeanBaseline,
    "additive": AdditiveBaseline,
}


def get_baseline(name: str) -> Predictor:
    """Return a new, unfitted baseline by name (one of `BASELINES`)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {list(BASELINES)}")
    return BASELINES[name]()


# ----------------------------------------------------------------------------- oracle
# The normalised replicate of the last twin asked for: it depends on the world, not on the split
# or the genes kept, so notebooks that score several splits simulate it once.
_REPLICATE_CACHE: dict = {}

class ReplicateOracle(Predictor):
    """Predict each condition by its observed mean in an independent, larger replicate experiment.

    On synthetic data an independent replicate of the same world (same cell types, effects and
    decoder, fresh cells: ``xtcdr.synthetic.simulate(name, cell_seed=1)``) is available. With
    ``cells_factor`` times the cells of each condition (10 by default) its means are close to the
    true condition means, so it shows what knowing the answer up to sampling noise scores. It is a
    reference, not a ceiling: the scored cells are themselves a finite sample, and a predictor can
    land closer to their mean by chance. It ignores the source.

    Parameters
    ----------
    replicate
        AnnData of the replicate, normalised like the evaluated data (log1p of counts normalised
        to the same total) with ``obs['condition']``; it must hold every gene of the evaluated data.
        `from_synthetic` builds it.

    Notes
    -----
    `fit(adata)` aligns the replicate's genes to ``adata.var_names`` and stores one mean profile
    per condition in ``means_``; `predict` looks up ``task.condition`` there.
    """

    name = "oracle"

    def __init__(self, replicate):
        if "condition" not in replicate.obs:
            raise KeyError("the replicate lacks obs['condition'] (cell_type + '_' + perturbation); "
                           "build it with ReplicateOracle.from_synthetic or xtcdr.datasets.from_anndata")
        self.replicate = replicate
        self.means_: dict[str, np.ndarray] | None = None
        self.genes_: list[str] | None = None

    @classmethod
    def from_synthetic(cls, dataset: str, adata, *, cell_seed: int = 1,
                       cells_factor: int = 10) -> "ReplicateOracle":
        """Simulate a replicate of the synthetic twin ``dataset`` and normalise it like ``adata``.

        The replicate has ``cells_factor`` times the cells of each perturbed condition (controls as
        many as in the data).

        Counts are normalised to the total of ``adata.uns['xtcdr']['preprocess']['target_sum']``
        (1e4 when absent) and log1p-transformed on all genes, then restricted to ``adata.var_names``,
        as `xtcdr.preprocess.preprocess` does. ``cell_seed`` must differ from the cells' seed of
        ``adata`` (0 for `xtcdr.pipeline.prepare`).
        """
        import scanpy as sc

        from xtcdr.synthetic import TWINS, simulate

        if dataset not in TWINS:
            raise ValueError(f"an independent replicate exists only for the synthetic twins "
                             f"{sorted(TWINS)}, not for {dataset!r}")
        info = adata.uns.get("xtcdr", {})
        world_seed = int(info.get("seed", 0))          # the world: cell types, effects, decoder
        if int(info.get("cell_seed", -1)) == int(cell_seed):  # -1: simulated with cell_seed=None
            raise ValueError(f"cell_seed={cell_seed} is the seed of the evaluated cells; an "
                             "independent replicate needs another cell_seed")
        if int(cells_factor) < 1:
            raise ValueError(f"cells_factor must be a positive integer, got {cells_factor}")
        n_cells = int(info.get("simulation", {}).get("cells_per_condition", TWINS[dataset].cells_per_condition))
        target_sum = float(info.get("preprocess", {}).get("target_sum", 1e4))
        key = (dataset, world_seed, int(cell_seed), n_cells * int(cells_factor), target_sum, simulate)
        if _REPLICATE_CACHE.get("key") != key:      # one replicate kept: the same for every split
            replicate = simulate(dataset, seed=world_seed, cell_seed=cell_seed,
                                 cells_per_condition=n_cells * int(cells_factor))
            sc.pp.normalize_total(replicate, target_sum=target_sum)
            sc.pp.log1p(replicate)
            replicate.uns.pop("log1p", None)
            _REPLICATE_CACHE.clear()
            _REPLICATE_CACHE.update(key=key, replicate=replicate)
        replicate = _REPLICATE_CACHE["replicate"]
        missing = [g for g in adata.var_names if g not in replicate.var_names]
        if missing:
            raise KeyError(f"{len(missing)} gene(s) of the evaluated data are not in the replicate, "
                           f"e.g. {missing[:5]}; was adata simulated from {dataset!r}?")
        return cls(replicate[:, list(adata.var_names)].copy())

    def fit(self, adata) -> "ReplicateOracle":
        genes = [str(g) for g in adata.var_names]
        present = set(map(str, self.replicate.var_names))
        missing = [g for g in genes if g not in present]
        if missing:
            raise KeyError(f"the replicate lacks {len(missing)} gene(s) of the evaluated data, "
                           f"e.g. {missing[:5]}; restrict both to the same genes")
        rep = self.replicate[:, genes]
        X = rep.X.toarray() if sparse.issparse(rep.X) else np.asarray(rep.X)
        X = X.astype(np.float64, copy=False)
        condition = rep.obs["condition"].astype(str).to_numpy()
        self.means_ = {c: X[condition == c].mean(axis=0) for c in np.unique(condition)}
        self.genes_ = genes
        return self

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        if self.means_ is None:
            raise RuntimeError("ReplicateOracle is not fitted; call .fit(adata) before predict")
        if task.condition not in self.means_:
            raise KeyError(f"condition {task.condition!r} is not in the replicate "
                           f"({len(self.means_)} conditions, e.g. {sorted(self.means_)[:3]})")
        if len(self.genes_) != X.shape[1]:
            raise ValueError(f"ReplicateOracle was fitted on {len(self.genes_)} genes, X has {X.shape[1]}")
        return self.means_[task.condition]


__all__ += ["ReplicateOracle"]
