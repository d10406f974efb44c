"""Cached steps that the notebooks call, so that every notebook also runs on its own.

``prepare`` = load -> preprocess -> assign_split, cached as h5ad under ``data/processed/``.
``train_or_load`` = the trained model for (data, model config, train config), cached as a
checkpoint under ``data/checkpoints/``. Both say when they reuse a cache, and take
``force=True`` to recompute. Cache files are written atomically: an interrupted run never leaves
a file that a later run would trust.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from . import datasets
from .config import LossWeights, ModelConfig, Profile, TrainConfig, config_hash, get_profile
from .pairing import assign_split
from .preprocess import preprocess

__all__ = ["prepare", "load_world", "train_or_load", "checkpoint_dir", "dataset_name", "data_key", "env_override",
           "PREPARE_VERSION"]

# Part of the cache key of prepared data: raise it whenever preprocessing or the split changes what
# prepare returns for the same settings, so that no stale file is read from data/processed/.
PREPARE_VERSION = 3


def env_override(name: str, value, cast=str):
    """``value`` unless the environment variable ``name`` is set (how CI forces the quick profile)."""
    raw = os.environ.get(name)
    return cast(raw) if raw not in (None, "") else value


def dataset_name(adata: ad.AnnData) -> str:
    """The dataset's registry name (or ``"custom"`` for user data)."""
    return str(adata.uns.get("xtcdr", {}).get("dataset", adata.uns.get("xtcdr", {}).get("source", "custom")))


def _write_h5ad_atomic(adata: ad.AnnData, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def prepare(dataset: str | ad.AnnData, *, profile: str | Profile = "quick", seed: int = 0,
            data_dir: str | Path | None = None, test_perturbations=None, force: bool = False,
            verbose: bool = True) -> ad.AnnData:
    """Load (or take), preprocess and split a dataset; cached for named datasets.

    Parameters
    ----------
    dataset
        A name from ``xtcdr.datasets.names()`` or an AnnData already in the standard obs
        schema (e.g. from ``xtcdr.datasets.from_anndata``); user AnnData is not cached.
    profile
        ``"quick"`` or ``"paper"`` (its ``DataConfig``: genes kept, DEG rule, held-out rule, split
        fractions), or a `Profile` (e.g. ``dataclasses.replace`` of one with another
        ``DataConfig``, such as ``test_rule="random"`` or ``hvg_cells="non_test"``).
    seed
        The world: for a synthetic twin the draw (`load_world`) and its split; for real data the
        split (held-out perturbations when no list is published or the fold of
        ``test_rule="kfold"``, the transfer validation, validation cells).
    test_perturbations
        Override the held-out perturbations (default: the dataset's published list or a seeded
        choice, see ``xtcdr.pairing.assign_split``).
    """
    prof = get_profile(profile)
    data_dir = Path(data_dir) if data_dir is not None else datasets.default_data_dir()
    cfg = prof.data
    if isinstance(dataset, ad.AnnData):
        datasets.validate_schema(dataset)
        name, cache = dataset_name(dataset), None
        raw = dataset
    else:
        name = str(dataset)
        if name not in datasets.names():
            datasets.load(name, data_dir=data_dir)  # raises the helpful unknown-name error
        key = config_hash(cfg, seed, sorted(test_perturbations) if test_perturbations else None,
                          _package_version(), PREPARE_VERSION, *_twin_settings(name))
        cache = data_dir / "processed" / f"{name}__{prof.name}__seed{seed}__{key}.h5ad"
        if cache.exists() and not force:
            if verbose:
                print(f"prepare: using cached {cache.relative_to(data_dir.parent) if data_dir.parent in cache.parents else cache}")
            return ad.read_h5ad(cache)
        raw = load_world(name, seed, data_dir=data_dir)
    adata = _preprocess_and_split(raw, cfg, seed, test_perturbations)
    if cfg.hvg_cells == "non_test":
        # choose the genes again without the held-out cells; the split is drawn once and kept as
        # it is (cell by cell), so only the genes and what depends on them change
        first = adata
        held_out = list(first.uns["xtcdr"]["split"]["test_perturbations"])
        adata = preprocess(raw, n_top_genes=cfg.n_top_genes, n_degs=cfg.n_degs, min_log2fc=cfg.min_log2fc,
                           deg_rule=cfg.deg_rule, hvg_exclude=held_out)
        adata.obs["split"] = first.obs["split"].reindex(adata.obs_names).to_numpy()
        adata.obs["split"] = adata.obs["split"].astype("category")
        adata.uns["xtcdr"]["split"] = dict(first.uns["xtcdr"]["split"])
    info = dict(adata.uns["xtcdr"])
    info.update(dataset=name, profile=prof.name, prepare_seed=int(seed), version=_package_version())
    adata.uns["xtcdr"] = info
    if cache is not None:
        _write_h5ad_atomic(adata, cache)
        if verbose:
            print(f"prepare: wrote {cache.name} ({adata.n_obs} cells x {adata.n_vars} genes)")
    return adata


def load_world(name: str, seed: int = 0, *, data_dir=None) -> ad.AnnData:
    """The raw data of world ``seed`` of dataset ``name``.

    A synthetic twin is drawn anew with ``seed`` (`xtcdr.synthetic.simulate`): seed *s* is world
    *s*, whose held-out set the split rule then chooses on that draw (`prepare` passes the same
    seed to the split). Real data are the same cells for every seed; there the seed picks the split
    (for ``test_rule="kfold"`` the fold).
    """
    from .synthetic import TWINS, simulate

    if name in TWINS:
        adata = simulate(name, seed=int(seed))
        datasets.validate_schema(adata)
        return adata
    return datasets.load(name, data_dir=data_dir)


def _twin_settings(name: str) -> list:
    """A synthetic twin's simulator settings and split rule (part of its cache key, so that a
    changed twin is never read from an old cache); nothing for real datasets."""
    from .synthetic import TWIN_SPLITS, TWINS

    return [TWINS[name], TWIN_SPLITS.get(name, {})] if name in TWINS else []


def _preprocess_and_split(raw, cfg, seed, test_perturbations, hvg_exclude=None) -> ad.AnnData:
    adata = preprocess(raw, n_top_genes=cfg.n_top_genes, n_degs=cfg.n_degs, min_log2fc=cfg.min_log2fc,
                       deg_rule=cfg.deg_rule, hvg_exclude=hvg_exclude)
    assign_split(adata, test_perturbations=test_perturbations, test_rule=cfg.test_rule,
                 n_test=cfg.n_test, valid_fraction=cfg.valid_fraction,
                 test_fraction=cfg.test_fraction, n_transfer_valid=cfg.n_transfer_valid,
                 n_folds=cfg.n_folds, fold=cfg.fold, fold_seed=cfg.fold_seed,
                 test_context=cfg.test_context, transfer_share=cfg.transfer_share, seed=seed)
    return adata


def _package_version() -> str:
    from . import __version__
    return __version__


def data_key(adata: ad.AnnData) -> str:
    """A hash identifying the prepared data (dataset, genes, split, preprocessing)."""
    info = adata.uns.get("xtcdr", {})
    split = adata.obs["split"].astype(str).value_counts().sort_index().to_dict() if "split" in adata.obs else {}
    return config_hash(dataset_name(adata), adata.n_obs, [str(g) for g in adata.var_names],
                       split, _plain(info.get("preprocess", {})), _plain(info.get("split", {})))


def _plain(obj):
    """uns values read back from h5ad are numpy; make them JSON-friendly for hashing."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (np.ndarray, list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _checkpoint_settings(adata, profile, seed, model_config, train_config, weights, data_dir):
    prof = get_profile(profile)
    mcfg = model_config or prof.model
    tcfg = replace(train_config or prof.train, seed=int(seed))
    if weights is not None:
        tcfg = replace(tcfg, weights=weights)
    if tcfg.weights.adversary > 0 and mcfg.n_contexts == 0:  # the adversary's head: one output per line
        mcfg = replace(mcfg, n_contexts=int(adata.obs["cell_type"].nunique()))
    data_dir = Path(data_dir) if data_dir is not None else datasets.default_data_dir()
    key = config_hash(data_key(adata), mcfg, tcfg)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_name(adata))
    return data_dir / "checkpoints" / f"{safe_name}__{key}", mcfg, tcfg


def checkpoint_dir(adata: ad.AnnData, *, profile: str | Profile = "quick", seed: int = 0,
                   model_config: ModelConfig | None = None, train_config: TrainConfig | None = None,
                   weights: LossWeights | None = None, data_dir: str | Path | None = None) -> Path:
    """The folder where `train_or_load` keeps (or would keep) the checkpoint of these settings.

    Same arguments as `train_or_load`; the folder name hashes the data, the model config and the
    train config (loss weights and seed included), so each configuration and seed has its own.
    """
    return _checkpoint_settings(adata, profile, seed, model_config, train_config, weights, data_dir)[0]


def train_or_load(adata: ad.AnnData, *, profile: str | Profile = "quick", seed: int = 0,
                  model_config: ModelConfig | None = None, train_config: TrainConfig | None = None,
                  weights: LossWeights | None = None, device: str = "auto",
                  data_dir: str | Path | None = None, force: bool = False, progress: bool = True,
                  verbose: bool = True, select: str = "valid"):
    """Return ``(model, history)`` for this data and configuration, training only when needed.

    The checkpoint lives in ``data/checkpoints/<dataset>__<key>/checkpoint.pt`` where the key
    hashes the data (``data_key``), the model and training configs and the seed. A finished
    checkpoint (training stopped by convergence or at its cap) is loaded; an unfinished one (an
    interrupted run) is resumed.

    ``model_config`` / ``train_config`` default to the profile's; ``weights`` replaces the loss
    weights (ablations); ``seed`` replaces the training seed. ``select`` chooses which of the
    checkpoint's best weights the model holds: ``"valid"`` (lowest within-line validation loss,
    for within-context protocols) or ``"transfer"`` (best cross-context prediction of the
    transfer-validation conditions, for cross-context protocols; falls back to ``"valid"`` on
    data without them). ``history.attrs['training']`` says how training went
    (`xtcdr.train.training_summary`).
    """
    from .model import XTransferCDR
    from .train import CHECKPOINT_NAME, fit, load_checkpoint, resolve_device, set_seed, training_summary

    ckpt_dir, mcfg, tcfg = _checkpoint_settings(adata, profile, seed, model_config, train_config,
                                                weights, data_dir)
    ckpt = ckpt_dir / CHECKPOINT_NAME
    dev = resolve_device(device)
    if ckpt.exists() and not force:
        model, state = load_checkpoint(ckpt, genes=adata.var_names, map_location=dev, select=select)
        if state.get("stop_reason") is not None:
            summary = training_summary(state)
            if verbose:
                print(f"train_or_load: using cached checkpoint {ckpt_dir.name} ({summary['steps']} "
                      f"steps, stopped: {summary['stop_reason']}; weights: best {summary['selected']})")
            model.to(dev).eval()
            history = pd.DataFrame(state["history"])
            history.attrs["training"] = dict(summary, checkpoint=ckpt_dir.name)
            return model, history
    if force and ckpt.exists():
        ckpt.unlink()
    set_seed(tcfg.seed)  # the initial weights depend on the training seed only, not on what ran before
    model = XTransferCDR(adata.n_vars, mcfg)
    if verbose:
        print(f"train_or_load: training {dataset_name(adata)} on {dev} (up to {tcfg.max_steps} "
              f"steps, early stopping, seed {tcfg.seed}) -> {ckpt_dir.name}")
    history = fit(model, adata, tcfg, device=dev, checkpoint_dir=ckpt_dir, resume=True,
                  progress=progress, select=select)
    history.attrs["training"] = dict(history.attrs.get("training", {}), checkpoint=ckpt_dir.name)
    return model, history
