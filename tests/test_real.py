"""Notebook 09's logic (`xtcdr.real`): folds over the real screens' knockouts, the half-split
oracle and the below-noise rule, and the grid's records against the notebook's checkpoints."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import stats
from sklearn.metrics import r2_score

from xtcdr import grid, pipeline, real


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("real_data")


def _split_sets(adata):
    obs = adata.obs
    split = obs["split"].astype(str)
    perturbed = ~obs["is_control"].to_numpy(bool)
    return {s: set(obs.loc[(split == s).to_numpy() & perturbed, "perturbation"].astype(str)) for s in
            ("train", "valid", "transfer", "test")}, set(obs.loc[perturbed, "perturbation"].astype(str))


# --------------------------------------------------------------------------------------------- folds
def test_kfold_holds_every_jurkat_knockout_out_once_and_never_trains_or_validates_it(data_dir):
    records = real.run_trainings(4, remedy=False, conditions=False)["jurkat"]
    held_out = []
    for record in records:
        adata = record.prepare(data_dir)
        sets, targets = _split_sets(adata)
        assert sets["test"] == set(adata.uns["xtcdr"]["split"]["test_perturbations"])
        assert not sets["test"] & (sets["train"] | sets["valid"] | sets["transfer"]), record.label()
        # the transfer validation is drawn from the training knockouts, which also train elsewhere
        assert sets["transfer"] and sets["transfer"] <= sets["train"]
        held_out.append(sets["test"])
    assert sorted(p for fold in held_out for p in fold) == sorted(targets)   # each target in one fold
    assert len(targets) == 20


def test_held_out_conditions_keep_the_other_context_in_training(data_dir):
    records = real.run_trainings(4, remedy=False)["jurkat_conditions"]
    seen = []
    for record in records:
        adata = record.prepare(data_dir)
        obs = adata.obs
        split = obs["split"].astype(str).to_numpy()
        test_conditions = set(obs.loc[split == "test", "condition"].astype(str))
        assert test_conditions == set(adata.uns["xtcdr"]["split"]["test_conditions"])
        for condition in test_conditions:
            rows = (obs["condition"].astype(str) == condition).to_numpy()
            knockout = obs.loc[rows, "perturbation"].astype(str).iloc[0]
            other = (obs["perturbation"].astype(str) == knockout).to_numpy() & ~rows
            assert set(split[other]) <= {"train", "valid"}, condition   # its source context trains
        seen += sorted(test_conditions)
    assert len(seen) == len(set(seen)) == 40      # 20 knockouts x 2 states, each held out once


# --------------------------------------------------------------------------------------------- the oracle
def _hand_matrix():
    return np.array([[2, 0, 1], [4, 0, 1],     # a: mean (3, 0, 1)
                     [4, 1, 1], [4, 1, 1],     # b: mean (4, 1, 1)
                     [1, 0, 0], [1, 0, 0],     # control a: mean (1, 0, 0)
                     [1, 1, 0], [1, 1, 0]],    # control b: mean (1, 1, 0)
                    dtype=np.float32)


def test_half_split_scores_on_a_hand_example():
    X = _hand_matrix()
    a, b, ca, cb = [0, 1], [2, 3], [4, 5], [6, 7]
    scores = real.half_split_scores(X, a, b, ca, cb, degs=[0, 1, 2])
    # predicted change (2, 0, 1), observed change (3, 0, 1): by hand
    assert scores["pcc_delta"] == pytest.approx(9 / np.sqrt(84))
    assert scores["r2_deg_delta"] == pytest.approx(1 - 9 / 42)
    assert scores["pcc_delta"] == pytest.approx(stats.pearsonr([3, 0, 1], [2, 0, 1]).statistic)
    assert scores["r2_deg_delta"] == pytest.approx(r2_score([3, 0, 1], [2, 0, 1]))
    assert np.isnan(real.half_split_scores(X, a, b, ca, cb, degs=[0])["r2_deg_delta"])   # one DEG: no R^2
    # the vectorised agreement the permutation test uses is the same number
    assert real._split_agreement(X, [a], [b], [ca], [cb])[0] == pytest.approx(scores["pcc_delta"])


def test_draw_halves_are_disjoint_and_cover_the_cells():
    rng = np.random.default_rng(0)
    rows, controls = np.arange(10, 21), np.arange(40, 49)
    a, b, ca, cb = real.draw_halves(rng, rows, controls)
    assert (a.size, b.size, ca.size, cb.size) == (5, 6, 4, 5)
    assert sorted(np.r_[a, b]) == list(rows) and sorted(np.r_[ca, cb]) == list(controls)
    many = real.draw_halves(rng, rows, controls, n_splits=7)
    assert [m.shape for m in many] == [(7, 5), (7, 6), (7, 4), (7, 5)]
    assert all(sorted(np.r_[x, y]) == list(rows) for x, y in zip(many[0], many[1]))
    assert len({tuple(sorted(x)) for x in many[0]}) > 1          # the splits differ
    with pytest.raises(ValueError, match="at least 4 cells"):
        real.draw_halves(rng, rows[:3], controls)


def _screen(seed=0, n_cells=80, n_genes=200, n_null=4):
    """One context: controls, one knockout that moves 30 genes and ``n_null`` that move none."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 1.0, n_genes)
    effect = np.ones(n_genes)
    effect[:30] = np.exp(rng.choice([-1.2, 1.2], 30))
    groups = [("control", base)] + [("STRONG", base * effect)] + [(f"NULL{i}", base) for i in range(n_null)]
    X, labels = [], []
    for name, mean in groups:
        X.append(np.log1p(rng.poisson(mean, (n_cells, n_genes))))
        labels += [name] * n_cells
    obs = pd.DataFrame({"cell_type": "A", "perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    obs["is_control"] = obs["perturbation"] == "control"
    obs["condition"] = "A_" + obs["perturbation"]
    return AnnData(np.vstack(X).astype(np.float32), obs=obs)


def test_the_below_noise_rule_flags_knockouts_that_move_nothing():
    adata = _screen()
    table = real.noise_floor(adata, n_permutations=199, n_splits=3)
    assert list(table.index) == ["A_NULL0", "A_NULL1", "A_NULL2", "A_NULL3", "A_STRONG"]
    assert table.loc["A_STRONG", "oracle_pcc_delta"] > 0.5 and table.loc["A_STRONG", "p_value"] == pytest.approx(0.005)
    assert table.loc["A_STRONG", "degs_q"] > 0 and table.loc["A_STRONG", "oracle_r2_deg_delta"] > 0
    assert table["below_noise"].to_dict() == {"A_NULL0": True, "A_NULL1": True, "A_NULL2": True, "A_NULL3": True,
                                              "A_STRONG": False}
    assert (table.loc[table.index.str.contains("NULL"), "oracle_pcc_delta"].abs() < 0.2).all()
    # the q values are Benjamini-Hochberg of the permutation p values
    np.testing.assert_allclose(table["q_value"], stats.false_discovery_control(table["p_value"]))


def test_below_noise_reads_the_q_values():
    table = pd.DataFrame({"q_value": [0.01, 0.05, 0.2, np.nan]}, index=list("abcd"))
    assert real.below_noise(table).tolist() == [False, True, True, True]
    assert real.below_noise(table, alpha=0.1).tolist() == [False, False, True, True]
    with pytest.raises(KeyError, match="q_value"):
        real.below_noise(table.rename(columns={"q_value": "q"}))


def test_replicate_agreement_splits_by_group():
    adata = _screen(n_null=1)
    adata.obs["replicate"] = np.where(np.arange(adata.n_obs) % 2, "r1", "r2")
    table = real.noise_floor(adata, n_permutations=19, n_splits=2, replicate_key="replicate")
    assert table.loc["A_STRONG", "replicate_pcc_delta"] > 0.5
    assert abs(table.loc["A_NULL0", "replicate_pcc_delta"]) < 0.3
    with pytest.raises(KeyError, match="replicate_key"):
        real.noise_floor(adata, replicate_key="guide")


# --------------------------------------------------------------------------------------------- the grid
def test_the_grid_plans_the_notebooks_trainings():
    params = grid.notebook_parameters("09_real_cells")
    assert params["n_folds"] == 4
    planned = grid.notebook_trainings("09_real_cells", dict(params, profile="quick"))
    assert planned == real.notebook_trainings(params, notebooks=("09_real_cells",))
    assert len(planned) == 16 and len(set(planned)) == 16
    assert sum(dict(t.weights) == {"cross_line": 1.0} for t in planned) == 4
    assert len(grid.notebook_trainings("09_real_cells", dict(params, trained_remedy=False,
                                                             held_out_conditions=False))) == 8


def test_the_notebooks_evaluations_train_the_grids_checkpoints(data_dir, monkeypatch):
    """`real.evaluate` (what the notebook calls) asks train_or_load for the grid's folders."""
    monkeypatch.setenv("XTCDR_DATA", str(data_dir))
    asked = []

    class Stop(Exception):
        pass

    def capture(adata, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("progress", "verbose", "select")}
        asked.append(pipeline.checkpoint_dir(adata, data_dir=data_dir, **kwargs))
        raise Stop

    monkeypatch.setattr(pipeline, "train_or_load", capture)
    for name, records in real.run_trainings(2).items():
        for record in records:
            with pytest.raises(Stop):
                real.evaluate([record], ("cross",) if "jurkat" in name else ("within",))
            assert asked[-1] == record.checkpoint_dir(data_dir=data_dir), record.label()
    assert len(asked) == 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_folds"):
        real.run_trainings(1)
    with pytest.raises(ValueError, match="analog"):
        real.real_table(None, "cross", name="x", title="x", dataset="x", profile="quick", order="09",
                        split="x", out_dir=".", claim="something", analog="sideways")
