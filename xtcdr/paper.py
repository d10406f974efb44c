"""The numbers the paper prints (Liu & Jin, AAAI 2025, Tables 1-5), read by every table and the report.

The paper's "Baseline" row scores the unperturbed profile (our ``control`` baseline). Each entry
names the dataset the numbers were measured on and the columns in the paper's order; the column
names are those of `xtcdr.report.summary_values` (``mean_r2_all`` is the mean over conditions of
``r2_all``, ``median_`` the median, a plain name the mean).
"""
from __future__ import annotations

__all__ = ["PAPER", "paper_rows", "paper_columns"]

_SIX = ["r2_all", "r2_deg", "ev_all", "ev_deg", "pcc_all", "pcc_deg"]
PAPER: dict[str, dict] = {
    "Table 1": {"dataset": "sci-Plex3",
                "columns": ["mean_r2_all", "mean_r2_deg", "median_r2_all", "median_r2_deg"],
                "rows": {"Baseline": [.50, .29, .49, .12], "chemCPA": [.51, .32, .47, .24],
                         "chemCPA+pretraining": [.68, .54, .75, .64], "cycleCDR": [.72, .55, .80, .69],
                         "XTransferCDR": [.81, .62, .90, .72]}},
    "Table 2": {"dataset": "sci-Plex4", "columns": _SIX,
                "rows": {"Baseline": [.432, .166, .435, .168, .348, .189],
                         "cycleCDR": [.620, .629, .637, .750, .827, .894],
                         "XTransferCDR": [.861, .806, .865, .822, .932, .911]}},
    "Table 3 K562": {"dataset": "Replogle K562", "columns": ["r2_all", "r2_deg", "ev_all", "ev_deg"],
                     "rows": {"Baseline": [.84, .10, .84, .19], "GEARS": [.86, .29, .86, .32],
                              "cycleCDR": [.88, .37, .88, .40], "XTransferCDR": [.90, .68, .90, .72]}},
    "Table 3 RPE-1": {"dataset": "Replogle RPE-1", "columns": ["r2_all", "r2_deg", "ev_all", "ev_deg"],
                      "rows": {"Baseline": [.72, .00, .72, .11], "GEARS": [.80, .27, .81, .30],
                               "cycleCDR": [.82, .45, .82, .46], "XTransferCDR": [.86, .78, .86, .80]}},
    "Table 4": {"dataset": "Norman 2019", "columns": _SIX,
                "rows": {"Baseline": [.852, .166, .859, .398, .927, .711],
                         "XTransferCDR": [.964, .837, .965, .877, .983, .877]}},
    "Table 5": {"dataset": "sci-Plex3", "columns": _SIX,
                "rows": {"without L_cross": [.660, .183, .663, .270, .814, .575],
                         "without L_orth": [.724, .521, .729, .677, .850, .823],
                         "without L_sim": [.752, .521, .755, .615, .857, .782],
                         "all terms": [.817, .626, .819, .717, .905, .861]}},
}


def paper_rows(paper_table: str, columns: list[str] | None = None) -> list[tuple[str, str, dict]]:
    """The paper's rows of ``paper_table`` as ``(f"paper: {name}", "paper", {column: value})``."""
    if paper_table not in PAPER:
        raise ValueError(f"unknown paper table {paper_table!r}; valid: {list(PAPER)}")
    entry = PAPER[paper_table]
    keep = columns or entry["columns"]
    return [(f"paper: {name}", "paper", {c: v for c, v in zip(entry["columns"], values) if c in keep})
            for name, values in entry["rows"].items()]


def paper_columns(paper_table: str, delta: str = "r2_deg_delta") -> list[str]:
    """The paper table's columns plus one delta metric (named like the table's columns)."""
    columns = list(PAPER[paper_table]["columns"])
    prefix = "mean_" if columns[0].startswith("mean_") else ""
    return columns + [prefix + delta]
