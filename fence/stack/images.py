"""The stack images a node knows, and which of its apps run on each."""

from __future__ import annotations

from collections import Counter

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.models import StackImage, StackStatus
from fence.stack.resolve import stack_status


def stack_images(*, config: ConfigStore, backend: ContainerBackend, node_id: str) -> list[StackImage]:
    """The configured stack, the fallbacks, stacks fence built (labelled ``fence.stack``), and any
    other image this node's containers run on (e.g. an old stack whose tag moved on); each with
    how many of this node's containers and which of its apps' instances run on it.

    Args:
        config: node config (``docker/image``, ``docker/images``).
        backend: the engine.
        node_id: this node's id.

    Returns:
        The images, configured first.

    Raises:
        EngineUnavailable: the engine does not answer.
    """
    configured = str(config.fence("docker/image"))
    fallbacks = [str(ref) for ref in config.fence("docker/images")]
    status = stack_status(config=config, backend=backend)
    mine = backend.list_info({labels.NODE: node_id})
    in_use = Counter(c.stack_image_id for c in mine)
    apps: dict[str, set[str]] = {}
    for info in mine:
        if info.labels.get(labels.ROLE) == labels.ROLE_INSTANCE and info.labels.get(labels.APP):
            apps.setdefault(info.stack_image_id, set()).add(info.labels[labels.APP])
    refs = [configured] + [ref for ref in fallbacks if ref != configured]
    for image in backend.list_images({labels.STACK: ""}):
        if not labels.is_droplet_image(image.labels):  # droplet images are layers on a stack, not stacks
            refs.extend(tag for tag in image.tags if tag not in refs)
    found = [_entry(backend, ref, configured=ref == configured, fallback=ref in fallbacks, in_use=in_use,
                    apps=apps, status=status) for ref in refs]
    listed = {image.image_id for image in found}
    for image_id in sorted(set(in_use) - listed):
        found.append(_entry(backend, image_id, configured=False, fallback=False, in_use=in_use, apps=apps,
                            status=status))
    return found


def _entry(backend: ContainerBackend, ref: str, *, configured: bool, fallback: bool, in_use: Counter,
           apps: dict[str, set[str]], status: StackStatus) -> StackImage:
    image = backend.image_info(ref)
    image_id = image.id if image else None
    return StackImage(ref=ref, image_id=image_id, size=image.size if image else 0,
                      created=image.created if image else "", configured=configured, fallback=fallback,
                      containers=in_use.get(image_id, 0) if image_id else 0,
                      apps=tuple(sorted(apps.get(image_id, ()))) if image_id else (),
                      in_use=image_id is not None and image_id == status.image_id and ref == status.in_use)
