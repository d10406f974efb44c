"""Tests of xtcdr.preprocess on tiny matrices with a known answer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from xtcdr.preprocess import check_counts, looks_like_counts, preprocess, top_degs
from xtcdr.synthetic import simulate

N_GENES = 40
PLANTED = "g07"      # the gene that condition 'up' raises ten-fold
N_PER_GROUP = 25


def _schema_obs(cell_types, perturbations) -> pd.DataFrame:
    obs = pd.DataFrame({"cell_type": cell_types, "perturbation": perturbations})
    obs["dose"] = np.nan
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    obs.index = [f"cell{i}" for i in range(len(obs))]
    return obs


def tiny(seed: int = 0, sparse: bool = False) -> AnnData:
    """Two cell types x (control, 'up', 'flat'); 'up' multiplies PLANTED's mean by ten."""
    rng = np.random.default_rng(seed)
    genes = [f"g{j:02d}" for j in range(N_GENES)]
    base = rng.uniform(2, 10, N_GENES)
    blocks, cts, perts = [], [], []
    for ct in ("A", "B"):
        for pert in ("control", "up", "flat"):
            mean = base.copy()
            if pert == "up":
                mean[genes.index(PLANTED)] *= 10
            blocks.append(rng.poisson(mean, (N_PER_GROUP, N_GENES)))
            cts += [ct] * N_PER_GROUP
            perts += [pert] * N_PER_GROUP
    X = np.vstack(blocks).astype(np.float32)
    adata = AnnData(sp.csr_matrix(X) if sparse else X, obs=_schema_obs(cts, perts),
                    var=pd.DataFrame(index=genes))
    adata.uns["xtcdr"] = {"source": "test"}
    return adata


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sparse", [False, True])
def test_counts_become_log1p_of_counts_per_10k(sparse):
    adata = tiny(sparse=sparse)
    counts = _dense(adata.X).astype(np.float64)
    out = preprocess(adata, n_top_genes=1000, n_degs=5)
    expected = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    assert isinstance(out.X, np.ndarray) and out.X.dtype == np.float32
    assert out.X.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out.X, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_dense(out.layers["counts"]), counts)
    info = out.uns["xtcdr"]["preprocess"]
    assert info["is_counts"] is True and info["n_degs"] == 5 and info["target_sum"] == 1e4


def test_normalised_input_is_used_as_is():
    adata = tiny()
    adata.X = np.log1p(adata.X).astype(np.float32)
    before = adata.X.copy()
    out = preprocess(adata, n_top_genes=1000, n_degs=5)          # auto: not counts
    np.testing.assert_array_equal(out.X, before)
    assert "counts" not in out.layers
    assert out.uns["xtcdr"]["preprocess"]["is_counts"] is False


def test_input_is_not_modified():
    adata = tiny(sparse=True)
    X_before, obs_before = adata.X.copy(), adata.obs.copy()
    var_before, uns_before = adata.var.copy(), dict(adata.uns)
    preprocess(adata, n_top_genes=10, n_degs=5)
    assert (adata.X != X_before).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, obs_before)
    pd.testing.assert_frame_equal(adata.var, var_before)
    assert set(adata.uns) == set(uns_before) and "preprocess" not in adata.uns["xtcdr"]
    assert not adata.layers


# ---------------------------------------------------------------------------------------------
# gene selection
# ---------------------------------------------------------------------------------------------

def test_keeps_n_top_highly_variable_genes():
    adata = simulate("synthetic_drugs", n_singles=4, n_genes=300, cells_per_condition=20,
                     controls_per_cell_type=40)
    out = preprocess(adata, n_top_genes=50, n_degs=5)
    assert out.n_vars == 50
    assert out.var["highly_variable"].all()
    assert out.uns["xtcdr"]["preprocess"]["n_genes_kept"] == 50
    assert not out.var["perturbed_gene"].any()        # drugs name no gene


def test_hvg_ties_on_tiny_data_keep_the_planted_gene():
    # scanpy's "seurat" flavour bins genes by mean; a gene alone in its bin gets a normalised
    # dispersion of exactly 1, so on 40 genes ties can add a gene or two to n_top_genes
    out = preprocess(tiny(), n_top_genes=12, n_degs=5)
    assert 12 <= out.n_vars <= 14
    assert PLANTED in out.var_names          # the one gene that truly varies


def test_keeps_every_gene_when_fewer_than_n_top():
    out = preprocess(tiny(), n_top_genes=1000, n_degs=5)
    assert out.n_vars == N_GENES


def test_perturbed_genes_are_kept_for_genetic_data():
    adata = simulate("synthetic_genes", n_genes=300, cells_per_condition=20,
                     controls_per_cell_type=100)
    targets = set(adata.uns["truth"]["perturbations"])
    out = preprocess(adata, n_top_genes=20, n_degs=10)
    assert targets <= set(out.var_names)
    assert set(out.var_names[out.var["perturbed_gene"]]) == targets
    assert 20 <= out.n_vars <= 20 + len(targets)
    assert out.uns["xtcdr"]["preprocess"]["keep_perturbed_genes"] is True
    # switched off: only the highly variable genes remain
    plain = preprocess(adata, n_top_genes=20, n_degs=10, keep_perturbed_genes=False)
    assert plain.n_vars == 20


# ---------------------------------------------------------------------------------------------
# DEGs
# ---------------------------------------------------------------------------------------------

def test_top_degs_rank_the_planted_gene_first():
    out = preprocess(tiny(), n_top_genes=1000, n_degs=7)
    degs = out.uns["top_degs"]
    assert set(degs) == {"A_up", "A_flat", "B_up", "B_flat"}      # no control conditions
    for condition, names in degs.items():
        assert len(names) <= 7 and len(set(names)) == len(names), condition
        assert set(names) <= set(out.var_names)
    assert degs["A_up"][0] == PLANTED and degs["B_up"][0] == PLANTED
    # the t-score-only rule always fills the list
    assert all(len(names) == 7 for names in out.uns["top_degs_score"].values())
    assert out.uns["top_degs"] is out.uns["top_degs_fold_change"] or \
        out.uns["top_degs"] == out.uns["top_degs_fold_change"]


def test_every_stored_deg_passes_the_fold_change_rule():
    out = preprocess(tiny(), n_top_genes=1000, n_degs=7)
    X = out.X.astype(np.float64)
    obs = out.obs
    for condition, names in out.uns["top_degs"].items():
        ct = condition.split("_")[0]
        group = X[(obs["condition"] == condition).to_numpy()]
        ctrl = X[((obs["cell_type"] == ct) & obs["is_control"]).to_numpy()]
        cols = out.var_names.get_indexer(names)
        lfc = np.log2((np.expm1(group.mean(0)) + 1e-9) / (np.expm1(ctrl.mean(0)) + 1e-9))
        assert np.all(np.abs(lfc[cols]) >= 1.0), condition
        # and nothing passing the rule with a larger |t| was left out
        passing = np.flatnonzero(np.abs(lfc) >= 1.0)
        assert len(names) == min(7, passing.size), condition
    assert out.uns["xtcdr"]["preprocess"]["min_log2fc"] == 1.0
    assert out.uns["xtcdr"]["preprocess"]["n_degs_per_condition"] == {
        c: len(g) for c, g in out.uns["top_degs"].items()}


def test_deg_statistics_equal_scanpy_rank_genes_groups():
    import scanpy as sc

    from xtcdr.preprocess import deg_statistics

    out = preprocess(tiny(seed=3), n_top_genes=1000, n_degs=5)
    sub = out[out.obs["cell_type"] == "A"].copy()
    sub.obs["perturbation"] = sub.obs["perturbation"].astype("category")
    sc.tl.rank_genes_groups(sub, "perturbation", groups=["up"], reference="control",
                            method="t-test", n_genes=sub.n_vars)
    res = sub.uns["rank_genes_groups"]
    order = sub.var_names.get_indexer(np.asarray(res["names"]["up"]))
    rows = np.flatnonzero((out.obs["condition"] == "A_up").to_numpy())
    ctrl = np.flatnonzero(((out.obs["cell_type"] == "A") & out.obs["is_control"]).to_numpy())
    scores, lfc = deg_statistics(out.X, rows, ctrl)
    np.testing.assert_allclose(scores[order], np.asarray(res["scores"]["up"], float), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lfc[order], np.asarray(res["logfoldchanges"]["up"], float), rtol=1e-4, atol=1e-4)


def test_integer_matrix_with_a_negative_value_is_refused_under_auto():
    adata = tiny()
    adata.X[3, 5] = -2
    with pytest.raises(ValueError, match=r"1 of them are negative \(minimum -2\).*is_counts=False"):
        preprocess(adata)
    adata.X = np.log1p(np.abs(adata.X)) - 0.5          # genuinely normalised values pass as is
    out = preprocess(adata, n_top_genes=1000, n_degs=3)
    assert out.uns["xtcdr"]["preprocess"]["is_counts"] is False


def test_hvg_exclude_leaves_those_cells_out():
    from xtcdr.preprocess import _seurat_hvg

    adata = simulate("synthetic_drugs", n_singles=6, n_genes=150, cells_per_condition=15,
                     controls_per_cell_type=40)
    out = preprocess(adata, n_top_genes=60, n_degs=5, hvg_exclude=["drug_00", "drug_01"])
    keep = ~adata.obs["perturbation"].isin(["drug_00", "drug_01"]).to_numpy()
    totals = adata.X.sum(1).astype(np.float64)
    expected = _seurat_hvg(adata.X[keep], 60, totals=totals[keep])
    assert list(out.var_names) == list(adata.var_names[expected])
    assert out.uns["xtcdr"]["preprocess"]["hvg_exclude"] == ["drug_00", "drug_01"]


def test_top_degs_count_down_regulated_genes():
    adata = tiny()
    rows = adata.obs["perturbation"].to_numpy() == "up"
    adata.X[rows, 3] = 0                                   # 'up' also silences g03
    out = preprocess(adata, n_top_genes=1000, n_degs=2)
    assert set(out.uns["top_degs"]["A_up"]) == {PLANTED, "g03"}


def test_top_degs_skip_conditions_of_one_cell():
    adata = preprocess(tiny(), n_top_genes=1000, n_degs=3)
    lone = adata[[0, 1, 2, N_PER_GROUP]].copy()            # 3 controls + 1 'up' cell of A
    assert top_degs(lone, n_degs=3) == {}


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_negative_counts_are_refused():
    adata = tiny()
    adata.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        preprocess(adata, is_counts=True)
    assert not looks_like_counts(adata.X)


def test_non_integer_counts_are_refused():
    adata = tiny()
    adata.X[0, 0] = 0.5
    with pytest.raises(ValueError, match="non-integer"):
        preprocess(adata, is_counts=True)
    with pytest.raises(ValueError, match="is_counts=False"):
        check_counts(adata.X)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("is_counts", ["auto", True, False])
def test_non_finite_values_are_refused(bad, is_counts):
    adata = tiny()
    adata.X[2, 3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        preprocess(adata, is_counts=is_counts)


def test_missing_obs_column_is_named():
    adata = tiny()
    del adata.obs["condition"]
    with pytest.raises(KeyError) as err:
        preprocess(adata)
    message = str(err.value)
    assert "condition" in message
    for present in ("cell_type", "perturbation", "is_control"):
        assert present in message
    assert "from_anndata" in message


def test_no_controls_is_refused():
    adata = tiny()
    adata = adata[~adata.obs["is_control"].to_numpy()].copy()
    with pytest.raises(ValueError, match="no control"):
        preprocess(adata)


# ---------------------------------------------------------------------------------------------
# the streamed highly-variable-gene selection is scanpy's "seurat" flavour
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sparse_input", [False, True])
def test_hvg_selection_equals_scanpy_seurat(sparse_input):
    import scanpy as sc

    adata = simulate("synthetic_drugs", n_singles=6, n_genes=400, cells_per_condition=30,
                     controls_per_cell_type=60)
    if sparse_input:
        adata.X = sp.csr_matrix(adata.X)
    reference = adata.copy()
    sc.pp.normalize_total(reference, target_sum=1e4)
    sc.pp.log1p(reference)
    sc.pp.highly_variable_genes(reference, n_top_genes=60, flavor="seurat")
    expected = set(reference.var_names[reference.var["highly_variable"]])
    out = preprocess(adata, n_top_genes=60, n_degs=5)
    assert set(out.var_names) == expected
    # already log-normalised input (is_counts=False) takes the same route as scanpy
    logged = adata.copy()
    logged.X = reference.X
    assert set(preprocess(logged, n_top_genes=60, n_degs=5).var_names) == expected
