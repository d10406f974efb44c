"""Notebook 08: transfer to a new cell line, why the paper's model struggles, and variants.

The paper's training pairs share a cell line, so no loss term ever asks for what a cross-context
prediction needs, ``D(E_s(x_ctrl,B) + E_p(x_A)) ~ x_B``. The variants here ask for it in different
ways; each is a switch of the package (a loss weight, or a change at prediction time only) and
is trained, selected (on the transfer validation, `xtcdr.train`) and scored like the model.

``TASKS``: the cross-context tasks (Table 1 and Table 2 analogs, the cross-line knockdowns).
``VARIANTS``: name -> what it changes in training (`xtcdr.grid.Training` overrides) and at
prediction (``offset`` of `xtcdr.evaluate.ModelPredictor`), with a one-line idea.
"""
from __future__ import annotations

import os

__all__ = ["TASKS", "VARIANTS", "DEFAULT_TASKS", "DEFAULT_VARIANTS", "task_names", "variant_names",
           "variant_training"]

TASKS: dict[str, dict] = {
    "table1_cross": {"dataset": "synthetic_drugs", "protocol": "cross",
                     "title": "Table 1 analog, cross-context: held-out drugs in three lines"},
    "table2_cross": {"dataset": "synthetic_drugs4", "protocol": "cross",
                     "title": "Table 2 analog, cross-context: held-out drugs in two lines"},
    "knockdowns_cross_line": {"dataset": "synthetic_genes", "protocol": "cross",
                              "title": "knockdowns measured in both lines, predicted across lines"},
}

VARIANTS: dict[str, dict] = {
    "paper": {"training": {}, "offset": "none",
              "idea": "the paper's model: pairs within a line, five loss terms"},
    "control offset swap": {"training": {}, "offset": "swap",
                            "idea": "the paper's model; at prediction the source line's mean "
                                    "control code is subtracted from P and the target's added"},
    "cross-line pairs": {"training": {"weights": {"cross_line": 1.0}}, "offset": "none",
                         "idea": "extra pairs of one perturbation in two lines: "
                                 "D(S(x_B) + P(x_A)) -> x_B is trained directly"},
    "context-free P": {"training": {"weights": {"adversary": 1.0}}, "offset": "none",
                       "idea": "a gradient-reversal classifier of the line from P: E_p learns to "
                               "hide the line"},
    "zero control code": {"training": {"weights": {"control_code": 1.0}}, "offset": "none",
                          "idea": "|E_p(x_ctrl)|^2 pulls an unperturbed cell's P to zero"},
}

# What `make replicate` runs (the 30-minute budget on a 2-core CPU); "all" runs every one.
DEFAULT_TASKS = ("knockdowns_cross_line",)
DEFAULT_VARIANTS = ("paper", "control offset swap", "cross-line pairs", "context-free P",
                    "zero control code")


def _names(spec, known: dict, default) -> list[str]:
    if spec in (None, "", "default"):
        return list(default)
    if spec == "all":
        return list(known)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown name(s) {unknown}; valid: {list(known)}, 'default' or 'all'")
    return names


def task_names(spec="default") -> list[str]:
    """Task names from ``"default"``, ``"all"`` or a comma-separated list of `TASKS` keys."""
    return _names(spec, TASKS, DEFAULT_TASKS)


def variant_names(spec="default") -> list[str]:
    """Variant names from ``"default"``, ``"all"`` or a comma-separated list of `VARIANTS` keys."""
    return _names(spec, VARIANTS, DEFAULT_VARIANTS)


def variant_training(spec="default") -> list[dict]:
    """The distinct training overrides of the variants (variants that only change prediction
    share the paper model's training)."""
    seen, out = set(), []
    for name in variant_names(spec):
        key = repr(VARIANTS[name]["training"])
        if key not in seen:
            seen.add(key)
            out.append(VARIANTS[name]["training"])
    return out


def teaching_curve(adata, *, profile="quick", seed: int = 0, weights=None, data_dir=None,
                   progress: bool = False):
    """The learning curve of one training with the **test** score tracked, for teaching only.

    Trains the model exactly as `xtcdr.pipeline.train_or_load` does (same seed, same settings:
    the tracked score reads the model in eval mode and draws nothing from the training's random
    streams, so the weights match the cached checkpoint's) and logs, at every validation, the
    mean R^2 on DEGs of the cross-context prediction of the held-out test conditions as
    ``track_test_r2_deg`` and on all genes as ``track_test_r2_all``. The test score is never read by
    early stopping or by the selection of weights. The history is cached as
    ``<checkpoint folder>__curve.csv`` beside the checkpoints.
    """
    import json
    import warnings

    import pandas as pd

    from . import evaluate
    from .model import XTransferCDR
    from .pipeline import _checkpoint_settings
    from .train import fit, set_seed

    folder, mcfg, tcfg = _checkpoint_settings(adata, profile, seed, None, None, weights, data_dir)
    path = folder.with_name(folder.name + "__curve.csv")
    if path.exists():
        history = pd.read_csv(path)
        history.attrs["training"] = json.loads(path.with_suffix(".json").read_text())
        return history
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tasks = evaluate.transfer_tasks(adata, split="test", protocol="cross", seed=0)

    def score(column):
        return lambda model: evaluate.evaluate_transfer(evaluate.ModelPredictor(model), adata, tasks=tasks)[column].mean()

    set_seed(tcfg.seed)
    model = XTransferCDR(adata.n_vars, mcfg)
    history = fit(model, adata, tcfg, progress=progress,
                  track={"test_r2_deg": score("r2_deg"), "test_r2_all": score("r2_all")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    history.to_csv(tmp, index=False)
    path.with_suffix(".json").write_text(json.dumps(history.attrs["training"], default=float))
    os.replace(tmp, path)  # the CSV last: its presence means the curve is complete
    return history


__all__ += ["teaching_curve"]


def control_code_offsets(model, adata) -> dict:
    """How far apart the cell lines' unperturbed cells sit in P, against a typical perturbation code.

    Returns ``offsets`` (line -> the mean ``E_p`` of its control cells), ``distance`` (the mean
    Euclidean distance between two lines' mean control codes) and ``typical_code`` (the median norm
    of the perturbed cells' codes relative to their line's mean control code). Training pairs hold
    only perturbed cells, so nothing asks ``E_p(x_ctrl)`` to be zero, and a cross-context prediction
    ``D(S_B + P_A)`` carries line A's offset into line B.
    """
    import numpy as np

    from .evaluate import dense_float32
    from .probes import embed

    model.eval()
    device = next(model.parameters()).device
    line = adata.obs["cell_type"].astype(str).to_numpy()
    control = adata.obs["is_control"].to_numpy(bool)
    X = dense_float32(adata.X)
    offsets = {ct: embed(model.encode_perturbation, X, np.flatnonzero(control & (line == ct)), device=device).mean(0)
               for ct in sorted(set(line))}
    names = list(offsets)
    distances = [float(np.linalg.norm(offsets[a] - offsets[b])) for i, a in enumerate(names) for b in names[i + 1:]]
    perturbed = np.flatnonzero(~control)
    codes = embed(model.encode_perturbation, X, perturbed, device=device)
    relative = codes - np.stack([offsets[ct] for ct in line[perturbed]])
    return {"offsets": offsets, "distance": float(np.mean(distances)) if distances else float("nan"),
            "typical_code": float(np.median(np.linalg.norm(relative, axis=1)))}


__all__ += ["control_code_offsets"]


def evaluate_variants(adata, tasks: dict, variants: list[str], *, seeds, profile="quick",
                      oracle: str | None = None, progress: bool = False) -> dict:
    """Train or load every variant's models and score them on ``tasks`` (protocol -> task list).

    Returns variant -> `xtcdr.experiments.Evaluation`; the ``"paper"`` variant's (always included,
    first) carries the baselines and the oracle. A variant that only changes prediction
    (``offset``) reuses the paper model's checkpoints.
    """
    from .config import LossWeights, get_profile
    from .experiments import MODEL, evaluate_methods

    prof = get_profile(profile)
    names = ["paper"] + [v for v in variants if v != "paper"]
    out = {}
    for name in names:
        spec = VARIANTS[name]
        weights = spec["training"].get("weights")
        out[name] = evaluate_methods(
            adata, tasks, seeds=seeds, profile=prof, oracle=oracle if name == "paper" else None,
            baselines=("control", "source_shift", "train_mean") if name == "paper" else (),
            model_label=f"{MODEL}, {name}", progress=progress,
            predictor_kwargs={"offset": spec["offset"]} if spec["offset"] != "none" else None,
            **({"weights": LossWeights(**{**vars(prof.train.weights), **weights})} if weights else {}))
    return out


__all__ += ["evaluate_variants"]
