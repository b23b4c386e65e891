"""`kato node info`: the node's CPU, memory, disks and containers, via the daemon."""

from __future__ import annotations

import click

from fence.console import debug_option, render
from fence.models import NodeInfo
from fence.wire import to_wire
from kato.status_cmd import api_client


@click.group()
@debug_option
def node() -> None:
    """This node's resources."""


@node.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def info_cmd(as_json: bool) -> None:
    """Show CPU, memory (and what instances are promised), disks and containers."""
    info = api_client().node_info()
    if as_json:
        click.echo(render(to_wire(info), "json"))
        return
    click.echo(node_text(info))


def node_text(info: NodeInfo) -> str:
    """The node's resources as aligned lines."""
    gib = 1024 ** 3
    lines = [
        f"node:        {info.node_id}",
        f"cpu:         {info.cpus} CPUs, {info.cpu_percent:.0f} % busy, load "
        + " ".join(f"{x:.2f}" for x in info.load),
        f"memory:      {info.memory_total / gib:.1f} GiB, {info.memory_available / gib:.1f} GiB available",
        f"promised:    {info.memory_promised_mib} MiB of {info.memory_limit_mib} MiB to instances "
        f"(node/memory_overcommit x RAM)",
    ]
    for disk in info.disks:
        lines.append(f"disk:        {disk.label} {disk.path}: {disk.percent:.0f} % used, "
                     f"{disk.free / 1e9:.1f} GB free of {disk.total / 1e9:.1f} GB")
    if info.engine is not None:
        lines.append(f"engine:      Docker {info.engine.version}, {info.engine.storage_driver}, "
                     f"data root {info.engine.data_root}")
    mine = ", ".join(f"{n} {kind}" for kind, n in info.containers.items()) or "none"
    every = ", ".join(f"{n} {state}" for state, n in info.engine_containers.items()) or "none"
    for svc in info.services:  # issue 16
        used = f"{svc.memory_used / 2**20:.0f} MiB" if svc.memory_used is not None else "?"
        disk = f"{svc.disk_used / 1e6:.1f} MB" if svc.disk_used is not None else "?"
        lines.append(f"service:     {svc.name} ({svc.type}): memory {used} of {svc.memory_limit / 2**20:.0f} MiB, "
                     f"disk {disk}")
    lines.append(f"containers:  this node: {mine}")
    lines.append(f"             engine (all nodes and others): {every}")
    return "\n".join(lines)
