#!/usr/bin/env python3
"""aiortc playing the Telegram SFU's side of a group call, for engine-runtime/tests/aiortc_interop.rs.

Protocol (one JSON document per line):
  stdin  line 1: ringcast's join payload ({ufrag, pwd, fingerprints, ssrc}).
  stdout line 1: the "SFU answer" for Engine::connect (aiortc's ICE credentials, its sha-256
                 DTLS fingerprint with setup "active", one udp host candidate on 127.0.0.1,
                 Opus PT 111 and the ssrc-audio-level extension id aiortc offered).
  stdout line 2: {"frames": n, "samples": n, "dominant_hz": f, "zero_crossing_hz": f}
                 or {"error": "..."}.
Optional argv[1]: ringcast's socket address ip:port, added as a host candidate (aioice would
also learn it as peer-reflexive from ringcast's own checks).

Roles as with Telegram: aiortc is the offerer, hence ICE controlling; the answer we build for it
says a=setup:passive for ringcast, so aiortc is the DTLS client. Logs go to stderr.
"""

import asyncio
import json
import math
import sys
from array import array

try:
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
except ImportError as e:  # the Rust test turns this into a clear failure
    print(json.dumps({"error": f"aiortc not importable: {e}"}), flush=True)
    sys.exit(3)

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
RECORD_SECONDS = 3.0
TOTAL_TIMEOUT = 18.0

# aioice skips 127.0.0.1 when gathering host candidates; the engine listens on loopback, and the
# test must not depend on the machine's other interfaces, so gather on loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def log(*args):
    print("aiortc_sfu:", *args, file=sys.stderr, flush=True)


def parse_offer(sdp):
    out = {"fingerprints": {}, "candidates": [], "audio_level_id": None, "opus_pt": None}
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            out["ufrag"] = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            out["pwd"] = line.split(":", 1)[1]
        elif line.startswith("a=fingerprint:"):
            hash_name, value = line.split(":", 1)[1].split(" ", 1)
            out["fingerprints"][hash_name.lower()] = value.strip()
        elif line.startswith("a=mid:"):
            out["mid"] = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            parts = line[len("a=candidate:"):].split()
            # foundation component transport priority ip port typ type ...
            out["candidates"].append(
                {
                    "foundation": parts[0],
                    "component": int(parts[1]),
                    "protocol": parts[2].lower(),
                    "priority": int(parts[3]),
                    "ip": parts[4],
                    "port": int(parts[5]),
                    "type": parts[7],
                }
            )
        elif line.startswith("a=extmap:") and AUDIO_LEVEL_URI in line:
            out["audio_level_id"] = int(line.split(":", 1)[1].split()[0].split("/")[0])
        elif line.startswith("a=rtpmap:") and "opus/48000" in line.lower():
            out["opus_pt"] = int(line.split(":", 1)[1].split()[0])
    return out


def sfu_answer_json(offer, candidate, level_id):
    return {
        "transport": {
            "ufrag": offer["ufrag"],
            "pwd": offer["pwd"],
            "fingerprints": [
                {"hash": "sha-256", "setup": "active", "fingerprint": offer["fingerprints"]["sha-256"]}
            ],
            "candidates": [
                {
                    "generation": "0",
                    "component": "1",
                    "protocol": "udp",
                    "port": str(candidate["port"]),
                    "ip": candidate["ip"],
                    "foundation": candidate["foundation"],
                    "id": "1",
                    "priority": str(candidate["priority"]),
                    "type": "host",
                    "network": "0",
                }
            ],
        },
        "audio": {
            "payload-types": [
                {
                    "id": 111,
                    "name": "opus",
                    "clockrate": 48000,
                    "channels": 2,
                    "parameters": {"minptime": 10, "useinbandfec": 1},
                }
            ],
            "rtp-hdrexts": [{"id": level_id, "uri": AUDIO_LEVEL_URI}],
        },
    }


def answer_sdp(join, mid, level_id, engine_addr):
    fp = next(f for f in join["fingerprints"] if f["hash"].lower() == "sha-256")
    ssrc = int(join["ssrc"]) & 0xFFFFFFFF
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {mid}",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        f"a=ice-ufrag:{join['ufrag']}",
        f"a=ice-pwd:{join['pwd']}",
        f"a=fingerprint:sha-256 {fp['fingerprint']}",
        "a=setup:passive",
        f"a=mid:{mid}",
        "a=sendonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        f"a=extmap:{level_id} {AUDIO_LEVEL_URI}",
        f"a=ssrc:{ssrc} cname:ringcast",
    ]
    if engine_addr:
        ip, port = engine_addr.rsplit(":", 1)
        lines.append(f"a=candidate:1 1 udp 2130706431 {ip} {int(port)} typ host")
    # No a=end-of-candidates: aioice keeps accepting peer-reflexive pairs from ringcast's checks.
    return "\r\n".join(lines) + "\r\n"


def goertzel_power(samples, rate, hz):
    w = 2.0 * math.pi * hz / rate
    coeff = 2.0 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2 = s1
        s1 = s0
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant_hz(samples, rate):
    """Coarse Goertzel scan 50..4000 Hz in 10 Hz steps, then 1 Hz steps around the peak."""
    best = max(range(50, 4001, 10), key=lambda f: goertzel_power(samples, rate, f))
    fine = max(range(best - 10, best + 11), key=lambda f: goertzel_power(samples, rate, f))
    return float(fine)


def zero_crossing_hz(samples, rate):
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2.0 / (len(samples) / rate)


def frame_mono(frame):
    """First channel of an aiortc AudioFrame as floats, without numpy."""
    if frame.format.name not in ("s16", "s16p"):
        raise ValueError(f"unexpected sample format {frame.format.name}")
    pcm = array("h", bytes(frame.planes[0]))
    channels = 1 if frame.format.is_planar else len(frame.layout.channels)
    return [s / 32768.0 for s in pcm[::channels][: frame.samples]], frame.sample_rate


async def run():
    join = json.loads(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    engine_addr = sys.argv[1] if len(sys.argv) > 1 else None
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track_ready = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        if track.kind == "audio" and not track_ready.done():
            track_ready.set_result(track)

    @pc.on("connectionstatechange")
    def on_state():
        log("connection state", pc.connectionState)

    try:
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = parse_offer(pc.localDescription.sdp)
        host = [c for c in offer["candidates"] if c["ip"] == "127.0.0.1" and c["protocol"] == "udp"]
        if not host:
            raise RuntimeError(f"no 127.0.0.1 udp candidate in aiortc's offer: {offer['candidates']}")
        if offer["opus_pt"] is None:
            raise RuntimeError("aiortc offered no Opus")
        # aiortc offers Opus as PT 96; our answer says 111 (Telegram's), and aiortc adopts the
        # answer's dynamic payload type for what it receives.
        level_id = offer["audio_level_id"]
        if level_id is None:
            raise RuntimeError("aiortc offered no ssrc-audio-level extension")
        print(json.dumps(sfu_answer_json(offer, host[0], level_id)), flush=True)
        log("offer candidate", host[0]["ip"], host[0]["port"], "audio-level id", level_id)

        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer_sdp(join, offer["mid"], level_id, engine_addr), type="answer")
        )
        track = await track_ready
        frames = 0
        pcm = []
        rate = 48000
        first = await track.recv()
        log("first frame", first.format.name, first.layout.name, first.sample_rate, first.samples)
        loop = asyncio.get_running_loop()
        end = loop.time() + RECORD_SECONDS
        frame = first
        while True:
            mono, rate = frame_mono(frame)
            pcm.extend(mono)
            frames += 1
            if loop.time() >= end:
                break
            frame = await track.recv()
        window = pcm[-16384:]
        result = {
            "frames": frames,
            "samples": len(pcm),
            "sample_rate": rate,
            "dominant_hz": dominant_hz(window, rate),
            "zero_crossing_hz": round(zero_crossing_hz(window, rate), 1),
            "rms": round(math.sqrt(sum(x * x for x in window) / max(1, len(window))), 4),
        }
        print(json.dumps(result), flush=True)
    finally:
        await pc.close()


def main():
    try:
        asyncio.run(asyncio.wait_for(run(), TOTAL_TIMEOUT))
    except Exception as e:  # report, never hang: the Rust side reads one result line
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
