"""Named datasets and conversion of any AnnData to the standard xtcdr schema.

Three kinds of names, listed by :func:`names` in this order:

- synthetic twins (``SYNTHETIC``), generated on the fly by :func:`xtcdr.synthetic.simulate`;
- shipped real datasets (``SHIPPED``, in ``REGISTRY`` with ``shipped=True``): two small real
  screens in the repository's ``data/real/`` folder, read from there (never downloaded) and
  verified by sha256 on every load (`xtcdr.realdata`);
- downloaded real datasets (the rest of ``REGISTRY``): the scPerturb harmonised h5ad files
  (Zenodo record 10044268), downloaded once with pooch into ``<data_dir>/raw/`` and verified by
  checksum on every load.

Every loader returns an AnnData with raw counts in ``X`` (as the source gives them) and the
standard obs columns ``cell_type``, ``perturbation``, ``dose``, ``is_control``, ``condition``
(see :func:`from_anndata`, `xtcdr.schema`). Bring your own data with :func:`from_anndata`.

Checksums: where scPerturb publishes an md5 it is given to pooch, which downloads to a temporary
file and moves it into place only when the md5 matches. Where none is published (sci-Plex), the
sha256 of the first download is recorded in ``<data_dir>/raw/checksums.json`` and every later
load verifies the file against it.
"""
from __future__ import annotations

from dataclasses import dataclass
import datetime
import difflib
import json
import os
from pathlib import Path
import re
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from . import memory, realdata
from .h5ad_rows import h5_attr, matrix_encoding, read_h5ad_rows, stored_bytes
from .schema import (CONTROL, STANDARD_COLUMNS, from_anndata, package_version, require_columns,
                     standardize, validate_schema)

__all__ = [
    "DatasetInfo", "REGISTRY", "SYNTHETIC", "SHIPPED", "names", "dataset_info",
    "default_data_dir", "load", "fetch", "convert", "from_anndata", "validate_schema",
    "match_perturbations", "STANDARD_COLUMNS", "concat_lines", "read_h5ad_rows",
]

SYNTHETIC = ("synthetic_drugs", "synthetic_drugs4", "synthetic_genes", "synthetic_combo")

_ZENODO = "https://zenodo.org/records/10044268/files/{}"
_SCPERTURB = "scPerturb (Peidli et al. 2024), Zenodo record 10044268"
# Values of a second-perturbation column that mean "no second perturbation" (sci-Plex4).
_NO_SECOND_PERTURBATION = frozenset({"", "nan", "none", "control", "ctrl", "dmso", "vehicle"})
# Factors from a dose unit to micromolar; sci-Plex3 doses are in nM in scPerturb.
_TO_MICROMOLAR = {"nm": 1e-3, "nanomolar": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0,
                  "micromolar": 1.0, "mm": 1e3, "millimolar": 1e3}


@dataclass(frozen=True)
class DatasetInfo:
    """Where a real dataset comes from and how its obs map onto the standard schema.

    ``md5`` is the published checksum or None (then the sha256 of the first download is
    recorded and verified afterwards). ``kind`` is "drug", "genetic" or "combo".
    A *shipped* dataset (``shipped=True``) is a file of the repository's ``data/real/`` folder,
    never downloaded (``url`` is empty): ``sha256`` is its checksum, checked on every load,
    ``origin`` the source it was converted from, ``citation`` the paper and ``licence_file`` the
    licence text beside it.
    ``test_perturbations`` are the paper's held-out perturbations (empty when it gives no list).
    ``combo_sep`` is the separator of combinations in the source labels, or None for
    datasets of single perturbations whose names must not be split (sci-Plex3 has the drug
    '(+)-JQ1'; it becomes '(plus)-JQ1', since '+' marks combinations in the standard schema).
    """

    name: str
    url: str
    filename: str
    md5: str | None
    kind: str
    description: str
    test_perturbations: tuple[str, ...] = ()
    paper_table: str = ""
    perturbation_key: str = "perturbation"
    cell_type_key: str | None = "cell_line"
    control_value: str = CONTROL
    dose_key: str | None = None
    combo_sep: str | None = None
    shipped: bool = False
    sha256: str | None = None
    origin: str = ""
    citation: str = ""
    licence_file: str = ""

    def __post_init__(self):
        if self.kind not in ("drug", "genetic", "combo"):
            raise ValueError(f"DatasetInfo.kind must be 'drug', 'genetic' or 'combo', got {self.kind!r}")
        if self.shipped and not re.fullmatch(r"[0-9a-f]{64}", str(self.sha256)):
            raise ValueError(f"DatasetInfo {self.name!r}: a shipped dataset needs its sha256 "
                             f"(64 lower-case hex digits), got {self.sha256!r}")
        object.__setattr__(self, "test_perturbations", tuple(self.test_perturbations))


def _scperturb(name: str, filename: str, md5: str | None, kind: str, description: str,
               **fields) -> DatasetInfo:
    return DatasetInfo(name=name, url=_ZENODO.format(filename), filename=filename, md5=md5,
                       kind=kind, description=description, **fields)


# The held-out knockdowns of the paper's Replogle splits (the same lab's earlier split,
# hliulab/cycleCDR preprocessing/replogle_*_essential/split.py): 39 in K562, 98 in RPE-1, 17 in both.
_REPLOGLE_K562_TEST = (
    "RPL23A", "EIF3B", "SUPT16H", "FAU", "RTF1", "MED12", "PRPF31", "PLRG1", "SNRNP70", "PSMC4",
    "MED21", "SNRPE", "CNOT1", "SARS", "PAF1", "RPL17", "POLR2H", "MED4", "SLU7", "SNRPD1",
    "MED30", "PSMD2", "CHMP3", "HSPA5", "SNRPA1", "MED9", "SFPQ", "HSPA9", "INTS2", "PHB2",
    "SUPT5H", "EIF2S1", "EIF2S3", "SNRPF", "PHB", "SUPT6H", "AQR", "GATA1", "SRSF3")
_REPLOGLE_RPE1_TEST = (
    "EIF3B", "EXOSC9", "RPL8", "DDX21", "SFPQ", "EIF3E", "BDP1", "PUF60", "RPS7", "RPL12",
    "RPL18A", "RPS9", "RPS8", "RPL34", "SART1", "ARCN1", "NOL11", "RPL39", "RPL35A", "RPS18",
    "RPL23A", "DARS", "RPS6", "RPL6", "CACTIN", "RPL35", "PRPF8", "WEE1", "SLU7", "EIF2S2",
    "RPL3", "EIF2B4", "SCFD1", "IPO13", "RPS19", "BUD13", "RPL23", "RPL38", "IGBP1", "RPS23",
    "AARS", "CDC5L", "RPL36", "BET1", "RPL17", "SF3B2", "PSMD8", "PSMD11", "SNRPA1", "RPL18",
    "PSMA2", "RPL30", "EIF2S3", "RAC3", "PRPF31", "SNIP1", "RPL21", "GPKOW", "RPL15", "RPL14",
    "CNOT1", "SRSF3", "SNRNP70", "MED22", "STX5", "SUPT16H", "SNRPE", "SRP68", "ETF1", "SNRPD1",
    "DHX8", "SNRNP200", "FTSJ3", "PSMB6", "PSMB1", "SNRPD3", "SMU1", "EIF2S1", "PSMC4", "PSMD12",
    "TRAPPC8", "POLR3D", "PSMB2", "COPB1", "PSMC3", "PRPF6", "PSMC5", "PSMB5", "PSMA4", "PSMC2",
    "PSMD14", "PSMD6", "PSMA3", "PSMB3", "PSMC1", "PSMA6", "PSMD1", "HSPA5")

def _shipped(name: str, kind: str, sha256: str, description: str, **fields) -> DatasetInfo:
    return DatasetInfo(name=name, url="", filename=f"{name}.h5ad", md5=None, kind=kind,
                       description=description, shipped=True, sha256=sha256,
                       licence_file=f"LICENSE-{name}.txt", **fields)


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info for info in [
        _shipped(
            "datlinger2021_jurkat", "genetic",
            "1ece4bb99ec41a6cfe3f32bb18e6b7378e5686c660f52aa5c2309a992da998c6",
            "Shipped (data/real/). Jurkat T cells, scifi-RNA-seq CRISPR knockout screen (Datlinger "
            "et al. 2021): 20 T-cell-receptor pathway genes, two guides each pooled to the gene "
            "(obs['guide'] keeps the guide), and control cells, each with or without TCR "
            "stimulation: two contexts, Jurkat_stimulated and Jurkat_unstimulated. 7,500 cells x "
            "2,000 genes, raw UMI counts, no cell filter.",
            origin="the scPerturb R package's test data (sanderlab/scPerturb, package_r/tests/"
                   "testthat/testdata), scPerturb dataset DatlingerBock2021 (GEO GSE168620)",
            citation="Datlinger P, Rendeiro AF, Boenke T, et al. Ultra-high-throughput single-cell "
                     "RNA sequencing and perturbation screening with combinatorial fluidic "
                     "indexing. Nature Methods 18, 635-642 (2021). doi:10.1038/s41592-021-01153-z."),
        _shipped(
            "papalexi2021_thp1", "genetic",
            "cea6e678c6ffff1b9f791e290ffe8a60ffe1b7a4155791234cbdef0e3757fe25",
            "Shipped (data/real/). THP-1 cells, ECCITE-seq CRISPR knockout screen (Papalexi et al. "
            "2021): 25 genes and non-targeting controls, 3 biological replicates (obs['replicate']), "
            "one context (THP-1), 299 genes, raw UMI counts. Perturbation = target of the guide "
            "with most UMIs; cells whose assigned target holds at most half of their guide UMIs "
            "are removed (19,718 of 20,729 cells kept).",
            origin="lowmoi_example_data of the R data package sceptredata (Katsevich-Lab/"
                   "sceptredata)",
            citation="Papalexi E, Mimitou EP, Butler AW, et al. Characterizing the molecular "
                     "regulation of inhibitory immune checkpoints with multimodal single-cell "
                     "screens. Nature Genetics 53, 322-331 (2021). doi:10.1038/s41588-021-00778-2."),
        _scperturb(
            "sciplex3", "SrivatsanTrapnell2020_sciplex3.h5ad", None, "drug",
            "sci-Plex3 (Srivatsan et al. 2020): 188 compounds in A549, K562 and MCF7, 799,317 "
            "cells. Kept: cells at 10 uM (dose_value 10000 nM) plus all vehicle controls, as in "
            "the paper. No checksum is published: the sha256 of the first download is recorded.",
            test_perturbations=("Dacinostat", "Givinostat", "Belinostat", "Hesperadin",
                                "Quisinostat", "Alvespimycin", "Tanespimycin", "TAK-901",
                                "Flavopiridol"),
            paper_table="Table 1", dose_key="dose_value"),
        _scperturb(
            "sciplex4", "SrivatsanTrapnell2020_sciplex4.h5ad", None, "drug",
            "sci-Plex4 (Srivatsan et al. 2020): HDAC inhibitors in A549 and MCF7, some cells "
            "co-treated with a second compound (perturbation_2). Kept: single-drug cells, i.e. "
            "perturbation_2 absent or control-like, at every dose. No checksum is published: "
            "the sha256 of the first download is recorded.",
            test_perturbations=("Dacinostat", "CUDC-907", "Quisinostat", "Panobinostat",
                                "Givinostat"),
            paper_table="Table 2", dose_key="dose_value"),
        _scperturb(
            "replogle_k562", "ReplogleWeissman2022_K562_essential.h5ad",
            "d8cba17576d1a8afc0f7d71b79cad0f7", "genetic",
            "Replogle et al. 2022 genome-scale Perturb-seq, K562 essential-gene CRISPRi screen "
            "(one cell line); 'control' = non-targeting guides. Held out: the 39 knockdowns of the "
            "paper's authors' K562 split (hliulab/cycleCDR), whose cells are split into a read "
            "and a scored half.",
            test_perturbations=_REPLOGLE_K562_TEST,
            paper_table="Table 3"),
        _scperturb(
            "replogle_rpe1", "ReplogleWeissman2022_rpe1.h5ad",
            "cc7f1ec50aeb3a3e1b4a6cfa713d80fa", "genetic",
            "Replogle et al. 2022 Perturb-seq, RPE-1 essential-gene CRISPRi screen (one cell "
            "line); 'control' = non-targeting guides. Held out: the 98 knockdowns of the paper's "
            "authors' RPE-1 split (hliulab/cycleCDR), 17 of them also held out in K562.",
            test_perturbations=_REPLOGLE_RPE1_TEST,
            paper_table="Table 3"),
        _scperturb(
            "norman2019", "NormanWeissman2019_filtered.h5ad",
            "c870e6967d91c017d9da827bab183cd6", "combo",
            "Norman et al. 2019 CRISPRa Perturb-seq in K562: single genes and pairs. scPerturb "
            "joins pairs with '_'; they become 'A+B' here (e.g. 'FOSB+CEBPB').",
            paper_table="Table 4", combo_sep="_"),
    ]
}


# ---------------------------------------------------------------------------------------------
# names and paths
# ---------------------------------------------------------------------------------------------

SHIPPED = tuple(name for name, info in REGISTRY.items() if info.shipped)


def names() -> list[str]:
    """All dataset names: the synthetic twins, then the shipped real datasets (``SHIPPED``), then
    the downloaded real datasets."""
    return list(SYNTHETIC) + list(REGISTRY)


def _check_name(name: str) -> str:
    if name in SYNTHETIC or name in REGISTRY:
        return name
    valid = names()
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"Unknown dataset {name!r}.{hint} Valid names: {', '.join(valid)}.")


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a real dataset (synthetic twins have none); its ``shipped``
    field says whether the file is shipped with the repository (``data/real/``) or downloaded."""
    _check_name(name)
    if name in SYNTHETIC:
        raise ValueError(f"{name!r} is a synthetic dataset, generated by xtcdr.synthetic.simulate; "
                         f"only real datasets have a DatasetInfo: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def default_data_dir() -> Path:
    """The cache folder: ``$XTCDR_DATA`` if set, else ``<repo>/data``, else ``./data``."""
    env = os.environ.get("XTCDR_DATA")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / "data"
    return Path.cwd() / "data"


# ---------------------------------------------------------------------------------------------
# loading and downloading
# ---------------------------------------------------------------------------------------------

def load(name: str, *, data_dir: str | Path | None = None, progress: bool = True) -> AnnData:
    """Load a named dataset in the standard schema.

    Parameters
    ----------
    name
        One of :func:`names`.
    data_dir
        Cache folder (default :func:`default_data_dir`); downloaded files go to
        ``<data_dir>/raw/``. Not used by shipped datasets, which are always read from the
        repository's ``data/real/`` folder.
    progress
        Show a download progress bar.

    Returns
    -------
    AnnData with raw counts in ``X``, the standard obs columns and provenance in
    ``uns['xtcdr']``. Synthetic twins are generated (fast, deterministic). Shipped datasets are
    read from ``data/real/`` after checking their sha256 and converted by `xtcdr.realdata`
    (``datlinger2021_jurkat``: guides pooled to their gene, ``cell_type`` = the stimulation state;
    ``papalexi2021_thp1``: top-guide assignment, ambiguous cells removed, ``obs['replicate']``);
    the cells each filter removed are in ``uns['xtcdr']['filters']``. Downloaded datasets are
    downloaded once, checksum-verified, then converted as :func:`convert` does. Only the cells
    that the conversion keeps are read from the file (sci-Plex3: the 10 uM cells and the
    controls, about a quarter of the file): obs is read first, then the kept rows of ``X``
    (:func:`read_h5ad_rows`), so the full matrix is never in memory.

    Raises
    ------
    ValueError
        When a shipped file's sha256 differs from the registered one (restore it from git).
    xtcdr.memory.InsufficientMemoryError
        When the kept counts need more memory than the machine has available.
    """
    _check_name(name)
    if name in SYNTHETIC:
        from .synthetic import simulate  # imported here: the simulator is optional for real data
        adata = simulate(name)
        validate_schema(adata)
        return adata
    if REGISTRY[name].shipped:
        return realdata.load_shipped(REGISTRY[name])
    path, checksum = _fetch(name, data_dir, progress)
    adata = _read_converted(name, path)
    adata.uns["xtcdr"]["checksum"] = checksum
    return adata


def fetch(name: str, data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Download a real dataset once into ``<data_dir>/raw/`` and verify it; return its path.

    For a shipped dataset: the path of its file in ``data/real/`` once its sha256 is verified
    (nothing is downloaded).

    Raises
    ------
    ValueError
        On a checksum mismatch (the bad download is removed) or a file that no longer matches
        the sha256 recorded on its first download (delete it to download it again).
    ConnectionError
        When the download fails.
    """
    if dataset_info(name).shipped:
        return realdata.shipped_path(REGISTRY[name])
    return _fetch(name, data_dir, progress)[0]


def _fetch(name: str, data_dir, progress: bool) -> tuple[Path, str]:
    import pooch

    info = dataset_info(name)
    if info.shipped:
        raise ValueError(f"{name!r} is shipped in data/real/ and never downloaded; use load({name!r}).")
    raw = Path(data_dir if data_dir is not None else default_data_dir()) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    target = raw / info.filename
    known_hash = f"md5:{info.md5}" if info.md5 else None
    fix_by_hand = (f"download {info.url} yourself and put it at {target}"
                   + (f" (its md5 must be {info.md5})" if info.md5 else ""))
    existed = target.exists()
    try:
        path = Path(pooch.retrieve(info.url, known_hash=known_hash, fname=info.filename,
                                   path=raw, progressbar=progress))
    except ValueError as err:
        if "hash" not in str(err).lower():
            raise ValueError(f"Dataset {name!r}: could not download {info.url} ({err}); "
                             f"{fix_by_hand}.") from err
        # pooch checks the hash on a temporary file and deletes it on mismatch; a stale file
        # under the final name would fail the same check again, remove it all the same.
        target.unlink(missing_ok=True)
        raise ValueError(
            f"Dataset {name!r}: the file downloaded from {info.url} does not match its published "
            f"checksum {known_hash} ({err}). The bad file was removed. Run load({name!r}) again; "
            f"if it keeps failing, {fix_by_hand}.") from err
    except OSError as err:  # requests' errors are OSErrors
        raise ConnectionError(
            f"Dataset {name!r}: could not download {info.url} ({type(err).__name__}: {err}). "
            f"Check the internet connection and run load({name!r}) again, or {fix_by_hand}."
        ) from err
    if known_hash is not None:
        return path, known_hash
    return path, "sha256:" + _verify_recorded_sha256(info, path, fresh=not existed)


def _verify_recorded_sha256(info: DatasetInfo, path: Path, fresh: bool) -> str:
    """Record the sha256 of a first download; verify the file against it afterwards."""
    book = path.parent / "checksums.json"
    records = json.loads(book.read_text()) if book.exists() else {}
    digest = realdata.file_sha256(path)
    recorded = records.get(info.filename, {}).get("sha256")
    if recorded is None:
        records[info.filename] = {
            "sha256": digest, "url": info.url, "size": path.stat().st_size,
            "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = book.with_name(book.name + ".tmp")
        tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, book)  # atomic: a crash never leaves a half-written record
        return digest
    if digest == recorded:
        return digest
    if fresh:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"Dataset {info.name!r}: the file just downloaded from {info.url} has sha256 {digest}, "
            f"but the first download recorded {recorded} in {book}. The download was removed. "
            f"Run load({info.name!r}) again; if the source file changed on purpose, delete the "
            f"entry {info.filename!r} from {book}.")
    raise ValueError(
        f"Dataset {info.name!r}: {path} has sha256 {digest}, but its first download recorded "
        f"{recorded} in {book}; the file is corrupt or was changed. Delete {path} and run "
        f"load({info.name!r}) again to download it afresh.")


# ---------------------------------------------------------------------------------------------
# conversion of the registered datasets
# ---------------------------------------------------------------------------------------------

def convert(name: str, adata: AnnData, *, copy: bool = True) -> AnnData:
    """Convert an AnnData in a downloaded dataset's source schema (scPerturb) to the standard one.

    Applies the dataset's cell filter (sci-Plex3: 10 uM plus controls; sci-Plex4: single-drug
    cells), drops cells without a perturbation label, then maps obs with :func:`from_anndata`.
    ``copy=False`` lets the result share ``X`` with ``adata``. Shipped datasets have their own
    conversion: use :func:`load`.
    """
    if dataset_info(name).shipped:
        raise ValueError(f"{name!r} is a shipped dataset with its own conversion "
                         f"(xtcdr.realdata); use xtcdr.datasets.load({name!r}).")
    keep, notes = _cell_mask(name, adata)
    subset = adata if keep.all() else adata[keep]
    return _convert_kept(name, subset, notes, copy=copy)


def _cell_mask(name: str, adata: AnnData) -> tuple[np.ndarray, dict]:
    """The cells :func:`convert` keeps (boolean mask) and the notes for ``uns['xtcdr']``.

    Reads only ``adata.obs`` and ``adata.n_obs``, so ``adata`` may hold no ``X``.
    """
    info = dataset_info(name)
    require_columns(adata, [info.perturbation_key])
    keep = np.ones(adata.n_obs, dtype=bool)
    notes: dict[str, object] = {"n_cells_source": int(adata.n_obs)}

    labelled = adata.obs[info.perturbation_key].notna().to_numpy()
    if not labelled.all():
        notes["dropped_unlabelled"] = int((~labelled).sum())
        warnings.warn(f"{name}: dropped {int((~labelled).sum())} cells without a "
                      f"{info.perturbation_key!r} label.", stacklevel=3)
    keep &= labelled

    cell_filter = _CELL_FILTERS.get(name)
    if cell_filter is not None:
        keep &= cell_filter(adata, info, notes)
    return keep, notes


def _convert_kept(name: str, subset: AnnData, notes: dict, *, copy: bool) -> AnnData:
    """The standard schema of the kept cells ``subset`` with the dataset's provenance."""
    info = dataset_info(name)
    out = standardize(
        subset, perturbation_key=info.perturbation_key, cell_type_key=info.cell_type_key,
        control_value=info.control_value, dose_key=info.dose_key, combo_sep=info.combo_sep,
        source=f"{_SCPERTURB}: {info.filename}", copy=copy)
    out.uns["xtcdr"].update(dataset=name, url=info.url, kind=info.kind, **notes)
    out.uns["xtcdr"]["n_cells_kept"] = int(out.n_obs)
    if info.test_perturbations:
        _record_test_perturbations(out, info)
    return out


def _read_converted(name: str, path: Path) -> AnnData:
    """``convert(name, anndata.read_h5ad(path))``, reading from ``X`` only the kept cells.

    obs and var are read first, the cells to keep are chosen from obs (:func:`_cell_mask`),
    then only their rows of ``X`` are read (:func:`read_h5ad_rows`). Files in another layout
    (CSC ``X``, obs in a pre-0.7 anndata encoding) are read whole with ``anndata.read_h5ad``.
    """
    import anndata
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        encoding = matrix_encoding(f["X"]) if "X" in f else None
        readable = (encoding in ("csr_matrix", "array")
                    and all(h5_attr(f[k], "encoding-type") == "dataframe" for k in ("obs", "var")))
        if readable:
            obs, var = read_elem(f["obs"]), read_elem(f["var"])
        else:
            x_bytes = stored_bytes(f["X"]) if "X" in f else 0
    if not readable:
        if encoding == "csc_matrix":
            warnings.warn(f"{path.name}: X is stored by columns (CSC), so the kept cells cannot "
                          f"be read alone; the whole matrix is read ({x_bytes / 1e9:.1f} GB), "
                          f"then filtered.", stacklevel=3)
        memory.require(x_bytes, f"Reading the whole count matrix of {path.name}",
                       "Free memory, use a machine with more memory, or store X by rows (CSR): "
                       "then only the kept cells are read.")
        return convert(name, anndata.read_h5ad(path), copy=False)
    keep, notes = _cell_mask(name, AnnData(obs=obs, var=var))
    subset = AnnData(X=read_h5ad_rows(path, keep), obs=obs[keep], var=var)
    return _convert_kept(name, subset, notes, copy=False)



def _record_test_perturbations(adata: AnnData, info: DatasetInfo) -> None:
    """Store the paper's held-out list as the dataset's own labels in uns['xtcdr'].

    ``xtcdr.pairing.assign_split`` holds out ``uns['xtcdr']['test_perturbations']`` by default.
    """
    labels = sorted(set(adata.obs.loc[~adata.obs["is_control"], "perturbation"]))
    found = _match(info.test_perturbations, labels)
    missing = [w for w, hits in found.items() if not hits]
    if missing:
        warnings.warn(f"{info.name}: the paper's held-out perturbation(s) {missing} are not in "
                      f"the data; they are left out of uns['xtcdr']['test_perturbations'].",
                      stacklevel=3)
    adata.uns["xtcdr"]["test_perturbations"] = [h for hits in found.values() for h in hits]
    adata.uns["xtcdr"]["test_perturbations_paper"] = list(info.test_perturbations)
    adata.uns["xtcdr"]["test_perturbations_missing"] = missing


def _is_control_label(values: pd.Series, control_value: str) -> np.ndarray:
    return (values.astype(str).str.strip() == control_value).to_numpy()


def _keep_10_micromolar(adata: AnnData, info: DatasetInfo, notes: dict) -> np.ndarray:
    """sci-Plex3: cells treated at 10 uM (scPerturb: dose_value 10000, dose_unit nM) + controls."""
    require_columns(adata, [info.dose_key])
    obs = adata.obs
    dose = pd.to_numeric(obs[info.dose_key].astype(str).str.strip(), errors="coerce").to_numpy()
    if "dose_unit" in obs:
        units = obs["dose_unit"].astype(str).str.strip().str.lower()
        units = units.where(~obs["dose_unit"].isna() & (units != "") & (units != "nan"), "nm")
        unknown = sorted(set(units.unique()) - set(_TO_MICROMOLAR))
        if unknown:
            raise ValueError(f"{info.name}: unknown dose_unit values {unknown}; known units: "
                             f"{sorted(_TO_MICROMOLAR)}. Convert the doses before calling convert.")
        factor = units.map(_TO_MICROMOLAR).to_numpy(dtype=float)
    else:
        factor = np.full(adata.n_obs, 1e-3)  # scPerturb's sci-Plex3 doses are in nM
        notes["dose_unit_assumed"] = "nM"
    at_10um = np.isclose(dose * factor, 10.0)
    control = _is_control_label(obs[info.perturbation_key], info.control_value)
    if not (at_10um & ~control).any():
        present = sorted(set(np.round(dose[np.isfinite(dose)], 6).tolist()))[:20]
        raise ValueError(f"{info.name}: no treated cell at 10 uM (dose_value 10000 nM); doses "
                         f"present: {present}. Check the {info.dose_key!r} and dose_unit columns.")
    notes["cell_filter"] = "treated cells at 10 uM plus all controls"
    return at_10um | control


def _keep_single_drug(adata: AnnData, info: DatasetInfo, notes: dict) -> np.ndarray:
    """sci-Plex4: cells without a second compound (perturbation_2 absent or control-like)."""
    obs = adata.obs
    if "perturbation_2" not in obs:
        notes["cell_filter"] = "none (no perturbation_2 column)"
        return np.ones(adata.n_obs, dtype=bool)
    second = obs["perturbation_2"]
    single = (second.isna() | second.astype(str).str.strip().str.lower()
              .isin(_NO_SECOND_PERTURBATION)).to_numpy()
    treated = ~_is_control_label(obs[info.perturbation_key], info.control_value)
    if not (single & treated).any():
        warnings.warn(f"{info.name}: every treated cell has a second compound in perturbation_2 "
                      f"(values: {second.astype(str).value_counts().index[:10].tolist()}); "
                      f"the single-drug filter was skipped.", stacklevel=4)
        notes["cell_filter"] = "skipped: no single-drug cells found in perturbation_2"
        return np.ones(adata.n_obs, dtype=bool)
    notes["cell_filter"] = "single-drug cells: perturbation_2 absent or control-like"
    return single


_CELL_FILTERS = {"sciplex3": _keep_10_micromolar, "sciplex4": _keep_single_drug}


def _aliases(label: str) -> set[str]:
    """Lower-case names a source label answers to: 'Quisinostat (JNJ-26481585) 2HCl' ->
    {'quisinostat (jnj-26481585) 2hcl', 'quisinostat', 'jnj-26481585'}."""
    lower = label.lower().strip()
    names = {lower, lower.split("(")[0].strip(), lower.split(" ")[0]}
    names.update(part.strip() for part in re.findall(r"\(([^)]*)\)", lower))
    return {n for n in names if n}


def _match(wanted, labels: list[str]) -> dict[str, list[str]]:
    return {w: [lab for lab in labels if w.lower().strip() in _aliases(lab)] for w in wanted}


def match_perturbations(wanted, available) -> dict[str, list[str]]:
    """Map names such as the paper's drug list onto a dataset's labels.

    sci-Plex labels carry aliases and salts ('Belinostat (PXD101)', 'Flavopiridol HCl'); a
    wanted name matches a label when it equals the label, its base name, its first word or a
    name in brackets (case-insensitive). Raises ValueError naming the unmatched ones.

    Examples
    --------
    >>> match_perturbations(["Belinostat"], ["Belinostat (PXD101)", "control"])
    {'Belinostat': ['Belinostat (PXD101)']}
    """
    labels = [str(a) for a in pd.unique(pd.Series(list(available), dtype=object))]
    result = _match(wanted, labels)
    missing = [w for w, found in result.items() if not found]
    if missing:
        hints = {w: difflib.get_close_matches(w, labels, n=3, cutoff=0.4) for w in missing}
        raise ValueError(f"No label matches {missing}; closest labels: {hints}. "
                         f"Check the names against adata.obs['perturbation'].unique().")
    return result


def concat_lines(adatas: dict[str, AnnData]) -> AnnData:
    """Join datasets of different cell lines (e.g. the two Replogle screens) on their shared genes.

    Each input is in the standard obs schema (from :func:`load`); cells keep their cell type, so
    a perturbation measured in both becomes two conditions. Only the genes present in every
    input are kept (an inner join on ``var_names``).

    Sets
    ----
    ``uns['xtcdr']``: ``dataset`` (the names joined with ``'+'``), ``genes_lost`` (name -> how
    many of its genes are dropped), ``n_genes_shared``, and ``test_perturbations``, the union of
    the inputs' held-out lists (so a knockdown held out in one line is held out in both).
    """
    import anndata

    if len(adatas) < 2:
        raise ValueError(f"concat_lines joins at least two datasets, got {len(adatas)}")
    for adata in adatas.values():
        validate_schema(adata)
    shared = None
    for adata in adatas.values():
        names_here = pd.Index(adata.var_names)
        shared = names_here if shared is None else shared.intersection(names_here, sort=False)
    if len(shared) == 0:
        raise ValueError("the datasets share no gene names; check that var_names use the same "
                         "gene identifiers (symbols or Ensembl ids) in every dataset")
    parts = [a[:, shared] for a in adatas.values()]
    out = anndata.concat(parts, join="inner", label="source_dataset", keys=list(adatas),
                         index_unique="-")
    for column in ("cell_type", "perturbation", "condition"):
        out.obs[column] = out.obs[column].astype(str)
    out.obs = out.obs[list(STANDARD_COLUMNS) + [c for c in out.obs.columns
                                                if c not in STANDARD_COLUMNS]]
    held_out = sorted({str(p) for a in adatas.values()
                       for p in a.uns.get("xtcdr", {}).get("test_perturbations", [])})
    out.uns["xtcdr"] = dict(
        source=" + ".join(str(a.uns.get("xtcdr", {}).get("source", n)) for n, a in adatas.items()),
        dataset="+".join(adatas), version=package_version(),
        genes_lost={n: int(a.n_vars - len(shared)) for n, a in adatas.items()},
        n_genes_shared=int(len(shared)))
    if held_out:
        out.uns["xtcdr"]["test_perturbations"] = held_out
    return out
