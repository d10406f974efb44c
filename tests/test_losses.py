"""Each loss term of xtcdr.losses against an independent hand computation (numpy)."""
import numpy as np
import pytest
import torch

from xtcdr import losses
from xtcdr.config import LossWeights, ModelConfig
from xtcdr.model import XTransferCDR

N, D, G = 6, 5, 9


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


@pytest.fixture
def codes():
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=(N, D)) for k in ("p_a", "s_a", "p_b", "s_b")}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _mse(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.mean((u - v) ** 2))


def test_orthogonality_matches_hand_computation(codes):
    c = codes
    expected = np.mean(np.einsum("ij,ij->i", c["p_a"], c["s_a"]) ** 2
                       + np.einsum("ij,ij->i", c["p_b"], c["s_b"]) ** 2)
    got = losses.orthogonality(_t(c["p_a"]), _t(c["s_a"]), _t(c["p_b"]), _t(c["s_b"]))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_orthogonality_is_zero_for_orthogonal_codes():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    p = torch.tensor([[0.0, 3.0, -1.0], [5.0, 0.0, 4.0]])
    assert losses.orthogonality(p, s, p, s).item() == 0.0
    assert losses.orthogonality(s, s, s, s).item() > 0


def test_similarity_is_kl_of_softmaxes(codes):
    p, q = _softmax(codes["s_a"]), _softmax(codes["s_b"])
    expected = np.mean(np.sum(p * np.log(p / q), axis=1))  # Eq. 2: KL(softmax S^a || softmax S^b)
    got = losses.similarity(_t(codes["s_a"]), _t(codes["s_b"]))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # zero for identical basal states (and for a constant shift: softmax is shift invariant)
    assert losses.similarity(_t(codes["s_a"]), _t(codes["s_a"] + 3.0)).item() == pytest.approx(0, abs=1e-6)
    # KL is not symmetric: the direction is the paper's, sum p_a log(p_a / p_b)
    reverse = np.mean(np.sum(q * np.log(q / p), axis=1))
    assert abs(expected - reverse) > 1e-4


def test_reconstruction_terms_are_sums_of_two_mses():
    rng = np.random.default_rng(1)
    u1, u2, v1, v2 = (rng.normal(size=(N, G)) for _ in range(4))
    expected = _mse(u1, v1) + _mse(u2, v2)
    for fn in (losses.basal_reconstruction, losses.self_reconstruction, losses.cross_transfer):
        assert fn(_t(u1), _t(u2), _t(v1), _t(v2)).item() == pytest.approx(expected, rel=1e-5)


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    model = XTransferCDR(G, ModelConfig(hidden=(16, 8), latent=D, dropout=0.1)).eval()
    rng = np.random.default_rng(2)
    batch = [_t(rng.gamma(2.0, 1.0, size=(N, G))) for _ in range(4)]
    return model, batch


def test_loss_terms_match_the_equations_in_eval_mode(model_and_batch):
    model, (xa, xb, xca, xcb) = model_and_batch
    with torch.no_grad():
        terms = losses.loss_terms(model, xa, xb, xca, xcb, LossWeights())
        sa, sb = model.encode_basal(xa).numpy(), model.encode_basal(xb).numpy()
        pa, pb = model.encode_perturbation(xa).numpy(), model.encode_perturbation(xb).numpy()

    def dec(z):
        with torch.no_grad():
            return model.decode(_t(z)).numpy()

    x = {k: v.numpy() for k, v in zip(("a", "b", "ca", "cb"), (xa, xb, xca, xcb))}
    expected = {
        "orth": np.mean(np.sum(pa * sa, 1) ** 2 + np.sum(pb * sb, 1) ** 2),
        "sim": np.mean(np.sum(_softmax(sa) * np.log(_softmax(sa) / _softmax(sb)), 1)),
        "reco_basal": _mse(dec(sa), x["ca"]) + _mse(dec(sb), x["cb"]),
        "reco_self": _mse(dec(sa + pa), x["a"]) + _mse(dec(sb + pb), x["b"]),
        "cross": _mse(dec(sb + pa), x["a"]) + _mse(dec(sa + pb), x["b"]),
    }
    expected["total"] = sum(expected.values())
    assert set(terms) == set(losses.TERMS) | {"total"}
    assert losses.TERMS == ("orth", "sim", "reco_basal", "reco_self", "cross")
    for k, v in expected.items():
        assert terms[k].item() == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_weights_scale_and_remove_terms(model_and_batch):
    model, batch = model_and_batch
    with torch.no_grad():
        plain = losses.loss_terms(model, *batch, LossWeights())
        w = LossWeights(orth=2.0, sim=0.5, reco_basal=3.0, reco_self=0.0, cross=1.5)
        weighted = losses.loss_terms(model, *batch, w)
        without = losses.loss_terms(model, *batch, LossWeights().without("cross", "orth"))
    expected = sum(getattr(w, k) * plain[k].item() for k in losses.TERMS)
    assert weighted["total"].item() == pytest.approx(expected, rel=1e-5)
    assert without["total"].item() == pytest.approx(
        sum(plain[k].item() for k in ("sim", "reco_basal", "reco_self")), rel=1e-5)
    # a removed term is still reported
    assert without["cross"].item() == pytest.approx(plain["cross"].item())


def test_released_and_paper_weight_presets():
    assert LossWeights.paper() == LossWeights(1, 1, 1, 1, 1)
    r = LossWeights.released()
    assert (r.orth, r.sim, r.reco_basal, r.reco_self, r.cross) == (0.5, 5.0, 5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="unknown loss terms"):
        LossWeights().without("kl")


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_every_parameter_gets_a_gradient_from_the_total(variant):
    torch.manual_seed(0)
    model = XTransferCDR(G, ModelConfig(hidden=(16, 12), latent=D, dropout=0.0, variant=variant,
                                        n_residual=1))
    model.train()
    rng = np.random.default_rng(3)
    batch = [_t(rng.gamma(2.0, 1.0, size=(16, G))) for _ in range(4)]
    losses.loss_terms(model, *batch, LossWeights.released())["total"].backward()
    networks = set()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.count_nonzero(param.grad) > 0, name
        networks.add(name.split(".")[0])
    assert networks == {"encoder_basal", "encoder_perturbation", "decoder"}


def test_a_zero_weight_sends_no_gradient():
    torch.manual_seed(0)
    model = XTransferCDR(G, ModelConfig(hidden=(16,), latent=D, dropout=0.0))
    rng = np.random.default_rng(4)
    batch = [_t(rng.gamma(2.0, 1.0, size=(8, G))) for _ in range(4)]
    only_latent = LossWeights(orth=1.0, sim=1.0, reco_basal=0, reco_self=0, cross=0)
    losses.loss_terms(model, *batch, only_latent)["total"].backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert all(p.grad is not None for p in model.encoder_basal.parameters())
    # sim alone acts on E_s only
    model.zero_grad(set_to_none=True)
    losses.loss_terms(model, *batch, LossWeights(0, 1, 0, 0, 0))["total"].backward()
    assert all(p.grad is None for p in model.encoder_perturbation.parameters())
    assert any(p.grad is not None and torch.count_nonzero(p.grad) for p in model.encoder_basal.parameters())
