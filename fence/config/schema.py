"""The typed schema of the `fence` config component: every known key, its type, default and help."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fence.config.types import (
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
