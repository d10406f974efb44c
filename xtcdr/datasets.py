"""Named datasets and conversion of any AnnData to the standard xtcdr schema.

Two kinds of names:

- synthetic twins (``SYNTHETIC``), generated on the fly by :func:`xtcdr.synthetic.simulate`;
- real datasets (``REGISTRY``): the scPerturb harmonised h5ad files (Zenodo record 10044268),
  downloaded once with pooch into ``<data_dir>/raw/`` and verified by checksum on every load.

Every loader returns an AnnData with raw counts in ``X`` (as the source gives them) and the
standard obs columns ``cell_type``, ``perturbation``, ``dose``, ``is_control``, ``condition``
(see :func:`from_anndata`). Bring your own data with :func:`from_anndata`.

Checksums: where scPerturb publishes an md5 it is given to pooch, which downloads to a temporary
file and moves it into place only when the md5 matches. Where none is published (sci-Plex), the
sha256 of the first download is recorded in ``<data_dir>/raw/checksums.json`` and every later
load verifies the file against it.
"""
from __future__ import annotations

from dataclasses import dataclass
import datetime
import difflib
import hashlib
import json
import os
from pathlib import Path
import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.utils import make_index_unique

from . import memory

__all__ = [
    "DatasetInfo", "REGISTRY", "SYNTHETIC", "names", "dataset_info", "default_data_dir",
    "load", "fetch", "convert", "from_anndata", "validate_schema", "match_perturbations",
    "STANDARD_COLUMNS", "concat_lines", "read_h5ad_rows",
]

STANDARD_COLUMNS = ("cell_type", "perturbation", "dose", "is_control", "condition")
CONTROL = "control"
SYNTHETIC = ("synthetic_drugs", "synthetic_drugs4", "synthetic_genes", "synthetic_combo")

_ZENODO = "https://zenodo.org/records/10044268/files/{}"
_SCPERTURB = "scPerturb (Peidli et al. 2024), Zenodo record 10044268"
# Component labels that mean "no perturbation" inside a combination such as 'FOSB_ctrl'.
_CONTROL_WORDS = frozenset({"", "control", "ctrl"})
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

    def __post_init__(self):
        if self.kind not in ("drug", "genetic", "combo"):
            raise ValueError(f"DatasetInfo.kind must be 'drug', 'genetic' or 'combo', got {self.kind!r}")
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

REGISTRY: dict[str, DatasetInfo] = {
    info.name: info for info in [
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

def names() -> list[str]:
    """All dataset names: the synthetic twins first, then the real datasets."""
    return list(SYNTHETIC) + list(REGISTRY)


def _check_name(name: str) -> str:
    if name in SYNTHETIC or name in REGISTRY:
        return name
    valid = names()
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"Unknown dataset {name!r}.{hint} Valid names: {', '.join(valid)}.")


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a real dataset (synthetic twins have none)."""
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
        Cache folder (default :func:`default_data_dir`); real files go to ``<data_dir>/raw/``.
    progress
        Show a download progress bar.

    Returns
    -------
    AnnData with raw counts in ``X``, the standard obs columns and provenance in
    ``uns['xtcdr']``. Synthetic twins are generated (fast, deterministic); real datasets are
    downloaded once, checksum-verified, then converted as :func:`convert` does. Only the cells
    that the conversion keeps are read from the file (sci-Plex3: the 10 uM cells and the
    controls, about a quarter of the file): obs is read first, then the kept rows of ``X``
    (:func:`read_h5ad_rows`), so the full matrix is never in memory.

    Raises
    ------
    xtcdr.memory.InsufficientMemoryError
        When the kept counts need more memory than the machine has available.
    """
    _check_name(name)
    if name in SYNTHETIC:
        from .synthetic import simulate  # imported here: the simulator is optional for real data
        adata = simulate(name)
        validate_schema(adata)
        return adata
    path, checksum = _fetch(name, data_dir, progress)
    adata = _read_converted(name, path)
    adata.uns["xtcdr"]["checksum"] = checksum
    return adata


def fetch(name: str, data_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Download a real dataset once into ``<data_dir>/raw/`` and verify it; return its path.

    Raises
    ------
    ValueError
        On a checksum mismatch (the bad download is removed) or a file that no longer matches
        the sha256 recorded on its first download (delete it to download it again).
    ConnectionError
        When the download fails.
    """
    return _fetch(name, data_dir, progress)[0]


def _fetch(name: str, data_dir, progress: bool) -> tuple[Path, str]:
    import pooch

    info = dataset_info(name)
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


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_recorded_sha256(info: DatasetInfo, path: Path, fresh: bool) -> str:
    """Record the sha256 of a first download; verify the file against it afterwards."""
    book = path.parent / "checksums.json"
    records = json.loads(book.read_text()) if book.exists() else {}
    digest = _sha256(path)
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
    """Convert an AnnData in a registered dataset's source schema (scPerturb) to the standard one.

    Applies the dataset's cell filter (sci-Plex3: 10 uM plus controls; sci-Plex4: single-drug
    cells), drops cells without a perturbation label, then maps obs with :func:`from_anndata`.
    ``copy=False`` lets the result share ``X`` with ``adata``.
    """
    keep, notes = _cell_mask(name, adata)
    subset = adata if keep.all() else adata[keep]
    return _convert_kept(name, subset, notes, copy=copy)


def _cell_mask(name: str, adata: AnnData) -> tuple[np.ndarray, dict]:
    """The cells :func:`convert` keeps (boolean mask) and the notes for ``uns['xtcdr']``.

    Reads only ``adata.obs`` and ``adata.n_obs``, so ``adata`` may hold no ``X``.
    """
    info = dataset_info(name)
    _require_columns(adata, [info.perturbation_key])
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
    out = _standardize(
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
        encoding = _matrix_encoding(f["X"]) if "X" in f else None
        readable = (encoding in ("csr_matrix", "array")
                    and all(_attr(f[k], "encoding-type") == "dataframe" for k in ("obs", "var")))
        if readable:
            obs, var = read_elem(f["obs"]), read_elem(f["var"])
        else:
            x_bytes = _stored_bytes(f["X"]) if "X" in f else 0
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


def _attr(node, key: str):
    value = node.attrs.get(key)
    return value.decode() if isinstance(value, bytes) else value


def _matrix_encoding(node) -> str | None:
    """'csr_matrix', 'csc_matrix' or 'array' for an h5ad matrix (also pre-0.7 anndata files)."""
    import h5py

    encoding = _attr(node, "encoding-type")
    if encoding is None and isinstance(node, h5py.Dataset):
        return "array"
    if encoding is None:  # anndata < 0.7 marked sparse groups with h5sparse_format
        encoding = {"csr": "csr_matrix", "csc": "csc_matrix"}.get(_attr(node, "h5sparse_format"))
    return encoding


def _stored_bytes(node) -> int:
    """Bytes of the arrays of an h5 dataset or group once read into memory."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return int(node.size) * node.dtype.itemsize
    return sum(_stored_bytes(child) for child in node.values())


def read_h5ad_rows(path: str | Path, rows, *, key: str = "X", max_values: int = 1 << 24,
                   gap: int = 1 << 14):
    """Read the rows ``rows`` (a boolean mask over the cells) of an h5ad file's matrix, and no other.

    Parameters
    ----------
    path
        An h5ad file.
    rows
        Boolean mask of length ``n_obs``: the cells to read.
    key
        The matrix inside the file (``"X"``, or ``"layers/counts"``).
    max_values
        Stored values per read: the memory used on top of the result is about ``16 *
        max_values`` bytes for a sparse matrix, ``max_values`` values for a dense one.
    gap
        Sparse only: kept rows less than ``gap`` stored values apart are read in one read and
        the values in between dropped (fewer, larger reads).

    Returns
    -------
    The kept rows in file order, as ``scipy.sparse.csr_matrix`` (CSR in the file; scPerturb's
    files) or a numpy array (dense in the file), with the file's dtypes. For CSR, ``indptr`` is
    read first, then only the stored values and column indices of the kept rows.

    Raises
    ------
    ValueError
        For a matrix stored otherwise (CSC: read it with ``anndata.read_h5ad`` and subset) or a
        mask of the wrong length.
    xtcdr.memory.InsufficientMemoryError
        When the kept rows need more memory than is available.
    """
    import h5py

    path = Path(path)
    rows = np.asarray(rows, dtype=bool)
    kept = np.flatnonzero(rows)
    advice = ("Keep fewer cells (a stricter cell filter), free memory, or use a machine with more "
              "memory.")
    with h5py.File(path, "r") as f:
        node = f[key]
        encoding = _matrix_encoding(node)
        shape = tuple(int(n) for n in (node.shape if encoding == "array" else node.attrs["shape"]))
        if rows.shape != (shape[0],):
            raise ValueError(f"rows has shape {rows.shape}; {path.name}:{key} has {shape[0]} cells")
        what = f"Reading {kept.size:,} of the {shape[0]:,} cells of {path.name}"
        if encoding == "array":
            memory.require(kept.size * shape[1] * node.dtype.itemsize, what, advice)
            out = np.empty((kept.size, shape[1]), dtype=node.dtype)
            step = max(1, max_values // max(shape[1], 1))
            for start in range(0, kept.size, step):  # h5py fancy indexing, increasing indices
                out[start:start + step] = node[kept[start:start + step]]
            return out
        if encoding != "csr_matrix":
            raise ValueError(f"{path.name}:{key} is stored as {encoding!r}; reading selected rows "
                             f"needs CSR or a dense array. Read it with anndata.read_h5ad.")
        data_in, indices_in = node["data"], node["indices"]
        indptr = node["indptr"][:]
        lo, hi = indptr[kept], indptr[kept + 1]
        lengths = hi - lo
        out_indptr = np.zeros(kept.size + 1, dtype=indptr.dtype)
        np.cumsum(lengths, out=out_indptr[1:])
        nnz = int(out_indptr[-1])
        memory.require(nnz * (data_in.dtype.itemsize + indices_in.dtype.itemsize)
                       + out_indptr.nbytes, what, advice)
        data = np.empty(nnz, dtype=data_in.dtype)
        indices = np.empty(nnz, dtype=indices_in.dtype)
        # one read per group of kept rows: a new group where the gap to the previous kept row
        # is large or the read would pass a multiple of max_values
        new_read = (lo[1:] - hi[:-1] > gap) | (lo[1:] // max_values != lo[:-1] // max_values)
        bounds = np.r_[0, np.flatnonzero(new_read) + 1, kept.size] if kept.size else []
        for first, last in zip(bounds[:-1], bounds[1:]):
            start, stop = int(lo[first]), int(hi[last - 1])
            out = slice(int(out_indptr[first]), int(out_indptr[last]))
            if stop - start == out.stop - out.start:  # the kept rows are contiguous
                data[out], indices[out] = data_in[start:stop], indices_in[start:stop]
                continue
            before = out_indptr[first:last] - out_indptr[first]
            take = np.arange(out.stop - out.start) + np.repeat(lo[first:last] - start - before,
                                                               lengths[first:last])
            data[out] = data_in[start:stop][take]
            indices[out] = indices_in[start:stop][take]
    return sp.csr_matrix((data, indices, out_indptr), shape=(kept.size, shape[1]))


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
    _require_columns(adata, [info.dose_key])
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


# ---------------------------------------------------------------------------------------------
# conversion of any AnnData
# ---------------------------------------------------------------------------------------------

def from_anndata(adata: AnnData, *, perturbation_key: str, cell_type_key: str | None = None,
                 control_value: str = CONTROL, dose_key: str | None = None,
                 combo_sep: str | None = "+", source: str = "user AnnData") -> AnnData:
    """Return a new AnnData in the standard schema; ``adata`` is left untouched.

    Parameters
    ----------
    adata
        Cells x genes; ``X`` is kept as given (dense becomes float32, sparse stays sparse).
    perturbation_key
        obs column with the perturbation of each cell.
    cell_type_key
        obs column with the cellular context; without it every cell is in context ``"all"``.
    control_value
        Label of unperturbed cells in ``perturbation_key``.
    dose_key
        obs column with doses (numeric or numeric strings); without it ``dose`` is NaN.
    combo_sep
        Separator of combinations in the labels (``'_'`` for scPerturb's Norman file); each
        component is stripped, empty/'control'/'ctrl' components are dropped and the rest joined
        with ``'+'``. ``None`` keeps labels whole (single perturbations only); a '+' inside a
        name then becomes 'plus' ('(+)-JQ1' -> '(plus)-JQ1'), since '+' marks combinations.
    source
        Free text stored in ``uns['xtcdr']['source']``.

    Returns
    -------
    AnnData with var names made unique and obs holding only ``cell_type``, ``perturbation``
    (``'control'`` for controls), ``dose``, ``is_control``, ``condition`` (cell_type + '_' +
    perturbation) and ``perturbation_raw`` (the original label); ``uns['xtcdr']`` records the
    parameters.
    """
    return _standardize(adata, perturbation_key=perturbation_key, cell_type_key=cell_type_key,
                        control_value=control_value, dose_key=dose_key, combo_sep=combo_sep,
                        source=source, copy=True)


def _standardize(adata: AnnData, *, perturbation_key, cell_type_key, control_value, dose_key,
                 combo_sep, source, copy) -> AnnData:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes); "
                         f"pass a dataset with at least one cell and one gene.")
    _require_columns(adata, [k for k in (perturbation_key, cell_type_key, dose_key) if k])
    obs = adata.obs
    raw = _labels(obs, perturbation_key)
    if not (raw == control_value).any():
        top = raw.value_counts().head(10)
        listing = ", ".join(f"{value!r} ({count})" for value, count in top.items())
        raise ValueError(
            f"Control label {control_value!r} not found in obs[{perturbation_key!r}]. Most "
            f"frequent values: {listing}. Pass the label of unperturbed cells as control_value=.")
    perturbation, renamed = _normalise_perturbations(raw, control_value, combo_sep)
    cell_type = _labels(obs, cell_type_key) if cell_type_key else pd.Series("all", index=obs.index)
    dose = (pd.to_numeric(obs[dose_key].astype(str).str.strip(), errors="coerce").astype(float)
            if dose_key else pd.Series(np.nan, index=obs.index))

    X = _checked_matrix(adata.X, copy)
    new_obs = pd.DataFrame({
        "cell_type": cell_type.to_numpy(dtype=object),
        "perturbation": perturbation.to_numpy(dtype=object),
        "dose": dose.to_numpy(dtype=float),
        "is_control": (perturbation == CONTROL).to_numpy(),
        "condition": (cell_type + "_" + perturbation).to_numpy(dtype=object),
        "perturbation_raw": raw.to_numpy(dtype=object),
    }, index=pd.Index(obs.index.astype(str), name=obs.index.name))
    var = adata.var.copy()
    var.index = make_index_unique(var.index.astype(str))
    out = AnnData(X=X, obs=new_obs, var=var)
    if not out.obs_names.is_unique:
        out.obs_names_make_unique()
    out.uns["xtcdr"] = dict(
        source=source, perturbation_key=perturbation_key, cell_type_key=cell_type_key,
        control_value=control_value, dose_key=dose_key, combo_sep=combo_sep,
        version=_package_version())
    if renamed:
        out.uns["xtcdr"]["renamed_perturbations"] = renamed
    return out


def _labels(obs: pd.DataFrame, key: str) -> pd.Series:
    """An obs column as stripped strings; missing labels are an error."""
    column = obs[key]
    missing = int(column.isna().sum())
    if missing:
        raise ValueError(f"obs[{key!r}] has {missing} missing values (NaN); label them or drop "
                         f"those cells first, e.g. adata[adata.obs[{key!r}].notna()].")
    return column.astype(str).str.strip()


def _normalise_perturbations(raw: pd.Series, control_value: str, combo_sep: str | None
                             ) -> tuple[pd.Series, dict[str, str]]:
    """Map control_value to 'control' and re-join combinations with '+', in first-seen order.

    Combinations that list the same components in another order ('B_A' after 'A_B') get the
    name seen first, so they form one condition. '+' means "combination" downstream, so a '+'
    inside one name (drug '(+)-JQ1' when ``combo_sep`` is not '+') becomes 'plus'
    ('(plus)-JQ1'); the renamed labels are returned beside the result.
    """
    renamed: dict[str, str] = {}
    first_seen: dict[frozenset, str] = {}
    mapping: dict[str, str] = {}
    for label in pd.unique(raw):
        if label == control_value:
            mapping[label] = CONTROL
            continue
        parts = [label] if combo_sep is None else label.split(combo_sep)
        parts = [p.strip() for p in parts]
        if any("+" in p for p in parts):
            parts = [p.replace("+", "plus") for p in parts]
            renamed[label] = "+".join(parts)
        parts = [p for p in dict.fromkeys(parts) if p.lower() not in _CONTROL_WORDS
                 and p != control_value]
        if not parts:
            mapping[label] = CONTROL
            continue
        mapping[label] = first_seen.setdefault(frozenset(parts), "+".join(parts))
    return raw.map(mapping), renamed


def _checked_matrix(X, copy: bool):
    """X as float32 if dense, sparse as is; refuse NaN/inf."""
    if sp.issparse(X):
        X = X.copy() if copy else X
        scipy_class = next(c for c in type(X).__mro__ if c.__module__.startswith("scipy"))
        if type(X) is not scipy_class:  # an anndata view class: plain scipy, same arrays
            X = scipy_class(X, copy=False)
        values = X.data
    else:
        X = np.asarray(X)
        X = X.astype(np.float32, copy=copy) if X.dtype.kind in "fiub" else X
        values = X
    if values.dtype.kind == "f":
        n_bad = 0
        flat = values.reshape(values.shape[0], -1) if values.ndim > 1 else values[:, None]
        for start in range(0, flat.shape[0], 4096):  # in blocks: no full-size boolean copy
            n_bad += int((~np.isfinite(flat[start:start + 4096])).sum())
        if n_bad:
            raise ValueError(f"X holds {n_bad} non-finite values (NaN or inf); replace or drop "
                             f"them before conversion, e.g. X[~np.isfinite(X)] = 0.")
    return X


def _require_columns(adata: AnnData, keys) -> None:
    missing = [k for k in keys if k not in adata.obs.columns]
    if missing:
        raise KeyError(f"obs column(s) {missing} not found; columns present: "
                       f"{list(map(str, adata.obs.columns))}. Pass the right column name.")


def _package_version() -> str:
    try:
        from . import __version__
        return str(__version__)
    except ImportError:
        return "0.1.0"


# ---------------------------------------------------------------------------------------------
# helpers for other modules
# ---------------------------------------------------------------------------------------------

def validate_schema(adata: AnnData) -> None:
    """Check that ``adata`` has the standard obs columns and that they agree.

    Raises KeyError listing the missing columns, ValueError when ``is_control`` disagrees with
    ``perturbation == 'control'``.
    """
    missing = [c for c in STANDARD_COLUMNS if c not in adata.obs.columns]
    if missing:
        raise KeyError(
            f"AnnData lacks the standard obs column(s) {missing} (present: "
            f"{list(map(str, adata.obs.columns))}). Build it with xtcdr.datasets.load(name) or "
            f"xtcdr.datasets.from_anndata(adata, perturbation_key=..., cell_type_key=...).")
    is_control = adata.obs["is_control"].to_numpy(dtype=bool)
    says_control = (adata.obs["perturbation"].astype(str) == CONTROL).to_numpy()
    n_bad = int((is_control != says_control).sum())
    if n_bad:
        raise ValueError(f"obs['is_control'] disagrees with obs['perturbation'] == 'control' for "
                         f"{n_bad} cells; recompute it: obs['is_control'] = obs['perturbation'] "
                         f"== 'control'.")


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
        dataset="+".join(adatas), version=_package_version(),
        genes_lost={n: int(a.n_vars - len(shared)) for n, a in adatas.items()},
        n_genes_shared=int(len(shared)))
    if held_out:
        out.uns["xtcdr"]["test_perturbations"] = held_out
    return out
