"""Dockerfile builds on the engine's classic builder (POST /build), cancelled at a deadline with nothing left behind."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from typing import Any, Callable, Iterator, Mapping

import docker
import docker.errors

from fence.backend.base import OutputCallback
from fence.builds import BuildResult, BuildSpec, ImageConfig
from fence.errors import BuildFailed, StagingFailed, StagingTimeout

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")
_NEW_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
_MAX_LINE = 4096
_POLL = 0.5  # seconds between looks at the deadline and the cancel flag


def image_config(attrs: Mapping[str, Any]) -> ImageConfig:
    """ImageConfig from a /images/ID/json answer."""
    config = attrs.get("Config") or {}
    return ImageConfig(
        id=str(attrs["Id"]), tags=tuple(attrs.get("RepoTags") or ()), user=str(config.get("User") or ""),
        entrypoint=tuple(config.get("Entrypoint") or ()), cmd=tuple(config.get("Cmd") or ()),
        workdir=str(config.get("WorkingDir") or ""), env=tuple(config.get("Env") or ()),
        layers=len((attrs.get("RootFS") or {}).get("Layers") or ()), size=int(attrs.get("Size") or 0),
        labels=dict(config.get("Labels") or {}), parent=str(attrs.get("Parent") or ""))


def build_params(spec: BuildSpec) -> dict[str, Any]:
    """The /build query of a spec: classic builder limits, network, cache and labels."""
    params: dict[str, Any] = {
        "t": spec.ref, "dockerfile": spec.dockerfile, "rm": "1", "forcerm": "1", "pull": "0", "q": "0",
        "networkmode": spec.network, "memory": spec.limits.memory_bytes,
        "memswap": spec.limits.memory_bytes,  # no hidden swap, as for every container
        "cpushares": spec.limits.cpu_shares,
        "ulimits": json.dumps([{"Name": "nofile", "Soft": spec.limits.nofile, "Hard": spec.limits.nofile}]),
        "labels": json.dumps(dict(spec.labels)), "buildargs": json.dumps(dict(spec.build_args)),
    }
    if spec.cache_from:
        params["cachefrom"] = json.dumps(list(spec.cache_from))
    else:  # no earlier build of this app: no cache at all, never another app's layers
        params["nocache"] = "1"
    return params


class _Watch:
    """Shuts the build's connection down at the deadline or on cancel (closing it cancels the build)."""

    def __init__(self, *, deadline: float, cancelled: Callable[[], bool]) -> None:
        self.deadline, self.cancelled = deadline, cancelled
        self.sock: socket.socket | None = None
        self.why = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="build-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(_POLL):
            if time.monotonic() >= self.deadline:
                self.why = "timeout"
            elif self.cancelled():
                self.why = "cancelled"
            if self.why:
                if self.sock is not None:
                    with contextlib.suppress(OSError, AttributeError):
                        self.sock.shutdown(socket.SHUT_RDWR)
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_build(api: docker.APIClient, spec: BuildSpec, *, on_line: OutputCallback,
              cancelled: Callable[[], bool]) -> BuildResult:
    """Build on the classic builder; on failure, timeout or cancel remove what the build made.

    Args:
        api: a client without a read timeout (a RUN step may be silent for long).
        spec: the build.
        on_line: each output line, as the engine sends it.
        cancelled: says whether to give up.

    Raises:
        BuildFailed: a step failed (the engine's message).
        StagingTimeout: the build ran past ``spec.timeout``.
        StagingFailed: the build was cancelled.
    """
    # A build from cache_from re-links the cached steps under new step images: the cache image's
    # old step images are then no one's parents and would stay behind, untagged.
    old_chains = [_parents(api, image) for image in spec.cache_from]
    began = time.monotonic()
    watch = _Watch(deadline=began + spec.timeout, cancelled=cancelled)
    seen_containers: list[str] = []
    new_images: list[str] = []
    state = {"step": "the start", "cached": 0, "steps": 0, "running": False, "id": ""}
    error = ""
    try:
        try:
            with spec.host_context.open("rb") as context:
                # The SDK's build() hides the response; its socket is needed to cancel from the watch.
                response = api._post(api._url("/build"), data=context, params=build_params(spec),
                                     headers={"Content-Type": "application/x-tar"}, stream=True, timeout=None)
            with contextlib.suppress(Exception):
                raw = api._get_raw_response_socket(response)
                watch.sock = getattr(raw, "_sock", raw)  # a SocketIO over the unix socket
            if watch.why and watch.sock is not None:
                watch.sock.shutdown(socket.SHUT_RDWR)
            api._raise_for_status(response)
            for message in api._stream_helper(response, decode=True):
                if "error" in message:
                    error = " ".join(str(message.get("error")).split())[:300]
                    continue
                aux = message.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    state["id"] = str(aux["ID"])
                for line in _lines(str(message.get("stream") or "")):
                    _track(line, state, seen_containers, new_images)
                    on_line(line)
        except Exception as exc:  # a shut-down connection fails in many ways; the watch says why
            if not watch.why:
                if isinstance(exc, docker.errors.APIError):
                    raise BuildFailed(step=state["step"], detail=" ".join(str(exc.explanation).split())[:300]) from exc
                raise
    finally:
        watch.stop()
        failed = bool(watch.why or error or not state["id"])
        if failed:
            _clean(api, seen_containers, new_images)
    if watch.why == "timeout":
        raise StagingTimeout(seconds=int(spec.timeout), phase=f"the Dockerfile build ({state['step']})")
    if watch.why:
        raise StagingFailed(phase="the Dockerfile build", buildpack="", detail="cancelled")
    if error or not state["id"]:
        raise BuildFailed(step=state["step"], detail=error or "the engine reported no image")
    _drop_replaced_steps(api, state["id"], old_chains)
    return BuildResult(image=image_config(api.inspect_image(state["id"])), cached_steps=int(state["cached"]),
                       steps=int(state["steps"]))


def _lines(text: str) -> Iterator[str]:
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.rstrip()
        if line:
            yield line[:_MAX_LINE]


def _track(line: str, state: dict[str, Any], containers: list[str], images: list[str]) -> None:
    """Follow the classic builder's output: which containers and images this build made."""
    if line.startswith("Step ") and " : " in line:
        state["step"] = line.split(" : ", 1)[0].lower() + " (" + line.split(" : ", 1)[1][:80] + ")"
        state["steps"] += 1
        state["running"] = False
    elif line == " ---> Using cache":
        state["cached"] += 1
    elif match := _RUNNING_IN.match(line):
        containers.append(match.group(1))
        state["running"] = True
    elif (match := _NEW_IMAGE.match(line)) and state["running"]:
        images.append(match.group(1))  # made by this build's step, not a cached or base image
        state["running"] = False


def _parents(api: docker.APIClient, image_id: str) -> list[str]:
    """The image's parents, nearest first (empty when the engine does not know them)."""
    found: list[str] = []
    current = image_id
    for _ in range(256):  # more than any image's layers
        try:
            parent = str(api.inspect_image(current).get("Parent") or "")
        except docker.errors.APIError:
            break
        if not parent:
            break
        found.append(parent)
        current = parent
    return found


def _drop_replaced_steps(api: docker.APIClient, image_id: str, old_chains: list[list[str]]) -> None:
    """Remove the untagged step images of the cache images that the new build no longer uses."""
    kept = {image_id, *_parents(api, image_id)}
    for chain in old_chains:
        for step in chain:
            if step in kept:
                break  # from here down the chains are shared (the base at the latest)
            try:
                if api.inspect_image(step).get("RepoTags"):
                    break
                api.remove_image(step)  # its own untagged parents go with it
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError:  # still some image's parent: leave it
                break


def _clean(api: docker.APIClient, containers: list[str], images: list[str]) -> None:
    """Remove the containers and untagged images a failed build made (newest first)."""
    for container in containers:
        for _ in range(20):  # the engine may still be tearing the cancelled step down
            try:
                api.remove_container(container, force=True)
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:
                time.sleep(0.5)
    for image in reversed(images):
        with contextlib.suppress(docker.errors.NotFound):
            try:
                api.remove_image(image)
            except docker.errors.APIError as exc:
                log.warning("could not remove intermediate image %s: %s", image, exc)
