"""The verdict function (paired over worlds, with an equivalence margin), the scoreboard words, and
the committed scoreboard recomputed by hand from the saved tables."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xtcdr import report, verdicts
from xtcdr.verdicts import MARGIN, interval, verdict, worlds_needed

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- the interval
@pytest.mark.parametrize("n", [2, 3, 7])
def test_interval_matches_scipy(n):
    rng = np.random.default_rng(n)
    d = rng.normal(0.1, 0.05, n)
    got = interval(d)
    low, high = stats.t.interval(0.95, n - 1, loc=d.mean(), scale=stats.sem(d))
    assert got.n == n and got.mean == pytest.approx(d.mean())
    assert got.low == pytest.approx(low) and got.high == pytest.approx(high)
    # the paired t test and the interval agree on whether zero is excluded
    p = stats.ttest_1samp(d, 0.0).pvalue
    assert (p < 0.05) == (got.low > 0 or got.high < 0)


def test_interval_rejects_nan_and_one_value_has_no_bounds():
    with pytest.raises(ValueError, match="NaN"):
        interval([0.1, np.nan, 0.2])
    one = interval([0.3])
    assert one.n == 1 and one.mean == 0.3 and np.isnan(one.low) and np.isnan(one.high)


# ----------------------------------------------------------------------------- the ladder
def test_verdict_ladder_by_hand():
    # differences 0.10, 0.12, 0.11: mean 0.11, sd 0.01, t(2) = 4.303 -> [0.0852, 0.1348]
    win = verdict([0.80, 0.82, 0.81], [0.70, 0.70, 0.70], metric="r2_deg")
    half = stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3)
    assert win.word == "beats" and win.low == pytest.approx(0.11 - half) and win.high == pytest.approx(0.11 + half)
    assert verdict([0.60, 0.61, 0.59], [0.70] * 3, metric="r2_deg").word == "loses to"
    # inside the margin on both sides: equivalent (differences +0.001, -0.002, +0.003)
    eq = verdict([0.701, 0.698, 0.703], [0.70] * 3, metric="r2_deg")
    assert eq.word == "equivalent" and -MARGIN < eq.low < 0 < eq.high < MARGIN
    # contains zero and reaches past the margin: inconclusive, more worlds needed
    wide = verdict([0.70, 0.80, 0.75], [0.70] * 3, metric="r2_deg")   # differences 0, 0.1, 0.05
    assert wide.word == "inconclusive (more worlds needed)" and wide.low < -MARGIN and wide.high > MARGIN
    assert wide.needed == worlds_needed(0.05, 0.05, MARGIN) and wide.needed > 3
    assert "about" in wide.sentence() and "worlds would resolve it" in wide.sentence()
    assert wide.cell().startswith("**inconclusive** ") and "worlds)" in wide.cell()
    # a metric without a margin (a rank) is never equivalent
    assert verdict([0.101, 0.098, 0.103], [0.10] * 3, metric="rank_all_delta").word == "inconclusive (more worlds needed)"
    one = verdict([0.9], [0.1], metric="r2_deg")
    assert one.word == "no interval (one world)" and np.isnan(one.low)
    assert verdict([0.80, 0.82, 0.81], [0.70] * 3, converged=False).word == "inconclusive (still learning)"


def test_no_interval_wider_than_twice_the_margin_reads_equivalent():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = rng.normal(0.5, rng.uniform(0.001, 0.1), 3), rng.normal(0.5, 0.01, 3)
        v = verdict(a, b, metric="r2_deg")
        if v.word == "equivalent":
            assert v.high - v.low < 2 * MARGIN


def test_verdict_never_silently_unpaired():
    with pytest.raises(ValueError, match="one value per world"):
        verdict([0.5, 0.6, 0.7], [0.4, 0.5], metric="r2_deg")
    constant = verdict([0.5, 0.6, 0.7], 0.4, metric="r2_deg")   # one constant reference: explicit
    assert constant.differences == pytest.approx([0.1, 0.2, 0.3])
    with pytest.warns(UserWarning, match="1 of 3 worlds have no value"):
        dropped = verdict([0.5, np.nan, 0.7], [0.4, 0.4, 0.4], metric="r2_deg")
    assert dropped.n == 2 and dropped.dropped == 1 and "1 world(s) without a value left out" in dropped.sentence()


def test_worlds_needed_by_hand():
    # mean 0.05, sd 0.1: an interval that excludes zero needs t(n-1) * 0.1 / sqrt(n) < 0.05
    n = worlds_needed(0.05, 0.1, margin=0.02)
    assert stats.t.ppf(0.975, n - 1) * 0.1 / math.sqrt(n) < 0.05
    assert stats.t.ppf(0.975, n - 2) * 0.1 / math.sqrt(n - 1) >= 0.05
    # a mean near zero resolves into equivalence: half-width below margin - |mean|
    m = worlds_needed(0.001, 0.01, margin=0.02)
    assert stats.t.ppf(0.975, m - 1) * 0.01 / math.sqrt(m) < 0.019
    assert worlds_needed(0.0, 0.1, margin=None) is None
    assert worlds_needed(0.0001, 5.0, margin=None) is None       # more than 100


def test_margin_is_the_development_worlds_measurement():
    """The margin in the code is the one bench_margin.py measured on development worlds."""
    measured = json.loads((REPO / "reports" / "benchmarks" / "margin_dev.json").read_text())
    assert MARGIN == measured["margin"]
    assert math.ceil(np.median([r["shortfall_r2_deg"] for r in measured["rows"]]) * 100) / 100 == MARGIN
    assert verdicts.margin_for("mean_r2_deg") == MARGIN and verdicts.margin_for("pcc_all_delta") == MARGIN
    assert verdicts.margin_for("rank_all_delta") is None


# ----------------------------------------------------------------------------- scoreboard words
PER_WORLD = {"ours": {"r2_deg": [0.71, 0.72, 0.73]}, "control": {"r2_deg": [0.40, 0.41, 0.39]},
             "source shift": {"r2_deg": [0.84, 0.85, 0.86]}}


def toy(per_world):
    rows = [(name, "model" if name == "ours" else "baseline", [{"r2_deg": v} for v in values["r2_deg"]])
            for name, values in per_world.items()]
    return report.method_table(rows, ["r2_deg"]), {"per_seed": per_world, "varies": "worlds"}


def test_scoreboard_words_follow_the_ladder():
    def word(per_world):
        table, meta = toy(per_world)
        return verdicts.claim_verdict(table, meta, "r2_deg")[0]

    assert word(PER_WORLD) == "holds against control only"   # beats control, loses to the source shift
    assert word({**PER_WORLD, "source shift": {"r2_deg": [0.60, 0.61, 0.62]}}) == "holds"
    assert word({**PER_WORLD, "source shift": {"r2_deg": [0.711, 0.719, 0.731]}}) == "equivalent"
    assert word({**PER_WORLD, "source shift": {"r2_deg": [0.60, 0.85, 0.72]}}) == "inconclusive"
    assert word({**PER_WORLD, "control": {"r2_deg": [0.80, 0.81, 0.82]}}) == "does not hold"
    table, meta = toy({k: {"r2_deg": v["r2_deg"][:1]} for k, v in PER_WORLD.items()})
    assert verdicts.claim_verdict(table, meta, "r2_deg")[0] == "inconclusive"    # one world


# ----------------------------------------------------------------------------- the committed report
def _hand_interval(a, b):
    d = np.asarray(a, float) - np.asarray(b, float)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return d.mean(), d.mean() - half, d.mean() + half


def _hand_word(mean, low, high, margin=MARGIN):
    if low > 0:
        return "beats"
    if high < 0:
        return "loses"
    return "equivalent" if -margin < low and high < margin else "inconclusive"


def test_two_committed_scoreboard_rows_recomputed_by_hand():
    """Two scoreboard rows of the committed REPLICATION.md (Tables 1 and 4) recomputed from the saved
    per-world values with numpy arithmetic and the t quantile, not through xtcdr's verdict code."""
    text = (REPO / "reports" / "REPLICATION.md").read_text()
    board = text.split("## Scoreboard", 1)[1].split("\n## ", 1)[0]
    for table, model in (("table1_synthetic_drugs", "XTransferCDR (ours)"),
                         ("table4_synthetic_combo", "XTransferCDR (ours)")):
        meta = json.loads((REPO / "reports" / "tables" / f"{table}.json").read_text())
        csv = pd.read_csv(REPO / "reports" / "tables" / f"{table}.csv", index_col=0)
        metric = meta["claim"]["metric"]
        per = meta["per_seed"]
        baselines = [r for r in csv.index if csv.loc[r, "kind"] == "baseline"]
        means = {b: float(np.mean(per[b][metric])) for b in baselines}
        assert means == pytest.approx({b: csv.loc[b, metric] for b in baselines}, abs=1e-9)  # CSV = mean of worlds
        strongest = max(means, key=means.get)
        mean, low, high = _hand_interval(per[model][metric], per[strongest][metric])
        row = next(line for line in board.splitlines() if line.startswith(f"| {meta['claim']['claim']} |"))
        assert f"{strongest} {means[strongest]:.3f}" in row
        assert f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" in row
        word = _hand_word(mean, low, high)
        c_mean, c_low, c_high = _hand_interval(per[model][metric], per["control"][metric])
        expected = {"beats": "holds", "equivalent": "equivalent", "inconclusive": "inconclusive",
                    "loses": "holds against control only" if c_low > 0 else "does not hold"}[word]
        assert all(meta["training"][model]["converged"]), "the committed models converged"
        assert row.rstrip().endswith(f"**{expected}** |") or f"**{expected}** |" in row, row


def test_development_worlds_are_disjoint_from_the_reported_worlds():
    """No benchmark that chooses a setting reads a world a report uses (bench_convergence.DEV_WORLDS,
    the teaching curve), and no committed table reports a development world."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    import bench_convergence
    from xtcdr import grid

    dev = set(bench_convergence.DEV_WORLDS)
    assert grid.DEV_CURVE_WORLD in dev
    reported = set()
    for meta, _ in report.load_tables(REPO / "reports"):
        reported |= {int(s) for s in meta.get("seeds") or []}
    assert reported and not reported & dev
    plan = grid.plan("quick", worlds=10)        # even --worlds 10 stays below the development worlds
    assert not {t.prepare_seed for t in plan if not t.curve} & dev
    assert all(t.prepare_seed in dev for t in plan if t.curve)


def test_lower_is_better_metrics_flip_the_words():
    """On the rank metric (0 perfect, 0.5 chance) a lower value is the better prediction."""
    better = verdict([0.10, 0.12, 0.11], [0.40, 0.41, 0.39], metric="rank_all_delta")
    assert better.word == "beats" and better.high < 0 and "(lower is better)" in better.sentence()
    assert verdict([0.40, 0.41, 0.39], [0.10, 0.12, 0.11], metric="mean_rank_all_delta").word == "loses to"
    assert verdicts.best_row(pd.Series({"a": 0.3, "b": 0.1}), "rank_all_delta") == "b"
    assert verdicts.best_row(pd.Series({"a": 0.3, "b": 0.1}), "r2_deg") == "a"
