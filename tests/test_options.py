"""Mount option parsing and the mount(8) helper's argument translation."""

from __future__ import annotations

import pytest

from clawfs.errors import UserError
from mountd import mount_helper, options


def test_options_split_into_ours_kernel_and_ignored() -> None:
    o = options.parse(["passphrase_file=/p,ro,allow_other,nofail,x-systemd.automount,_netdev", "nodev"])
    assert o.passphrase_file == "/p" and o.readonly
    assert set(o.fuse) == {"allow_other", "nodev", "ro"}


def test_escaped_comma_in_value() -> None:
    assert options.parse([r"keyfile=/a\,b"]).keyfile == "/a,b"


@pytest.mark.parametrize("bad", ["bogus", "max_write=4096", "passphrase_file", "keyfile="])
def test_unknown_or_incomplete_options_are_refused(bad: str) -> None:
    with pytest.raises(UserError):
        options.parse([bad])


def test_mount_helper_translates_mount8_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(mount_helper.cli, "main", lambda argv: seen.append(argv))
    mount_helper.main(["/s.claw", "/mnt", "-n", "-o", "rw,passphrase_file=/p", "-v"])
    assert seen == [["-v", "mount", "/s.claw", "/mnt", "-o", "rw,passphrase_file=/p"]]


def test_mount_helper_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        mount_helper.main(["/only-one"])
    assert e.value.code == 2
