"""Double perturbations (notebook 06, the paper's Table 4 and Figure 4): what the tables need
beside `xtcdr.experiments`.

A double a+b is predicted from the measured singles a and b; the fair baseline adds the two
single effects in expression space (`xtcdr.baselines.AdditiveBaseline`). This module holds the
steps of the notebook that are not one call of `xtcdr.experiments`:

- `add_oracle`: the replicate oracle of a synthetic twin added to an evaluation, and returned for
  reuse (the residual analysis reads it);
- `group_evaluations`: one evaluation per group of doubles (additive / interacting on a twin),
  keeping the training summaries so that each group's table carries its verdicts;
- `residual_table`: the scores of `xtcdr.experiments.interaction_residuals` as a method table
  with the model's per-seed values (verdicts against the additive baseline);
- `residual_energy`: how much of each double's response additivity misses, and how much of that
  is sampling noise;
- `control_code_offset`: the perturbation code of unperturbed cells, counted twice in a sum of
  two codes;
- `figure_double`: which double the Figure 4 analog shows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .evaluate import _deg_positions, dense_float32, evaluate_transfer
from .experiments import ORACLE, Evaluation
from .report import method_table

__all__ = ["same_double", "interaction_residuals", "interaction_groups", "additive_noise", "subset",
           "RESIDUAL_METRICS", "add_oracle", "group_evaluations", "residual_columns", "residual_table",
           "residual_energy", "control_code_offset", "figure_double", "fifth_loss_facts"]

# the residual scores shown: the direction on the DEGs, the share removed on all genes and on the
# DEGs (on all genes the residual is mostly sampling noise, `residual_energy`)
RESIDUAL_METRICS = ["residual_pcc_deg", "residual_r2", "residual_r2_deg"]


def subset(evaluation: Evaluation, perturbations) -> Evaluation:
    """The same evaluation restricted to the conditions of ``perturbations`` (e.g. the doubles a
    simulator marks as interacting); every method keeps the same conditions."""
    keep = {str(p) for p in perturbations}
    return evaluation.restrict(lambda df: df["perturbation"].astype(str).isin(keep))


def same_double(a: str, b: str, sep: str = "+") -> bool:
    """Whether two combination names hold the same singles in any order ('A+B' == 'B+A')."""
    return sorted(str(a).split(sep)) == sorted(str(b).split(sep))


def interaction_residuals(adata, tasks, predictors: dict, *, additive, reference=None) -> pd.DataFrame:
    """How well each predictor's departure from additivity matches the reference's, per double.

    For a double a+b, with ``A`` the additive prediction (control + both measured single effects,
    `xtcdr.baselines.AdditiveBaseline`) and ``O`` the reference's mean profile (the replicate
    oracle on a twin, else the observed mean), the *true residual* is ``O - A`` (what additivity
    misses) and a predictor's *predicted residual* is ``M - A``. Returns one row per (method,
    condition): ``residual_pcc`` / ``residual_pcc_deg`` (Pearson correlation of the two
    residuals over all genes / the condition's DEGs; NaN for a zero residual),
    ``residual_r2`` / ``residual_r2_deg`` = 1 - |O - M|^2 / |O - A|^2 (the share of the true
    residual's energy the predictor removes: > 0 exactly when it is closer to the reference than
    the additive prediction is; 0 for the additive baseline itself), and the norms of both
    residuals (``true_norm``, ``pred_norm``).

    ``predictors``: label -> fitted `xtcdr.evaluate.Predictor`; ``additive`` and ``reference``
    are fitted predictors too; ``reference=None`` uses the observed mean of the scored cells
    (real data: it carries their sampling noise, so even a perfect predictor scores below 1). Each task's prediction is the mean over its sources, as in
    `xtcdr.evaluate.evaluate_transfer`.
    """
    from .evaluate import _deg_positions, dense_float32, pearson

    X = dense_float32(adata.X)

    def mean_prediction(predictor, task):
        return np.mean([np.asarray(predictor.predict(X, task, s), dtype=np.float64)
                        for s in task.sources], axis=0)

    def share(true_res, pred_res):
        denominator = float(np.sum(true_res ** 2))
        return 1.0 - float(np.sum((true_res - pred_res) ** 2)) / denominator if denominator > 0 else float("nan")

    rows = []
    for task in tasks:
        degs = (np.asarray(task.deg_idx, dtype=np.int64) if task.deg_idx is not None
                else _deg_positions(adata, task.condition))
        base = mean_prediction(additive, task)
        ref = (X[task.target_idx].mean(0, dtype=np.float64) if reference is None
               else mean_prediction(reference, task))
        true_res = ref - base
        for label, predictor in predictors.items():
            pred_res = mean_prediction(predictor, task) - base
            rows.append({"method": label, "condition": task.condition,
                         "perturbation": task.perturbation,
                         "residual_pcc": pearson(true_res, pred_res),
                         "residual_pcc_deg": pearson(true_res[degs], pred_res[degs]) if degs.size > 1 else float("nan"),
                         "residual_r2": share(true_res, pred_res),
                         "residual_r2_deg": share(true_res[degs], pred_res[degs]) if degs.size > 1 else float("nan"),
                         "true_norm": float(np.linalg.norm(true_res)),
                         "pred_norm": float(np.linalg.norm(pred_res))})
    return pd.DataFrame(rows)




def interaction_groups(adata, doubles) -> dict[str, list[str]]:
    """Split ``doubles`` into ``"additive"`` and ``"interacting"`` by a simulator's truth.

    Reads ``adata.uns['truth']['interacting']`` (the doubles given a latent interaction by
    `xtcdr.synthetic`; names compared in any order of their singles). For analysis only: the
    protocol never reads the truth. Raises KeyError on data without a truth (real data).
    """
    truth = adata.uns.get("truth", {})
    if "interacting" not in truth:
        raise KeyError("adata.uns['truth']['interacting'] is missing: only the synthetic twins know "
                       "which doubles interact (real data has no such list).")
    interacting = [str(p) for p in np.asarray(truth["interacting"]).ravel()]
    groups = {"additive": [], "interacting": []}
    for d in doubles:
        key = "interacting" if any(same_double(d, p) for p in interacting) else "additive"
        groups[key].append(str(d))
    return groups




def additive_noise(X: np.ndarray, task, reference_cells: np.ndarray | None = None, genes=None) -> float:
    """Expected squared norm of the sampling noise in ``O - A`` for one double (cells independent).

    ``A = mean(x^a) + mean(x^b) - mean(x^ctrl)`` over the task's input cells (the additive
    prediction), ``O`` the mean of ``reference_cells`` (rows of a reference experiment, e.g. the
    oracle's replicate; None: no reference noise). Each mean of n cells carries the variance
    var_g / n per gene; the variances of independent means add. Summed over ``genes`` (all when
    None). Subtract it from ``|O - A|^2`` to estimate the systematic non-additive part.
    """
    cols = slice(None) if genes is None else np.asarray(genes)

    def var_of_mean(rows):
        values = np.asarray(rows, dtype=np.float64)[:, cols]
        return values.var(0, ddof=1) / values.shape[0] if values.shape[0] > 1 else np.zeros(values.shape[1])

    total = var_of_mean(X[np.asarray(task.control_idx)])
    for rows, _ in task.sources[0].components:
        total = total + var_of_mean(X[np.asarray(rows)])
    if reference_cells is not None:
        total = total + var_of_mean(reference_cells)
    return float(np.sum(total))




def add_oracle(result: Evaluation, adata, tasks: dict, dataset: str):
    """Add the replicate oracle (`xtcdr.baselines.ReplicateOracle.from_synthetic`: the same
    conditions with 10x the cells) to ``result`` on every protocol of ``tasks`` and return it
    fitted, or None when ``dataset`` is not a synthetic twin (real data has no replicate)."""
    from .baselines import ReplicateOracle
    from .synthetic import TWINS

    if dataset not in TWINS:
        return None
    oracle = ReplicateOracle.from_synthetic(dataset, adata).fit(adata)
    for protocol, task_list in tasks.items():
        result.others.setdefault(protocol, {})[ORACLE] = evaluate_transfer(oracle, adata, tasks=task_list)
    result.kinds[ORACLE] = "oracle"
    return oracle


def group_evaluations(result: Evaluation, groups: dict[str, list[str]]) -> dict[str, Evaluation]:
    """One evaluation per non-empty group of perturbations (`xtcdr.experiments.subset`), with the
    training summaries of ``result`` kept (so each group's table says how the model trained)."""
    out = {}
    for name, members in groups.items():
        if members:
            sub = subset(result, members)
            sub.training = result.training
            out[name] = sub
    return out


def residual_columns(groups) -> list[str]:
    """The columns of `residual_table`: every residual metric per group, ``"residual_r2_deg (additive)"``."""
    return [f"{m} ({g})" for g in groups for m in RESIDUAL_METRICS]


def residual_table(residuals: pd.DataFrame, groups, model_labels: list[str], others: list[str],
                   result: Evaluation, protocol: str = "combination") -> tuple[pd.DataFrame, dict]:
    """The residual scores as a method table, and the meta its verdicts need.

    ``residuals``: `xtcdr.experiments.interaction_residuals` with a ``group`` column;
    ``model_labels``: its method labels of the model, one per seed of ``result`` in seed order,
    shown as one row (``result.model_label``: mean and sd over seeds); ``others``: baseline labels
    (one row each). Each cell is the mean over the group's doubles. The meta holds the columns,
    the model's per-seed values, how each seed trained (``result.convergence(protocol)``) and what
    the seeds vary, as `xtcdr.experiments.result_meta` gives them for a metric table.
    """
    from .experiments import PROTOCOL_TEXT

    columns = residual_columns(groups)

    def values(label):
        rows = residuals[residuals["method"] == label]
        return {f"{m} ({g})": float(rows.loc[rows["group"] == g, m].mean()) for g in groups for m in RESIDUAL_METRICS}

    per_seed = [values(label) for label in model_labels]
    rows = [(result.model_label, "model", per_seed)] + [(label, "baseline", values(label)) for label in others]
    text = PROTOCOL_TEXT.get(protocol, protocol)
    meta = {"metrics": columns, "protocol": text, "protocol_short": text.split(":")[0],
            "n_conditions": int(residuals["condition"].nunique()),
            "per_seed": {result.model_label: {c: [v[c] for v in per_seed] for c in columns}},
            "training": {result.model_label: result.convergence(protocol)},
            "varies": result.varies, "seeds": list(result.seeds)}
    return method_table(rows, columns), meta


def residual_energy(adata, tasks, oracle, additive, group_of: dict) -> pd.DataFrame:
    """How much of each double's response additivity misses, relative to the response.

    Per double and gene set (all genes, the double's DEGs), with ``O`` the oracle's replicate mean,
    ``A`` the additive prediction and ``c`` the control mean: ``missed`` = |O - A|^2 / |O - c|^2,
    ``noise`` = the expected sampling noise of ``O - A`` (`xtcdr.experiments.additive_noise`, with
    the replicate's cells) over the same denominator, ``systematic`` = missed - noise. Returns the
    medians over the doubles of each group (index: group, genes).
    """
    X = dense_float32(adata.X)
    rep_X = dense_float32(oracle.replicate.X)
    rep_cond = oracle.replicate.obs["condition"].astype(str).to_numpy()
    rows = []
    for t in tasks:
        O, A = oracle.predict(X, t, None), additive.predict(X, t, t.sources[0])
        degs = _deg_positions(adata, t.condition)
        control = X[t.control_idx].mean(0, dtype=np.float64)
        for genes, label in ((slice(None), "all genes"), (degs, "DEGs")):
            noise = additive_noise(X, t, rep_X[rep_cond == t.condition], genes=None if label == "all genes" else degs)
            miss = float(np.sum((O - A)[genes] ** 2))
            response = float(np.sum((O - control)[genes] ** 2))
            rows.append({"group": group_of.get(t.perturbation, "doubles"), "genes": label, "missed": miss / response,
                         "noise": noise / response, "systematic": (miss - noise) / response})
    return pd.DataFrame(rows).groupby(["group", "genes"]).median()


def control_code_offset(model, X, tasks) -> dict:
    """The perturbation code of unperturbed cells against the codes of the singles.

    Returns ``offset`` = |mean E_p(control cells)| (controls of the first task's line),
    ``shift`` = the mean distance of a single's cell code from that mean (every input cell of
    every task), and ``ratio`` = offset / shift. A sum of two codes carries the offset twice.
    """
    from .probes import embed

    single_rows = np.unique(np.concatenate([rows for t in tasks for rows, _ in t.sources[0].components]))
    device = next(model.parameters()).device
    model.eval()
    p_ctrl = embed(model.encode_perturbation, X, np.asarray(tasks[0].control_idx), device=device).mean(0)
    p_single = embed(model.encode_perturbation, X, single_rows, device=device)
    offset = float(np.linalg.norm(p_ctrl))
    shift = float(np.linalg.norm(p_single - p_ctrl, axis=1).mean())
    return {"offset": offset, "shift": shift, "ratio": offset / shift if shift > 0 else float("nan")}


def figure_double(scored: list[str], *, requested: str = "", named=(), residuals: pd.DataFrame | None = None,
                  interacting=(), additive_label: str = "additive") -> str:
    """The double of the Figure 4 analog.

    ``requested`` (a name in any order of its singles) when given, raising ValueError when it is
    not scored; else the first of ``named`` (the paper's named doubles) that is scored; else the
    double with the largest true residual |O - A| (``residuals['true_norm']`` of the additive
    baseline's rows) among ``interacting`` (or among all scored doubles when none interact).
    """
    if requested:
        found = next((p for p in scored if same_double(p, requested)), None)
        if found is None:
            raise ValueError(f"figure_double {requested!r} is not a scored double; valid: {scored}")
        return found
    for name in named:
        found = next((p for p in scored if same_double(p, name)), None)
        if found is not None:
            return found
    pool = residuals[(residuals["method"] == additive_label)
                     & residuals["perturbation"].isin(list(interacting) or scored)]
    return str(pool.sort_values("true_norm").iloc[-1]["perturbation"])


def fifth_loss_facts(adata, history: pd.DataFrame) -> dict:
    """What the released code's fifth loss trained on: the training doubles, their triples (a
    cell of a, of b and of a+b, `xtcdr.pairing.combination_triples`) and the fifth term's
    training value at the first and the last evaluation (``train_combo`` in the history)."""
    from .pairing import combination_triples

    pert = adata.obs["perturbation"].astype(str)
    train = adata.obs["split"].astype(str) == "train"
    doubles = sorted(set(pert[train & pert.str.contains("+", regex=False)]))
    column = history["train_combo"].dropna() if "train_combo" in history else pd.Series(dtype=float)
    return {"training doubles": len(doubles), "triples": len(combination_triples(adata, split="train", seed=0)),
            "first": float(column.iloc[0]) if len(column) else float("nan"),
            "last": float(column.iloc[-1]) if len(column) else float("nan")}
