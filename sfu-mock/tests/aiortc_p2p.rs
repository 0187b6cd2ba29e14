//! Interop of a 1:1 call against aiortc, an independent WebRTC stack (Python), as the other end.
//!
//! aiortc cannot speak Telegram's encrypted call signaling, so the test plays the peer's
//! signaling layer: it holds the peer's half of the `CallKey` and its own `EncryptedChannel`,
//! decrypts our `P2pCall`'s `InitialSetup` / `Candidates` / `NegotiateChannels` into plain
//! parameters for `interop/aiortc_p2p.py`, and encrypts messages built from aiortc's ICE
//! credentials, DTLS fingerprint, host candidate and SSRC back into our call. aiortc's ORTC
//! objects are driven with those explicit parameters (no SDP). Media flows over real loopback UDP
//! between our call (driven here on a std `UdpSocket` with real time, as in `p2p_call.rs`) and
//! aiortc: full ICE, DTLS-SRTP, Opus PT 111 with the RFC 6464 audio level both ways. aiortc
//! decodes our tone and hands back its PCM (analysed here with the same FFT as every other test);
//! we decode aiortc's tone with the `opus` crate.
//!
//! Needs `python3` with `aiortc` (installed by `scripts/setup.sh`): without them the test fails,
//! it does not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::thread;
use std::time::{Duration, Instant};

use ringcast_core::p2p_call::{Command as CallCommand, Input};
use ringcast_core::signaling::Ssrc;
use ringcast_core::signaling::p2p::messages::{
    Candidates, DtlsFingerprint, DtlsSetup, InitialSetup, MediaContent, MediaKind,
    NegotiateChannels, PayloadType, RtpExtension,
};
use ringcast_core::signaling::p2p::{CallKey, EncryptedChannel, Framing, Role, SignalingMessage};
use sfu_mock::analysis::dominant_frequency_hz;

mod common;
#[path = "../../interop/python_peer.rs"]
mod python_peer;

use common::p2p::{End, dh_exchange, set_tone};
use python_peer::PythonPeer;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Our tone, and the one aiortc plays back.
const RINGCAST_HZ: f32 = 440.0;
const AIORTC_HZ: f32 = 1000.0;
/// Audio packets we want from aiortc before measuring: 2 s of 20 ms frames.
const MIN_PACKETS: u64 = 100;
/// Frames aiortc must have decoded from us (it records 3 s; 20 ms frames).
const MIN_AIORTC_FRAMES: u64 = 100;
const TOLERANCE_HZ: f32 = 5.0;

/// Our end (the call on its socket and what it decoded) and the peer's signaling layer.
struct Ours {
    end: End,
    /// The test as the peer's signaling layer: the other role's channel.
    peer_channel: EncryptedChannel,
    /// Messages our call sent, decrypted by `peer_channel`.
    received: Vec<SignalingMessage>,
}

impl Ours {
    fn new(role: Role, key: CallKey, peer_key: &CallKey, now: Instant) -> Self {
        let end = End::configured(role, key, 0xA10, now, |c| {
            c.connect_timeout = Duration::from_secs(20);
        });
        let peer_role = match role {
            Role::Caller => Role::Callee,
            Role::Callee => Role::Caller,
        };
        Self {
            end,
            peer_channel: EncryptedChannel::new(peer_key.as_bytes(), peer_role, Framing::Reliable),
            received: Vec::new(),
        }
    }

    /// Decrypts what our call signaled (the end's outbox) with the peer's channel.
    fn take_signaling(&mut self, now: Instant) {
        for bytes in std::mem::take(&mut self.end.outbox) {
            let got = self
                .peer_channel
                .receive(&bytes, now)
                .expect("our signaling decrypts with the peer's key");
            for body in got.messages {
                let msg = SignalingMessage::parse(&body).expect("our message parses");
                self.received.push(msg);
            }
        }
    }

    /// Drains outputs: datagrams out the socket, signaling decrypted by the peer's channel.
    fn drain(&mut self, now: Instant) {
        self.end.drain(now);
        self.take_signaling(now);
    }

    /// Encrypts `msg` as the peer and hands it to our call.
    fn deliver(&mut self, msg: &SignalingMessage, now: Instant) {
        let packet = self
            .peer_channel
            .send(msg.to_json().as_bytes(), now)
            .expect("peer channel send");
        self.end
            .call
            .handle_input(now, Input::Signaling(&packet))
            .expect("our call accepts the peer's message");
        self.drain(now);
    }

    /// The peer channel's acks and resends.
    fn pump_peer_channel(&mut self, now: Instant) {
        while let Some(packet) = self.peer_channel.poll_transmit(now) {
            let _ = self.end.call.handle_input(now, Input::Signaling(&packet));
            self.drain(now);
        }
    }

    fn read_socket(&mut self, now: Instant) {
        self.end.read_socket(now);
        self.take_signaling(now);
    }

    fn tick(&mut self, now: Instant) {
        self.end.tick(now);
        self.take_signaling(now);
    }
}

/// What one interop call measured.
struct Outcome {
    aiortc_frames: u64,
    aiortc_hz: f32,
    aiortc_zero_crossing_hz: f64,
    our_packets: u64,
    our_level_packets: u64,
    our_hz: f32,
    connect: Duration,
    total: Duration,
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("aiortc_p2p.py: no string {key:?} in {v}"))
}

/// One call with aiortc as the other end; `role` is ours.
fn call_aiortc(role: Role) -> Outcome {
    let start = Instant::now();
    let (caller_key, callee_key) = dh_exchange();
    let (key, peer_key) = match role {
        Role::Caller => (caller_key, callee_key),
        Role::Callee => (callee_key, caller_key),
    };
    // tgcalls roles: caller = ICE controlling + DTLS client.
    let aiortc_ice_role = match role {
        Role::Caller => "controlled",
        Role::Callee => "controlling",
    };
    let mut aiortc = PythonPeer::spawn(
        "aiortc_p2p.py",
        &[aiortc_ice_role.to_owned(), AIORTC_HZ.to_string()],
    );
    let mut ours = Ours::new(role, key, &peer_key, Instant::now());
    set_tone(&mut ours.end, RINGCAST_HZ);
    ours.take_signaling(Instant::now());

    let params = aiortc.next("parameters", Duration::from_secs(20));
    eprintln!("aiortc parameters: {params}");
    let aiortc_ssrc = params["ssrc"].as_u64().expect("ssrc") as u32;
    let candidates: Vec<String> = params["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c.as_str().expect("candidate line").to_owned())
        .collect();

    // Our call's offer, if it is the caller, went out at creation: answer under its exchange id.
    let offer_id = ours.received.iter().find_map(|m| match m {
        SignalingMessage::NegotiateChannels(n) => Some(n.exchange_id),
        _ => None,
    });
    assert_eq!(
        offer_id.is_some(),
        role == Role::Caller,
        "only the caller offers at creation: {:?}",
        ours.received
    );
    let peer_setup = InitialSetup {
        ufrag: str_field(&params, "ufrag").to_owned(),
        pwd: str_field(&params, "pwd").to_owned(),
        renomination: false,
        fingerprints: vec![DtlsFingerprint {
            hash: "sha-256".to_owned(),
            // The peer's side of tgcalls' setup: the callee answers passive, the caller actpass.
            setup: match role {
                Role::Caller => DtlsSetup::Passive,
                Role::Callee => DtlsSetup::Actpass,
            },
            fingerprint: str_field(&params, "fingerprint").to_owned(),
        }],
    };
    let peer_content = MediaContent {
        kind: MediaKind::Audio,
        ssrc: Ssrc(aiortc_ssrc),
        ssrc_groups: Vec::new(),
        payload_types: vec![PayloadType {
            id: 111,
            name: "opus".to_owned(),
            clockrate: 48_000,
            channels: 2,
            feedback_types: Vec::new(),
            parameters: vec![
                ("minptime".to_owned(), "10".to_owned()),
                ("useinbandfec".to_owned(), "1".to_owned()),
            ],
        }],
        rtp_extensions: vec![RtpExtension {
            id: 1,
            uri: AUDIO_LEVEL_URI.to_owned(),
        }],
    };
    let now = Instant::now();
    for msg in [
        SignalingMessage::InitialSetup(peer_setup),
        SignalingMessage::Candidates(Candidates { candidates }),
        SignalingMessage::NegotiateChannels(NegotiateChannels {
            exchange_id: offer_id.unwrap_or(0x5EED),
            contents: vec![peer_content],
        }),
    ] {
        ours.deliver(&msg, now);
    }

    // Everything our call said (its offer or its answer), for aiortc.
    let mut setup = None;
    let mut our_candidates = Vec::new();
    let mut content = None;
    for msg in &ours.received {
        match msg {
            SignalingMessage::InitialSetup(s) => setup = Some(s.clone()),
            SignalingMessage::Candidates(c) => our_candidates.extend(c.candidates.iter().cloned()),
            SignalingMessage::NegotiateChannels(n) => content = n.contents.first().cloned(),
            other => panic!("unexpected message from our call: {other:?}"),
        }
    }
    let setup = setup.expect("our InitialSetup");
    let content = content.expect("our NegotiateChannels");
    assert_eq!(
        setup.fingerprints[0].setup,
        InitialSetup::setup_for(role),
        "tgcalls setup for {role:?}"
    );
    let opus_pt = content
        .payload_types
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case("opus"))
        .expect("opus offered")
        .id;
    let level_id = content
        .rtp_extensions
        .iter()
        .find(|e| e.uri == AUDIO_LEVEL_URI)
        .expect("audio level offered")
        .id;
    let fingerprint = setup
        .fingerprints
        .iter()
        .find(|f| f.hash == "sha-256")
        .expect("sha-256 fingerprint");
    aiortc.send(serde_json::json!({
        "ufrag": setup.ufrag,
        "pwd": setup.pwd,
        "fingerprint": fingerprint.fingerprint,
        "candidates": our_candidates,
        "ssrc": content.ssrc.0,
        "opus_pt": opus_pt,
        "audio_level_id": level_id,
    }));

    // Real time, real UDP, until we heard enough of aiortc and aiortc reported what it heard.
    let limit = Duration::from_secs(30);
    let mut aiortc_result = None;
    loop {
        let now = Instant::now();
        ours.read_socket(now);
        ours.tick(now);
        ours.pump_peer_channel(now);
        assert!(
            ours.end.ended.is_none(),
            "our call ended: {:?}",
            ours.end.ended
        );
        if aiortc_result.is_none() {
            aiortc_result = aiortc.try_next("result");
        }
        if aiortc_result.is_some() && ours.end.audio_packets >= MIN_PACKETS {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "not done within {limit:?}: {:?}, {} packets from aiortc, aiortc result {}, stats {:?}",
            ours.end.call.state(),
            ours.end.audio_packets,
            aiortc_result.is_some(),
            ours.end.call.stats()
        );
        thread::sleep(Duration::from_millis(1));
    }
    let result = aiortc_result.expect("result");
    let connect = ours.end.connected_at.expect("connected") - start;
    let now = Instant::now();
    ours.end
        .call
        .handle_input(now, Input::Command(CallCommand::Hangup))
        .expect("hangup");
    ours.drain(now);
    aiortc.finish(Duration::from_secs(10));

    let pcm: Vec<f32> = result["pcm"]
        .as_array()
        .expect("pcm")
        .iter()
        .map(|s| s.as_i64().expect("sample") as f32 / 32768.0)
        .collect();
    let rate = result["sample_rate"].as_u64().expect("sample_rate") as u32;
    let aiortc_hz = dominant_frequency_hz(&pcm, rate).expect("aiortc decoded audible audio");
    let stats = ours.end.call.stats().clone();
    eprintln!("our stats: {stats:?}");
    assert_eq!(stats.signaling_rejected, 0);
    assert_eq!(stats.signaling_invalid, 0);
    assert_eq!(
        ours.end.remote_ssrcs,
        vec![Ssrc(aiortc_ssrc)],
        "audio only from aiortc's signaled SSRC"
    );
    assert_eq!(ours.end.call.remote_ssrc(), Some(Ssrc(aiortc_ssrc)));
    Outcome {
        aiortc_frames: result["frames"].as_u64().expect("frames"),
        aiortc_hz,
        aiortc_zero_crossing_hz: result["zero_crossing_hz"]
            .as_f64()
            .expect("zero_crossing_hz"),
        our_packets: ours.end.audio_packets,
        our_level_packets: ours.end.level_packets,
        our_hz: ours
            .end
            .meter
            .dominant_hz()
            .expect("we decoded audible audio"),
        connect,
        total: start.elapsed(),
    }
}

fn check(o: &Outcome, who: &str) {
    eprintln!(
        "{who}: connected after {:?}, total {:?}; aiortc decoded {} frames, dominant {:.1} Hz \
         (zero crossings {:.1} Hz; we played {RINGCAST_HZ}); we got {} packets ({} with audio \
         level), dominant {:.1} Hz (aiortc played {AIORTC_HZ})",
        o.connect,
        o.total,
        o.aiortc_frames,
        o.aiortc_hz,
        o.aiortc_zero_crossing_hz,
        o.our_packets,
        o.our_level_packets,
        o.our_hz
    );
    assert!(
        o.aiortc_frames >= MIN_AIORTC_FRAMES,
        "{who}: aiortc decoded only {} frames",
        o.aiortc_frames
    );
    assert!(
        (o.aiortc_hz - RINGCAST_HZ).abs() <= TOLERANCE_HZ,
        "{who}: aiortc heard {} Hz, we played {RINGCAST_HZ} Hz",
        o.aiortc_hz
    );
    // aiortc's own zero-crossing count agrees, independently of our FFT.
    assert!(
        (o.aiortc_zero_crossing_hz - f64::from(RINGCAST_HZ)).abs() <= 10.0,
        "{who}: aiortc's zero crossings say {} Hz",
        o.aiortc_zero_crossing_hz
    );
    assert!(o.our_packets >= MIN_PACKETS);
    assert!(
        (o.our_hz - AIORTC_HZ).abs() <= TOLERANCE_HZ,
        "{who}: we heard {} Hz, aiortc played {AIORTC_HZ} Hz",
        o.our_hz
    );
    // aiortc writes the audio level at the id our NegotiateChannels announced.
    assert_eq!(
        o.our_level_packets, o.our_packets,
        "{who}: aiortc's packets carry the RFC 6464 level"
    );
}

#[test]
fn aiortc_as_callee_hears_our_tone_and_we_hear_its_tone() {
    let o = call_aiortc(Role::Caller);
    check(&o, "ringcast caller, aiortc callee");
}

#[test]
fn aiortc_as_caller_hears_our_tone_and_we_hear_its_tone() {
    let o = call_aiortc(Role::Callee);
    check(&o, "ringcast callee, aiortc caller");
}
