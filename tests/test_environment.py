"""The two descriptions of the software stack agree and pin every package exactly.

``pyproject.toml`` (pip, ``make install``) and ``environment.yml`` (conda) must give every reader
the same versions, so both list the same ``name==version`` pins.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
import re
import tomllib

import pytest

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!-]+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    unpinned = [d for d in deps if not PIN.match(d.replace(" ", ""))]
    assert not unpinned, f"pyproject.toml dependencies without an exact == pin: {unpinned}"
    return {_canonical(m["name"]): m["version"]
            for m in (PIN.match(d.replace(" ", "")) for d in deps)}


def environment_pins() -> dict[str, str]:
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    # '-e .' installs this package itself; everything else must be an exact pin
    entries = [e.strip() for e in pip_sections[0] if not str(e).strip().startswith("-e")]
    unpinned = [e for e in entries if not PIN.match(e.replace(" ", ""))]
    assert not unpinned, f"environment.yml pip entries without an exact == pin: {unpinned}"
    return {_canonical(m["name"]): m["version"]
            for m in (PIN.match(e.replace(" ", "")) for e in entries)}


def test_every_dependency_is_pinned_exactly():
    pins = pyproject_pins()
    assert pins["torch"] == "2.13.0"
    assert len(pins) >= 10


def test_environment_yml_mirrors_pyproject():
    ours, conda = pyproject_pins(), environment_pins()
    only_pyproject = sorted(set(ours) - set(conda))
    only_conda = sorted(set(conda) - set(ours))
    differ = {n: (ours[n], conda[n]) for n in set(ours) & set(conda) if ours[n] != conda[n]}
    assert not only_pyproject, f"pinned in pyproject.toml but not environment.yml: {only_pyproject}"
    assert not only_conda, f"pinned in environment.yml but not pyproject.toml: {only_conda}"
    assert not differ, f"different versions (pyproject, environment.yml): {differ}"


def test_environment_yml_installs_the_package_and_python_311():
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    plain = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.replace(" ", "").startswith("python=3.11") for d in plain)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in [str(e).strip() for e in pip]


def test_installed_versions_match_the_pins():
    """The environment running the tests is the pinned one (local labels such as +cpu aside)."""
    wrong = {}
    for name, pinned in pyproject_pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (pinned, "not installed")
            continue
        if installed.split("+")[0] != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"installed versions differ from the pins (pinned, installed): {wrong}"
