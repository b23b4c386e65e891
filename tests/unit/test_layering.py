"""Imports run downhill: the layers of fence/ never import the ones above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FENCE = Path(__file__).resolve().parents[2] / "fence"

# package → fence packages/modules it must never import (module level or inside functions)
FORBIDDEN = {
    "running": ("fence.staging", "fence.service", "fence.api", "fence.cli", "fence.wiring", "fence.apps"),
    "staging": ("fence.running", "fence.service", "fence.api", "fence.cli", "fence.wiring", "fence.apps"),
    "stack": ("fence.running", "fence.staging", "fence.service", "fence.api", "fence.cli"),
    "router": ("fence.running", "fence.staging", "fence.service", "fence.api", "fence.cli", "fence.apps"),
    "backend": ("fence.running", "fence.staging", "fence.router", "fence.stack", "fence.service", "fence.api",
                "fence.cli", "fence.apps", "fence.store"),
    "config": ("fence.running", "fence.staging", "fence.router", "fence.stack", "fence.backend", "fence.service"),
}
# Modules everybody imports: they import no fence module that does work.
LEAVES = {"rules.py": ("fence.config", "fence.staging", "fence.running", "fence.backend"),
          "labels.py": ("fence.",), "states.py": ("fence.",), "home.py": ("fence.staging", "fence.running"),
          "layout.py": ("fence.staging", "fence.running"), "limits.py": ("fence.staging", "fence.running")}


def _imports(host_file: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(host_file.read_text(), str(host_file))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _violations(host_files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{host_file.relative_to(FENCE.parent)}:{line}: imports {module}"
            for host_file in host_files for line, module in _imports(host_file)
            if any(module == bad or module.startswith(bad if bad.endswith(".") else bad + ".")
                   or module == bad.rstrip(".") for bad in forbidden)]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_imports_upward(package: str) -> None:
    assert _violations(sorted((FENCE / package).rglob("*.py")), FORBIDDEN[package]) == []


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_shared_vocabulary_imports_nothing_above_it(module: str) -> None:
    assert _violations([FENCE / module], LEAVES[module]) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    host_file = tmp_path / "x.py"
    host_file.write_text("def f():\n    from fence.staging.stager import Stager\n")
    global FENCE
    saved, FENCE = FENCE, tmp_path.parent
    try:
        [found] = _violations([host_file], FORBIDDEN["running"])
        assert found.endswith("x.py:2: imports fence.staging.stager")
    finally:
        FENCE = saved
