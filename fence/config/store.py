"""The node's config store: components of nested keys in one YAML file, written atomically under a lock."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from fence.atomic import atomic_file
from fence.config.schema import SCHEMAS, defaults_tree, key_spec
from fence.config.types import BadValue, type_name_of
from fence.errors import (
    ConfigFileCorrupt,
    ConfigKeyNotFound,
    ConfigTypeChange,
    InvalidConfigValue,
    InvalidKeyPath,
    UnknownComponent,
    UsageError,
)

_COMPONENT = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_DEPTH = 16
_MAX_VALUE_CHARS = 64 * 1024


@dataclass(frozen=True)
class ChangeResult:
    """What a write did.

    Attributes:
        value: the key's value after the change (for ``pop``: the value removed).
        warnings: things the admin should know (``Assumed type string`` …).
    """

    value: Any
    warnings: tuple[str, ...] = ()


def split_path(key_path: str) -> list[str]:
    """Split ``a/b/c`` into segments, refusing malformed paths.

    Raises:
        InvalidKeyPath: an empty path, an empty or odd segment, or too deep.
    """
    parts = key_path.strip("/").split("/") if key_path else []
    if not parts or len(parts) > _MAX_DEPTH:
        raise InvalidKeyPath(what="key path", path=key_path, why=f"use 1 to {_MAX_DEPTH} segments like docker/image")
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            raise InvalidKeyPath(what="key path", path=key_path,
                                 why="segments are letters, digits, '_', '.', '-' separated by '/'")
    return parts


def check_component(component: str) -> str:
    """Refuse a malformed component name.

    Raises:
        InvalidKeyPath: not lower-case letters, digits and '_'.
    """
    if not _COMPONENT.fullmatch(component or ""):
        raise InvalidKeyPath(what="component", path=component, why="use lower-case letters, digits and '_'")
    return component


class ConfigStore:
    """All config components of one node, kept in one YAML file.

    Reads never lock (writes replace the file atomically, so a reader sees the old or the new
    file, never a torn one) and re-read the file when it changed, so a running daemon sees a
    ``kato config set`` on its next operation. Writes take an exclusive lock around
    read-modify-write, so concurrent writers never lose each other's updates.
    """

    def __init__(self, *, host_file: Path) -> None:
        self._host_file = host_file
        self._host_lock = host_file.with_name(host_file.name + ".lock")
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: dict[str, Any] = {}
        # Merged trees by component, valid while the file is unchanged: building one from the
        # defaults costs ~0.1 ms, and the daemon reads config many times per request.
        self._merged_cache: dict[str, tuple[tuple[int, int, int] | None, dict[str, Any]]] = {}

    # --- reading ---------------------------------------------------------------------------

    def components(self) -> list[str]:
        """Every component with a schema or with stored keys, sorted."""
        return sorted(set(SCHEMAS) | set(self._stored()))

    def get(self, component: str, key_path: str | None = None) -> Any:
        """A value, with defaults filled in for schema'd keys.

        Args:
            component: e.g. ``fence``.
            key_path: e.g. ``docker/image``; ``None`` for the whole component.

        Returns:
            The value (a scalar, list or nested mapping).

        Raises:
            ConfigKeyNotFound: no such key.
            UnknownComponent: no such component.
            InvalidKeyPath: a malformed component or path.
        """
        check_component(component)
        tree = self._cached_merged(component)
        if key_path is None:
            if component not in SCHEMAS and component not in self._stored():
                raise UnknownComponent(component=component, known=", ".join(self.components()))
            return copy.deepcopy(tree)
        node: Any = tree
        for part in split_path(key_path):
            if not isinstance(node, dict) or part not in node:
                raise ConfigKeyNotFound(component=component, key=key_path)
            node = node[part]
        return copy.deepcopy(node)

    def get_all(self) -> dict[str, Any]:
        """Every component's merged tree."""
        return {name: self._merged(name) for name in self.components()}

    def fence(self, key_path: str) -> Any:
        """Shorthand for ``get("fence", key_path)``, as the daemon reads its own settings."""
        return self.get("fence", key_path)

    def is_set(self, component: str, key_path: str) -> bool:
        """Whether a key is stored in the file (set by the admin), not just its default.

        Raises:
            InvalidKeyPath: a malformed component or path.
        """
        node: Any = self._stored().get(check_component(component), {})
        for part in split_path(key_path):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    # --- writing ---------------------------------------------------------------------------

    def set(self, component: str, key_path: str, raw: str, *, as_json: bool = False,
            force: bool = False) -> ChangeResult:
        """Set a key from a command-line string (or JSON with ``as_json``).

        A schema'd key is validated by its type. An unschema'd new key gets an inferred type (a
        string, or a struct/list when the value looks like JSON) and a warning; changing the
        type of a stored key needs ``force``.

        Returns:
            The stored value and any warnings.

        Raises:
            InvalidConfigValue: the value does not fit the key's type (nothing is changed).
            ConfigTypeChange: the type would change and ``force`` is false.
            InvalidKeyPath: a malformed component or path.
            UsageError: ``as_json`` with text that is not JSON, or an oversized value.
        """
        check_component(component)
        parts = split_path(key_path)
        if len(raw) > _MAX_VALUE_CHARS:
            raise UsageError(detail=f"{component} {key_path}: value is longer than {_MAX_VALUE_CHARS} characters")
        with self._locked() as stored:
            tree = stored.setdefault(component, {})
            existing = _lookup(tree, parts)
            value, warnings = self._interpret(component, key_path, raw, as_json, existing, force)
            _assign(tree, parts, value, component, key_path, force)
            final = self._validated(component, tree)
            self._write(stored)
        return ChangeResult(value=_lookup(final, parts), warnings=tuple(warnings))

    def delete(self, component: str, key_path: str) -> ChangeResult:
        """Remove a key (a schema'd key falls back to its default).

        Returns:
            The value now seen at the key (its default), or ``None``.

        Raises:
            ConfigKeyNotFound: the key is not stored.
        """
        check_component(component)
        parts = split_path(key_path)
        with self._locked() as stored:
            tree = stored.get(component, {})
            parent = _lookup(tree, parts[:-1]) if parts[:-1] else tree
            if not isinstance(parent, dict) or parts[-1] not in parent:
                raise ConfigKeyNotFound(component=component, key=key_path)
            del parent[parts[-1]]
            _prune(tree)
            if not tree:
                stored.pop(component, None)
            self._write(stored)
        try:
            return ChangeResult(value=self.get(component, key_path))
        except ConfigKeyNotFound:
            return ChangeResult(value=None)

    def push(self, component: str, key_path: str, raw: str, *, as_json: bool = False) -> ChangeResult:
        """Append a value to a list key (a missing key starts as its default, or empty).

        Raises:
            ConfigTypeChange: the key holds something other than a list.
            InvalidConfigValue: the item does not fit the list's item type.
        """
        return self._edit_list(component, key_path, lambda items, warnings: items + [
            self._list_item(component, key_path, raw, as_json, warnings)])

    def pop(self, component: str, key_path: str, raw: str | None = None, *,
            as_json: bool = False) -> ChangeResult:
        """Remove a value from a list key (the last item when no value is given).

        Returns:
            The list after the removal.

        Raises:
            ConfigKeyNotFound: the value is not in the list, or the list is empty.
            ConfigTypeChange: the key holds something other than a list.
        """
        def remove(items: list[Any], warnings: list[str]) -> list[Any]:
            if not items:
                raise ConfigKeyNotFound(component=component, key=f"{key_path} (the list is empty)")
            if raw is None:
                return items[:-1]
            item = self._list_item(component, key_path, raw, as_json, [])
            if item not in items:
                raise ConfigKeyNotFound(component=component, key=f"{key_path} item {item!r}")
            index = len(items) - 1 - items[::-1].index(item)
            return items[:index] + items[index + 1:]
        return self._edit_list(component, key_path, remove)

    # --- internals -------------------------------------------------------------------------

    def _edit_list(self, component: str, key_path: str, edit: Any) -> ChangeResult:
        check_component(component)
        parts = split_path(key_path)
        warnings: list[str] = []
        with self._locked() as stored:
            tree = stored.setdefault(component, {})
            current = _lookup(tree, parts)
            if current is _MISSING:
                spec = key_spec(component, key_path)
                current = copy.deepcopy(spec.default) if spec is not None else []
                if spec is None:
                    warnings.append("Assumed type list")
            if not isinstance(current, list):
                raise ConfigTypeChange(component=component, key=key_path,
                                       old_type=type_name_of(current), new_type="list")
            _assign(tree, parts, edit(list(current), warnings), component, key_path, False)
            final = self._validated(component, tree)
            self._write(stored)
        return ChangeResult(value=_lookup(final, parts), warnings=tuple(warnings))

    def _list_item(self, component: str, key_path: str, raw: str, as_json: bool,
                   warnings: list[str]) -> Any:
        spec = key_spec(component, key_path)
        item_type = getattr(spec.type, "item", None) if spec is not None else None
        if as_json:
            value = _json(component, key_path, raw)
            if item_type is not None:
                return _checked(item_type.check, value, component, key_path, item_type.allowed())
            return value
        if item_type is not None:
            return _checked(item_type.parse, raw, component, key_path, item_type.allowed())
        return raw

    def _interpret(self, component: str, key_path: str, raw: str, as_json: bool, existing: Any,
                   force: bool) -> tuple[Any, list[str]]:
        spec = key_spec(component, key_path)
        if spec is not None:
            if as_json:
                value = _json(component, key_path, raw)
                return _checked(spec.type.check, value, component, key_path, spec.type.allowed()), []
            return _checked(spec.type.parse, raw, component, key_path, spec.type.allowed()), []
        if as_json:
            value = _json(component, key_path, raw)
        elif existing is not _MISSING and not isinstance(existing, (dict, list)):
            value = _like(existing, raw)
        else:
            value = _guess(raw)
        warnings = []
        if existing is _MISSING:
            warnings.append(f"Assumed type {type_name_of(value)}")
        elif type_name_of(existing) != type_name_of(value) and not force:
            raise ConfigTypeChange(component=component, key=key_path,
                                   old_type=type_name_of(existing), new_type=type_name_of(value))
        return value, warnings

    def _validated(self, component: str, tree: dict[str, Any]) -> dict[str, Any]:
        """Check every schema'd key present in a component's stored tree (normalising it)."""
        for path, spec in SCHEMAS.get(component, {}).items():
            parts = path.split("/")
            node: Any = tree
            for depth, part in enumerate(parts):
                if not isinstance(node, dict):
                    prefix = "/".join(parts[:depth])
                    raise InvalidConfigValue(component=component, key=prefix, value=node,
                                             allowed=f"a struct holding {path}")
                if part not in node:
                    break
                if depth == len(parts) - 1:
                    node[part] = _checked(spec.type.check, node[part], component, path,
                                          spec.type.allowed())
                else:
                    node = node[part]
        return self._merged(component, stored_tree=tree)

    def _merged(self, component: str, stored_tree: dict[str, Any] | None = None) -> dict[str, Any]:
        stored = stored_tree if stored_tree is not None else self._stored().get(component, {})
        merged = defaults_tree(component)
        _overlay(merged, stored)
        return merged

    def _cached_merged(self, component: str) -> dict[str, Any]:
        """The merged tree of a component, shared: callers copy what they hand out."""
        stored = self._stored()
        cached = self._merged_cache.get(component)
        if cached is not None and cached[0] == self._cache_key:
            return cached[1]
        tree = self._merged(component, stored_tree=stored.get(component, {}))
        self._merged_cache[component] = (self._cache_key, tree)
        return tree

    def _stored(self) -> dict[str, Any]:
        try:
            stat = self._host_file.stat()
        except FileNotFoundError:
            self._cache_key, self._cache = None, {}
            return {}
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key != self._cache_key:
            self._cache = self._read()
            self._cache_key = key
        return self._cache

    def _read(self) -> dict[str, Any]:
        try:
            text = self._host_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise ConfigFileCorrupt(path=self._host_file, why=str(exc).splitlines()[0]) from exc
        if not isinstance(data, dict):
            raise ConfigFileCorrupt(path=self._host_file, why="the top level is not a mapping")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self._host_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._host_lock, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)

    def _write(self, stored: dict[str, Any]) -> None:
        text = yaml.safe_dump(stored, default_flow_style=False, sort_keys=True)
        with atomic_file(self._host_file, mode=0o640, prefix=".config.", sync_dir=True) as handle:
            handle.write(text.encode("utf-8"))
        self._cache_key = None


_MISSING = object()


def _lookup(tree: Any, parts: list[str]) -> Any:
    node = tree
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _assign(tree: dict[str, Any], parts: list[str], value: Any, component: str, key_path: str,
            force: bool) -> None:
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part, _MISSING)
        if child is _MISSING:
            child = node[part] = {}
        elif not isinstance(child, dict):
            if not force:
                raise ConfigTypeChange(component=component, key="/".join(parts[:depth + 1]),
                                       old_type=type_name_of(child), new_type="struct")
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _overlay(base[key], value)
        else:
            base[key] = value


def _prune(tree: dict[str, Any]) -> None:
    for key in list(tree):
        if isinstance(tree[key], dict):
            _prune(tree[key])
            if not tree[key]:
                del tree[key]


def _json(component: str, key_path: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(detail=f"{component} {key_path}: value is not valid JSON ({exc})") from None


def _guess(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in ("{", "["):
        try:
            value = json.loads(text)
        except ValueError:
            return raw
        if isinstance(value, (dict, list)):
            return value
    return raw


def _like(existing: Any, raw: str) -> Any:
    """Read ``raw`` as the same type as an existing scalar, when it can be."""
    text = raw.strip()
    if isinstance(existing, bool):
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    elif isinstance(existing, int) and re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    elif isinstance(existing, float):
        with contextlib.suppress(ValueError):
            return float(text)
    return _guess(raw)


def _checked(fn: Any, value: Any, component: str, key_path: str, allowed: str) -> Any:
    try:
        return fn(value)
    except BadValue:
        raise InvalidConfigValue(component=component, key=key_path, value=value, allowed=allowed) from None
