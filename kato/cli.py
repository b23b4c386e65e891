"""The `kato` CLI: the node administrator's commands (config, stack image, status)."""

from __future__ import annotations

import click

from fence import __version__
from fence.console import debug_option, run_cli
from kato.config_cmd import config
from kato.image_cmd import image
from kato.status_cmd import status


@click.group(name="kato", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kato")
@debug_option
def kato() -> None:
    """kato: administer this fence node (config, stack image, status)."""


kato.add_command(config)
kato.add_command(image)
kato.add_command(status)


def main() -> None:
    """Console entry point of `kato`."""
    run_cli(kato)
