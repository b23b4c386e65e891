"""The Docker labels fence puts on what it owns (after a restart they are the truth), and how it shows engine ids."""

from __future__ import annotations

from typing import Mapping

NODE = "fence.node"
ROLE = "fence.role"
APP = "fence.app"
DROPLET = "fence.droplet"
INSTANCE = "fence.instance"
STACK = "fence.stack"
# On instance and task containers, and on droplet images: the stack image they are built on
# (a droplet image's own id is not the stack's; rollouts and gc need the stack's).
STACK_ID = "fence.stack-id"
STACK_REF = "fence.stack-ref"
# On instance and task containers: the release number they run.
RELEASE = "fence.release"

# On instance containers: the process type they run (web, worker …); none means web.
PROCESS = "fence.process"

ROLE_STAGING = "staging"
ROLE_INSTANCE = "instance"
ROLE_TASK = "task"
ROLE_PROBE = "probe"
ROLE_IMAGE = "image"  # a short-lived container that unpacks a droplet to commit a droplet image
ROLE_NETWORK = "network"  # an app's bridge network (its instances and tasks join only it)
ROLE_BUILD = "build"  # a Dockerfile app's image, built at staging (its cache for the next build too)
# Backing services (issue 16): a service's container and its data volume carry the service's name.
SERVICE = "fence.service"
SERVICE_TYPE = "fence.service-type"
ROLE_SERVICE = "service"
ROLE_VOLUME = "volume"
ROLES = frozenset({ROLE_STAGING, ROLE_INSTANCE, ROLE_TASK, ROLE_PROBE, ROLE_IMAGE, ROLE_NETWORK,
                   ROLE_SERVICE, ROLE_VOLUME, ROLE_BUILD})


def owned(node_id: str, role: str, **extra: str) -> dict[str, str]:
    """Labels for something this node creates.

    Args:
        node_id: this node's id (``NodeHome.node_id``).
        role: one of ``ROLES``.
        **extra: further labels by short name: ``app``, ``droplet``, ``instance``, ``stack``,
            ``stack_id``, ``stack_ref``, ``release``, ``process``.

    Returns:
        The full label mapping.

    Raises:
        ValueError: an unknown role or short name (a bug in the caller).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    names = {"app": APP, "droplet": DROPLET, "instance": INSTANCE, "stack": STACK,
             "stack_id": STACK_ID, "stack_ref": STACK_REF, "release": RELEASE, "process": PROCESS,
             "service": SERVICE, "service_type": SERVICE_TYPE}
    labels = {NODE: node_id, ROLE: role}
    for short, value in extra.items():
        if short not in names:
            raise ValueError(f"unknown label {short!r}")
        labels[names[short]] = str(value)
    return labels


def is_owned_by(labels: Mapping[str, str], node_id: str) -> bool:
    """Whether something with these labels belongs to this node."""
    return labels.get(NODE) == node_id


def is_droplet_image(image_labels: Mapping[str, str]) -> bool:
    """Whether an image with these labels is a droplet image (a stack image never carries a
    droplet label, though a droplet image inherits its stack's labels)."""
    return DROPLET in image_labels and STACK_ID in image_labels


def short_id(image_id: str) -> str:
    """``sha256:0123456789ab`` from a full image id (what admins see in ``docker images``)."""
    return image_id[:19] if image_id.startswith("sha256:") else image_id[:12] or "?"
