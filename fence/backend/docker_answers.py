"""The Docker Engine's JSON answers (inspect and list entries) turned into fence's models."""

# DockerBackend hands over the engine's dicts, so this module never imports docker.

from __future__ import annotations

import re
from typing import Any, Mapping

from fence.models import ContainerInfo, ImageInfo, NetworkInfo, PublishedPort


def image_info(attrs: Mapping[str, Any]) -> ImageInfo:
    """ImageInfo from a /images/ID/json answer."""
    config = attrs.get("Config") or {}
    return ImageInfo(
        id=str(attrs["Id"]),
        tags=tuple(attrs.get("RepoTags") or ()),
        size=int(attrs.get("Size") or 0),
        created=str(attrs.get("Created") or ""),
        labels=dict(config.get("Labels") or {}),
    )


def container_info(attrs: Mapping[str, Any]) -> ContainerInfo:
    """ContainerInfo from a /containers/ID/json answer."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    status = str(state.get("Status") or "unknown")
    started = state.get("StartedAt") or None
    if started and started.startswith("0001-"):  # the engine's zero time: never started
        started = None
    ports = []
    for key, bindings in ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        if proto != "tcp":
            continue
        for binding in bindings or ():
            if binding.get("HostPort"):
                ports.append(PublishedPort(container_port=int(port),
                                           host_ip=str(binding.get("HostIp") or ""),
                                           host_port=int(binding["HostPort"])))
    return ContainerInfo(
        id=str(attrs["Id"]),
        name=str(attrs.get("Name") or "").lstrip("/"),
        image=str(config.get("Image") or ""),
        image_id=str(attrs.get("Image") or ""),
        labels=dict(config.get("Labels") or {}),
        state=status,
        running=bool(state.get("Running")),
        exit_code=int(state["ExitCode"]) if status in ("exited", "dead") else None,
        oom_killed=bool(state.get("OOMKilled")),
        started_at=started,
        ports=tuple(sorted(ports, key=lambda p: (p.container_port, p.host_ip, p.host_port))),
        ip_address=ip_address(attrs.get("NetworkSettings") or {}),
    )


def disk_quota(info: Mapping[str, Any]) -> bool:
    """Whether the storage driver can enforce per-container disk quotas (``--storage-opt size``)."""
    driver = str(info.get("Driver", ""))
    backing = dict((str(k), str(v)) for k, v in info.get("DriverStatus") or ()).get("Backing Filesystem", "")
    return driver in ("btrfs", "zfs") or (driver == "overlay2" and backing == "xfs")


def ip_address(network: Mapping[str, Any]) -> str | None:
    """The container's address: on the default bridge, else on its (one) user-defined network."""
    if network.get("IPAddress"):
        return str(network["IPAddress"])
    for settings in (network.get("Networks") or {}).values():
        if settings and settings.get("IPAddress"):
            return str(settings["IPAddress"])
    return None


def summary_info(summary: Mapping[str, Any]) -> ContainerInfo:
    """ContainerInfo from a /containers/json entry (no OOM flag; exit code parsed from Status)."""
    state = str(summary.get("State") or "unknown")
    exit_code = None
    if state in ("exited", "dead"):
        found = re.search(r"\((-?[0-9]+)\)", str(summary.get("Status") or ""))
        exit_code = int(found.group(1)) if found else None
    ports = tuple(sorted(
        (PublishedPort(container_port=int(p["PrivatePort"]), host_ip=str(p.get("IP") or ""),
                       host_port=int(p["PublicPort"]))
         for p in summary.get("Ports") or () if p.get("PublicPort") and p.get("Type") == "tcp"),
        key=lambda p: (p.container_port, p.host_ip, p.host_port)))
    names = summary.get("Names") or [""]
    return ContainerInfo(
        id=str(summary["Id"]), name=str(names[0]).lstrip("/"), image=str(summary.get("Image") or ""),
        image_id=str(summary.get("ImageID") or ""), labels=dict(summary.get("Labels") or {}),
        state=state, running=state == "running", exit_code=exit_code, ports=ports,
        ip_address=ip_address(summary.get("NetworkSettings") or {}))


def network_info(attrs: Mapping[str, Any]) -> NetworkInfo:
    """NetworkInfo from a /networks/ID answer (its Containers: those running on it)."""
    ipam = [c for c in (attrs.get("IPAM") or {}).get("Config") or () if c.get("Subnet") and ":" not in c["Subnet"]]
    return NetworkInfo(
        id=str(attrs["Id"]), name=str(attrs.get("Name") or ""), labels=dict(attrs.get("Labels") or {}),
        bridge=str((attrs.get("Options") or {}).get("com.docker.network.bridge.name") or ""),
        subnet=str(ipam[0]["Subnet"]) if ipam else None,
        gateway=str(ipam[0]["Gateway"]) if ipam and ipam[0].get("Gateway") else None,
        containers=tuple(sorted(attrs.get("Containers") or {})))
