"""Notebook 08's variants, each a switch of the package, against a hand computation:
cross-line pairs and their loss, the gradient-reversal adversary, the zero control code, and the
control offset swap at prediction time; a switch that is off leaves the paper's model unchanged."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from xtcdr import losses, transfer
from xtcdr.config import LossWeights, ModelConfig
from xtcdr.evaluate import ModelPredictor, Source, TransferTask
from xtcdr.model import XTransferCDR, grad_reverse
from xtcdr.pairing import cross_line_pairs

N, D, G = 6, 5, 9


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _mse(u, v) -> float:
    return float(np.mean((np.asarray(u) - np.asarray(v)) ** 2))


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    model = XTransferCDR(G, ModelConfig(hidden=(16, 8), latent=D, dropout=0.1, n_contexts=3)).eval()
    rng = np.random.default_rng(2)
    return model, [_t(rng.gamma(2.0, 1.0, size=(N, G))) for _ in range(6)]


# ----------------------------------------------------------------------------- cross-line pairs
def _obs_table():
    rows = []
    for line, perts in (("A", ["d1", "d2", "d3"]), ("B", ["d1", "d2"]), ("C", ["d3"])):
        for p in perts + ["control"]:
            for split in ("train", "test"):
                rows += [{"cell_type": line, "perturbation": p, "is_control": p == "control", "split": split}] * 2
    obs = pd.DataFrame(rows)
    obs.index = [f"c{i}" for i in range(len(obs))]
    return ad.AnnData(np.zeros((len(obs), 2), np.float32), obs=obs)


def test_cross_line_pairs_join_one_perturbation_in_two_lines_of_one_split():
    adata = _obs_table()
    a, b = cross_line_pairs(adata, split="train", seed=0)
    obs = adata.obs
    assert a.size == b.size > 0
    # every training cell of a perturbation measured in two lines is paired once
    shared = obs[(obs["split"] == "train") & ~obs["is_control"]]
    assert sorted(a) == sorted(np.flatnonzero(obs.index.isin(shared.index)))
    for i, j in zip(a, b):
        assert obs.iloc[i]["perturbation"] == obs.iloc[j]["perturbation"]
        assert obs.iloc[i]["cell_type"] != obs.iloc[j]["cell_type"]
        assert obs.iloc[i]["split"] == obs.iloc[j]["split"] == "train"
    # a split with no perturbation in two lines gives no pairs
    alone = adata[adata.obs["cell_type"] == "A"].copy()
    a0, b0 = cross_line_pairs(alone, split="train")
    assert a0.size == b0.size == 0


def test_cross_line_term_is_the_cross_context_prediction_as_a_target(model_and_batch):
    model, (xa, xb, xca, xcb, xl_a, xl_b) = model_and_batch
    with torch.no_grad():
        terms = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights(cross_line=1.0), cross_line=(xl_a, xl_b))
        s_a, s_b = model.encode_basal(xl_a), model.encode_basal(xl_b)
        p_a, p_b = model.encode_perturbation(xl_a), model.encode_perturbation(xl_b)
        expected = _mse(model.decode(s_b + p_a), xl_b) + _mse(model.decode(s_a + p_b), xl_a)
    assert terms["cross_line"].item() == pytest.approx(expected, rel=1e-5)
    paper = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights())
    assert terms["total"].item() == pytest.approx(paper["total"].item() + expected, rel=1e-5)


# ----------------------------------------------------------------------------- context-free P
def test_gradient_reversal_is_identity_forward_and_flips_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.equal(x.grad, -w)


def test_adversary_trains_the_head_to_read_the_line_and_the_encoder_to_hide_it(model_and_batch):
    model, (xa, xb, xca, xcb, _, _) = model_and_batch
    contexts = torch.tensor([0, 1, 2, 0, 1, 2])
    terms = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights(adversary=1.0), contexts=contexts)
    # the term: cross entropy of the head's logits read from P, both sides of each pair
    with torch.no_grad():
        p = model.encode_perturbation(torch.cat([xa, xb]))
        logits = model.context_head(p).numpy()
    labels = np.concatenate([contexts.numpy()] * 2)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert terms["adversary"].item() == pytest.approx(-log_softmax[np.arange(12), labels].mean(), rel=1e-5)
    # gradients: the head descends the cross entropy, E_p ascends it (reversed sign)
    terms["adversary"].backward()
    head_grad = [q.grad.clone() for q in model.context_head.parameters()]
    enc_grad = [q.grad.clone() for q in model.encoder_perturbation.parameters() if q.grad is not None]
    model.zero_grad()
    p = model.encode_perturbation(torch.cat([xa, xb]))
    torch.nn.functional.cross_entropy(model.context_head(p), torch.as_tensor(labels)).backward()
    for g, q in zip(head_grad, model.context_head.parameters()):
        assert torch.allclose(g, q.grad, atol=1e-6)
    flipped = [q.grad for q in model.encoder_perturbation.parameters() if q.grad is not None]
    assert enc_grad and all(torch.allclose(g, -f, atol=1e-6) for g, f in zip(enc_grad, flipped))


def test_the_adversary_needs_line_codes_and_a_context_head(model_and_batch):
    model, (xa, xb, xca, xcb, _, _) = model_and_batch
    with pytest.raises(ValueError, match="contexts="):
        losses.loss_terms(model, xa, xb, xca, xcb, LossWeights(adversary=1.0))
    headless = XTransferCDR(G, ModelConfig(hidden=(16, 8), latent=D))
    with pytest.raises(ValueError, match="no context head"):
        headless.context_logits(torch.zeros(2, D))


# ----------------------------------------------------------------------------- zero control code
def test_control_code_term_is_the_mean_squared_norm_of_control_codes(model_and_batch):
    model, (xa, xb, xca, xcb, _, _) = model_and_batch
    with torch.no_grad():
        terms = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights(control_code=0.5))
        p_ctrl = model.encode_perturbation(torch.cat([xca, xcb])).numpy()
        paper = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights())
    expected = float(np.mean((p_ctrl ** 2).sum(1)))
    assert terms["control_code"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["total"].item() == pytest.approx(paper["total"].item() + 0.5 * expected, rel=1e-5)


def _papers_terms_by_hand(model, xa, xb, xca, xcb, weights: dict) -> dict:
    """Eqs. 1-6 in numpy (float64) from the model's encoders and decoder, one cell set at a time."""
    def numpy(layer, x):
        with torch.no_grad():
            return layer(torch.as_tensor(x, dtype=torch.float32)).double().numpy()

    def decode(z):
        return numpy(model.decode, z)

    s_a, s_b = (numpy(model.encode_basal, x) for x in (xa, xb))
    p_a, p_b = (numpy(model.encode_perturbation, x) for x in (xa, xb))
    xa, xb, xca, xcb = (x.double().numpy() for x in (xa, xb, xca, xcb))
    q_a, q_b = (np.exp(s) / np.exp(s).sum(1, keepdims=True) for s in (s_a, s_b))
    terms = {
        "orth": np.mean(np.sum(p_a * s_a, 1) ** 2 + np.sum(p_b * s_b, 1) ** 2),
        "sim": np.mean(np.sum(q_a * np.log(q_a / q_b), 1)),
        "reco_basal": _mse(decode(s_a), xca) + _mse(decode(s_b), xcb),
        "reco_self": _mse(decode(s_a + p_a), xa) + _mse(decode(s_b + p_b), xb),
        "cross": _mse(decode(s_b + p_a), xa) + _mse(decode(s_a + p_b), xb),
    }
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in terms.items()}


def test_switches_that_are_off_leave_the_papers_terms(model_and_batch):
    """Every variant switch at 0, with the variants' inputs given: exactly the paper's five terms
    and weighted total, the same numbers as a hand computation and as a call without those inputs."""
    model, (xa, xb, xca, xcb, xl_a, xl_b) = model_and_batch
    paper = {"orth": 0.5, "sim": 2.0, "reco_basal": 3.0, "reco_self": 1.5, "cross": 0.25}  # unequal: the
    off = LossWeights(**paper, combo=0.0, cross_line=0.0, adversary=0.0, control_code=0.0)  # weights show
    with torch.no_grad():
        terms = losses.loss_terms(model, xa, xb, xca, xcb, off, contexts=torch.zeros(N, dtype=torch.long),
                                  cross_line=(xl_a, xl_b))
        absent = losses.loss_terms(model, xa, xb, xca, xcb, off)
    torch.testing.assert_close(terms, _papers_terms_by_hand(model, xa, xb, xca, xcb, paper))
    torch.testing.assert_close(terms, absent, rtol=0, atol=0)


# ----------------------------------------------------------------------------- control offset swap
def test_offset_swap_replaces_the_source_lines_control_code_by_the_targets(model_and_batch):
    model, (x_src, x_ctrl_src, x_ctrl_tgt, *_rest) = model_and_batch
    X = torch.cat([x_src, x_ctrl_src, x_ctrl_tgt]).numpy()
    src, ctrl_src, ctrl_tgt = np.arange(N), np.arange(N, 2 * N), np.arange(2 * N, 3 * N)
    task = TransferTask("d@B", "B", "d", "cross", target_idx=ctrl_tgt, control_idx=ctrl_tgt,
                        sources=[Source("A", [(src, ctrl_src)])])
    plain = ModelPredictor(model, seed=0).predict(X, task, task.sources[0])
    swapped = ModelPredictor(model, seed=0, offset="swap").predict(X, task, task.sources[0])
    perm = np.random.default_rng(0).permutation(N)[np.arange(N) % N]
    with torch.no_grad():
        s_b = model.encode_basal(x_ctrl_tgt)
        p = model.encode_perturbation(x_src)[perm]
        offset_a = model.encode_perturbation(x_ctrl_src).mean(0)
        offset_b = model.encode_perturbation(x_ctrl_tgt).mean(0)
        expected_plain = model.decode(s_b + p).double().mean(0).numpy()
        expected_swap = model.decode(s_b + p - offset_a + offset_b).double().mean(0).numpy()
    np.testing.assert_allclose(plain, expected_plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(swapped, expected_swap, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="offset must be"):
        ModelPredictor(model, offset="shift")


# ----------------------------------------------------------------------------- the registry
def test_variant_names_and_their_trainings():
    assert transfer.variant_names("all") == list(transfer.VARIANTS)
    assert transfer.task_names("default") == list(transfer.DEFAULT_TASKS)
    with pytest.raises(ValueError, match="valid"):
        transfer.variant_names("paper,no such variant")
    trainings = transfer.variant_training("paper,control offset swap,cross-line pairs")
    assert trainings == [{}, {"weights": {"cross_line": 1.0}}]   # the swap reuses the paper's model
