"""The ids fence gives backups (light: the CLI checks them before it calls the daemon)."""

from __future__ import annotations

import re

from fence.errors import UsageError

_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")


def check_backup_id(backup: str) -> str:
    """Refuse a backup id that is not one fence makes.

    Raises:
        UsageError: a malformed id.
    """
    if not _ID.fullmatch(backup or ""):
        raise UsageError(detail=f"backup id {backup[:40]!r} is malformed: ids look like "
                                "20260101T000000Z-0a1b2c (see `fence service backups NAME`)")
    return backup
