"""The engine work on one instance container: start it for a slot, stop it, and why it exited."""

from __future__ import annotations

import datetime as dt
import logging
import time

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import ContainerNotFound, FenceError
from fence.models import AppRecord, ContainerInfo
from fence.running.backoff import BackoffPolicy, Clock
from fence.running.health import probe_for
from fence.running.instance import WEB, Instance, PendingStart, SlotKey, SlotTable, slot_of
from fence.running.starter import InstanceStarter, Launch
from fence.states import InstanceState
from fence.store import StateStore

log = logging.getLogger("fence.instances")


def launch(*, store: StateStore, starter: InstanceStarter, config: ConfigStore, app: AppRecord, key: SlotKey,
           release: int, start: PendingStart, clock: Clock) -> Instance:
    """Start the slot's container of ``release`` and return its record (starting, ``seq`` 0).

    Args:
        store: desired state (the release's droplet; the stack is noted as in use).
        starter: creates the container.
        config: node config (``health/timeout``, ``health/grace``).
        app: the app's desired state.
        key: the slot.
        release: the release it runs.
        start: why it starts (replacing a serving instance, a rollout).
        clock: the manager's clock (the health deadline counts from when the container runs).

    Raises:
        FenceError: the droplet is gone or the container could not start.
    """
    record = store.release(app.name, release)
    droplet = store.droplet(record.droplet) if record else None
    if droplet is None:
        raise ContainerNotFound(container=f"release {release} of {app.name} (droplet gone)")
    container = starter.launch(Launch(app=app, release=release, droplet=droplet, index=key.index,
                                      process=key.process))
    info = container.info()
    store.note_stack(info.stack_image_id, stack_ref(info), wall_now())
    # web: the port check's deadline; any other type: healthy once still running after the grace.
    timeout = (app.health_timeout or int(config.fence("health/timeout"))) if key.process == WEB else \
        int(config.fence("health/grace"))
    now = clock.now()
    return Instance(container_id=container.id, app=app.name, index=key.index, process=key.process,
                    release=release, state=InstanceState.STARTING, created=now, health_deadline=now + timeout,
                    host_port=info.ports[0].host_port if info.ports else None, address=info.ip_address,
                    image_id=info.stack_image_id, memory_mib=app.memory_for(key.process), replacing=start.replacing,
                    rollout=start.rollout, probe=probe_for(app.health, web=key.process == WEB))


def adopt(info: ContainerInfo, record: AppRecord | None, *, now: float, backend: ContainerBackend,
          store: StateStore, slots: SlotTable, unstopped: set[str], policy: BackoffPolicy) -> Instance:
    """The record of a container found by label that the manager did not start (after a daemon
    restart): its slot's crash count notes it, a stop that failed before (``unstopped``) is
    tried again without counting a crash.

    Args:
        info: the container as the engine lists it.
        record: its app's desired state (``None``: the app is gone).
        now: the manager's clock.
        backend: the engine (an exited container's reason).
        store: notes the stack the container runs on.
        slots: the manager's slot records.
        unstopped: ids of containers whose stop failed (this one is taken out).
        policy: crash backoff.
    """
    key, _ = slot_of(info)
    instance = Instance.adopted(info, now=now, memory_mib=record.memory_for(key.process) if record else 0,
                                reason=None if info.running else exit_reason(backend, info.id))
    instance.probe = probe_for(record.health if record else None, web=instance.process == WEB)
    store.note_stack(info.stack_image_id, stack_ref(info), wall_now())
    count = slots[instance.slot].crashes
    if info.id in unstopped:
        # A stop that failed while the engine was away: stop it again, it is no new crash.
        unstopped.discard(info.id)
        instance.state = InstanceState.CRASHED
        instance.reason = "left over from an interrupted stop"
    elif info.running:
        count.started(now)
    else:
        count.crashed(now, policy)
    log.info("adopted instance", extra={"app": instance.app, "instance": instance.name,
                                        "container": info.id[:12], "state": instance.state.value})
    return instance


def stop(backend: ContainerBackend, instance: Instance, *, drain: float) -> bool:
    """Let a routed instance's requests finish (``drain`` seconds), TERM it (10 s grace), remove it.

    Returns:
        False when the engine failed: the container may still exist (a later pass finds it again).
    """
    try:
        if drain and instance.web and instance.healthy_since is not None:
            time.sleep(drain)  # the router has already dropped it; let requests finish
        container = backend.lookup(instance.container_id)
        container.stop(grace=10)
        container.destroy()
    except ContainerNotFound:
        pass
    except FenceError as exc:
        log.warning("instance stop failed", extra={"container": instance.container_id[:12], "error": exc.message})
        return False
    return True


def kill(backend: ContainerBackend, container_id: str) -> None:
    """KILL an unhealthy instance now (the next pass stops and removes it)."""
    try:
        backend.lookup(container_id).stop(grace=0)
    except FenceError:
        pass


def exit_reason(backend: ContainerBackend, container_id: str) -> str:
    """Why an instance container stopped, in the words ``fence app`` shows."""
    try:
        full = backend.lookup(container_id).info()
    except ContainerNotFound:
        return "the container vanished"
    if full.oom_killed:
        return "out of memory (killed at its memory limit)"
    return f"exited {full.exit_code}" if full.exit_code is not None else "exited"


def last_output(backend: ContainerBackend, container_id: str) -> str:
    """The last line the container's main process wrote (why a new stack failed, often)."""
    try:
        lines = [line.strip() for line in backend.lookup(container_id).logs(tail=5) if line.strip()]
    except FenceError:
        return ""
    return lines[-1][:300] if lines else ""


def stack_ref(info: ContainerInfo) -> str:
    """The stack image reference a container was started on (its label, else its image)."""
    return str(info.labels.get(labels.STACK_REF) or info.image)


def wall_now() -> str:
    """UTC now, to the second (when a stack was last seen in use)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
