"""Helpers of notebook 06 (`xtcdr.combinations`), checked on small hand-made data against a hand
computation: the oracle of every world, the group evaluations (per world), the residuals of every
world with their noise, the residual table and its per-world values, the energy additivity misses
and the verdict on what is left over, the figure on the DEGs, the control-code offset, the
figure's double and the fifth loss's facts."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from xtcdr import baselines, combinations, evaluate, experiments, pairing, synthetic, verdicts
from xtcdr.config import ModelConfig
from xtcdr.model import XTransferCDR
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


def evaluation_of(adata, task, seeds=(0, 1), model=None):
    """An evaluation of ``len(seeds)`` worlds that all hold ``adata`` and its one ``task``."""
    worlds = [experiments.World(s, s, adata, {"combination": [task]}) for s in seeds]
    models = {"combination": {i: model for i in range(len(seeds))}} if model is not None else {}
    return experiments.Evaluation(worlds=worlds, models=models)


def test_world_oracles_only_on_a_twin(monkeypatch):
    adata, task = double_data()
    adata.uns["xtcdr"] = {"dataset": "norman2019"}
    assert combinations.world_oracles(evaluation_of(adata, task)) == [None, None]
    fake = replicate_of(adata, {"a+b": [4.5, 5.0, 2.0]})
    asked = []
    monkeypatch.setattr(baselines.ReplicateOracle, "from_synthetic",
                        classmethod(lambda cls, name, a: asked.append(name) or fake))
    adata.uns["xtcdr"] = {"dataset": "synthetic_combo"}
    oracles = combinations.world_oracles(evaluation_of(adata, task))
    assert oracles == [fake, fake] and asked == ["synthetic_combo", "synthetic_combo"]
    assert oracles[0].means_["L_a+b"] == pytest.approx([4.5, 5.0, 2.0])  # fitted


def _run(perts, values):
    df = pd.DataFrame({"condition": [f"L_{p}" for p in perts], "cell_type": "L", "perturbation": perts, "n_cells": 2})
    for m in evaluate.METRIC_COLUMNS:
        df[m] = values if m == "r2_deg" else 0.0
    return df


def test_group_evaluations_follow_each_worlds_groups():
    w0, w1 = ["a+b", "a+c", "b+c"], ["d+e", "d+f", "e+f"]  # every world has its own doubles
    runs = {"combination": {experiments.MODEL: [_run(w0, [0.1, 0.2, 0.9]), _run(w1, [0.3, 0.4, 0.7])],
                            "additive": [_run(w0, [0.5, 0.6, 0.8]), _run(w1, [0.2, 0.2, 0.6])]}}
    worlds = [experiments.World(s, s, None, {}) for s in (0, 1)]
    result = experiments.Evaluation(worlds=worlds, runs=runs, kinds={experiments.MODEL: "model", "additive": "baseline"},
                                    training={"combination": {0: {"steps": 5}}})
    groups = [{"additive": ["a+b", "a+c"], "interacting": ["b+c"], "none": []},
              {"additive": ["e+f"], "interacting": ["d+e", "d+f"], "none": []}]
    out = combinations.group_evaluations(result, groups)
    assert list(out) == ["additive", "interacting"]
    assert out["additive"].training is result.training
    per_world = out["additive"].per_world("combination", ["r2_deg"])
    assert per_world[experiments.MODEL]["r2_deg"] == pytest.approx([0.15, 0.7])
    assert per_world["additive"]["r2_deg"] == pytest.approx([0.55, 0.6])
    assert out["interacting"].summary("combination").loc[experiments.MODEL, "r2_deg"] == pytest.approx((0.9 + 0.35) / 2)
    with pytest.raises(ValueError, match="one group dict per world"):
        combinations.group_evaluations(result, groups[:1])


def test_world_residuals_stack_every_world_with_its_groups_and_noise():
    adata, task = double_data()
    X = np.asarray(adata.X, dtype=np.float64)
    torch.manual_seed(0)
    model = XTransferCDR(3, ModelConfig(hidden=(4,), latent=2, dropout=0.0)).eval()
    result = evaluation_of(adata, task, seeds=(3, 5), model=model)
    oracle = replicate_of(adata, {"a+b": [4.0, 6.0, 2.0]}).fit(adata)
    groups = [{"interacting": ["a+b"]}, {"additive": ["a+b"]}]
    res = combinations.world_residuals(result, [oracle, None], groups)
    assert list(res["world"].unique()) == [3, 5]
    assert set(res["method"]) == {experiments.MODEL, "additive", "train mean"}
    assert list(res.drop_duplicates("world")["group"]) == ["interacting", "additive"]
    additive = baselines.AdditiveBaseline().fit(adata)
    direct = combinations.interaction_residuals(adata, [task], {"m": evaluate.ModelPredictor(model)},
                                                additive=additive, reference=oracle).iloc[0]
    mine = res[(res["world"] == 3) & (res["method"] == experiments.MODEL)].iloc[0]
    assert mine["residual_r2_deg"] == pytest.approx(direct["residual_r2_deg"])
    # world 3 reads the replicate (constant cells: no reference noise), world 5 the observed mean
    var_mean = lambda rows, genes: (X[rows][:, genes].var(0, ddof=1) / len(rows)).sum()
    by_hand = sum(var_mean(r, [0, 1]) for r in ([0, 1], [2, 3], [4, 5]))
    assert mine["noise_deg"] == pytest.approx(by_hand)
    assert mine["noise"] == pytest.approx(sum(var_mean(r, [0, 1, 2]) for r in ([0, 1], [2, 3], [4, 5])))
    observed = res[(res["world"] == 5) & (res["method"] == "additive")].iloc[0]
    A = X[2:4].mean(0) + X[4:6].mean(0) - X[:2].mean(0)
    assert observed["true_norm"] == pytest.approx(np.linalg.norm(X[6:8].mean(0) - A))


def test_residual_table_pairs_every_row_by_world():
    rows = []
    values = {experiments.MODEL: {0: [0.1, 0.3, -1.0], 1: [0.2, 0.5, -3.0]},
              "additive": {0: [0.0, 0.0, 0.0], 1: [0.0, 0.0, 0.0]},
              "train mean": {0: [-0.5, -0.5, -2.0], 1: [-0.1, -0.3, -1.0]}}
    for method, by_world in values.items():
        for world, vals in by_world.items():
            for double, group, v in zip(["a+b", "a+c", "b+c"], ["additive", "additive", "interacting"], vals):
                rows.append({"world": world, "method": method, "condition": f"L_{double}{world}",
                             "perturbation": double, "group": group,
                             "residual_pcc_deg": np.nan if method == "additive" else v / 2,
                             "residual_r2_deg": v, "residual_r2": v / 4})
    residuals = pd.DataFrame(rows)
    training = {i: {"steps": 300 + 100 * i, "stop_reason": "converged",
                    "monitors": {"valid": {"best_step": 200, "converged": True}}} for i in (0, 1)}
    result = experiments.Evaluation(worlds=[experiments.World(s, s, None, {}) for s in (0, 1)],
                                    training={"combination": training})
    table, meta = combinations.residual_table(residuals, ["additive", "interacting"], result)
    assert list(table.index) == [experiments.MODEL, "additive", "train mean"]
    assert list(table["kind"]) == ["model", "baseline", "baseline"]
    assert table.loc[experiments.MODEL, "residual_r2_deg (additive)"] == pytest.approx(np.mean([0.2, 0.35]))
    assert table.loc[experiments.MODEL, "residual_r2_deg (interacting)"] == pytest.approx(-2.0)
    assert table.loc[experiments.MODEL, "residual_r2 (additive)"] == pytest.approx(np.mean([0.2, 0.35]) / 4)
    assert table.loc["additive", "residual_r2_deg (additive)"] == 0.0
    assert np.isnan(table.loc["additive", "residual_pcc_deg (additive)"])
    per_world = meta["per_seed"]
    assert per_world[experiments.MODEL]["residual_r2_deg (additive)"] == pytest.approx([0.2, 0.35])
    assert per_world["train mean"]["residual_r2_deg (interacting)"] == pytest.approx([-2.0, -1.0])
    assert meta["training"][experiments.MODEL]["steps"] == [300, 400]
    assert meta["metrics"] == combinations.residual_columns(["additive", "interacting"])
    assert meta["n_conditions"] == [3, 3] and meta["seeds"] == [0, 1]
    found = {(v.other, v.metric): v for v in verdicts.table_verdicts(table, meta, ["residual_r2_deg (interacting)"])}
    # paired by world: model - train mean = (-1 - -2, -3 - -1) = (+1, -2)
    assert found[("train mean", "residual_r2_deg (interacting)")].differences == pytest.approx([1.0, -2.0])
    assert found[("additive", "residual_r2_deg (interacting)")].differences == pytest.approx([-1.0, -3.0])
    with pytest.raises(ValueError, match="lack world"):
        combinations.residual_table(residuals[residuals["world"] == 0], ["additive"], result)


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


def test_world_energy_and_the_verdict_on_what_is_left_over():
    adata, task = double_data()
    oracle = replicate_of(adata, {"a+b": [4.0, 6.0, 2.0]}).fit(adata)
    result = evaluation_of(adata, task, seeds=(0, 1))
    energy = combinations.world_energy(result, [oracle, None], [{"interacting": ["a+b"]}, {"additive": ["a+b"]}])
    assert list(energy.index.names) == ["world", "group", "genes"]
    assert set(energy.index.get_level_values("world")) == {0}  # world 1 has no replicate
    alone = combinations.residual_energy(adata, [task], oracle, baselines.AdditiveBaseline().fit(adata),
                                         {"a+b": "interacting"})
    pd.testing.assert_frame_equal(energy.xs(0, level="world"), alone)
    assert combinations.world_energy(result, [None, None], [{}, {}]).empty
    # the verdict on the systematic part, world by world, against zero with the R^2 margin
    index = pd.MultiIndex.from_product([[0, 1, 2], ["flat", "up", "down"], ["DEGs", "all genes"]],
                                       names=["world", "group", "genes"])
    systematic = {"flat": [0.001, -0.002, 0.0005], "up": [0.2, 0.15, 0.25], "down": [-0.3, -0.25, -0.35]}
    table = pd.DataFrame({"systematic": [systematic[g][w] * (1 if genes == "DEGs" else 9)
                                         for w, g, genes in index]}, index=index)
    found = combinations.room_verdicts(table)
    assert {g: v.word for g, v in found.items()} == {"flat": "equivalent", "up": "beats", "down": "loses to"}
    assert found["up"].differences == pytest.approx([0.2, 0.15, 0.25])  # the DEGs, not all genes
    assert found["flat"].margin == verdicts.MARGIN
    assert "no room" in combinations.room_sentence("flat", found["flat"])
    assert "there is room for a predictor" in combinations.room_sentence("up", found["up"])
    assert "interaction" in combinations.room_sentence("interacting", found["up"])
    assert "no measurable room" in combinations.room_sentence("down", found["down"])
    spread = {0: 0.3, 1: -0.3, 2: 0.1}  # an interval that holds zero and reaches past the margin
    wide = combinations.room_verdicts(table.assign(systematic=[spread[w] for w, _, _ in index]))
    assert wide["flat"].word == "inconclusive (more worlds needed)" and wide["flat"].needed is None
    near = {0: 0.05, 1: -0.01, 2: 0.03}  # the same, resolvable with more worlds
    found = combinations.room_verdicts(table.assign(systematic=[near[w] for w, _, _ in index]))["flat"]
    assert found.word == "inconclusive (more worlds needed)" and found.needed
    assert f"about {found.needed} worlds would resolve it" in combinations.room_sentence("flat", found)
    assert "open" in combinations.room_sentence("flat", wide["flat"])


def test_distances_on_degs_and_their_figure():
    residuals = pd.DataFrame({"world": [0, 0, 1, 0], "method": ["m", "m", "m", "additive"],
                              "perturbation": ["a+b", "c+d", "a+b", "a+b"], "group": ["additive", "interacting"] * 2,
                              "true_norm_deg": [2.0, 1.0, 3.0, 2.0], "residual_r2_deg": [0.75, -1.0, 0.0, 0.0],
                              "noise_deg": [1.0, 0.5, 2.0, 1.0]})
    points = combinations.distances_on_degs(residuals, "m")
    assert points["additive"].tolist() == [4.0, 1.0, 9.0]
    assert points["method"].tolist() == [1.0, 2.0, 9.0]   # (1 - residual_r2_deg) |O - A|^2
    assert points["noise"].tolist() == [1.0, 0.5, 2.0]
    with pytest.raises(KeyError, match="noise floor"):
        combinations.distances_on_degs(residuals.drop(columns="noise_deg"), "m")
    example = {"true": [0.5, -0.2, 0.1], "pred": [0.1, 0.0, 0.3], "noise_sd": [0.1, 0.1, 0.2], "name": "a+b"}
    fig = combinations.plot_residuals_on_degs(points, method="m", example=example)
    left, right = fig.axes
    labels = left.get_legend_handles_labels()[1]
    assert "additive: m closer for 1 of 2" in labels and "interacting: m closer for 0 of 1" in labels
    assert any("noise floor" in label for label in labels)
    assert left.get_xscale() == "log" and right.get_title() == "a+b"
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_residual_example_on_the_degs_with_the_noise_per_gene():
    adata, task = double_data()
    X = np.asarray(adata.X, dtype=np.float64)
    oracle = replicate_of(adata, {"a+b": [4.0, 6.0, 2.0]}).fit(adata)
    example = combinations.residual_example(adata, task, oracle, baselines.ControlBaseline().fit(adata))
    A = X[2:4].mean(0) + X[4:6].mean(0) - X[:2].mean(0)         # (3, 4, 2); DEGs: genes 0 and 1
    assert example["true"] == pytest.approx((np.array([4.0, 6.0, 2.0]) - A)[:2])
    assert example["pred"] == pytest.approx((X[:2].mean(0) - A)[:2])
    variance = sum(X[r][:, :2].var(0, ddof=1) / 2 for r in ([0, 1], [2, 3], [4, 5]))
    assert example["noise_sd"] == pytest.approx(np.sqrt(variance))
    assert example["name"].startswith("a+b")


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
