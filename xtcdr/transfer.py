"""Notebook 08: transfer to a new context, why the paper's model struggles, and what remedies change.

The paper's training pairs share a context (a cell line), so no loss term ever asks for what a
cross-context prediction needs, ``D(E_s(x_ctrl,B) + E_p(x_A)) ~ x_B``. The variants here ask for it
in different ways; each is a switch of the package (a loss weight, or a change at prediction time
only). A variant that changes training is trained, selected on the transfer validation
(`xtcdr.train`) and scored like the model on every world; the prediction-only variant
(``offset="swap"``) keeps the paper model's weights, selected by the transfer validation computed
*without* the swap.

``TASKS``: the cross-context tasks (Table 1 and Table 2 analogs, the cross-line knockdowns).
``VARIANTS``: name -> what it changes in training (`xtcdr.record.Training` overrides) and at
prediction (``offset`` of `xtcdr.evaluate.ModelPredictor`), with a one-line idea.

- `context_tasks`: a ``tasks_of`` for `xtcdr.experiments.evaluate_worlds` with the cross-context
  tasks of the held-out perturbations measured in two or more contexts (and, for ``"within"``, the
  same conditions read within their context);
- `evaluate_variants`: every variant on the same worlds (`xtcdr.experiments.evaluate_worlds`);
- `variant_verdicts` / `conclusions`: each variant against the paper model and the strongest
  baseline over worlds, and the sentences the notebook prints from them;
- `condition_gains` / `plot_gains`: per-condition gains over the paper model, and where they come from;
- `teaching_curve` (a development world only) and `control_code_offsets`.
"""
from __future__ import annotations

import os

__all__ = ["TASKS", "VARIANTS", "DEFAULT_TASKS", "DEFAULT_VARIANTS", "DEVELOPMENT_WORLDS", "task_names",
           "variant_names", "variant_training", "variant_label", "context_tasks", "evaluate_variants",
           "teaching_curve", "control_code_offsets", "variant_verdicts", "verdict_rows", "strongest_baseline",
           "conclusions", "condition_gains", "gain_sentences", "plot_gains"]

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

# Development worlds (tests/benchmarks/bench_convergence.py: DEV_WORLDS): draws no report uses, kept
# for choosing settings and for the teaching curve, which reads a test score.
DEVELOPMENT_WORLDS = (100, 101, 102)


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
    """The distinct training overrides of the variants, the paper model's first: it always runs (it
    carries the baselines), and variants that only change prediction share its training."""
    seen, out = set(), []
    for name in ["paper", *variant_names(spec)]:
        key = repr(VARIANTS[name]["training"])
        if key not in seen:
            seen.add(key)
            out.append(VARIANTS[name]["training"])
    return out




def variant_label(name: str) -> str:
    """A variant's row label in the tables: ``"XTransferCDR (ours), <variant>"``."""
    from .experiments import MODEL

    return f"{MODEL}, {name}"


def _short(label: str) -> str:
    from .experiments import MODEL

    return label.removeprefix(f"{MODEL}, ")


# ----------------------------------------------------------------------------- tasks and runs
def _cross_and_one_context(adata, split: str, world: int):
    """The cross-context tasks of ``split``, and the conditions whose perturbation is measured in
    one context only (`xtcdr.evaluate.transfer_tasks` reads those within their context under
    ``protocol="auto"``, so nothing is skipped and nothing warns)."""
    from .evaluate import transfer_tasks

    tasks = transfer_tasks(adata, split=split, protocol="auto", seed=int(world))
    return ([t for t in tasks if t.protocol == "cross"],
            sorted(t.condition for t in tasks if t.protocol == "within"))


def one_context_conditions(adata, split: str = "test", world: int = 0) -> list[str]:
    """The held-out conditions of ``split`` whose perturbation is measured in no other context:
    they have no cross-context reading, so the cross-context tables of this notebook leave them out."""
    return _cross_and_one_context(adata, split, world)[1]


def context_tasks(*protocols: str, split: str = "test"):
    """A ``tasks_of`` for `xtcdr.experiments.evaluate_worlds` on the conditions that have a
    cross-context reading.

    ``"cross"``: every held-out condition whose perturbation is measured in another context (one
    measured in a single context has no source to transfer from; `one_context_conditions` lists
    them). ``"within"``: the same conditions read within their own context (seeded halves, seeded by
    the world), so that the two readings score the same conditions.
    """
    protocols = protocols or ("cross",)
    unknown = sorted(set(protocols) - {"cross", "within"})
    if unknown:
        raise ValueError(f"context_tasks reads 'cross' and 'within' only, got {unknown}")

    def tasks_of(adata, world: int) -> dict:
        from .evaluate import transfer_tasks

        cross, _ = _cross_and_one_context(adata, split, world)
        out = {"cross": cross} if "cross" in protocols else {}
        if "within" in protocols:
            keep = {t.condition for t in cross}
            within = transfer_tasks(adata, split=split, protocol="within", seed=int(world))
            out["within"] = [t for t in within if t.condition in keep]
        return out

    return tasks_of


__all__ += ["one_context_conditions"]


def evaluate_variants(data, variants, *, worlds, tasks_of=None, profile="quick", oracle: bool = True,
                      paper=None, progress: bool = False, cell_metrics: bool = True) -> dict:
    """Train or load every variant's model on every world and score it on the same tasks.

    Parameters
    ----------
    data
        What `xtcdr.experiments.evaluate_worlds` takes: a dataset name, a standard-schema AnnData
        (prepared per world) or a function ``world -> prepared AnnData``. A name or an AnnData is
        prepared once per world and shared by every variant.
    variants
        Names of `VARIANTS` (a list or a `variant_names` spec); ``"paper"`` always runs, first.
    worlds
        The world seeds (each world's model is trained with its own seed).
    tasks_of
        ``(adata, world) -> {protocol: tasks}``; default `context_tasks` ``("cross")``.
    oracle
        Give the paper variant the replicate oracle (synthetic twins only).
    paper
        An `xtcdr.experiments.Evaluation` of the paper model on the same worlds to reuse (e.g. one
        with the within-context reading as well); computed here when None.

    Returns
    -------
    variant -> `xtcdr.experiments.Evaluation`, the paper's first. Only the paper's carries the
    baselines (`xtcdr.experiments.BASELINES_OF`: the cross-context ones include the linear
    transfer and the additive linear model) and the oracle. A variant that only changes prediction
    (``offset``) loads the paper model's checkpoints: its weights are those the transfer validation
    chose *without* the change.
    """
    from dataclasses import replace

    from .config import get_profile
    from .experiments import evaluate_worlds
    from .pipeline import prepare

    prof = get_profile(profile)
    worlds = [int(w) for w in worlds]
    tasks_of = tasks_of or context_tasks("cross")
    names = ["paper"] + [v for v in variant_names(variants) if v != "paper"]
    if paper is not None and list(paper.seeds) != worlds:
        raise ValueError(f"the paper model's evaluation covers worlds {paper.seeds}, the variants {worlds}: "
                         "pass an evaluation on the same worlds (or paper=None to compute it)")
    if callable(data):
        world_data = data
    else:
        prepared: dict[int, object] = {}

        def world_data(s):
            if s not in prepared:
                prepared[s] = prepare(data, profile=prof, seed=s, verbose=False)
            return prepared[s]

    out = {}
    for name in names:
        if name == "paper" and paper is not None:
            out[name] = paper
            continue
        spec, is_paper = VARIANTS[name], name == "paper"
        weights = spec["training"].get("weights")
        out[name] = evaluate_worlds(
            world_data, tasks_of, worlds=worlds, profile=prof, baselines="by protocol" if is_paper else (),
            oracle=bool(oracle) and is_paper, model_label=variant_label(name), progress=progress,
            predictor_kwargs={"offset": spec["offset"]} if spec["offset"] != "none" else None,
            cell_metrics=cell_metrics, **({"weights": replace(prof.train.weights, **weights)} if weights else {}))
    return out


def teaching_curve(adata, *, profile="quick", seed: int = 0, weights=None, data_dir=None,
                   progress: bool = False):
    """The learning curve of one training with the **test** score tracked, for teaching only.

    ``adata`` must be a **development world** (`DEVELOPMENT_WORLDS`, e.g.
    ``pipeline.prepare(name, seed=grid.DEV_CURVE_WORLD)``): the curve reads a test score, so it is
    never drawn on a world a report uses. Trains the model exactly as `xtcdr.pipeline.train_or_load`
    does (same seed, same settings: the tracked score reads the model in eval mode and draws nothing
    from the training's random streams, so the weights match the cached checkpoint's) and logs, at
    every validation, the mean R^2 on DEGs of the cross-context prediction of the held-out
    conditions that have one (`context_tasks`) as ``track_test_r2_deg`` and on all genes as
    ``track_test_r2_all``. The test score is never read by early stopping or by the selection of
    weights. The history is cached as ``<checkpoint folder>__curve.csv`` beside the checkpoints.
    """
    import json

    import pandas as pd

    from . import evaluate
    from .model import XTransferCDR
    from .pipeline import _checkpoint_settings
    from .train import fit, set_seed

    world = adata.uns.get("xtcdr", {}).get("prepare_seed")
    if world is None or int(world) not in DEVELOPMENT_WORLDS:
        raise ValueError(f"teaching_curve tracks a test score, so it is drawn on a development world "
                         f"{list(DEVELOPMENT_WORLDS)} that no report uses; this data is world {world}. Prepare "
                         "it with pipeline.prepare(name, seed=grid.DEV_CURVE_WORLD)")
    folder, mcfg, tcfg = _checkpoint_settings(adata, profile, seed, None, None, weights, data_dir)
    path = folder.with_name(folder.name + "__curve.csv")
    if path.exists():
        history = pd.read_csv(path)
        history.attrs["training"] = json.loads(path.with_suffix(".json").read_text())
        return history
    tasks = context_tasks("cross")(adata, int(world))["cross"]
    if not tasks:
        raise ValueError("teaching_curve needs held-out conditions with a cross-context reading; this world has none")

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


def control_code_offsets(model, adata) -> dict:
    """How far apart the contexts' unperturbed cells sit in P, against a typical perturbation code.

    Returns ``offsets`` (context -> the mean ``E_p`` of its control cells), ``distance`` (the mean
    Euclidean distance between two contexts' mean control codes) and ``typical_code`` (the median
    norm of the perturbed cells' codes relative to their context's mean control code). Training
    pairs hold only perturbed cells, so nothing asks ``E_p(x_ctrl)`` to be zero, and a cross-context
    prediction ``D(S_B + P_A)`` carries context A's offset into context B.
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


# ----------------------------------------------------------------------------- verdicts
def strongest_baseline(table, metric: str) -> str:
    """The baseline row with the best mean on ``metric`` (the highest; the lowest for a rank,
    `xtcdr.verdicts.lower_is_better`)."""
    from .verdicts import best_row

    values = table.loc[table["kind"] == "baseline", metric].astype(float)
    if values.dropna().empty:
        raise ValueError(f"no baseline row has a value of {metric!r}")
    return best_row(values, metric)


def variant_verdicts(table, meta: dict, metrics) -> list:
    """Every configuration row of a variants table (`xtcdr.experiments.configurations_table`)
    against the paper model (``meta['paired_reference']``) and against the strongest baseline on
    each metric (`strongest_baseline`), paired world by world (`xtcdr.verdicts.verdict`).

    On a rank metric (lower is better) *beats* means a lower rank (`xtcdr.verdicts.verdict` knows
    the direction); the difference is always this row minus the other.
    """
    import numpy as np

    from .verdicts import WORLDS, margin_for, verdict

    reference = meta["paired_reference"]
    models = list(table.index[table["kind"] == "model"])
    training = meta.get("training") or {}

    def values(label, metric):
        return np.asarray(meta["per_seed"][label][metric], dtype=float)

    def converged(label):
        info = training.get(label)
        return bool(all(info["converged"])) if info and info.get("converged") else True

    out = []
    for metric in metrics:
        best = strongest_baseline(table, metric)
        for label in models:
            for other in ([reference] if label != reference else []) + [best]:
                out.append(verdict(values(label, metric), values(other, metric), method=label,
                                   other_name=other, metric=metric, converged=converged(label) and converged(other),
                                   varies=str(meta.get("varies", WORLDS)), margin=margin_for(metric)))
    return out


def verdict_rows(table, meta: dict, metrics) -> str:
    """`variant_verdicts` as a markdown table: for each configuration a row against the paper model
    and a row against the strongest baseline, one column per metric (`xtcdr.verdicts.Verdict.cell`;
    the baseline's name is added to a cell where the strongest baseline differs between metrics)."""
    reference = meta["paired_reference"]
    strongest = {m: strongest_baseline(table, m) for m in metrics}
    named = len(set(strongest.values())) > 1
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for v in variant_verdicts(table, meta, metrics):
        metric = v.metric
        against = "paper model" if v.other == reference else "strongest baseline"
        rows.setdefault((_short(v.method), against), {})[metric] = v.cell() + (f" ({v.other})" if named and against != "paper model" else "")
    head = ", ".join(f"{m}: {b}" for m, b in strongest.items()) if named else next(iter(strongest.values()))
    lines = [f"Strongest baseline: {head}. Rank metrics: lower is better (*beats* = a lower rank; the "
             "difference is this row's rank minus the other's).", "",
             "| configuration | against | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for (method, against), cells in rows.items():
        lines.append(f"| {method} | {against} | " + " | ".join(cells.get(m, "") for m in metrics) + " |")
    return "\n".join(lines)


def _phrase(v, other: str) -> str:
    """A verdict as a verb phrase against ``other``, with its interval."""
    from .verdicts import BEATS, EQUIVALENT, LEARNING, LOSES, MORE_WORLDS

    text = {BEATS: f"beats {other}", LOSES: f"loses to {other}",
            EQUIVALENT: f"is equivalent to {other} (margin ±{v.margin:g})",
            MORE_WORLDS: f"is inconclusive against {other} (more worlds needed)",
            LEARNING: f"is inconclusive against {other} (still learning)"}.get(v.word, f"has no interval against {other}")
    return f"{text} ({v.interval()})"


def conclusions(table, meta: dict, metric: str = "r2_deg", task: str = "") -> dict:
    """The notebook's title line and conclusion sentences, printed from the verdicts.

    Returns ``title`` (which configurations beat the strongest baseline and which remedies beat
    the paper model on ``metric``), ``lines`` (one sentence per configuration, with intervals),
    ``strongest`` (the strongest baseline), ``beat_paper`` and ``beat_baseline`` (the names), and
    ``verdicts`` (`variant_verdicts` on ``metric``).
    """
    from .verdicts import BEATS, LEARNING, MORE_WORLDS

    found = {(v.method, v.other): v for v in variant_verdicts(table, meta, [metric])}
    reference = meta["paired_reference"]
    strongest = strongest_baseline(table, metric)
    models = list(table.index[table["kind"] == "model"])
    remedies = [m for m in models if m != reference]
    beat_paper = [_short(m) for m in remedies if found[(m, reference)].word == BEATS]
    beat_baseline = [_short(m) for m in models if found[(m, strongest)].word == BEATS]
    n = len(next(iter(meta["per_seed"].values()))[metric])

    def names(items):
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    def open_count(pairs):
        """``" (2 of 4 inconclusive: more worlds needed)"``: verdicts that say neither way."""
        words = [found[p].word for p in pairs]
        k = sum(w == MORE_WORLDS for w in words)
        return f" ({k} of {len(words)} inconclusive: more worlds needed)" if k else ""

    where = f"{task}, " if task else ""
    title = (f"Transfer to a new context ({where}{metric} over {n} worlds): "
             + (f"{names(beat_baseline)} {'beats' if len(beat_baseline) == 1 else 'beat'} the strongest baseline, "
                f"the {strongest}" if beat_baseline else f"no configuration beats the strongest baseline, the {strongest}")
             + open_count([(m, strongest) for m in models])
             + "; " + (f"{names(beat_paper)} {'beats' if len(beat_paper) == 1 else 'beat'} the paper model"
                       if beat_paper else "no remedy beats the paper model")
             + open_count([(m, reference) for m in remedies]))
    if any(v.word == LEARNING for v in found.values()):
        title += " (models stopped while still learning: these verdicts are inconclusive)"
    lines = [f"The paper model {_phrase(found[(reference, strongest)], 'the ' + strongest)}."]
    lines += [f"{_short(m)} {_phrase(found[(m, reference)], 'the paper model')} and "
              f"{_phrase(found[(m, strongest)], 'the ' + strongest)}." for m in remedies]
    return {"title": title, "lines": lines, "strongest": strongest, "beat_paper": beat_paper,
            "beat_baseline": beat_baseline, "verdicts": list(found.values())}


# ----------------------------------------------------------------------------- per-condition gains
def condition_gains(runs: dict, protocol: str = "cross", metric: str = "r2_deg", reference: str = "paper"):
    """Per condition and world, each variant's ``metric`` minus the reference model's.

    ``runs``: variant -> `xtcdr.experiments.Evaluation` on the same worlds (`evaluate_variants`).
    Returns one row per (variant, world, condition) with ``cell_type``, ``perturbation``,
    ``reference`` (the reference model's score), ``score`` and ``gain``; a condition of world 1 is
    another draw than the same name in world 0, so rows are matched on both.
    """
    import pandas as pd

    def scores(ev):
        df = ev.per_condition(protocol)[ev.model_label]
        return df.set_index(["world", "condition"])[["cell_type", "perturbation", metric]]

    base = scores(runs[reference]).rename(columns={metric: "reference"})
    rows = []
    for name, ev in runs.items():
        if name == reference:
            continue
        mine = scores(ev)[metric].reindex(base.index)
        rows.append(base.assign(variant=name, score=mine.to_numpy(), gain=mine.to_numpy() - base["reference"].to_numpy()))
    if not rows:
        raise ValueError(f"no variant besides the reference {reference!r} to compare")
    return pd.concat(rows).reset_index()[["variant", "world", "condition", "cell_type", "perturbation",
                                          "reference", "score", "gain"]]


def _condition_label(row) -> str:
    """``B:G0523 w1``: the target context (without a ``line_`` prefix), the perturbation, the world."""
    return f"{str(row['cell_type']).removeprefix('line_')}:{row['perturbation']} w{row['world']}"


def gain_sentences(gains, metric: str = "r2_deg") -> list[str]:
    """Where each variant's gain comes from, one sentence per variant: the mean and median gain,
    how many conditions gain, how much of the summed gain the top condition carries (and the mean
    without it), and the rank correlation of the gain with the reference model's own score."""
    from scipy.stats import spearmanr

    out = []
    for name, df in gains.groupby("variant", sort=False):
        df = df.dropna(subset=["gain", "reference"])
        if df.empty:
            out.append(f"{name}: no condition with a value of {metric}.")
            continue
        top = df.loc[df["gain"].idxmax()]
        total = float(df["gain"].sum())
        text = (f"{name}: mean gain in {metric} {df['gain'].mean():+.3f} over {len(df)} conditions of "
                f"{df['world'].nunique()} worlds (median {df['gain'].median():+.3f}; {int((df['gain'] > 0).sum())} of "
                f"{len(df)} above zero). The largest gain, {_condition_label(top)} ({top['gain']:+.3f}, where the "
                f"paper model scored {top['reference']:.3f}), ")
        rest = df.drop(index=top.name)["gain"]
        if len(df) == 1:
            text += "is the only one."
        elif total > 0 and top["gain"] <= total:
            text += f"carries {top['gain'] / total:.0%} of the summed gain; without it the mean gain is {rest.mean():+.3f}."
        else:
            text += (f"is larger than the summed gain: the other {len(rest)} conditions sum to {rest.sum():+.3f} "
                     f"(mean {rest.mean():+.3f}).")
        if len(df) > 2:
            rho = spearmanr(df["reference"], df["gain"]).statistic
            text += f" Rank correlation of the gain with the paper model's own score: {rho:+.2f}."
        out.append(text)
    return out


def plot_gains(gains, *, metric: str = "r2_deg", floor: float = -1.0, title: str | None = None):
    """One panel per variant: each condition's gain over the paper model against the paper model's
    own score on that condition, every dot labelled (target context and perturbation; the colour is
    the world), the zero line and the median gain. Where the paper model is weak a remedy has the
    most room; the figure shows whether the gain comes from those conditions, from a few, or from most.

    A paper-model score below ``floor`` (an R^2 far below zero) is drawn at the floor as a
    left-pointing triangle, its true score in its label, so that one such condition does not squeeze
    the others into a corner.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    variants = list(dict.fromkeys(gains["variant"]))
    ncols = min(2, len(variants))
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.6 * nrows), squeeze=False, sharex=True, sharey=True)
    colors = plt.get_cmap("tab10")
    worlds = sorted(gains["world"].unique())
    for ax, name in zip(axes.flat, variants):
        df = gains[gains["variant"] == name].dropna(subset=["gain", "reference"])
        low = -np.inf if floor is None else float(floor)
        x = df["reference"].clip(lower=low)
        for k, world in enumerate(worlds):
            inside, outside = (df["world"] == world) & (df["reference"] >= low), (df["world"] == world) & (df["reference"] < low)
            ax.scatter(x[inside], df.loc[inside, "gain"], s=24, color=colors(k % 10), label=f"world {world}", zorder=3)
            ax.scatter(x[outside], df.loc[outside, "gain"], s=40, marker="<", color=colors(k % 10), zorder=3)
        for (i, row), xi in zip(df.iterrows(), x):
            text = _condition_label(row).rsplit(" ", 1)[0]
            if row["reference"] < low:
                text += f" ({metric} {row['reference']:.2f})"
            ax.annotate(text, (xi, row["gain"]), fontsize=6.5, xytext=(4, 3 if i % 2 else -7),
                        textcoords="offset points", color="0.25")
        ax.axhline(0, color="0.5", lw=0.8)
        if not df.empty:
            median = float(np.median(df["gain"]))
            ax.axhline(median, color="C3", ls="--", lw=1.2, label=f"median gain {median:+.3f}")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(f"paper model's {metric} on the condition" + (f" (below {floor:g}: drawn at {floor:g})" if floor is not None else ""))
    for ax in axes[:, 0]:
        ax.set_ylabel(f"gain in {metric}: variant − paper model")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- earlier notebooks
# The saved cross-context tables of notebooks 04 (Tables 1-2 analogs) and 05 (knockdowns across lines).
EARLIER_TABLES = {"04": ("table1_", "table2_"), "05": ("table3_",)}


def earlier_readings(out_dir, baseline: str = "source shift") -> list[str]:
    """What notebooks 04 and 05 saved about the cross-context reading, one sentence per table:
    the model against ``baseline`` on the table's first verdict metric, from the saved table and
    its meta (`xtcdr.report.load_tables`, `xtcdr.verdicts.table_verdicts`), with the date it was
    saved. The metric is R^2 on DEGs where the table has it. Empty when ``out_dir`` holds none of
    those tables yet."""
    from .report import load_tables
    from .verdicts import table_verdicts

    out = []
    for meta, df in load_tables(out_dir):
        notebook = next((nb for nb, prefixes in EARLIER_TABLES.items() if str(meta.get("name", "")).startswith(prefixes)), None)
        if notebook is None or not str(meta.get("protocol_short", "")).startswith("cross-context"):
            continue
        models = list(df.index[df["kind"] == "model"])
        candidates = list(meta.get("verdict_metrics") or meta.get("metrics") or [None])
        metric = next((m for m in candidates if str(m).removeprefix("mean_") == "r2_deg"), candidates[0])
        if not models or baseline not in df.index or metric not in df.columns:
            continue
        found = [v for v in table_verdicts(df, meta, [metric]) if v.method == models[0] and v.other == baseline]
        if found:
            out.append(f"Notebook {notebook}, {meta.get('title', meta['name'])} (`{meta['name']}`, saved "
                       f"{meta.get('date', '?')}): the model {_phrase(found[0], 'the ' + baseline)} on {metric}, "
                       f"over {found[0].n} {found[0].varies}.")
    return out


__all__ += ["EARLIER_TABLES", "earlier_readings"]
