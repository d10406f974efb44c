"""Preprocessing with scanpy: normalise, log1p, highly variable genes, top DEGs per condition.

The steps follow the authors' pipeline: library-size normalisation to 10,000 counts and
``log1p`` when ``X`` holds counts, the ``n_top_genes`` most variable genes (plus, for genetic
screens, the perturbed genes themselves, which the released code keeps beside the highly
variable ones), and for every perturbed condition its top ``n_degs`` differentially expressed
genes against the control cells of the same cell type (``scanpy.tl.rank_genes_groups``).

Normalisation and the gene selection give the results of scanpy's ``normalize_total`` +
``log1p`` and ``highly_variable_genes(flavor="seurat")`` but are computed over blocks of cells
(``_seurat_hvg``): scanpy copies and exponentiates the whole matrix, several GB at sci-Plex
scale (``tests/benchmarks/bench_prepare.py``). Only the kept genes are copied and normalised.

Note for evaluation: the DEGs of a held-out condition are computed from its own measured cells,
i.e. with the test ground truth. Every table that reports "DEG" metrics inherits this choice; the evaluation module also reports all-gene metrics.
"""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse

__all__ = ["preprocess", "looks_like_counts", "check_counts"]

REQUIRED_OBS = ("cell_type", "perturbation", "is_control", "condition")


_BLOCK_VALUES = 1 << 22   # values per block in element-wise checks (16 MB of float32)
_BLOCK_ROWS = 4096        # cells per block when streaming over the matrix


def _values(X) -> np.ndarray:
    return X.data if sparse.issparse(X) else np.asarray(X).ravel()


def _value_blocks(X):
    """The stored values of ``X`` in blocks, so that checks never allocate a full-size copy."""
    values = _values(X)
    for start in range(0, values.size, _BLOCK_VALUES):
        yield values[start:start + _BLOCK_VALUES]


def _count_bad(X, test) -> int:
    return sum(int(test(block).sum()) for block in _value_blocks(X))


def looks_like_counts(X) -> bool:
    """True when every value of ``X`` is a finite non-negative integer."""
    return all(bool(np.all(np.isfinite(b)) and np.all(b >= 0) and np.all(b == np.rint(b)))
               for b in _value_blocks(X))


def check_counts(X) -> None:
    """Raise a ValueError naming the problem when ``X`` is not a valid count matrix."""
    _check_finite(X)
    n_neg = _count_bad(X, lambda b: b < 0)
    if n_neg:
        minimum = min(float(b.min()) for b in _value_blocks(X) if b.size)
        raise ValueError(f"X was declared to hold counts but has {n_neg} negative values "
                         f"(minimum {minimum:g}); pass is_counts=False if X is already "
                         "log-normalised, or give the raw counts.")
    n_frac = _count_bad(X, lambda b: b != np.rint(b))
    if n_frac:
        raise ValueError(f"X was declared to hold counts but has {n_frac} non-integer values; "
                         "pass is_counts=False if X is already normalised, or give the raw counts.")


def _check_finite(X) -> None:
    n_bad = _count_bad(X, lambda b: ~np.isfinite(b))
    if n_bad:
        raise ValueError(f"X holds {n_bad} non-finite values (NaN or inf); "
                         "remove or impute them before preprocessing.")


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


def _log_normalise(counts, totals, target_sum: float) -> np.ndarray:
    """``log1p(counts / totals * target_sum)`` in float32, computed as scanpy's
    ``normalize_total`` + ``log1p`` do (cells with no counts stay 0)."""
    size_factor = np.where(totals > 0, totals / target_sum, 1.0)
    return np.log1p((counts / size_factor).astype(np.float32))


def _row_blocks(X):
    """``(start, block)`` over blocks of ``_BLOCK_ROWS`` cells; sparse blocks stay sparse."""
    for start in range(0, X.shape[0], _BLOCK_ROWS):
        block = X[start:start + _BLOCK_ROWS]
        yield start, (sparse.csr_matrix(block) if sparse.issparse(block) else np.asarray(block))


def _seurat_hvg(X, n_top_genes: int, *, totals=None, target_sum: float = 1e4,
                n_bins: int = 20) -> np.ndarray:
    """Highly variable genes, scanpy's ``flavor="seurat"`` (Satija et al. 2015), streamed.

    The same selection as ``scanpy.pp.highly_variable_genes(adata, flavor="seurat",
    n_top_genes=...)`` on the log-normalised matrix: per gene the mean and variance (ddof 1) of
    ``expm1(log X)``, the log dispersion ``log(var / mean)`` standardised within 20 bins of
    ``log1p(mean)`` (a gene alone in its bin gets 1), then the genes at or above the
    ``n_top_genes``-th highest standardised dispersion. scanpy first copies the whole matrix
    and exponentiates the copy; here the statistics are accumulated over blocks of cells, so
    the memory stays that of one block (at sci-Plex scale several GB less).
    ``totals`` given: ``X`` holds counts, log-normalised block by block with those totals.
    """
    n_cells, n_genes = X.shape
    sum1, sum2 = np.zeros(n_genes), np.zeros(n_genes)
    for start, block in _row_blocks(X):
        if sparse.issparse(block):                     # zeros stay zero: work on stored values
            values = block.data
            if totals is not None:
                values = _log_normalise(values, np.repeat(totals[start:start + block.shape[0]],
                                                          np.diff(block.indptr)), target_sum)
            y = np.expm1(values.astype(np.float32)).astype(np.float64)
            sum1 += np.bincount(block.indices, weights=y, minlength=n_genes)
            sum2 += np.bincount(block.indices, weights=y * y, minlength=n_genes)
        else:
            values = block
            if totals is not None:
                values = _log_normalise(block, totals[start:start + block.shape[0], None], target_sum)
            y = np.expm1(values.astype(np.float32)).astype(np.float64)
            sum1 += y.sum(0)
            sum2 += (y * y).sum(0)
    mean = sum1 / n_cells
    var = (sum2 / n_cells - mean ** 2) * (n_cells / (n_cells - 1))
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        dispersion = np.log(dispersion)
    mean = np.log1p(mean)
    frame = pd.DataFrame({"dispersion": dispersion, "bin": pd.cut(mean, bins=n_bins)})
    stats = frame.groupby("bin", observed=True)["dispersion"].agg(avg="mean", dev="std")
    alone = stats["dev"].isnull()                      # one gene in the bin: normalised to 1
    stats.loc[alone, "dev"] = stats.loc[alone, "avg"]
    stats.loc[alone, "avg"] = 0
    per_gene = stats.loc[frame["bin"]]
    normalised = (dispersion - per_gene["avg"].to_numpy()) / per_gene["dev"].to_numpy()
    ranked = np.sort(normalised[~np.isnan(normalised)])[::-1]
    cutoff = ranked[min(n_top_genes, ranked.size) - 1]
    return np.nan_to_num(normalised, nan=-np.inf) >= cutoff


def _cell_totals(X) -> np.ndarray:
    return np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()


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

    Notes
    -----
    Memory: the full matrix is never copied. Library sizes and the highly-variable-gene
    statistics are streamed over blocks of cells (``_seurat_hvg``, the same selection as
    scanpy's ``flavor="seurat"``); only the kept genes are copied and normalised.
    """
    _check_schema(adata)
    X = adata.X
    _check_finite(X)
    if is_counts == "auto":
        is_counts = looks_like_counts(X)
    elif is_counts:
        check_counts(X)
    is_counts = bool(is_counts)
    totals = _cell_totals(X) if is_counts else None

    # highly variable genes (+ perturbed genes for genetic screens)
    if keep_perturbed_genes == "auto":
        keep_perturbed_genes = bool(_perturbed_genes(adata))
    perturbed = adata.var_names.isin(_perturbed_genes(adata) if keep_perturbed_genes else [])
    if adata.n_vars > n_top_genes:
        highly_variable = _seurat_hvg(X, n_top_genes, totals=totals, target_sum=target_sum)
    else:
        highly_variable = np.ones(adata.n_vars, dtype=bool)
    keep = highly_variable | perturbed

    adata = adata[:, keep].copy()        # the input's values of the kept genes; input untouched
    adata.var["perturbed_gene"] = perturbed[keep]
    adata.var["highly_variable"] = highly_variable[keep]
    if is_counts:
        counts = sparse.csr_matrix(adata.X, dtype=np.float32)
        log_x = np.empty(adata.shape, dtype=np.float32)
        for start, block in _row_blocks(counts):
            dense = block.toarray() if sparse.issparse(block) else block
            log_x[start:start + dense.shape[0]] = _log_normalise(
                dense, totals[start:start + dense.shape[0], None], target_sum)
        adata.layers["counts"] = counts
        adata.X = log_x
    else:
        dense = adata.X.toarray() if sparse.issparse(adata.X) else adata.X
        adata.X = np.ascontiguousarray(dense, dtype=np.float32)

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
