"""`kato node info` and `kato node top` (the node's resources and which apps use them, via the daemon); list/drain/activate of cluster_cmd."""

from __future__ import annotations

import click

from fence.console import debug_option, render
from fence.models import NodeInfo
from fence.wire import to_wire
from kato.cluster_cmd import NODE_COMMANDS
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


for _command in NODE_COMMANDS:  # list, drain, activate
    node.add_command(_command)


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


@node.command("top")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="Apps listed in each table.")
@debug_option
def top_cmd(as_json: bool, limit: int) -> None:
    """Show the apps using the most CPU and the most memory (summed over their running instances)."""
    usage = api_client().node_top()
    if as_json:
        click.echo(render(to_wire(usage), "json"))
        return
    click.echo(top_text(usage, limit=limit))


def top_text(usage: list, *, limit: int) -> str:  # list[AppUsage]
    """Two tables: apps by CPU, then apps by memory."""
    from fence.cli_usage import size_text

    if not usage:
        return "no running instances"
    lines = ["by CPU:", f"  {'APP':<24}{'CPU':>9}{'INSTANCES':>11}"]
    for u in sorted(usage, key=lambda u: (-u.cpu_percent, u.app))[:limit]:
        lines.append(f"  {u.app:<24}{u.cpu_percent:>8.1f}%{u.instances:>11}")
    lines += ["by memory:", f"  {'APP':<24}{'MEMORY':>11}{'LIMIT':>11}{'INSTANCES':>11}"]
    for u in sorted(usage, key=lambda u: (-u.memory_bytes, u.app))[:limit]:
        lines.append(f"  {u.app:<24}{size_text(u.memory_bytes):>11}{size_text(u.memory_limit_bytes):>11}"
                     f"{u.instances:>11}")
    return "\n".join(lines)
