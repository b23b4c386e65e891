"""What each service type is: its Debian packages, start script, probe, dump and restore commands."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# The non-root user every service server runs as (a user of its own, not the app user).
SERVICE_USER = "fence-svc"
SERVICE_UID = 1001
CTR_DATA = PurePosixPath("/var/lib/fence-service/data")
CTR_WORK = PurePosixPath("/var/lib/fence-service/work")  # dumps and restores pass through here
CTR_CREDENTIALS = PurePosixPath("/etc/fence-service/credentials")
CTR_RUN = PurePosixPath("/usr/local/lib/fence-service/run")
SERVICE_NAME_PATTERN = r"[a-z][a-z0-9-]{0,30}[a-z0-9]|[a-z]"

# Read by every start script: the credentials file holds shell assignments of [A-Za-z0-9_]
# values only (fence generates them), so sourcing it cannot run anything.
_PRELUDE = """#!/bin/bash
set -euo pipefail
umask 077
. /etc/fence-service/credentials
DATA=/var/lib/fence-service/data
"""

_POSTGRES_RUN = _PRELUDE + r"""BIN=/usr/lib/postgresql/15/bin
if [ ! -s "$DATA/PG_VERSION" ]; then
  "$BIN/initdb" -D "$DATA" -U fence --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --no-locale >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$DATA/pg_hba.conf"
  "$BIN/postgres" --single -D "$DATA" -j postgres >/dev/null <<SQL
CREATE ROLE "$SVC_USER" LOGIN PASSWORD '$SVC_PASSWORD';

CREATE DATABASE "$SVC_DB" OWNER "$SVC_USER";

SQL
fi
exec "$BIN/postgres" -D "$DATA" -c listen_addresses='*' -c unix_socket_directories=/tmp \
  -c shared_buffers="${SVC_SHARED_BUFFERS:-32MB}" -c max_connections=50
"""

_REDIS_RUN = _PRELUDE + r"""if [ -s "$DATA/restore.rdb" ]; then mv -f "$DATA/restore.rdb" "$DATA/dump.rdb"; fi
conf=/tmp/redis.conf
{
  echo "bind 0.0.0.0"
  echo "port 6379"
  echo "protected-mode no"
  echo "dir $DATA"
  echo "dbfilename dump.rdb"
  echo "appendonly no"
  echo "save 60 1"
  echo "save 10 1000"
  echo "requirepass $SVC_PASSWORD"
} >"$conf"
exec /usr/bin/redis-server "$conf"
"""

_MYSQL_RUN = _PRELUDE + r"""if [ ! -d "$DATA/mysql" ]; then
  /usr/bin/mariadb-install-db --datadir="$DATA" --auth-root-authentication-method=socket \
    --skip-test-db --user="$(id -un)" >/dev/null
  init=/tmp/init.sql
  cat >"$init" <<SQL
CREATE DATABASE \`$SVC_DB\`;
CREATE USER '$SVC_USER'@'%' IDENTIFIED BY '$SVC_PASSWORD';
GRANT ALL ON \`$SVC_DB\`.* TO '$SVC_USER'@'%';
SQL
  set -- --init-file="$init"
fi
exec /usr/sbin/mariadbd --datadir="$DATA" --socket=/tmp/mysqld.sock --pid-file=/tmp/mysqld.pid \
  --bind-address=0.0.0.0 --port=3306 --skip-name-resolve --innodb-buffer-pool-size=32M "$@"
"""


# A MySQL dump is DDL (DROP/CREATE TABLE commit implicitly), so no transaction can hold a restore:
# it is loaded into a scratch database first, and only a load that succeeded is swapped in, with
# one RENAME TABLE statement (atomic in MariaDB) that moves the old tables aside and the new in.
_MYSQL_RESTORE = r"""set -euo pipefail
. /etc/fence-service/credentials
m() { mysql --socket=/tmp/mysqld.sock -ufence-svc "$@"; }
new="${SVC_DB}__restore" old="${SVC_DB}__old"
m -e "DROP DATABASE IF EXISTS \`$new\`; CREATE DATABASE \`$new\`; DROP DATABASE IF EXISTS \`$old\`; CREATE DATABASE \`$old\`"
if ! m "$new" </var/lib/fence-service/work/restore; then
  m -e "DROP DATABASE \`$new\`; DROP DATABASE \`$old\`"
  exit 1
fi
moves() {  # "`from`.`t` TO `to`.`t`" for each base table of $1
  m -N -e "SELECT GROUP_CONCAT(CONCAT('\`', table_schema, '\`.\`', table_name, '\` TO \`$2\`.\`', table_name, '\`')
           SEPARATOR ', ') FROM information_schema.tables WHERE table_schema = '$1' AND table_type = 'BASE TABLE'"
}
aside=$(moves "$SVC_DB" "$old") in=$(moves "$new" "$SVC_DB")
list=$(printf '%s\n' "$aside" "$in" | { grep -v '^NULL$' || true; } | paste -sd, -)  # NULL: no tables
if [ -n "$list" ]; then m -e "RENAME TABLE $list"; fi
m -e "DROP DATABASE \`$new\`; DROP DATABASE \`$old\`"
"""


@dataclass(frozen=True)
class ServiceKind:
    """One service type.

    Attributes:
        name: the type as users give it (``postgresql``).
        packages: the Debian packages installed on the stack to make its image.
        port: the TCP port the server listens on.
        scheme: the URI scheme of its credentials.
        env_name: the Heroku-style variable of the first bound service of the kind.
        run_script: the image's start script (bash).
        probe: argv that exits 0 once the server accepts connections.
        dump: argv that writes a consistent dump to its stdout (``dump_to_stdout``), else to
            ``CTR_WORK/dump``.
        dump_magic: bytes a dump of this kind starts with (a restore of another kind is refused).
        restore: argv that loads ``CTR_WORK/restore`` (in one transaction where the server can);
            empty when the restore swaps the data file and restarts the server.
        memory_mib: the default memory limit.
    """

    name: str
    packages: tuple[str, ...]
    port: int
    scheme: str
    env_name: str
    run_script: str
    probe: tuple[str, ...]
    dump: tuple[str, ...]
    dump_magic: bytes
    restore: tuple[str, ...]
    memory_mib: int = 256
    # Streamed straight to the host file through the exec (one pass, as `docker exec … > file`
    # would); Redis's RDB comes from `redis-cli --rdb FILE`, which wants a file, so it is copied out.
    dump_to_stdout: bool = False

    @property
    def image_ref(self) -> str:
        """The default tag of its image."""
        return f"fence/service-{self.name}:bookworm"


_SH = ("bash", "-c")
KINDS: dict[str, ServiceKind] = {
    "postgresql": ServiceKind(
        name="postgresql", packages=("postgresql-15", "postgresql-client-15"), port=5432,
        scheme="postgres", env_name="DATABASE_URL", run_script=_POSTGRES_RUN,
        probe=("/usr/lib/postgresql/15/bin/pg_isready", "-q", "-h", "/tmp", "-U", "fence"),
        dump=_SH + ('. /etc/fence-service/credentials && /usr/lib/postgresql/15/bin/pg_dump -h /tmp '
                    '-U fence -Fc "$SVC_DB"',),
        dump_magic=b"PGDMP", dump_to_stdout=True,
        restore=_SH + ('. /etc/fence-service/credentials && /usr/lib/postgresql/15/bin/pg_restore '
                       '-h /tmp -U fence --single-transaction --exit-on-error --clean --if-exists '
                       '--no-owner --role="$SVC_USER" -d "$SVC_DB" /var/lib/fence-service/work/restore',),
    ),
    "mysql": ServiceKind(
        name="mysql", packages=("mariadb-server", "mariadb-client", "libncurses6"), port=3306, scheme="mysql",
        env_name="DATABASE_URL", run_script=_MYSQL_RUN,
        probe=("mysqladmin", "--socket=/tmp/mysqld.sock", "-ufence-svc", "--silent", "ping"),
        dump=_SH + ('. /etc/fence-service/credentials && { echo "-- fence mysql dump"; mysqldump '
                    '--socket=/tmp/mysqld.sock -ufence-svc --single-transaction --routines "$SVC_DB"; }',),
        dump_magic=b"-- fence mysql dump", dump_to_stdout=True,
        restore=(*_SH, _MYSQL_RESTORE),
    ),
    "redis": ServiceKind(
        name="redis", packages=("redis-server", "redis-tools"), port=6379, scheme="redis",
        env_name="REDIS_URL", run_script=_REDIS_RUN,
        probe=_SH + ('. /etc/fence-service/credentials && REDISCLI_AUTH="$SVC_PASSWORD" '
                     'redis-cli -h 127.0.0.1 ping | grep -qx PONG',),
        dump=_SH + ('. /etc/fence-service/credentials && REDISCLI_AUTH="$SVC_PASSWORD" '
                    'redis-cli -h 127.0.0.1 --rdb /var/lib/fence-service/work/dump >/dev/null',),
        dump_magic=b"REDIS",
        restore=(),
        memory_mib=128,
    ),
}


def kind_of(name: str) -> ServiceKind:
    """The service type called ``name``.

    Raises:
        UsageError: no such type.
    """
    from fence.errors import UsageError
    try:
        return KINDS[name]
    except KeyError:
        raise UsageError(detail=f"unknown service type {name[:40]!r}: one of "
                                f"{', '.join(sorted(KINDS))}") from None


def check_service_name(name: str, *, where: str = "service name") -> str:
    """Refuse a service name that is not lower-case letters, digits and dashes (≤ 32).

    Raises:
        UsageError: a bad name.
    """
    from fence.errors import UsageError
    if not re.fullmatch(SERVICE_NAME_PATTERN, name):
        raise UsageError(detail=f"{where} {name[:40]!r} is not allowed: 1-32 lower-case letters, "
                                "digits and dashes, starting with a letter")
    return name
