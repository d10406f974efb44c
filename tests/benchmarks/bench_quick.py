"""Quick-profile training time of each synthetic twin on this CPU, to convergence (``make bench``).

For each twin: ``pipeline.prepare`` then ``pipeline.train_or_load`` with ``profile="quick"``
into a fresh temporary cache (nothing reused), timed separately; one training at a time, with the
training's fixed thread count (`xtcdr.train.TRAIN_THREADS`). Reported: optimizer steps, why
training stopped, seconds per step. Target: each training < 120 s on one core. Numbers go to
``reports/benchmarks/quick.json``.
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
            info = history.attrs["training"]
            row = {"cells": adata.n_obs, "genes": adata.n_vars, "steps": info["steps"],
                   "epochs": round(info["epochs"], 1), "stop_reason": info["stop_reason"],
                   "prepare_seconds": round(t1 - t0, 1), "train_seconds": round(t2 - t1, 1),
                   "ms_per_step": round(1000 * (t2 - t1) / max(1, info["steps"]), 1),
                   "meets_target": (t2 - t1) < TARGET_S}
            results["twins"][name] = row
            print(f"{name:16s} {row['cells']:6d} cells x {row['genes']} genes  prepare "
                  f"{row['prepare_seconds']:5.1f} s  train {row['train_seconds']:5.1f} s "
                  f"({row['steps']} steps, {row['ms_per_step']} ms/step incl. validation, {row['stop_reason']})  "
                  f"{'PASS' if row['meets_target'] else 'MISS'} (< {TARGET_S:.0f} s)", flush=True)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
