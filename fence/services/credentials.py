"""Each service's generated credentials: made once, kept 0600 under FENCE_HOME, never logged."""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from fence.atomic import atomic_file
from fence.errors import UsageError
from fence.home import NodeHome

_ALPHABET = string.ascii_letters + string.digits  # nothing a shell, SQL or URI would need quoted
_SAFE = frozenset(_ALPHABET + "_")


@dataclass(frozen=True)
class ServiceCredentials:
    """Who an app is to its service.

    Attributes:
        database: the database (PostgreSQL, MySQL) or ``0`` (Redis).
        user: the login.
        password: the password (32 letters and digits).
    """

    database: str
    user: str
    password: str

    def __repr__(self) -> str:  # a log line or traceback never shows the password
        return f"ServiceCredentials(database={self.database!r}, user={self.user!r}, password=***)"

    def shell_file(self) -> bytes:
        """The credentials file the start script sources (values are letters, digits and ``_``)."""
        for value in (self.database, self.user, self.password):
            if not value or not set(value) <= _SAFE:
                raise ValueError("credentials hold a character the start script cannot take")
        return (f"SVC_DB={self.database}\nSVC_USER={self.user}\n"
                f"SVC_PASSWORD={self.password}\n").encode()


def generate(service: str, kind: str) -> ServiceCredentials:
    """New credentials for a service: a database named after it, a random user and password."""
    database = "0" if kind == "redis" else "db_" + service.replace("-", "_")
    return ServiceCredentials(database=database, user="u" + secrets.token_hex(6),
                              password="".join(secrets.choice(_ALPHABET) for _ in range(32)))


class CredentialStore:
    """The credentials files of one node (``NodeHome.host_service_credentials``).

    Args:
        home: the node's FENCE_HOME.
    """

    def __init__(self, *, home: NodeHome) -> None:
        self._home = home

    def ensure(self, service: str, kind: str) -> ServiceCredentials:
        """The service's credentials, generated and written (0600, atomically) the first time."""
        found = self.read(service)
        if found is not None:
            return found
        made = generate(service, kind)
        host_dir = self._home.host_services
        host_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(host_dir, 0o700)
        with atomic_file(self._home.host_service_credentials(service), mode=0o600) as handle:
            handle.write(json.dumps({"database": made.database, "user": made.user,
                                     "password": made.password}).encode())
        return made

    def read(self, service: str) -> ServiceCredentials | None:
        """The service's credentials, or ``None`` when none were made.

        Raises:
            UsageError: the file is not fence's (unreadable or malformed).
        """
        host_file = self._home.host_service_credentials(service)
        try:
            data = json.loads(host_file.read_text())
            return ServiceCredentials(database=str(data["database"]), user=str(data["user"]),
                                      password=str(data["password"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(detail=f"credentials file {host_file} is unreadable or malformed "
                                    f"({type(exc).__name__}); remove it to make new ones") from exc

    def remove(self, service: str) -> None:
        """Forget the service's credentials (its data went with it)."""
        Path(self._home.host_service_credentials(service)).unlink(missing_ok=True)
