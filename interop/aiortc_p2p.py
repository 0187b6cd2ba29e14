#!/usr/bin/env python3
"""aiortc as the other end of a ringcast 1:1 call, for sfu-mock/tests/aiortc_p2p.rs.

aiortc cannot speak Telegram's encrypted call signaling; the Rust test plays that layer for it
(it holds the peer's half of the call key, decrypts ringcast's InitialSetup / Candidates /
NegotiateChannels and encrypts ours). This script only sees plain parameters, and drives aiortc's
ORTC-level objects (RTCIceGatherer, RTCIceTransport, RTCDtlsTransport, RTCRtpSender,
RTCRtpReceiver) with them: no SDP, no RTCPeerConnection.

Usage: aiortc_p2p.py ROLE TONE_HZ
  ROLE "controlled":  ringcast is the caller; aiortc is ICE controlled and the DTLS server.
  ROLE "controlling": ringcast is the callee; aiortc is ICE controlling and the DTLS client.
  (tgcalls roles: caller = controlling + DTLS client. aiortc's ORTC default would tie the DTLS
  server to the controlling side, so the DTLS role is set explicitly.)

Protocol (one JSON document per line):
  stdout line 1: aiortc's parameters {ufrag, pwd, fingerprint (sha-256), candidates (SDP
                 candidate lines on 127.0.0.1), ssrc}.
  stdin  line 1: ringcast's parameters {ufrag, pwd, fingerprint, candidates, ssrc, opus_pt,
                 audio_level_id}; aiortc sends and receives Opus on opus_pt with the RFC 6464
                 audio level at audio_level_id, as ringcast's NegotiateChannels announced.
  stdout line 2: what aiortc decoded from ringcast: {"frames", "samples", "sample_rate",
                 "zero_crossing_hz", "pcm"} with "pcm" the last 16384 mono samples (s16), for
                 the Rust side's FFT; or {"error": "..."}.
  Afterwards aiortc keeps sending its TONE_HZ sine until stdin is closed (bounded by a timeout).
Logs go to stderr.
"""

import asyncio
import fractions
import json
import math
import os
import sys
import time
from array import array

try:
    import aioice.ice
    from aiortc import (
        RTCCertificate,
        RTCDtlsFingerprint,
        RTCDtlsParameters,
        RTCDtlsTransport,
        RTCIceGatherer,
        RTCIceParameters,
        RTCIceTransport,
        RTCRtcpParameters,
        RTCRtpCodecParameters,
        RTCRtpHeaderExtensionParameters,
        RTCRtpReceiver,
        RTCRtpSender,
    )
    from aiortc.mediastreams import MediaStreamTrack
    from aiortc.rtcrtpparameters import (
        RTCRtpDecodingParameters,
        RTCRtpReceiveParameters,
        RTCRtpSendParameters,
    )
    from aiortc.rtcrtpreceiver import RemoteStreamTrack
    from aiortc.sdp import candidate_from_sdp, candidate_to_sdp
    from av import AudioFrame
except ImportError as e:  # the Rust test turns this into a clear failure
    print(json.dumps({"error": f"aiortc not importable: {e}"}), flush=True)
    sys.exit(3)

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
RECORD_SECONDS = 3.0
TOTAL_TIMEOUT = 25.0
RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
REPORT_SAMPLES = 16384

# aioice skips 127.0.0.1 when gathering host candidates; the test runs on loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def log(*args):
    print("aiortc_p2p:", *args, file=sys.stderr, flush=True)


class SineTrack(MediaStreamTrack):
    """A mono 48 kHz s16 sine, paced in real time like aiortc's AudioStreamTrack."""

    kind = "audio"

    def __init__(self, hz):
        super().__init__()
        self.hz = hz
        self.phase = 0.0
        self.timestamp = None
        self.start = 0.0

    async def recv(self):
        if self.timestamp is None:
            self.start = time.time()
            self.timestamp = 0
        else:
            self.timestamp += FRAME_SAMPLES
            wait = self.start + self.timestamp / RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        step = 2.0 * math.pi * self.hz / RATE
        pcm = array("h")
        for _ in range(FRAME_SAMPLES):
            pcm.append(int(12000 * math.sin(self.phase)))
            self.phase += step
        self.phase %= 2.0 * math.pi
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm.tobytes())
        frame.pts = self.timestamp
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


def frame_mono(frame):
    """First channel of an aiortc AudioFrame as s16 ints, without numpy."""
    if frame.format.name not in ("s16", "s16p"):
        raise ValueError(f"unexpected sample format {frame.format.name}")
    pcm = array("h", bytes(frame.planes[0]))
    channels = 1 if frame.format.is_planar else len(frame.layout.channels)
    return pcm[::channels][: frame.samples], frame.sample_rate


def zero_crossing_hz(samples, rate):
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2.0 / (len(samples) / rate)


async def read_line():
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run(role, tone_hz):
    controlling = role == "controlling"
    gatherer = RTCIceGatherer(iceServers=[])
    gatherer._connection.ice_controlling = controlling
    await gatherer.gather()
    ice = RTCIceTransport(gatherer)
    dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
    # tgcalls: the controlling side (caller) is the DTLS client.
    dtls._set_role("client" if controlling else "server")
    sender = RTCRtpSender(SineTrack(tone_hz), dtls)
    receiver = RTCRtpReceiver("audio", dtls)
    receiver._track = RemoteStreamTrack(kind="audio")

    local_ice = gatherer.getLocalParameters()
    fingerprint = next(
        f.value for f in dtls.getLocalParameters().fingerprints if f.algorithm == "sha-256"
    )
    candidates = [
        "candidate:" + candidate_to_sdp(c)
        for c in gatherer.getLocalCandidates()
        if c.protocol == "udp" and c.ip == "127.0.0.1"
    ]
    if not candidates:
        raise RuntimeError("aiortc gathered no 127.0.0.1 udp candidate")
    print(
        json.dumps(
            {
                "ufrag": local_ice.usernameFragment,
                "pwd": local_ice.password,
                "fingerprint": fingerprint,
                "candidates": candidates,
                "ssrc": sender._ssrc,
            }
        ),
        flush=True,
    )

    remote = json.loads(await read_line())
    log("ringcast:", remote["candidates"], "pt", remote["opus_pt"], "level id", remote["audio_level_id"])
    for line in remote["candidates"]:
        await ice.addRemoteCandidate(candidate_from_sdp(line.removeprefix("a=").removeprefix("candidate:")))
    # No end-of-candidates: aioice keeps accepting peer-reflexive pairs from ringcast's checks.

    try:
        await ice.start(RTCIceParameters(usernameFragment=remote["ufrag"], password=remote["pwd"]))
        if ice.state != "completed":
            raise RuntimeError(f"ICE ended in state {ice.state}")
        log("ice", ice.role, "completed")
        await dtls.start(
            RTCDtlsParameters(fingerprints=[RTCDtlsFingerprint(algorithm="sha-256", value=remote["fingerprint"])])
        )
        if dtls.state != "connected":
            raise RuntimeError(f"DTLS ended in state {dtls.state} (fingerprint mismatch?)")
        log("dtls", dtls._role, "connected")

        codec = RTCRtpCodecParameters(
            mimeType="audio/opus", clockRate=48000, channels=2, payloadType=remote["opus_pt"]
        )
        extensions = [RTCRtpHeaderExtensionParameters(id=remote["audio_level_id"], uri=AUDIO_LEVEL_URI)]
        rtcp = RTCRtcpParameters(cname="aiortc", ssrc=sender._ssrc, mux=True)
        await sender.send(
            RTCRtpSendParameters(codecs=[codec], headerExtensions=extensions, muxId="", rtcp=rtcp)
        )
        receiver._set_rtcp_ssrc(sender._ssrc)
        await receiver.receive(
            RTCRtpReceiveParameters(
                codecs=[codec],
                headerExtensions=extensions,
                muxId="",
                rtcp=rtcp,
                encodings=[RTCRtpDecodingParameters(ssrc=remote["ssrc"], payloadType=remote["opus_pt"])],
            )
        )

        track = receiver.track
        frame = await track.recv()
        log("first frame", frame.format.name, frame.layout.name, frame.sample_rate, frame.samples)
        loop = asyncio.get_running_loop()
        end = loop.time() + RECORD_SECONDS
        frames = 0
        pcm = array("h")
        rate = RATE
        while True:
            mono, rate = frame_mono(frame)
            pcm.extend(mono)
            frames += 1
            if loop.time() >= end:
                break
            frame = await track.recv()
        window = pcm[-REPORT_SAMPLES:]
        print(
            json.dumps(
                {
                    "frames": frames,
                    "samples": len(pcm),
                    "sample_rate": rate,
                    "zero_crossing_hz": round(zero_crossing_hz(window, rate), 1),
                    "pcm": list(window),
                }
            ),
            flush=True,
        )
        # Keep sending our tone until the Rust side has heard enough and closes stdin.
        await read_line()
    finally:
        await sender.stop()
        await receiver.stop()
        await dtls.stop()
        await ice.stop()


def main():
    role = sys.argv[1] if len(sys.argv) > 1 else "controlled"
    tone_hz = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
    code = 0
    try:
        asyncio.run(asyncio.wait_for(run(role, tone_hz), TOTAL_TIMEOUT))
    except Exception as e:  # report, never hang: the Rust side waits for a line
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        code = 1
    sys.stdout.flush()
    # A stdin reader thread may still be blocked; do not wait for it.
    os._exit(code)


if __name__ == "__main__":
    main()
