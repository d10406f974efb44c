"""Tests of xtcdr.pairing: the split by perturbation and the paper's training pairs.

Pairing reads only obs, so the fixtures are obs tables with an empty expression matrix.
"""
from __future__ import annotations

import difflib

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from xtcdr.pairing import Pairs, assign_split, training_pairs

DRUGS = [f"drug_{i:02d}" for i in range(20)]


def make(cell_types=("A", "B", "C"), perturbations=DRUGS, cells=12, controls=30,
         extra=()) -> AnnData:
    """Obs in the standard schema: every perturbation in every cell type, plus ``extra`` rows
    given as (cell_type, perturbation, n_cells)."""
    rows = []
    for ct in cell_types:
        rows += [(ct, "control")] * controls
        for p in perturbations:
            rows += [(ct, p)] * cells
    for ct, p, n in extra:
        rows += [(ct, p)] * n
    obs = pd.DataFrame(rows, columns=["cell_type", "perturbation"])
    obs["dose"] = np.nan
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    obs.index = [f"cell{i}" for i in range(len(obs))]
    return AnnData(np.zeros((len(obs), 1), dtype=np.float32), obs=obs)


def held_out(adata) -> list[str]:
    return list(adata.uns["xtcdr"]["split"]["test_perturbations"])


def split_of(adata) -> np.ndarray:
    return adata.obs["split"].astype(str).to_numpy()


# ---------------------------------------------------------------------------------------------
# split
# ---------------------------------------------------------------------------------------------

def test_every_cell_of_a_test_perturbation_is_test():
    adata = make()
    assign_split(adata, seed=0)
    test = held_out(adata)
    assert len(test) == 4                                  # 20% of 20 perturbations
    pert, split = adata.obs["perturbation"].astype(str).to_numpy(), split_of(adata)
    assert np.all(split[np.isin(pert, test)] == "test")
    assert set(pert[split == "test"]) == set(test)
    assert set(split) == {"train", "valid", "transfer", "test"}
    assert adata.obs["split"].dtype == "category"


def test_transfer_validation_holds_back_training_perturbations_in_one_line():
    adata = make()
    assign_split(adata, seed=0)
    record = adata.uns["xtcdr"]["split"]
    conditions = record["transfer_valid"]
    assert len(conditions) == round(0.2 * 16)               # 20% of the 16 training drugs
    obs = adata.obs
    held = obs[obs["split"] == "transfer"]
    assert sorted(held["condition"].unique()) == sorted(conditions)
    assert not set(held["perturbation"]) & set(held_out(adata))   # never a test perturbation
    for cond in conditions:                                 # one line held back; the others train
        drug = cond.split("_", 1)[1]
        rows = obs[(obs["perturbation"] == drug) & (obs["condition"] != cond)]
        assert (rows["split"].isin(["train", "valid"])).all() and rows["cell_type"].nunique() == 2
    again = make()
    assign_split(again, seed=0)
    assert again.uns["xtcdr"]["split"]["transfer_valid"] == conditions
    off = make()
    assign_split(off, seed=0, n_transfer_valid=0)
    assert off.uns["xtcdr"]["split"]["transfer_valid"] == [] and "transfer" not in set(split_of(off))
    strongest = make()
    assign_split(strongest, seed=0, test_rule="strongest", n_test=4)
    ranking = list(strongest.uns["xtcdr"]["split"]["ranking"])
    stronger_half = ranking[4:][:8]                          # training drugs, strongest first
    drugs = [c.split("_", 1)[1] for c in strongest.uns["xtcdr"]["split"]["transfer_valid"]]
    assert set(drugs) <= set(stronger_half)
    one_line = make(cell_types=("A",))
    assign_split(one_line, seed=0)
    assert one_line.uns["xtcdr"]["split"]["transfer_valid"] == []   # nothing to transfer across
    with pytest.raises(ValueError, match="n_transfer_valid between 0 and 16"):
        assign_split(make(), seed=0, n_transfer_valid=17)


def test_controls_are_never_test():
    adata = make()
    assign_split(adata, seed=0)
    control = adata.obs["is_control"].to_numpy()
    assert not np.any(split_of(adata)[control] == "test")
    assert np.any(split_of(adata)[control] == "valid")     # controls are validated too


def test_published_list_is_used():
    adata = make()
    adata.uns["xtcdr"] = {"test_perturbations": ["drug_03", "drug_11"]}
    assign_split(adata, seed=5)
    assert held_out(adata) == ["drug_03", "drug_11"]
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    assert set(pert[split_of(adata) == "test"]) == {"drug_03", "drug_11"}
    assert adata.uns["xtcdr"]["test_perturbations"] == ["drug_03", "drug_11"]  # kept


def test_explicit_list_beats_the_published_one():
    adata = make()
    adata.uns["xtcdr"] = {"test_perturbations": ["drug_03"]}
    assign_split(adata, test_perturbations="drug_07")
    assert held_out(adata) == ["drug_07"]


def test_combinations_are_held_out_by_default():
    adata = make(cell_types=("K562",), perturbations=DRUGS[:6],
                 extra=[("K562", "drug_00+drug_01", 10), ("K562", "drug_02+drug_03", 10)])
    assign_split(adata, seed=0)
    assert held_out(adata) == ["drug_00+drug_01", "drug_02+drug_03"]
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    assert np.all(split_of(adata)[np.char.find(pert.astype(str), "+") >= 0] == "test")
    assert not np.any(split_of(adata)[np.isin(pert, DRUGS[:6])] == "test")


def test_valid_fraction_is_roughly_right():
    adata = make(cells=50, controls=200)
    assign_split(adata, valid_fraction=0.25, seed=1)
    split = split_of(adata)
    kept = np.isin(split, ["train", "valid"])  # transfer-validation conditions have no valid cells
    assert abs((split[kept] == "valid").mean() - 0.25) < 0.02
    # per condition, not just overall
    frac = pd.Series(split[kept] == "valid").groupby(adata.obs["condition"].to_numpy()[kept]).mean()
    assert frac.between(0.2, 0.3).all()


def test_split_is_deterministic_by_seed():
    first, second, other = make(), make(), make()
    assign_split(first, seed=7)
    assign_split(second, seed=7)
    assign_split(other, seed=8)
    np.testing.assert_array_equal(split_of(first), split_of(second))
    assert held_out(first) == held_out(second)
    assert not np.array_equal(split_of(first), split_of(other))
    assert first.uns["xtcdr"]["split"]["seed"] == 7


def test_unknown_held_out_name_suggests_close_matches():
    adata = make(perturbations=["Dacinostat", "Givinostat", "Belinostat", "Hesperadin"])
    with pytest.raises(ValueError) as err:
        assign_split(adata, test_perturbations=["dacinostat", "Hesperadin"])
    message = str(err.value)
    assert "'dacinostat': did you mean" in message and "Dacinostat" in message
    assert "Hesperadin'" not in message.split("did you mean")[0]   # the known name is fine
    assert "split" not in adata.obs                                 # nothing half-written


def test_unknown_held_out_name_hints_are_difflib_matches():
    adata = make()
    with pytest.raises(ValueError) as err:
        assign_split(adata, test_perturbations=["drug_1O"])
    for hint in difflib.get_close_matches("drug_1O", DRUGS, n=3, cutoff=0.5):
        assert hint in str(err.value)


def test_split_refuses_bad_arguments():
    with pytest.raises(ValueError, match="every perturbation"):
        assign_split(make(), test_perturbations=DRUGS)
    with pytest.raises(ValueError, match="valid_fraction"):
        assign_split(make(), valid_fraction=1.5)
    only_controls = make(perturbations=[])
    with pytest.raises(ValueError, match="no perturbed cells"):
        assign_split(only_controls)


# ---------------------------------------------------------------------------------------------
# pairs
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def split_data():
    adata = make(cells=10, controls=25)
    assign_split(adata, seed=0)
    return adata


def test_pairs_are_valid(split_data):
    adata = split_data
    pairs = training_pairs(adata, seed=0)
    assert isinstance(pairs, Pairs) and len(pairs) > 0
    for field in pairs:
        assert field.dtype == np.int64 and field.shape == (len(pairs),)
    obs = adata.obs
    pert = obs["perturbation"].astype(str).to_numpy()
    ctype = obs["cell_type"].astype(str).to_numpy()
    control = obs["is_control"].to_numpy()
    split = split_of(adata)
    test = held_out(adata)
    # no held-out perturbation, only training cells
    for side in (pairs.a, pairs.b):
        assert not np.isin(pert[side], test).any()
        assert np.all(split[side] == "train") and not control[side].any()
    # the two sides differ in perturbation and share the cell type
    assert np.all(pert[pairs.a] != pert[pairs.b])
    assert np.all(ctype[pairs.a] == ctype[pairs.b])
    # matched controls: training controls of the same cell type
    for ctrl, side in ((pairs.ctrl_a, pairs.a), (pairs.ctrl_b, pairs.b)):
        assert control[ctrl].all() and np.all(split[ctrl] == "train")
        assert np.all(ctype[ctrl] == ctype[side])


def test_pairs_use_two_disjoint_groups_per_context(split_data):
    adata = split_data
    pairs = training_pairs(adata, seed=0)
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    ctype = adata.obs["cell_type"].astype(str).to_numpy()
    for ct in np.unique(ctype[pairs.a]):
        here = ctype[pairs.a] == ct
        group_a, group_b = set(pert[pairs.a][here]), set(pert[pairs.b][here])
        assert not group_a & group_b
        assert abs(len(group_a) - len(group_b)) <= 1           # about equal halves


def test_every_training_perturbed_cell_is_paired(split_data):
    adata = split_data
    pairs = training_pairs(adata, seed=0)
    train_perturbed = np.flatnonzero((split_of(adata) == "train")
                                     & ~adata.obs["is_control"].to_numpy())
    assert set(train_perturbed) == set(pairs.a) | set(pairs.b)


def test_pairs_are_deterministic_by_seed(split_data):
    first, second = training_pairs(split_data, seed=3), training_pairs(split_data, seed=3)
    other = training_pairs(split_data, seed=4)
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first.a, other.a)


def test_validation_pairs(split_data):
    pairs = training_pairs(split_data, split="valid", seed=0)
    assert np.all(split_of(split_data)[np.concatenate(list(pairs))] == "valid")


def test_combinations_are_not_paired():
    adata = make(cell_types=("K562",), perturbations=DRUGS[:6],
                 extra=[("K562", "drug_00+drug_01", 10)])
    assign_split(adata, test_perturbations=["drug_05"])   # the double stays in train
    pairs = training_pairs(adata)
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    assert "drug_00+drug_01" not in set(pert[pairs.a]) | set(pert[pairs.b])


def test_context_with_one_perturbation_is_refused():
    adata = make(cell_types=("A",), perturbations=DRUGS[:6],
                 extra=[("B", "control", 20), ("B", "drug_00", 10)])
    assign_split(adata, test_perturbations=["drug_05"], seed=0)
    with pytest.raises(ValueError, match="'B' has 1 perturbation"):
        training_pairs(adata)


def test_context_without_training_controls_is_refused():
    adata = make(cell_types=("A",), perturbations=DRUGS[:6],
                 extra=[("B", "drug_00", 10), ("B", "drug_01", 10)])
    assign_split(adata, test_perturbations=["drug_05"], seed=0)
    with pytest.raises(ValueError, match="'B' has no control cells"):
        training_pairs(adata)


def test_empty_split_is_refused(split_data):
    with pytest.raises(ValueError, match="no cells with obs\\['split'\\] == 'calibration'"):
        training_pairs(split_data, split="calibration")


def test_missing_split_column_says_what_to_call():
    adata = make()
    with pytest.raises(KeyError) as err:
        training_pairs(adata)
    assert "split" in str(err.value) and "assign_split" in str(err.value)


# ---------------------------------------------------------------------------------------------
# held-out rules
# ---------------------------------------------------------------------------------------------

def with_effects(strength: dict[str, float], seed: int = 0, cells: int = 20, n_genes: int = 60) -> AnnData:
    """Log1p-like expression where perturbation p raises the first 20 genes by strength[p]."""
    adata = make(cell_types=("A", "B"), perturbations=list(strength), cells=cells, controls=40)
    rng = np.random.default_rng(seed)
    X = rng.normal(2.0, 0.3, (adata.n_obs, n_genes))
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    for p, s in strength.items():
        X[pert == p, :20] += s
    return AnnData(np.clip(X, 0, None).astype(np.float32), obs=adata.obs.copy())


def test_strongest_rule_holds_out_the_top_k_by_measured_effect():
    strength = {f"d{i}": s for i, s in enumerate([0.0, 2.5, 0.1, 1.8, 3.2, 0.05, 1.2, 0.0])}
    adata = with_effects(strength)
    assign_split(adata, test_rule="strongest", n_test=3)
    assert held_out(adata) == ["d1", "d3", "d4"]
    record = adata.uns["xtcdr"]["split"]
    assert record["rule"] == "strongest" and record["k"] == 3
    assert list(record["ranking"][:3]) == ["d4", "d1", "d3"]
    assert np.all(np.diff(record["ranking_n_degs"]) <= 0)       # strongest first


def test_strongest_rule_never_reads_the_simulator_truth():
    strength = {f"d{i}": s for i, s in enumerate([0.0, 2.5, 0.1, 1.8, 3.2, 0.05, 1.2, 0.0])}
    plain = with_effects(strength)
    poisoned = with_effects(strength)
    # a truth that disagrees with the data: if the rule read it, it would pick d0, d2, d5
    poisoned.uns["truth"] = {"perturbations": list(strength), "magnitude": np.array([9, 0, 9, 0, 0, 9, 0, 0.0])}
    assign_split(plain, test_rule="strongest", n_test=3)
    assign_split(poisoned, test_rule="strongest", n_test=3)
    assert held_out(plain) == held_out(poisoned) == ["d1", "d3", "d4"]
    del poisoned.uns["truth"]
    assign_split(poisoned, test_rule="strongest", n_test=3)
    assert held_out(poisoned) == ["d1", "d3", "d4"]


def test_default_k_is_twenty_percent_and_random_rule_is_seeded():
    adata = make()
    assign_split(adata, test_rule="random", seed=4)
    first = held_out(adata)
    assert len(first) == 4 and adata.uns["xtcdr"]["split"]["rule"] == "random"   # 20% of 20
    assign_split(adata, test_rule="random", seed=4)
    assert held_out(adata) == first
    assign_split(adata, test_rule="random", seed=5)
    assert held_out(adata) != first


def test_dataset_default_rule_and_published_rule():
    strength = {f"d{i}": s for i, s in enumerate([0.0, 2.5, 0.1, 1.8, 3.2])}
    adata = with_effects(strength)
    adata.uns["xtcdr"] = {"test_rule": "strongest", "n_test": 1}
    assign_split(adata)
    assert held_out(adata) == ["d4"] and adata.uns["xtcdr"]["split"]["rule"] == "strongest"
    with pytest.raises(ValueError, match="no published held-out list"):
        assign_split(adata, test_rule="published")
    adata.uns["xtcdr"]["test_perturbations"] = ["d0", "d2"]
    assign_split(adata)                                   # a published list wins by default
    assert held_out(adata) == ["d0", "d2"] and adata.uns["xtcdr"]["split"]["rule"] == "published"
    with pytest.raises(ValueError, match="unknown test_rule"):
        assign_split(adata, test_rule="weakest")
    with pytest.raises(ValueError, match="choose n_test between 1 and 4"):
        assign_split(adata, test_rule="strongest", n_test=5)
