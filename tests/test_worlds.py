"""Worlds: seed s of a twin is a new draw with its own held-out set, reproducible exactly; the split
recorded in ``uns`` is the one in ``obs`` for every preparation option; the printed summary of an
evaluation is its table."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from xtcdr import experiments, pipeline
from xtcdr.config import get_profile

SMALL = dict(n_singles=12, cells_per_condition=12, controls_per_cell_type=40, n_genes=200)


@pytest.fixture()
def small_twins(monkeypatch):
    """The twins at a small size (the simulator's overrides), so that preparing a world is quick."""
    from xtcdr import synthetic

    original = synthetic.simulate

    def small(name, **kw):
        return original(name, **{**SMALL, **kw})

    monkeypatch.setattr(synthetic, "simulate", small)


def test_two_worlds_differ_and_a_seed_reproduces_its_world(tmp_path, small_twins):
    prof = replace(get_profile("quick"), data=replace(get_profile("quick").data, n_top_genes=100))
    a = pipeline.prepare("synthetic_drugs", profile=prof, seed=0, data_dir=tmp_path, verbose=False, force=True)
    b = pipeline.prepare("synthetic_drugs", profile=prof, seed=1, data_dir=tmp_path, verbose=False, force=True)
    again = pipeline.prepare("synthetic_drugs", profile=prof, seed=1, data_dir=tmp_path / "other", verbose=False)
    # different data: other cells and other drug effects, so another expression matrix
    assert a.uns["xtcdr"]["seed"] == 0 and b.uns["xtcdr"]["seed"] == 1
    assert not np.allclose(np.asarray(a.layers["counts"][:50].todense() if hasattr(a.layers["counts"], "todense")
                                      else a.layers["counts"][:50]),
                           np.asarray(b.layers["counts"][:50].todense() if hasattr(b.layers["counts"], "todense")
                                      else b.layers["counts"][:50]))
    held = [sorted(x.uns["xtcdr"]["split"]["test_perturbations"]) for x in (a, b)]
    assert held[0] != held[1], "two worlds with the same held-out set"
    # the same seed, computed again from scratch elsewhere: exactly the same world
    assert list(again.var_names) == list(b.var_names)
    np.testing.assert_array_equal(np.asarray(again.X), np.asarray(b.X))
    assert (again.obs["split"].astype(str) == b.obs["split"].astype(str)).all()
    assert sorted(again.uns["xtcdr"]["split"]["test_perturbations"]) == held[1]


@pytest.mark.parametrize("data", [{}, {"hvg_cells": "non_test"}, {"test_rule": "random", "n_test": 3},
                                  {"test_rule": "kfold", "n_folds": 3}, {"test_rule": "conditions", "n_folds": 3}])
def test_the_recorded_split_is_the_split_in_obs(tmp_path, small_twins, data):
    """For every preparation option, uns['xtcdr']['split'] names exactly the cells obs puts in test
    and in the transfer validation (the hvg_cells='non_test' path used to redraw the split)."""
    base = get_profile("quick")
    prof = replace(base, data=replace(base.data, n_top_genes=100, **data))
    adata = pipeline.prepare("synthetic_drugs", profile=prof, seed=1, data_dir=tmp_path, verbose=False)
    obs, split = adata.obs, adata.uns["xtcdr"]["split"]
    test = obs[obs["split"].astype(str) == "test"]
    if split["rule"] == "conditions":
        assert sorted(test["condition"].astype(str).unique()) == sorted(split["test_conditions"])
    else:
        assert sorted(test["perturbation"].astype(str).unique()) == sorted(split["test_perturbations"])
    transfer = obs.loc[obs["split"].astype(str) == "transfer", "condition"].astype(str).unique()
    assert sorted(transfer) == sorted(split["transfer_valid"])


def _run(values, conditions=("c1", "c2", "c3")):
    return pd.DataFrame({"condition": list(conditions), "cell_type": "A", "perturbation": list(conditions),
                         "r2_deg": values, "r2_all": np.asarray(values) + 0.2})


def test_the_summary_is_the_table():
    """One aggregation rule: `Evaluation.summary` prints exactly the numbers of `Evaluation.table`
    (the mean over worlds of each world's mean over conditions), NaN conditions ignored alike."""
    worlds = [experiments.World(s, s, None, {}) for s in (0, 1, 2)]
    ev = experiments.Evaluation(
        worlds=worlds, kinds={"model": "model", "control": "baseline"},
        runs={"cross": {"model": [_run([0.1, 0.5, 0.9]), _run([0.2, np.nan, 0.4]), _run([0.3, 0.3, 0.3])],
                        "control": [_run([0.0, 0.1, 0.2]), _run([0.1, 0.1, 0.1]), _run([0.0, 0.0, 0.3])]}})
    table = ev.table("cross", ["r2_deg", "r2_all", "median_r2_deg"])
    summary = ev.summary("cross", ["r2_deg", "r2_all"])
    by_hand = np.mean([np.mean([0.1, 0.5, 0.9]), np.mean([0.2, 0.4]), 0.3])
    assert table.loc["model", "r2_deg"] == pytest.approx(by_hand)
    pd.testing.assert_series_equal(summary["r2_deg"], table["r2_deg"])
    median = ev.summary("cross", ["r2_deg"], statistic="median")
    assert median.loc["model", "r2_deg"] == pytest.approx(np.mean([0.5, 0.3, 0.3]))
    assert ev.per_world("cross", ["r2_deg"])["control"]["r2_deg"] == pytest.approx([0.1, 0.1, 0.1])
    one = ev.restrict(lambda df: df["condition"] != "c2")
    assert one.table("cross", ["r2_deg"]).loc["model", "r2_deg"] == pytest.approx(np.mean([0.5, 0.3, 0.3]))
