"""The `fence` commands for droplets on their own: stage (without running) and droplets (list)."""

from __future__ import annotations

import click

from fence.cli_apps import absolute_buildpacks, client
from fence.console import debug_option, render


@click.command()
@click.argument("source", default=".")
@click.option("--name", "app", help="App name [default: stackato.yml's name, else the folder's].")
@click.option("--buildpack", "buildpacks", multiple=True,
              help="Built-in name, folder, or git URL[#ref]; repeat for a multi-buildpack chain.")
@click.option("--env", "env_pairs", multiple=True, help="NAME=VALUE for the app; repeatable.")
@click.option("--force", is_flag=True, help="Stage even when the inputs are unchanged (else their droplet is reused).")
@click.option("--json", "as_json", is_flag=True, help="Print the droplet as JSON at the end.")
@debug_option
def stage(source: str, app: str | None, buildpacks: tuple[str, ...], env_pairs: tuple[str, ...],
          force: bool, as_json: bool) -> None:
    """Stage SOURCE (a folder, .tar.gz/.zip, or git URL[#ref]) into a droplet; prints the log."""
    from fence.rules import check_app_name, env_from_pairs
    from fence.wire import to_wire

    env_from_pairs(env_pairs)  # refuse a bad NAME=VALUE before uploading anything
    buildpacks = absolute_buildpacks(buildpacks)
    if app is not None:
        check_app_name(app)
    record = client().stage(source=source, app=app, buildpacks=buildpacks, env_pairs=env_pairs, force=force,
                            on_line=lambda line: click.echo(line, err=as_json))
    if as_json:
        click.echo(render(to_wire(record), "json"))
    else:
        click.echo(f"droplet: {record.id}")


@click.command()
@click.argument("app", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def droplets(app: str | None, as_json: bool) -> None:
    """List droplets (of APP), newest first, with their buildpack and start command."""
    if app is not None:
        from fence.rules import check_app_name

        check_app_name(app)
    records = client().droplets(app)
    if as_json:
        from fence.wire import to_wire

        click.echo(render(to_wire(records), "json"))
        return
    click.echo(f"{'DROPLET':<14}{'APP':<20}{'BUILDPACK':<14}{'SIZE':>8}  {'STAGED':<26}START")
    for record in records:
        buildpack = record.buildpacks[-1].name if record.buildpacks else "-"
        click.echo(f"{record.id[:12]:<14}{record.app:<20}{buildpack[:13]:<14}"
                   f"{record.size / 1e6:>6.1f}MB  {record.staged_at:<26}{record.start_command or '-'}")


COMMANDS = (stage, droplets)
