"""One evaluation of the paper's protocol over worlds: the model beside baselines and the oracle.

Notebooks 04-09 each score trained models and the baselines that read the same inputs on the same
`xtcdr.evaluate.TransferTask` lists, then print the result in the layout of one of the paper's
tables. What varies between the runs of a table is the **world** (`xtcdr.verdicts`): on a
synthetic twin, run *s* draws the twin with seed *s* (`xtcdr.pipeline.load_world`), chooses its
held-out set by the table's rule on that draw and trains with seed *s*; on real data, *s* is a
fold over held-out perturbations. Every method is scored on every world, so each verdict pairs
the model with a baseline world by world.

- `evaluate_worlds`: for each world, prepare it, build its tasks, train (or load) the model and
  score it and every baseline (and the oracle on a twin); returns an `Evaluation`;
- `Evaluation.table`: a paper-layout table (`xtcdr.report.method_table`) with the paper's rows,
  every method's mean and sd over worlds, and the meta the verdicts need (`Evaluation.table_meta`);
- `configurations_table`: several model configurations (ablations, transfer variants) beside the
  baselines, paired with a reference configuration world by world.

One aggregation rule holds everywhere: a world's value is the mean (or median) over its
conditions (`xtcdr.report.summary_values`), a table cell is the mean over worlds of those values,
and `Evaluation.summary` prints exactly the table's numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import pandas as pd

from . import baselines as _baselines
from .evaluate import DISCRIMINATION_COLUMNS, METRIC_COLUMNS, ModelPredictor, evaluate_transfer, transfer_tasks
from .paper import PAPER, paper_rows
from .report import method_table, summary_values
from .verdicts import WORLDS

__all__ = ["MODEL", "ORACLE", "BASELINE_LABELS", "BASELINES_OF", "DEFAULT_BASELINES", "ALL_METRICS", "label_of", "SELECT", "select_for", "World",
           "Evaluation", "evaluate_worlds", "tasks_for", "PROTOCOL_TEXT", "result_meta",
           "configurations_table", "pitfalls"]

MODEL = "XTransferCDR (ours)"
ORACLE = "oracle (replicate, 10x cells)"
BASELINE_LABELS = {"control": "control", "source_shift": "source shift", "train_mean": "train mean",
                   "additive": "additive", "linear_transfer": "linear transfer", "additive_linear": "additive linear"}
# The baselines of each protocol: every table shows those that read the same inputs as the model.
# Cross-context adds the two linear models the field's benchmarks found hard to beat (a ridge map of
# effects from one context to another; PerturBench's additive linear model); within a context they
# reduce to the source shift, and doubles have their own additive baseline.
BASELINES_OF = {"cross": ("control", "source_shift", "train_mean", "linear_transfer", "additive_linear"),
                "within": ("control", "source_shift", "train_mean"),
                "combination": ("control", "additive", "train_mean")}
DEFAULT_BASELINES = "by protocol"
ALL_METRICS = tuple(METRIC_COLUMNS) + tuple(DISCRIMINATION_COLUMNS)

# The validation signal whose best weights score each protocol (`xtcdr.train`): cross-context
# tables use the transfer validation, the others the within-line validation loss.
SELECT = {"cross": "transfer", "within": "valid", "combination": "valid"}


def select_for(protocol: str) -> str:
    """The monitor (``"transfer"`` or ``"valid"``) whose best weights are scored on ``protocol``."""
    return SELECT.get(protocol, "valid")


def label_of(name: str) -> str:
    """A baseline's row label (``"source_shift"`` -> ``"source shift"``)."""
    return BASELINE_LABELS.get(name, name.replace("_", " "))


@dataclass
class World:
    """One world of an evaluation: its seed, the training seed of its model, its prepared data and
    its tasks (protocol -> list of `xtcdr.evaluate.TransferTask`)."""

    seed: int
    train_seed: int
    adata: object
    tasks: dict


@dataclass
class Evaluation:
    """Per-condition results of every method on every world.

    ``runs[protocol][label]`` is a list of `xtcdr.evaluate.evaluate_transfer` tables, one per world
    in ``worlds`` order; ``kinds[label]`` is ``"model"``, ``"baseline"`` or ``"oracle"``.
    ``models[protocol][i]`` keeps world i's trained model scored on that protocol (the best weights
    of the matching validation, `select_for`) and ``training[protocol][i]`` how its training went
    (`xtcdr.train.training_summary`, with its checkpoint folder). ``varies`` says in words what
    differs between the worlds.
    """

    worlds: list[World]
    runs: dict[str, dict[str, list[pd.DataFrame]]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    models: dict[str, dict[int, object]] = field(default_factory=dict)
    training: dict[str, dict[int, dict]] = field(default_factory=dict)
    model_label: str = MODEL
    varies: str = WORLDS

    @property
    def seeds(self) -> list[int]:
        """The world seeds, in order (what a table's meta calls its seeds)."""
        return [w.seed for w in self.worlds]

    @property
    def protocols(self) -> list[str]:
        return list(self.runs)

    def model(self, world: int = 0, protocol: str | None = None):
        """The trained model of world number ``world`` (its index) scored on ``protocol``."""
        protocol = protocol or next(iter(self.models))
        return self.models[protocol][world]

    def per_world(self, protocol: str, columns: list[str]) -> dict[str, dict[str, list[float]]]:
        """Every method's per-world value of each column: label -> column -> [one per world]."""
        out = {}
        for label, runs in self.runs[protocol].items():
            values = [summary_values(r, columns) for r in runs]
            out[label] = {c: [v[c] for v in values] for c in columns}
        return out

    def summary(self, protocol: str, columns: list[str] | None = None, statistic: str = "mean") -> pd.DataFrame:
        """One row per method: the table's numbers (mean over worlds of each world's mean, or of
        each world's median with ``statistic="median"``) on ``columns`` (default: every metric)."""
        metrics = [c for c in (columns or list(ALL_METRICS)) if c in next(iter(self.runs[protocol].values()))[0]]
        names = [f"median_{c}" if statistic == "median" else c for c in metrics]
        table = self.table(protocol, names)
        table.columns = [c.removeprefix("median_") for c in table.columns]
        return table[["kind", *metrics]]

    def per_condition(self, protocol: str, world: int | None = None) -> dict[str, pd.DataFrame]:
        """Every method's per-condition table: of one world (its index), or of every world stacked
        with a ``world`` column (a condition of world 1 is another draw than the same name in world 0)."""
        out = {}
        for label, runs in self.runs[protocol].items():
            chosen = [(i, runs[i]) for i in ([world] if world is not None else range(len(runs)))]
            out[label] = pd.concat([df.assign(world=self.worlds[i].seed) for i, df in chosen], ignore_index=True)
        return out

    def table(self, protocol: str, columns: list[str], paper_table: str | None = None) -> pd.DataFrame:
        """Paper layout: the paper's rows (when ``paper_table`` is given), then every method with
        its mean and sd over worlds. ``columns`` name statistics as in
        `xtcdr.report.summary_values` (``r2_deg``, ``median_r2_all``, ``r2_all_delta`` ...)."""
        rows = list(paper_rows(paper_table, columns)) if paper_table else []
        for label, runs in self.runs[protocol].items():
            rows.append((label, self.kinds[label], [summary_values(r, columns) for r in runs]))
        return method_table(rows, columns)

    def convergence(self, protocol: str) -> dict:
        """Per world: steps, stop reason, the monitor used, its best step, whether it converged
        and the checkpoint folder (so that a training shared by tables is counted once)."""
        monitor = select_for(protocol)
        out = {"monitor": monitor, "seeds": [], "steps": [], "best_step": [], "converged": [],
               "stop_reason": [], "checkpoints": []}
        for i, w in enumerate(self.worlds):
            info = self.training.get(protocol, {}).get(i)
            if not info:
                continue
            used = info.get("selected") or monitor
            mon = info["monitors"].get(used, {})
            out["seeds"].append(int(w.seed))
            out["steps"].append(int(info["steps"]))
            out["best_step"].append(int(mon.get("best_step", info["steps"])))
            out["converged"].append(bool(mon.get("converged", False)))
            out["stop_reason"].append(str(info["stop_reason"]))
            out["checkpoints"].append(str(info.get("checkpoint", "")))
            out["monitor"] = used
        return out

    def table_meta(self, protocol: str, columns: list[str]) -> dict:
        """What the verdicts of a saved table need (`xtcdr.verdicts.table_verdicts`): every row's
        per-world values, how each world's model trained, and what the worlds vary."""
        return {"per_seed": self.per_world(protocol, columns),
                "training": {self.model_label: self.convergence(protocol)},
                "varies": self.varies, "seeds": self.seeds}

    def restrict(self, keep: Callable[[pd.DataFrame], pd.Series]) -> "Evaluation":
        """The same evaluation with only the conditions where ``keep(table)`` is True (e.g. one
        target line, or a group of doubles); every method keeps the same conditions, models and
        training summaries stay."""
        def cut(df):
            out = df[keep(df).to_numpy(bool)].reset_index(drop=True)
            out.attrs.update(df.attrs)
            return out

        return replace(self, runs={p: {k: [cut(df) for df in v] for k, v in d.items()} for p, d in self.runs.items()})


def tasks_for(*protocols: str, split: str = "test") -> Callable:
    """A ``tasks_of`` function for `evaluate_worlds`: the tasks of ``protocols`` on ``split``, the
    within-context halves seeded by the world (`xtcdr.evaluate.transfer_tasks`)."""
    def tasks_of(adata, world: int) -> dict:
        return {p: transfer_tasks(adata, split=split, protocol=p, seed=world) for p in protocols}
    return tasks_of


def evaluate_worlds(data, tasks_of: Callable, *, worlds, training_seeds=None, profile="quick",
                    baselines=DEFAULT_BASELINES, oracle: bool = True, model_label: str = MODEL,
                    progress: bool = True, predictor_kwargs: dict | None = None,
                    varies: str | None = None, cell_metrics: bool = True, **train_kwargs) -> Evaluation:
    """Prepare each world, train (or load) its model and score it and the baselines on its tasks.

    Parameters
    ----------
    data
        A dataset name (`xtcdr.datasets.names()`) or an AnnData in the standard schema: world *s*
        is ``pipeline.prepare(data, profile=profile, seed=s)`` (a twin drawn with seed *s*; real
        data split with seed *s*, a fold for ``test_rule="kfold"``). Or a function ``s -> prepared
        AnnData`` for anything else.
    tasks_of
        ``(adata, world) -> {protocol: [TransferTask]}`` (`tasks_for`); every method sees exactly
        these tasks.
    worlds
        The world seeds.
    training_seeds
        The training seed of each world's model (default: the world's own seed). One world with
        several training seeds shows what training alone varies (notebook 04).
    baselines
        Names from `xtcdr.baselines.BASELINES`, fitted on each world's training cells: a tuple for
        every protocol, a dict protocol -> tuple, or the default: `BASELINES_OF` each protocol.
    cell_metrics
        Also score predicted cells against observed cells (the energy distance ``edist``,
        `xtcdr.evaluate.evaluate_transfer`).
    oracle
        Add the replicate oracle on synthetic twins (`ReplicateOracle.from_synthetic`, 10x the
        cells of a condition, drawn from the same world); ignored for real data.
    predictor_kwargs
        Passed to `xtcdr.evaluate.ModelPredictor` (``offset="swap"``: notebook 08's variant that
        changes prediction only).
    train_kwargs
        Passed to `xtcdr.pipeline.train_or_load` (``weights=`` for ablations, ``model_config=`` ...).
    """
    from tqdm.auto import tqdm

    from .pipeline import dataset_name, prepare, train_or_load
    from .synthetic import TWINS

    worlds = [int(s) for s in worlds]
    training_seeds = [int(s) for s in (training_seeds if training_seeds is not None else worlds)]
    if not worlds or len(training_seeds) != len(worlds):
        raise ValueError(f"evaluate_worlds needs at least one world and one training seed per world, got "
                         f"worlds {worlds} and training seeds {training_seeds}")
    def baselines_for(protocol):
        if baselines == DEFAULT_BASELINES:
            return BASELINES_OF.get(protocol, BASELINES_OF["within"])
        return baselines.get(protocol, ()) if isinstance(baselines, dict) else tuple(baselines)

    names = {b for p in ("cross", "within", "combination") for b in baselines_for(p)}
    unknown = sorted(names - set(_baselines.BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; valid: {sorted(_baselines.BASELINES)}")
    if varies is None:
        varies = WORLDS if len(set(worlds)) == len(worlds) else f"training seeds (world {worlds[0]})"
    result = Evaluation(worlds=[], model_label=model_label, varies=varies)
    prepared: dict[int, object] = {}
    for i, (s, t) in enumerate(tqdm(list(zip(worlds, training_seeds)), desc="worlds", disable=not progress)):
        if s not in prepared:
            prepared[s] = data(s) if callable(data) else prepare(data, profile=profile, seed=s, verbose=False)
        adata = prepared[s]
        tasks = tasks_of(adata, s)
        result.worlds.append(World(s, t, adata, tasks))
        for protocol, task_list in tasks.items():
            model, history = train_or_load(adata, profile=profile, seed=t, progress=progress, verbose=False,
                                           select=select_for(protocol), **train_kwargs)
            result.models.setdefault(protocol, {})[i] = model
            result.training.setdefault(protocol, {})[i] = dict(history.attrs.get("training", {}))
            runs = result.runs.setdefault(protocol, {})
            runs.setdefault(model_label, []).append(
                evaluate_transfer(ModelPredictor(model, **(predictor_kwargs or {})), adata, tasks=task_list,
                                  cell_metrics=cell_metrics, seed=s))
        result.kinds[model_label] = "model"
        fitted = {n: _baselines.get_baseline(n).fit(adata) for n in sorted({b for p in tasks for b in baselines_for(p)})}
        result.kinds.update({label_of(n): "baseline" for n in fitted})
        name = dataset_name(adata) if not isinstance(data, str) else data
        reference = None
        if oracle and name in TWINS:
            reference = _baselines.ReplicateOracle.from_synthetic(name, adata).fit(adata)
            result.kinds[ORACLE] = "oracle"
        for protocol, task_list in tasks.items():
            predictors = {label_of(n): fitted[n] for n in baselines_for(protocol)}
            if reference is not None:
                predictors[ORACLE] = reference
            for label, predictor in predictors.items():
                result.runs[protocol].setdefault(label, []).append(
                    evaluate_transfer(predictor, adata, tasks=task_list, cell_metrics=cell_metrics, seed=s))
    return result


# ----------------------------------------------------------------------------- saved tables
PROTOCOL_TEXT = {
    "cross": "cross-context transfer: target (B, d) predicted from the measured cells of d in every other "
             "context A and the controls of B; the predictions from the sources averaged",
    "within": "within-context reading: the cells of (B, d) split into seeded disjoint halves, the first "
              "half read, the second scored; DEGs chosen from the scored half",
    "combination": "a double a+b predicted from the measured singles a and b in the same context",
}


def result_meta(result: Evaluation, protocol: str, columns: list[str], **fields) -> dict:
    """The meta of a saved table of ``result`` on ``protocol``: ``fields`` (dataset, title, part,
    claim ...) plus what the verdicts need (`Evaluation.table_meta`) and the protocol in words."""
    text = PROTOCOL_TEXT.get(protocol, protocol)
    meta = {"metrics": list(columns), "protocol": text, "protocol_short": text.split(":")[0],
            "n_conditions": [int(len(r)) for r in result.runs[protocol][result.model_label]]}
    meta.update(result.table_meta(protocol, columns))
    meta.update(fields)
    return meta


def configurations_table(runs: dict, protocol: str, columns: list[str], *, reference: str,
                         label=None, paper_table: str | None = None) -> tuple[pd.DataFrame, dict]:
    """One table of several model configurations (ablations, transfer variants) and the baselines.

    ``runs``: configuration -> `Evaluation` on the same worlds; the ``reference`` configuration's
    evaluation carries the baselines. Rows: the paper's rows of ``paper_table`` (when given), each
    configuration (mean ± sd over worlds), then the baselines. The meta holds every row's per-world
    values and each configuration's training, and ``paired_reference`` (the reference's row), so
    that `xtcdr.verdicts.table_verdicts` compares every configuration with the reference world by
    world.
    """
    label = label or (lambda name: name)
    ref = runs[reference]
    for name, ev in runs.items():
        if ev.seeds != ref.seeds:
            raise ValueError(f"configuration {name!r} ran on worlds {ev.seeds}, the reference on {ref.seeds}: "
                             "a paired table needs the same worlds")
    rows = list(paper_rows(paper_table, columns)) if paper_table else []
    per_seed, training = {}, {}
    for name, ev in runs.items():
        values = [summary_values(r, columns) for r in ev.runs[protocol][ev.model_label]]
        rows.append((label(name), "model", values))
        per_seed[label(name)] = {c: [v[c] for v in values] for c in columns}
        training[label(name)] = ev.convergence(protocol)
    for lab, dfs in ref.runs[protocol].items():
        if lab == ref.model_label:
            continue
        values = [summary_values(r, columns) for r in dfs]
        rows.append((lab, ref.kinds[lab], values))
        per_seed[lab] = {c: [v[c] for v in values] for c in columns}
    text = PROTOCOL_TEXT.get(protocol, protocol)
    meta = {"per_seed": per_seed, "training": training, "paired_reference": label(reference),
            "varies": ref.varies, "seeds": ref.seeds, "metrics": list(columns),
            "protocol": text, "protocol_short": text.split(":")[0]}
    return method_table(rows, columns), meta


def pitfalls(cross: pd.DataFrame, within: pd.DataFrame, paper_table: str, *, n_cells: pd.DataFrame,
             sd: pd.Series | None = None, against_shift: dict | None = None) -> list[str]:
    """The metric pitfalls of notebook 04, as sentences printed from a run's summaries.

    ``cross`` / ``within``: `Evaluation.summary` of each reading (rows: methods); ``n_cells``:
    scored cells per condition (one column per reading); ``sd``: the model's sd over worlds of
    the DEG column of the saved table, when there are several worlds; ``against_shift``: metric ->
    `xtcdr.verdicts.Verdict` of the model against the source shift (``r2_deg``, ``r2_deg_delta``),
    whose words the comparison sentence uses.
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
               "correlation of the control baseline measures how alike cells of one context are, not the "
               "response; only the delta correlation asks whether the predicted *change* points the right way.")

    words = "; ".join(f"on {m}: {v.word} {v.interval()}" for m, v in (against_shift or {}).items())
    out.append(f"3. **The source shift reads exactly the model's inputs** (controls of B, cells of d in A) and "
               f"adds the shift measured in A. It reaches $R^2$ DEGs {S.loc[shift, 'r2_deg']:.3f} and delta "
               f"$R^2$ DEGs {S.loc[shift, 'r2_deg_delta']:.3f}; the model's mean over worlds is "
               f"{S.loc[MODEL, 'r2_deg']:.3f} and {S.loc[MODEL, 'r2_deg_delta']:.3f}"
               + (f". The model against the source shift, over worlds: {words}." if words else
                  " (the verdicts with their intervals are in the tables)."))
    out.append(f"4. **The train-mean baseline ignores which drug it predicts.** It scores $R^2$ DEGs "
               f"{S.loc[tmean, 'r2_deg']:.3f} and delta Pearson {S.loc[tmean, 'pcc_all_delta']:.3f}: that much "
               f"of a score is a generic drug response. The model's delta Pearson is {S.loc[MODEL, 'pcc_all_delta']:.3f}.")
    if ORACLE in S.index:
        shown = ("r2_all", "r2_deg", "r2_deg_delta", "pcc_all_delta")
        above = [(n, m) for n in S.index if n != ORACLE for m in shown
                 if pd.notna(S.loc[n, m]) and S.loc[n, m] > S.loc[ORACLE, m]]
        out.append(f"5. **The oracle** (replicate means from 10x the cells) scores $R^2$ all {S.loc[ORACLE, 'r2_all']:.3f}, "
                   f"DEGs {S.loc[ORACLE, 'r2_deg']:.3f}, delta DEGs {S.loc[ORACLE, 'r2_deg_delta']:.3f}: knowing the "
                   "true mean does not reach 1.0, because the scored cells are a sample. "
                   + (f"No method is above it on these {len(shown)} metrics." if not above else
                      "Above it: " + "; ".join(f"{n} on {m}" for n, m in above)
                      + " (closer to this sample's mean, not closer to the truth)."))
    else:
        out.append("5. No oracle on real data: an independent replicate would be needed.")
    spread = (f"the model's sd over worlds of mean $R^2$ DEGs (cross) is {float(sd.loc[MODEL]):.3f}"
              if sd is not None and pd.notna(sd.get(MODEL)) else "one world: no sd")
    out.append(f"6. **Cells per condition.** Cross: {n_cells['cross'].mean():.1f} scored cells per condition "
               f"(median {n_cells['cross'].median():.0f}); within: {n_cells['within'].mean():.1f} scored and "
               f"as many read; {spread}.")
    out.append(f"7. **The within-context reading is a different task.** The source shift's prediction there is "
               f"the mean of the other half of the very condition that is scored: $R^2$ DEGs "
               f"{W.loc[shift, 'r2_deg']:.3f} within versus {S.loc[shift, 'r2_deg']:.3f} across contexts; the "
               f"model {W.loc[MODEL, 'r2_deg']:.3f} versus {S.loc[MODEL, 'r2_deg']:.3f}. Numbers from the two "
               "readings must never be compared with each other.")
    return out
