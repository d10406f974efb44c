"""Batch size of the quick profile, chosen on development worlds from validation signals only.

Trains the quick profile at each batch size on development worlds (twin draws with seeds that no
report uses), transfer-selected, everything else equal, and writes the time, the step count and the
best validation values to ``reports/benchmarks/batch_dev.json``::

    python tests/benchmarks/bench_batch.py                       # the three runs of the README
    python tests/benchmarks/bench_batch.py --batch-sizes 128 64 32 --runs synthetic_drugs:100

No test score is read. Each pair runs side by side (two processes), as in the training grid.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("synthetic_drugs:100", "synthetic_drugs4:101", "synthetic_genes:100")


def one(dataset: str, world: int, batch_size: int) -> dict:
    from dataclasses import replace

    from xtcdr import pipeline
    from xtcdr.config import get_profile

    prof = get_profile("quick")
    adata = pipeline.prepare(dataset, profile=prof, seed=world, verbose=False)
    start = time.perf_counter()
    _, history = pipeline.train_or_load(adata, profile=prof, seed=world, select="transfer", verbose=False,
                                        progress=False, train_config=replace(prof.train, batch_size=batch_size))
    info = history.attrs.get("training", {})
    return {"dataset": dataset, "world": world, "batch_size": batch_size,
            "seconds": round(time.perf_counter() - start, 1), "steps": info.get("steps"),
            "stop_reason": info.get("stop_reason"),
            "min_valid_total": round(float(history["valid_total"].min()), 4),
            "min_transfer_loss_smoothed": round(float(history["transfer_loss_smoothed"].min()), 4),
            "max_valid_r2_deg": round(float(history["valid_r2_deg"].max()), 4)}


def main() -> None:
    from bench_convergence import DEV_WORLDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help="dataset:world (development worlds only)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "batch_dev.json"))
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as data:  # fresh checkpoints: every run trains
        for run in args.runs:
            dataset, world = run.split(":")
            if int(world) not in DEV_WORLDS:
                raise SystemExit(f"world {world} is not a development world {DEV_WORLDS}: benchmarks choose settings "
                                 "on worlds no report uses")
            procs = [subprocess.Popen([sys.executable, __file__, "--one", dataset, world, str(b)],
                                      stdout=subprocess.PIPE, text=True, env={**os.environ, "XTCDR_DATA": data})
                     for b in args.batch_sizes]
            for p in procs:
                row = json.loads(p.communicate()[0].strip().splitlines()[-1])
                rows.append(row)
                print(row, flush=True)
    out = {"what": "quick profile at each batch size on development worlds (seeds no report uses), "
                   "transfer-selected, everything else the quick profile; validation signals only",
           "script": "tests/benchmarks/bench_batch.py", "runs": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"[batch] wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
