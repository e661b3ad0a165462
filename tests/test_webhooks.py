"""The daemon's webhook receiver (mountd/webhooks.py): real HTTP on 127.0.0.1 into a real Maildir (a temporary
directory, and once a real mount): 202 only once the message is in inbox/new/, 401 for a missing or bad token or
signature (logged, nothing delivered), 413, 429, 503 while stopping; channel.toml mistakes named."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import maildir
from agent.home import make_channel
from mountd import webhooks
from mountd.webhooks import Receiver, load_channels, sign

TOKEN = b"s3cret-token"
KEY = b"hmac-key-0123456789"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_channel(home: Path, name: str, toml: str) -> None:
    make_channel(home, name)
    (home / "channels" / name / "channel.toml").write_text(toml)


def bearer_toml(**extra: str) -> str:
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return f'type = "webhook"\nlisten = "127.0.0.1:0"\n{lines}[webhook]\nsecret_name = "hook_token"\n'


HMAC_TOML = ('type = "webhook"\nlisten = "127.0.0.1:0"\npath = "/gh"\n[webhook]\nhmac_secret_name = "gh_key"\n'
             'hmac_signature_header = "X-Hub-Signature-256"\n')
SLACK_TOML = ('type = "webhook"\nlisten = "127.0.0.1:0"\npath = "/slack"\n[webhook]\nhmac_secret_name = "gh_key"\n'
              'hmac_signature_header = "X-Slack-Signature"\nhmac_timestamp_header = "X-Slack-Request-Timestamp"\n')
SECRETS = {"hook_token": TOKEN + b"\n", "gh_key": KEY}


class Served:
    def __init__(self, home: Path, receiver: Receiver, clock: Clock, wall: Clock) -> None:
        self.home, self.receiver, self.clock, self.wall = home, receiver, clock, wall

    def post(self, channel: str, body: bytes, headers: dict[str, str] | None = None,
             path: str = "/") -> tuple[int, dict[str, str], bytes]:
        host, port = self.receiver.addresses()[channel]
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def new(self, channel: str) -> list[Path]:
        return sorted((self.home / "channels" / channel / "inbox" / "new").iterdir())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    home = tmp_path / "home"
    write_channel(home, "hook", bearer_toml(max_body_bytes="64"))
    write_channel(home, "gh", HMAC_TOML)
    write_channel(home, "slack", SLACK_TOML)
    write_channel(home, "tg", bearer_toml(path='"/tg"') + 'secret_header = "X-Telegram-Bot-Api-Secret-Token"\n')
    channels, bad = load_channels(home)
    assert bad == {} and {c.name for c in channels} == {"hook", "gh", "slack", "tg"}
    clock, wall = Clock(), Clock(1_700_000_000.0)
    receiver = Receiver(home, channels, SECRETS.get, clock=clock, wall=wall)
    receiver.start()
    try:
        yield Served(home, receiver, clock, wall)
    finally:
        receiver.close()


def test_a_bearer_request_is_in_inbox_new_when_202_comes(served: Served) -> None:
    status, _, body = served.post("hook", b'{"text": "deploy finished"}',
                                  {"Authorization": "Bearer s3cret-token", "Content-Type": "application/json"})
    assert status == 202, body
    msgid = json.loads(body)["message_id"]
    [path] = served.new("hook")  # already renamed into new/ when the answer came
    raw = path.read_bytes()
    assert maildir.header(raw, "Message-ID") == msgid
    assert maildir.header(raw, maildir.KIND_HEADER) == "webhook"
    assert maildir.header(raw, "From") == "webhook@hook"
    inbound = maildir.parse(path, raw)
    assert inbound.text.strip() == '{"text": "deploy finished"}' and inbound.problem is None
    assert inbound.thread == "webhook"
    assert not list((served.home / "channels" / "hook" / "inbox" / "tmp").iterdir())


def test_a_custom_secret_header_carries_the_token_itself(served: Served) -> None:
    ok = served.post("tg", b"hi", {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}, path="/tg")
    bad = served.post("tg", b"hi", {"X-Telegram-Bot-Api-Secret-Token": "Bearer s3cret-token"}, path="/tg")
    assert (ok[0], bad[0]) == (202, 401)
    assert len(served.new("tg")) == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                                     {"Authorization": "Bearer s3cret-token-and-more"},
                                     {"Authorization": "Bearer s3cr\u00e9t"}])
def test_a_missing_or_bad_token_is_401_logged_and_nothing_delivered(
        served: Served, headers: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="clawfs.webhooks"):
        status, _, _ = served.post("hook", b"let me in", headers)
    assert status == 401
    assert served.new("hook") == []
    assert any("refused (401)" in r.getMessage() and "nothing delivered" in r.getMessage() for r in caplog.records)


def test_github_style_hmac_signature(served: Served) -> None:
    body = b'{"action": "opened"}'
    good = served.post("gh", body, {"X-Hub-Signature-256": sign(KEY, body)}, path="/gh")
    tampered = served.post("gh", body + b" ", {"X-Hub-Signature-256": sign(KEY, body)}, path="/gh")
    other_key = served.post("gh", body, {"X-Hub-Signature-256": sign(b"other", body)}, path="/gh")
    missing = served.post("gh", body, {}, path="/gh")
    assert [good[0], tampered[0], other_key[0], missing[0]] == [202, 401, 401, 401]
    assert len(served.new("gh")) == 1


def test_slack_style_signature_signs_a_recent_timestamp(served: Served) -> None:
    body = b"token=x&text=hello"
    now = int(served.wall())
    fresh = {"X-Slack-Signature": sign(KEY, body, timestamp=now), "X-Slack-Request-Timestamp": str(now)}
    assert served.post("slack", body, fresh, path="/slack")[0] == 202
    old = now - 301
    replay = {"X-Slack-Signature": sign(KEY, body, timestamp=old), "X-Slack-Request-Timestamp": str(old)}
    assert served.post("slack", body, replay, path="/slack")[0] == 401
    swapped = {"X-Slack-Signature": sign(KEY, body, timestamp=now), "X-Slack-Request-Timestamp": str(now - 1)}
    assert served.post("slack", body, swapped, path="/slack")[0] == 401
    assert len(served.new("slack")) == 1


def test_an_oversized_body_is_413_and_not_read(served: Served) -> None:
    status, headers, _ = served.post("hook", b"x" * 65, {"Authorization": "Bearer s3cret-token"})
    assert status == 413 and headers.get("connection") == "close"
    assert served.post("hook", b"x" * 64, {"Authorization": "Bearer s3cret-token"})[0] == 202
    assert len(served.new("hook")) == 1


def test_a_flood_past_the_rate_limit_is_429_until_the_minute_has_passed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_channel(home, "hook", bearer_toml().replace("[webhook]", "[rate_limit]\nrequests_per_minute = 3\n[webhook]"))
    channels, bad = load_channels(home)
    assert bad == {}
    clock = Clock()
    receiver = Receiver(home, channels, SECRETS.get, clock=clock)
    receiver.start()
    s = Served(home, receiver, clock, Clock())
    try:
        auth = {"Authorization": "Bearer s3cret-token"}
        first = [s.post("hook", b"m", auth)[0] for _ in range(3)]
        status, headers, _ = s.post("hook", b"m", auth)
        forged = s.post("hook", b"m", {"Authorization": "Bearer forged"})[0]  # counted, refused before its check
        clock.now += 60.5
        after = s.post("hook", b"m", auth)[0]
    finally:
        receiver.close()
    assert first == [202, 202, 202]
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert forged == 429
    assert after == 202
    assert len(s.new("hook")) == 4


def test_rate_limit_windows_per_minute_and_per_hour() -> None:
    clock = Clock(0.0)
    rl = webhooks.RateLimit(2, 3, clock)
    assert rl.allow() is None and rl.allow() is None
    assert rl.allow() == pytest.approx(60.0)
    clock.now = 61.0
    assert rl.allow() is None
    clock.now = 62.0
    wait = rl.allow()
    assert wait == pytest.approx(3600.0 - 62.0)  # the hour's 3 are used: the first frees a slot at 3600 s
    clock.now = 3600.5
    assert rl.allow() is None


def test_intake_stopped_is_503(served: Served) -> None:
    served.receiver.begin_stop()
    status, headers, _ = served.post("hook", b"late", {"Authorization": "Bearer s3cret-token"})
    assert status == 503 and "retry-after" in headers
    assert served.new("hook") == []


def test_a_secret_the_owner_has_not_written_refuses_everything(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "home"
    write_channel(home, "hook", bearer_toml())
    channels, _ = load_channels(home)
    receiver = Receiver(home, channels, lambda name: None)
    receiver.start()
    try:
        with caplog.at_level(logging.WARNING, logger="clawfs.webhooks"):
            status = Served(home, receiver, Clock(), Clock()).post("hook", b"m", {"Authorization": "Bearer "})[0]
    finally:
        receiver.close()
    assert status == 401
    assert any("secret hook_token does not exist" in r.getMessage() for r in caplog.records)


def test_a_home_that_refuses_the_write_is_503_and_nothing_is_acknowledged(served: Served) -> None:
    tmp = served.home / "channels" / "hook" / "inbox" / "tmp"
    tmp.rmdir()  # the write into tmp/ fails, as it would on a full disk or a mount going away
    status, _, _ = served.post("hook", b"m", {"Authorization": "Bearer s3cret-token"})
    assert status == 503
    assert served.new("hook") == []


def test_unknown_paths_and_methods(served: Served) -> None:
    assert served.post("hook", b"m", {"Authorization": "Bearer s3cret-token"}, path="/nope")[0] == 404
    host, port = served.receiver.addresses()["hook"]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 405
    conn.close()


def test_channel_toml_mistakes_are_named_and_other_types_skipped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_channel(home, "open", 'type = "webhook"\nlisten = "127.0.0.1:9000"\n')
    write_channel(home, "port", 'type = "webhook"\nlisten = "localhost"\n[webhook]\nsecret_name = "t"\n')
    write_channel(home, "ed", 'type = "webhook"\nlisten = "127.0.0.1:9000"\n[webhook]\n'
                              'signature_key_secret_name = "k"\n')
    write_channel(home, "nohdr", 'type = "webhook"\nlisten = "127.0.0.1:9000"\n[webhook]\nhmac_secret_name = "k"\n')
    write_channel(home, "broken", "type = ")
    write_channel(home, "mail", 'type = "imap"\n')
    write_channel(home, "a", 'type = "webhook"\nlisten = "[::1]:9001"\n[webhook]\nsecret_name = "t"\n')
    write_channel(home, "b", 'type = "webhook"\nlisten = "[::1]:9001"\n[webhook]\nsecret_name = "u"\n')
    make_channel(home, "local")  # no channel.toml at all
    channels, bad = load_channels(home)
    assert [(c.name, c.host, c.port) for c in channels] == [("a", "::1", 9001)]
    assert set(bad) == {"open", "port", "ed", "nohdr", "broken", "b"}
    assert "unauthenticated" in bad["open"]
    assert "HOST:PORT" in bad["port"]
    assert "not supported" in bad["ed"]
    assert "hmac_signature_header" in bad["nohdr"]
    assert "already channel a's" in bad["b"]


def test_an_address_in_use_fails_at_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_channel(home, "hook", bearer_toml())
    channels, _ = load_channels(home)
    first = Receiver(home, channels, SECRETS.get)
    first.start()
    try:
        _, port = first.addresses()["hook"]
        (home / "channels/hook/channel.toml").write_text(bearer_toml().replace(":0", f":{port}"))
        again, _ = load_channels(home)
        with pytest.raises(OSError):
            Receiver(home, again, SECRETS.get).start()
    finally:
        first.close()


@pytest.mark.fuse
def test_delivery_into_a_real_mount(mounted: tuple[object, Path]) -> None:
    _, mnt = mounted
    write_channel(mnt, "hook", bearer_toml())
    channels, bad = load_channels(mnt)
    assert bad == {}
    receiver = Receiver(mnt, channels, SECRETS.get)
    receiver.start()
    try:
        s = Served(mnt, receiver, Clock(), Clock())
        assert s.post("hook", "grüße".encode(), {"Authorization": "Bearer s3cret-token"})[0] == 202
        [path] = s.new("hook")
        assert maildir.parse(path, path.read_bytes()).text.strip() == "grüße"
    finally:
        receiver.close()
