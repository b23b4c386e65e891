"""Which process types of a release run, and how many instances of each: counts per type across deploys and scaling."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fence.errors import UsageError
from fence.models import WEB_PROCESS, AppRecord, DropletRecord, InstanceView, ProcessScale
from fence.rules import MAX_INSTANCES

# Heroku's release phase runs once per release (its own one-off container), never as instances.
RELEASE_PROCESS = "release"


def long_running(droplet: DropletRecord) -> tuple[str, ...]:
    """The process types of a droplet that run as instances: ``web`` first (always: it is the
    droplet's start command), then the others of its process table by name, without ``release``."""
    others = sorted(k for k in droplet.process_types if k not in (WEB_PROCESS, RELEASE_PROCESS))
    return (WEB_PROCESS, *others)


@dataclass(frozen=True)
class TypeCounts:
    """An app's counts and memory per process type for one release.

    Attributes:
        processes: counts of the types other than ``web``.
        process_memory: memory of the types that have their own (MiB).
        warnings: lines for the push (a type that left the process table and was scaled to 0).
    """

    processes: Mapping[str, int]
    process_memory: Mapping[str, int]
    warnings: tuple[str, ...] = ()


def counts_for(droplet: DropletRecord, existing: AppRecord | None,
               scale: Mapping[str, ProcessScale] | None = None) -> TypeCounts:
    """The counts of the non-web types once ``droplet`` is the app's release.

    A type the manifest gives a count keeps it on every deploy (as ``instances:`` does for web);
    otherwise a type keeps its count across deploys, and a type new to the app starts with 1. A
    type the app ran that is not in the new process table is scaled to 0, with a warning line.

    Args:
        droplet: the release's droplet (its process table).
        existing: the app's desired state so far (``None``: a first deploy).
        scale: the manifest's ``processes:`` counts and memory, by type.
    """
    scale = scale or {}
    before = dict(existing.processes) if existing else {}
    memory_before = dict(existing.process_memory) if existing else {}
    kinds = long_running(droplet)[1:]
    processes: dict[str, int] = {}
    memory: dict[str, int] = {}
    for kind in kinds:
        asked = scale.get(kind, ProcessScale())
        processes[kind] = _checked(asked.instances if asked.instances is not None else before.get(kind, 1))
        mem = asked.memory_mib if asked.memory_mib is not None else memory_before.get(kind)
        if mem is not None:
            memory[kind] = mem
    warnings = []
    for kind, count in sorted(before.items()):
        if kind in processes:
            continue
        processes[kind] = 0
        if count:
            warnings.append(f"-----> Warning: process type {kind} is not in the new release's process table: "
                            f"scaled to 0 (it ran {count} instance{'s' if count != 1 else ''})")
    return TypeCounts(processes=processes, process_memory=memory, warnings=tuple(warnings))


def scaled(app: AppRecord, droplet: DropletRecord | None, counts: Mapping[str, int]) -> AppRecord:
    """The app with new counts per type (``web``: ``instances``).

    Raises:
        UsageError: a type the app's current release does not have, or a count out of range.
    """
    known = long_running(droplet) if droplet is not None else (WEB_PROCESS,)
    for kind, count in counts.items():
        if kind not in known:
            raise UsageError(detail=f"app {app.name} has no process type {kind!r} (its types: "
                                    f"{', '.join(known)})")
        _checked(count)
    processes = {**app.processes, **{k: v for k, v in counts.items() if k != WEB_PROCESS}}
    return dataclasses.replace(app, instances=counts.get(WEB_PROCESS, app.instances), processes=processes)


def _checked(count: int) -> int:
    if not 0 <= count <= MAX_INSTANCES:
        raise UsageError(detail=f"instances must be from 0 to {MAX_INSTANCES}, not {count}")
    return count


def per_type(app: AppRecord, instances: Iterable[InstanceView],
             release: int | None) -> tuple[dict[str, int], dict[str, int]]:
    """The app's desired count per type, and how many of ``release`` run now, per type."""
    desired = app.counts()
    running = {kind: 0 for kind in desired}
    for inst in instances:
        if inst.state == "running" and inst.release == release and inst.process in running:
            running[inst.process] += 1
    return desired, running

