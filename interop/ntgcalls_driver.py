#!/usr/bin/env python3
"""The real ntgcalls wheel (the engine py-tgcalls uses, libwebrtc inside) driven as py-tgcalls
drives it, for sfu-mock/tests/ntgcalls_interop.rs and the load tool's ntgcalls baseline.

One process, one NTgCalls instance, any number of group calls. The Rust side plays Telegram's
MTProto layer: it joins sfu-mock with each call's payload and hands back the SFU's answer
verbatim.

Protocol (one JSON document per line; stdout is the protocol, logs go to stderr):
  stdout, first line: {"event": "ready", "version": "3.0.5", "pid": N}
                      or {"event": "error", "error": "..."} (ntgcalls not importable: exit 3)
  stdin  {"cmd": "call", "chat_id": -1, "hz": 440.0,
          "video": {"width": 1280, "height": 720, "fps": 30}}      ("video" optional)
         -> create_call(chat_id), set_stream_sources(CAPTURE, microphone = SHELL "cat" of a
            48 kHz s16le sine of `hz`, looped by sh so it never runs out; camera, with "video",
            = SHELL ffmpeg's testsrc2 pattern of that size and rate as raw yuv420p, the frames
            py-tgcalls' ffmpeg commands produce), then
  stdout {"event": "payload", "chat_id": -1, "payload": "<join payload JSON>"}
  stdin  {"cmd": "answer", "chat_id": -1, "answer": "<the SFU's answer JSON, verbatim>"}
         -> connect(chat_id, answer, False), then
  stdout {"event": "connect_returned", "chat_id": -1}
  stdout {"event": "state", "chat_id": -1, "state": "CONNECTING" | "CONNECTED" | "FAILED" |
          "TIMEOUT" | "CLOSED", "kind": "NORMAL"}        (on_connection_change, any time)
  stdout {"event": "error", "chat_id": -1, "error": "..."} (a call's method raised)
  stdin  {"cmd": "quit"} or end of input -> stop every call and exit 0.

argv[1]: a directory for the PCM files (created if missing; the files are removed at exit).
Optional argv[2]: seconds of tone per file (default 2; the file is looped).
"""

import asyncio
import json
import math
import os
import shlex
import sys
import threading
from array import array

RATE = 48000
CHANNELS = 1
AMPLITUDE = 0.3


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(*args):
    print("ntgcalls_driver:", *args, file=sys.stderr, flush=True)


try:
    import ntgcalls
except ImportError as e:  # the Rust side turns this into a clear failure
    emit({"event": "error", "error": f"ntgcalls not importable: {e}"})
    sys.exit(3)


def write_sine(path, hz, seconds):
    """Raw s16le mono at RATE: a whole number of periods per file, so the loop has no click."""
    periods = max(1, round(hz * seconds))
    n = int(round(periods * RATE / hz))
    samples = array(
        "h",
        (int(AMPLITUDE * 32767 * math.sin(2 * math.pi * hz * i / RATE)) for i in range(n)),
    )
    if sys.byteorder != "little":
        samples.byteswap()
    with open(path, "wb") as f:
        f.write(samples.tobytes())


class Driver:
    def __init__(self, loop, pcm_dir, seconds):
        self.loop = loop
        self.pcm_dir = pcm_dir
        self.seconds = seconds
        self.files = {}
        self.calls = set()
        self.tg = ntgcalls.NTgCalls()
        # Callbacks arrive on ntgcalls' native threads; py-tgcalls hops to its loop, so do we.
        self.tg.on_connection_change(
            lambda chat_id, info: loop.call_soon_threadsafe(self.on_change, chat_id, info)
        )

    def on_change(self, chat_id, info):
        emit(
            {
                "event": "state",
                "chat_id": chat_id,
                "state": info.state.name,
                "kind": info.kind.name,
            }
        )

    def pcm_for(self, hz):
        key = f"{hz:.3f}"
        path = self.files.get(key)
        if path is None:
            path = os.path.join(self.pcm_dir, f"sine-{key}.s16le")
            write_sine(path, hz, self.seconds)
            self.files[key] = path
        return path

    async def call(self, chat_id, hz, video=None):
        path = self.pcm_for(hz)
        # keep_open=False as py-tgcalls passes it; the shell loop keeps the tone going.
        # cat's "Broken pipe" when ntgcalls closes the pipe at stop ends the loop quietly.
        command = "sh -c " + shlex.quote(f"while cat {shlex.quote(path)} 2>/dev/null; do :; done")
        payload = await self.tg.create_call(chat_id)
        self.calls.add(chat_id)
        media = ntgcalls.MediaDescription(
            microphone=ntgcalls.AudioDescription(
                media_source=ntgcalls.MediaSource.SHELL,
                sample_rate=RATE,
                channel_count=CHANNELS,
                input=command,
                keep_open=False,
            ),
            speaker=None,
            camera=self.camera(video) if video else None,
            screen=None,
        )
        await self.tg.set_stream_sources(chat_id, ntgcalls.StreamMode.CAPTURE, media)
        emit({"event": "payload", "chat_id": chat_id, "payload": payload})

    @staticmethod
    def camera(video):
        width, height, fps = int(video["width"]), int(video["height"]), int(video["fps"])
        command = (
            "ffmpeg -nostdin -loglevel error -re -f lavfi "
            f"-i testsrc2=size={width}x{height}:rate={fps} "
            "-f rawvideo -pix_fmt yuv420p pipe:1"
        )
        return ntgcalls.VideoDescription(
            media_source=ntgcalls.MediaSource.SHELL,
            width=width,
            height=height,
            fps=fps,
            input=command,
            keep_open=False,
        )

    async def answer(self, chat_id, answer):
        await self.tg.connect(chat_id, answer, False)
        emit({"event": "connect_returned", "chat_id": chat_id})

    async def handle(self, msg):
        cmd = msg.get("cmd")
        chat_id = msg.get("chat_id")
        try:
            if cmd == "call":
                await self.call(int(chat_id), float(msg["hz"]), msg.get("video"))
            elif cmd == "answer":
                await self.answer(int(chat_id), msg["answer"])
            else:
                emit({"event": "error", "chat_id": chat_id, "error": f"unknown cmd {cmd!r}"})
        except Exception as e:  # reported per call; the process goes on
            emit({"event": "error", "chat_id": chat_id, "error": f"{type(e).__name__}: {e}"})

    async def stop_all(self):
        for chat_id in list(self.calls):
            try:
                await asyncio.wait_for(self.tg.stop(chat_id), 5)
            except Exception as e:
                log(f"stop {chat_id}: {type(e).__name__}: {e}")
        self.calls.clear()

    def cleanup(self):
        for path in self.files.values():
            try:
                os.remove(path)
            except OSError:
                pass


async def main():
    if len(sys.argv) < 2:
        emit({"event": "error", "error": "usage: ntgcalls_driver.py PCM_DIR [SECONDS]"})
        return 2
    pcm_dir = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    os.makedirs(pcm_dir, exist_ok=True)
    loop = asyncio.get_running_loop()
    driver = Driver(loop, pcm_dir, seconds)
    lines = asyncio.Queue()

    def read_stdin():
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    emit({"event": "ready", "version": ntgcalls.__version__, "pid": os.getpid()})
    tasks = set()
    try:
        while True:
            line = await lines.get()
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError as e:
                emit({"event": "error", "error": f"bad input line ({e}): {line[:200]}"})
                continue
            if msg.get("cmd") == "quit":
                break
            # Calls proceed concurrently: a slow create_call does not hold up another's answer.
            task = asyncio.ensure_future(driver.handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in list(tasks):
            task.cancel()
        await driver.stop_all()
    finally:
        driver.cleanup()
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    # ntgcalls' native threads may outlive the loop; leave without waiting on them.
    os._exit(code)
