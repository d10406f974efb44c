"""The XTransferCDR network: basal encoder E_s, perturbation encoder E_p, shared decoder D.

A perturbed profile x is split into a basal state ``S = E_s(x)`` and a perturbation code
``P = E_p(x)``; the decoder reads their sum, ``D(S + P)`` (the paper's linear additivity in the
latent space). Transfer to a new context B is ``D(E_s(x_ctrl_B) + E_p(x_A))``.

With ``ModelConfig.n_contexts > 0`` the model also has a small *context head*, a classifier of the
cell line from ``P`` behind a gradient-reversal layer (Ganin & Lempitsky, ICML 2015): trained with
`xtcdr.losses.adversary` it learns to read the line from ``P`` while ``E_p`` learns to hide it
(the "context-free P" variant of notebook 08; not in the paper).

Two variants (``ModelConfig.variant``):

* ``"paper"`` (default): each encoder is ``Linear -> BatchNorm -> ReLU -> Dropout`` per hidden
  width (1024, 512, 256) and a linear latent layer (128); the decoder mirrors it and ends in a
  linear layer to the genes. The paper lists "four feed-forward layers with sizes 1024, 512, 256
  and 128" and "bottleneck 128"; we read the fourth layer as the latent layer.
* ``"released"``: the authors' code: after the second hidden layer three residual blocks of the
  same width, ReLU on the latent code and on the decoder output, and Gaussian noise (std 0.1) on
  the encoder inputs and on the latent codes while training.

Dropout (``Dropout``, a subclass of ``nn.Dropout``) drops each unit independently in training mode
and scales the survivors so that the expectation equals the input; in eval mode it is the
identity. On the CPU the masks come from 16 random bits per unit: one draw of random int64 words
from the global torch generator (``torch.manual_seed`` seeds it, checkpoints save it), viewed as
int16 and compared with a threshold. That is about ten times cheaper than ``bernoulli_``, which
draws one float per unit on one core and took a fifth of a paper-size training step. The keep
probability is then a multiple of 1/65536: ``keep = K / 65536`` with ``K = round((1 - p) * 65536)``
(dropout 0.2: 52429/65536 = 0.8000031, dropout 0.1: 58982/65536 = 0.8999939; the deviation from
``1 - p`` is at most 1/131072 for any ``p >= 1/131072``), and survivors are scaled by ``1 / keep`` (not ``1 / (1 - p)``) so
that the expectation stays exactly the input. The output is ``x * mask`` with a float mask of 0 or
that scale, so the gradient passes through kept units only, times the same scale (as in
``nn.Dropout``). On other devices (CUDA, with bf16 autocast) it is ``nn.Dropout`` unchanged; that
path is not exercised by the CPU tests.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig

__all__ = ["XTransferCDR", "Dropout", "grad_reverse"]

_BITS = 16
_LEVELS = 1 << _BITS  # 65536


def keep_threshold(p: float) -> int:
    """``K`` such that a unit is kept with probability ``K / 65536`` (nearest to ``1 - p``).

    ``|K / 65536 - (1 - p)| <= 1/131072``, except for ``0 < p < 1/131072``, where ``K`` is clamped
    to 65535 (a little dropout remains, 1/65536). ``K = 0`` (everything dropped, as ``p = 1``) for
    ``p > 1 - 1/131072``.
    """
    if p <= 0:
        return _LEVELS
    return min(_LEVELS - 1, max(0, round((1.0 - p) * _LEVELS)))


def random_keep_mask(shape, threshold: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean CPU mask, each entry True with probability ``threshold / 65536``, independently.

    Four 16-bit units come from each random int64 word (full 64-bit range, the generator's
    Mersenne Twister); a unit is kept when its signed 16-bit value, uniform on
    ``[-32768, 32767]``, is below ``threshold - 32768``.
    """
    n = 1
    for d in shape:
        n *= int(d)
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    words.random_(-(1 << 63), None, generator=generator)
    return words.view(torch.int16)[:n].view(shape) < (threshold - _LEVELS // 2)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose CPU masks are drawn from 16 random bits per unit (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.inplace or not x.is_floating_point():
            return super().forward(x)
        k = keep_threshold(self.p)
        if k == 0:
            return x * 0.0
        # one float mask holding 0 or the scale: ``x * mask`` is one pass forward and, as the
        # mask needs no gradient, autograd keeps only the mask and backward is ``grad * mask``
        mask = random_keep_mask(x.shape, k).to(x.dtype).mul_(_LEVELS / k)
        return x * mask


class _GradReverse(torch.autograd.Function):
    """Identity forward; the gradient's sign flips on the way back."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def grad_reverse(x: torch.Tensor) -> torch.Tensor:
    """Gradient reversal: ``x`` forward, ``-grad`` backward (what an adversary's encoder sees)."""
    return _GradReverse.apply(x)


def _block(n_in: int, n_out: int, cfg: ModelConfig) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if cfg.batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(nn.ReLU())
    if cfg.dropout > 0:
        layers.append(Dropout(cfg.dropout))
    return layers


class ResidualBlock(nn.Module):
    """``x + Dropout(ReLU(BN(Linear(x))))`` at constant width (released variant)."""

    def __init__(self, width: int, cfg: ModelConfig):
        super().__init__()
        self.body = nn.Sequential(*_block(width, width, cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _mlp(widths: list[int], cfg: ModelConfig, *, residual_after: int | None,
         final_relu: bool) -> nn.Sequential:
    """Blocks between consecutive ``widths``; the last layer is a plain Linear."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-2], widths[1:-1])):
        layers += _block(n_in, n_out, cfg)
        if residual_after is not None and i == residual_after:
            layers += [ResidualBlock(n_out, cfg) for _ in range(cfg.n_residual)]
    layers.append(nn.Linear(widths[-2], widths[-1]))
    if final_relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class XTransferCDR(nn.Module):
    """E_s, E_p and D of XTransferCDR for ``n_genes`` input genes.

    Parameters
    ----------
    n_genes
        Number of genes (input and output width).
    config
        ``ModelConfig``: widths, latent size, dropout, batch norm and variant.
    """

    def __init__(self, n_genes: int, config: ModelConfig | None = None):
        super().__init__()
        cfg = config or ModelConfig()
        self.n_genes, self.config = int(n_genes), cfg
        released = cfg.variant == "released"
        enc_widths = [n_genes, *cfg.hidden, cfg.latent]
        dec_widths = [cfg.latent, *reversed(cfg.hidden), n_genes]
        # residual blocks sit after the second hidden layer (512 wide in the released code)
        res_enc = min(1, len(cfg.hidden) - 1) if released else None
        res_dec = len(cfg.hidden) - 1 - res_enc if released else None
        self.encoder_basal = _mlp(enc_widths, cfg, residual_after=res_enc, final_relu=released)
        self.encoder_perturbation = _mlp(enc_widths, cfg, residual_after=res_enc, final_relu=released)
        self.decoder = _mlp(dec_widths, cfg, residual_after=res_dec, final_relu=released)
        if cfg.n_contexts > 0:
            self.context_head = nn.Sequential(nn.Linear(cfg.latent, 64), nn.ReLU(),
                                              nn.Linear(64, cfg.n_contexts))

    # -- the three networks -------------------------------------------------------------
    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.config.variant == "released" and self.config.noise_std > 0:
            return x + self.config.noise_std * torch.randn_like(x)
        return x

    def encode_basal(self, x: torch.Tensor) -> torch.Tensor:
        """S = E_s(x): the basal (unperturbed) state of each cell."""
        return self._noise(self.encoder_basal(self._noise(x)))

    def encode_perturbation(self, x: torch.Tensor) -> torch.Tensor:
        """P = E_p(x): the perturbation representation of each cell."""
        return self._noise(self.encoder_perturbation(self._noise(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D(z): expression from a latent state (S, or S + P)."""
        return self.decoder(z)

    def context_logits(self, p: torch.Tensor) -> torch.Tensor:
        """The context head's logits of the cell line from ``P``, behind gradient reversal."""
        if not hasattr(self, "context_head"):
            raise ValueError("this model has no context head: build it with ModelConfig(n_contexts=k)")
        return self.context_head(grad_reverse(p))

    # -- predictions ----------------------------------------------------------------------
    def predict_transfer(self, x_source_perturbed: torch.Tensor,
                         x_target_control: torch.Tensor) -> torch.Tensor:
        """D(E_s(x_ctrl_B) + E_p(x_A^d)), row by row (a single source row broadcasts)."""
        return self.decode(self.encode_basal(x_target_control)
                           + self.encode_perturbation(x_source_perturbed))

    def predict_combination(self, x_single_a: torch.Tensor, x_single_b: torch.Tensor,
                            x_control: torch.Tensor) -> torch.Tensor:
        """D(E_s(x) + E_p(x^a) + E_p(x^b)): a double from its two measured singles."""
        return self.decode(self.encode_basal(x_control) + self.encode_perturbation(x_single_a)
                           + self.encode_perturbation(x_single_b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self reconstruction D(E_s(x) + E_p(x))."""
        return self.decode(self.encode_basal(x) + self.encode_perturbation(x))
