"""Classroom explorers (ipywidgets) for notebook 02, and the tiny optimisation they re-run.

Two explorers:

* ``loss_weight_explorer``: sliders for the five loss weights (Eq. 6), the number of Adam steps and
  the learning rate; each change re-runs the tiny optimisation on a small batch of pairs and
  redraws the loss curves and the cosine summary (is P orthogonal to S, do the two sides of a
  pair share a basal state).
* ``pair_explorer``: a dropdown that picks one pair and shows its four latent codes
  ``S^a, S^b, P^a, P^b``.

Both degrade to a static matplotlib figure of their initial setting when there is no widget
frontend: when ipywidgets cannot be imported, outside a Jupyter kernel, when the notebook is
executed headless (papermill and nbval run cells with ``allow_stdin=False``, an interactive
frontend such as JupyterLab with ``True``), or when the environment variable ``XTCDR_HEADLESS``
is set to a non-empty value other than ``0``.

The building blocks are plain functions that notebooks call directly: ``tiny_batch`` (a few
real training pairs as tensors), ``representation_cosines``, ``calibrate_batch_norm`` and
``optimise_tiny_batch``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .config import LossWeights
from .losses import loss_terms

__all__ = ["TinyBatch", "TinyRun", "tiny_batch", "representation_cosines", "calibrate_batch_norm",
           "optimise_tiny_batch",
           "has_widget_frontend", "loss_weight_explorer", "pair_explorer", "COSINE_KEYS"]

COSINE_KEYS = ("P vs S (same cell)", "S^a vs S^b (same pair)", "S^a vs S^b (random pair)")


# --------------------------------------------------------------------------------------------
# the tiny optimisation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyBatch:
    """A few training pairs as tensors, with their labels (one entry per pair)."""

    x_a: torch.Tensor
    x_b: torch.Tensor
    x_ctrl_a: torch.Tensor
    x_ctrl_b: torch.Tensor
    cell_type: np.ndarray
    perturbation_a: np.ndarray
    perturbation_b: np.ndarray

    def __len__(self) -> int:
        return int(self.x_a.shape[0])

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """``(x_a, x_b, x_ctrl_a, x_ctrl_b)``, the arguments of ``xtcdr.losses.loss_terms``."""
        return self.x_a, self.x_b, self.x_ctrl_a, self.x_ctrl_b

    def table(self) -> pd.DataFrame:
        """One row per pair: cell type and the two perturbations."""
        return pd.DataFrame({"cell_type": self.cell_type, "perturbation_a": self.perturbation_a,
                             "perturbation_b": self.perturbation_b})


def tiny_batch(adata, pairs, n_pairs: int, *, seed: int = 0) -> TinyBatch:
    """``n_pairs`` pairs drawn (seeded, without replacement) from ``pairs`` of ``adata``.

    Parameters
    ----------
    adata
        Prepared data (dense or sparse ``X``).
    pairs
        ``xtcdr.pairing.Pairs`` (row indices into ``adata``).
    n_pairs
        How many pairs to keep (at most ``len(pairs)``).
    """
    if not 1 <= n_pairs <= len(pairs):
        raise ValueError(f"n_pairs must be between 1 and {len(pairs)} (the pairs available), "
                         f"got {n_pairs}")
    pick = np.sort(np.random.default_rng(seed).choice(len(pairs), n_pairs, replace=False))
    rows = [np.asarray(v)[pick] for v in pairs]

    def dense(r):
        X = adata.X[r]
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        return torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))

    ct = adata.obs["cell_type"].astype(str).to_numpy()
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    return TinyBatch(*(dense(r) for r in rows), cell_type=ct[rows[0]],
                     perturbation_a=pert[rows[0]], perturbation_b=pert[rows[1]])


def _random_partners(cell_type: np.ndarray, seed: int) -> np.ndarray:
    """For every pair i another pair j, of another cell type when the batch has several."""
    rng = np.random.default_rng(seed)
    n = cell_type.size
    partners = np.empty(n, dtype=np.int64)
    several = np.unique(cell_type).size > 1
    for i in range(n):
        pool = np.flatnonzero(cell_type != cell_type[i]) if several else np.delete(np.arange(n), i)
        partners[i] = rng.choice(pool) if pool.size else i
    return partners


@torch.no_grad()
def representation_cosines(model, batch: TinyBatch, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Cosine similarities that show disentanglement, computed in eval mode.

    Returns a dict (keys ``COSINE_KEYS``) of arrays:

    * ``P vs S (same cell)``: cos(P_i, S_i) for every cell of both sides (Eq. 1 wants 0);
    * ``S^a vs S^b (same pair)``: cos(S_i^a, S_i^b), two perturbations of one context (Eq. 2
      wants them alike);
    * ``S^a vs S^b (random pair)``: cos(S_i^a, S_j^b) with pair j from another cell type (from any
      other pair when the batch has a single cell type): the reference level.
    """
    was_training = model.training
    model.eval()
    try:
        s_a, s_b = model.encode_basal(batch.x_a), model.encode_basal(batch.x_b)
        p_a, p_b = model.encode_perturbation(batch.x_a), model.encode_perturbation(batch.x_b)
    finally:
        model.train(was_training)
    j = torch.as_tensor(_random_partners(np.asarray(batch.cell_type), seed))
    cos = lambda u, v: F.cosine_similarity(u.float(), v.float(), dim=1).cpu().numpy()  # noqa: E731
    return {COSINE_KEYS[0]: np.concatenate([cos(p_a, s_a), cos(p_b, s_b)]),
            COSINE_KEYS[1]: cos(s_a, s_b),
            COSINE_KEYS[2]: cos(s_a, s_b[j])}


@torch.no_grad()
def calibrate_batch_norm(model, batch: TinyBatch) -> None:
    """Set every batch-norm layer's running statistics to those of ``batch``; no weight changes.

    A fresh network's running statistics are mean 0 and variance 1, which is nothing like
    log-expression, so an untrained model in eval mode would not see its inputs as training does.
    One forward pass of ``loss_terms`` in train mode (cumulative averaging, ``momentum=None``)
    replaces them with the statistics of the batch. The model's mode is restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        loss_terms(model, *batch.tensors)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


class TinyRun(NamedTuple):
    """Result of ``optimise_tiny_batch``: the per-step loss trace and the cosines before/after."""

    trace: pd.DataFrame
    before: dict
    after: dict
    weights: LossWeights


def optimise_tiny_batch(model, batch: TinyBatch, *, weights: LossWeights | None = None,
                        steps: int = 200, lr: float = 1e-3, seed: int = 0) -> TinyRun:
    """Full-batch Adam on one tiny batch of pairs (on the CPU, in place), recording every term.

    The batch-norm statistics are first set from the batch (``calibrate_batch_norm``) so that the
    cosines ``before`` see the initial weights as training does. The model is in train mode during
    the steps (dropout, batch norm on the batch) and left in eval mode. Row ``step`` of the trace
    holds the terms computed *before* that update; the last row (``step == steps``) is evaluated
    after the last update, in train mode.
    """
    weights = weights or LossWeights()
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    torch.manual_seed(seed)
    calibrate_batch_norm(model, batch)
    before = representation_cosines(model, batch, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rows = []
    model.train()
    for step in range(steps + 1):
        terms = loss_terms(model, *batch.tensors, weights)
        rows.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
        if step == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        if terms["total"].requires_grad:
            terms["total"].backward()
            optimizer.step()
    model.eval()
    after = representation_cosines(model, batch, seed=seed)
    return TinyRun(pd.DataFrame(rows), before, after, weights)


# --------------------------------------------------------------------------------------------
# frontend detection and the explorers
# --------------------------------------------------------------------------------------------
def has_widget_frontend() -> bool:
    """True when widgets can be shown and used: ipywidgets imports, the code runs in a Jupyter
    kernel driven by an interactive frontend, and ``XTCDR_HEADLESS`` is not set.

    Headless executors (papermill, nbval, nbconvert) send ``allow_stdin=False`` with every
    cell, interactive frontends send ``True``; that is the signal read here.
    """
    if os.environ.get("XTCDR_HEADLESS", "") not in ("", "0"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return False
    return bool(getattr(kernel, "_allow_stdin", False))


def _display(obj) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain python: nothing to render into
        return
    display(obj)


def _resolve_interactive(interactive: bool | None) -> bool:
    if interactive is None:
        return has_widget_frontend()
    if interactive:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return False
    return bool(interactive)


def _run_figure(run: TinyRun):
    from .plots import plot_tiny_run_summary

    return plot_tiny_run_summary(run.trace, run.before, run.after,
                                 title=_weights_label(run.weights))


def _weights_label(w: LossWeights) -> str:
    return "weights  " + "  ".join(f"{k}={v:g}" for k, v in asdict(w).items())


def loss_weight_explorer(make_model: Callable[[], torch.nn.Module], batch: TinyBatch, *,
                         weights: LossWeights | None = None, steps: int = 200, lr: float = 1e-3,
                         seed: int = 0, initial: TinyRun | None = None,
                         interactive: bool | None = None):
    """Sliders for the loss weights, steps and learning rate that re-run the tiny optimisation.

    Parameters
    ----------
    make_model
        Returns a fresh, freshly initialised model (called with the torch seed set to ``seed``).
    batch
        The pairs to optimise on (``tiny_batch``).
    weights, steps, lr
        The initial setting.
    initial
        A ``TinyRun`` already computed for the initial setting; it is drawn without re-running.
    interactive
        ``None``: widgets when a frontend can use them (``has_widget_frontend``), else a static
        figure. ``False`` forces the static figure.

    Returns
    -------
    The displayed widget (interactive) or the displayed matplotlib Figure (static).
    """
    import matplotlib.pyplot as plt

    weights = weights or LossWeights()

    def run(w: LossWeights, n_steps: int, rate: float) -> TinyRun:
        torch.manual_seed(seed)
        return optimise_tiny_batch(make_model(), batch, weights=w, steps=n_steps, lr=rate, seed=seed)

    first = initial if initial is not None else run(weights, steps, lr)
    if not _resolve_interactive(interactive):
        fig = _run_figure(first)
        _display(fig)
        plt.close(fig)
        return fig

    import ipywidgets as W

    sliders = {k: W.FloatLogSlider(value=max(v, 1e-3), base=10, min=-3, max=1.5, step=0.25,
                                   description=k, continuous_update=False)
               for k, v in asdict(weights).items()}
    enabled = {k: W.Checkbox(value=v > 0, description="on", indent=False,
                             layout=W.Layout(width="60px"))
               for k, v in asdict(weights).items()}
    n_steps = W.IntSlider(value=steps, min=0, max=1000, step=50, description="steps",
                          continuous_update=False)
    rate = W.FloatLogSlider(value=lr, base=10, min=-4, max=-1.5, step=0.25, description="lr",
                            continuous_update=False)
    button = W.Button(description="re-run", button_style="primary")
    status = W.Label()
    out = W.Output()

    def draw(result: TinyRun) -> None:
        with out:
            out.clear_output(wait=True)
            fig = _run_figure(result)
            _display(fig)
            plt.close(fig)

    def rerun(*_):
        w = LossWeights(**{k: (sliders[k].value if enabled[k].value else 0.0) for k in sliders})
        status.value = f"running {n_steps.value} steps ..."
        draw(run(w, n_steps.value, rate.value))
        status.value = "done: " + _weights_label(w)

    button.on_click(rerun)
    rows = [W.HBox([sliders[k], enabled[k]]) for k in sliders]
    box = W.VBox([W.HTML("<b>Loss weights (Eq. 6)</b>: move a slider or untick a term, then "
                         "re-run the tiny optimisation."), *rows, n_steps, rate,
                  W.HBox([button, status]), out])
    draw(first)
    _display(box)
    return box


def pair_explorer(model, batch: TinyBatch, *, index: int = 0, interactive: bool | None = None):
    """A dropdown over the pairs of ``batch`` showing ``S^a, S^b, P^a, P^b`` of the chosen pair.

    Static fallback: the figure of pair ``index``. Returns the displayed widget or Figure.
    """
    import matplotlib.pyplot as plt

    from .plots import plot_pair_codes

    if not 0 <= index < len(batch):
        raise ValueError(f"index must be between 0 and {len(batch) - 1}, got {index}")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        codes = {"S^a": model.encode_basal(batch.x_a), "S^b": model.encode_basal(batch.x_b),
                 "P^a": model.encode_perturbation(batch.x_a),
                 "P^b": model.encode_perturbation(batch.x_b)}
    model.train(was_training)
    codes = {k: v.float().cpu().numpy() for k, v in codes.items()}

    def figure(i: int):
        title = (f"pair {i}: {batch.cell_type[i]}, a = {batch.perturbation_a[i]}, "
                 f"b = {batch.perturbation_b[i]}")
        return plot_pair_codes({k: v[i] for k, v in codes.items()}, title=title)

    if not _resolve_interactive(interactive):
        fig = figure(index)
        _display(fig)
        plt.close(fig)
        return fig

    import ipywidgets as W

    options = [(f"{i}: {batch.cell_type[i]}  {batch.perturbation_a[i]} | {batch.perturbation_b[i]}", i)
               for i in range(len(batch))]
    choice = W.Dropdown(options=options, value=index, description="pair")
    out = W.Output()

    def draw(change=None):
        with out:
            out.clear_output(wait=True)
            fig = figure(choice.value)
            _display(fig)
            plt.close(fig)

    choice.observe(draw, names="value")
    draw()
    box = W.VBox([choice, out])
    _display(box)
    return box
