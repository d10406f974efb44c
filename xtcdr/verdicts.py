"""One verdict function, paired over worlds: beats / loses / equivalent / inconclusive.

What varies between datasets is several times what varies between training seeds, so a verdict
covers **worlds**: on a synthetic twin, world *s* is the twin drawn with seed *s*, its held-out set
chosen by the table's rule on that draw, and a model trained with seed *s*; on real data a fold
over held-out perturbations plays that role. The model and every baseline are scored on the same
world, so each world gives one paired difference (method - other), and the 95% t interval of the
mean difference (`interval`, ``scipy.stats.t``) decides:

- *beats*: the interval lies above 0;
- *loses to*: below 0;
- *equivalent*: the interval lies inside +-delta, the equivalence margin (`MARGIN`);
- *inconclusive*: it contains 0 and reaches past +-delta: more worlds are needed, and
  `worlds_needed` says about how many the observed spread suggests;
- *inconclusive (still learning)*: a model stopped at its step cap while still improving;
- *no interval (one world)*: a single world.

delta (`MARGIN`) is the noise floor of the metric, measured on development worlds that no report
uses (``tests/benchmarks/bench_margin.py``, ``reports/benchmarks/margin_dev.json``): the median, over
the twins and development worlds, of how far the replicate oracle (the true means up to sampling
noise) falls short of a perfect mean R^2 on DEGs. A difference smaller than the distance by which
knowing the answer misses the measured cells is not one to act on. It applies to the R^2,
explained-variance and Pearson metrics; other metrics (rank, distances) get no equivalence: their
verdicts are beats, loses or inconclusive.

`table_verdicts` applies `verdict` to a saved table (`xtcdr.report.save_table`), `claim_verdict`
and `scoreboard` turn verdicts into the words of REPLICATION.md's scoreboard.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = ["MARGIN", "margin_for", "LOWER_IS_BETTER", "lower_is_better", "best_row", "Interval", "interval", "worlds_needed", "VERDICT_WORDS", "SHORT",
           "Verdict", "verdict", "table_verdicts", "verdict_markdown", "convergence_line", "SCORE_WORDS",
           "claim_verdict", "scoreboard", "scoreboard_markdown", "WORLDS", "fmt"]

# The equivalence margin of R^2 / EV / Pearson metrics (module docstring; bench_margin.py measured
# a median oracle shortfall of 0.015 on development worlds, range 0.006-0.160: rounded up to 0.02).
MARGIN = 0.02
WORLDS = "worlds (twin draw, held-out set and training seed)"  # what a twin's seed varies


LOWER_IS_BETTER = ("rank_", "edist")  # metrics where a smaller value is the better prediction


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (the rank metric, distances)."""
    return metric.removeprefix("mean_").removeprefix("median_").startswith(LOWER_IS_BETTER)


def best_row(values: pd.Series, metric: str) -> str:
    """The label of the best value of ``values`` on ``metric`` (the highest, or the lowest for
    `lower_is_better` metrics): the *strongest* baseline of a table."""
    values = values.astype(float)
    return str(values.idxmin() if lower_is_better(metric) else values.idxmax())


def margin_for(metric: str) -> float | None:
    """The equivalence margin of ``metric``: `MARGIN` for R^2, EV and Pearson metrics (any
    ``mean_`` / ``median_`` / ``_delta`` variant), None (no equivalence) for the others."""
    name = metric.removeprefix("mean_").removeprefix("median_")
    return MARGIN if name in ("r2", "ev", "pcc") or name.startswith(("r2_", "ev_", "pcc_")) else None


class Interval(NamedTuple):
    """The mean of paired differences and its t interval (NaN bounds with fewer than two)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def interval(differences, confidence: float = 0.95) -> Interval:
    """Mean of ``differences`` and its two-sided t interval, ``n - 1`` degrees of freedom.

    The one interval of the package: verdicts, ablations and the scoreboard use it. NaN values
    are not allowed here (`verdict` reports and removes them first).
    """
    from scipy import stats

    d = np.asarray(differences, dtype=float).ravel()
    if np.isnan(d).any():
        raise ValueError("interval() got NaN differences; drop them first and say so (verdict does)")
    n = d.size
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return Interval(n, mean, float("nan"), float("nan"), float("nan"))
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / np.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def worlds_needed(mean: float, sd: float, margin: float | None, confidence: float = 0.95,
                  most: int = 100) -> int | None:
    """About how many worlds would resolve an inconclusive difference, if its mean and spread held.

    Resolved means the interval excludes 0 (needs a half-width below ``|mean|``) or lies inside
    +-``margin`` (below ``margin - |mean|``). Returns the smallest such n up to ``most``; None when
    even ``most`` would not (a mean at zero with no margin, or a huge spread).
    """
    from scipy import stats

    if not np.isfinite(sd) or sd == 0:
        return None
    target = max(abs(mean), (margin - abs(mean)) if margin is not None else 0.0)
    if target <= 0:
        return None
    for n in range(2, most + 1):
        if float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / np.sqrt(n) < target:
            return n
    return None


VERDICT_WORDS = ("beats", "loses to", "equivalent", "inconclusive (more worlds needed)",
                 "no interval (one world)", "inconclusive (still learning)")
BEATS, LOSES, EQUIVALENT, MORE_WORLDS, ONE_WORLD, LEARNING = VERDICT_WORDS
SHORT = {BEATS: "beats", LOSES: "loses", EQUIVALENT: "equivalent", MORE_WORLDS: "inconclusive",
         ONE_WORLD: "one world", LEARNING: "inconclusive"}


class Verdict:
    """The verdict of one comparison on one metric: ``method`` against ``other``.

    ``differences`` are the per-world differences ``method - other``; ``low`` / ``high`` the 95%
    t interval of their mean; ``margin`` the equivalence margin used (None: none); ``word`` one of
    `VERDICT_WORDS`; ``varies`` what the worlds vary, in words; ``needed`` about how many worlds
    would resolve an inconclusive verdict (`worlds_needed`); ``dropped`` how many worlds had no
    value (NaN) and were left out.
    """

    def __init__(self, method, other, metric, differences, word, low, high, varies, margin=None,
                 needed=None, dropped=0):
        self.method, self.other, self.metric = method, other, metric
        self.differences = [float(d) for d in differences]
        self.word, self.low, self.high, self.varies = word, float(low), float(high), varies
        self.margin, self.needed, self.dropped = margin, needed, int(dropped)

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences)) if self.differences else float("nan")

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def short(self) -> str:
        """The verdict in one word for table cells (``beats``, ``loses``, ``equivalent``, ...)."""
        return SHORT[self.word]

    def interval(self) -> str:
        """``+0.032 [-0.18, +0.25]``, or ``+0.032 (one world)``: the mean difference and its interval."""
        small = max(abs(self.mean), abs(self.low) if np.isfinite(self.low) else 0,
                    abs(self.high) if np.isfinite(self.high) else 0) < 0.005
        digits = 4 if small else 3  # never "-0.000 [-0.000, -0.000]"
        if self.n < 2 or not np.isfinite(self.low):
            return f"{self.mean:+.{digits}f} (one world)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def cell(self) -> str:
        """A table cell: the word in bold, the interval, and for an inconclusive verdict the
        number of worlds the spread suggests."""
        text = f"**{self.short}** {self.interval()}"
        if self.word == MORE_WORLDS:
            text += f" (~{self.needed} worlds)" if self.needed else " (>100 worlds)"
        return text

    def sentence(self) -> str:
        """One line: who against whom on which metric, the word, the difference with its interval,
        what varies, and the margin."""
        if self.n >= 2 and np.isfinite(self.low):
            what = f"{self.interval()}, 95% t interval over {self.n} {self.varies}"
        else:
            what = f"{self.interval().split(' ')[0]}, one world: no interval"
        better = " (lower is better)" if lower_is_better(self.metric) else ""
        text = f"{self.method} vs {self.other} on {self.metric}{better}: {self.word} (difference {what}"
        if self.margin is not None and self.word in (EQUIVALENT, MORE_WORLDS):
            text += f"; equivalence margin ±{self.margin:g}"
        text += ")"
        if self.word == MORE_WORLDS:
            text += (f"; about {self.needed} worlds would resolve it if the spread held" if self.needed
                     else "; more than 100 worlds would be needed at this spread")
        if self.dropped:
            text += f"; {self.dropped} world(s) without a value left out"
        return text + "."

    def __repr__(self) -> str:
        return f"Verdict({self.sentence()!r})"


def verdict(values, other, *, method: str = "model", other_name: str = "baseline", metric: str = "",
            converged: bool = True, varies: str = WORLDS, margin: float | None | str = "auto") -> Verdict:
    """Compare per-world ``values`` of a method with ``other`` on one metric (module docstring).

    ``other`` is one value per world, paired with ``values`` (a baseline scored on the same world,
    an ablation trained on the same world), or one number that is the same for every world (a
    constant reference). Sizes that differ otherwise raise an error: a comparison is never silently
    unpaired. A world where either side is NaN is left out, with a warning, and counted in the
    sentence. ``margin="auto"`` takes `margin_for(metric)`. ``converged=False`` (a model stopped at
    its step cap while still improving) gives *inconclusive (still learning)* whatever the numbers.
    """
    values = np.asarray(values, dtype=float).ravel()
    other_values = np.asarray(other, dtype=float).ravel()
    if other_values.size == 1:
        other_values = np.full(values.shape, float(other_values[0]))
    elif other_values.size != values.size:
        raise ValueError(f"{method} vs {other_name} on {metric}: {values.size} values against "
                         f"{other_values.size}; a paired comparison needs one value per world on both sides")
    margin = margin_for(metric) if margin == "auto" else margin
    keep = np.isfinite(values) & np.isfinite(other_values)
    dropped = int((~keep).sum())
    if dropped:
        warnings.warn(f"{method} vs {other_name} on {metric}: {dropped} of {values.size} worlds have no "
                      "value (NaN, e.g. a condition without DEGs) and are left out of the interval",
                      UserWarning, stacklevel=2)
    found = interval((values - other_values)[keep])
    needed = None
    if not converged:
        word = LEARNING
    elif found.n < 2:
        word = ONE_WORLD
    elif (found.high < 0) if lower_is_better(metric) else (found.low > 0):
        word = BEATS
    elif (found.low > 0) if lower_is_better(metric) else (found.high < 0):
        word = LOSES
    elif margin is not None and -margin < found.low and found.high < margin:
        word = EQUIVALENT
    else:
        word = MORE_WORLDS
        needed = worlds_needed(found.mean, found.sd, margin)
    return Verdict(method, other_name, metric, (values - other_values)[keep], word, found.low, found.high,
                   varies, margin=margin, needed=needed, dropped=dropped)


# ----------------------------------------------------------------------------- verdicts of a table
def fmt(row: pd.Series, metric: str) -> str:
    """A table cell: ``mean ± sd`` over worlds (``<metric>_sd``), or the one value, or empty."""
    value = row.get(metric)
    if value is None or pd.isna(value):
        return ""
    sd = row.get(f"{metric}_sd")
    return f"{value:.3f} ± {sd:.3f}" if sd is not None and not pd.isna(sd) else f"{value:.3f}"


def _converged(meta: dict, label: str) -> bool:
    """Whether every world's model of ``label`` stopped by convergence of its selection monitor
    (True when the table records no training for it: rows that were not trained)."""
    info = (meta.get("training") or {}).get(label)
    return bool(all(info["converged"])) if info and info.get("converged") else True


def _world_values(df: pd.DataFrame, meta: dict, label: str, metric: str) -> np.ndarray:
    """Per-world values of a row (``meta['per_seed']``), else its one value."""
    values = ((meta.get("per_seed") or {}).get(label) or {}).get(metric)
    return np.asarray(values if values is not None else [df.loc[label, metric]], dtype=float)


def table_verdicts(df: pd.DataFrame, meta: dict, metrics: list[str] | None = None) -> list[Verdict]:
    """Every model row of a saved table against every baseline row, on each metric (`verdict`).

    A table whose meta names a ``paired_reference`` (an ablation or variant table: the full model)
    compares the reference with every baseline, and each other model row with the reference,
    world by world, and with the strongest baseline (the highest mean on the first metric).
    Per-world values come from ``meta['per_seed']`` (every row that varies over worlds has them),
    convergence from ``meta['training']``, what varies from ``meta['varies']``.
    """
    metrics = list(metrics or meta.get("verdict_metrics") or meta.get("metrics") or [])
    varies = str(meta.get("varies", WORLDS))
    models = list(df.index[df["kind"] == "model"])
    baselines = list(df.index[df["kind"] == "baseline"])
    reference = meta.get("paired_reference")
    strongest = (best_row(df.loc[baselines, metrics[0]], metrics[0])
                 if baselines and metrics and metrics[0] in df.columns else None)
    out = []
    for m in models:
        others = list(baselines)
        if reference and m != reference and reference in df.index:
            others = [reference] + [b for b in baselines if b == strongest]
        for other in others:
            for metric in metrics:
                if metric not in df.columns or pd.isna(df.loc[m, metric]) or pd.isna(df.loc[other, metric]):
                    continue
                out.append(verdict(_world_values(df, meta, m, metric), _world_values(df, meta, other, metric),
                                   method=m, other_name=other, metric=metric,
                                   converged=_converged(meta, m) and _converged(meta, other),
                                   varies=varies))
    return out


def verdict_markdown(verdicts_: list[Verdict], metrics: list[str]) -> str:
    """A markdown table: one row per (method, other), one cell per metric (`Verdict.cell`)."""
    rows: dict[tuple[str, str], dict[str, Verdict]] = {}
    for v in verdicts_:
        rows.setdefault((v.method, v.other), {})[v.metric] = v
    if not rows:
        return ""
    multi = len({m for m, _ in rows}) > 1
    lines = ["| " + ("model | " if multi else "") + "against | " + " | ".join(metrics) + " |",
             "|---|" + ("---|" if multi else "") + "---|" * len(metrics)]
    for (method, other), cells in rows.items():
        text = [cells[m].cell() if m in cells else "" for m in metrics]
        lines.append("| " + (f"{method} | " if multi else "") + f"{other} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def convergence_line(meta: dict) -> str:
    """One line per table: the models' optimizer steps (median and range over models and worlds),
    the validation that selected their weights, and how many stopped by convergence."""
    steps, conv, capped, monitors = [], [], [], set()
    for label, info in (meta.get("training") or {}).items():
        steps += list(info.get("steps") or [])
        conv += list(info.get("converged") or [])
        capped += [f"{label} world {s}" for s, c in zip(info.get("seeds", []), info.get("converged") or []) if not c]
        monitors.add({"valid": "within-line validation", "transfer": "transfer validation"}.get(
            info.get("monitor", "valid"), str(info.get("monitor"))))
    if not steps:
        return ""
    label = next(iter(meta["training"])) if len(meta["training"]) == 1 else f"{len(meta['training'])} models"
    text = (f"{label}: {int(np.median(steps)):,} optimizer steps (median; range {min(steps):,}-{max(steps):,}), "
            f"best weights by the {' / '.join(sorted(monitors))}, {sum(conv)} of {len(conv)} "
            f"{'worlds' if len(meta['training']) == 1 else 'trainings'} stopped by convergence")
    if capped:
        shown = ", ".join(capped[:4]) + (f" and {len(capped) - 4} more" if len(capped) > 4 else "")
        text += f" ({shown} hit the step cap while still improving: their verdicts are inconclusive)"
    return text


# ----------------------------------------------------------------------------- the scoreboard
# the scoreboard's second verdict metric, reported beside the claim (which holds on R^2 over DEGs):
# the PerturBench rank of each prediction among the held-out perturbations (0 perfect, 0.5 chance)
DISCRIMINATION = ("rank_all_delta", "mean_rank_all_delta")
SCORE_WORDS = ("holds", "holds against control only", "equivalent", "does not hold", "inconclusive")


def claim_verdict(df: pd.DataFrame, meta: dict, metric: str) -> tuple[str, str, Verdict | None]:
    """The scoreboard word for "the model beats the baselines" on ``metric`` of one table.

    Returns ``(word, strongest baseline, its verdict)``: *holds* when the model beats the
    strongest baseline (the highest mean on ``metric``); *equivalent* when the two are equivalent
    within the margin; *holds against control only* when it loses to the strongest but beats the
    control baseline (the paper's Baseline); *does not hold* when it loses to the strongest and
    does not beat the control; *inconclusive* for a model still learning at its cap, a single world, or an interval that
    contains zero and reaches past the margin.
    """
    models = list(df.index[df["kind"] == "model"])
    baselines = df[df["kind"] == "baseline"]
    if not models or baselines.empty or metric not in df.columns:
        return "inconclusive", "", None
    model = models[0]
    strongest = best_row(baselines[metric], metric)
    found = {v.other: v for v in table_verdicts(df, meta, [metric]) if v.method == model}
    best = found[strongest]
    control = found.get("control")
    if best.word == BEATS:
        return "holds", strongest, best
    if best.word == EQUIVALENT:
        return "equivalent", strongest, best
    if best.word == LOSES:
        if control is not None and control.word == BEATS:
            return "holds against control only", strongest, best
        return "does not hold", strongest, best
    return "inconclusive", strongest, best


def _paired_word(v: Verdict, holds_if: str) -> str:
    """Scoreboard word of a paired comparison whose claim holds when ``v.word`` is ``holds_if``."""
    if v.word in (MORE_WORLDS, ONE_WORLD, LEARNING):
        return "inconclusive"
    if holds_if == "equivalent":
        return "holds" if v.word == EQUIVALENT else "does not hold"
    if v.word == EQUIVALENT:
        return "equivalent"
    wanted = {"beats": BEATS, "loses": LOSES}[holds_if]
    return "holds" if v.word == wanted else "does not hold"


def scoreboard(tables: list[tuple[dict, pd.DataFrame]]) -> list[dict]:
    """One row per claim, from the tables whose meta holds a ``claim``.

    ``claim`` kinds: ``"model"`` (the model against the baselines, `claim_verdict`), ``"ablation"``
    (one row per configuration in ``claim['rows']``: removing the term should lower ``metric``,
    paired with the full model) and ``"comparison"`` (two columns of a probe table, per world:
    ``claim['rows']`` holds ``a``, ``b``, ``holds_if`` "beats", "loses" or "equivalent", and the
    ``margin``). Each row has a
    ``section`` (``claim['section']``: "paper" for the paper's claims, "premise" for our probes of
    its premise, "real" for real data) and the verdict.
    """
    rows = []
    for meta, df in tables:
        claim = meta.get("claim")
        if not claim:
            continue
        kind, metric = claim.get("kind", "model"), claim.get("metric", "r2_deg")
        base = {"section": claim.get("section", "paper"), "table": meta["name"], "metric": metric,
                "paper": claim.get("paper", ""), "analog": claim.get("analog", "")}
        if kind == "model":
            word, strongest, best = claim_verdict(df, meta, metric)
            model = df.index[df["kind"] == "model"][0]
            row = {**base, "claim": claim["claim"], "ours": fmt(df.loc[model], metric),
                   "strongest baseline": f"{strongest} {df.loc[strongest, metric]:.3f}" if strongest else "",
                   "difference": best.cell().split("** ", 1)[1] if best else "", "verdict": word,
                   "n": best.n if best else 0}
            rank = claim.get("discrimination", next((m for m in DISCRIMINATION if m in df.columns), None))
            if rank:  # the second verdict metric: can the model tell held-out perturbations apart?
                _, against, v = claim_verdict(df, meta, rank)
                row["discrimination"] = (f"{fmt(df.loc[model], rank)} vs {against} {df.loc[against, rank]:.3f}: "
                                         f"{v.cell()}" if v is not None else "")
            rows.append(row)
        elif kind == "ablation":
            reference = meta["paired_reference"]
            found = {(v.method, v.other): v for v in table_verdicts(df, meta, [metric])}
            for label, text in claim["rows"].items():
                v = found[(label, reference)]
                rows.append({**base, "claim": text["claim"], "paper": text.get("paper", ""),
                             "ours": f"{fmt(df.loc[label], metric)} vs {fmt(df.loc[reference], metric)}",
                             "strongest baseline": "", "difference": v.cell().split("** ", 1)[1],
                             "verdict": _paired_word(v, "loses"), "n": v.n})
        elif kind == "comparison":
            for text in claim["rows"]:
                a, b = np.asarray(text["a_values"], float), np.asarray(text["b_values"], float)
                v = verdict(a, b, method=text["a"], other_name=text["b"], metric=text["a"],
                            varies=meta.get("varies", WORLDS), margin=text.get("margin"))
                rows.append({**base, "section": claim.get("section", "premise"), "claim": text["claim"],
                             "paper": text.get("paper", ""), "metric": "probe",
                             "ours": f"{a.mean():.3f} vs {b.mean():.3f}", "strongest baseline": "",
                             "difference": v.cell().split("** ", 1)[1], "verdict": _paired_word(v, text["holds_if"]),
                             "n": v.n})
    return rows


def scoreboard_markdown(rows: list[dict], real: dict | None = None) -> str:
    """The scoreboard as a markdown table. ``real``: the question a claim asks (its ``analog``, e.g.
    ``"cross-context"``) -> the real-data verdict cell, shown in a column of its own when given."""
    head = "| claim | paper's evidence | ours (model) | strongest baseline | model - it, 95% interval | verdict |"
    discrimination = any(r.get("discrimination") for r in rows)
    if discrimination:
        head += " discrimination (rank of deltas, lower is better; vs the best baseline on it) |"
    if real is not None:
        head += " real data |"
    lines = [head, "|---|---|---|---|---|---|" + ("---|" if discrimination else "") + ("---|" if real is not None else "")]
    for r in rows:
        line = (f"| {r['claim']} | {r['paper']} | {r['ours']} | {r['strongest baseline']} | "
                f"{r['difference']} | **{r['verdict']}** |")
        if discrimination:
            line += f" {r.get('discrimination', '')} |"
        if real is not None:
            line += f" {real.get(r.get('analog') or '-', '')} |"
        lines.append(line)
    return "\n".join(lines)
