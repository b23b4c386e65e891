"""The app user's uid: container/uid under userns-remap, else a uid no host account has, picked
once; kato status says which and warns when it is a host account (issue 13 item 8).

The real engine here runs with userns-remap, so the unremapped case is tested with the fake
backend reporting remapping off (see test_no_real_engine_without_remapping_here)."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from fence.backend.fake import FakeBackend
from fence.config import ConfigStore
from fence.errors import HomeFileInvalid
from fence.home import NodeHome
from fence.layout import UNMAPPED_UID_BASE, AppUser, HostAccounts, Workspace
from fence.models import AppUid
from fence.wiring import node_service
from kato.status_cmd import _text


def _accounts(tmp_path: Path, *, users: dict[int, str], groups: dict[int, str] | None = None,
              subuid: str = "") -> HostAccounts:
    host_subuid = tmp_path / "subuid"
    host_subuid.write_text(subuid)
    return HostAccounts(user_name=users.get, group_name=(groups or {}).get, host_subid_files=(host_subuid,))


def _host_account() -> pwd.struct_passwd:
    """A real account of this machine with a uid container/uid accepts (1 and up)."""
    return next(entry for entry in pwd.getpwall() if entry.pw_uid >= 1)


def test_free_uid_skips_users_groups_and_subordinate_ranges_deterministically(tmp_path: Path) -> None:
    accounts = _accounts(tmp_path, users={100000: "alice", 165536: "bob"}, groups={165537: "staff"},
                         subuid="dockremap:100001:65535\nbroken line\nx:y:z\n")
    assert accounts.free_uid() == 165538
    assert accounts.free_uid() == 165538  # the same accounts, the same uid
    assert accounts.owner(100000) == "user alice" and accounts.owner(165537) == "group staff"
    assert accounts.owner(120000) == "subordinate ids of dockremap" and accounts.owner(165538) is None
    assert _accounts(tmp_path, users={}).free_uid() == UNMAPPED_UID_BASE


def test_with_remapping_the_uid_is_container_uid(tmp_path: Path) -> None:
    config = ConfigStore(host_file=tmp_path / "config.yml")
    user = AppUser(config=config, backend=FakeBackend(userns_remap=True), host_file=tmp_path / "app-uid")
    assert user.uid() == 1000
    assert user.describe() == AppUid(uid=1000, remapped=True, source="container/uid", host_owner=None)
    assert not (tmp_path / "app-uid").exists()


def test_without_remapping_a_free_uid_is_picked_kept_and_used_everywhere(tmp_path: Path) -> None:
    config = ConfigStore(host_file=tmp_path / "config.yml")
    accounts = _accounts(tmp_path, users={1000: "firstuser"}, subuid="dockremap:100000:65536\n")
    user = AppUser(config=config, backend=FakeBackend(userns_remap=False), host_file=tmp_path / "app-uid",
                   accounts=accounts)
    assert user.uid() == 165536 and (tmp_path / "app-uid").read_text() == "165536\n"
    assert Workspace.of(config, user).uid == 165536
    # Kept: an account added later with that uid does not move the apps (status warns instead).
    later = _accounts(tmp_path, users={1000: "firstuser", 165536: "newcomer"}, subuid="dockremap:100000:65536\n")
    again = AppUser(config=config, backend=FakeBackend(userns_remap=False), host_file=tmp_path / "app-uid",
                    accounts=later)
    assert again.describe() == AppUid(uid=165536, remapped=False, source="picked", host_owner="user newcomer")


def test_an_explicit_container_uid_wins_without_remapping(tmp_path: Path) -> None:
    config = ConfigStore(host_file=tmp_path / "config.yml")
    config.set("fence", "container/uid", "1000")
    accounts = _accounts(tmp_path, users={1000: "firstuser"})
    user = AppUser(config=config, backend=FakeBackend(userns_remap=False), host_file=tmp_path / "app-uid",
                   accounts=accounts)
    assert user.describe() == AppUid(uid=1000, remapped=False, source="container/uid", host_owner="user firstuser")
    assert not (tmp_path / "app-uid").exists()


def test_the_engine_is_asked_at_most_every_few_seconds(tmp_path: Path) -> None:
    backend, now = FakeBackend(userns_remap=True), [0.0]
    user = AppUser(config=ConfigStore(host_file=tmp_path / "config.yml"), backend=backend,
                   host_file=tmp_path / "app-uid", accounts=_accounts(tmp_path, users={}), clock=lambda: now[0])
    assert user.uid() == 1000
    backend.userns_remap = False  # dockerd restarted without remapping
    assert user.uid() == 1000
    now[0] = 6.0
    assert user.uid() == UNMAPPED_UID_BASE


def test_while_the_engines_events_are_followed_its_answer_is_kept_until_they_end(tmp_path: Path) -> None:
    """No GET /info on the start path while the event stream says the engine stayed up (issue 12's
    scale figure); a restart ends the stream, and the reopened one has a new epoch."""
    backend, now = FakeBackend(userns_remap=True), [0.0]
    asked = []
    engine_info = backend.engine_info
    backend.engine_info = lambda: asked.append(now[0]) or engine_info()  # type: ignore[method-assign]
    user = AppUser(config=ConfigStore(host_file=tmp_path / "config.yml"), backend=backend,
                   host_file=tmp_path / "app-uid", accounts=_accounts(tmp_path, users={}), clock=lambda: now[0])
    stream = backend.container_events({"x": "y"})
    assert user.uid() == 1000
    now[0] = 600.0  # far past the TTL, the same stream still open
    assert user.uid() == 1000 and asked == [0.0]
    backend.userns_remap = False  # dockerd restarted without remapping: the stream ended
    stream.close()
    backend.container_events({"x": "y"})  # the reconciler opens it again: a new epoch
    assert user.uid() == UNMAPPED_UID_BASE and asked == [0.0, 600.0]


@pytest.mark.parametrize("bad", ["", "abc", "0", "-5", "99999999999", "1000 2"])
def test_a_kept_uid_file_that_is_not_a_uid_is_refused_in_one_line(tmp_path: Path, bad: str) -> None:
    (tmp_path / "app-uid").write_text(bad + "\n")
    user = AppUser(config=ConfigStore(host_file=tmp_path / "config.yml"), backend=FakeBackend(userns_remap=False),
                   host_file=tmp_path / "app-uid")
    with pytest.raises(HomeFileInvalid) as caught:
        user.uid()
    assert caught.value.message.startswith(f"{tmp_path / 'app-uid'} cannot be used: it holds ")
    assert "\n" not in caught.value.message


def test_status_shows_the_picked_uid_and_warns_for_none(home: NodeHome) -> None:
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    try:
        status = service.status()
    finally:
        service.close()
    assert status.app_uid is not None and status.app_uid.source == "picked" and not status.app_uid.remapped
    uid = status.app_uid.uid
    assert uid >= UNMAPPED_UID_BASE and HostAccounts().owner(uid) is None
    assert home.host_app_uid.read_text() == f"{uid}\n"
    assert not [w for w in status.warnings if "app processes run as" in w]
    assert f"app uid:       {uid} (picked: no host account has it, and the engine does not remap)" in _text(status)


def test_status_warns_when_container_uid_is_a_host_account_without_remapping(home: NodeHome) -> None:
    account = _host_account()
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    service.config.set("fence", "container/uid", str(account.pw_uid))
    try:
        status = service.status()
    finally:
        service.close()
    assert status.app_uid == AppUid(uid=account.pw_uid, remapped=False, source="container/uid",
                                    host_owner=f"user {account.pw_name}")
    [warning] = [w for w in status.warnings if "app processes run as" in w]
    assert warning.startswith(f"app processes run as uid {account.pw_uid} (container/uid), which is host "
                              f"user {account.pw_name}: ")
    assert "kato config del fence container/uid" in warning and "\n" not in warning
    assert f"it is host user {account.pw_name}!" in _text(status)


def test_status_with_remapping_shows_container_uid_without_a_warning(home: NodeHome) -> None:
    account = _host_account()
    service = node_service(home, backend=FakeBackend(userns_remap=True), router=None)
    service.config.set("fence", "container/uid", str(account.pw_uid))
    try:
        status = service.status()
    finally:
        service.close()
    assert status.app_uid == AppUid(uid=account.pw_uid, remapped=True, source="container/uid")
    assert not [w for w in status.warnings if "app processes run as" in w]
    assert "maps it to an unprivileged host uid" in _text(status)


def test_status_reports_a_bad_kept_uid_file_as_a_warning(home: NodeHome) -> None:
    home.host_app_uid.write_text("not-a-uid\n")
    service = node_service(home, backend=FakeBackend(userns_remap=False), router=None)
    try:
        status = service.status()
    finally:
        service.close()
    assert status.app_uid is None
    assert any(w.startswith(f"{home.host_app_uid} cannot be used") for w in status.warnings)


def test_no_real_engine_without_remapping_here() -> None:
    pytest.skip("this machine's Docker Engine runs with userns-remap: an instance running as the picked uid "
                "on an unremapped engine cannot be tested here (the fake backend covers the choice)")


def test_droplet_images_unpack_as_the_picked_uid_without_remapping(tmp_path: Path) -> None:
    from fence.droplets import DropletStore
    from fence.running.images import DropletImages
    from tests.unit.test_droplet_images import NODE, _droplet

    backend, config = FakeBackend(userns_remap=False), ConfigStore(host_file=tmp_path / "config.yml")
    user = AppUser(config=config, backend=backend, host_file=tmp_path / "app-uid",
                   accounts=_accounts(tmp_path, users={1000: "firstuser"}))
    droplets = DropletStore(host_dir=tmp_path / "droplets")
    images = DropletImages(backend=backend, config=config, droplets=droplets, node_id=NODE, app_user=user)
    image = images.ensure(_droplet(droplets), memory_mib=64)
    assert backend.created[-1].user == f"{UNMAPPED_UID_BASE}:{UNMAPPED_UID_BASE}"
    files = backend._tree(image.image_id)  # noqa: SLF001 - the fake's committed file tree
    assert files is not None and files[Path("/home/stackato/app/app.py")].uid == UNMAPPED_UID_BASE  # type: ignore[index]
