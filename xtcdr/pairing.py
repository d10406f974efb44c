"""Splits by perturbation (or by condition) and the paper's training pairs.

**Split.** Every cell of a held-out ("unseen") perturbation goes to ``test``; no training pair
ever contains one. These rules choose the held-out perturbations (``test_rule``):

- ``"published"``: the paper's lists (sci-Plex3/4, Replogle), the default where a dataset has one;
- ``"strongest"``: the k perturbations with the largest measured effect against the controls of
  their own cell type, as the paper held out "the most effective" sci-Plex drugs (the sci-Plex
  authors ranked drugs by their number of differentially expressed genes; we do the same, see
  `perturbation_effects`), the default of the drug twins;
- ``"random"``: a seeded choice of k perturbations, the default otherwise (drawn within each
  set of cell types that measure a perturbation when ``uns['xtcdr']['test_strata'] ==
  "cell_types"``, as for the two-line genetic twin);
- ``"doubles"``: for a dataset with combinations, every double (the paper, the default there: the
  model is trained on singles); with ``n_test=k``, a seeded choice of k doubles, so that the
  others can train the released code's fifth loss (`combination_triples`);
- ``"kfold"``: the single perturbations (targets) are partitioned into ``n_folds`` folds by a
  permutation seeded by ``fold_seed`` alone, and fold ``fold`` is held out (all its cells, in
  every context; a double with a held-out single goes with it). ``fold=None`` means
  ``seed % n_folds``: on real data, seed s of a dataset is fold s (a *world*), and the folds
  together hold every target out exactly once, whatever the seeds.

One rule holds out *conditions* instead of perturbations (covariate transfer, as PerturBench's
cell-type transfer and scGen's held-out cell type):

- ``"conditions"``: a test condition's cells (one cell type under one perturbation) are
  ``test``, while the same perturbation's cells in other cell types stay in training: they are
  the sources from which the test condition is predicted. Candidates are the conditions of
  single perturbations measured in two or more cell types with controls (only those of cell type
  ``test_context`` when it is given, e.g. to predict only the stimulated state from the
  unstimulated one). They are dealt into ``n_folds`` folds (seeded by ``fold_seed``) so that the
  conditions of one perturbation fall in different folds (when it has more conditions than there
  are folds, in every fold): no perturbation has all its cell types in one fold, and while it has
  no more conditions than there are folds, no source of a test condition is a test cell.
  ``fold`` / ``seed % n_folds`` picks the test fold. Works for a single perturbation measured
  in several cell types.

By default (no rule given, no published list) a dataset with combinations holds out its doubles
(the model is trained on singles, as the paper says).

**Transfer validation.** Where perturbations are measured in several cell types, a seeded few of
the *training* perturbations are held back in one of their cell types: those cells go to
``transfer`` and never train, while the perturbation's cells in the other cell types still do.
`xtcdr.train.fit` predicts them across contexts during training, exactly as the cross-context
tables predict the held-out perturbations, and stops on that signal; no test perturbation is ever
read for it (under ``"conditions"``, no perturbation with a test condition: its other cell types
are the test's sources).

Of the remaining cells (controls included) a seeded, per-condition fraction goes to ``valid``.
The rule, k, the held-out names, (for ``"strongest"``) the whole effect ranking and (for
``"kfold"`` and ``"conditions"``) the folds are recorded in ``uns['xtcdr']['split']``.

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
import pandas as pd

__all__ = ["assign_split", "training_pairs", "Pairs", "is_combination", "perturbation_effects",
           "TEST_RULES", "Triples", "combination_triples", "cross_line_pairs", "split_folds"]

TEST_RULES = ("published", "strongest", "random", "doubles", "kfold", "conditions")


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


def perturbation_effects(adata: ad.AnnData, *, min_log2fc: float = 1.0, alpha: float = 0.05):
    """How strongly each single perturbation changes expression, measured from the data alone.

    For each (cell type, perturbation) the cells are compared with the controls of the same cell
    type: ``n_degs`` counts the genes with ``|log2 fold change| >= min_log2fc`` and a Welch t-test
    p-value below ``alpha`` after Benjamini-Hochberg correction (the sci-Plex authors ranked drugs
    by such counts); ``shift`` is the Euclidean distance between the perturbed and control mean
    profiles (log1p scale). Both are averaged over the cell types where the perturbation was
    measured. Reads ``X`` and ``obs`` only (never a simulator's ``uns['truth']``).

    Returns a DataFrame indexed by perturbation, sorted strongest first (by ``n_degs``, ties by
    ``shift``, then by name), with columns ``n_degs``, ``shift``, ``rank`` (1 = strongest).
    """
    from scipy import stats
    from scipy.sparse import issparse

    from .preprocess import deg_statistics

    require_obs(adata, ["cell_type", "perturbation", "is_control"])
    X = adata.X
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    records = []
    for ct in sorted(set(cell_type)):
        controls = np.flatnonzero((cell_type == ct) & control)
        if controls.size < 2:
            continue
        for p in sorted(set(pert[(cell_type == ct) & ~control])):
            if is_combination(p):
                continue
            rows = np.flatnonzero((cell_type == ct) & (pert == p))
            if rows.size < 2:
                continue
            t, log2fc = deg_statistics(X, rows, controls)
            group = X[rows].toarray() if issparse(X) else np.asarray(X[rows])
            ref = X[controls].toarray() if issparse(X) else np.asarray(X[controls])
            var_g = group.var(0, ddof=1) / rows.size
            var_c = ref.var(0, ddof=1) / controls.size
            with np.errstate(invalid="ignore", divide="ignore"):
                dof = (var_g + var_c) ** 2 / (var_g ** 2 / (rows.size - 1) + var_c ** 2 / (controls.size - 1))
            p_values = np.where(np.isfinite(dof), 2 * stats.t.sf(np.abs(t), np.nan_to_num(dof, nan=1.0)), 1.0)
            q_values = stats.false_discovery_control(p_values)
            n_degs = int(np.sum((np.abs(log2fc) >= min_log2fc) & (q_values < alpha)))
            shift = float(np.linalg.norm(group.mean(0, dtype=np.float64) - ref.mean(0, dtype=np.float64)))
            records.append((p, ct, n_degs, shift))
    if not records:
        raise ValueError("no single perturbation with at least 2 cells and 2 controls of its cell "
                         "type; cannot measure effects.")
    per_context = pd.DataFrame(records, columns=["perturbation", "cell_type", "n_degs", "shift"])
    effects = per_context.groupby("perturbation")[["n_degs", "shift"]].mean()
    effects = effects.reset_index().sort_values(["n_degs", "shift", "perturbation"],
                                                ascending=[False, False, True]).set_index("perturbation")
    effects["rank"] = np.arange(1, len(effects) + 1)
    return effects


def assign_split(adata: ad.AnnData, *, test_perturbations=None, test_rule: str | None = None,
                 n_test: int | None = None, valid_fraction: float = 0.2,
                 test_fraction: float = 0.2, n_transfer_valid: int | None = None,
                 seed: int = 0, n_folds: int = 5, fold: int | None = None, fold_seed: int = 0,
                 test_context: str | None = None, transfer_share: float = 0.2) -> None:
    """Assign every cell to ``train``, ``valid``, ``transfer`` or ``test`` (in place).

    Parameters
    ----------
    test_perturbations
        Perturbations held out entirely; overrides ``test_rule``.
    test_rule
        ``"published"``, ``"strongest"``, ``"random"``, ``"doubles"``, ``"kfold"`` or
        ``"conditions"`` (module docstring). ``None``: the dataset's published list when it has
        one; else every combination when the data has any; else the dataset's own default
        (``uns['xtcdr']['test_rule']``, ``"strongest"`` for the drug twins); else ``"random"``.
    n_test
        k, the number of perturbations ``"strongest"`` and ``"random"`` hold out. ``None``:
        ``uns['xtcdr']['n_test']`` when the dataset sets it, else ``test_fraction`` of them
        (rounded, at least 1). For ``"doubles"``: k seeded doubles (``None``: every double).
        Not used by ``"kfold"`` and ``"conditions"`` (``n_folds`` sets the size of a fold).
    valid_fraction
        Fraction of the cells of each remaining condition (controls included) put in ``valid``.
    n_transfer_valid
        Training perturbations held back in one cell type for the transfer validation (module
        docstring). ``None``: ``transfer_share`` of the training singles measured in two or more cell types
        (rounded, at least 3 or all of them; none when fewer than 2 qualify); 0: none. Under the
        ``"strongest"`` rule they are drawn from the stronger half of those, like the test set.
    seed
        Seeds the ``"random"`` rule, the transfer validation and the validation cells; for
        ``"kfold"`` and ``"conditions"`` with ``fold=None`` it also picks the fold,
        ``seed % n_folds``.
    n_folds
        ``"kfold"`` and ``"conditions"``: the number of folds (at least 2).
    fold
        The held-out fold, ``0 <= fold < n_folds``; ``None``: ``seed % n_folds``.
    fold_seed
        Seeds the partition into folds, which never depends on ``seed``.
    test_context
        ``"conditions"`` only: a cell type; only its conditions are held out.

    Sets
    ----
    ``obs['split']`` (categorical train/valid/transfer/test); ``uns['xtcdr']['split']``: the rule,
    k, the held-out list, the parameters, the transfer-validation conditions
    (``transfer_valid``), for ``"strongest"`` the effect ranking (``ranking``,
    ``ranking_n_degs``, ``ranking_shift``: strongest first), for ``"kfold"`` and
    ``"conditions"`` ``n_folds``, ``fold``, ``fold_seed`` and ``folds``, fold index as a string
    -> its perturbations, resp. conditions (a dict, since h5ad cannot store lists of unequal
    lengths; `split_folds` returns them as a list of lists). Under ``"conditions"``, ``test_conditions`` lists the
    held-out conditions, ``test_perturbations`` is empty (no perturbation is unseen) and
    ``test_condition_perturbations`` names the perturbations that have a test condition.
    """
    require_obs(adata, ["perturbation", "is_control", "condition"])
    if not 0 <= valid_fraction < 1 or not 0 < test_fraction < 1:
        raise ValueError("valid_fraction must be in [0, 1) and test_fraction in (0, 1)")
    if test_rule is not None and test_rule not in TEST_RULES:
        raise ValueError(f"unknown test_rule {test_rule!r}; valid: {list(TEST_RULES)}")
    rng = np.random.default_rng(seed)
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    cond = adata.obs["condition"].astype(str).to_numpy()
    perts = sorted(set(pert[~control]))
    if not perts:
        raise ValueError("no perturbed cells (every cell is a control); nothing to hold out.")
    info = dict(adata.uns.get("xtcdr", {}))
    published = list(info.get("test_perturbations", []) or [])
    singles = [p for p in perts if not is_combination(p)]
    record: dict = {}
    test_conditions: list[str] | None = None
    if test_perturbations is not None:
        rule = "given"
        if isinstance(test_perturbations, str):
            test_perturbations = [test_perturbations]
    else:
        rule = test_rule
        if rule is None:
            if published:
                rule = "published"
            elif any(is_combination(p) for p in perts):
                rule = "doubles"
            else:
                rule = str(info.get("test_rule", "random"))
    if test_context is not None and rule != "conditions":
        raise ValueError(f"test_context={test_context!r} applies only to test_rule='conditions' "
                         f"(the rule here is {rule!r}); drop it or use test_rule='conditions'.")
    if rule in ("kfold", "conditions"):
        if n_test is not None:
            raise ValueError(f"n_test does not apply to test_rule={rule!r}: n_folds sets the size "
                             f"of a fold; leave n_test=None.")
        fold = _fold_index(n_folds, fold, seed)
        record.update(n_folds=int(n_folds), fold=fold, fold_seed=int(fold_seed))
    if rule == "kfold":
        folds = _kfold_folds(singles, n_folds, fold_seed)
        held = set(folds[fold])
        doubles = [p for p in perts if is_combination(p) and held & set(p.split("+"))]
        test_perturbations = folds[fold] + doubles
        record.update(folds=_folds_record(folds), k=len(folds[fold]))
    elif rule == "conditions":
        folds, members = _condition_folds(adata, n_folds, fold_seed, test_context)
        test_conditions = folds[fold]
        test_perturbations = []
        record.update(folds=_folds_record(folds), test_conditions=list(test_conditions),
                      k=len(test_conditions),
                      test_context=test_context,
                      test_condition_perturbations=sorted({members[c] for c in test_conditions}))
    elif rule == "published":
        if not published:
            raise ValueError("test_rule='published' but this dataset has no published held-out "
                             "list (uns['xtcdr']['test_perturbations']); use 'strongest' or "
                             "'random', or pass test_perturbations.")
        test_perturbations = published
    elif rule == "doubles":
        doubles = [p for p in perts if is_combination(p)]
        if not doubles:
            raise ValueError("test_rule='doubles' but the data has no combinations "
                             "(perturbations joined with '+').")
        test_perturbations = doubles
        if n_test is not None:  # a seeded part of the doubles; the others stay in training
            if not 1 <= int(n_test) <= len(doubles):
                raise ValueError(f"cannot hold out {n_test} of {len(doubles)} doubles; choose "
                                 f"n_test between 1 and {len(doubles)} (None: all of them).")
            test_perturbations = list(rng.choice(doubles, int(n_test), replace=False))
        record["k"] = len(test_perturbations)
    elif rule != "given":
        k = n_test if n_test is not None else info.get("n_test")
        k = int(k) if k is not None else max(1, int(round(test_fraction * len(singles))))
        if not 1 <= k < len(singles):
            raise ValueError(f"cannot hold out {k} of {len(singles)} perturbation(s) and keep "
                             "at least one for training; choose n_test between 1 and "
                             f"{len(singles) - 1}.")
        if rule == "strongest":
            effects = perturbation_effects(adata)
            test_perturbations = list(effects.index[:k])
            record.update(ranking=[str(p) for p in effects.index],
                          ranking_n_degs=effects["n_degs"].to_numpy(float),
                          ranking_shift=effects["shift"].to_numpy(float),
                          effect_measure="number of genes with |log2 fc| >= 1 and BH q < 0.05 "
                                         "against same-cell-type controls, mean over cell "
                                         "types; ties by the L2 shift of the mean profile")
        elif info.get("test_strata") == "cell_types" and n_test is None and info.get("n_test") is None:
            test_perturbations, record["strata"] = _random_by_cell_types(
                adata, singles, test_fraction, rng)
            k = len(test_perturbations)
        else:
            test_perturbations = list(rng.choice(singles, k, replace=False))
        record["k"] = int(k)
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
    if test_conditions is not None:
        split[np.isin(cond, test_conditions)] = "test"
    held_back = _transfer_valid(adata, split, n_transfer_valid, seed, record.get("ranking"), share=transfer_share,
                                exclude=record.get("test_condition_perturbations", ()))
    split[np.isin(cond, held_back)] = "transfer"
    for c in np.unique(cond[split == "train"]):
        rows = np.flatnonzero((cond == c) & (split == "train"))
        n_valid = int(round(valid_fraction * rows.size))
        if rows.size >= 2 and n_valid:
            split[rng.choice(rows, min(n_valid, rows.size - 1), replace=False)] = "valid"
    adata.obs["split"] = np.asarray(split).astype(str)
    adata.obs["split"] = adata.obs["split"].astype("category")
    record.update(rule=rule, test_perturbations=test_perturbations,
                  valid_fraction=float(valid_fraction), test_fraction=float(test_fraction),
                  transfer_valid=list(held_back), seed=int(seed))
    record.setdefault("k", len(test_perturbations))
    info["split"] = record
    adata.uns["xtcdr"] = info


def split_folds(adata: ad.AnnData) -> list[list[str]]:
    """The folds of a ``"kfold"`` or ``"conditions"`` split as a list of lists (fold i = its
    perturbations, resp. conditions), read from ``uns['xtcdr']['split']['folds']``."""
    record = adata.uns.get("xtcdr", {}).get("split", {})
    if "folds" not in record:
        raise KeyError(f"this split has no folds (rule {record.get('rule')!r}); folds come with "
                       f"assign_split(adata, test_rule='kfold') or test_rule='conditions'.")
    folds = record["folds"]
    return [[str(x) for x in folds[str(i)]] for i in range(len(folds))]


def _folds_record(folds: list[list[str]]) -> dict[str, list[str]]:
    return {str(i): list(members) for i, members in enumerate(folds)}


def _fold_index(n_folds, fold, seed: int) -> int:
    """The held-out fold: ``fold``, or ``seed % n_folds`` when it is None (checked)."""
    if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"n_folds must be an integer of at least 2, got {n_folds!r}")
    if fold is None:
        return int(seed) % int(n_folds)
    if isinstance(fold, bool) or int(fold) != fold or not 0 <= fold < n_folds:
        raise ValueError(f"fold must be an integer in [0, {int(n_folds) - 1}] (n_folds={n_folds}), "
                         f"or None for seed % n_folds; got {fold!r}")
    return int(fold)


def _kfold_folds(singles: list[str], n_folds: int, fold_seed: int) -> list[list[str]]:
    """The single perturbations cut into ``n_folds`` folds of near-equal size (sizes differ by at
    most one) after a permutation seeded by ``fold_seed`` alone; each fold sorted."""
    if len(singles) < n_folds:
        raise ValueError(f"test_rule='kfold' cannot cut {len(singles)} single perturbation(s) into "
                         f"{n_folds} folds; choose n_folds between 2 and {len(singles)}.")
    order = np.random.default_rng(int(fold_seed)).permutation(np.array(sorted(singles), dtype=object))
    return [sorted(str(p) for p in part) for part in np.array_split(order, int(n_folds))]


def _condition_folds(adata, n_folds: int, fold_seed: int, test_context: str | None
                     ) -> tuple[list[list[str]], dict[str, str]]:
    """The candidate conditions of the ``"conditions"`` rule dealt into ``n_folds`` folds.

    A candidate is a condition (cell type B, single perturbation d) where B has control cells and
    d is measured in at least one other cell type with controls (and B == ``test_context`` when
    given). Perturbations are visited in an order seeded by ``fold_seed``, each one's conditions
    in a seeded order, and dealt to folds 0, 1, ..., n_folds - 1, 0, ... without restarting: the
    conditions of one perturbation land in different folds (in all folds when it has more), and
    fold sizes differ by at most one. Returns the folds (each sorted) and condition ->
    perturbation.
    """
    require_obs(adata, ["cell_type"])
    ctype = adata.obs["cell_type"].astype(str).to_numpy()
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    cond = adata.obs["condition"].astype(str).to_numpy()
    with_controls = set(ctype[control])
    if test_context is not None and test_context not in set(ctype):
        raise ValueError(f"test_context {test_context!r} is not a cell type of the data; cell "
                         f"types: {sorted(set(ctype))}.")
    if test_context is not None and test_context not in with_controls:
        raise ValueError(f"test_context {test_context!r} has no control cells, so none of its "
                         f"conditions can be predicted; choose one of {sorted(with_controls)}.")
    contexts: dict[str, dict[str, str]] = {}   # perturbation -> cell type -> condition name
    for row in np.flatnonzero(~control & np.isin(ctype, list(with_controls))):
        if not is_combination(pert[row]):
            contexts.setdefault(pert[row], {}).setdefault(ctype[row], cond[row])
    candidates = {p: sorted(ct for ct in cts if test_context in (None, ct))
                  for p, cts in contexts.items() if len(cts) >= 2}
    candidates = {p: cts for p, cts in candidates.items() if cts}
    n_candidates = sum(len(cts) for cts in candidates.values())
    if n_candidates < n_folds:
        where = f" in cell type {test_context!r}" if test_context is not None else ""
        raise ValueError(
            f"test_rule='conditions' found {n_candidates} candidate condition(s){where} (single "
            f"perturbations measured in two or more cell types with control cells), fewer than "
            f"n_folds={n_folds}. Choose n_folds between 2 and {n_candidates}"
            + ("" if n_candidates >= 2 else "; the data needs a perturbation measured in two "
               "or more cell types with controls") + ".")
    rng = np.random.default_rng(int(fold_seed))
    folds: list[list[str]] = [[] for _ in range(int(n_folds))]
    members: dict[str, str] = {}
    dealt = 0
    for p in rng.permutation(np.array(sorted(candidates), dtype=object)):
        for ct in rng.permutation(np.array(candidates[p], dtype=object)):
            name = contexts[p][ct]
            folds[dealt % int(n_folds)].append(name)
            members[name] = str(p)
            dealt += 1
    return [sorted(f) for f in folds], members


def _transfer_valid(adata, split, n: int | None, seed: int, ranking=None, exclude=(), share: float = 0.2) -> list[str]:
    """Conditions (cell type + perturbation) of training singles held back for the transfer
    validation: a seeded choice of ``n`` perturbations measured in two or more cell types with
    controls, each held back in one seeded cell type (see `assign_split`). Perturbations in
    ``exclude`` (those with a test condition) are never chosen.

    The validation is drawn like the test set: when the held-out perturbations are the strongest
    (``ranking``, strongest first), the draw is among the stronger half of the eligible training
    perturbations; otherwise among all of them.
    """
    ctype = adata.obs["cell_type"].astype(str).to_numpy() if "cell_type" in adata.obs else None
    if ctype is None or (n is not None and int(n) == 0):
        return []
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    cond = adata.obs["condition"].astype(str).to_numpy()
    with_controls = set(ctype[control])
    training = (split == "train") & ~control
    lines: dict[str, list[str]] = {}
    for ct, p in sorted(set(zip(ctype[training], pert[training]))):
        if not is_combination(p) and ct in with_controls and p not in exclude:
            lines.setdefault(p, []).append(ct)
    eligible = sorted(p for p, cts in lines.items() if len(cts) >= 2)
    if n is None:
        n = min(len(eligible), max(3, int(round(share * len(eligible))))) if len(eligible) >= 2 else 0
    if int(n) > len(eligible):
        raise ValueError(f"cannot hold back {n} training perturbations for the transfer validation: "
                         f"only {len(eligible)} are measured in two or more cell types; choose "
                         f"n_transfer_valid between 0 and {len(eligible)}.")
    pool = eligible
    if ranking is not None and n:
        order = [str(p) for p in ranking if str(p) in set(eligible)]
        pool = sorted(order[:max(int(n), (len(order) + 1) // 2)])
    rng = np.random.default_rng([int(seed), 7])  # its own stream: the held-out rules' draws stay as they were
    chosen = sorted(rng.choice(pool, int(n), replace=False)) if n else []
    out = []
    for p in chosen:
        ct = lines[p][int(rng.integers(len(lines[p])))]
        out.append(str(cond[np.flatnonzero((ctype == ct) & (pert == p))[0]]))
    return sorted(out)


def _random_by_cell_types(adata, singles, fraction, rng) -> tuple[list[str], dict]:
    """The ``"random"`` rule drawn separately within each measurement pattern.

    A perturbation's stratum is the set of cell types that measure it (for two screens: line A
    only, line B only, both). In each stratum of n perturbations ``round(fraction * n)`` are held
    out (at least one when n >= 2), so perturbations measured in several cell types are always
    among the held-out ones when there are any. Used where ``uns['xtcdr']['test_strata'] ==
    "cell_types"`` (the genetic twin). Returns the held-out list and stratum -> count held out.
    """
    obs = adata.obs[~adata.obs["is_control"].to_numpy(bool)]
    lines = (obs.groupby(obs["perturbation"].astype(str), observed=True)["cell_type"]
             .agg(lambda s: "+".join(sorted(set(s.astype(str))))))
    chosen, counts = [], {}
    for stratum in sorted(set(lines.loc[singles])):
        members = sorted(p for p in singles if lines[p] == stratum)
        k = int(round(fraction * len(members)))
        k = max(1, k) if len(members) >= 2 else 0
        chosen += list(rng.choice(members, k, replace=False)) if k else []
        counts[stratum] = k
    return chosen, counts


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


def _split_columns(adata: ad.AnnData, split: str):
    """``(in_split, cell_type, perturbation, is_control)`` of every cell as numpy arrays."""
    require_obs(adata, ["cell_type", "perturbation", "is_control", "split"])
    return (adata.obs["split"].astype(str).to_numpy() == split, adata.obs["cell_type"].astype(str).to_numpy(),
            adata.obs["perturbation"].astype(str).to_numpy(), adata.obs["is_control"].to_numpy(bool))


def _cycle(rng: np.random.Generator, rows: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows: whole shuffled passes over ``rows`` then a partial one."""
    reps = -(-n // rows.size)
    return np.concatenate([rng.permutation(rows) for _ in range(reps)])[:n]


class Triples(NamedTuple):
    """Row indices of training triples for the fifth loss: a double's cell and one cell of each
    of its two singles, all of the same context and split."""

    single_a: np.ndarray
    single_b: np.ndarray
    double: np.ndarray

    def __len__(self) -> int:
        return int(self.double.shape[0])


def combination_triples(adata: ad.AnnData, *, split: str = "train", seed: int = 0) -> Triples:
    """Every cell of a double a+b in ``split``, with a random cell of a and one of b.

    The released double-gene code trains a fifth reconstruction loss on such triples,
    ``D(E_s(x^a) + E_p(x^a) + E_p(x^b)) -> x^(a+b)`` (`xtcdr.losses.combination_reconstruction`).
    The single cells come from the same context and split as the double (so held-out cells never
    enter). A double whose singles have no cell there is skipped. The result is empty when
    ``split`` holds no double (the paper's split: every double is held out).
    """
    rng = np.random.default_rng(seed)
    in_split, ctype, pert, control = _split_columns(adata, split)
    parts = {k: [] for k in Triples._fields}
    for ct, p in sorted(set(zip(ctype[in_split & ~control], pert[in_split & ~control]))):
        if not is_combination(p):
            continue
        singles = p.split("+")
        if len(singles) != 2:
            continue  # triples, quadruples... have no pair of singles
        rows = [np.flatnonzero(in_split & (ctype == ct) & (pert == s)) for s in singles]
        if any(r.size == 0 for r in rows):
            continue
        doubles = np.flatnonzero(in_split & (ctype == ct) & (pert == p))
        parts["double"].append(doubles)
        parts["single_a"].append(rng.choice(rows[0], doubles.size))
        parts["single_b"].append(rng.choice(rows[1], doubles.size))
    return Triples(**{k: (np.concatenate(v) if v else np.zeros(0)).astype(np.int64)
                      for k, v in parts.items()})


def cross_line_pairs(adata: ad.AnnData, *, split: str = "train", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of cells of one single perturbation in two different cell types (notebook 08).

    Every cell of (A, d) in ``split`` is paired with a random cell of (B, d) in ``split``, B a
    random other cell type that measures d there. The paper's pairs never cross cell types; these
    feed the ``cross_line`` variant term (`xtcdr.losses.cross_line_transfer`). Returns two row
    arrays ``(a, b)``, empty when no perturbation is measured in two cell types of ``split``.
    """
    rng = np.random.default_rng(seed)
    in_split, ctype, pert, control = _split_columns(adata, split)
    rows: dict[tuple[str, str], np.ndarray] = {}
    for ct, p in sorted(set(zip(ctype[in_split & ~control], pert[in_split & ~control]))):
        if not is_combination(p):
            rows[ct, p] = np.flatnonzero(in_split & (ctype == ct) & (pert == p))
    side_a, side_b = [], []
    for (ct, p), cells in rows.items():
        others = [o for (o, q) in rows if q == p and o != ct]
        if not others:
            continue
        partner_line = rng.choice(others, cells.size)
        side_a.append(cells)
        side_b.append(np.array([rng.choice(rows[o, p]) for o in partner_line], dtype=np.int64))
    if not side_a:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(side_a).astype(np.int64), np.concatenate(side_b).astype(np.int64)
