"""``datasets.load`` reads only the kept cells of an scPerturb file and returns exactly what
``convert(name, anndata.read_h5ad(path))`` returns; memory checks fail with a clear error.

Small files in the scPerturb sci-Plex3 and sci-Plex4 schemas are written to ``tmp_path``; the
download is replaced by that file (nothing is downloaded).
"""
from __future__ import annotations

import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from xtcdr import datasets, memory
from xtcdr.datasets import convert, load, read_h5ad_rows
from xtcdr.preprocess import preprocess

N_CELLS, N_GENES = 360, 40
LINES = ["A549", "K562", "MCF7"]
DRUGS = ["Dacinostat (LAQ824)", "Givinostat (ITF2357)", "Belinostat (PXD101)", "Hesperadin",
         "Quisinostat (JNJ-26481585) 2HCl", "Alvespimycin (17-DMAG) HCl", "Tanespimycin (17-AAG)",
         "TAK-901", "Flavopiridol HCl", "(+)-JQ1", "Compound-011", "Compound-012"]


def _counts(n_cells: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.poisson(rng.gamma(0.3, 2.0, N_GENES), size=(n_cells, N_GENES)).astype(np.float32)
    dense[rng.random(n_cells) < 0.05] = 0          # some empty cells
    return sp.csr_matrix(dense)


def _write(obs: dict, path, seed=0, layout="csr"):
    """An h5ad like scPerturb's: categorical string columns (anndata's default), counts in X."""
    n = len(next(iter(obs.values())))
    frame = pd.DataFrame(obs, index=[f"cell{i:04d}" for i in range(n)])
    var = pd.DataFrame({"ensembl_id": [f"ENSG{j:011d}" for j in range(N_GENES)]},
                       index=pd.Index([f"GENE{j}" for j in range(N_GENES)], name="gene_symbol"))
    X = _counts(n, seed)
    X = {"csr": X, "csc": X.tocsc(), "dense": X.toarray()}[layout]
    adata = anndata.AnnData(X, obs=frame, var=var)
    adata.uns["source"] = "test"
    adata.write_h5ad(path)
    return path


def sciplex3_file(path, layout="csr", seed=0):
    rng = np.random.default_rng(seed)
    perturbation = rng.choice(DRUGS + ["control"], N_CELLS,
                              p=[0.9 / len(DRUGS)] * len(DRUGS) + [0.1])
    dose = rng.choice([10.0, 100.0, 1000.0, 10000.0], N_CELLS)
    control = perturbation == "control"
    obs = dict(perturbation=perturbation, cell_line=rng.choice(LINES, N_CELLS),
               dose_value=np.where(control, 0.0, dose), dose_unit="nM",
               nperts=(~control).astype(int), ncounts=rng.integers(500, 3000, N_CELLS).astype(float),
               ngenes=rng.integers(100, 900, N_CELLS), celltype="cells", cancer=True,
               organism="human", perturbation_type="drug", time=24.0)
    return _write(obs, path, seed, layout)


def sciplex4_file(path, seed=1):
    rng = np.random.default_rng(seed)
    perturbation = rng.choice(["control", "Dacinostat", "CUDC-907", "Quisinostat",
                               "Panobinostat", "Givinostat"], N_CELLS).astype(object)
    perturbation[rng.random(N_CELLS) < 0.03] = np.nan     # unlabelled cells are dropped
    second = rng.choice(["control", "acetate", "DMSO", "pyruvate"], N_CELLS)
    obs = dict(perturbation=pd.Categorical(perturbation), perturbation_2=second,
               cell_line=rng.choice(["A549", "MCF7"], N_CELLS),
               dose_value=rng.choice(["10", "100", "1000", "10000"], N_CELLS),
               dose_value_2=rng.choice(["0", "100"], N_CELLS), nperts=1)
    return _write(obs, path, seed)


def _load(name, path, monkeypatch):
    """``datasets.load(name)`` with the download replaced by ``path``."""
    monkeypatch.setattr(datasets, "_fetch", lambda *a, **k: (path, "sha256:test"))
    return load(name, progress=False)


def _assert_same(streamed, reference):
    """Same X (values, sparsity pattern, dtype), obs, var and uns['xtcdr'] but the checksum."""
    assert type(streamed.X) is type(reference.X)
    assert streamed.X.dtype == reference.X.dtype
    if sp.issparse(reference.X):
        a, b = streamed.X, reference.X
        assert a.shape == b.shape and a.has_canonical_format == b.has_canonical_format
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)
    else:
        np.testing.assert_array_equal(streamed.X, reference.X)
    pd.testing.assert_frame_equal(streamed.obs, reference.obs)
    pd.testing.assert_frame_equal(streamed.var, reference.var)
    ours = dict(streamed.uns["xtcdr"])
    assert ours.pop("checksum") == "sha256:test"      # load adds it; convert does not
    assert ours == reference.uns["xtcdr"]
    assert set(streamed.uns) == set(reference.uns) == {"xtcdr"}


@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_streaming_sciplex3_equals_read_then_filter(tmp_path, monkeypatch, layout):
    path = sciplex3_file(tmp_path / "sciplex3.h5ad", layout)
    reference = convert("sciplex3", anndata.read_h5ad(path), copy=False)

    def no_full_read(*args, **kwargs):
        raise AssertionError("load read the whole file")

    monkeypatch.setattr(anndata, "read_h5ad", no_full_read)
    streamed = _load("sciplex3", path, monkeypatch)
    _assert_same(streamed, reference)
    kept = reference.n_obs
    assert 0 < kept < N_CELLS / 2 and streamed.uns["xtcdr"]["n_cells_source"] == N_CELLS
    assert len(streamed.uns["xtcdr"]["test_perturbations"]) == 9


def test_streaming_sciplex4_equals_read_then_filter(tmp_path, monkeypatch):
    path = sciplex4_file(tmp_path / "sciplex4.h5ad")
    with pytest.warns(UserWarning, match="without a 'perturbation' label"):
        reference = convert("sciplex4", anndata.read_h5ad(path), copy=False)
    with pytest.warns(UserWarning, match="without a 'perturbation' label"):
        streamed = _load("sciplex4", path, monkeypatch)
    _assert_same(streamed, reference)
    assert streamed.uns["xtcdr"]["dropped_unlabelled"] > 0


def test_csc_file_falls_back_with_a_warning(tmp_path, monkeypatch):
    path = sciplex3_file(tmp_path / "sciplex3_csc.h5ad", "csc")
    reference = convert("sciplex3", anndata.read_h5ad(path), copy=False)
    with pytest.warns(UserWarning, match="CSC"):
        streamed = _load("sciplex3", path, monkeypatch)
    _assert_same(streamed, reference)


@pytest.mark.parametrize("max_values,gap", [(1 << 24, 1 << 14), (64, 0), (1, 0), (500, 10**9)])
def test_read_h5ad_rows_any_read_size(tmp_path, max_values, gap):
    path = sciplex3_file(tmp_path / "x.h5ad")
    full = anndata.read_h5ad(path).X
    rng = np.random.default_rng(3)
    for rows in (rng.random(N_CELLS) < 0.3, np.ones(N_CELLS, bool), np.zeros(N_CELLS, bool),
                 np.r_[np.ones(10, bool), np.zeros(N_CELLS - 10, bool)]):
        got = read_h5ad_rows(path, rows, max_values=max_values, gap=gap)
        want = full[rows]
        assert isinstance(got, sp.csr_matrix) and got.shape == want.shape
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)
    with pytest.raises(ValueError, match="cells"):
        read_h5ad_rows(path, np.ones(N_CELLS + 1, bool))


# ------------------------------------------------------------------------- memory checks

def _little_memory(monkeypatch, nbytes=1000):
    monkeypatch.delenv("XTCDR_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: nbytes)


def test_load_says_how_much_memory_it_needs(tmp_path, monkeypatch):
    path = sciplex3_file(tmp_path / "sciplex3.h5ad")
    _little_memory(monkeypatch)
    with pytest.raises(memory.InsufficientMemoryError) as err:
        _load("sciplex3", path, monkeypatch)
    message = str(err.value)
    assert "needs about" in message and "available" in message and "0.0 GB" in message
    assert "sciplex3.h5ad" in message and "machine with more memory" in message
    assert isinstance(err.value, MemoryError)
    monkeypatch.setenv("XTCDR_MEMORY_CHECK", "0")    # switched off: loads
    assert _load("sciplex3", path, monkeypatch).n_obs > 0


def test_preprocess_says_how_much_memory_the_dense_matrix_needs(tmp_path, monkeypatch):
    path = sciplex3_file(tmp_path / "sciplex3.h5ad")
    raw = _load("sciplex3", path, monkeypatch)
    n_cells = raw.n_obs
    _little_memory(monkeypatch, nbytes=n_cells * 10 * 4)   # room for 10 genes, not 20
    with pytest.raises(memory.InsufficientMemoryError) as err:
        preprocess(raw, n_top_genes=20)
    message = str(err.value)
    assert f"{n_cells:,} cells x 20 genes" in message and "n_top_genes" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert preprocess(raw, n_top_genes=10).n_vars == 10


def test_available_bytes_reads_meminfo_then_psutil(monkeypatch):
    """MemAvailable (kB) of /proc/meminfo in bytes; without it psutil's figure; without both None."""
    import io
    import sys
    import types

    meminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    1234567 kB\n"

    def reads(text):
        def fake_open(path, *args, **kwargs):
            return io.StringIO(text) if path == "/proc/meminfo" else open(path, *args, **kwargs)
        return fake_open

    def unreadable(path, *args, **kwargs):
        raise OSError("no /proc here")

    fake_psutil = types.SimpleNamespace(virtual_memory=lambda: types.SimpleNamespace(available=987_654_321))
    monkeypatch.setattr(memory, "open", reads(meminfo), raising=False)
    assert memory.available_bytes() == 1234567 * 1024
    monkeypatch.setitem(sys.modules, "psutil", fake_psutil)
    monkeypatch.setattr(memory, "open", reads(meminfo.replace("MemAvailable", "Cached")), raising=False)
    assert memory.available_bytes() == 987_654_321          # an old kernel: no MemAvailable line
    monkeypatch.setattr(memory, "open", unreadable, raising=False)
    assert memory.available_bytes() == 987_654_321
    monkeypatch.setitem(sys.modules, "psutil", None)         # import psutil raises ImportError
    assert memory.available_bytes() is None
