"""Extra Docker Engines on this machine for the cluster tier: each its own dockerd, roots and bridge.

This is how moby's own integration tests run multi-daemon swarms (one host, several dockerd with
their own data root, exec root, socket, pid file and containerd namespaces, swarm ports on
loopback). The main engine (/var/run/docker.sock) is never touched: extra engines take a *slot*
(an flock under ``KIT_STATE``), and the slot picks names, subnets and swarm ports nobody else uses,
so two test sessions on one machine do not collide.

What the kit makes is visible to the suite's leak check (tests/leaks.py): each dockerd by its data
root (under the pytest session's folder), each bridge by its ``ifalias`` (``fence-test-engine
OWNER``) and each engine folder by a link in ``KIT_STATE/roots``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

KIT_STATE = Path("/run/fence-test-engines")
BRIDGE_ALIAS = "fence-test-engine"
# Swarm ports of slot S, engine i (1-based): SWARM_PORT_BASE + 10*S + i - 1 (moby's tests: 2477+).
SWARM_PORT_BASE = 2577
SLOTS = 8
TEST_IMAGE = "fence-test/busybox:1"
BUSYBOX_CACHE = Path(os.environ.get("FENCE_TEST_CACHE", "/var/cache/fence-tests"))
_START_TIMEOUT = 90.0
# Exec roots live here, not in the engine's folder under pytest's basetemp: the containerd socket
# below an exec root (…/containerd/containerd.sock.ttrpc) must fit a Unix socket path's 107 bytes,
# which /tmp/pytest-of-root/pytest-N/<test name>/fctSnI/exec/… does not always.
EXEC_ROOTS = KIT_STATE / "exec"


def exec_root(name: str) -> Path:
    """The exec root of extra engine ``name`` (short, so its sockets' paths fit)."""
    return EXEC_ROOTS / name
_STOP_TIMEOUT = 60.0


def busybox_rootfs(*, host_cache: Path = BUSYBOX_CACHE) -> Path:
    """A tiny root filesystem tarball (Debian's busybox-static, an app user 1000), built once.

    A ``docker save`` of the 450 MB stack image into each engine costs far more than this 1 MB
    tarball (and the remapped engines would chown every file of it again).
    """
    host_tar = host_cache / "busybox-rootfs.tar"
    if host_tar.exists():
        return host_tar
    host_cache.mkdir(parents=True, exist_ok=True)
    host_work = host_cache / f"work-{os.getpid()}"
    shutil.rmtree(host_work, ignore_errors=True)
    host_work.mkdir()
    try:
        subprocess.run(["apt-get", "download", "-q", "busybox-static"], cwd=host_work, check=True,
                       capture_output=True, timeout=300)
        [host_deb] = host_work.glob("busybox-static_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(host_deb), str(host_work / "x")], check=True, timeout=60)
        host_busybox = host_work / "x" / "bin" / "busybox"
        applets = subprocess.run([str(host_busybox), "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        host_partial = host_tar.with_suffix(".part")
        with tarfile.open(host_partial, "w") as tar:
            def add_dir(name: str, mode: int = 0o755) -> None:
                entry = tarfile.TarInfo(name)
                entry.type, entry.mode = tarfile.DIRTYPE, mode
                tar.addfile(entry)

            def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
                import io

                entry = tarfile.TarInfo(name)
                entry.size, entry.mode = len(data), mode
                tar.addfile(entry, io.BytesIO(data))

            for name in ("bin", "etc", "proc", "sys", "dev", "home", "home/app", "root"):
                add_dir(name)
            add_dir("tmp", 0o1777)
            add_file("bin/busybox", host_busybox.read_bytes(), 0o755)
            for applet in applets:
                if applet != "busybox":
                    link = tarfile.TarInfo(f"bin/{applet}")
                    link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(link)
            add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
            add_file("etc/group", b"root:x:0:\napp:x:1000:\n")
        host_partial.rename(host_tar)
    finally:
        shutil.rmtree(host_work, ignore_errors=True)
    return host_tar


@dataclass(frozen=True)
class EngineOptions:
    """How one extra engine is started (the defaults are what every cluster node must have).

    Attributes:
        userns_remap: ``--userns-remap=default``.
        no_new_privileges: ``--no-new-privileges`` (daemon-wide).
    """

    userns_remap: bool = True
    no_new_privileges: bool = True


@dataclass
class ExtraEngine:
    """One extra dockerd of the kit.

    Attributes:
        name: ``fctSnI``: also its containerd namespace.
        host_dir: its folder (data root, exec root, socket, pid file, log, config).
        bridge: its default bridge's interface name.
        subnet_prefix: ``172.31.X`` of its bridge's /24.
        swarm_port: the port it listens on for Swarm (on ``address``).
        address: its own loopback address (``127.0.1X.I``): it advertises its swarm there, and
            publishes containers' ports there (``--ip``), so that a host-mode port taken on one
            engine is free on the others, as on separate machines.
        options: how it was started.
    """

    name: str
    host_dir: Path
    bridge: str
    subnet_prefix: str
    swarm_port: int
    options: EngineOptions
    address: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_socket(self) -> Path:
        return self.host_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        """``unix://…``: what DOCKER_HOST is set to for this engine."""
        return f"unix://{self.host_socket}"

    @property
    def swarm_addr(self) -> str:
        return f"{self.address}:{self.swarm_port}"

    @property
    def host_data_root(self) -> Path:
        return self.host_dir / "data"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def docker(self, *args: str, timeout: float = 120, check: bool = True,
               stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine."""
        proc = subprocess.run(["docker", "-H", self.docker_host, *args], capture_output=True, text=stdin is None,
                              timeout=timeout, stdin=stdin if stdin is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on {self.name}: {proc.stderr!s:.400}")
        return proc  # type: ignore[return-value]

    def answers(self) -> bool:
        try:
            return self.docker("version", "--format", "{{.Server.Version}}", timeout=10, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def kill_hard(self) -> None:
        """SIGKILL the dockerd, as a crash would (its containers' shims live on)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=_STOP_TIMEOUT)


@dataclass
class EngineKit:
    """Brings extra engines up in a folder of the test session, and every one of them down.

    Args:
        host_root: the session's folder for engine roots (the leak check's scope).
    """

    host_root: Path
    engines: list[ExtraEngine] = field(default_factory=list)
    _slot: int | None = None
    _slot_lock: IO[str] | None = field(default=None, repr=False)

    def _take_slot(self) -> int:
        if self._slot is not None:
            return self._slot
        KIT_STATE.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            handle = open(KIT_STATE / f"slot-{slot}.lock", "w")  # noqa: SIM115 - held for the kit's life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._slot, self._slot_lock = slot, handle
            return slot
        raise RuntimeError(f"all {SLOTS} extra-engine slots are taken (see {KIT_STATE})")

    def up(self, options: EngineOptions = EngineOptions(), *, image: bool = True) -> ExtraEngine:
        """Start one more engine (and import the busybox test image into it).

        Args:
            options: remapping and no-new-privileges on or off.
            image: import ``TEST_IMAGE``.
        """
        slot = self._take_slot()
        index = len(self.engines) + 1
        if index > 9:
            raise RuntimeError("an engine kit holds at most 9 engines")
        name = f"fct{slot}n{index}"
        engine = ExtraEngine(name=name, host_dir=self.host_root / name, bridge=f"fct{slot}b{index}",
                             subnet_prefix=f"172.31.{10 * slot + index}",
                             swarm_port=SWARM_PORT_BASE + 10 * slot + index - 1, options=options,
                             address=f"127.0.{110 + slot}.{index}")
        self.engines.append(engine)
        _clear_stale(engine)
        (KIT_STATE / "roots").mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (KIT_STATE / "roots" / name).unlink()
        engine.host_dir.mkdir(parents=True)
        (KIT_STATE / "roots" / name).symlink_to(engine.host_dir)
        start_engine(engine, image=image)
        return engine

    def down(self) -> None:
        """Stop every engine of the kit and remove its swarm state, bridge and folder."""
        for engine in reversed(self.engines):
            stop_engine(engine)
        self.engines.clear()
        if self._slot_lock is not None:
            self._slot_lock.close()
            self._slot_lock = self._slot = None


def start_engine(engine: ExtraEngine, *, image: bool = True, alias: str = BRIDGE_ALIAS) -> ExtraEngine:
    """Make ``engine``'s bridge and start its dockerd (detached: it outlives this process unless
    stopped); wait until it answers and import ``TEST_IMAGE`` into it when ``image``.

    Used by the kit and by ``make cluster-demo`` (scripts/cluster-demo-engines), whose engines
    stay up after the script and whose bridges carry their own ``alias``.
    """
    name = engine.name
    options = engine.options
    engine.host_dir.mkdir(parents=True, exist_ok=True)
    _let_remapped_root_through(engine.host_dir)
    subprocess.run(["ip", "link", "add", engine.bridge, "type", "bridge"], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", "dev", engine.bridge, "alias", f"{alias} {engine.host_dir}"],
                   check=True, capture_output=True)
    subprocess.run(["ip", "addr", "add", f"{engine.subnet_prefix}.1/24", "dev", engine.bridge],
                   check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", engine.bridge, "up"], check=True, capture_output=True)
    (engine.host_dir / "daemon.json").write_text("{}\n")  # so /etc/docker/daemon.json is not read
    argv = ["dockerd", "--config-file", str(engine.host_dir / "daemon.json"),
            "--data-root", str(engine.host_data_root), "--exec-root", str(exec_root(name)),
            "--pidfile", str(engine.host_dir / "docker.pid"), "-H", engine.docker_host,
            "--containerd-namespace", name, "--containerd-plugins-namespace", f"{name}p",
            "--bridge", engine.bridge, "--iptables=false",
            f"--swarm-default-advertise-addr={engine.address}", "--ip", engine.address]
    if options.userns_remap:
        argv.append("--userns-remap=default")
    if options.no_new_privileges:
        argv.append("--no-new-privileges")
    log = open(engine.host_dir / "dockerd.log", "ab")  # noqa: SIM115 - lives as long as dockerd
    engine.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    log.close()
    deadline = time.monotonic() + _START_TIMEOUT
    while not engine.answers():
        if engine.proc.poll() is not None or time.monotonic() > deadline:
            tail = (engine.host_dir / "dockerd.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"extra engine {name} did not come up:\n{tail}")
        time.sleep(0.3)
    if image:
        with busybox_rootfs().open("rb") as host_tar:
            engine.docker("import", "--change", 'CMD ["sh"]', "-", TEST_IMAGE, stdin=host_tar)
    return engine


def stop_engine(engine: ExtraEngine) -> None:
    """Bring one engine down and remove all it left: swarm membership, containers, mounts, files."""
    if engine.proc is not None and engine.proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired, AssertionError):
            engine.docker("swarm", "leave", "--force", timeout=30, check=False)
        engine.proc.send_signal(signal.SIGTERM)
        try:
            engine.proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            engine.proc.kill()
            engine.proc.wait(timeout=_STOP_TIMEOUT)
    remove_leftovers(name=engine.name, host_dir=engine.host_dir, bridge=engine.bridge)


def remove_leftovers(*, name: str, host_dir: Path, bridge: str | None) -> None:
    """What a dead extra engine leaves: shims in its containerd namespaces, mounts, folder, bridge."""
    kill_processes_of(host_dir)
    for folder in (host_dir, exec_root(host_dir.name)):
        unmount_under(folder)
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (KIT_STATE / "roots" / name).unlink()
    if bridge:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def unmount_under(host_dir: Path) -> None:
    """Lazily unmount everything mounted below ``host_dir`` (deepest first)."""
    prefix = str(host_dir.resolve()) if host_dir.exists() else str(host_dir)
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def kill_processes_of(host_dir: Path) -> None:
    """SIGKILL what an engine in ``host_dir`` started and left: its containerd (each dockerd
    runs its own, under its exec root), the shims and their containers' processes."""
    import psutil

    marks = (str(host_dir), str(exec_root(host_dir.name)) + "/")
    ours = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(mark in part for part in proc.info.get("cmdline") or () for mark in marks):
            ours.append(proc)
    for proc in ours:
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            proc.kill()
    psutil.wait_procs(ours, timeout=10)


def _clear_stale(engine: ExtraEngine) -> None:
    """What a killed earlier session of this slot left (its slot lock died with it)."""
    stale = KIT_STATE / "roots" / engine.name
    if stale.is_symlink():
        host_old = Path(os.readlink(stale))
        pidfile = host_old / "docker.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        remove_leftovers(name=engine.name, host_dir=host_old, bridge=None)
    subprocess.run(["ip", "link", "del", engine.bridge], capture_output=True)


def _let_remapped_root_through(host_dir: Path) -> None:
    """dockerd with userns-remap refuses a data root whose parent folders the remapped root cannot
    enter (pytest makes its folders 0700): give root-owned ancestors o+x (never o+r)."""
    for host_parent in [host_dir, *host_dir.parents]:
        if host_parent == Path("/"):
            break
        info = host_parent.stat()
        if info.st_uid == 0 and not info.st_mode & 0o001:
            host_parent.chmod((info.st_mode & 0o7777) | 0o001)


def engine_info(engine: ExtraEngine) -> dict[str, object]:
    """``docker info`` of an engine as JSON."""
    return json.loads(engine.docker("info", "--format", "{{json .}}").stdout)
