"""The facade every operation goes through: the API and both CLIs call NodeService, nothing deeper."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter

from fence import __version__, labels
from fence.backend.base import ContainerBackend
from fence.config import ConfigStore
from fence.errors import EngineUnavailable
from fence.home import NodeHome
from fence.models import EngineInfo, NodeStatus, StackImage, StackStatus
from fence.stack.resolve import stack_status
from fence.store import StateStore


class NodeService:
    """One node's operations."""

    def __init__(self, *, home: NodeHome, config: ConfigStore, backend: ContainerBackend,
                 store: StateStore) -> None:
        self.home = home
        self.config = config
        self.backend = backend
        self.store = store
        self.node_id = home.node_id
        self.started_at = _now()

    def status(self) -> NodeStatus:
        """The node's status: engine, userns, stack, counts and warnings.

        Never raises for an unreachable engine: that is reported in the status.
        """
        warnings: list[str] = []
        engine: EngineInfo | None = None
        engine_error: str | None = None
        stack: StackStatus | None = None
        containers: dict[str, int] = {}
        try:
            engine = self.backend.engine_info()
            stack = stack_status(config=self.config, backend=self.backend)
            roles = Counter(c.info().labels.get(labels.ROLE, "?")
                            for c in self.backend.list({labels.NODE: self.node_id}))
            containers = dict(sorted(roles.items()))
        except EngineUnavailable as exc:
            engine_error = exc.message
            warnings.append(f"the Docker Engine does not answer: {exc.message}")
        if engine is not None:
            warnings.extend(_engine_warnings(engine, bool(self.config.fence("security/require_userns"))))
        if stack is not None:
            warnings.extend(_stack_warnings(stack, self.config))
        return NodeStatus(
            version=__version__,
            node_id=self.node_id,
            home=str(self.home.host_root),
            daemon_pid=os.getpid(),
            started_at=self.started_at,
            engine=engine,
            engine_error=engine_error,
            stack=stack,
            apps=self.store.count_apps(),
            containers=containers,
            schema_version=self.store.schema_version,
            warnings=tuple(warnings),
        )

    def images(self) -> list[StackImage]:
        """Stack images fence knows: the configured one, the fallbacks, and stacks fence built.

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        configured = str(self.config.fence("docker/image"))
        fallbacks = [str(ref) for ref in self.config.fence("docker/images")]
        in_use = Counter(c.info().image_id for c in self.backend.list({labels.NODE: self.node_id}))
        refs = [configured] + [ref for ref in fallbacks if ref != configured]
        for image in self.backend.list_images({labels.STACK: ""}):
            refs.extend(tag for tag in image.tags if tag not in refs)
        found: list[StackImage] = []
        for ref in refs:
            image = self.backend.image_info(ref)
            found.append(StackImage(
                ref=ref,
                image_id=image.id if image else None,
                size=image.size if image else 0,
                created=image.created if image else "",
                configured=ref == configured,
                fallback=ref in fallbacks,
                containers=in_use.get(image.id, 0) if image else 0,
            ))
        return found

    def close(self) -> None:
        """Release the state store."""
        self.store.close()


def _engine_warnings(engine: EngineInfo, require_userns: bool) -> list[str]:
    found = []
    if not engine.userns_remap:
        if require_userns:
            found.append("user-namespace remapping is off and security/require_userns is true: "
                         "fence refuses to create containers")
        else:
            found.append("user-namespace remapping is off: container root is host root "
                         "(start dockerd with --userns-remap=default)")
    if not engine.seccomp:
        found.append("the engine applies no seccomp profile")
    found.extend(f"engine: {w}" for w in engine.warnings)
    return found


def _stack_warnings(stack: StackStatus, config: ConfigStore) -> list[str]:
    if stack.in_use is None:
        return [f"stack image {stack.configured} is not on this node: build it with "
                f"`kato image build --tag {stack.configured}`"]
    if stack.fallback:
        return [f"stack image {stack.configured} is missing; using fallback {stack.in_use} "
                f"from docker/images"]
    return []


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
