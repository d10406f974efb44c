"""Ablations of the loss (the paper's Table 5) and paired differences over worlds.

An ablation retrains the model with one term of Eq. 6 switched off (its weight set to 0 with
`xtcdr.config.LossWeights.without`), everything else equal. `CONFIGURATIONS` names the paper's
four configurations plus one the paper did not run (without the basal reconstruction
:math:`\\mathcal{L}_{reco}^{(1)}`).

Every world is one **paired** observation: the model with and without the term share the data,
the split, the initialisation seed and the pairing order, so their difference on a metric
removes the part of the world-to-world spread that both share. `paired_difference` gives the mean
paired difference and its t interval (`xtcdr.verdicts.interval`, the package's one interval);
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
    """Mean of ``ablated - full`` over paired worlds, its sd and its t interval.

    ``full[i]`` and ``ablated[i]`` are the same metric for world ``i``. Returns ``n``, ``mean``,
    ``sd`` (ddof 1), ``ci_low``, ``ci_high`` (`xtcdr.verdicts.interval`), ``half_width`` and
    ``excludes_zero`` (1.0 or 0.0; NaN with fewer than two worlds). A world where either value is
    NaN (a metric undefined there) is left out with a warning.
    """
    import warnings

    from .verdicts import interval

    full, ablated = np.asarray(full, float), np.asarray(ablated, float)
    if full.shape != ablated.shape or full.ndim != 1:
        raise ValueError(f"paired_difference needs two 1-d arrays of the same length, got "
                         f"{full.shape} and {ablated.shape}")
    keep = ~(np.isnan(full) | np.isnan(ablated))
    if not keep.all():
        warnings.warn(f"paired_difference: {int((~keep).sum())} of {keep.size} worlds have no value (NaN) "
                      "and are left out", UserWarning, stacklevel=2)
    found = interval((ablated - full)[keep], confidence)
    if found.n < 2:
        nan = float("nan")
        return {"n": found.n, "mean": found.mean, "sd": nan, "ci_low": nan, "ci_high": nan,
                "half_width": nan, "excludes_zero": nan}
    return {"n": found.n, "mean": found.mean, "sd": found.sd, "ci_low": found.low, "ci_high": found.high,
            "half_width": found.half_width, "excludes_zero": float(found.low > 0 or found.high < 0)}


def paired_table(values: pd.DataFrame, metrics: list[str], *, full: str = FULL,
                 confidence: float = 0.95) -> pd.DataFrame:
    """Paired differences of every configuration from ``full`` on every metric.

    ``values``: one row per (configuration, world) with columns ``configuration``, ``seed`` (the
    world) and the metrics. Returns one row per (configuration, metric) other than ``full`` with the
    columns of `paired_difference`; worlds are matched by their seed, and only worlds present in both
    enter.
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
    (mean ± sd over worlds), then the baselines (beside the full model); the meta pairs each
    removal with the full model world by world (`xtcdr.experiments.configurations_table`)."""
    from .experiments import configurations_table

    return configurations_table(runs, protocol, columns, reference=FULL, label=label, paper_table="Table 5")


def removal_lines(verdicts_: list, reference: str) -> list[str]:
    """One line per removal from the paired verdicts against the full model (`table_verdicts`):
    on which metrics removing the term lowers or raises the score (interval excludes zero), where
    it changes nothing beyond the equivalence margin, and where more worlds are needed;
    still-learning or single-world verdicts say so."""
    from .verdicts import BEATS, EQUIVALENT, LEARNING, LOSES, MORE_WORLDS, ONE_WORLD

    by_config: dict[str, list] = {}
    for v in verdicts_:
        if v.other == reference:
            by_config.setdefault(v.method, []).append(v)
    out = []
    for name, found in by_config.items():
        if {v.word for v in found} & {LEARNING, ONE_WORLD}:
            out.append(f"{name}: " + ", ".join(f"{v.metric} {v.interval()}" for v in found)
                       + f" ({found[0].word}).")
            continue
        parts = []
        for word, verb in ((LOSES, "lowers"), (BEATS, "raises")):
            moved = [v for v in found if v.word == word]
            if moved:
                parts.append(f"{verb} " + ", ".join(f"{v.metric} {v.interval()}" for v in moved))
        same = [v.metric for v in found if v.word == EQUIVALENT]
        open_ = [v for v in found if v.word == MORE_WORLDS]
        text = f"{name} ({found[0].n} paired worlds): removing the term "
        text += " and ".join(parts) if parts else "moves no metric beyond its interval"
        if same:
            text += f"; {', '.join(same)} equivalent within the margin"
        if open_:
            text += "; inconclusive on " + ", ".join(f"{v.metric} (~{v.needed or '>100'} worlds needed)" for v in open_)
        out.append(text + ".")
    return out


__all__ += ["table5", "removal_lines"]
