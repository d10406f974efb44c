"""Double perturbations (Table 4): the additive baseline, the held-out doubles, the truth's
interaction groups, and the released code's fifth loss."""
import numpy as np
import pandas as pd
import pytest
import torch

from xtcdr import baselines, combinations, evaluate, experiments, losses, pairing, synthetic
from xtcdr.config import LossWeights, ModelConfig, TrainConfig
from xtcdr.model import XTransferCDR
from xtcdr import train as train_module

SMALL = dict(n_genes=60, n_singles=6, n_doubles=6, n_interacting=2, cells_per_condition=10,
             controls_per_cell_type=40)


def _combo_data(split_seed=0, **split_kwargs):
    adata = synthetic.simulate("synthetic_combo", **SMALL)
    adata.X = np.log1p(adata.X).astype(np.float32)
    pairing.assign_split(adata, seed=split_seed, **split_kwargs)
    cond = adata.obs["condition"].astype(str).to_numpy()
    ctrl = adata.X[adata.obs["is_control"].to_numpy(bool)].mean(0)
    adata.uns["top_degs"] = {c: list(adata.var_names[np.argsort(-np.abs(adata.X[cond == c].mean(0) - ctrl))[:10]])
                             for c in np.unique(cond)}  # the 10 largest mean shifts (enough here)
    return adata


@pytest.fixture(scope="module")
def adata():
    return _combo_data()


@pytest.fixture(scope="module")
def tasks(adata):
    return evaluate.transfer_tasks(adata, split="test", protocol="combination")


def test_default_split_holds_out_every_double(adata):
    pert = adata.obs["perturbation"].astype(str)
    split = adata.obs["split"].astype(str)
    doubles = pert.str.contains("+", regex=False)
    assert doubles.sum() > 0
    assert (split[doubles] == "test").all()
    assert (split[~doubles] != "test").all()  # singles and controls train (or validate)
    assert adata.uns["xtcdr"]["split"]["rule"] == "doubles"
    assert sorted(adata.uns["xtcdr"]["split"]["test_perturbations"]) == sorted(adata.uns["truth"]["doubles"])
    assert len(pairing.combination_triples(adata, split="train")) == 0


def test_additive_baseline_matches_numpy(adata, tasks):
    X = np.asarray(adata.X, dtype=np.float64)
    obs = adata.obs
    pert = obs["perturbation"].astype(str).to_numpy()
    split = obs["split"].astype(str).to_numpy()
    control = obs["is_control"].to_numpy(bool)
    additive = baselines.AdditiveBaseline().fit(adata)
    assert len(tasks) == SMALL["n_doubles"]
    for task in tasks:
        a, b = task.perturbation.split("+")
        ctrl = X[control].mean(0)
        mean_a = X[(pert == a) & (split != "test")].mean(0)
        mean_b = X[(pert == b) & (split != "test")].mean(0)
        expected = ctrl + (mean_a - ctrl) + (mean_b - ctrl)
        got = additive.predict(np.asarray(adata.X, dtype=np.float32), task, task.sources[0])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_doubles_and_inputs_never_train_as_doubles(adata, tasks):
    obs = adata.obs
    pert = obs["perturbation"].astype(str).to_numpy()
    split = obs["split"].astype(str).to_numpy()
    for task in tasks:
        assert (pert[task.target_idx] == task.perturbation).all()
        assert (split[task.target_idx] == "test").all()
        singles = task.perturbation.split("+")
        for (rows, _), single in zip(task.sources[0].components, singles):
            assert rows.size > 0
            assert (pert[rows] == single).all()        # inputs are cells of the single
            assert (split[rows] != "test").all()       # ... measured outside the test split
    # no training or validation pair holds a double; the test doubles never enter training
    for s in ("train", "valid"):
        pairs = pairing.training_pairs(adata, split=s, seed=0)
        rows = np.concatenate([pairs.a, pairs.b])
        assert not pd.Series(pert[rows]).str.contains("+", regex=False).any()
        assert (split[rows] == s).all()


def test_partial_doubles_rule_keeps_training_doubles_apart_from_held_out_ones():
    adata = _combo_data(test_rule="doubles", n_test=3)
    held_out = set(adata.uns["xtcdr"]["split"]["test_perturbations"])
    assert len(held_out) == 3 and held_out < set(adata.uns["truth"]["doubles"])
    pert = adata.obs["perturbation"].astype(str).to_numpy()
    split = adata.obs["split"].astype(str).to_numpy()
    triples = pairing.combination_triples(adata, split="train", seed=0)
    assert len(triples) > 0
    assert not set(pert[triples.double]) & held_out
    assert (split[np.concatenate(list(triples))] == "train").all()
    for sa, sb, d in zip(triples.single_a, triples.single_b, triples.double):
        assert pert[d].split("+") == [pert[sa], pert[sb]]
    # every held-out double is scored, and its cells are all in the test split
    tasks = evaluate.transfer_tasks(adata, split="test", protocol="combination")
    assert {t.perturbation for t in tasks} == held_out
    assert (split[np.isin(pert, list(held_out))] == "test").all()
    with pytest.raises(ValueError, match="between 1 and"):
        _combo_data(test_rule="doubles", n_test=99)


def test_interaction_groups_follow_the_truth(adata, tasks):
    doubles = [t.perturbation for t in tasks]
    groups = combinations.interaction_groups(adata, doubles)
    truth = set(adata.uns["truth"]["interacting"])
    assert len(truth) == SMALL["n_interacting"]
    assert set(groups["interacting"]) == truth
    assert set(groups["additive"]) == set(doubles) - truth
    # names match in either order of the singles
    swapped = ["+".join(reversed(d.split("+"))) for d in doubles]
    assert len(combinations.interaction_groups(adata, swapped)["interacting"]) == len(truth)
    no_truth = adata.copy()
    del no_truth.uns["truth"]
    with pytest.raises(KeyError, match="truth"):
        combinations.interaction_groups(no_truth, doubles)


def test_subset_and_residuals_use_the_given_groups(adata, tasks):
    X = np.asarray(adata.X, dtype=np.float32)
    additive = baselines.AdditiveBaseline().fit(adata)
    control = baselines.ControlBaseline().fit(adata)
    ev = experiments.Evaluation(
        worlds=[experiments.World(0, 0, adata, {"combination": tasks})],
        runs={"combination": {experiments.MODEL: [evaluate.evaluate_transfer(control, adata, tasks=tasks)],
                              "additive": [evaluate.evaluate_transfer(additive, adata, tasks=tasks)]}},
        kinds={experiments.MODEL: "model", "additive": "baseline"})
    keep = combinations.interaction_groups(adata, [t.perturbation for t in tasks])["interacting"]
    sub = combinations.subset(ev, keep)
    assert set(sub.runs["combination"][experiments.MODEL][0]["perturbation"]) == set(keep)
    assert set(sub.runs["combination"]["additive"][0]["perturbation"]) == set(keep)
    assert len(ev.runs["combination"]["additive"][0]) == len(tasks)  # the original is untouched
    # residuals by hand: reference = observed mean, predictor = control
    res = combinations.interaction_residuals(adata, tasks, {"control": control, "additive": additive},
                                             additive=additive, reference=_Observed())
    default = combinations.interaction_residuals(adata, tasks, {"control": control}, additive=additive)
    np.testing.assert_allclose(default.residual_r2, res[res.method == "control"].residual_r2.to_numpy())
    task = tasks[0]
    base = additive.predict(X, task, task.sources[0])
    true_res = X[task.target_idx].mean(0) - base
    pred_res = X[task.control_idx].mean(0) - base
    degs = evaluate._deg_positions(adata, task.condition)
    row = res[(res.method == "control") & (res.condition == task.condition)].iloc[0]
    assert row.residual_pcc == pytest.approx(np.corrcoef(true_res, pred_res)[0, 1], rel=1e-5)
    expected_r2 = 1 - np.sum((true_res - pred_res) ** 2) / np.sum(true_res ** 2)
    assert row.residual_r2 == pytest.approx(expected_r2, rel=1e-5)
    assert row.true_norm_deg == pytest.approx(np.linalg.norm(true_res[degs]), rel=1e-5)
    add_rows = res[res.method == "additive"]
    assert (add_rows.residual_r2 == 0).all() and add_rows.residual_pcc.isna().all()


class _Observed(evaluate.Predictor):
    name = "observed"

    def predict(self, X, task, source):
        return X[task.target_idx].mean(0, dtype=np.float64)


# ----------------------------------------------------------------------------- fifth loss
def _batch(seed, n=5, g=9):
    rng = np.random.default_rng(seed)
    return [torch.as_tensor(rng.gamma(2.0, 1.0, size=(n, g)), dtype=torch.float32) for _ in range(7)]


def test_fifth_loss_adds_exactly_its_term():
    torch.manual_seed(0)
    model = XTransferCDR(9, ModelConfig(hidden=(16,), latent=4, dropout=0.1)).eval()
    xa, xb, xca, xcb, xsa, xsb, xab = _batch(0)
    with torch.no_grad():
        off = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights())
        on = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights(combo=2.5), combo=(xsa, xsb, xab))
        zero = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights(combo=0.0), combo=(xsa, xsb, xab))
        decoded = model.decode(model.encode_basal(xsa) + model.encode_perturbation(xsa)
                               + model.encode_perturbation(xsb)).numpy()
    by_hand = float(np.mean((decoded - xab.numpy()) ** 2))   # MSE(D(S^a + P^a + P^b), X^(a+b))
    assert on["combo"].item() == pytest.approx(by_hand, rel=1e-5)
    for k in losses.TERMS:
        assert on[k].item() == off[k].item()
    assert on["total"].item() == pytest.approx(off["total"].item() + 2.5 * by_hand, rel=1e-6)
    # weight 0: the term is reported but the total is exactly the paper's
    assert zero["total"].item() == off["total"].item()
    assert "combo" not in off and LossWeights().combo == 0.0


def test_fit_without_the_switch_never_computes_the_fifth_term(monkeypatch):
    adata = _combo_data(test_rule="doubles", n_test=3)
    seen = []
    original = train_module.loss_terms

    def spy(*args, combo=None, **kwargs):
        seen.append(combo is not None)
        return original(*args, combo=combo, **kwargs)

    monkeypatch.setattr(train_module, "loss_terms", spy)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-3, seed=0)
    small = ModelConfig(hidden=(16,), latent=4, dropout=0.1)
    history = train_module.fit(XTransferCDR(adata.n_vars, small), adata, cfg, device="cpu", progress=False)
    assert seen and not any(seen)
    assert not [c for c in history.columns if "combo" in c]
    seen.clear()
    on = TrainConfig(epochs=2, batch_size=64, lr=1e-3, seed=0, weights=LossWeights(combo=1.0))
    history = train_module.fit(XTransferCDR(adata.n_vars, small), adata, on, device="cpu", progress=False)
    assert any(seen)
    assert np.isfinite(history["train_combo"]).all() and np.isfinite(history["valid_combo"]).all()


def test_fifth_loss_needs_training_doubles(adata):
    cfg = TrainConfig(epochs=1, batch_size=64, seed=0, weights=LossWeights(combo=1.0))
    with pytest.raises(ValueError, match="test_rule='doubles'"):
        train_module.fit(XTransferCDR(adata.n_vars, ModelConfig(hidden=(16,), latent=4)), adata, cfg,
                         device="cpu", progress=False)


def test_additive_noise_is_the_sum_of_the_variances_of_the_means(adata, tasks):
    X = np.asarray(adata.X, dtype=np.float64)
    task = tasks[0]
    (ra, _), (rb, _) = task.sources[0].components
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(7, X.shape[1]))
    by_hand = sum((X[r].var(0, ddof=1) / len(r)).sum() for r in (task.control_idx, ra, rb))
    assert combinations.additive_noise(X, task) == pytest.approx(by_hand)
    assert combinations.additive_noise(X, task, ref) == pytest.approx(by_hand + (ref.var(0, ddof=1) / 7).sum())
    genes = np.array([1, 4, 5])
    sub = sum((X[r][:, genes].var(0, ddof=1) / len(r)).sum() for r in (task.control_idx, ra, rb))
    assert combinations.additive_noise(X, task, genes=genes) == pytest.approx(sub)
    per_gene = combinations.additive_noise(X, task, ref, genes=genes, per_gene=True)
    assert per_gene.shape == (3,) and per_gene.sum() == pytest.approx(
        combinations.additive_noise(X, task, ref, genes=genes))
