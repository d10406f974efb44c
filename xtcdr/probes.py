"""Linear probes of the trained codes against the simulator's truth (notebooks 03 and 07).

A synthetic twin stores, for every cell, its true latent basal state (``obsm['true_basal']``) and
the true effect of its perturbation in that cell line (``obsm['true_effect']``); the model never
sees them. A *probe* is a linear map fitted on a random half of the cells from a code
(``S = E_s(x)`` or ``P = E_p(x)``) to one of these factors, scored on the other half:

- ridge regression (penalty by cross-validation, `sklearn.linear_model.RidgeCV`) -> held-out
  :math:`R^2` averaged over the factor's dimensions (`ridge_r2`);
- logistic regression from the code to the cell line -> held-out accuracy beside the chance
  level of always guessing the largest line (`context_accuracy`).

`probe_codes` runs every probe on one model and returns a `ProbeResult`; `ProbeResult.summary`
gives its headline numbers as one row, so probes of many models (seeds, ablations) stack into one
table. The cell-line probe needs no truth and also runs on real data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["embed", "ridge_r2", "context_accuracy", "probe_cells", "ProbeResult", "probe_codes",
           "SUMMARY_COLUMNS"]

S_NAME, P_NAME = "S = E_s(x)", "P = E_p(x)"

# the headline numbers of one probe run (`ProbeResult.summary`); higher is "better" only for the
# first three (what each code should hold); the others measure what it should not hold
SUMMARY_COLUMNS = {
    "S -> true basal": (S_NAME, "true basal"),
    "P -> true effect": (P_NAME, "true effect"),
    "S -> basal within line": (S_NAME, "true basal within line"),
    "S -> true effect": (S_NAME, "true effect"),
    "P -> true basal": (P_NAME, "true basal"),
    "cell line from P (held-out cells)": "P, held-out cells",
    "cell line from P (held-out perturbations)": "P, held-out perturbations",
}


def _dense(X) -> np.ndarray:
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def embed(encoder, X, rows: np.ndarray, *, device=None, batch_size: int = 4096) -> np.ndarray:
    """Encoder outputs for rows ``rows`` of ``X`` (no gradient), as a float numpy array.

    The caller puts the model in eval mode (``model.eval()``) so that dropout is off and batch
    norm uses its running statistics.
    """
    import torch

    parts = []
    with torch.no_grad():
        for i in range(0, rows.size, batch_size):
            x = _dense(X[rows[i:i + batch_size]])
            parts.append(encoder(torch.as_tensor(x, dtype=torch.float32, device=device))
                         .float().cpu().numpy())
    return np.concatenate(parts)


def ridge_r2(E: np.ndarray, Y: np.ndarray, fit: np.ndarray, score: np.ndarray) -> float:
    """Held-out :math:`R^2` of a standardised ridge probe ``E -> Y`` (penalty by cross-validation).

    Fitted on the rows ``fit`` (boolean mask), scored on ``score``; multi-output :math:`R^2` is the
    mean over the columns of ``Y`` (`sklearn.metrics.r2_score`).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    probe.fit(E[fit], Y[fit])
    return float(r2_score(Y[score], probe.predict(E[score])))


def context_accuracy(E: np.ndarray, labels: np.ndarray, fit: np.ndarray,
                     score: np.ndarray) -> tuple[float, float]:
    """Held-out accuracy of a logistic regression ``E -> labels`` and the chance level.

    Chance is the share of the largest class among the scored rows (always guessing it).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(E[fit], labels[fit])
    _, counts = np.unique(labels[score], return_counts=True)
    return float((clf.predict(E[score]) == labels[score]).mean()), float(counts.max() / counts.sum())


def probe_cells(adata, *, seed: int = 0, max_cells: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """The probed cells (a seeded subsample of at most ``max_cells``, sorted) and the fit half.

    Returns ``(cells, fit_half)``: row positions into ``adata`` and a boolean mask over them
    (True: the probes are fitted on that cell; False: scored on it). The same ``seed`` gives the
    same cells and halves for every model, so probes of different models are paired.
    """
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(adata.n_obs, min(max_cells, adata.n_obs), replace=False))
    fit_half = rng.random(cells.size) < 0.5
    return cells, fit_half


@dataclass
class ProbeResult:
    """The probes of one model.

    ``r2``: columns ``embedding``, ``target``, ``r2`` (None without simulated truth);
    ``context``: columns ``probe``, ``accuracy``, ``chance`` (None with a single cell line);
    ``S``, ``P``: the codes of the probed ``cells``; ``cell_line`` and ``perturbed`` describe them.
    """

    r2: pd.DataFrame | None
    context: pd.DataFrame | None
    cells: np.ndarray
    fit_half: np.ndarray
    S: np.ndarray
    P: np.ndarray
    cell_line: np.ndarray
    perturbed: np.ndarray

    def summary(self) -> dict[str, float]:
        """The headline numbers (`SUMMARY_COLUMNS`) and the chance levels of the cell-line
        probes (always guessing the largest line) as one flat dict; NaN where not measured."""
        out = {}
        r2 = self.r2.set_index(["embedding", "target"])["r2"] if self.r2 is not None else None
        acc = self.context.set_index("probe") if self.context is not None else None
        for name, key in SUMMARY_COLUMNS.items():
            if isinstance(key, tuple):
                out[name] = float(r2[key]) if r2 is not None and key in r2.index else float("nan")
            else:
                out[name] = float(acc.loc[key, "accuracy"]) if acc is not None and key in acc.index \
                    else float("nan")
        for probe, name in (("P, held-out cells", "chance (held-out cells)"),
                            ("P, held-out perturbations", "chance (held-out perturbations)")):
            out[name] = float(acc.loc[probe, "chance"]) if acc is not None and probe in acc.index \
                else float("nan")
        return out


def probe_codes(model, adata, *, seed: int = 0, max_cells: int = 20_000,
                references: dict[str, np.ndarray] | None = None) -> ProbeResult:
    """Every probe of notebook 03 on one trained model.

    Parameters
    ----------
    model
        A trained `xtcdr.model.XTransferCDR` (put in eval mode here).
    adata
        Prepared data; the :math:`R^2` probes need ``obsm['true_basal']`` and ``obsm['true_effect']``
        (synthetic twins), the cell-line probe needs more than one cell line.
    seed
        Seeds the probed cells and the fit/score halves (`probe_cells`).
    references
        Further embeddings of the same probed cells to probe beside S and P (name -> array), e.g.
        principal components of the expression.

    The :math:`R^2` probes map S, P (and each reference) to the true basal state, the basal state
    within its line (minus the line's mean; dropped with one line) and the true effect. The
    cell-line probes use perturbed cells: S and P on the held-out half of the cells, and P on the
    cells of the held-out perturbations (fitted on perturbed cells of training perturbations).
    """
    cells, fit_half = probe_cells(adata, seed=seed, max_cells=max_cells)
    device = next(model.parameters()).device
    model.eval()
    S = embed(model.encode_basal, adata.X, cells, device=device)
    P = embed(model.encode_perturbation, adata.X, cells, device=device)
    obs = adata.obs.iloc[cells]
    cell_line = obs["cell_type"].astype(str).to_numpy()
    perturbed = ~obs["is_control"].to_numpy(bool)
    held_out = obs["split"].astype(str).to_numpy() == "test"

    r2 = None
    if "true_basal" in adata.obsm and "true_effect" in adata.obsm:
        true_basal = np.asarray(adata.obsm["true_basal"])[cells]
        within_line = true_basal.copy()  # the cell's own deviation from its line's mean basal state
        for line in np.unique(cell_line):
            within_line[cell_line == line] -= true_basal[cell_line == line].mean(0)
        truth = {"true basal": true_basal, "true basal within line": within_line,
                 "true effect": np.asarray(adata.obsm["true_effect"])[cells]}
        if np.unique(cell_line).size == 1:  # one line: "within line" is the basal state itself
            truth.pop("true basal within line")
        embeddings = {S_NAME: S, P_NAME: P, **(references or {})}
        r2 = pd.DataFrame([{"embedding": e, "target": t, "r2": ridge_r2(E, Y, fit_half, ~fit_half)}
                           for e, E in embeddings.items() for t, Y in truth.items()])

    context = None
    if np.unique(cell_line[perturbed]).size > 1:
        rows = []
        for name, E in (("S", S), ("P", P)):
            acc, chance = context_accuracy(E, cell_line, fit_half & perturbed, ~fit_half & perturbed)
            rows.append({"probe": f"{name}, held-out cells", "accuracy": acc, "chance": chance})
        if (held_out & perturbed).any() and (perturbed & ~held_out).any():
            acc, chance = context_accuracy(P, cell_line, perturbed & ~held_out, perturbed & held_out)
            rows.append({"probe": "P, held-out perturbations", "accuracy": acc, "chance": chance})
        context = pd.DataFrame(rows)
    return ProbeResult(r2=r2, context=context, cells=cells, fit_half=fit_half, S=S, P=P,
                       cell_line=cell_line, perturbed=perturbed)


def findings(probe_r2: pd.DataFrame | None, context: pd.DataFrame | None) -> list[str]:
    """Plain sentences printed from the probe tables of `probe_codes` (notebook 03).

    Compares each code with the wanted factor and with the other factor, with the PCA reference
    when present, and says whether the cell line is decodable from ``P`` (accuracy more than 0.1
    above the chance level).
    """
    out = []
    if probe_r2 is not None:
        r = probe_r2.set_index(["embedding", "target"])["r2"]
        ref = next((e for e in r.index.get_level_values(0) if e.startswith("PCA")), None)
        s_b, s_e = r[(S_NAME, "true basal")], r[(S_NAME, "true effect")]
        p_b, p_e = r[(P_NAME, "true basal")], r[(P_NAME, "true effect")]
        text = f"S -> true basal R^2 = {s_b:.2f}, P -> true effect R^2 = {p_e:.2f} (the wanted directions)"
        if ref is not None:
            text += (f"; {ref} reaches {r[(ref, 'true basal')]:.2f} and {r[(ref, 'true effect')]:.2f}, so S "
                     + ("beats" if s_b > r[(ref, "true basal")] else "does not beat")
                     + " an unsupervised linear summary at the basal state and P "
                     + ("beats" if p_e > r[(ref, "true effect")] else "does not beat") + " it at the effect")
        out.append(text + ".")
        if (S_NAME, "true basal within line") in r.index:
            out.append(f"Within a line, the basal deviation: S {r[(S_NAME, 'true basal within line')]:.2f}, "
                       f"P {r[(P_NAME, 'true basal within line')]:.2f}"
                       + (f", {ref} {r[(ref, 'true basal within line')]:.2f}" if ref else "")
                       + ": S " + ("holds more of it than P." if r[(S_NAME, "true basal within line")]
                                   > r[(P_NAME, "true basal within line")] else "holds no more of it than P."))
        out.append(f"Cross terms: S -> true effect R^2 = {s_e:.2f}, P -> true basal R^2 = {p_b:.2f}. "
                   + ("P predicts the true basal state about as well as S or better: the linear probes "
                      "show no disentanglement of P from the basal state." if p_b >= s_b - 0.05 else
                      "P holds clearly less of the basal state than S."))
        out.append("S -> true effect is " + ("well above 0: S still carries perturbation information."
                                             if s_e > 0.1 else "close to 0: S is nearly free of the effect."))
    if context is not None:
        c = context.set_index("probe")
        for name in c.index:
            if name.startswith("P"):
                acc, chance = c.loc[name, "accuracy"], c.loc[name, "chance"]
                out.append(f"Cell line from P ({name.split(', ')[1]}): accuracy {acc:.2f} against chance "
                           f"{chance:.2f}" + (": the cell line leaks through P." if acc > chance + 0.1
                                              else ": little cell-line information in P."))
    return out


__all__ += ["findings"]


# the paper's disentanglement premise, as comparisons of probes of the full model (per world); each
# holds when the verdict on (a - b) is ``holds_if`` ("beats", or "equivalent" within the margin)
DISENTANGLEMENT_CLAIMS = [
    ("S holds the basal state better than P (the basal encoder keeps the context)",
     "S -> true basal", "P -> true basal", "beats"),
    ("P holds the perturbation effect better than S (the perturbation encoder keeps the drug)",
     "P -> true effect", "S -> true effect", "beats"),
    ("P is free of the cell line (what a cross-context prediction carries from the source line)",
     "cell line from P (held-out perturbations)", "chance (held-out perturbations)", "equivalent"),
]


def probe_table(values: pd.DataFrame, columns: list[str], *, reference: str) -> tuple[pd.DataFrame, dict]:
    """The probes of many models as a method table: one row per configuration (mean ± sd over
    worlds), one column per probe. ``values``: one row per (configuration, world) (`ProbeResult.summary`
    plus ``configuration`` and ``seed``, the world). The meta holds every row's per-world values and
    ``paired_reference`` (so each configuration is compared with ``reference`` world by world), and
    a ``claim`` of the paper's disentanglement premise (`DISENTANGLEMENT_CLAIMS`, the reference's
    worlds, equivalence margin `xtcdr.verdicts.MARGIN`) where its columns were measured.
    """
    from .report import method_table
    from .verdicts import MARGIN, WORLDS

    rows, per_seed = [], {}
    for name, group in values.groupby("configuration", sort=False):
        group = group.sort_values("seed")
        rows.append((name, "model", [dict(r) for _, r in group[columns].iterrows()]))
        per_seed[name] = {c: group[c].astype(float).tolist() for c in columns}
    full = values[values["configuration"] == reference].sort_values("seed")
    claims = [{"claim": text, "paper": "Eqs. 1-2 and Fig. 1 (not measured in the paper)", "a": a, "b": b,
               "a_values": full[a].astype(float).tolist(), "b_values": full[b].astype(float).tolist(),
               "holds_if": holds_if, "margin": MARGIN}
              for text, a, b, holds_if in DISENTANGLEMENT_CLAIMS
              if a in full and b in full and full[[a, b]].notna().all().all()]
    meta = {"per_seed": per_seed, "paired_reference": reference, "metrics": list(columns),
            "varies": WORLDS, "seeds": sorted(values["seed"].unique().tolist())}
    if claims:
        meta["claim"] = {"kind": "comparison", "rows": claims, "section": "premise", "order": "premise"}
    return method_table(rows, columns), meta


__all__ += ["DISENTANGLEMENT_CLAIMS", "probe_table"]
