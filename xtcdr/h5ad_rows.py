"""Read selected rows of an h5ad file's matrix without reading the whole matrix.

scPerturb's files hold every cell of a screen; a registered dataset often keeps only part of
them (sci-Plex3: the 10 uM cells and the controls). :func:`read_h5ad_rows` reads ``indptr`` of
a CSR matrix first, then only the stored values and column indices of the kept rows, so the full
matrix is never in memory. :func:`matrix_encoding`, :func:`stored_bytes` and :func:`h5_attr`
read how an h5ad element is stored (also in files of anndata < 0.7).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import memory

__all__ = ["read_h5ad_rows", "matrix_encoding", "stored_bytes", "h5_attr"]


def h5_attr(node, key: str):
    """An attribute of an h5 node as ``str`` (h5py returns bytes for some files), or None."""
    value = node.attrs.get(key)
    return value.decode() if isinstance(value, bytes) else value


def matrix_encoding(node) -> str | None:
    """'csr_matrix', 'csc_matrix' or 'array' for an h5ad matrix (also pre-0.7 anndata files)."""
    import h5py

    encoding = h5_attr(node, "encoding-type")
    if encoding is None and isinstance(node, h5py.Dataset):
        return "array"
    if encoding is None:  # anndata < 0.7 marked sparse groups with h5sparse_format
        encoding = {"csr": "csr_matrix", "csc": "csc_matrix"}.get(h5_attr(node, "h5sparse_format"))
    return encoding


def stored_bytes(node) -> int:
    """Bytes of the arrays of an h5 dataset or group once read into memory."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return int(node.size) * node.dtype.itemsize
    return sum(stored_bytes(child) for child in node.values())


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
        encoding = matrix_encoding(node)
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
