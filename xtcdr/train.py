"""Training: ``fit(model, adata, config)`` until convergence, with checkpoints, resume and a history.

Training length is a budget of **optimizer steps**, not epochs. Every ``eval_every`` steps (within
an epoch when epochs are long, across epochs when they are tiny) the model is scored on its
validation signals. The first ``min_steps`` are a warm-up: validations are logged but no best is
kept (a model still fitting its own training task is not one to select); the transfer monitor may
have a warm-up of its own (``transfer_min_steps``) and may read the mean of its last
``transfer_window`` checks, since a handful of held-back conditions make it noisy from check to
check (the quick profile's choice, measured on development worlds). After it, training stops when no signal has improved by the relative margin
``min_delta`` for ``patience`` steps, or at the cap ``max_steps``. The best weights of each signal
are kept, and the checkpoint says why training stopped.

The validation signals (*monitors*):

* ``"valid"``: the weighted loss of Eq. 6 on pairs of held-back cells of the training
  perturbations (``obs['split'] == 'valid'``). Its pairs share a cell line, like the training pairs.
* ``"transfer"``: ``1 - pooled R^2`` on the DEGs of the cross-context prediction
  ``D(E_s(x_ctrl,B) + E_p(x_A))`` of training perturbations whose cells in one line ``B`` never
  train (``obs['split'] == 'transfer'``, see `xtcdr.pairing.assign_split`). It measures what the
  cross-context tables measure, on perturbations that are not test perturbations.
* ``"train"``: the training loss, only when the data has neither of the above.

A monitor the data cannot feed (validation cells that cannot be paired, no scorable transfer
condition) is left out with a warning that names the cause and the fix; so is a weighted term that
misses batches, and a ``select`` that gets another monitor's weights.

Design choices, each for speed or for exact repeatability:

* The expression matrix becomes one tensor (shared with ``adata.X`` on the CPU, copied once to
  the GPU when it fits). A batch is gathered with one indexing operation from integer pair
  indices: no per-item Python, no DataFrame rows, no copies of pairs.
* Pairs are re-drawn every epoch with seed ``(config.seed, epoch)`` and batches shuffled with a
  generator seeded the same way; the checkpoint holds the epoch, the position in it and the global
  torch RNG (dropout), so a run resumed from a checkpoint repeats the uninterrupted run exactly on
  the CPU.
* On the CPU a training uses ``TRAIN_THREADS`` threads (1 unless the environment variable
  ``XTCDR_TRAIN_THREADS`` says otherwise): a float32 matmul's rounding depends on how it is split
  over threads, so a fixed count gives the same weights whether a training ran alone, beside others
  (`xtcdr.grid`) or on a cluster.
* bf16 autocast on CUDA; float32 elsewhere.
* Checkpoints are written to a temporary file and renamed (atomic), and read back with
  ``torch.load(..., weights_only=True)`` (no arbitrary code from a file).
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .checkpoints import (_FORMAT, _MONITOR_NAMES, CHECKPOINT_NAME, MONITORS, CheckpointError, _selectable,
                          _train_config_from_dict, describe, load_checkpoint, save_checkpoint,
                          training_summary)
from .config import ModelConfig, TrainConfig
from .evaluate import dense_float32
from .losses import COMBO, TERMS, VARIANT_TERMS, loss_terms
from .model import XTransferCDR
from .pairing import combination_triples, cross_line_pairs, training_pairs

__all__ = ["fit", "set_seed", "resolve_device", "monitors_of", "TRAIN_THREADS",
           # the checkpoint format and reading live in xtcdr.checkpoints; re-exported for callers
           "save_checkpoint", "load_checkpoint", "CheckpointError", "CHECKPOINT_NAME", "MONITORS",
           "training_summary", "describe"]

TRAIN_THREADS = int(os.environ.get("XTCDR_TRAIN_THREADS") or 1)
_MONITOR_COLUMN = {"valid": "valid_total", "transfer": "transfer_loss", "train": "train_total"}


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


@contextlib.contextmanager
def _threads(device: torch.device):
    """``TRAIN_THREADS`` torch threads on the CPU for the duration of a training."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _expression_tensor(adata: ad.AnnData, device: torch.device) -> torch.Tensor:
    X = torch.from_numpy(dense_float32(adata.X))  # shares memory with adata.X when float32 dense
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if X.numel() * 4 < 0.5 * free:
            return X.to(device)
        return X.pin_memory()
    return X.to(device)


def monitors_of(adata: ad.AnnData) -> list[str]:
    """The validation signals ``fit`` can compute on ``adata`` (see the module docstring)."""
    split = set(adata.obs["split"].astype(str))
    found = [m for m in ("valid", "transfer") if m in split]
    return found or ["train"]


# --------------------------------------------------------------------------------------------
# batches and validation
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


def _context_codes(adata, device) -> torch.Tensor:
    """The cell-type code of every row (the adversary's labels)."""
    codes = adata.obs["cell_type"].astype("category").cat.codes.to_numpy(np.int64)
    return torch.from_numpy(codes).to(device)


def _cross_line(adata, split, config, device, seed):
    """Index tensors of the ``cross_line`` variant's pairs in ``split``; None when off or none."""
    if not config.weights.cross_line:
        return None
    a, b = cross_line_pairs(adata, split=split, seed=seed)
    return _pair_tensors((a, b), device) if a.size >= 2 else None


def _batch_terms(model, X, idx, chunk, config, device, combo, contexts=None, cross_line=None,
                 weights=None):
    """The loss terms of one batch of pairs (rows ``chunk`` of the pair indices ``idx``)."""
    a, b, ca, cb = idx
    xa, xb, xca, xcb = X[a[chunk]], X[b[chunk]], X[ca[chunk]], X[cb[chunk]]
    if xa.device != device:
        xa, xb, xca, xcb = (t.to(device, non_blocking=True) for t in (xa, xb, xca, xcb))
    ctx = contexts[a[chunk]] if contexts is not None else None
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return loss_terms(model, xa, xb, xca, xcb, weights or config.weights, combo=combo,
                          contexts=ctx, cross_line=cross_line)


def _epoch_batches(adata, X, config, device, epoch):
    """The pairs of one epoch and their batches: ``(pair index tensors, [(rows, combo, cross_line), ...])``."""
    seed = config.seed * 100_003 + epoch
    pairs = training_pairs(adata, split="train", seed=seed)
    gen = torch.Generator().manual_seed(seed)
    idx = _pair_tensors(pairs, device)
    order = torch.randperm(len(pairs), generator=gen).to(device)
    n_batches = max(1, len(pairs) // config.batch_size)
    combos = _combo_batches(X, _combos(adata, "train", config, device, seed), n_batches, True, gen, device)
    lines = _combo_batches(X, _cross_line(adata, "train", config, device, seed), n_batches, True, gen, device)
    return idx, list(zip(torch.tensor_split(order, n_batches), combos, lines))


def _warn_batches_without_terms(epoch_batches, config) -> None:
    """Warn when the fifth loss or the ``cross_line`` variant, though weighted, misses batches."""
    for term, position, what in ((COMBO, 1, "triples (a double and its two singles)"),
                                 ("cross_line", 2, "cross-line pairs (one single in two cell types)")):
        if not getattr(config.weights, term):
            continue
        missing = sum(batch[position] is None for batch in epoch_batches)
        if missing:
            warnings.warn(f"LossWeights.{term} > 0, but {missing} of the {len(epoch_batches)} batches of an "
                          f"epoch get fewer than 2 training {what} (batch norm needs 2): the {term!r} "
                          "term is left out of those batches"
                          + (", so this training never uses it" if missing == len(epoch_batches) else "")
                          + f". Train on data with more of them, use a larger batch_size, or set {term}=0.",
                          UserWarning, stacklevel=4)


def _stopping(monitors) -> str:
    """What early stopping watches, in words."""
    return " and ".join(f"the {_MONITOR_NAMES[m]}" for m in monitors)


@torch.no_grad()
def _valid_means(model, X, idx, config, device, combos=None) -> dict:
    """Mean of each loss term over the validation pairs ``idx`` (eval mode).

    The total is the paper's objective (its five weighted terms, and the fifth loss of the released
    code when on) without notebook 08's variant terms, so that the monitor means the same for every
    variant.
    """
    weights = replace(config.weights, **{t: 0.0 for t in VARIANT_TERMS})
    n = idx[0].shape[0]
    # eval mode: batch norm uses its running statistics, so large chunks give the same means faster
    n_batches = max(1, n // max(config.batch_size, 2048))
    sums = torch.zeros(len(TERMS) + 1, device=device)
    combo_batches = _combo_batches(X, combos, n_batches, False, None, device)
    combo_sum, combo_rows = torch.zeros((), device=device), 0
    order = torch.arange(n, device=device)
    for chunk, combo in zip(torch.tensor_split(order, n_batches), combo_batches):
        terms = _batch_terms(model, X, idx, chunk, config, device, combo, weights=weights)
        sums += torch.stack([terms[k].detach().float() for k in (*TERMS, "total")]) * chunk.numel()
        if combo is not None:
            combo_sum += terms[COMBO].detach().float() * combo[0].shape[0]
            combo_rows += combo[0].shape[0]
    out = dict(zip((*TERMS, "total"), (sums / n).tolist()))
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
        obs = X[a[torch.from_numpy(np.flatnonzero(rows)).to(a.device)]].float().cpu().numpy()
        scores.append(r2(obs[:, deg_idx].mean(0), pred[rows][:, deg_idx].mean(0)))
    return float(np.mean(scores)) if scores else float("nan")


def _transfer_tasks(adata) -> list:
    """Cross-context tasks of the ``transfer`` split (training perturbations held back in a line)."""
    from .evaluate import transfer_tasks

    if "transfer" not in set(adata.obs["split"].astype(str)):
        return []
    if "top_degs" not in adata.uns:
        warnings.warn("the transfer validation is scored on DEGs and adata.uns['top_degs'] is missing: "
                      "training goes on without it (early stopping on the within-line validation). "
                      "Run xtcdr.preprocess.preprocess (or pipeline.prepare) to compute the DEGs.",
                      UserWarning, stacklevel=4)
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks = transfer_tasks(adata, split="transfer", protocol="cross")
    for w in caught:
        if issubclass(w.category, UserWarning) and str(w.message).startswith("transfer_tasks skipped"):
            warnings.warn(f"the transfer validation leaves out conditions it cannot score ({w.message}); "
                          f"it scores {len(tasks) or 'none'} of them. To score them all, hold back "
                          "perturbations with more cells for it (xtcdr.pairing.assign_split, "
                          "n_transfer_valid) or give their cell types control cells.", UserWarning,
                          stacklevel=4)
        else:  # anything else transfer_tasks said, as it said it
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    genes = set(map(str, adata.var_names))
    top_degs = adata.uns["top_degs"]
    n_degs = [len(genes.intersection(map(str, np.ravel(top_degs.get(t.condition, []))))) for t in tasks]
    if tasks and max(n_degs) < 2:  # its loss needs 2+ DEGs of a condition
        warnings.warn(f"the transfer validation cannot be scored: none of its {len(tasks)} conditions has "
                      "2 or more of its DEGs (adata.uns['top_degs']) among the genes, so its loss is NaN at "
                      "every validation and never improves; training cannot stop by convergence and runs to "
                      "its cap, and select='transfer' gets other weights. Recompute the DEGs on these genes "
                      "(xtcdr.preprocess.preprocess or pipeline.prepare).", UserWarning, stacklevel=4)
    return tasks


def _transfer_scores(model, X_np, adata, tasks) -> dict:
    """Scores of the cross-context predictions of ``tasks``, predicted as
    `xtcdr.evaluate.evaluate_transfer` predicts:

    ``transfer_loss`` = sum over conditions of the squared error of the predicted mean profile on
    the condition's DEGs / sum of their squares around the observed mean (1 - pooled R^2 on the
    DEGs: conditions that move expression more weigh more, and one weak condition's unstable R^2
    cannot dominate); ``transfer_r2_deg`` / ``transfer_r2_all``: the mean R^2 over conditions on
    the DEGs / all genes, as the tables report them.
    """
    from .evaluate import ModelPredictor, _deg_positions, r2

    predictor = ModelPredictor(model)
    deg, full, sse, sst = [], [], 0.0, 0.0
    for task in tasks:
        predicted = np.mean([predictor.predict(X_np, task, s) for s in task.sources], axis=0)
        observed = X_np[task.target_idx].mean(0, dtype=np.float64)
        degs = _deg_positions(adata, task.condition)
        full.append(r2(observed, predicted))
        if degs.size >= 2:
            deg.append(r2(observed[degs], predicted[degs]))
            sse += float(np.sum((observed[degs] - predicted[degs]) ** 2))
            sst += float(np.sum((observed[degs] - observed[degs].mean()) ** 2))
    return {"transfer_loss": sse / sst if sst > 0 else float("nan"),
            "transfer_r2_deg": float(np.mean(deg)) if deg else float("nan"),
            "transfer_r2_all": float(np.mean(full)) if full else float("nan")}


def _monitor_column(name: str, config: TrainConfig) -> str:
    """The history column a monitor reads: the transfer validation averaged over its last
    ``transfer_window`` checks when that is above 1, else the raw column."""
    if name == "transfer" and config.transfer_window > 1:
        return "transfer_loss_smoothed"
    return _MONITOR_COLUMN[name]


def _warmup(name: str, config: TrainConfig) -> int:
    """Steps before a monitor may keep its best weights: ``transfer_min_steps`` for the transfer
    validation (when set), ``min_steps`` otherwise."""
    if name == "transfer" and config.transfer_min_steps is not None:
        return int(config.transfer_min_steps)
    return int(config.min_steps)


def _trailing_mean(history: list[dict], column: str, window: int) -> float:
    """Mean of the last ``window`` finite values of ``column`` in ``history`` (fewer at the start)."""
    values = [float(r[column]) for r in history[-window:] if column in r and np.isfinite(r[column])]
    return float(np.mean(values)) if values else float("nan")


def _improved(value: float, best: float | None, min_delta: float) -> bool:
    """Lower is better; an improvement must beat the best by ``min_delta`` of its size."""
    if not np.isfinite(value):
        return False
    return best is None or value < best - min_delta * abs(best)


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------
def fit(model: XTransferCDR, adata: ad.AnnData, config: TrainConfig | None = None, *,
        device: str | torch.device = "auto", checkpoint_dir: str | Path | None = None,
        resume: bool = False, progress: bool = True, select: str = "valid",
        track: dict | None = None) -> pd.DataFrame:
    """Train ``model`` on the training pairs of ``adata`` until convergence; return the history.

    Parameters
    ----------
    model
        An ``XTransferCDR`` with ``n_genes == adata.n_vars``; trained in place.
    adata
        Preprocessed data with ``obs['split']`` (see ``xtcdr.pairing.assign_split``).
    config
        ``TrainConfig``: the step budget (``max_steps``, ``min_steps``), validation every
        ``eval_every`` steps, early stopping (``patience`` steps without a relative improvement of
        ``min_delta``), an optional cap in ``epochs``, batch size, Adam lr / weight decay,
        schedule, seed and loss weights.
    checkpoint_dir
        When given, ``checkpoint.pt`` there is rewritten (atomically) at every validation.
    resume
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists (same data and settings;
        ``max_steps`` and ``epochs`` may differ from the interrupted run's).
    select
        Whose best weights the model holds at the end: ``"valid"`` or ``"transfer"`` (falls back,
        with a warning, to ``"valid"`` when the data has no transfer split).
    track
        Optional ``{name: function(model) -> float}`` evaluated at every validation and logged as
        ``track_<name>`` (e.g. a test score, to *show* a learning curve in a notebook). Never read
        by early stopping or by the selection of the best weights.

    Returns
    -------
    DataFrame, one row per validation: ``step``, ``epoch`` (fractional), ``train_<term>`` (mean
    since the previous row) and ``valid_<term>`` for every loss term and the total,
    ``valid_r2_deg``, ``transfer_loss`` / ``transfer_r2_deg`` / ``transfer_r2_all`` when the data
    has a transfer split, ``lr`` and ``seconds``. ``history.attrs['training']`` is the
    `training_summary` (steps, stop reason, best step of each monitor).
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
    dev = resolve_device(device)
    with _threads(dev):
        return _fit(model, adata, config, dev, checkpoint_dir, resume, progress, select, track or {})


def _fit(model, adata, config, dev, checkpoint_dir, resume, progress, select, track):
    set_seed(config.seed)
    model.to(dev)
    X = _expression_tensor(adata, dev)
    X_np = dense_float32(adata.X)
    genes = [str(g) for g in adata.var_names]
    monitors = monitors_of(adata)
    valid_idx = None
    if "valid" in monitors:
        try:
            valid_idx = _pair_tensors(training_pairs(adata, split="valid", seed=config.seed), dev)
        except ValueError as exc:
            monitors = [m for m in monitors if m != "valid"] or ["train"]
            warnings.warn(f"the within-line validation is left out: the cells with obs['split'] == 'valid' "
                          f"cannot be paired ({exc}). Training goes on and stops on {_stopping(monitors)}. "
                          "To keep it, split the data again (xtcdr.pairing.assign_split) so that every "
                          "cell type has validation cells of two or more training perturbations and "
                          "control cells.", UserWarning, stacklevel=3)
    valid_combos = _combos(adata, "valid", config, dev, config.seed) if valid_idx is not None else None
    if valid_idx is not None and config.weights.combo and valid_combos is None:
        warnings.warn("LossWeights.combo > 0 but the validation split has no measured doubles with both "
                      "singles: the within-line validation loss leaves out the fifth loss (it is the "
                      "paper's objective only). Split with more validation cells (assign_split's "
                      "valid_fraction) to score the fifth loss too.", UserWarning, stacklevel=3)
    transfer = _transfer_tasks(adata) if "transfer" in monitors else []
    if "transfer" in monitors and not transfer:
        monitors = [m for m in monitors if m != "transfer"] or ["train"]
        if "top_degs" in adata.uns:  # without DEGs, _transfer_tasks has said why
            warnings.warn("the transfer validation is left out: none of the conditions with obs['split'] == "
                          "'transfer' gave a cross-context task (a warning above names the ones skipped). "
                          f"Training goes on and stops on {_stopping(monitors)}. To keep it, hold back "
                          "perturbations measured in two or more cell types, with enough cells, for it "
                          "(xtcdr.pairing.assign_split, n_transfer_valid).", UserWarning, stacklevel=3)
    # fused: one pass over each parameter per step instead of about ten (same update rule)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 fused=dev.type in ("cpu", "cuda"))
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
                 if config.schedule == "step" else None)

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    history: list[dict] = []
    best: dict[str, dict] = {}
    step, epoch, batch = 0, 0, 0
    if resume and ckpt_path is not None and ckpt_path.exists():
        _, state = load_checkpoint(ckpt_path, genes=genes, select=None)
        saved = _train_config_from_dict(state["train_config"])
        if replace(saved, max_steps=config.max_steps, epochs=config.epochs) != config:
            raise CheckpointError(f"checkpoint {ckpt_path} was trained with other settings "
                                  f"({saved}); resume needs the same TrainConfig (only max_steps "
                                  "and epochs may change). Use another checkpoint_dir or resume=False.")
        if ModelConfig(**state["model_config"]) != model.config:
            raise CheckpointError(f"checkpoint {ckpt_path} holds another architecture "
                                  f"({state['model_config']}); build the model with that config.")
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        if scheduler is not None and state.get("scheduler_state") is not None:
            scheduler.load_state_dict(state["scheduler_state"])
        torch.set_rng_state(state["torch_rng_state"])
        history, best = list(state["history"]), dict(state["best"])
        step, epoch, batch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        if state.get("stop_reason") == "converged":  # nothing left to learn
            return _finish(model, state, select, history)

    bar = tqdm(total=config.max_steps, initial=step, desc="steps", disable=not progress,
               unit="step", mininterval=0.5)
    contexts = _context_codes(adata, dev) if config.weights.adversary else None
    sums: dict[str, torch.Tensor] = {}
    rows, t0 = 0, time.perf_counter()
    stop_reason = None
    epoch_batches = None
    checked_batches = False
    while stop_reason is None:
        if config.epochs is not None and epoch >= config.epochs:
            stop_reason = "epochs"
            break
        if step >= config.max_steps:
            stop_reason = "max_steps"
            break
        if epoch_batches is None:
            idx, epoch_batches = _epoch_batches(adata, X, config, dev, epoch)
            if not checked_batches:  # said once: the batches of every epoch are alike
                _warn_batches_without_terms(epoch_batches, config)
                checked_batches = True
        chunk, combo, lines = epoch_batches[batch]
        model.train()
        terms = _batch_terms(model, X, idx, chunk, config, dev, combo, contexts, lines)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() * chunk.numel()
        rows += chunk.numel()
        step += 1
        batch += 1
        n_batches = len(epoch_batches)
        if batch == n_batches:
            epoch, batch, epoch_batches = epoch + 1, 0, None
            if scheduler is not None:
                scheduler.step()
        bar.update(1)
        cap = step >= config.max_steps or (config.epochs is not None and epoch >= config.epochs)
        if step % config.eval_every and not cap:
            continue
        # ---- validation, early stopping, checkpoint
        row = {"step": step, "epoch": epoch + batch / n_batches,
               "lr": optimizer.param_groups[0]["lr"]}
        row.update({f"train_{k}": float(v) / max(rows, 1) for k, v in sums.items()})
        model.eval()
        if valid_idx is not None:
            row.update({f"valid_{k}": v for k, v in
                        _valid_means(model, X, valid_idx, config, dev, valid_combos).items()})
            row["valid_r2_deg"] = _valid_r2_deg(model, X, valid_idx, adata, dev)
        if transfer:
            row.update(_transfer_scores(model, X_np, adata, transfer))
        for name, function in track.items():  # logged only: never used to stop or select
            row[f"track_{name}"] = float(function(model))
            model.eval()
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if "transfer" in monitors and config.transfer_window > 1:
            row["transfer_loss_smoothed"] = _trailing_mean(history, "transfer_loss", config.transfer_window)
        for name in monitors:
            value = float(row[_monitor_column(name, config)])
            if step < _warmup(name, config):  # warm-up: a model still fitting its task is not selected
                continue
            if _improved(value, best.get(name, {}).get("value"), config.min_delta):
                best[name] = {"step": step, "value": value,
                              "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        stalled = all(name in best and step - best[name]["step"] >= config.patience for name in monitors)
        if step >= config.min_steps and stalled:
            stop_reason = "converged"
        elif cap:
            stop_reason = "max_steps" if step >= config.max_steps else "epochs"
        bar.set_postfix({name: f"{row[_monitor_column(name, config)]:.4f}" for name in monitors}, refresh=False)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, _state(model, optimizer, scheduler, config, history, genes, best,
                                              step, epoch, batch, n_batches, stop_reason))
        sums.clear()
        rows, t0 = 0, time.perf_counter()
    bar.set_description(f"steps ({stop_reason})")
    bar.close()
    state = _state(model, optimizer, scheduler, config, history, genes, best, step, epoch, batch,
                   max(1, len(epoch_batches) if epoch_batches else 1), stop_reason)
    if ckpt_path is not None:
        save_checkpoint(ckpt_path, state)
    return _finish(model, state, select, history)


def _finish(model, state, select, history):
    """Load the selected best weights into ``model`` (eval mode) and return the history."""
    selected = _selectable(state, select, stacklevel=5)
    if selected is not None:
        model.load_state_dict(state["best"][selected]["state"])
    state["selected"] = selected
    model.eval()
    out = pd.DataFrame(history)
    out.attrs["training"] = training_summary(state)
    return out


def _state(model, optimizer, scheduler, config, history, genes, best, step, epoch, batch,
           n_batches, stop_reason) -> dict:
    from . import __version__

    return {
        "format": _FORMAT,
        "xtcdr_version": __version__,
        "model_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer_state": copy.deepcopy(optimizer.state_dict()),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "step": step, "epoch": epoch, "batch": batch, "epoch_float": epoch + batch / n_batches,
        "stop_reason": stop_reason,
        "best": best,
        "history": list(history),
        "model_config": asdict(model.config),
        "train_config": asdict(config),
        "n_genes": model.n_genes,
        "genes": list(genes),
        "torch_rng_state": torch.get_rng_state(),
    }
