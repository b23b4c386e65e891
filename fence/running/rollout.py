"""The instance manager's record of one app moving its instances onto another stack image."""

from __future__ import annotations

from dataclasses import dataclass, field

from fence.models import RolloutProgress

MAX_EVENTS = 1000


@dataclass
class RolloutState:
    """One app's rollout as the manager carries it out (mutable; read through ``progress``).

    Attributes:
        app: the app's name.
        image_id: the stack image id its instances move to.
        surge: instances of the app replaced at once.
        replaced: instances replaced so far.
        failed: why it stopped, once it has.
        events: progress lines, oldest first.
    """

    app: str
    image_id: str
    surge: int = 1
    replaced: int = 0
    failed: str | None = None
    events: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        """Add a progress line."""
        if len(self.events) < MAX_EVENTS:
            self.events.append(line)

    def fail(self, index: int, why: str) -> None:
        """Stop replacing: the new instance at ``index`` did not come up (the first reason wins)."""
        if self.failed is None:
            self.failed = f"instance {index}: {why}"
            self.note(f"instance {index}: failed on the new stack: {why}; its old instance keeps serving")

    def progress(self, *, remaining: tuple[int, ...], busy: bool) -> RolloutProgress:
        """A snapshot for the service.

        Args:
            remaining: indexes whose serving instance still runs on another image.
            busy: whether a replacement is starting or an old instance is still stopping.

        Returns:
            The progress; ``done`` when nothing remains, nothing is busy and nothing failed.
        """
        return RolloutProgress(app=self.app, image_id=self.image_id, replaced=self.replaced,
                               remaining=remaining, events=tuple(self.events), failed=self.failed,
                               done=self.failed is None and not remaining and not busy)


def short_id(image_id: str) -> str:
    """``sha256:0123456789ab`` from a full image id (what admins see in ``docker images``)."""
    return image_id[:19] if image_id.startswith("sha256:") else image_id[:12] or "?"
