"""Splits by perturbation and the paper's training pairs.

**Split.** Every cell of a held-out ("unseen") perturbation goes to ``test``; no training pair
ever contains one. For sci-Plex the held-out drugs are the paper's lists; for a dataset with
combinations the doubles are held out (the model is trained on singles, as the paper says);
otherwise a seeded fraction of perturbations is held out. Of the remaining cells (controls
included) a seeded, per-condition fraction goes to ``valid``.

**Pairs** (paper, "Data pairing"): within one cellular context the perturbations are split at
the drug level into two groups of about equal size; one cell from each group forms a pair, until
every cell of the larger group is paired (cells of the smaller group are reused in a shuffled
cycle). The two sides of a pair therefore always carry different perturbations of the same
context. A control cell of the same context is drawn for each side: it is the target of the
basal reconstruction loss (Eq. 3). Pairs are integer row indices into one expression matrix.
"""
from __future__ import annotations

import difflib
from typing import NamedTuple

import anndata as ad
import numpy as np

__all__ = ["assign_split", "training_pairs", "Pairs", "is_combination"]


class Pairs(NamedTuple):
    """Row indices of the paired cells: sides ``a`` and ``b`` and their matched controls."""

    a: np.ndarray
    b: np.ndarray
    ctrl_a: np.ndarray
    ctrl_b: np.ndarray

    def __len__(self) -> int:  # number of pairs, not of fields
        return int(self.a.shape[0])


def is_combination(perturbation: str, sep: str = "+") -> bool:
    return sep in perturbation


def require_obs(adata: ad.AnnData, cols) -> None:
    """Raise a KeyError naming the missing obs columns, those present, and the step that adds them."""
    missing = [c for c in cols if c not in adata.obs]
    if missing:
        raise KeyError(f"obs is missing column(s) {missing} (present: {list(adata.obs.columns)}); "
                       "prepare the data with xtcdr.datasets / xtcdr.preprocess first"
                       + (" and call xtcdr.pairing.assign_split(adata)" if "split" in missing else "")
                       + ".")


def assign_split(adata: ad.AnnData, *, test_perturbations=None, valid_fraction: float = 0.2,
                 test_fraction: float = 0.2, seed: int = 0) -> None:
    """Assign every cell to ``train``, ``valid`` or ``test`` (in place).

    Parameters
    ----------
    test_perturbations
        Perturbations held out entirely. ``None``: the dataset's published list
        (``uns['xtcdr']['test_perturbations']``) when it has one; else every combination when
        the data has any; else a seeded ``test_fraction`` of the perturbations.
    valid_fraction
        Fraction of the cells of each remaining condition (controls included) put in ``valid``.
    seed
        Seeds both choices.

    Sets
    ----
    ``obs['split']`` (categorical train/valid/test); ``uns['xtcdr']['split']`` the parameters
    and the held-out list.
    """
    require_obs(adata, ["perturbation", "is_control", "condition"])
    if not 0 <= valid_fraction < 1 or not 0 < test_fraction < 1:
        raise ValueError("valid_fraction must be in [0, 1) and test_fraction in (0, 1)")
    rng = np.random.default_rng(seed)
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    perts = sorted(set(pert[~control]))
    if not perts:
        raise ValueError("no perturbed cells (every cell is a control); nothing to hold out.")
    published = list(adata.uns.get("xtcdr", {}).get("test_perturbations", []) or [])
    if test_perturbations is None:
        if published:
            test_perturbations = published
        elif any(is_combination(p) for p in perts):
            test_perturbations = [p for p in perts if is_combination(p)]
        else:
            n_test = max(1, int(round(test_fraction * len(perts))))
            if n_test >= len(perts):
                raise ValueError(f"only {len(perts)} perturbation(s): cannot hold out {n_test} and "
                                 "keep any for training; add perturbations or lower test_fraction.")
            test_perturbations = list(rng.choice(perts, n_test, replace=False))
    elif isinstance(test_perturbations, str):
        test_perturbations = [test_perturbations]
    test_perturbations = sorted(str(p) for p in test_perturbations)
    unknown = [p for p in test_perturbations if p not in perts]
    if unknown:
        hints = {p: difflib.get_close_matches(p, perts, n=3, cutoff=0.5) for p in unknown}
        hint_text = "; ".join(f"{p!r}: did you mean {h}?" if h else f"{p!r}: no close match"
                              for p, h in hints.items())
        raise ValueError(f"held-out perturbation(s) not in the data: {hint_text} "
                         f"({len(perts)} perturbations present, e.g. {perts[:8]}).")
    if len(test_perturbations) >= len(perts):
        raise ValueError("every perturbation would be held out; keep some for training.")

    split = np.full(adata.n_obs, "train", dtype=object)
    split[np.isin(pert, test_perturbations) & ~control] = "test"
    cond = adata.obs["condition"].astype(str).to_numpy()
    for c in np.unique(cond[split != "test"]):
        rows = np.flatnonzero((cond == c) & (split != "test"))
        n_valid = int(round(valid_fraction * rows.size))
        if rows.size >= 2 and n_valid:
            split[rng.choice(rows, min(n_valid, rows.size - 1), replace=False)] = "valid"
    adata.obs["split"] = np.asarray(split).astype(str)
    adata.obs["split"] = adata.obs["split"].astype("category")
    info = dict(adata.uns.get("xtcdr", {}))
    info["split"] = {"test_perturbations": test_perturbations, "valid_fraction": float(valid_fraction),
                     "test_fraction": float(test_fraction), "seed": int(seed)}
    adata.uns["xtcdr"] = info


def training_pairs(adata: ad.AnnData, *, split: str = "train", seed: int = 0) -> Pairs:
    """The paper's drug-level two-group pairing within each context, with matched controls.

    Combinations are not paired (the model is trained on single perturbations). Raises a clear
    error when a context has fewer than two perturbations or no control cells in ``split``.
    """
    require_obs(adata, ["cell_type", "perturbation", "is_control", "split"])
    rng = np.random.default_rng(seed)
    in_split = adata.obs["split"].astype(str).to_numpy() == split
    if not in_split.any():
        raise ValueError(f"no cells with obs['split'] == {split!r} (present: "
                         f"{sorted(adata.obs['split'].astype(str).unique())}).")
    ctype = adata.obs["cell_type"].astype(str).to_numpy()
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    single = ~control & (np.char.find(pert.astype(str), "+") < 0)
    parts = {k: [] for k in Pairs._fields}
    for ct in sorted(set(ctype[in_split])):
        here = in_split & (ctype == ct)
        ctrl_rows = np.flatnonzero(here & control)
        perts = sorted(set(pert[here & single]))
        if len(perts) < 2:
            raise ValueError(f"context {ct!r} has {len(perts)} perturbation(s) in split {split!r} "
                             f"({perts}); pairing needs at least two so that the two sides of a "
                             "pair differ. Drop this context or add perturbations.")
        if ctrl_rows.size == 0:
            raise ValueError(f"context {ct!r} has no control cells in split {split!r}; the basal "
                             "reconstruction loss needs controls of the same context.")
        order = rng.permutation(perts)
        half = len(order) // 2
        group_a = np.flatnonzero(here & np.isin(pert, order[:half]))
        group_b = np.flatnonzero(here & np.isin(pert, order[half:]))
        n = max(group_a.size, group_b.size)  # both groups hold >= 1 cell by construction
        parts["a"].append(_cycle(rng, group_a, n))
        parts["b"].append(_cycle(rng, group_b, n))
        parts["ctrl_a"].append(rng.choice(ctrl_rows, n))
        parts["ctrl_b"].append(rng.choice(ctrl_rows, n))
    return Pairs(**{k: np.concatenate(v).astype(np.int64) for k, v in parts.items()})


def _cycle(rng: np.random.Generator, rows: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows: whole shuffled passes over ``rows`` then a partial one."""
    reps = -(-n // rows.size)
    return np.concatenate([rng.permutation(rows) for _ in range(reps)])[:n]
