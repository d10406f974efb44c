"""The two real screens shipped in ``data/real/``: checksums, conversion, filters, the real-data path.

- ``datlinger2021_jurkat``: Jurkat knockouts of 20 genes in the scPerturb obs schema, guides
  ``GENE_1`` / ``GENE_2``. **The two guides of a gene are pooled** to the gene, because the
  paper's perturbations are genes (the Replogle and Norman labels are gene names) and both guides
  knock out the same gene; pooling also doubles the cells per condition. The file's own
  ``target_gene`` column confirms the mapping. TCR stimulation is the cellular context: two basal
  states of one line.
- ``papalexi2021_thp1``: THP-1 knockouts of 25 genes, three replicates, only 299 genes (so
  ``n_top_genes=500`` keeps them all); ambiguous guide assignments are filtered out.

Every test reads the repository's copy, so none is skipped; nothing is downloaded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
import re
import shutil

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from xtcdr import datasets, realdata
from xtcdr.datasets import convert, from_anndata, validate_schema
from xtcdr.pairing import assign_split, training_pairs
from xtcdr.preprocess import preprocess

REAL = Path(__file__).parents[1] / "data" / "real"
JURKAT, THP1 = "datlinger2021_jurkat", "papalexi2021_thp1"
GUIDE_SUFFIX = r"_\d+$"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def _assert_raw_schema(adata) -> None:
    validate_schema(adata)
    obs = adata.obs
    assert (obs["condition"] == obs["cell_type"] + "_" + obs["perturbation"]).all()
    assert sp.issparse(adata.X) and np.array_equal(adata.X.data, np.rint(adata.X.data))  # raw counts
    assert adata.X.data.min() > 0
    info = adata.uns["xtcdr"]
    assert info["shipped"] is True and info["dataset"] in datasets.SHIPPED
    assert info["checksum"] == "sha256:" + _sha256(REAL / f"{info['dataset']}.h5ad")
    assert info["citation"] and info["origin"] and (REAL.parent.parent / info["licence"]).exists()
    assert info["n_cells_kept"] == adata.n_obs
    assert info["n_cells_kept"] + sum(f["n_removed"] for f in info["filters"].values()) \
        == info["n_cells_source"]


def _assert_preprocessed(adata, n_degs: int) -> None:
    validate_schema(adata)
    assert isinstance(adata.X, np.ndarray) and adata.X.dtype == np.float32
    assert np.isfinite(adata.X).all() and adata.X.min() >= 0
    counts = adata.layers["counts"]
    assert sp.issparse(counts) and np.array_equal(counts.data, np.rint(counts.data))
    degs = adata.uns["top_degs"]
    perturbed_conditions = set(adata.obs.loc[~adata.obs["is_control"], "condition"].astype(str))
    assert set(degs) == perturbed_conditions
    assert all(len(names) <= n_degs and set(names) <= set(adata.var_names) for names in degs.values())


# ---------------------------------------------------------------------------------------------
# the shipped files: registry, checksums, licences
# ---------------------------------------------------------------------------------------------

def test_shipped_files_match_registry_readme_and_licences():
    readme = (REAL / "README.md").read_text()
    for name in datasets.SHIPPED:
        info = datasets.dataset_info(name)
        assert info.shipped and info.url == "" and info.filename == f"{name}.h5ad"
        digest = _sha256(REAL / info.filename)
        assert digest == info.sha256                          # the registered checksum
        assert digest in readme and f"`{name}`" in readme     # documented beside the file
        licence = (REAL / info.licence_file).read_text()
        assert "MIT" in licence and "Permission is hereby granted" in licence
        assert datasets.fetch(name) == REAL / info.filename   # nothing downloaded
    assert set(datasets.SHIPPED) == {JURKAT, THP1}


def test_corrupt_copy_raises_and_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(realdata, "DATA_DIR", tmp_path)
    good = tmp_path / f"{THP1}.h5ad"
    shutil.copyfile(REAL / f"{THP1}.h5ad", good)
    assert datasets.load(THP1).n_obs > 0                      # the folder is the one read
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF                              # one flipped byte
    good.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256") as err:
        datasets.load(THP1)
    message = str(err.value)
    assert str(good) in message and "git checkout -- data/real/papalexi2021_thp1.h5ad" in message
    with pytest.raises(FileNotFoundError, match="restore it from git"):
        datasets.load(JURKAT)                                 # missing from the folder


def test_shipped_data_ignore_the_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XTCDR_DATA", str(tmp_path))
    adata = datasets.load(JURKAT, data_dir=tmp_path / "elsewhere")
    assert adata.n_obs == 7500
    assert list(tmp_path.iterdir()) == []                     # nothing written, nothing fetched
    with pytest.raises(ValueError, match="never downloaded"):
        datasets._fetch(JURKAT, tmp_path, False)


# ---------------------------------------------------------------------------------------------
# Jurkat (scPerturb schema): guides pooled, stimulation as context
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jurkat_raw():
    raw = anndata.read_h5ad(REAL / f"{JURKAT}.h5ad")
    assert {"perturbation", "cell_line", "perturbation_2", "perturbation_type", "nperts"} \
        <= set(raw.obs.columns)
    return raw


@pytest.fixture(scope="module")
def jurkat():
    return datasets.load(JURKAT)


def test_jurkat_guides_pooled_to_their_gene(jurkat_raw, jurkat):
    _assert_raw_schema(jurkat)
    raw_obs = jurkat_raw.obs
    assert raw_obs["perturbation"].nunique() == 41                      # 20 genes x 2 guides + control
    obs = jurkat.obs
    assert jurkat.n_obs == jurkat_raw.n_obs and jurkat.n_vars == 2000
    assert (obs["guide"].to_numpy() == raw_obs["perturbation"].astype(str).to_numpy()).all()
    pooled = raw_obs["target_gene"].astype(str).to_numpy()              # the file's own mapping
    assert (obs["perturbation"].to_numpy() == pooled).all()
    assert set(obs.loc[obs["perturbation"] == "LCK", "guide"]) == {"LCK_1", "LCK_2"}
    assert obs["perturbation"].nunique() == 21 and obs["is_control"].sum() == 200
    states = "Jurkat_" + raw_obs["perturbation_2"].astype(str).to_numpy()
    assert (obs["cell_type"].to_numpy() == states).all()
    assert set(obs["cell_type"]) == {"Jurkat_stimulated", "Jurkat_unstimulated"}
    assert jurkat.uns["xtcdr"]["filters"] == {}
    assert np.array_equal(jurkat.X.toarray(), jurkat_raw.X.toarray())  # counts untouched
    # the pitfall: scPerturb joins Norman's combinations with '_', but here '_' marks the guide;
    # reading these labels as combinations would invent doubles such as 'ZAP70+1'
    wrong = from_anndata(jurkat_raw, perturbation_key="perturbation", combo_sep="_")
    assert wrong.obs["perturbation"].str.contains(r"\+", regex=True).any()


def test_jurkat_scperturb_loader_keeps_guide_labels(jurkat_raw):
    # the registered scPerturb conversion of a genetic screen (Replogle) applied to a real file
    with pytest.warns(UserWarning, match="not in the data"):          # Replogle's held-out list
        out = convert("replogle_k562", jurkat_raw)
    validate_schema(out)
    assert out.n_obs == jurkat_raw.n_obs
    assert set(out.obs["cell_type"]) == {"Jurkat cells"}
    assert out.obs["perturbation"].nunique() == 41 and not out.obs["perturbation"].str.contains("+", regex=False).any()
    assert out.uns["xtcdr"]["dataset"] == "replogle_k562"
    with pytest.raises(ValueError, match="own conversion"):
        convert(JURKAT, jurkat_raw)


@pytest.fixture(scope="module")
def jurkat_prepared(jurkat):
    adata = preprocess(jurkat, n_top_genes=1000, n_degs=50)
    assign_split(adata, seed=0)
    return adata


def test_jurkat_schema_after_preprocessing(jurkat_prepared):
    adata = jurkat_prepared
    _assert_preprocessed(adata, n_degs=50)
    assert set(adata.obs["condition"]) >= {"Jurkat_stimulated_ZAP70", "Jurkat_unstimulated_control"}
    assert "guide" in adata.obs
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
    assert set(adata.obs["cell_type"].iloc[pairs.a]) == {"Jurkat_stimulated", "Jurkat_unstimulated"}


# ---------------------------------------------------------------------------------------------
# THP-1: top-guide assignment, ambiguous cells removed, replicate kept, 299 genes
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def thp1_raw():
    return anndata.read_h5ad(REAL / f"{THP1}.h5ad")


@pytest.fixture(scope="module")
def thp1():
    return datasets.load(THP1)


def _target_share_by_hand(raw) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's top guide's target and that target's share of the guide UMIs, with pandas."""
    names = [str(n) for n in raw.uns["grna_names"]]
    counts = pd.DataFrame(raw.obsm["grna_counts"].toarray(), columns=names)
    gene = {n: ("control" if n.startswith("NTg") else re.sub(r"g\d+$", "", n)) for n in names}
    per_target = counts.T.groupby(gene).sum().T
    target = counts.idxmax(axis=1).map(gene).to_numpy()
    share = np.array([per_target.iloc[i][t] for i, t in enumerate(target)]) / counts.sum(axis=1).to_numpy()
    return target, share


def test_thp1_filter_removes_ambiguous_cells(thp1_raw, thp1):
    _assert_raw_schema(thp1)
    target, share = _target_share_by_hand(thp1_raw)
    assert (target == thp1_raw.obs["perturbation"].astype(str).to_numpy()).all()
    keep = share > 0.5
    record = thp1.uns["xtcdr"]["filters"]["ambiguous_guides"]
    assert record["threshold"] == 0.5 and record["n_removed"] == int((~keep).sum()) == 1011
    assert thp1.n_obs == int(keep.sum()) == 19718 and thp1.n_vars == 299
    assert list(thp1.obs_names) == list(thp1_raw.obs_names[keep])
    assert (thp1.obs["perturbation"].to_numpy() == target[keep]).all()
    np.testing.assert_allclose(thp1.obs["target_share"].to_numpy(), share[keep])
    assert (thp1.obs["guide"].to_numpy() == thp1_raw.obs["grna_max"].astype(str).to_numpy()[keep]).all()
    assert np.array_equal(thp1.X.toarray(), thp1_raw.X[keep].toarray())
    assert set(thp1.obs["cell_type"]) == {"THP-1"}
    assert thp1.obs["perturbation"].nunique() == 26                     # 25 targets + control


def test_thp1_replicate_kept(thp1_raw, thp1):
    keep = thp1_raw.obs_names.isin(thp1.obs_names)
    assert (thp1.obs["replicate"].to_numpy() == thp1_raw.obs["bio_rep"].astype(str).to_numpy()[keep]).all()
    assert set(thp1.obs["replicate"]) == {"rep_1", "rep_2", "rep_3"}


def test_target_share_on_a_hand_example():
    names = ["STAT1g1", "STAT1g2", "NTg1", "JAK2g1"]
    counts = np.array([[3, 3, 4, 0],     # top guide NTg1 (4 of 10), but STAT1 holds 6: share 0.4
                       [0, 0, 5, 0],     # a non-targeting guide alone: control, share 1
                       [1, 0, 0, 2],     # JAK2 2 of 3
                       [0, 0, 0, 0]])    # no guide UMI: share 0
    top, target, share = realdata.thp1_target_share(counts, names)
    assert list(top[:3]) == ["NTg1", "NTg1", "JAK2g1"]
    assert list(target[:3]) == ["control", "control", "JAK2"]
    np.testing.assert_allclose(share, [0.4, 1.0, 2 / 3, 0.0])


def test_thp1_preprocessing_keeps_all_299_genes_with_500_requested(thp1):
    adata = preprocess(thp1, n_top_genes=500, n_degs=50)
    _assert_preprocessed(adata, n_degs=50)
    assert adata.n_vars == 299 and adata.var["highly_variable"].all()
    assign_split(adata, seed=0)
    assert len(adata.uns["xtcdr"]["split"]["test_perturbations"]) == 5   # 20% of 25 genes
    pairs = training_pairs(adata, seed=0)
    _assert_valid_pairs(adata, pairs)
    train_perturbed = np.flatnonzero((adata.obs["split"] == "train").to_numpy()
                                     & ~adata.obs["is_control"].to_numpy())
    assert set(train_perturbed) == set(pairs.a) | set(pairs.b)
