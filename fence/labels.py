"""The Docker labels fence puts on what it owns: after a restart they are the truth."""

from __future__ import annotations

from typing import Mapping

NODE = "fence.node"
ROLE = "fence.role"
APP = "fence.app"
DROPLET = "fence.droplet"
INSTANCE = "fence.instance"
STACK = "fence.stack"

ROLE_STAGING = "staging"
ROLE_INSTANCE = "instance"
ROLE_TASK = "task"
ROLE_PROBE = "probe"
ROLES = frozenset({ROLE_STAGING, ROLE_INSTANCE, ROLE_TASK, ROLE_PROBE})


def owned(node_id: str, role: str, **extra: str) -> dict[str, str]:
    """Labels for something this node creates.

    Args:
        node_id: this node's id (``NodeHome.node_id``).
        role: one of ``ROLES``.
        **extra: further labels by short name: ``app``, ``droplet``, ``instance``, ``stack``.

    Returns:
        The full label mapping.

    Raises:
        ValueError: an unknown role or short name (a bug in the caller).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    names = {"app": APP, "droplet": DROPLET, "instance": INSTANCE, "stack": STACK}
    labels = {NODE: node_id, ROLE: role}
    for short, value in extra.items():
        if short not in names:
            raise ValueError(f"unknown label {short!r}")
        labels[names[short]] = str(value)
    return labels


def is_owned_by(labels: Mapping[str, str], node_id: str) -> bool:
    """Whether something with these labels belongs to this node."""
    return labels.get(NODE) == node_id
