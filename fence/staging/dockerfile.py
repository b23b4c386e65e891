"""Static checks of an app's Dockerfile before anything is built: what fence refuses, warns about and records."""

from __future__ import annotations

import hashlib
import io
import re
import shlex
from dataclasses import dataclass
from typing import Callable

from dockerfile_parse import DockerfileParser

from fence.errors import DockerfileRefused

# Instructions fence ignores (the app listens on $PORT; fence owns health, stop and storage, as
# on Heroku): they are blanked out of the Dockerfile the engine gets, so the image never has them.
IGNORED = ("EXPOSE", "VOLUME", "HEALTHCHECK", "STOPSIGNAL")
# Instructions that add a layer to the image (the static layer count).
_LAYERED = ("RUN", "COPY", "ADD")
_MAX_DOCKERFILE = 256 * 1024
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^git@", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^\s*(syntax|escape|check)\s*=", re.IGNORECASE)
_ROOT_USERS = ("0", "root")

# Finds an image on the node: reference → image id, or ``None`` when the engine lacks it.
ImageLookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class BaseImage:
    """An image a Dockerfile builds on (``FROM``) or copies from (``COPY --from``).

    Attributes:
        ref: the reference as written.
        image_id: its id on the node's engine (``sha256:…``): the digest recorded.
        line: the line (1-based) that names it.
    """

    ref: str
    image_id: str
    line: int


@dataclass(frozen=True)
class DockerfileCheck:
    """What the checks found in a Dockerfile that passed them.

    Attributes:
        digest: sha256 of the Dockerfile as the developer wrote it.
        text: the Dockerfile the engine gets (ignored instructions blanked, line numbers kept).
        base: the image the final stage builds on.
        images: every image named (FROM and COPY --from), in order.
        user: the final stage's last ``USER`` (``""``: none, so the base's).
        warnings: one line per ignored instruction.
        layers: instructions that add a layer (RUN, COPY, ADD) in all stages.
    """

    digest: str
    text: str
    base: BaseImage
    images: tuple[BaseImage, ...]
    user: str
    warnings: tuple[str, ...]
    layers: int


def is_root_user(value: str) -> bool:
    """Whether a ``USER`` value (``user[:group]``) names root by name or uid 0."""
    user = value.strip().split(":", 1)[0].strip()
    return user in _ROOT_USERS or (user.isdigit() and int(user) == 0)


def check_dockerfile(*, data: bytes, path: str, allowed: tuple[str, ...], lookup: ImageLookup,
                     allow_root: bool, max_layers: int) -> DockerfileCheck:
    """Check a Dockerfile before building it.

    Refused, each with one line naming the file, the line and the instruction: parser
    directives (``# syntax=`` frontends, ``# escape=``), ``FROM`` an image not in ``allowed``
    or not on the node (or written with a variable or flags), ``RUN`` flags (``--mount`` of ssh
    or secrets, ``--security=insecure``, ``--network``, ``--privileged``), ``ADD`` from a URL,
    ``COPY --from`` an image that is not an allowed base or an earlier stage, ``USER`` root
    unless ``allow_root``, a ``USER`` from a variable, ``LABEL fence.*`` (fence's ownership
    labels), ``ONBUILD``, more than ``max_layers`` layers.

    Args:
        data: the Dockerfile's bytes.
        path: its path in the app (for messages).
        allowed: the image references FROM may name.
        lookup: finds an image's id on the node.
        allow_root: whether ``USER root`` is accepted for this app.
        max_layers: most RUN/COPY/ADD instructions.

    Returns:
        The checked Dockerfile, what it builds on, and its warnings.

    Raises:
        DockerfileRefused: the first construct refused.
    """
    def refuse(line: int, instruction: str, why: str) -> DockerfileRefused:
        return DockerfileRefused(path=path, line=line, instruction=instruction, why=why)

    if len(data) > _MAX_DOCKERFILE:
        raise refuse(1, "Dockerfile", f"is larger than {_MAX_DOCKERFILE // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(data[:exc.start].count(b"\n") + 1, "Dockerfile", "is not UTF-8 text") from None
    if "\x00" in text:
        raise refuse(text[:text.index("\x00")].count("\n") + 1, "Dockerfile", "holds a NUL byte")
    parser = DockerfileParser(fileobj=io.BytesIO(b""))
    parser.content = text
    structure = parser.structure
    lines = text.splitlines(keepends=True)
    stages: list[str] = []
    images: list[BaseImage] = []
    stages_seen: list[int] = []
    warnings: list[str] = []
    user, layers, seen_instruction = "", 0, False
    final: BaseImage | None = None
    bases_of: dict[str, BaseImage] = {}  # stage name → the image it builds on
    for entry in structure:
        instruction, value, line = entry["instruction"], entry["value"], entry["startline"] + 1
        if instruction == "COMMENT":
            match = _DIRECTIVE.match(value)
            if not seen_instruction and match:
                raise refuse(line, f"# {match.group(1).lower()}=", "parser directives are not accepted "
                             "(a `# syntax=` frontend is fetched from a registry and runs outside fence's limits)")
            continue
        seen_instruction = True
        if instruction == "FROM":
            ref, stage = _from(value, line, refuse)
            stages_seen.append(line)
            if ref.lower() in bases_of:
                final = bases_of[ref.lower()]
            else:
                final = _allowed_image(ref, line, "FROM", allowed, lookup, refuse)
                images.append(final)
            if stage:
                stages.append(stage)
                bases_of[stage] = final
            user = ""
        elif final is None and instruction != "ARG":
            raise refuse(line, instruction, "comes before the first FROM")
        elif instruction == "RUN":
            for flag in _flags(value):
                raise refuse(line, "RUN", _run_flag_why(flag))
        elif instruction in ("ADD", "COPY"):
            words = _words(value, line, instruction, refuse)
            for flag in (w for w in words if w.startswith("--")):
                if flag.startswith("--from="):
                    source = flag.split("=", 1)[1]
                    if source.lower() not in stages and not (source.isdigit() and int(source) < len(stages_seen) - 1):
                        images.append(_allowed_image(source, line, f"{instruction} --from", allowed, lookup, refuse))
                elif not flag.startswith("--chown="):
                    raise refuse(line, instruction, f"the flag {flag.split('=', 1)[0]} is not accepted")
            sources = [w for w in words if not w.startswith("--")][:-1]
            if instruction == "ADD" and any(_URL.match(s) for s in sources):
                raise refuse(line, "ADD", "fetching from a URL is not accepted: download in the source, "
                             "or in a RUN step when staging/network allows it")
        elif instruction == "USER":
            if "$" in value:
                raise refuse(line, "USER", "must name the user literally (no variables)")
            if is_root_user(value) and not allow_root:
                raise refuse(line, "USER", f"{value.strip()} is root: fence runs apps unprivileged "
                             "(an admin may allow root for this app: security/root_apps)")
            user = value.strip()
        elif instruction == "LABEL":
            if any(key.startswith("fence.") for key in _label_keys(value, line, refuse)):
                raise refuse(line, "LABEL", "fence.* labels are fence's own (they mark what the node owns)")
        elif instruction == "ONBUILD":
            raise refuse(line, "ONBUILD", "is not accepted (its steps would run in another app's build)")
        elif instruction in IGNORED:
            warnings.append(f"{path}:{line}: {instruction} is ignored: the app listens on $PORT and "
                            f"fence manages health checks, stopping and storage")
            for index in range(entry["startline"], entry["endline"] + 1):
                lines[index] = f"# ignored by fence: {lines[index].lstrip('#')}"
        if instruction in _LAYERED:
            layers += 1
            if layers > max_layers:
                raise refuse(line, instruction, f"is layer {layers}: more than staging/max_layers ({max_layers})")
    if final is None:
        raise refuse(max(len(lines), 1), "FROM", "the Dockerfile has no FROM")
    assert final is not None
    return DockerfileCheck(digest=hashlib.sha256(data).hexdigest(), text="".join(lines), base=final,
                           images=tuple(images), user=user, warnings=tuple(warnings), layers=layers)


def _from(value: str, line: int, refuse: Callable[..., DockerfileRefused]) -> tuple[str, str]:
    words = value.split()
    if not words:
        raise refuse(line, "FROM", "names no image")
    if words[0].startswith("--"):
        raise refuse(line, "FROM", f"the flag {words[0].split('=', 1)[0]} is not accepted")
    if "$" in words[0]:
        raise refuse(line, "FROM", "must name the image literally (no variables): the base is checked before the build")
    if len(words) == 1:
        return words[0], ""
    if len(words) == 3 and words[1].lower() == "as":
        return words[0], words[2].lower()
    raise refuse(line, "FROM", f"{value.strip()!r} is not `FROM image [AS name]`")


def _allowed_image(ref: str, line: int, instruction: str, allowed: tuple[str, ...], lookup: ImageLookup,
                   refuse: Callable[..., DockerfileRefused]) -> BaseImage:
    name = ref.split("@", 1)[0]
    if name not in allowed and _with_latest(name) not in allowed:
        listed = ", ".join(allowed) or "none"
        raise refuse(line, instruction, f"{ref} is not an image this node builds on "
                     f"(docker/build_bases: {listed})")
    image_id = lookup(name)
    if image_id is None:
        raise refuse(line, instruction, f"{ref} is not on this node's engine")
    if "@" in ref and ref.split("@", 1)[1] != image_id:
        raise refuse(line, instruction, f"{name} on this node is {image_id}, not {ref.split('@', 1)[1]}")
    return BaseImage(ref=ref, image_id=image_id, line=line)


def _with_latest(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _flags(value: str) -> list[str]:
    flags = []
    for word in value.split():
        if not word.startswith("--"):
            break
        flags.append(word)
    return flags


def _run_flag_why(flag: str) -> str:
    name, _, arg = flag.partition("=")
    if name == "--mount" and any(f"type={kind}" in arg for kind in ("ssh", "secret")):
        return f"{flag} is not accepted: no ssh agent or secret of the node reaches a build"
    if name == "--security":
        return f"{flag} is not accepted: build steps never run privileged"
    if name == "--privileged":
        return "--privileged is not accepted: build steps never run privileged"
    if name == "--network":
        return f"{flag} is not accepted: the build's network is staging/network"
    return f"the flag {name} is not accepted (the classic builder fence uses has no RUN flags)"


def _words(value: str, line: int, instruction: str, refuse: Callable[..., DockerfileRefused]) -> list[str]:
    stripped = value.strip()
    if stripped.startswith("["):
        import json

        try:
            words = json.loads(stripped)
        except ValueError:
            words = None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return words
    try:
        return shlex.split(stripped)
    except ValueError as exc:
        raise refuse(line, instruction, f"cannot be parsed: {exc}") from None


def _label_keys(value: str, line: int, refuse: Callable[..., DockerfileRefused]) -> list[str]:
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise refuse(line, "LABEL", f"cannot be parsed: {exc}") from None
    if len(words) == 2 and "=" not in words[0]:  # the old `LABEL key value` form
        return [words[0]]
    return [w.split("=", 1)[0] for w in words]
