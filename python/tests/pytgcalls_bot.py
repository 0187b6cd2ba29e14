#!/usr/bin/env python3
"""py-tgcalls 3.0.x (from PyPI, unmodified) on ringcast, against sfu-mock.

Run by python/tests/py_tgcalls.rs (which starts sfu-mock and builds the wheel into a venv):

    SFU_HTTP=127.0.0.1:PORT python pytgcalls_bot.py WORKDIR

Only py-tgcalls' MTProto layer is replaced: `MtProtoClient` binds `sfu_double.SfuBridge`
(a `BridgedClient`, beside this file) instead of a pyrogram/telethon bridge. `phone.joinGroupCall` posts the
join payload to sfu-mock's control API and returns its answer as Telegram's
`updateGroupCallConnection` params; `phone.leaveGroupCall` leaves with the SSRC the bridge
remembered at join time (py-tgcalls leaves with source=0, as Telegram allows). Everything else
is py-tgcalls' own code on ringcast's `ntgcalls` module.

Every check prints `ok: ...` or `FAIL: ...`; the last line is `N passed, M failed` and the exit
status is 1 if anything failed.
"""

import asyncio
import logging
import os
import subprocess
import sys
import time
import types

import ringcast

ringcast.install_as_ntgcalls()

import ntgcalls  # noqa: E402  (ringcast's, installed above)
from pytgcalls import PyTgCalls, filters  # noqa: E402
from pytgcalls.exceptions import NotInCallError  # noqa: E402
from pytgcalls.types import ChatUpdate, RawCallUpdate, StreamEnded  # noqa: E402
from pytgcalls.types import CallProtocol, UpdatedEmojis  # noqa: E402
from sfu_double import Sfu, SfuBridge, bind_bridge  # noqa: E402  (beside this file)

SFU_API = Sfu(os.environ["SFU_HTTP"])
WORK = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
CHATS = int(os.environ.get("RINGCAST_TEST_CHATS", "100"))
TOLERANCE_HZ = 15.0

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

from checks import check, pcm_hz, summary  # noqa: E402  (beside this file)


# ---------------------------------------------------------------------------------------------
# sfu-mock's control API


async def ahttp(method, path, body=None):
    return await SFU_API.ahttp(method, path, body)


async def participant(chat_id):
    """The chat's participant at the SFU (the last one that joined), or None."""
    return await SFU_API.participant(chat_id)


async def all_participants():
    return await SFU_API.chats()


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


bind_bridge()


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


async def video_chat(app):
    """play() of a file with a video stream: py-tgcalls adds its camera command (raw yuv420p
    frames), ringcast encodes and sends it; sfu-mock reassembles frames of the right size."""
    chat = -1009
    clip = os.path.join(WORK, "clip.mp4")
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=30",
         "-f", "lavfi", "-i", "sine=frequency=523:sample_rate=48000:duration=30",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", clip],
        check=True,
    )
    await asyncio.wait_for(app.play(chat, clip), 30)

    async def shown():
        p = await participant(chat)
        v = p and p.get("video")
        return v if v and v["decodable_frames"] >= 60 else None

    v = await wait_for(shown, 20)
    check(v is not None, f"play(clip.mp4): sfu-mock reassembles its video ({v})")
    if v:
        check(v["width"] > 0 and v["height"] > 0 and v["width"] * 9 == v["height"] * 16,
              f"the video keeps the clip's 16:9 shape ({v['width']}x{v['height']})")
        check(v["keyframes"] >= 1 and v["incomplete_frames"] == 0,
              f"it starts on a key frame and no frame is broken ({v})")
    check(await tone_heard(chat, 523), "the clip's 523 Hz audio beside it")
    await app.leave_call(chat)


async def presentation_chat(app, bridge):
    """A screen (py-tgcalls' raw ``Stream(screen=...)``) goes to the presentation connection:
    its own join (``phone.joinGroupCallPresentation`` in the double), transport and SSRCs.
    sfu-mock reassembles the camera and the screen, each at its size, and hears the audio; a
    play without the screen leaves the presentation while the camera goes on."""
    from pytgcalls.types.raw import AudioParameters, AudioStream, Stream, VideoParameters
    from pytgcalls.types.raw import VideoStream

    chat = -1010

    def raw(size):
        return (f"ffmpeg -loglevel error -f lavfi -i testsrc2=size={size}:rate=15 "
                "-f rawvideo -pix_fmt yuv420p -r 15 pipe:1")

    mic = AudioStream(
        ntgcalls.MediaSource.SHELL,
        "ffmpeg -loglevel error -f lavfi -i sine=frequency=659:sample_rate=48000 "
        "-f s16le -ac 2 -ar 48000 pipe:1",
        AudioParameters(48000, 2),
    )
    camera = VideoStream(ntgcalls.MediaSource.SHELL, raw("320x180"), VideoParameters(320, 180, 15))
    screen = VideoStream(ntgcalls.MediaSource.SHELL, raw("640x360"), VideoParameters(640, 360, 15))
    await asyncio.wait_for(app.play(chat, Stream(microphone=mic, camera=camera, screen=screen)), 30)
    check(chat in bridge.presentations, "the screen made py-tgcalls join the presentation")

    async def video_of(ssrc, frames):
        for p in (await all_participants()).get(str(chat)) or []:
            v = p.get("video")
            if p["ssrc"] == ssrc & 0xFFFFFFFF and v and v["decodable_frames"] >= frames:
                return v
        return None

    main = bridge.sources.get(chat, 0)
    shown = bridge.presentations.get(chat, 0)
    check(main != shown, "the presentation has SSRCs of its own")
    cam = await wait_for(lambda: video_of(main, 30), 20)
    scr = await wait_for(lambda: video_of(shown, 30), 20)
    check(cam is not None and (cam["width"], cam["height"]) == (320, 180),
          f"the camera arrives at 320x180 ({cam})")
    check(scr is not None and (scr["width"], scr["height"]) == (640, 360),
          f"the screen arrives at 640x360 on the presentation ({scr})")
    async def main_hears():
        for p in (await all_participants()).get(str(chat)) or []:
            if p["ssrc"] == main & 0xFFFFFFFF and hears(p, 659):
                return True
        return False

    # (tone_heard looks at the chat's last participant: here the presentation, silent.)
    check(await wait_for(main_hears, 10), "the 659 Hz audio beside them, on the call")
    state = await app._binding.get_state(chat)
    check(not state.presentation_stopped and not state.video_stopped,
          f"get_state: camera and presentation on ({state})")
    # A mute tells Telegram the camera is still on (video_stopped False), as ntgcalls does.
    check(await app.mute(chat) is True, "mute() of the presenting chat")
    check(
        await wait_for(
            lambda: _true(any(c == chat and m and not v for c, m, v in bridge.status)), 5),
        f"on_upgrade: set_call_status(muted=True, video_stopped=False) ({bridge.status[-3:]})",
    )
    await app.unmute(chat)

    # The same play without the screen: py-tgcalls leaves the presentation.
    await asyncio.wait_for(app.play(chat, Stream(microphone=mic, camera=camera)), 30)
    check(chat not in bridge.presentations, "py-tgcalls left the presentation")
    before = (await video_of(main, 0))["frames"]
    await asyncio.sleep(1.5)
    after = (await video_of(main, 0))["frames"]
    check(after >= before + 10, f"the camera goes on ({before} -> {after} frames)")
    state = await app._binding.get_state(chat)
    check(state.presentation_stopped, f"get_state: presentation stopped ({state})")
    await app.leave_call(chat)


async def external_camera(app):
    """EXTERNAL video: frames given to ``send_frame`` are encoded once and shown on the
    camera at the description's size; a frame of the wrong size is InvalidParams."""
    from pytgcalls.types import Device
    from pytgcalls.types.raw import Stream, VideoParameters, VideoStream

    chat = -1011
    camera = VideoStream(ntgcalls.MediaSource.EXTERNAL, "", VideoParameters(320, 240, 15))
    await asyncio.wait_for(app.play(chat, Stream(camera=camera)), 30)
    luma = 320 * 240
    start = time.monotonic()
    for i in range(45):
        frame = bytes([40 + i * 4]) * luma + bytes([128]) * (luma // 2)
        await app.send_frame(chat, Device.CAMERA, frame)
        await asyncio.sleep(max(0.0, start + (i + 1) / 15 - time.monotonic()))
    try:
        await app.send_frame(chat, Device.CAMERA, b"short")
        check(False, "a frame of the wrong size is refused")
    except ntgcalls.InvalidParams as e:
        check(True, f"a frame of the wrong size raises InvalidParams ({e})")

    async def shown():
        p = await participant(chat)
        v = p and p.get("video")
        return v if v and v["decodable_frames"] >= 30 else None

    v = await wait_for(shown, 10)
    check(v is not None and (v["width"], v["height"]) == (320, 240),
          f"send_frame: sfu-mock reassembles 320x240 frames ({v})")
    await app.leave_call(chat)


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


def file_hz(path):
    """The dominant frequency of a recorded file: zero crossings (with hysteresis) of its
    sounding part, decoded to 48 kHz mono by ffmpeg. None if it holds no sound."""
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-f", "s16le", "-ac", "1", "-ar", "48000", "-"],
        check=True, capture_output=True,
    ).stdout
    return pcm_hz(pcm)[0]


async def recording(app):
    """record() of a chat where another participant (a ringcast.Engine) speaks a tone."""
    chat = -3001
    speaker = ringcast.Engine()
    events = speaker.events()
    payload = await speaker.create_call(chat)
    await speaker.connect(chat, await ahttp("POST", f"/v1/chats/{chat}/join", payload))
    await speaker.play_tone(chat, 660)

    async def connected():
        async for event in events:
            if event.chat_id == chat and event.kind == "connection" and event.value == "connected":
                return True

    check(await asyncio.wait_for(connected(), 10), "ringcast.Engine: events() yields connected")
    events.close()
    check(await tone_heard(chat, 660), "ringcast.Engine: its 660 Hz tone is heard at the sfu")
    info = await speaker.info(chat)
    check(info.state == "connected" and info.kind == "group", f"ringcast.Engine.info: {info}")

    path = os.path.join(WORK, "recorded.mp3")
    await asyncio.wait_for(app.record(chat, path), 30)
    await asyncio.sleep(3)
    await app.leave_call(chat)  # stop() finishes the recording's file
    hz = file_hz(path) if os.path.exists(path) else None
    check(hz is not None and abs(hz - 660) <= TOLERANCE_HZ,
          f"record(): the file holds the other participant's 660 Hz tone ({hz})")
    await speaker.stop(chat)
    speaker.close()


async def gil_free():
    """A native call that waits (here 1.5 s for a command's first frame) leaves the GIL free:
    the event loop keeps running meanwhile."""
    nt = ntgcalls.NTgCalls()
    await nt.create_call(-51)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    command = ("sleep 1.5; ffmpeg -v quiet -f lavfi -i sine=frequency=500:sample_rate=48000:duration=2"
               " -f s16le -ac 1 -ar 48000 pipe:1")
    md = ntgcalls.MediaDescription(
        microphone=ntgcalls.AudioDescription(ntgcalls.MediaSource.SHELL, 48000, 1, command))
    started = time.monotonic()
    await nt.set_stream_sources(-51, ntgcalls.StreamMode.CAPTURE, md)
    took = time.monotonic() - started
    task.cancel()
    check(took >= 1.4 and ticks >= took / 0.01 * 0.5,
          f"set_stream_sources waited {took:.2f} s without the GIL ({ticks} loop ticks meanwhile)")
    await nt.stop(-51)


TELEGRAM_DH_PRIME = bytes.fromhex(
    "C71CAEB9C6B1C9048E6C522F70F13F73980D40238E3E21C14934D037563D930F48198A0AA7C14058229493D2"
    "2530F4DBFA336F6E0AC925139543AED44CCE7C3720FD51F69458705AC68CD4FE6B6B13ABDC9746512969328454"
    "F18FAF8C595F642477FE96BB2A941D5BCD1D4AC8CC49880708FA9B378E3C4F3A9060BEE67CF9A4A4A695811051"
    "907E162753B56B0F6B410DBA74D8A84B2A14B3144E0EF1284754FD17ED950D5965B4B9DD46582DB1178D169C6B"
    "C465B0D6FF9CA3928FEF5B9AE4E418FC15E83EBEA0F87FA9FF5EED70050DED2849F47BF959D956850CE929851F"
    "0D8115F635B105EE2E4E15D04B2454BF6F4FADF034B10403119CD8E3B92FCC5B"
)


async def p2p_surface():
    """A 1:1 call between two NTgCalls in one process, through ntgcalls' 1:1 methods, the test
    carrying the messenger's part (DH values, signaling bytes)."""
    loop = asyncio.get_running_loop()
    a, b = ntgcalls.NTgCalls(), ntgcalls.NTgCalls()
    a_sees_b, b_sees_a = 7001, 7002
    states = {"a": [], "b": []}
    emojis = {}

    async def relay(to, uid, data):
        await to.send_signaling_data(uid, data)

    a.on_signaling_data(lambda uid, d: asyncio.run_coroutine_threadsafe(relay(b, b_sees_a, d), loop))
    b.on_signaling_data(lambda uid, d: asyncio.run_coroutine_threadsafe(relay(a, a_sees_b, d), loop))
    a.on_connection_change(lambda uid, info: states["a"].append(info.state))
    b.on_connection_change(lambda uid, info: states["b"].append(info.state))
    a.on_update_emojis(lambda uid, e: emojis.__setitem__("a", e))
    b.on_update_emojis(lambda uid, e: emojis.__setitem__("b", e))

    def tone(hz):
        return ntgcalls.MediaDescription(microphone=ntgcalls.AudioDescription(
            ntgcalls.MediaSource.SHELL, 48000, 1,
            f"ffmpeg -v quiet -f lavfi -i sine=frequency={hz}:sample_rate=48000:duration=30"
            " -f s16le -ac 1 -ar 48000 pipe:1"))

    await a.create_p2p_call(a_sees_b)
    await b.create_p2p_call(b_sees_a)
    await a.set_stream_sources(a_sees_b, ntgcalls.StreamMode.CAPTURE, tone(440))
    await b.set_stream_sources(b_sees_a, ntgcalls.StreamMode.CAPTURE, tone(660))
    dh = ntgcalls.DhConfig(3, TELEGRAM_DH_PRIME, os.urandom(256))
    g_a_hash = await a.init_exchange(a_sees_b, dh, None)
    g_b = await b.init_exchange(b_sees_a, ntgcalls.DhConfig(3, TELEGRAM_DH_PRIME, os.urandom(256)), g_a_hash)
    auth_a = await a.exchange_keys(a_sees_b, g_b, 0)
    auth_b = await b.exchange_keys(b_sees_a, auth_a.g_a_or_b, auth_a.key_fingerprint)
    check(auth_a.key_fingerprint == auth_b.key_fingerprint,
          f"1:1: both sides have key fingerprint {auth_a.key_fingerprint}")
    check(emojis.get("a") and emojis.get("a") == emojis.get("b"),
          f"1:1: on_update_emojis gives both sides the same emojis ({emojis})")
    versions = ntgcalls.NTgCalls.get_protocol().library_versions
    await a.connect_p2p(a_sees_b, [], versions, True, None)
    await b.connect_p2p(b_sees_a, [], versions, True, None)
    both = await wait_for(lambda: _true(
        ntgcalls.ConnectionState.CONNECTED in states["a"]
        and ntgcalls.ConnectionState.CONNECTED in states["b"]), 15)
    check(both, f"1:1: both sides connected ({states})")

    def rec(path):
        return ntgcalls.MediaDescription(microphone=ntgcalls.AudioDescription(
            ntgcalls.MediaSource.SHELL, 48000, 1,
            f"ffmpeg -y -loglevel quiet -f s16le -ar 48000 -ac 1 -i pipe:0 -f wav {path}"))

    heard_a, heard_b = os.path.join(WORK, "p2p_a.wav"), os.path.join(WORK, "p2p_b.wav")
    await a.set_stream_sources(a_sees_b, ntgcalls.StreamMode.PLAYBACK, rec(heard_a))
    await b.set_stream_sources(b_sees_a, ntgcalls.StreamMode.PLAYBACK, rec(heard_b))
    await asyncio.sleep(3)
    await a.stop(a_sees_b)
    await b.stop(b_sees_a)
    hz_a = file_hz(heard_a) if os.path.exists(heard_a) else None
    hz_b = file_hz(heard_b) if os.path.exists(heard_b) else None
    check(hz_a is not None and abs(hz_a - 660) <= TOLERANCE_HZ, f"1:1: A hears B's 660 Hz ({hz_a})")
    check(hz_b is not None and abs(hz_b - 440) <= TOLERANCE_HZ, f"1:1: B hears A's 440 Hz ({hz_b})")


class PhoneBridge(SfuBridge):
    """The double for 1:1 calls: carries phone.requestCall/acceptCall/confirmCall and the
    signaling data between two bots as Telegram would (updatePhoneCall,
    updatePhoneCallSignalingData), as the RawCallUpdates py-tgcalls' pyrogram bridge makes."""

    def __init__(self, sfu, me, phones):
        super().__init__(sfu)
        self.me = me
        self.phones = phones
        phones[me] = self

    def deliver(self, to, update):
        for handler in self.phones[to].handlers:
            asyncio.ensure_future(handler(update))

    async def get_id(self):
        return self.me

    async def get_dhc(self):
        return types.SimpleNamespace(g=3, p=TELEGRAM_DH_PRIME, random=os.urandom(256))

    async def get_input_call(self, chat_id):
        return {"peer": chat_id}

    async def request_call(self, user_id, g_a_hash, protocol, has_video):
        self.deliver(user_id, RawCallUpdate(self.me, RawCallUpdate.Type.REQUESTED, g_a_hash,
                                            CallProtocol(protocol.library_versions)))

    async def accept_call(self, user_id, g_b, protocol):
        self.deliver(user_id, RawCallUpdate(self.me, RawCallUpdate.Type.ACCEPTED, g_b,
                                            CallProtocol(protocol.library_versions)))

    async def confirm_call(self, user_id, g_a, key_fingerprint, protocol):
        confirmed = CallProtocol(list(protocol.library_versions), True, [], False, None)
        self.deliver(user_id, RawCallUpdate(self.me, RawCallUpdate.Type.CONFIRMED, g_a,
                                            confirmed, key_fingerprint))
        return confirmed

    async def send_signaling(self, user_id, data):
        self.deliver(user_id, RawCallUpdate(self.me, RawCallUpdate.Type.SIGNALING_DATA,
                                            signaling_data=data))

    async def discard_call(self, user_id, is_missed=False):
        return None


async def p2p_pytgcalls():
    """A 1:1 call between two PyTgCalls in one process: Alice calls Bob, Bob's handler
    answers with play(); each records the other's tone."""
    phones = {}
    alice_id, bob_id = 1111, 2222
    alice = PyTgCalls(PhoneBridge(SFU_API, alice_id, phones))
    bob = PyTgCalls(PhoneBridge(SFU_API, bob_id, phones))
    tone_a = make_tone(os.path.join(WORK, "p2p440.mp3"), 440, 30)
    tone_b = make_tone(os.path.join(WORK, "p2p660.mp3"), 660, 30)
    emojis = {}

    @bob.on_update()
    async def bob_updates(client, update):
        if isinstance(update, ChatUpdate) and update.status & ChatUpdate.Status.INCOMING_CALL:
            await client.play(update.chat_id, tone_b)
        if isinstance(update, UpdatedEmojis):
            emojis["bob"] = update.emojis

    @alice.on_update()
    async def alice_updates(client, update):
        if isinstance(update, UpdatedEmojis):
            emojis["alice"] = update.emojis

    await alice.start()
    await bob.start()
    await asyncio.wait_for(alice.play(bob_id, tone_a), 60)
    check(True, "1:1 between two PyTgCalls: Alice's play(Bob) returned (Bob answered)")
    got = await wait_for(lambda: _true(len(emojis) == 2), 10)
    check(got and emojis["alice"] == emojis["bob"],
          f"1:1 between two PyTgCalls: both see the same emojis ({emojis})")
    heard_a = os.path.join(WORK, "alice_heard.mp3")
    heard_b = os.path.join(WORK, "bob_heard.mp3")
    await wait_for(lambda: _calls_has(bob, alice_id), 10)
    await asyncio.wait_for(alice.record(bob_id, heard_a), 30)
    await asyncio.wait_for(bob.record(alice_id, heard_b), 30)
    await asyncio.sleep(3)
    await alice.leave_call(bob_id)
    # Alice's hang-up ends Bob's call (CLOSED reaches Bob's py-tgcalls), so Bob may no longer
    # be in it; his recording is finished either way.
    ended_for_bob = await wait_for(lambda: _true_not(_calls_has(bob, alice_id)), 5)
    check(ended_for_bob, "1:1 between two PyTgCalls: Alice's hang-up ends Bob's call")
    try:
        await bob.leave_call(alice_id)
    except NotInCallError:
        pass
    await wait_for(lambda: _true(os.path.exists(heard_b) and os.path.getsize(heard_b) > 0), 5)
    hz_a = file_hz(heard_a) if os.path.exists(heard_a) else None
    hz_b = file_hz(heard_b) if os.path.exists(heard_b) else None
    check(hz_a is not None and abs(hz_a - 660) <= TOLERANCE_HZ,
          f"1:1 between two PyTgCalls: Alice hears Bob's 660 Hz ({hz_a})")
    check(hz_b is not None and abs(hz_b - 440) <= TOLERANCE_HZ,
          f"1:1 between two PyTgCalls: Bob hears Alice's 440 Hz ({hz_b})")


async def _true_not(coro):
    return not await coro


async def _calls_has(app, chat_id):
    return chat_id in await app._binding.calls()


async def main():
    bridge = SfuBridge(SFU_API)
    app = PyTgCalls(bridge)
    ended = set()

    @app.on_update(filters.stream_end())
    async def on_end(client, update: StreamEnded):
        ended.add(update.chat_id)

    await app.start()
    check(ntgcalls.__version__.startswith("3."), f"ntgcalls.__version__ = {ntgcalls.__version__}")
    parts = (one_chat(app, bridge, ended), video_chat(app), presentation_chat(app, bridge),
             external_camera(app), many_chats(app), recording(app), gil_free(),
             p2p_surface(), p2p_pytgcalls(), misuse(app, bridge))
    for part in parts:
        try:
            await part
        except Exception as e:  # one part failing must not hide the others
            logging.exception("test part failed")
            check(False, f"{part.__name__}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 300))
    sys.exit(summary())
