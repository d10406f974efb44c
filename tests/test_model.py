"""XTransferCDR: shapes, the two variants, train/eval behaviour and the prediction formulas."""
import pytest
import torch
from torch import nn

from xtcdr.config import ModelConfig
from xtcdr.model import ResidualBlock, XTransferCDR

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
