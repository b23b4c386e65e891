"""The raw-Docker side of each figure: `docker build` of an equivalent Dockerfile, `docker run` of an image."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from bench.node import STACK

BENCH_LABEL = "fence-bench"
UID = 1000
HOME = "/home/stackato"


class Docker:
    """The docker CLI as a user would run it; remembers what it made so ``close`` removes it.

    Args:
        run_id: value of the ``fence-bench`` label on everything it creates.
    """

    def __init__(self, *, run_id: str) -> None:
        self.run_id = run_id
        self._images: set[str] = set()

    def build(self, host_context: Path, *, tag: str, cache: bool) -> tuple[float, str]:
        """``docker build [--no-cache] -q -t TAG CONTEXT``; returns (seconds, image id).

        Raises:
            RuntimeError: the build failed.
        """
        argv = ["docker", "build", "-q", "--force-rm", "-t", tag, "--label", f"{BENCH_LABEL}={self.run_id}"]
        if not cache:
            argv.append("--no-cache")
        started = time.perf_counter()
        done = subprocess.run([*argv, str(host_context)], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"docker build of {host_context} failed: {done.stderr.strip()[-2000:]}")
        image = done.stdout.strip().splitlines()[-1]
        self._images.add(image)
        return elapsed, image

    def run(self, image: str, *, host_port: int, name: str | None = None, label: str | None = None,
            network: str | None = None) -> str:
        """``docker run -d -p 127.0.0.1:PORT:8080 IMAGE`` (with one more ``label`` ``k=v`` and a
        ``--network`` if given); returns the container id.

        Raises:
            RuntimeError: docker run failed.
        """
        argv = ["docker", "run", "-d", "--label", f"{BENCH_LABEL}={self.run_id}",
                "-p", f"127.0.0.1:{host_port}:8080"]
        if name:
            argv += ["--name", name]
        if label:
            argv += ["--label", label]
        if network:
            argv += ["--network", network]
        done = subprocess.run([*argv, image], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"docker run {image} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def remove(self, *containers: str) -> None:
        """``docker rm -f`` (quietly)."""
        if containers:
            subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)

    def size_rw(self, container: str) -> int:
        """Bytes in a container's writable layer (``docker inspect --size``)."""
        done = subprocess.run(["docker", "inspect", "--size", "--format", "{{.SizeRw}}", container],
                              capture_output=True, text=True)
        return int(done.stdout.strip() or 0)

    def close(self) -> None:
        """Remove every container and image this run made."""
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={BENCH_LABEL}={self.run_id}"],
                             capture_output=True, text=True).stdout.split()
        self.remove(*ids)
        found = subprocess.run(["docker", "images", "-q", "--filter", f"label={BENCH_LABEL}={self.run_id}"],
                               capture_output=True, text=True).stdout.split()
        for image in sorted(self._images | set(found)):
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


def staging_context(host_dir: Path, *, app_dir: Path, buildpack_dir: Path, name: str) -> Path:
    """A build context whose Dockerfile does what fence's staging does, on the same stack image:
    copy the buildpack and the app in as the app user, run the app's pre-staging hooks and the
    stack's admin hook, detect, compile (with a cache folder), release, then the post-staging hooks.

    Returns:
        The context folder (``Dockerfile``, ``app/``, ``bp/``).
    """
    shutil.rmtree(host_dir, ignore_errors=True)
    shutil.copytree(app_dir, host_dir / "app")
    shutil.copytree(buildpack_dir, host_dir / "bp")
    hooks: dict[str, list[str]] = {}
    manifest = app_dir / "stackato.yml"
    if manifest.is_file():
        hooks = (yaml.safe_load(manifest.read_text()) or {}).get("hooks") or {}
    app, cache, bp = f"{HOME}/app", f"{HOME}/cache", f"{HOME}/buildpacks/0-{buildpack_dir.name}"
    steps = [f"mkdir -p {cache} {HOME}/env {HOME}/tmp"]
    steps += [_hook(h) for h in hooks.get("pre-staging") or ()]
    steps += ["/etc/stackato/hooks/pre-staging", f"{bp}/bin/detect {app}",
              f"{bp}/bin/compile {app} {cache} {HOME}/env", f"{bp}/bin/release {app} > {HOME}/release.yml"]
    steps += [_hook(h) for h in hooks.get("post-staging") or ()]
    steps += ["/etc/stackato/hooks/post-staging"]
    (host_dir / "Dockerfile").write_text(
        f"FROM {STACK}\n"
        f"USER {UID}:{UID}\n"
        f"ENV HOME={HOME} USER=stackato LANG=C.UTF-8 TMPDIR={HOME}/tmp STACKATO_APP_NAME={name} "
        f"BUILDPACK_CACHE={cache} FENCE_STAGING_NETWORK=none\n"
        f"COPY --chown={UID}:{UID} bp {bp}\n"
        f"COPY --chown={UID}:{UID} app {app}\n"
        f"WORKDIR {app}\n"
        f"RUN set -e; " + " && ".join(steps) + "\n")
    return host_dir


def running_context(host_dir: Path, *, host_droplet: Path, start_script: bytes) -> Path:
    """A build context for an image that already holds a staged app: the stack, the droplet
    unpacked in the app user's home, and the same start script fence runs.

    Returns:
        The context folder.
    """
    shutil.rmtree(host_dir, ignore_errors=True)
    host_dir.mkdir(parents=True)
    shutil.copyfile(host_droplet, host_dir / "droplet.tar.gz")
    (host_dir / "start.sh").write_bytes(start_script)
    (host_dir / "Dockerfile").write_text(
        f"FROM {STACK}\n"
        f"ADD droplet.tar.gz {HOME}/\n"
        f"COPY start.sh {HOME}/.fence-start.sh\n"
        f"USER {UID}:{UID}\n"
        f"WORKDIR {HOME}\n"
        f"ENV HOME={HOME}\n"
        f'CMD ["/bin/bash", "{HOME}/.fence-start.sh"]\n')
    return host_dir


def _hook(command: str) -> str:
    tolerant = command.startswith("-")
    text = command[1:].lstrip() if tolerant else command
    return f"(bash -c {shlex.quote(text)}{' || true' if tolerant else ''})"
