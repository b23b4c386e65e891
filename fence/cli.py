"""The `fence` CLI: the daemon (`fence serve`) and, in later issues, the app developer's commands."""

from __future__ import annotations

import click

from fence import __version__
from fence.console import debug_option, run_cli
from fence.home import NodeHome


@click.group(name="fence", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fence")
@debug_option
def fence() -> None:
    """fence: stage and run apps in unprivileged containers on this node."""


@fence.command()
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Lowest level of log records written to stderr.")
@debug_option
def serve(log_level: str) -> None:
    """Run the fence daemon in the foreground (TERM stops it, leaving instances running)."""
    from fence.daemon import serve as serve_daemon
    from fence.logs import setup_logging
    from fence.wiring import node_service

    setup_logging(log_level)
    serve_daemon(node_service(NodeHome.from_env()))


def main() -> None:
    """Console entry point of `fence`."""
    run_cli(fence)
