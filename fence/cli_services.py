"""The `fence service …` and `fence services` commands (issue 16): backing services through the daemon."""

from __future__ import annotations

import click

from fence.cli_apps import client
from fence.console import debug_option, render
from fence.rules import check_app_name, parse_memory
from fence.services.kinds import check_service_name, kind_of
from fence.services.views import ServiceView
from fence.wire import to_wire


def _echo(line: str) -> None:
    click.echo(line)


def _print_view(view: ServiceView, as_json: bool) -> None:
    if as_json:
        click.echo(render(to_wire(view), "json"))
        return
    click.echo(f"{view.name}: {view.type}, {view.state}{'' if view.healthy else ' (not answering)'}")
    click.echo(f"  host:        {view.host}:{view.port} (on the bound apps' networks only)")
    click.echo(f"  memory:      {view.memory_mib} MiB")
    if view.size_bytes is not None:
        click.echo(f"  on disk:     {view.size_bytes / 1e6:.1f} MB")
    click.echo(f"  bound apps:  {', '.join(view.bound) or '-'}")
    click.echo(f"  last backup: {view.last_backup or '-'}" + (f" ({view.last_backup_at})" if view.last_backup_at else ""))
    if view.backup_error:
        click.echo(f"  backup error: {view.backup_error}")


class _ServiceGroup(click.Group):
    """`fence service NAME` shows NAME; `fence service VERB …` runs VERB."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # noqa: ANN201
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


@click.group(cls=_ServiceGroup)
def service() -> None:
    """Backing services: `fence service NAME [--json]`, or create|delete|bind|unbind|restart|backup|backups|restore."""


@service.command("show", hidden=True)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def show(name: str, as_json: bool) -> None:
    """One service: type, state, size on disk, bound apps, last backup."""
    _print_view(client().service(check_service_name(name)), as_json)


@service.command("create")
@click.argument("kind", metavar="TYPE")
@click.argument("name")
@click.option("--mem", help="Memory limit, e.g. 256M [default: services/memory].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def create(kind: str, name: str, mem: str | None, as_json: bool) -> None:
    """Create a service: `fence service create postgresql|mysql|redis NAME [--mem 256M]`."""
    kind_of(kind)
    check_service_name(name)
    if mem is not None:
        parse_memory(mem)
    _print_view(client().create_service(kind, name, mem=mem), as_json)


@service.command("delete")
@click.argument("name")
@click.option("--delete-data", is_flag=True, help="Also remove its data volume and credentials.")
@debug_option
def delete(name: str, delete_data: bool) -> None:
    """Remove a service (refused while bound); its data stays unless --delete-data."""
    client().delete_service(check_service_name(name), delete_data=delete_data)
    click.echo(f"deleted {name}" + ("" if delete_data else " (its data volume stays; --delete-data removes it)"))


@service.command("bind")
@click.argument("app")
@click.argument("name")
@debug_option
def bind(app: str, name: str) -> None:
    """Bind a service to an app: `fence service bind APP NAME` (the app restarts if it runs)."""
    view = client().bind_service(check_service_name(name), check_app_name(app), on_line=_echo)
    click.echo(f"{name} is bound to {', '.join(view.bound)}")


@service.command("unbind")
@click.argument("app")
@click.argument("name")
@debug_option
def unbind(app: str, name: str) -> None:
    """Unbind a service from an app: `fence service unbind APP NAME`."""
    view = client().bind_service(check_service_name(name), check_app_name(app), unbind=True, on_line=_echo)
    click.echo(f"{name} is bound to {', '.join(view.bound) or 'no app'}")


@service.command("restart")
@click.argument("name")
@debug_option
def restart(name: str) -> None:
    """Restart a service's server (its data stays)."""
    view = client().restart_service(check_service_name(name))
    click.echo(f"{view.name}: {view.state}")


@service.command("backup")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def backup(name: str, as_json: bool) -> None:
    """Make a consistent backup of a service now."""
    made = client().backup_service(check_service_name(name))
    if as_json:
        click.echo(render(to_wire(made), "json"))
        return
    click.echo(f"backup {made.id} of {made.service}: {made.size} bytes, sha256 {made.sha256[:16]}…")


@service.command("backups")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def backups(name: str, as_json: bool) -> None:
    """A service's kept backups, oldest first."""
    found = client().service_backups(check_service_name(name))
    if as_json:
        click.echo(render(to_wire(found), "json"))
        return
    click.echo(f"{'BACKUP':<26}{'TYPE':<12}{'SIZE':>12}  CREATED")
    for made in found:
        click.echo(f"{made.id:<26}{made.type:<12}{made.size:>12}  {made.created_at}")


@service.command("restore")
@click.argument("name")
@click.argument("backup_id", metavar="BACKUP")
@debug_option
def restore(name: str, backup_id: str) -> None:
    """Load a backup into a service (another type's, corrupt or truncated ones are refused)."""
    from fence.services.backup_ids import check_backup_id
    view = client().restore_service(check_service_name(name), check_backup_id(backup_id))
    click.echo(f"{view.name}: restored {backup_id}; {view.state}")


@click.command("services")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def services(as_json: bool) -> None:
    """The node's services: name, type, state, bound apps, last backup."""
    found = client().services()
    if as_json:
        click.echo(render(to_wire(found), "json"))
        return
    click.echo(f"{'NAME':<20}{'TYPE':<12}{'STATE':<10}{'APPS':<30}LAST BACKUP")
    for view in found:
        click.echo(f"{view.name:<20}{view.type:<12}{view.state:<10}{(', '.join(view.bound) or '-')[:29]:<30}"
                   f"{view.last_backup or '-'}")


COMMANDS = [service, services]
