"""Tables with their parameters beside them, and the generated ``reports/REPLICATION.md``.

A notebook saves each result table with ``save_table(df, name, meta=..., out_dir=...)``: the
CSV in ``reports/tables/<name>.csv`` and its parameters in ``<name>.json`` (dataset, profile,
seeds, versions, date, the paper table it mirrors). ``write_replication(out_dir)`` reads every
table that names a paper table and writes REPLICATION.md: the paper's numbers beside ours and the
baselines, and a plain sentence for every baseline the model does or does not beat.

Table layout (rows = methods): index ``method``; column ``kind`` in ``paper`` (numbers printed
in the paper), ``model`` (ours), ``baseline``, ``oracle``; one column per metric (the mean over
seeds) and optionally ``<metric>_sd`` (the standard deviation over seeds).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import pandas as pd

__all__ = ["save_table", "save_figure", "load_tables", "write_replication", "versions",
           "reports_dir", "markdown_table", "verdicts", "close_calls", "oracle_verdicts",
           "regime_sentences", "profile_lines"]


def reports_dir(out_dir: str | Path = "reports") -> Path:
    """``out_dir`` (environment ``XTCDR_OUT`` wins), with ``tables/`` and ``figures/`` created."""
    out = Path(os.environ.get("XTCDR_OUT") or out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    return out


def versions() -> dict[str, str]:
    """Versions of the packages that produce the numbers."""
    from importlib.metadata import version  # scanpy and anndata deprecate __version__

    import numpy
    import sklearn
    import torch

    from . import __version__
    return {"xtcdr": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scanpy": version("scanpy"),
            "anndata": version("anndata"), "scikit-learn": sklearn.__version__}


def save_table(df: pd.DataFrame, name: str, *, meta: dict | None = None,
               out_dir: str | Path = "reports") -> Path:
    """Write ``tables/<name>.csv`` and ``tables/<name>.json`` (meta + versions + date)."""
    out = reports_dir(out_dir) / "tables"
    path = out / f"{name}.csv"
    df.to_csv(path)
    info = {"name": name, "date": _dt.date.today().isoformat(), "versions": versions()}
    info.update(meta or {})
    (out / f"{name}.json").write_text(json.dumps(info, indent=2, default=str))
    return path


def save_figure(fig, name: str, *, out_dir: str | Path = "reports", dpi: int = 120) -> Path:
    """Save a matplotlib Figure as ``figures/<name>.png``."""
    path = reports_dir(out_dir) / "figures" / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def load_tables(out_dir: str | Path = "reports") -> list[tuple[dict, pd.DataFrame]]:
    """Every saved table with its meta, in paper-table order."""
    tables = []
    for meta_path in sorted((Path(out_dir) / "tables").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        csv = meta_path.with_suffix(".csv")
        if csv.exists():
            tables.append((meta, pd.read_csv(csv, index_col=0)))
    return sorted(tables, key=lambda t: (str(t[0].get("paper_table", "~")), t[0]["name"]))


def _fmt(row: pd.Series, metric: str) -> str:
    value = row.get(metric)
    if value is None or pd.isna(value):
        return ""
    sd = row.get(f"{metric}_sd")
    return f"{value:.3f} ± {sd:.3f}" if sd is not None and not pd.isna(sd) else f"{value:.3f}"


def markdown_table(df: pd.DataFrame, metrics: list[str]) -> str:
    """A GitHub markdown table (rows = methods) with ``mean ± sd`` cells."""
    lines = ["| method | kind | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for method, row in df.iterrows():
        lines.append(f"| {method} | {row.get('kind', '')} | "
                     + " | ".join(_fmt(row, m) for m in metrics) + " |")
    return "\n".join(lines)


def verdicts(df: pd.DataFrame, metrics: list[str]) -> list[str]:
    """Plain sentences: for each baseline, on which metrics our model is above or not."""
    models = df[df["kind"] == "model"]
    baselines = df[df["kind"] == "baseline"]
    out = []
    for mname, mrow in models.iterrows():
        for bname, brow in baselines.iterrows():
            wins = [m for m in metrics if pd.notna(mrow.get(m)) and pd.notna(brow.get(m))
                    and mrow[m] > brow[m]]
            losses = [m for m in metrics if pd.notna(mrow.get(m)) and pd.notna(brow.get(m))
                      and mrow[m] <= brow[m]]
            if not losses:
                out.append(f"{mname} beats the {bname} baseline on every metric shown.")
            elif not wins:
                out.append(f"{mname} does **not** beat the {bname} baseline on any metric shown.")
            else:
                out.append(f"{mname} beats the {bname} baseline on {', '.join(wins)} but "
                           f"**not** on {', '.join(losses)}.")
    return out


READINGS = (
    "**Two readings of \"unseen\".** The paper's text combines the held-out perturbation's "
    "representation with \"the basal state derived from corresponding unperturbed expression "
    "profiles\", which reads as source and target in the same cell line (*within-context*: here "
    "the condition's cells are split into disjoint seeded halves, one read and one scored). The "
    "released code's prediction takes a perturbed cell of line A and a control cell of line B "
    "(*cross-context*), which is what transfer to new cellular contexts means. For sci-Plex we "
    "read the paper's Tables 1-2 as cross-context and show them as the main tables; the "
    "within-context tables answer the other reading. The paper's Replogle tables follow the authors' "
    "split, disjoint halves of the held-out knockdowns' cells (within-context); knockdowns measured in both "
    "lines also allow cross-line transfer, which the paper did not test and we report separately. "
    "Norman's doubles are predicted from their measured singles in the same line. This is our reading of the paper and the code, not "
    "something the paper states.")

# The choices where we had to decide for the paper or differ from it, one sentence each.
DIFFERENCES = [
    "**Where our protocol differs from the paper, or decides where it is silent:**",
    "- Held-out set on the synthetic twins: the k perturbations with the most DEGs against same-line "
    "controls, measured from the data (rule `strongest`), our stand-in for the paper's \"most "
    "effective\" drugs; on the real datasets the paper's published lists.",
    "- DEG ranking: the paper gives the threshold (log2 |fc| >= 1) and the number (top 50) but not the "
    "ranking; we rank the genes that pass by Welch t-score against same-line controls.",
    "- Highly variable genes are chosen on all cells, test cells included, as the released code does "
    "(notebook 04 measures selection without the test cells).",
    "- Loss weights are all 1: the paper sums the terms \"appropriately weighted\" without giving "
    "weights (the released config's are `LossWeights.released()`).",
    "- Cross-context predictions pair each control cell of the target line with a measured cell of the "
    "held-out perturbation in a source line, as the released code's `predict` does, and average the "
    "decoded profiles over the control cells and then over the source lines.",
    "- Baselines beyond the paper's Baseline (source shift, train mean, additive) and the replicate "
    "oracle are ours; the paper reports none of them.",
]


def write_replication(out_dir: str | Path = "reports") -> Path:
    """Generate ``REPLICATION.md`` from the saved tables that mirror a paper table.

    A table's meta key ``findings`` (a list of sentences printed from the numbers by the notebook
    that saved it) is listed first under "What the numbers say".
    """
    out_dir = Path(out_dir)
    tables = [(m, df) for m, df in load_tables(out_dir) if m.get("paper_table")]
    lines = ["# Replication report", "",
             "Generated by `python -m xtcdr replicate` from the tables in `tables/`; do not edit by "
             "hand. Rows of kind `paper` are the numbers printed in the paper (Liu & Jin, AAAI "
             "2025); `model` rows are this repository's XTransferCDR; `baseline` rows use the "
             "same inputs as the model at test time (the model reads the held-out "
             "perturbation's measured response in another context); the `oracle` row is the "
             "observed mean of an independent simulated replicate with 10x the cells of each "
             "condition (synthetic data only), a reference close to the true mean, not a bound. "
             "Model cells are the mean over **training seeds** ± their standard deviation: what "
             "varies is the network's initialisation, pairing order and dropout; the data and the "
             "held-out split stay fixed unless a table says otherwise (its `split` line names the "
             "rule). Baselines and the oracle are deterministic given the split.", "",
             READINGS, "", *DIFFERENCES, ""]
    lines += profile_lines([m for m, _ in tables])
    if not tables:
        lines.append("No paper-table results yet: run the evaluation notebooks first.")
    for meta, df in tables:
        metrics = list(meta.get("metrics") or [c for c in df.columns if c != "kind" and not c.endswith("_sd")])
        lines += [f"## {meta['paper_table']}: {meta.get('title', meta['name'])}", "",
                  f"- dataset: `{meta.get('dataset')}`; profile: `{meta.get('profile')}`; "
                  f"training seeds: {meta.get('seeds')}; protocol: {meta.get('protocol', 'n/a')}; "
                  f"date: {meta.get('date')}",
                  *([f"- split: {meta['split']}"] if meta.get("split") else []),
                  f"- versions: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}",
                  ""]
        if meta.get("note"):
            lines += [meta["note"], ""]
        lines += [markdown_table(df, metrics), ""]
        said = (list(meta.get("findings") or []) + regime_sentences(df, metrics) + verdicts(df, metrics)
                + close_calls(df, metrics)
                + oracle_verdicts(df, metrics))
        if said:
            lines += ["What the numbers say:", ""] + [f"- {s}" for s in said] + [""]
    path = out_dir / "REPLICATION.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# What each profile means, printed at the top of the report so no reader takes a quick CPU run
# for the paper's settings.
PROFILE_NOTES = {
    "quick": "a smaller network and fewer epochs than the paper, for a CPU in minutes; its numbers "
             "show the method and the protocol, not the paper's accuracy",
    "paper": "the paper's settings (1024/512/256/128, latent 128, lr 2e-4, 60 epochs)",
}


def profile_lines(metas: list[dict]) -> list[str]:
    """Header lines naming the profiles and datasets of the tables (empty without tables)."""
    profiles = sorted({str(m.get("profile")) for m in metas if m.get("profile")})
    datasets = sorted({str(m.get("dataset")) for m in metas if m.get("dataset")})
    if not profiles and not datasets:
        return []
    lines = []
    if profiles:
        lines.append("- Profiles: " + "; ".join(
            f"`{p}` ({PROFILE_NOTES[p]})" if p in PROFILE_NOTES else f"`{p}`" for p in profiles) + ".")
    if datasets:
        lines.append("- Datasets: " + ", ".join(f"`{d}`" for d in datasets) + ".")
    return lines + [""]


def close_calls(df: pd.DataFrame, metrics: list[str]) -> list[str]:
    """Comparisons of a model with a baseline whose gap is smaller than the model's sd over seeds."""
    out = []
    for mname, mrow in df[df["kind"] == "model"].iterrows():
        for bname, brow in df[df["kind"] == "baseline"].iterrows():
            close = [m for m in metrics
                     if pd.notna(mrow.get(m)) and pd.notna(brow.get(m)) and pd.notna(mrow.get(f"{m}_sd"))
                     and abs(mrow[m] - brow[m]) < mrow[f"{m}_sd"]]
            if close:
                out.append(f"{mname} vs the {bname} baseline: the gap on {', '.join(close)} is smaller "
                           "than the model's sd over seeds.")
    return out


def oracle_verdicts(df: pd.DataFrame, metrics: list[str]) -> list[str]:
    """One plain sentence per model or baseline row: where it is above or below each oracle.

    The oracle (an independent replicate's observed mean) is a reference, not a bound: the scored
    cells are a finite sample too, so a prediction can land closer to their mean by chance or by
    averaging more cells (the controls), and the words say so for every row that is above it.
    """
    out = []
    for oname, orow in df[df["kind"] == "oracle"].iterrows():
        for name, row in df[df["kind"].isin(["model", "baseline"])].iterrows():
            shown = [m for m in metrics if pd.notna(row.get(m)) and pd.notna(orow.get(m))]
            if not shown:
                continue
            above = [m for m in shown if row[m] > orow[m]]
            below = [m for m in shown if row[m] <= orow[m]]
            if not above:
                gaps = ", ".join(f"{m} {orow[m] - row[m]:.3f}" for m in shown)
                out.append(f"{name} is below the {oname} on every metric shown (gap: {gaps}).")
            else:
                out.append(f"{name} is above the {oname} on {', '.join(above)}"
                           + (f" and below it on {', '.join(below)}" if below else "")
                           + ": the scored cells are a finite sample, so above the oracle means "
                           "closer to this sample's mean, not to the true mean.")
    return out


def regime_sentences(df: pd.DataFrame, metrics: list[str], tolerance: float = 1.25) -> list[str]:
    """Compare our control baseline with the paper's Baseline row on the all-gene R^2 columns.

    The paper's Baseline scores the unperturbed profile; its all-gene R^2 says how far the held-out
    perturbations move expression. Ours beside it says whether our held-out set is in that regime.
    The comparison is on what control leaves unexplained, 1 - R^2, as a ratio (ours / the paper's):
    near 1 R^2 an absolute gap misleads (0.92 against 0.84 is half the distance from control).
    Within a factor ``tolerance`` either way the sentence says "about as far", otherwise "less far"
    or "further".
    """
    if "paper: Baseline" not in df.index or "control" not in df.index:
        return []
    out = []
    for m in metrics:
        if "r2_all" not in m or m.endswith("_delta"):
            continue
        paper, ours = df.loc["paper: Baseline", m], df.loc["control", m]
        if pd.isna(paper) or pd.isna(ours) or paper >= 1:
            continue
        ratio = (1 - ours) / (1 - paper)
        word = ("about as far from control as the paper's" if 1 / tolerance <= ratio <= tolerance else
                "less far from control than the paper's" if ratio < 1 else
                "further from control than the paper's")
        out.append(f"Regime ({m}): our control baseline scores {ours:.3f} against the paper's "
                   f"Baseline {paper:.3f}; what control leaves unexplained (1 - R^2) is {ratio:.2f} "
                   f"times the paper's, so our held-out perturbations move expression {word}.")
    return out


def summary_values(results: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Across-condition summaries of an ``evaluate_transfer`` table, named as table columns.

    ``median_<metric>`` is the median of ``<metric>`` over conditions, ``mean_<metric>`` and a
    plain ``<metric>`` its mean (both ignore NaN), e.g. ``["mean_r2_all", "median_r2_deg"]``.
    """
    out = {}
    for column in columns:
        for prefix, stat in (("median_", "median"), ("mean_", "mean"), ("", "mean")):
            if column.startswith(prefix) and column[len(prefix):] in results.columns:
                values = results[column[len(prefix):]].astype(float)
                out[column] = float(values.median() if stat == "median" else values.mean())
                break
        else:
            raise KeyError(f"column {column!r} names no metric of the results; use <metric>, "
                           f"mean_<metric> or median_<metric> with a metric in {list(results.columns)}")
    return out


def method_table(rows: list[tuple[str, str, object]], metrics: list[str]) -> pd.DataFrame:
    """Build a paper-style table (see the module docstring) from ``(method, kind, values)`` rows.

    ``values`` is a dict metric -> number (one run, or numbers printed in the paper; missing
    metrics stay empty) or a list of such dicts, one per seed: the cell is then their mean and
    ``<metric>_sd`` their standard deviation (ddof 1; empty for a single seed).
    """
    kinds = ("paper", "model", "baseline", "oracle")
    records, index = [], []
    for method, kind, values in rows:
        if kind not in kinds:
            raise ValueError(f"row {method!r}: kind must be one of {list(kinds)}, got {kind!r}")
        record = {"kind": kind}
        if isinstance(values, (list, tuple)):
            runs = pd.DataFrame(list(values)).reindex(columns=metrics).astype(float)
            for m in metrics:
                record[m] = float(runs[m].mean())
                record[f"{m}_sd"] = float(runs[m].std(ddof=1)) if len(runs) > 1 else float("nan")
        else:
            record.update({m: float(values[m]) if m in values and values[m] is not None else float("nan")
                           for m in metrics})
        records.append(record)
        index.append(method)
    table = pd.DataFrame(records, index=pd.Index(index, name="method"))
    sd_columns = [f"{m}_sd" for m in metrics if f"{m}_sd" in table.columns]
    return table[["kind", *metrics, *sd_columns]]


__all__ += ["summary_values", "method_table"]


def wrap(*paragraphs: str, width: int = 100) -> str:
    """Paragraphs for ``print`` in a notebook, broken between words at ``width`` characters.

    JupyterLab breaks a long output line wherever the cell ends, often mid-word. A paragraph that
    starts with ``"* "`` or ``"- "`` keeps its bullet and indents its continuation lines.
    """
    import textwrap

    lines = []
    for text in paragraphs:
        indent = "  " if text[:2] in ("* ", "- ") else ""
        lines.append(textwrap.fill(text, width=width, subsequent_indent=indent,
                                   break_long_words=False, break_on_hyphens=False))
    return "\n".join(lines)


__all__ += ["wrap"]
