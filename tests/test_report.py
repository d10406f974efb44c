"""Saved tables, the generated REPLICATION.md and its verdicts; the replicate oracle."""
import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from xtcdr import baselines as bl
from xtcdr import evaluate as ev
from xtcdr import report

METRICS = ["r2_all", "r2_deg"]


@pytest.fixture(autouse=True)
def no_env_out(monkeypatch):
    # XTCDR_OUT overrides out_dir in report.reports_dir; the tests write under tmp_path only
    monkeypatch.delenv("XTCDR_OUT", raising=False)


def constructed_table() -> pd.DataFrame:
    """The model beats the control baseline on both metrics and loses to source shift on both."""
    rows = [("paper: XTransferCDR", "paper", {"r2_all": 0.81, "r2_deg": 0.62}),
            ("paper: Baseline", "paper", {"r2_all": 0.50, "r2_deg": 0.29}),
            ("ours", "model", [{"r2_all": 0.90, "r2_deg": 0.70}, {"r2_all": 0.92, "r2_deg": 0.74}]),
            ("control", "baseline", {"r2_all": 0.80, "r2_deg": 0.40}),
            ("source shift", "baseline", {"r2_all": 0.95, "r2_deg": 0.85}),
            ("replicate", "oracle", {"r2_all": 0.99, "r2_deg": 0.97})]
    return report.method_table(rows, METRICS)


def meta(paper_table=None, **extra) -> dict:
    out = {"title": "held-out drugs", "dataset": "synthetic_drugs", "profile": "quick", "seeds": [0, 1],
           "protocol": "cross", "metrics": METRICS}
    if paper_table is not None:
        out["paper_table"] = paper_table
    out.update(extra)
    return out


# ----------------------------------------------------------------------------- tables
def test_method_table_means_and_sd():
    table = constructed_table()
    assert list(table.columns) == ["kind", "r2_all", "r2_deg", "r2_all_sd", "r2_deg_sd"]
    assert table.index.name == "method"
    assert table.loc["ours", "r2_all"] == pytest.approx(0.91)
    assert table.loc["ours", "r2_deg_sd"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    assert np.isnan(table.loc["control", "r2_all_sd"])
    with pytest.raises(ValueError, match="kind must be one of"):
        report.method_table([("x", "ours", {"r2_all": 1.0})], METRICS)


def test_summary_values_names_statistics():
    results = pd.DataFrame({"r2_all": [0.1, 0.2, 0.9], "r2_deg": [0.0, np.nan, 0.5]})
    got = report.summary_values(results, ["mean_r2_all", "median_r2_all", "r2_deg", "median_r2_deg"])
    assert got == pytest.approx({"mean_r2_all": 0.4, "median_r2_all": 0.2, "r2_deg": 0.25,
                                 "median_r2_deg": 0.25})
    with pytest.raises(KeyError, match="names no metric"):
        report.summary_values(results, ["mean_pcc_all"])


def test_save_table_writes_csv_and_json(tmp_path):
    table = constructed_table()
    path = report.save_table(table, "table1_toy", meta=meta("Table 1"), out_dir=tmp_path)
    assert path == tmp_path / "tables" / "table1_toy.csv"
    assert (tmp_path / "figures").is_dir()
    back = pd.read_csv(path, index_col=0)
    pd.testing.assert_frame_equal(back, table, check_names=False)
    info = json.loads((tmp_path / "tables" / "table1_toy.json").read_text())
    assert info["name"] == "table1_toy" and info["paper_table"] == "Table 1"
    assert {"xtcdr", "python", "torch", "numpy"} <= set(info["versions"])
    assert len(info["date"]) == 10 and info["date"][4] == "-"
    assert info["seeds"] == [0, 1] and info["metrics"] == METRICS


def test_load_tables_order(tmp_path):
    table = constructed_table()
    for name, paper_table in [("b_second", "Table 2"), ("z_first", "Table 1"), ("plain", None),
                              ("a_first_delta", "Table 1 (delta metrics, not in the paper)")]:
        report.save_table(table, name, meta=meta(paper_table), out_dir=tmp_path)
    names = [m["name"] for m, _ in report.load_tables(tmp_path)]
    assert names == ["z_first", "a_first_delta", "b_second", "plain"]


# ----------------------------------------------------------------------------- REPLICATION.md
# three worlds: every row that varies over worlds has its per-world values
PER_SEED = {"ours": {"r2_all": [0.90, 0.91, 0.92], "r2_deg": [0.71, 0.72, 0.73]},
            "control": {"r2_all": [0.79, 0.80, 0.81], "r2_deg": [0.40, 0.41, 0.39]},
            "source shift": {"r2_all": [0.95, 0.95, 0.95], "r2_deg": [0.84, 0.85, 0.86]}}


def three_seed_table() -> pd.DataFrame:
    """The model, the control and the source shift over three worlds (PER_SEED)."""
    def runs(name):
        return [dict(zip(METRICS, values)) for values in zip(*(PER_SEED[name][m] for m in METRICS))]
    rows = [("paper: XTransferCDR", "paper", {"r2_all": 0.81, "r2_deg": 0.62}),
            ("paper: Baseline", "paper", {"r2_all": 0.50, "r2_deg": 0.29}),
            ("ours", "model", runs("ours")), ("control", "baseline", runs("control")),
            ("source shift", "baseline", runs("source shift")),
            ("replicate", "oracle", {"r2_all": 0.99, "r2_deg": 0.97})]
    return report.method_table(rows, METRICS)


def paper_meta(**extra) -> dict:
    """A paper-part table whose model is converged, with per-world values and a scoreboard claim."""
    out = meta("Table 1", part="paper", per_seed=PER_SEED, varies="worlds", seeds=[0, 1, 2],
               training={"ours": {"seeds": [0, 1, 2], "steps": [1200, 1350, 1500], "best_step": [700, 800, 900],
                                  "converged": [True, True, True], "monitor": "transfer",
                                  "stop_reason": ["converged"] * 3, "checkpoints": ["a", "b", "c"]}},
               claim={"claim": "held-out drugs transfer", "paper": "R2 DEGs .62 vs .29", "metric": "r2_deg"})
    out.update(extra)
    return out


def test_write_replication_markdown(tmp_path):
    report.save_table(three_seed_table(), "table1_toy", meta=paper_meta(note="Paper rows are on sci-Plex3."),
                      out_dir=tmp_path)
    report.save_table(constructed_table(), "scratch_not_in_the_report", meta=meta(None, title="scratch"),
                      out_dir=tmp_path)
    path = report.write_replication(tmp_path)
    assert path == tmp_path / "REPLICATION.md"
    text = path.read_text()
    assert text.index("## Scoreboard") < text.index("## The paper's tables")
    assert "| held-out drugs transfer | R2 DEGs .62 vs .29 | 0.720 ± 0.010 | source shift 0.850 |" in text
    assert "Paper rows are on sci-Plex3." in text
    assert "| paper: XTransferCDR |" not in text        # the paper's rows: one line above our table
    assert "| ours | model | 0.910 ± 0.010 | 0.720 ± 0.010 |" in text
    # paired over worlds: differences 0.11, 0.11, 0.11 against control (r2_all): sd 0 -> [0.110, 0.110];
    # r2_deg: 0.31, 0.31, 0.34 against control
    assert "| control | baseline | 0.800 ± 0.010 | 0.400 ± 0.010 | **beats** +0.110 [+0.110, +0.110] | **beats** +0.320 [" in text
    assert "| source shift | baseline | 0.950 ± 0.000 | 0.850 ± 0.010 | **loses** -0.040 [" in text
    assert "1,350 optimizer steps (median; range 1,200-1,500)" in text and "3 of 3 worlds" in text
    assert "no method reaches the oracle row" in text
    assert "3 of the 3 distinct trainings" in text
    assert ("Regime (r2_all): our control baseline scores 0.800 against the paper's Baseline 0.500; "
            "what control leaves unexplained (1 - R^2) is 0.40 times the paper's") in text
    assert "Where the protocol differs from the paper" in text and "Welch t-score" in text
    assert text.count("torch ") == 1                    # provenance once, not per table
    assert "what varies between the runs of a table: worlds" in text
    assert "scratch" not in text                        # a table without a part stays out


def test_a_model_still_learning_gets_no_verdict_but_inconclusive(tmp_path):
    """The report never writes beats/loses/equivalent for a model that hit its step cap while improving."""
    training = {"ours": {"seeds": [0, 1, 2], "steps": [6000] * 3, "best_step": [5950, 6000, 3000],
                         "converged": [False, False, True], "monitor": "transfer",
                         "stop_reason": ["max_steps"] * 3}}
    report.save_table(three_seed_table(), "table1_toy", meta=paper_meta(training=training), out_dir=tmp_path)
    text = report.write_replication(tmp_path).read_text()
    verdict_rows = [line for line in text.splitlines()
                    if line.startswith(("| control |", "| source shift |")) and "**" in line]
    assert verdict_rows and all("**inconclusive**" in line for line in verdict_rows)
    assert "**beats**" not in text and "**loses**" not in text and "**equivalent**" not in text
    assert "hit the step cap while still improving" in text
    board = report.scoreboard(report.load_tables(tmp_path))
    assert [row["verdict"] for row in board] == ["inconclusive"]


def test_distinct_trainings_are_counted_once(tmp_path):
    """Two tables read from the same three checkpoints: the summary counts 3 trainings, not 6."""
    report.save_table(three_seed_table(), "table1_toy", meta=paper_meta(), out_dir=tmp_path)
    report.save_table(three_seed_table(), "table1_toy_within", meta=paper_meta(part="beyond", claim=None),
                      out_dir=tmp_path)
    text = report.write_replication(tmp_path).read_text()
    assert "3 of the 3 distinct trainings" in text


def test_write_replication_without_tables(tmp_path):
    text = report.write_replication(tmp_path).read_text()
    assert "No results yet" in text


# ----------------------------------------------------------------------------- the oracle
def toy_pair(seed=0):
    """An evaluated AnnData (cell types A, B; test drug d) and a replicate with shuffled genes."""
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(6)]

    def make(n):
        obs = pd.DataFrame([(ct, p) for ct in ("A", "B") for p in ("control", "d") for _ in range(n)],
                           columns=["cell_type", "perturbation"])
        obs["is_control"] = obs["perturbation"] == "control"
        obs["condition"] = obs["cell_type"] + "_" + obs["perturbation"]
        obs["split"] = np.where(obs["perturbation"] == "d", "test", "train")
        obs.index = [f"c{i}" for i in range(len(obs))]
        return ad.AnnData(rng.normal(0, 1, (len(obs), 6)).astype(np.float32), obs=obs,
                          var=pd.DataFrame(index=genes))

    adata, replicate = make(5), make(7)
    adata.uns["top_degs"] = {c: ["g1", "g2"] for c in set(adata.obs["condition"])}
    order = [3, 0, 5, 1, 4, 2]
    return adata, replicate[:, order].copy()


def test_replicate_oracle_predicts_the_replicate_mean():
    adata, replicate = toy_pair()
    oracle = bl.ReplicateOracle(replicate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tasks = {t.condition: t for t in ev.transfer_tasks(adata, protocol="cross")}
    with pytest.raises(RuntimeError, match="not fitted"):
        oracle.predict(adata.X, tasks["B_d"], tasks["B_d"].sources[0])
    assert oracle.fit(adata) is oracle
    rows = (replicate.obs["condition"] == "B_d").to_numpy()
    expected = replicate[rows, list(adata.var_names)].X.mean(0)
    got = oracle.predict(adata.X, tasks["B_d"], tasks["B_d"].sources[0])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    results = ev.evaluate_transfer(oracle, adata, tasks=list(tasks.values()))
    assert len(results) == 2 and results["r2_all"].notna().all()
    assert "oracle" not in bl.BASELINES  # a reference, not a baseline


def test_replicate_oracle_errors():
    adata, replicate = toy_pair()
    with pytest.raises(KeyError, match="lacks 1 gene"):
        bl.ReplicateOracle(replicate[:, [g for g in replicate.var_names if g != "g4"]].copy()).fit(adata)
    with pytest.raises(KeyError, match="obs\\['condition'\\]"):
        bl.ReplicateOracle(ad.AnnData(np.zeros((2, 6), np.float32)))
    oracle = bl.ReplicateOracle(replicate[replicate.obs["cell_type"] == "A"].copy()).fit(adata)
    task = ev.TransferTask("B_d", "B", "d", "cross", np.arange(3), np.arange(3))
    with pytest.raises(KeyError, match="not in the replicate"):
        oracle.predict(adata.X, task, None)
    with pytest.raises(ValueError, match="only for the synthetic twins"):
        bl.ReplicateOracle.from_synthetic("sciplex3", adata)


def test_replicate_oracle_from_synthetic_is_the_same_world_with_fresh_cells():
    import scanpy as sc

    from xtcdr.synthetic import simulate

    original = simulate("synthetic_drugs")              # the cells of pipeline.prepare (cell_seed None)
    sc.pp.normalize_total(original, target_sum=1e4)
    sc.pp.log1p(original)
    adata = original[:, original.var_names[::10]].copy()
    with pytest.raises(ValueError, match="independent replicate needs another cell_seed"):
        bl.ReplicateOracle.from_synthetic("synthetic_drugs", simulate("synthetic_drugs", cell_seed=1,
                                          n_genes=20, n_singles=2, cells_per_condition=2,
                                          controls_per_cell_type=2), cell_seed=1)
    oracle = bl.ReplicateOracle.from_synthetic("synthetic_drugs", adata, cell_seed=1).fit(adata)
    assert list(oracle.replicate.var_names) == list(adata.var_names)
    assert oracle.replicate.uns["xtcdr"]["cell_seed"] == 1
    condition = adata.obs["condition"].astype(str).to_numpy()
    mine = {c: adata.X[condition == c].mean(0) for c in np.unique(condition)}
    same = [np.corrcoef(mine[c], oracle.means_[c])[0, 1] for c in mine]
    assert min(same) > 0.9                               # the same world ...
    assert not np.allclose(mine["line_A_drug_00"], oracle.means_["line_A_drug_00"])  # ... fresh cells


def test_replicate_oracle_has_ten_times_the_cells_of_a_condition():
    import scanpy as sc

    from xtcdr.synthetic import simulate

    small = dict(n_singles=3, n_genes=40, cells_per_condition=6, controls_per_cell_type=10)
    adata = simulate("synthetic_drugs", **small)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    import xtcdr.synthetic as synthetic
    calls = {}
    original = synthetic.simulate

    def spy(name, **kw):
        calls.update(kw)
        return original(name, **{**small, **kw})

    synthetic.simulate = spy
    try:
        oracle = bl.ReplicateOracle.from_synthetic("synthetic_drugs", adata, cell_seed=1)
    finally:
        synthetic.simulate = original
    assert calls["cells_per_condition"] == 60                   # 10 x the 6 cells of a condition
    counts = oracle.replicate.obs["condition"].astype(str).value_counts()
    assert counts["line_A_drug_00"] == 60
    with pytest.raises(ValueError, match="cells_factor"):
        bl.ReplicateOracle.from_synthetic("synthetic_drugs", adata, cells_factor=0)


def test_no_two_committed_paper_tables_share_their_model_rows():
    """Each paper table is its own experiment: no two tables of reports/ repeat the model's numbers
    (a mean over conditions is named ``mean_<metric>`` in Table 1 and ``<metric>`` elsewhere)."""
    from pathlib import Path

    def model_values(meta_, df):
        rows = df[df["kind"] == "model"]
        return {(method, m[len("mean_"):] if m.startswith("mean_") else m): round(float(row[m]), 6)
                for method, row in rows.iterrows() for m in meta_["metrics"]
                if not m.startswith("median_") and pd.notna(row.get(m))}

    tables = [(meta_, model_values(meta_, df)) for meta_, df in
              report.load_tables(Path(__file__).resolve().parent.parent / "reports") if meta_.get("part") == "paper"
              and not meta_.get("paired_reference")]
    assert tables, "no paper tables committed in reports/tables"
    for i, (meta_a, a) in enumerate(tables):
        for meta_b, b in tables[i + 1:]:
            shared = set(a) & set(b)
            assert not shared or any(a[k] != b[k] for k in shared), \
                f"{meta_a['name']} and {meta_b['name']} share their model rows"


def test_wrap_breaks_between_words_and_keeps_bullets():
    from xtcdr.report import wrap

    text = "* " + " ".join(f"word{i:02d}" for i in range(40))
    out = wrap(text, "short line", width=30)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 30
    assert lines[0].startswith("* word00") and all(l.startswith("  word") for l in lines[1:-1])
    assert lines[-1] == "short line"
    assert out.replace("\n  ", " ").replace("\n", " ") == text + " short line"  # no word cut or lost


def test_regime_compares_what_control_leaves_unexplained():
    def sentence(ours, paper):
        df = pd.DataFrame({"kind": ["paper", "baseline"], "r2_all": [paper, ours], "r2_all_delta": [0.0, 0.0]},
                          index=["paper: Baseline", "control"])
        (only,) = report.regime_sentences(df, ["r2_all", "r2_all_delta"])  # deltas are not compared
        return only

    # 1 - 0.918 = 0.082 against 1 - 0.840 = 0.160: about half the distance, although only 0.078 apart
    assert "0.51 times" in sentence(0.918, 0.840) and "less far" in sentence(0.918, 0.840)
    assert "about as far" in sentence(0.52, 0.50)       # 0.48 / 0.50 = 0.96
    assert "further" in sentence(0.30, 0.50)            # 0.70 / 0.50 = 1.40
    assert "about as far" in sentence(0.58, 0.50)       # 0.84, inside the factor 1.25
    no_paper = pd.DataFrame({"kind": ["baseline"], "r2_all": [0.9]}, index=["control"])
    assert report.regime_sentences(no_paper, ["r2_all"]) == []


def test_readme_scoreboard_sentence_counts_the_committed_verdicts():
    """The README's sentence on where the claims stand counts the committed scoreboard's verdicts."""
    import re
    from collections import Counter
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    board = [r for r in report.scoreboard([(m, df) for m, df in report.load_tables(root / "reports") if m.get("part")])
             if r["section"] == "paper"]
    counts = Counter(row["verdict"] for row in board)
    readme = " ".join((root / "README.md").read_text().split())
    singular = {"holds": "hold", "holds against control only": "hold against control only",
                "is equivalent": "are equivalent", "does not hold": "do not hold", "is inconclusive": "are inconclusive"}
    found = {singular.get(word, word): int(n) for n, word in re.findall(
        r"\*\*(\d+) (holds? against control only|holds?|(?:is|are) equivalent|do(?:es)? not hold|(?:is|are) inconclusive)\*\*",
        readme)}
    assert re.search(rf"of the {len(board)} claims", readme)
    assert found.get("hold", 0) == counts["holds"]
    assert found.get("hold against control only", 0) == counts["holds against control only"]
    assert found.get("are equivalent", 0) == counts["equivalent"]
    assert found.get("do not hold", 0) == counts["does not hold"]
    assert found.get("are inconclusive", 0) == counts["inconclusive"]


def test_oracle_line_reads_lower_is_better_metrics_the_right_way():
    """A rank above the oracle's (worse) does not 'reach' it; an R^2 below the oracle's does not either."""
    df = pd.DataFrame({"kind": ["model", "baseline", "oracle"], "r2_deg": [0.7, 0.99, 0.98],
                       "rank_all_delta": [0.11, 0.0, 0.003]}, index=["model", "shift", "oracle"])
    line = report._oracle_line([({"name": "t", "metrics": ["r2_deg", "rank_all_delta"]}, df)])
    assert "shift on r2_deg (t)" in line and "shift on rank_all_delta (t)" in line
    assert "model on" not in line
