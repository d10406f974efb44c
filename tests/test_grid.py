"""The training grid: its plan uses train_or_load's cache keys; local workers and submitit's local
executor train exactly what a sequential run trains; failures are named; a rerun trains nothing."""
from __future__ import annotations

import pytest
import torch

from xtcdr import grid, pipeline
from xtcdr.train import CHECKPOINT_NAME, load_checkpoint

TINY = dict(model={"hidden": (16,), "latent": 8}, train={"max_steps": 12, "eval_every": 6, "min_steps": 0})


def tiny(seed, **extra):
    return grid.Training.make("synthetic_combo", seed=seed, **{**TINY, **extra})


def weights_of(folder):
    model, _ = load_checkpoint(folder / CHECKPOINT_NAME, select=None)
    return model.state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("grid_data")


def test_plan_lists_the_trainings_of_a_small_replication_with_their_cache_keys(data_dir):
    plan = grid.plan("quick", ["04"], worlds=2, dataset="synthetic_drugs", data_dir=data_dir)
    labels = [t.label() for t in plan]
    assert labels[:2] == ["synthetic_drugs, world 0", "synthetic_drugs, world 1"]
    assert sum("training seed" in lab for lab in labels) == 2          # section 3b: seeds 1 and 2 on world 0
    assert sum("test_rule=random" in lab for lab in labels) == 2       # the random rule on the same worlds
    assert sum("hvg_cells=non_test" in lab for lab in labels) == 1     # gene selection, world 0
    assert len(set(plan)) == len(plan)
    # the key is the one notebook 04 computes through train_or_load, on world 1's own draw
    adata = pipeline.prepare("synthetic_drugs", profile="quick", seed=1, data_dir=data_dir, verbose=False)
    assert plan[1].checkpoint_dir(adata, data_dir) == pipeline.checkpoint_dir(adata, profile="quick", seed=1,
                                                                             data_dir=data_dir)
    both = grid.plan("quick", ["04", "07"], worlds=2, dataset="synthetic_drugs", data_dir=data_dir)
    shared = [t for t in both if t.label() == "synthetic_drugs, world 1"]
    assert len(shared) == 1 and shared[0].notebooks == ("04_sciplex_evaluation", "07_ablations")


def test_local_workers_train_what_a_sequential_run_trains(data_dir, tmp_path):
    todo = [tiny(0), tiny(1)]
    result = grid.run(todo, workers=2, data_dir=data_dir, log_dir=tmp_path / "logs", progress=False)
    assert result.count("trained") == 2 and not result.failed
    sequential = tmp_path / "sequential"
    for t in todo:
        adata = t.prepare(data_dir)
        pipeline.train_or_load(adata, data_dir=sequential, progress=False, verbose=False, **t.train_kwargs())
        assert_same_weights(weights_of(t.checkpoint_dir(adata, data_dir)),
                            weights_of(t.checkpoint_dir(adata, sequential)))
    # a rerun finds every checkpoint and trains nothing
    again = grid.run(todo, workers=2, data_dir=data_dir, log_dir=tmp_path / "logs", progress=False)
    assert again.count("cached") == 2 and again.count("trained") == 0


def test_a_failing_training_is_named_and_the_others_finish(data_dir, tmp_path):
    bad = tiny(5, weights={"combo": 1.0})   # the fifth loss needs training doubles: every double is held out
    good = tiny(6)
    result = grid.run([bad, good], workers=2, data_dir=data_dir, log_dir=tmp_path / "logs", progress=False)
    (failure,) = result.failed
    assert failure["label"] == bad.label() and "training split" in failure["error"]
    assert "Traceback" in open(failure["log"]).read()
    assert result.count("trained") == 1


def test_submitits_local_executor_runs_the_same_code_path(data_dir, tmp_path):
    pytest.importorskip("submitit")
    t = tiny(2)
    result = grid.run([t], executor="submitit-local", data_dir=data_dir, log_dir=tmp_path / "logs",
                      progress=False)
    assert result.count("trained") == 1, result.results
    adata = t.prepare(data_dir)
    sequential = tmp_path / "sequential"
    pipeline.train_or_load(adata, data_dir=sequential, progress=False, verbose=False, **t.train_kwargs())
    assert_same_weights(weights_of(t.checkpoint_dir(adata, data_dir)), weights_of(t.checkpoint_dir(adata, sequential)))
