"""Training: ``fit(model, adata, config)`` with checkpoints, resume and a per-epoch history.

Design choices, each for speed or for exact repeatability:

* The expression matrix becomes one tensor (shared with ``adata.X`` on the CPU, copied once to
  the GPU when it fits). A batch is gathered with one indexing operation from integer pair
  indices: no per-item Python, no DataFrame rows, no copies of pairs.
* Pairs are re-drawn every epoch with seed ``(config.seed, epoch)`` and batches shuffled with a
  generator seeded the same way, so a run resumed from a checkpoint repeats the uninterrupted run
  exactly on the CPU (the global torch RNG, used by dropout, is saved in the checkpoint).
* bf16 autocast on CUDA; float32 elsewhere.
* Checkpoints are written to a temporary file and renamed (atomic), hold the configuration, the
  history, the optimizer and scheduler state and the epoch, and are read back with
  ``torch.load(..., weights_only=True)`` (no arbitrary code from a file).
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import LossWeights, ModelConfig, TrainConfig
from .evaluate import dense_float32
from .losses import COMBO, TERMS, loss_terms
from .model import XTransferCDR
from .pairing import combination_triples, training_pairs

__all__ = ["fit", "set_seed", "resolve_device", "save_checkpoint", "load_checkpoint",
           "CheckpointError", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "xtcdr-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, or made for other data / settings)."""


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda > mps > cpu; anything else is passed to ``torch.device``."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _expression_tensor(adata: ad.AnnData, device: torch.device) -> torch.Tensor:
    X = torch.from_numpy(dense_float32(adata.X))  # shares memory with adata.X when float32 dense
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if X.numel() * 4 < 0.5 * free:
            return X.to(device)
        return X.pin_memory()
    return X.to(device)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | Path, *, genes=None, map_location="cpu"):
    """Read a checkpoint and rebuild its model.

    Returns ``(model, state)``. Raises ``CheckpointError`` with the fix when the file is corrupt
    or not an xtcdr checkpoint, or when ``genes`` (the data's var names) differ from those the
    model was trained on.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated / corrupt / not a torch file
        raise CheckpointError(f"could not read checkpoint {path} ({type(exc).__name__}: {exc}); "
                              "the file is corrupt or not an xtcdr checkpoint: delete it and "
                              "train again.") from exc
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not an xtcdr checkpoint (format {_FORMAT!r}); delete it "
                              "and train again.")
    if genes is not None:
        genes = [str(g) for g in genes]
        if list(state["genes"]) != genes:
            raise CheckpointError(
                f"checkpoint {path} was trained on {len(state['genes'])} genes "
                f"(first: {list(state['genes'][:3])}) but the data has {len(genes)} "
                f"(first: {genes[:3]}); it belongs to another dataset or preprocessing. Use the "
                "matching data, or train a new model (delete the checkpoint or pick another folder).")
    mcfg = ModelConfig(**state["model_config"])
    model = XTransferCDR(int(state["n_genes"]), mcfg)
    model.load_state_dict(state["model_state"])
    return model, state


def _train_config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["weights"] = LossWeights(**d["weights"])
    return TrainConfig(**d)


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------
def _pair_tensors(pairs, device):
    return [torch.from_numpy(v).to(device) for v in pairs]


def _combos(adata, split, config, device, seed):
    """Index tensors of the fifth loss's triples in ``split``; None when its weight is 0 or none."""
    if not config.weights.combo:
        return None
    triples = combination_triples(adata, split=split, seed=seed)
    return _pair_tensors(triples, device) if len(triples) else None


def _combo_batches(X, combos, n_batches, shuffle, generator, device):
    """Triples (single a, single b, double) for the fifth loss spread over ``n_batches`` batches:
    one tuple of expression tensors per batch (None for a batch with fewer than 2 triples, as
    batch norm needs 2 rows), or None for every batch when ``combos`` is None (the paper)."""
    if combos is None:
        return [None] * n_batches
    n = combos[0].shape[0]
    order = torch.randperm(n, generator=generator).to(device) if shuffle else torch.arange(n, device=device)
    return [tuple(X[t[c]].to(device, non_blocking=True) for t in combos) if c.numel() >= 2 else None
            for c in torch.tensor_split(order, n_batches)]


def _run_epoch(model, X, idx, config, device, *, optimizer=None, generator=None, combos=None):
    """One pass over pairs ``idx``; returns the mean of each term. Trains when given an optimizer.

    ``combos``: triples for the released code's fifth loss (`_combo_batches`), or None.
    """
    a, b, ca, cb = idx
    n = a.shape[0]
    train = optimizer is not None
    order = torch.randperm(n, generator=generator).to(device) if train else torch.arange(n, device=device)
    n_batches = max(1, n // config.batch_size)
    sums = torch.zeros(len(TERMS) + 1, device=device)
    amp = device.type == "cuda"
    combo_batches = _combo_batches(X, combos, n_batches, train, generator, device)
    combo_sum, combo_rows = torch.zeros((), device=device), 0
    for chunk, combo in zip(torch.tensor_split(order, n_batches), combo_batches):
        xa, xb, xca, xcb = X[a[chunk]], X[b[chunk]], X[ca[chunk]], X[cb[chunk]]
        if xa.device != device:
            xa, xb, xca, xcb = (t.to(device, non_blocking=True) for t in (xa, xb, xca, xcb))
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            terms = loss_terms(model, xa, xb, xca, xcb, config.weights, combo=combo)
        if train:
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
        sums += torch.stack([terms[k].detach().float() for k in (*TERMS, "total")]) * chunk.numel()
        if combo is not None:
            combo_sum += terms[COMBO].detach().float() * combo[0].shape[0]
            combo_rows += combo[0].shape[0]
    means = (sums / n).tolist()
    out = dict(zip((*TERMS, "total"), means))
    if combos is not None:  # the fifth term's mean over its triples
        out[COMBO] = (combo_sum / combo_rows).item() if combo_rows else float("nan")
    return out


@torch.no_grad()
def _valid_r2_deg(model, X, idx, adata, device) -> float:
    """Validation R^2 on DEGs: cross-transfer predictions D(S^b + P^a) averaged per condition of a."""
    from .evaluate import r2  # local import: evaluate imports nothing from train

    a, b = idx[0], idx[1]
    cond = adata.obs["condition"].astype(str).to_numpy()
    genes = {g: i for i, g in enumerate(adata.var_names)}
    degs = adata.uns.get("top_degs", {})
    pred = torch.empty(a.shape[0], model.n_genes)  # filled in place: no list of chunks + cat copy
    for chunk in torch.tensor_split(torch.arange(a.shape[0], device=device), max(1, a.shape[0] // 4096)):
        xa, xb = X[a[chunk]].to(device), X[b[chunk]].to(device)
        pred[chunk.cpu()] = model.decode(model.encode_basal(xb) + model.encode_perturbation(xa)).float().cpu()
    pred = pred.numpy()
    a_np = a.cpu().numpy()
    scores = []
    for c in np.unique(cond[a_np]):
        rows = cond[a_np] == c
        deg_idx = [genes[g] for g in degs.get(c, []) if g in genes]
        if len(deg_idx) < 2:
            continue
        # observed rows of this condition only (a copy of every validation row is not needed)
        obs = X[a[torch.from_numpy(np.flatnonzero(rows)).to(a.device)]].float().cpu().numpy()
        scores.append(r2(obs[:, deg_idx].mean(0), pred[rows][:, deg_idx].mean(0)))
    return float(np.mean(scores)) if scores else float("nan")


def fit(model: XTransferCDR, adata: ad.AnnData, config: TrainConfig | None = None, *,
        device: str | torch.device = "auto", checkpoint_dir: str | Path | None = None,
        resume: bool = False, progress: bool = True) -> pd.DataFrame:
    """Train ``model`` on the training pairs of ``adata`` and return the per-epoch history.

    Parameters
    ----------
    model
        An ``XTransferCDR`` with ``n_genes == adata.n_vars``; trained in place.
    adata
        Preprocessed data with ``obs['split']`` (see ``xtcdr.pairing.assign_split``).
    config
        ``TrainConfig`` (epochs, batch size, Adam lr / weight decay, schedule, seed, loss weights).
    checkpoint_dir
        When given, ``checkpoint.pt`` there is rewritten (atomically) after every epoch.
    resume
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists (same data and settings;
        ``epochs`` may be larger than in the interrupted run).

    Returns
    -------
    DataFrame, one row per epoch: ``train_<term>`` and ``valid_<term>`` for every loss term and
    the total, ``valid_r2_deg``, ``lr`` and ``seconds``.
    """
    config = config or TrainConfig()
    if model.n_genes != adata.n_vars:
        raise ValueError(f"model expects {model.n_genes} genes but the data has {adata.n_vars}; "
                         "build the model with XTransferCDR(adata.n_vars, ...).")
    if config.weights.combo and not len(combination_triples(adata, split="train")):
        raise ValueError("LossWeights.combo > 0 (the released code's fifth loss) needs measured "
                         "doubles in the training split, but every double is held out (the "
                         "paper's split). Prepare the data with DataConfig(test_rule='doubles', "
                         "n_test=k) to hold out only k doubles, or set combo=0.")
    set_seed(config.seed)
    dev = resolve_device(device)
    model.to(dev)
    X = _expression_tensor(adata, dev)
    genes = [str(g) for g in adata.var_names]
    has_valid = (adata.obs["split"].astype(str) == "valid").any()
    valid_idx = None
    if has_valid:
        try:
            valid_idx = _pair_tensors(training_pairs(adata, split="valid", seed=config.seed), dev)
        except ValueError:
            valid_idx = None  # too few validation cells to pair: history has no valid_ columns
    valid_combos = _combos(adata, "valid", config, dev, config.seed)
    # fused: one pass over each parameter per step instead of about ten (same update rule)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 fused=dev.type in ("cpu", "cuda"))
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
                 if config.schedule == "step" else None)

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    history: list[dict] = []
    start = 0
    if resume and ckpt_path is not None and ckpt_path.exists():
        _, state = load_checkpoint(ckpt_path, genes=genes)
        saved = _train_config_from_dict(state["train_config"])
        if replace(saved, epochs=config.epochs) != config:
            raise CheckpointError(f"checkpoint {ckpt_path} was trained with other settings "
                                  f"({saved}); resume needs the same TrainConfig (only epochs may "
                                  "change). Use another checkpoint_dir or resume=False.")
        if ModelConfig(**state["model_config"]) != model.config:
            raise CheckpointError(f"checkpoint {ckpt_path} holds another architecture "
                                  f"({state['model_config']}); build the model with that config.")
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        if scheduler is not None and state.get("scheduler_state") is not None:
            scheduler.load_state_dict(state["scheduler_state"])
        torch.set_rng_state(state["torch_rng_state"])
        history = list(state["history"])
        start = int(state["epoch"])

    bar = tqdm(range(start, config.epochs), desc="epochs", disable=not progress,
               initial=start, total=config.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        pairs = training_pairs(adata, split="train", seed=config.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        model.train()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "n_pairs": len(pairs)}
        train_means = _run_epoch(model, X, _pair_tensors(pairs, dev), config, dev,
                                 optimizer=optimizer, generator=gen,
                                 combos=_combos(adata, "train", config, dev, config.seed * 100_003 + epoch))
        row.update({f"train_{k}": v for k, v in train_means.items()})
        if scheduler is not None:
            scheduler.step()
        if valid_idx is not None:
            model.eval()
            with torch.no_grad():
                valid_means = _run_epoch(model, X, valid_idx, config, dev, combos=valid_combos)
            row.update({f"valid_{k}": v for k, v in valid_means.items()})
            row["valid_r2_deg"] = _valid_r2_deg(model, X, valid_idx, adata, dev)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        bar.set_postfix(total=f"{row['train_total']:.4f}", cross=f"{row['train_cross']:.4f}",
                        val_r2_deg=f"{row.get('valid_r2_deg', float('nan')):.3f}")
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, _state(model, optimizer, scheduler, config, history, genes))
    model.eval()
    return pd.DataFrame(history)


def _state(model, optimizer, scheduler, config, history, genes) -> dict:
    from . import __version__

    return {
        "format": _FORMAT,
        "xtcdr_version": __version__,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "epoch": len(history),
        "history": history,
        "model_config": asdict(model.config),
        "train_config": asdict(config),
        "n_genes": model.n_genes,
        "genes": list(genes),
        "torch_rng_state": torch.get_rng_state(),
    }
