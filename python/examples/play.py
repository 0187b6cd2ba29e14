#!/usr/bin/env python3
"""Plays a file into a group chat with the asyncio API (``ringcast.Engine``).

The SFU here is sfu-mock, whose control API stands in for ``phone.joinGroupCall``::

    cargo run --release -p sfu-mock          # prints {"udp": "...", "http": "127.0.0.1:Q"}
    python python/examples/play.py 127.0.0.1:Q song.mp3 --chat -100123 --seconds 10

With Telegram, the join payload goes to ``phone.joinGroupCall`` and the answer is
``updateGroupCallConnection.params``; the rest is the same.
"""

import argparse
import asyncio
import json
import urllib.request

import ringcast


def join(sfu: str, chat: int, payload: str) -> str:
    request = urllib.request.Request(
        f"http://{sfu}/v1/chats/{chat}/join", data=payload.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sfu", help="sfu-mock's control address (host:port)")
    parser.add_argument("file", help="anything ffmpeg reads")
    parser.add_argument("--chat", type=int, default=-100123)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    engine = ringcast.Engine()
    events = engine.events()
    payload = await engine.create_call(args.chat)
    answer = await asyncio.get_running_loop().run_in_executor(
        None, join, args.sfu, args.chat, payload
    )
    await engine.connect(args.chat, answer)
    await engine.play(args.chat, args.file)

    async def show_events() -> None:
        async for event in events:
            print("event:", event)

    printer = asyncio.create_task(show_events())
    await asyncio.sleep(args.seconds)
    print("played:", await engine.time(args.chat), "s")
    print("stats:", json.dumps(await engine.stats()))
    await engine.stop(args.chat)
    printer.cancel()
    events.close()
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
