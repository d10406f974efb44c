"""Helpers of notebook 05 (`xtcdr.genetic`), checked on small hand-made data against a hand
computation: the target gene's readout, the facts of each knockdown, the strongest knockdowns,
the per-line restriction of an evaluation and the rescoring without the target."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from xtcdr import evaluate, experiments, genetic
from xtcdr.baselines import ControlBaseline, SourceShiftBaseline
from xtcdr.evaluate import Source, TransferTask
from test_genetic import FixedPredictor  # noqa: E402  (a predictor that returns one fixed profile)


GENES = ["g0", "KD", "g2", "g3", "g4", "g5"]


def knockdown_data():
    """Two controls, two read cells and two scored cells of knockdown KD in one line L."""
    X = np.array([[1, 2, 1, 0, 3, 1],      # controls
                  [1, 2, 1, 0, 3, 1],
                  [2, 0.5, 1, 1, 5, 1],    # read half
                  [2, 0.5, 1, 1, 5, 1],
                  [2, 0, 3, 1, 5, 3],      # scored half
                  [2, 0, 1, 1, 5, 1]], dtype=np.float32)
    obs = pd.DataFrame({"cell_type": "L", "perturbation": ["control"] * 2 + ["KD"] * 4,
                        "split": ["train"] * 2 + ["test"] * 4}, index=[f"c{i}" for i in range(6)])
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=GENES))
    adata.uns["top_degs"] = {"L_KD": ["KD", "g4", "g0", "g2"]}
    task = TransferTask("L_KD", "L", "KD", "within", np.array([4, 5]), np.array([0, 1]),
                        [Source("L", [(np.array([2, 3]), np.array([0, 1]))])],
                        deg_idx=np.array([1, 4, 0, 2]))
    return adata, task


def test_log2_fold_change_matches_deg_statistics():
    from xtcdr.preprocess import deg_statistics

    adata, task = knockdown_data()
    X = np.asarray(adata.X)
    _, lfc = deg_statistics(X, task.target_idx, task.control_idx)
    mine = genetic.log2_fold_change(X[task.target_idx].mean(0), X[task.control_idx].mean(0))
    np.testing.assert_allclose(mine, lfc, rtol=1e-6)
    assert genetic.log2_fold_change(np.log1p(1.0), np.log1p(4.0)) == pytest.approx(-2.0)


def test_target_readout_by_hand():
    adata, task = knockdown_data()
    prediction = np.array([1.5, 1.5, 1.5, 0.5, 4.0, 1.5])   # the target (KD) at 1.5: a quarter of its fall
    out = genetic.target_readout(adata, [task], {"fixed": FixedPredictor(prediction),
                                                 "control": ControlBaseline(),
                                                 "seeds": [FixedPredictor(prediction), FixedPredictor(prediction + 1)]})
    observed = np.array([2.0, 0.0, 2.0, 1.0, 5.0, 2.0])
    control = np.array([1.0, 2.0, 1.0, 0.0, 3.0, 1.0])
    degs = [1, 4, 0, 2]
    fixed = out[out["method"] == "fixed"].iloc[0]
    assert fixed["observed_change"] == pytest.approx(-2.0)
    assert fixed["predicted_change"] == pytest.approx(-0.5)
    assert fixed["fall_predicted"] == pytest.approx(0.25)
    error = (observed[degs] - prediction[degs]) ** 2
    assert fixed["error_share"] == pytest.approx(error[0] / error.sum())
    centred = observed[degs] - observed[degs].mean()
    assert fixed["variance_share"] == pytest.approx(centred[0] ** 2 / (centred ** 2).sum())
    assert fixed["observed_log2fc"] == pytest.approx(np.log2((np.expm1(0.0) + 1e-9) / (np.expm1(2.0) + 1e-9)))
    assert fixed["read_log2fc"] == pytest.approx(np.log2(np.expm1(0.5) / np.expm1(2.0)))
    ctrl = out[out["method"] == "control"].iloc[0]
    assert ctrl["fall_predicted"] == 0.0 and ctrl["predicted_change"] == 0.0
    err_c = (observed[degs] - control[degs]) ** 2
    assert ctrl["error_share"] == pytest.approx(err_c[0] / err_c.sum())
    assert out[out["method"] == "seeds"]["seed"].tolist() == [0, 1]
    assert np.isnan(fixed["seed"])
    summary = genetic.readout_summary(out)
    assert summary.loc[("L", "fixed"), "knockdowns"] == 1
    assert summary.loc[("L", "fixed"), "share of the fall predicted (median)"] == pytest.approx(0.25)
    # seeds averaged per knockdown before the summary: (0.25 + (-0.5)/(-2) shifted by +1 -> -0.25)/2
    second = (prediction[1] + 1 - 2.0) / -2.0
    assert summary.loc[("L", "seeds"), "share of the fall predicted (median)"] == pytest.approx((0.25 + second) / 2)


def test_target_readout_skips_a_target_that_is_not_a_scored_deg():
    adata, task = knockdown_data()
    task.deg_idx = np.array([4, 0, 2])
    assert genetic.target_readout(adata, [task], {"control": ControlBaseline()}).empty


def test_knockdown_facts_by_hand():
    adata, _ = knockdown_data()
    facts = genetic.knockdown_facts(adata)
    row = facts.loc["L_KD"]
    X = np.asarray(adata.X, dtype=np.float64)
    mean, ctrl = X[2:].mean(0), X[:2].mean(0)
    assert row["line"] == "L" and row["knockdown"] == "KD" and row["target_in_genes"]
    assert row["target_log2fc"] == pytest.approx(np.log2((np.expm1(mean[1]) + 1e-9) / (np.expm1(ctrl[1]) + 1e-9)))
    assert row["target_in_degs"] and row["target_rank"] == 1 and row["n_degs"] == 4
    assert row["shift"] == pytest.approx(np.linalg.norm(mean - ctrl))


def test_strongest_keeps_at_least_two_and_the_top_share():
    facts = pd.DataFrame({"line": ["A"] * 5 + ["B"] * 60, "shift": list(range(5)) + list(range(60))},
                         index=[f"A_{i}" for i in range(5)] + [f"B_{i}" for i in range(60)])
    top, n = genetic.strongest(facts, "A")
    assert (top, n) == (["A_4", "A_3"], 5)
    top, n = genetic.strongest(facts, "B")      # 5% of 60 = 3
    assert (top, n) == (["B_59", "B_58", "B_57"], 60)
    assert genetic.strongest(facts.iloc[:1], "A") == (["A_0"], 1)


def test_paper_tables_and_line_titles():
    assert genetic.paper_tables("synthetic_genes", ["line_A", "line_B"]) == {
        "line_A": "Table 3 K562", "line_B": "Table 3 RPE-1"}
    assert genetic.paper_tables("replogle_rpe1", ["RPE1"]) == {"RPE1": "Table 3 RPE-1"}
    assert genetic.paper_tables("custom", ["x"]) == {}
    assert genetic.line_title("synthetic_genes", "line_A") == "line A (K562-like)"
    assert genetic.line_title("replogle_k562", "K562") == "K562"
    for tables in genetic.PAPER_TABLES.values():
        for t in ([tables] if isinstance(tables, str) else tables.values()):
            assert t in experiments.PAPER


def _run(lines, values):
    """A per-condition table as `evaluate_transfer` returns it: ``values`` in r2_deg, 0 elsewhere."""
    df = pd.DataFrame({"condition": [f"{l}_{i}" for i, l in enumerate(lines)], "cell_type": lines,
                       "perturbation": [f"p{i}" for i in range(len(lines))], "n_cells": 4})
    for m in evaluate.METRIC_COLUMNS:
        df[m] = values if m == "r2_deg" else 0.0
    return df


def test_for_line_keeps_models_training_and_every_method():
    lines = ["A", "A", "B"]
    ev = experiments.Evaluation(seeds=[0, 1], model_runs={"within": [_run(lines, [0.1, 0.3, 0.9]),
                                                                      _run(lines, [0.2, 0.4, 0.8])]},
                                others={"within": {"control": _run(lines, [0.0, 0.2, 0.5])}},
                                kinds={"control": "baseline"}, models={"within": {0: "m0", 1: "m1"}},
                                training={"within": {0: {"steps": 10}, 1: {"steps": 12}}})
    a = genetic.for_line(ev, "A")
    assert [len(r) for r in a.model_runs["within"]] == [2, 2]
    assert a.others["within"]["control"]["condition"].tolist() == ["A_0", "A_1"]
    assert a.models is ev.models and a.training is ev.training
    assert a.per_seed("within", ["r2_deg"])["r2_deg"] == pytest.approx([0.2, 0.3])
    assert a.summary("within").loc["control", "r2_deg"] == pytest.approx(0.1)


def test_top_scores_long_table():
    per = {"m": pd.DataFrame({"condition": ["c1", "c2"], "r2_deg": [0.5, 0.7], "pcc_deg_delta": [0.1, 0.2]})}
    out = genetic.top_scores(per, ["c2"], ["r2_deg", "pcc_deg_delta"])
    assert out.to_dict("records") == [{"condition": "c2", "method": "m", "metric": "r2_deg", "value": 0.7},
                                      {"condition": "c2", "method": "m", "metric": "pcc_deg_delta", "value": 0.2}]


def test_rescore_without_the_target_matches_evaluate_transfer(monkeypatch):
    adata, task = knockdown_data()
    model_profile = np.array([1.5, 1.5, 1.5, 0.5, 4.0, 1.5])
    ev = experiments.Evaluation(seeds=[0], models={"within": {0: object()}}, training={"within": {0: {}}},
                                kinds={"source shift": "baseline"})
    original, calls = genetic.evaluate_transfer, []

    def scored(predictor, adata_, **kw):  # a trained model stands in as a fixed profile
        calls.append(kw.get("drop_genes"))
        if isinstance(predictor, evaluate.ModelPredictor):
            predictor = FixedPredictor(model_profile)
        return original(predictor, adata_, **kw)

    monkeypatch.setattr(genetic, "evaluate_transfer", scored)
    out = genetic.rescore(ev, adata, {"within": [task]}, {"source shift": SourceShiftBaseline()},
                          drop_genes="target")
    assert calls == ["target", "target"]
    expected = original(SourceShiftBaseline(), adata, tasks=[task], drop_genes="target")
    pd.testing.assert_frame_equal(out.others["within"]["source shift"], expected)
    by_hand = original(FixedPredictor(model_profile), adata, tasks=[task], drop_genes="target")
    pd.testing.assert_frame_equal(out.model_runs["within"][0], by_hand)
    assert out.model_runs["within"][0]["n_degs"].tolist() == [3]
    assert out.kinds == {"source shift": "baseline"} and out.training is ev.training
