"""The backend package's seams: the security policy stands alone, and the contract is written once."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from fence.backend import base, policy
from fence.backend.docker import DockerBackend, DockerContainer
from fence.backend.fake import FakeBackend, FakeContainer

_SECTIONS = ("Args:", "Returns:", "Raises:")


def test_the_fake_backend_needs_nothing_docker_named() -> None:
    code = ("import sys, fence.backend.fake; "
            "print(sorted(m for m in sys.modules if m == 'docker' or m.startswith('fence.backend.docker')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"


def test_both_backends_apply_the_one_policy() -> None:
    import fence.backend.docker as docker_module
    import fence.backend.fake as fake_module
    for module in (docker_module, fake_module):
        assert module.refuse_unsafe_spec is policy.refuse_unsafe_spec
        assert module.refuse_unsafe_process is policy.refuse_unsafe_process


@pytest.mark.parametrize(("protocol", "implementations"), [
    (base.ContainerBackend, (DockerBackend, FakeBackend)),
    (base.Container, (DockerContainer, FakeContainer)),
])
def test_the_contract_is_documented_once_in_base(protocol: type, implementations: tuple[type, ...]) -> None:
    names = [n for n, _ in inspect.getmembers(protocol) if not n.startswith("_")]
    assert names
    for name in names:
        contract = inspect.getdoc(getattr(protocol, name)) or ""
        assert contract, f"{protocol.__name__}.{name} has no contract docstring"
        for cls in implementations:
            doc = inspect.getdoc(getattr(cls, name)) or ""
            copied = [s for s in _SECTIONS if s in doc]
            assert not copied, f"{cls.__name__}.{name} repeats the contract's {copied}: say only what differs"
