"""Simple baselines that read the same inputs as the model (REFERENCE.md section 5).

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
