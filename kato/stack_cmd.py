"""`kato stack rollout`: move every app onto the configured stack image, via the daemon."""

from __future__ import annotations

import click

from fence.client import FenceClient
from fence.console import debug_option, render
from fence.models import RolloutReport
from fence.wire import to_wire
from kato.status_cmd import api_client


@click.group()
@debug_option
def stack() -> None:
    """Move apps onto the stack image (after `kato config set fence docker/image NEW`)."""


@stack.command("rollout")
@click.option("--restage", is_flag=True,
              help="Restage every app from its kept source instead of restarting its droplet.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON at the end.")
@debug_option
def rollout_cmd(restage: bool, as_json: bool) -> None:
    """Restart every app's instances on the configured stack, one instance at a time per app,
    each new one healthy before its old one stops; an app whose new instance fails keeps its
    old instances serving (the command then exits 4)."""
    report = run_rollout(api_client(), restage=restage, quiet=as_json)
    if as_json:
        click.echo(render(to_wire(report), "json"))


def run_rollout(client: FenceClient, *, restage: bool, quiet: bool = False) -> RolloutReport:
    """Run a rollout through the daemon, printing its progress (to stderr when ``quiet``).

    Raises:
        RolloutFailed: some apps could not move.
        ImageNotFound: the configured stack is not on the engine.
    """
    return client.rollout(restage=restage, on_line=lambda line: click.echo(line, err=quiet))
