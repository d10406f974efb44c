"""Tests of the ground-truth simulator xtcdr.synthetic.

The truth stored in ``uns['truth']`` is checked against the counts it generated, so that a
notebook can trust it as an answer key.
"""
from __future__ import annotations

import numpy as np
import pytest

from xtcdr.datasets import validate_schema
from xtcdr.synthetic import TWINS, SimulationConfig, simulate

# a small world: fast, but every mechanism of the simulator is exercised
SMALL = dict(n_singles=4, n_genes=200, cells_per_condition=30, controls_per_cell_type=60)
WORLD_KEYS = ("basal_latent", "effect_latent", "effect_latent_by_context", "mechanism", "magnitude")


@pytest.fixture(scope="module")
def twins():
    """The three named twins at their default sizes (generated once for the module)."""
    return {name: simulate(name) for name in TWINS}


def _pooled_proportions(adata, condition):
    """Per condition: share of each gene in the pooled counts, and its true counterpart.

    Each cell's counts are ``NB(mean = true mean x library size)``; pooling the counts of a
    condition and dividing by their total cancels the unknown library sizes, which is the
    simplest size-factor estimate. The truth is ``condition_mean`` (library size 1) normalised
    the same way.
    """
    truth = adata.uns["truth"]
    cells = adata.X[adata.obs["condition"].astype(str).to_numpy() == condition]
    true_mean = truth["condition_mean"][truth["conditions"].index(condition)]
    return cells.sum(0) / cells.sum(), true_mean / true_mean.sum(), cells


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_data_and_truth():
    first = simulate("synthetic_drugs", seed=3, **SMALL)
    second = simulate("synthetic_drugs", seed=3, **SMALL)
    np.testing.assert_array_equal(first.X, second.X)
    assert first.obs.equals(second.obs)
    for key, value in first.uns["truth"].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, second.uns["truth"][key], err_msg=key)
        else:
            assert value == second.uns["truth"][key], key
    np.testing.assert_array_equal(first.obsm["true_effect"], second.obsm["true_effect"])


def test_cell_seed_draws_new_cells_of_the_same_world():
    base = simulate("synthetic_drugs", seed=3, **SMALL)
    replicate = simulate("synthetic_drugs", seed=3, cell_seed=1, **SMALL)
    assert base.shape == replicate.shape
    assert not np.array_equal(base.X, replicate.X)
    for key in WORLD_KEYS:
        np.testing.assert_array_equal(base.uns["truth"][key], replicate.uns["truth"][key],
                                      err_msg=key)
    assert base.uns["truth"]["conditions"] == replicate.uns["truth"]["conditions"]
    # the true condition means are averages over different cells: close, not equal
    a, b = base.uns["truth"]["condition_mean"], replicate.uns["truth"]["condition_mean"]
    assert not np.array_equal(a, b)
    assert np.corrcoef(np.log(a.ravel()), np.log(b.ravel()))[0, 1] > 0.99
    assert replicate.uns["xtcdr"]["cell_seed"] == 1


def test_another_seed_is_another_world():
    a = simulate("synthetic_drugs", seed=0, **SMALL)
    b = simulate("synthetic_drugs", seed=1, **SMALL)
    assert not np.allclose(a.uns["truth"]["effect_latent"], b.uns["truth"]["effect_latent"])


def test_unknown_twin_lists_valid_names():
    with pytest.raises(ValueError, match="synthetic_drugs"):
        simulate("synthetic_drug")


def test_config_rejects_impossible_settings():
    with pytest.raises(ValueError, match="kind"):
        SimulationConfig(kind="rna")
    with pytest.raises(ValueError, match="n_doubles"):
        SimulationConfig(n_singles=3, n_doubles=4)
    with pytest.raises(ValueError, match="n_interacting"):
        SimulationConfig(n_singles=4, n_doubles=2, n_interacting=3)


# ---------------------------------------------------------------------------------------------
# the truth agrees with the counts
# ---------------------------------------------------------------------------------------------

def test_truth_matches_the_counts():
    adata = simulate("synthetic_drugs", seed=0, **SMALL)
    truth = adata.uns["truth"]
    assert len(truth["conditions"]) == truth["condition_mean"].shape[0]
    assert set(truth["conditions"]) == set(adata.obs["condition"].astype(str))
    assert truth["condition_mean"].shape[1] == adata.n_vars
    for condition in truth["conditions"]:
        _, _, cells = _pooled_proportions(adata, condition)
        true_mean = truth["condition_mean"][truth["conditions"].index(condition)]
        # log mean counts follow the log true means across genes
        r = np.corrcoef(np.log1p(cells.mean(0)), np.log1p(true_mean))[0, 1]
        assert r > 0.97, (condition, r)


def test_estimation_error_shrinks_with_more_cells():
    def median_relative_error(n_cells):
        adata = simulate("synthetic_drugs", seed=0, n_singles=3, n_genes=200,
                         cells_per_condition=n_cells, controls_per_cell_type=n_cells)
        errors = []
        for condition in adata.uns["truth"]["conditions"]:
            observed, expected, _ = _pooled_proportions(adata, condition)
            expressed = expected > np.median(expected)
            errors.append(np.median(np.abs(observed - expected)[expressed] / expected[expressed]))
        return float(np.mean(errors))

    small, large = median_relative_error(40), median_relative_error(640)
    # 16 times the cells: the sampling error should fall by about 4
    assert large < 0.5 * small, (small, large)
    assert large < 0.05


def test_per_cell_truth_is_consistent():
    adata = simulate("synthetic_drugs", seed=0, **SMALL)
    k = adata.uns["truth"]["basal_latent"].shape[1]
    assert adata.obsm["true_basal"].shape == (adata.n_obs, k)
    assert adata.obsm["true_effect"].shape == (adata.n_obs, k)
    control = adata.obs["is_control"].to_numpy()
    assert np.all(adata.obsm["true_effect"][control] == 0)
    assert np.all(np.abs(adata.obsm["true_effect"][~control]).sum(1) > 0)
    # a cell's basal state scatters around its cell type's mean
    for c, cell_type in enumerate(adata.uns["truth"]["cell_types"]):
        rows = adata.obs["cell_type"].astype(str).to_numpy() == cell_type
        centre = adata.obsm["true_basal"][rows].mean(0)
        np.testing.assert_allclose(centre, adata.uns["truth"]["basal_latent"][c], atol=0.25)


# ---------------------------------------------------------------------------------------------
# the three twins
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TWINS))
def test_twin_holds_integer_counts_in_the_schema(twins, name):
    adata = twins[name]
    validate_schema(adata)
    assert adata.X.dtype == np.float32
    assert np.all(adata.X >= 0)
    assert np.array_equal(adata.X, np.round(adata.X))
    assert adata.obs["is_control"].any()
    assert (adata.obs["condition"].astype(str)
            == adata.obs["cell_type"].astype(str) + "_" + adata.obs["perturbation"].astype(str)).all()
    assert adata.uns["xtcdr"]["source"] == name


def test_drug_twin_has_three_lines_and_thirty_drugs(twins):
    adata = twins["synthetic_drugs"]
    assert adata.obs["cell_type"].nunique() == 3
    drugs = set(adata.obs.loc[~adata.obs["is_control"], "perturbation"].astype(str))
    assert len(drugs) >= 30
    # every drug is measured in every cell line (what cross-context transfer needs)
    per_line = adata.obs[~adata.obs["is_control"]].groupby("cell_type", observed=True)["perturbation"].nunique()
    assert (per_line == len(drugs)).all()
    assert not any("+" in d for d in drugs)


def test_genetic_twin_knocks_out_genes_of_var(twins):
    adata = twins["synthetic_genes"]
    assert adata.obs["cell_type"].nunique() == 2   # two screens (K562-like, RPE-1-like)
    knockouts = sorted(set(adata.obs.loc[~adata.obs["is_control"], "perturbation"].astype(str)))
    assert len(knockouts) >= 40
    assert set(knockouts) <= set(adata.var_names)


def test_knockdown_lowers_its_target_gene(twins):
    adata = twins["synthetic_genes"]
    genes = list(adata.var_names)
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    normalised = adata.X / adata.X.sum(1, keepdims=True) * 1e4
    control_mean = normalised[pert == "control"].mean(0)
    truth = adata.uns["truth"]
    line = adata.obs["cell_type"].astype(str).to_numpy()
    for ct, measured in truth["measured"].items():
        true_control = truth["condition_mean"][truth["conditions"].index(f"{ct}_control")]
        control_mean = normalised[(pert == "control") & (line == ct)].mean(0)
        for gene in measured:
            g = genes.index(gene)
            true_ko = truth["condition_mean"][truth["conditions"].index(f"{ct}_{gene}")]
            assert true_ko[g] < true_control[g], (ct, gene)
            assert normalised[(pert == gene) & (line == ct), g].mean() < control_mean[g], (ct, gene)


def test_combo_twin_has_singles_doubles_and_interactions(twins):
    adata = twins["synthetic_combo"]
    truth = adata.uns["truth"]
    assert adata.obs["cell_type"].nunique() == 1
    perts = set(adata.obs.loc[~adata.obs["is_control"], "perturbation"].astype(str))
    singles = {p for p in perts if "+" not in p}
    doubles = {p for p in perts if "+" in p}
    assert singles == set(truth["perturbations"])
    assert doubles == set(truth["doubles"]) and len(doubles) > 0
    for double in doubles:
        a, b = double.split("+")
        assert a in singles and b in singles and a != b
    assert 0 < len(truth["interacting"]) < len(doubles)
    assert set(truth["interacting"]) <= doubles
    # CRISPR activation: each single names a gene of var and raises its true mean
    genes = list(adata.var_names)
    control = truth["condition_mean"][truth["conditions"].index(f"{truth['cell_types'][0]}_control")]
    for gene in singles:
        activated = truth["condition_mean"][truth["conditions"].index(f"{truth['cell_types'][0]}_{gene}")]
        assert activated[genes.index(gene)] > control[genes.index(gene)], gene


def test_sciplex4_twin_is_its_own_world_with_a_shared_mechanism():
    drugs4 = simulate("synthetic_drugs4", n_genes=200, cells_per_condition=4, controls_per_cell_type=8)
    drugs = simulate("synthetic_drugs", n_genes=200, cells_per_condition=4, controls_per_cell_type=8)
    truth = drugs4.uns["truth"]
    assert truth["cell_types"] == ["line_A", "line_B"] and len(truth["perturbations"]) == 24
    assert np.sum(truth["mechanism"] == 0) >= round(0.4 * 24)      # one class shared by many drugs
    assert not np.allclose(truth["basal_latent"][:2], drugs.uns["truth"]["basal_latent"][:2])
    assert drugs4.uns["xtcdr"]["test_rule"] == "strongest" and drugs4.uns["xtcdr"]["n_test"] == 5
    assert drugs.uns["xtcdr"]["test_rule"] == "strongest"
