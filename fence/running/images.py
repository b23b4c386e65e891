"""Droplet images: the stack with a droplet unpacked in the app user's home, made once per
droplet and stack, so that an instance starts as fast as ``docker run`` of a ready image."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from fence import labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.errors import DropletImageFailed, FenceError, ImageNotFound
from fence.image_apps import is_image_droplet
from fence.layout import AppUser, Workspace
from fence.limits import container_limits
from fence.models import ContainerSpec, DropletRecord, ImageInfo, ProcessSpec
from fence.stack.resolve import stack_status
from fence.tarstream import TarMember, tar_stream

log = logging.getLogger("fence.images")

REPOSITORY = "fence/droplet"
_UNPACK_TIMEOUT = 600  # seconds; a droplet is at most what staging could write


@dataclass(frozen=True)
class DropletImage:
    """The image an app's instances start from.

    Attributes:
        ref: its tag (``fence/droplet:<node>-<droplet>-<stack>``).
        image_id: its id.
        stack_ref: the stack image reference it was made on.
        stack_id: that stack image's id.
        made: whether this call made it (it was not on the engine); not part of equality.
    """

    ref: str
    image_id: str
    stack_ref: str
    stack_id: str
    made: bool = field(default=False, compare=False)


def droplet_image_ref(node_id: str, droplet_id: str, stack_id: str) -> str:
    """The tag of a droplet's image on a stack (one per node, droplet and stack image id)."""
    return f"{REPOSITORY}:{node_id}-{droplet_id[:16]}-{stack_id.removeprefix('sha256:')[:12]}"


class DropletImages:
    """Makes and finds droplet images.

    A droplet image is a container of the current stack into which the packed droplet is
    copied (one engine call), unpacked by ``tar`` as the app user (so ownership is right with
    or without user-namespace remapping, and on stacks without the app user), then committed.
    It costs about a second once; every instance of the droplet then starts with nothing to
    copy. Images are labelled with the node, droplet and stack image id; ``kato gc`` removes
    those no kept release or container needs.

    Args:
        backend: the engine.
        config: node config (stack, app user).
        droplets: the droplet store.
        node_id: this node's id.
        app_user: decides the uid the droplet is unpacked as.
    """

    def __init__(self, *, backend: ContainerBackend, config: ConfigStore, droplets: DropletStore,
                 node_id: str, app_user: AppUser) -> None:
        self._backend = backend
        self._config = config
        self._app_user = app_user
        self._droplets = droplets
        self._node_id = node_id
        self._guard = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._known: dict[str, str] = {}  # refs found or made by this process → image id

    def ensure(self, droplet: DropletRecord, *, memory_mib: int) -> DropletImage:
        """The droplet's image on the stack new containers use now, made if missing.

        Concurrent calls for the same droplet and stack make it once.

        Args:
            droplet: the droplet.
            memory_mib: memory limit of the container that unpacks it (the app's).

        Raises:
            ImageNotFound: no stack image on the node.
            DropletNotFound: the droplet file is gone.
            DropletCorrupt: the droplet file no longer hashes to its digest (no image is made).
            DropletImageFailed: unpacking the droplet failed (the container's output says why).
            EngineUnavailable, EngineError: the engine failed.
        """
        if is_image_droplet(droplet.builder):  # issue 15: the built or pushed image itself
            found = self._backend.image_info(droplet.image_id)
            if found is None:
                raise DropletImageFailed(droplet=droplet.id[:12], stack=droplet.base_image,
                                         detail=f"its image {droplet.image_ref or droplet.image_id} is no longer on "
                                         "the engine: run `fence restage`")
            return DropletImage(ref=droplet.image_id, image_id=found.id, stack_ref=droplet.base_image,
                                stack_id=droplet.base_image_id)
        status = stack_status(config=self._config, backend=self._backend)
        if status.in_use is None or status.image_id is None:
            raise ImageNotFound(image=status.configured)
        ref = droplet_image_ref(self._node_id, droplet.id, status.image_id)
        with self._guard:
            known = self._known.get(ref)
            lock = self._building.setdefault(ref, threading.Lock())
        made = False
        if known is None:
            with lock:
                found = self._backend.image_info(ref)
                if not (found and found.labels.get(labels.DROPLET) == droplet.id
                        and found.labels.get(labels.STACK_ID) == status.image_id):
                    found, made = self._build(droplet, ref, status.in_use, status.image_id, memory_mib), True
            known = found.id
            with self._guard:
                self._known[ref] = known
                self._building.pop(ref, None)  # after a failure it stays: waiters share one build
        return DropletImage(ref=ref, image_id=known, stack_ref=status.in_use, stack_id=status.image_id, made=made)

    def forget(self, ref: str) -> None:
        """Look the image up again next time (it was removed, or a create did not find it)."""
        with self._guard:
            self._known.pop(ref, None)

    def _build(self, droplet: DropletRecord, ref: str, stack_ref: str, stack_id: str,
               memory_mib: int) -> ImageInfo:
        # A droplet file changed after staging (by hand, a bad disk, an intruder) is refused
        # before anything of it reaches a container: its name is its sha256.
        self._droplets.verify(droplet.id)
        ws = Workspace.of(self._config, self._app_user)
        user = f"{ws.uid}:{ws.uid}"
        host_droplet = self._droplets.host_path(droplet.id)
        ctr_droplet = ws.ctr_home / ".fence-droplet.tgz"
        home = str(ws.ctr_home).lstrip("/")
        spec = ContainerSpec(
            image=stack_id,
            labels=labels.owned(self._node_id, labels.ROLE_IMAGE, app=droplet.app, droplet=droplet.id),
            user=user, command=None, env=ws.base_env, workdir=ws.ctr_home,
            limits=container_limits(self._config, max(memory_mib, 256)),
            network="none")
        container = self._backend.create(spec)
        try:
            container.stream_in(PurePosixPath("/"), tar_stream([
                TarMember(name=home, mode=0o755, uid=ws.uid, kind="dir"),
                TarMember(name=f"{home}/{ctr_droplet.name}", mode=0o600, uid=ws.uid, host_file=host_droplet),
            ]))
            container.start()
            for argv in (("tar", "-xzpf", str(ctr_droplet), "-C", str(ws.ctr_home)), ("rm", "-f", str(ctr_droplet))):
                result = container.run(ProcessSpec(argv=argv, user=user, cwd=ws.ctr_home, timeout=_UNPACK_TIMEOUT))
                if result.exit_code != 0:
                    tail = " / ".join(line.strip() for line in result.output[-3:] if line.strip())
                    raise DropletImageFailed(droplet=droplet.id[:12], stack=stack_ref,
                                             detail=f"{argv[0]} exited {result.exit_code}: {tail or 'no output'}")
            image = container.commit(ref, {
                labels.NODE: self._node_id, labels.DROPLET: droplet.id, labels.APP: droplet.app,
                labels.STACK_ID: stack_id, labels.STACK_REF: stack_ref})
        finally:
            # Removed before the deploy goes on (~0.25 s): removing it in the background made the
            # instance starts that follow compete with it (first start 0.32 s -> 0.43-0.70 s).
            try:
                container.destroy()
            except FenceError as exc:
                log.warning("could not remove an image container", extra={"container": container.id[:12],
                                                                           "error": exc.message})
        log.info("droplet image made", extra={"app": droplet.app, "droplet": droplet.id[:12],
                                              "stack": stack_ref, "image": ref})
        return image
