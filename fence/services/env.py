"""What a bound app's containers see of its services: VCAP_SERVICES (Cloud Foundry's shape),
STACKATO_SERVICES, DATABASE_URL / REDIS_URL (the first of the kind) and NAME_URL for each."""

from __future__ import annotations

import json
from typing import Iterable

from fence.services.credentials import ServiceCredentials
from fence.services.kinds import kind_of
from fence.services.records import ServiceRecord

_TAGS = {"postgresql": ["postgresql", "relational"], "mysql": ["mysql", "mariadb", "relational"],
         "redis": ["redis", "key-value"]}
# The variables a binding adds; `fence env` hides them unless --show-secrets.
SERVICE_ENV_NAMES = ("VCAP_SERVICES", "STACKATO_SERVICES", "DATABASE_URL", "REDIS_URL")


def uri(record: ServiceRecord, creds: ServiceCredentials) -> str:
    """The service's URI as an app on a bound network uses it (host: the service's name)."""
    kind = kind_of(record.type)
    if record.type == "redis":
        return f"redis://:{creds.password}@{record.name}:{kind.port}/0"
    return f"{kind.scheme}://{creds.user}:{creds.password}@{record.name}:{kind.port}/{creds.database}"


def service_env(bound: Iterable[tuple[ServiceRecord, ServiceCredentials]]) -> dict[str, str]:
    """The env of an app bound to these services, in binding order (an empty mapping for none)."""
    vcap: dict[str, list[dict[str, object]]] = {}
    stackato: dict[str, dict[str, object]] = {}
    env: dict[str, str] = {}
    for record, creds in bound:
        kind = kind_of(record.type)
        link = uri(record, creds)
        credentials = {"uri": link, "hostname": record.name, "host": record.name, "port": kind.port,
                       "name": creds.database, "username": creds.user, "user": creds.user,
                       "password": creds.password}
        vcap.setdefault(record.type, []).append({
            "name": record.name, "label": record.type, "tags": _TAGS.get(record.type, []),
            "plan": "default", "credentials": credentials})
        stackato[record.name] = dict(credentials)
        env.setdefault(kind.env_name, link)
        env[record.name.upper().replace("-", "_") + "_URL"] = link
    if not vcap:
        return {}
    env["VCAP_SERVICES"] = json.dumps(vcap, sort_keys=True)
    env["STACKATO_SERVICES"] = json.dumps(stackato, sort_keys=True)
    return env
