"""Helpers of notebook 05 (`xtcdr.genetic`), checked on small hand-made data against a hand
computation: the target gene's readout (one world, and every world of an evaluation), the facts of
each knockdown, the strongest knockdowns, the per-line restriction of an evaluation and the
rescoring without the target, world by world."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from xtcdr import evaluate, genetic, paper
from xtcdr.baselines import ControlBaseline, SourceShiftBaseline
from xtcdr.evaluate import Source, TransferTask
from xtcdr.experiments import MODEL, Evaluation, World
from test_genetic import FixedPredictor  # noqa: E402  (a predictor that returns one fixed profile)


GENES = ["g0", "KD", "g2", "g3", "g4", "g5"]
MODEL_PROFILE = np.array([1.5, 1.5, 1.5, 0.5, 4.0, 1.5])   # the target (KD) at 1.5: a quarter of its fall


def knockdown_data(scored_shift: float = 0.0):
    """Two controls, two read cells and two scored cells of knockdown KD in one line L.

    ``scored_shift`` is added to g4 in the scored cells (another world: other cells)."""
    X = np.array([[1, 2, 1, 0, 3, 1],      # controls
                  [1, 2, 1, 0, 3, 1],
                  [2, 0.5, 1, 1, 5, 1],    # read half
                  [2, 0.5, 1, 1, 5, 1],
                  [2, 0, 3, 1, 5, 3],      # scored half
                  [2, 0, 1, 1, 5, 1]], dtype=np.float32)
    X[4:, 4] += scored_shift
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


def two_worlds(monkeypatch, labels=(MODEL, "control", "source shift")) -> Evaluation:
    """An evaluation of two worlds whose "models" are fixed profiles (`genetic.ModelPredictor`
    is replaced by `FixedPredictor`), world 1 with other scored cells and another model."""
    monkeypatch.setattr(genetic, "ModelPredictor", FixedPredictor)
    worlds, runs = [], {}
    for seed, shift in ((0, 0.0), (1, 1.0)):
        adata, task = knockdown_data(shift)
        worlds.append(World(seed, seed, adata, {"within": [task]}))
    models = {"within": {0: MODEL_PROFILE, 1: MODEL_PROFILE + 0.25}}
    runs = {"within": {label: [pd.DataFrame()] * 2 for label in labels}}
    kinds = {label: "model" if label == MODEL else "baseline" for label in labels}
    return Evaluation(worlds=worlds, runs=runs, kinds=kinds, models=models,
                      training={"within": {0: {"steps": 10}, 1: {"steps": 12}}})


def test_log2_fold_change_matches_deg_statistics():
    from xtcdr.preprocess import deg_statistics

    adata, task = knockdown_data()
    X = np.asarray(adata.X)
    _, lfc = deg_statistics(X, task.target_idx, task.control_idx)
    mine = genetic.log2_fold_change(X[task.target_idx].mean(0), X[task.control_idx].mean(0))
    np.testing.assert_allclose(mine, lfc, rtol=1e-6)
    assert genetic.log2_fold_change(np.log1p(1.0), np.log1p(4.0)) == pytest.approx(-2.0)


def test_readout_rows_by_hand():
    adata, task = knockdown_data()
    out = genetic.readout_rows(adata, [task], {"fixed": FixedPredictor(MODEL_PROFILE), "control": ControlBaseline()})
    observed = np.array([2.0, 0.0, 2.0, 1.0, 5.0, 2.0])
    control = np.array([1.0, 2.0, 1.0, 0.0, 3.0, 1.0])
    degs = [1, 4, 0, 2]
    fixed = out[out["method"] == "fixed"].iloc[0]
    assert fixed["observed_change"] == pytest.approx(-2.0)
    assert fixed["predicted_change"] == pytest.approx(-0.5)
    assert fixed["fall_predicted"] == pytest.approx(0.25)
    error = (observed[degs] - MODEL_PROFILE[degs]) ** 2
    assert fixed["error_share"] == pytest.approx(error[0] / error.sum())
    centred = observed[degs] - observed[degs].mean()
    assert fixed["variance_share"] == pytest.approx(centred[0] ** 2 / (centred ** 2).sum())
    assert fixed["observed_log2fc"] == pytest.approx(np.log2((np.expm1(0.0) + 1e-9) / (np.expm1(2.0) + 1e-9)))
    assert fixed["read_log2fc"] == pytest.approx(np.log2(np.expm1(0.5) / np.expm1(2.0)))
    ctrl = out[out["method"] == "control"].iloc[0]
    assert ctrl["fall_predicted"] == 0.0 and ctrl["predicted_change"] == 0.0
    err_c = (observed[degs] - control[degs]) ** 2
    assert ctrl["error_share"] == pytest.approx(err_c[0] / err_c.sum())


def test_readout_rows_skip_a_target_that_is_not_a_scored_deg():
    adata, task = knockdown_data()
    task.deg_idx = np.array([4, 0, 2])
    assert genetic.readout_rows(adata, [task], {"control": ControlBaseline()}).empty


def test_target_readout_covers_every_world_with_its_own_model_and_baselines(monkeypatch):
    ev = two_worlds(monkeypatch)
    out = genetic.target_readout(ev, "within", extra={"halved": lambda m: FixedPredictor(np.asarray(m) / 2)})
    assert sorted(out["world"].unique()) == [0, 1]
    assert set(out["method"]) == {MODEL, "control", "source shift", "halved"}
    for i, profile in ((0, MODEL_PROFILE), (1, MODEL_PROFILE + 0.25)):
        adata, task = ev.worlds[i].adata, ev.worlds[i].tasks["within"][0]
        by_hand = genetic.readout_rows(adata, [task], {MODEL: FixedPredictor(profile),
                                                       "control": ControlBaseline().fit(adata),
                                                       "source shift": SourceShiftBaseline().fit(adata),
                                                       "halved": FixedPredictor(profile / 2)})
        mine = out[out["world"] == i].drop(columns="world").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, by_hand)
    # the model of world 1 predicts KD at 1.75: (1.75 - 2) / (0 - 2) of the fall
    model = out[out["method"] == MODEL].set_index("world")["fall_predicted"]
    assert model.tolist() == pytest.approx([0.25, 0.125])
    summary = genetic.readout_summary(out)
    assert summary.loc[("L", MODEL), "knockdowns"] == 2 and summary.loc[("L", MODEL), "worlds"] == 2
    assert summary.loc[("L", MODEL), "share of the fall predicted (median)"] == pytest.approx(0.1875)
    per_world = genetic.readout_per_world(out, "fall_predicted")
    assert per_world.index.tolist() == [0, 1]
    assert per_world[MODEL].tolist() == pytest.approx([0.25, 0.125])
    assert per_world["source shift"].tolist() == pytest.approx([0.75, 0.75])   # the read half: 0.5 of 2
    with pytest.raises(ValueError, match="no readout rows of line 'M'"):
        genetic.readout_per_world(out, line="M")


def test_world_predictors_refuse_an_unknown_row(monkeypatch):
    ev = two_worlds(monkeypatch, labels=(MODEL, "mystery"))
    with pytest.raises(ValueError, match="no predictor for the row 'mystery'"):
        genetic.world_predictors(ev, 0, "within")


def test_rescore_without_the_target_matches_evaluate_transfer_per_world(monkeypatch):
    ev = two_worlds(monkeypatch)
    out = genetic.rescore(ev, drop_genes="target")
    assert out.worlds is ev.worlds and out.models is ev.models and out.training is ev.training
    assert out.seeds == [0, 1] and out.kinds == ev.kinds
    for i, profile in ((0, MODEL_PROFILE), (1, MODEL_PROFILE + 0.25)):
        adata, task = ev.worlds[i].adata, ev.worlds[i].tasks["within"]
        for label, predictor in ((MODEL, FixedPredictor(profile)), ("control", ControlBaseline().fit(adata)),
                                 ("source shift", SourceShiftBaseline().fit(adata))):
            expected = evaluate.evaluate_transfer(predictor, adata, tasks=task, seed=i, drop_genes="target")
            pd.testing.assert_frame_equal(out.runs["within"][label][i], expected)
            assert expected["n_degs"].tolist() == [3]
    # the target's fall is most of the model's DEG error: leaving it out raises R^2 on DEGs
    kept = evaluate.evaluate_transfer(FixedPredictor(MODEL_PROFILE), ev.worlds[0].adata, tasks=ev.worlds[0].tasks["within"])
    assert out.runs["within"][MODEL][0].loc[0, "r2_deg"] > kept.loc[0, "r2_deg"]
    only = genetic.rescore(ev, labels=["control"])
    assert list(only.runs["within"]) == ["control"] and only.kinds == {"control": "baseline"}


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
            assert t in paper.PAPER


def _run(lines, values):
    """A per-condition table as `evaluate_transfer` returns it: ``values`` in r2_deg, 0 elsewhere."""
    df = pd.DataFrame({"condition": [f"{l}_{i}" for i, l in enumerate(lines)], "cell_type": lines,
                       "perturbation": [f"p{i}" for i in range(len(lines))], "n_cells": 4})
    for m in evaluate.METRIC_COLUMNS:
        df[m] = values if m == "r2_deg" else 0.0
    return df


def test_for_line_keeps_worlds_models_training_and_every_method():
    lines = ["A", "A", "B"]
    ev = Evaluation(worlds=[World(0, 0, None, {}), World(1, 1, None, {})],
                    runs={"within": {MODEL: [_run(lines, [0.1, 0.3, 0.9]), _run(lines, [0.2, 0.4, 0.8])],
                                     "control": [_run(lines, [0.0, 0.2, 0.5]), _run(lines, [0.1, 0.1, 0.4])]}},
                    kinds={MODEL: "model", "control": "baseline"}, models={"within": {0: "m0", 1: "m1"}},
                    training={"within": {0: {"steps": 10}, 1: {"steps": 12}}})
    a = genetic.for_line(ev, "A")
    assert [len(r) for r in a.runs["within"][MODEL]] == [2, 2]
    assert a.runs["within"]["control"][1]["condition"].tolist() == ["A_0", "A_1"]
    assert a.models is ev.models and a.training is ev.training and a.worlds is ev.worlds
    assert a.per_world("within", ["r2_deg"])[MODEL]["r2_deg"] == pytest.approx([0.2, 0.3])
    assert a.summary("within").loc["control", "r2_deg"] == pytest.approx((0.1 + 0.1) / 2)
    b = genetic.for_line(ev, "B")
    assert b.per_world("within", ["r2_deg"])["control"]["r2_deg"] == pytest.approx([0.5, 0.4])
    assert len(ev.runs["within"][MODEL][0]) == 3             # the original is untouched


def test_top_scores_long_table():
    per = {"m": pd.DataFrame({"condition": ["c1", "c2"], "r2_deg": [0.5, 0.7], "pcc_deg_delta": [0.1, 0.2]})}
    out = genetic.top_scores(per, ["c2"], ["r2_deg", "pcc_deg_delta"])
    assert out.to_dict("records") == [{"condition": "c2", "method": "m", "metric": "r2_deg", "value": 0.7},
                                      {"condition": "c2", "method": "m", "metric": "pcc_deg_delta", "value": 0.2}]
    stacked = {"m": pd.concat([per["m"].assign(world=0), per["m"].assign(world=1)])}
    with pytest.raises(ValueError, match="one world"):
        genetic.top_scores(stacked, ["c2"], ["r2_deg"])


def test_rescore_takes_options_that_depend_on_the_world(monkeypatch):
    ev = two_worlds(monkeypatch)
    dropped = {0: ["g4"], 1: ["g0"]}                    # a gene set chosen per world
    out = genetic.rescore(ev, labels=[MODEL], drop_genes="target",
                          world_options=lambda w: {"drop_genes": lambda t: dropped[w.seed]})
    for i, profile in ((0, MODEL_PROFILE), (1, MODEL_PROFILE + 0.25)):
        adata, tasks = ev.worlds[i].adata, ev.worlds[i].tasks["within"]
        expected = evaluate.evaluate_transfer(FixedPredictor(profile), adata, tasks=tasks, seed=i,
                                              drop_genes=lambda t, i=i: dropped[i])
        pd.testing.assert_frame_equal(out.runs["within"][MODEL][i], expected)
    assert out.runs["within"][MODEL][0].loc[0, "n_degs"] == 3   # g4 is a DEG of world 0's task, g0 too
