"""Metrics against sklearn/scipy, the transfer protocols, evaluate_transfer and ModelPredictor."""
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import explained_variance_score, r2_score

from xtcdr import evaluate as ev
from xtcdr.baselines import ControlBaseline, SourceShiftBaseline

N_GENES = 12


def toy_adata(seed: int = 0) -> ad.AnnData:
    """Three cell types; test drugs d1 (A, B, C) and d3 (C only); training singles t1, t2 in every
    cell type; test double t1+t2 in A; test double t1+zz in B (single zz never measured)."""
    rng = np.random.default_rng(seed)
    layout = []  # (cell_type, perturbation, n_cells, split)
    for ct in ("A", "B", "C"):
        layout += [(ct, "control", 8, "train"), (ct, "control", 3, "valid"),
                   (ct, "t1", 6, "train"), (ct, "t2", 5, "train"), (ct, "t2", 2, "valid")]
    layout += [("A", "d1", 5, "test"), ("B", "d1", 4, "test"), ("C", "d1", 3, "test"),
               ("C", "d3", 7, "test"), ("A", "t1+t2", 4, "test"), ("B", "t1+zz", 3, "test")]
    base = {ct: rng.uniform(0.5, 2.0, N_GENES) for ct in ("A", "B", "C")}
    effect = {p: rng.normal(0, 1, N_GENES) for p in ("t1", "t2", "d1", "d3", "zz")}
    obs, rows = [], []
    for ct, pert, n, split in layout:
        mean = base[ct] + sum(effect[p] for p in pert.split("+") if p != "control")
        rows.append(mean + rng.normal(0, 0.3, (n, N_GENES)))
        obs += [dict(cell_type=ct, perturbation=pert, split=split)] * n
    obs = pd.DataFrame(obs)
    obs["is_control"] = obs["perturbation"] == "control"
    obs["dose"] = np.nan
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    obs.index = [f"cell{i}" for i in range(len(obs))]
    adata = ad.AnnData(np.vstack(rows).astype(np.float32), obs=obs,
                       var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
    conditions = sorted(set(obs.loc[~obs["is_control"], "condition"]))
    adata.uns["top_degs"] = {c: ["g0", "g3", "g5", "g7", "NOT_A_GENE"] for c in conditions}
    return adata


def tasks_of(adata, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {t.condition: t for t in ev.transfer_tasks(adata, **kwargs)}


# ----------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=50)
    yhat = 0.7 * y + rng.normal(scale=0.5, size=50) + 0.3
    assert ev.r2(y, yhat) == pytest.approx(r2_score(y, yhat), abs=1e-12)
    assert ev.explained_variance(y, yhat) == pytest.approx(explained_variance_score(y, yhat), abs=1e-12)
    assert ev.pearson(y, yhat) == pytest.approx(pearsonr(y, yhat).statistic, abs=1e-12)
    ties = np.round(yhat, 1)
    assert ev.spearman(y, ties) == pytest.approx(spearmanr(y, ties).statistic, abs=1e-12)


def test_metric_edge_cases():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    const = np.full(4, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constant inputs must not print a warning
        assert ev.r2(y, y) == 1.0 and ev.explained_variance(y, y) == 1.0
        assert ev.pearson(y, y) == pytest.approx(1.0) and ev.spearman(y, y) == pytest.approx(1.0)
        assert ev.r2(const, const) == 1.0 and ev.explained_variance(const, const) == 1.0
        assert ev.r2(const, y) == 0.0 and ev.explained_variance(const, y) == 0.0
        assert ev.r2(const, y) == r2_score(const, y)
        assert ev.explained_variance(const, y) == explained_variance_score(const, y)
        for metric in (ev.pearson, ev.spearman):
            assert np.isnan(metric(const, y)) and np.isnan(metric(y, const))
        for metric in (ev.r2, ev.explained_variance, ev.pearson, ev.spearman):
            assert np.isnan(metric([1.0], [1.0]))
            assert np.isnan(metric([], []))
    for metric in (ev.r2, ev.explained_variance, ev.pearson, ev.spearman):
        with pytest.raises(ValueError, match="length mismatch"):
            metric(y, y[:3])


# ----------------------------------------------------------------------------- tasks
def test_cross_tasks_use_only_other_contexts():
    adata = toy_adata()
    obs = adata.obs
    tasks = tasks_of(adata)
    cross = [t for t in tasks.values() if t.protocol == "cross"]
    assert sorted(t.condition for t in cross) == ["A_d1", "B_d1", "C_d1"]
    for task in cross:
        assert {s.context for s in task.sources} == {"A", "B", "C"} - {task.cell_type}
        assert (obs["condition"].iloc[task.target_idx] == task.condition).all()
        assert task.target_idx.size == (obs["condition"] == task.condition).sum()
        for source in task.sources:
            (perturbed, controls), = source.components
            assert (obs["cell_type"].iloc[perturbed] == source.context).all()
            assert (obs["perturbation"].iloc[perturbed] == task.perturbation).all()
            expected = np.flatnonzero(obs["is_control"] & (obs["cell_type"] == source.context))
            np.testing.assert_array_equal(controls, expected)
        np.testing.assert_array_equal(
            task.control_idx, np.flatnonzero(obs["is_control"] & (obs["cell_type"] == task.cell_type)))


def test_within_halves_are_disjoint_and_cover_the_condition():
    adata = toy_adata()
    obs = adata.obs
    task = tasks_of(adata)["C_d3"]  # d3 exists in C only: auto falls back to within
    assert task.protocol == "within" and len(task.sources) == 1
    (source_rows, controls), = task.sources[0].components
    assert np.intersect1d(source_rows, task.target_idx).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([source_rows, task.target_idx])),
                                  np.flatnonzero(obs["condition"] == "C_d3"))
    assert source_rows.size == 3 and task.target_idx.size == 4
    again = tasks_of(adata)["C_d3"]
    np.testing.assert_array_equal(again.target_idx, task.target_idx)
    forced = tasks_of(adata, protocol="within")
    assert {t.protocol for c, t in forced.items() if "+" not in c} == {"within"}
    assert forced["A_d1"].sources[0].context == "A"


def test_combination_tasks_use_non_test_singles():
    adata = toy_adata()
    obs = adata.obs
    with pytest.warns(UserWarning, match="B_t1\\+zz"):
        tasks = {t.condition: t for t in ev.transfer_tasks(adata)}
    assert "B_t1+zz" not in tasks
    task = tasks["A_t1+t2"]
    assert task.protocol == "combination" and len(task.sources) == 1
    source = task.sources[0]
    assert source.context == "A" and len(source.components) == 2
    for single, (perturbed, controls) in zip(("t1", "t2"), source.components):
        np.testing.assert_array_equal(
            perturbed, np.flatnonzero((obs["condition"] == f"A_{single}") & (obs["split"] != "test")))
        np.testing.assert_array_equal(controls, task.control_idx)
    with pytest.warns(UserWarning, match="zz"):
        only = ev.transfer_tasks(adata, protocol="combination")
    assert [t.condition for t in only] == ["A_t1+t2"]


def test_no_test_cell_feeds_a_combination_and_controls_are_never_scored():
    adata = toy_adata()
    split = adata.obs["split"].to_numpy()
    is_control = adata.obs["is_control"].to_numpy()
    for protocol in ("auto", "within", "cross"):
        for task in tasks_of(adata, protocol=protocol).values():
            assert not is_control[task.target_idx].any()
            assert (split[task.target_idx] == "test").all()
            if task.protocol == "combination":
                for source in task.sources:
                    for perturbed, _ in source.components:
                        assert (split[perturbed] != "test").all()


def test_cross_protocol_skips_singles_without_other_context():
    adata = toy_adata()
    with pytest.warns(UserWarning, match="C_d3"):
        tasks = {t.condition: t for t in ev.transfer_tasks(adata, protocol="cross")}
    assert "C_d3" not in tasks and tasks["A_d1"].protocol == "cross"
    with pytest.raises(ValueError, match="protocol must be one of"):
        ev.transfer_tasks(adata, protocol="sideways")
    with pytest.raises(ValueError, match="no cells with"):
        ev.transfer_tasks(adata, split="holdout")


def test_small_conditions_are_skipped():
    adata = toy_adata()
    drop = np.flatnonzero(adata.obs["condition"] == "C_d3")[:5]  # leaves 2 cells: too few for within
    adata = adata[np.setdiff1d(np.arange(adata.n_obs), drop)].copy()
    with pytest.warns(UserWarning, match="C_d3"):
        tasks = ev.transfer_tasks(adata)
    assert "C_d3" not in {t.condition for t in tasks}


# ----------------------------------------------------------------------------- evaluate
class OraclePredictor(ev.Predictor):
    name = "oracle"

    def predict(self, X, task, source):
        return X[task.target_idx].mean(0)


def test_oracle_scores_one_and_columns():
    adata = toy_adata()
    tasks = list(tasks_of(adata).values())
    df = ev.evaluate_transfer(OraclePredictor(), adata, tasks=tasks)
    assert list(df.columns) == ["condition", "cell_type", "perturbation", "protocol", "n_cells",
                                "n_sources", "n_degs", *ev.METRIC_COLUMNS, *ev.DISCRIMINATION_COLUMNS]
    assert df.attrs["predictor"] == "oracle" and df.attrs["cell_metrics"] is False
    assert len(df) == len(tasks)
    for column in ev.METRIC_COLUMNS + ("pcc_all_pert_delta", "pcc_deg_pert_delta"):
        np.testing.assert_allclose(df[column], 1.0, atol=1e-6, err_msg=column)
    by = df.set_index("condition")
    # A and C have two scored conditions each, B one (B_t1+zz is skipped): no rank in B
    alone = by.loc["B_d1", ["rank_all_delta", "rank_deg_delta", "centroid_hit"]]
    assert alone.isna().all()
    others = by.drop(index="B_d1")
    assert (others[["rank_all_delta", "rank_deg_delta"]] == 0).all().all()
    assert (others["centroid_hit"] == 1).all() and df["edist"].isna().all()
    row = df.set_index("condition").loc["A_d1"]
    assert row["n_cells"] == 5 and row["n_sources"] == 2 and row["protocol"] == "cross"
    as_sparse = adata.copy()
    as_sparse.X = sparse.csr_matrix(as_sparse.X)
    again = ev.evaluate_transfer(OraclePredictor(), as_sparse, tasks=tasks, progress=True)
    pd.testing.assert_frame_equal(again, df)


def test_control_baseline_has_non_positive_delta_r2():
    adata = toy_adata()
    tasks = list(tasks_of(adata).values())
    df = ev.evaluate_transfer(ControlBaseline(), adata, tasks=tasks)
    assert (df["r2_all_delta"] <= 1e-9).all() and (df["r2_deg_delta"] <= 1e-9).all()
    assert df["pcc_all_delta"].isna().all()  # a zero delta is constant


def test_evaluate_matches_direct_computation():
    adata = toy_adata()
    X = adata.X
    task = tasks_of(adata)["B_d1"]
    df = ev.evaluate_transfer(SourceShiftBaseline(), adata, tasks=[task])
    preds = [X[task.control_idx].mean(0) + X[p].mean(0) - X[c].mean(0)
             for s in task.sources for p, c in s.components]
    predicted = np.mean(preds, axis=0)
    observed = X[task.target_idx].mean(0)
    ctrl = X[task.control_idx].mean(0)
    degs = [0, 3, 5, 7]
    row = df.iloc[0]
    assert row["r2_all"] == pytest.approx(r2_score(observed, predicted), abs=1e-5)
    assert row["r2_deg"] == pytest.approx(r2_score(observed[degs], predicted[degs]), abs=1e-5)
    assert row["pcc_all_delta"] == pytest.approx(pearsonr(observed - ctrl, predicted - ctrl).statistic, abs=1e-5)
    assert row["ev_deg_delta"] == pytest.approx(
        explained_variance_score(observed[degs] - ctrl[degs], predicted[degs] - ctrl[degs]), abs=1e-5)


def test_discrimination_columns_match_direct_computation():
    from xtcdr import metrics

    adata = toy_adata()
    X = adata.X
    tasks = [t for t in tasks_of(adata).values() if t.cell_type in ("A", "C")]
    df = ev.evaluate_transfer(SourceShiftBaseline(), adata, tasks=tasks).set_index("condition")
    obs = adata.obs
    for context in ("A", "C"):
        group = [t for t in tasks if t.cell_type == context]
        assert len(group) == 2
        ctrl = X[group[0].control_idx].mean(0)
        predicted = np.stack([np.mean([sum(X[p].mean(0) - X[c].mean(0) for p, c in s.components)
                                       for s in t.sources], axis=0) for t in group])
        observed = np.stack([X[t.target_idx].mean(0) - ctrl for t in group])
        degs = [t.deg_idx if t.deg_idx is not None else np.array([0, 3, 5, 7]) for t in group]  # C_d3: within
        names = [t.condition for t in group]
        np.testing.assert_allclose(df.loc[names, "rank_all_delta"], metrics.discrimination_ranks(predicted, observed))
        np.testing.assert_allclose(df.loc[names, "rank_deg_delta"],
                                   metrics.discrimination_ranks(predicted, observed, genes=degs))
        np.testing.assert_array_equal(df.loc[names, "centroid_hit"], metrics.centroid_accuracy(predicted, observed))
        # perturbed centroid: the mean of the training perturbations' means (t1, t2) in the context
        train = obs["split"] == "train"
        centroid = np.mean([X[np.flatnonzero(train & (obs["condition"] == f"{context}_{p}"))].mean(0)
                            for p in ("t1", "t2")], axis=0)
        for t, pred, g in zip(group, predicted + ctrl, degs):
            truth = X[t.target_idx].mean(0)
            assert df.loc[t.condition, "pcc_all_pert_delta"] == pytest.approx(
                pearsonr(truth - centroid, pred - centroid).statistic, abs=1e-5)
            assert df.loc[t.condition, "pcc_deg_pert_delta"] == pytest.approx(
                pearsonr((truth - centroid)[g], (pred - centroid)[g]).statistic, abs=1e-5)


def test_pert_delta_is_nan_without_training_perturbations():
    adata = toy_adata()
    adata.obs["split"] = adata.obs["split"].astype(str)
    adata.obs.loc[(adata.obs["cell_type"] == "C") & ~adata.obs["is_control"]
                  & (adata.obs["split"] != "test"), "split"] = "valid"
    task = tasks_of(adata)["C_d1"]
    row = ev.evaluate_transfer(SourceShiftBaseline(), adata, tasks=[task]).iloc[0]
    assert np.isnan(row["pcc_all_pert_delta"]) and np.isnan(row["pcc_deg_pert_delta"])
    assert np.isnan(row["rank_all_delta"])   # a single task: nothing to rank it among


def test_default_predict_cells_shift_the_target_controls():
    adata = toy_adata()
    X = adata.X
    task = tasks_of(adata)["B_d1"]
    source = task.sources[0]
    predictor = SourceShiftBaseline()
    cells = predictor.predict_cells(X, task, source, np.random.default_rng(0))
    np.testing.assert_allclose(cells.mean(0), predictor.predict(X, task, source), atol=1e-5)
    np.testing.assert_allclose(cells - cells.mean(0), X[task.control_idx] - X[task.control_idx].mean(0), atol=1e-5)
    drawn = predictor.predict_cells(X, task, source, np.random.default_rng(0), n_cells=20)
    assert drawn.shape == (20, N_GENES)


def test_energy_distance_column_against_direct_computation():
    from sklearn.decomposition import PCA

    from xtcdr import metrics

    adata = toy_adata()
    X = adata.X
    tasks = list(tasks_of(adata).values())
    predictor = SourceShiftBaseline()
    df = ev.evaluate_transfer(predictor, adata, tasks=tasks, cell_metrics=True, seed=3)
    train = np.flatnonzero(adata.obs["split"] == "train")
    pca = PCA(n_components=min(ev.EDIST_COMPONENTS, N_GENES), random_state=3).fit(X[train])
    assert df.attrs["edist_components"] == N_GENES and df.attrs["edist_fit_cells"] == train.size
    for task, value in zip(tasks, df["edist"]):
        rng = ev._stable_rng(3, task.condition)         # the toy's conditions are under the cell cap
        per_source = -(-task.target_idx.size // len(task.sources))
        cells = np.concatenate([predictor.predict_cells(X, task, s, rng, n_cells=per_source) for s in task.sources])
        expected = metrics.energy_distance(pca.transform(cells), pca.transform(X[task.target_idx]))
        assert value == pytest.approx(expected, rel=1e-4), task.condition
    no_split = adata.copy()
    del no_split.obs["split"]
    with pytest.raises(ValueError, match="split"):
        ev.evaluate_transfer(predictor, no_split, tasks=tasks, cell_metrics=True)


def test_new_columns_on_a_small_synthetic_twin():
    from xtcdr import pipeline, synthetic
    from xtcdr.baselines import TrainMeanBaseline

    adata = pipeline.prepare(synthetic.simulate("synthetic_drugs", n_genes=120, n_singles=12,
                                                cells_per_condition=20, controls_per_cell_type=60),
                             seed=0, verbose=False)
    tasks = ev.transfer_tasks(adata, protocol="cross")
    assert len(tasks) >= 4 and len({t.cell_type for t in tasks}) == 3
    results = {p.name: ev.evaluate_transfer(p.fit(adata), adata, tasks=tasks, cell_metrics=True)
               for p in (ControlBaseline(), SourceShiftBaseline(), TrainMeanBaseline(), OraclePredictor())}
    for name, df in results.items():
        assert set(ev.DISCRIMINATION_COLUMNS) <= set(df.columns)
        assert df[["rank_all_delta", "rank_deg_delta"]].stack().between(0, 1).all(), name
        assert df["centroid_hit"].isin([0.0, 1.0]).all() and (df["edist"] > -1e-9).all(), name
        assert df.attrs["edist_components"] == ev.EDIST_COMPONENTS
    # the control baseline's prediction has no delta: it ties with every condition
    assert (results["control"]["rank_all_delta"] == 0.5).all()
    assert results["train_mean"]["pcc_all_pert_delta"].isna().all()   # it predicts the perturbed centroid
    assert (results["oracle"]["rank_all_delta"] == 0).all()
    assert results["source_shift"]["edist"].mean() < results["control"]["edist"].mean()
    summary = ev.summarize(results["source_shift"])
    assert summary.loc["mean", "centroid_hit"] == pytest.approx(results["source_shift"]["centroid_hit"].mean())


def test_evaluate_errors():
    adata = toy_adata()
    del adata.uns["top_degs"]["A_d1"]
    with pytest.raises(KeyError, match="A_d1"):
        ev.evaluate_transfer(OraclePredictor(), adata, tasks=list(tasks_of(adata).values()))

    class Wrong(ev.Predictor):
        name = "wrong"

        def predict(self, X, task, source):
            return np.zeros(3)

    with pytest.raises(ValueError, match="expected"):
        ev.evaluate_transfer(Wrong(), toy_adata(), tasks=list(tasks_of(adata).values()))


def test_summarize_and_compare():
    adata = toy_adata()
    tasks = list(tasks_of(adata).values())
    control = ev.evaluate_transfer(ControlBaseline(), adata, tasks=tasks)
    shift = ev.evaluate_transfer(SourceShiftBaseline(), adata, tasks=tasks)
    summary = ev.summarize(control)
    assert list(summary.index) == ["mean", "median"]
    assert summary.loc["mean", "r2_all"] == pytest.approx(control["r2_all"].mean())
    assert summary.loc["median", "r2_deg"] == pytest.approx(control["r2_deg"].median())
    assert np.isnan(summary.loc["mean", "pcc_all_delta"])  # all NaN stays NaN
    assert (summary["n_conditions"] == len(control)).all()
    assert list(ev.summarize(control, ["r2_all"]).columns) == ["r2_all", "n_cells", "n_conditions"]
    with pytest.raises(KeyError):
        ev.summarize(control, ["r3"])
    table = ev.compare({"control": control, "source_shift": shift})
    assert table.index.names == ["predictor", "statistic"]
    assert table.loc[("source_shift", "mean"), "r2_all"] == pytest.approx(shift["r2_all"].mean())


# ----------------------------------------------------------------------------- model predictor
class StandIn(torch.nn.Module):
    def __init__(self, n_genes, latent=4):
        super().__init__()
        self.basal = torch.nn.Linear(n_genes, latent)
        self.pert = torch.nn.Linear(n_genes, latent)
        self.dec = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(latent, n_genes))

    def encode_basal(self, x):
        return self.basal(x)

    def encode_perturbation(self, x):
        return self.pert(x)

    def decode(self, z):
        return self.dec(z)


@pytest.mark.parametrize("condition", ["A_t1+t2", "B_d1"])
def test_model_predictor_matches_direct_computation(condition):
    torch.manual_seed(0)
    adata = toy_adata()
    X = adata.X
    task = tasks_of(adata)[condition]
    source = task.sources[0]
    model = StandIn(N_GENES).train()
    predictor = ev.ModelPredictor(model, batch_size=3, seed=7)
    got = predictor.predict(X, task, source)
    assert model.training  # mode restored

    rng = np.random.default_rng(7)
    model.eval()
    with torch.no_grad():
        z = model.basal(torch.from_numpy(X[task.control_idx]))
        for perturbed, _ in source.components:
            perm = rng.permutation(perturbed.size)
            partner = perturbed[perm[np.arange(task.control_idx.size) % perturbed.size]]
            z = z + model.pert(torch.from_numpy(X[partner]))
        expected = model.dec[1](z).mean(0).numpy()
    assert got.shape == (N_GENES,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    df = ev.evaluate_transfer(predictor, adata, tasks=[task])
    assert df.attrs["predictor"] == "XTransferCDR" and np.isfinite(df["r2_all"]).all()


@pytest.mark.parametrize("offset", ["none", "swap"])
def test_model_predictor_cells_match_direct_computation(offset):
    torch.manual_seed(0)
    adata = toy_adata()
    X = adata.X
    task = tasks_of(adata)["A_t1+t2"]
    source = task.sources[0]
    model = StandIn(N_GENES).train()
    predictor = ev.ModelPredictor(model, batch_size=3, offset=offset)
    cells = predictor.predict_cells(X, task, source, np.random.default_rng(5), n_cells=7)
    assert cells.shape == (7, N_GENES) and model.training

    rng = np.random.default_rng(5)
    model.eval()
    with torch.no_grad():
        t = lambda rows: torch.from_numpy(X[rows])
        z = model.basal(t(rng.choice(task.control_idx, 7, replace=False)))
        if offset == "swap":
            z = z + model.pert(t(task.control_idx)).mean(0)
        for perturbed, controls in source.components:
            codes = model.pert(t(rng.choice(perturbed, 7, replace=perturbed.size < 7)))
            if offset == "swap":
                codes = codes - model.pert(t(controls)).mean(0)
            z = z + codes
        expected = model.dec[1](z).numpy()
    np.testing.assert_allclose(cells, expected, rtol=1e-5, atol=1e-5)
    df = ev.evaluate_transfer(predictor, adata, tasks=[task], cell_metrics=True)
    assert np.isfinite(df["edist"]).all()


# ----------------------------------------------------------------------------- DEGs of the scored cells
def test_within_context_degs_come_from_the_scored_half_only():
    from xtcdr.preprocess import deg_statistics, select_degs

    adata = toy_adata()
    adata.X = np.log1p(np.abs(adata.X))                     # log1p-like values
    adata.uns["xtcdr"] = {"preprocess": {"n_degs": 4, "min_log2fc": 0.0, "deg_rule": "fold_change"}}
    task = tasks_of(adata, protocol="within")["C_d3"]
    (source_rows, controls), = task.sources[0].components
    scores, lfc = deg_statistics(adata.X, task.target_idx, task.control_idx)
    np.testing.assert_array_equal(task.deg_idx, select_degs(scores, lfc, n_degs=4, min_log2fc=0.0))
    # changing the input half's cells does not move the scored DEGs; changing the scored half does
    poisoned = adata.copy()
    poisoned.X[source_rows] += 50.0
    again = tasks_of(poisoned, protocol="within")["C_d3"]
    np.testing.assert_array_equal(again.deg_idx, task.deg_idx)
    shifted = adata.copy()
    shifted.X[np.ix_(task.target_idx, [1, 2, 4, 6])] += 5.0
    moved = tasks_of(shifted, protocol="within")["C_d3"]
    assert set(moved.deg_idx) == {1, 2, 4, 6}
    # cross tasks score every cell of the condition and keep the stored DEGs
    assert tasks_of(adata, protocol="cross")["A_d1"].deg_idx is None
    df = ev.evaluate_transfer(ControlBaseline(), adata, tasks=[task])
    assert df.loc[0, "n_degs"] == 4
