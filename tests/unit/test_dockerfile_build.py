"""Building a Dockerfile app on the fake engine: the node's refusals, the context, the build's settings."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from fence import labels
from fence.backend.fake import FakeBackend
from fence.builds import BuildSpec
from fence.config import ConfigStore
from fence.errors import BuildRefused, DockerfileRefused, StagingFailed
from fence.staging.dockerfile_build import allowed_bases, build_app_image

STACK = "fence/stack:bookworm"
NODE = "n0123456789ab"


def source_tar(host_dir: Path, files: dict[str, bytes]) -> Path:
    host_tar = host_dir / "source.tar"
    with tarfile.open(host_tar, mode="w") as archive:
        for name, data in files.items():
            entry = tarfile.TarInfo(f"app/{name}")
            entry.size, entry.mode, entry.uid, entry.gid = len(data), 0o644, 1000, 1000
            archive.addfile(entry, io.BytesIO(data))
    return host_tar


class Recorder(FakeBackend):
    """A fake engine that also keeps each build context's file names (the context is removed after)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.contexts: list[list[str]] = []

    def build_image(self, spec: BuildSpec, **kwargs):  # type: ignore[override]
        with tarfile.open(spec.host_context) as context:
            self.contexts.append(sorted(context.getnames()))
        return super().build_image(spec, **kwargs)


@pytest.fixture
def config(tmp_path: Path) -> ConfigStore:
    return ConfigStore(host_file=tmp_path / "config.yml")


def build(backend: FakeBackend, config: ConfigStore, tmp_path: Path, files: dict[str, bytes], *,
          app: str = "web", dockerfile: str = "Dockerfile", build_args: dict[str, str] | None = None):
    lines: list[str] = []
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    result = build_app_image(backend=backend, config=config, node_id=NODE, app=app,
                             host_source=source_tar(tmp_path, files), host_workdir=work, dockerfile=dockerfile,
                             build_args=build_args or {}, on_line=lines.append)
    return result, lines


def test_building_is_refused_when_the_engine_does_not_remap(config: ConfigStore, tmp_path: Path) -> None:
    backend = FakeBackend(userns_remap=False)
    with pytest.raises(BuildRefused) as caught:
        build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\n".encode()})
    message = caught.value.message
    assert "without user-namespace remapping" in message and "security/allow_unremapped_builds" in message
    assert "\n" not in message and backend.builds == []


def test_the_admin_may_allow_unremapped_builds_but_not_root_then(config: ConfigStore, tmp_path: Path) -> None:
    backend = FakeBackend(userns_remap=False)
    config.set("fence", "security/allow_unremapped_builds", "true")
    config.set("fence", "security/root_apps", '["web"]', as_json=True)
    result, _ = build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\nUSER 1000\n".encode()})
    assert result.image.user == "1000" and len(backend.builds) == 1
    with pytest.raises(DockerfileRefused, match="Dockerfile:2: USER: root is root"):
        build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\nUSER root\n".encode()})


def test_root_is_allowed_per_app_with_remapping_on(config: ConfigStore, tmp_path: Path) -> None:
    backend = FakeBackend()
    with pytest.raises(DockerfileRefused):
        build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\nUSER root\n".encode()})
    config.set("fence", "security/root_apps", '["web"]', as_json=True)
    assert build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\nUSER root\n".encode()})[0].image.user == "root"
    with pytest.raises(DockerfileRefused):
        build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\nUSER root\n".encode()}, app="other")


def test_a_build_gets_staging_limits_build_args_only_and_fence_labels(config: ConfigStore, tmp_path: Path) -> None:
    backend = FakeBackend()
    config.set("fence", "staging/memory", "512")
    config.set("fence", "staging/timeout", "77")
    result, lines = build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\nEXPOSE 80\nRUN echo hi\n"
                                                      "CMD [\"python3\", \"app.py\"]\n".encode()},
                          build_args={"VERSION": "2"})
    [spec] = backend.builds
    assert spec.network == "none" and spec.limits.memory_bytes == 512 * 2**20 and spec.timeout == 77
    assert dict(spec.build_args) == {"VERSION": "2"} and spec.cache_from == ()
    assert spec.labels == labels.owned(NODE, labels.ROLE_BUILD, app="web")
    assert result.image.cmd == ("python3", "app.py") and result.check.base.ref == STACK
    assert lines[0].startswith("-----> Building web from Dockerfile (FROM fence/stack:bookworm")
    assert any("Dockerfile:2: EXPOSE is ignored" in line for line in lines)
    assert "       hi" in lines and lines[-1].startswith("-----> Image ")


def test_the_next_build_reuses_only_this_apps_images(config: ConfigStore, tmp_path: Path) -> None:
    backend = FakeBackend()
    files = {"Dockerfile": f"FROM {STACK}\nRUN echo hi\n".encode()}
    first, _ = build(backend, config, tmp_path, files)
    build(backend, config, tmp_path, files, app="other")
    again, lines = build(backend, config, tmp_path, files)
    assert backend.builds[1].cache_from == () and backend.builds[2].cache_from == (first.image.id,)
    assert again.cached_steps >= 1 and any("from the cache" in line for line in lines)


def test_dockerignore_and_another_dockerfile_path(config: ConfigStore, tmp_path: Path) -> None:
    backend = Recorder()
    build(backend, config, tmp_path, {"docker/Web.Dockerfile": f"FROM {STACK}\nCOPY . /srv\n".encode(),
                                      ".dockerignore": b"secrets/\n*.log\n", "secrets/key": b"k", "a.log": b"x",
                                      "app.py": b"print(1)\n"}, dockerfile="docker/Web.Dockerfile")
    assert backend.contexts == [[".dockerignore", "app.py", "docker/Web.Dockerfile"]]


def test_a_missing_dockerfile_is_one_line(config: ConfigStore, tmp_path: Path) -> None:
    with pytest.raises(StagingFailed, match="the app has no docker/Dockerfile"):
        build(FakeBackend(), config, tmp_path, {"app.py": b""}, dockerfile="docker/Dockerfile")


def test_an_image_past_the_layer_cap_is_removed(config: ConfigStore, tmp_path: Path) -> None:
    backend = FakeBackend()
    config.set("fence", "staging/max_layers", "2")
    with pytest.raises(StagingFailed, match="has 3 layers, more than staging/max_layers \\(2\\): nothing was kept"):
        build(backend, config, tmp_path, {"Dockerfile": f"FROM {STACK}\nRUN echo a\nRUN echo b\n".encode()})
    assert backend.list_images({labels.ROLE: labels.ROLE_BUILD}) == []


def test_bases_default_to_the_stack_images(config: ConfigStore) -> None:
    assert allowed_bases(config) == (STACK,)
    config.set("fence", "docker/images", '["fence/stack:old"]', as_json=True)
    assert allowed_bases(config) == (STACK, "fence/stack:old")
    config.set("fence", "docker/build_bases", '["fence/base:1"]', as_json=True)
    assert allowed_bases(config) == ("fence/base:1",)


# --- the manifest's fields -----------------------------------------------------------------------

def test_manifest_builder_dockerfile_and_build_args() -> None:
    from fence.staging.manifest import parse_manifest

    found = parse_manifest(b"builder: dockerfile\ndockerfile: ./docker/Web.Dockerfile\n"
                           b"build_args:\n  VERSION: 2\n  EMPTY: ''\n", source_name="stackato.yml")
    assert found.builder == "dockerfile" and found.dockerfile == "docker/Web.Dockerfile"
    assert dict(found.build_args) == {"VERSION": "2", "EMPTY": ""}


@pytest.mark.parametrize(("text", "fragment"), [
    (b"builder: docker\n", "stackato.yml line 1, column 10: builder: 'docker' is not a builder (one of: dockerfile, buildpack)"),
    (b"builder: [dockerfile]\n", "builder"),
    (b"dockerfile: /etc/passwd\n", "dockerfile: '/etc/passwd' must be a relative path inside the app"),
    (b"dockerfile: ../other/Dockerfile\n", "must be a relative path"),
    (b"dockerfile: 'a b'\n", "must be a relative path"),
    (b"dockerfile: a//b\n", "must be a relative path"),
    (b"build_args: [A]\n", "build_args"),
    (b"build_args:\n  'BAD NAME': 1\n", "build arg name"),
    (b"build_args:\n  A: [1]\n", "build_args.A"),
])
def test_bad_manifest_values_are_one_line(text: bytes, fragment: str) -> None:
    from fence.errors import InvalidName, ManifestInvalid
    from fence.staging.manifest import parse_manifest

    with pytest.raises((ManifestInvalid, InvalidName)) as caught:
        parse_manifest(text, source_name="stackato.yml")
    assert fragment in caught.value.message and "\n" not in caught.value.message
