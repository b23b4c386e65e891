"""Instance states and the transitions allowed between them; depends on nothing else in fence."""

from __future__ import annotations

from enum import Enum


class InstanceState(str, Enum):
    """Where an app instance is in its life."""

    STARTING = "starting"   # container created, web process not yet healthy
    RUNNING = "running"     # healthy (web: accepts connections on $PORT)
    CRASHED = "crashed"     # exited or failed its health check; waits for a restart
    STOPPING = "stopping"   # TERM sent, KILL after the grace period
    STOPPED = "stopped"     # gone; the record is about to be dropped


_ALLOWED: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.STARTING: frozenset({InstanceState.RUNNING, InstanceState.CRASHED, InstanceState.STOPPING}),
    InstanceState.RUNNING: frozenset({InstanceState.CRASHED, InstanceState.STOPPING}),
    InstanceState.CRASHED: frozenset({InstanceState.STARTING, InstanceState.STOPPING, InstanceState.STOPPED}),
    InstanceState.STOPPING: frozenset({InstanceState.STOPPED}),
    InstanceState.STOPPED: frozenset(),
}


class TransitionError(ValueError):
    """A state change the instance life cycle does not allow (a bug in the caller)."""


def check_transition(old: InstanceState, new: InstanceState) -> InstanceState:
    """Return ``new`` if an instance may go from ``old`` to it.

    Raises:
        TransitionError: the transition is not allowed.
    """
    if new not in _ALLOWED[old]:
        raise TransitionError(f"an instance cannot go from {old.value} to {new.value}")
    return new
