"""Ablations of the loss (the paper's Table 5) and paired differences over training seeds.

An ablation retrains the model with one term of Eq. 6 switched off (its weight set to 0 with
`xtcdr.config.LossWeights.without`), everything else equal. `CONFIGURATIONS` names the paper's
four configurations plus one the paper did not run (without the basal reconstruction
:math:`\\mathcal{L}_{reco}^{(1)}`).

Every seed is one **paired** observation: the model with and without the term share the data,
the split, the initialisation seed and the pairing order, so their difference on a metric
removes the part of the seed-to-seed spread that both share. `paired_difference` gives the mean
paired difference and a t-based interval (`scipy.stats.t`, ``n - 1`` degrees of freedom);
`paired_table` does it for every configuration and metric.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .config import LossWeights

__all__ = ["FULL", "CONFIGURATIONS", "PAPER_LABELS", "configuration_weights", "paired_difference",
           "paired_table"]

FULL = "all terms"
# configuration -> the removed term of xtcdr.losses.TERMS (None: the full model)
CONFIGURATIONS: dict[str, str | None] = {
    FULL: None,
    "without L_cross": "cross",
    "without L_orth": "orth",
    "without L_sim": "sim",
    "without L_reco1": "reco_basal",
}
# our configuration -> the row of experiments.PAPER["Table 5"] (the paper did not ablate L_reco1)
PAPER_LABELS = {c: c for c in CONFIGURATIONS if c != "without L_reco1"}


def configuration_weights(name: str, base: LossWeights | None = None) -> LossWeights:
    """The loss weights of configuration ``name`` (``base`` with the configuration's term at 0)."""
    if name not in CONFIGURATIONS:
        raise ValueError(f"unknown configuration {name!r}; valid: {list(CONFIGURATIONS)}")
    base = base or LossWeights()
    term = CONFIGURATIONS[name]
    return base if term is None else base.without(term)


def paired_difference(full, ablated, confidence: float = 0.95) -> dict[str, float]:
    """Mean of ``ablated - full`` over paired seeds, its sd and a t-based interval.

    ``full[i]`` and ``ablated[i]`` are the same metric for seed ``i``. Returns ``n``, ``mean``,
    ``sd`` (ddof 1), ``ci_low``, ``ci_high`` (mean -+ t_{n-1, (1+confidence)/2} * sd / sqrt(n)),
    ``half_width`` and ``excludes_zero`` (1.0 or 0.0; NaN when the interval is not computable:
    fewer than two seeds). NaN pairs (a metric undefined for a seed) are dropped.
    """
    from scipy import stats

    full, ablated = np.asarray(full, float), np.asarray(ablated, float)
    if full.shape != ablated.shape or full.ndim != 1:
        raise ValueError(f"paired_difference needs two 1-d arrays of the same length, got "
                         f"{full.shape} and {ablated.shape}")
    d = (ablated - full)[~(np.isnan(full) | np.isnan(ablated))]
    n = d.size
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        nan = float("nan")
        return {"n": n, "mean": mean, "sd": nan, "ci_low": nan, "ci_high": nan, "half_width": nan,
                "excludes_zero": nan}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n))
    low, high = mean - half, mean + half
    return {"n": n, "mean": mean, "sd": sd, "ci_low": low, "ci_high": high, "half_width": half,
            "excludes_zero": float(low > 0 or high < 0)}


def paired_table(values: pd.DataFrame, metrics: list[str], *, full: str = FULL,
                 confidence: float = 0.95) -> pd.DataFrame:
    """Paired differences of every configuration from ``full`` on every metric.

    ``values``: one row per (configuration, seed) with columns ``configuration``, ``seed`` and the
    metrics. Returns one row per (configuration, metric) other than ``full`` with the columns of
    `paired_difference`; seeds are matched by their value, and only seeds present in both enter.
    """
    base = values[values["configuration"] == full].set_index("seed")
    rows = []
    for name in dict.fromkeys(values["configuration"]):
        if name == full:
            continue
        other = values[values["configuration"] == name].set_index("seed")
        seeds = sorted(set(base.index) & set(other.index))
        for metric in metrics:
            stats = paired_difference(base.loc[seeds, metric].to_numpy(float),
                                      other.loc[seeds, metric].to_numpy(float), confidence)
            rows.append({"configuration": name, "metric": metric, **stats})
    return pd.DataFrame(rows).set_index(["configuration", "metric"])


def table5(runs: dict, protocol: str, columns: list[str], *, label=None) -> tuple[pd.DataFrame, dict]:
    """Table 5 from the evaluations of every configuration: the paper's rows, each configuration
    (mean ± sd over seeds), then the baselines (fitted once, beside the full model); the meta
    pairs each removal with the full model (`xtcdr.experiments.configurations_table`)."""
    from .experiments import configurations_table

    return configurations_table(runs, protocol, columns, reference=FULL, label=label, paper_table="Table 5")


def removal_lines(verdicts_: list, reference: str) -> list[str]:
    """One line per removal from the paired verdicts against the full model (`table_verdicts`):
    on which metrics removing the term lowers or raises the score (interval excludes zero), and
    where the interval contains zero; inconclusive or single-seed verdicts say so."""
    by_config: dict[str, list] = {}
    for v in verdicts_:
        if v.other == reference:
            by_config.setdefault(v.method, []).append(v)
    out = []
    for name, found in by_config.items():
        words = {v.word for v in found}
        if words & {"inconclusive (still learning)", "no interval (one seed)"}:
            out.append(f"{name}: " + ", ".join(f"{v.metric} {v.interval()}" for v in found)
                       + f" ({found[0].word}).")
            continue
        down = [v for v in found if v.word == "loses to"]
        up = [v for v in found if v.word == "beats"]
        tie = [v.metric for v in found if v.word.startswith("tie")]
        parts = []
        if down:
            parts.append("lowers " + ", ".join(f"{v.metric} {v.interval()}" for v in down))
        if up:
            parts.append("raises " + ", ".join(f"{v.metric} {v.interval()}" for v in up))
        text = f"{name} ({found[0].n} paired seeds): removing the term " + (" and ".join(parts) if parts else
                                                                             "moves no metric beyond the seed spread")
        if tie and parts:
            text += f"; the intervals of {', '.join(tie)} contain zero"
        out.append(text + ".")
    return out


__all__ += ["table5", "removal_lines"]
