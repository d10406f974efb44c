"""Command line: ``python -m xtcdr replicate | train-grid | store``.

``replicate [--profile quick|paper] [--dataset NAME] [--out reports]`` first trains every model
the notebooks need with the training grid (`xtcdr.grid`, all cores), then runs every notebook
that exists in ``notebooks/`` with papermill (executed copies go to ``<out>/notebooks/``, never
over the sources), passing the parameters of each run; the notebooks load the grid's checkpoints.
Then it writes ``<out>/REPLICATION.md`` from the saved tables. A failing notebook stops the run
with its name and the failing cell's error.

``train-grid`` runs (or with ``--dry-run`` prints) the grid alone, locally or on SLURM.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .runs import DATASET_NOTEBOOKS, KERNELSPEC, NOTEBOOK_DIR, NOTEBOOK_ORDER, PLANS, plan  # noqa: F401


def replicate(profile: str = "quick", dataset: str | None = None, out: str = "reports",
              only: list[str] | None = None, worlds: int | None = None, grid: bool = True,
              workers: int | None = None) -> int:
    from .datasets import names
    from .report import write_replication

    if profile not in PLANS:
        print(f"unknown profile {profile!r}; valid: {sorted(PLANS)}", file=sys.stderr)
        return 2
    if dataset is not None and dataset not in names():
        print(f"unknown dataset {dataset!r}; valid: {names()}", file=sys.stderr)
        return 2
    out_dir = Path(out).resolve()
    if only is None:  # a full run replaces the whole report: no table of an earlier run survives
        import shutil

        for sub in ("tables", "figures", "notebooks"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    runs = plan(profile, dataset, only, worlds)
    if not runs:
        print(f"no notebooks to run in {NOTEBOOK_DIR}", file=sys.stderr)
        return 2
    if grid:
        code = train_grid(profile, dataset, only, worlds, workers=workers)
        if code:
            return code
    from .runs import SOLUTION_DIR, notebook_jobs, run_notebooks, solution_jobs

    (out_dir / "notebooks" / "solutions").mkdir(parents=True, exist_ok=True)
    for jobs, folder, what in ((notebook_jobs(runs, out_dir), NOTEBOOK_DIR, "notebook"),
                               (solution_jobs(runs, out_dir), SOLUTION_DIR, "solutions")):
        failed = run_notebooks(jobs, workers, folder)
        if failed:
            stem, name, target, err = failed
            print(f"[replicate] FAILED: {what} {stem} (run {name}), {err}\n"
                  f"  executed copy with the traceback: {target}", file=sys.stderr)
            return 1
    path = write_replication(out_dir)
    print(f"[replicate] wrote {path}")
    return 0


def train_grid(profile: str = "quick", dataset: str | None = None, only: list[str] | None = None,
               worlds: int | None = None, *, dry_run: bool = False, executor: str = "local",
               workers: int | None = None, slurm: dict | None = None) -> int:
    """Plan the trainings of a replication and run those not cached yet (`xtcdr.grid`)."""
    from . import grid

    t0 = time.perf_counter()
    trainings = grid.plan(profile, only, worlds, dataset)
    rows = grid.status(trainings)
    cached = sum(r["state"] == "cached" for r in rows)
    print(f"[train-grid] {len(trainings)} trainings planned ({profile} profile), {cached} cached, "
          f"{sum(r['state'] == 'partial' for r in rows)} interrupted (resumed), "
          f"{sum(r['state'] == 'new' for r in rows)} new; planned in {time.perf_counter() - t0:.0f} s",
          flush=True)
    if dry_run:
        for r in rows:
            t = r["training"]
            print(f"  {r['state']:>7}  {t.label():<60} {r['folder'].name}  [{', '.join(n[:2] for n in t.notebooks)}]")
        return 0
    result = grid.run(trainings, executor=executor, workers=workers, slurm=slurm)
    print(f"[train-grid] {result.summary()}", flush=True)
    for failure in result.failed:
        print(f"[train-grid] FAILED: {failure['label']}: {failure.get('error')}\n  log: {failure.get('log')}",
              file=sys.stderr)
    return 1 if result.failed else 0


def store(paths: list[str]) -> int:
    """Execute notebooks (quick profile) and store them in place with only the checked outputs.

    Cells marked ``# NBVAL_CHECK_OUTPUT`` keep their outputs and execution counts, so that
    ``pytest --nbval-lax`` compares them; every other output is cleared to keep the sources
    small and diff-friendly (the executed copies with figures live in ``reports/notebooks/``).
    The kernelspec is set to ``KERNELSPEC``, the one JupyterLab writes on open.
    """
    import os
    import tempfile

    import nbformat
    import papermill as pm

    for path in map(Path, paths):
        with tempfile.TemporaryDirectory() as tmp:
            executed = Path(tmp) / path.name
            env = {"XTCDR_PROFILE": "quick", "XTCDR_OUT": str(Path(tmp) / "reports")}
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                pm.execute_notebook(str(path), str(executed), cwd=str(path.parent.resolve()),
                                    kernel_name="python3", progress_bar=False)
            except pm.PapermillExecutionError as err:
                print(f"FAILED: {path}, cell {err.cell_index}: {err.ename}: {err.evalue}",
                      file=sys.stderr)
                return 1
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            nb = nbformat.read(executed, as_version=4)
        nb.metadata.pop("papermill", None)
        nb.metadata.pop("widgets", None)  # state of widgets (progress bars) whose outputs are cleared
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        count = 0
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            if cell.cell_type != "code":
                continue
            if "NBVAL_CHECK_OUTPUT" in cell.source:
                count += 1
                cell.execution_count = count
            else:
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, path)
        print(f"stored {path} ({count} checked cells)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtcdr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("replicate", help="run the notebooks with papermill and write reports/")
    rep.add_argument("--profile", default="quick", choices=sorted(PLANS),
                     help="quick: CPU minutes on the synthetic twins; paper: the paper's settings "
                          "on the real datasets (GPU)")
    rep.add_argument("--dataset", default=None,
                     help=f"dataset for notebooks {', '.join(s[:2] for s in DATASET_NOTEBOOKS)}")
    rep.add_argument("--out", default="reports", help="output folder (default: reports)")
    rep.add_argument("--notebooks", default=None,
                     help="comma-separated notebook prefixes to run, e.g. 01,04 (default: all)")
    rep.add_argument("--worlds", "--seeds", dest="worlds", type=int, default=None,
                     help="number of worlds (a twin drawn with seed s, its held-out set, training seed s; "
                          "on real data a fold): every notebook's n_worlds (default 3)")
    rep.add_argument("--report-only", action="store_true",
                     help="only regenerate REPLICATION.md from the saved tables")
    rep.add_argument("--no-grid", action="store_true",
                     help="skip the training grid (each notebook trains what it needs, one at a time)")
    rep.add_argument("--workers", type=int, default=None,
                     help="worker processes of the training grid (default: one per core)")
    tg = sub.add_parser("train-grid", help="train every model a replication needs, side by side "
                                           "here or as a SLURM job array (xtcdr.grid)")
    tg.add_argument("--profile", default="quick", choices=sorted(PLANS))
    tg.add_argument("--dataset", default=None)
    tg.add_argument("--notebooks", default=None, help="comma-separated notebook prefixes, e.g. 04,07")
    tg.add_argument("--worlds", "--seeds", dest="worlds", type=int, default=None,
                    help="number of worlds (every notebook's n_worlds)")
    tg.add_argument("--dry-run", action="store_true", help="print the plan and what is cached; train nothing")
    tg.add_argument("--executor", default="local", choices=["local", "submitit-local", "slurm"],
                    help="local worker processes, submitit's local executor, or a SLURM job array")
    tg.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per core)")
    tg.add_argument("--partition", default=None, help="SLURM partition")
    tg.add_argument("--gpus-per-task", type=int, default=None, help="GPUs per SLURM task")
    tg.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per SLURM task")
    tg.add_argument("--max-parallel", type=int, default=None,
                    help="at most this many array tasks at once (slurm_array_parallelism)")
    tg.add_argument("--timeout-min", type=int, default=None, help="time limit of each task in minutes")
    st = sub.add_parser("store", help="execute notebooks and store them keeping only the "
                                      "outputs of NBVAL_CHECK_OUTPUT cells (for maintainers)")
    st.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "store":
        return store(args.paths)
    if args.command == "train-grid":
        slurm = {k: v for k, v in (("slurm_partition", args.partition), ("slurm_gpus_per_task", args.gpus_per_task),
                                   ("cpus_per_task", args.cpus_per_task), ("timeout_min", args.timeout_min),
                                   ("slurm_array_parallelism", args.max_parallel)) if v is not None}
        only = args.notebooks.split(",") if args.notebooks else None
        return train_grid(args.profile, args.dataset, only, args.worlds, dry_run=args.dry_run,
                          executor=args.executor, workers=args.workers, slurm=slurm)
    if args.report_only:
        from .report import write_replication
        print(write_replication(Path(args.out)))
        return 0
    only = args.notebooks.split(",") if args.notebooks else None
    return replicate(args.profile, args.dataset, args.out, only, args.worlds, grid=not args.no_grid,
                     workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
