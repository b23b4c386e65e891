"""`kato gc [--dry-run]`: remove what this node owns and no longer needs, via the daemon."""

from __future__ import annotations

import click

from fence.console import debug_option, render, warn
from fence.models import GcReport
from fence.wire import to_wire
from kato.status_cmd import api_client


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@debug_option
def gc(dry_run: bool, as_json: bool) -> None:
    """Remove droplets no kept release needs, build caches of deleted apps, stopped containers,
    unused old stack images, old staging logs and stale git buildpack checkouts."""
    report = api_client().gc(dry_run=dry_run)
    if as_json:
        click.echo(render({**to_wire(report), "freed": report.freed}, "json"))
        return
    click.echo(gc_text(report))
    for line in report.errors:
        warn(f"could not remove {line}")


def gc_text(report: GcReport) -> str:
    """The report as lines: one per item, then the total."""
    verb = "would remove" if report.dry_run else "removed"
    lines = [f"{verb} {item.kind} {item.name} ({_size(item.size)}): {item.detail}" if item.size
             else f"{verb} {item.kind} {item.name}: {item.detail}" for item in report.items]
    lines += [f"note: {note}" for note in report.notes]
    kinds: dict[str, int] = {}
    for item in report.items:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    breakdown = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in kinds.items())
    total = "would free" if report.dry_run else "freed"
    lines.append(f"{total} {_size(report.freed)} in {len(report.items)} item"
                 f"{'s' if len(report.items) != 1 else ''}" + (f" ({breakdown})" if breakdown else ""))
    return "\n".join(lines)


def _size(size: int) -> str:
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.1f} MB"
    if size >= 1e3:
        return f"{size / 1e3:.1f} kB"
    return f"{size} B"
