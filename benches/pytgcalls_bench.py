#!/usr/bin/env python3
"""One py-tgcalls bot, N chats, on ringcast or on the real ntgcalls: CPU and RSS per call.

Run by benches/pytgcalls-bench.sh (which makes the network namespace, starts sfu-mock and the
two virtual environments); by hand::

    python benches/pytgcalls_bench.py --engine ringcast|ntgcalls --sfu HOST:PORT \\
        --chats 10,50,100 --seconds 10 --file tone.mp3

The bot is the same for both engines: ``PyTgCalls`` with the MTProto test double of
python/tests/sfu_double.py, ``await app.play(chat, file)`` for every chat of a step at once,
then the SFU must hear each chat's tone (``verified``). Over ``--seconds`` the process tree's
CPU (the bot and the commands its engine runs: ntgcalls runs one ffmpeg per chat, ringcast
one per distinct input) and its RSS are read from /proc. Each step prints one JSON line; the
steps go on until one is not fully verified.
"""

import argparse
import asyncio
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python", "tests"))

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--engine", choices=("ringcast", "ntgcalls"), required=True)
parser.add_argument("--sfu", required=True, help="sfu-mock's control address, host:port")
parser.add_argument("--chats", default="10,50,100", help="steps: chats at once")
parser.add_argument("--seconds", type=float, default=10.0, help="measurement per step")
parser.add_argument("--file", required=True, help="the file every chat plays (a 440 Hz tone)")
parser.add_argument("--hz", type=float, default=440.0)
args = parser.parse_args()

if args.engine == "ringcast":
    import ringcast

    ringcast.install_as_ntgcalls()

import ntgcalls  # noqa: E402
from pytgcalls import PyTgCalls  # noqa: E402
from sfu_double import Sfu, SfuBridge, bind_bridge  # noqa: E402

bind_bridge()
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(root):
    """The pids of `root` and its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except OSError:
            continue
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def usage(root):
    """(CPU seconds, RSS bytes, processes) of the tree."""
    cpu = rss = 0
    pids = tree(root)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICKS
            rss += int(fields[21]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss, len(pids)


async def main():
    sfu = Sfu(args.sfu)
    app = PyTgCalls(SfuBridge(sfu))
    await app.start()
    me = os.getpid()
    _, base_rss, _ = usage(me)
    next_chat = -900000
    for n in [int(x) for x in args.chats.split(",") if x]:
        chats = [next_chat - i for i in range(n)]
        next_chat -= n
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(*(app.play(c, args.file) for c in chats)),
                                   60 + n)
            joined = time.monotonic() - started
        except Exception as e:  # noqa: BLE001 - a step that cannot join is the limit
            print(json.dumps({"engine": args.engine, "chats": n, "error": repr(e)}), flush=True)
            break
        await asyncio.sleep(2)  # settle
        cpu0, _, _ = usage(me)
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu1, rss, procs = usage(me)
        elapsed = time.monotonic() - t0
        everyone = await sfu.chats()
        verified = 0
        for c in chats:
            entries = everyone.get(str(c)) or []
            p = entries[-1] if entries else None
            if (p and p["connected"] and p["dominant_hz"] is not None
                    and abs(p["dominant_hz"] - args.hz) <= 15):
                verified += 1
        cpu_pct = 100.0 * (cpu1 - cpu0) / elapsed
        print(json.dumps({
            "engine": args.engine,
            "ntgcalls_module": f"{ntgcalls.__name__} {ntgcalls.__version__}",
            "chats": n,
            "verified": verified,
            "join_seconds": round(joined, 2),
            "cpu_percent_of_a_core": round(cpu_pct, 1),
            "cpu_percent_per_call": round(cpu_pct / n, 3),
            "rss_mib": round(rss / 2**20, 1),
            "rss_mib_per_call": round((rss - base_rss) / 2**20 / n, 2),
            "processes": procs,
        }), flush=True)
        await asyncio.gather(*(app.leave_call(c) for c in chats), return_exceptions=True)
        if verified < n:
            break
        await asyncio.sleep(1)


asyncio.run(main())
