"""The real-data path at full size: sci-Plex3 as scPerturb ships it, from file to first model.

``make bench-full`` (long; not part of ``make bench``). It measures the researcher's path
``datasets.load("sciplex3")`` -> ``pipeline.prepare(profile="paper")`` -> one epoch of
paper-profile training, on a generated stand-in for ``SrivatsanTrapnell2020_sciplex3.h5ad``.

The stand-in (generated once into ``data/benchmarks/``, never downloaded, not timed):

- 799,317 cells, the size of scPerturb's file, x 110,983 genes: the rows of the gene annotation
  file of the published count matrix, ``GSM4150378_sciPlex3_A549_MCF7_K562_screen_gene.
  annotations.txt.gz`` (GEO GSM4150378), which scPerturb's script uses as ``var`` (figure
  quoted in the public issue cole-trapnell-lab/sci-plex#4; the matrix itself indexes genes up to
  110,981).
- Raw counts as scPerturb stores them: CSR, float32, integer valued, int32 column indices.
  Shallow sci-Plex-like cells: library sizes log-normal with median 1,400 UMIs (sigma 0.55,
  clipped to 200-30,000), genes drawn from a Zipf-like profile over 60% of the genes (the rest
  never detected), giving a median of about 780 detected genes per cell (5-95%: 370-1,600).
  Each line has its own profile; each drug adds a program of 60 genes whose share of a cell's
  UMIs grows with dose (strong for the paper's 9 held-out drugs).
- obs as scPerturb's processing script (scPerturb ``dataset_processing/scripts/
  SrivatsanTrapnell2020.py``) leaves the sci-Plex3 pData, plus its quality columns:
  ``perturbation`` (188 drugs, vehicle relabelled ``control``), ``dose_value`` (nM: 10, 100,
  1000, 10000; 0 for controls), ``dose_unit`` "nM", ``cell_line`` (A549, K562, MCF7), ``celltype``,
  ``disease``, ``cancer``, ``tissue_type``, ``organism``, ``perturbation_type``, ``time`` (24),
  ``replicate``, ``plate``, ``well``, ``pathway_level_1``, ``pathway_level_2``, ``target``,
  ``pathway``, ``nperts``, ``ncounts``, ``ngenes``, ``percent_mito``, ``percent_ribo``; string
  columns categorical, as anndata writes them. var: gene symbols with ``ensembl_id``.
- Drug names: the 9 held-out drugs of the paper with their sci-Plex3 labels (so the published
  split applies), 18 more sci-Plex3 labels found in public sci-Plex analysis code (HDAC
  inhibitors, epothilones, ...), and generic names (``Compound-028``...) for the other 161. Vehicle cells are
  2% of the file (an assumption: no published count was found), cells at 10 uM fewer than at
  lower doses (toxicity), so that the 10 uM cells plus the controls are about a fifth of it.
- Cells in random order (sci-Plex pools all wells before barcoding), so the kept rows are
  spread over the whole file.

Measured, each in a fresh child process (peak RSS = ``VmHWM`` of ``/proc/self/status``):

1. ``load_old``: the previous ``load``: ``convert("sciplex3", anndata.read_h5ad(path))``.
   Run under an address-space limit (``--old-limit-gb``) and only when the machine has the
   memory for the estimate (2.5 x the matrix as stored, as measured here); else estimated.
2. ``load_stream``: the streaming read (``datasets._read_converted``): obs first, then the kept
   rows of X.
3. ``path``: the whole path in one process, per stage (the peak is reset between stages with
   ``echo 5 > /proc/self/clear_refs``, which resets ``VmHWM``): ``datasets.load`` (sha256 of
   the file + streaming read; the stand-in is linked into a cache folder as the downloaded file),
   ``pipeline.prepare("sciplex3", profile="paper", force=True)`` (2,000 genes, the DEGs of every
   condition, the published split, the cache written) and one epoch of
   ``pipeline.train_or_load`` with the paper profile on CPU.

Before each child the stand-in's pages are dropped from the page cache
(``posix_fadvise(POSIX_FADV_DONTNEED)`` on that file only), so every load reads from disk.

Targets: load <= 5 min and <= 8 GB, prepare <= 5 min and <= 10 GB, the whole path < 24 GB.
Numbers are printed and written to ``reports/benchmarks/full.json``.
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

import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT_JSON = REPO / "reports" / "benchmarks" / "full.json"
BENCH_DIR = REPO / "data" / "benchmarks"

N_CELLS = 799_317          # scPerturb's SrivatsanTrapnell2020_sciplex3.h5ad
N_GENES = 110_983          # rows of GSM4150378's gene annotation file (sci-plex issue #4)
LINES = ("A549", "K562", "MCF7")
DOSES_NM = (10.0, 100.0, 1000.0, 10000.0)
DOSE_SURVIVAL = (1.0, 1.0, 0.9, 0.7)      # relative cell numbers by dose
DOSE_EFFECT = (0.1, 0.3, 0.7, 1.0)        # relative size of the drug program by dose
VEHICLE_SHARE = 0.02
UMI_MEDIAN, UMI_SIGMA, UMI_RANGE = 1400, 0.55, (200, 30_000)
EXPRESSED_SHARE, ZIPF_EXPONENT, ZIPF_OFFSET = 0.6, 1.1, 10
PROGRAM_GENES = 60
CHUNK_CELLS = 20_000
SEED = 0
VERSION = 2                # bump when the generator changes (part of the file name)

TARGETS = {"load": {"seconds": 300, "gb": 8.0}, "prepare": {"seconds": 300, "gb": 10.0},
           "path_gb": 24.0}

HELD_OUT = ("Dacinostat (LAQ824)", "Givinostat (ITF2357)", "Belinostat (PXD101)", "Hesperadin",
            "Quisinostat (JNJ-26481585) 2HCl", "Alvespimycin (17-DMAG) HCl",
            "Tanespimycin (17-AAG)", "TAK-901", "Flavopiridol HCl")
OTHER_SCIPLEX3 = (   # labels seen in public sci-Plex analysis code (the HDAC inhibitor panel etc.)
    "Abexinostat (PCI-24781)", "Pracinostat (SB939)", "Mocetinostat (MGCD0103)",
    "Tucidinostat (Chidamide)", "AR-42", "Tacedinaline (CI994)", "CUDC-101", "M344", "CUDC-907",
    "Trichostatin A (TSA)", "Resminostat", "Entinostat (MS-275)", "Panobinostat (LBH589)",
    "Epothilone A", "Epothilone B", "Ivosidenib (AG-120)", "(+)-JQ1",
    "Bisindolylmaleimide IX (Ro 31-8220 Mesylate)")
PATHWAYS = ("Epigenetic regulation", "Tyrosine kinase signaling", "Cell cycle regulation",
            "DNA damage & DNA repair", "Protein folding & Protein degradation",
            "JAK/STAT signaling", "Neuronal signaling", "Other")
MITO = ("MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3",
        "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB")


def drug_names() -> list[str]:
    """sci-Plex3's 188 compounds: the paper's 9 held-out drugs, 18 more real ones, generic rest."""
    names = list(HELD_OUT) + list(OTHER_SCIPLEX3)
    names += [f"Compound-{i:03d}" for i in range(len(names) + 1, 189)]
    assert len(names) == len(set(names)) == 188
    return names


def standin_path() -> Path:
    return BENCH_DIR / f"SrivatsanTrapnell2020_sciplex3_standin_v{VERSION}_seed{SEED}.h5ad"


# ---------------------------------------------------------------------------------------------
# memory measurement
# ---------------------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_rss_gb() -> float:
    """Peak resident set of this process since start or the last :func:`reset_peak`."""
    try:
        return _status_kb("VmHWM") * 1024 / 1e9
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def rss_gb() -> float:
    return _status_kb("VmRSS") * 1024 / 1e9


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class Stage:
    """Times a stage and reads its peak RSS; the peak is reset when the stage starts."""

    def __init__(self, name: str, record: dict):
        self.name, self.record = name, record

    def __enter__(self):
        self.reset = reset_peak()
        self.rss_start = rss_gb()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.record[self.name] = {
            "seconds": round(time.perf_counter() - self.t0, 1),
            "peak_rss_gb": round(peak_rss_gb(), 3), "rss_start_gb": round(self.rss_start, 3),
            "rss_end_gb": round(rss_gb(), 3), "peak_reset": self.reset,
            "failed": exc[0] is not None}
        print(f"  stage {self.name}: {self.record[self.name]}", file=sys.stderr, flush=True)
        return False


# ---------------------------------------------------------------------------------------------
# the stand-in
# ---------------------------------------------------------------------------------------------

def _profiles(rng):
    """Gene names, per-line cumulative gene profiles, drug programs and their strengths."""
    order = rng.permutation(N_GENES)                      # order[r]: gene at expression rank r
    n_expressed = int(N_GENES * EXPRESSED_SHARE)
    base = np.zeros(N_GENES)
    base[order[:n_expressed]] = 1.0 / (np.arange(n_expressed) + ZIPF_OFFSET) ** ZIPF_EXPONENT
    names = np.array([f"GENE{i:06d}" for i in range(N_GENES)], dtype=object)
    ribo = [f"RPL{i}" for i in range(3, 41)] + [f"RPS{i}" for i in range(2, 30)]
    names[order[30:30 + len(ribo)]] = ribo                # ~10% of the UMIs
    names[order[200:200 + len(MITO)]] = MITO              # ~1% (nuclei)
    cdfs = []
    for _ in LINES:
        weights = base * np.exp(rng.normal(0.0, 0.25, N_GENES))
        markers = order[rng.choice(3000, 300, replace=False)]
        weights[markers] *= np.exp(rng.normal(1.0, 0.7, markers.size))
        cdf = np.cumsum(weights)
        cdfs.append(cdf / cdf[-1])
    n_drugs = 188
    programs = order[np.stack([rng.choice(5000, PROGRAM_GENES, replace=False)
                               for _ in range(n_drugs)])]
    program_weights = rng.dirichlet(np.full(PROGRAM_GENES, 2.0), n_drugs)
    program_cdf = (np.cumsum(program_weights, axis=1) + np.arange(n_drugs)[:, None]).ravel()
    strength = np.where(np.arange(n_drugs) < len(HELD_OUT), rng.uniform(0.15, 0.3, n_drugs),
                        np.where(np.arange(n_drugs) < 60, rng.uniform(0.03, 0.15, n_drugs),
                                 rng.uniform(0.0, 0.02, n_drugs)))
    line_effect = rng.uniform(0.6, 1.2, (len(LINES), n_drugs))
    return names, order, cdfs, programs.ravel(), program_cdf, strength, line_effect


def _design(rng):
    """Line, drug (-1 = vehicle) and dose index of every cell, in random order."""
    n_drugs = 188
    survival = rng.uniform(0.6, 1.4, n_drugs)
    cells = [(line, drug, dose) for line in range(len(LINES)) for drug in range(n_drugs)
             for dose in range(len(DOSES_NM))]
    weights = np.array([survival[drug] * DOSE_SURVIVAL[dose] for _, drug, dose in cells])
    weights *= (1 - VEHICLE_SHARE) / weights.sum()
    cells += [(line, -1, -1) for line in range(len(LINES))]
    weights = np.r_[weights, np.full(len(LINES), VEHICLE_SHARE / len(LINES))]
    pick = rng.choice(len(cells), N_CELLS, p=weights)
    table = np.array(cells)[pick]
    return table[:, 0], table[:, 1], table[:, 2]


def _chunk_counts(rng, lines, drugs, doses, cdfs, programs, program_cdf, strength, line_effect):
    """CSR arrays (indptr, indices, data) of the counts of one chunk of cells."""
    m = lines.size
    umis = np.clip(rng.lognormal(np.log(UMI_MEDIAN), UMI_SIGMA, m), *UMI_RANGE).astype(np.int64)
    treated = drugs >= 0
    share = np.zeros(m)
    share[treated] = (strength[drugs[treated]] * np.asarray(DOSE_EFFECT)[doses[treated]]
                      * line_effect[lines[treated], drugs[treated]])
    from_program = rng.binomial(umis, np.clip(share, 0, 0.9))
    from_base = umis - from_program
    cell_of = [np.repeat(np.arange(m), from_base), np.repeat(np.arange(m), from_program)]
    genes_base = np.empty(cell_of[0].size, dtype=np.int64)
    line_of = lines[cell_of[0]]
    for line, cdf in enumerate(cdfs):
        sel = line_of == line
        genes_base[sel] = np.searchsorted(cdf, rng.random(int(sel.sum())))
    drug_of = drugs[cell_of[1]]
    position = np.searchsorted(program_cdf, drug_of + rng.random(drug_of.size))
    genes_program = programs[np.minimum(position, programs.size - 1)]
    codes = np.concatenate([cell_of[0] * N_GENES + np.minimum(genes_base, N_GENES - 1),
                            cell_of[1] * N_GENES + genes_program])
    codes.sort()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    counts = np.diff(np.r_[starts, codes.size]).astype(np.float32)
    unique = codes[starts]
    cell, gene = unique // N_GENES, (unique % N_GENES).astype(np.int32)
    indptr = np.r_[0, np.cumsum(np.bincount(cell, minlength=m))]
    return indptr, gene, counts, umis


def generate(path: Path, seed: int = SEED) -> dict:
    """Write the stand-in h5ad in chunks of cells (a few GB of memory at most); return its stats."""
    import anndata
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    names, order, cdfs, programs, program_cdf, strength, line_effect = _profiles(rng)
    lines, drugs, doses = _design(rng)
    mito = np.isin(names, MITO)
    ribo = np.array([n.startswith(("RPL", "RPS")) for n in names])
    ncounts = np.zeros(N_CELLS)
    ngenes = np.zeros(N_CELLS, dtype=np.int64)
    pct_mito = np.zeros(N_CELLS)
    pct_ribo = np.zeros(N_CELLS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    expected_nnz = N_CELLS * 1000
    chunks = (h5py.filters.guess_chunk((expected_nnz,), (None,), 4)
              if hasattr(h5py.filters, "guess_chunk") else True)
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        X = f.create_group("X")
        X.attrs["encoding-type"], X.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        X.attrs["shape"] = np.array([N_CELLS, N_GENES])
        data = X.create_dataset("data", (0,), maxshape=(None,), dtype="float32", chunks=chunks)
        indices = X.create_dataset("indices", (0,), maxshape=(None,), dtype="int32", chunks=chunks)
        indptr = X.create_dataset("indptr", (N_CELLS + 1,), dtype="int64")
        indptr[0] = 0
        nnz = 0
        for start in range(0, N_CELLS, CHUNK_CELLS):
            stop = min(start + CHUNK_CELLS, N_CELLS)
            ip, ix, values, umis = _chunk_counts(rng, lines[start:stop], drugs[start:stop],
                                                 doses[start:stop], cdfs, programs, program_cdf,
                                                 strength, line_effect)
            data.resize((nnz + values.size,))
            indices.resize((nnz + values.size,))
            data[nnz:] = values
            indices[nnz:] = ix
            indptr[start + 1:stop + 1] = nnz + ip[1:]
            cell = np.repeat(np.arange(stop - start), np.diff(ip))
            ncounts[start:stop] = umis
            ngenes[start:stop] = np.diff(ip)
            pct_mito[start:stop] = 100 * np.bincount(cell, values * mito[ix], stop - start) / umis
            pct_ribo[start:stop] = 100 * np.bincount(cell, values * ribo[ix], stop - start) / umis
            nnz += values.size
            print(f"  generated {stop:,} / {N_CELLS:,} cells, {nnz:,} stored values "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

        drug_list = np.array(drug_names() + ["control"], dtype=object)
        treated = drugs >= 0
        perturbation = drug_list[np.where(treated, drugs, len(drug_list) - 1)]
        pathway_of = np.array([PATHWAYS[0]] * len(HELD_OUT)
                              + [PATHWAYS[i % len(PATHWAYS)] for i in range(len(HELD_OUT), 188)]
                              + ["Vehicle"], dtype=object)
        drug_index = np.where(treated, drugs, 188)
        line_names = np.array(LINES, dtype=object)[lines]
        celltype = {"A549": "alveolar basal epithelial cells", "K562": "lymphoblasts",
                    "MCF7": "mammary epithelial cells"}
        disease = {"A549": "lung adenocarcinoma", "K562": "chronic myelogenous leukemia",
                   "MCF7": "breast adenocarcinoma"}
        well = rng.integers(0, 96, N_CELLS)
        obs = pd.DataFrame({
            "ncounts": ncounts,
            "well": [f"{'ABCDEFGH'[w // 12]}{w % 12 + 1:02d}" for w in well],
            "plate": [f"P{p:02d}" for p in rng.integers(1, 25, N_CELLS)],
            "cell_line": line_names,
            "replicate": np.where(rng.random(N_CELLS) < 0.5, "rep1", "rep2"),
            "time": np.full(N_CELLS, 24.0),
            "dose_value": np.where(treated, np.asarray(DOSES_NM)[doses], 0.0),
            "pathway_level_1": pathway_of[drug_index],
            "pathway_level_2": [f"{p} ({i % 3})" for p, i in zip(pathway_of[drug_index], drug_index)],
            "perturbation": perturbation,
            "target": np.array([f"target{i % 90}" for i in range(188)] + ["none"], dtype=object)[drug_index],
            "pathway": pathway_of[drug_index],
            "dose_unit": "nM",
            "celltype": [celltype[x] for x in line_names],
            "disease": [disease[x] for x in line_names],
            "cancer": True,
            "tissue_type": "cell_line",
            "organism": "human",
            "perturbation_type": "drug",
            "nperts": treated.astype(np.int64),
            "ngenes": ngenes,
            "percent_mito": pct_mito,
            "percent_ribo": pct_ribo,
        }, index=pd.Index([f"sciPlex3_{i:06d}" for i in range(N_CELLS)], name="cell"))
        for column in obs.columns:
            if obs[column].dtype == object:
                obs[column] = obs[column].astype("category")
        var = pd.DataFrame({"ensembl_id": [f"ENSG{i:011d}" for i in range(N_GENES)]},
                           index=pd.Index(names.astype(str), name="gene_symbol"))
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        for key in ("layers", "obsm", "obsp", "varm", "varp", "uns"):
            write_elem(f, key, {})
    os.replace(tmp, path)
    stats = {"path": str(path.relative_to(REPO)), "n_cells": N_CELLS, "n_genes": N_GENES,
             "nnz": int(nnz), "bytes_on_disk": path.stat().st_size,
             "generate_seconds": round(time.perf_counter() - t0, 1),
             "median_umis": float(np.median(ncounts)), "median_genes": float(np.median(ngenes)),
             "genes_5_95": [float(q) for q in np.percentile(ngenes, [5, 95])],
             "vehicle_cells": int((~treated).sum()),
             "kept_10uM_plus_controls": int(((doses == 3) & treated).sum() + (~treated).sum())}
    stats_path(path).write_text(json.dumps(stats, indent=2) + "\n")
    check = anndata.read_h5ad(path, backed="r")
    assert check.shape == (N_CELLS, N_GENES) and check.obs["perturbation"].dtype == "category"
    check.file.close()
    print(f"generated {path.relative_to(REPO)}: {nnz:,} stored values, "
          f"{stats['bytes_on_disk'] / 1e9:.2f} GB, {stats['generate_seconds']:.0f} s", flush=True)
    return stats


def stats_path(path: Path) -> Path:
    return path.with_suffix(".json")


# ---------------------------------------------------------------------------------------------
# the measured children
# ---------------------------------------------------------------------------------------------

def one_epoch_config():
    """The paper profile's TrainConfig capped at one epoch (``epochs=1``; its step cap is larger)."""
    from dataclasses import replace

    from xtcdr.config import get_profile

    return replace(get_profile("paper").train, epochs=1)


def child_load_old(path: str, limit_gb: float) -> dict:
    """The previous load: read the whole file, then filter (under an address-space limit)."""
    if limit_gb > 0:
        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import anndata

    from xtcdr.datasets import convert

    record: dict = {}
    try:
        with Stage("load_old", record):
            adata = convert("sciplex3", anndata.read_h5ad(path), copy=False)
        record["load_old"]["n_cells"] = int(adata.n_obs)
    except MemoryError as err:
        record["load_old"]["error"] = f"MemoryError under a {limit_gb} GiB limit: {err}"
    return record


def child_load_stream(path: str) -> dict:
    from xtcdr.datasets import _read_converted

    record: dict = {}
    with Stage("load_stream", record):
        adata = _read_converted("sciplex3", Path(path))
    record["load_stream"].update(n_cells=int(adata.n_obs), nnz=int(adata.X.nnz))
    return record


def child_path(path: str, data_dir: str) -> dict:
    """load -> prepare (paper) -> one epoch, each stage's time and peak RSS."""
    import torch

    from xtcdr import datasets, pipeline

    record: dict = {"torch_threads": torch.get_num_threads()}
    real_load = datasets.load

    def timed_load(*args, **kwargs):      # the load inside prepare, measured as its own stage
        with Stage("load", record):
            adata = real_load(*args, **kwargs)
        record["load"].update(n_cells=int(adata.n_obs), nnz=int(adata.X.nnz))
        reset_peak()                       # from here on, the peak is prepare's own work
        return adata

    datasets.load = timed_load
    t0 = time.perf_counter()
    with Stage("prepare_including_load", record):
        adata = pipeline.prepare("sciplex3", profile="paper", data_dir=data_dir, force=True)
    record["prepare"] = {
        "seconds": round(record["prepare_including_load"]["seconds"] - record["load"]["seconds"], 1),
        "peak_rss_gb": record["prepare_including_load"]["peak_rss_gb"],
        "note": "time of prepare minus its load; peak since the end of the load, holding the "
                "loaded counts"}
    record["prepare"].update(n_cells=int(adata.n_obs), n_genes=int(adata.n_vars),
                             n_deg_conditions=len(adata.uns["top_degs"]),
                             split={k: int(v) for k, v in
                                    adata.obs["split"].value_counts().items()},
                             test_perturbations=list(adata.uns["xtcdr"]["split"]
                                                     ["test_perturbations"]))
    with Stage("train_one_epoch", record):
        _, history = pipeline.train_or_load(adata, profile="paper",
                                            train_config=one_epoch_config(), device="cpu",
                                            data_dir=data_dir, force=True, progress=False)
    record["train_one_epoch"].update(n_pairs=int(history["n_pairs"].iloc[-1]),
                                     epoch_seconds=round(float(history["seconds"].iloc[-1]), 1))
    record["path_seconds"] = round(time.perf_counter() - t0, 1)
    record["path_peak_rss_gb"] = max(record[s]["peak_rss_gb"]
                                     for s in ("load", "prepare", "train_one_epoch"))
    return record


def _run_child(args: list[str], timeout: float | None = None) -> dict:
    cmd = [sys.executable, __file__] + args
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(proc.stderr[-4000:])
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    result["_child"] = {"returncode": proc.returncode, "wall_seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        result["_child"]["stderr_tail"] = proc.stderr[-2000:]
    return result


def _link_as_download(path: Path, data_dir: Path) -> None:
    """Put the stand-in where ``load`` expects the downloaded scPerturb file."""
    from xtcdr.datasets import dataset_info

    raw = data_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    target = raw / dataset_info("sciplex3").filename
    if target.is_symlink() or target.exists():
        if target.resolve() == path.resolve():
            return
        target.unlink()
        (raw / "checksums.json").unlink(missing_ok=True)
    target.symlink_to(path.resolve())


def _old_load_estimate(path: Path) -> float:
    """Peak bytes of the read-everything load: 2.5 x the matrix as stored (measured on this
    stand-in: 13.6 GB for a 5.45 GB matrix; the row subset of anndata's view takes more than the
    matrix itself)."""
    import h5py

    with h5py.File(path, "r") as f:
        whole = sum(f["X"][k].size * f["X"][k].dtype.itemsize for k in ("data", "indices", "indptr"))
    return 2.5 * whole


def _evict(path: Path) -> bool:
    """Drop the file's pages from the page cache, so that a load reads it from disk (cold)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return " ".join(map(str, os.getloadavg()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["load-old", "load-stream", "path"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--generate-only", action="store_true", help="write the stand-in, measure nothing")
    parser.add_argument("--regenerate", action="store_true", help="write the stand-in again")
    parser.add_argument("--skip-old", action="store_true", help="do not run the read-everything load")
    parser.add_argument("--old-limit-gb", type=float, default=14.0,
                        help="address-space limit (GiB) of the read-everything load's child")
    parser.add_argument("--out", default=str(OUT_JSON))
    args = parser.parse_args(argv)
    if args.child:
        result = {"load-old": lambda: child_load_old(args.file, args.old_limit_gb),
                  "load-stream": lambda: child_load_stream(args.file),
                  "path": lambda: child_path(args.file, args.data_dir)}[args.child]()
        print(json.dumps(result))
        return 0

    path = standin_path()
    if args.regenerate or not path.exists() or not stats_path(path).exists():
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"import bench_full; bench_full.generate(bench_full.standin_path())"], check=True)
    stats = json.loads(stats_path(path).read_text())
    print(f"stand-in {stats['path']}: {stats['n_cells']:,} cells x {stats['n_genes']:,} genes, "
          f"{stats['nnz']:,} stored values, {stats['bytes_on_disk'] / 1e9:.2f} GB on disk "
          f"(generated in {stats['generate_seconds']:.0f} s)", flush=True)
    if args.generate_only:
        return 0

    from xtcdr.memory import available_bytes

    results: dict = {"standin": stats, "targets": TARGETS, "uptime_start": _uptime(),
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version(),
                                 "mem_available_gb_start": round((available_bytes() or 0) / 1e9, 1)}}
    estimate = _old_load_estimate(path)
    results["page_cache_evicted_before_each_child"] = _evict(path)
    results["load_old_estimate_gb"] = round(estimate / 1e9, 2)
    available = available_bytes() or 0
    if args.skip_old or estimate > min(available * 0.8, args.old_limit_gb * 2**30):
        results["load_old"] = {"ran": False, "estimated_peak_gb": round(estimate / 1e9, 2),
                               "why": ("--skip-old" if args.skip_old else
                                       f"estimate above 80% of the available memory "
                                       f"({available / 1e9:.1f} GB) or the {args.old_limit_gb} GiB limit")}
    else:
        print(f"load, old path (read everything, then filter; estimated peak "
              f"{estimate / 1e9:.1f} GB, limit {args.old_limit_gb} GiB) ...", flush=True)
        _evict(path)
        old = _run_child(["--child", "load-old", "--file", str(path),
                          "--old-limit-gb", str(args.old_limit_gb)])
        results["load_old"] = {"ran": True, **old.get("load_old", {}), "child": old["_child"]}
    print("load, streaming (obs, then the kept rows of X) ...", flush=True)
    _evict(path)
    stream = _run_child(["--child", "load-stream", "--file", str(path)])
    results["load_stream"] = {**stream.get("load_stream", {}), "child": stream["_child"]}

    data_dir = BENCH_DIR / "full_cache"
    _link_as_download(path, data_dir)
    print("the path: load -> prepare (paper) -> one epoch (paper, CPU) ...", flush=True)
    _evict(path)
    run = _run_child(["--child", "path", "--file", str(path), "--data-dir", str(data_dir)])
    results["path"] = run
    results["uptime_end"] = _uptime()

    def verdict(value, target):
        return "OK" if value is not None and value <= target else "MISSED"

    rows = []
    old = results["load_old"]
    if old.get("ran") and not old.get("failed"):
        rows.append(("load, old path (read_h5ad + filter)", old["seconds"], old["peak_rss_gb"], "load"))
    stream_row = results["load_stream"]
    if "seconds" in stream_row:
        rows.append(("load, streaming (kept rows only)", stream_row["seconds"], stream_row["peak_rss_gb"], "load"))
    for stage, label, target in (("load", "load in the path (sha256 + streaming)", "load"),
                                 ("prepare", "prepare, paper profile", "prepare"),
                                 ("train_one_epoch", "one paper-profile epoch (CPU)", None)):
        if stage in run:
            rows.append((label, run[stage]["seconds"], run[stage]["peak_rss_gb"], target))
    print()
    print(f"{'stage':42s} {'time':>9s} {'peak RSS':>9s}  target")
    for label, seconds, peak, target in rows:
        goal = TARGETS.get(target)
        verdicts = (f"<= {goal['seconds'] / 60:.0f} min {verdict(seconds, goal['seconds'])}, "
                    f"<= {goal['gb']:.0f} GB {verdict(peak, goal['gb'])}") if goal else "-"
        print(f"{label:42s} {seconds:8.1f}s {peak:7.2f}GB  {verdicts}")
    if not old.get("ran"):
        print(f"{'load, old path':42s} {'-':>9s} {old['estimated_peak_gb']:6.1f}GB  estimated, not run ({old['why']})")
    elif old.get("failed"):
        print(f"load, old path failed: {old.get('error', old.get('child'))}")
    if "path_peak_rss_gb" in run:
        print(f"whole path: {run['path_seconds']:.0f} s, peak RSS {run['path_peak_rss_gb']:.2f} GB "
              f"(target < {TARGETS['path_gb']:.0f} GB: {verdict(run['path_peak_rss_gb'], TARGETS['path_gb'])})")
    else:
        print(f"the path failed: {run.get('_child')}")
    print(f"machine load: {results['uptime_start']}  ->  {results['uptime_end']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
