"""Every third-party package Billbridge's code imports is a declared dependency of the
package (not something that only arrives through another package's requirements)."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SRC = Path(__file__).resolve().parents[2] / "src" / "billbridge"


def _imported_top_level_modules() -> dict[str, str]:
    """Top-level module name -> one file importing it, over every module in src/billbridge
    (imports inside functions included)."""
    found: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(SRC)))
    return found


def _declared_distributions() -> set[str]:
    declared = set()
    for line in requires("billbridge") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            declared.add(canonicalize_name(requirement.name))
    return declared


def test_every_imported_package_is_declared() -> None:
    """Each imported top-level module is the standard library, Billbridge itself, or
    provided by a distribution named in pyproject.toml's dependencies."""
    providers = packages_distributions()
    declared = _declared_distributions()
    undeclared = {}
    for module, where in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in {"billbridge", "__future__"}:
            continue
        distributions = {canonicalize_name(d) for d in providers.get(module, [])}
        if not distributions:
            pytest.fail(f"{module} (imported in {where}) is not installed by any distribution")
        if not distributions & declared:
            undeclared[module] = (where, sorted(distributions))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
