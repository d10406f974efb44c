"""Preprocessing with scanpy: normalise, log1p, highly variable genes, top DEGs per condition.

The steps follow the authors' pipeline: library-size normalisation to 10,000 counts and
``log1p`` when ``X`` holds counts, the ``n_top_genes`` most variable genes (plus, for genetic
screens, the perturbed genes themselves, which the released code keeps beside the highly
variable ones), and for every perturbed condition its top ``n_degs`` differentially expressed
genes against the control cells of the same cell type (``scanpy.tl.rank_genes_groups``).

Note for evaluation: the DEGs of a held-out condition are computed from its own measured cells,
i.e. with the test ground truth. Every table that reports "DEG" metrics inherits this choice
(REFERENCE.md section 6); the evaluation module also reports all-gene metrics.
"""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import scanpy as sc
from scipy import sparse

__all__ = ["preprocess", "looks_like_counts", "check_counts"]

REQUIRED_OBS = ("cell_type", "perturbation", "is_control", "condition")


def _values(X) -> np.ndarray:
    return X.data if sparse.issparse(X) else np.asarray(X).ravel()


def looks_like_counts(X) -> bool:
    """True when every value of ``X`` is a finite non-negative integer."""
    v = _values(X)
    return bool(v.size == 0 or (np.all(v >= 0) and np.all(np.mod(v, 1) == 0)))


def check_counts(X) -> None:
    """Raise a ValueError naming the problem when ``X`` is not a valid count matrix."""
    v = _values(X)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"X holds {int((~np.isfinite(v)).sum())} non-finite values (NaN or inf); "
                         "remove or impute them before preprocessing.")
    n_neg = int((v < 0).sum())
    if n_neg:
        raise ValueError(f"X was declared to hold counts but has {n_neg} negative values "
                         f"(minimum {v.min():g}); pass is_counts=False if X is already "
                         "log-normalised, or give the raw counts.")
    n_frac = int((np.mod(v, 1) != 0).sum())
    if n_frac:
        raise ValueError(f"X was declared to hold counts but has {n_frac} non-integer values; "
                         "pass is_counts=False if X is already normalised, or give the raw counts.")


def _check_schema(adata: ad.AnnData) -> None:
    missing = [c for c in REQUIRED_OBS if c not in adata.obs]
    if missing:
        raise KeyError(f"obs is missing the standard column(s) {missing} (present: "
                       f"{list(adata.obs.columns)}); load the data with xtcdr.datasets.load or "
                       "xtcdr.datasets.from_anndata first.")
    if not adata.obs["is_control"].any():
        raise ValueError("no control cells (obs['is_control'] is all False); preprocessing "
                         "needs controls to rank DEGs against.")


def _perturbed_genes(adata: ad.AnnData, combo_sep: str = "+") -> list[str]:
    names = set()
    for p in adata.obs["perturbation"].astype(str).unique():
        if p != "control":
            names.update(p.split(combo_sep))
    return [g for g in adata.var_names if g in names]


def preprocess(adata: ad.AnnData, *, n_top_genes: int = 2000, n_degs: int = 50,
               is_counts: bool | str = "auto", keep_perturbed_genes: bool | str = "auto",
               deg_method: str = "t-test", target_sum: float = 1e4) -> ad.AnnData:
    """Normalise, select genes and rank DEGs; returns a new AnnData in the full schema.

    Parameters
    ----------
    adata
        AnnData in the standard obs schema (from ``xtcdr.datasets``). Not modified.
    n_top_genes
        Highly variable genes kept (all genes when the data has fewer).
    n_degs
        Top DEGs stored per perturbed condition.
    is_counts
        ``"auto"``: normalise + log1p when every value of X is a non-negative integer.
        ``True``: X must hold counts (checked; clear error otherwise). ``False``: X is used as is.
    keep_perturbed_genes
        Keep genes named by a perturbation beside the highly variable ones (``"auto"``: when
        any perturbation names a gene of ``var``, i.e. a genetic screen).
    deg_method
        Method of ``scanpy.tl.rank_genes_groups``.

    Sets
    ----
    ``X`` dense float32 log1p-normalised expression of the selected genes;
    ``layers['counts']`` raw counts (when X held counts); ``var['highly_variable']``,
    ``var['perturbed_gene']``; ``uns['top_degs']`` condition -> list of gene names;
    ``uns['xtcdr']['preprocess']`` the parameters.
    """
    _check_schema(adata)
    adata = adata.copy()
    X = adata.X
    v = _values(X)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"X holds {int((~np.isfinite(v)).sum())} non-finite values (NaN or inf); "
                         "remove or impute them before preprocessing.")
    if is_counts == "auto":
        is_counts = looks_like_counts(X)
    elif is_counts:
        check_counts(X)
    if is_counts:
        adata.layers["counts"] = sparse.csr_matrix(X, dtype=np.float32)
        adata.X = sparse.csr_matrix(X, dtype=np.float32)
        sc.pp.normalize_total(adata, target_sum=target_sum)
        sc.pp.log1p(adata)
        adata.uns.pop("log1p", None)

    # highly variable genes (+ perturbed genes for genetic screens)
    if keep_perturbed_genes == "auto":
        keep_perturbed_genes = bool(_perturbed_genes(adata))
    perturbed = set(_perturbed_genes(adata)) if keep_perturbed_genes else set()
    adata.var["perturbed_gene"] = adata.var_names.isin(list(perturbed))
    if adata.n_vars > n_top_genes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor="seurat")
        keep = adata.var["highly_variable"].to_numpy() | adata.var["perturbed_gene"].to_numpy()
    else:
        adata.var["highly_variable"] = True
        keep = np.ones(adata.n_vars, dtype=bool)
    adata.var = adata.var.drop(columns=["means", "dispersions", "dispersions_norm"], errors="ignore")
    adata = adata[:, keep].copy()
    adata.uns.pop("hvg", None)
    if sparse.issparse(adata.X):
        adata.X = adata.X.toarray()
    adata.X = np.ascontiguousarray(adata.X, dtype=np.float32)

    adata.uns["top_degs"] = top_degs(adata, n_degs=n_degs, method=deg_method)
    info = dict(adata.uns.get("xtcdr", {}))
    info["preprocess"] = {"n_top_genes": int(n_top_genes), "n_degs": int(n_degs),
                          "is_counts": bool(is_counts), "target_sum": float(target_sum),
                          "keep_perturbed_genes": bool(keep_perturbed_genes),
                          "deg_method": deg_method, "n_genes_kept": int(adata.n_vars)}
    adata.uns["xtcdr"] = info
    return adata


def top_degs(adata: ad.AnnData, *, n_degs: int = 50, method: str = "t-test") -> dict[str, list[str]]:
    """Top ``n_degs`` genes of each perturbed condition against same-cell-type controls.

    Genes are ranked by scanpy's score (two-sided, by absolute score so that down-regulated
    genes count too). Conditions with a single cell get no DEGs (scanpy needs two cells).
    """
    out: dict[str, list[str]] = {}
    n = min(n_degs, adata.n_vars)
    for ct in adata.obs["cell_type"].astype(str).unique():
        sub = adata[adata.obs["cell_type"].astype(str) == ct]
        sizes = sub.obs["perturbation"].astype(str).value_counts()
        if sizes.get("control", 0) < 2:
            warnings.warn(f"cell type {ct!r} has fewer than 2 control cells; no DEGs ranked there")
            continue
        groups = [g for g, s in sizes.items() if g != "control" and s >= 2]
        if not groups:
            continue
        sub = sub[sub.obs["perturbation"].astype(str).isin(groups + ["control"])].copy()
        sub.obs["perturbation"] = sub.obs["perturbation"].astype(str).astype("category")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.rank_genes_groups(sub, groupby="perturbation", groups=groups,
                                    reference="control", method=method, n_genes=sub.n_vars,
                                    key_added="_degs")
        res = sub.uns["_degs"]
        names = res["names"]
        scores = res["scores"]
        for g in groups:
            s = np.asarray(scores[g], dtype=float)
            order = np.argsort(-np.nan_to_num(np.abs(s), nan=-1.0), kind="stable")[:n]
            out[f"{ct}_{g}"] = [str(x) for x in np.asarray(names[g])[order]]
    return out
