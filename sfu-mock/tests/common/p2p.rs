//! Two `P2pCall` ends over real loopback UDP, driven by a test that plays the messenger:
//! shared by `p2p_call.rs`, `p2p_stun.rs`, `p2p_turn.rs` and `aiortc_p2p.rs` (our end of its
//! call).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use opus::{Channels, Decoder};
use ringcast_core::Datagram;
use ringcast_core::crypto::{CallCrypto, CryptoOptions, generate_certificate};
use ringcast_core::media::ToneSource;
use ringcast_core::media::track::ReceivedAudio;
use ringcast_core::p2p_call::{Command, Event, Input, Output, P2pCall, P2pConfig, P2pState};
use ringcast_core::signaling::Ssrc;
use ringcast_core::signaling::p2p::dh::TELEGRAM_DH_PRIME;
use ringcast_core::signaling::p2p::{CallKey, CalleeExchange, CallerExchange, DhParams, Role};
use sfu_mock::analysis::ToneMeter;

/// The caller's tone.
pub const CALLER_HZ: f32 = 440.0;
/// The callee's tone.
pub const CALLEE_HZ: f32 = 1000.0;

/// Deterministic stand-in for CSPRNG output.
pub fn random(seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..256).map(|_| rng.u8(..)).collect()
}

/// The three-message exchange as the messenger would carry it: returns (caller key, callee key).
pub fn dh_exchange() -> (CallKey, CallKey) {
    let params = DhParams::new(3, &TELEGRAM_DH_PRIME, 7).expect("telegram prime, g = 3");
    let server_random = random(1);
    let caller = CallerExchange::new(&params, &server_random, &random(2)).expect("caller");
    // phone.requestCall carries g_a_hash.
    let callee = CalleeExchange::new(&params, &caller.g_a_hash(), &server_random, &random(3))
        .expect("callee");
    // phone.acceptCall carries g_b.
    let g_a = *caller.g_a();
    let caller_key = caller.complete(callee.g_b()).expect("caller key");
    // phone.confirmCall carries g_a and the key fingerprint.
    let callee_key = callee
        .complete(&g_a, caller_key.fingerprint())
        .expect("callee key");
    (caller_key, callee_key)
}

/// One end: the call, its socket, its decoder and what it measured.
pub struct End {
    pub call: P2pCall,
    pub socket: UdpSocket,
    pub addr: SocketAddr,
    pub decoder: Decoder,
    pub meter: ToneMeter,
    pub timeout: Instant,
    pub connected_at: Option<Instant>,
    pub ended: Option<P2pState>,
    pub audio_packets: u64,
    /// Audio packets that carried the RFC 6464 audio level.
    pub level_packets: u64,
    /// The SSRCs audio came from, in order of appearance.
    pub remote_ssrcs: Vec<Ssrc>,
    pub decoded_frames: u64,
    /// Signaling bytes produced for the other end (the messenger's queue).
    pub outbox: Vec<Vec<u8>>,
}

impl End {
    /// An end on a fresh loopback socket with the default test configuration.
    pub fn new(role: Role, key: CallKey, seed: u64, now: Instant) -> Self {
        Self::configured(role, key, seed, now, |_| {})
    }

    /// An end on a fresh loopback socket; `configure` adjusts the configuration.
    pub fn configured(
        role: Role,
        key: CallKey,
        seed: u64,
        now: Instant,
        configure: impl FnOnce(&mut P2pConfig),
    ) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        Self::with_socket(role, key, seed, now, socket, configure)
    }

    /// An end on `socket` (non-blocking).
    pub fn with_socket(
        role: Role,
        key: CallKey,
        seed: u64,
        now: Instant,
        socket: UdpSocket,
        configure: impl FnOnce(&mut P2pConfig),
    ) -> Self {
        let addr = socket.local_addr().expect("local addr");
        let crypto = CallCrypto::new(CryptoOptions::default())
            .expect("crypto")
            .provider();
        let mut config = P2pConfig::new(
            role,
            key,
            seed,
            generate_certificate().expect("certificate"),
            addr,
        );
        config.crypto = Some(crypto);
        config.connect_timeout = Duration::from_secs(10);
        configure(&mut config);
        let call = P2pCall::new(now, config).expect("p2p call");
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
            decoded_frames: 0,
            outbox: Vec::new(),
        }
    }

    /// Drains outputs: datagrams go out the socket, signaling into the outbox.
    pub fn drain(&mut self, now: Instant) {
        let mut pcm = vec![0i16; 5760];
        loop {
            match self.call.poll_output() {
                Output::Transmit(t) => {
                    assert_eq!(t.source, self.addr);
                    // Loopback: a full buffer is not expected; losing a datagram is tolerable.
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Signaling(bytes) => self.outbox.push(bytes),
                Output::Event(Event::StateChanged(P2pState::Connected)) => {
                    self.connected_at = Some(now);
                }
                Output::Event(Event::StateChanged(s @ P2pState::Ended(_))) => {
                    self.ended = Some(s);
                }
                Output::Event(Event::AudioReceived(ReceivedAudio {
                    ssrc,
                    payload,
                    audio_level,
                    ..
                })) => {
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
                        .expect("decode opus");
                    self.decoded_frames += 1;
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

    /// Reads every datagram waiting on the socket into the call.
    pub fn read_socket(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    // Rejections (e.g. checks before the remote setup) are counted, not fatal.
                    let _ = self.call.handle_input(
                        now,
                        Input::Datagram(Datagram::new(source, self.addr, &buf[..n])),
                    );
                    self.drain(now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // ICMP port unreachable from a peer that is gone (or a pretend NAT address).
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Feeds the timeout if it is due, then drains.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.timeout {
            self.call
                .handle_input(now, Input::Timeout)
                .expect("timeout input");
        }
        self.drain(now);
    }

    /// Drives the call on its own clock (sans-IO, nothing read from the socket) from `from`,
    /// timeout after timeout, until it ends or `limit` has passed; returns the time reached.
    pub fn run_clock_until_ended(&mut self, from: Instant, limit: Duration) -> Instant {
        let mut now = from;
        while self.ended.is_none() && now < from + limit {
            now = self.timeout.max(now + Duration::from_millis(1));
            self.tick(now);
        }
        now
    }
}

/// What the messenger does with signaling bytes in flight; lets a test tamper with them.
pub type Messenger<'a> = dyn FnMut(Role, Vec<u8>) -> Vec<Vec<u8>> + 'a;

/// An end playing its role's tone ([`CALLER_HZ`] or [`CALLEE_HZ`]); `configure` adjusts the
/// call (STUN/TURN servers...).
pub fn tone_end(
    role: Role,
    key: CallKey,
    seed: u64,
    configure: impl FnOnce(&mut P2pConfig),
) -> End {
    let mut end = End::configured(role, key, seed, Instant::now(), configure);
    let hz = if role == Role::Caller {
        CALLER_HZ
    } else {
        CALLEE_HZ
    };
    set_tone(&mut end, hz);
    end
}

/// Both ends of a fresh key exchange (seeds 11 and 22), each playing its role's tone;
/// `caller` and `callee` adjust their calls.
pub fn tone_pair(
    caller: impl FnOnce(&mut P2pConfig),
    callee: impl FnOnce(&mut P2pConfig),
) -> (End, End) {
    let (caller_key, callee_key) = dh_exchange();
    (
        tone_end(Role::Caller, caller_key, 11, caller),
        tone_end(Role::Callee, callee_key, 22, callee),
    )
}

/// Plays a libopus tone of `hz`.
pub fn set_tone(end: &mut End, hz: f32) {
    let now = Instant::now();
    let tone = ToneSource::new(hz, None).expect("tone");
    end.call
        .handle_input(now, Input::Command(Command::SetSource(Box::new(tone))))
        .expect("set source");
    end.drain(now);
}

/// Checks the dominant frequency of what `end` decoded (within 3 %).
pub fn assert_tone(end: &End, expected: f32, who: &str) {
    let hz = end.meter.dominant_hz().expect("enough decoded audio");
    println!(
        "{who}: {} audio packets, dominant {hz:.1} Hz (expected {expected})",
        end.audio_packets
    );
    assert!(
        (hz - expected).abs() < expected * 0.03,
        "{who} heard {hz} Hz, expected {expected} Hz"
    );
}

/// Checks that each end heard the other's tone ([`CALLER_HZ`], [`CALLEE_HZ`]).
pub fn assert_tones(caller: &End, callee: &End) {
    assert_tone(caller, CALLEE_HZ, "caller");
    assert_tone(callee, CALLER_HZ, "callee");
}

/// Prints when each end connected, counted from `start`, after `what`.
pub fn print_connected(what: &str, caller: &End, callee: &End, start: Instant) {
    println!(
        "{what}: caller connected after {:?}, callee after {:?}",
        caller.connected_at.map(|t| t - start),
        callee.connected_at.map(|t| t - start)
    );
}

/// [`run`] with a messenger that delivers every signaling packet as sent.
pub fn run_faithful(
    caller: &mut End,
    callee: &mut End,
    limit: Duration,
    signaling_delay: Duration,
    done: impl FnMut(&End, &End) -> bool,
) {
    run(
        caller,
        callee,
        limit,
        signaling_delay,
        &mut |_, bytes| vec![bytes],
        done,
    );
}

/// Runs both ends until `done` or `limit`; signaling passes through `messenger`.
pub fn run(
    caller: &mut End,
    callee: &mut End,
    limit: Duration,
    signaling_delay: Duration,
    messenger: &mut Messenger<'_>,
    done: impl FnMut(&End, &End) -> bool,
) {
    run_with(
        caller,
        callee,
        limit,
        signaling_delay,
        messenger,
        &mut || {},
        done,
    );
}

/// [`run`], calling `each_loop` once per loop (e.g. to serve test STUN servers).
pub fn run_with(
    caller: &mut End,
    callee: &mut End,
    limit: Duration,
    signaling_delay: Duration,
    messenger: &mut Messenger<'_>,
    each_loop: &mut dyn FnMut(),
    mut done: impl FnMut(&End, &End) -> bool,
) {
    let start = Instant::now();
    let mut in_flight: VecDeque<(Instant, Role, Vec<u8>)> = VecDeque::new();
    caller.drain(start);
    callee.drain(start);
    loop {
        let now = Instant::now();
        for (from, end) in [(Role::Caller, &mut *caller), (Role::Callee, &mut *callee)] {
            for bytes in end.outbox.drain(..) {
                for delivered in messenger(from, bytes) {
                    in_flight.push_back((now + signaling_delay, from, delivered));
                }
            }
        }
        while in_flight.front().is_some_and(|(due, _, _)| *due <= now) {
            let Some((_, from, bytes)) = in_flight.pop_front() else {
                break;
            };
            let to = if from == Role::Caller {
                &mut *callee
            } else {
                &mut *caller
            };
            // Rejected packets are counted in stats; tests that tamper check those.
            let _ = to.call.handle_input(now, Input::Signaling(&bytes));
            to.drain(now);
        }
        each_loop();
        caller.read_socket(now);
        callee.read_socket(now);
        caller.tick(now);
        callee.tick(now);
        assert!(caller.ended.is_none(), "caller ended: {:?}", caller.ended);
        assert!(callee.ended.is_none(), "callee ended: {:?}", callee.ended);
        if done(caller, callee) {
            return;
        }
        assert!(
            now - start < limit,
            "not done within {limit:?}: caller {:?} {:?}, callee {:?} {:?}",
            caller.call.state(),
            caller.call.stats(),
            callee.call.state(),
            callee.call.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
