"""Checkpoints of a training: the file format, writing and reading, and how a training went.

A checkpoint (``checkpoint.pt``, format `_FORMAT`) holds the model's last weights, the best
weights of each validation signal (*monitor*), the optimizer, scheduler and random states (for an
exact resume), the history, both configurations and the genes. `training_summary` and `describe`
say how the training went: steps, why it stopped, each monitor's best step.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .config import LossWeights, ModelConfig, TrainConfig
from .model import XTransferCDR

__all__ = ["CHECKPOINT_NAME", "MONITORS", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "training_summary", "describe"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "xtcdr-checkpoint-2"
MONITORS = ("valid", "transfer", "train")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, or made for other data / settings)."""


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


def load_checkpoint(path: str | Path, *, genes=None, map_location="cpu", select: str | None = "valid"):
    """Read a checkpoint and rebuild its model.

    ``select`` names the weights to load: the best weights of a monitor (``"valid"``,
    ``"transfer"``, ``"train"``; a monitor the checkpoint lacks falls back, with a warning, to
    ``"valid"``, then ``"train"``, then the last weights) or ``None`` for the weights of the last
    step. Returns ``(model, state)``;
    ``state['selected']`` says which weights were loaded.

    Raises ``CheckpointError`` with the fix when the file is corrupt or not an xtcdr checkpoint,
    or when ``genes`` (the data's var names) differ from those the model was trained on.
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
        old = isinstance(state, dict) and str(state.get("format", "")).startswith("xtcdr-checkpoint")
        raise CheckpointError(f"{path} is not an xtcdr checkpoint of this version (format {_FORMAT!r}"
                              + (f", found the older {state.get('format')!r}" if old else "")
                              + "); delete it and train again.")
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
    selected = _selectable(state, select)
    model.load_state_dict(state["best"][selected]["state"] if selected else state["model_state"])
    state["selected"] = selected
    return model, state


def _selectable(state: dict, select: str | None, *, stacklevel: int = 3) -> str | None:
    """The monitor whose best weights ``select`` gets from ``state`` (None: the last weights);
    warns when that is not the one asked for."""
    if select is None:
        return None
    if select not in MONITORS:
        raise ValueError(f"select must be one of {list(MONITORS)} or None, got {select!r}")
    best = state.get("best") or {}
    selected = next((name for name in (select, "valid", "train") if name in best), None)
    if selected != select and state.get("stop_reason") is not None:  # unfinished: resumed, not used
        _warn_selection(state, select, selected, stacklevel + 1)
    return selected


def _warn_selection(state: dict, select: str, selected: str | None, stacklevel: int) -> None:
    kept = sorted(state.get("best") or {})
    if kept:
        cause = f"this training has no best weights for {select!r} (its monitors: {kept})"
        fix = "Ask for one of its monitors, or split the data with that validation (pairing.assign_split)."
    else:
        cause = (f"no best weights were kept (training stopped at step {state['step']}; bests are kept from "
                 f"min_steps={state['train_config']['min_steps']} on, for finite validation values only)")
        fix = "Give training more steps than min_steps (or lower min_steps)."
    held = f"the best {selected!r} weights" if selected else "the weights of the last step"
    warnings.warn(f"{cause}: the model holds {held} instead. {fix}", UserWarning, stacklevel=stacklevel)


def training_summary(state: dict) -> dict:
    """How a training went, from a checkpoint's state: steps, why it stopped, and per monitor the
    best step, the best value and whether it converged (its best lies at least ``patience`` steps
    before the end, or training stopped by convergence)."""
    config = state["train_config"]
    step = int(state["step"])
    monitors = {}
    for name, best in (state.get("best") or {}).items():
        converged = state.get("stop_reason") == "converged" or step - int(best["step"]) >= int(config["patience"])
        monitors[name] = {"best_step": int(best["step"]), "best_value": float(best["value"]),
                          "converged": bool(converged)}
    return {"steps": step, "epochs": float(state.get("epoch_float", state.get("epoch", 0))),
            "stop_reason": state.get("stop_reason"), "max_steps": int(config["max_steps"]),
            "patience": int(config["patience"]), "monitors": monitors,
            "selected": state.get("selected")}


def _train_config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["weights"] = LossWeights(**d["weights"])
    return TrainConfig(**d)


_REASONS = {"converged": "converged (no validation signal improved by the margin for the patience window)",
            "max_steps": "hit its step cap", "epochs": "hit its epoch cap"}
_MONITOR_NAMES = {"valid": "within-line validation loss", "transfer": "transfer validation",
                  "train": "training loss"}


def describe(summary: dict) -> str:
    """One sentence from a `training_summary`: steps, why training stopped, each monitor's best step."""
    parts = [f"{summary['steps']:,} optimizer steps ({summary.get('epochs', 0):.0f} epochs), stopped: "
             f"{_REASONS.get(summary.get('stop_reason'), summary.get('stop_reason'))}"]
    for name, m in summary.get("monitors", {}).items():
        parts.append(f"best {_MONITOR_NAMES.get(name, name)} at step {m['best_step']:,}"
                     + ("" if m["converged"] else " (still improving)"))
    if summary.get("selected"):
        parts.append(f"weights held: best {_MONITOR_NAMES.get(summary['selected'], summary['selected'])}")
    return "; ".join(parts) + "."

