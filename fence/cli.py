"""The `fence` CLI: the daemon (`fence serve`) and the app developer's commands, each loaded when invoked."""

from __future__ import annotations

import click

from fence import __version__
from fence.console import LazyGroup, debug_option, run_cli

# Every `fence` command: its name → "module:attribute". Only the module of the command invoked is
# imported, so `fence apps` does not pay for loading what `fence push` needs (a CLI call has a
# 150 ms budget, interpreter start included); `fence --help` imports them all for their short help.
# A new command is ONE line here (a module exposing `COMMANDS = [...]` lists each of them); do not
# `fence.add_command(...)` an imported module's commands, which loads that module on every call.
# tests/unit/test_cli_start.py checks that every entry resolves to a command of that name and that
# every command in a module's COMMANDS is listed.
COMMAND_TABLE: dict[str, str] = {
    "serve": "fence.cli:serve",
    "stage": "fence.cli_droplets:stage",
    "droplets": "fence.cli_droplets:droplets",
    "push": "fence.cli_apps:push",
    "apps": "fence.cli_apps:apps",
    "app": "fence.cli_apps:app",
    "ps": "fence.cli_apps:ps",
    "start": "fence.cli_apps:start",
    "stop": "fence.cli_apps:stop",
    "restart": "fence.cli_apps:restart",
    "restage": "fence.cli_apps:restage",
    "delete": "fence.cli_apps:delete",
    "scale": "fence.cli_apps:scale",
    "env": "fence.cli_apps:env",
    "logs": "fence.cli_apps:logs",
    "run": "fence.cli_apps:run",
    "releases": "fence.cli_apps:releases",
    "rollback": "fence.cli_apps:rollback",
    "cron": "fence.cli_apps:cron",
    "route": "fence.cli_apps:route",
    "stats": "fence.cli_usage:stats",
    "drain": "fence.cli_drains:drain",
    "service": "fence.cli_services:service",
    "services": "fence.cli_services:services",
}


@click.group(name="fence", cls=LazyGroup, table=COMMAND_TABLE,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fence")
@debug_option
def fence() -> None:
    """fence: stage and run apps in unprivileged containers on this node."""


@click.command()
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Lowest level of log records written to stderr.")
@debug_option
def serve(log_level: str) -> None:
    """Run the fence daemon in the foreground (TERM stops it, leaving instances running)."""
    from fence.daemon import serve as serve_daemon
    from fence.home import NodeHome
    from fence.logs import setup_logging
    from fence.wiring import node_service

    setup_logging(log_level)
    serve_daemon(node_service(NodeHome.from_env()))


def main() -> None:
    """Console entry point of `fence`."""
    run_cli(fence)
