"""Parses and checks an app's ``stackato.yml`` or Cloud Foundry ``manifest.yml`` into a Manifest."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fence.errors import InvalidName, ManifestInvalid, UsageError
from fence.models import HEALTH_TYPES, CronEntry, HealthSettings, Hooks, Manifest, ProcessScale
from fence.rules import (APP_MEMORY_ALLOWED, MAX_ENV_VALUE, check_app_name, check_dns_name,
                         check_env_name, parse_memory)
from fence.staging.procfile import PROCESS_TYPE_PATTERN

MAX_MANIFEST_BYTES = 1024 * 1024
MANIFEST_NAMES = ("stackato.yml", "manifest.yml")

_MAX_NESTING = 64
_MAX_COMMAND = 64 * 1024
_MAX_BUILDPACK = 2048
_CORE = "tag:yaml.org,2002:"
_NULL = _CORE + "null"
# Explicit tags a manifest may carry; anything else (!!python/…, !!binary, !custom) is refused.
_ALLOWED_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_PROCESS_TYPE = re.compile(PROCESS_TYPE_PATTERN)
_DIGITS = re.compile(r"[0-9]{1,9}")
_HOOK_FIELDS = {"pre-staging": "pre_staging", "post-staging": "post_staging",
                "pre-running": "pre_running"}


def parse_manifest(text: bytes, *, source_name: str) -> Manifest:
    """Parse and check a ``stackato.yml`` or a single-app Cloud Foundry ``manifest.yml``.

    Loading is safe (no object construction at all: the YAML node tree is checked directly);
    anchors and aliases are refused as soon as the parser meets them, so an alias bomb costs
    nothing. A top-level ``applications:`` list selects the Cloud Foundry form, which must hold
    exactly one application (``memory`` → ``mem``, ``command`` → ``processes.web``, ``routes`` →
    ``urls``). Unknown keys become ``Manifest.warnings`` entries.

    Args:
        text: the file's bytes (UTF-8, at most 1 MiB).
        source_name: the file name used in messages and kept as ``Manifest.source_name``.

    Returns:
        The checked manifest; an empty file gives a manifest with only ``source_name`` set.

    Raises:
        ManifestInvalid: a syntax error (with line and column), a file over 1 MiB, an anchor or
            alias, a wrong type or value for a known key (naming the key and its line), more
            than one application.
        InvalidName: an app name that breaks the app-name pattern, or a bad env variable name.
    """
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid(source=source_name, where="",
                              why="is larger than 1 MiB; refusing to read it")
    root = _compose(text, source_name)
    check = _Checker(source=source_name)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
        return Manifest(source_name=source_name)
    top = check.mapping(root, "the top level")
    if "applications" in top:
        app_node = _single_application(check, top)
        for key in top:
            if key != "applications":
                check.warn(f"top-level key {key!r} ignored: the app is described under applications")
        draft = _read_app(check, check.mapping(app_node, "applications[0]"), prefix="applications[0].")
    else:
        draft = _read_app(check, top, prefix="")
    return Manifest(name=draft.name, mem_mib=draft.mem_mib, instances=draft.instances,
                    env=draft.env, buildpacks=draft.buildpacks, processes=draft.processes,
                    timeout=draft.timeout, ignores=draft.ignores, hooks=Hooks(**draft.hooks),
                    urls=tuple(dict.fromkeys(draft.urls)), source_name=source_name,
                    warnings=tuple(check.warnings), health=draft.health_settings(),
                    cron=tuple(draft.cron), process_scale=dict(draft.process_scale), drains=dict(draft.drains),
                    services=dict(draft.services),
                    builder=draft.builder, dockerfile=draft.dockerfile, build_args=dict(draft.build_args))


def read_app_manifest(host_app_dir: Path) -> Manifest:
    """Read and parse the manifest at the root of a local app folder (``stackato.yml`` first).

    The file is opened without following a symlink and read no further than the size limit.

    Args:
        host_app_dir: the app's folder.

    Returns:
        The parsed manifest, or ``Manifest()`` when the folder has neither file.

    Raises:
        ManifestInvalid: the manifest is not a regular file, cannot be read, or is invalid.
        InvalidName: see ``parse_manifest``.
    """
    for name in MANIFEST_NAMES:
        try:
            fd = os.open(host_app_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ManifestInvalid(source=name, where="", why=f"cannot be read ({exc.strerror}; "
                                                            "symlinks are not followed)") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ManifestInvalid(source=name, where="", why="is not a regular file")
            return parse_manifest(handle.read(MAX_MANIFEST_BYTES + 1), source_name=name)
    return Manifest()


class _Refusal(Exception):
    """Raised inside the loader; turned into ManifestInvalid with the file name."""

    def __init__(self, mark: yaml.Mark, why: str) -> None:
        super().__init__(why)
        self.mark = mark
        self.why = why


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader used only to compose nodes, refusing anchors, aliases, odd tags, deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refusal(event.start_mark, f"YAML aliases (*{event.anchor}) are not allowed")
        if event.anchor is not None:
            raise _Refusal(event.start_mark, f"YAML anchors (&{event.anchor}) are not allowed")
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _ALLOWED_TAGS:
            raise _Refusal(event.start_mark, f"the YAML tag {tag!r} is not allowed")
        self._depth += 1
        try:
            if self._depth > _MAX_NESTING:
                raise _Refusal(event.start_mark, f"nested deeper than {_MAX_NESTING} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: bytes, source: str) -> Node | None:
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = text[:exc.start].count(b"\n") + 1
        raise ManifestInvalid(source=source, where=f" line {line}", why="is not UTF-8 text") from None
    loader = _StrictLoader(decoded)
    try:
        return loader.get_single_node()
    except _Refusal as exc:
        raise ManifestInvalid(source=source, where=_where(exc.mark), why=exc.why) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        why = ": ".join(str(part) for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise ManifestInvalid(source=source, where=_where(mark) if mark else "",
                              why=f"YAML syntax error: {why}") from None
    except yaml.reader.ReaderError as exc:
        before = decoded[:exc.position]
        where = f" line {before.count(chr(10)) + 1}, column {len(before) - before.rfind(chr(10))}"
        raise ManifestInvalid(source=source, where=where,
                              why=f"character {exc.character!r} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        raise ManifestInvalid(source=source, where="", why=f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def load_untrusted_yaml(text: bytes, *, source_name: str, max_bytes: int) -> object:
    """Load YAML that untrusted code wrote (``bin/release`` output) into plain data, with the
    manifest's loader: anchors and aliases refused as the parser meets them (no alias bomb can
    expand), core tags only, nesting at most 64 deep, and a size cap checked before parsing.

    Args:
        text: the YAML (UTF-8).
        source_name: what it is, for messages.
        max_bytes: the largest text accepted.

    Returns:
        The document as dicts, lists and scalars; ``None`` for an empty one.

    Raises:
        ManifestInvalid: too large, not UTF-8, a syntax error, an anchor, alias or odd tag, or
            too deep (with line and column).
    """
    if len(text) > max_bytes:
        raise ManifestInvalid(source=source_name, where="",
                              why=f"is larger than {max_bytes} bytes; refusing to read it")
    root = _compose(text, source_name)
    return None if root is None else yaml.SafeLoader("").construct_document(root)


def _where(mark: yaml.Mark) -> str:
    return f" line {mark.line + 1}, column {mark.column + 1}"


@dataclass
class _Checker:
    """Type checks on YAML nodes, each error naming the key and its position."""

    source: str
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(f"{self.source}: {text}")

    def fail(self, node: Node, why: str) -> ManifestInvalid:
        return ManifestInvalid(source=self.source, where=_where(node.start_mark), why=why)

    def mapping(self, node: Node, key: str) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{key} must be a mapping (key: value), not {_kind(node)}")
        found: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                raise self.fail(key_node, f"{key}: keys must be plain names, not {_kind(key_node)}")
            name = key_node.value
            if name in found:
                raise self.fail(key_node, f"{key}: key {_clip(name)!r} appears twice")
            found[name] = value_node
        return found

    def text(self, node: Node, key: str, *, limit: int = _MAX_COMMAND, empty: bool = False,
             what: str = "a string") -> str:
        if not isinstance(node, ScalarNode) or (node.tag == _NULL and not empty):
            raise self.fail(node, f"{key} must be {what}, not {_kind(node)}")
        value = "" if node.tag == _NULL else node.value
        if "\x00" in value:
            raise self.fail(node, f"{key} must not contain a NUL character")
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            raise self.fail(node, f"{key} is longer than {limit} bytes")
        if not value and not empty:
            raise self.fail(node, f"{key} must not be empty")
        return value

    def texts(self, node: Node, key: str, *, limit: int = _MAX_COMMAND) -> tuple[str, ...]:
        """A string or a list of strings (null: none)."""
        if isinstance(node, ScalarNode):
            return () if node.tag == _NULL else (self.text(node, key, limit=limit),)
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{key} must be a string or a list of strings, not {_kind(node)}")
        return tuple(self.text(item, f"{key}[{i}]", limit=limit) for i, item in enumerate(node.value))

    def integer(self, node: Node, key: str, low: int, high: int) -> int:
        value = self.text(node, key, limit=64, what="a whole number").strip()
        if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
            raise self.fail(node, f"{key}: {_clip(value)!r} is not a whole number from {low} to {high}")
        return int(value)


@dataclass
class _Draft:
    """The fields of one app while they are being read."""

    name: str | None = None
    mem_mib: int | None = None
    instances: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    buildpacks: tuple[str, ...] = ()
    processes: dict[str, str] = field(default_factory=dict)
    process_scale: dict[str, ProcessScale] = field(default_factory=dict)  # issue 14, P1
    timeout: int | None = None
    ignores: tuple[str, ...] = ()
    hooks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    urls: list[str] = field(default_factory=list)
    cron: list[CronEntry] = field(default_factory=list)
    # Dockerfile apps (issue 15)
    builder: str | None = None
    dockerfile: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    drains: dict[str, str] = field(default_factory=dict)  # issue 18: drain: {name: url}
    services: dict[str, str] = field(default_factory=dict)  # issue 16: name → type
    # health checks (issue 14 item 4): each value with the node it came from (for line numbers)
    health: dict[str, tuple[object, Node]] = field(default_factory=dict)

    def health_settings(self) -> HealthSettings | None:
        if not {"type", "path", "interval"} & set(self.health):
            return None  # health.timeout alone is the app's timeout
        kind = str(self.health["type"][0]) if "type" in self.health else "port"
        path = str(self.health["path"][0]) if "path" in self.health else ("/" if kind == "http" else None)
        interval = self.health["interval"][0] if "interval" in self.health else None
        return HealthSettings(type=kind, path=path, interval=int(interval) if interval is not None else None)


def _single_application(check: _Checker, top: dict[str, Node]) -> Node:
    node = top["applications"]
    if not isinstance(node, SequenceNode):
        raise check.fail(node, f"applications must be a list of apps, not {_kind(node)}")
    if len(node.value) != 1:
        raise check.fail(node, f"applications lists {len(node.value)} apps; fence stages exactly "
                               "one app per manifest")
    return node.value[0]


def _read_app(check: _Checker, fields: dict[str, Node], *, prefix: str) -> _Draft:
    draft = _Draft()
    if "buildpack" in fields and "buildpacks" in fields:
        raise check.fail(fields["buildpacks"], f"give {prefix}buildpack or {prefix}buildpacks, not both")
    if "mem" in fields and "memory" in fields:
        raise check.fail(fields["memory"], f"give {prefix}mem or {prefix}memory, not both")
    for key, node in fields.items():
        where = prefix + key
        reader = _FIELD_READERS.get(key)
        if reader is None:
            check.warn(f"unknown key {_clip(where)!r} ignored")
            continue
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            continue  # `key:` with no value: as if absent
        reader(check, node, where, draft)
    _check_health(check, draft)
    return draft


def _read_name(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    name = check.text(node, key, limit=256)
    draft.name = check_app_name(name, what=f"{check.source}{_where(node.start_mark)}: app name")


def _read_mem(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    value = check.text(node, key, limit=64, what="a memory size").strip()
    try:
        draft.mem_mib = parse_memory(value)
    except UsageError:
        raise check.fail(node, f"{key}: {_clip(value)!r} is not {APP_MEMORY_ALLOWED}") from None


def _read_instances(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    draft.instances = check.integer(node, key, 1, 100)


def _read_timeout(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    draft.timeout = check.integer(node, key, 1, 180)


def _read_env(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    for name, value_node in check.mapping(node, key).items():
        check_env_name(name, what=f"{check.source}{_where(value_node.start_mark)}: env variable name")
        draft.env[name] = check.text(value_node, f"{key}.{name}", limit=MAX_ENV_VALUE, empty=True)


def _read_buildpacks(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    specs = check.texts(node, key, limit=_MAX_BUILDPACK)
    for spec in specs:
        if any(ch.isspace() or not ch.isprintable() for ch in spec):
            raise check.fail(node, f"{key}: {_clip(spec)!r} must not contain spaces or control "
                                   "characters")
    draft.buildpacks = specs


def _read_processes(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    # --- process types (issue 14, P1): a type's value is its command, or a mapping with
    # command/instances/mem (stackato.yml); Cloud Foundry's form is a list of mappings with type ---
    if isinstance(node, SequenceNode):
        entries = []
        for index, item in enumerate(node.value):
            where = f"{key}[{index}]"
            fields = check.mapping(item, where)
            if "type" not in fields:
                raise check.fail(item, f"{where} must have a type: key (web, worker …)")
            entries.append((check.text(fields["type"], f"{where}.type", limit=64), fields["type"], item, where))
    else:
        entries = [(kind, value, value, f"{key}.{kind}") for kind, value in check.mapping(node, key).items()]
    for kind, kind_node, value, where in entries:
        if not _PROCESS_TYPE.fullmatch(kind):
            raise check.fail(kind_node, f"{key}: process type {_clip(kind)!r} is not allowed "
                                        f"(use {PROCESS_TYPE_PATTERN})")
        if kind in draft.processes or kind in draft.process_scale:
            raise check.fail(kind_node, f"{where} is also given by command" if kind in draft.processes
                             else f"{key}: process type {kind!r} is given twice")
        if isinstance(value, MappingNode):
            _read_process_fields(check, check.mapping(value, where), kind, where, draft)
        else:
            draft.processes[kind] = check.text(value, where)


def _read_process_fields(check: _Checker, fields: dict[str, Node], kind: str, where: str, draft: _Draft) -> None:
    """One process type's ``command``, ``instances`` and ``mem``/``memory``."""
    if "mem" in fields and "memory" in fields:
        raise check.fail(fields["memory"], f"give {where}.mem or {where}.memory, not both")
    instances = memory = None
    for name, value in fields.items():
        if isinstance(value, ScalarNode) and value.tag == _NULL:
            continue
        if name == "command":
            draft.processes[kind] = check.text(value, f"{where}.command")
        elif name == "instances":
            instances = check.integer(value, f"{where}.instances", 0, 100)
        elif name in ("mem", "memory"):
            text = check.text(value, f"{where}.{name}", limit=64, what="a memory size").strip()
            try:
                memory = parse_memory(text)
            except UsageError:
                raise check.fail(value, f"{where}.{name}: {_clip(text)!r} is not {APP_MEMORY_ALLOWED}") from None
        elif name != "type":
            check.warn(f"unknown key {_clip(where + '.' + name)!r} ignored")
    if kind == "release" and (instances is not None or memory is not None):
        raise check.fail(fields.get("instances") or fields["mem" if "mem" in fields else "memory"],
                         f"{where}: release runs once per release; it takes no instances or memory")
    draft.process_scale[kind] = ProcessScale(instances=instances, memory_mib=memory)
    # --- end process types ---


def _read_command(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    if "web" in draft.processes:
        raise check.fail(node, f"{key} is also given by processes.web")
    draft.processes["web"] = check.text(node, key)


def _read_ignores(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    patterns = check.texts(node, key, limit=4096)
    if any("\n" in pattern or "\r" in pattern for pattern in patterns):
        raise check.fail(node, f"{key}: a pattern must be one line")
    draft.ignores = patterns


def _read_hooks(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    for phase, commands_node in check.mapping(node, key).items():
        field_name = _HOOK_FIELDS.get(phase)
        if field_name is None:
            check.warn(f"unknown hook {_clip(key + '.' + phase)!r} ignored (fence runs "
                       f"{', '.join(_HOOK_FIELDS)})")
            continue
        draft.hooks[field_name] = check.texts(commands_node, f"{key}.{phase}")


def _read_urls(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    items = node.value if isinstance(node, SequenceNode) else [node]
    for index, item in enumerate(items):
        where = key if item is node else f"{key}[{index}]"
        if key.endswith("routes") and isinstance(item, MappingNode):
            route = check.mapping(item, where).get("route")
            if route is None:
                raise check.fail(item, f"{where} must have a route: key")
            item, where = route, f"{where}.route"
        host = check.text(item, where, limit=300)
        try:
            draft.urls.append(check_dns_name(host.lower()))
        except InvalidName:
            raise check.fail(item, f"{where}: {_clip(host)!r} is not a host name (DNS labels of "
                                   "letters, digits and '-', separated by dots; no scheme, port "
                                   "or path)") from None


# --- health checks (issue 14 item 4) -----------------------------------------------------------

_HEALTH_KEYS = ("type", "path", "timeout", "interval")
_MAX_HEALTH_PATH = 1024
_MAX_HEALTH_INTERVAL = 600


def _read_health(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    """stackato.yml ``health: {type: port|http|process, path: /healthz, timeout: 60, interval: 10}``."""
    for name, value_node in check.mapping(node, key).items():
        if name not in _HEALTH_KEYS:
            check.warn(f"unknown key {_clip(key + '.' + name)!r} ignored (health takes "
                       f"{', '.join(_HEALTH_KEYS)})")
            continue
        if isinstance(value_node, ScalarNode) and value_node.tag == _NULL:
            continue
        where = f"{key}.{name}"
        if name == "type":
            _health_value(check, draft, "type", _health_type(check, value_node, where), value_node, where)
        elif name == "path":
            _health_value(check, draft, "path", _health_path(check, value_node, where), value_node, where)
        elif name == "timeout":
            if draft.timeout is not None:
                raise check.fail(value_node, f"{where} is also given by timeout (give one of them)")
            draft.timeout = check.integer(value_node, where, 1, 180)
            draft.health["timeout"] = (draft.timeout, value_node)
        else:
            value = check.integer(value_node, where, 1, _MAX_HEALTH_INTERVAL)
            _health_value(check, draft, "interval", value, value_node, where)


def _read_health_check_type(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    """Cloud Foundry ``health-check-type: port|http|process`` (``none``: the old name of process)."""
    _health_value(check, draft, "type", _health_type(check, node, key), node, key)


def _read_health_check_endpoint(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    """Cloud Foundry ``health-check-http-endpoint: /healthz``."""
    _health_value(check, draft, "path", _health_path(check, node, key), node, key)


def _read_timeout_once(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    if "timeout" in draft.health:
        raise check.fail(node, f"{key} is also given by health.timeout (give one of them)")
    _read_timeout(check, node, key, draft)


def _health_type(check: _Checker, node: Node, key: str) -> str:
    value = check.text(node, key, limit=64, what="port, http or process").strip()
    kind = "process" if value == "none" else value  # CF's legacy name for the process check
    if kind not in HEALTH_TYPES:
        raise check.fail(node, f"{key}: {_clip(value)!r} is not a health check type (use port, http "
                               "or process; none is process)")
    return kind


def _health_path(check: _Checker, node: Node, key: str) -> str:
    value = check.text(node, key, limit=_MAX_HEALTH_PATH, what="a URL path like /healthz")
    if not value.startswith("/") or any(not ch.isascii() or not ch.isprintable() or ch.isspace() or ch == "#"
                                        for ch in value):
        raise check.fail(node, f"{key}: {_clip(value)!r} is not a URL path (it starts with / and has "
                               "no spaces, control characters, '#' or non-ASCII characters)")
    return value


def _health_value(check: _Checker, draft: _Draft, name: str, value: object, node: Node, key: str) -> None:
    if name in draft.health:
        raise check.fail(node, f"{key} gives the health check {name} a second time (give health.{name} "
                               f"or its health-check-* key, not both)")
    draft.health[name] = (value, node)


def _check_health(check: _Checker, draft: _Draft) -> None:
    """A path is only for an ``http`` check (refused rather than silently ignored)."""
    if "path" in draft.health:
        kind = draft.health.get("type", ("port", None))[0]
        if kind != "http":
            raise check.fail(draft.health["path"][1], f"a health check path is only for an http check, "
                                                      f"and the app's health check type is {kind}")

# --- end health checks -------------------------------------------------------------------------


# --- cron (issue 14 item 3): stackato.yml `cron:` lines, checked with croniter ----------------

MAX_CRON_ENTRIES = 64
_CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


def _read_cron(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    if not isinstance(node, SequenceNode):
        raise check.fail(node, f"{key} must be a list of 'MIN HOUR DOM MON DOW command' lines, not {_kind(node)}")
    if len(node.value) > MAX_CRON_ENTRIES:
        raise check.fail(node, f"{key} lists {len(node.value)} entries; at most {MAX_CRON_ENTRIES} are allowed")
    for index, item in enumerate(node.value):
        draft.cron.append(_cron_entry(check, item, f"{key}[{index}]"))


def _cron_entry(check: _Checker, node: Node, where: str) -> CronEntry:
    from croniter import CroniterError, croniter  # only pushes with a manifest pay for the import

    line = check.text(node, where, limit=4096, what="a 'MIN HOUR DOM MON DOW command' line")
    if "\n" in line or "\r" in line:
        raise check.fail(node, f"{where} must be one line")
    parts = line.split(None, 5)
    if len(parts) < 6:
        raise check.fail(node, f"{where}: {_clip(line)!r} needs five schedule fields "
                               "(MIN HOUR DOM MON DOW) and then a command")
    fields, command = parts[:5], parts[5].strip()
    for name, value in zip(_CRON_FIELDS, fields):
        if not croniter.is_valid(" ".join(value if f is name else "*" for f in _CRON_FIELDS)):
            raise check.fail(node, f"{where}: {_clip(value)!r} is not a valid {name} field "
                                   f"(in {_clip(line)!r})")
    schedule = " ".join(fields)
    try:
        croniter(schedule)
    except (CroniterError, ValueError, KeyError) as exc:
        raise check.fail(node, f"{where}: schedule {schedule!r} is not valid ({exc})") from None
    return CronEntry(schedule=schedule, command=command)



# --- Dockerfile apps (issue 15) ---------------------------------------------------------------
BUILDERS = ("dockerfile", "buildpack")
_MAX_BUILD_ARGS = 64


def _read_builder(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    value = check.text(node, key, limit=32)
    if value not in BUILDERS:
        raise check.fail(node, f"{key}: {_clip(value)!r} is not a builder (one of: {', '.join(BUILDERS)})")
    draft.builder = value


def _read_dockerfile(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    value = check.text(node, key, limit=255)
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or any(not p for p in parts) or any(
            ch.isspace() or not ch.isprintable() or ch == "\\" for ch in value):
        raise check.fail(node, f"{key}: {_clip(value)!r} must be a relative path inside the app "
                               "(no /, .., spaces or control characters)")
    draft.dockerfile = "/".join(p for p in parts if p != ".") or "Dockerfile"


def _read_build_args(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    fields = check.mapping(node, key)
    if len(fields) > _MAX_BUILD_ARGS:
        raise check.fail(node, f"{key} has {len(fields)} entries; at most {_MAX_BUILD_ARGS}")
    for name, value_node in fields.items():
        check_env_name(name, what=f"{check.source}{_where(value_node.start_mark)}: build arg name")
        draft.build_args[name] = check.text(value_node, f"{key}.{name}", limit=MAX_ENV_VALUE, empty=True)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "null" if node.tag == _NULL else f"{_clip(node.value)!r}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
# --- log drains (issue 18): stackato.yml `drain: {name: url}` (Stackato's form) ----------------

def _read_drains(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    from fence.drains.urls import MAX_APP_DRAINS, check_drain_name, parse_drain_url
    from fence.errors import FenceError

    fields = check.mapping(node, key)
    if len(fields) > MAX_APP_DRAINS:
        raise check.fail(node, f"{key} names {len(fields)} drains; at most {MAX_APP_DRAINS} are allowed")
    for name, value in fields.items():
        where = f"{key}.{_clip(name)}"
        url = check.text(value, where, limit=2048)
        try:
            check_drain_name(name)
            parse_drain_url(url, what=where)
        except FenceError as exc:
            raise check.fail(value, exc.message.removeprefix("error: ")) from None
        draft.drains[name] = url


# --- services (issue 16): stackato.yml `services: {NAME: TYPE}`, created and bound at push -------

MAX_SERVICES = 16


def _read_services(check: _Checker, node: Node, key: str, draft: _Draft) -> None:
    from fence.services.kinds import KINDS, SERVICE_NAME_PATTERN

    if not isinstance(node, MappingNode):
        raise check.fail(node, f"{key} must be a mapping of service names to types "
                               f"({{mydb: postgresql}}), not {_kind(node)}")
    fields = check.mapping(node, key)
    if len(fields) > MAX_SERVICES:
        raise check.fail(node, f"{key} names {len(fields)} services; at most {MAX_SERVICES} are allowed")
    for key_node, value_node in node.value:
        name = key_node.value
        if not re.fullmatch(SERVICE_NAME_PATTERN, name):
            raise check.fail(key_node, f"{key}: service name {_clip(name)!r} is not allowed (1-32 lower-case "
                                       "letters, digits and dashes, starting with a letter)")
        kind = check.text(value_node, f"{key}.{name}", limit=40, what="a service type")
        if kind not in KINDS:
            raise check.fail(value_node, f"{key}.{name}: unknown service type {_clip(kind)!r} "
                                         f"(one of: {', '.join(sorted(KINDS))})")
        draft.services[name] = kind


_FIELD_READERS = {
    "name": _read_name,
    "mem": _read_mem,
    "memory": _read_mem,
    "instances": _read_instances,
    "timeout": _read_timeout_once,
    "env": _read_env,
    "buildpack": _read_buildpacks,
    "buildpacks": _read_buildpacks,
    "processes": _read_processes,
    "command": _read_command,
    "ignores": _read_ignores,
    "hooks": _read_hooks,
    "url": _read_urls,
    "urls": _read_urls,
    "routes": _read_urls,
    "health": _read_health,
    "health-check-type": _read_health_check_type,
    "health-check-http-endpoint": _read_health_check_endpoint,
    "cron": _read_cron,
    # Dockerfile apps (issue 15)
    "builder": _read_builder,
    "dockerfile": _read_dockerfile,
    "build_args": _read_build_args,
    "drain": _read_drains,  # issue 18
    "drains": _read_drains,
    "services": _read_services,
}

