"""The typed schema of the `fence` config component: every known key, its type, default and help."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fence.config.types import (
    AddressType,
    BadValue,
    BoolType,
    EnumType,
    FloatType,
    IntType,
    IPAddressType,
    KeyType,
    ListType,
    MemoryType,
    PatternType,
    image_ref_type,
)
from fence.drains.urls import parse_drain_url
from fence.rules import APP_MEMORY_MIB, DNS_NAME_PATTERN, NAME_PATTERN

# An absolute path with no control characters and no ``..`` component.
_ABSOLUTE_FOLDER = r"(?!.*/\.\.(?:/|$))/[^\x00-\x1f\x7f]{0,1023}"


@dataclass(frozen=True)
class KeySpec:
    """One known config key.

    Attributes:
        path: the key path, e.g. ``docker/image``.
        type: its value type.
        default: the value when unset.
        help: one line saying what it does.
    """

    path: str
    type: KeyType
    default: Any
    help: str


@dataclass(frozen=True)
class DrainUrlType:
    """A drain URL (``fence.drains.urls.parse_drain_url``)."""

    name: str = "string"

    def parse(self, raw: str) -> str:
        return self.check(raw.strip())

    def check(self, value: Any) -> str:
        from fence.errors import FenceError

        try:
            return parse_drain_url(value).url
        except FenceError:
            raise BadValue(value) from None

    def allowed(self) -> str:
        return "a drain URL: syslog://HOST:PORT, syslog+udp://HOST:PORT, syslog+tls://HOST:PORT or http(s)://HOST/PATH"


FENCE_KEYS: tuple[KeySpec, ...] = (
    KeySpec("docker/image", image_ref_type(), "fence/stack:bookworm",
            "the stack: image every staging, instance and one-off container starts from"),
    KeySpec("docker/images", ListType(image_ref_type(), max_items=16), [],
            "fallback stacks, in order, used when docker/image is not on the node"),
    KeySpec("staging/timeout", IntType(1, 86400, "of seconds"), 900,
            "seconds a staging may take before it is killed"),
    KeySpec("staging/memory", MemoryType(64, 1024 * 1024), 1024,
            "memory limit of a staging container, in MiB"),
    KeySpec("staging/network", EnumType(("none", "bridge")), "none",
            "network of staging containers: none (offline) or bridge"),
    KeySpec("staging/buildpacks", ListType(PatternType(NAME_PATTERN, "a buildpack name")),
            ["python", "nodejs", "static", "procfile"],
            "built-in buildpacks tried in this order when an app names none"),
    KeySpec("staging/concurrency", IntType(1, 64), 2,
            "stagings that run at once; the rest wait in a queue"),
    KeySpec("staging/max_upload", MemoryType(1, 64 * 1024), 1024,
            "largest app upload accepted, in MiB (archive size and unpacked size)"),
    KeySpec("staging/max_log", MemoryType(1, 64 * 1024), 64,
            "most container output a staging log takes, in MiB; past it the staging fails"),
    KeySpec("staging/max_droplet", MemoryType(1, 1024 * 1024), 1024,
            "largest droplet, in MiB (the compiled app as it streams out, before compression); "
            "past it the staging fails and no droplet is kept"),
    KeySpec("staging/max_cache", MemoryType(1, 1024 * 1024), 1024,
            "largest build cache, in MiB (as it streams out); past it the staging fails and the "
            "cache of the last good staging stays"),
    KeySpec("staging/git_timeout", IntType(1, 86400, "of seconds"), 300,
            "seconds a git clone (source or buildpack) may take before it is killed"),
    KeySpec("staging/max_git", IntType(0, 64 * 1024, "of MiB"), 0,
            "largest a git clone may grow to while it is fetched, in MiB; 0: staging/max_upload"),
    KeySpec("staging/local_roots", ListType(PatternType(_ABSOLUTE_FOLDER, "an absolute folder path")), [],
            "host folders whose local paths and file:// repositories may be staged as sources "
            "(none by default: the API only takes uploads and network git URLs)"),
    KeySpec("staging/buildpack_roots", ListType(PatternType(_ABSOLUTE_FOLDER, "an absolute folder path")), [],
            "host folders (besides the built-in buildpacks) from which buildpack paths and file:// "
            "buildpacks may be used"),
    KeySpec("staging/max_files", IntType(1, 10_000_000), 100_000,
            "most files and folders an app upload may hold"),
    KeySpec("staging/max_depth", IntType(1, 4096), 64,
            "deepest folder nesting an app upload may hold"),
    KeySpec("staging/max_ignore_patterns", IntType(0, 100_000), 1000,
            "most patterns an app's ignore files and manifest ignores: may hold together"),
    KeySpec("staging/max_ignore_pattern_length", IntType(1, 4096, "of characters"), 1024,
            "longest ignore pattern an app may give, in characters"),
    KeySpec("container/user", PatternType(r"[a-z_][a-z0-9_-]{0,31}", "a user name"), "stackato",
            "name of the non-root app user (its home is /home/NAME)"),
    KeySpec("container/uid", IntType(1, 2**31 - 2), 1000,
            "numeric uid every container process runs as (never 0); without userns-remap only when "
            "set explicitly, else fence picks a uid no host account has"),
    KeySpec("container/memory", MemoryType(*APP_MEMORY_MIB), 256,
            "default memory limit of an app instance, in MiB"),
    KeySpec("container/cpu_shares", IntType(2, 262144), 1024,
            "relative CPU weight of each container"),
    KeySpec("container/bind_address", IPAddressType(), "127.0.0.1",
            "host address on which instance ports are published"),
    KeySpec("container/nofile", IntType(64, 1048576), 16384,
            "limit on open file descriptors per container"),
    KeySpec("container/log_max_size", PatternType(r"[1-9][0-9]{0,5}[kmg]", "a size like 10m"),
            "10m", "size of one container log file before rotation"),
    KeySpec("container/log_max_files", IntType(1, 100), 3,
            "rotated container log files kept"),
    KeySpec("max_container_processes", IntType(16, 1048576), 512,
            "process limit of every container (fork-bomb guard)"),
    KeySpec("security/require_userns", BoolType(), False,
            "refuse to create containers when the engine runs without userns-remap"),
    KeySpec("health/timeout", IntType(1, 180, "of seconds"), 60,
            "seconds a web instance has to accept connections on $PORT"),
    KeySpec("release/timeout", IntType(1, 86400, "of seconds"), 300,
            "seconds an app's release command may run before it is killed and the deploy aborted"),
    KeySpec("health/failures", IntType(1, 100, "of checks"), 3,
            "failed liveness checks in a row after which a running instance is replaced (a crash)"),
    KeySpec("health/grace", IntType(1, 180, "of seconds"), 5,
            "seconds an instance of a process type other than web must keep running after its start "
            "to count as healthy (Cloud Foundry's process check)"),
    KeySpec("router/port", IntType(1, 65535), 8080,
            "TCP port the node's router listens on"),
    KeySpec("router/bind_address", IPAddressType(), "127.0.0.1",
            "address the node's router listens on: 0.0.0.0 (or ::) for every interface, so that "
            "other machines reach the apps; the default serves this machine only"),
    KeySpec("router/domain", PatternType(DNS_NAME_PATTERN, "a DNS name like localhost or apps.example.com"),
            "localhost", "apps answer at http://APP.<domain>:<port>/"),
    KeySpec("router/max_urls", IntType(0, 1000), 16,
            "host names an app may have besides APP.<domain> (manifest urls, `fence route add`)"),
    KeySpec("node/memory_overcommit", FloatType(0.1, 100.0), 1.0,
            "instance memory limits may add up to this many times the node's RAM; a start "
            "beyond it is refused"),
    KeySpec("cron/timeout", IntType(1, 7 * 86400, "of seconds"), 3600,
            "seconds a cron job may run before its container is killed"),
    # --- log drains (issue 18) ---
    KeySpec("logs/drains", ListType(DrainUrlType(), max_items=16), [],
            "node-wide drains: every app's lines go to each of these URLs too (syslog://HOST:PORT, "
            "syslog+udp://, syslog+tls://, http(s)://)"),
    KeySpec("logs/drain_buffer", MemoryType(1, 1024), 8,
            "lines each drain holds while it is slow or down, in MiB; past it the oldest are dropped "
            "(and counted)"),
    KeySpec("logs/ca_file", PatternType(f"(?:{_ABSOLUTE_FOLDER})?", "an absolute path of a PEM file, or empty"),
            "", "CA certificates (PEM) that syslog+tls:// and https:// drains trust; empty: the system's"),
    KeySpec("logs/drain_loopback", BoolType(), False,
            "apps' drains may point at this node itself (loopback, link-local addresses); off, a "
            "developer cannot make the daemon post logs to services that listen on the node only"),
    # --- end log drains ---
    KeySpec("gc/interval", IntType(0, 7 * 86400, "of seconds"), 3600,
            "seconds between the daemon's garbage collections; 0 turns them off"),
    # Dockerfile and image apps (issue 15)
    KeySpec("docker/build_bases", ListType(image_ref_type(), max_items=64), [],
            "images a Dockerfile app may name in FROM (and COPY --from); empty: the configured "
            "stack images (docker/image and docker/images)"),
    KeySpec("security/allow_unremapped_builds", BoolType(), False,
            "build Dockerfile apps even when the engine runs without userns-remap (RUN steps "
            "then run as host root)"),
    KeySpec("security/root_apps", ListType(PatternType(NAME_PATTERN, "an app name"), max_items=1000), [],
            "apps whose Dockerfile or image may run as USER root (only with userns-remap on)"),
    KeySpec("staging/max_layers", IntType(1, 127), 64,
            "most layers a Dockerfile app's image may have (base layers included)"),
    KeySpec("staging/max_image", MemoryType(1, 1024 * 1024), 4096,
            "largest image a Dockerfile build may make, in MiB (base included)"),
    # --- the cluster (kato cluster …): single-node fence is role none, the default ---
    KeySpec("cluster/role", EnumType(("none", "controller", "worker")), "none",
            "this node's part in a Swarm cluster; set by `kato cluster init|join|leave`"),
    KeySpec("cluster/registry_address", AddressType(), "127.0.0.1:5000",
            "where the controller's image registry listens and every node pulls droplet images from"),
    KeySpec("cluster/listen_address", AddressType(), "0.0.0.0:2377",
            "where this engine's Swarm control plane listens (kato cluster init|join)"),
    KeySpec("cluster/advertise_address", AddressType(empty_ok=True), "",
            "the address other nodes reach this engine's Swarm at; empty: the engine picks one"),
    KeySpec("cluster/manager_address", AddressType(empty_ok=True), "",
            "the controller's Swarm address this node joined (recorded by kato cluster init|join)"),
    # --- metrics (issue 18) ---
    KeySpec("metrics/listen", AddressType(empty_ok=True, ipv6_ok=True), "",
            "also serve /metrics over TCP on this address (read at the daemon's start; empty: only on fence.sock)"),
    # --- backing services (issue 16) ---
    KeySpec("services/backup_interval", IntType(0, 30 * 86400, "of seconds"), 0,
            "seconds between periodic backups of every service; 0 turns them off"),
    KeySpec("services/backup_keep", IntType(1, 1000, "of backups"), 7,
            "backups kept per service; the oldest past this many are removed after a new one"),
    KeySpec("services/memory", MemoryType(64, 64 * 1024), 256,
            "default memory limit of a service container, in MiB (`fence service create --mem`)"),
    KeySpec("services/health_timeout", IntType(1, 600, "of seconds"), 120,
            "seconds a new or restarted service has to answer its server's own probe"),
    KeySpec("services/max_backup", MemoryType(1, 1024 * 1024), 16 * 1024,
            "largest backup of one service, in MiB; past it the backup fails and nothing is kept"),
)

# Components whose keys are typed; any other component name is free-form, as in Stackato.
SCHEMAS: dict[str, dict[str, KeySpec]] = {
    "fence": {spec.path: spec for spec in FENCE_KEYS},
}


def key_spec(component: str, path: str) -> KeySpec | None:
    """The schema entry of a key, or ``None`` for an unschema'd key."""
    return SCHEMAS.get(component, {}).get(path)


def defaults_tree(component: str) -> dict[str, Any]:
    """The nested mapping of every default of a component."""
    tree: dict[str, Any] = {}
    for spec in SCHEMAS.get(component, {}).values():
        node = tree
        parts = spec.path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(spec.default)
    return tree
