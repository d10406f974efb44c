"""The real-data path on two small public raw-count datasets (skipped when they are absent).

The files live beside the repository in ``../shared/realdata/`` (development data; users
download real data themselves):

- ``datlinger2021_jurkat_scperturb.h5ad``: Jurkat CRISPR knockouts of 20 genes in the scPerturb
  obs schema (the schema of the scPerturb files the registry downloads). Its labels are guides,
  ``GENE_1`` / ``GENE_2``. **Decision: the two guides of a gene are merged** by stripping the
  ``_<number>`` suffix, because the paper's perturbations are genes (the Replogle and Norman
  labels are gene names) and both guides knock out the same gene; merging also doubles the
  cells per condition. The file's own ``target_gene`` column confirms the mapping. TCR
  stimulation (``perturbation_2``) is used as the cellular context: two basal states of one
  line, the only cross-context structure in these files.
- ``papalexi2021_thp1_lowmoi.h5ad``: THP-1 ECCITE-seq knockouts of 25 genes; only 299 genes,
  so ``n_top_genes=200``.
"""
from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from xtcdr.datasets import convert, from_anndata, validate_schema
from xtcdr.pairing import assign_split, training_pairs
from xtcdr.preprocess import preprocess

REALDATA = Path(__file__).parents[2] / "shared" / "realdata"
JURKAT = "datlinger2021_jurkat_scperturb.h5ad"
THP1 = "papalexi2021_thp1_lowmoi.h5ad"
GUIDE_SUFFIX = r"_\d+$"


def _read(name: str) -> anndata.AnnData:
    path = REALDATA / name
    if not path.exists():
        pytest.skip(f"real development data not present: {path}")
    return anndata.read_h5ad(path)


def _assert_valid_pairs(adata, pairs) -> None:
    obs = adata.obs
    pert = obs["perturbation"].astype(str).to_numpy()
    ctype = obs["cell_type"].astype(str).to_numpy()
    split = obs["split"].astype(str).to_numpy()
    control = obs["is_control"].to_numpy()
    held_out = adata.uns["xtcdr"]["split"]["test_perturbations"]
    assert len(pairs) > 0
    for side, ctrl in ((pairs.a, pairs.ctrl_a), (pairs.b, pairs.ctrl_b)):
        assert np.all(split[side] == "train") and not control[side].any()
        assert not np.isin(pert[side], held_out).any()
        assert control[ctrl].all() and np.all(split[ctrl] == "train")
        assert np.all(ctype[ctrl] == ctype[side])
    assert np.all(pert[pairs.a] != pert[pairs.b])
    assert np.all(ctype[pairs.a] == ctype[pairs.b])


def _assert_preprocessed(adata, n_degs: int) -> None:
    validate_schema(adata)
    assert isinstance(adata.X, np.ndarray) and adata.X.dtype == np.float32
    assert np.isfinite(adata.X).all() and adata.X.min() >= 0
    counts = adata.layers["counts"]
    assert sp.issparse(counts) and np.array_equal(counts.data, np.rint(counts.data))
    totals = np.asarray(counts.sum(1)).ravel()
    assert totals.max() > 0
    degs = adata.uns["top_degs"]
    perturbed_conditions = set(adata.obs.loc[~adata.obs["is_control"], "condition"].astype(str))
    assert set(degs) == perturbed_conditions
    assert all(len(names) <= n_degs and set(names) <= set(adata.var_names) for names in degs.values())
    assert all(len(names) == n_degs for names in adata.uns["top_degs_score"].values())


# ---------------------------------------------------------------------------------------------
# Jurkat (scPerturb schema)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jurkat_raw():
    raw = _read(JURKAT)
    scperturb_columns = {"perturbation", "cell_line", "perturbation_2", "perturbation_type", "nperts"}
    assert scperturb_columns <= set(raw.obs.columns)
    raw.obs["target"] = raw.obs["perturbation"].astype(str).str.replace(GUIDE_SUFFIX, "", regex=True)
    return raw


def test_jurkat_guides_merge_to_their_genes(jurkat_raw):
    obs = jurkat_raw.obs
    assert (obs["target"] == obs["target_gene"].astype(str)).all()    # the file agrees
    genes = set(obs["target"]) - {"control"}
    assert len(genes) == 20 and obs["perturbation"].nunique() == 41     # 2 guides per gene
    # the pitfall: scPerturb joins Norman's combinations with '_', but here '_' marks the guide;
    # reading these labels as combinations would invent doubles such as 'ZAP70+1'
    wrong = from_anndata(jurkat_raw, perturbation_key="perturbation", combo_sep="_")
    assert wrong.obs["perturbation"].str.contains(r"\+", regex=True).any()


def test_jurkat_scperturb_loader_keeps_guide_labels(jurkat_raw):
    # the registered scPerturb conversion of a genetic screen (Replogle) applied to a real file
    out = convert("replogle_k562", jurkat_raw)
    validate_schema(out)
    assert out.n_obs == jurkat_raw.n_obs
    assert set(out.obs["cell_type"]) == {"Jurkat cells"}
    assert out.obs["perturbation"].nunique() == 41 and not out.obs["perturbation"].str.contains("+", regex=False).any()
    assert out.obs["is_control"].sum() == (jurkat_raw.obs["perturbation"] == "control").sum()
    assert out.uns["xtcdr"]["dataset"] == "replogle_k562"


@pytest.fixture(scope="module")
def jurkat_prepared(jurkat_raw):
    adata = from_anndata(jurkat_raw, perturbation_key="target", cell_type_key="perturbation_2",
                         combo_sep=None, source=JURKAT)
    validate_schema(adata)
    assert sp.issparse(adata.X)
    adata = preprocess(adata, n_top_genes=1000, n_degs=50)
    assign_split(adata, seed=0)
    return adata


def test_jurkat_schema_after_preprocessing(jurkat_prepared):
    adata = jurkat_prepared
    _assert_preprocessed(adata, n_degs=50)
    assert set(adata.obs["cell_type"]) == {"stimulated", "unstimulated"}
    assert set(adata.obs["condition"]) >= {"stimulated_ZAP70", "unstimulated_control"}
    assert adata.obs["perturbation_raw"].isin(set(adata.obs["perturbation"])).all()
    # knocked-out genes that were measured are kept beside the highly variable genes
    measured_targets = {g for g in adata.obs["perturbation"].unique() if g != "control"} & set(
        adata.var_names)
    assert measured_targets and measured_targets <= set(adata.var_names[adata.var["perturbed_gene"]])


def test_jurkat_split_and_pairs(jurkat_prepared):
    adata = jurkat_prepared
    held_out = adata.uns["xtcdr"]["split"]["test_perturbations"]
    assert len(held_out) == 4                                           # 20% of 20 genes
    split = adata.obs["split"].astype(str).to_numpy()
    assert set(adata.obs["perturbation"][split == "test"]) == set(held_out)
    assert not np.any(split[adata.obs["is_control"].to_numpy()] == "test")
    pairs = training_pairs(adata, seed=0)
    _assert_valid_pairs(adata, pairs)
    assert set(adata.obs["cell_type"].iloc[pairs.a]) == {"stimulated", "unstimulated"}


# ---------------------------------------------------------------------------------------------
# THP-1 (its own schema, 299 genes)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def thp1_prepared():
    raw = _read(THP1)
    assert {"perturbation", "is_control", "cell_line", "bio_rep"} <= set(raw.obs.columns)
    adata = from_anndata(raw, perturbation_key="perturbation", cell_type_key="cell_line",
                         combo_sep=None, source=THP1)
    assert (adata.obs["is_control"].to_numpy() == raw.obs["is_control"].to_numpy(bool)).all()
    adata = preprocess(adata, n_top_genes=200, n_degs=50)
    assign_split(adata, seed=0)
    return adata


def test_thp1_schema_after_preprocessing(thp1_prepared):
    adata = thp1_prepared
    _assert_preprocessed(adata, n_degs=50)
    assert set(adata.obs["cell_type"]) == {"THP-1"}
    assert 200 <= adata.n_vars <= 299
    targets = {g for g in adata.obs["perturbation"].unique() if g != "control"}
    assert len(targets) == 25
    assert set(adata.var_names[adata.var["perturbed_gene"]]) == targets & set(adata.var_names)


def test_thp1_split_and_pairs(thp1_prepared):
    adata = thp1_prepared
    assert len(adata.uns["xtcdr"]["split"]["test_perturbations"]) == 5   # 20% of 25 genes
    pairs = training_pairs(adata, seed=0)
    _assert_valid_pairs(adata, pairs)
    train_perturbed = np.flatnonzero((adata.obs["split"] == "train").to_numpy()
                                     & ~adata.obs["is_control"].to_numpy())
    assert set(train_perturbed) == set(pairs.a) | set(pairs.b)
