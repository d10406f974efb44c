"""Tests of xtcdr.datasets on tiny in-memory fixtures and a download served on 127.0.0.1."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
from pathlib import Path
import socket
import threading

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from xtcdr import datasets
from xtcdr.datasets import DatasetInfo, convert, from_anndata, load, validate_schema

N_CELLS, N_GENES = 60, 30


def _counts(n_cells=N_CELLS, n_genes=N_GENES, seed=0, sparse=True):
    counts = np.random.default_rng(seed).poisson(2.0, size=(n_cells, n_genes)).astype(np.float32)
    return sp.csr_matrix(counts) if sparse else counts


def _adata(obs: dict, seed=0, **kwargs) -> AnnData:
    n = len(next(iter(obs.values())))
    frame = pd.DataFrame(obs, index=[f"cell{i}" for i in range(n)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(N_GENES)])
    return AnnData(_counts(n, N_GENES, seed, **kwargs), obs=frame, var=var)


def _cycle(values, n=N_CELLS):
    return [values[i % len(values)] for i in range(n)]


def scperturb_sciplex3(dose_dtype=float):
    """sci-Plex3 in scPerturb's schema: doses in nM, vehicle cells labelled 'control'."""
    drugs = ["control", "Dacinostat (LAQ824)", "Givinostat (ITF2357)", "Belinostat (PXD101)",
             "Hesperadin", "Quisinostat (JNJ-26481585) 2HCl", "Alvespimycin (17-DMAG) HCl",
             "Tanespimycin (17-AAG)", "TAK-901", "Flavopiridol HCl", "(+)-JQ1"]
    perturbation = _cycle(drugs)
    doses = _cycle([10.0, 100.0, 1000.0, 10000.0, 10000.0], N_CELLS)
    dose = [0.0 if p == "control" else d for p, d in zip(perturbation, doses)]
    obs = dict(perturbation=perturbation, cell_line=_cycle(["A549", "K562", "MCF7"]),
               dose_value=[dose_dtype(d) for d in dose], dose_unit="nM",
               nperts=[0 if p == "control" else 1 for p in perturbation],
               ncounts=np.arange(N_CELLS), ngenes=np.arange(N_CELLS), perturbation_type="drug")
    return _adata(obs)


def scperturb_sciplex4():
    perturbation = _cycle(["control", "Dacinostat", "CUDC-907", "Quisinostat", "Panobinostat",
                           "Givinostat"])
    second = _cycle(["control", "control", "acetate", np.nan, "DMSO"])
    obs = dict(perturbation=perturbation, perturbation_2=second,
               cell_line=_cycle(["A549", "MCF7"]),
               dose_value=[str(d) for d in _cycle([10, 100, 1000, 10000])],
               dose_value_2=_cycle(["0", "100"]), nperts=1)
    return _adata(obs)


def scperturb_norman():
    labels = ["control", "FOSB", "CEBPB", "FOSB_CEBPB", "CEBPB_FOSB", "ZBTB10_DLX2", "DLX2_ctrl"]
    perturbation = _cycle(labels)
    obs = dict(perturbation=perturbation, cell_line="K562",
               nperts=[0 if p == "control" else p.count("_") + 1 for p in perturbation],
               ncounts=1.0, perturbation_type="CRISPRa")
    return _adata(obs)


def scperturb_replogle(cell_line="K562"):
    obs = dict(perturbation=_cycle(["control", "POLR2A", "RPL3", "MYC"]), cell_line=cell_line,
               nperts=1, ncounts=1.0, percent_mito=0.1)
    return _adata(obs)


def _check_schema(adata):
    validate_schema(adata)
    obs = adata.obs
    assert set(obs.columns) == set(datasets.STANDARD_COLUMNS) | {"perturbation_raw"}
    assert (obs["condition"] == obs["cell_type"] + "_" + obs["perturbation"]).all()
    assert (obs["is_control"] == (obs["perturbation"] == "control")).all()
    assert obs["dose"].dtype == float
    assert adata.var_names.is_unique


# ------------------------------------------------------------------------- registry and names

def test_registry_entries():
    assert list(datasets.REGISTRY) == ["datlinger2021_jurkat", "papalexi2021_thp1", "sciplex3",
                                       "sciplex4", "replogle_k562", "replogle_rpe1", "norman2019"]
    assert datasets.SHIPPED == ("datlinger2021_jurkat", "papalexi2021_thp1")
    for name, info in datasets.REGISTRY.items():
        assert info.name == name
        if info.shipped:                      # in the repository, never downloaded
            assert info.url == "" and info.md5 is None and len(info.sha256) == 64
            assert info.filename == f"{name}.h5ad" and info.citation and info.origin
            continue
        assert info.url == f"https://zenodo.org/records/10044268/files/{info.filename}"
        assert info.md5 is None or len(info.md5) == 32
    assert datasets.REGISTRY["norman2019"].md5 == "c870e6967d91c017d9da827bab183cd6"
    assert datasets.REGISTRY["sciplex3"].md5 is None
    assert "TAK-901" in datasets.REGISTRY["sciplex3"].test_perturbations
    assert len(datasets.REGISTRY["sciplex3"].test_perturbations) == 9
    assert datasets.REGISTRY["sciplex4"].test_perturbations == (
        "Dacinostat", "CUDC-907", "Quisinostat", "Panobinostat", "Givinostat")
    k562 = datasets.REGISTRY["replogle_k562"].test_perturbations
    rpe1 = datasets.REGISTRY["replogle_rpe1"].test_perturbations
    assert len(k562) == len(set(k562)) == 39 and len(rpe1) == len(set(rpe1)) == 98
    assert len(set(k562) & set(rpe1)) == 17 and {"GATA1", "SARS"} <= set(k562)
    with pytest.raises(Exception):
        datasets.REGISTRY["sciplex3"].md5 = "x"  # frozen


def test_names_synthetic_first_then_shipped_then_downloaded():
    names = datasets.names()
    n_synthetic, n_shipped = len(datasets.SYNTHETIC), len(datasets.SHIPPED)
    assert names[:n_synthetic] == list(datasets.SYNTHETIC)
    assert names[n_synthetic:n_synthetic + n_shipped] == list(datasets.SHIPPED)
    assert names[n_synthetic:] == list(datasets.REGISTRY)
    assert all(datasets.dataset_info(n).shipped for n in datasets.SHIPPED)
    assert not any(datasets.dataset_info(n).shipped for n in names[n_synthetic + n_shipped:])


def test_shipped_info_needs_its_sha256():
    with pytest.raises(ValueError, match="needs its sha256"):
        DatasetInfo(name="x", url="", filename="x.h5ad", md5=None, kind="genetic",
                    description="", shipped=True)


def test_dataset_modules_import_no_cycle():
    """datasets imports realdata, schema and h5ad_rows; none of them imports datasets back."""
    import ast

    package = Path(datasets.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else
                            [a.name for a in node.names])
        graph[path.stem] = deps
    for start in ("datasets", "realdata", "schema", "h5ad_rows", "pairing", "config"):
        seen, stack = set(), [start]
        while stack:
            for dep in graph.get(stack.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        assert start not in seen, f"{start} imports itself back through {sorted(seen)}"
    assert {"realdata", "schema", "h5ad_rows"} <= graph["datasets"]
    assert datasets.read_h5ad_rows.__module__ == "xtcdr.h5ad_rows"      # re-exported


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load("sciplex")
    message = str(err.value)
    assert "'sciplex'" in message and "Did you mean" in message
    for name in datasets.names():
        assert name in message


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XTCDR_DATA", str(tmp_path))
    assert datasets.default_data_dir() == tmp_path
    monkeypatch.delenv("XTCDR_DATA")
    repo = datasets.default_data_dir().parent
    assert datasets.default_data_dir().name == "data" and (repo / "pyproject.toml").exists()


# ------------------------------------------------------------------------- registry conversions

@pytest.mark.parametrize("dose_dtype", [float, str, "category"])
def test_sciplex3_keeps_10uM_and_controls(dose_dtype):
    source = scperturb_sciplex3(str if dose_dtype == "category" else dose_dtype)
    if dose_dtype == "category":
        source.obs["dose_value"] = source.obs["dose_value"].astype("category")
    before = source.obs.copy()
    adata = convert("sciplex3", source)
    _check_schema(adata)
    treated = adata.obs[~adata.obs["is_control"]]
    assert (treated["dose"] == 10000.0).all()
    n_expected = int(((before["dose_value"].astype(float) == 10000)
                      | (before["perturbation"] == "control")).sum())
    assert adata.n_obs == n_expected
    assert adata.obs["is_control"].sum() == (before["perturbation"] == "control").sum()
    assert set(adata.obs["cell_type"]) == {"A549", "K562", "MCF7"}
    # drug names are never split, and '+' (which marks combinations) becomes 'plus'
    assert "(plus)-JQ1" in set(adata.obs["perturbation"])
    assert adata.uns["xtcdr"]["renamed_perturbations"] == {"(+)-JQ1": "(plus)-JQ1"}
    held_out = adata.uns["xtcdr"]["test_perturbations"]
    assert len(held_out) == 9 and set(held_out) <= set(adata.obs["perturbation"])
    assert "Quisinostat (JNJ-26481585) 2HCl" in held_out
    assert adata.uns["xtcdr"]["dataset"] == "sciplex3"
    assert type(adata.X) is sp.csr_matrix  # sparse stays sparse, never an anndata view class
    pd.testing.assert_frame_equal(source.obs, before)  # input untouched


def test_missing_paper_test_drug_warns():
    source = scperturb_sciplex3()
    source.obs["perturbation"] = source.obs["perturbation"].replace("Hesperadin", "Other")
    with pytest.warns(UserWarning, match="Hesperadin"):
        adata = convert("sciplex3", source)
    assert len(adata.uns["xtcdr"]["test_perturbations"]) == 8


def test_sciplex3_micromolar_units_and_missing_dose():
    source = scperturb_sciplex3()
    source.obs["dose_value"] = source.obs["dose_value"] / 1000
    source.obs["dose_unit"] = "uM"
    assert (convert("sciplex3", source).obs.query("~is_control")["dose"] == 10.0).all()
    source.obs["dose_value"] = 1.0
    with pytest.raises(ValueError, match="no treated cell at 10 uM"):
        convert("sciplex3", source)


def test_sciplex4_keeps_single_drug_cells():
    source = scperturb_sciplex4()
    adata = convert("sciplex4", source)
    _check_schema(adata)
    second = source.obs["perturbation_2"].astype(str).str.lower()
    single = source.obs["perturbation_2"].isna() | second.isin(["control", "dmso"])
    assert adata.n_obs == single.sum()
    assert set(adata.obs_names) == set(source.obs_names[single.to_numpy()])
    assert adata.obs["is_control"].any()
    assert set(adata.obs["dose"].dropna()) <= {10.0, 100.0, 1000.0, 10000.0}
    assert sorted(adata.uns["xtcdr"]["test_perturbations"]) == sorted(
        datasets.REGISTRY["sciplex4"].test_perturbations)


def test_sciplex4_drops_unlabelled_cells_with_warning():
    source = scperturb_sciplex4()
    source.obs.loc["cell1", "perturbation"] = np.nan
    with pytest.warns(UserWarning, match="without a 'perturbation' label"):
        adata = convert("sciplex4", source)
    assert "cell1" not in adata.obs_names


def test_norman_combinations_use_plus():
    adata = convert("norman2019", scperturb_norman())
    _check_schema(adata)
    perturbations = set(adata.obs["perturbation"])
    assert perturbations == {"control", "FOSB", "CEBPB", "FOSB+CEBPB", "ZBTB10+DLX2", "DLX2"}
    raw_reversed = adata.obs["perturbation_raw"] == "CEBPB_FOSB"
    assert (adata.obs.loc[raw_reversed, "perturbation"] == "FOSB+CEBPB").all()
    assert set(adata.obs["condition"]) >= {"K562_FOSB+CEBPB", "K562_control"}


@pytest.mark.parametrize("name, cell_line", [("replogle_k562", "K562"), ("replogle_rpe1", "RPE1")])
def test_replogle_conversion(name, cell_line):
    adata = convert(name, scperturb_replogle(cell_line))
    _check_schema(adata)
    assert set(adata.obs["cell_type"]) == {cell_line}
    assert adata.obs["dose"].isna().all()
    assert sp.issparse(adata.X) and adata.shape == (N_CELLS, N_GENES)


def test_match_perturbations():
    labels = ["Dacinostat (LAQ824)", "Quisinostat (JNJ-26481585) 2HCl", "Flavopiridol HCl",
              "TAK-901", "Fimepinostat (CUDC-907)", "control"]
    found = datasets.match_perturbations(
        ["Dacinostat", "Quisinostat", "Flavopiridol", "TAK-901", "CUDC-907"], labels)
    assert found["Quisinostat"] == ["Quisinostat (JNJ-26481585) 2HCl"]
    assert found["CUDC-907"] == ["Fimepinostat (CUDC-907)"]
    with pytest.raises(ValueError, match="Hesperadin"):
        datasets.match_perturbations(["Hesperadin"], labels)


# ------------------------------------------------------------------------- from_anndata

def test_from_anndata_defaults_and_input_untouched():
    source = _adata(dict(pert=_cycle(["ctl", "A", "B+ctrl", " A + B ", "control+ctrl"])),
                    sparse=False)
    source.X = source.X.astype(np.float64)
    source.var_names = ["g"] * N_GENES
    before_obs, before_X = source.obs.copy(), source.X.copy()
    adata = from_anndata(source, perturbation_key="pert", control_value="ctl")
    _check_schema(adata)
    assert adata.X.dtype == np.float32 and not sp.issparse(adata.X)
    np.testing.assert_allclose(adata.X, before_X)
    assert set(adata.obs["cell_type"]) == {"all"}
    assert adata.obs["dose"].isna().all()
    assert dict(zip(adata.obs["perturbation_raw"], adata.obs["perturbation"])) == {
        "ctl": "control", "A": "A", "B+ctrl": "B", "A + B": "A+B", "control+ctrl": "control"}
    kept_whole = from_anndata(source, perturbation_key="pert", control_value="ctl",
                              combo_sep=None)
    assert set(kept_whole.obs["perturbation"]) == {
        "control", "A", "Bplusctrl", "A plus B", "controlplusctrl"}
    assert adata.uns["xtcdr"]["perturbation_key"] == "pert"
    assert adata.uns["xtcdr"]["control_value"] == "ctl"
    assert isinstance(adata.uns["xtcdr"]["version"], str)
    pd.testing.assert_frame_equal(source.obs, before_obs)
    np.testing.assert_array_equal(source.X, before_X)
    assert source.X.dtype == np.float64 and not source.var_names.is_unique
    adata.X[0, 0] = -1.0
    assert source.X[0, 0] != -1.0


def test_from_anndata_real_jurkat_file():
    path = Path(__file__).parents[1] / "data" / "real" / "datlinger2021_jurkat.h5ad"  # shipped
    import anndata
    adata = from_anndata(anndata.read_h5ad(path), perturbation_key="perturbation",
                         cell_type_key="cell_line")
    _check_schema(adata)
    assert adata.obs["is_control"].sum() == 200


def test_missing_column_names_it_and_lists_present():
    source = scperturb_replogle()
    with pytest.raises(KeyError) as err:
        from_anndata(source, perturbation_key="gene", cell_type_key="cell_line")
    message = str(err.value)
    assert "'gene'" in message and "perturbation" in message and "cell_line" in message
    with pytest.raises(KeyError, match="dose"):
        from_anndata(source, perturbation_key="perturbation", dose_key="dose")


def test_absent_control_lists_frequent_values():
    source = scperturb_replogle()
    with pytest.raises(ValueError) as err:
        from_anndata(source, perturbation_key="perturbation", control_value="non-targeting")
    message = str(err.value)
    assert "'non-targeting'" in message and "not found" in message
    assert "'POLR2A' (15)" in message and "control_value=" in message


def test_missing_labels_are_refused():
    source = scperturb_replogle()
    source.obs.loc["cell3", "perturbation"] = np.nan
    with pytest.raises(ValueError, match="1 missing values"):
        from_anndata(source, perturbation_key="perturbation")


@pytest.mark.parametrize("sparse", [False, True])
def test_non_finite_values_are_counted(sparse):
    source = scperturb_replogle()
    X = source.X.toarray()
    X[0, 0], X[1, 2], X[5, 5] = np.nan, np.inf, -np.inf
    source.X = sp.csr_matrix(X) if sparse else X
    with pytest.raises(ValueError, match="X holds 3 non-finite values"):
        from_anndata(source, perturbation_key="perturbation")


def test_empty_anndata_is_refused():
    source = scperturb_replogle()[:0].copy()
    with pytest.raises(ValueError, match="empty"):
        from_anndata(source, perturbation_key="perturbation")


def test_validate_schema_lists_missing_columns():
    with pytest.raises(KeyError) as err:
        validate_schema(scperturb_replogle())
    message = str(err.value)
    for column in datasets.STANDARD_COLUMNS:
        if column != "perturbation":
            assert column in message
    assert "from_anndata" in message
    adata = convert("replogle_k562", scperturb_replogle())
    adata.obs["is_control"] = False
    with pytest.raises(ValueError, match="disagrees"):
        validate_schema(adata)


# ------------------------------------------------------------------------- synthetic

def test_load_synthetic_returns_schema():
    synthetic = pytest.importorskip("xtcdr.synthetic")
    if not hasattr(synthetic, "simulate"):
        pytest.skip("xtcdr.synthetic.simulate not written yet")
    adata = load("synthetic_drugs")
    validate_schema(adata)
    assert adata.n_obs > 0 and adata.obs["is_control"].any()


# ------------------------------------------------------------------------- downloads

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A tiny scPerturb-like file served over HTTP on 127.0.0.1; yields (url, path)."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    scperturb_replogle().write_h5ad(root / "tiny.h5ad")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tiny.h5ad", root / "tiny.h5ad"
    server.shutdown()
    server.server_close()


def _register(monkeypatch, url, md5):
    info = DatasetInfo(name="tiny", url=url, filename="tiny.h5ad", md5=md5, kind="genetic",
                       description="tiny test file")
    monkeypatch.setitem(datasets.REGISTRY, "tiny", info)
    return info


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_with_correct_md5(served, monkeypatch, tmp_path):
    url, source = served
    _register(monkeypatch, url, _md5(source))
    assert "tiny" in datasets.names()
    adata = load("tiny", data_dir=tmp_path / "cache", progress=False)
    _check_schema(adata)
    assert adata.n_obs == N_CELLS
    assert adata.uns["xtcdr"]["checksum"] == f"md5:{_md5(source)}"
    assert (tmp_path / "cache" / "raw" / "tiny.h5ad").exists()
    load("tiny", data_dir=tmp_path / "cache", progress=False)  # cached: verified, no download


def test_download_with_wrong_md5_leaves_nothing(served, monkeypatch, tmp_path):
    url, _ = served
    _register(monkeypatch, url, "0" * 32)
    with pytest.raises(ValueError) as err:
        load("tiny", data_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "'tiny'" in message and url in message and "removed" in message
    assert list((tmp_path / "raw").iterdir()) == []


def test_download_without_checksum_records_sha256(served, monkeypatch, tmp_path):
    url, source = served
    _register(monkeypatch, url, None)
    adata = load("tiny", data_dir=tmp_path, progress=False)
    local = tmp_path / "raw" / "tiny.h5ad"
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    book = json.loads((tmp_path / "raw" / "checksums.json").read_text())
    assert book["tiny.h5ad"]["sha256"] == sha256 and book["tiny.h5ad"]["url"] == url
    assert adata.uns["xtcdr"]["checksum"] == f"sha256:{sha256}"
    load("tiny", data_dir=tmp_path, progress=False)  # the recorded value still matches
    with open(local, "ab") as handle:
        handle.write(b"corruption")
    with pytest.raises(ValueError) as err:
        load("tiny", data_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "'tiny'" in message and "Delete" in message and str(local) in message


def test_download_failure_names_dataset_and_url(monkeypatch, tmp_path):
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tiny.h5ad"
    _register(monkeypatch, url, None)
    with pytest.raises(ConnectionError) as err:
        datasets.fetch("tiny", data_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "'tiny'" in message and url in message and "download" in message
    assert list((tmp_path / "raw").iterdir()) == []
