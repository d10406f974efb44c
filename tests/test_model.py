"""XTransferCDR: shapes, the two variants, train/eval behaviour, dropout and the prediction formulas."""
import math

import pytest
import torch
from torch import nn

from xtcdr.config import ModelConfig
from xtcdr.model import Dropout, ResidualBlock, XTransferCDR, keep_threshold, random_keep_mask

G = 20


def _model(variant: str, **kw) -> XTransferCDR:
    torch.manual_seed(0)
    cfg = dict(hidden=(32, 16, 12), latent=8, dropout=0.2, variant=variant)
    cfg.update(kw)
    return XTransferCDR(G, ModelConfig(**cfg))


def _x(n: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, G, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_shapes(variant):
    model = _model(variant).eval()
    x = _x()
    s, p = model.encode_basal(x), model.encode_perturbation(x)
    assert s.shape == p.shape == (10, 8)
    assert model.decode(s + p).shape == (10, G)
    assert model(x).shape == (10, G)
    assert model.predict_transfer(x, x).shape == (10, G)
    assert model.predict_combination(x, x, x).shape == (10, G)


def test_paper_variant_architecture():
    model = _model("paper")
    assert not any(isinstance(m, ResidualBlock) for m in model.modules())
    linears = [m for m in model.encoder_basal if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(G, 32), (32, 16), (16, 12), (12, 8)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.encoder_basal) == 3
    assert sum(isinstance(m, nn.Dropout) for m in model.encoder_basal) == 3
    assert all(type(m) is Dropout for m in model.modules() if isinstance(m, nn.Dropout))
    assert isinstance(model.encoder_basal[-1], nn.Linear)  # linear latent, can be negative
    assert isinstance(model.decoder[-1], nn.Linear)


def test_paper_variant_is_deterministic_in_eval_mode():
    model = _model("paper").eval()
    x = _x()
    torch.manual_seed(5)
    first = model(x)
    torch.manual_seed(6)
    assert torch.equal(first, model(x))
    model.train()  # dropout makes training-mode outputs random
    assert not torch.equal(model(x), model(x))


def test_released_variant_residual_blocks_relu_and_noise():
    model = _model("released", n_residual=3)
    for net in (model.encoder_basal, model.encoder_perturbation, model.decoder):
        assert sum(isinstance(m, ResidualBlock) for m in net) == 3
        assert isinstance(net[-1], nn.ReLU)
    model.eval()
    x = _x(50)
    s, p = model.encode_basal(x), model.encode_perturbation(x)
    assert (s >= 0).all() and (p >= 0).all()
    assert (model(x) >= 0).all() and (model.decode(torch.randn(50, 8) * 5) >= 0).all()
    # eval: no noise, deterministic
    assert torch.equal(model(x), model(x))


def test_noise_only_in_train_mode_of_the_released_variant():
    released = _model("released", dropout=0.0)
    paper = _model("paper", dropout=0.0)
    x = _x(16)
    for model in (released, paper):
        model.train()
    # without dropout, training mode is deterministic for the paper variant ...
    assert torch.equal(paper.encode_basal(x), paper.encode_basal(x))
    # ... but the released variant adds Gaussian noise (std noise_std) to inputs and latent codes
    a, b = released.encode_basal(x), released.encode_basal(x)
    assert not torch.equal(a, b)
    assert (a < 0).any()  # noise added after the latent ReLU
    released.eval()
    assert torch.equal(released.encode_basal(x), released.encode_basal(x))
    quiet = _model("released", dropout=0.0, noise_std=0.0).train()
    assert torch.equal(quiet.encode_basal(x), quiet.encode_basal(x))


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_predictions_equal_the_explicit_formulas(variant):
    model = _model(variant).eval()
    src, ctrl, other = _x(7, 1), _x(7, 2), _x(7, 3)
    with torch.no_grad():
        transfer = model.predict_transfer(src, ctrl)
        expected = model.decode(model.encode_basal(ctrl) + model.encode_perturbation(src))
        assert torch.allclose(transfer, expected)
        combo = model.predict_combination(src, other, ctrl)
        expected = model.decode(model.encode_basal(ctrl) + model.encode_perturbation(src)
                                + model.encode_perturbation(other))
        assert torch.allclose(combo, expected)
        # one source row broadcasts over many target controls
        one = model.predict_transfer(src[:1], ctrl)
        expected = model.decode(model.encode_basal(ctrl) + model.encode_perturbation(src[:1]))
        assert one.shape == (7, G) and torch.allclose(one, expected)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="'paper' or 'released'"):
        ModelConfig(variant="resnet")


# --------------------------------------------------------------------------------------------
# dropout (16 random bits per unit on the CPU; see the module docstring of xtcdr.model)
# --------------------------------------------------------------------------------------------
def _z(count: float, expected: float, n: int) -> float:
    """How many binomial standard deviations ``count`` is from ``n * expected``."""
    return abs(count - n * expected) / math.sqrt(n * expected * (1 - expected))


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_dropout_keeps_each_unit_with_the_documented_probability(p):
    k = keep_threshold(p)
    keep = k / 65536
    assert abs(keep - (1 - p)) <= 1 / 131072  # the quantisation of 1 - p stated in the docs
    torch.manual_seed(0)
    x = torch.ones(1000, 1001)  # an odd number of units: the last word is only partly used
    out = Dropout(p).train()(x)
    kept = out != 0
    n = x.numel()
    # 5 binomial sd: a false alarm about once in 3.5 million runs (and the seed is fixed)
    assert _z(kept.sum().item(), keep, n) < 5
    # survivors carry exactly 1 / (keep probability actually used), dropped units are 0
    assert torch.equal(out[kept], torch.full_like(out[kept], 65536 / k))
    # each of the four 16-bit lanes of a random word, and pairs of neighbouring units
    flat = kept.flatten()[: n // 4 * 4].view(-1, 4)
    for lane in range(4):
        assert _z(flat[:, lane].sum().item(), keep, flat.shape[0]) < 5, lane
    both = (flat[:, :-1] & flat[:, 1:]).sum().item()  # independent units: P(both kept) = keep^2
    assert _z(both, keep * keep, flat[:, :-1].numel()) < 5


@pytest.mark.parametrize("threshold", [0, 1, 65535])
def test_keep_mask_resolves_single_steps_of_the_threshold(threshold):
    """At the extremes one step of 1/65536 is 64 units of 4M (sd 8): an off-by-one shows."""
    n = 1 << 22
    kept = random_keep_mask((n,), threshold, torch.Generator().manual_seed(3)).sum().item()
    if threshold == 0:
        assert kept == 0
    else:
        assert _z(kept, threshold / 65536, n) < 5


@pytest.mark.parametrize("p", [0.1, 0.2])
def test_dropout_keeps_the_expectation_of_the_input(p):
    torch.manual_seed(1)
    x = torch.rand(2000, 1000) + 0.5
    out = Dropout(p).train()(x)
    k = keep_threshold(p)
    assert (k / 65536) * (65536 / k) == pytest.approx(1.0, abs=1e-15)
    ratio = (out / x).double()  # 0 or the scale; its mean estimates E[out] / x
    sd = ratio.std().item() / math.sqrt(ratio.numel())
    assert abs(ratio.mean().item() - 1.0) < 5 * sd
    # the empirical check resolves scale errors of about 0.2% and more; the identity above is
    # what makes the expectation exact


def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero():
    x = _x(64)
    drop = Dropout(0.2).eval()
    assert drop(x) is x
    assert Dropout(0.0).train()(x) is x
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


def test_dropout_gradient_flows_only_through_kept_units():
    torch.manual_seed(2)
    x = (torch.rand(300, 70) + 0.1).requires_grad_()
    g = torch.randn(300, 70)
    drop = Dropout(0.2).train()
    out = drop(x)
    out.backward(g)
    kept = out.detach() != 0
    scale = 65536 / keep_threshold(0.2)
    assert 0 < kept.float().mean() < 1
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))
    assert torch.equal(x.grad[kept], g[kept] * scale)


def test_dropout_masks_follow_the_torch_seed():
    x = torch.ones(64, 257)
    drop = Dropout(0.2).train()

    def draw(seed):
        torch.manual_seed(seed)
        return drop(x), drop(x)

    a1, a2 = draw(7)
    b1, b2 = draw(7)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # same seed, same masks, bit for bit
    assert not torch.equal(a1, a2)  # consecutive calls differ
    c1, _ = draw(8)
    assert not torch.equal(a1, c1)  # another seed, other masks
    # the masks come from the global generator, so its saved state replays them (resume)
    state = torch.get_rng_state()
    d1 = drop(x)
    torch.set_rng_state(state)
    assert torch.equal(d1, drop(x))
