"""Image droplets on the fake engine: what a Dockerfile build or --image records, reuse, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from fence.backend.fake import FakeBackend
from fence.config import ConfigStore
from fence.errors import UsageError
from fence.home import NodeHome
from fence.image_apps import check_image_ref, is_image_droplet
from fence.layout import AppUser
from fence.models import Manifest, PreparedSource
from fence.staging.image_stage import ImageStager
from fence.store import StateStore
from tests.unit.test_dockerfile_build import NODE, STACK, source_tar


@pytest.fixture
def parts(tmp_path: Path) -> tuple[FakeBackend, ImageStager, StateStore]:
    backend = FakeBackend()
    config = ConfigStore(host_file=tmp_path / "config.yml")
    store = StateStore(host_db=tmp_path / "state.db")
    user = AppUser(config=config, backend=backend, host_file=tmp_path / "app-uid")
    stager = ImageStager(backend=backend, config=config, store=store, home=NodeHome(host_root=tmp_path / "home"),
                         node_id=NODE, app_user=user)
    return backend, stager, store


def source(tmp_path: Path, files: dict[str, bytes], manifest: Manifest | None = None,
           procfile: dict[str, str] | None = None) -> PreparedSource:
    host_tar = source_tar(tmp_path, files)
    return PreparedSource(host_tar=host_tar, files=len(files), size=host_tar.stat().st_size, origin="test",
                          commit=None, manifest=manifest or Manifest(), procfile=procfile)


def test_a_dockerfile_build_is_recorded_as_an_image_droplet_and_reused_when_unchanged(
        parts: tuple[FakeBackend, ImageStager, StateStore], tmp_path: Path) -> None:
    backend, stager, store = parts
    app = source(tmp_path, {"Dockerfile": f'FROM {STACK}\nCMD ["python3", "-m", "http.server"]\n'.encode()},
                 procfile={"worker": "python3 work.py"})
    lines: list[str] = []
    droplet = stager.stage(name="web", source=app, image=None, force=False, staging_id="s1", on_line=lines.append)
    assert is_image_droplet(droplet.builder) and droplet.builder == "dockerfile"
    assert droplet.id == droplet.image_id.removeprefix("sha256:") and store.droplet(droplet.id) == droplet
    assert droplet.base_image == STACK and droplet.base_image_id == backend.image_info(STACK).id
    assert len(droplet.dockerfile_digest) == 64
    assert droplet.start_command == "python3 -m http.server" and droplet.process_types["worker"] == "python3 work.py"
    assert droplet.run_user == "1000:1000" and droplet.run_home == "/home/stackato"  # USER unset: root
    assert any("runs as uid 1000 instead" in line for line in lines)
    again = stager.stage(name="web", source=app, image=None, force=False, staging_id="s2", on_line=lines.append)
    assert again == droplet and len(backend.builds) == 1 and "reusing image droplet" in lines[-1]
    stager.stage(name="web", source=app, image=None, force=True, staging_id="s3", on_line=lines.append)
    assert len(backend.builds) == 2  # --force builds again


def test_a_pushed_image_keeps_its_non_root_user_and_a_missing_one_is_refused(
        parts: tuple[FakeBackend, ImageStager, StateStore], tmp_path: Path) -> None:
    backend, stager, _ = parts
    built = stager.stage(name="maker", source=source(tmp_path, {
        "Dockerfile": f'FROM {STACK}\nUSER 1234\nCMD ["sleep", "1"]\n'.encode()}), image=None, force=False,
        staging_id="s1", on_line=lambda _: None)
    pushed = stager.stage(name="user", source=source(tmp_path, {}), image=built.image_id, force=False,
                          staging_id="s2", on_line=lambda _: None)
    assert pushed.builder == "image" and pushed.image_id == built.image_id and pushed.id != built.id
    assert pushed.run_user == "1234" and pushed.run_home == "" and pushed.start_command == "sleep 1"
    with pytest.raises(UsageError) as caught:
        stager.stage(name="user", source=source(tmp_path, {}), image="fence-test/none:1", force=False,
                     staging_id="s3", on_line=lambda _: None)
    assert "is not on the node's Docker Engine" in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize("ref", ["Upper/Case", "with space", "name:", "name@sha256:abc", ":tag", "a" * 256, "x:y:z"])
def test_a_bad_image_reference_is_one_line(ref: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_image_ref(ref)
    assert "is not an image reference" in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize("ref", ["app", "fence/stack:bookworm", "localhost:5000/team/app:v1.2",
                                 "app@sha256:" + "0" * 64])
def test_good_image_references_pass(ref: str) -> None:
    assert check_image_ref(ref) == ref


def test_the_stager_picks_the_builder_from_image_flag_manifest_and_a_root_dockerfile(tmp_path: Path) -> None:
    from fence.droplets import DropletStore
    from fence.staging.buildpacks import BuildpackResolver, builtin_dir
    from fence.staging.stager import Stager, StageRequest

    backend = FakeBackend()
    config = ConfigStore(host_file=tmp_path / "config.yml")
    stager = Stager(backend=backend, config=config, droplets=DropletStore(host_dir=tmp_path / "droplets"),
                    store=StateStore(host_db=tmp_path / "state.db"), home=NodeHome(host_root=tmp_path / "home"),
                    node_id=NODE, app_user=AppUser(config=config, backend=backend, host_file=tmp_path / "app-uid"),
                    resolver=BuildpackResolver(host_builtin=builtin_dir(), host_cache=tmp_path / "bp-cache"))
    (tmp_path / "d").mkdir()
    (tmp_path / "p").mkdir()
    docker = source(tmp_path / "d", {"Dockerfile": b"FROM x\n"})
    plain = source(tmp_path / "p", {"app.py": b""})
    assert stager.builder(StageRequest(source=docker)) == "dockerfile"
    assert stager.builder(StageRequest(source=docker, buildpacks=("python",))) == "buildpack"
    assert stager.builder(StageRequest(source=docker, builder="buildpack")) == "buildpack"
    assert stager.builder(StageRequest(source=plain)) == "buildpack"
    assert stager.builder(StageRequest(source=plain, image="app:1")) == "image"
    for bad, said in ((StageRequest(source=plain, image="app:1", builder="dockerfile"), "--image deploys an image"),
                      (StageRequest(source=plain, builder="kaniko"), "--builder 'kaniko' is not a builder"),
                      (StageRequest(source=docker, builder="dockerfile", buildpacks=("python",)),
                       "cannot be used with buildpacks")):
        with pytest.raises(UsageError, match=said):
            stager.builder(bad)
