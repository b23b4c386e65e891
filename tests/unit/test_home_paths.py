"""FENCE_HOME has one map: no path under it is spelled outside fence/home.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fence.home import NodeHome

_REPO = Path(__file__).resolve().parents[2]
# Top-level names under FENCE_HOME that nothing else uses as a path segment: joined onto any
# host path they can only mean FENCE_HOME's. Generic names (logs, tmp, staging, git) are also
# used inside components' own folders (the router's logs/) and in containers, so they are caught
# only when joined onto host_root (rule 1 catches every join onto host_root).
_HOME_NAMES = frozenset({"droplets", "router", "sources", "caches", "work", "buildpack-cache",
                         "config.yml", "fence.db", "fence.sock", "node-id"})
_JOINS = frozenset({"Path", "joinpath", "join"})


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def _onto_root(base: ast.AST, parts: list[ast.AST]) -> bool:
    """Whether ``parts`` are joined onto FENCE_HOME: anything onto NodeHome's ``.host_root``; a
    literal onto a ``host_root``/``_host_root`` variable (a walk over some other folder may
    call its own root that, and join computed names onto it)."""
    if isinstance(base, ast.Attribute) and base.attr == "host_root":
        return True
    named = (isinstance(base, ast.Attribute) and base.attr == "_host_root") or \
        (isinstance(base, ast.Name) and base.id in {"host_root", "_host_root"})
    return named and any(_literal(part) is not None for part in parts)


def _literal(node: ast.AST) -> str | None:
    """The leading text of a string literal or f-string, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def _home_name(node: ast.AST) -> str | None:
    text = _literal(node)
    if text is None:
        return None
    head = text.strip("/").split("/", 1)[0]
    return head if head in _HOME_NAMES else None


def _container_side(node: ast.AST) -> bool:
    """Container paths (``ctr_…`` names, PurePosixPath) may use the same words."""
    text = _text(node)
    return "ctr_" in text or "PurePosixPath" in text


def path_literals(source: str) -> list[tuple[int, str]]:
    """Where a source builds a FENCE_HOME path itself: (line, expression) for each.

    Rule 1: anything joined onto ``host_root`` (``home.host_root / "x"``, ``host_root / name``
    on an attribute, ``host_root / "x"`` on a bare name). Rule 2: a FENCE_HOME top-level name
    joined onto any host path (``Path(...) / "droplets"``, ``x.joinpath("caches")``,
    ``os.path.join(x, "work")``, ``Path("sources")``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left, right = node.left, node.right
            if _onto_root(left, [right]) or (_home_name(right) and not _container_side(left)):
                found.append((node.lineno, _text(node)))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name not in _JOINS or _container_side(func):
                continue
            base = func.value if isinstance(func, ast.Attribute) and name == "joinpath" else None
            if (base is not None and _onto_root(base, node.args)) or any(_home_name(arg) for arg in node.args):
                found.append((node.lineno, _text(node)))
    return sorted(set(found))


def test_no_fence_home_path_is_built_outside_home_py() -> None:
    offenders = []
    for top in ("fence", "kato"):
        for host_file in sorted((_REPO / top).rglob("*.py")):
            if host_file == _REPO / "fence" / "home.py":
                continue
            for line, expression in path_literals(host_file.read_text()):
                offenders.append(f"{host_file.relative_to(_REPO)}:{line}: {expression}")
    assert not offenders, "FENCE_HOME paths built outside fence/home.py (add a NodeHome property " \
                          "and use it):\n" + "\n".join(offenders)


@pytest.mark.parametrize("source", [
    'x = home.host_root / "droplets"',
    'x = self._home.host_root / "logs" / "staging" / name',
    "x = self.home.host_root / name",
    'x = host_root / "logs"',
    'x = self._host_root / "caches"',
    'x = Path(os.environ["FENCE_HOME"]) / "droplets"',
    'x = Path("/var/lib/fence") / "router"',
    'x = root.joinpath("sources", app)',
    'x = home.host_root.joinpath("tmp")',
    "x = home.host_root.joinpath(name)",
    'x = self._host_root.joinpath("logs")',
    'x = os.path.join(root, "buildpack-cache")',
    'x = base / f"work/{staging_id}"',
    'x = Path("fence.db")',
])
def test_the_check_catches_home_paths_built_by_hand(source: str) -> None:
    assert path_literals(source), source


@pytest.mark.parametrize("source", [
    'x = ws.ctr_home / "tmp"',
    'x = self.ctr_home / "app"',
    'x = PurePosixPath("/home") / "work"',
    'x = self._host_dir / "logs" / "error.log"',   # the router's own folder
    "x = host_root / rel_dir",                       # a walk's own root, not FENCE_HOME
    "x = self._host_root.joinpath(*parts)",
    'x = home.host_droplets / f"{digest}.tgz"',
    'labels = {"work": name}',
    'x = "droplets"',
])
def test_the_check_leaves_other_paths_alone(source: str) -> None:
    assert not path_literals(source), source


def test_every_home_path_is_under_fence_home(tmp_path: Path) -> None:
    home = NodeHome(host_root=tmp_path)
    paths = [home.host_config, home.host_db, home.host_droplets, home.host_router, home.host_sources,
             home.host_app_sources("web"), home.host_caches, home.host_app_cache("web"), home.host_logs,
             home.host_staging_logs, home.host_app_staging_logs("web"), home.host_staging_log("web", "s1"),
             home.host_work, home.host_staging_work("s1"), home.host_buildpack_cache,
             home.host_git_buildpacks, home.host_tmp]
    assert all(p.is_relative_to(tmp_path) and p != tmp_path for p in paths)
    assert len(set(paths)) == len(paths)
    assert home.host_staging_log("web", "s1").parent == home.host_app_staging_logs("web")
    assert home.host_app_staging_logs("web").is_relative_to(home.host_logs)
