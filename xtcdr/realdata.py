"""The two small real screens shipped with the repository in ``data/real/``.

They are read from the repository folder (:data:`DATA_DIR`), never downloaded and never taken
from the download cache; the sha256 of each file is checked on every load. Their licences,
citations and checksums are in ``data/real/README.md``. `xtcdr.datasets.load` dispatches here:

- ``datlinger2021_jurkat`` (Datlinger et al. 2021, scifi-RNA-seq CRISPR screen): Jurkat T cells,
  knockouts of 20 T-cell-receptor pathway genes (two guides each, ``GENE_1`` / ``GENE_2``, one
  guide per plate well) and control cells, each with or without TCR stimulation. The two guides
  of a gene are pooled to their target (``LCK_1``, ``LCK_2`` -> ``LCK``; the guide is kept in
  ``obs['guide']``, the well in ``obs['well']``); the context is the stimulation state:
  ``cell_type`` is ``Jurkat_stimulated`` or ``Jurkat_unstimulated``. No cell filter.
- ``papalexi2021_thp1`` (Papalexi et al. 2021, ECCITE-seq): THP-1 cells, knockouts of 25 genes
  and non-targeting controls, three biological replicates (``obs['replicate']``), 299 genes.
  A cell's perturbation is the target of its guide with most UMIs (``obs['guide']``); cells whose
  assigned target holds at most half of their guide UMIs are removed as ambiguous
  (:data:`MIN_TARGET_SHARE`, see :func:`thp1_target_share`). One context, ``THP-1``.

Each loader records in ``uns['xtcdr']['filters']`` how many cells each filter removed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .schema import CONTROL, standardize, validate_schema

__all__ = ["DATA_DIR", "MIN_TARGET_SHARE", "file_sha256", "shipped_path", "load_shipped",
           "thp1_target_share"]

# The repository's folder of shipped data (not the download cache of $XTCDR_DATA).
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "real"

# THP-1: a cell is kept when its assigned target holds more than this share of its guide UMIs.
# Chosen from the distribution of the share (histogram in data/real/README.md): a main mode at 0.9
# or more (64% of cells) and a long tail with no valley; per 0.025-wide bin the tail holds 65-136
# cells below 0.5 and 170-313 from 0.525 to 0.7. Above 0.5 the assigned target outweighs all other
# guides together, so the assignment is unambiguous. Removes 1,011 of the 20,729 cells (4.9%;
# 144 of them sit exactly at 0.5, a tie between the assigned target and the other guides).
MIN_TARGET_SHARE = 0.5


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_path(info) -> Path:
    """The verified path of a shipped dataset's file (``info``: its `xtcdr.datasets.DatasetInfo`).

    Raises
    ------
    FileNotFoundError
        When the file is missing from ``data/real/``.
    ValueError
        When its sha256 differs from the registered one (a corrupt or changed copy).
    """
    path = Path(DATA_DIR) / info.filename
    restore = f"restore it from git: git checkout -- data/real/{info.filename}"
    if not path.exists():
        raise FileNotFoundError(
            f"Dataset {info.name!r}: the shipped file {path} is missing. It is part of the "
            f"repository and never downloaded; {restore}.")
    digest = file_sha256(path)
    if digest != info.sha256:
        raise ValueError(
            f"Dataset {info.name!r}: the shipped file {path} has sha256 {digest}, but the "
            f"registered sha256 is {info.sha256}; the file is corrupt or was changed. Do not "
            f"use it: {restore}.")
    return path


def load_shipped(info) -> AnnData:
    """Read a shipped dataset (after checking its sha256) and convert it to the standard schema.

    Returns raw counts in ``X``, the standard obs columns plus the dataset's own (see the module
    docstring), and ``uns['xtcdr']`` with the source, citation, licence file, ``checksum``,
    ``filters`` (filter name -> rule and number of cells removed) and the cell counts.
    """
    import anndata

    path = shipped_path(info)
    raw = anndata.read_h5ad(path)
    convert = _CONVERTERS.get(info.name)
    if convert is None:
        raise ValueError(f"no converter for the shipped dataset {info.name!r}; known: "
                         f"{sorted(_CONVERTERS)}")
    source = f"{info.citation} Shipped file data/real/{info.filename}, from {info.origin}."
    adata, notes = convert(raw, source)
    adata.uns["xtcdr"].update(
        dataset=info.name, kind=info.kind, shipped=True, file=f"data/real/{info.filename}",
        checksum=f"sha256:{info.sha256}", citation=info.citation, origin=info.origin,
        licence=f"data/real/{info.licence_file}", n_cells_source=int(raw.n_obs),
        n_cells_kept=int(adata.n_obs), **notes)
    validate_schema(adata)
    return adata


# ---------------------------------------------------------------------------------------------
# Jurkat (scPerturb obs schema)
# ---------------------------------------------------------------------------------------------

def _jurkat(raw: AnnData, source: str) -> tuple[AnnData, dict]:
    """Guides pooled to their target gene, stimulation state as the context."""
    obs = raw.obs
    guide = obs["perturbation"].astype(str).str.strip()
    target = guide.str.replace(r"_\d+$", "", regex=True)
    if "target_gene" in obs:  # the file's own mapping of guides to genes must agree
        listed = obs["target_gene"].astype(str).str.strip()
        wrong = sorted(set(guide[listed != target]))
        if wrong:
            raise ValueError(f"datlinger2021_jurkat: guides {wrong[:5]} do not map to their "
                             f"target_gene by dropping the '_<number>' suffix; the shipped file "
                             f"changed, restore it from git.")
    state = obs["perturbation_2"].astype(str).str.strip()
    if not set(state) <= {"stimulated", "unstimulated"}:
        raise ValueError(f"datlinger2021_jurkat: unexpected stimulation states "
                         f"{sorted(set(state))} in obs['perturbation_2'].")
    frame = pd.DataFrame({"target": target, "context": "Jurkat_" + state}, index=obs.index)
    adata = standardize(AnnData(X=raw.X, obs=frame, var=raw.var), perturbation_key="target",
                        cell_type_key="context", control_value=CONTROL, dose_key=None,
                        combo_sep=None, source=source, copy=False)
    adata.obs["guide"] = guide.to_numpy(dtype=object)
    adata.obs["well"] = obs["sample"].astype(str).to_numpy(dtype=object)
    notes = dict(
        guides_pooled="the two guides of a gene (GENE_1, GENE_2) pooled to the gene; the guide "
                      "is in obs['guide']",
        context="cell_type = 'Jurkat_' + the TCR stimulation state (source obs perturbation_2)",
        cell_filter="none: every cell of the source holds at least 1,001 UMIs over its whole "
                    "transcriptome (source obs ncounts), and the totals over the shipped genes "
                    "are unimodal on a log scale with no separate low-count group",
        filters={})
    return adata, notes


# ---------------------------------------------------------------------------------------------
# THP-1 (sceptredata low-MOI example)
# ---------------------------------------------------------------------------------------------

def _guide_target(guide: str) -> str:
    """'STAT1g2' -> 'STAT1'; the non-targeting guides 'NTg<k>' -> 'control'."""
    target = re.sub(r"g\d+$", "", guide)
    return CONTROL if target == "NT" else target


def thp1_target_share(guide_counts, guide_names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign each cell to the target of its guide with most UMIs and measure how clear that is.

    Parameters
    ----------
    guide_counts
        Cells x guides UMI counts (``obsm['grna_counts']`` of the shipped file).
    guide_names
        The guide names, ``<TARGET>g<k>`` (``NTg<k>`` for non-targeting guides).

    Returns
    -------
    ``(top_guide, target, share)``: the name of each cell's guide with most UMIs, its target
    (``'control'`` for non-targeting), and the share of the cell's guide UMIs that come from
    guides of that target (0 for a cell without guide UMIs).
    """
    counts = sp.csr_matrix(guide_counts, dtype=np.float64)
    names = np.asarray(guide_names).astype(str)
    if counts.shape[1] != names.size:
        raise ValueError(f"{counts.shape[1]} guide count columns but {names.size} guide names")
    guide_target = np.array([_guide_target(n) for n in names])
    targets, column_of = np.unique(guide_target, return_inverse=True)
    # guides x targets indicator: per-cell UMIs of each target's guides summed
    indicator = sp.csr_matrix((np.ones(names.size), (np.arange(names.size), column_of)),
                              shape=(names.size, targets.size))
    per_target = np.asarray((counts @ indicator).todense())
    top = np.asarray(counts.argmax(axis=1)).ravel()
    assigned = column_of[top]
    total = np.asarray(counts.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, per_target[np.arange(top.size), assigned] / total, 0.0)
    return names[top], targets[assigned], share


def _thp1(raw: AnnData, source: str) -> tuple[AnnData, dict]:
    """Top-guide assignment, ambiguous cells removed, replicate kept."""
    top_guide, target, share = thp1_target_share(raw.obsm["grna_counts"], raw.uns["grna_names"])
    in_file = raw.obs["perturbation"].astype(str).to_numpy()
    if not np.array_equal(target, in_file):
        raise ValueError(f"papalexi2021_thp1: the top-guide targets differ from obs['perturbation'] "
                         f"in {int((target != in_file).sum())} cells; the shipped file changed, "
                         f"restore it from git.")
    keep = share > MIN_TARGET_SHARE
    kept = raw[keep]
    frame = pd.DataFrame({"perturbation": target[keep],
                          "cell_line": kept.obs["cell_line"].astype(str).to_numpy()},
                         index=kept.obs_names)
    adata = standardize(AnnData(X=kept.X, obs=frame, var=raw.var), perturbation_key="perturbation",
                        cell_type_key="cell_line", control_value=CONTROL, dose_key=None,
                        combo_sep=None, source=source, copy=True)
    adata.obs["replicate"] = kept.obs["bio_rep"].astype(str).to_numpy(dtype=object)
    adata.obs["guide"] = top_guide[keep].astype(object)
    adata.obs["target_share"] = share[keep]
    adata.obs["guide_umis"] = np.asarray(kept.obsm["grna_counts"].sum(axis=1)).ravel()
    adata.obsm["guide_counts"] = sp.csr_matrix(kept.obsm["grna_counts"])
    notes = dict(
        assignment="perturbation = target of the cell's guide with most UMIs (obs['guide']); "
                   "all guide counts in obsm['guide_counts'], columns in uns['xtcdr']['guide_names']",
        guide_names=[str(n) for n in np.asarray(raw.uns["grna_names"])],
        source_min_top_guide_umis=int(raw.obs["grna_max_umi"].min()),
        cell_filter=f"cells whose assigned target holds more than {MIN_TARGET_SHARE} of their "
                    f"guide UMIs (obs['target_share'])",
        filters={"ambiguous_guides": {
            "rule": f"target_share <= {MIN_TARGET_SHARE}: the assigned target holds at most half "
                    f"of the cell's guide UMIs",
            "threshold": float(MIN_TARGET_SHARE), "n_removed": int((~keep).sum())}})
    return adata, notes


_CONVERTERS = {"datlinger2021_jurkat": _jurkat, "papalexi2021_thp1": _thp1}
