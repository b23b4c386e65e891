"""`kato image build --service TYPE` and the service-image part of `kato image list` (issue 16)."""

from __future__ import annotations

import click

from fence.config import ConfigStore
from fence.home import NodeHome
from fence.wiring import docker_backend


def build_service(*, home: NodeHome, config: ConfigStore, kind: str, tag: str | None) -> str:
    """Build a service image on the configured stack; returns its reference.

    Raises:
        UsageError: an unknown type or a bad tag.
        ImageNotFound: the stack image is not built.
    """
    from fence.config.types import BadValue, image_ref_type
    from fence.errors import UsageError
    from fence.services.image import build_service_image
    from fence.services.kinds import kind_of

    service_kind = kind_of(kind)
    ref = tag or service_kind.image_ref
    try:
        image_ref_type().check(ref)
    except BadValue:
        raise UsageError(detail=f"--tag {ref!r} is not an image reference like fence/service-redis:bookworm") from None
    home.ensure()
    build_service_image(kind=service_kind, stack=str(config.fence("docker/image")), ref=ref,
                        node_id=home.node_id, backend=docker_backend(config), host_workdir=home.host_tmp,
                        on_line=click.echo)
    return ref


def print_service_images(client) -> None:  # noqa: ANN001 - a FenceClient
    """The service images table of `kato image list`."""
    found = client.service_images()
    click.echo("")
    click.echo(f"{'SERVICE IMAGE':<36} {'ID':<19} {'SIZE':>8}  {'TYPE':<10} {'SERVICES':>10}")
    for item in found:
        image_id = item["id"][:19] if item.get("id") else "(missing)"
        size = f"{item['size'] / 1e6:.0f}MB" if item.get("id") else "-"
        click.echo(f"{item['ref']:<36} {image_id:<19} {size:>8}  {item['type']:<10} {item['services']:>10}")
