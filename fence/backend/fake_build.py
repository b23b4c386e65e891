"""The fake engine's Dockerfile builds: steps read from the context's Dockerfile, a few RUN programs understood."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import tarfile
from dataclasses import dataclass, field

from dockerfile_parse import DockerfileParser

from fence.backend.base import OutputCallback
from fence.builds import BuildSpec, ImageConfig
from fence.errors import BuildFailed, EngineError, ImageNotFound, StagingTimeout

_SLEEP = re.compile(r"\bsleep\s+(infinity|[0-9]+)")
_EXIT = re.compile(r"^\s*(false|exit\s+([1-9][0-9]*))\s*$")
_LAYERED = ("RUN", "COPY", "ADD")


@dataclass
class FakeBuilt:
    """What one fake build made: the config and the key a later build's cache matches."""

    config: ImageConfig
    steps_key: list[str] = field(default_factory=list)
    cached: int = 0
    steps: int = 0


def dockerfile_of(spec: BuildSpec) -> str:
    """The Dockerfile's text out of the build context tar."""
    try:
        with tarfile.open(spec.host_context, mode="r:*") as context:
            member = context.getmember(spec.dockerfile.lstrip("./") or "Dockerfile")
            handle = context.extractfile(member)
            return (handle.read() if handle else b"").decode("utf-8")
    except (KeyError, tarfile.TarError, OSError, UnicodeDecodeError) as exc:
        raise BuildFailed(step="the start", detail=f"cannot read {spec.dockerfile} in the context: {exc}") from None


def fake_build(spec: BuildSpec, *, base: ImageConfig | None, base_ref: str, previous: list[FakeBuilt],
               on_line: OutputCallback) -> FakeBuilt:
    """Run the Dockerfile's steps in the fake's way.

    ``RUN … sleep N`` takes N fake seconds (``infinity`` never ends), ``RUN false`` / ``RUN exit
    N`` fails; USER, CMD, ENTRYPOINT, WORKDIR and ENV shape the config; each RUN, COPY and ADD adds
    a layer. A step whose instructions up to it match one of ``previous`` (the ``cache_from``
    builds) is reported as ``Using cache``.

    Raises:
        ImageNotFound: the FROM image is not on the fake engine.
        BuildFailed: a step failed.
        StagingTimeout: the steps' fake seconds passed ``spec.timeout``.
    """
    parser = DockerfileParser(fileobj=io.BytesIO(b""))
    parser.content = dockerfile_of(spec)
    steps = [e for e in parser.structure if e["instruction"] != "COMMENT"]
    if base is None:
        raise ImageNotFound(image=base_ref)
    user, entrypoint, cmd, workdir = base.user, base.entrypoint, base.cmd, base.workdir
    env, layers, seconds, key = list(base.env), base.layers, 0.0, [base.id]
    cached = 0
    total = len(steps) + 1
    for number, step in enumerate(steps, start=1):
        instruction, value = step["instruction"], step["value"]
        on_line(f"Step {number}/{total} : {instruction} {value}")
        key.append(f"{instruction} {value}")
        if any(p.steps_key[:len(key)] == key for p in previous) and instruction != "FROM":
            on_line(" ---> Using cache")
            cached += 1
        elif instruction == "RUN":
            if (sleep := _SLEEP.search(value)) is not None:
                seconds += float("inf") if sleep.group(1) == "infinity" else float(sleep.group(1))
                if seconds > spec.timeout:
                    raise StagingTimeout(seconds=int(spec.timeout), phase=f"the Dockerfile build (step {number})")
            if (failed := _EXIT.match(value)) is not None:
                code = failed.group(2) or "1"
                raise BuildFailed(step=f"step {number}/{total} ({instruction} {value[:80]})",
                                  detail=f"The command '/bin/sh -c {value}' returned a non-zero code: {code}")
            for command in re.split(r"&&|;", value):  # echo without a redirection prints
                if command.strip().startswith("echo ") and ">" not in command:
                    on_line(command.strip()[5:])
        if instruction in _LAYERED:
            layers += 1
        elif instruction == "USER":
            user = value.strip()
        elif instruction in ("CMD", "ENTRYPOINT"):
            argv = _argv(value)
            if instruction == "CMD":
                cmd = argv
            else:
                entrypoint, cmd = argv, ()
        elif instruction == "WORKDIR":
            workdir = value.strip()
        elif instruction == "ENV":
            env.extend(_env(value))
    on_line(f"Step {total}/{total} : LABEL (fence's labels)")
    digest = hashlib.sha256(json.dumps([key, dict(spec.labels), dict(spec.build_args)]).encode()).hexdigest()
    config = ImageConfig(id=f"sha256:{digest}", tags=(spec.ref,), user=user, entrypoint=entrypoint, cmd=cmd,
                         workdir=workdir, env=tuple(env), layers=layers, size=base.size + 1024 * layers,
                         labels={**base.labels, **spec.labels}, parent=base.id)
    on_line(f"Successfully built {digest[:12]}")
    return FakeBuilt(config=config, steps_key=key, cached=cached, steps=total)


def base_ref_of(spec: BuildSpec) -> str:
    """The image the Dockerfile's first FROM names."""
    parser = DockerfileParser(fileobj=io.BytesIO(b""))
    parser.content = dockerfile_of(spec)
    froms = [e["value"].split()[0] for e in parser.structure if e["instruction"] == "FROM" and e["value"].split()]
    if not froms:
        raise EngineError(action=f"building {spec.ref}", detail="no build stage in current context")
    return froms[0]


def _argv(value: str) -> tuple[str, ...]:
    text = value.strip()
    if text.startswith("["):
        try:
            words = json.loads(text)
            if isinstance(words, list):
                return tuple(str(w) for w in words)
        except ValueError:
            pass
    return ("/bin/sh", "-c", text)


def _env(value: str) -> list[str]:
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:
        return [f"{words[0]}={' '.join(words[1:])}"]
    return [w for w in words if "=" in w]
