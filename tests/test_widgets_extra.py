"""The measurements of xtcdr.widgets that notebook 02 prints its findings from, each against an
independent computation (numpy loops, xtcdr.losses, or the optimisation's own trace)."""
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xtcdr import losses, widgets
from xtcdr.config import LossWeights, ModelConfig
from xtcdr.model import XTransferCDR

N_GENES = 12


def _batch(n_pairs: int = 10, seed: int = 0) -> widgets.TinyBatch:
    rng = np.random.default_rng(seed)
    x = [torch.as_tensor(rng.gamma(2.0, 1.0, size=(n_pairs, N_GENES)), dtype=torch.float32) for _ in range(4)]
    lines = np.array(["A", "B"])[np.arange(n_pairs) % 2]
    pert_a = np.array(["d1", "d2", "d3"])[np.arange(n_pairs) % 3]
    pert_b = np.array(["d4", "d1"])[(np.arange(n_pairs) // 2) % 2]
    return widgets.TinyBatch(*x, cell_type=lines, perturbation_a=pert_a, perturbation_b=pert_b)


def _model(dropout: float = 0.2, seed: int = 0) -> XTransferCDR:
    torch.manual_seed(seed)
    return XTransferCDR(N_GENES, ModelConfig(hidden=(8,), latent=4, dropout=dropout))


class _FixedCodes(nn.Module):
    """A stand-in model whose codes are slices of the input: S = x[:, :2], P = x[:, 2:4]."""

    def encode_basal(self, x):
        return x[:, :2]

    def encode_perturbation(self, x):
        return x[:, 2:4]


def test_n_parameters_counts_weights_and_biases():
    assert widgets.n_parameters(nn.Linear(3, 4)) == 3 * 4 + 4
    assert widgets.n_parameters(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))) == 6 + 4


def test_encode_codes_are_the_eval_mode_codes_and_keep_the_mode():
    model, batch = _model(), _batch()
    model.train()
    codes = widgets.encode_codes(model, batch)
    assert model.training
    model.eval()
    with torch.no_grad():
        assert np.allclose(codes["S^a"], model.encode_basal(batch.x_a).numpy())
        assert np.allclose(codes["P^b"], model.encode_perturbation(batch.x_b).numpy())
    assert set(codes) == {"S^a", "S^b", "P^a", "P^b"}


def test_cosine_orthogonality_matches_numpy_and_ignores_scale():
    batch = _batch()
    got = widgets.cosine_orthogonality(_FixedCodes(), batch).item()
    expected = 0.0
    for x in (batch.x_a.numpy(), batch.x_b.numpy()):
        s, p = x[:, :2], x[:, 2:4]
        cos = (s * p).sum(1) / np.linalg.norm(s, axis=1) / np.linalg.norm(p, axis=1)
        expected += np.mean(cos ** 2)
    assert got == pytest.approx(expected, rel=1e-5)
    scaled = widgets.TinyBatch(*(3 * t for t in batch.tensors), batch.cell_type, batch.perturbation_a,
                               batch.perturbation_b)
    assert widgets.cosine_orthogonality(_FixedCodes(), scaled).item() == pytest.approx(got, rel=1e-5)


def test_terms_by_mode_rows_match_eval_terms_and_the_first_step_of_a_trace():
    batch, weights = _batch(), LossWeights.paper()
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = widgets.terms_by_mode(model, batch, weights=weights, seed=3)
    assert list(table.index) == list(widgets.MODES)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "state restored"
    # row 1: eval mode after setting the batch-norm statistics from the batch
    reference = _model()
    torch.manual_seed(3)
    widgets.calibrate_batch_norm(reference, batch)
    reference.eval()
    with torch.no_grad():
        terms = losses.loss_terms(reference, *batch.tensors, weights)
    assert np.allclose(table.loc[widgets.MODES[0], list(losses.TERMS)],
                       [terms[k].item() for k in losses.TERMS], rtol=1e-5)
    # row 3: exactly step 0 of the tiny optimisation of the same model and seed
    run = widgets.optimise_tiny_batch(_model(), batch, weights=weights, steps=0, seed=3)
    assert np.allclose(table.loc[widgets.MODES[2], list(losses.TERMS)],
                       run.trace.loc[0, list(losses.TERMS)].to_numpy(float), rtol=1e-6)


def test_terms_by_mode_without_dropout_rows_two_and_three_agree():
    table = widgets.terms_by_mode(_model(dropout=0.0), _batch(), seed=0)
    assert np.allclose(table.loc[widgets.MODES[1]], table.loc[widgets.MODES[2]], rtol=1e-6)


def test_orthogonality_parts_against_the_loss_and_numpy():
    model, batch = _model(), _batch()
    widgets.calibrate_batch_norm(model, batch)
    parts = widgets.orthogonality_parts(model, batch)
    c = widgets.encode_codes(model, batch)
    t = {k: torch.as_tensor(v) for k, v in c.items()}
    assert parts["L_orth (eval)"] == pytest.approx(
        losses.orthogonality(t["P^a"], t["S^a"], t["P^b"], t["S^b"]).item(), rel=1e-5)
    p, s = np.concatenate([c["P^a"], c["P^b"]]), np.concatenate([c["S^a"], c["S^b"]])
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(s, axis=1)
    assert parts["median |P| |S|"] == pytest.approx(np.median(norms), rel=1e-6)
    assert parts["median |cos(P, S)|"] == pytest.approx(np.median(np.abs((p * s).sum(1) / norms)), rel=1e-5)


def test_label_cosines_against_a_loop_over_cell_pairs():
    batch = _batch(n_pairs=9, seed=1)
    table = widgets.label_cosines(_FixedCodes(), batch)
    x = np.concatenate([batch.x_a.numpy(), batch.x_b.numpy()])
    line = np.concatenate([batch.cell_type, batch.cell_type])
    pert = np.concatenate([batch.perturbation_a, batch.perturbation_b])
    for code, cols in (("S", slice(0, 2)), ("P", slice(2, 4))):
        sums = {k: [] for k in widgets.LABEL_PAIRS}
        for i, j in itertools.combinations(range(len(x)), 2):
            u, v = x[i, cols], x[j, cols]
            key = (("same line" if line[i] == line[j] else "other line") + ", "
                   + ("same perturbation" if pert[i] == pert[j] else "other perturbation"))
            sums[key].append(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
        for key, values in sums.items():
            assert table.loc[code, key] == pytest.approx(np.mean(values), rel=1e-5)
            assert table.attrs["n"][key] == len(values)


def test_label_signals_are_the_two_differences():
    table = pd.DataFrame([[0.9, 0.7, 0.3, 0.1]], index=["S"], columns=list(widgets.LABEL_PAIRS))
    signals = widgets.label_signals(table)
    assert signals.loc["S", "line signal"] == pytest.approx(0.7 - 0.1)
    assert signals.loc["S", "perturbation signal"] == pytest.approx(0.9 - 0.7)


def test_loss_drop_summary_factors_and_steps():
    trace = pd.DataFrame({"step": [0, 1, 2, 3, 4], "orth": [10.0, 6.0, 4.0, 2.0, 1.0],
                          "sim": [1.0, 1.0, 1.0, 1.0, 2.0]})
    summary = widgets.loss_drop_summary(trace, terms=["orth", "sim"])
    assert summary.loc["orth", "factor"] == pytest.approx(10.0)
    assert summary.loc["orth", "step of half the drop"] == 2.0       # 4.0 <= 10 - 0.5 * 9
    assert summary.loc["orth", "step of 90% of the drop"] == 4.0     # 1.0 <= 10 - 0.9 * 9
    assert np.isnan(summary.loc["sim", "step of half the drop"])    # it rose


def test_optimise_tiny_batch_with_cosine_orthogonality():
    batch, weights = _batch(), LossWeights(orth=2.0)
    run = widgets.optimise_tiny_batch(_model(), batch, weights=weights, steps=3, seed=0,
                                      orthogonality="cosine")
    assert (run.trace["orth"] <= 2.0 + 1e-6).all()  # two means of squared cosines
    by_weights = sum(getattr(weights, k) * run.trace[k] for k in losses.TERMS)
    assert np.allclose(run.trace["total"], by_weights, rtol=1e-5)
    with pytest.raises(ValueError, match="orthogonality"):
        widgets.optimise_tiny_batch(_model(), batch, steps=1, orthogonality="angle")


def test_tiny_optimisation_restores_the_thread_count():
    before = torch.get_num_threads()
    widgets.optimise_tiny_batch(_model(), _batch(), steps=1)
    widgets.terms_by_mode(_model(), _batch())
    assert torch.get_num_threads() == before


def test_loss_weight_explorer_offers_the_five_terms_and_keeps_the_others():
    pytest.importorskip("ipywidgets")
    import ipywidgets as W

    batch = _batch()
    box = widgets.loss_weight_explorer(lambda: _model(), batch, weights=LossWeights(control_code=0.5),
                                       steps=1, interactive=True)
    boxes = [w for w in _walk(box) if isinstance(w, W.Checkbox)]
    labels = [w.description for w in _walk(box) if isinstance(w, W.FloatLogSlider) and w.description != "lr"]
    assert len(boxes) == len(losses.TERMS) and set(labels) == set(losses.TERMS)
    assert "control_code=0.5" in widgets._weights_label(LossWeights(control_code=0.5))
    assert "adversary" not in widgets._weights_label(LossWeights())


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)
