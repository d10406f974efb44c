"""The single-gene knockdown protocol (notebook 05, paper Table 3): the published held-out lists,
the two-line genetic twin, disjoint seeded halves, no leak of held-out knockdowns into training,
and the DEG metric with the knocked-down gene left out (checked by hand with numpy)."""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from xtcdr import datasets, evaluate, pipeline
from xtcdr.baselines import ControlBaseline, TrainMeanBaseline
from xtcdr.evaluate import Predictor, Source, TransferTask
from xtcdr.pairing import assign_split, training_pairs
from xtcdr.synthetic import TWINS, simulate

# a small two-line genetic world: 12 singles, 4 in both lines, 4 own per line
SMALL = dict(n_genes=200, n_singles=12, n_shared=4, cells_per_condition=20, controls_per_cell_type=60)


# ------------------------------------------------------------------ published held-out lists

def scperturb_screen(labels, cell_line="K562", n_genes=40, seed=0):
    """A tiny screen in scPerturb's schema whose genes include the knocked-down ones."""
    n = 8 * len(labels)
    rng = np.random.default_rng(seed)
    genes = list(dict.fromkeys([l for l in labels if l != "control"]
                               + [f"gene{j}" for j in range(n_genes)]))[:n_genes]
    obs = pd.DataFrame({"perturbation": [labels[i % len(labels)] for i in range(n)],
                        "cell_line": cell_line, "nperts": 1},
                       index=[f"{cell_line}_{i}" for i in range(n)])
    X = sp.csr_matrix(rng.poisson(2.0, (n, len(genes))).astype(np.float32))
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes))


def test_published_lists_are_applied_and_missing_names_reported():
    labels = ["control", "RPL23A", "EIF3B", "GATA1", "MYC", "POLR2A", "TP53"]
    with pytest.warns(UserWarning, match="not in the data") as record:
        adata = datasets.convert("replogle_k562", scperturb_screen(labels))
    info = adata.uns["xtcdr"]
    assert sorted(info["test_perturbations"]) == ["EIF3B", "GATA1", "RPL23A"]
    missing = set(info["test_perturbations_missing"])
    assert len(missing) == 36 and "SARS" in missing and "RPL23A" not in missing
    assert "SARS" in str(record[0].message)
    assign_split(adata, seed=0)
    assert adata.uns["xtcdr"]["split"]["rule"] == "published"
    test = adata.obs["split"] == "test"
    assert set(adata.obs.loc[test, "perturbation"]) == {"EIF3B", "GATA1", "RPL23A"}
    assert not adata.obs.loc[~test, "perturbation"].isin(["EIF3B", "GATA1", "RPL23A"]).any()


def test_perturbed_genes_stay_beside_the_highly_variable_ones():
    from xtcdr.preprocess import preprocess

    labels = ["control", "RPL23A", "EIF3B", "MYC"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata = datasets.convert("replogle_k562", scperturb_screen(labels, n_genes=40))
    out = preprocess(adata, n_top_genes=5)
    assert {"RPL23A", "EIF3B", "MYC"} <= set(out.var_names)
    assert out.var.loc[["RPL23A", "EIF3B", "MYC"], "perturbed_gene"].all()


def test_concat_lines_keeps_shared_genes_and_unites_held_out_lists():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        k562 = datasets.convert("replogle_k562", scperturb_screen(["control", "RPL23A", "GATA1", "MYC"]))
        rpe1 = datasets.convert("replogle_rpe1", scperturb_screen(["control", "RPL23A", "RPS7", "MYC"],
                                                                  cell_line="RPE1", n_genes=38))
    both = datasets.concat_lines({"replogle_k562": k562, "replogle_rpe1": rpe1})
    shared = set(k562.var_names) & set(rpe1.var_names)
    assert set(both.var_names) == shared
    assert both.uns["xtcdr"]["genes_lost"] == {"replogle_k562": k562.n_vars - len(shared),
                                               "replogle_rpe1": rpe1.n_vars - len(shared)}
    assert both.uns["xtcdr"]["test_perturbations"] == ["GATA1", "RPL23A", "RPS7"]
    datasets.validate_schema(both)
    assert set(both.obs["condition"]) >= {"K562_RPL23A", "RPE1_RPL23A"}
    with pytest.raises(ValueError, match="at least two"):
        datasets.concat_lines({"replogle_k562": k562})


# ------------------------------------------------------------------ the two-line twin

def test_genetic_twin_has_two_lines_with_a_shared_subset():
    cfg = TWINS["synthetic_genes"]
    assert cfg.n_cell_types == 2 and cfg.kind == "genetic" and cfg.target_fold is None
    adata = simulate("synthetic_genes")
    truth = adata.uns["truth"]
    lines = sorted(adata.obs["cell_type"].unique())
    assert lines == ["line_A", "line_B"]
    perturbed = adata.obs[~adata.obs["is_control"]]
    observed = {ct: set(perturbed.loc[perturbed["cell_type"] == ct, "perturbation"]) for ct in lines}
    assert {ct: set(v) for ct, v in truth["measured"].items()} == observed
    assert all(len(v) == (cfg.n_singles + cfg.n_shared) // 2 for v in observed.values())
    assert observed["line_A"] & observed["line_B"] == set(truth["shared"])
    assert len(truth["shared"]) == cfg.n_shared
    assert observed["line_A"] | observed["line_B"] == set(truth["perturbations"])
    assert set(truth["perturbations"]) <= set(adata.var_names)     # each knockdown names a gene


def test_measured_sets_are_part_of_the_world():
    a = simulate("synthetic_genes", **SMALL)
    b = simulate("synthetic_genes", cell_seed=1, **SMALL)        # a replicate: same world
    assert a.uns["truth"]["measured"] == b.uns["truth"]["measured"]
    c = simulate("synthetic_genes", seed=1, **SMALL)              # another world
    assert a.uns["truth"]["measured"] != c.uns["truth"]["measured"]
    with pytest.raises(ValueError, match="evenly"):
        simulate("synthetic_genes", **dict(SMALL, n_shared=5))


def test_twin_split_holds_out_knockdowns_of_every_measurement_pattern():
    adata = pipeline.prepare(simulate("synthetic_genes", **SMALL), seed=0, verbose=False)
    info = adata.uns["xtcdr"]["split"]
    shared = set(adata.uns["truth"]["shared"])
    assert info["rule"] == "random"
    assert dict(info["strata"]) == {"line_A": 1, "line_A+line_B": 1, "line_B": 1}  # round(0.2 * 4)
    assert len(set(info["test_perturbations"]) & shared) == 1
    again = pipeline.prepare(simulate("synthetic_genes", **SMALL), seed=0, verbose=False)
    assert list(again.uns["xtcdr"]["split"]["test_perturbations"]) == list(info["test_perturbations"])


@pytest.fixture(scope="module")
def twin():
    return pipeline.prepare(simulate("synthetic_genes", **SMALL), seed=0, verbose=False)


def test_within_halves_are_disjoint_and_seeded(twin):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = evaluate.transfer_tasks(twin, protocol="within", seed=0)
        same = evaluate.transfer_tasks(twin, protocol="within", seed=0)
        other = evaluate.transfer_tasks(twin, protocol="within", seed=1)
    condition = twin.obs["condition"].astype(str).to_numpy()
    assert len(first) == 4            # 2 held-out knockdowns per line
    for a, b in zip(first, same):
        read = a.sources[0].components[0][0]
        assert np.intersect1d(read, a.target_idx).size == 0
        assert set(condition[read]) == set(condition[a.target_idx]) == {a.condition}
        assert np.union1d(read, a.target_idx).size == (condition == a.condition).sum()
        assert np.array_equal(a.target_idx, b.target_idx)
        assert np.array_equal(read, b.sources[0].components[0][0])
    assert any(not np.array_equal(a.target_idx, c.target_idx) for a, c in zip(first, other))


def test_cross_line_tasks_exist_for_shared_held_out_knockdowns(twin):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tasks = evaluate.transfer_tasks(twin, protocol="cross", seed=0)
    shared_held = set(twin.uns["truth"]["shared"]) & set(twin.uns["xtcdr"]["split"]["test_perturbations"])
    assert {t.perturbation for t in tasks} == shared_held
    assert sorted(t.cell_type for t in tasks) == ["line_A", "line_B"]
    for t in tasks:
        assert [s.context for s in t.sources] == [("line_B" if t.cell_type == "line_A" else "line_A")]


def test_no_held_out_knockdown_reaches_training_pairs_or_the_train_mean(twin):
    held = list(twin.uns["xtcdr"]["split"]["test_perturbations"])
    pert = twin.obs["perturbation"].astype(str).to_numpy()
    pairs = training_pairs(twin, seed=0)
    assert not np.isin(pert[np.concatenate([pairs.a, pairs.b, pairs.ctrl_a, pairs.ctrl_b])], held).any()
    fitted = TrainMeanBaseline().fit(twin)
    corrupted = twin.copy()
    corrupted.X = np.asarray(corrupted.X).copy()
    corrupted.X[np.isin(pert, held)] = 1e3
    refit = TrainMeanBaseline().fit(corrupted)
    for ct in fitted.effects_:
        np.testing.assert_array_equal(fitted.effects_[ct], refit.effects_[ct])
    # by hand: the mean over training knockdowns of (their training mean - training control mean)
    X = np.asarray(twin.X, dtype=np.float64)
    split = twin.obs["split"].astype(str).to_numpy()
    line = twin.obs["cell_type"].astype(str).to_numpy()
    train_line = (split == "train") & (line == "line_A")
    ctrl = X[train_line & (pert == "control")].mean(0)
    knockdowns = sorted(set(pert[train_line]) - {"control"})
    assert not set(knockdowns) & set(held)
    expected = np.mean([X[train_line & (pert == p)].mean(0) - ctrl for p in knockdowns], axis=0)
    np.testing.assert_allclose(fitted.effects_["line_A"], expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the target gene left out

class FixedPredictor(Predictor):
    name = "fixed"

    def __init__(self, profile):
        self.profile = np.asarray(profile, dtype=np.float64)

    def predict(self, X, task, source):
        return self.profile


def test_drop_target_metric_by_hand():
    genes = ["g0", "KD", "g2", "g3", "g4", "g5"]
    X = np.array([[1, 2, 1, 0, 3, 1],      # controls
                  [1, 2, 1, 0, 3, 1],
                  [2, 0, 1, 1, 5, 1],      # knockdown of KD: KD falls, others move
                  [2, 0, 3, 1, 5, 3]], dtype=np.float32)
    obs = pd.DataFrame({"cell_type": "L", "perturbation": ["control", "control", "KD", "KD"],
                        "split": ["train", "train", "test", "test"]}, index=[f"c{i}" for i in range(4)])
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns["top_degs"] = {"L_KD": ["KD", "g4", "g0", "g2"]}
    task = TransferTask("L_KD", "L", "KD", "cross", np.array([2, 3]), np.array([0, 1]),
                        [Source("L", [(np.array([2]), np.array([0, 1]))])])
    prediction = np.array([1.5, 1.5, 1.5, 0.5, 4.0, 1.5])
    observed = np.array([2.0, 0.0, 2.0, 1.0, 5.0, 2.0])
    control = np.array([1.0, 2.0, 1.0, 0.0, 3.0, 1.0])

    def r2(y, p):
        return 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()

    assert evaluate.target_positions(adata, "KD").tolist() == [1]
    assert evaluate.target_positions(adata, "KD+g3").tolist() == [1, 3]
    assert evaluate.target_positions(adata, "drug_01").size == 0
    full = evaluate.evaluate_transfer(FixedPredictor(prediction), adata, tasks=[task]).iloc[0]
    dropped = evaluate.evaluate_transfer(FixedPredictor(prediction), adata, tasks=[task],
                                         drop_genes="target").iloc[0]
    keep, deg_keep = [0, 2, 3, 4, 5], [4, 0, 2]
    degs_all = [1, 4, 0, 2]
    assert full["r2_all"] == pytest.approx(r2(observed, prediction))
    assert full["r2_deg"] == pytest.approx(r2(observed[degs_all], prediction[degs_all]))
    assert dropped["r2_all"] == pytest.approx(r2(observed[keep], prediction[keep]))
    assert dropped["r2_deg"] == pytest.approx(r2(observed[deg_keep], prediction[deg_keep]))
    assert dropped["r2_deg_delta"] == pytest.approx(
        r2((observed - control)[deg_keep], (prediction - control)[deg_keep]))
    assert dropped["n_degs"] == 3 and full["n_degs"] == 4
    # the target's fall is most of the error of a prediction that ignores it
    error = (observed[degs_all] - prediction[degs_all]) ** 2
    assert error[0] / error.sum() > 0.5 and dropped["r2_deg"] > full["r2_deg"]
    by_name = evaluate.evaluate_transfer(FixedPredictor(prediction), adata, tasks=[task],
                                         drop_genes=lambda t: [t.perturbation]).iloc[0]
    assert by_name["r2_deg"] == pytest.approx(dropped["r2_deg"])
    with pytest.raises(ValueError, match="drop_genes"):
        evaluate.evaluate_transfer(ControlBaseline(), adata, tasks=[task], drop_genes="targets")
