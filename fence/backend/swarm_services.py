"""Swarm services of app instances: the service spec fence sends (every hardening a 20.10 spec can
carry) and the calls that create, scale, list and remove services."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from typing import Any, Mapping

import docker
import docker.errors
import docker.types

from fence.backend.docker import _engine
from fence.cluster_models import ServiceInfo, ServiceSpec, TaskInfo
from fence.errors import ClusterError, UsageError

log = logging.getLogger("fence.cluster")

_NS = 1_000_000_000
# Update and rollback of a service's spec (a scale that raises the per-node cap): one task at a
# time, the new one started before the old one stops, back to the old spec if a task fails.
_UPDATE = {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Monitor": 5 * _NS,
           "MaxFailureRatio": 0, "Order": "start-first"}
_ROLLBACK = {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": 5 * _NS,
             "MaxFailureRatio": 0, "Order": "start-first"}


def refuse_unsafe_service(spec: ServiceSpec) -> None:
    """What no instance service may be: root, or on a mutable image reference.

    Raises:
        UsageError: in one line.
    """
    if "@sha256:" not in spec.image:
        raise UsageError(detail=f"service image {spec.image!r} is not a reference by digest (repository@sha256:…)")
    uid = spec.user.split(":", 1)[0]
    if not uid or uid in ("0", "root"):
        raise UsageError(detail=f"service {spec.name} would run as {spec.user or 'the image user'!r}: never root")
    if spec.replicas < 0:
        raise UsageError(detail=f"service {spec.name}: replicas {spec.replicas} is negative")


def service_body(spec: ServiceSpec) -> dict[str, Any]:
    """The ``/services/create`` body of ``spec`` (API 1.41), as a dict the fake keeps too.

    The hardening a 20.10 service spec can carry: user, ``CapabilityDrop: ALL``, init, pids,
    memory, nofile, log rotation, no mounts, a restart policy with delay and attempts. What it
    cannot carry is the node's engine's: no-new-privileges (daemon-wide, checked at join) and
    user-namespace remapping.
    """
    refuse_unsafe_service(spec)
    limits = spec.limits
    container = docker.types.ContainerSpec(
        image=spec.image, command=list(spec.command) if spec.command is not None else None,
        env=[f"{k}={v}" for k, v in sorted(spec.env.items())], workdir=spec.workdir, user=spec.user,
        labels=dict(spec.labels), init=True, cap_drop=["ALL"], read_only=False, mounts=[],
        stop_grace_period=10 * _NS)
    # The SDK's ContainerSpec and Resources lack these 1.41 fields: set them in the dicts.
    container["Ulimits"] = [{"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile}]  # type: ignore[attr-defined]
    resources = docker.types.Resources(mem_limit=limits.memory_bytes)  # type: ignore[attr-defined]
    resources["Limits"]["Pids"] = limits.pids  # type: ignore[attr-defined]
    placement = docker.types.Placement(preferences=[docker.types.PlacementPreference("spread", "node.id")],
                                       maxreplicas=spec.max_per_node or None)
    template = docker.types.TaskTemplate(
        container_spec=container, resources=resources, placement=placement,
        restart_policy=docker.types.RestartPolicy(condition="any", delay=int(spec.restart_delay * _NS),
                                                  max_attempts=spec.restart_attempts,
                                                  window=int(spec.restart_window * _NS)),
        log_driver=docker.types.DriverConfig("json-file", {"max-size": limits.log_max_size,  # type: ignore[attr-defined]
                                                           "max-file": str(limits.log_max_files)}))  # type: ignore[attr-defined]
    endpoint: dict[str, Any] = {"Mode": "vip", "Ports": []}
    if spec.container_port:
        # Host mode (nothing goes through the ingress mesh: its VIPs are not used under
        # remapping), on the port given: a node has at most one task of the service (MaxReplicas).
        port = {"Protocol": "tcp", "TargetPort": spec.container_port, "PublishMode": "host"}
        if spec.published_port:
            port["PublishedPort"] = spec.published_port
        endpoint = {"Mode": "dnsrr", "Ports": [port]}
    return {"Name": spec.name, "Labels": dict(spec.labels), "TaskTemplate": dict(template),
            "Mode": {"Replicated": {"Replicas": spec.replicas}}, "UpdateConfig": dict(_UPDATE),
            "RollbackConfig": dict(_ROLLBACK), "EndpointSpec": endpoint}


class SwarmServices:
    """The service calls of ``SwarmBackend`` (mixed in; ``_api`` is the backend's)."""

    def _api(self) -> docker.APIClient:  # pragma: no cover - SwarmBackend's
        raise NotImplementedError

    def create_service(self, spec: ServiceSpec) -> str:
        """See ``ClusterBackend.create_service``."""
        body = service_body(spec)
        api = self._api()
        with _engine(f"creating service {spec.name}"):
            answer = api._result(api._post_json(api._url("/services/create"), data=body), True)
        return str(answer["ID"])

    def scale_service(self, service_id: str, *, replicas: int, max_per_node: int) -> None:
        """See ``ClusterBackend.scale_service``."""
        if replicas < 0:
            raise UsageError(detail=f"replicas {replicas} is negative")
        api = self._api()
        with _engine(f"scaling service {service_id[:12]}"):
            attrs = api.inspect_service(service_id)
            spec = dict(attrs["Spec"])
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}
            placement = dict(spec["TaskTemplate"].get("Placement") or {})
            if int(placement.get("MaxReplicas") or 0) != max_per_node:
                # Part of the task spec: Swarm replaces the tasks (start-first, one at a time).
                if max_per_node:
                    placement["MaxReplicas"] = max_per_node
                else:
                    placement.pop("MaxReplicas", None)
                spec["TaskTemplate"] = {**spec["TaskTemplate"], "Placement": placement}
            api._raise_for_status(api._post_json(
                api._url("/services/{0}/update", service_id), data=spec,
                params={"version": attrs["Version"]["Index"]}))

    def remove_service(self, service_id: str) -> None:
        """See ``ClusterBackend.remove_service``."""
        api = self._api()
        with _engine(f"removing service {service_id[:12]}"), contextlib.suppress(docker.errors.NotFound):
            api.remove_service(service_id)

    def list_services(self, labels: Mapping[str, str]) -> list[ServiceInfo]:
        """See ``ClusterBackend.list_services`` (three calls: services, their tasks, the nodes)."""
        api = self._api()
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]} if labels else None
        with _engine("listing services"):
            try:
                services = api.services(filters=filters)
            except docker.errors.APIError as exc:
                if exc.status_code == 503:  # "This node is not a swarm manager…"
                    raise ClusterError(detail="this engine is not a swarm manager: it schedules no instances "
                                              "(`kato cluster init`, or `kato cluster leave` and restart fence)") from exc
                raise
            if not services:
                return []
            tasks = api.tasks(filters={"service": [s["ID"] for s in services]})
            nodes = {n["ID"]: node_address(n) for n in api.nodes()}
        by_service: dict[str, list[TaskInfo]] = {}
        for task in tasks:
            by_service.setdefault(str(task.get("ServiceID", "")), []).append(task_info(task, nodes))
        return [service_info(s, by_service.get(s["ID"], [])) for s in services]


# A node label that overrides the address Swarm observed for a node (its Status.Addr): a node
# behind NAT, with several interfaces, or one of several engines on one machine.
ADDRESS_LABEL = "fence.address"


def node_address(node: Mapping[str, Any]) -> str:
    """Where the controller reaches a node's published ports: its ``fence.address`` label, else
    the address Swarm observed (``Status.Addr``)."""
    spec_labels = (node.get("Spec") or {}).get("Labels") or {}
    observed = str((node.get("Status") or {}).get("Addr") or "")
    given = str(spec_labels.get(ADDRESS_LABEL) or "")
    if not given:
        return observed
    try:
        return str(ipaddress.ip_address(given))
    except ValueError:
        log.warning("node %s: label %s=%r is not an IP address; its observed address %s is used",
                    str(node.get("ID", ""))[:12], ADDRESS_LABEL, given[:80], observed)
        return observed


def task_info(task: Mapping[str, Any], node_addresses: Mapping[str, str]) -> TaskInfo:
    """A task from its ``/tasks`` entry."""
    status = task.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    port = None
    for entry in (status.get("PortStatus") or {}).get("Ports") or ():
        if entry.get("PublishMode") == "host" and entry.get("PublishedPort"):
            port = int(entry["PublishedPort"])
            break
    exit_code = container.get("ExitCode")
    node = str(task.get("NodeID") or "")
    return TaskInfo(id=str(task.get("ID", "")), slot=int(task.get("Slot") or 0), node_id=node,
                    node_address=node_addresses.get(node, ""), state=str(status.get("State") or "new"),
                    desired_state=str(task.get("DesiredState") or ""),
                    container_id=str(container.get("ContainerID") or ""), published_port=port,
                    error=str(status.get("Err") or ""),
                    exit_code=int(exit_code) if exit_code is not None and status.get("State") in
                    ("failed", "complete", "shutdown") else None,
                    created=str(task.get("CreatedAt") or ""))


def service_info(service: Mapping[str, Any], tasks: list[TaskInfo]) -> ServiceInfo:
    """A service from its ``/services`` entry and its tasks."""
    spec = service.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    replicas = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0)
    return ServiceInfo(id=str(service.get("ID", "")), name=str(spec.get("Name", "")),
                       labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
                       image=str((template.get("ContainerSpec") or {}).get("Image", "")), replicas=replicas,
                       max_per_node=int((template.get("Placement") or {}).get("MaxReplicas") or 0),
                       tasks=tuple(sorted(tasks, key=lambda t: (t.slot, t.created))),
                       version=int((service.get("Version") or {}).get("Index") or 0))
