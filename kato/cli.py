"""The `kato` CLI: the node administrator's commands (config, stack image and rollouts, status, gc, node)."""

from __future__ import annotations

import click

from fence import __version__
from fence.console import debug_option, run_cli
from kato.cluster_cmd import COMMANDS as CLUSTER_COMMANDS
from kato.config_cmd import config
from kato.gc_cmd import gc
from kato.image_cmd import image
from kato.node_cmd import node
from kato.stack_cmd import stack
from kato.status_cmd import status


@click.group(name="kato", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kato")
@debug_option
def kato() -> None:
    """kato: administer this fence node (config, stack image and rollouts, status, gc, node)."""


kato.add_command(config)
kato.add_command(image)
kato.add_command(status)
kato.add_command(stack)
kato.add_command(gc)
kato.add_command(node)
for _command in CLUSTER_COMMANDS:
    kato.add_command(_command)


def main() -> None:
    """Console entry point of `kato`."""
    run_cli(kato)
