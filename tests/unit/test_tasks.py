"""One-off tasks on the fake engine: output and exit code come back, and no container is left behind."""

from __future__ import annotations

import threading
from pathlib import Path

from fence import labels
from fence.backend.fake import FakeBackend
from fence.backend.fake_programs import FakeProcess
from fence.config import ConfigStore
from fence.droplets import DropletStore
from fence.models import AppRecord
from fence.running.images import DropletImages
from fence.layout import AppUser
from fence.running.starter import InstanceStarter
from fence.running.tasks import TaskRunner
from tests.unit.test_droplet_images import NODE, _droplet

APP = AppRecord(name="web", instances=1, memory_mib=64, env={}, started=True, release=1, health_timeout=None,
                urls=(), created_at="t")


def _runner(tmp_path: Path) -> tuple[FakeBackend, DropletStore, TaskRunner]:
    backend = FakeBackend()
    config = ConfigStore(host_file=tmp_path / "config.yml")
    droplets = DropletStore(host_dir=tmp_path / "droplets")
    app_user = AppUser(config=config, backend=backend, host_file=tmp_path / "app-uid")
    images = DropletImages(backend=backend, config=config, droplets=droplets, node_id=NODE, app_user=app_user)
    starter = InstanceStarter(backend=backend, config=config, images=images, node_id=NODE, app_user=app_user)
    return backend, droplets, TaskRunner(starter=starter)


def test_a_task_gives_its_output_and_exit_code_and_leaves_no_container(tmp_path: Path) -> None:
    backend, droplets, runner = _runner(tmp_path)

    def script(proc: FakeProcess) -> int:  # the start script, ending in the task's command
        proc.write(f"ran as {proc.uid} in {proc.cwd}\n")
        return 7

    backend.programs["bash"] = script
    lines: list[str] = []
    assert runner.run(APP, 1, _droplet(droplets), ("echo", "hi"), on_line=lines.append, task_id="t1") == 7
    assert lines == ["ran as 1000 in /home/stackato/app"]
    assert backend.list({labels.NODE: NODE, labels.ROLE: labels.ROLE_TASK}) == []
    runner.cancel("t1")  # ended already: nothing to do


def test_cancelling_a_running_task_destroys_its_container(tmp_path: Path) -> None:
    backend, droplets, runner = _runner(tmp_path)
    started, done = threading.Event(), threading.Event()

    def script(proc: FakeProcess) -> int:
        started.set()
        done.wait(10)
        return 0

    backend.programs["bash"] = script
    worker = threading.Thread(target=runner.run, args=(APP, 1, _droplet(droplets), ("sleep", "60")),
                              kwargs={"on_line": lambda _: None, "task_id": "t2"})
    worker.start()
    assert started.wait(10)
    assert len(backend.list({labels.NODE: NODE, labels.ROLE: labels.ROLE_TASK})) == 1
    runner.cancel("t2")
    assert backend.list({labels.NODE: NODE, labels.ROLE: labels.ROLE_TASK}) == []
    done.set()
    worker.join(10)
