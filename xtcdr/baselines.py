"""Simple baselines that read the same inputs as the model.

At test time the model reads the held-out perturbation's measured response in a source, so the
fair baselines may read it too. Each is a `xtcdr.evaluate.Predictor` returning a mean profile:

- ``control``: the target's control mean (the paper's "Baseline").
- ``source_shift``: target control mean + sum over components of
  (perturbed mean - control mean) measured in the source context, in expression space.
- ``additive``: the same formula for combinations, ctrl + (a - ctrl) + (b - ctrl).
- ``train_mean``: the mean effect of the training perturbations in the target's cell type added to
  that cell type's training controls (the mean of its training perturbations' profiles, Systema's
  perturbed centroid); it ignores the source, so it shows how much of a score is generic response.
- ``linear_transfer``: a ridge map, learned on training perturbations measured in both contexts,
  from a perturbation's effect in the source context to its effect in the target context, in a
  PCA space of effects (a linear model on PCA embeddings, as Ahlmann-Eltze, Huber & Anders,
  Nat. Methods 2025, found hard to beat).
- ``additive_linear``: PerturBench's additive linear model (Wu et al. 2024), condition mean =
  intercept + context effect + perturbation effect.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import sparse

from xtcdr.evaluate import Predictor, Source, TransferTask, _groups

__all__ = ["ControlBaseline", "SourceShiftBaseline", "AdditiveBaseline", "TrainMeanBaseline",
           "LinearTransferBaseline", "AdditiveLinearBaseline", "BASELINES", "get_baseline"]


def _mean(X: np.ndarray, rows) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.size == 0:
        raise ValueError("cannot average an empty set of cells")
    return X[rows].mean(axis=0, dtype=np.float64)


def _training_means(adata, who: str) -> tuple[dict, dict]:
    """Mean profiles of the training cells (``obs['split'] == 'train'``) only.

    Returns ``controls`` (cell type -> mean of its training controls) and ``conditions``
    ((cell type, perturbation) -> mean of the training cells of that perturbed condition).
    """
    obs = adata.obs
    missing = [c for c in ("cell_type", "perturbation", "split") if c not in obs]
    if missing:
        raise KeyError(f"adata.obs lacks column(s) {missing}; run xtcdr.pairing.assign_split first")
    train = np.flatnonzero(obs["split"].astype(str).to_numpy() == "train")
    perturbation = obs["perturbation"].astype(str).to_numpy()[train]
    is_control = (obs["is_control"].to_numpy().astype(bool)[train] if "is_control" in obs
                  else perturbation == "control")
    keys = pd.DataFrame({"cell_type": obs["cell_type"].astype(str).to_numpy()[train],
                         "perturbation": perturbation})
    X = adata.X[train]
    X = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float32)
    controls = {str(ct): _mean(X, rows)
                for ct, rows in _groups(keys[["cell_type"]], np.flatnonzero(is_control)).items()}
    conditions = {(str(ct), str(p)): _mean(X, rows)
                  for (ct, p), rows in _groups(keys, np.flatnonzero(~is_control)).items()}
    if not conditions:
        raise ValueError(f"{who}.fit found no training perturbations (obs['split'] == 'train' and not "
                         "control); it learns from them")
    return controls, conditions


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
    """Training controls of the target cell type plus the mean effect of its training perturbations.

    `fit` reads only ``obs['split'] == 'train'`` cells: for each cell type, the average over
    training single perturbations p (equal weight per p) of
    ``mean X[(cell type, p)] - mean X[training controls of the cell type]``, and the training
    control mean it was measured against. `predict` adds the effect to those same controls, so the
    prediction is the equal-weight mean of the cell type's training perturbation profiles (Systema's
    perturbed centroid, its "non-control mean" baseline). A cell type with no training perturbation
    gets the average of the other cell types' effects, added to its training controls (or, with no
    training controls either, to the task's controls).
    """

    name = "train_mean"

    def __init__(self):
        self.effects_: dict[str, np.ndarray] | None = None
        self.controls_: dict[str, np.ndarray] | None = None
        self.fallback_: np.ndarray | None = None

    def fit(self, adata) -> "TrainMeanBaseline":
        try:
            controls, conditions = _training_means(adata, "TrainMeanBaseline")
        except ValueError:
            controls, conditions = {}, {}
        effects = {}
        for context, control_mean in controls.items():
            shifts = [mean - control_mean for (ct, p), mean in conditions.items()
                      if ct == context and "+" not in p]
            if shifts:
                effects[context] = np.mean(shifts, axis=0)
        if not effects:
            raise ValueError("TrainMeanBaseline.fit found no cell type with both training controls and "
                             "training single perturbations (obs['split'] == 'train')")
        self.effects_, self.controls_ = effects, controls
        self.fallback_ = np.mean(list(effects.values()), axis=0)
        return self

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        if self.effects_ is None:
            raise RuntimeError("TrainMeanBaseline is not fitted; call .fit(adata) before predict")
        context = str(task.cell_type)
        effect = self.effects_.get(context, self.fallback_)
        if effect.shape[0] != X.shape[1]:
            raise ValueError(f"TrainMeanBaseline was fitted on {effect.shape[0]} genes, X has {X.shape[1]}")
        base = self.controls_[context] if context in self.controls_ else _mean(X, task.control_idx)
        return base + effect


class LinearTransferBaseline(Predictor):
    """Ridge map of perturbation effects from one context to another, in a PCA space of effects.

    `fit` reads only ``obs['split'] == 'train'`` cells. A training condition's effect is its mean
    minus the mean of its cell type's training controls. A PCA (``n_components``, at most the
    number of effects - 1) is fitted on the effects of every training condition, so held-out
    conditions never shape it. For each ordered pair of cell types (A, B) sharing at least
    ``min_shared`` training perturbations, ``sklearn.linear_model.RidgeCV`` maps the PCA
    coordinates of the shared perturbations' effects in A to those in B (with an intercept: the
    mean difference between B's and A's effects); its penalty is chosen among ``alphas`` by
    leave-one-out cross-validation over those perturbations (one row per perturbation, so each
    fold leaves one perturbation out).

    `predict` for a source in A and a target in B: ``control mean of B + inverse_PCA(W z_A + b)``
    where ``z_A`` are the PCA coordinates of the source effect (perturbed mean - source control
    mean). Where no map applies the prediction is the source shift (`SourceShiftBaseline`): for
    within-context sources (A == B, the identity map), for combinations (several components), and
    for pairs with fewer than ``min_shared`` shared training perturbations (listed in
    ``too_few_``, with a warning at fit).

    A linear model on PCA embeddings after Ahlmann-Eltze, Huber & Anders (Nat. Methods 2025), who
    found such models hard to beat for unseen perturbations.
    """

    name = "linear_transfer"

    def __init__(self, n_components: int = 10, alphas=tuple(np.logspace(-3, 3, 13)), min_shared: int = 5):
        if n_components < 1 or min_shared < 3:
            raise ValueError(f"need n_components >= 1 and min_shared >= 3 (leave-one-out needs rows), "
                             f"got {n_components} and {min_shared}")
        self.n_components, self.alphas, self.min_shared = int(n_components), tuple(alphas), int(min_shared)
        self.pca_ = None
        self.maps_: dict[tuple[str, str], object] = {}
        self.shared_: dict[tuple[str, str], list[str]] = {}
        self.too_few_: dict[tuple[str, str], int] = {}

    def fit(self, adata) -> "LinearTransferBaseline":
        from sklearn.decomposition import PCA
        from sklearn.linear_model import RidgeCV

        controls, conditions = _training_means(adata, "LinearTransferBaseline")
        keys = sorted(k for k in conditions if k[0] in controls)
        if len(keys) < 2:
            raise ValueError(f"LinearTransferBaseline.fit needs at least 2 training conditions with "
                             f"training controls of their cell type, found {len(keys)}")
        effects = np.stack([conditions[k] - controls[k[0]] for k in keys])
        k = min(self.n_components, effects.shape[0] - 1, effects.shape[1])
        self.pca_ = PCA(n_components=k, svd_solver="full").fit(effects)
        coords = dict(zip(keys, self.pca_.transform(effects)))
        perts_of: dict[str, set] = {}
        for context, pert in keys:
            perts_of.setdefault(context, set()).add(pert)
        self.maps_, self.shared_, self.too_few_ = {}, {}, {}
        for a in sorted(perts_of):
            for b in sorted(perts_of):
                if a == b:
                    continue
                shared = sorted(perts_of[a] & perts_of[b])
                if len(shared) < self.min_shared:
                    self.too_few_[(a, b)] = len(shared)
                    continue
                z_a = np.stack([coords[(a, p)] for p in shared])
                z_b = np.stack([coords[(b, p)] for p in shared])
                self.maps_[(a, b)] = RidgeCV(alphas=self.alphas).fit(z_a, z_b)
                self.shared_[(a, b)] = shared
        if self.too_few_:
            pairs = ", ".join(f"{a}->{b} ({n})" for (a, b), n in self.too_few_.items())
            warnings.warn(f"LinearTransferBaseline: no map for {pairs}: fewer than min_shared="
                          f"{self.min_shared} shared training perturbations; those sources predict "
                          "the source shift", UserWarning, stacklevel=2)
        return self

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        if self.pca_ is None:
            raise RuntimeError("LinearTransferBaseline is not fitted; call .fit(adata) before predict")
        if self.pca_.n_features_in_ != X.shape[1]:
            raise ValueError(f"LinearTransferBaseline was fitted on {self.pca_.n_features_in_} genes, "
                             f"X has {X.shape[1]}")
        pair = (str(source.context), str(task.cell_type))
        if len(source.components) != 1 or pair not in self.maps_:
            return SourceShiftBaseline().predict(X, task, source)
        (perturbed_idx, control_idx), = source.components
        z_source = self.pca_.transform((_mean(X, perturbed_idx) - _mean(X, control_idx))[None])
        effect = self.pca_.inverse_transform(self.maps_[pair].predict(z_source))[0]
        return _mean(X, task.control_idx) + effect


class AdditiveLinearBaseline(Predictor):
    """PerturBench's additive linear model: condition mean = intercept + context + perturbation.

    `fit` reads only ``obs['split'] == 'train'`` cells and solves, by least squares over the
    training conditions (each condition's mean profile counts once; the controls of each cell type
    are one condition with no perturbation effect), ``mean(c, p) = intercept + alpha_c +
    sum_{k in p} beta_k`` for every gene (a double a+b gets ``beta_a + beta_b``). The solution is
    NumPy's minimum-norm least squares; ``intercept_`` is the mean of the cell types' levels and
    ``context_effects_`` the deviations from it (``level_c = intercept_ + alpha_c``).

    `predict`: a held-out perturbation's effect is read from its measured source in context A,
    ``beta_d = mean X[source cells] - level_A`` (the cells the model reads), and placed in the
    target context B: ``level_B + sum_k beta_k``. For one component this is
    ``mean X[source cells] + (level_B - level_A)``, while the source shift is
    ``mean X[source cells] + (control mean B - control mean A)``: the two differ only in how the
    context effect is estimated (here from every training condition of both contexts, there from
    their controls alone). Within a context (A == B) one component gives its source mean, as the
    source shift does; a combination a+b gives ``mean a + mean b - level_B`` where the additive
    baseline subtracts the control mean of B.

    PerturBench's ``LinearAdditive`` (``modelcore/models/linear_additive.py``) adds a linear term
    in the one-hot perturbation and covariates to each control cell and fits it per cell by
    gradient descent; on condition means with the controls as a condition this is the same model.
    Here it is solved exactly, one weight per condition, with no output nonlinearity.
    """

    name = "additive_linear"

    def __init__(self):
        self.intercept_: np.ndarray | None = None
        self.context_effects_: dict[str, np.ndarray] = {}
        self.perturbation_effects_: dict[str, np.ndarray] = {}

    def fit(self, adata) -> "AdditiveLinearBaseline":
        controls, conditions = _training_means(adata, "AdditiveLinearBaseline")
        rows = [(c, []) for c in controls] + [(c, p.split("+")) for c, p in conditions]
        means = np.stack(list(controls.values()) + list(conditions.values()))
        contexts = sorted({c for c, _ in rows})
        perts = sorted({k for _, parts in rows for k in parts})
        col = {**{c: i for i, c in enumerate(contexts)}, **{("p", k): len(contexts) + j for j, k in enumerate(perts)}}
        design = np.zeros((len(rows), len(contexts) + len(perts)))
        for r, (context, parts) in enumerate(rows):
            design[r, col[context]] = 1.0
            for k in parts:
                design[r, col[("p", k)]] += 1.0
        coef = np.linalg.lstsq(design, means, rcond=None)[0]
        levels = coef[:len(contexts)]
        self.intercept_ = levels.mean(axis=0)
        self.context_effects_ = {c: levels[i] - self.intercept_ for i, c in enumerate(contexts)}
        self.perturbation_effects_ = {k: coef[len(contexts) + j] for j, k in enumerate(perts)}
        return self

    def level(self, context: str) -> np.ndarray:
        """Fitted mean of a context's controls: ``intercept_ + context_effects_[context]``."""
        if self.intercept_ is None:
            raise RuntimeError("AdditiveLinearBaseline is not fitted; call .fit(adata) before predict")
        if str(context) not in self.context_effects_:
            raise KeyError(f"AdditiveLinearBaseline has no effect for cell type {context!r}: it had no "
                           f"training cells; fitted: {sorted(self.context_effects_)}")
        return self.intercept_ + self.context_effects_[str(context)]

    def predict(self, X: np.ndarray, task: TransferTask, source: Source) -> np.ndarray:
        target, origin = self.level(task.cell_type), self.level(source.context)
        if target.shape[0] != X.shape[1]:
            raise ValueError(f"AdditiveLinearBaseline was fitted on {target.shape[0]} genes, X has {X.shape[1]}")
        return target + sum(_mean(X, perturbed_idx) - origin for perturbed_idx, _ in source.components)


BASELINES: dict[str, type[Predictor]] = {
    "control": ControlBaseline,
    "source_shift": SourceShiftBaseline,
    "train_mean": TrainMeanBaseline,
    "additive": AdditiveBaseline,
    "linear_transfer": LinearTransferBaseline,
    "additive_linear": AdditiveLinearBaseline,
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
