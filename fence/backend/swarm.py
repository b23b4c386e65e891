"""SwarmBackend: the ClusterBackend of a Docker Engine (swarm membership, nodes, checks, registry pushes)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from typing import Any

import docker
import docker.errors
import docker.types

from fence.backend.docker import _engine, _explain
from fence.backend.swarm_services import SwarmServices
from fence.cluster_models import (
    AVAILABILITIES,
    SWARM_INACTIVE,
    ClusterNode,
    EngineChecks,
    JoinTokens,
    SwarmState,
)
from fence.errors import (
    ClusterError,
    EngineError,
    EngineUnavailable,
    NodeNotFound,
    RegistryUnavailable,
    UsageError,
)

# The probe: a container started WITHOUT asking for no-new-privileges, so what it reads is the
# engine's daemon-wide default; otherwise as locked down as any fence container.
_PROBE_COMMAND = ["cat", "/proc/self/status"]
_PROBE_MEMORY = 32 * 1024 * 1024
_PROBE_TIMEOUT = 60


class SwarmBackend(SwarmServices):
    """The ClusterBackend of one Docker Engine, reached through the docker SDK.

    Args:
        base_url: the engine's address; ``None`` reads ``DOCKER_HOST`` and friends.
    """

    def __init__(self, *, base_url: str | None = None) -> None:
        self._base_url = base_url
        self._lock = threading.Lock()
        self._client: docker.DockerClient | None = None

    def _api(self) -> docker.APIClient:
        with self._lock:
            if self._client is None:
                try:
                    if self._base_url is None:
                        self._client = docker.from_env(version="auto", timeout=60)
                    else:
                        self._client = docker.DockerClient(base_url=self._base_url, version="auto", timeout=60)
                except docker.errors.DockerException as exc:
                    raise EngineUnavailable(detail=_explain(exc)) from exc
            return self._client.api

    def close(self) -> None:
        """Close the connection to the engine (a later call opens it again)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- membership ----------------------------------------------------------------------------

    def swarm_state(self) -> SwarmState:
        """See ``ClusterBackend.swarm_state``."""
        with _engine("reporting its swarm state"):
            swarm = self._api().info().get("Swarm") or {}
        return SwarmState(
            state=str(swarm.get("LocalNodeState") or SWARM_INACTIVE),
            node_id=str(swarm.get("NodeID") or ""),
            manager=bool(swarm.get("ControlAvailable")),
            cluster_id=str((swarm.get("Cluster") or {}).get("ID") or ""),
            manager_addresses=tuple(str(m.get("Addr", "")) for m in swarm.get("RemoteManagers") or ()),
        )

    def swarm_init(self, *, listen_addr: str, advertise_addr: str | None) -> SwarmState:
        """See ``ClusterBackend.swarm_init``."""
        state = self.swarm_state()
        if state.active:
            if not state.manager:
                raise ClusterError(detail="this engine is a worker of another swarm; `kato cluster leave` first")
            return state  # adopted: a swarm this engine already manages
        if state.state != SWARM_INACTIVE:
            raise ClusterError(detail=f"this engine's swarm state is {state.state}; `kato cluster leave` first")
        with _engine("initialising a swarm"):
            self._api().init_swarm(listen_addr=listen_addr, advertise_addr=advertise_addr)
        return self.swarm_state()

    def join_tokens(self) -> JoinTokens:
        """See ``ClusterBackend.join_tokens``."""
        self._need_manager()
        with _engine("reporting the swarm's join tokens"):
            tokens = self._api().inspect_swarm().get("JoinTokens") or {}
        return JoinTokens(worker=str(tokens.get("Worker", "")), manager=str(tokens.get("Manager", "")))

    def swarm_join(self, *, token: str, remote_addr: str, listen_addr: str,
                   advertise_addr: str | None) -> SwarmState:
        """See ``ClusterBackend.swarm_join``."""
        state = self.swarm_state()
        if state.state != SWARM_INACTIVE:
            raise ClusterError(detail=f"this engine is already in a swarm ({state.state}); "
                                      "`kato cluster leave` first")
        try:
            self._api().join_swarm([remote_addr], token, listen_addr=listen_addr, advertise_addr=advertise_addr)
        except docker.errors.APIError as exc:
            raise ClusterError(detail=f"joining the swarm at {remote_addr} failed: {_explain(exc)}") from exc
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(detail=_explain(exc)) from exc
        return self.swarm_state()

    def swarm_leave(self, *, force: bool) -> None:
        """See ``ClusterBackend.swarm_leave``."""
        if self.swarm_state().state == SWARM_INACTIVE:
            return
        try:
            self._api().leave_swarm(force=force)
        except docker.errors.APIError as exc:
            raise ClusterError(detail=f"leaving the swarm failed: {_explain(exc)}") from exc

    # --- checks --------------------------------------------------------------------------------

    def engine_checks(self, *, probe_image: str) -> EngineChecks:
        """See ``ClusterBackend.engine_checks``. The probe is the one container made outside
        ``DockerBackend.create``: it must NOT ask for no-new-privileges itself."""
        api = self._api()
        with _engine("reporting its state"):
            info = api.info()
            version = str(api.version().get("Version", ""))
        options = [str(o) for o in info.get("SecurityOptions") or ()]
        status = self._probe_status(probe_image)
        return EngineChecks(version=version, userns_remap=any("name=userns" in o for o in options),
                            no_new_privileges=status.get("NoNewPrivs") == "1")

    def _probe_status(self, image: str) -> dict[str, str]:
        api = self._api()
        with _engine(f"running a probe container from {image}"):
            try:
                api.inspect_image(image)
            except docker.errors.NotFound:
                raise UsageError(detail=f"the probe image {image!r} is not on this engine "
                                        "(the stack image, docker/image, is used)") from None
            host_config = api.create_host_config(
                cap_drop=["ALL"], network_mode="none", pids_limit=16, mem_limit=_PROBE_MEMORY,
                memswap_limit=_PROBE_MEMORY, log_config={"Type": "json-file", "Config": {"max-size": "64k"}})
            created = api.create_container(image, command=_PROBE_COMMAND, user="1000", host_config=host_config,
                                           labels={"fence.role": "probe"})
            try:
                api.start(created["Id"])
                api.wait(created["Id"], timeout=_PROBE_TIMEOUT)
                text = api.logs(created["Id"], stdout=True, stderr=False).decode(errors="replace")
            finally:
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_container(created["Id"], force=True)
        fields = {}
        for line in text.splitlines():
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
        return fields

    def probe_nodes(self, *, probe_image: str, timeout: float = 60.0) -> dict[str, EngineChecks]:
        """See ``ClusterBackend.probe_nodes``."""
        self._need_manager()
        api = self._api()
        name = f"fence-probe-{uuid.uuid4().hex[:10]}"
        spec = docker.types.ContainerSpec(image=probe_image, command=["cat", "/proc/self/status", "/proc/self/uid_map"],
                                          user="1000", cap_drop=["ALL"], init=False)
        resources = docker.types.Resources(mem_limit=_PROBE_MEMORY)
        resources.setdefault("Limits", {})["Pids"] = 16  # the SDK's Resources lacks the 1.41 field
        template = docker.types.TaskTemplate(
            container_spec=spec, resources=resources,
            restart_policy=docker.types.RestartPolicy(condition="none"),
            log_driver=docker.types.DriverConfig("json-file", {"max-size": "64k"}))
        with _engine("starting the node probe"):
            created = api.create_service(template, name=name, labels={"fence.role": "probe"},
                                         mode=docker.types.ServiceMode("global-job"))
        service_id = created["ID"]
        try:
            expected = {n.id for n in self.list_nodes() if n.state == "ready" and n.availability == "active"}
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with _engine("reading the node probe's tasks"):
                    tasks = api.tasks(filters={"service": service_id})
                done = {t.get("NodeID", "") for t in tasks
                        if (t.get("Status") or {}).get("State") in ("complete", "failed", "rejected", "shutdown")}
                if expected <= done:
                    break
                time.sleep(0.3)
            with _engine("reading the node probe's output"):
                raw = api.service_logs(service_id, stdout=True, stderr=False, details=True, is_tty=False)
                text = raw.decode(errors="replace") if isinstance(raw, bytes) else b"".join(raw).decode(errors="replace")
        finally:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_service(service_id)
        return _probe_results(text, version={n.id: n.engine_version for n in self.list_nodes()})

    # --- nodes ---------------------------------------------------------------------------------

    def list_nodes(self) -> list[ClusterNode]:
        """See ``ClusterBackend.list_nodes``."""
        self._need_manager()
        api = self._api()
        with _engine("listing the swarm's nodes"):
            nodes = api.nodes()
            tasks = api.tasks(filters={"desired-state": "running"})
        running = Counter(t.get("NodeID", "") for t in tasks if (t.get("Status") or {}).get("State") == "running")
        return sorted((_node(n, running) for n in nodes), key=lambda n: (n.role != "manager", n.hostname, n.id))

    def set_availability(self, node: str, availability: str) -> ClusterNode:
        """See ``ClusterBackend.set_availability``."""
        if availability not in AVAILABILITIES:
            raise UsageError(detail=f"availability {availability!r} is not one of {', '.join(AVAILABILITIES)}")
        found = self._find_node(node)
        api = self._api()
        with _engine(f"updating node {node}"):
            attrs = api.inspect_node(found.id)
            spec = dict(attrs["Spec"])
            spec["Availability"] = availability
            api.update_node(found.id, attrs["Version"]["Index"], spec)
        return next(n for n in self.list_nodes() if n.id == found.id)

    def _find_node(self, node: str) -> ClusterNode:
        nodes = self.list_nodes()
        exact = [n for n in nodes if node in (n.id, n.hostname)]
        prefix = [n for n in nodes if n.id.startswith(node)]
        for matches in (exact, prefix):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(detail=f"node {node!r} is ambiguous: {', '.join(n.id[:12] for n in matches)}")
        raise NodeNotFound(node=node)

    def _need_manager(self) -> None:
        state = self.swarm_state()
        if not state.active:
            raise ClusterError(detail="this engine is not in a swarm; `kato cluster init` first")
        if not state.manager:
            raise ClusterError(detail="this engine is a swarm worker; run this on the cluster's controller")

    # --- images --------------------------------------------------------------------------------

    def push_image(self, ref: str, *, registry: str, repository: str, tag: str) -> str:
        """See ``ClusterBackend.push_image``."""
        api = self._api()
        target = f"{registry}/{repository}"
        digest = ""
        with _engine(f"tagging {ref} as {target}:{tag}"):
            api.tag(ref, target, tag)
        try:
            for event in api.push(target, tag=tag, stream=True, decode=True):
                if event.get("error"):
                    raise RegistryUnavailable(address=registry, detail=f"refused the push of {ref}: "
                                                                       f"{' '.join(str(event['error']).split())[:300]}")
                digest = str((event.get("aux") or {}).get("Digest") or digest)
        except docker.errors.APIError as exc:
            raise RegistryUnavailable(address=registry, detail=f"refused the push of {ref}: {_explain(exc)}") from exc
        finally:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_image(f"{target}:{tag}")  # the digest is the reference; the tag need not stay here
        if not digest.startswith("sha256:"):
            raise EngineError(action=f"pushing {ref}", detail="the push reported no digest")
        return f"{target}@{digest}"

    def pull_image(self, ref: str) -> str:
        """See ``ClusterBackend.pull_image``."""
        if "@sha256:" not in ref:
            raise UsageError(detail=f"{ref!r} is not a reference by digest (repository@sha256:…)")
        api = self._api()
        repository, digest = ref.split("@", 1)
        try:
            api.pull(repository, tag=digest)
            return str(api.inspect_image(ref)["Id"])
        except docker.errors.APIError as exc:
            raise RegistryUnavailable(address=repository.split("/", 1)[0],
                                      detail=f"refused the pull of {ref}: {_explain(exc)}") from exc


def _probe_results(text: str, *, version: dict[str, str]) -> dict[str, EngineChecks]:
    """Each node's checks from the probe's log lines (``details`` prefix ``…node.id=ID,… LINE``)."""
    lines: dict[str, list[str]] = {}
    for line in text.splitlines():
        details, _, message = line.partition(" ")
        fields = dict(part.split("=", 1) for part in details.split(",") if "=" in part)
        node = fields.get("com.docker.swarm.node.id")
        if node:
            lines.setdefault(node, []).append(message)
    found = {}
    for node, messages in lines.items():
        status = {k.strip(): v.strip() for k, _, v in (m.partition(":") for m in messages) if _}
        # uid_map's line: "0 100000 65536" remapped, "0 0 4294967295" not.
        maps = [m.split() for m in messages if len(m.split()) == 3 and all(x.isdigit() for x in m.split())]
        remapped = bool(maps) and not any(m[0] == "0" and m[1] == "0" for m in maps)
        found[node] = EngineChecks(version=version.get(node, ""), userns_remap=remapped,
                                   no_new_privileges=status.get("NoNewPrivs") == "1")
    return found


def _node(attrs: dict[str, Any], running: Counter[str]) -> ClusterNode:
    spec = attrs.get("Spec") or {}
    status = attrs.get("Status") or {}
    description = attrs.get("Description") or {}
    manager = attrs.get("ManagerStatus") or {}
    return ClusterNode(
        id=str(attrs.get("ID", "")), hostname=str(description.get("Hostname", "")),
        role=str(spec.get("Role", "worker")), state=str(status.get("State", "unknown")),
        availability=str(spec.get("Availability", "active")),
        address=str(manager.get("Addr") or status.get("Addr") or ""),
        engine_version=str((description.get("Engine") or {}).get("EngineVersion", "")),
        leader=bool(manager.get("Leader")), labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
        tasks=running.get(str(attrs.get("ID", "")), 0))
