"""Which builder, which user and which command an image app gets."""

from __future__ import annotations

import pytest

from fence.builds import ImageConfig
from fence.errors import UsageError
from fence.image_apps import choose_builder, process_types, run_as


def image(**fields: object) -> ImageConfig:
    values: dict[str, object] = dict(id="sha256:" + "a" * 64, tags=(), user="", entrypoint=(), cmd=(), workdir="",
                                     env=(), layers=1, size=0)
    values.update(fields)
    return ImageConfig(**values)  # type: ignore[arg-type]


def test_a_dockerfile_at_the_root_picks_the_dockerfile_builder_unless_a_buildpack_is_named() -> None:
    assert choose_builder(flag=None, manifest_builder=None, buildpacks_given=False, has_dockerfile=True) == "dockerfile"
    assert choose_builder(flag=None, manifest_builder=None, buildpacks_given=True, has_dockerfile=True) == "buildpack"
    assert choose_builder(flag=None, manifest_builder=None, buildpacks_given=False, has_dockerfile=False) == "buildpack"


def test_the_flag_wins_over_the_manifest() -> None:
    assert choose_builder(flag="buildpack", manifest_builder="dockerfile", buildpacks_given=False,
                          has_dockerfile=True) == "buildpack"
    assert choose_builder(flag=None, manifest_builder="dockerfile", buildpacks_given=False,
                          has_dockerfile=False) == "dockerfile"


@pytest.mark.parametrize(("flag", "manifest", "packs", "fragment"), [
    ("docker", None, False, "--builder 'docker' is not a builder"),
    (None, "kaniko", False, "stackato.yml builder: 'kaniko' is not a builder"),
    ("dockerfile", None, True, "--builder dockerfile cannot be used with buildpacks"),
])
def test_bad_builders_are_one_line(flag: str | None, manifest: str | None, packs: bool, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        choose_builder(flag=flag, manifest_builder=manifest, buildpacks_given=packs, has_dockerfile=True)


@pytest.mark.parametrize("user", ["", "root", "0", "0:0", "root:staff"])
def test_root_or_unset_becomes_the_app_user_with_home(user: str) -> None:
    found = run_as(image_user=user, app_uid=1000, app_home="/home/stackato", root_allowed=False, remapped=True)
    assert (found.user, found.home) == ("1000:1000", "/home/stackato")


def test_a_non_root_user_is_kept() -> None:
    assert run_as(image_user="1234:5", app_uid=1000, app_home="/home/stackato", root_allowed=False, remapped=True).user == "1234:5"
    assert run_as(image_user="app", app_uid=1000, app_home="/home/stackato", root_allowed=False, remapped=False).user == "app"


def test_root_is_kept_only_when_allowed_and_remapped() -> None:
    assert run_as(image_user="root", app_uid=1000, app_home="/home/stackato", root_allowed=True, remapped=True).user == "0:0"
    assert run_as(image_user="root", app_uid=1000, app_home="/home/stackato", root_allowed=True, remapped=False).user == "1000:1000"


def test_entrypoint_and_cmd_make_web_overridden_by_procfile_then_processes() -> None:
    built = image(entrypoint=("python3",), cmd=("app.py", "--port", "$PORT"))
    assert process_types(image=built, procfile=None, processes={}) == {"web": "python3 app.py --port '$PORT'"}
    assert process_types(image=built, procfile={"web": "gunicorn app", "worker": "celery"},
                         processes={"worker": "rq"}) == {"web": "gunicorn app", "worker": "rq"}
    assert process_types(image=image(), procfile=None, processes={}) == {}
