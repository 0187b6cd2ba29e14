//! The in-memory harness of the in-crate tests, after quinn-proto's `tests/util.rs`: both ends
//! of a call as sans-IO state machines, a virtual clock, datagrams and signaling moved by the
//! test. No sockets, threads or clock reads, so every run is the same.
//!
//! - [`GroupPair`]: a [`Call`] and [`SfuPeer`], a str0m `Rtc` in the roles Telegram's SFU
//!   takes (ICE-controlling, DTLS client), answering the call's join payload.
//! - [`P2pPair`]: a caller and a callee [`P2pCall`] with a Diffie-Hellman key between them.
//!
//! Every datagram delivered to an end is also kept (`delivered_to_call`, `delivered`), so a test
//! can replay one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionValues, RtpWrite, SeqNo, Ssrc as StrSsrc};
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};

use crate::call::{Call, CallConfig, Event, Input, Output, Transmit};
use crate::crypto::{CallCrypto, CryptoOptions, generate_certificate};
use crate::media::test_util::dominant_hz;
use crate::media::tone::ToneSource;
use crate::p2p_call::{self, P2pCall, P2pConfig};
use crate::signaling::group::{
    AUDIO_LEVEL_DEFAULT_ID, JoinPayload, JoinResponse, OPUS_DEFAULT_PT, fingerprint_hex,
    parse_fingerprint_hex,
};
use crate::signaling::p2p::dh::DH_BYTES;
use crate::signaling::p2p::{CallKey, Framing, Role};

/// Step of the virtual clock while driving a pair.
const STEP: Duration = Duration::from_millis(1);

/// The SFU's address in [`GroupPair`].
pub(crate) const SFU_ADDR: &str = "10.0.0.1:443";
/// The call's address in [`GroupPair`], the caller's in [`P2pPair`].
pub(crate) const CALL_ADDR: &str = "10.0.0.2:40000";
/// The callee's address in [`P2pPair`].
pub(crate) const CALLEE_ADDR: &str = "10.0.0.3:40000";

/// A fresh DTLS certificate.
fn cert() -> str0m::config::DtlsCert {
    generate_certificate().expect("certificate")
}

/// The validated crypto provider the runtime gives every call.
fn provider() -> Arc<str0m::crypto::CryptoProvider> {
    CallCrypto::new(CryptoOptions::default())
        .expect("crypto")
        .provider()
}

/// A transmit of one end as the datagram the other receives.
fn datagram(t: &Transmit) -> crate::Datagram<'_> {
    crate::Datagram::new(t.source, t.destination, &t.contents)
}

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Opus decoder plus everything decoded, for the dominant-frequency check.
pub(crate) struct Heard {
    decoder: opus::Decoder,
    pcm: Vec<i16>,
    /// RTP packets received.
    pub(crate) packets: u64,
}

impl Heard {
    fn new() -> Self {
        Self {
            decoder: opus::Decoder::new(48_000, opus::Channels::Mono).expect("decoder"),
            pcm: Vec::new(),
            packets: 0,
        }
    }

    fn push(&mut self, payload: &[u8]) {
        let mut frame = [0i16; 5_760];
        let n = self
            .decoder
            .decode(payload, &mut frame, false)
            .expect("decode opus");
        self.pcm.extend_from_slice(&frame[..n]);
        self.packets += 1;
    }

    /// The dominant frequency of what was heard (after the first 100 ms of codec warm-up).
    pub(crate) fn dominant_hz(&self) -> u32 {
        let skip = self.pcm.len().min(4_800);
        dominant_hz(&self.pcm[skip..], 200..=2_000)
    }
}

/// Telegram's SFU side of one participant: a full ICE agent, controlling, DTLS client.
pub(crate) struct SfuPeer {
    pub(crate) rtc: Rtc,
    ufrag: String,
    pwd: String,
    fingerprint: String,
    /// Audio the SFU received from the call.
    pub(crate) heard: Heard,
    /// Where str0m sends next: the datagrams of this peer, in order.
    outbox: Vec<Transmit>,
    timeout: Instant,
    /// SSRC the SFU forwards "another speaker" on (see [`SfuPeer::send_audio`]).
    forward_seq: u64,
}

impl SfuPeer {
    fn new(now: Instant, join: &JoinPayload) -> Self {
        let cert = cert();
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let fingerprint = fingerprint_hex(&crypto.sha256_provider.sha256(&cert.certificate));
        let (ufrag, pwd) = ("sfuUfrag".to_owned(), "sfuPasswordSfuPassword12".to_owned());
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass: pwd.clone(),
            })
            .set_dtls_cert(cert)
            .clear_codecs()
            .enable_opus(true, false)
            .clear_extension_map()
            .set_extension(AUDIO_LEVEL_DEFAULT_ID, Extension::AudioLevel)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr(SFU_ADDR), "udp").expect("candidate"));
        rtc.add_remote_candidate(Candidate::host(addr(CALL_ADDR), "udp").expect("candidate"));
        let fp = parse_fingerprint_hex(&join.fingerprints[0].fingerprint).expect("fingerprint");
        let mid = Mid::from("0");
        {
            let mut api = rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds {
                ufrag: join.ufrag.clone(),
                pass: join.pwd.clone(),
            });
            api.set_remote_fingerprint(str0m::config::Fingerprint {
                hash_func: "sha-256".to_owned(),
                bytes: fp,
            });
            api.set_ice_controlling(true);
            api.start_dtls(true).expect("start dtls");
            api.declare_media(mid, MediaKind::Audio);
            api.expect_stream_rx(StrSsrc::from(join.ssrc.0), None, mid, None);
            api.declare_stream_tx(StrSsrc::from(FORWARDED_SSRC), None, mid, None);
        }
        rtc.handle_input(str0m::Input::Timeout(now))
            .expect("start ice");
        Self {
            rtc,
            ufrag,
            pwd,
            fingerprint,
            heard: Heard::new(),
            outbox: Vec::new(),
            timeout: now,
            forward_seq: 1,
        }
    }

    /// The SFU's answer to the join payload, as Telegram's JSON (no audio section: the
    /// defaults apply).
    pub(crate) fn answer(&self) -> JoinResponse {
        let sfu = addr(SFU_ADDR);
        let json = serde_json::json!({
            "transport": {
                "ufrag": self.ufrag,
                "pwd": self.pwd,
                "fingerprints": [{"hash": "sha-256", "setup": "active", "fingerprint": self.fingerprint}],
                "candidates": [{
                    "foundation": "1", "component": "1", "protocol": "udp", "priority": "2130706431",
                    "ip": sfu.ip().to_string(), "port": sfu.port().to_string(), "type": "host",
                    "generation": "0", "network": "0", "id": "1"
                }]
            }
        });
        JoinResponse::parse(json.to_string().as_bytes()).expect("answer parses")
    }

    /// Forwards one Opus packet from "another speaker" ([`FORWARDED_SSRC`]) to the call.
    pub(crate) fn send_audio(&mut self, now: Instant, payload: &[u8]) {
        let write = RtpWrite::new(
            OPUS_DEFAULT_PT.into(),
            SeqNo::from(self.forward_seq),
            (self.forward_seq * 960) as u32,
            now,
            Arc::<[u8]>::from(payload),
        )
        .ext_vals(ExtensionValues {
            audio_level: Some(-30),
            ..Default::default()
        });
        self.forward_seq += 1;
        let mut api = self.rtc.direct_api();
        let stream = api
            .stream_tx(&StrSsrc::from(FORWARDED_SSRC))
            .expect("forwarding stream");
        stream.write_rtp(write);
    }

    /// Protects `compound`, an RTCP compound packet built by the test (well-formed or not),
    /// with the SFU's SRTCP keys: the datagram the call would receive from the SFU.
    pub(crate) fn protect_rtcp(&mut self, compound: &[u8]) -> Transmit {
        let contents = self
            .rtc
            .direct_api()
            .protect_rtcp_raw(compound)
            .expect("sfu srtp keyed");
        Transmit {
            source: addr(SFU_ADDR),
            destination: addr(CALL_ADDR),
            contents,
        }
    }

    fn receive(&mut self, now: Instant, t: &Transmit) {
        let Ok(receive) = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents) else {
            return;
        };
        // The call's datagrams are genuine; anything str0m refuses is a test failure later.
        let _ = self.rtc.handle_input(str0m::Input::Receive(now, receive));
        self.drain();
    }

    fn tick(&mut self, now: Instant) {
        if now >= self.timeout {
            let _ = self.rtc.handle_input(str0m::Input::Timeout(now));
        }
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(str0m::Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(str0m::Output::Transmit(t)) => self.outbox.push(Transmit {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(str0m::Output::Event(str0m::Event::RtpPacket(p))) => self.heard.push(&p.payload),
                Ok(str0m::Output::Event(_)) => {}
                Err(e) => panic!("sfu rtc: {e}"),
            }
        }
    }
}

/// The SSRC of the speaker [`SfuPeer::send_audio`] forwards.
pub(crate) const FORWARDED_SSRC: u32 = 0x0BAD_CAFE;

/// A group [`Call`] and its SFU, in memory.
pub(crate) struct GroupPair {
    pub(crate) now: Instant,
    pub(crate) call: Call,
    pub(crate) sfu: SfuPeer,
    /// Events the call emitted, in order.
    pub(crate) events: Vec<Event>,
    /// Audio the call received from the SFU.
    pub(crate) heard: Heard,
    /// Every datagram delivered to the call, in order.
    pub(crate) delivered_to_call: Vec<Transmit>,
    /// The call's datagrams not yet delivered to the SFU.
    to_sfu: Vec<Transmit>,
    /// Every datagram delivered to the SFU, in order, when `log_to_sfu` is set.
    pub(crate) delivered_to_sfu: Vec<Transmit>,
    /// Keep the datagrams delivered to the SFU in `delivered_to_sfu`.
    pub(crate) log_to_sfu: bool,
    call_timeout: Instant,
}

impl GroupPair {
    /// A call with `seed` that has applied the SFU's answer.
    pub(crate) fn connecting(seed: u64) -> Self {
        Self::with_answer(seed, |_| {})
    }

    /// A call with `seed` that has applied the SFU's answer as `tamper` left it.
    pub(crate) fn with_answer(seed: u64, tamper: impl FnOnce(&mut JoinResponse)) -> Self {
        Self::with_config(seed, |_| {}, tamper)
    }

    /// A call with `seed` and a VP8 camera track (the SFU's answer offers VP8 with RTX), that
    /// has applied the SFU's answer.
    pub(crate) fn with_video(seed: u64) -> Self {
        Self::with_config(
            seed,
            |config| config.video = Some(crate::media::video::VideoCodec::Vp8),
            |answer| {
                let json = serde_json::json!({
                    "transport": {"ufrag": "uuuu", "pwd": "pppppppppppppppppppppppp",
                        "fingerprints": [{"hash": "sha-256", "setup": "active",
                                          "fingerprint": (["AB"; 32].join(":"))}],
                        "candidates": [{"foundation": "1", "component": "1", "protocol": "udp",
                            "priority": "1", "ip": "10.0.0.1", "port": "443", "type": "host",
                            "generation": "0", "network": "0", "id": "1"}]},
                    "video": {"endpoint": "e", "server_sources": [],
                        "payload-types": [
                            {"id": 100, "name": "VP8", "clockrate": 90000,
                             "rtcp-fbs": [{"type": "nack"}, {"type": "nack", "subtype": "pli"},
                                          {"type": "ccm", "subtype": "fir"}, {"type": "goog-remb"}]},
                            {"id": 101, "name": "rtx", "clockrate": 90000,
                             "parameters": {"apt": 100}}],
                        "rtp-hdrexts": []}
                });
                let with_video =
                    JoinResponse::parse(json.to_string().as_bytes()).expect("video answer");
                answer.video = with_video.video;
            },
        )
    }

    /// A call with `seed`, its config as `configure` left it, that has applied the SFU's
    /// answer as `tamper` left it.
    pub(crate) fn with_config(
        seed: u64,
        configure: impl FnOnce(&mut CallConfig),
        tamper: impl FnOnce(&mut JoinResponse),
    ) -> Self {
        let now = Instant::now();
        let mut config = CallConfig::new(seed, cert());
        config.crypto = Some(provider());
        configure(&mut config);
        let mut call = Call::new(now, config).expect("call");
        let sfu = SfuPeer::new(now, &call.join_payload());
        let mut answer = sfu.answer();
        tamper(&mut answer);
        call.connect(now, &answer, addr(CALL_ADDR))
            .expect("connect");
        let mut pair = Self {
            now,
            call,
            sfu,
            events: Vec::new(),
            heard: Heard::new(),
            delivered_to_call: Vec::new(),
            to_sfu: Vec::new(),
            delivered_to_sfu: Vec::new(),
            log_to_sfu: false,
            call_timeout: now,
        };
        pair.drain_call();
        pair
    }

    /// Drives both ends for `duration` of virtual time.
    pub(crate) fn drive(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += STEP;
            let now = self.now;
            self.sfu.tick(now);
            if now >= self.call_timeout {
                self.call
                    .handle_input(now, Input::Timeout)
                    .expect("timeout input");
            }
            self.drain_call();
            self.exchange();
        }
    }

    /// Drives the call alone for `duration` of virtual time: the SFU is gone, what the call
    /// sends is lost.
    pub(crate) fn drive_call_only(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += STEP;
            if self.now >= self.call_timeout {
                self.call
                    .handle_input(self.now, Input::Timeout)
                    .expect("timeout input");
            }
            self.drain_call();
            self.to_sfu.clear();
        }
    }

    /// Moves datagrams both ways until neither end has more.
    fn exchange(&mut self) {
        loop {
            let to_call = std::mem::take(&mut self.sfu.outbox);
            for t in &to_call {
                let _ = self.deliver_to_call(t);
            }
            self.drain_call();
            let to_sfu = std::mem::take(&mut self.to_sfu);
            for t in &to_sfu {
                self.sfu.receive(self.now, t);
            }
            if self.log_to_sfu {
                self.delivered_to_sfu.extend_from_slice(&to_sfu);
            }
            if to_call.is_empty() && to_sfu.is_empty() {
                return;
            }
        }
    }

    /// Hands one datagram to the call, as the runtime would; returns what the call said.
    pub(crate) fn deliver_to_call(&mut self, t: &Transmit) -> Result<(), crate::CallError> {
        self.delivered_to_call.push(t.clone());
        let result = self
            .call
            .handle_input(self.now, Input::Datagram(datagram(t)));
        self.drain_call();
        result
    }

    /// Drains the call's outputs; its datagrams wait in `to_sfu`.
    fn drain_call(&mut self) {
        loop {
            match self.call.poll_output() {
                Output::Transmit(t) => self.to_sfu.push(t),
                Output::Event(e) => {
                    if let Event::AudioReceived(a) = &e {
                        self.heard.push(&a.payload);
                    }
                    self.events.push(e);
                }
                Output::Timeout(t) => {
                    self.call_timeout = t;
                    return;
                }
            }
        }
    }
}

/// The key both ends share, as if the Diffie-Hellman exchange had run (the exchange itself is
/// tested in `signaling::p2p`); the channel and ICE only need both ends to hold the same one.
pub(crate) fn shared_keys() -> (CallKey, CallKey) {
    let mut key = [0u8; DH_BYTES];
    fastrand::Rng::with_seed(0x5EED).fill(&mut key);
    let g_a = [3u8; DH_BYTES];
    (
        CallKey::from_parts(key, &g_a),
        CallKey::from_parts(key, &g_a),
    )
}

/// One end of a [`P2pPair`].
pub(crate) struct P2pEnd {
    pub(crate) call: P2pCall,
    pub(crate) heard: Heard,
    pub(crate) events: Vec<p2p_call::Event>,
    timeout: Instant,
    pub(crate) datagrams: Vec<Transmit>,
    signaling: Vec<Vec<u8>>,
}

impl P2pEnd {
    fn new(
        now: Instant,
        role: Role,
        key: CallKey,
        seed: u64,
        local: &str,
        framing: Framing,
    ) -> Self {
        let mut config = P2pConfig::new(role, key, seed, cert(), addr(local));
        config.crypto = Some(provider());
        config.framing = framing;
        let call = P2pCall::new(now, config).expect("p2p call");
        let mut end = Self {
            call,
            heard: Heard::new(),
            events: Vec::new(),
            timeout: now,
            datagrams: Vec::new(),
            signaling: Vec::new(),
        };
        end.drain();
        end
    }

    pub(crate) fn drain(&mut self) {
        loop {
            match self.call.poll_output() {
                p2p_call::Output::Transmit(t) => self.datagrams.push(t),
                p2p_call::Output::Signaling(bytes) => self.signaling.push(bytes),
                p2p_call::Output::Event(e) => {
                    if let p2p_call::Event::AudioReceived(a) = &e {
                        self.heard.push(&a.payload);
                    }
                    self.events.push(e);
                }
                p2p_call::Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
            }
        }
    }

    /// True once the call reported [`p2p_call::P2pState::Connected`].
    pub(crate) fn connected(&self) -> bool {
        self.events.iter().any(|e| {
            matches!(
                e,
                p2p_call::Event::StateChanged(p2p_call::P2pState::Connected)
            )
        })
    }
}

/// Two 1:1 calls in memory; the test plays the messenger (signaling is delivered at once).
pub(crate) struct P2pPair {
    pub(crate) now: Instant,
    pub(crate) caller: P2pEnd,
    pub(crate) callee: P2pEnd,
    /// Every datagram delivered to the callee, in order.
    pub(crate) delivered_to_callee: Vec<Transmit>,
    /// One-way delay of every datagram (zero: delivered in the same step).
    pub(crate) latency: Duration,
    /// Datagrams on the wire: when they arrive, and whether they go to the callee.
    in_flight: std::collections::VecDeque<(Instant, bool, Transmit)>,
    /// The messenger loses this many of the next signaling blobs (either direction).
    pub(crate) lose_signaling: usize,
}

impl P2pPair {
    pub(crate) fn new() -> Self {
        Self::with_framing(Framing::Reliable)
    }

    /// A pair whose signaling runs at `framing` (the negotiated version's).
    pub(crate) fn with_framing(framing: Framing) -> Self {
        let now = Instant::now();
        let (caller_key, callee_key) = shared_keys();
        Self {
            now,
            caller: P2pEnd::new(now, Role::Caller, caller_key, 1, CALL_ADDR, framing),
            callee: P2pEnd::new(now, Role::Callee, callee_key, 2, CALLEE_ADDR, framing),
            lose_signaling: 0,
            delivered_to_callee: Vec::new(),
            latency: Duration::ZERO,
            in_flight: std::collections::VecDeque::new(),
        }
    }

    /// Drives both ends for `duration` of virtual time.
    pub(crate) fn drive(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += STEP;
            let now = self.now;
            for end in [&mut self.caller, &mut self.callee] {
                if now >= end.timeout {
                    end.call
                        .handle_input(now, p2p_call::Input::Timeout)
                        .expect("timeout input");
                }
                end.drain();
            }
            self.exchange();
        }
    }

    fn exchange(&mut self) {
        loop {
            let mut moved = false;
            for bytes in std::mem::take(&mut self.caller.signaling) {
                moved = true;
                if self.lose_signaling > 0 {
                    self.lose_signaling -= 1;
                    continue;
                }
                let _ = self
                    .callee
                    .call
                    .handle_input(self.now, p2p_call::Input::Signaling(&bytes));
                self.callee.drain();
            }
            for bytes in std::mem::take(&mut self.callee.signaling) {
                moved = true;
                if self.lose_signaling > 0 {
                    self.lose_signaling -= 1;
                    continue;
                }
                let _ = self
                    .caller
                    .call
                    .handle_input(self.now, p2p_call::Input::Signaling(&bytes));
                self.caller.drain();
            }
            for t in std::mem::take(&mut self.caller.datagrams) {
                self.in_flight.push_back((self.now + self.latency, true, t));
            }
            for t in std::mem::take(&mut self.callee.datagrams) {
                self.in_flight
                    .push_back((self.now + self.latency, false, t));
            }
            while let Some((_, to_callee, t)) =
                self.in_flight.pop_front_if(|(due, _, _)| *due <= self.now)
            {
                moved = true;
                if to_callee {
                    let _ = self.deliver_to_callee(&t);
                } else {
                    let _ = self
                        .caller
                        .call
                        .handle_input(self.now, p2p_call::Input::Datagram(datagram(&t)));
                    self.caller.drain();
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Hands one datagram to the callee, as its runtime would; returns what the call said.
    pub(crate) fn deliver_to_callee(&mut self, t: &Transmit) -> Result<(), p2p_call::P2pCallError> {
        self.delivered_to_callee.push(t.clone());
        let result = self
            .callee
            .call
            .handle_input(self.now, p2p_call::Input::Datagram(datagram(t)));
        self.callee.drain();
        result
    }
}

/// The STUN Binding requests and responses (message types 0x0001 and 0x0101) among `sent`.
pub(crate) fn binding_messages(sent: &[Transmit]) -> Vec<Transmit> {
    sent.iter()
        .filter(|t| matches!(t.contents.get(..2), Some([0x00 | 0x01, 0x01])))
        .cloned()
        .collect()
}

/// A 20 ms tone source.
pub(crate) fn tone(hz: f32) -> Box<ToneSource> {
    Box::new(ToneSource::new(hz, None).expect("tone"))
}
