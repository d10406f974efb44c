"""fit on synthetic_drugs: every term decreases, checkpoints round-trip, resume is exact,
bad checkpoints fail clearly, and pipeline.train_or_load reuses its cache."""
import numpy as np
import pandas as pd
import pytest
import torch

from xtcdr import pipeline
from xtcdr import train as train_module
from xtcdr.config import ModelConfig, TrainConfig
from xtcdr.losses import TERMS
from xtcdr.model import XTransferCDR
from xtcdr.train import CHECKPOINT_NAME, CheckpointError, fit, load_checkpoint

SMALL_MODEL = ModelConfig(hidden=(64,), latent=16, dropout=0.1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matrices: one thread is faster than two that compete with other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("xtcdr_data")


@pytest.fixture(scope="module")
def adata(data_dir):
    """A seeded third of the cells of the prepared synthetic_drugs data (quick profile)."""
    full = pipeline.prepare("synthetic_drugs", profile="quick", seed=0, data_dir=data_dir,
                            verbose=False)
    keep = np.sort(np.random.default_rng(0).choice(full.n_obs, full.n_obs // 3, replace=False))
    return full[keep].copy()


def _predict(model, adata):
    model.eval()
    x = torch.as_tensor(np.asarray(adata.X[:64], dtype=np.float32))
    with torch.no_grad():
        return model.predict_transfer(x, x.flip(0))


def test_training_lowers_every_term(adata):
    torch.manual_seed(0)
    model = XTransferCDR(adata.n_vars, SMALL_MODEL)
    history = fit(model, adata, TrainConfig(epochs=4, eval_every=2, batch_size=128, lr=1e-3, seed=0),
                  device="cpu", progress=False, select=None)
    # each epoch redraws its pairs (seed*100003 + epoch) and takes len(pairs) // batch_size steps
    from xtcdr.pairing import training_pairs
    per_epoch = [len(training_pairs(adata, split="train", seed=e)) // 128 for e in range(4)]
    assert history["epoch"].iloc[-1] == 4 and history["step"].iloc[-1] == sum(per_epoch)
    assert history["step"].tolist()[:-1] == list(range(2, int(history["step"].iloc[-1]), 2))
    expected = {f"{split}_{k}" for split in ("train", "valid") for k in (*TERMS, "total")}
    assert expected | {"valid_r2_deg", "lr", "seconds", "epoch", "step", "transfer_loss",
                       "transfer_r2_deg", "transfer_r2_all"} <= set(history.columns)
    assert history.attrs["training"]["stop_reason"] == "epochs"
    first, last = history.iloc[0], history.iloc[-1]
    for term in (*TERMS, "total"):
        assert last[f"train_{term}"] < first[f"train_{term}"], term
    assert np.isfinite(history["valid_r2_deg"]).all()
    assert last["valid_r2_deg"] > first["valid_r2_deg"]
    assert not model.training  # fit leaves the model in eval mode


def test_checkpoint_round_trip(adata, tmp_path):
    torch.manual_seed(0)
    model = XTransferCDR(adata.n_vars, SMALL_MODEL)
    history = fit(model, adata, TrainConfig(epochs=1, batch_size=256, seed=1), device="cpu",
                  checkpoint_dir=tmp_path, progress=False)
    loaded, state = load_checkpoint(tmp_path / CHECKPOINT_NAME, genes=adata.var_names)
    assert torch.equal(_predict(model, adata), _predict(loaded, adata))  # both: the best valid weights
    assert loaded.config == SMALL_MODEL and state["epoch"] == 1 and state["stop_reason"] == "epochs"
    assert state["genes"] == [str(g) for g in adata.var_names]
    pd.testing.assert_frame_equal(pd.DataFrame(state["history"]), history)


def test_interrupted_run_resumes_exactly(adata, tmp_path):
    """Interrupted in the middle of an epoch (a step cap), resumed: the same weights and history."""
    config = TrainConfig(max_steps=12, eval_every=3, patience=100, batch_size=64, lr=1e-3, seed=3,
                         schedule="step", step_size=1)

    def new_model():
        torch.manual_seed(123)
        return XTransferCDR(adata.n_vars, SMALL_MODEL)

    straight = new_model()
    full = fit(straight, adata, config, device="cpu", progress=False, select=None)
    steps_per_epoch = full["step"].iloc[-1] / full["epoch"].iloc[-1]
    assert 6 % steps_per_epoch != 0, "the interruption should fall inside an epoch"
    interrupted = new_model()
    fit(interrupted, adata, TrainConfig(**{**config.__dict__, "max_steps": 6}), device="cpu",
        checkpoint_dir=tmp_path, progress=False)
    resumed = new_model()
    history = fit(resumed, adata, config, device="cpu", checkpoint_dir=tmp_path, resume=True,
                  progress=False, select=None)
    columns = [c for c in full.columns if c != "seconds"]
    pd.testing.assert_frame_equal(history[columns], full[columns])
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    # resuming with other settings is refused
    with pytest.raises(CheckpointError, match="other settings"):
        fit(new_model(), adata, TrainConfig(**{**config.__dict__, "lr": 5e-4}), device="cpu",
            checkpoint_dir=tmp_path, resume=True, progress=False)


def test_seeded_runs_are_bit_identical_and_seeds_differ(adata):
    """Same seed: the same history and weights bit for bit (dropout masks included)."""
    def run(seed):
        torch.manual_seed(123)  # same initial weights; fit reseeds for pairs, batches, dropout
        model = XTransferCDR(adata.n_vars, SMALL_MODEL)
        history = fit(model, adata, TrainConfig(epochs=2, batch_size=128, lr=1e-3, seed=seed),
                      device="cpu", progress=False, select=None)
        return model, history.drop(columns="seconds")

    (m1, h1), (m2, h2), (m3, h3) = run(5), run(5), run(6)
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    for (name, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), name
    assert not h1["train_total"].equals(h3["train_total"])
    assert not torch.equal(m1.decoder[0].weight, m3.decoder[0].weight)


def test_checkpoint_for_other_genes_is_refused(adata, tmp_path):
    model = XTransferCDR(adata.n_vars, SMALL_MODEL)
    fit(model, adata, TrainConfig(epochs=1, batch_size=256), device="cpu", checkpoint_dir=tmp_path,
        progress=False)
    other = [f"other_{g}" for g in adata.var_names]
    with pytest.raises(CheckpointError, match="genes"):
        load_checkpoint(tmp_path / CHECKPOINT_NAME, genes=other)
    renamed = adata.copy()
    renamed.var_names = other
    with pytest.raises(CheckpointError, match="another dataset"):
        fit(XTransferCDR(adata.n_vars, SMALL_MODEL), renamed, TrainConfig(epochs=2, batch_size=256),
            device="cpu", checkpoint_dir=tmp_path, resume=True, progress=False)


def test_corrupt_checkpoints_give_a_clear_error(adata, tmp_path):
    model = XTransferCDR(adata.n_vars, SMALL_MODEL)
    fit(model, adata, TrainConfig(epochs=1, batch_size=256), device="cpu", checkpoint_dir=tmp_path,
        progress=False)
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an xtcdr checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_fit_refuses_a_model_for_another_number_of_genes(adata):
    with pytest.raises(ValueError, match=f"{adata.n_vars - 1} genes"):
        fit(XTransferCDR(adata.n_vars - 1, SMALL_MODEL), adata, TrainConfig(epochs=1),
            device="cpu", progress=False)


def test_train_or_load_reuses_the_cached_checkpoint(adata, data_dir, monkeypatch, capsys):
    kwargs = dict(model_config=SMALL_MODEL, train_config=TrainConfig(epochs=2, batch_size=256),
                  device="cpu", data_dir=data_dir, progress=False)
    model, history = pipeline.train_or_load(adata, seed=0, **kwargs)
    assert "training" in capsys.readouterr().out
    assert len(list((data_dir / "checkpoints").glob(f"*/{CHECKPOINT_NAME}"))) == 1

    def no_training(*args, **kw):
        raise AssertionError("train_or_load trained again instead of loading its checkpoint")

    monkeypatch.setattr(train_module, "fit", no_training)
    again, history_again = pipeline.train_or_load(adata, seed=0, **kwargs)
    assert "using cached checkpoint" in capsys.readouterr().out
    assert torch.equal(_predict(model, adata), _predict(again, adata))
    pd.testing.assert_frame_equal(history, history_again)
    # another seed is another model: it must train (and here, fail loudly)
    with pytest.raises(AssertionError, match="trained again"):
        pipeline.train_or_load(adata, seed=1, **kwargs)


def test_early_stopping_keeps_the_best_weights_of_each_monitor(adata, tmp_path):
    """Stops once no monitor improved for `patience` steps; each monitor's best weights are kept,
    the checkpoint says why it stopped, and `select` chooses which weights a model holds."""
    config = TrainConfig(max_steps=400, eval_every=4, patience=8, min_delta=0.5, batch_size=64,
                         lr=1e-3, seed=0)
    torch.manual_seed(0)
    model = XTransferCDR(adata.n_vars, SMALL_MODEL)
    history = fit(model, adata, config, device="cpu", checkpoint_dir=tmp_path, progress=False,
                  select="transfer")
    info = history.attrs["training"]
    assert info["stop_reason"] == "converged" and info["steps"] < 400
    assert set(info["monitors"]) == {"valid", "transfer"}
    for name, column in (("valid", "valid_total"), ("transfer", "transfer_loss")):
        best = info["monitors"][name]
        assert best["converged"] and info["steps"] - best["best_step"] >= 8
        # no later value beat the best by the margin (min_delta 0.5: below half of it)
        values = history.set_index("step")[column]
        assert values.loc[best["best_step"]] == pytest.approx(best["best_value"])
        assert (values.loc[best["best_step"]:] >= 0.5 * best["best_value"] - 1e-9).all()
    for select in ("valid", "transfer"):
        loaded, state = load_checkpoint(tmp_path / CHECKPOINT_NAME, select=select)
        assert state["selected"] == select
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, state["best"][select]["state"][k]), (select, k)
    assert torch.equal(_predict(model, adata), _predict(load_checkpoint(tmp_path / CHECKPOINT_NAME,
                                                                        select="transfer")[0], adata))


def test_no_best_is_kept_during_the_warm_up(adata):
    """min_delta 0.9: after its first best no monitor improves (a 90% drop), so each best is the
    first validation after the warm-up (step 12) and training stops patience steps later (20), well
    before its cap (40). Without the warm-up the bests would be at step 4 and training would stop at 12."""
    config = TrainConfig(max_steps=40, min_steps=12, eval_every=4, patience=8, min_delta=0.9,
                         batch_size=64, lr=1e-3, seed=0)
    torch.manual_seed(0)
    history = fit(XTransferCDR(adata.n_vars, SMALL_MODEL), adata, config, device="cpu", progress=False)
    info = history.attrs["training"]
    assert history["step"].iloc[0] == 4                      # validations are logged from the start
    assert {name: m["best_step"] for name, m in info["monitors"].items()} == {"valid": 12, "transfer": 12}
    assert (info["stop_reason"], info["steps"]) == ("converged", 12 + 8)


def test_a_model_stopped_at_its_cap_while_improving_is_not_converged(adata):
    config = TrainConfig(max_steps=12, eval_every=4, patience=100, batch_size=64, lr=1e-3, seed=0)
    torch.manual_seed(0)
    history = fit(XTransferCDR(adata.n_vars, SMALL_MODEL), adata, config, device="cpu", progress=False)
    info = history.attrs["training"]
    assert info["stop_reason"] == "max_steps" and info["steps"] == 12
    assert not any(m["converged"] for m in info["monitors"].values())


def test_transfer_validation_never_reads_a_test_perturbation(adata):
    """The transfer split holds training perturbations only, each in one line; never in training pairs."""
    from xtcdr.pairing import training_pairs
    from xtcdr.train import _transfer_tasks

    obs = adata.obs
    conditions = list(adata.uns["xtcdr"]["split"]["transfer_valid"])
    assert conditions and set(obs.loc[obs["split"] == "transfer", "condition"].astype(str)) <= set(conditions)
    test_perts = set(adata.uns["xtcdr"]["split"]["test_perturbations"])
    tasks = _transfer_tasks(adata)
    assert tasks and all(t.perturbation not in test_perts for t in tasks)
    for task in tasks:  # sources are the perturbation's cells in other lines, which do train
        assert all(s.context != task.cell_type for s in task.sources)
    pairs = training_pairs(adata, split="train", seed=0)
    rows = np.concatenate([pairs.a, pairs.b])
    assert not obs["split"].iloc[rows].astype(str).isin(["transfer", "test"]).any()


def test_without_degs_training_goes_on_without_the_transfer_validation(adata):
    """An AnnData split but never preprocessed for DEGs: a warning naming the fix, no crash."""
    bare = adata.copy()
    del bare.uns["top_degs"]
    config = TrainConfig(max_steps=8, eval_every=4, patience=100, batch_size=64, lr=1e-3, seed=0)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="preprocess"):
        history = fit(XTransferCDR(bare.n_vars, SMALL_MODEL), bare, config, device="cpu", progress=False)
    assert set(history.attrs["training"]["monitors"]) == {"valid"}


QUICK = TrainConfig(max_steps=4, eval_every=2, patience=100, batch_size=64, lr=1e-3, seed=0)


def _fit_quietly_but(adata, config=QUICK, match=None, **kwargs):
    """fit on ``adata``; with ``match``, it must warn with a UserWarning matching it."""
    torch.manual_seed(0)
    model = XTransferCDR(adata.n_vars, SMALL_MODEL)
    if match is None:
        return fit(model, adata, config, device="cpu", progress=False, **kwargs)
    with pytest.warns(UserWarning, match=match):
        return fit(model, adata, config, device="cpu", progress=False, **kwargs)


def _with_split(adata, rows, split):
    out = adata.copy()
    values = out.obs["split"].astype(str).to_numpy()
    values[rows] = split
    out.obs["split"] = pd.Categorical(values)
    return out


def test_validation_cells_that_cannot_be_paired_are_left_out_with_a_warning(adata):
    """No control cell in the valid split: the within-line validation is dropped, and fit says so."""
    obs = adata.obs
    moved = np.flatnonzero(obs["is_control"].to_numpy(bool) & (obs["split"] == "valid").to_numpy())
    no_valid_controls = _with_split(adata, moved, "train")
    history = _fit_quietly_but(no_valid_controls, match=r"within-line validation is left out: .*no control "
                               r"cells in split 'valid'.*stops on the transfer validation.*assign_split")
    assert set(history.attrs["training"]["monitors"]) == {"transfer"}
    assert "valid_total" not in history


def _transfer_conditions_cut_to_one_cell(adata, conditions):
    """A copy of ``adata`` where each of ``conditions`` keeps one cell (too few to score)."""
    cond = adata.obs["condition"].astype(str).to_numpy()
    drop = np.concatenate([np.flatnonzero(cond == c)[1:] for c in conditions])
    return adata[np.setdiff1d(np.arange(adata.n_obs), drop)].copy()


def test_skipped_transfer_conditions_are_named_in_a_warning(adata):
    from xtcdr.train import _transfer_tasks

    held_back = list(adata.uns["xtcdr"]["split"]["transfer_valid"])
    cut = _transfer_conditions_cut_to_one_cell(adata, held_back[:1])
    with pytest.warns(UserWarning, match=rf"transfer validation leaves out .*{held_back[0]} \(1 cell.*"
                                         rf"scores {len(held_back) - 1} of them.*n_transfer_valid"):
        tasks = _transfer_tasks(cut)
    assert sorted(t.condition for t in tasks) == sorted(held_back[1:])


def test_a_transfer_validation_without_tasks_is_left_out_with_a_warning(adata):
    cut = _transfer_conditions_cut_to_one_cell(adata, adata.uns["xtcdr"]["split"]["transfer_valid"])
    with pytest.warns(UserWarning, match="leaves out conditions") as record:
        history = _fit_quietly_but(cut, match=r"transfer validation is left out: .*stops on the within-line "
                                   r"validation loss.*n_transfer_valid")
    assert any("scores none of them" in str(w.message) for w in record)
    assert set(history.attrs["training"]["monitors"]) == {"valid"}


def test_a_transfer_validation_without_degs_to_score_warns(adata):
    from xtcdr.train import _transfer_tasks

    few = adata.copy()
    few.uns["top_degs"] = {c: list(g)[:1] for c, g in adata.uns["top_degs"].items()}  # one DEG each
    with pytest.warns(UserWarning, match=r"transfer validation cannot be scored: .*loss is NaN.*preprocess"):
        assert _transfer_tasks(few)


def test_another_monitors_weights_are_held_with_a_warning(adata, tmp_path):
    """select='transfer' on data without a transfer split: the best 'valid' weights, and a warning."""
    obs = adata.obs
    no_transfer = _with_split(adata, np.flatnonzero((obs["split"] == "transfer").to_numpy()), "train")
    history = _fit_quietly_but(no_transfer, match=r"no best weights for 'transfer' \(its monitors: "
                               r"\['valid'\]\): the model holds the best 'valid' weights instead",
                               select="transfer", checkpoint_dir=tmp_path)
    assert history.attrs["training"]["selected"] == "valid"
    with pytest.warns(UserWarning, match="no best weights for 'transfer'"):
        _, state = load_checkpoint(tmp_path / CHECKPOINT_NAME, select="transfer")
    assert state["selected"] == "valid"


def test_a_training_that_ends_in_its_warm_up_warns_that_it_holds_the_last_weights(adata):
    config = TrainConfig(**{**QUICK.__dict__, "min_steps": 8})
    history = _fit_quietly_but(adata, config, match=r"no best weights were kept \(training stopped at step 4;"
                               r".*min_steps=8.*weights of the last step")
    assert history.attrs["training"]["selected"] is None and history.attrs["training"]["monitors"] == {}


@pytest.fixture(scope="module")
def doubles():
    """A small one-line dataset with doubles in training (the fifth loss can train), log1p values."""
    from xtcdr import pairing, synthetic

    data = synthetic.simulate("synthetic_combo", n_genes=60, n_singles=6, n_doubles=6, n_interacting=2,
                              cells_per_condition=10, controls_per_cell_type=40)
    data.X = np.log1p(data.X).astype(np.float32)
    pairing.assign_split(data, seed=0, test_rule="doubles", n_test=3)
    return data


def _weights(**terms):
    from xtcdr.config import LossWeights

    return TrainConfig(**{**QUICK.__dict__, "weights": LossWeights(**terms)})


def test_a_weighted_term_that_misses_batches_warns(doubles):
    """Fifth loss: one batch per pair (batch_size 1) leaves each batch at most one triple; the
    cross_line variant on one cell line has no cross-line pair at all."""
    config = TrainConfig(**{**_weights(combo=1.0).__dict__, "batch_size": 1})
    _fit_quietly_but(doubles, config, match=r"LossWeights.combo > 0, but \d+ of the \d+ batches .*fewer than "
                     r"2 training triples.*'combo' term is left out of those batches")
    _fit_quietly_but(doubles, _weights(cross_line=1.0), match=r"LossWeights.cross_line > 0, .*left out of "
                     r"those batches, so this training never uses it")


def test_a_validation_without_doubles_warns_that_it_leaves_out_the_fifth_loss(doubles):
    obs = doubles.obs
    is_double = obs["perturbation"].astype(str).str.contains("+", regex=False).to_numpy()
    valid_doubles = (obs["split"] == "valid").to_numpy() & is_double
    assert valid_doubles.any()
    moved = _with_split(doubles, np.flatnonzero(valid_doubles), "train")
    history = _fit_quietly_but(moved, _weights(combo=1.0),
                               match="validation split has no measured doubles.*leaves out the fifth loss")
    assert "valid_combo" not in history and "train_combo" in history


def test_training_uses_a_fixed_thread_count_and_restores_the_callers(adata):
    from xtcdr.train import TRAIN_THREADS

    seen = []
    original = train_module._fit

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    torch.set_num_threads(2)
    try:
        train_module._fit = spy
        fit(XTransferCDR(adata.n_vars, SMALL_MODEL), adata, TrainConfig(max_steps=1), device="cpu",
            progress=False)
        assert seen == [TRAIN_THREADS] and torch.get_num_threads() == 2
    finally:
        train_module._fit = original
        torch.set_num_threads(1)
