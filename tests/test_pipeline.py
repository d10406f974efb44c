"""Tests of xtcdr.pipeline.prepare (cache, user data, errors) and the command line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from xtcdr import __main__ as cli
from xtcdr import datasets, pipeline
from xtcdr.synthetic import simulate

SMALL = dict(n_singles=6, n_genes=150, cells_per_condition=15, controls_per_cell_type=40)


@pytest.fixture
def small_twin(monkeypatch):
    """Make the named twins small so that prepare runs in a second."""
    from xtcdr import synthetic

    real = synthetic.simulate
    monkeypatch.setattr(synthetic, "simulate", lambda name, **kw: real(name, **{**SMALL, **kw}))


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------

def test_prepare_caches_and_reuses(tmp_path, small_twin, monkeypatch, capsys):
    first = pipeline.prepare("synthetic_drugs", data_dir=tmp_path, seed=1)
    cached = list((tmp_path / "processed").glob("synthetic_drugs__quick__seed1__*.h5ad"))
    assert len(cached) == 1
    assert "wrote" in capsys.readouterr().out

    def no_load(*args, **kwargs):
        raise AssertionError("prepare reloaded the dataset although a cache exists")

    monkeypatch.setattr(datasets, "load", no_load)
    second = pipeline.prepare("synthetic_drugs", data_dir=tmp_path, seed=1)
    assert "using cached" in capsys.readouterr().out
    np.testing.assert_array_equal(first.X, second.X)
    assert list(first.var_names) == list(second.var_names)
    pd.testing.assert_frame_equal(first.obs, second.obs)
    assert {k: list(v) for k, v in first.uns["top_degs"].items()} == \
           {k: list(v) for k, v in second.uns["top_degs"].items()}
    assert second.uns["xtcdr"]["dataset"] == "synthetic_drugs"
    assert second.uns["xtcdr"]["profile"] == "quick"


def test_prepare_returns_the_full_schema(tmp_path, small_twin):
    adata = pipeline.prepare("synthetic_drugs", data_dir=tmp_path, verbose=False)
    datasets.validate_schema(adata)
    assert adata.X.dtype == np.float32 and isinstance(adata.X, np.ndarray)
    assert "counts" in adata.layers
    assert set(adata.obs["split"].astype(str)) == {"train", "valid", "transfer", "test"}
    assert adata.uns["top_degs"]


def test_prepare_keys_the_cache_by_seed_and_recomputes_on_force(tmp_path, small_twin):
    a = pipeline.prepare("synthetic_drugs", data_dir=tmp_path, seed=0, verbose=False)
    b = pipeline.prepare("synthetic_drugs", data_dir=tmp_path, seed=1, verbose=False)
    assert len(list((tmp_path / "processed").glob("*.h5ad"))) == 2
    assert a.uns["xtcdr"]["split"]["rule"] == "strongest"            # the drug twin's default
    # the seed is the world: another draw of the twin, with the held-out drugs chosen on that draw
    assert a.uns["xtcdr"]["seed"] == 0 and b.uns["xtcdr"]["seed"] == 1
    assert not np.allclose(np.asarray(a.X[:20]), np.asarray(b.X[:20]))
    c = pipeline.prepare("synthetic_drugs", data_dir=tmp_path, seed=0, force=True, verbose=False)
    pd.testing.assert_frame_equal(a.obs, c.obs)


def test_prepare_accepts_an_anndata_in_the_schema(tmp_path):
    adata = simulate("synthetic_genes", **SMALL)
    out = pipeline.prepare(adata, data_dir=tmp_path, seed=0, verbose=False)
    assert "split" in out.obs and out.uns["top_degs"]
    assert "split" not in adata.obs                        # the input is left alone
    assert list(tmp_path.iterdir()) == []                  # user data is not cached


def test_prepare_refuses_an_anndata_outside_the_schema(tmp_path):
    adata = simulate("synthetic_genes", **SMALL)
    del adata.obs["is_control"]
    with pytest.raises(KeyError, match="is_control"):
        pipeline.prepare(adata, data_dir=tmp_path)


def test_prepare_unknown_dataset_lists_valid_names_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError) as err:
        pipeline.prepare("synthetic_drug", data_dir=tmp_path)
    message = str(err.value)
    for name in datasets.names():
        assert name in message
    assert "Did you mean 'synthetic_drugs'" in message
    assert list(tmp_path.iterdir()) == []


def test_prepare_unknown_profile_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="paper.*quick"):
        pipeline.prepare("synthetic_drugs", profile="fast", data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_env_override(monkeypatch):
    monkeypatch.delenv("XTCDR_TEST_VALUE", raising=False)
    assert pipeline.env_override("XTCDR_TEST_VALUE", 3, int) == 3
    monkeypatch.setenv("XTCDR_TEST_VALUE", "")
    assert pipeline.env_override("XTCDR_TEST_VALUE", 3, int) == 3
    monkeypatch.setenv("XTCDR_TEST_VALUE", "7")
    assert pipeline.env_override("XTCDR_TEST_VALUE", 3, int) == 7


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def test_cli_unknown_profile_is_an_argparse_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xtcdr", "replicate", "--profile", "nope",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr
    assert "quick" in proc.stderr and "paper" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_unknown_dataset_lists_valid_names(tmp_path, capsys):
    code = cli.main(["replicate", "--dataset", "sciplex5", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'sciplex5'" in err and "sciplex3" in err and "synthetic_drugs" in err
    assert not (tmp_path / "out").exists()


def test_cli_needs_a_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    assert "replicate" in capsys.readouterr().err


def _notebooks(tmp_path, stems):
    for stem in stems:
        (tmp_path / f"{stem}.ipynb").write_text("{}")
    return tmp_path


def test_plan_selects_existing_notebooks_only(tmp_path):
    folder = _notebooks(tmp_path, ["01_data_and_pairing", "05_genetic_perturbation"])
    runs = cli.plan("quick", notebook_dir=folder)
    assert runs == [
        ("01_data_and_pairing", {"dataset": "synthetic_drugs", "profile": "quick"}, "01_data_and_pairing"),
        ("05_genetic_perturbation", {"dataset": "synthetic_genes", "profile": "quick"},
         "05_genetic_perturbation"),
    ]
    assert cli.plan("quick", notebook_dir=tmp_path / "empty") == []


def test_plan_passes_the_dataset_override_to_the_drug_notebooks(tmp_path):
    folder = _notebooks(tmp_path, ["01_data_and_pairing", "02_model_and_losses", "03_training",
                                   "05_genetic_perturbation", "06_combinatorial"])
    runs = {stem: params for stem, params, _ in cli.plan("quick", dataset="sciplex4", notebook_dir=folder)}
    assert runs["01_data_and_pairing"]["dataset"] == "sciplex4"
    assert runs["03_training"]["dataset"] == "sciplex4"
    assert runs["05_genetic_perturbation"]["dataset"] == "synthetic_genes"   # its own task
    assert runs["06_combinatorial"]["dataset"] == "synthetic_combo"
    assert "dataset" not in runs["02_model_and_losses"]
    assert all(p["profile"] == "quick" for p in runs.values())


def test_plan_names_repeated_notebooks_by_dataset(tmp_path):
    folder = _notebooks(tmp_path, ["04_sciplex_evaluation", "05_genetic_perturbation"])
    runs = cli.plan("paper", notebook_dir=folder)
    assert [name for *_, name in runs] == [
        "04_sciplex_evaluation_sciplex3", "04_sciplex_evaluation_sciplex4",
        "05_genetic_perturbation_replogle_k562", "05_genetic_perturbation_replogle_rpe1"]
    # one dataset for the drug notebooks: the two sci-Plex runs collapse into one
    runs = cli.plan("paper", dataset="sciplex3", notebook_dir=folder)
    assert [name for *_, name in runs][0] == "04_sciplex_evaluation"
    assert sum(stem == "04_sciplex_evaluation" for stem, *_ in runs) == 1


def test_plan_only_and_worlds(tmp_path):
    folder = _notebooks(tmp_path, ["01_data_and_pairing", "03_training", "07_ablations"])
    runs = cli.plan("quick", only=["03", "07"], worlds=5, notebook_dir=folder)
    assert [stem for stem, *_ in runs] == ["03_training", "07_ablations"]
    assert all(params["n_worlds"] == 5 for _, params, _ in runs)


def test_plan_of_the_repository_runs_notebook_01():
    runs = cli.plan("quick", dataset="synthetic_genes")
    if not (cli.NOTEBOOK_DIR / "01_data_and_pairing.ipynb").exists():
        pytest.skip("notebook 01 not written yet")
    first = runs[0]
    assert first[0] == "01_data_and_pairing" and first[1]["dataset"] == "synthetic_genes"


def _notebook(path, code_cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('dataset: str = "synthetic_drugs"  # a dataset name\n'
                                       'out_dir: str = "../reports"  # output folder')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in code_cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_replicate_runs_notebooks_and_stops_at_a_failing_one(tmp_path, monkeypatch, capsys):
    from xtcdr import __main__ as cli

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    _notebook(nb_dir / "01_data_and_pairing.ipynb",
              ["from pathlib import Path\nPath(out_dir, 'ran_01.txt').write_text(dataset)"])
    _notebook(nb_dir / "02_model_and_losses.ipynb", ["x = 1", "raise RuntimeError('boom in cell two')"])
    _notebook(nb_dir / "03_training.ipynb",
              ["from pathlib import Path\nPath(out_dir, 'ran_03.txt').write_text('yes')"])
    from xtcdr import runs

    for module in (cli, runs):
        monkeypatch.setattr(module, "NOTEBOOK_DIR", nb_dir)
    monkeypatch.setattr(runs, "SOLUTION_DIR", nb_dir / "solutions")
    out = tmp_path / "reports"
    code = cli.replicate("quick", dataset="synthetic_genes", out=str(out), grid=False, workers=1)
    err = capsys.readouterr().err
    assert code == 1
    assert "02_model_and_losses" in err and "RuntimeError" in err and "boom in cell two" in err
    assert (out / "ran_01.txt").read_text() == "synthetic_genes"  # parameters reached the notebook
    assert (out / "notebooks" / "01_data_and_pairing.ipynb").exists()
    assert (out / "ran_03.txt").exists()          # run first: the longest notebooks go first
    assert not (out / "REPLICATION.md").exists()  # no report from a failed run


def test_train_or_load_initialises_from_the_training_seed(tmp_path, small_twin):
    """Two fresh trainings with the same seed give the same model, whatever the global RNG held."""
    import torch

    from xtcdr.config import ModelConfig, TrainConfig

    adata = pipeline.prepare("synthetic_drugs", data_dir=tmp_path / "data", verbose=False)
    kwargs = dict(seed=3, model_config=ModelConfig(hidden=(16,), latent=4),
                  train_config=TrainConfig(epochs=1, batch_size=64), device="cpu", progress=False,
                  verbose=False)
    torch.manual_seed(123)
    first, _ = pipeline.train_or_load(adata, data_dir=tmp_path / "a", **kwargs)
    torch.manual_seed(456)
    second, _ = pipeline.train_or_load(adata, data_dir=tmp_path / "b", **kwargs)
    for p, q in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(p, q)
