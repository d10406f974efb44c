"""The split rules of worlds on real data: ``"kfold"`` over targets and ``"conditions"`` (held-out
cell type + perturbation), with their ``DataConfig`` fields.

The fixtures are obs tables with an empty expression matrix (splits read only obs), plus the
shipped Jurkat screen for the cross-context tasks of the conditions rule.
"""
from __future__ import annotations

from collections import Counter
import dataclasses

import anndata
import numpy as np
import pytest
from anndata import AnnData

from xtcdr import datasets
from xtcdr.config import DataConfig
from xtcdr.evaluate import transfer_tasks
from xtcdr.pairing import TEST_RULES, assign_split, split_folds

DRUGS = [f"drug_{i:02d}" for i in range(13)]


def make(layout: dict[str, list[str]], cells: int = 6, controls: int = 10) -> AnnData:
    """Obs in the standard schema: cell type -> the perturbations measured there."""
    from test_pairing import make as build

    rows = [row for ct, perts in layout.items()
            for row in [(ct, "control", controls)] + [(ct, p, cells) for p in perts]]
    return build(cell_types=(), perturbations=(), extra=rows)


def three_lines() -> AnnData:
    """13 drugs: 10 in all of A, B, C, 2 in A and B only, 1 in C only."""
    return make({"A": DRUGS[:12], "B": DRUGS[:12], "C": DRUGS[:10] + DRUGS[12:]})


def columns(adata):
    obs = adata.obs
    return (obs["split"].astype(str).to_numpy(), obs["perturbation"].astype(str).to_numpy(),
            obs["condition"].astype(str).to_numpy(), obs["cell_type"].astype(str).to_numpy())


def test_rule_names():
    assert {"kfold", "conditions"} <= set(TEST_RULES)


# ---------------------------------------------------------------------------------------------
# kfold over targets
# ---------------------------------------------------------------------------------------------

def test_kfold_holds_every_target_out_exactly_once():
    n_folds, held = 4, Counter()
    partitions = []
    for seed in range(n_folds):                     # fold=None: world seed s is fold s % n_folds
        adata = three_lines()
        assign_split(adata, test_rule="kfold", n_folds=n_folds, seed=seed)
        record = adata.uns["xtcdr"]["split"]
        assert record["rule"] == "kfold" and record["fold"] == seed and record["fold_seed"] == 0
        folds = split_folds(adata)
        partitions.append(folds)
        test = folds[seed]
        assert record["test_perturbations"] == test and record["k"] == len(test)
        split, pert, _, _ = columns(adata)
        assert set(pert[split == "test"]) == set(test)
        assert np.all(split[np.isin(pert, test)] == "test")     # never in train/valid/transfer
        held.update(test)
        transfer = {c.split("_", 1)[1] for c in record["transfer_valid"]}
        assert transfer and not transfer & set(test)           # drawn from training targets
    assert all(p == partitions[0] for p in partitions)          # the partition ignores the seed
    assert held == Counter({d: 1 for d in DRUGS})               # each target held out once
    sizes = [len(f) for f in partitions[0]]
    assert sum(sizes) == len(DRUGS) and max(sizes) - min(sizes) <= 1


def test_kfold_fold_follows_seed_unless_given_and_fold_seed_moves_the_partition():
    a, b = three_lines(), three_lines()
    assign_split(a, test_rule="kfold", seed=7)                   # n_folds=5: fold 2
    assign_split(b, test_rule="kfold", seed=0, fold=2)
    assert a.uns["xtcdr"]["split"]["fold"] == 2
    assert a.uns["xtcdr"]["split"]["test_perturbations"] == b.uns["xtcdr"]["split"]["test_perturbations"]
    c = three_lines()
    assign_split(c, test_rule="kfold", seed=7, fold_seed=1)
    assert split_folds(c) != split_folds(a)
    expected = np.random.default_rng(0).permutation(np.array(sorted(DRUGS), dtype=object))
    assert split_folds(a) == [sorted(map(str, f)) for f in np.array_split(expected, 5)]


def test_kfold_holds_out_the_doubles_of_a_held_out_target():
    adata = make({"K": DRUGS[:6] + ["drug_00+drug_01", "drug_02+drug_03"]})
    assign_split(adata, test_rule="kfold", n_folds=3, fold=0)
    test = split_folds(adata)[0]
    split, pert, _, _ = columns(adata)
    held = set(pert[split == "test"])
    for double in ("drug_00+drug_01", "drug_02+drug_03"):
        assert (double in held) == bool(set(double.split("+")) & set(test))
    assert all("+" not in p for fold in split_folds(adata) for p in fold)


def test_kfold_bad_arguments():
    with pytest.raises(ValueError, match="n_folds between 2 and 13"):
        assign_split(three_lines(), test_rule="kfold", n_folds=14)
    with pytest.raises(ValueError, match="n_folds must be an integer of at least 2"):
        assign_split(three_lines(), test_rule="kfold", n_folds=1)
    with pytest.raises(ValueError, match=r"fold must be an integer in \[0, 4\]"):
        assign_split(three_lines(), test_rule="kfold", fold=5)
    with pytest.raises(ValueError, match="n_test does not apply"):
        assign_split(three_lines(), test_rule="kfold", n_test=3)
    with pytest.raises(ValueError, match="applies only to test_rule='conditions'"):
        assign_split(three_lines(), test_rule="kfold", test_context="A")


# ---------------------------------------------------------------------------------------------
# held-out conditions
# ---------------------------------------------------------------------------------------------

def _check_conditions_split(adata) -> list[str]:
    record = adata.uns["xtcdr"]["split"]
    test = record["test_conditions"]
    split, pert, cond, _ = columns(adata)
    assert set(cond[split == "test"]) == set(test)
    assert np.all(split[np.isin(cond, test)] == "test")   # nothing of a test condition elsewhere
    assert record["test_perturbations"] == []
    with_test = set(record["test_condition_perturbations"])
    assert with_test == set(pert[split == "test"])
    for p in with_test:                                    # the other contexts still train
        others = np.isin(pert, [p]) & ~np.isin(cond, test)
        assert others.any() and set(split[others]) <= {"train", "valid"}
        assert "train" in set(split[others])
    transfer = {c.split("_", 1)[1] for c in record["transfer_valid"]}
    assert not transfer & with_test                       # never a perturbation with a test condition
    return test


def test_conditions_cover_candidates_once_and_never_a_whole_perturbation():
    n_folds, seen = 4, Counter()
    for seed in range(n_folds):
        adata = three_lines()
        assign_split(adata, test_rule="conditions", n_folds=n_folds, seed=seed)
        test = _check_conditions_split(adata)
        assert adata.uns["xtcdr"]["split"]["fold"] == seed
        seen.update(test)
        folds = split_folds(adata)
        assert folds[seed] == test
    # candidates: drugs measured in two or more lines; drug_12 (C only) never held out
    candidates = {f"{ct}_{d}" for d in DRUGS[:10] for ct in "ABC"} | {f"{ct}_{d}" for d in DRUGS[10:12] for ct in "AB"}
    assert seen == Counter({c: 1 for c in candidates})
    for fold in folds:                                     # no perturbation with all its lines in one fold
        per_drug = Counter(c.split("_", 1)[1] for c in fold)
        for drug, n in per_drug.items():
            assert n < (3 if drug in DRUGS[:10] else 2)
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1


def test_conditions_spread_a_perturbation_over_every_fold_when_it_has_more_lines():
    adata = make({ct: ["IFNb", "TNF"] for ct in "ABCDE"})
    assign_split(adata, test_rule="conditions", n_folds=2, seed=0)
    for fold in split_folds(adata):
        assert {c.split("_", 1)[1] for c in fold} == {"IFNb", "TNF"}
        assert all(Counter(c.split("_", 1)[1] for c in fold)[p] < 5 for p in ("IFNb", "TNF"))


def test_one_perturbation_across_cell_types_works():
    layout = {ct: ["IFNb"] for ct in ("B_cell", "T_cell", "NK", "Monocyte")}
    with pytest.raises(ValueError, match="keep at least one for training"):
        assign_split(make(layout), seed=0)             # a perturbation rule cannot split it
    held = []
    for seed in range(4):
        adata = make(layout)
        assign_split(adata, test_rule="conditions", n_folds=4, seed=seed)
        test = _check_conditions_split(adata)
        assert len(test) == 1
        held += test
        assert adata.uns["xtcdr"]["split"]["transfer_valid"] == []
    assert sorted(held) == sorted(f"{ct}_IFNb" for ct in layout)


def test_conditions_test_context_restricts_the_candidates():
    adata = make({"stim": DRUGS[:6], "unstim": DRUGS[:6]})
    assign_split(adata, test_rule="conditions", test_context="stim", n_folds=3, seed=1)
    test = _check_conditions_split(adata)
    assert len(test) == 2 and all(c.startswith("stim_") for c in test)
    assert adata.uns["xtcdr"]["split"]["test_context"] == "stim"
    assert sorted(c for f in split_folds(adata) for c in f) == [f"stim_{d}" for d in DRUGS[:6]]
    with pytest.raises(ValueError, match="not a cell type of the data"):
        assign_split(make({"stim": DRUGS[:6], "unstim": DRUGS[:6]}), test_rule="conditions",
                     test_context="stimulated")


def test_conditions_need_a_perturbation_in_two_lines():
    with pytest.raises(ValueError, match="found 0 candidate"):
        assign_split(make({"A": DRUGS[:3], "B": DRUGS[3:6]}), test_rule="conditions")
    with pytest.raises(ValueError, match="n_folds between 2 and 4"):
        assign_split(make({"A": DRUGS[:2], "B": DRUGS[:2]}), test_rule="conditions", n_folds=5)


def test_conditions_split_survives_h5ad(tmp_path):
    adata = three_lines()                                  # 34 candidates: folds of 12, 11, 11
    assign_split(adata, test_rule="conditions", n_folds=3, seed=0)
    assert len({len(f) for f in split_folds(adata)}) == 2
    adata.write_h5ad(tmp_path / "split.h5ad")
    again = anndata.read_h5ad(tmp_path / "split.h5ad")
    assert split_folds(again) == split_folds(adata)


def test_cross_tasks_of_held_out_conditions_read_the_other_context():
    adata = datasets.load("datlinger2021_jurkat")
    assign_split(adata, test_rule="conditions", seed=3)
    test = set(adata.uns["xtcdr"]["split"]["test_conditions"])
    split, pert, cond, ctype = columns(adata)
    tasks = transfer_tasks(adata, split="test", protocol="cross")
    assert {t.condition for t in tasks} == test
    for task in tasks:
        assert set(cond[task.target_idx]) == {task.condition}
        assert set(ctype[task.control_idx]) == {task.cell_type} and adata.obs["is_control"].iloc[task.control_idx].all()
        (source,) = task.sources                            # the other stimulation state
        assert source.context != task.cell_type
        (rows, controls), = source.components
        assert set(cond[rows]) == {f"{source.context}_{task.perturbation}"}
        assert set(split[rows]) <= {"train", "valid"}       # training cells of the source context
        assert set(ctype[controls]) == {source.context}


# ---------------------------------------------------------------------------------------------
# DataConfig fields
# ---------------------------------------------------------------------------------------------

def test_data_config_fold_fields():
    config = DataConfig(test_rule="conditions", test_context="Jurkat_stimulated", n_folds=4, fold=3)
    assert (config.n_folds, config.fold, config.fold_seed) == (4, 3, 0)
    assert DataConfig().n_folds == 5 and DataConfig().fold is None and DataConfig().test_context is None
    for bad, message in [(dict(n_folds=1), "n_folds must be an integer of at least 2"),
                         (dict(n_folds=3.0), "n_folds must be an integer"),
                         (dict(fold=5), r"fold must be None \(seed % n_folds\) or an integer in \[0, 4\]"),
                         (dict(fold=-1), "fold must be None"),
                         (dict(fold_seed=-2), "fold_seed must be a non-negative integer"),
                         (dict(test_context="A"), "applies only to test_rule='conditions'"),
                         (dict(test_rule="conditions", test_context=""), "cell type name"),
                         (dict(test_rule="kfold", n_test=2), "n_test does not apply")]:
        with pytest.raises(ValueError, match=message):
            DataConfig(**bad)
    assert dataclasses.replace(config, fold=None).fold is None
