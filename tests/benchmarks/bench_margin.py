"""The equivalence margin of the verdicts, measured on development worlds.

A verdict calls two methods *equivalent* when the 95% interval of their difference lies inside
+-delta (`xtcdr.verdicts`). delta is the noise floor of the metric itself: how far even the
**replicate oracle** (the true condition means up to sampling noise: an independent replicate of
the same world with 10x the cells, `xtcdr.baselines.ReplicateOracle`) falls short of a perfect
score against the measured cells. A difference between two methods smaller than the distance by
which knowing the answer misses the measurement is not one to act on.

It is measured on the development worlds (`bench_convergence.DEV_WORLDS`: twin draws no report
uses), with each twin's table protocol (cross-context for the drug twins, within-context for the
knockdown twin, doubles from singles for the combination twin); no model is trained or scored.
delta = the median over twins and worlds of ``1 - oracle`` on the mean R^2 over DEGs (rounded
up to 0.01), used for the R^2 / EV / Pearson metrics. Output: ``reports/benchmarks/margin_dev.json``.
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_convergence import DEV_WORLDS  # noqa: E402
from xtcdr import baselines, evaluate, pipeline  # noqa: E402

PROTOCOL = {"synthetic_drugs": "cross", "synthetic_drugs4": "cross", "synthetic_genes": "within",
            "synthetic_combo": "combination"}
METRICS = ("r2_deg", "r2_all", "r2_deg_delta", "pcc_deg", "pcc_deg_delta")


def main() -> int:
    data_dir = REPO / "data" / "benchmarks" / "convergence"
    rows = []
    for dataset, protocol in PROTOCOL.items():
        for world in DEV_WORLDS:
            adata = pipeline.prepare(dataset, seed=world, data_dir=data_dir, verbose=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                tasks = evaluate.transfer_tasks(adata, split="test", protocol=protocol, seed=world)
            oracle = baselines.ReplicateOracle.from_synthetic(dataset, adata).fit(adata)
            scores = evaluate.evaluate_transfer(oracle, adata, tasks=tasks)
            row = {"dataset": dataset, "world": world, "protocol": protocol, "n_conditions": len(tasks)}
            row.update({f"shortfall_{m}": float(1 - scores[m].mean()) for m in METRICS})
            rows.append(row)
            print(json.dumps(row), flush=True)
    shortfall = np.array([r["shortfall_r2_deg"] for r in rows])
    delta = math.ceil(float(np.median(shortfall)) * 100) / 100
    out = {"dev_worlds": list(DEV_WORLDS), "rows": rows,
           "median_shortfall_r2_deg": float(np.median(shortfall)),
           "range_shortfall_r2_deg": [float(shortfall.min()), float(shortfall.max())],
           "margin": delta,
           "rule": "median over twins and development worlds of 1 - the replicate oracle's mean R^2 on DEGs, "
                   "rounded up to 0.01"}
    path = REPO / "reports" / "benchmarks" / "margin_dev.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"margin = {delta} (median shortfall {np.median(shortfall):.4f}, range {shortfall.min():.4f}-"
          f"{shortfall.max():.4f}); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
