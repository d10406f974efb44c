"""The training grid: every training a replication needs, planned up front and run side by side.

A replication trains many models (notebook 04: the seeds of Tables 1-2, random held-out splits,
a gene-selection check; 05 and 06: their seeds; 07: every ablation and seed; 08: every transfer
variant). `plan` lists them as plain `Training` records, each with the cache key that
`xtcdr.pipeline.train_or_load` uses, so a notebook run after the grid finds its checkpoints and
trains nothing. `run` trains what is not cached yet:

- ``executor="local"``: ``workers`` processes on this machine (default: one per core), one
  overall progress bar (done / running / cached / failed, elapsed and time left);
- ``executor="slurm"``: one SLURM job array through submitit (``AutoExecutor`` + ``map_array``,
  ``slurm_array_parallelism``); ``executor="submitit-local"`` runs the same code path with
  submitit's local executor (how the tests exercise it without a cluster).

Every training runs with `xtcdr.train.TRAIN_THREADS` threads (1) on the CPU, so its weights are
the same whether it ran alone, in a notebook, in a worker process or on a cluster node.
Checkpoints are written atomically into the shared cache folder: a rerun skips what finished and
resumes what was interrupted. A failing training is reported with its name, its error and its
log file; the others go on.
"""
from __future__ import annotations

import ast
import json
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from .record import Training

__all__ = ["Training", "plan", "notebook_trainings", "run", "status", "run_training",
           "GridResult", "EXECUTORS", "DEV_CURVE_WORLD"]

EXECUTORS = ("local", "submitit-local", "slurm")


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
def notebook_parameters(stem: str, overrides: dict | None = None, notebook_dir: Path | None = None) -> dict:
    """A notebook's parameters: the defaults of its ``parameters`` cell, then ``overrides``."""
    import papermill as pm

    from .runs import NOTEBOOK_DIR

    path = Path(notebook_dir or NOTEBOOK_DIR) / f"{stem}.ipynb"
    params = {}
    for name, spec in pm.inspect_notebook(str(path)).items():
        try:
            params[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            params[name] = spec["default"]
    params.update(overrides or {})
    return params


def notebook_trainings(stem: str, params: dict) -> list[Training]:
    """The trainings notebook ``stem`` (e.g. ``"04_sciplex_evaluation"``) needs with ``params``.

    World *s* of a twin is its draw with seed *s* and a model trained with seed *s*
    (``prepare_seed=s, seed=s``); on real data *s* is a fold. The notebooks build their models from
    the same records (`Training.train_kwargs`), so the keys agree by construction.
    """
    from . import ablations, transfer

    number = stem[:2]
    profile = params.get("profile", "quick")
    dataset = params.get("dataset")
    worlds = range(int(params.get("n_worlds", 1)))
    out: list[Training] = []

    def add(**kw):
        out.append(Training.make(kw.pop("dataset", dataset), profile=profile, notebooks=(stem,), **kw))

    def add_worlds(**kw):
        for s in worlds:
            add(seed=s, prepare_seed=s, **kw)

    if number == "03":
        add(seed=int(params.get("seed", 0)), prepare_seed=int(params.get("seed", 0)))
    elif number == "04":
        add_worlds()
        for t in range(1, int(params.get("training_seeds", 0))):  # what training alone varies, world 0
            add(seed=t, prepare_seed=0)
        k = params.get("_k")  # the random rule holds out as many drugs as the paper rule
        if params.get("random_rule"):
            add_worlds(data={"test_rule": "random", "n_test": k})
        if params.get("compare_gene_selection"):
            add(seed=0, prepare_seed=0, data={"hvg_cells": "non_test"})
    elif number in ("05", "06"):
        extra = {}
        if number == "06" and float(params.get("combo_weight", 0.0)) > 0:
            extra = {"weights": {"combo": float(params["combo_weight"])},
                     "data": {"test_rule": "doubles", "n_test": int(params["n_test_doubles"])}}
        elif number == "06" and int(params.get("n_test_doubles", 0)) > 0:
            extra = {"data": {"test_rule": "doubles", "n_test": int(params["n_test_doubles"])}}
        add_worlds(**extra)
    elif number == "07":
        for name in ablations.CONFIGURATIONS:
            weights = {} if ablations.CONFIGURATIONS[name] is None else {ablations.CONFIGURATIONS[name]: 0.0}
            add_worlds(weights=weights)
    elif number == "08" and not params.get("dataset_path"):
        names = transfer.task_names(params.get("tasks", "default"))
        for task in names:
            for training in transfer.variant_training(params.get("variants", "default")):
                add_worlds(dataset=transfer.TASKS[task]["dataset"], **training)
        world = int(params.get("curve_world", DEV_CURVE_WORLD))  # the teaching curve: a development world
        add(dataset=transfer.TASKS[names[0]]["dataset"], seed=world, prepare_seed=world, curve=True)
    elif number == "09":  # real cells: the records notebook 09 evaluates, folds as worlds (xtcdr.real)
        from . import real

        out += real.notebook_trainings(params, profile=profile, notebooks=(stem,))
    return out


# The teaching curve (notebook 08) tracks a test score, so it is drawn on a development world that
# no report uses (tests/benchmarks/bench_convergence.py: DEV_WORLDS).
DEV_CURVE_WORLD = 100


def plan(profile: str = "quick", notebooks: list[str] | None = None, worlds: int | None = None,
         dataset: str | None = None, data_dir=None) -> list[Training]:
    """Every training of ``python -m xtcdr replicate`` with these arguments, without duplicates.

    Each notebook's parameters are its defaults, the replication plan's (`xtcdr.runs.PLANS`)
    and the arguments here, exactly as ``replicate`` passes them to papermill.
    """
    from .runs import plan as replicate_plan

    merged: dict[Training, set] = {}
    for stem, params, _ in replicate_plan(profile, dataset, notebooks, worlds):
        params = notebook_parameters(stem, params)
        if stem.startswith("04") and params.get("random_rule"):
            adata = Training.make(params["dataset"], profile=profile).prepare(data_dir)
            params["_k"] = int(adata.uns["xtcdr"]["split"]["k"])
        for t in notebook_trainings(stem, params):
            key = replace(t, notebooks=())
            merged.setdefault(key, set()).update(t.notebooks)
    return [replace(t, notebooks=tuple(sorted(nbs))) for t, nbs in merged.items()]


def status(trainings: list[Training], data_dir=None) -> list[dict]:
    """Per training: its checkpoint folder and ``"cached"`` (finished), ``"partial"`` or ``"new"``."""
    from .train import CHECKPOINT_NAME, load_checkpoint

    prepared, rows = {}, []
    for t in trainings:
        key = (t.dataset, t.profile, t.prepare_seed, t.data)
        if key not in prepared:
            prepared[key] = t.prepare(data_dir)
        folder = t.checkpoint_dir(prepared[key], data_dir)
        state = "new"
        if t.curve:
            curve = folder.with_name(folder.name + "__curve.csv")
            rows.append({"training": t, "folder": curve, "state": "cached" if curve.exists() else "new"})
            continue
        if (folder / CHECKPOINT_NAME).exists():
            try:
                _, saved = load_checkpoint(folder / CHECKPOINT_NAME, select=None)
                state = "cached" if saved.get("stop_reason") else "partial"
            except Exception:  # corrupt: train_or_load reports it when it runs
                state = "partial"
        rows.append({"training": t, "folder": folder, "state": state})
    return rows


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def run_training(training: Training | dict, data_dir: str | None = None,
                 log_dir: str | None = None) -> dict:
    """Train (or load) one record; what a worker process or a cluster job runs.

    Output goes to ``<log_dir>/<checkpoint folder name>.log``. Never raises: a failure comes
    back as ``{"status": "failed", "error": ..., "log": ...}`` so that the other trainings go on.
    """
    import contextlib
    import io

    if isinstance(training, dict):
        d = dict(training)
        training = Training.make(d.pop("dataset"), **d)
    t0 = time.perf_counter()
    log_path = None
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            from .pipeline import train_or_load

            adata = training.prepare(data_dir)
            folder = training.checkpoint_dir(adata, data_dir)
            if log_dir:
                log_path = Path(log_dir) / f"{folder.name}{'__curve' if training.curve else ''}.log"
            if training.curve:
                from .transfer import teaching_curve

                prof = training.resolved_profile()
                history = teaching_curve(adata, profile=prof, seed=training.seed, data_dir=data_dir)
            else:
                _, history = train_or_load(adata, data_dir=data_dir, progress=False, verbose=True,
                                           **training.train_kwargs())
        info = history.attrs.get("training", {})
        cached = "using cached checkpoint" in buffer.getvalue()
        result = {"status": "cached" if cached else "trained", "steps": info.get("steps"),
                  "stop_reason": info.get("stop_reason"), "folder": folder.name}
    except BaseException as exc:  # noqa: BLE001 - reported by name, the grid goes on
        buffer.write(traceback.format_exc())
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    result.update(label=training.label(), seconds=time.perf_counter() - t0)
    if log_dir:
        log_path = log_path or Path(log_dir) / f"failed_{abs(hash(training.label())) % 10**8}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(buffer.getvalue())
        result["log"] = str(log_path)
    return result


@dataclass
class GridResult:
    """What `run` did: one result dict per training (status trained / cached / failed)."""

    results: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.results)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] == "failed"]

    def summary(self) -> str:
        return (f"{len(self.results)} trainings: {self.count('trained')} trained, "
                f"{self.count('cached')} cached, {self.count('failed')} failed, "
                f"{self.seconds:.0f} s wall")


def run(trainings: list[Training], *, executor: str = "local", workers: int | None = None,
        data_dir=None, log_dir=None, progress: bool = True, slurm: dict | None = None) -> GridResult:
    """Train every record that is not cached yet; see the module docstring for the executors.

    ``workers``: local worker processes (default ``os.cpu_count()``). ``slurm``: parameters for
    ``AutoExecutor.update_parameters`` (``slurm_partition``, ``gpus_per_node``,
    ``slurm_array_parallelism``, ``timeout_min`` ...). Logs go to ``log_dir`` (default
    ``<data_dir>/grid_logs``).
    """
    from .datasets import default_data_dir

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {list(EXECUTORS)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    log_dir = Path(log_dir) if log_dir is not None else data_dir / "grid_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = status(trainings, data_dir)  # prepares every dataset once, here, before any worker
    todo = [r["training"] for r in rows if r["state"] != "cached"]
    result = GridResult([{"status": "cached", "label": r["training"].label(), "seconds": 0.0,
                          "folder": r["folder"].name} for r in rows if r["state"] == "cached"])
    if todo:
        runner = _run_local if executor == "local" else _run_submitit
        result.results += runner(todo, executor=executor, workers=workers, data_dir=data_dir,
                                 log_dir=log_dir, progress=progress, cached=len(result.results),
                                 total=len(rows), slurm=slurm or {})
    result.seconds = time.perf_counter() - t0
    (log_dir / "last_grid.json").write_text(json.dumps(
        {"summary": result.summary(), "results": result.results}, indent=1, default=str))
    return result


def _bar(total, cached, progress):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=cached, desc="training grid", unit="training", disable=not progress,
               smoothing=0)
    return bar


def _run_local(todo, *, workers, data_dir, log_dir, progress, cached, total, **_):
    import concurrent.futures as cf
    import multiprocessing as mp

    workers = max(1, int(workers or os.cpu_count() or 1))
    counts = {"done": 0, "running": 0, "cached": cached, "failed": 0}
    bar = _bar(total, cached, progress)
    results = []
    # spawn: a fresh interpreter per worker (no forked torch state); each takes one training at a time
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        pending = {pool.submit(run_training, t, str(data_dir), str(log_dir)): t for t in todo}
        while pending:
            counts["running"] = min(workers, len(pending))
            bar.set_postfix(counts, refresh=True)
            finished, _ = cf.wait(pending, timeout=5, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                t = pending.pop(future)
                try:
                    res = future.result()
                except Exception as exc:  # the worker process itself died
                    res = {"status": "failed", "label": t.label(), "error": f"{type(exc).__name__}: {exc}",
                           "seconds": 0.0}
                _tally(res, counts, bar)
                results.append(res)
    counts["running"] = 0
    bar.set_postfix(counts)
    bar.close()
    return results


def _run_submitit(todo, *, executor, workers, data_dir, log_dir, progress, cached, total, slurm, **_):
    import submitit

    cluster = "local" if executor == "submitit-local" else "slurm"
    ex = submitit.AutoExecutor(folder=str(log_dir / "submitit" / "%j"), cluster=cluster)
    params = {"timeout_min": 24 * 60}
    params.update(slurm)
    if cluster == "local":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(**params)
    jobs = ex.map_array(run_training, [t.to_dict() for t in todo], [str(data_dir)] * len(todo),
                        [str(log_dir)] * len(todo))
    counts = {"done": 0, "running": len(jobs), "cached": cached, "failed": 0}
    bar = _bar(total, cached, progress)
    results, pending = [], dict(zip(jobs, todo))
    while pending:
        for job in [j for j in pending if j.done()]:
            t = pending.pop(job)
            try:
                res = job.result()
            except Exception as exc:  # the job itself failed (killed, time limit, node failure)
                res = {"status": "failed", "label": t.label(), "error": f"{type(exc).__name__}: {exc}",
                       "seconds": 0.0, "log": str(job.paths.stderr)}
            counts["running"] = len(pending)
            _tally(res, counts, bar)
            results.append(res)
        if pending:
            time.sleep(2)
    bar.close()
    return results


def _tally(res, counts, bar):
    if res["status"] == "failed":
        counts["failed"] += 1
        bar.write(f"FAILED: {res['label']}: {res.get('error')} (log: {res.get('log')})")
    elif res["status"] == "cached":
        counts["cached"] += 1
    else:
        counts["done"] += 1
    bar.update(1)
    bar.set_postfix(counts, refresh=True)
