"""The standard obs schema: conversion of any AnnData to it (:func:`from_anndata`) and its check
(:func:`validate_schema`).

Every dataset of xtcdr, named (`xtcdr.datasets.load`) or brought by a user, reaches the model in
this schema: raw counts (or what the source holds) in ``X`` and the obs columns ``cell_type``,
``perturbation`` (``'control'`` for unperturbed cells, combinations joined with ``'+'``),
``dose``, ``is_control`` and ``condition`` (cell_type + ``'_'`` + perturbation).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.utils import make_index_unique

__all__ = ["STANDARD_COLUMNS", "CONTROL", "from_anndata", "standardize", "validate_schema",
           "require_columns", "package_version"]

STANDARD_COLUMNS = ("cell_type", "perturbation", "dose", "is_control", "condition")
CONTROL = "control"
# Component labels that mean "no perturbation" inside a combination such as 'FOSB_ctrl'.
_CONTROL_WORDS = frozenset({"", "control", "ctrl"})


def from_anndata(adata: AnnData, *, perturbation_key: str, cell_type_key: str | None = None,
                 control_value: str = CONTROL, dose_key: str | None = None,
                 combo_sep: str | None = "+", source: str = "user AnnData") -> AnnData:
    """Return a new AnnData in the standard schema; ``adata`` is left untouched.

    Parameters
    ----------
    adata
        Cells x genes; ``X`` is kept as given (dense becomes float32, sparse stays sparse).
    perturbation_key
        obs column with the perturbation of each cell.
    cell_type_key
        obs column with the cellular context; without it every cell is in context ``"all"``.
    control_value
        Label of unperturbed cells in ``perturbation_key``.
    dose_key
        obs column with doses (numeric or numeric strings); without it ``dose`` is NaN.
    combo_sep
        Separator of combinations in the labels (``'_'`` for scPerturb's Norman file); each
        component is stripped, empty/'control'/'ctrl' components are dropped and the rest joined
        with ``'+'``. ``None`` keeps labels whole (single perturbations only); a '+' inside a
        name then becomes 'plus' ('(+)-JQ1' -> '(plus)-JQ1'), since '+' marks combinations.
    source
        Free text stored in ``uns['xtcdr']['source']``.

    Returns
    -------
    AnnData with var names made unique and obs holding only ``cell_type``, ``perturbation``
    (``'control'`` for controls), ``dose``, ``is_control``, ``condition`` (cell_type + '_' +
    perturbation) and ``perturbation_raw`` (the original label); ``uns['xtcdr']`` records the
    parameters.
    """
    return standardize(adata, perturbation_key=perturbation_key, cell_type_key=cell_type_key,
                       control_value=control_value, dose_key=dose_key, combo_sep=combo_sep,
                       source=source, copy=True)


def standardize(adata: AnnData, *, perturbation_key, cell_type_key, control_value, dose_key,
                combo_sep, source, copy) -> AnnData:
    """:func:`from_anndata` with a choice: ``copy=False`` lets the result share ``X``."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
                         f"pass a dataset with at least one cell and one gene.")
    require_columns(adata, [k for k in (perturbation_key, cell_type_key, dose_key) if k])
    obs = adata.obs
    raw = _labels(obs, perturbation_key)
    if not (raw == control_value).any():
        top = raw.value_counts().head(10)
        listing = ", ".join(f"{value!r} ({count})" for value, count in top.items())
        raise ValueError(
            f"Control label {control_value!r} not found in obs[{perturbation_key!r}]. Most "
            f"frequent values: {listing}. Pass the label of unperturbed cells as control_value=.")
    perturbation, renamed = _normalise_perturbations(raw, control_value, combo_sep)
    cell_type = _labels(obs, cell_type_key) if cell_type_key else pd.Series("all", index=obs.index)
    dose = (pd.to_numeric(obs[dose_key].astype(str).str.strip(), errors="coerce").astype(float)
            if dose_key else pd.Series(np.nan, index=obs.index))

    X = _checked_matrix(adata.X, copy)
    new_obs = pd.DataFrame({
        "cell_type": cell_type.to_numpy(dtype=object),
        "perturbation": perturbation.to_numpy(dtype=object),
        "dose": dose.to_numpy(dtype=float),
        "is_control": (perturbation == CONTROL).to_numpy(),
        "condition": (cell_type + "_" + perturbation).to_numpy(dtype=object),
        "perturbation_raw": raw.to_numpy(dtype=object),
    }, index=pd.Index(obs.index.astype(str), name=obs.index.name))
    var = adata.var.copy()
    var.index = make_index_unique(var.index.astype(str))
    out = AnnData(X=X, obs=new_obs, var=var)
    if not out.obs_names.is_unique:
        out.obs_names_make_unique()
    out.uns["xtcdr"] = dict(
        source=source, perturbation_key=perturbation_key, cell_type_key=cell_type_key,
        control_value=control_value, dose_key=dose_key, combo_sep=combo_sep,
        version=package_version())
    if renamed:
        out.uns["xtcdr"]["renamed_perturbations"] = renamed
    return out


def _labels(obs: pd.DataFrame, key: str) -> pd.Series:
    """An obs column as stripped strings; missing labels are an error."""
    column = obs[key]
    missing = int(column.isna().sum())
    if missing:
        raise ValueError(f"obs[{key!r}] has {missing} missing values (NaN); label them or drop "
                         f"those cells first, e.g. adata[adata.obs[{key!r}].notna()].")
    return column.astype(str).str.strip()


def _normalise_perturbations(raw: pd.Series, control_value: str, combo_sep: str | None
                             ) -> tuple[pd.Series, dict[str, str]]:
    """Map control_value to 'control' and re-join combinations with '+', in first-seen order.

    Combinations that list the same components in another order ('B_A' after 'A_B') get the
    name seen first, so they form one condition. '+' means "combination" downstream, so a '+'
    inside one name (drug '(+)-JQ1' when ``combo_sep`` is not '+') becomes 'plus'
    ('(plus)-JQ1'); the renamed labels are returned beside the result.
    """
    renamed: dict[str, str] = {}
    first_seen: dict[frozenset, str] = {}
    mapping: dict[str, str] = {}
    for label in pd.unique(raw):
        if label == control_value:
            mapping[label] = CONTROL
            continue
        parts = [label] if combo_sep is None else label.split(combo_sep)
        parts = [p.strip() for p in parts]
        if any("+" in p for p in parts):
            parts = [p.replace("+", "plus") for p in parts]
            renamed[label] = "+".join(parts)
        parts = [p for p in dict.fromkeys(parts) if p.lower() not in _CONTROL_WORDS
                 and p != control_value]
        if not parts:
            mapping[label] = CONTROL
            continue
        mapping[label] = first_seen.setdefault(frozenset(parts), "+".join(parts))
    return raw.map(mapping), renamed


def _checked_matrix(X, copy: bool):
    """X as float32 if dense, sparse as is; refuse NaN/inf."""
    if sp.issparse(X):
        X = X.copy() if copy else X
        scipy_class = next(c for c in type(X).__mro__ if c.__module__.startswith("scipy"))
        if type(X) is not scipy_class:  # an anndata view class: plain scipy, same arrays
            X = scipy_class(X, copy=False)
        values = X.data
    else:
        X = np.asarray(X)
        X = X.astype(np.float32, copy=copy) if X.dtype.kind in "fiub" else X
        values = X
    if values.dtype.kind == "f":
        n_bad = 0
        flat = values.reshape(values.shape[0], -1) if values.ndim > 1 else values[:, None]
        for start in range(0, flat.shape[0], 4096):  # in blocks: no full-size boolean copy
            n_bad += int((~np.isfinite(flat[start:start + 4096])).sum())
        if n_bad:
            raise ValueError(f"X holds {n_bad} non-finite values (NaN or inf); replace or drop "
                             f"them before conversion, e.g. X[~np.isfinite(X)] = 0.")
    return X


def require_columns(adata: AnnData, keys) -> None:
    """Raise a KeyError naming the obs columns among ``keys`` that ``adata`` lacks."""
    missing = [k for k in keys if k not in adata.obs.columns]
    if missing:
        raise KeyError(f"obs column(s) {missing} not found; columns present: "
                       f"{list(map(str, adata.obs.columns))}. Pass the right column name.")


def package_version() -> str:
    """The xtcdr version recorded in provenance."""
    try:
        from . import __version__
        return str(__version__)
    except ImportError:
        return "0.1.0"


def validate_schema(adata: AnnData) -> None:
    """Check that ``adata`` has the standard obs columns and that they agree.

    Raises KeyError listing the missing columns, ValueError when ``is_control`` disagrees with
    ``perturbation == 'control'``.
    """
    missing = [c for c in STANDARD_COLUMNS if c not in adata.obs.columns]
    if missing:
        raise KeyError(
            f"AnnData lacks the standard obs column(s) {missing} (present: "
            f"{list(map(str, adata.obs.columns))}). Build it with xtcdr.datasets.load(name) or "
            f"xtcdr.datasets.from_anndata(adata, perturbation_key=..., cell_type_key=...).")
    is_control = adata.obs["is_control"].to_numpy(dtype=bool)
    says_control = (adata.obs["perturbation"].astype(str) == CONTROL).to_numpy()
    n_bad = int((is_control != says_control).sum())
    if n_bad:
        raise ValueError(f"obs['is_control'] disagrees with obs['perturbation'] == 'control' for "
                         f"{n_bad} cells; recompute it: obs['is_control'] = obs['perturbation'] "
                         f"== 'control'.")
