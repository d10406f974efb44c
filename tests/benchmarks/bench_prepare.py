"""Speed and memory of the data preparation at sci-Plex3 scale (``make bench``).

What is measured: the work ``xtcdr.pipeline.prepare`` does after loading a dataset, i.e.
``preprocess(raw, n_top_genes=2000, n_degs=50)`` (normalise + log1p, highly variable genes,
top-50 DEGs of every condition against its controls) followed by ``assign_split``.

The data: a synthetic drug screen from ``xtcdr.synthetic.simulate_config`` with sci-Plex3's
shape (3 cell lines x 187 drugs at about 190 cells each, plus 1,000 controls per line, 4,000
genes: about 110,000 cells and 564 conditions). Generating it is *not* timed; it is written
once, as a sparse count matrix like the scPerturb files, to ``data/benchmarks/`` and reused.

How: the timed part runs in a fresh child process (``python bench_prepare.py --child FILE``)
that reads the file, then times preprocess and assign_split with ``time.perf_counter``.
Peak memory is the child's peak resident set size, ``VmHWM`` of ``/proc/self/status`` read by
the child when it is done (Linux; elsewhere ``getrusage(RUSAGE_SELF).ru_maxrss``). It includes
the interpreter, the imported libraries and the loaded raw counts (which ``prepare`` holds as
well); the child also reports its peak right after loading, so the increase due to the
preparation itself is visible. Why not the parent's ``getrusage(RUSAGE_CHILDREN).ru_maxrss``:
on Linux ``ru_maxrss`` survives ``fork`` + ``exec``, so a child inherits the resident size of
its parent at the time of the fork and the number can belong to the parent (the simulation
of the data, for instance). It is reported beside as ``ru_maxrss_children_gb``, an upper bound
(the maximum over every child of this run, the simulation included when it ran);
the simulation runs in a child of its own so that the parent stays small.

Targets (on a 2-core machine): under 3 minutes and under 6 GB. The numbers are printed and
written to ``reports/benchmarks/prepare.json``. ``--profile`` prints the 25 most expensive
calls of the timed part (cProfile, cumulative time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# sci-Plex3 at 10 uM: 3 cell lines, 187 drugs + vehicle, ~110,000 cells
SCALE = dict(kind="drug", n_cell_types=3, n_singles=187, cells_per_condition=190,
             controls_per_cell_type=1000, n_genes=4000)
N_TOP_GENES = 2000
N_DEGS = 50
TARGET_SECONDS = 180.0
TARGET_GB = 6.0


def _gb(kilobytes: float) -> float:
    """ru_maxrss is in kilobytes on Linux (bytes on macOS)."""
    factor = 1 if sys.platform == "darwin" else 1024
    return kilobytes * factor / 1e9


def peak_rss_gb() -> float:
    """Peak resident set of this process: VmHWM (Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return _gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def dataset_path(seed: int = 0) -> Path:
    from xtcdr.config import config_hash
    return REPO / "data" / "benchmarks" / f"sciplex3_scale_seed{seed}_{config_hash(SCALE)}.h5ad"


def generate(path: Path, seed: int = 0) -> None:
    """Simulate the sci-Plex3-scale dataset and write it with sparse counts (not timed)."""
    import scipy.sparse as sp

    from xtcdr.synthetic import SimulationConfig, simulate_config

    t0 = time.perf_counter()
    adata = simulate_config(SimulationConfig(**SCALE), seed=seed)
    adata.X = sp.csr_matrix(adata.X)
    del adata.obsm["true_basal"], adata.obsm["true_effect"]
    adata.uns.pop("truth")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    adata.write_h5ad(tmp)
    os.replace(tmp, path)
    print(f"generated {adata.n_obs:,} cells x {adata.n_vars:,} genes in "
          f"{time.perf_counter() - t0:.0f} s -> {path.relative_to(REPO)}", flush=True)


def child(path: str, profile: bool) -> None:
    """The measured process: load, then time preprocess + assign_split; print JSON."""
    import anndata as ad

    from xtcdr.pairing import assign_split
    from xtcdr.preprocess import preprocess

    raw = ad.read_h5ad(path)
    rss_loaded = peak_rss_gb()

    def work():
        t0 = time.perf_counter()
        adata = preprocess(raw, n_top_genes=N_TOP_GENES, n_degs=N_DEGS)
        t1 = time.perf_counter()
        assign_split(adata, seed=0)
        t2 = time.perf_counter()
        return adata, t1 - t0, t2 - t1

    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        adata, s_pre, s_split = prof.runcall(work)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(25)
        print(text.getvalue(), file=sys.stderr)
    else:
        adata, s_pre, s_split = work()
    print(json.dumps({
        "n_cells": int(raw.n_obs), "n_genes_in": int(raw.n_vars),
        "n_conditions": int(raw.obs["condition"].nunique()),
        "n_genes_out": int(adata.n_vars), "n_deg_conditions": len(adata.uns["top_degs"]),
        "seconds_preprocess": round(s_pre, 2), "seconds_split": round(s_split, 2),
        "seconds_total": round(s_pre + s_split, 2), "rss_after_load_gb": round(rss_loaded, 3),
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--generate", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the timed part")
    parser.add_argument("--regenerate", action="store_true", help="simulate the dataset again")
    parser.add_argument("--out", default=str(REPO / "reports" / "benchmarks" / "prepare.json"))
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.profile)
        return 0
    if args.generate:
        generate(Path(args.generate))
        return 0

    path = dataset_path()
    if args.regenerate or not path.exists():
        subprocess.run([sys.executable, __file__, "--generate", str(path)], check=True)
    else:
        print(f"using cached {path.relative_to(REPO)}", flush=True)

    cmd = [sys.executable, __file__, "--child", str(path)] + (["--profile"] if args.profile else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if args.profile:
        print(proc.stderr)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        print(f"benchmark child failed with exit code {proc.returncode}", file=sys.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = result["peak_rss_gb"]
    result.update(
        peak_rss_method="VmHWM (peak resident set) of a child process that loads the counts and "
                        "runs preprocess + assign_split",
        ru_maxrss_children_gb=round(_gb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), 3),
        child_wall_seconds_including_load=round(wall, 1),
        target_seconds=TARGET_SECONDS, target_gb=TARGET_GB,
        meets_time_target=result["seconds_total"] < TARGET_SECONDS,
        meets_memory_target=peak < TARGET_GB,
        scale=SCALE, n_top_genes=N_TOP_GENES, n_degs=N_DEGS,
        machine={"cpus": os.cpu_count(), "platform": platform.platform(),
                 "python": platform.python_version()},
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    def verdict(ok):
        return "OK" if ok else "MISSED"

    print(f"prepare at sci-Plex3 scale: {result['n_cells']:,} cells x {result['n_genes_in']:,} genes, "
          f"{result['n_conditions']} conditions -> {result['n_genes_out']} genes kept")
    print(f"  time   preprocess {result['seconds_preprocess']:.1f} s + split "
          f"{result['seconds_split']:.1f} s = {result['seconds_total']:.1f} s "
          f"(target < {TARGET_SECONDS:.0f} s: {verdict(result['meets_time_target'])})")
    print(f"  memory peak RSS {peak:.2f} GB ({result['rss_after_load_gb']:.2f} GB right after loading "
          f"the counts; target < {TARGET_GB:.0f} GB: {verdict(result['meets_memory_target'])})")
    print(f"  written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
