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
           "reports_dir"]


def reports_dir(out_dir: str | Path = "reports") -> Path:
    """``out_dir`` (environment ``XTCDR_OUT`` wins), with ``tables/`` and ``figures/`` created."""
    out = Path(os.environ.get("XTCDR_OUT") or out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    return out


def versions() -> dict[str, str]:
    """Versions of the packages that produce the numbers."""
    import anndata
    import numpy
    import scanpy
    import sklearn
    import torch

    from . import __version__
    return {"xtcdr": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scanpy": scanpy.__version__,
            "anndata": anndata.__version__, "scikit-learn": sklearn.__version__}


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


def write_replication(out_dir: str | Path = "reports") -> Path:
    """Generate ``REPLICATION.md`` from the saved tables that mirror a paper table."""
    out_dir = Path(out_dir)
    tables = [(m, df) for m, df in load_tables(out_dir) if m.get("paper_table")]
    lines = ["# Replication report", "",
             "Generated by `python -m xtcdr replicate` from the tables in `tables/`; do not edit by "
             "hand. Rows of kind `paper` are the numbers printed in the paper (Liu & Jin, AAAI "
             "2025); `model` rows are this repository's XTransferCDR; `baseline` rows use the "
             "same inputs as the model at test time (REFERENCE: the model reads the held-out "
             "perturbation's measured response in another context). Cells are the mean over "
             "seeds ± their standard deviation.", ""]
    if not tables:
        lines.append("No paper-table results yet: run the evaluation notebooks first.")
    for meta, df in tables:
        metrics = list(meta.get("metrics") or [c for c in df.columns if c != "kind" and not c.endswith("_sd")])
        lines += [f"## {meta['paper_table']}: {meta.get('title', meta['name'])}", "",
                  f"- dataset: `{meta.get('dataset')}`; profile: `{meta.get('profile')}`; "
                  f"seeds: {meta.get('seeds')}; protocol: {meta.get('protocol', 'n/a')}; "
                  f"date: {meta.get('date')}",
                  f"- versions: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}",
                  ""]
        if meta.get("note"):
            lines += [meta["note"], ""]
        lines += [markdown_table(df, metrics), ""]
        said = verdicts(df, metrics)
        if said:
            lines += ["What the numbers say:", ""] + [f"- {s}" for s in said] + [""]
    path = out_dir / "REPLICATION.md"
    path.write_text("\n".join(lines) + "\n")
    return path
