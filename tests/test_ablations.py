"""Ablations (notebook 07): loss totals, checkpoint keys per configuration and seed, the paired
difference interval against scipy, and the probes of notebook 03."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from xtcdr import ablations, losses, pipeline, probes
from xtcdr.config import PROFILES, LossWeights, ModelConfig, Profile, TrainConfig
from xtcdr.model import XTransferCDR

SMALL = dict(n_singles=6, n_genes=120, cells_per_condition=12, controls_per_cell_type=30)


@pytest.fixture
def small_twin(monkeypatch):
    """Make the named twins small so that prepare runs in a second."""
    from xtcdr import synthetic

    real = synthetic.simulate
    monkeypatch.setattr(synthetic, "simulate", lambda name, **kw: real(name, **{**SMALL, **kw}))


TINY = Profile(name="quick", data=PROFILES["quick"].data,
               model=ModelConfig(hidden=(16,), latent=4, dropout=0.0),
               train=TrainConfig(epochs=1, batch_size=64, lr=1e-3))


# ---------------------------------------------------------------------------------------------
# each ablation removes exactly its term
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("base", [LossWeights(), LossWeights.released()], ids=["paper", "released"])
def test_each_ablation_total_is_the_full_total_minus_the_removed_term(base):
    torch.manual_seed(0)
    model = XTransferCDR(9, ModelConfig(hidden=(16, 8), latent=5, dropout=0.1)).eval()
    rng = np.random.default_rng(1)
    batch = [torch.as_tensor(rng.gamma(2.0, 1.0, size=(6, 9)), dtype=torch.float32) for _ in range(4)]
    with torch.no_grad():
        full = losses.loss_terms(model, *batch, base)
        # the full total by hand: the weighted sum of the five reported terms
        by_hand = sum(getattr(base, k) * full[k].item() for k in losses.TERMS)
        assert full["total"].item() == pytest.approx(by_hand, rel=1e-6)
        for name, term in ablations.CONFIGURATIONS.items():
            weights = ablations.configuration_weights(name, base)
            got = losses.loss_terms(model, *batch, weights)
            removed = 0.0 if term is None else getattr(base, term) * full[term].item()
            assert got["total"].item() == pytest.approx(by_hand - removed, rel=1e-6, abs=1e-7), name
            for k in losses.TERMS:  # every term is still reported, unchanged
                assert got[k].item() == pytest.approx(full[k].item(), rel=1e-6), (name, k)
            if term is not None:
                assert getattr(weights, term) == 0
                assert all(getattr(weights, k) == getattr(base, k) for k in losses.TERMS if k != term)


def test_configurations_name_real_terms_and_paper_rows():
    from xtcdr.experiments import PAPER

    assert set(t for t in ablations.CONFIGURATIONS.values() if t) <= set(losses.TERMS)
    assert ablations.CONFIGURATIONS[ablations.FULL] is None
    assert set(ablations.PAPER_LABELS.values()) == set(PAPER["Table 5"]["rows"])
    with pytest.raises(ValueError, match="valid"):
        ablations.configuration_weights("without L_kl")


# ---------------------------------------------------------------------------------------------
# checkpoints are keyed by configuration and seed
# ---------------------------------------------------------------------------------------------

def test_trainings_are_cached_by_configuration_and_seed(tmp_path, small_twin, monkeypatch):
    from xtcdr import train

    adata = pipeline.prepare("synthetic_drugs", profile=TINY, data_dir=tmp_path, verbose=False)
    runs = {}
    for name in (ablations.FULL, "without L_cross"):
        for seed in (0, 1):
            runs[name, seed] = pipeline.train_or_load(
                adata, profile=TINY, seed=seed, weights=ablations.configuration_weights(name),
                data_dir=tmp_path, progress=False, verbose=False)[0]
    folders = sorted((tmp_path / "checkpoints").iterdir())
    assert len(folders) == 4                                   # two configs x two seeds
    # default weights (weights=None, as notebook 04 calls it) are the full configuration: same key
    real_fit = train.fit
    calls = []
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    again = {name: pipeline.train_or_load(adata, profile=TINY, seed=0, data_dir=tmp_path,
                                          progress=False, verbose=False,
                                          **({} if name == "default" else
                                             {"weights": ablations.configuration_weights(name)}))[0]
             for name in ("default", ablations.FULL, "without L_cross")}
    assert calls == [], "a cached configuration was retrained"
    assert len(list((tmp_path / "checkpoints").iterdir())) == 4
    for name, model in (("default", again["default"]), (ablations.FULL, again[ablations.FULL]),
                        ("without L_cross", again["without L_cross"])):
        reference = runs[ablations.FULL if name == "default" else name, 0]
        for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
            torch.testing.assert_close(a, b)
    # another configuration trains (fit is called)
    pipeline.train_or_load(adata, profile=TINY, seed=0, weights=LossWeights().without("orth"),
                           data_dir=tmp_path, progress=False, verbose=False)
    assert calls == [1]
    assert len(list((tmp_path / "checkpoints").iterdir())) == 5


def test_the_initial_weights_depend_on_the_training_seed_only(tmp_path, small_twin):
    """Full and ablated models of one seed start from the same weights (a paired design)."""
    adata = pipeline.prepare("synthetic_drugs", profile=TINY, data_dir=tmp_path, verbose=False)
    tiny = replace(TINY, train=replace(TINY.train, epochs=0))  # no step: the initial weights
    states = []
    for noise in (1, 2):
        torch.manual_seed(noise)        # whatever ran before in the process
        torch.rand(noise * 10)
        model, _ = pipeline.train_or_load(adata, profile=tiny, seed=3, data_dir=tmp_path,
                                          force=True, progress=False, verbose=False)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k])


# ---------------------------------------------------------------------------------------------
# paired differences
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 5])
def test_paired_difference_interval_matches_scipy(n):
    rng = np.random.default_rng(n)
    full = rng.normal(0.6, 0.05, n)
    ablated = full + rng.normal(-0.03, 0.02, n)
    got = ablations.paired_difference(full, ablated)
    ref = stats.ttest_rel(ablated, full).confidence_interval(0.95)
    assert got["n"] == n
    assert got["mean"] == pytest.approx(np.mean(ablated - full))
    assert got["sd"] == pytest.approx(np.std(ablated - full, ddof=1))
    assert got["ci_low"] == pytest.approx(ref.low)
    assert got["ci_high"] == pytest.approx(ref.high)
    assert got["excludes_zero"] == float(ref.low > 0 or ref.high < 0)
    ninety = ablations.paired_difference(full, ablated, confidence=0.9)
    ref90 = stats.ttest_rel(ablated, full).confidence_interval(0.9)
    assert (ninety["ci_low"], ninety["ci_high"]) == pytest.approx((ref90.low, ref90.high))


def test_paired_difference_excludes_zero_and_one_seed():
    clear = ablations.paired_difference([0.5, 0.6, 0.7], [0.3, 0.41, 0.5])
    assert clear["excludes_zero"] == 1.0 and clear["ci_high"] < 0
    noisy = ablations.paired_difference([0.5, 0.6, 0.7], [0.6, 0.5, 0.71])
    assert noisy["excludes_zero"] == 0.0 and noisy["ci_low"] < 0 < noisy["ci_high"]
    one = ablations.paired_difference([0.5], [0.4])
    assert one["mean"] == pytest.approx(-0.1)
    assert np.isnan(one["ci_low"]) and np.isnan(one["excludes_zero"])
    with pytest.warns(UserWarning, match="1 of 3 worlds have no value"):
        nan_pair = ablations.paired_difference([0.5, np.nan, 0.7], [0.4, 0.3, 0.6])
    assert nan_pair["n"] == 2
    with pytest.raises(ValueError, match="same length"):
        ablations.paired_difference([1, 2], [1, 2, 3])


def test_paired_table_matches_seeds_and_prints_sentences():
    values = pd.DataFrame({
        "configuration": ["all terms"] * 3 + ["without L_cross"] * 3 + ["without L_sim"] * 3,
        "seed": [0, 1, 2, 2, 1, 0, 0, 1, 2],           # seeds in another order: matched by value
        "r2": [0.8, 0.82, 0.81, 0.61, 0.62, 0.60, 0.79, 0.83, 0.80],
        "pcc": [0.9, 0.91, 0.9, 0.9, 0.91, 0.9, 0.9, 0.91, 0.9],
    })
    table = ablations.paired_table(values, ["r2", "pcc"])
    assert list(table.index) == [("without L_cross", "r2"), ("without L_cross", "pcc"),
                                 ("without L_sim", "r2"), ("without L_sim", "pcc")]
    assert table.loc[("without L_cross", "r2"), "mean"] == pytest.approx(np.mean([0.60 - 0.8, 0.62 - 0.82, 0.61 - 0.81]))
    assert table.loc[("without L_cross", "r2"), "excludes_zero"] == 1.0
    # the same comparisons through the verdict function, paired by world, as the report words them
    from xtcdr import report, verdicts

    wide = values.groupby("configuration", sort=False)
    per_seed = {name: {m: g.sort_values("seed")[m].tolist() for m in ("r2", "pcc")} for name, g in wide}
    summary = report.method_table([(n, "model", [dict(zip(("r2", "pcc"), v)) for v in zip(s["r2"], s["pcc"])])
                                   for n, s in per_seed.items()], ["r2", "pcc"])
    meta = {"per_seed": per_seed, "paired_reference": "all terms", "varies": "worlds"}
    lines = ablations.removal_lines(verdicts.table_verdicts(summary, meta, ["r2", "pcc"]), "all terms")
    assert len(lines) == 2
    assert lines[0].startswith("without L_cross (3 paired worlds): removing the term lowers r2 -0.200 [")
    assert "pcc equivalent within the margin" in lines[0]       # differences 0, 0, 0 on pcc
    assert lines[1].startswith("without L_sim (3 paired worlds): removing the term moves no metric beyond its "
                               "interval; pcc equivalent within the margin; inconclusive on r2 (~")
    low, high = table.loc[("without L_cross", "r2"), ["ci_low", "ci_high"]]
    assert f"[{low:+.3f}, {high:+.3f}]" in lines[0]          # the same t interval both ways


# ---------------------------------------------------------------------------------------------
# probes (shared by notebooks 03 and 07)
# ---------------------------------------------------------------------------------------------

def test_ridge_probe_against_known_relations():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(400, 6))
    fit = rng.random(400) < 0.5
    linear = E @ rng.normal(size=(6, 3))
    assert probes.ridge_r2(E, linear, fit, ~fit) > 0.99
    assert probes.ridge_r2(E, rng.normal(size=(400, 3)), fit, ~fit) < 0.05


def test_context_accuracy_and_chance():
    rng = np.random.default_rng(1)
    labels = np.array(["a"] * 200 + ["b"] * 100)
    E = np.where(labels[:, None] == "a", 2.0, -2.0) + rng.normal(size=(300, 2))
    fit = rng.random(300) < 0.5
    acc, chance = probes.context_accuracy(E, labels, fit, ~fit)
    assert acc > 0.95
    assert chance == pytest.approx((labels[~fit] == "a").mean())


def test_probe_codes_on_a_small_twin(tmp_path, small_twin):
    adata = pipeline.prepare("synthetic_drugs", profile=TINY, data_dir=tmp_path, verbose=False)
    torch.manual_seed(0)
    model = XTransferCDR(adata.n_vars, TINY.model)
    result = probes.probe_codes(model, adata, seed=0, max_cells=500)
    cells, fit_half = probes.probe_cells(adata, seed=0, max_cells=500)
    np.testing.assert_array_equal(result.cells, cells)
    np.testing.assert_array_equal(result.fit_half, fit_half)
    assert result.S.shape == (cells.size, TINY.model.latent) == result.P.shape
    assert set(result.r2["embedding"]) == {"S = E_s(x)", "P = E_p(x)"}
    assert set(result.r2["target"]) == {"true basal", "true basal within line", "true effect"}
    assert list(result.context["probe"]) == ["S, held-out cells", "P, held-out cells",
                                             "P, held-out perturbations"]
    summary = result.summary()
    assert set(probes.SUMMARY_COLUMNS) <= set(summary)
    assert all(np.isfinite(v) for v in summary.values())
    # the same numbers by hand for one probe
    true_basal = np.asarray(adata.obsm["true_basal"])[cells]
    assert summary["S -> true basal"] == pytest.approx(
        probes.ridge_r2(result.S, true_basal, fit_half, ~fit_half))
    # without truth: only the cell-line probe
    del adata.obsm["true_basal"]
    bare = probes.probe_codes(model, adata, seed=0, max_cells=500)
    assert bare.r2 is None and bare.context is not None
    assert np.isnan(bare.summary()["S -> true basal"])


def test_checkpoint_dir_names_the_folder_train_or_load_uses(tmp_path, small_twin):
    adata = pipeline.prepare("synthetic_drugs", profile=TINY, data_dir=tmp_path, verbose=False)
    weights = ablations.configuration_weights("without L_sim")
    expected = pipeline.checkpoint_dir(adata, profile=TINY, seed=2, weights=weights, data_dir=tmp_path)
    assert not expected.exists()
    pipeline.train_or_load(adata, profile=TINY, seed=2, weights=weights, data_dir=tmp_path,
                           progress=False, verbose=False)
    assert [p for p in (tmp_path / "checkpoints").iterdir()] == [expected]
    assert pipeline.checkpoint_dir(adata, profile=TINY, seed=2, data_dir=tmp_path) != expected


def test_write_replication_pairs_each_removal_with_the_full_model(tmp_path):
    from xtcdr import report

    runs = {"ours, all terms": [0.80, 0.82, 0.81], "ours, without L_cross": [0.60, 0.64, 0.62]}
    table = report.method_table([(n, "model", [{"r2": v} for v in values]) for n, values in runs.items()]
                                + [("control", "baseline", {"r2": 0.5})], ["r2"])
    report.save_table(table, "table5_toy", out_dir=tmp_path,
                      meta={"paper_table": "Table 5", "part": "paper", "title": "ablations", "metrics": ["r2"],
                            "per_seed": {n: {"r2": v} for n, v in runs.items()},
                            "paired_reference": "ours, all terms", "seeds": [0, 1, 2],
                            "findings": ["without L_cross lowers r2 by 0.19."]})
    text = report.write_replication(tmp_path).read_text()
    assert "### ablations" in text
    assert "- without L_cross lowers r2 by 0.19." in text
    # the verdict column: a configuration against the full model (paired by seed), the full model
    # against a baseline on the baseline's row
    assert "| ours, without L_cross | model | 0.620 ± 0.020 | **loses** -0.190 [" in text
    assert "| control | baseline | 0.500 | **beats** +0.310 [" in text


def test_plot_seed_dots_draws_one_panel_per_column():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xtcdr import plots

    values = pd.DataFrame({"configuration": ["all terms"] * 2 + ["without L_cross"] * 2,
                           "seed": [0, 1, 0, 1], "r2": [0.8, 0.82, 0.6, 0.62], "pcc": [0.9, 0.9, 0.8, 0.85]})
    intervals = ablations.paired_table(values, ["r2", "pcc"])
    fig = plots.plot_seed_dots(values, ["r2", "pcc"], intervals=intervals, zero_line=True,
                               references={"pcc": 0.5}, pair_by="seed", ncols=2)
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == 2
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["all\nterms", "without\nL_cross"]
    assert len(axes[0].collections) == 2                       # one dot series per configuration
    plt.close(fig)
