"""The paper's loss terms (Eqs. 1-6), one named function each.

Notation: a pair holds cells ``x_a`` and ``x_b`` of the same context under perturbations a != b,
and control cells ``x_ctrl_a``, ``x_ctrl_b`` of that context. ``S = E_s(x)``, ``P = E_p(x)``.

====================  ==========================================================  ============
term (key)            equation                                                    paper
====================  ==========================================================  ============
``orth``              mean_i (P_i^a . S_i^a)^2 + (P_i^b . S_i^b)^2                 Eq. 1
``sim``               KL(softmax S^a || softmax S^b), batch mean                   Eq. 2
``reco_basal``        MSE(D(S^a), x_ctrl_a) + MSE(D(S^b), x_ctrl_b)                Eq. 3
``reco_self``         MSE(D(S^a + P^a), x_a) + MSE(D(S^b + P^b), x_b)              Eq. 4
``cross``             MSE(D(S^b + P^a), x_a) + MSE(D(S^a + P^b), x_b)              Eq. 5
``total``             sum of weight * term                                         Eq. 6
``combo``             MSE(D(S^a + P^a + P^b), x_ab) on training doubles            released
                      code only (off by default; see below)
====================  ==========================================================  ============

The fifth term ``combo`` (``LossWeights.combo``, 0 by default) exists only in the authors' released
double-gene code: for a measured *training* double a+b and one cell of each single, the decoded
sum of the single a cell's basal state and both singles' perturbation codes must reconstruct
the double's cell. The paper says the model was trained on single perturbations only, so the
default leaves it off; `loss_terms` computes it only when given a batch of such triples.

MSE is the mean over cells and genes of each side (``torch.nn.functional.mse_loss``), and the two
sides are added, as in the equations. Eq. 2 writes ``sum E_s(X^a) log(E_s(X^a) / E_s(X^b))``: a
KL divergence, which needs distributions, so the codes go through a softmax (as the released code
does). The released code computes ``kl_div(log_softmax(S_a), softmax(S_b))``, i.e. KL(S^b || S^a);
the pair sides are random, so the two directions agree in expectation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossWeights

__all__ = ["orthogonality", "similarity", "basal_reconstruction", "self_reconstruction",
           "cross_transfer", "combination_reconstruction", "cross_line_transfer", "adversary",
           "control_code", "loss_terms", "TERMS", "COMBO", "VARIANT_TERMS"]

TERMS = ("orth", "sim", "reco_basal", "reco_self", "cross")
COMBO = "combo"  # the fifth term of the released double-gene code (not in TERMS: off by default)
VARIANT_TERMS = ("cross_line", "adversary", "control_code")  # notebook 08 (off by default)


def orthogonality(p_a: torch.Tensor, s_a: torch.Tensor, p_b: torch.Tensor, s_b: torch.Tensor) -> torch.Tensor:
    """Eq. 1: the squared dot product of each cell's P and S, averaged over pairs."""
    return ((p_a * s_a).sum(1).pow(2) + (p_b * s_b).sum(1).pow(2)).mean()


def similarity(s_a: torch.Tensor, s_b: torch.Tensor) -> torch.Tensor:
    """Eq. 2: KL(softmax(S^a) || softmax(S^b)) summed over latent units, averaged over pairs."""
    return F.kl_div(F.log_softmax(s_b, dim=1), F.log_softmax(s_a, dim=1),
                    reduction="batchmean", log_target=True)


def basal_reconstruction(xhat_a: torch.Tensor, xhat_b: torch.Tensor,
                         x_ctrl_a: torch.Tensor, x_ctrl_b: torch.Tensor) -> torch.Tensor:
    """Eq. 3: D(S^a) and D(S^b) reconstruct unperturbed (control) profiles of the context."""
    return F.mse_loss(xhat_a, x_ctrl_a) + F.mse_loss(xhat_b, x_ctrl_b)


def self_reconstruction(xhat_aa: torch.Tensor, xhat_bb: torch.Tensor,
                        x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """Eq. 4: D(S^a + P^a) -> x_a and D(S^b + P^b) -> x_b."""
    return F.mse_loss(xhat_aa, x_a) + F.mse_loss(xhat_bb, x_b)


def cross_transfer(xhat_a_from_b: torch.Tensor, xhat_b_from_a: torch.Tensor,
                   x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """Eq. 5: D(S^b + P^a) -> x_a and D(S^a + P^b) -> x_b (the swapped perturbation codes)."""
    return F.mse_loss(xhat_a_from_b, x_a) + F.mse_loss(xhat_b_from_a, x_b)


def combination_reconstruction(xhat_ab: torch.Tensor, x_ab: torch.Tensor) -> torch.Tensor:
    """Released code's fifth loss: D(S^a + P^a + P^b) -> x_ab, the cell of the double a+b."""
    return F.mse_loss(xhat_ab, x_ab)


def cross_line_transfer(xhat_b_from_a: torch.Tensor, xhat_a_from_b: torch.Tensor,
                        x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """Notebook 08: for one perturbation measured in lines A and B, D(S(x_B) + P(x_A)) -> x_B and
    D(S(x_A) + P(x_B)) -> x_A: the cross-context prediction itself, as a training target."""
    return F.mse_loss(xhat_b_from_a, x_b) + F.mse_loss(xhat_a_from_b, x_a)


def adversary(logits: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Notebook 08: cross entropy of the context head's ``logits`` (read from P behind gradient
    reversal, `xtcdr.model.XTransferCDR.context_logits`) against the cells' line codes."""
    return F.cross_entropy(logits, contexts)


def control_code(p_ctrl: torch.Tensor) -> torch.Tensor:
    """Notebook 08: mean squared norm of control cells' perturbation codes (zero is the target:
    an unperturbed cell should carry no perturbation)."""
    return p_ctrl.pow(2).sum(1).mean()


def loss_terms(model, x_a: torch.Tensor, x_b: torch.Tensor, x_ctrl_a: torch.Tensor,
               x_ctrl_b: torch.Tensor, weights: LossWeights | None = None, *,
               combo: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               contexts: torch.Tensor | None = None,
               cross_line: tuple[torch.Tensor, torch.Tensor] | None = None,
               ) -> dict[str, torch.Tensor]:
    """All five terms and the weighted total (Eq. 6) for one batch of pairs.

    Each encoder runs once on the stacked batch ``[x_a; x_b]`` and the decoder once on the six
    latent states stacked, so the matrix multiplies are large (fast on any device); batch norm
    therefore sees the stacked batch. A term whose weight is 0 is still reported but adds
    nothing to ``total`` (and so sends no gradient).

    ``combo``: an optional batch of training triples ``(x_single_a, x_single_b, x_double)``
    (`xtcdr.pairing.combination_triples`); then the fifth term ``terms["combo"]`` =
    `combination_reconstruction` of ``D(E_s(x_single_a) + E_p(x_single_a) + E_p(x_single_b))``
    is reported too, in its own encoder and decoder pass, and added with weight ``weights.combo``.
    Without ``combo`` the result is exactly the five terms of the paper.

    Notebook 08's variants, each computed only when its weight is above 0: ``cross_line`` (a
    batch of cells ``(x_A, x_B)`` of one perturbation in two lines, `cross_line_transfer`),
    ``adversary`` (needs ``contexts``, the line code of each pair, and a model with a context
    head) and ``control_code`` (the pairs' control cells, `control_code`).
    """
    w = weights or LossWeights()
    n = x_a.shape[0]
    x = torch.cat([x_a, x_b])
    s, p = model.encode_basal(x), model.encode_perturbation(x)
    s_a, s_b, p_a, p_b = s[:n], s[n:], p[:n], p[n:]
    z = torch.cat([s_a, s_b, s_a + p_a, s_b + p_b, s_b + p_a, s_a + p_b])
    out = model.decode(z).float()
    d = out.split(n)
    x_a, x_b = x_a.float(), x_b.float()
    terms = {
        "orth": orthogonality(p_a.float(), s_a.float(), p_b.float(), s_b.float()),
        "sim": similarity(s_a.float(), s_b.float()),
        "reco_basal": basal_reconstruction(d[0], d[1], x_ctrl_a.float(), x_ctrl_b.float()),
        "reco_self": self_reconstruction(d[2], d[3], x_a, x_b),
        "cross": cross_transfer(d[4], d[5], x_a, x_b),
    }
    if combo is not None:
        xs_a, xs_b, x_ab = combo
        m = xs_a.shape[0]
        p_single = model.encode_perturbation(torch.cat([xs_a, xs_b]))
        z_ab = model.encode_basal(xs_a) + p_single[:m] + p_single[m:]
        terms[COMBO] = combination_reconstruction(model.decode(z_ab).float(), x_ab.float())
    if w.adversary > 0:
        if contexts is None:
            raise ValueError("LossWeights.adversary > 0 needs the line code of each pair (contexts=)")
        terms["adversary"] = adversary(model.context_logits(p).float(), torch.cat([contexts, contexts]))
    if w.control_code > 0:
        terms["control_code"] = control_code(model.encode_perturbation(torch.cat([x_ctrl_a, x_ctrl_b])).float())
    if w.cross_line > 0 and cross_line is not None:
        xl_a, xl_b = cross_line
        m = xl_a.shape[0]
        xl = torch.cat([xl_a, xl_b])
        s_l, p_l = model.encode_basal(xl), model.encode_perturbation(xl)
        out_l = model.decode(torch.cat([s_l[m:] + p_l[:m], s_l[:m] + p_l[m:]])).float()
        terms["cross_line"] = cross_line_transfer(out_l[:m], out_l[m:], xl_a.float(), xl_b.float())
    total = sum(getattr(w, k) * v for k, v in terms.items() if getattr(w, k) != 0)
    terms["total"] = total if torch.is_tensor(total) else torch.zeros((), device=x_a.device)
    return terms
