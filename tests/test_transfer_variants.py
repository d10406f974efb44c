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


def test_every_run_trains_the_paper_model_first():
    assert transfer.variant_training("cross-line pairs") == [{}, {"weights": {"cross_line": 1.0}}]


# ----------------------------------------------------------------------------- the notebook's helpers
# The tasks that have a source, the teaching curve's development world, verdicts over worlds (a rank
# read the right way round), the sentences printed from them, the per-condition gains and their
# figure, and what notebooks 04 and 05 saved.
import warnings  # noqa: E402

from xtcdr.evaluate import transfer_tasks as evaluate_transfer_tasks  # noqa: E402
from xtcdr.experiments import MODEL, Evaluation, World  # noqa: E402


def _two_lines(seed=0):
    """Lines A and B with controls; held-out d1 in both lines, d2 in line A only; d3 trains in both."""
    rng = np.random.default_rng(seed)
    rows = []
    for line in ("A", "B"):
        rows += [{"cell_type": line, "perturbation": "control", "is_control": True, "split": "train"}] * 8
        rows += [{"cell_type": line, "perturbation": "d3", "is_control": False, "split": "train"}] * 6
        rows += [{"cell_type": line, "perturbation": "d1", "is_control": False, "split": "test"}] * 6
    rows += [{"cell_type": "A", "perturbation": "d2", "is_control": False, "split": "test"}] * 6
    obs = pd.DataFrame(rows)
    obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
    obs.index = [f"c{i}" for i in range(len(obs))]
    return ad.AnnData(rng.gamma(2.0, 1.0, size=(len(obs), G)).astype(np.float32), obs=obs)


def test_context_tasks_read_the_conditions_that_have_a_source_without_a_warning():
    adata = _two_lines()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped, so nothing warns
        tasks = transfer.context_tasks("cross", "within")(adata, 3)
        alone = transfer.one_context_conditions(adata, world=3)
    assert alone == ["A_d2"]
    # the plain cross-context reading builds the same tasks, and warns about the condition it skips
    with pytest.warns(UserWarning, match="skipped 1 condition"):
        plain = evaluate_transfer_tasks(adata, split="test", protocol="cross", seed=3)
    assert [t.condition for t in tasks["cross"]] == [t.condition for t in plain] == ["A_d1", "B_d1"]
    for mine, ref in zip(tasks["cross"], plain):
        np.testing.assert_array_equal(mine.target_idx, ref.target_idx)
        assert [s.context for s in mine.sources] == [s.context for s in ref.sources]
    # the within-context reading scores the same conditions, halves seeded by the world
    assert [t.condition for t in tasks["within"]] == ["A_d1", "B_d1"]
    halves = evaluate_transfer_tasks(adata, split="test", protocol="within", seed=3)
    np.testing.assert_array_equal(tasks["within"][0].target_idx, halves[0].target_idx)
    with pytest.raises(ValueError, match="'cross' and 'within'"):
        transfer.context_tasks("combination")


def test_the_teaching_curve_refuses_a_reported_world():
    adata = _two_lines()
    adata.uns["xtcdr"] = {"prepare_seed": 0}
    with pytest.raises(ValueError, match="development world"):
        transfer.teaching_curve(adata)
    assert 100 in transfer.DEVELOPMENT_WORLDS and 0 not in transfer.DEVELOPMENT_WORLDS


def test_evaluate_variants_needs_the_paper_model_on_the_same_worlds():
    paper = Evaluation(worlds=[World(0, 0, None, {})])
    with pytest.raises(ValueError, match="same worlds"):
        transfer.evaluate_variants("synthetic_genes", ["paper"], worlds=[0, 1], paper=paper)


PAPER_ROW, VARIANT_ROW = transfer.variant_label("paper"), transfer.variant_label("cross-line pairs")
PER_WORLD = {PAPER_ROW: {"r2_deg": [0.10, 0.20, 0.15], "rank_all_delta": [0.30, 0.28, 0.31]},
             VARIANT_ROW: {"r2_deg": [0.30, 0.45, 0.32], "rank_all_delta": [0.12, 0.10, 0.11]},
             "source shift": {"r2_deg": [0.50, 0.60, 0.58], "rank_all_delta": [0.20, 0.25, 0.15]},
             "linear transfer": {"r2_deg": [0.40, 0.30, 0.35], "rank_all_delta": [0.02, 0.01, 0.02]}}


def _variants_table(per_world=PER_WORLD, converged=True):
    kinds = {PAPER_ROW: "model", VARIANT_ROW: "model", "source shift": "baseline", "linear transfer": "baseline"}
    df = pd.DataFrame({m: {k: np.mean(v) for k, v in per_world[m].items()} for m in kinds}).T
    df.insert(0, "kind", pd.Series(kinds))
    training = {m: {"converged": [converged] * 3} for m in (PAPER_ROW, VARIANT_ROW)}
    return df, {"per_seed": per_world, "paired_reference": PAPER_ROW, "training": training, "varies": "worlds"}


def _hand_interval(differences):
    from scipy import stats

    d = np.asarray(differences, float)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return d.mean() - half, d.mean() + half


def test_variant_verdicts_pair_by_world_and_read_a_rank_the_right_way_round():
    df, meta = _variants_table()
    found = {(v.method, v.other, v.metric.split(" ")[0]): v
             for v in transfer.variant_verdicts(df, meta, ["r2_deg", "rank_all_delta"])}
    # R^2: the strongest baseline is the highest mean; the variant is paired with the paper model world by world
    assert transfer.strongest_baseline(df, "r2_deg") == "source shift"
    v = found[(VARIANT_ROW, PAPER_ROW, "r2_deg")]
    low, high = _hand_interval(np.subtract(PER_WORLD[VARIANT_ROW]["r2_deg"], PER_WORLD[PAPER_ROW]["r2_deg"]))
    assert (v.low, v.high) == pytest.approx((low, high)) and low > 0 and v.word == "beats"
    assert found[(VARIANT_ROW, "source shift", "r2_deg")].word == "loses to"
    assert found[(PAPER_ROW, "source shift", "r2_deg")].word == "loses to"
    assert (PAPER_ROW, PAPER_ROW, "r2_deg") not in found
    # rank: the strongest baseline is the lowest mean, and a lower rank "beats"
    assert transfer.strongest_baseline(df, "rank_all_delta") == "linear transfer"
    r = found[(VARIANT_ROW, PAPER_ROW, "rank_all_delta")]
    low, high = _hand_interval(np.subtract(PER_WORLD[VARIANT_ROW]["rank_all_delta"], PER_WORLD[PAPER_ROW]["rank_all_delta"]))
    assert (r.low, r.high) == pytest.approx((low, high)) and high < 0 and r.word == "beats" and r.margin is None
    assert "lower is better" in r.sentence()
    assert found[(VARIANT_ROW, "linear transfer", "rank_all_delta")].word == "loses to"
    table = transfer.verdict_rows(df, meta, ["r2_deg", "rank_all_delta"])
    assert "| cross-line pairs | paper model | **beats**" in table and "(linear transfer)" in table


def test_conclusions_name_who_beats_whom_from_the_verdicts():
    df, meta = _variants_table()
    c = transfer.conclusions(df, meta, "r2_deg", task="demo")
    assert c["strongest"] == "source shift" and c["beat_paper"] == ["cross-line pairs"] and c["beat_baseline"] == []
    assert c["title"] == ("Transfer to a new context (demo, r2_deg over 3 worlds): no configuration beats the "
                          "strongest baseline, the source shift; cross-line pairs beats the paper model")
    assert c["lines"][0].startswith("The paper model loses to the source shift (")
    assert c["lines"][1].startswith("cross-line pairs beats the paper model (")
    capped = transfer.conclusions(*_variants_table(converged=False), "r2_deg")
    assert capped["beat_paper"] == [] and "still learning" in capped["title"]
    # a remedy whose differences spread both ways: counted as open, not as a loss
    spread = {**PER_WORLD, VARIANT_ROW: {**PER_WORLD[VARIANT_ROW], "r2_deg": [0.10, 0.60, 0.00]}}
    wide = transfer.conclusions(*_variants_table(spread), "r2_deg")
    assert wide["title"].endswith("no configuration beats the strongest baseline, the source shift (1 of 2 inconclusive: "
                                  "more worlds needed); no remedy beats the paper model (1 of 1 inconclusive: more worlds needed)")
    assert "cross-line pairs is inconclusive against the paper model (more worlds needed) (" in wide["lines"][1]


def _evaluation(label, scores):
    """An Evaluation of one model on worlds 0 and 1 from {world: {condition: r2_deg}}."""
    runs = [pd.DataFrame({"condition": list(c), "cell_type": [n.rsplit("_", 1)[0] for n in c],
                          "perturbation": [n.rsplit("_", 1)[1] for n in c], "r2_deg": list(c.values())})
            for c in scores.values()]
    return Evaluation(worlds=[World(s, s, None, {}) for s in scores], runs={"cross": {label: runs}}, model_label=label)


def test_condition_gains_pair_each_condition_of_each_world():
    paper = _evaluation(PAPER_ROW, {0: {"line_A_g1": 0.1, "line_B_g1": -1.0}, 1: {"line_A_g1": 0.5, "line_B_g2": 0.2}})
    # the same names in another order: rows are matched on (world, condition), not on position
    variant = _evaluation(VARIANT_ROW, {0: {"line_B_g1": 0.2, "line_A_g1": 0.2}, 1: {"line_B_g2": 0.1, "line_A_g1": 0.5}})
    gains = transfer.condition_gains({"paper": paper, "cross-line pairs": variant})
    got = gains.set_index(["world", "condition"])["gain"]
    assert got.to_dict() == pytest.approx({(0, "line_A_g1"): 0.1, (0, "line_B_g1"): 1.2, (1, "line_A_g1"): 0.0,
                                           (1, "line_B_g2"): -0.1})
    assert gains.set_index(["world", "condition"]).loc[(0, "line_B_g1"), "reference"] == -1.0
    text = transfer.gain_sentences(gains)[0]
    # summed gain 1.2; the top condition (+1.2) is all of it, and without it the mean is 0.0 / 3
    assert "mean gain in r2_deg +0.300 over 4 conditions of 2 worlds (median +0.050; 2 of 4 above zero)" in text
    assert ("B:g1 w0 (+1.200, where the paper model scored -1.000), carries 100% of the summed gain; "
            "without it the mean gain is +0.000") in text
    with pytest.raises(ValueError, match="no variant"):
        transfer.condition_gains({"paper": paper})


def test_gain_sentences_when_the_top_condition_outweighs_the_rest():
    gains = pd.DataFrame({"variant": "v", "world": [0, 0, 1], "condition": ["a", "b", "c"], "cell_type": "line_A",
                          "perturbation": ["a", "b", "c"], "reference": [0.0, 0.5, 0.9], "score": 0.0,
                          "gain": [0.4, -0.1, -0.4]})
    text = transfer.gain_sentences(gains)[0]
    assert "is larger than the summed gain: the other 2 conditions sum to -0.500 (mean -0.250)" in text
    assert "Rank correlation of the gain with the paper model's own score: -1.00" in text


def test_plot_gains_labels_every_condition_and_draws_the_median():
    import matplotlib

    matplotlib.use("Agg")
    gains = pd.DataFrame({"variant": ["v1"] * 3 + ["v2"] * 3, "world": [0, 0, 1] * 2, "condition": list("abcabc"),
                          "cell_type": "line_A", "perturbation": list("abcabc"), "reference": [0.1, 0.2, 0.3] * 2,
                          "score": 0.0, "gain": [0.1, 0.5, -0.2, 0.0, 0.3, 0.6]})
    fig = transfer.plot_gains(gains)
    assert [ax.get_title() for ax in fig.axes] == ["v1", "v2"]
    for ax, median in zip(fig.axes, (0.1, 0.3)):
        assert len(ax.texts) == 3                       # one label per condition
        assert any(np.allclose(line.get_ydata(), median) for line in ax.get_lines())
        assert any(t.get_text().startswith("median gain") for t in ax.get_legend().get_texts())


def test_earlier_readings_print_the_saved_cross_context_verdicts(tmp_path):
    from xtcdr.report import save_table

    df = pd.DataFrame({"kind": ["model", "baseline"], "r2_deg": [0.4, 0.6]}, index=[MODEL, "source shift"])
    meta = {"protocol_short": "cross-context transfer", "title": "knockdowns across lines", "varies": "worlds",
            "per_seed": {MODEL: {"r2_deg": [0.3, 0.41, 0.49]}, "source shift": {"r2_deg": [0.5, 0.6, 0.7]}},
            "metrics": ["r2_all", "r2_deg"]}
    save_table(df, "table3_demo_cross_line", meta=meta, out_dir=tmp_path)
    save_table(df, "table3_demo_line_A", meta=meta | {"protocol_short": "within-context reading"}, out_dir=tmp_path)
    save_table(df, "08_variants_demo", meta=meta, out_dir=tmp_path)
    lines = transfer.earlier_readings(tmp_path)
    assert len(lines) == 1 and lines[0].startswith("Notebook 05, knockdowns across lines (`table3_demo_cross_line`")
    assert "the model loses to the source shift (-0.200 [" in lines[0] and "on r2_deg, over 3 worlds" in lines[0]
    assert transfer.earlier_readings(tmp_path / "empty") == []
