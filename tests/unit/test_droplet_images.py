"""Droplet images on the fake engine: made once, and a droplet that cannot be unpacked is refused
in one line, leaving no image and no container behind."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from fence import labels
from fence.backend.fake import FakeBackend
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.errors import DropletCorrupt, DropletImageFailed
from fence.layout import AppUser
from fence.models import DropletRecord
from fence.running.images import DropletImages

NODE = "n-images"


def _droplet(droplets: DropletStore, app: str = "web") -> DropletRecord:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"print('hi')\n"
        info = tarfile.TarInfo("app/app.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    digest, size = droplets.write(app_tar=[buffer.getvalue()], extra_files={"staging_info.yml": b"{}"}, uid=1000)
    return DropletRecord(id=digest, app=app, size=size, buildpacks=(), start_command="python app.py",
                         process_types={"web": "python app.py"}, config_vars={}, stack_image="fence/stack:bookworm",
                         stack_image_id="sha256:x", commit=None, staged_at="t", staging_id="s")


@pytest.fixture
def parts(tmp_path: Path) -> tuple[FakeBackend, DropletStore, DropletImages]:
    backend = FakeBackend()
    droplets = DropletStore(host_dir=tmp_path / "droplets")
    config = ConfigStore(host_file=tmp_path / "config.yml")
    images = DropletImages(backend=backend, config=config, droplets=droplets, node_id=NODE,
                           app_user=AppUser(config=config, backend=backend, host_file=tmp_path / "app-uid"))
    return backend, droplets, images


def test_the_image_holds_the_unpacked_droplet_owned_by_the_app_user(parts) -> None:  # noqa: ANN001
    backend, droplets, images = parts
    droplet = _droplet(droplets)
    image = images.ensure(droplet, memory_mib=64)
    again = images.ensure(droplet, memory_mib=64)
    assert image.made and not again.made and again == image
    files = backend._tree(image.image_id)  # noqa: SLF001 - the fake's committed file tree
    assert files is not None
    app_py = files[Path("/home/stackato/app/app.py")]  # type: ignore[index]
    assert app_py.data == b"print('hi')\n" and app_py.uid == 1000
    assert all(not str(path).endswith(".fence-droplet.tgz") for path in files)
    assert backend.list({labels.NODE: NODE}) == []  # the unpacking container is gone


def test_a_droplet_that_cannot_be_unpacked_is_refused_and_leaves_nothing(parts) -> None:  # noqa: ANN001
    backend, droplets, images = parts
    # Named by its own digest, so that it passes the digest check and reaches tar.
    garbage = b"not a gzip archive"
    digest = hashlib.sha256(garbage).hexdigest()
    droplet = _droplet(droplets)
    droplets.host_path(droplet.id).with_name(f"{digest}.tgz").write_bytes(garbage)
    droplet = dataclasses.replace(droplet, id=digest)
    with pytest.raises(DropletImageFailed) as caught:
        images.ensure(droplet, memory_mib=64)
    message = caught.value.message
    assert message.startswith(f"could not prepare droplet {droplet.id[:12]} on stack fence/stack:bookworm "
                              "for running: tar exited 2"), message
    assert "\n" not in message
    assert backend.list({labels.NODE: NODE}) == []
    assert backend.list_images({labels.NODE: NODE}) == []


def test_a_tampered_droplet_is_refused_before_any_container_and_no_image_is_made(parts) -> None:  # noqa: ANN001
    backend, droplets, images = parts
    droplet = _droplet(droplets)
    host_file = droplets.host_path(droplet.id)
    host_file.write_bytes(host_file.read_bytes() + b"appended by an intruder")
    with pytest.raises(DropletCorrupt) as caught:
        images.ensure(droplet, memory_mib=64)
    message = caught.value.message
    assert message.startswith(f"droplet {droplet.id} is corrupt: content hashes to ") and "\n" not in message
    assert backend.created == []  # not even an unpacking container
    assert backend.list_images({labels.NODE: NODE}) == []
