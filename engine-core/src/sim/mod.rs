//! A deterministic simulator: virtual clock, seeded network, no sockets, no threads.
//!
//! A [`World`] owns an [`Endpoint`] (the same shard logic the runtime runs, minus the ring)
//! holding N calls, and one SFU (anything implementing [`SimSfu`]; `sfu-mock` implements it
//! behind its `sim` feature) and moves datagrams between them through a
//! [`NetConfig`] network: latency, jitter (which also reorders), loss, duplication. Time jumps
//! from one deadline to the next, so ten simulated seconds take as long as the work in them.
//! On top of that a test can cut chosen addresses off ([`World::partition`], [`World::heal`]),
//! lower the path MTU ([`World::set_path_mtu`]) or swap the SFU for a fresh one
//! ([`World::replace_sfu`]).
//!
//! Every datagram and event is folded, in order, into a digest ([`World::digest`]). The same
//! seed gives the same digest; a failing seed replays from the test output alone
//! (`RINGCAST_SIM_SEED`, see [`seed_from_env`]).
//!
//! # What the digest leaves out, and why
//! DTLS handshake bytes and SRTP/SRTCP ciphertext depend on key material that str0m's DTLS
//! stack draws from the OS, and RTCP sender reports carry wall-clock NTP times
//! (str0m-notes.md §3). For those datagrams the digest covers time, addresses, fate
//! (delivered, lost, duplicated), the datagram kind and, for RTP, the clear-text header
//! (SSRC, sequence number, timestamp, payload type) and length — never the ciphertext, and for
//! DTLS not the length (ECDSA signatures vary by a byte or two). STUN is hashed whole: its
//! transaction ids come from `fastrand`, which the world seeds on its thread.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use std::sync::Arc;

use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;

use crate::crypto::{CallCrypto, CryptoOptions};

use crate::call::{CallConfig, CallState, Command, Event};
use crate::demux::{DatagramKind, classify};
use crate::endpoint::{
    CallId, CallSnapshot, Endpoint, EndpointError, EndpointEvent, EndpointStats, SocketId,
};
use crate::media::FrameSource;
use crate::signaling::group::JoinResponse;
use crate::transport::Datagram;

/// The SFU side of a simulated world.
pub trait SimSfu {
    /// The SFU's one UDP address.
    fn addr(&self) -> SocketAddr;
    /// Answers a join payload with the response JSON, or an error message.
    fn join(&mut self, now: Instant, chat_id: i64, payload: &[u8]) -> Result<String, String>;
    /// A datagram arrived.
    fn handle_datagram(&mut self, now: Instant, datagram: Datagram<'_>);
    /// A deadline passed.
    fn handle_timeout(&mut self, now: Instant);
    /// Next datagram to send: `(destination, contents)`.
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
    /// Earliest deadline.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Network impairments, applied independently to every datagram in both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// One-way base latency.
    pub latency: Duration,
    /// Uniform extra delay in `0..=jitter`; reorders packets closer together than this.
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a delivered datagram is delivered twice.
    pub duplicate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// Index of a call in a [`World`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimCallId(pub usize);

/// One simulated call and what it saw. The call itself lives in the world's [`Endpoint`],
/// exactly as it would in a runtime shard.
#[derive(Debug)]
pub struct SimCall {
    /// The endpoint key.
    pub key: i64,
    /// The chat it joined on the SFU.
    pub chat_id: i64,
    /// Its outgoing SSRC.
    pub ssrc: u32,
    /// Its state, as told by its events.
    pub state: CallState,
    /// Every event it emitted, in order ([`Event::AudioReceived`] only while
    /// [`World::keep_audio_events`] is on; [`SimCall::audio_received`] counts them always).
    pub events: Vec<Event>,
    /// Every state change with the virtual time (since the epoch) it happened at.
    pub log: Vec<(Duration, CallState)>,
    /// The local (virtual socket) address the call sends from.
    pub local_addr: Option<SocketAddr>,
    /// Forwarded audio packets that reached the call.
    pub audio_received: u64,
}

impl SimCall {
    /// True once the call reached [`CallState::Connected`].
    pub fn connected(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::ConnectionChanged(CallState::Connected)))
    }

    /// Virtual time (since the epoch) of the first change into a state matching `f`.
    pub fn first_time(&self, f: impl Fn(&CallState) -> bool) -> Option<Duration> {
        self.log.iter().find(|(_, s)| f(s)).map(|(t, _)| *t)
    }
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams delivered (duplicates count twice).
    pub delivered: u64,
    /// Datagrams lost.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Datagrams dropped because their source or destination was cut off
    /// ([`World::partition`]).
    pub cut: u64,
    /// Datagrams dropped for exceeding the path MTU ([`World::set_path_mtu`]).
    pub too_big: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    deliver_at: Instant,
    /// Tie-breaker: send order, so equal delivery times stay deterministic.
    order: u64,
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

/// FNV-1a, 64 bit: tiny, stable across Rust versions and platforms (std's hashers are not
/// guaranteed to be).
#[derive(Debug, Clone, Copy)]
struct Digest(u64);

impl Digest {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    fn write_addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => self.write(&ip.octets()),
            IpAddr::V6(ip) => self.write(&ip.octets()),
        }
        self.write(&a.port().to_le_bytes());
    }
}

/// Guard against a component that keeps asking for a timeout at the current instant.
const MAX_ROUNDS_PER_INSTANT: u32 = 10_000;

/// The simulated wire: fate and timing of every datagram, and the trace of all that happens.
struct Wire {
    epoch: Instant,
    rng: fastrand::Rng,
    net: NetConfig,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    digest: Digest,
    stats: NetStats,
    trace: Option<Vec<String>>,
    /// Addresses cut off: nothing from or to them gets through.
    cut: BTreeSet<SocketAddr>,
    /// Datagrams longer than this are dropped.
    path_mtu: Option<usize>,
}

impl Wire {
    /// Puts a datagram on the wire: decides its fate and delivery time.
    fn send(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    ) {
        self.stats.sent += 1;
        self.order += 1;
        self.digest.write(b"tx");
        self.digest.write_addr(&source);
        self.digest.write_addr(&destination);
        hash_datagram(&mut self.digest, &contents);
        // Partition and MTU drops take no draw from the RNG, so a cut leaves the fate of
        // every other datagram as it was.
        let cut = self.cut.contains(&source) || self.cut.contains(&destination);
        let too_big = self.path_mtu.is_some_and(|m| contents.len() > m);
        if cut || too_big {
            let why = if cut { "CUT" } else { "TOO BIG" };
            if let Some(trace) = self.trace.as_mut() {
                let kind = classify(&contents);
                trace.push(format!(
                    "{:>10?} tx {source} -> {destination} {kind:?} len {} {why}",
                    now.saturating_duration_since(self.epoch),
                    contents.len()
                ));
            }
            if cut {
                self.stats.cut += 1;
                self.digest.write(b"cut");
            } else {
                self.stats.too_big += 1;
                self.digest.write(b"too big");
                self.digest.write_u64(contents.len() as u64);
            }
            return;
        }
        let lost = self.rng.f64() < self.net.loss;
        if let Some(trace) = self.trace.as_mut() {
            // DTLS lengths vary run to run (see the module docs), so the trace leaves them out.
            let kind = classify(&contents);
            let len = if kind == DatagramKind::Dtls {
                "-".to_owned()
            } else {
                contents.len().to_string()
            };
            trace.push(format!(
                "{:>10?} tx {source} -> {destination} {kind:?} len {len}{}",
                now.saturating_duration_since(self.epoch),
                if lost { " LOST" } else { "" }
            ));
        }
        if lost {
            self.stats.lost += 1;
            self.digest.write(b"lost");
            return;
        }
        let copies = if self.rng.f64() < self.net.duplicate {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let jitter_us = self.net.jitter.as_micros() as u64;
            let extra = if jitter_us > 0 {
                self.rng.u64(0..=jitter_us)
            } else {
                0
            };
            let deliver_at = now + self.net.latency + Duration::from_micros(extra);
            self.digest
                .write_u64(deliver_at.saturating_duration_since(now).as_micros() as u64);
            self.stats.delivered += 1;
            if copy > 0 {
                self.stats.duplicated += 1;
            }
            self.in_flight.push(Reverse(InFlight {
                deliver_at,
                order: self.order * 2 + copy,
                source,
                destination,
                contents: contents.clone(),
            }));
        }
    }

    fn record_event(&mut self, now: Instant, chat_id: i64, key: i64, e: &Event) {
        let tag = event_tag(e);
        self.digest.write(b"ev");
        self.digest.write_u64(chat_id as u64);
        self.digest.write_u64(key as u64);
        self.digest.write(tag.as_bytes());
        if let Some(trace) = self.trace.as_mut() {
            trace.push(format!(
                "{:>10?} event chat {chat_id} call {key} {tag}",
                now.saturating_duration_since(self.epoch)
            ));
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(p)| p.deliver_at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        if self.next_delivery()? <= now {
            self.in_flight.pop().map(|Reverse(p)| p)
        } else {
            None
        }
    }
}

/// A simulated world. See the [module docs](self).
pub struct World<S: SimSfu> {
    now: Instant,
    wire: Wire,
    sfu: S,
    /// The shard logic the runtime runs, minus the ring.
    endpoint: Endpoint,
    calls: Vec<SimCall>,
    /// Endpoint key -> index in `calls`.
    by_key: HashMap<i64, usize>,
    /// Virtual socket address -> endpoint socket.
    sockets: HashMap<SocketAddr, SocketId>,
    /// Seeds the calls' configs.
    call_rng: fastrand::Rng,
    cert: DtlsCert,
    crypto: Arc<CryptoProvider>,
    rounds_at_now: u32,
    /// Keep [`Event::AudioReceived`] in [`SimCall::events`].
    keep_audio_events: bool,
    /// [`CallConfig::mtu`] of calls added from now on.
    call_mtu: Option<usize>,
    /// Called with `true` right before and `false` right after each pacer tick of the
    /// endpoint (a test's counting allocator uses it to attribute allocations).
    tick_hook: Option<fn(bool)>,
}

impl<S: SimSfu> std::fmt::Debug for World<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("elapsed", &self.elapsed())
            .field("calls", &self.calls.len())
            .field("net", &self.wire.stats)
            .finish_non_exhaustive()
    }
}

/// A crypto provider for simulated components: dimpl's RNG seeded from `seed` so DTLS
/// retransmission timing repeats. Never use it outside a simulation.
pub fn sim_crypto(seed: u64) -> Arc<CryptoProvider> {
    let options = CryptoOptions {
        dangerous_rng_seed: Some(seed),
        ..CryptoOptions::default()
    };
    match CallCrypto::new(options) {
        Ok(c) => c.provider(),
        // The same configuration builds in every other place; this cannot fail differently.
        Err(e) => panic!("simulator dtls config: {e}"),
    }
}

/// The seed from `RINGCAST_SIM_SEED` if set and valid, else `default`. Tests print the seed
/// they ran with so a failure can be replayed.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("RINGCAST_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

impl<S: SimSfu> World<S> {
    /// A world starting at `epoch` (any instant; only offsets from it matter), seeded with
    /// `seed`. `cert` is the DTLS certificate every call uses. Seeds `fastrand`'s thread-local
    /// generator, which str0m draws from.
    pub fn new(seed: u64, epoch: Instant, net: NetConfig, sfu: S, cert: DtlsCert) -> Self {
        fastrand::seed(seed);
        let mut digest = Digest(Digest::OFFSET);
        digest.write_u64(seed);
        Self {
            now: epoch,
            wire: Wire {
                epoch,
                rng: fastrand::Rng::with_seed(seed ^ 0x5151_5151_5151_5151),
                net,
                in_flight: BinaryHeap::new(),
                order: 0,
                digest,
                stats: NetStats::default(),
                trace: None,
                cut: BTreeSet::new(),
                path_mtu: None,
            },
            sfu,
            endpoint: Endpoint::new(epoch, 0),
            calls: Vec::new(),
            by_key: HashMap::new(),
            sockets: HashMap::new(),
            call_rng: fastrand::Rng::with_seed(seed.rotate_left(17) ^ 0xA5A5),
            cert,
            crypto: sim_crypto(seed),
            rounds_at_now: 0,
            keep_audio_events: true,
            call_mtu: None,
            tick_hook: None,
        }
    }

    /// Virtual time since the epoch.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.wire.epoch)
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The SFU.
    pub fn sfu(&self) -> &S {
        &self.sfu
    }

    /// The SFU, mutably.
    pub fn sfu_mut(&mut self) -> &mut S {
        &mut self.sfu
    }

    /// The calls.
    pub fn calls(&self) -> &[SimCall] {
        &self.calls
    }

    /// One call.
    pub fn call(&self, id: SimCallId) -> Option<&SimCall> {
        self.calls.get(id.0)
    }

    /// A live call's snapshot from the endpoint (`None` once it ended and was reaped).
    pub fn snapshot(&self, id: SimCallId) -> Option<CallSnapshot> {
        let key = self.calls.get(id.0)?.key;
        self.endpoint.call(CallId(key))
    }

    /// Sets a function called with `true` right before and `false` right after every pacer
    /// tick (`Endpoint::handle_timeout`): everything a tick does for its calls (frame fetch,
    /// RTP write, SRTP, queueing the datagrams) happens between the two.
    pub fn set_tick_hook(&mut self, hook: Option<fn(bool)>) {
        self.tick_hook = hook;
    }

    /// Turns the endpoint's per-call panic guard off or on (for the benchmark of its cost,
    /// `benches/benches/panic_guard.rs`).
    pub fn set_panic_guard(&mut self, on: bool) {
        self.endpoint.set_panic_guard(on);
    }

    /// The endpoint's counters.
    pub fn endpoint_stats(&self) -> &EndpointStats {
        self.endpoint.stats()
    }

    /// Network counters.
    pub fn net_stats(&self) -> NetStats {
        self.wire.stats
    }

    /// Changes the network's impairments from now on (datagrams in flight keep their fate).
    pub fn set_net(&mut self, net: NetConfig) {
        self.wire.net = net;
    }

    /// Keeps a readable line per datagram and event (for diffing two runs of a seed).
    pub fn keep_trace(&mut self, on: bool) {
        self.wire.trace = on.then(Vec::new);
    }

    /// Whether [`Event::AudioReceived`] goes into [`SimCall::events`] (default on). Long
    /// runs with forwarding turn it off: the events are counted in
    /// [`SimCall::audio_received`] either way.
    pub fn keep_audio_events(&mut self, on: bool) {
        self.keep_audio_events = on;
    }

    /// Cuts `addrs` off from now on: every datagram from or to one of them is dropped
    /// (datagrams already in flight still arrive). Adds to any earlier cut.
    pub fn partition(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let before = self.wire.cut.len();
        self.wire.cut.extend(addrs);
        let label = format!("partition {} addresses", self.wire.cut.len() - before);
        self.note(&label);
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.wire.cut.clear();
        self.note("heal");
    }

    /// Drops every datagram longer than `mtu` bytes (UDP payload) from now on; `None` lifts
    /// the limit.
    pub fn set_path_mtu(&mut self, mtu: Option<usize>) {
        self.wire.path_mtu = mtu;
        self.note(&format!("path mtu {mtu:?}"));
    }

    /// The [`CallConfig::mtu`] given to calls added from now on.
    pub fn set_call_mtu(&mut self, mtu: Option<usize>) {
        self.call_mtu = mtu;
    }

    /// Replaces the SFU (for example with a fresh one on the same address: a restart that
    /// loses every participant) and returns the old one. Datagrams in flight to the SFU
    /// reach the new one.
    pub fn replace_sfu(&mut self, sfu: S) -> S {
        self.note("sfu replaced");
        std::mem::replace(&mut self.sfu, sfu)
    }

    /// Folds a label into the digest and the trace (marks a scripted disturbance).
    pub fn note(&mut self, label: &str) {
        self.wire.digest.write(b"note");
        self.wire.digest.write(label.as_bytes());
        let elapsed = self.elapsed();
        if let Some(trace) = self.wire.trace.as_mut() {
            trace.push(format!("{elapsed:>10?} note {label}"));
        }
    }

    /// The readable trace, if kept.
    pub fn trace(&self) -> &[String] {
        self.wire.trace.as_deref().unwrap_or(&[])
    }

    /// The trace digest so far.
    pub fn digest(&self) -> u64 {
        self.wire.digest.0
    }

    /// Creates a call, joins it to `chat_id` on the SFU, applies the answer and starts
    /// `source` playing. Sockets are added as the socket rule requires (one per call when
    /// every chat is on the same SFU address).
    pub fn add_call(
        &mut self,
        chat_id: i64,
        source: Box<dyn FrameSource>,
    ) -> Result<SimCallId, String> {
        self.add_call_with(chat_id, source, None)
    }

    /// [`World::add_call`] with a camera track showing `video` (its codec announced in the
    /// join payload).
    pub fn add_video_call(
        &mut self,
        chat_id: i64,
        source: Box<dyn FrameSource>,
        video: Box<dyn crate::media::VideoSource>,
    ) -> Result<SimCallId, String> {
        self.add_call_with(chat_id, source, Some(video))
    }

    fn add_call_with(
        &mut self,
        chat_id: i64,
        source: Box<dyn FrameSource>,
        video: Option<Box<dyn crate::media::VideoSource>>,
    ) -> Result<SimCallId, String> {
        let n = self.calls.len();
        let key = n as i64;
        let mut config = CallConfig::new(self.call_rng.u64(..), self.cert.clone());
        config.crypto = Some(self.crypto.clone());
        config.mtu = self.call_mtu;
        config.video = video.as_ref().map(|v| v.codec());
        let payload = self
            .endpoint
            .create_call(self.now, CallId(key), config)
            .map_err(|e| e.to_string())?;
        let answer = self.sfu.join(self.now, chat_id, payload.as_bytes())?;
        let response = JoinResponse::parse(answer.as_bytes()).map_err(|e| e.to_string())?;
        match self.endpoint.connect(self.now, CallId(key), &response) {
            Ok(_) => {}
            Err(EndpointError::NoFreeSocket) => {
                let k = self.sockets.len();
                // 198.18.0.0/15 is reserved for benchmarking (RFC 2544); these addresses are
                // virtual.
                let ip = Ipv4Addr::new(198, 18, (k / 250) as u8, (k % 250 + 1) as u8);
                let addr = SocketAddr::new(IpAddr::V4(ip), 40_000);
                let id = self.endpoint.add_socket(addr);
                self.sockets.insert(addr, id);
                self.endpoint
                    .connect(self.now, CallId(key), &response)
                    .map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
        self.endpoint
            .command(self.now, CallId(key), Command::SetSource(source))
            .map_err(|e| e.to_string())?;
        if let Some(video) = video {
            self.endpoint
                .command(self.now, CallId(key), Command::SetVideoSource(video))
                .map_err(|e| e.to_string())?;
        }
        let (ssrc, local_addr) = self
            .endpoint
            .call(CallId(key))
            .map_or((0, None), |c| (c.ssrc, c.local_addr));
        self.calls.push(SimCall {
            key,
            chat_id,
            ssrc,
            state: CallState::New,
            events: Vec::new(),
            log: Vec::new(),
            local_addr,
            audio_received: 0,
        });
        self.by_key.insert(key, n);
        self.drain_endpoint();
        self.drain_sfu();
        Ok(SimCallId(n))
    }

    /// Gives a command to a call.
    pub fn command(&mut self, id: SimCallId, cmd: Command) -> Result<(), String> {
        let key = self.calls.get(id.0).ok_or("no such call")?.key;
        self.endpoint
            .command(self.now, CallId(key), cmd)
            .map_err(|e| e.to_string())?;
        self.drain_endpoint();
        Ok(())
    }

    /// Advances to the next deadline or delivery and processes everything due then.
    /// Returns false if nothing at all is scheduled.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_instant() else {
            return false;
        };
        if next > self.now {
            self.now = next;
            self.rounds_at_now = 0;
        } else {
            self.rounds_at_now += 1;
            if self.rounds_at_now > MAX_ROUNDS_PER_INSTANT {
                // Something keeps asking to run "now": move time on by a millisecond rather
                // than spin forever. Counted in the digest so it cannot hide.
                self.wire.digest.write(b"stall");
                self.now += Duration::from_millis(1);
                self.rounds_at_now = 0;
            }
        }
        let now = self.now;
        while let Some(p) = self.wire.pop_due(now) {
            self.deliver(p);
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            if let Some(hook) = self.tick_hook {
                hook(true);
            }
            self.endpoint.handle_timeout(now);
            if let Some(hook) = self.tick_hook {
                hook(false);
            }
        }
        self.drain_endpoint();
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        self.drain_sfu();
        true
    }

    /// Steps until `done(self)` is true or `limit` of virtual time has passed since the call.
    /// Returns whether `done` became true.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        done(self)
    }

    /// Steps for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    fn next_instant(&mut self) -> Option<Instant> {
        let mut next = self.wire.next_delivery();
        self.drain_endpoint();
        if let Some(t) = self.endpoint.poll_timeout() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if let Some(t) = self.sfu.poll_timeout() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    fn deliver(&mut self, p: InFlight) {
        self.wire.digest.write(b"rx");
        if p.destination == self.sfu.addr() {
            self.sfu.handle_datagram(
                self.now,
                Datagram {
                    source: p.source,
                    destination: p.destination,
                    contents: &p.contents,
                },
            );
            // The delivered datagram's buffer goes back to the endpoint, as a runtime hands
            // back what its socket sent (the send fast path then allocates nothing).
            self.endpoint.recycle(p.contents);
            self.drain_sfu();
            return;
        }
        if let Some(&socket) = self.sockets.get(&p.destination) {
            self.endpoint
                .handle_datagram(self.now, socket, p.source, &p.contents);
            self.drain_endpoint();
        }
    }

    /// Moves the endpoint's datagrams onto the wire and its events into the calls' logs.
    fn drain_endpoint(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            let source = self
                .endpoint
                .socket_addr(t.socket)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            self.wire.send(self.now, source, t.destination, t.contents);
        }
        let elapsed = self.elapsed();
        while let Some((CallId(key), e)) = self.endpoint.poll_event() {
            let EndpointEvent::Group(e) = e else {
                continue; // the world holds group calls only
            };
            let Some(sim) = self.by_key.get(&key).and_then(|i| self.calls.get_mut(*i)) else {
                continue;
            };
            if let Event::ConnectionChanged(state) = &e {
                sim.state = state.clone();
                sim.log.push((elapsed, state.clone()));
            }
            self.wire.record_event(self.now, sim.chat_id, sim.key, &e);
            if matches!(e, Event::AudioReceived(_)) {
                sim.audio_received += 1;
                if !self.keep_audio_events {
                    continue;
                }
            }
            sim.events.push(e);
        }
    }

    fn drain_sfu(&mut self) {
        let src = self.sfu.addr();
        while let Some((dst, contents)) = self.sfu.poll_transmit() {
            self.wire.send(self.now, src, dst, contents);
        }
    }
}

/// Folds the deterministic parts of a datagram into the digest (see the module docs).
fn hash_datagram(digest: &mut Digest, contents: &[u8]) {
    match classify(contents) {
        DatagramKind::Stun => {
            digest.write(b"stun");
            digest.write(contents);
        }
        DatagramKind::Dtls => {
            digest.write(b"dtls");
            // Content type only (handshake, alert, application data).
            digest.write(contents.get(..1).unwrap_or(&[]));
        }
        DatagramKind::Rtp => {
            digest.write(b"rtp");
            let pt = contents.get(1).map_or(0, |b| b & 0x7F);
            if (64..=95).contains(&pt) {
                // SRTCP: sender reports carry wall-clock NTP time; type only.
                digest.write(contents.get(1..2).unwrap_or(&[]));
            } else {
                digest.write(contents.get(..12).unwrap_or(&[]));
                digest.write_u64(contents.len() as u64);
            }
        }
        DatagramKind::Unknown => {
            digest.write(b"other");
            digest.write(contents);
        }
    }
}

/// A stable name for an event (payload bytes excluded: they are ciphertext-independent but
/// large; the RTP header is hashed with the datagram already).
fn event_tag(e: &Event) -> String {
    match e {
        Event::ConnectionChanged(s) => format!("conn:{s:?}"),
        Event::StreamEnded { error, .. } => {
            format!("end:{:?}", error.as_ref().map(ToString::to_string))
        }
        Event::MediaStateChanged(m) => format!("media:{}:{}", m.paused, m.muted),
        Event::AudioReceived(a) => format!("audio:{}:{}", a.ssrc.0, a.seq),
        Event::VideoReceived(v) => format!(
            "video:{}:{}:{}:{}",
            v.endpoint, v.ssrc.0, v.frame.rtp_time, v.frame.keyframe
        ),
    }
}
