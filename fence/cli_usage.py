"""`fence stats APP`: per-instance CPU, memory, network, restarts and uptime, via the daemon."""

from __future__ import annotations

import click

from fence.client import FenceClient
from fence.console import debug_option, render
from fence.home import NodeHome
from fence.rules import check_app_name


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def stats(name: str, as_json: bool) -> None:
    """Show each instance's CPU (% of one core), memory used / limit, network in / out, restarts and uptime."""
    # The client alone, not fence.cli_apps (whose commands cost a `fence stats` call ~15 ms to import).
    client = FenceClient(host_socket=NodeHome.from_env().host_socket)
    if as_json:  # the daemon's JSON as it came: no models to import, build and encode again
        click.echo(render(client.stats_data(check_app_name(name)), "json"))
        return
    click.echo(stats_text(client.stats(check_app_name(name))))


def stats_text(found: list) -> str:  # list[InstanceStats]; the model stays unimported at start
    """The instances as aligned columns."""
    rows = [("INSTANCE", "STATE", "CPU", "MEMORY", "LIMIT", "NET IN", "NET OUT", "RESTARTS", "UPTIME")]
    for s in found:
        rows.append((f"{s.type}.{s.index}", s.state, f"{s.cpu_percent:.1f}%", size_text(s.memory_bytes),
                     size_text(s.memory_limit_bytes) if s.memory_limit_bytes else "-", size_text(s.net_rx_bytes),
                     size_text(s.net_tx_bytes), str(s.restarts), duration_text(s.uptime)))
    if len(rows) == 1:
        return "no instances"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def size_text(count: int) -> str:
    """Bytes as B, KiB, MiB or GiB with one decimal."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def duration_text(seconds: float) -> str:
    """Seconds as 45s, 12m, 3h5m or 2d4h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


COMMANDS = [stats]
