"""The XTransferCDR network: basal encoder E_s, perturbation encoder E_p, shared decoder D.

A perturbed profile x is split into a basal state ``S = E_s(x)`` and a perturbation code
``P = E_p(x)``; the decoder reads their sum, ``D(S + P)`` (the paper's linear additivity in the
latent space). Transfer to a new context B is ``D(E_s(x_ctrl_B) + E_p(x_A))``.

Two variants (``ModelConfig.variant``):

* ``"paper"`` (default): each encoder is ``Linear -> BatchNorm -> ReLU -> Dropout`` per hidden
  width (1024, 512, 256) and a linear latent layer (128); the decoder mirrors it and ends in a
  linear layer to the genes. The paper lists "four feed-forward layers with sizes 1024, 512, 256
  and 128" and "bottleneck 128"; we read the fourth layer as the latent layer.
* ``"released"``: the authors' code: after the second hidden layer three residual blocks of the
  same width, ReLU on the latent code and on the decoder output, and Gaussian noise (std 0.1) on
  the encoder inputs and on the latent codes while training.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig

__all__ = ["XTransferCDR"]


def _block(n_in: int, n_out: int, cfg: ModelConfig) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if cfg.batch_norm:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(nn.ReLU())
    if cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
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
