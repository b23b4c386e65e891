"""Admission control: an instance start may not promise instances more memory than the node may give."""

from __future__ import annotations

from typing import Iterable

from fence.errors import AdmissionRefused
from fence.running.instance import Instance, PendingStart
from fence.states import InstanceState

# Instances whose memory limit is promised: their container exists and may use it.
_HOLDING = (InstanceState.STARTING, InstanceState.RUNNING, InstanceState.STOPPING)


def promised_mib(instances: Iterable[Instance], pending: Iterable[PendingStart]) -> int:
    """The sum of the memory limits of live instances and of the starts in flight, in MiB."""
    return sum(i.memory_mib for i in instances if i.state in _HOLDING) + sum(p.memory_mib for p in pending)


def admit(*, app: str, index: int, need_mib: int, promised: int, total_mib: int,
          factor: float) -> AdmissionRefused | None:
    """Whether one more instance fits under ``factor`` × the node's RAM.

    Args:
        app: the app's name.
        index: the instance index.
        need_mib: its memory limit.
        promised: what instances are already promised (``promised_mib``).
        total_mib: the node's RAM.
        factor: ``node/memory_overcommit``.

    Returns:
        ``None`` when it fits, else the refusal to report.
    """
    limit = int(factor * total_mib)
    if promised + need_mib <= limit:
        return None
    return AdmissionRefused(app=app, index=index, need=need_mib, promised=promised, limit=limit,
                            factor=f"{factor:g}", total=total_mib)
