"""The static Dockerfile checks: every refused construct gets its one line, ignored ones a warning."""

from __future__ import annotations

import pytest

from fence.config import ConfigStore
from fence.errors import DockerfileRefused, InvalidConfigValue
from fence.staging.dockerfile import check_dockerfile, is_root_user

STACK = "fence/stack:bookworm"
STACK_ID = "sha256:" + "a" * 64
IMAGES = {STACK: STACK_ID, "fence/other:1": "sha256:" + "b" * 64}


def check(text: str, *, allow_root: bool = False, allowed: tuple[str, ...] = (STACK,), max_layers: int = 64):
    return check_dockerfile(data=text.encode(), path="Dockerfile", allowed=allowed, lookup=IMAGES.get,
                            allow_root=allow_root, max_layers=max_layers)


def refusal(text: str, **kwargs: object) -> str:
    with pytest.raises(DockerfileRefused) as caught:
        check(text, **kwargs)  # type: ignore[arg-type]
    message = caught.value.message
    assert "\n" not in message
    return message


def test_a_plain_dockerfile_passes_with_its_base_recorded() -> None:
    found = check(f"FROM {STACK}\nCOPY . /app\nRUN echo hi\nUSER 1000\nCMD [\"python3\", \"app.py\"]\n")
    assert found.base.ref == STACK and found.base.image_id == STACK_ID and found.base.line == 1
    assert found.user == "1000" and found.layers == 2 and found.warnings == ()
    assert len(found.digest) == 64


def test_syntax_frontends_are_refused_naming_the_line() -> None:
    assert refusal(f"# syntax=docker/dockerfile:1.4\nFROM {STACK}\n").startswith(
        "Dockerfile:1: # syntax=: parser directives are not accepted")
    assert refusal(f"#   SYNTAX = x/y\nFROM {STACK}\n").startswith("Dockerfile:1: # syntax=:")
    assert refusal(f"# escape=`\nFROM {STACK}\n").startswith("Dockerfile:1: # escape=:")


def test_a_directive_after_the_first_instruction_is_only_a_comment() -> None:
    assert check(f"FROM {STACK}\n# syntax=docker/dockerfile:1\n").base.ref == STACK


@pytest.mark.parametrize("flag", ["--mount=type=ssh", "--mount=type=secret,id=token",
                                  "--security=insecure", "--privileged", "--network=host"])
def test_run_flags_that_reach_past_the_build_are_refused(flag: str) -> None:
    message = refusal(f"FROM {STACK}\nRUN echo ok\nRUN {flag} cat /x\n")
    assert message.startswith(f"Dockerfile:3: RUN: {flag.split(',')[0] if 'secret' not in flag else flag}")


def test_a_flag_on_a_continued_run_line_is_refused_at_its_first_line() -> None:
    assert refusal(f"FROM {STACK}\nRUN --mount=type=secret,id=a \\\n    cat /run/secrets/a\n").startswith(
        "Dockerfile:2: RUN: --mount=type=secret,id=a is not accepted")


@pytest.mark.parametrize("source", ["https://example.com/a.tgz", "http://10.0.0.1/x", "git@github.com:a/b.git",
                                    "FTP://host/file"])
def test_add_from_a_url_is_refused(source: str) -> None:
    assert refusal(f"FROM {STACK}\nADD {source} /x\n").startswith(
        "Dockerfile:2: ADD: fetching from a URL is not accepted")


def test_add_of_a_local_file_passes() -> None:
    assert check(f"FROM {STACK}\nADD app.tgz /srv/\n").layers == 1


@pytest.mark.parametrize("user", ["root", "0", "0:0", "root:root", "00", " root "])
def test_user_root_is_refused_unless_allowed(user: str) -> None:
    assert refusal(f"FROM {STACK}\nUSER {user}\n").startswith(f"Dockerfile:2: USER: {user.strip()} is root")
    assert check(f"FROM {STACK}\nUSER {user}\n", allow_root=True).user == user.strip()


def test_user_from_a_variable_is_refused() -> None:
    assert refusal(f"FROM {STACK}\nARG U=0\nUSER $U\n").startswith("Dockerfile:3: USER: must name the user")


def test_root_user_detection() -> None:
    assert is_root_user("root") and is_root_user("0:1000") and not is_root_user("1000") and not is_root_user("app")


def test_from_an_image_the_admin_does_not_allow_is_refused() -> None:
    assert refusal("FROM fence/other:1\n") == ("Dockerfile:1: FROM: fence/other:1 is not an image this node "
                                               f"builds on (docker/build_bases: {STACK})")
    assert refusal("FROM debian:bookworm\n").startswith("Dockerfile:1: FROM: debian:bookworm is not an image")
    assert refusal("FROM scratch\n").startswith("Dockerfile:1: FROM: scratch is not an image")


def test_from_an_allowed_image_missing_on_the_node_is_refused() -> None:
    assert refusal("FROM fence/gone:1\n", allowed=("fence/gone:1",)) == (
        "Dockerfile:1: FROM: fence/gone:1 is not on this node's engine")


def test_from_with_a_digest_must_match_the_node_image() -> None:
    assert check(f"FROM {STACK}@{STACK_ID}\n").base.image_id == STACK_ID
    assert "not sha256:" in refusal(f"FROM {STACK}@sha256:{'c' * 64}\n")


def test_from_with_variables_or_flags_is_refused() -> None:
    assert "must name the image literally" in refusal(f"ARG B={STACK}\nFROM ${{B}}\n")
    assert refusal(f"FROM --platform=linux/arm64 {STACK}\n").startswith("Dockerfile:1: FROM: the flag --platform")
    assert "is not `FROM image [AS name]`" in refusal(f"FROM {STACK} junk\n")


def test_stages_build_on_earlier_stages_and_copy_from_them() -> None:
    found = check(f"FROM {STACK} AS build\nRUN make\nFROM build AS test\nFROM fence/other:1\n"
                  "COPY --from=build /out /app\nCOPY --from=0 /x /y\n", allowed=(STACK, "fence/other:1"))
    assert found.base.ref == "fence/other:1" and [i.ref for i in found.images] == [STACK, "fence/other:1"]


def test_copy_from_another_image_is_checked_like_from() -> None:
    # another app's droplet image is on the node too: copying out of it would read its files
    assert refusal(f"FROM {STACK}\nCOPY --from=fence/droplet:n1-abc /app /stolen\n").startswith(
        "Dockerfile:2: COPY --from: fence/droplet:n1-abc is not an image this node builds on")
    assert refusal(f"FROM {STACK}\nCOPY --from=1 /a /b\n").startswith("Dockerfile:2: COPY --from: 1 is not")


def test_copy_flags_other_than_chown_are_refused() -> None:
    assert check(f"FROM {STACK}\nCOPY --chown=1000:1000 . /app\n").layers == 1
    assert refusal(f"FROM {STACK}\nCOPY --link . /app\n").startswith("Dockerfile:2: COPY: the flag --link")


def test_fence_labels_are_refused() -> None:
    assert refusal(f"FROM {STACK}\nLABEL a=b fence.node=n1\n").startswith("Dockerfile:2: LABEL: fence.* labels")
    assert refusal(f"FROM {STACK}\nLABEL fence.role instance\n").startswith("Dockerfile:2: LABEL:")
    assert check(f"FROM {STACK}\nLABEL maintainer=\"me <me@x>\"\n").layers == 0


def test_onbuild_is_refused() -> None:
    assert refusal(f"FROM {STACK}\nONBUILD RUN echo\n").startswith("Dockerfile:2: ONBUILD: is not accepted")


def test_instructions_before_from_are_refused() -> None:
    assert refusal(f"RUN echo\nFROM {STACK}\n").startswith("Dockerfile:1: RUN: comes before the first FROM")
    assert check(f"ARG V=1\nFROM {STACK}\n").base.ref == STACK


def test_a_dockerfile_without_from_is_refused() -> None:
    assert "has no FROM" in refusal("# nothing\n")
    assert "has no FROM" in refusal("")


def test_too_many_layers_are_refused_at_the_first_one_over() -> None:
    text = f"FROM {STACK}\n" + "RUN true\n" * 4
    assert check(text, max_layers=4).layers == 4
    assert refusal(text, max_layers=3) == "Dockerfile:5: RUN: is layer 4: more than staging/max_layers (3)"


def test_ignored_instructions_warn_and_are_blanked_keeping_line_numbers() -> None:
    text = (f"FROM {STACK}\nEXPOSE 80\nVOLUME /data\nHEALTHCHECK --interval=5s \\\n  CMD curl -f localhost\n"
            "STOPSIGNAL SIGKILL\nRUN true\n")
    found = check(text)
    assert [w.split(":")[1] + " " + w.split(": ")[1].split()[0] for w in found.warnings] == [
        "2 EXPOSE", "3 VOLUME", "4 HEALTHCHECK", "6 STOPSIGNAL"]
    kept = found.text.splitlines()
    assert len(kept) == len(text.splitlines()) and kept[6] == "RUN true"
    assert all(line.startswith("# ignored by fence: ") for line in kept[1:6])
    import io

    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=io.BytesIO(b""))
    parser.content = found.text
    assert [e["instruction"] for e in parser.structure if e["instruction"] != "COMMENT"] == ["FROM", "RUN"]


def test_binary_and_huge_dockerfiles_are_refused() -> None:
    with pytest.raises(DockerfileRefused, match="Dockerfile:2: Dockerfile: is not UTF-8"):
        check_dockerfile(data=b"FROM x\n\xff\n", path="Dockerfile", allowed=(), lookup=IMAGES.get,
                         allow_root=False, max_layers=4)
    with pytest.raises(DockerfileRefused, match="larger than 256 KiB"):
        check_dockerfile(data=b"#" * (257 * 1024), path="Dockerfile", allowed=(), lookup=IMAGES.get,
                         allow_root=False, max_layers=4)
    with pytest.raises(DockerfileRefused, match="Dockerfile:1: Dockerfile: holds a NUL"):
        check_dockerfile(data=b"FROM\x00", path="Dockerfile", allowed=(), lookup=IMAGES.get,
                         allow_root=False, max_layers=4)


@pytest.mark.parametrize(("key", "raw"), [
    ("docker/build_bases", '["Not An Image"]'), ("docker/build_bases", '"fence/stack:bookworm"'),
    ("security/allow_unremapped_builds", '"yes please"'), ("security/root_apps", '["Bad_Name!"]'),
    ("staging/max_layers", "0"), ("staging/max_layers", "500"), ("staging/max_image", "0"),
])
def test_bad_config_values_are_refused(tmp_path, key: str, raw: str) -> None:
    store = ConfigStore(host_file=tmp_path / "config.yml")
    with pytest.raises(InvalidConfigValue) as caught:
        store.set("fence", key, raw, as_json=True)
    assert key in caught.value.message and "\n" not in caught.value.message
    assert store.fence(key) == {"docker/build_bases": [], "security/allow_unremapped_builds": False,
                                "security/root_apps": [], "staging/max_layers": 64,
                                "staging/max_image": 4096}[key]


def test_lower_case_instructions_and_flags_after_a_continuation_are_checked_too() -> None:
    assert refusal(f"from {STACK}\nuser root\n").startswith("Dockerfile:2: USER: root is root")
    assert refusal(f"FROM {STACK}\nRUN \\\n  --mount=type=secret,id=a cat /run/secrets/a\n").startswith(
        "Dockerfile:2: RUN: --mount=type=secret,id=a is not accepted")


def test_add_from_a_url_in_json_form_is_refused() -> None:
    assert refusal(f'FROM {STACK}\nADD ["https://example.com/x", "/x"]\n').startswith("Dockerfile:2: ADD: fetching")
