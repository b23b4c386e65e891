"""What both CLIs share: one error exit for FenceError, and printing data as YAML, JSON or flat lines."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any, Callable, Mapping

import click

from fence.errors import EXIT_INTERNAL, FenceError


class LazyGroup(click.Group):
    """A click group whose commands are imported only when invoked (``--help`` imports them all).

    Args:
        table: command name → ``"module:attribute"`` of the click command; commands added with
            ``add_command`` are found as well, before the table.
    """

    def __init__(self, *args: Any, table: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = dict(table)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.table})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.table:
            return self.commands.get(cmd_name)
        module_name, _, attribute = self.table[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.table[cmd_name]} is not a click command")
        return command


def run_cli(group: click.Group, argv: list[str] | None = None) -> None:
    """Run a click group; turn every error into one ``error: …`` line and an exit code.

    ``--debug`` anywhere on the command line shows the traceback as well.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        group.main(args=args, prog_name=group.name, standalone_mode=False)
    except FenceError as exc:
        if debug:
            _print_traceback()
        hint = "" if exc.user_error or debug else " (run again with --debug for details)"
        click.echo(f"error: {exc.message}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the one place that catches everything: a bug becomes one line
        if debug:
            _print_traceback()
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        click.echo(f"error: internal error: {first} (run again with --debug for details)", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)


def _print_traceback() -> None:
    import traceback  # only --debug prints one; every CLI call would pay for its import

    traceback.print_exc()


def debug_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--debug``: accepted on every command; ``run_cli`` reads it from argv."""
    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True,
                        help="Show tracebacks of errors.")(fn)


def scalar_text(value: Any) -> str:
    """A scalar as an admin expects to read it: ``true``, ``8080``, ``fence/stack:bookworm``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def render(value: Any, fmt: str, prefix: str = "") -> str:
    """Render data for printing.

    Args:
        value: a scalar, list or nested mapping.
        fmt: ``yaml`` (scalars raw), ``json``, or ``flat`` (``prefix/key/path value`` lines).
        prefix: the key path leading to ``value``, for flat output.

    Returns:
        The text, without a trailing newline.
    """
    if fmt == "json":
        return json.dumps(value, indent=2, sort_keys=True)
    if fmt == "flat":
        return "\n".join(f"{path} {scalar_text(leaf)}" for path, leaf in _flatten(value, prefix))
    if isinstance(value, (dict, list)):
        import yaml  # only YAML output needs it, and a CLI call should not pay for loading it

        return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")
    return scalar_text(value)


def _flatten(value: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        rows: list[tuple[str, Any]] = []
        for key in sorted(value):
            rows.extend(_flatten(value[key], f"{prefix}/{key}" if prefix else str(key)))
        return rows
    return [(prefix, value)]


def warn(message: str) -> None:
    """One ``warning: …`` line on stderr."""
    click.echo(f"warning: {message}", err=True)
