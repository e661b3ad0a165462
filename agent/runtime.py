"""The runtime: watch the channels' inboxes, run one turn per message, reply into the outbox; fire routines and
the heartbeat; keep its own state in `.agent/`.  It reads and writes only through the mounted home.

A message is never lost:
- claimed by a rename new/ -> cur/ (`:2,`); answered: the reply goes to `outbox/new/` under a name fixed by the
  message's Message-ID (so it is written at most once), then `.agent/answered.jsonl` records it, then the
  message is flagged `:2,RS`.  After a crash, a claimed message without flags is looked at again: answered
  already (reply or record present) -> only flagged; else the turn is run again.
- a message that cannot be answered (broken headers, non-UTF-8 body, the LLM down) gets a reply saying why and
  is kept in cur/ flagged `:2,FS` with the reason in an `X-Clawfs-Error` header.
- a turn that cannot write to the home (a full disk) gives the message back to new/ and pauses: it is retried.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from . import journal, maildir, routines, safety
from .cache import DirCache
from .config import AgentSettings, LLMSettings, load_agent, load_llm
from .home import maildir as channel_boxes
from .home import make_channel
from .llm import LLMClient, LLMError
from .state import State
from .tools.memory import MemoryTools, atomic_write
from .tools.registry import Registry, optional_providers
from .turn import Turn

log = logging.getLogger(__name__)

STATUS_EVERY = 1.0  # seconds between liveness updates of .agent/status.json
IO_PAUSE = 2.0  # seconds a channel rests after the home refused a write (full disk)
AGENT_FROM = "agent@clawfs.local"


class Runtime:
    def __init__(self, home: Path, only_channels: list[str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.home = home
        self.agent: AgentSettings = load_agent(home)
        self.llm_settings: LLMSettings = load_llm(home)
        self.only_channels = only_channels
        self.state = State(home)
        self.llm = LLMClient(self.llm_settings, transport)
        self.registry = Registry([MemoryTools(home), *optional_providers(home)])
        self.turn = Turn(home, self.agent, self.llm_settings, self.llm, self.registry, self.state)
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.agent.parallel_turns), thread_name_prefix="turn")
        self._busy: dict[tuple[str, str], Future[None]] = {}
        self._paused_until = 0.0
        self._last_status = 0.0
        self._last_turn: dict[str, Any] = {}
        self._started = time.time()
        self._routine_errors: dict[str, str] = {}
        self._dirs = DirCache()  # channels/ and the inboxes' new/: listed again only when they change
        self._waiting: dict[Path, maildir.Inbound] = {}  # parsed messages left in new/ (their thread is busy)
        self._replies: dict[str, set[str]] = {}  # per channel, the reply names in its outbox (see _replied)
        self._replies_lock = threading.Lock()
        self.turns = 0

    # -- the main loop ----------------------------------------------------------------------------------------
    def channels(self) -> list[str]:
        names = self.only_channels or self._home_channels() or ["local"]
        for name in names:
            if not (self.home / "channels" / name / "inbox" / "new").is_dir():
                make_channel(self.home, name)
        return names

    def _home_channels(self) -> list[str]:
        """home.channels(), without listing channels/ at every poll."""
        root = self.home / "channels"
        try:
            names = self._dirs.names(root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [n for n in names if (root / n / "inbox" / "new").is_dir()]

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: then the turns in flight finish and the runtime exits."""
        log.info("agent runtime on %s: channels %s, LLM %s (%s)", self.home, ", ".join(self.channels()),
                 self.llm_settings.base_url, self.llm_settings.model)
        self.recover()
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.agent.poll_seconds)
        finally:
            self._pool.shutdown(wait=True)
            self.llm.close()
            self._write_status(running=False)
            log.info("agent runtime stopped after %d turns", self.turns)

    def step(self) -> None:
        now = time.time()
        self._reap()
        if now >= self._paused_until:
            try:
                self.fire_routines()
                self.fire_heartbeat()
                for ch in self.channels():
                    self._claim_new(ch)
            except OSError as e:
                self._pause(e, "looking at the inboxes")
        if now - self._last_status >= STATUS_EVERY:
            self._write_status(running=True)

    def _reap(self) -> None:
        for key, fut in list(self._busy.items()):
            if fut.done():
                del self._busy[key]
                if (e := fut.exception()) is not None:
                    log.error("turn of %s/%s crashed: %r", key[0], key[1], e)

    def _claim_new(self, channel: str) -> None:
        new = channel_boxes(self.home, channel)["inbox"] / "new"
        names = self._dirs.names(new)
        if not names:
            return
        for name in names:
            if len(self._busy) >= self.agent.parallel_turns:
                break
            path = new / name
            inbound = self._waiting.get(path)
            if inbound is None:
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:
                    continue
                inbound = maildir.parse(path, raw)
            key = (channel, inbound.thread)
            if key in self._busy:
                # one turn per thread at a time: history stays in order.  Kept parsed, so a message waiting
                # for its thread is read once, not at every poll (a Maildir name is never reused)
                self._waiting[path] = inbound
                continue
            self._waiting.pop(path, None)
            claimed = maildir.claim(path)
            if claimed is None:
                continue
            inbound.path = claimed
            self._busy[key] = self._pool.submit(self.handle, channel, inbound)
        if len(self._waiting) > 4096:
            present = set(names)
            self._waiting = {p: m for p, m in self._waiting.items() if p.parent != new or p.name in present}

    def recover(self) -> None:
        """Messages claimed but not finished when the runtime last stopped (a crash mid-turn) are redone."""
        for ch in self.channels():
            cur = channel_boxes(self.home, ch)["inbox"] / "cur"
            for name in sorted(os.listdir(cur)):
                if ":2," in name and maildir.flags(name) == "":
                    path = cur / name
                    log.info("redelivering %s/%s (claimed before a stop, never answered)", ch, name)
                    inbound = maildir.parse(path, path.read_bytes())
                    self.handle(ch, inbound)

    # -- one message ------------------------------------------------------------------------------------------
    def handle(self, channel: str, inbound: maildir.Inbound) -> None:
        try:
            if self.state.answered(channel, inbound.msgid) or self._replied(channel, inbound.msgid):
                self._finish(channel, inbound, None, "answered before a restart")
                return
            if inbound.problem is not None:
                self._fail(channel, inbound, f"I could not read your message: {inbound.problem}. It is kept, "
                                             f"unchanged, in channels/{channel}/inbox/cur/.", inbound.problem)
                return
            self._answer(channel, inbound)
        except OSError as e:
            self._pause(e, f"answering {channel}/{inbound.path.name}")
            try:
                maildir.unclaim(inbound.path)
            except OSError as e2:
                log.error("cannot give %s back to new/ (%s); it stays claimed in cur/ and is redelivered on "
                          "restart", inbound.path.name, e2)

    def _answer(self, channel: str, inbound: maildir.Inbound) -> None:
        t0 = time.perf_counter()
        text = inbound.text
        if inbound.kind == "heartbeat":
            text = inbound.text
        try:
            result = self.turn.run(channel, inbound.thread, text)
        except LLMError as e:
            log.error("%s/%s: %s", channel, inbound.thread, e)
            self._fail(channel, inbound, f"Sorry, I could not answer: {e}", str(e),
                       records=[journal.record("user", text)])
            return
        checked = safety.check_reply(result.reply)
        silent = inbound.kind == "heartbeat" and routines.is_heartbeat_ok(result.reply)
        records = [*result.records, journal.record("assistant", checked.text)]
        journal.append_messages(self.home, channel, inbound.thread, records)
        journal.append_daily(self.home, _daily_line(channel, inbound, text, checked.text, silent))
        reply_id = None if silent else self._send(channel, inbound, checked.text)
        self.state.record_answer(channel, inbound.msgid, reply_id, "silent" if silent else result.status)
        maildir.set_flags(inbound.path, "RS")
        self.turns += 1
        self._last_turn = {"channel": channel, "thread": inbound.thread, "status": result.status,
                           "at": time.time(), "seconds": round(time.perf_counter() - t0, 4),
                           "llm_seconds": round(result.llm_seconds, 4), "tool_calls": result.tool_calls,
                           "delivered": not silent}
        log.info("%s/%s: answered (%s, %d tool calls%s) in %.1f ms, %.1f ms of it the LLM's", channel,
                 inbound.thread, result.status, result.tool_calls, ", heartbeat ok: not delivered" if silent else "",
                 1000 * self._last_turn["seconds"], 1000 * self._last_turn["llm_seconds"])

    def _replied(self, channel: str, msgid: str) -> bool:
        """Whether the outbox holds (or held) the reply to `msgid`: its names are listed once per channel, then
        each reply this runtime writes is added (one runtime per home, and a reply is written only by it), so a
        turn asks the mount nothing."""
        with self._replies_lock:
            names = self._replies.get(channel)
            if names is None:
                names = self._replies[channel] = maildir.reply_names(channel_boxes(self.home, channel)["outbox"])
            return maildir.reply_name(msgid) in names

    def _send(self, channel: str, inbound: maildir.Inbound, body: str) -> str:
        outbox = channel_boxes(self.home, channel)["outbox"]
        msg = maildir.make_message(body, sender=AGENT_FROM, thread=inbound.thread, in_reply_to=inbound.msgid,
                                   extra={"To": inbound.sender or "user", "Subject": "Re: " + inbound.thread})
        # the fixed name makes a second write of the same reply replace the first: answered at most once
        name = maildir.reply_name(inbound.msgid)
        maildir.deliver(outbox, msg.as_bytes(), name)
        with self._replies_lock:
            if (names := self._replies.get(channel)) is not None:
                names.add(name)
        return str(msg["Message-ID"])

    def _fail(self, channel: str, inbound: maildir.Inbound, reply: str, reason: str,
              records: list[dict[str, Any]] | None = None) -> None:
        checked = safety.check_reply(reply)
        if records:
            journal.append_messages(self.home, channel, inbound.thread,
                                    [*records, journal.record("assistant", checked.text)])
        reply_id = self._send(channel, inbound, checked.text)
        self.state.record_answer(channel, inbound.msgid, reply_id, "failed")
        self._finish(channel, inbound, reason, None)

    def _finish(self, channel: str, inbound: maildir.Inbound, reason: str | None, note: str | None) -> None:
        """Flag the claimed message: failed ones carry their reason in a header above the original bytes."""
        if reason is None:
            maildir.set_flags(inbound.path, "RS")
            if note:
                log.info("%s/%s: %s", channel, inbound.path.name, note)
            return
        one_line = " ".join(reason.split())[:500]
        atomic_write(inbound.path, f"{maildir.ERROR_HEADER}: {one_line}\n".encode() + inbound.raw)
        maildir.set_flags(inbound.path, "FS")
        log.warning("%s/%s: failed (%s); kept in inbox/cur/ flagged F", channel, inbound.path.name, one_line)

    def _pause(self, e: OSError, doing: str) -> None:
        why = "the home's disk is full" if e.errno == errno.ENOSPC else f"{e.strerror or e}"
        log.error("%s: %s (%s); pausing %g s and retrying, nothing is lost", doing, why,
                  errno.errorcode.get(e.errno or 0, "?"), IO_PAUSE)
        self._paused_until = time.time() + IO_PAUSE

    # -- routines and heartbeat -------------------------------------------------------------------------------
    def fire_routines(self) -> None:
        found, bad = routines.load_routines(self.home)
        for name, why in bad.items():
            if self._routine_errors.get(name) != why:
                log.error("routines/%s is not used: %s", name, why)
        self._routine_errors = bad
        if not found:
            return
        now = dt.datetime.now(dt.UTC)
        saved = self.state.read("routines.json")
        changed = False
        for r in found:
            if not r.enabled:
                continue
            entry = saved.get(r.name, {})
            fire, new_entry = routines.due(r, entry, now)
            if fire and (prev := entry.get("in_flight")) and not self.state.answered(r.channel, prev):
                log.info("routine %s: the previous run is still going; this run is skipped", r.name)
                fire = False
            if fire:
                new_entry["in_flight"] = self._post(r.channel, r.prompt, f"routine-{r.name}", "routine",
                                                    {maildir.ROUTINE_HEADER: r.name})
                new_entry["last_fire"] = now.isoformat()
                new_entry["runs"] = int(entry.get("runs", 0)) + 1
                log.info("routine %s fired into %s", r.name, r.channel)
            if new_entry != entry:
                saved[r.name] = new_entry
                changed = True
        if changed:
            self.state.write("routines.json", saved)

    def fire_heartbeat(self) -> None:
        if self.agent.heartbeat_minutes <= 0:
            return
        hb = self.state.read("heartbeat.json")
        now = time.time()
        last = hb.get("last_run")
        if not isinstance(last, (int, float)):
            self.state.write("heartbeat.json", {"last_run": now})  # first beat one interval after the start
            return
        if now - last < self.agent.heartbeat_minutes * 60:
            return
        text = routines.heartbeat_text(self.home)
        hb = {"last_run": now, "beats": int(hb.get("beats", 0)) + 1}
        if text is None:
            hb["last_result"] = "HEARTBEAT.md is empty: nothing asked"
        else:
            channel = self.agent.heartbeat_channel
            if channel not in self.channels():
                make_channel(self.home, channel)
            hb["in_flight"] = self._post(channel, routines.HEARTBEAT_PROMPT + text, "heartbeat", "heartbeat", {})
        self.state.write("heartbeat.json", hb)

    def _post(self, channel: str, body: str, thread: str, kind: str, extra: dict[str, str]) -> str:
        msg = maildir.make_message(body, sender=f"{kind}@clawfs.local", thread=thread,
                                   extra={maildir.KIND_HEADER: kind, **extra})
        inbox = channel_boxes(self.home, channel)["inbox"]
        if not (inbox / "new").is_dir():
            make_channel(self.home, channel)  # e.g. a migrated routine's notify_channel without a Maildir yet
        maildir.deliver(inbox, msg.as_bytes())
        return str(msg["Message-ID"])

    # -- status -----------------------------------------------------------------------------------------------
    def _write_status(self, running: bool) -> None:
        queue = {}
        try:
            for ch in self.channels():
                queue[ch] = len(self._dirs.names(channel_boxes(self.home, ch)["inbox"] / "new"))
            saved = self.state.read("routines.json")
            self.state.write("status.json", {
                "running": running, "pid": os.getpid(), "started_at": self._started, "updated_at": time.time(),
                "status_every": STATUS_EVERY, "queue": queue, "in_flight": len(self._busy), "turns": self.turns,
                "last_turn": self._last_turn,
                "next_routines": {k: v.get("next_fire") for k, v in saved.items() if isinstance(v, dict)},
                "routine_errors": self._routine_errors, "llm": self.llm_settings.base_url}, durable=False)
            self._last_status = time.time()
        except OSError as e:
            log.warning("cannot write .agent/status.json: %s", e)
            self._last_status = time.time()


def _daily_line(channel: str, inbound: maildir.Inbound, text: str, reply: str, silent: bool) -> str:
    clock = dt.datetime.now().strftime("%H:%M")
    def short(s: str) -> str:
        s = " ".join(s.split())
        return s if len(s) <= 300 else s[:300] + "..."
    tail = " (heartbeat ok, not delivered)" if silent else ""
    return f"- {clock} [{channel}/{inbound.thread}] {inbound.kind}: {short(text)}\n  -> {short(reply)}{tail}\n"
