"""Which stack image to use: docker/image, else the first present of the docker/images fallbacks."""

from __future__ import annotations

from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import ImageNotFound
from fence.models import StackStatus


def stack_status(*, config: ConfigStore, backend: ContainerBackend) -> StackStatus:
    """The configured stack and the image actually in use.

    Raises:
        EngineUnavailable: the engine does not answer.
    """
    configured = str(config.fence("docker/image"))
    fallbacks = [str(ref) for ref in config.fence("docker/images")]
    first = backend.image_info(configured)
    if first is not None:
        return StackStatus(configured=configured, in_use=configured, image_id=first.id,
                           present=True, fallback=False)
    for ref in fallbacks:
        image = backend.image_info(ref)
        if image is not None:
            return StackStatus(configured=configured, in_use=ref, image_id=image.id,
                               present=False, fallback=True)
    return StackStatus(configured=configured, in_use=None, image_id=None, present=False,
                       fallback=False)


def stack_image(*, config: ConfigStore, backend: ContainerBackend) -> str:
    """The image reference new containers start from.

    Raises:
        ImageNotFound: neither docker/image nor any docker/images entry is on the engine.
        EngineUnavailable: the engine does not answer.
    """
    status = stack_status(config=config, backend=backend)
    if status.in_use is None:
        raise ImageNotFound(image=status.configured)
    return status.in_use
