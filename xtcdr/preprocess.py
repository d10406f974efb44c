"""Preprocessing: normalise, log1p, highly variable genes, DEGs per condition (the paper's rule).

The steps follow the authors' pipeline: library-size normalisation to 10,000 counts and
``log1p`` when ``X`` holds counts, the ``n_top_genes`` most variable genes (plus, for genetic
screens, the perturbed genes themselves, which the released code keeps beside the highly
variable ones), and for every perturbed condition its differentially expressed genes against
the control cells of the same cell type: the paper's rule, the top ``n_degs`` by Welch t-score
among genes with ``log2 |fold change| >= 1`` (the statistics of ``scanpy.tl.rank_genes_groups``
with ``method="t-test"``, computed here per condition in a few vectorised lines).

Normalisation and the gene selection give the results of scanpy's ``normalize_total`` +
``log1p`` and ``highly_variable_genes(flavor="seurat")`` but are computed over blocks of cells
(``_seurat_hvg``): scanpy copies and exponentiates the whole matrix, several GB at sci-Plex
scale (``tests/benchmarks/bench_prepare.py``). Only the kept genes are copied and normalised.

Note for evaluation: the DEGs of a held-out condition are computed from its own measured cells,
i.e. with the test ground truth, as in the paper. Where part of a condition's cells is read as
input (the within-context reading), `xtcdr.evaluate` recomputes the DEGs from the scored cells
alone with the same rule, so the input never chooses the genes it is scored on.
"""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from . import memory

__all__ = ["preprocess", "looks_like_counts", "check_counts", "top_degs", "deg_statistics",
           "select_degs", "DEG_RULES"]

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
                n_bins: int = 20, rows=None) -> np.ndarray:
    """Highly variable genes, scanpy's ``flavor="seurat"`` (Satija et al. 2015), streamed.

    The same selection as ``scanpy.pp.highly_variable_genes(adata, flavor="seurat",
    n_top_genes=...)`` on the log-normalised matrix: per gene the mean and variance (ddof 1) of
    ``expm1(log X)``, the log dispersion ``log(var / mean)`` standardised within 20 bins of
    ``log1p(mean)`` (a gene alone in its bin gets 1), then the genes at or above the
    ``n_top_genes``-th highest standardised dispersion. scanpy first copies the whole matrix
    and exponentiates the copy; here the statistics are accumulated over blocks of cells, so
    the memory stays that of one block (at sci-Plex scale several GB less).
    ``totals`` given: ``X`` holds counts, log-normalised block by block with those totals.
    ``rows`` (boolean mask) given: only those cells count.
    """
    n_cells, n_genes = X.shape
    if rows is not None:
        rows = np.asarray(rows, dtype=bool)
        n_cells = int(rows.sum())
        if n_cells < 2:
            raise ValueError("fewer than 2 cells left for the highly-variable-gene statistics; "
                             "exclude fewer perturbations (hvg_exclude).")
    sum1, sum2 = np.zeros(n_genes), np.zeros(n_genes)
    for start, block in _row_blocks(X):
        if rows is not None:
            keep = rows[start:start + block.shape[0]]
            block_totals = None if totals is None else totals[start:start + block.shape[0]][keep]
            block = block[keep]
        else:
            block_totals = None if totals is None else totals[start:start + block.shape[0]]
        if sparse.issparse(block):                     # zeros stay zero: work on stored values
            values = block.data
            if totals is not None:
                values = _log_normalise(values, np.repeat(block_totals, np.diff(block.indptr)),
                                        target_sum)
            y = np.expm1(values.astype(np.float32)).astype(np.float64)
            sum1 += np.bincount(block.indices, weights=y, minlength=n_genes)
            sum2 += np.bincount(block.indices, weights=y * y, minlength=n_genes)
        else:
            values = block
            if totals is not None:
                values = _log_normalise(block, block_totals[:, None], target_sum)
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
               min_log2fc: float = 1.0, deg_rule: str = "fold_change",
               is_counts: bool | str = "auto", keep_perturbed_genes: bool | str = "auto",
               hvg_exclude=None, target_sum: float = 1e4) -> ad.AnnData:
    """Normalise, select genes and rank DEGs; returns a new AnnData in the full schema.

    Parameters
    ----------
    adata
        AnnData in the standard obs schema (from ``xtcdr.datasets``). Not modified.
    n_top_genes
        Highly variable genes kept (all genes when the data has fewer).
    n_degs, min_log2fc, deg_rule
        DEGs stored per perturbed condition (`top_degs`): by default the paper's rule, the top
        ``n_degs`` by t-score among genes with ``|log2 fc| >= min_log2fc`` against the controls
        of the same cell type (fewer when fewer pass); ``deg_rule="score"`` drops the fold-change
        filter. The other rule's lists are stored too, for comparison.
    is_counts
        ``"auto"``: normalise + log1p when every value of X is an integer (an integer matrix with
        a negative value is refused: counts cannot be negative). ``True``: X must hold counts
        (checked; clear error otherwise). ``False``: X is already normalised and used as is.
    hvg_exclude
        Perturbations whose cells are left out of the highly-variable-gene statistics (for
        example the held-out ones, so that gene selection never sees test cells). ``None``: every
        cell counts, as in the authors' code.
    keep_perturbed_genes
        Keep genes named by a perturbation beside the highly variable ones (``"auto"``: when
        any perturbation names a gene of ``var``, i.e. a genetic screen).

    Sets
    ----
    ``X`` dense float32 log1p-normalised expression of the selected genes;
    ``layers['counts']`` raw counts (when X held counts); ``var['highly_variable']``,
    ``var['perturbed_gene']``; ``uns['top_degs']`` condition -> list of gene names (rule
    ``deg_rule``); ``uns['top_degs_fold_change']`` and ``uns['top_degs_score']`` the lists of both
    rules; ``uns['xtcdr']['preprocess']`` the parameters, with ``n_degs_per_condition``.

    Notes
    -----
    Memory: the full matrix is never copied. Library sizes and the highly-variable-gene
    statistics are streamed over blocks of cells (``_seurat_hvg``, the same selection as
    scanpy's ``flavor="seurat"``); only the kept genes are copied and normalised. When the
    dense matrix of the kept genes does not fit in the available memory,
    ``xtcdr.memory.InsufficientMemoryError`` says so before it is allocated.
    """
    _check_schema(adata)
    X = adata.X
    _check_finite(X)
    if deg_rule not in DEG_RULES:
        raise ValueError(f"unknown deg_rule {deg_rule!r}; valid: {list(DEG_RULES)}")
    if is_counts == "auto":
        is_counts = looks_like_counts(X)
        if not is_counts and _count_bad(X, lambda b: b != np.rint(b)) == 0:
            n_neg = _count_bad(X, lambda b: b < 0)
            minimum = min(float(b.min()) for b in _value_blocks(X) if b.size)
            raise ValueError(f"X holds only integers, like a count matrix, but {n_neg} of them are "
                             f"negative (minimum {minimum:g}); counts cannot be negative. Fix the "
                             "counts, or pass is_counts=False if X is already normalised.")
    elif is_counts:
        check_counts(X)
    is_counts = bool(is_counts)
    totals = _cell_totals(X) if is_counts else None

    # highly variable genes (+ perturbed genes for genetic screens)
    if keep_perturbed_genes == "auto":
        keep_perturbed_genes = bool(_perturbed_genes(adata))
    perturbed = adata.var_names.isin(_perturbed_genes(adata) if keep_perturbed_genes else [])
    hvg_rows = None
    if hvg_exclude is not None:
        excluded = adata.obs["perturbation"].astype(str).isin([str(p) for p in hvg_exclude]).to_numpy()
        hvg_rows = ~excluded
    if adata.n_vars > n_top_genes:
        highly_variable = _seurat_hvg(X, n_top_genes, totals=totals, target_sum=target_sum,
                                      rows=hvg_rows)
    else:
        highly_variable = np.ones(adata.n_vars, dtype=bool)
    keep = highly_variable | perturbed
    n_kept = int(keep.sum())
    memory.require(
        adata.n_obs * n_kept * 4,
        f"The dense float32 expression matrix of {adata.n_obs:,} cells x {n_kept:,} genes "
        "(preprocess; training uses the same matrix)",
        "Keep fewer genes (n_top_genes, or DataConfig.n_top_genes of the profile), fewer cells "
        "(a cell filter or a subsample), or use a machine with more memory.")

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

    for rule, lists in _deg_lists(adata, n_degs=n_degs, min_log2fc=min_log2fc).items():
        adata.uns[f"top_degs_{rule}"] = lists
    adata.uns["top_degs"] = adata.uns[f"top_degs_{deg_rule}"]
    info = dict(adata.uns.get("xtcdr", {}))
    info["preprocess"] = {"n_top_genes": int(n_top_genes), "n_degs": int(n_degs),
                          "min_log2fc": float(min_log2fc), "deg_rule": deg_rule,
                          "deg_test": "Welch t-test against the controls of the same cell type",
                          "n_degs_per_condition": {c: len(g) for c, g in adata.uns["top_degs"].items()},
                          "is_counts": bool(is_counts), "target_sum": float(target_sum),
                          "keep_perturbed_genes": bool(keep_perturbed_genes),
                          "hvg_cells": ("all" if hvg_exclude is None else
                                        f"all but the cells of {len(list(hvg_exclude))} excluded perturbation(s)"),
                          "hvg_exclude": sorted(str(p) for p in hvg_exclude) if hvg_exclude is not None else [],
                          "n_genes_kept": int(adata.n_vars)}
    adata.uns["xtcdr"] = info
    return adata


DEG_RULES = ("fold_change", "score")


def deg_statistics(X, group_rows, control_rows) -> tuple[np.ndarray, np.ndarray]:
    """Welch t-scores and log2 fold changes of one group of cells against controls, per gene.

    The same numbers as ``scanpy.tl.rank_genes_groups(method="t-test", reference="control")``:
    the score is Welch's t statistic with variances of ddof 1 (NaN, i.e. two constant groups, set
    to 0), the log2 fold change is ``log2((expm1(mean_g) + 1e-9) / (expm1(mean_c) + 1e-9))`` of
    the mean log1p expressions. ``X`` is log1p-normalised (dense or sparse).
    """
    return _welch(_mean_var(X, group_rows), _mean_var(X, control_rows))


def _mean_var(X, rows) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-gene mean, variance (ddof 1) and number of the cells ``rows`` of ``X``."""
    block = X[np.asarray(rows)]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    block = block.astype(np.float64, copy=False)
    return block.mean(0), block.var(0, ddof=1), block.shape[0]


def _welch(group, control) -> tuple[np.ndarray, np.ndarray]:
    """`deg_statistics` from the `_mean_var` of the group and of the controls."""
    (mean_g, var_g, n_g), (mean_c, var_c, n_c) = group, control
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (mean_g - mean_c) / np.sqrt(var_g / n_g + var_c / n_c)
    scores[np.isnan(scores)] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):   # NaN (X not log1p) never passes a rule
        log2fc = np.log2((np.expm1(mean_g) + 1e-9) / (np.expm1(mean_c) + 1e-9))
    return scores, log2fc


def select_degs(scores, log2fc, *, n_degs: int = 50, min_log2fc: float = 1.0,
                rule: str = "fold_change") -> np.ndarray:
    """Positions of the DEGs: the ``n_degs`` largest ``|score|``, ties in gene order.

    ``rule="fold_change"`` (the paper: "log2 |fc| >= 1"): only genes with ``|log2fc| >=
    min_log2fc`` are eligible, so fewer than ``n_degs`` come back when fewer pass.
    ``rule="score"``: every gene is eligible (top ``n_degs`` by t-score alone).
    """
    if rule not in DEG_RULES:
        raise ValueError(f"unknown DEG rule {rule!r}; valid: {list(DEG_RULES)}")
    scores = np.abs(np.asarray(scores, dtype=np.float64))
    order = np.argsort(-scores, kind="stable")
    if rule == "fold_change":
        order = order[np.abs(np.asarray(log2fc))[order] >= min_log2fc]
    return order[:n_degs]


def top_degs(adata: ad.AnnData, *, n_degs: int = 50, min_log2fc: float = 1.0,
             rule: str = "fold_change") -> dict[str, list[str]]:
    """The DEGs of each perturbed condition against the controls of its cell type.

    ``rule="fold_change"`` (default, the paper's): the top ``n_degs`` genes by absolute Welch
    t-score among those with ``|log2 fold change| >= min_log2fc``; fewer when fewer pass, none
    when none pass. ``rule="score"``: the top ``n_degs`` by absolute t-score alone. Statistics
    are those of `deg_statistics` (scanpy's t-test). Conditions with a single cell, and cell
    types with fewer than two controls, get no entry.
    """
    return _deg_lists(adata, n_degs=n_degs, min_log2fc=min_log2fc, rules=(rule,))[rule]


def _deg_lists(adata: ad.AnnData, *, n_degs: int, min_log2fc: float,
               rules=DEG_RULES) -> dict[str, dict[str, list[str]]]:
    """`top_degs` of several rules at once: rule -> condition -> gene names.

    The statistics of each condition are computed once for all rules, and those of the
    controls once per cell type.
    """
    unknown = [r for r in rules if r not in DEG_RULES]
    if unknown:
        raise ValueError(f"unknown DEG rule {unknown[0]!r}; valid: {list(DEG_RULES)}")
    out: dict[str, dict[str, list[str]]] = {rule: {} for rule in rules}
    names = np.asarray(adata.var_names).astype(str)
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    perturbation = adata.obs["perturbation"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    for ct in pd.unique(cell_type):
        here = cell_type == ct
        controls = np.flatnonzero(here & control)
        if controls.size < 2:
            warnings.warn(f"cell type {ct!r} has fewer than 2 control cells; no DEGs ranked there")
            continue
        control_stats = _mean_var(adata.X, controls)
        for pert in sorted(set(perturbation[here & ~control])):
            rows = np.flatnonzero(here & ~control & (perturbation == pert))
            if rows.size < 2:
                continue
            scores, log2fc = _welch(_mean_var(adata.X, rows), control_stats)
            for rule in rules:
                picked = select_degs(scores, log2fc, n_degs=n_degs, min_log2fc=min_log2fc,
                                     rule=rule)
                out[rule][f"{ct}_{pert}"] = [str(g) for g in names[picked]]
    return out
