"""One evaluation run of the paper's protocol: the model over seeds beside baselines and the oracle.

Notebooks 04-07 each score a trained model and the baselines that read the same inputs on the
same `xtcdr.evaluate.TransferTask` lists, then print the result in the layout of one of the
paper's tables. This module holds the shared part:

- `PAPER`: the numbers printed in the paper's Tables 1-5 (Liu & Jin, AAAI 2025), with their
  columns and the dataset they were measured on;
- `evaluate_methods`: train (or load) the model for each seed, score it and every baseline on
  the tasks, and return an `Evaluation`;
- `Evaluation.table`: a paper-layout table (`xtcdr.report.method_table`) with the paper's rows,
  ours (mean and sd over seeds), the baselines and the oracle.

What varies over seeds is the **training seed** only (network initialisation, pairing order,
dropout); the data split is the one of ``adata`` (its rule and seed are in
``uns['xtcdr']['split']``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import baselines as _baselines
from .evaluate import METRIC_COLUMNS, ModelPredictor, compare, evaluate_transfer
from .report import method_table, summary_values

__all__ = ["PAPER", "MODEL", "ORACLE", "BASELINE_LABELS", "Evaluation", "evaluate_methods",
           "paper_rows", "SELECT", "select_for"]

MODEL = "XTransferCDR (ours)"
ORACLE = "oracle (replicate, 10x cells)"
BASELINE_LABELS = {"control": "control", "source_shift": "source shift", "train_mean": "train mean",
                   "additive": "additive"}

_SIX = ["r2_all", "r2_deg", "ev_all", "ev_deg", "pcc_all", "pcc_deg"]
PAPER: dict[str, dict] = {  # Liu & Jin, AAAI 2025; "Baseline" scores the unperturbed profile
    "Table 1": {"dataset": "sci-Plex3",
                "columns": ["mean_r2_all", "mean_r2_deg", "median_r2_all", "median_r2_deg"],
                "rows": {"Baseline": [.50, .29, .49, .12], "chemCPA": [.51, .32, .47, .24],
                         "chemCPA+pretraining": [.68, .54, .75, .64], "cycleCDR": [.72, .55, .80, .69],
                         "XTransferCDR": [.81, .62, .90, .72]}},
    "Table 2": {"dataset": "sci-Plex4", "columns": _SIX,
                "rows": {"Baseline": [.432, .166, .435, .168, .348, .189],
                         "cycleCDR": [.620, .629, .637, .750, .827, .894],
                         "XTransferCDR": [.861, .806, .865, .822, .932, .911]}},
    "Table 3 K562": {"dataset": "Replogle K562", "columns": ["r2_all", "r2_deg", "ev_all", "ev_deg"],
                     "rows": {"Baseline": [.84, .10, .84, .19], "GEARS": [.86, .29, .86, .32],
                              "cycleCDR": [.88, .37, .88, .40], "XTransferCDR": [.90, .68, .90, .72]}},
    "Table 3 RPE-1": {"dataset": "Replogle RPE-1", "columns": ["r2_all", "r2_deg", "ev_all", "ev_deg"],
                      "rows": {"Baseline": [.72, .00, .72, .11], "GEARS": [.80, .27, .81, .30],
                               "cycleCDR": [.82, .45, .82, .46], "XTransferCDR": [.86, .78, .86, .80]}},
    "Table 4": {"dataset": "Norman 2019", "columns": _SIX,
                "rows": {"Baseline": [.852, .166, .859, .398, .927, .711],
                         "XTransferCDR": [.964, .837, .965, .877, .983, .877]}},
    "Table 5": {"dataset": "sci-Plex3", "columns": _SIX,
                "rows": {"without L_cross": [.660, .183, .663, .270, .814, .575],
                         "without L_orth": [.724, .521, .729, .677, .850, .823],
                         "without L_sim": [.752, .521, .755, .615, .857, .782],
                         "all terms": [.817, .626, .819, .717, .905, .861]}},
}


def paper_rows(paper_table: str, columns: list[str] | None = None) -> list[tuple[str, str, dict]]:
    """The paper's rows of ``paper_table`` as ``(f"paper: {name}", "paper", {column: value})``."""
    if paper_table not in PAPER:
        raise ValueError(f"unknown paper table {paper_table!r}; valid: {list(PAPER)}")
    entry = PAPER[paper_table]
    keep = columns or entry["columns"]
    return [(f"paper: {name}", "paper", {c: v for c, v in zip(entry["columns"], values) if c in keep})
            for name, values in entry["rows"].items()]


# The validation signal whose best weights score each protocol (`xtcdr.train`): cross-context
# tables use the transfer validation, the others the within-line validation loss.
SELECT = {"cross": "transfer", "within": "valid", "combination": "valid"}


def select_for(protocol: str) -> str:
    """The monitor (``"transfer"`` or ``"valid"``) whose best weights are scored on ``protocol``."""
    return SELECT.get(protocol, "valid")


@dataclass
class Evaluation:
    """Per-condition results of the model (one table per seed) and of the other methods.

    ``model_runs[protocol]`` is a list of `xtcdr.evaluate.evaluate_transfer` tables, one per seed
    in ``seeds``; ``others[protocol][label]`` the table of a baseline or oracle; ``kinds[label]``
    is ``"baseline"`` or ``"oracle"``. ``models[protocol][seed]`` keeps the trained model scored on
    that protocol (the best weights of the matching validation, `select_for`) and
    ``training[protocol][seed]`` how its training went (`xtcdr.train.training_summary`).
    """

    seeds: list[int]
    model_runs: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    others: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    models: dict[str, dict[int, object]] = field(default_factory=dict)
    training: dict[str, dict[int, dict]] = field(default_factory=dict)
    model_label: str = MODEL
    varies: str = "training seeds"

    def model(self, seed: int | None = None, protocol: str | None = None):
        """The trained model of ``seed`` (default: the first) scored on ``protocol`` (default: the first)."""
        protocol = protocol or next(iter(self.models))
        seed = self.seeds[0] if seed is None else seed
        return self.models[protocol][seed]

    def per_condition(self, protocol: str) -> dict[str, pd.DataFrame]:
        """Every method's per-condition table; the model's metrics averaged over seeds."""
        runs = self.model_runs[protocol]
        model_mean = runs[0].copy()
        metrics = list(METRIC_COLUMNS)
        model_mean[metrics] = np.mean([r[metrics].to_numpy(float) for r in runs], axis=0)
        return {self.model_label: model_mean, **self.others.get(protocol, {})}

    def summary(self, protocol: str, statistic: str = "mean") -> pd.DataFrame:
        """One row per method: the mean (or median) of each metric across conditions."""
        return compare(self.per_condition(protocol)).xs(statistic, level="statistic")

    def per_seed(self, protocol: str, columns: list[str]) -> dict[str, list[float]]:
        """The model's value of each column (`xtcdr.report.summary_values`) for every seed."""
        values = [summary_values(r, columns) for r in self.model_runs[protocol]]
        return {c: [v[c] for v in values] for c in columns}

    def convergence(self, protocol: str) -> dict:
        """Per seed: steps, stop reason, the monitor used, its best step and whether it converged."""
        monitor = select_for(protocol)
        out = {"monitor": monitor, "seeds": [], "steps": [], "best_step": [], "converged": [],
               "stop_reason": []}
        for seed in self.seeds:
            info = self.training.get(protocol, {}).get(seed)
            if info is None:
                continue
            used = info.get("selected") or monitor
            mon = info["monitors"].get(used, {})
            out["seeds"].append(int(seed))
            out["steps"].append(int(info["steps"]))
            out["best_step"].append(int(mon.get("best_step", info["steps"])))
            out["converged"].append(bool(mon.get("converged", False)))
            out["stop_reason"].append(str(info["stop_reason"]))
            out["monitor"] = used
        return out

    def table(self, protocol: str, columns: list[str], paper_table: str | None = None) -> pd.DataFrame:
        """Paper layout: the paper's rows (when ``paper_table`` is given), the model (mean and sd
        over seeds), then the baselines and the oracle. ``columns`` name statistics as in
        `xtcdr.report.summary_values` (``r2_deg``, ``median_r2_all``, ``r2_all_delta`` ...)."""
        rows = list(paper_rows(paper_table, columns)) if paper_table else []
        rows.append((self.model_label, "model",
                     [summary_values(r, columns) for r in self.model_runs[protocol]]))
        rows += [(label, self.kinds[label], summary_values(df, columns))
                 for label, df in self.others.get(protocol, {}).items()]
        return method_table(rows, columns)

    def table_meta(self, protocol: str, columns: list[str]) -> dict:
        """What the verdicts of a saved table need (`xtcdr.report.table_verdicts`): the model's
        per-seed values, how each seed's training went, and what the seeds vary."""
        return {"per_seed": {self.model_label: self.per_seed(protocol, columns)},
                "training": {self.model_label: self.convergence(protocol)},
                "varies": self.varies, "seeds": list(self.seeds)}


def evaluate_methods(adata, tasks: dict[str, list], *, seeds, profile="quick",
                     baselines=("control", "source_shift", "train_mean"), oracle: str | None = None,
                     model_label: str = MODEL, progress: bool = True, predictor_kwargs: dict | None = None,
                     **train_kwargs) -> Evaluation:
    """Train or load the model for each seed and score it and the baselines on the same tasks.

    Parameters
    ----------
    adata
        Prepared data (`xtcdr.pipeline.prepare`).
    tasks
        protocol name -> list of `TransferTask` (every method sees exactly these).
    seeds
        Training seeds; each is cached by `xtcdr.pipeline.train_or_load`. One training per seed
        serves every protocol: each protocol scores the best weights of its matching validation
        (`select_for`: the transfer validation for ``"cross"``, the within-line one otherwise).
    baselines
        Names from `xtcdr.baselines.BASELINES`, fitted on the training cells.
    oracle
        A synthetic twin's name to add the replicate oracle (`ReplicateOracle.from_synthetic`,
        10x the cells of a condition), or None.
    predictor_kwargs
        Passed to `xtcdr.evaluate.ModelPredictor` (``offset="swap"``: notebook 08's variant that
        changes prediction only).
    train_kwargs
        Passed to `train_or_load` (``weights=`` for ablations, ``model_config=`` ...).
    """
    from tqdm.auto import tqdm

    from .pipeline import train_or_load

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_methods needs at least one training seed")
    result = Evaluation(seeds=seeds, model_label=model_label,
                        model_runs={p: [] for p in tasks}, others={p: {} for p in tasks},
                        models={p: {} for p in tasks}, training={p: {} for p in tasks})
    for s in tqdm(seeds, desc="train + score, seeds", disable=not progress):
        for protocol, task_list in tasks.items():
            model, history = train_or_load(adata, profile=profile, seed=s, progress=progress,
                                           verbose=False, select=select_for(protocol), **train_kwargs)
            result.models[protocol][s] = model
            result.training[protocol][s] = dict(history.attrs.get("training", {}))
            result.model_runs[protocol].append(
                evaluate_transfer(ModelPredictor(model, **(predictor_kwargs or {})), adata, tasks=task_list))
    predictors = {BASELINE_LABELS.get(name, name): _baselines.get_baseline(name).fit(adata)
                  for name in baselines}
    result.kinds.update({label: "baseline" for label in predictors})
    if oracle is not None:
        predictors[ORACLE] = _baselines.ReplicateOracle.from_synthetic(oracle, adata).fit(adata)
        result.kinds[ORACLE] = "oracle"
    for protocol, task_list in tasks.items():
        for label, predictor in predictors.items():
            result.others[protocol][label] = evaluate_transfer(predictor, adata, tasks=task_list)
    return result


# ----------------------------------------------------------------------------- combinations
def _subset_table(df: pd.DataFrame, keep: set) -> pd.DataFrame:
    out = df[df["perturbation"].astype(str).isin(keep)].reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


def subset(evaluation: Evaluation, perturbations) -> Evaluation:
    """The same evaluation restricted to the conditions of ``perturbations`` (e.g. the doubles a
    simulator marks as interacting); every method keeps the same conditions."""
    keep = {str(p) for p in perturbations}
    return Evaluation(
        seeds=list(evaluation.seeds),
        model_runs={p: [_subset_table(r, keep) for r in runs] for p, runs in evaluation.model_runs.items()},
        others={p: {k: _subset_table(v, keep) for k, v in d.items()} for p, d in evaluation.others.items()},
        kinds=dict(evaluation.kinds), models=evaluation.models, training=evaluation.training,
        model_label=evaluation.model_label, varies=evaluation.varies)


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


__all__ += ["subset", "same_double", "interaction_residuals"]


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


__all__ += ["interaction_groups"]


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


__all__ += ["additive_noise"]


# ----------------------------------------------------------------------------- saved tables
PROTOCOL_TEXT = {
    "cross": "cross-context transfer: target (B, d) predicted from the measured cells of d in every other "
             "cell line A and the controls of B; the predictions from the sources averaged",
    "within": "within-context reading: the cells of (B, d) split into seeded disjoint halves, the first "
              "half read, the second scored; DEGs chosen from the scored half",
    "combination": "a double a+b predicted from the measured singles a and b in the same line",
}


def paper_columns(paper_table: str, delta: str = "r2_deg_delta") -> list[str]:
    """The paper table's columns plus one delta metric (named like the table's columns)."""
    columns = list(PAPER[paper_table]["columns"])
    prefix = "mean_" if columns[0].startswith("mean_") else ""
    return columns + [prefix + delta]


def result_meta(result: Evaluation, protocol: str, columns: list[str], **fields) -> dict:
    """The meta of a saved table of ``result`` on ``protocol``: ``fields`` (dataset, title, part,
    claim ...) plus what the verdicts need (`Evaluation.table_meta`) and the protocol in words."""
    meta = {"metrics": list(columns), "protocol": PROTOCOL_TEXT.get(protocol, protocol),
            "protocol_short": PROTOCOL_TEXT.get(protocol, protocol).split(":")[0],
            "n_conditions": int(len(result.model_runs[protocol][0]))}
    meta.update(result.table_meta(protocol, columns))
    meta.update(fields)
    return meta


def split_seed_table(runs: list[tuple[int, "Evaluation"]], protocol: str, columns: list[str]):
    """One table over several *splits* (one training seed each): every row's per-split values.

    ``runs``: (split seed, Evaluation with one training seed). Returns ``(table, meta)``; the meta
    holds every row's per-split values (baselines vary with the split too), the training of each
    split's model, and ``varies`` = the split seeds, so that `xtcdr.report.table_verdicts` pairs
    the model with each baseline split by split.
    """
    first = runs[0][1]
    model_values = [summary_values(r.model_runs[protocol][0], columns) for _, r in runs]
    rows = [(first.model_label, "model", model_values)]
    per_seed = {first.model_label: {c: [v[c] for v in model_values] for c in columns}}
    for label, kind in first.kinds.items():
        values = [summary_values(r.others[protocol][label], columns) for _, r in runs]
        rows.append((label, kind, values))
        if kind == "baseline":
            per_seed[label] = {c: [v[c] for v in values] for c in columns}
    training = {k: [] for k in ("seeds", "steps", "best_step", "converged", "stop_reason")}
    for split_seed, r in runs:
        info = r.convergence(protocol)
        training["monitor"] = info["monitor"]
        training["seeds"].append(int(split_seed))
        for k in ("steps", "best_step", "converged", "stop_reason"):
            training[k] += info[k]
    meta = {"per_seed": per_seed, "training": {first.model_label: training},
            "varies": "split seeds (training seed 0)", "seeds": [s for s, _ in runs], "metrics": list(columns),
            "protocol": PROTOCOL_TEXT.get(protocol, protocol),
            "protocol_short": PROTOCOL_TEXT.get(protocol, protocol).split(":")[0]}
    return method_table(rows, columns), meta


__all__ += ["PROTOCOL_TEXT", "paper_columns", "result_meta", "split_seed_table"]


def pitfalls(cross: pd.DataFrame, within: pd.DataFrame, paper_table: str, *, n_cells: pd.DataFrame,
             sd: pd.Series | None = None) -> list[str]:
    """The metric pitfalls of notebook 04, as sentences printed from a run's summaries.

    ``cross`` / ``within``: `Evaluation.summary` of each reading (rows: methods); ``n_cells``:
    scored cells per condition (one column per reading); ``sd``: the model's sd over seeds of
    the DEG column of the saved table, when there are several seeds.
    """
    S, W = cross, within
    control, shift, tmean = (BASELINE_LABELS[k] for k in ("control", "source_shift", "train_mean"))
    base = PAPER[paper_table]["rows"]["Baseline"]
    out = [f"1. **All-gene $R^2$ is inflated by similarity to control.** The control baseline predicts no "
           f"response at all, yet scores mean $R^2$ {S.loc[control, 'r2_all']:.3f} over all genes; on the DEGs "
           f"it falls to {S.loc[control, 'r2_deg']:.3f}. The paper's Baseline row shows the same gap "
           f"({base[0]:.2f} vs {base[1]:.2f})."]
    pcc = "; ".join(f"{n}: {S.loc[n, 'pcc_all']:.3f} raw, "
                    + ("undefined" if pd.isna(S.loc[n, "pcc_all_delta"]) else f"{S.loc[n, 'pcc_all_delta']:.3f}")
                    + " delta" for n in S.index)
    out.append(f"2. **Raw versus delta Pearson correlation** (all genes, mean over conditions): {pcc}. The raw "
               "correlation of the control baseline measures how alike cells of one line are, not the "
               "response; only the delta correlation asks whether the predicted *change* points the right way.")

    def side(metric):
        return "above" if S.loc[MODEL, metric] > S.loc[shift, metric] else "not above"
    out.append(f"3. **The source shift reads exactly the model's inputs** (controls of B, cells of d in A) and "
               f"adds the shift measured in A. It reaches $R^2$ DEGs {S.loc[shift, 'r2_deg']:.3f} and delta "
               f"$R^2$ DEGs {S.loc[shift, 'r2_deg_delta']:.3f}; the model's mean over seeds is "
               f"{S.loc[MODEL, 'r2_deg']:.3f} and {S.loc[MODEL, 'r2_deg_delta']:.3f}, {side('r2_deg')} and "
               f"{side('r2_deg_delta')} it (the verdicts with their intervals are in the tables).")
    out.append(f"4. **The train-mean baseline ignores which drug it predicts.** It scores $R^2$ DEGs "
               f"{S.loc[tmean, 'r2_deg']:.3f} and delta Pearson {S.loc[tmean, 'pcc_all_delta']:.3f}: that much "
               f"of a score is a generic drug response. The model's delta Pearson is {S.loc[MODEL, 'pcc_all_delta']:.3f}.")
    if ORACLE in S.index:
        above = [(n, m) for n in S.index if n != ORACLE for m in ("r2_all", "r2_deg", "r2_deg_delta", "pcc_all_delta")
                 if pd.notna(S.loc[n, m]) and S.loc[n, m] > S.loc[ORACLE, m]]
        out.append(f"5. **The oracle** (replicate means from 10x the cells) scores $R^2$ all {S.loc[ORACLE, 'r2_all']:.3f}, "
                   f"DEGs {S.loc[ORACLE, 'r2_deg']:.3f}, delta DEGs {S.loc[ORACLE, 'r2_deg_delta']:.3f}: knowing the "
                   "true mean does not reach 1.0, because the scored cells are a sample. "
                   + ("No method is above it on these four metrics." if not above else
                      "Above it: " + "; ".join(f"{n} on {m}" for n, m in above)
                      + " (closer to this sample's mean, not closer to the truth)."))
    else:
        out.append("5. No oracle on real data: an independent replicate would be needed.")
    spread = (f"the model's sd over seeds of mean $R^2$ DEGs (cross) is {float(sd.loc[MODEL]):.3f}"
              if sd is not None and pd.notna(sd.get(MODEL)) else "one seed: no sd over seeds")
    out.append(f"6. **Cells per condition.** Cross: {n_cells['cross'].mean():.1f} scored cells per condition "
               f"(median {n_cells['cross'].median():.0f}); within: {n_cells['within'].mean():.1f} scored and "
               f"as many read; {spread}.")
    out.append(f"7. **The within-context reading is a different task.** The source shift's prediction there is "
               f"the mean of the other half of the very condition that is scored: $R^2$ DEGs "
               f"{W.loc[shift, 'r2_deg']:.3f} within versus {S.loc[shift, 'r2_deg']:.3f} across cell lines; the "
               f"model {W.loc[MODEL, 'r2_deg']:.3f} versus {S.loc[MODEL, 'r2_deg']:.3f}. Numbers from the two "
               "readings must never be compared with each other.")
    return out


__all__ += ["pitfalls"]


def configurations_table(runs: dict, protocol: str, columns: list[str], *, reference: str,
                         label=None, paper_table: str | None = None) -> tuple[pd.DataFrame, dict]:
    """One table of several model configurations (ablations, transfer variants) and the baselines.

    ``runs``: configuration -> `Evaluation`; the ``reference`` configuration's evaluation carries
    the baselines (fitted once). Rows: the paper's rows of ``paper_table`` (when given), each
    configuration (mean ± sd over seeds), then the baselines. The meta holds each configuration's
    per-seed values and training, and ``paired_reference`` (the reference's row), so that
    `xtcdr.report.table_verdicts` compares every configuration with the reference seed by seed.
    """
    label = label or (lambda name: name)
    rows = list(paper_rows(paper_table, columns)) if paper_table else []
    per_seed, training = {}, {}
    for name, ev in runs.items():
        values = [summary_values(r, columns) for r in ev.model_runs[protocol]]
        rows.append((label(name), "model", values))
        per_seed[label(name)] = {c: [v[c] for v in values] for c in columns}
        training[label(name)] = ev.convergence(protocol)
    ref = runs[reference]
    rows += [(lab, ref.kinds[lab], summary_values(df, columns)) for lab, df in ref.others[protocol].items()]
    meta = {"per_seed": per_seed, "training": training, "paired_reference": label(reference),
            "varies": "training seeds", "seeds": list(ref.seeds), "metrics": list(columns),
            "protocol": PROTOCOL_TEXT.get(protocol, protocol),
            "protocol_short": PROTOCOL_TEXT.get(protocol, protocol).split(":")[0]}
    return method_table(rows, columns), meta


__all__ += ["configurations_table"]
