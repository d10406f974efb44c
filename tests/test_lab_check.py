"""The notebook reading of the browser check (tests/browser/lab_check.py), without a browser."""
from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

SPEC = importlib.util.spec_from_file_location(
    "lab_check", Path(__file__).resolve().parent / "browser" / "lab_check.py")
lab_check = importlib.util.module_from_spec(SPEC)
sys.modules["lab_check"] = lab_check  # dataclasses look their module up there
SPEC.loader.exec_module(lab_check)


def _write(tmp_path, cells) -> Path:
    path = tmp_path / "01_x.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_a_clean_run_has_no_problems(tmp_path):
    cell = new_code_cell("print(1)", execution_count=1,
                         outputs=[new_output("stream", name="stdout", text="1\n")])
    assert lab_check.saved_notebook_problems(_write(tmp_path, [cell])) == []


def test_error_outputs_and_cells_that_never_ran_fail(tmp_path):
    error = new_code_cell("1 / 0", execution_count=1,
                          outputs=[new_output("error", ename="ZeroDivisionError",
                                              evalue="division by zero", traceback=[])])
    never = new_code_cell("x = 1", execution_count=None)
    empty = new_code_cell("", execution_count=None)  # an empty cell is not a failure
    assert lab_check.saved_notebook_problems(_write(tmp_path, [error, never, empty])) == [
        "cell 0 raised ZeroDivisionError: division by zero",
        "cell 1 has no execution count (it never ran)"]


def test_metadata_diff_names_the_changed_keys():
    before = {"kernelspec": {"name": "python3"}, "language_info": {"name": "python"}}
    after = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)"},
             "language_info": {"name": "python"}}
    assert lab_check.metadata_diff(before, after) == [
        "kernelspec: {'name': 'python3'} -> {'name': 'python3', 'display_name': 'Python 3 (ipykernel)'}"]
    assert lab_check.metadata_diff(before, before) == []


def test_chromium_lookup_prefers_the_system_binary_then_the_path(tmp_path, monkeypatch):
    real_access = lab_check.os.access

    def system_chromium(present):
        return lambda path, mode: present if path == "/usr/bin/chromium" else real_access(path, mode)

    on_path = tmp_path / "bin" / "chromium"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setattr(lab_check.os, "access", system_chromium(True))
    assert lab_check.find_chromium() == "/usr/bin/chromium"
    monkeypatch.setattr(lab_check.os, "access", system_chromium(False))
    assert lab_check.find_chromium() == str(on_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium anywhere
    assert lab_check.find_chromium() is None


def test_free_port_can_be_bound():
    port = lab_check.free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # raises OSError when the port is taken


def test_parallel_parts_deal_every_notebook_once_in_snake_order():
    names = [f"0{i}_n" for i in range(1, 9)]
    parts = lab_check.deal(names, 2)
    assert parts == [["01_n", "04_n", "05_n", "08_n"], ["02_n", "03_n", "06_n", "07_n"]]
    assert sorted(sum(lab_check.deal(names, 3), [])) == names
    assert lab_check.deal(names[:1], 4) == [["01_n"]]
