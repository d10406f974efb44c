"""Each baseline's prediction against a direct numpy computation."""
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from xtcdr import baselines as bl
from xtcdr import evaluate as ev

N_GENES = 10


def toy_adata(seed: int = 1) -> ad.AnnData:
    """Cell types A and B: training singles t1, t2, t1+t2 (a training double), test drug d1 in
    both, test double t1+t2 in B; cell type C has controls and a test drug only."""
    rng = np.random.default_rng(seed)
    layout = [("A", "control", 6, "train"), ("A", "control", 2, "valid"), ("A", "t1", 5, "train"),
              ("A", "t2", 4, "train"), ("A", "t2", 2, "valid"), ("A", "t1+t2", 3, "train"),
              ("A", "d1", 4, "test"),
              ("B", "control", 7, "train"), ("B", "t1", 3, "train"), ("B", "t2", 6, "train"),
              ("B", "t1+t2", 4, "test"), ("B", "d1", 5, "test"),
              ("C", "control", 5, "train"), ("C", "d1", 4, "test")]
    obs, rows = [], []
    for ct, pert, n, split in layout:
        rows.append(rng.normal(len(pert), 1.0, (n, N_GENES)))
        obs += [dict(cell_type=ct, perturbation=pert, split=split)] * n
    obs = pd.DataFrame(obs)
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    obs.index = [f"c{i}" for i in range(len(obs))]
    adata = ad.AnnData(np.vstack(rows).astype(np.float32), obs=obs,
                       var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
    adata.uns["top_degs"] = {c: ["g1", "g2", "g4"] for c in set(obs["condition"])}
    return adata


def rows(adata, condition, split=None):
    mask = adata.obs["condition"] == condition
    if split is not None:
        mask &= adata.obs["split"] == split
    return np.flatnonzero(mask)


def get_tasks(adata):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {t.condition: t for t in ev.transfer_tasks(adata)}


def test_registry():
    assert set(bl.BASELINES) == {"control", "source_shift", "train_mean", "additive"}
    for name, cls in bl.BASELINES.items():
        assert cls.name == name and issubclass(cls, ev.Predictor)
    assert isinstance(bl.get_baseline("additive"), bl.SourceShiftBaseline)
    with pytest.raises(ValueError, match="choose one of"):
        bl.get_baseline("oracle")


def test_control_baseline():
    adata = toy_adata()
    X = adata.X
    task = get_tasks(adata)["B_d1"]
    predictor = bl.ControlBaseline()
    assert predictor.fit(adata) is predictor
    got = predictor.predict(X, task, task.sources[0])
    np.testing.assert_allclose(got, X[rows(adata, "B_control")].mean(0), rtol=1e-6)


def test_source_shift_baseline_per_source():
    adata = toy_adata()
    X = adata.X
    task = get_tasks(adata)["B_d1"]
    assert {s.context for s in task.sources} == {"A", "C"}
    ctrl_b = X[rows(adata, "B_control")].mean(0)
    for source in task.sources:
        a = source.context
        expected = ctrl_b + X[rows(adata, f"{a}_d1")].mean(0) - X[rows(adata, f"{a}_control")].mean(0)
        got = bl.SourceShiftBaseline().predict(X, task, source)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_additive_baseline_on_a_double():
    adata = toy_adata()
    X = adata.X
    task = get_tasks(adata)["B_t1+t2"]
    assert task.protocol == "combination"
    ctrl = X[rows(adata, "B_control")].mean(0)
    expected = (ctrl + (X[rows(adata, "B_t1", "train")].mean(0) - ctrl)
                + (X[rows(adata, "B_t2", "train")].mean(0) - ctrl))
    got = bl.AdditiveBaseline().predict(X, task, task.sources[0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert bl.AdditiveBaseline.name == "additive"


def test_train_mean_baseline():
    adata = toy_adata()
    X = adata.X
    tasks = get_tasks(adata)
    predictor = bl.TrainMeanBaseline()
    with pytest.raises(RuntimeError, match="not fitted"):
        predictor.predict(X, tasks["B_d1"], tasks["B_d1"].sources[0])
    assert predictor.fit(adata) is predictor

    def effect(ct):  # training singles only (A's t1+t2 is excluded), train controls only
        ctrl = X[rows(adata, f"{ct}_control", "train")].mean(0)
        return np.mean([X[rows(adata, f"{ct}_{p}", "train")].mean(0) - ctrl for p in ("t1", "t2")], axis=0)

    for ct in ("A", "B"):
        task = tasks[f"{ct}_d1"]
        expected = X[rows(adata, f"{ct}_control")].mean(0) + effect(ct)
        np.testing.assert_allclose(predictor.predict(X, task, task.sources[0]), expected, rtol=1e-5, atol=1e-5)
    task = tasks["C_d1"]  # C has no training perturbation: average of A's and B's effects
    expected = X[rows(adata, "C_control")].mean(0) + (effect("A") + effect("B")) / 2
    np.testing.assert_allclose(predictor.predict(X, task, task.sources[0]), expected, rtol=1e-5, atol=1e-5)


def test_train_mean_fit_reads_only_training_cells():
    adata = toy_adata()
    masked = adata.copy()
    masked.X[(masked.obs["split"] != "train").to_numpy()] = np.nan
    fitted = bl.TrainMeanBaseline().fit(adata)
    fitted_masked = bl.TrainMeanBaseline().fit(masked)
    for ct in ("A", "B"):
        np.testing.assert_array_equal(fitted.effects_[ct], fitted_masked.effects_[ct])
    no_train = adata.copy()
    no_train.obs["split"] = "valid"
    with pytest.raises(ValueError, match="no cell type"):
        bl.TrainMeanBaseline().fit(no_train)


def test_every_baseline_runs_through_evaluate_transfer():
    adata = toy_adata()
    tasks = list(get_tasks(adata).values())
    results = {name: ev.evaluate_transfer(bl.get_baseline(name).fit(adata), adata, tasks=tasks)
               for name in bl.BASELINES}
    for name, df in results.items():
        assert df.attrs["predictor"] == name and len(df) == len(tasks)
        assert df[["r2_all", "ev_all"]].notna().all().all()
    table = ev.compare(results)
    assert set(table.index.get_level_values("predictor")) == set(bl.BASELINES)
