"""`kato config get|set|del|push|pop`: the node's configuration, with Stackato's semantics."""

from __future__ import annotations

import sys

import click

from fence.config import ChangeResult, ConfigStore
from fence.console import debug_option, render, warn
from fence.errors import FenceError, UsageError
from fence.home import NodeHome
from fence.wiring import config_store, docker_backend

_IMAGE_KEYS = ("docker/image", "docker/images")


def _store() -> ConfigStore:
    return config_store(NodeHome.from_env())


def _format_options(fn):  # noqa: ANN001, ANN202
    fn = click.option("--flat", "fmt", flag_value="flat", help="`component/key/path value` lines.")(fn)
    fn = click.option("--json", "fmt", flag_value="json", help="JSON.")(fn)
    return click.option("--yaml", "fmt", flag_value="yaml", default=True,
                        help="YAML; scalars print raw (the default).")(fn)


@click.group()
@debug_option
def config() -> None:
    """Read and change this node's configuration (key paths like docker/image)."""


@config.command("get")
@click.argument("component", required=False)
@click.argument("key_path", required=False)
@_format_options
@debug_option
def get_cmd(component: str | None, key_path: str | None, fmt: str) -> None:
    """Print a value; with no KEY_PATH the whole component, with no COMPONENT all of them."""
    store = _store()
    if component is None:
        value, prefix = store.get_all(), ""
    elif key_path is None:
        value, prefix = store.get(component), component
    else:
        value, prefix = store.get(component, key_path), f"{component}/{key_path.strip('/')}"
    click.echo(render(value, fmt, prefix))


_VALUE_ARGS = {"ignore_unknown_options": True}  # so a VALUE like -5 is a value, not an option


@config.command("set", context_settings=_VALUE_ARGS)
@click.argument("component")
@click.argument("key_path")
@click.argument("value", required=False)
@click.option("--json", "as_json", is_flag=True, help="Parse VALUE as JSON.")
@click.option("--force", is_flag=True, help="Allow changing the type of a key.")
@click.option("--rollout", is_flag=True,
              help="For fence docker/image or docker/images: then move every app onto the new stack "
                   "(as `kato stack rollout`).")
@debug_option
def set_cmd(component: str, key_path: str, value: str | None, as_json: bool, force: bool, rollout: bool) -> None:
    """Set KEY_PATH of COMPONENT to VALUE (read from stdin when omitted); prints the new value."""
    if rollout and (component != "fence" or key_path.strip("/") not in _IMAGE_KEYS):
        raise UsageError(detail="--rollout goes with fence docker/image or fence docker/images only")
    raw = value if value is not None else _stdin_value()
    _report(component, key_path, _store().set(component, key_path, raw, as_json=as_json, force=force))
    if rollout:
        from kato.stack_cmd import run_rollout
        from kato.status_cmd import api_client

        run_rollout(api_client(), restage=False)


@config.command("del")
@click.argument("component")
@click.argument("key_path")
@debug_option
def del_cmd(component: str, key_path: str) -> None:
    """Remove KEY_PATH (a known key falls back to its default, which is printed)."""
    result = _store().delete(component, key_path)
    if result.value is not None:
        click.echo(render(result.value, "yaml"))


@config.command("push", context_settings=_VALUE_ARGS)
@click.argument("component")
@click.argument("key_path")
@click.argument("value", required=False)
@click.option("--json", "as_json", is_flag=True, help="Parse VALUE as JSON.")
@debug_option
def push_cmd(component: str, key_path: str, value: str | None, as_json: bool) -> None:
    """Append VALUE (or stdin) to the list at KEY_PATH; prints the list."""
    raw = value if value is not None else _stdin_value()
    _report(component, key_path, _store().push(component, key_path, raw, as_json=as_json))


@config.command("pop", context_settings=_VALUE_ARGS)
@click.argument("component")
@click.argument("key_path")
@click.argument("value", required=False)
@click.option("--json", "as_json", is_flag=True, help="Parse VALUE as JSON.")
@debug_option
def pop_cmd(component: str, key_path: str, value: str | None, as_json: bool) -> None:
    """Remove VALUE (or the last item) from the list at KEY_PATH; prints the list."""
    _report(component, key_path, _store().pop(component, key_path, value, as_json=as_json))


def _stdin_value() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(detail="no VALUE given and nothing on stdin to read it from")
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def _report(component: str, key_path: str, result: ChangeResult) -> None:
    for message in result.warnings:
        warn(message)
    if component == "fence" and key_path.strip("/") in _IMAGE_KEYS:
        _warn_missing_images(result.value)
    click.echo(render(result.value, "yaml"))


def _warn_missing_images(value: object) -> None:
    refs = value if isinstance(value, list) else [value]
    try:
        backend = docker_backend(_store())
        for ref in refs:
            if backend.image_info(str(ref)) is None:
                warn(f"image {ref} is not on this node's Docker Engine yet; build it with "
                     f"`kato image build --tag {ref}` before apps are staged")
    except FenceError as exc:
        warn(f"could not check that the image exists: {exc.message}")
