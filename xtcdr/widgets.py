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
``optimise_tiny_batch``; and the measurements notebook 02 prints its findings from:
``encode_codes`` (the four codes of every pair), ``terms_by_mode`` (the loss terms in eval mode,
in train mode without dropout and in train mode), ``orthogonality_parts`` (does a small
``L_orth`` come from small cosines or from small codes), ``label_cosines`` and
``label_signals`` (does a code carry the cell line, the perturbation, or both),
``loss_drop_summary`` (how far and how fast each term of a trace fell) and ``n_parameters``.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, replace
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .config import LossWeights
from .losses import TERMS, loss_terms

__all__ = ["TinyBatch", "TinyRun", "tiny_batch", "representation_cosines", "calibrate_batch_norm",
           "optimise_tiny_batch", "cosine_orthogonality", "encode_codes", "terms_by_mode",
           "orthogonality_parts", "label_cosines", "label_signals", "loss_drop_summary",
           "n_parameters", "MODES", "LABEL_PAIRS", "has_widget_frontend", "loss_weight_explorer", "pair_explorer", "COSINE_KEYS"]

COSINE_KEYS = ("P vs S (same cell)", "S^a vs S^b (same pair)", "S^a vs S^b (random pair)")


# --------------------------------------------------------------------------------------------
# the tiny optimisation
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cpu_threads():
    """The torch thread count of a CPU training (``xtcdr.train.TRAIN_THREADS``) while the tiny
    optimisation runs: a float32 matmul's rounding depends on how it is split over threads, so a
    fixed count gives the same numbers on any machine, and one thread is also the fastest choice
    for a batch this small on a busy machine. The previous count is restored."""
    from . import train

    before = torch.get_num_threads()
    torch.set_num_threads(int(getattr(train, "TRAIN_THREADS", 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
        with _cpu_threads():
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


def cosine_orthogonality(model, batch: TinyBatch) -> torch.Tensor:
    """``mean_i cos(P_i^a, S_i^a)^2 + cos(P_i^b, S_i^b)^2``: Eq. 1 on cosines instead of dot
    products, so that it cannot be lowered by shrinking the codes (computed in the model's current
    mode, with gradients)."""
    x = torch.cat([batch.x_a, batch.x_b])
    s, p = model.encode_basal(x).float(), model.encode_perturbation(x).float()
    n = len(batch)
    cos2 = F.cosine_similarity(p, s, dim=1) ** 2
    return cos2[:n].mean() + cos2[n:].mean()


def optimise_tiny_batch(model, batch: TinyBatch, *, weights: LossWeights | None = None,
                        steps: int = 200, lr: float = 1e-3, seed: int = 0,
                        orthogonality: str = "dot") -> TinyRun:
    """Full-batch Adam on one tiny batch of pairs (on the CPU, in place), recording every term.

    The batch-norm statistics are first set from the batch (``calibrate_batch_norm``) so that the
    cosines ``before`` see the initial weights as training does. The model is in train mode during
    the steps (dropout, batch norm on the batch) and left in eval mode. Row ``step`` of the trace
    holds the terms computed *before* that update; the last row (``step == steps``) is evaluated
    after the last update, in train mode.

    ``orthogonality="cosine"`` replaces the ``orth`` term (Eq. 1, squared dot products) by
    `cosine_orthogonality` (squared cosines), with the same weight; ``"dot"`` is the paper's.
    """
    weights = weights or LossWeights()
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if orthogonality not in ("dot", "cosine"):
        raise ValueError(f"orthogonality must be 'dot' or 'cosine', got {orthogonality!r}")
    torch.manual_seed(seed)
    calibrate_batch_norm(model, batch)
    before = representation_cosines(model, batch, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rows = []
    model.train()
    with _cpu_threads():
        _adam_steps(model, batch, optimizer, weights, steps, orthogonality, rows)
    model.eval()
    after = representation_cosines(model, batch, seed=seed)
    return TinyRun(pd.DataFrame(rows), before, after, weights)


def _adam_steps(model, batch, optimizer, weights, steps, orthogonality, rows) -> None:
    for step in range(steps + 1):
        terms = loss_terms(model, *batch.tensors, weights)
        if orthogonality == "cosine":
            cos_orth = cosine_orthogonality(model, batch)
            terms["total"] = terms["total"] + weights.orth * (cos_orth - terms["orth"])
            terms["orth"] = cos_orth
        rows.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
        if step == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        if terms["total"].requires_grad:
            terms["total"].backward()
            optimizer.step()


# --------------------------------------------------------------------------------------------
# measurements that notebook 02 prints its findings from
# --------------------------------------------------------------------------------------------
def n_parameters(module: nn.Module) -> int:
    """Number of trainable and frozen parameters (scalars) of a module."""
    return sum(p.numel() for p in module.parameters())


MODES = ("eval (running statistics, no dropout)", "train, dropout off (batch statistics)",
         "train (batch statistics and dropout)")


@torch.no_grad()
def encode_codes(model, batch: TinyBatch) -> dict[str, np.ndarray]:
    """The four codes ``S^a, S^b, P^a, P^b`` of every pair of ``batch`` (eval mode; the model's
    mode is restored), as float arrays of shape (pairs, latent)."""
    was_training = model.training
    model.eval()
    try:
        codes = {"S^a": model.encode_basal(batch.x_a), "S^b": model.encode_basal(batch.x_b),
                 "P^a": model.encode_perturbation(batch.x_a),
                 "P^b": model.encode_perturbation(batch.x_b)}
    finally:
        model.train(was_training)
    return {k: v.float().cpu().numpy() for k, v in codes.items()}


@torch.no_grad()
def terms_by_mode(model, batch: TinyBatch, *, weights: LossWeights | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """The loss terms of one model on one batch in three modes (rows ``MODES``).

    * eval: dropout off, batch norm normalises with its running statistics;
    * train with dropout off: batch norm normalises with the statistics of the batch itself;
    * train: batch statistics and dropout (a seeded draw of the dropout masks).

    As in `optimise_tiny_batch`, the torch seed is set to ``seed`` and the running statistics
    are first set from the batch (`calibrate_batch_norm`), so that the third row is exactly row 0
    of the trace that `optimise_tiny_batch` records for the same model, batch, weights and seed.
    Rows 1 and 2 differ only in the statistics batch norm uses (running statistics: set in one
    train-mode pass, with dropout, and an unbiased variance; batch statistics: those of this
    dropout-free pass, biased variance); rows 2 and 3 differ only in dropout. The model is left
    as it was (weights, running statistics and mode). Columns: the terms of
    ``xtcdr.losses.loss_terms`` and ``total``.
    """
    import copy

    weights = weights or LossWeights()
    state = copy.deepcopy(model.state_dict())
    was_training = model.training
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    rows = {}
    try:
        torch.manual_seed(seed)
        calibrate_batch_norm(model, batch)
        with _cpu_threads():
            model.eval()
            rows[MODES[0]] = loss_terms(model, *batch.tensors, weights)
            model.train()
            for m in dropouts:
                m.eval()
            rows[MODES[1]] = loss_terms(model, *batch.tensors, weights)
            for m in dropouts:
                m.train()
            rows[MODES[2]] = loss_terms(model, *batch.tensors, weights)
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    return pd.DataFrame({mode: {k: float(v) for k, v in terms.items()}
                         for mode, terms in rows.items()}).T


def orthogonality_parts(model, batch: TinyBatch) -> pd.Series:
    """What a value of Eq. 1 is made of, in eval mode: ``L_orth`` itself and, per cell (both sides
    of every pair), the median ``|cos(P_i, S_i)|``, the median norms ``|P_i|``, ``|S_i|`` and
    their product. ``P_i . S_i = |P_i| |S_i| cos(P_i, S_i)``, so a small ``L_orth`` can come from
    small cosines (orthogonal codes) or from small norms (shrunken codes)."""
    c = encode_codes(model, batch)
    p = np.concatenate([c["P^a"], c["P^b"]])
    s = np.concatenate([c["S^a"], c["S^b"]])
    n = len(batch)
    dot = (p * s).sum(1)
    norm_p, norm_s = np.linalg.norm(p, axis=1), np.linalg.norm(s, axis=1)
    cos = dot / np.maximum(norm_p * norm_s, 1e-12)
    return pd.Series({"L_orth (eval)": float((dot[:n] ** 2).mean() + (dot[n:] ** 2).mean()),
                      "median |cos(P, S)|": float(np.median(np.abs(cos))),
                      "median |P| |S|": float(np.median(norm_p * norm_s)),
                      "median |P|": float(np.median(norm_p)),
                      "median |S|": float(np.median(norm_s))})


LABEL_PAIRS = ("same line, same perturbation", "same line, other perturbation",
               "other line, same perturbation", "other line, other perturbation")


def label_cosines(model, batch: TinyBatch) -> pd.DataFrame:
    """Mean cosine similarity of the codes of two cells, by what the two cells share.

    All cells of both sides of ``batch`` are compared with each other (every unordered pair of
    distinct cells, eval mode). Rows ``S`` (basal code) and ``P`` (perturbation code); columns
    ``LABEL_PAIRS``: the two cells share the cell line and the perturbation, the line only, the
    perturbation only, or neither. A code that carries the cell line has *same line* columns
    above *other line* ones; a code that carries the perturbation has *same perturbation*
    columns above the *other perturbation* ones of the same line status. ``attrs["n"]`` holds the
    number of cell pairs per column.
    """
    codes = encode_codes(model, batch)
    line = np.concatenate([batch.cell_type, batch.cell_type]).astype(str)
    pert = np.concatenate([batch.perturbation_a, batch.perturbation_b]).astype(str)
    iu = np.triu_indices(line.size, 1)
    same_line = (line[:, None] == line[None, :])[iu]
    same_pert = (pert[:, None] == pert[None, :])[iu]
    masks = dict(zip(LABEL_PAIRS, (same_line & same_pert, same_line & ~same_pert,
                                   ~same_line & same_pert, ~same_line & ~same_pert)))
    table = {}
    for key in ("S", "P"):
        z = np.concatenate([codes[f"{key}^a"], codes[f"{key}^b"]])
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        cos = (z @ z.T)[iu]
        table[key] = {name: float(cos[m].mean()) if m.any() else np.nan for name, m in masks.items()}
    out = pd.DataFrame(table).T[list(LABEL_PAIRS)]
    out.attrs["n"] = {name: int(m.sum()) for name, m in masks.items()}
    return out


def label_signals(table: pd.DataFrame) -> pd.DataFrame:
    """Two differences of a `label_cosines` table (any index, e.g. before/after stacked):

    * ``line signal`` = *same line, other perturbation* minus *other line, other perturbation*:
      how much a code carries the cell line;
    * ``perturbation signal`` = *same line, same perturbation* minus *same line, other
      perturbation*: how much it carries the perturbation beyond the line.
    """
    same_pert, same_line, _, neither = LABEL_PAIRS
    return pd.DataFrame({"line signal": table[same_line] - table[neither],
                         "perturbation signal": table[same_pert] - table[same_line]})


def loss_drop_summary(trace: pd.DataFrame, terms=None) -> pd.DataFrame:
    """How far and how fast each term of a trace (`optimise_tiny_batch`) fell.

    One row per term (default: the paper's five and ``total``): ``first`` and ``last`` value,
    ``factor`` = first / last, and the first steps at which half and 90% of the drop
    ``first - last`` were reached (NaN when the term did not fall).
    """
    terms = list(terms) if terms is not None else [*TERMS, "total"]
    rows = {}
    for t in terms:
        values = trace[t].to_numpy(float)
        steps = trace["step"].to_numpy()
        first, last = values[0], values[-1]
        drop = first - last
        row = {"first": first, "last": last,
               "factor": first / last if last != 0 else np.inf}
        for label, share in (("step of half the drop", 0.5), ("step of 90% of the drop", 0.9)):
            reached = np.flatnonzero(values <= first - share * drop) if drop > 0 else []
            row[label] = float(steps[reached[0]]) if len(reached) else np.nan
        rows[t] = row
    return pd.DataFrame(rows).T


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
    from .plots_training import plot_tiny_run_summary

    return plot_tiny_run_summary(run.trace, run.before, run.after,
                                 title=_weights_label(run.weights))


def _weights_label(w: LossWeights) -> str:
    """The paper's five weights, and any other term only when it is switched on."""
    shown = {k: v for k, v in asdict(w).items() if k in TERMS or v != 0}
    return "weights  " + "  ".join(f"{k}={v:g}" for k, v in shown.items())


def loss_weight_explorer(make_model: Callable[[], torch.nn.Module], batch: TinyBatch, *,
                         weights: LossWeights | None = None, steps: int = 200, lr: float = 1e-3,
                         seed: int = 0, initial: TinyRun | None = None,
                         interactive: bool | None = None):
    """Sliders for the loss weights, steps and learning rate that re-run the tiny optimisation.

    One slider and one on/off box per term of the paper's objective (``xtcdr.losses.TERMS``);
    the other weights of ``weights`` (the combination term, notebook 08's variants) stay as given.

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

    # the paper's five terms; the others (combination, notebook 08's variants) need inputs that a
    # tiny batch of pairs does not have, so they keep their initial weights
    five = {k: v for k, v in asdict(weights).items() if k in TERMS}
    sliders = {k: W.FloatLogSlider(value=max(v, 1e-3), base=10, min=-3, max=1.5, step=0.25,
                                   description=k, continuous_update=False)
               for k, v in five.items()}
    enabled = {k: W.Checkbox(value=v > 0, description="on", indent=False,
                             layout=W.Layout(width="60px"))
               for k, v in five.items()}
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
        w = replace(weights, **{k: (sliders[k].value if enabled[k].value else 0.0) for k in sliders})
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

    from .plots_training import plot_pair_codes

    if not 0 <= index < len(batch):
        raise ValueError(f"index must be between 0 and {len(batch) - 1}, got {index}")
    codes = encode_codes(model, batch)

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
