"""`fence drain add|list|delete`: where an app's log lines are shipped (syslog, HTTP)."""

from __future__ import annotations

import click

from fence.cli_apps import client
from fence.console import debug_option, render
from fence.drains.urls import check_drain_name, parse_drain_url
from fence.rules import check_app_name
from fence.wire import to_wire


@click.group()
def drain() -> None:
    """Log drains: ship an app's lines (instances, staging, release phase, cron) elsewhere."""


@drain.command("add")
@click.argument("app")
@click.argument("name")
@click.argument("url")
@debug_option
def add(app: str, name: str, url: str) -> None:
    """Send APP's log lines to URL, as drain NAME (an existing NAME gets the new URL).

    URL: syslog://HOST:PORT (TCP, RFC 5424, octet-counted), syslog+udp://HOST:PORT,
    syslog+tls://HOST:PORT, or http(s)://HOST[:PORT]/PATH (posts of newline-delimited JSON).
    """
    check_app_name(app)
    check_drain_name(name)
    parsed = parse_drain_url(url, what=f"drain {name!r}")
    client().add_drain(app, name, url)
    click.echo(f"{app}: drain {name} → {parsed.shown}")


@drain.command("list")
@click.argument("app")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def list_cmd(app: str, as_json: bool) -> None:
    """List APP's drains (and the node-wide ones): state, lines sent and dropped, last error."""
    health = client().drains(check_app_name(app))
    if as_json:
        click.echo(render(to_wire(health), "json"))
        return
    click.echo(f"{'NAME':<20}{'STATE':<7}{'SENT':>10}{'DROPPED':>10}  URL")
    for item in health:
        name = item.name if item.app is not None else f"{item.name} (node)"
        error = f"  ({item.error})" if item.error else ""
        click.echo(f"{name:<20}{item.state:<7}{item.sent:>10}{item.dropped:>10}  {item.url}{error}")


@drain.command("delete")
@click.argument("app")
@click.argument("name")
@debug_option
def delete(app: str, name: str) -> None:
    """Stop sending APP's lines to drain NAME."""
    client().delete_drain(check_app_name(app), check_drain_name(name))
    click.echo(f"{app}: drain {name} deleted")


COMMANDS = [drain]
