#!/usr/bin/env python3
"""py-tgcalls 3.0.x (from PyPI, unmodified) on ringcast, against sfu-mock.

Run by python/tests/py_tgcalls.rs (which starts sfu-mock and builds the wheel into a venv):

    SFU_HTTP=127.0.0.1:PORT python pytgcalls_bot.py WORKDIR

Only py-tgcalls' MTProto layer is replaced: `MtProtoClient` binds this file's `SfuBridge`
(a `BridgedClient`) instead of a pyrogram/telethon bridge. `phone.joinGroupCall` posts the
join payload to sfu-mock's control API and returns its answer as Telegram's
`updateGroupCallConnection` params; `phone.leaveGroupCall` leaves with the SSRC the bridge
remembered at join time (py-tgcalls leaves with source=0, as Telegram allows). Everything else
is py-tgcalls' own code on ringcast's `ntgcalls` module.

Every check prints `ok: ...` or `FAIL: ...`; the last line is `N passed, M failed` and the exit
status is 1 if anything failed.
"""

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request

import ringcast

ringcast.install_as_ntgcalls()

import ntgcalls  # noqa: E402  (ringcast's, installed above)
from pytgcalls import PyTgCalls, filters  # noqa: E402
from pytgcalls.exceptions import NotInCallError  # noqa: E402
from pytgcalls.mtproto import MtProtoClient  # noqa: E402
from pytgcalls.mtproto.bridged_client import BridgedClient  # noqa: E402
from pytgcalls.pytgcalls_session import PyTgCallsSession  # noqa: E402
from pytgcalls.types import StreamEnded  # noqa: E402

SFU = os.environ["SFU_HTTP"]
WORK = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
CHATS = int(os.environ.get("RINGCAST_TEST_CHATS", "100"))
TOLERANCE_HZ = 15.0

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
# Offline: the banner and the online version check of app.start() are skipped.
PyTgCallsSession.notice_displayed = True

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {what}", flush=True)
    else:
        failed += 1
        print(f"FAIL: {what}", flush=True)
    return ok


# ---------------------------------------------------------------------------------------------
# sfu-mock's control API


def http(method, path, body=None):
    data = None if body is None else body.encode()
    req = urllib.request.Request(f"http://{SFU}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode()


async def ahttp(method, path, body=None):
    return await asyncio.get_running_loop().run_in_executor(None, http, method, path, body)


async def participant(chat_id):
    """The chat's participant at the SFU (the last one that joined), or None."""
    stats = json.loads(await ahttp("GET", "/v1/stats"))
    entries = stats["chats"].get(str(chat_id)) or []
    return entries[-1] if entries else None


async def all_participants():
    return json.loads(await ahttp("GET", "/v1/stats"))["chats"]


def hears(p, hz):
    return (
        p is not None
        and p["connected"]
        and p["dominant_hz"] is not None
        and abs(p["dominant_hz"] - hz) <= TOLERANCE_HZ
    )


async def wait_for(predicate, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


async def tone_heard(chat_id, hz, timeout=10.0):
    async def heard():
        return hears(await participant(chat_id), hz)

    return await wait_for(heard, timeout)


async def packets_over(chat_id, seconds):
    """Packets the SFU received from the chat's participant in `seconds`, and what it hears."""
    before = await participant(chat_id)
    await asyncio.sleep(seconds)
    after = await participant(chat_id)
    return after["packets"] - before["packets"], after["dominant_hz"]


async def tone_gone(chat_id, timeout=5.0):
    """The SFU stops hearing the tone: no packets (ntgcalls' way) or silence (ringcast's)."""

    async def gone():
        delta, hz = await packets_over(chat_id, 0.6)
        return delta < 3 or hz is None

    return await wait_for(gone, timeout, step=0)


# ---------------------------------------------------------------------------------------------
# The MTProto test double


def signed32(ssrc):
    """Telegram's participant sources are signed int32."""
    ssrc &= 0xFFFFFFFF
    return ssrc - (1 << 32) if ssrc >= 1 << 31 else ssrc


class SfuBridge(BridgedClient):
    """py-tgcalls' Telegram bridge, answered by sfu-mock."""

    def __init__(self):
        self.handlers = []
        self.sources = {}  # chat id -> our SSRC (signed int32), for leaving
        self.status = []  # set_call_status calls
        self.joins = 0
        self.leaves = 0

    async def join_group_call(self, chat_id, json_join, video_stopped, join_as,
                              invite_hash=None, block=None, public_key=None,
                              invite_msg_id=None):
        if chat_id >= 0:
            raise ValueError(f"group chat ids are negative, got {chat_id}")
        self.sources[chat_id] = signed32(json.loads(json_join)["ssrc"])
        answer = await ahttp("POST", f"/v1/chats/{chat_id}/join", json_join)
        self.joins += 1
        return answer  # updateGroupCallConnection.params.data

    async def leave_group_call(self, chat_id):
        source = self.sources.pop(chat_id, None)
        if source is not None:
            await ahttp("POST", f"/v1/chats/{chat_id}/leave",
                        json.dumps({"ssrc": source & 0xFFFFFFFF}))
            self.leaves += 1

    async def get_input_call(self, chat_id):
        return {"chat_id": chat_id} if chat_id < 0 else None

    async def create_group_call(self, chat_id):
        return None

    async def set_call_status(self, chat_id, muted_status, video_paused, video_stopped,
                              presentation_paused, participant):
        self.status.append((chat_id, muted_status, video_stopped))

    async def get_group_call_participants(self, chat_id):
        return []

    async def get_participants(self, input_call):
        return []

    async def resolve_peer(self, user_id):
        return user_id

    async def get_id(self):
        return 4242

    def is_connected(self):
        return True

    def no_updates(self):
        return False

    async def start(self):
        return None

    def add_handler(self, func):
        self.handlers.append(func)


def bind_bridge(self, cache_duration, client):
    """`MtProtoClient.__init__` for the double: the client object *is* the bridge."""
    self._bind_client = client
    self.package_name = "sfu-mock"


MtProtoClient.__init__ = bind_bridge


# ---------------------------------------------------------------------------------------------


def make_tone(path, hz, seconds):
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi",
         "-i", f"sine=frequency={hz}:sample_rate=48000:duration={seconds}",
         "-ac", "1", "-b:a", "96k", path],
        check=True,
    )
    return path


async def one_chat(app, bridge, ended):
    chat = -1001
    tone = make_tone(os.path.join(WORK, "tone.mp3"), 440, 30)
    short = make_tone(os.path.join(WORK, "short.mp3"), 880, 3)

    started = time.monotonic()
    await asyncio.wait_for(app.play(chat, tone), 30)
    check(True, f"play({chat}, tone.mp3) returned in {time.monotonic() - started:.2f} s")
    check(await tone_heard(chat, 440), "sfu-mock hears the 440 Hz tone")

    await asyncio.sleep(2.2)
    played = await app.time(chat)
    check(played >= 2, f"played_time advances ({played} s after 2.2 s)")

    check(await app.pause(chat) is True, "pause() -> True")
    check(await tone_gone(chat), "paused: the sfu no longer hears the tone")
    t1 = await app.time(chat)
    await asyncio.sleep(1.5)
    t2 = await app.time(chat)
    check(t2 - t1 <= 1, f"played_time stops while paused ({t1} -> {t2})")
    check(await app.pause(chat) is False, "second pause() -> False")
    check(await app.resume(chat) is True, "resume() -> True")
    check(await tone_heard(chat, 440), "resumed: the sfu hears the tone again")

    check(await app.mute(chat) is True, "mute() -> True")
    check(await tone_gone(chat), "muted: the sfu no longer hears the tone")
    check(
        await wait_for(lambda: _true(any(s[0] == chat and s[1] for s in bridge.status)), 5),
        "on_upgrade reached py-tgcalls: set_call_status(muted=True)",
    )
    check(await app.mute(chat) is False, "second mute() -> False")
    check(await app.unmute(chat) is True, "unmute() -> True")
    check(await tone_heard(chat, 440), "unmuted: the sfu hears the tone again")

    await asyncio.wait_for(app.play(chat, short), 30)
    check(await tone_heard(chat, 880), "play() while in the call switches to the 880 Hz file")
    got = await wait_for(lambda: _true(chat in ended), 15)
    check(got, "the stream end of the 3 s file reached the bot's handler")

    participant_before = await participant(chat)
    await app.leave_call(chat)
    left = await wait_for(
        lambda: _participant_left(chat), 5
    )
    check(participant_before["connected"] and left, "leave_call ended the participant at the sfu")
    try:
        await app.time(chat)
        check(False, "played_time after leave_call raises NotInCallError")
    except NotInCallError:
        check(True, "played_time after leave_call raises NotInCallError")


async def _true(value):
    return value


async def _participant_left(chat):
    p = await participant(chat)
    return p is not None and p["left"] and not p["connected"]


async def many_chats(app):
    freqs = [300, 400, 500, 600, 700]
    files = [make_tone(os.path.join(WORK, f"t{hz}.mp3"), hz, 60) for hz in freqs]
    chats = [-2000 - i for i in range(CHATS)]
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(app.play(c, files[i % len(freqs)]) for i, c in enumerate(chats))), 120
    )
    joined = time.monotonic() - started
    check(True, f"{CHATS} chats: every play() returned in {joined:.1f} s")

    async def all_heard():
        everyone = await all_participants()
        ok = 0
        for i, c in enumerate(chats):
            entries = everyone.get(str(c)) or []
            if entries and hears(entries[-1], freqs[i % len(freqs)]):
                ok += 1
        return ok

    heard = await wait_for(lambda: _at_least(all_heard, CHATS), 30, step=0.5)
    check(heard, f"{CHATS} chats: sfu-mock hears each chat's own tone ({await all_heard()}/{CHATS})")
    calls = await app._binding.calls()
    active = sum(1 for c in chats if c in calls and calls[c].capture == ntgcalls.StreamStatus.ACTIVE)
    check(active == CHATS, f"ntgcalls.calls() lists {active}/{CHATS} chats ACTIVE")
    print(f"figure: {CHATS} chats joined and playing in {joined:.1f} s", flush=True)
    await asyncio.gather(*(app.leave_call(c) for c in chats))

    async def all_left():
        everyone = await all_participants()
        return all(
            (everyone.get(str(c)) or [{"left": False}])[-1]["left"] for c in chats
        )

    check(await wait_for(all_left, 10), f"{CHATS} chats: every participant left the sfu")


async def _at_least(fn, n):
    return (await fn()) >= n


async def misuse(app, bridge):
    for name, coro in (
        ("pause", app.pause(-999)),
        ("mute", app.mute(-999)),
        ("time", app.time(-999)),
        ("leave_call", app.leave_call(-999)),
    ):
        try:
            await coro
            check(False, f"{name}(unknown chat) raises NotInCallError")
        except NotInCallError:
            check(True, f"{name}(unknown chat) raises NotInCallError")

    nt = ntgcalls.NTgCalls()
    try:
        await nt.connect(-31, "{}", False)
        check(False, "connect before create_call raises ConnectionNotFound")
    except ntgcalls.ConnectionNotFound:
        check(True, "connect before create_call raises ConnectionNotFound")
    check(await nt.stop(-31) is None, "stop(unknown) resolves to None")
    await nt.create_call(-32)
    try:
        await nt.create_call(-32)
        check(False, "a second create_call raises ntgcalls.ConnectionError")
    except ntgcalls.ConnectionError as e:
        check(True, f"a second create_call raises ntgcalls.ConnectionError ({e})")
    check(not issubclass(ntgcalls.ConnectionError, ConnectionError),
          "ntgcalls.ConnectionError is not the builtin ConnectionError")
    try:
        await nt.connect(-32, '{"transport": null}', False)
        check(False, "a transport-less answer raises TransportParseException")
    except ntgcalls.TransportParseException:
        check(True, "a transport-less answer raises TransportParseException")
    try:
        await nt.connect(-32, '{"stream": true}', False)
        check(False, "a STREAM-mode answer raises RTMPStreamingUnsupported")
    except ntgcalls.RTMPStreamingUnsupported as e:
        check("STREAM" in str(e), f"a STREAM-mode answer raises RTMPStreamingUnsupported ({e})")
    try:
        await nt.init_presentation(-32)
        check(False, "init_presentation raises an ntgcalls exception")
    except ntgcalls.BaseRTCException as e:
        check(True, f"init_presentation raises {type(e).__name__} ({e})")
    await nt.stop(-32)

    # A callback that raises is logged, and the dispatcher goes on delivering.
    seen = []
    errors = []

    class Catch(logging.Handler):
        def emit(self, record):
            errors.append(record)

    catcher = Catch()
    logging.getLogger("ringcast.ntgcalls").addHandler(catcher)

    def bad(chat_id, info):
        seen.append((chat_id, info.state))
        raise RuntimeError("a bot bug")

    nt.on_connection_change(bad)
    for chat in (-41, -42):
        payload = await nt.create_call(chat)
        await nt.connect(chat, await ahttp("POST", f"/v1/chats/{chat}/join", payload), False)
    got = await wait_for(
        lambda: _true(sum(1 for s in seen if s[1] == ntgcalls.ConnectionState.CONNECTED) == 2), 10
    )
    check(got, f"a raising on_connection_change callback still gets every event ({seen})")
    check(len(errors) >= 2, f"each raise was logged ({len(errors)} records)")
    logging.getLogger("ringcast.ntgcalls").removeHandler(catcher)
    for chat in (-41, -42):
        await nt.stop(chat)


async def main():
    bridge = SfuBridge()
    app = PyTgCalls(bridge)
    ended = set()

    @app.on_update(filters.stream_end())
    async def on_end(client, update: StreamEnded):
        ended.add(update.chat_id)

    await app.start()
    check(ntgcalls.__version__.startswith("3."), f"ntgcalls.__version__ = {ntgcalls.__version__}")
    for part in (one_chat(app, bridge, ended), many_chats(app), misuse(app, bridge)):
        try:
            await part
        except Exception as e:  # one part failing must not hide the others
            logging.exception("test part failed")
            check(False, f"{part.__name__}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 300))
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not passed else 0)
