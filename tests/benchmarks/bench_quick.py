"""Quick-profile training time of each synthetic twin on this CPU (run by ``make bench``).

For each twin: ``pipeline.prepare`` then ``pipeline.train_or_load`` with ``profile="quick"``
into a fresh temporary cache (nothing reused), timed separately. Target (issue: "the quick
profile trains each synthetic twin on 2 CPU cores in under 2 minutes"): training < 120 s.
Numbers go to ``reports/benchmarks/quick.json``.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from xtcdr import pipeline
from xtcdr.synthetic import TWINS

OUT_JSON = Path(__file__).resolve().parents[2] / "reports" / "benchmarks" / "quick.json"
TARGET_S = 120.0


def main() -> dict:
    results = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "platform": platform.platform(), "torch": torch.__version__},
               "target_train_seconds": TARGET_S, "twins": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in TWINS:
            t0 = time.perf_counter()
            adata = pipeline.prepare(name, profile="quick", data_dir=tmp, verbose=False)
            t1 = time.perf_counter()
            _, history = pipeline.train_or_load(adata, profile="quick", data_dir=tmp,
                                                progress=False, verbose=False)
            t2 = time.perf_counter()
            row = {"cells": adata.n_obs, "genes": adata.n_vars, "epochs": len(history),
                   "pairs_per_epoch": int(history["n_pairs"].iloc[-1]),
                   "prepare_seconds": round(t1 - t0, 1), "train_seconds": round(t2 - t1, 1),
                   "final_valid_r2_deg": round(float(history.get("valid_r2_deg", [float("nan")]).iloc[-1]), 3),
                   "meets_target": (t2 - t1) < TARGET_S}
            results["twins"][name] = row
            print(f"{name:16s} {row['cells']:6d} cells x {row['genes']} genes  prepare "
                  f"{row['prepare_seconds']:5.1f} s  train {row['train_seconds']:5.1f} s "
                  f"({row['epochs']} epochs x {row['pairs_per_epoch']} pairs)  "
                  f"{'PASS' if row['meets_target'] else 'MISS'} (< {TARGET_S:.0f} s)", flush=True)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
