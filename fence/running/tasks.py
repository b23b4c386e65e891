"""One-off tasks (`fence run`): a command in a fresh container from an app's droplet, gone when it ends."""

from __future__ import annotations

import threading
from typing import Callable

from fence import labels
from fence.backend.base import Container
from fence.errors import FenceError
from fence.models import AppRecord, DropletRecord
from fence.running.starter import InstanceStarter, Launch


class TaskRunner:
    """Runs one-off tasks, each in its own container, and ends those whose client went away.

    Args:
        starter: builds the task containers.
    """

    def __init__(self, *, starter: InstanceStarter) -> None:
        self._starter = starter
        self._running: dict[str, Container] = {}
        self._lock = threading.Lock()

    def run(self, app: AppRecord, release: int, droplet: DropletRecord, argv: tuple[str, ...], *,
            on_line: Callable[[str], None], task_id: str = "", timeout: float | None = None) -> int:
        """Run ``argv`` as the app user in the app's folder; the container is destroyed on every path.

        Args:
            app: the app's desired state (env, memory).
            release: the release number the task runs.
            droplet: that release's droplet.
            argv: the command.
            on_line: receives the command's output, line by line.
            task_id: the id ``cancel`` knows it by (default: its container's id).
            timeout: seconds before the command is killed (``None``: no limit).

        Returns:
            The command's exit code.

        Raises:
            ProcessTimeout: it ran past ``timeout`` (its container is destroyed all the same).
        """
        launch = Launch(app=app, release=release, droplet=droplet, index=0, role=labels.ROLE_TASK,
                        command_argv=argv)
        container = self._starter.launch(launch)
        task_id = task_id or container.id
        with self._lock:
            self._running[task_id] = container
        try:
            result = container.run(self._starter.task_process(launch, timeout=timeout), on_output=on_line)
            return result.exit_code
        finally:
            with self._lock:
                self._running.pop(task_id, None)
            _destroy(container)

    def cancel(self, task_id: str) -> None:
        """End a running task (its container is destroyed); nothing when it is not running."""
        with self._lock:
            container = self._running.pop(task_id, None)
        if container is not None:
            _destroy(container)


def _destroy(container: Container) -> None:
    try:
        container.destroy()
    except FenceError:  # already gone: nothing is left to end
        pass
