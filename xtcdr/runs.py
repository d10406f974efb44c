"""The runs of a replication: which notebooks run with which parameters, and running them.

`PLANS` lists, per profile, the notebooks `python -m xtcdr replicate` runs and the parameters it
passes (each task's notebook on its own dataset); `plan` resolves them for one call (a dataset
override, a subset of notebooks, a number of worlds). `run_notebooks` executes them with papermill,
side by side in worker processes. The training grid (`xtcdr.grid`) reads the same plan to list the
trainings the notebooks will need, and the command line (`xtcdr.__main__`) drives both.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["NOTEBOOK_DIR", "SOLUTION_DIR", "PLANS", "KERNELSPEC", "DATASET_NOTEBOOKS", "NOTEBOOK_ORDER", "plan",
           "notebook_jobs", "solution_jobs", "run_notebooks", "AFTER"]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SOLUTION_DIR = NOTEBOOK_DIR / "solutions"

# (notebook stem, parameters) per profile. Each task's notebook runs on its own dataset.
PLANS: dict[str, list[tuple[str, dict]]] = {
    "quick": [
        ("01_data_and_pairing", {"dataset": "synthetic_drugs"}),
        ("02_model_and_losses", {}),
        ("03_training", {"dataset": "synthetic_drugs"}),
        ("04_sciplex_evaluation", {"dataset": "synthetic_drugs"}),
        # what training alone varies and the gene selection are measured once, on synthetic_drugs
        ("04_sciplex_evaluation", {"dataset": "synthetic_drugs4", "compare_gene_selection": False,
                                   "training_seeds": 0}),
        ("05_genetic_perturbation", {"dataset": "synthetic_genes"}),
        ("06_combinatorial", {"dataset": "synthetic_combo"}),
        ("07_ablations", {"dataset": "synthetic_drugs"}),
        ("08_transfer_across_contexts", {}),
        ("09_real_cells", {}),
    ],
    "paper": [
        ("01_data_and_pairing", {"dataset": "sciplex3"}),
        ("02_model_and_losses", {}),
        ("03_training", {"dataset": "sciplex3"}),
        ("04_sciplex_evaluation", {"dataset": "sciplex3"}),
        ("04_sciplex_evaluation", {"dataset": "sciplex4", "compare_gene_selection": False,
                                   "training_seeds": 0}),
        ("05_genetic_perturbation", {"dataset": "replogle_k562"}),
        ("05_genetic_perturbation", {"dataset": "replogle_rpe1"}),
        ("06_combinatorial", {"dataset": "norman2019"}),
        ("07_ablations", {"dataset": "sciplex3"}),
    ],
}
# The kernelspec JupyterLab (4.x, ipykernel) writes when it opens a notebook; stored notebooks carry
# it, so opening one does not mark it modified (and saving it does not make a diff).
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# notebooks of the drug-transfer path, which --dataset redirects
DATASET_NOTEBOOKS = ("01_data_and_pairing", "03_training", "04_sciplex_evaluation", "07_ablations")


def plan(profile: str, dataset: str | None = None, only: list[str] | None = None,
         worlds: int | None = None, notebook_dir: Path | None = None) -> list[tuple[str, dict, str]]:
    """The runs: (notebook stem, parameters, output name) for notebooks that exist; ``worlds``
    sets every notebook's ``n_worlds``."""
    notebook_dir = Path(notebook_dir or NOTEBOOK_DIR)
    runs, seen = [], set()
    for stem, params in PLANS[profile]:
        if not (notebook_dir / f"{stem}.ipynb").exists():
            continue
        if only and not any(stem.startswith(o) for o in only):
            continue
        params = dict(params, profile=profile)
        if dataset and stem in DATASET_NOTEBOOKS:
            params["dataset"] = dataset
        if worlds is not None:
            params["n_worlds"] = worlds
        key = (stem, params.get("dataset"))
        if key in seen:
            continue
        seen.add(key)
        runs.append((stem, params))
    counts = {s: sum(1 for r in runs if r[0] == s) for s, _ in runs}
    return [(s, p, s if counts[s] == 1 else f"{s}_{p['dataset']}") for s, p in runs]


# notebooks by decreasing running time (after the grid has trained every model)
NOTEBOOK_ORDER = ["04", "05", "07", "08", "09", "06", "03", "01", "02"]
# notebooks that read tables another notebook saves: they start only after those have finished
AFTER = {"08": ("04", "05")}


def _declared(path: Path, params: dict) -> dict:
    """The parameters of ``params`` that the notebook at ``path`` declares in its parameters cell,
    and its ``out_dir`` set to the report's folder when it declares one (``out_dir`` in ``params``)."""
    import papermill as pm

    declared = pm.inspect_notebook(str(path))
    out = {k: v for k, v in params.items() if k in declared and k != "out_dir"}
    if "out_dir" in declared and "out_dir" in params:  # relative to the notebooks' working directory
        out["out_dir"] = os.path.relpath(params["out_dir"], path.parent)
    return out


def notebook_jobs(runs: list, out_dir: Path) -> list[tuple[str, dict, str, str]]:
    """Papermill jobs ``(stem, parameters, name, target)`` for the runs of `plan`, the longest first
    (so that side by side the last one to finish is short); executed copies go to
    ``<out_dir>/notebooks/``."""
    jobs = []
    for stem, params, name in runs:
        params = _declared(NOTEBOOK_DIR / f"{stem}.ipynb", {**params, "out_dir": str(out_dir)})
        jobs.append((stem, params, name, str(out_dir / "notebooks" / f"{name}.ipynb")))
    jobs.sort(key=lambda job: NOTEBOOK_ORDER.index(job[0][:2]) if job[0][:2] in NOTEBOOK_ORDER else 99)
    return jobs


def solution_jobs(runs: list, out_dir: Path) -> list[tuple[str, dict, str, str]]:
    """Papermill jobs for the worked solutions of the notebooks in ``runs`` (one per notebook number,
    with the run's profile and number of worlds when the solution declares them), executed into
    ``<out_dir>/notebooks/solutions/`` after the notebooks, on the models the grid trained: their
    asserts check each exercise's expectation on the converged models."""
    jobs, seen = [], set()
    for stem, params, _ in runs:
        number = stem[:2]
        path = SOLUTION_DIR / f"{number}_solutions.ipynb"
        if number in seen or not path.exists():
            continue
        seen.add(number)
        wanted = {k: v for k, v in params.items() if k in ("profile", "n_worlds")}
        jobs.append((path.stem, _declared(path, wanted), path.stem,
                     str(out_dir / "notebooks" / "solutions" / f"{path.stem}.ipynb")))
    jobs.sort(key=lambda job: NOTEBOOK_ORDER.index(job[0][:2]) if job[0][:2] in NOTEBOOK_ORDER else 99)
    return jobs


def _execute(stem: str, params: dict, name: str, target: str, notebook_dir: str) -> tuple[str, str, float]:
    """Run one notebook with papermill (in a worker process); returns (name, error or "", seconds)."""
    import papermill as pm

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # side by side: one core each
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(Path(notebook_dir) / f"{stem}.ipynb"), target,
                            parameters=params, cwd=str(notebook_dir), kernel_name="python3",
                            progress_bar=False)
    except pm.PapermillExecutionError as err:
        return name, (f"cell {err.cell_index} (execution count {err.exec_count}):\n  {err.ename}: "
                      f"{err.evalue}"), time.perf_counter() - t0
    return name, "", time.perf_counter() - t0


def run_notebooks(jobs: list[tuple[str, dict, str, str]], workers: int | None = None, notebook_dir=None):
    """Execute ``(stem, parameters, name, target)`` jobs with papermill, ``workers`` at a time
    (default: one per core), each in its own process with its own kernel, in order except that a
    notebook listed in `AFTER` waits for the notebooks it reads from. Returns None, or
    ``(stem, name, target, error)`` of the first notebook that failed (the ones already running
    finish; no new one starts)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    workers = max(1, int(workers or os.cpu_count() or 1))
    by_name = {name: (stem, target) for stem, _, name, target in jobs}
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        pending = {}
        queue = list(jobs)
        failed = None
        def ready(job):  # the notebooks it reads from have run (or are not part of this run)
            wanted = set(AFTER.get(job[0][:2], ())) & {j[0][:2] for j in jobs}
            waiting = {j[0][:2] for j in queue if j is not job} | {by_name[n][0][:2] for n in pending.values()}
            return not (wanted & waiting)

        while queue or pending:
            while queue and len(pending) < workers and failed is None:
                job = next((j for j in queue if ready(j)), None)
                if job is None:
                    break
                queue.remove(job)
                stem, params, name, target = job
                print(f"[replicate] {name}  {params}", flush=True)
                pending[pool.submit(_execute, stem, params, name, target, str(notebook_dir))] = name
            if not pending:
                break
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                pending.pop(future)
                name, error, seconds = future.result()
                if error and failed is None:
                    failed = (by_name[name][0], name, by_name[name][1], error)
                print(f"[replicate] {name} {'FAILED' if error else 'done'} in {seconds:.0f} s", flush=True)
            if failed is not None:
                queue.clear()
    return failed
