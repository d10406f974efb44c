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
    return _anndata(obs, rows, ["g1", "g2", "g4"])


def _anndata(obs_rows: list[dict], blocks: list, degs: list[str]) -> ad.AnnData:
    """AnnData in the standard schema from per-cell obs rows and expression blocks; every
    condition gets the DEG list ``degs``."""
    obs = pd.DataFrame(obs_rows)
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    obs.index = [f"c{i}" for i in range(len(obs))]
    X = np.vstack(blocks).astype(np.float32)
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(X.shape[1])]))
    adata.uns["top_degs"] = {c: list(degs) for c in set(obs["condition"])}
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
    assert set(bl.BASELINES) == {"control", "source_shift", "train_mean", "additive", "linear_transfer",
                                 "additive_linear"}
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

    def train_ctrl(ct):
        return X[rows(adata, f"{ct}_control", "train")].mean(0)

    def effect(ct):  # training singles only (A's t1+t2 is excluded), train controls only
        return np.mean([X[rows(adata, f"{ct}_{p}", "train")].mean(0) - train_ctrl(ct) for p in ("t1", "t2")], axis=0)

    for ct in ("A", "B"):
        task = tasks[f"{ct}_d1"]
        # the effect goes back onto the controls it was measured against (A also has valid controls)
        expected = train_ctrl(ct) + effect(ct)
        np.testing.assert_allclose(predictor.predict(X, task, task.sources[0]), expected, rtol=1e-5, atol=1e-5)
        # which is the equal-weight mean of the training perturbations' profiles
        perturbed = np.mean([X[rows(adata, f"{ct}_{p}", "train")].mean(0) for p in ("t1", "t2")], axis=0)
        np.testing.assert_allclose(expected, perturbed, rtol=1e-5, atol=1e-5)
    assert not np.allclose(X[rows(adata, "A_control")].mean(0), train_ctrl("A"))
    task = tasks["C_d1"]  # C has no training perturbation: average of A's and B's effects
    expected = train_ctrl("C") + (effect("A") + effect("B")) / 2
    np.testing.assert_allclose(predictor.predict(X, task, task.sources[0]), expected, rtol=1e-5, atol=1e-5)


def test_train_mean_fit_reads_only_training_cells():
    adata = toy_adata()
    masked = adata.copy()
    masked.X[(masked.obs["split"] != "train").to_numpy()] = np.nan
    fitted = bl.TrainMeanBaseline().fit(adata)
    fitted_masked = bl.TrainMeanBaseline().fit(masked)
    for ct in ("A", "B"):
        np.testing.assert_array_equal(fitted.effects_[ct], fitted_masked.effects_[ct])
        np.testing.assert_array_equal(fitted.controls_[ct], fitted_masked.controls_[ct])
    no_train = adata.copy()
    no_train.obs["split"] = "valid"
    with pytest.raises(ValueError, match="no cell type"):
        bl.TrainMeanBaseline().fit(no_train)


def test_every_baseline_runs_through_evaluate_transfer():
    adata = toy_adata()
    tasks = list(get_tasks(adata).values())
    with pytest.warns(UserWarning, match="no map for"):   # the toy's cell types share 2 perturbations
        bl.get_baseline("linear_transfer").fit(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        results = {name: ev.evaluate_transfer(bl.get_baseline(name).fit(adata), adata, tasks=tasks)
                   for name in bl.BASELINES}
    for name, df in results.items():
        assert df.attrs["predictor"] == name and len(df) == len(tasks)
        assert df[["r2_all", "ev_all"]].notna().all().all()
    table = ev.compare(results)
    assert set(table.index.get_level_values("predictor")) == set(bl.BASELINES)


# ----------------------------------------------------------------------------- linear transfer
N_LATENT = 3


def linear_world(seed: int = 0, n_train: int = 20, noise: float = 1e-4) -> tuple[ad.AnnData, dict]:
    """Two cell types whose perturbation effects are an exact linear map of each other: an effect
    in A is U a_p, in B U (T a_p + c). Training perturbations p00.. in both, held-out d in both."""
    rng = np.random.default_rng(seed)
    n_genes = 30
    U = rng.normal(size=(n_genes, N_LATENT))
    T = rng.normal(size=(N_LATENT, N_LATENT))
    c = rng.normal(size=N_LATENT)
    control = {"A": rng.uniform(1, 3, n_genes), "B": rng.uniform(1, 3, n_genes)}
    codes = {f"p{i:02d}": rng.normal(size=N_LATENT) for i in range(n_train)} | {"d": rng.normal(size=N_LATENT)}
    means = {("A", "control"): control["A"], ("B", "control"): control["B"]}
    for pert, a in codes.items():
        means[("A", pert)] = control["A"] + U @ a
        means[("B", pert)] = control["B"] + U @ (T @ a + c)
    obs, cells = [], []
    for (ct, pert), mean in means.items():
        n = 8 if pert == "control" else 4
        cells.append(mean + noise * rng.normal(size=(n, n_genes)))
        obs += [dict(cell_type=ct, perturbation=pert, split="test" if pert == "d" else "train")] * n
    return _anndata(obs, cells, [f"g{i}" for i in range(5)]), {"truth_B_d": means[("B", "d")]}


def test_linear_transfer_recovers_an_exact_linear_map():
    adata, truth = linear_world()
    X = adata.X
    predictor = bl.LinearTransferBaseline(n_components=N_LATENT).fit(adata)
    assert set(predictor.maps_) == {("A", "B"), ("B", "A")} and not predictor.too_few_
    assert len(predictor.shared_[("A", "B")]) == 20
    task = get_tasks(adata)["B_d"]
    got = predictor.predict(X, task, task.sources[0])
    np.testing.assert_allclose(got, truth["truth_B_d"], atol=0.02)
    shift = bl.SourceShiftBaseline().predict(X, task, task.sources[0])
    error = lambda p: np.abs(p - truth["truth_B_d"]).max()
    assert error(got) < 0.02 < 1.0 < error(shift)
    df = ev.evaluate_transfer(predictor, adata, tasks=[task])
    assert df.loc[0, "r2_all_delta"] > 0.999


def test_linear_transfer_ridge_matches_sklearn_ridge_with_the_chosen_alpha():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge

    adata, _ = linear_world(seed=1, noise=0.3)
    X = adata.X
    predictor = bl.LinearTransferBaseline(n_components=5).fit(adata)
    means = {c: X[rows(adata, c, "train")].mean(0, dtype=np.float64) for c in set(adata.obs["condition"]) if not c.endswith("_d")}
    perts = sorted(p for p in {c.split("_", 1)[1] for c in means} if p != "control")
    keys = sorted((ct, p) for ct in ("A", "B") for p in perts)
    effects = np.stack([means[f"{ct}_{p}"] - means[f"{ct}_control"] for ct, p in keys])
    pca = PCA(n_components=5, svd_solver="full").fit(effects)   # every training effect, nothing else
    np.testing.assert_allclose(np.abs(predictor.pca_.components_), np.abs(pca.components_), atol=1e-8)
    z = dict(zip(keys, pca.transform(effects)))
    z_a = np.stack([z[("A", p)] for p in perts])
    z_b = np.stack([z[("B", p)] for p in perts])
    fitted = predictor.maps_[("A", "B")]
    # the penalty is the one with the least leave-one-perturbation-out error
    loo = [np.mean([np.sum((Ridge(alpha=alpha).fit(np.delete(z_a, i, 0), np.delete(z_b, i, 0)).predict(z_a[[i]])
                            - z_b[i]) ** 2) for i in range(len(perts))]) for alpha in predictor.alphas]
    assert fitted.alpha_ == pytest.approx(predictor.alphas[int(np.argmin(loo))])
    reference = Ridge(alpha=fitted.alpha_).fit(z_a, z_b)
    task = get_tasks(adata)["B_d"]
    source = task.sources[0]
    (perturbed, controls), = source.components
    z_source = pca.transform((X[perturbed].mean(0, dtype=np.float64) - X[controls].mean(0, dtype=np.float64))[None])
    expected = X[task.control_idx].mean(0, dtype=np.float64) + pca.inverse_transform(reference.predict(z_source))[0]
    np.testing.assert_allclose(predictor.predict(X, task, source), expected, atol=1e-6)


def test_linear_transfer_is_fitted_on_training_cells_only():
    adata, _ = linear_world(seed=2, noise=0.3)
    fitted = bl.LinearTransferBaseline(n_components=5).fit(adata)
    changed = adata.copy()
    changed.X[(changed.obs["split"] == "test").to_numpy()] += 100.0   # only the held-out cells change
    refitted = bl.LinearTransferBaseline(n_components=5).fit(changed)
    np.testing.assert_array_equal(fitted.pca_.components_, refitted.pca_.components_)
    for pair, ridge in fitted.maps_.items():
        np.testing.assert_array_equal(ridge.coef_, refitted.maps_[pair].coef_)
        assert ridge.alpha_ == refitted.maps_[pair].alpha_


def test_linear_transfer_falls_back_to_the_source_shift():
    adata, _ = linear_world(seed=3)
    X = adata.X
    with pytest.warns(UserWarning, match="A->B \\(20\\)"):
        predictor = bl.LinearTransferBaseline(min_shared=21).fit(adata)
    assert predictor.too_few_ == {("A", "B"): 20, ("B", "A"): 20} and not predictor.maps_
    task = get_tasks(adata)["B_d"]
    shift = bl.SourceShiftBaseline().predict(X, task, task.sources[0])
    np.testing.assert_array_equal(predictor.predict(X, task, task.sources[0]), shift)
    # within a context the map is the identity: the source shift, whatever was fitted
    fitted = bl.LinearTransferBaseline().fit(adata)
    within = ev.TransferTask("B_d", "B", "d", "within", task.target_idx[2:], task.control_idx,
                             [ev.Source("B", [(task.target_idx[:2], task.control_idx)])])
    np.testing.assert_array_equal(fitted.predict(X, within, within.sources[0]),
                                  bl.SourceShiftBaseline().predict(X, within, within.sources[0]))
    with pytest.raises(RuntimeError, match="not fitted"):
        bl.LinearTransferBaseline().predict(X, task, task.sources[0])


# ----------------------------------------------------------------------------- additive linear
def test_additive_linear_on_a_hand_example():
    # two genes; training conditions control and p1 in A and B (two identical cells each), d held out
    means = {("A", "control"): [0.0, 1.0], ("B", "control"): [1.0, 1.0],
             ("A", "p1"): [2.0, 1.0], ("B", "p1"): [5.0, 3.0],
             ("A", "d"): [4.0, 2.0], ("B", "d"): [9.0, 9.0]}
    obs = pd.DataFrame([dict(cell_type=ct, perturbation=p, split="test" if p == "d" else "train")
                        for (ct, p) in means for _ in range(2)])
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    obs.index = [f"c{i}" for i in range(len(obs))]
    X = np.repeat(np.array(list(means.values()), dtype=np.float32), 2, axis=0)
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=["g0", "g1"]))
    predictor = bl.AdditiveLinearBaseline().fit(adata)
    # balanced two-way layout: fitted mean = row mean + column mean - grand mean, so
    # gene 0: levels A = 1 + 0.5 - 2 = -0.5, B = 3 + 0.5 - 2 = 1.5, beta_p1 = 3
    # gene 1: levels A = 1 + 1 - 1.5 = 0.5,  B = 2 + 1 - 1.5 = 1.5,  beta_p1 = 1
    np.testing.assert_allclose(predictor.level("A"), [-0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(predictor.level("B"), [1.5, 1.5], atol=1e-12)
    np.testing.assert_allclose(predictor.intercept_, [0.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(predictor.context_effects_["B"], [1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(predictor.perturbation_effects_["p1"], [3.0, 1.0], atol=1e-12)
    task = get_tasks(adata)["B_d"]
    # d read in A (4, 2), moved by level B - level A = (2, 1); the source shift moves it by (1, 0)
    np.testing.assert_allclose(predictor.predict(X, task, task.sources[0]), [6.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(bl.SourceShiftBaseline().predict(X, task, task.sources[0]), [5.0, 2.0], atol=1e-6)
    # a combination read in B: mean a + mean b - level B (the additive baseline subtracts ctrl B)
    a_rows, b_rows = rows(adata, "B_p1"), rows(adata, "B_d")
    combo = ev.TransferTask("B_p1+d", "B", "p1+d", "combination", b_rows, task.control_idx,
                            [ev.Source("B", [(a_rows, task.control_idx), (b_rows, task.control_idx)])])
    np.testing.assert_allclose(predictor.predict(X, combo, combo.sources[0]),
                               np.array([5.0, 3.0]) + [9.0, 9.0] - [1.5, 1.5], atol=1e-6)
    with pytest.raises(KeyError, match="no effect for cell type 'Z'"):
        predictor.level("Z")
