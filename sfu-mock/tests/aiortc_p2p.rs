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

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use opus::{Channels, Decoder};
use ringcast_core::Datagram;
use ringcast_core::crypto::{CallCrypto, CryptoOptions, generate_certificate};
use ringcast_core::media::ToneSource;
use ringcast_core::p2p_call::{
    Command as CallCommand, Event, Input, Output, P2pCall, P2pConfig, P2pState,
};
use ringcast_core::signaling::Ssrc;
use ringcast_core::signaling::p2p::messages::{
    Candidates, DtlsFingerprint, DtlsSetup, InitialSetup, MediaContent, MediaKind,
    NegotiateChannels, PayloadType, RtpExtension,
};
use ringcast_core::signaling::p2p::{CallKey, EncryptedChannel, Framing, Role, SignalingMessage};
use sfu_mock::analysis::{ToneMeter, dominant_frequency_hz};

mod common;

use common::p2p::dh_exchange;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Our tone, and the one aiortc plays back.
const RINGCAST_HZ: f32 = 440.0;
const AIORTC_HZ: f32 = 1000.0;
/// Audio packets we want from aiortc before measuring: 2 s of 20 ms frames.
const MIN_PACKETS: u64 = 100;
/// Frames aiortc must have decoded from us (it records 3 s; 20 ms frames).
const MIN_AIORTC_FRAMES: u64 = 100;
const TOLERANCE_HZ: f32 = 5.0;

/// The Python side; killed if the test panics before it exits.
struct Aiortc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Drop for Aiortc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Aiortc {
    fn spawn(ice_role: &str, tone_hz: f32) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/aiortc_p2p.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(ice_role)
            .arg(tone_hz.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 (install it and run scripts/setup.sh for aiortc): {e}")
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        // One reader thread: lines arrive through a channel so every wait is bounded.
        let (tx, lines) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn parse(what: &str, line: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("aiortc_p2p.py {what} line is not JSON ({e}): {line}"));
        if let Some(err) = v.get("error") {
            panic!(
                "aiortc_p2p.py failed before its {what}: {err} (is aiortc installed? run scripts/setup.sh)"
            );
        }
        v
    }

    fn next(&self, what: &str, limit: Duration) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("aiortc_p2p.py gave no {what} line within {limit:?}"));
        Self::parse(what, &line)
    }

    fn try_next(&self, what: &str) -> Option<serde_json::Value> {
        match self.lines.try_recv() {
            Ok(line) => Some(Self::parse(what, &line)),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                panic!("aiortc_p2p.py exited before its {what}")
            }
        }
    }

    fn send(&mut self, v: &serde_json::Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{v}").expect("write to aiortc_p2p.py");
        stdin.flush().expect("flush");
    }

    /// Closes stdin (aiortc stops sending and exits) and waits for a clean exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "aiortc_p2p.py exited with {status}");
                return;
            }
            assert!(Instant::now() < end, "aiortc_p2p.py did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Our end: the call on its socket, what it decoded, and the peer's signaling layer.
struct Ours {
    call: P2pCall,
    socket: UdpSocket,
    addr: SocketAddr,
    decoder: Decoder,
    meter: ToneMeter,
    timeout: Instant,
    connected_at: Option<Instant>,
    ended: Option<P2pState>,
    audio_packets: u64,
    /// Packets from aiortc that carried the RFC 6464 audio level.
    level_packets: u64,
    remote_ssrcs: Vec<Ssrc>,
    /// The test as the peer's signaling layer: the other role's channel.
    peer_channel: EncryptedChannel,
    /// Messages our call sent, decrypted by `peer_channel`.
    received: Vec<SignalingMessage>,
}

impl Ours {
    fn new(role: Role, key: CallKey, peer_key: &CallKey, now: Instant) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let addr = socket.local_addr().expect("local addr");
        let crypto = CallCrypto::new(CryptoOptions::default())
            .expect("crypto")
            .provider();
        let mut config = P2pConfig::new(
            role,
            key,
            0xA10,
            generate_certificate().expect("certificate"),
            addr,
        );
        config.crypto = Some(crypto);
        config.connect_timeout = Duration::from_secs(20);
        let call = P2pCall::new(now, config).expect("p2p call");
        let peer_role = match role {
            Role::Caller => Role::Callee,
            Role::Callee => Role::Caller,
        };
        Self {
            call,
            socket,
            addr,
            decoder: Decoder::new(48_000, Channels::Mono).expect("decoder"),
            meter: ToneMeter::new(),
            timeout: now,
            connected_at: None,
            ended: None,
            audio_packets: 0,
            level_packets: 0,
            remote_ssrcs: Vec::new(),
            peer_channel: EncryptedChannel::new(peer_key.as_bytes(), peer_role, Framing::Reliable),
            received: Vec::new(),
        }
    }

    /// Drains outputs: datagrams out the socket, signaling decrypted by the peer's channel.
    fn drain(&mut self, now: Instant) {
        let mut pcm = vec![0i16; 5760];
        loop {
            match self.call.poll_output() {
                Output::Transmit(t) => {
                    assert_eq!(t.source, self.addr);
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Signaling(bytes) => {
                    let got = self
                        .peer_channel
                        .receive(&bytes, now)
                        .expect("our signaling decrypts with the peer's key");
                    for body in got.messages {
                        let msg = SignalingMessage::parse(&body).expect("our message parses");
                        self.received.push(msg);
                    }
                }
                Output::Event(Event::StateChanged(P2pState::Connected)) => {
                    self.connected_at = Some(now);
                }
                Output::Event(Event::StateChanged(s @ P2pState::Ended(_))) => {
                    self.ended = Some(s);
                }
                Output::Event(Event::AudioReceived {
                    ssrc,
                    payload,
                    audio_level,
                    ..
                }) => {
                    self.audio_packets += 1;
                    if audio_level.is_some() {
                        self.level_packets += 1;
                    }
                    if !self.remote_ssrcs.contains(&ssrc) {
                        self.remote_ssrcs.push(ssrc);
                    }
                    let n = self
                        .decoder
                        .decode(&payload, &mut pcm, false)
                        .expect("decode aiortc's opus");
                    self.meter.push(&pcm[..n]);
                }
                Output::Event(_) => {}
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                _ => {}
            }
        }
    }

    /// Encrypts `msg` as the peer and hands it to our call.
    fn deliver(&mut self, msg: &SignalingMessage, now: Instant) {
        let packet = self
            .peer_channel
            .send(msg.to_json().as_bytes(), now)
            .expect("peer channel send");
        self.call
            .handle_input(now, Input::Signaling(&packet))
            .expect("our call accepts the peer's message");
        self.drain(now);
    }

    /// The peer channel's acks and resends.
    fn pump_peer_channel(&mut self, now: Instant) {
        while let Some(packet) = self.peer_channel.poll_transmit(now) {
            let _ = self.call.handle_input(now, Input::Signaling(&packet));
            self.drain(now);
        }
    }

    fn read_socket(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    // Early checks and stray packets are counted by the call, not fatal.
                    let _ = self.call.handle_input(
                        now,
                        Input::Datagram(Datagram::new(source, self.addr, &buf[..n])),
                    );
                    self.drain(now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        if now >= self.timeout {
            self.call
                .handle_input(now, Input::Timeout)
                .expect("timeout input");
        }
        self.drain(now);
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
    let mut aiortc = Aiortc::spawn(aiortc_ice_role, AIORTC_HZ);
    let mut ours = Ours::new(role, key, &peer_key, Instant::now());
    let tone = ToneSource::new(RINGCAST_HZ, None).expect("tone");
    let now = Instant::now();
    ours.call
        .handle_input(now, Input::Command(CallCommand::SetSource(Box::new(tone))))
        .expect("set source");
    ours.drain(now);

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
    aiortc.send(&serde_json::json!({
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
        assert!(ours.ended.is_none(), "our call ended: {:?}", ours.ended);
        if aiortc_result.is_none() {
            aiortc_result = aiortc.try_next("result");
        }
        if aiortc_result.is_some() && ours.audio_packets >= MIN_PACKETS {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "not done within {limit:?}: {:?}, {} packets from aiortc, aiortc result {}, stats {:?}",
            ours.call.state(),
            ours.audio_packets,
            aiortc_result.is_some(),
            ours.call.stats()
        );
        thread::sleep(Duration::from_millis(1));
    }
    let result = aiortc_result.expect("result");
    let connect = ours.connected_at.expect("connected") - start;
    let now = Instant::now();
    ours.call
        .handle_input(now, Input::Command(CallCommand::Hangup))
        .expect("hangup");
    ours.drain(now);
    aiortc.finish();

    let pcm: Vec<f32> = result["pcm"]
        .as_array()
        .expect("pcm")
        .iter()
        .map(|s| s.as_i64().expect("sample") as f32 / 32768.0)
        .collect();
    let rate = result["sample_rate"].as_u64().expect("sample_rate") as u32;
    let aiortc_hz = dominant_frequency_hz(&pcm, rate).expect("aiortc decoded audible audio");
    let stats = ours.call.stats().clone();
    eprintln!("our stats: {stats:?}");
    assert_eq!(stats.signaling_rejected, 0);
    assert_eq!(stats.signaling_invalid, 0);
    assert_eq!(
        ours.remote_ssrcs,
        vec![Ssrc(aiortc_ssrc)],
        "audio only from aiortc's signaled SSRC"
    );
    assert_eq!(ours.call.remote_ssrc(), Some(Ssrc(aiortc_ssrc)));
    Outcome {
        aiortc_frames: result["frames"].as_u64().expect("frames"),
        aiortc_hz,
        aiortc_zero_crossing_hz: result["zero_crossing_hz"]
            .as_f64()
            .expect("zero_crossing_hz"),
        our_packets: ours.audio_packets,
        our_level_packets: ours.level_packets,
        our_hz: ours.meter.dominant_hz().expect("we decoded audible audio"),
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
