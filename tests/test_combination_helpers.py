"""Helpers of notebook 06 (`xtcdr.combinations`), checked on small hand-made data against a hand
computation: the oracle added to an evaluation, the group evaluations, the residual table and its
per-seed values, the energy additivity misses, the control-code offset, the figure's double and
the fifth loss's facts."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from xtcdr import baselines, combinations, evaluate, experiments, pairing, synthetic
from xtcdr.evaluate import Source, TransferTask


def double_data():
    """Controls, singles a and b and the double a+b in one line L; 3 genes, DEGs = genes 0 and 1."""
    X = np.array([[1, 1, 1], [1, 3, 1],            # controls: mean (1, 2, 1)
                  [2, 2, 1], [4, 2, 1],            # a: mean (3, 2, 1)
                  [1, 4, 1], [1, 4, 3],            # b: mean (1, 4, 2)
                  [3, 4, 2], [5, 6, 2]], dtype=np.float32)  # a+b: mean (4, 5, 2)
    pert = ["control"] * 2 + ["a"] * 2 + ["b"] * 2 + ["a+b"] * 2
    obs = pd.DataFrame({"cell_type": "L", "perturbation": pert,
                        "split": ["train"] * 6 + ["test"] * 2}, index=[f"c{i}" for i in range(8)])
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))
    adata.uns["top_degs"] = {"L_a+b": ["g0", "g1"]}
    task = TransferTask("L_a+b", "L", "a+b", "combination", np.array([6, 7]), np.array([0, 1]),
                        [Source("L", [(np.array([2, 3]), np.array([0, 1])), (np.array([4, 5]), np.array([0, 1]))])])
    return adata, task


def replicate_of(adata, means: dict, n: int = 3):
    """A replicate whose condition L_<p> has ``n`` cells, all equal to ``means[p]``."""
    rows, labels = [], []
    for p, m in means.items():
        rows += [m] * n
        labels += [f"L_{p}"] * n
    obs = pd.DataFrame({"condition": labels}, index=[f"r{i}" for i in range(len(rows))])
    return baselines.ReplicateOracle(ad.AnnData(np.array(rows, dtype=np.float32), obs=obs,
                                                var=pd.DataFrame(index=adata.var_names)))


def test_add_oracle_only_on_a_twin(monkeypatch):
    adata, task = double_data()
    result = experiments.Evaluation(seeds=[0], others={"combination": {}})
    assert combinations.add_oracle(result, adata, {"combination": [task]}, "norman2019") is None
    assert experiments.ORACLE not in result.kinds
    fake = replicate_of(adata, {"a+b": [4.5, 5.0, 2.0]})
    monkeypatch.setattr(baselines.ReplicateOracle, "from_synthetic", classmethod(lambda cls, name, a: fake))
    oracle = combinations.add_oracle(result, adata, {"combination": [task]}, "synthetic_combo")
    assert oracle is fake and result.kinds[experiments.ORACLE] == "oracle"
    row = result.others["combination"][experiments.ORACLE].iloc[0]
    observed, predicted = np.array([4.0, 5.0, 2.0]), np.array([4.5, 5.0, 2.0])
    assert row["r2_all"] == pytest.approx(evaluate.r2(observed, predicted))


def _run(perts, values):
    df = pd.DataFrame({"condition": [f"L_{p}" for p in perts], "cell_type": "L", "perturbation": perts, "n_cells": 2})
    for m in evaluate.METRIC_COLUMNS:
        df[m] = values if m == "r2_deg" else 0.0
    return df


def test_group_evaluations_keep_training_and_skip_empty_groups():
    perts = ["a+b", "a+c", "b+c"]
    result = experiments.Evaluation(seeds=[0, 1], model_runs={"combination": [_run(perts, [0.1, 0.2, 0.9]),
                                                                              _run(perts, [0.3, 0.4, 0.7])]},
                                    others={"combination": {"additive": _run(perts, [0.5, 0.6, 0.8])}},
                                    kinds={"additive": "baseline"}, training={"combination": {0: {"steps": 5}}})
    groups = combinations.group_evaluations(result, {"additive": ["a+b", "a+c"], "interacting": ["b+c"], "none": []})
    assert list(groups) == ["additive", "interacting"]
    assert groups["additive"].training is result.training
    assert groups["additive"].per_seed("combination", ["r2_deg"])["r2_deg"] == pytest.approx([0.15, 0.35])
    assert groups["interacting"].summary("combination").loc["additive", "r2_deg"] == pytest.approx(0.8)


def test_residual_table_means_per_group_and_per_seed_values():
    rows = []
    for method, values in (("m0", [0.1, 0.3, -1.0]), ("m1", [0.2, 0.5, -3.0]), ("additive", [0.0, 0.0, 0.0])):
        for double, group, v in zip(["a+b", "a+c", "b+c"], ["additive", "additive", "interacting"], values):
            rows.append({"method": method, "condition": f"L_{double}", "perturbation": double, "group": group,
                         "residual_pcc_deg": np.nan if method == "additive" else v / 2, "residual_r2_deg": v,
                         "residual_r2": v / 4})
    residuals = pd.DataFrame(rows)
    result = experiments.Evaluation(seeds=[0, 1], training={"combination": {
        0: {"steps": 300, "stop_reason": "converged", "monitors": {"valid": {"best_step": 200, "converged": True}}},
        1: {"steps": 400, "stop_reason": "converged", "monitors": {"valid": {"best_step": 250, "converged": True}}}}})
    table, meta = combinations.residual_table(residuals, ["additive", "interacting"], ["m0", "m1"], ["additive"], result)
    assert list(table.columns[:1]) == ["kind"]
    assert table.loc[experiments.MODEL, "residual_r2_deg (additive)"] == pytest.approx(np.mean([0.2, 0.35]))
    assert table.loc[experiments.MODEL, "residual_r2_deg (interacting)"] == pytest.approx(-2.0)
    assert table.loc[experiments.MODEL, "residual_r2 (additive)"] == pytest.approx(np.mean([0.2, 0.35]) / 4)
    assert table.loc["additive", "residual_r2_deg (additive)"] == 0.0
    assert np.isnan(table.loc["additive", "residual_pcc_deg (additive)"])
    assert meta["per_seed"][experiments.MODEL]["residual_r2_deg (additive)"] == pytest.approx([0.2, 0.35])
    assert meta["training"][experiments.MODEL]["steps"] == [300, 400]
    assert meta["metrics"] == combinations.residual_columns(["additive", "interacting"]) and meta["n_conditions"] == 3
    from xtcdr import report

    found = {v.metric: v for v in report.table_verdicts(table, meta, ["residual_r2_deg (interacting)"])}
    assert found["residual_r2_deg (interacting)"].mean == pytest.approx(-2.0)


def test_residual_energy_by_hand():
    adata, task = double_data()
    X = np.asarray(adata.X, dtype=np.float64)
    oracle = replicate_of(adata, {"a+b": [4.0, 6.0, 2.0]}).fit(adata)
    additive = baselines.AdditiveBaseline().fit(adata)
    energy = combinations.residual_energy(adata, [task], oracle, additive, {"a+b": "interacting"})
    O, c = np.array([4.0, 6.0, 2.0]), X[:2].mean(0)
    A = X[2:4].mean(0) + X[4:6].mean(0) - c            # (3, 4, 2)
    var_mean = lambda rows: X[rows].var(0, ddof=1) / len(rows)
    noise = var_mean([0, 1]) + var_mean([2, 3]) + var_mean([4, 5])   # the replicate's cells are constant
    for genes, label in ((slice(None), "all genes"), ([0, 1], "DEGs")):
        row = energy.loc[("interacting", label)]
        response = ((O - c)[genes] ** 2).sum()
        assert row["missed"] == pytest.approx(((O - A)[genes] ** 2).sum() / response)
        assert row["noise"] == pytest.approx(noise[genes].sum() / response)
        assert row["systematic"] == pytest.approx(row["missed"] - row["noise"])


class LinearCodes(torch.nn.Module):
    """A stand-in model whose perturbation code is x @ W (no basal encoder needed here)."""

    def __init__(self, W):
        super().__init__()
        self.W = torch.nn.Parameter(torch.as_tensor(W, dtype=torch.float32))

    def encode_perturbation(self, x):
        return x @ self.W


def test_control_code_offset_by_hand():
    adata, task = double_data()
    X = np.asarray(adata.X, dtype=np.float32)
    W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    out = combinations.control_code_offset(LinearCodes(W), X, [task])
    codes = X.astype(np.float64) @ W
    p_ctrl = codes[:2].mean(0)
    shift = np.linalg.norm(codes[2:6] - p_ctrl, axis=1).mean()
    assert out["offset"] == pytest.approx(np.linalg.norm(p_ctrl), rel=1e-6)
    assert out["shift"] == pytest.approx(shift, rel=1e-6)
    assert out["ratio"] == pytest.approx(np.linalg.norm(p_ctrl) / shift, rel=1e-6)


def test_figure_double_rules():
    scored = ["a+b", "c+d", "e+f"]
    residuals = pd.DataFrame({"method": ["additive"] * 3 + ["model"] * 3, "perturbation": scored * 2,
                              "true_norm": [1.0, 3.0, 2.0, 9.0, 9.0, 9.0]})
    assert combinations.figure_double(scored, requested="b+a") == "a+b"
    with pytest.raises(ValueError, match="not a scored double"):
        combinations.figure_double(scored, requested="x+y")
    assert combinations.figure_double(scored, named=("x+y", "d+c"), residuals=residuals) == "c+d"
    assert combinations.figure_double(scored, residuals=residuals, interacting=["a+b", "e+f"]) == "e+f"
    assert combinations.figure_double(scored, residuals=residuals) == "c+d"


def test_fifth_loss_facts_count_training_doubles_and_triples():
    adata = synthetic.simulate("synthetic_combo", n_genes=60, n_singles=6, n_doubles=6, n_interacting=2,
                               cells_per_condition=10, controls_per_cell_type=40)
    adata.X = np.log1p(adata.X).astype(np.float32)
    pairing.assign_split(adata, seed=0, test_rule="doubles", n_test=2)
    history = pd.DataFrame({"step": [50, 100, 150], "train_combo": [np.nan, 0.8, 0.5]})
    facts = combinations.fifth_loss_facts(adata, history)
    pert = adata.obs["perturbation"].astype(str)
    train = adata.obs["split"].astype(str) == "train"
    assert facts["training doubles"] == pert[train & pert.str.contains("+", regex=False)].nunique() == 4
    assert facts["triples"] == len(pairing.combination_triples(adata, split="train", seed=0)) > 0
    assert (facts["first"], facts["last"]) == (0.8, 0.5)
    assert np.isnan(combinations.fifth_loss_facts(adata, history.drop(columns="train_combo"))["first"])
