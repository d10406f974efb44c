"""Double perturbations (notebook 06, the paper's Table 4 and Figure 4): what the tables need
beside `xtcdr.experiments`.

A double a+b is predicted from the measured singles a and b; the fair baseline adds the two
single effects in expression space (`xtcdr.baselines.AdditiveBaseline`). The evaluation itself is
`xtcdr.experiments.evaluate_worlds` with the combination tasks (the replicate oracle included on a
synthetic twin); every world is its own draw, with its own doubles, its own truth about which of
them interact and its own model. This module holds the steps of the notebook that are not one
call of `xtcdr.experiments`, each over every world:

- `interaction_groups` / `world_groups`: additive and interacting doubles by a simulator's truth;
  `group_evaluations`: one evaluation per group, each world keeping its own members;
- `world_oracles`: the fitted replicate oracle of every world (the residual analysis reads it);
- `interaction_residuals` / `world_residuals`: what each method adds beyond the additive
  prediction, against what additivity misses; `residual_table`: those scores as a method table
  with every row's per-world values (verdicts paired by world);
- `additive_noise`, `residual_energy` / `world_energy`: how much of what additivity misses is
  sampling noise; `room_verdicts` / `room_sentence`: whether a systematic part is left over;
- `distances_on_degs`, `residual_example`, `plot_residuals_on_degs`: the figure of the residual
  verdict, on the DEGs, with the noise floor;
- `control_code_offset`, `figure_double`, `fifth_loss_facts`: the rest of the notebook.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .evaluate import _deg_positions, dense_float32, pearson
from .experiments import PROTOCOL_TEXT, Evaluation, label_of
from .report import method_table
from .verdicts import MARGIN, Verdict, verdict

__all__ = ["RESIDUAL_METRICS", "subset", "same_double", "interaction_residuals", "interaction_groups",
           "additive_noise", "world_groups", "group_evaluations", "world_oracles", "world_residuals",
           "residual_columns", "residual_table", "residual_energy", "world_energy", "room_verdicts",
           "room_sentence", "distances_on_degs", "residual_example", "plot_residuals_on_degs", "control_code_offset",
           "figure_double", "fifth_loss_facts"]

# the residual scores shown: the direction on the DEGs, the share removed on all genes and on the
# DEGs (on all genes the residual is mostly sampling noise, `residual_energy`)
RESIDUAL_METRICS = ["residual_pcc_deg", "residual_r2", "residual_r2_deg"]


def subset(evaluation: Evaluation, perturbations) -> Evaluation:
    """The same evaluation restricted to the conditions of ``perturbations`` in every world (e.g.
    a named double of real data, whose worlds are splits of the same cells); every method keeps
    the same conditions. Groups that differ by world: `group_evaluations`."""
    keep = {str(p) for p in perturbations}
    return evaluation.restrict(lambda df: df["perturbation"].astype(str).isin(keep))


def same_double(a: str, b: str, sep: str = "+") -> bool:
    """Whether two combination names hold the same singles in any order ('A+B' == 'B+A')."""
    return sorted(str(a).split(sep)) == sorted(str(b).split(sep))


def _mean_prediction(predictor, X, task) -> np.ndarray:
    return np.mean([np.asarray(predictor.predict(X, task, s), dtype=np.float64) for s in task.sources], axis=0)


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
    residuals (``true_norm``, ``pred_norm``; ``true_norm_deg`` = |O - A| on the DEGs).

    ``predictors``: label -> fitted `xtcdr.evaluate.Predictor`; ``additive`` and ``reference``
    are fitted predictors too; ``reference=None`` uses the observed mean of the scored cells
    (real data: it carries their sampling noise, so even a perfect predictor scores below 1).
    Each task's prediction is the mean over its sources, as in `xtcdr.evaluate.evaluate_transfer`.
    """
    X = dense_float32(adata.X)

    def share(true_res, pred_res):
        denominator = float(np.sum(true_res ** 2))
        return 1.0 - float(np.sum((true_res - pred_res) ** 2)) / denominator if denominator > 0 else float("nan")

    rows = []
    for task in tasks:
        degs = (np.asarray(task.deg_idx, dtype=np.int64) if task.deg_idx is not None
                else _deg_positions(adata, task.condition))
        base = _mean_prediction(additive, X, task)
        ref = (X[task.target_idx].mean(0, dtype=np.float64) if reference is None
               else _mean_prediction(reference, X, task))
        true_res = ref - base
        for label, predictor in predictors.items():
            pred_res = _mean_prediction(predictor, X, task) - base
            on_degs = degs.size > 1
            rows.append({"method": label, "condition": task.condition, "perturbation": task.perturbation,
                         "residual_pcc": pearson(true_res, pred_res),
                         "residual_pcc_deg": pearson(true_res[degs], pred_res[degs]) if on_degs else float("nan"),
                         "residual_r2": share(true_res, pred_res),
                         "residual_r2_deg": share(true_res[degs], pred_res[degs]) if on_degs else float("nan"),
                         "true_norm": float(np.linalg.norm(true_res)),
                         "true_norm_deg": float(np.linalg.norm(true_res[degs])),
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


def additive_noise(X: np.ndarray, task, reference_cells: np.ndarray | None = None, genes=None,
                   per_gene: bool = False):
    """Expected squared norm of the sampling noise in ``O - A`` for one double (cells independent).

    ``A = mean(x^a) + mean(x^b) - mean(x^ctrl)`` over the task's input cells (the additive
    prediction), ``O`` the mean of ``reference_cells`` (rows of a reference experiment, e.g. the
    oracle's replicate; None: no reference noise). Each mean of n cells carries the variance
    var_g / n per gene; the variances of independent means add. Summed over ``genes`` (all when
    None), or with ``per_gene=True`` the variance of each gene of ``genes`` (an array). Subtract
    the sum from ``|O - A|^2`` to estimate the systematic non-additive part.
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
    return total if per_gene else float(np.sum(total))


# ----------------------------------------------------------------------------- over worlds
def world_groups(result: Evaluation, protocol: str = "combination") -> list[dict[str, list[str]]]:
    """Per world (in ``result.worlds`` order): its scored doubles by group. On a twin the groups
    are ``additive`` and ``interacting`` (`interaction_groups`, each world's own truth); on data
    without a truth one group, ``"all doubles"``."""
    out = []
    for world in result.worlds:
        doubles = [t.perturbation for t in world.tasks[protocol]]
        has_truth = "interacting" in world.adata.uns.get("truth", {})
        out.append(interaction_groups(world.adata, doubles) if has_truth else {"all doubles": doubles})
    return out


def group_evaluations(result: Evaluation, groups: list[dict[str, list[str]]]) -> dict[str, Evaluation]:
    """One evaluation per group, world i keeping the conditions of ``groups[i][group]`` (the
    doubles differ from world to world); groups empty in every world are left out. Models and
    training summaries stay, so each group's table says how the models trained."""
    if len(groups) != len(result.worlds):
        raise ValueError(f"group_evaluations needs one group dict per world: got {len(groups)} for "
                         f"{len(result.worlds)} worlds (use world_groups(result))")
    def cut(df, keep):
        kept = df[df["perturbation"].astype(str).isin(keep).to_numpy()].reset_index(drop=True)
        kept.attrs.update(df.attrs)
        return kept

    out = {}
    for name in dict.fromkeys(name for g in groups for name in g):
        members = [{str(p) for p in g.get(name, [])} for g in groups]
        if not any(members):
            continue
        runs = {p: {label: [cut(df, members[i]) for i, df in enumerate(dfs)] for label, dfs in by_label.items()}
                for p, by_label in result.runs.items()}
        out[name] = replace(result, runs=runs)
    return out


def world_oracles(result: Evaluation) -> list:
    """The fitted replicate oracle of every world (`xtcdr.baselines.ReplicateOracle.from_synthetic`,
    10x the cells of each condition, drawn from the same world), None for a world of real data."""
    from .baselines import ReplicateOracle
    from .pipeline import dataset_name
    from .synthetic import TWINS

    out = []
    for world in result.worlds:
        name = dataset_name(world.adata)
        out.append(ReplicateOracle.from_synthetic(name, world.adata).fit(world.adata) if name in TWINS else None)
    return out


def world_residuals(result: Evaluation, oracles: list, groups: list[dict], *, protocol: str = "combination",
                    others=("additive", "train_mean")) -> pd.DataFrame:
    """`interaction_residuals` of the model and the baselines ``others`` on every world, stacked.

    World i's model (``result.model(i, protocol)``), its baselines fitted on its training cells and
    its reference (``oracles[i]``, the observed mean when None) on its tasks. Columns as
    `interaction_residuals`, plus ``world`` (the seed), ``group`` (from ``groups[i]``) and, with a
    replicate, ``noise`` / ``noise_deg``: the expected squared sampling noise of ``O - A`` over all
    genes / the DEGs (`additive_noise`, the replicate's cells included).
    """
    from .baselines import AdditiveBaseline, get_baseline
    from .evaluate import ModelPredictor

    frames = []
    for i, world in enumerate(result.worlds):
        adata, tasks = world.adata, world.tasks[protocol]
        additive = AdditiveBaseline().fit(adata)
        predictors = {result.model_label: ModelPredictor(result.model(i, protocol))}
        predictors |= {label_of(n): (additive if n == "additive" else get_baseline(n).fit(adata)) for n in others}
        df = interaction_residuals(adata, tasks, predictors, additive=additive, reference=oracles[i])
        group_of = {p: g for g, members in groups[i].items() for p in members}
        df.insert(0, "world", world.seed)
        df["group"] = df["perturbation"].map(group_of)
        if oracles[i] is not None:
            X = dense_float32(adata.X)
            rep = oracles[i].replicate
            rep_X, rep_cond = dense_float32(rep.X), rep.obs["condition"].astype(str).to_numpy()
            noise = {t.condition: (additive_noise(X, t, rep_X[rep_cond == t.condition]),
                                   additive_noise(X, t, rep_X[rep_cond == t.condition],
                                                  genes=_deg_positions(adata, t.condition))) for t in tasks}
            df["noise"] = df["condition"].map(lambda c: noise[c][0])
            df["noise_deg"] = df["condition"].map(lambda c: noise[c][1])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def residual_columns(groups) -> list[str]:
    """The columns of `residual_table`: every residual metric per group, ``"residual_r2_deg (additive)"``."""
    return [f"{m} ({g})" for g in groups for m in RESIDUAL_METRICS]


def residual_table(residuals: pd.DataFrame, groups, result: Evaluation,
                   protocol: str = "combination") -> tuple[pd.DataFrame, dict]:
    """The residual scores as a method table, and the meta its verdicts need.

    ``residuals``: `world_residuals` (columns ``world``, ``method``, ``group`` and the residual
    metrics); ``groups``: the group names shown. Rows: the model (``result.model_label``), then
    every other method of ``residuals`` as a baseline. A world's value is the mean over that
    world's doubles of the group; a cell is the mean over worlds (± sd), as in the metric tables.
    The meta holds every row's per-world values (``per_seed``), how each world's model trained
    (``result.convergence(protocol)``) and what the worlds vary, so that
    `xtcdr.verdicts.table_verdicts` pairs the model with each baseline world by world.
    """
    columns = residual_columns(groups)
    seeds = list(result.seeds)
    missing = sorted(set(seeds) - set(residuals["world"]))
    if missing:
        raise ValueError(f"residuals lack world(s) {missing} of the evaluation; compute them with world_residuals")
    labels = [result.model_label] + [m for m in dict.fromkeys(residuals["method"]) if m != result.model_label]

    def world_values(label):
        rows = residuals[residuals["method"] == label]
        out = []
        for s in seeds:
            here = rows[rows["world"] == s]
            out.append({f"{m} ({g})": float(here.loc[here["group"] == g, m].mean()) if (here["group"] == g).any()
                        else float("nan") for g in groups for m in RESIDUAL_METRICS})
        return out

    values = {label: world_values(label) for label in labels}
    rows = [(label, "model" if label == result.model_label else "baseline", values[label]) for label in labels]
    text = PROTOCOL_TEXT.get(protocol, protocol)
    per_world_doubles = residuals[residuals["method"] == result.model_label].groupby("world")["condition"].nunique()
    meta = {"metrics": columns, "protocol": text, "protocol_short": text.split(":")[0],
            "n_conditions": [int(per_world_doubles.get(s, 0)) for s in seeds],
            "per_seed": {label: {c: [v[c] for v in values[label]] for c in columns} for label in labels},
            "training": {result.model_label: result.convergence(protocol)},
            "varies": result.varies, "seeds": seeds}
    return method_table(rows, columns), meta


def residual_energy(adata, tasks, oracle, additive, group_of: dict) -> pd.DataFrame:
    """How much of each double's response additivity misses, relative to the response.

    Per double and gene set (all genes, the double's DEGs), with ``O`` the oracle's replicate mean,
    ``A`` the additive prediction and ``c`` the control mean: ``missed`` = |O - A|^2 / |O - c|^2,
    ``noise`` = the expected sampling noise of ``O - A`` (`additive_noise`, with the replicate's
    cells) over the same denominator, ``systematic`` = missed - noise. Returns the medians over
    the doubles of each group (index: group, genes).
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


def world_energy(result: Evaluation, oracles: list, groups: list[dict], protocol: str = "combination") -> pd.DataFrame:
    """`residual_energy` of every world with a replicate, stacked: index (world, group, genes),
    each value the median over that world's doubles of the group. Empty without any replicate."""
    from .baselines import AdditiveBaseline

    frames = {}
    for i, world in enumerate(result.worlds):
        if oracles[i] is None:
            continue
        group_of = {p: g for g, members in groups[i].items() for p in members}
        frames[world.seed] = residual_energy(world.adata, world.tasks[protocol], oracles[i],
                                             AdditiveBaseline().fit(world.adata), group_of)
    return pd.concat(frames, names=["world"]) if frames else pd.DataFrame()


def room_verdicts(energy: pd.DataFrame, genes: str = "DEGs", varies: str | None = None) -> dict[str, Verdict]:
    """Per group: is a systematic non-additive part left over once sampling noise is removed?

    ``energy``: `world_energy`. The per-world ``systematic`` share of the response on ``genes``
    is compared with zero (`xtcdr.verdicts.verdict`): *beats* = a systematic part beyond the noise
    (room for a method to beat the additive baseline), *loses to* = less than the expected noise,
    *equivalent* = within ±`xtcdr.verdicts.MARGIN` of zero, a share of the response's energy, the
    units of 1 - R^2 (the margin of R^2 verdicts).
    """
    from .verdicts import WORLDS

    out = {}
    for group in energy.index.get_level_values("group").unique():
        values = energy.xs((group, genes), level=("group", "genes"))["systematic"]
        out[str(group)] = verdict(values.to_numpy(float), 0.0, method=f"systematic non-additive part ({group} doubles)",
                                  other_name="zero", metric=f"share of the response on the {genes}",
                                  varies=varies or WORLDS, margin=MARGIN)
    return out


def room_sentence(group: str, found: Verdict) -> str:
    """What `room_verdicts` says about one group, in words derived from the verdict's word. On the
    ``"interacting"`` group a systematic part includes the interaction, which nothing read from
    the singles shows, so there it is not all room for a predictor."""
    where = f"On the {group} doubles, the part of the response additivity misses beyond sampling noise is"
    detail = f"{found.interval()} of the response's energy on their DEGs ({found.n} worlds)"
    needed = f"; about {found.needed} worlds would resolve it if the spread held" if found.needed else ""
    above = ("there is room for a predictor that reads only the singles to beat the additive baseline there"
             if group != "interacting" else
             "it includes the interaction, which no predictor that reads only the singles can know; only "
             "the rest (decoding a latent sum) is room to beat the additive baseline")
    return {"beats": f"{where} above zero, {detail}: {above}.",
            "equivalent": f"{where} equivalent to zero within ±{found.margin:g}, {detail}: no room to beat "
                          "the additive baseline beyond the noise of its inputs.",
            "loses to": f"{where} below zero, {detail}: additivity misses no more than the expected noise, "
                        "so there is no measurable room to beat it.",
            }.get(found.word, f"{where} not resolved, {detail} ({found.word}{needed}): whether there is "
                              "room is open on these worlds.")


# ----------------------------------------------------------------------------- the figure
def distances_on_degs(residuals: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per double: the squared distances to the reference on its DEGs of the additive prediction
    (``additive`` = |O - A|^2) and of ``method`` (``method`` = |O - M|^2 = (1 - residual_r2_deg)
    |O - A|^2), and ``noise`` (``noise_deg``, the expected |O - A|^2 from sampling alone), with
    ``world`` and ``group``. Needs `world_residuals` with a replicate."""
    if "noise_deg" not in residuals:
        raise KeyError("residuals without 'noise_deg': the noise floor needs a replicate (world_residuals on a twin)")
    rows = residuals[residuals["method"] == method]
    additive = rows["true_norm_deg"].to_numpy(float) ** 2
    return pd.DataFrame({"world": rows["world"].to_numpy(), "perturbation": rows["perturbation"].to_numpy(),
                         "group": rows["group"].astype(str).to_numpy(), "additive": additive,
                         "method": (1.0 - rows["residual_r2_deg"].to_numpy(float)) * additive,
                         "noise": rows["noise_deg"].to_numpy(float)})


def residual_example(adata, task, oracle, predictor) -> dict:
    """One double's residuals on its DEGs, for the right panel of `plot_residuals_on_degs`:
    ``true`` = O - A (``O`` the replicate oracle's mean, ``A`` the additive prediction), ``pred`` =
    M - A for ``predictor``, ``noise_sd`` = the sampling sd of O - A per DEG (`additive_noise`
    per gene, the replicate's cells included) and ``name``."""
    from .baselines import AdditiveBaseline

    X = dense_float32(adata.X)
    degs = _deg_positions(adata, task.condition)
    additive = _mean_prediction(AdditiveBaseline().fit(adata), X, task)
    rep = oracle.replicate
    rep_rows = dense_float32(rep.X)[rep.obs["condition"].astype(str).to_numpy() == task.condition]
    variance = additive_noise(X, task, rep_rows, genes=degs, per_gene=True)
    return {"true": (_mean_prediction(oracle, X, task) - additive)[degs],
            "pred": (_mean_prediction(predictor, X, task) - additive)[degs],
            "noise_sd": np.sqrt(variance), "name": f"{task.perturbation}: its {degs.size} DEGs"}


def plot_residuals_on_degs(points: pd.DataFrame, *, method: str = "model", example: dict | None = None,
                           title: str | None = None):
    """The residual verdict as a figure: on the DEGs, with the noise floor drawn.

    Left: one marker per double (every world; `distances_on_degs`), the additive prediction's
    squared distance to the reference |O - A|^2 against ``method``'s |O - M|^2, both divided by
    that double's expected sampling noise of O - A (so the noise floor is the line at 1 on both
    axes: left of it, additivity misses no more than noise). Below the diagonal ``method`` is
    closer to the reference than the additive baseline; the legend counts those doubles per
    group. Right (``example``: dict with ``true`` = O - A and ``pred`` = M - A on the DEGs,
    ``noise_sd`` = the sampling sd of O - A per DEG, ``name``): one double gene by gene, with
    ±2 sd of noise drawn around zero.
    """
    import matplotlib.pyplot as plt

    n_panels = 2 if example is not None else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.6 * n_panels, 4.8), squeeze=False)
    ax = axes[0, 0]
    x = points["additive"].to_numpy(float) / points["noise"].to_numpy(float)
    y = points["method"].to_numpy(float) / points["noise"].to_numpy(float)
    groups = points["group"].to_numpy(str)
    for i, g in enumerate(sorted(set(groups))):
        keep = groups == g
        ax.scatter(x[keep], y[keep], s=28, color=f"C{i}", edgecolors="white", linewidths=0.5,
                   label=f"{g}: {method} closer for {int((y[keep] < x[keep]).sum())} of {int(keep.sum())}")
    lo = float(min(np.nanmin(x), np.nanmin(y), 1.0)) / 1.5
    hi = float(max(np.nanmax(x), np.nanmax(y), 1.0)) * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
    ax.axvline(1.0, color="0.4", lw=1.0, ls=":")
    ax.axhline(1.0, color="0.4", lw=1.0, ls=":")
    ax.axvspan(lo, 1.0, color="0.9", lw=0, zorder=0, label="left of the noise floor: |O - A|² within sampling noise")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("additive: |O - A|² on the DEGs / expected noise")
    ax.set_ylabel(f"{method}: |O - M|² on the DEGs / expected noise")
    ax.set_title(f"every held-out double of {points['world'].nunique()} world(s); below the line: {method} closer",
                 fontsize=9)
    ax.legend(fontsize=7.5, loc="lower right")
    if example is not None:
        ax = axes[0, 1]
        true, pred = np.asarray(example["true"], float), np.asarray(example["pred"], float)
        sd = np.asarray(example["noise_sd"], float)
        order = np.argsort(true)
        ax.fill_between(np.arange(true.size), -2 * sd[order], 2 * sd[order], color="0.85", step="mid",
                        label="±2 sd sampling noise of O - A")
        ax.plot(np.arange(true.size), true[order], "o", ms=4, color="black", label="true residual O - A")
        ax.plot(np.arange(true.size), pred[order], "x", ms=5, color="crimson", label=f"{method}: M - A")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xlabel("the double's DEGs, sorted by O - A")
        ax.set_ylabel("departure from the additive prediction (log1p expression)")
        ax.set_title(example.get("name", ""), fontsize=9)
        ax.legend(fontsize=7.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the rest
def control_code_offset(model, X, tasks) -> dict:
    """The perturbation code of unperturbed cells against the codes of the singles.

    Returns ``offset`` = |mean E_p(control cells)| (controls of the first task's context),
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
    Pass one world's ``scored`` doubles and residuals.
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

