"""`kato image build|list`: build the stack image from Debian packages, and list the stacks fence knows."""

from __future__ import annotations

from pathlib import Path

import click

from fence.console import debug_option, render
from fence.home import NodeHome
from fence.stack.build import StackRecipe, build_stack, project_hooks_dir
from fence.wire import to_wire
from fence.wiring import config_store, docker_backend
from kato.status_cmd import api_client


@click.group()
@debug_option
def image() -> None:
    """Build and list stack images."""


@image.command("build")
@click.option("--tag", default=None, help="Image reference to build [default: fence docker/image].")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite.")
@click.option("--mirror", default=StackRecipe.mirror, show_default=True, help="Debian mirror URL.")
@click.option("--security-mirror", default=StackRecipe.security_mirror, show_default=True,
              help="Debian security mirror URL.")
@click.option("--hooks", "host_hooks", type=click.Path(path_type=Path), default=project_hooks_dir(),
              show_default=True, help="Admin hooks installed at /etc/stackato/hooks.")
@click.option("--service", "service_type", default=None, metavar="TYPE",
              help="Build a service image (postgresql, mysql, redis) on the configured stack instead.")
@debug_option
def build_cmd(tag: str | None, suite: str, mirror: str, security_mirror: str, host_hooks: Path,
              service_type: str | None) -> None:
    """Build the stack image from Debian packages (mmdebstrap, then import; no registry), or
    with --service TYPE a service image from the stack and the service's Debian packages."""
    home = NodeHome.from_env()
    config = config_store(home)
    if service_type is not None:
        from kato.service_images import build_service
        click.echo(build_service(home=home, config=config, kind=service_type, tag=tag))
        return
    ref = tag or str(config.fence("docker/image"))
    recipe = StackRecipe(suite=suite, mirror=mirror, security_mirror=security_mirror,
                         user=str(config.fence("container/user")),
                         uid=int(config.fence("container/uid")), host_hooks=host_hooks)
    home.ensure()
    build_stack(recipe=recipe, ref=ref, backend=docker_backend(config),
                host_workdir=home.host_tmp, on_line=click.echo)
    click.echo(ref)


@image.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@debug_option
def list_cmd(as_json: bool) -> None:
    """Show the stack images fence knows, which is configured, and which apps run on each."""
    images = api_client().images()
    if as_json:
        click.echo(render(to_wire(images), "json"))
        return
    click.echo(f"{'IMAGE':<36} {'ID':<19} {'SIZE':>8}  {'ROLE':<10} {'CONTAINERS':>10}  APPS")
    for item in images:
        role = "configured" if item.configured else "fallback" if item.fallback else "-"
        if item.in_use and item.fallback:
            role = "fallback*"
        image_id = item.image_id[:19] if item.image_id else "(missing)"
        size = f"{item.size / 1e6:.0f}MB" if item.image_id else "-"
        click.echo(f"{item.ref:<36} {image_id:<19} {size:>8}  {role:<10} {item.containers:>10}  "
                   f"{', '.join(item.apps) or '-'}")
    if any(item.in_use and item.fallback for item in images):
        click.echo("* in use: docker/image is missing, new containers start from this fallback")
    from kato.service_images import print_service_images  # issue 16
    print_service_images(api_client())
