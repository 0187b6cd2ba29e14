//! The simulation sweep behind `ringcast sim`: many seeds, many scenarios, dozens of calls
//! each, and a verdict for every call.
//!
//! One *run* is one [`Scenario`] with one seed: a [`World`] of 24 to 32 calls in 4 to 8 chats
//! on one [`Sfu`], each chat playing its own tone, driven through the scenario's script. The
//! seed draws everything the scenario leaves open (loss rate, jitter, partition start and
//! length, which calls are cut off, path MTU, ...), then seeds the world itself, so the same
//! `(scenario, seed)` gives the same [`RunReport::digest`] wherever and whenever it runs.
//!
//! Every call gets an [`Expect`]ation from its scenario and must meet it at the end of the
//! run:
//!
//! - **stream**: the call is `Connected`; after the last disturbance, once the SFU hears
//!   every such call again (waited for, within a limit), the SFU received in the final 3 s at
//!   least 80 % of the frames the network's loss lets through, decoded them to the chat's tone
//!   (the SFU's own FFT analysis of the latest ~0.34 s: ±5 Hz on a clean network, ±40 Hz
//!   with loss, duplication or reordering), and, where the SFU forwards, audio from the chat
//!   reached the call again;
//! - **end**: the call ended with the given typed reason inside a time window, and the
//!   endpoint reaped it.
//!
//! Anything else (stuck `Connecting`, connected but silent, ended where it had to recover,
//! ended too early or too late, not reaped) is a failure with a message. A failing run prints
//! the one command that replays it ([`replay_command`]).
//!
//! See [`Scenario`] for what each scenario does and expects.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ringcast_core::call::{DEFAULT_CONNECT_TIMEOUT, IceTimings};
use ringcast_core::media::{FrameSource, OpusFrame, SourceError, ToneSource};
use ringcast_core::sim::{NetConfig, SimCallId, World, sim_crypto};
use ringcast_core::{CallState, EndReason};

use crate::server::generate_cert;
use crate::{ParticipantStats, Sfu, SfuConfig};

/// The simulated SFU's address (198.18.0.0/15 is reserved for benchmarking, RFC 2544).
const SFU_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 19, 0, 1)),
    3478,
);
/// One Opus frame.
const FRAME: Duration = Duration::from_millis(20);
/// The dominant frequency the SFU decodes must be this close to the chat's tone on a network
/// without loss, duplication or reordering.
const TONE_TOLERANCE_HZ: f32 = 5.0;
/// The same where the network reorders (jitter above the 20 ms packet spacing), duplicates
/// or loses: the SFU decodes what arrives in arrival order, without a jitter
/// buffer or loss concealment, so reordered, repeated and missing frames put phase jumps into
/// the analysed audio and
/// smear the peak by up to ~25 Hz. Still well under half the 110 Hz between two chats'
/// tones, so a call carrying another chat's audio (or silence) still fails.
const IMPAIRED_TONE_TOLERANCE_HZ: f32 = 40.0;
/// Share of the frames a call should have got through the network's loss that the SFU must
/// have received.
const MIN_DELIVERY: f64 = 0.8;
/// After connecting (or a heal), how long the SFU may take to hear every call that must
/// stream. The SFU is the DTLS client: when the call's final handshake flight is lost, the
/// call is connected (and sending) but the SFU decrypts nothing until its own retransmission
/// timer (100 ms, doubling) brings the flight again. Applies to clean and lightly impaired
/// networks; see [`LOSSY_SFU_HEAR_LIMIT`].
const SFU_HEAR_LIMIT: Duration = Duration::from_secs(5);
/// [`SFU_HEAR_LIMIT`] in the `lossy` scenario: at 30 % loss the SFU's retransmission and the
/// call's answer both have to get through, and the SFU's timer has doubled to seconds after a
/// few misses (seed 55: retransmissions at +0.2, +0.6, +1.4, +3.4, +6.1, +11 s).
const LOSSY_SFU_HEAR_LIMIT: Duration = Duration::from_secs(20);
/// How often the wait for the SFU looks at its counters.
const SFU_HEAR_POLL: Duration = Duration::from_millis(100);
/// Streaming measured at the end of a run, once the SFU hears every call.
const VERIFY_WINDOW: Duration = Duration::from_secs(3);
/// The SFU decodes only this last part of a run: its tone analysis keeps ~0.34 s.
const ANALYSED_TAIL: Duration = Duration::from_millis(600);
/// Slack on "ended by" deadlines: one-way latency, jitter and timer granularity.
const END_SLACK: Duration = Duration::from_millis(500);
/// Longest a clean network may take to connect every call.
const CLEAN_CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Below this path MTU (UDP payload bytes) a call left at str0m's default MTU cannot finish
/// the DTLS handshake: its server flight (certificate, key exchange, certificate request) is
/// one datagram of 635-637 bytes with the simulator's P-256 certificate (measured, see
/// docs/simulation.md). The band up to [`MTU_DEFAULT_SURE`] may go either way: certificates
/// and ECDSA signatures vary in length by a few bytes.
const MTU_DEFAULT_FAILS_BELOW: usize = 630;
/// At or above this path MTU a call at str0m's default MTU must connect.
const MTU_DEFAULT_SURE: usize = 650;

/// A scripted disturbance. Names are those `--scenario` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Loss drawn from 0-30 % (both directions, every datagram) plus a little jitter, from
    /// the start. Calls must stream; at high loss a call may instead end with
    /// `ConnectTimeout` within the connect timeout (its handshake flights kept getting lost).
    Lossy,
    /// Jitter of 20-80 ms on 20 ms packet spacing (so most packets overtake one another) and
    /// up to 3 % loss. Every call must stream.
    Reorder,
    /// 5-50 % of datagrams delivered twice, up to 3 % loss, a little jitter. Every call must
    /// stream (duplicate SRTP is dropped by the replay window, not counted twice).
    Duplicate,
    /// Base latency 20-150 ms each way plus 0-250 ms of jitter, up to 3 % loss. Every call
    /// must stream.
    Jitter,
    /// Once every call is up, a third to all of them lose their path entirely for 0.5-6 s,
    /// less than the consent timeout (`IceTimings::failed_after`, 10 s) minus a keepalive
    /// interval. Every call must stream after the heal, without anyone doing anything.
    PartitionShort,
    /// Once every call is up, a third to all of them lose their path for longer than the
    /// consent timeout; it heals 0.5-2 s after it. Every cut call must end with
    /// `IceDisconnected` between `failed_after - keepalive` and `failed_after` (+ slack)
    /// after the cut, be reaped, and stay ended after the heal; the others must stream.
    PartitionLong,
    /// Once every call is up, the SFU restarts and loses every participant: datagrams from
    /// the calls reach a fresh SFU (same address, new ICE credentials and certificate) that
    /// knows none of them and answers nothing, which is what a Telegram client sees. Every
    /// call must end with `IceDisconnected` within the consent timeout of the restart and be
    /// reaped. The application then joins again: every new call must stream.
    SfuRestart,
    /// The path drops datagrams above an MTU drawn from 576-1000 bytes (UDP payload). Half
    /// the calls, and the SFU, are told the path MTU (`CallConfig::mtu`): str0m and dimpl
    /// then fragment the DTLS handshake to fit, and those calls must stream. The other half
    /// keep str0m's default (1150): they must stream when their handshake fits and otherwise
    /// end with `ConnectTimeout` within the connect timeout.
    Mtu,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Self; 8] = [
        Self::Lossy,
        Self::Reorder,
        Self::Duplicate,
        Self::Jitter,
        Self::PartitionShort,
        Self::PartitionLong,
        Self::SfuRestart,
        Self::Mtu,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lossy => "lossy",
            Self::Reorder => "reorder",
            Self::Duplicate => "duplicate",
            Self::Jitter => "jitter",
            Self::PartitionShort => "partition-short",
            Self::PartitionLong => "partition-long",
            Self::SfuRestart => "sfu-restart",
            Self::Mtu => "mtu",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn index(self) -> u64 {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0) as u64
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The end reasons a scenario may expect, without their payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// [`EndReason::ConnectTimeout`].
    ConnectTimeout,
    /// [`EndReason::IceDisconnected`].
    IceDisconnected,
}

impl EndKind {
    fn matches(self, r: &EndReason) -> bool {
        matches!(
            (self, r),
            (Self::ConnectTimeout, EndReason::ConnectTimeout)
                | (Self::IceDisconnected, EndReason::IceDisconnected)
        )
    }
}

/// What one call must have done by the end of its run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Be connected and verified streaming since `since` (virtual time from the epoch; the
    /// end of the last disturbance that touched it).
    Stream {
        /// Frames count from here (or from the call's connection plus a settle time, if later).
        since: Duration,
    },
    /// Have ended with `reason` between `not_before` and `by` (virtual time from the epoch),
    /// and been reaped.
    End {
        /// The reason.
        reason: EndKind,
        /// Earliest acceptable end.
        not_before: Duration,
        /// Latest acceptable end.
        by: Duration,
    },
    /// Either [`Expect::Stream`] since `since`, or [`Expect::End`] with `reason` by `by`.
    StreamOr {
        /// As for [`Expect::Stream`].
        since: Duration,
        /// As for [`Expect::End`].
        reason: EndKind,
        /// As for [`Expect::End`].
        by: Duration,
    },
}

/// How a run should go besides its scenario. The default is what `ringcast sim` does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunOptions {
    /// Keep the world's readable trace and return it in [`RunReport::trace`].
    pub trace: bool,
    /// Replace every call's expectation with this one. For testing the verifier: a run with
    /// an expectation that cannot hold must report failures.
    pub force_expect: Option<Expect>,
}

/// What a call ended up as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Connected and verified streaming.
    pub verified: usize,
    /// Ended with the expected typed reason in time.
    pub ended_as_expected: usize,
    /// Met no acceptable outcome.
    pub failed: usize,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// The world's trace digest: equal for equal `(scenario, seed)`.
    pub digest: u64,
    /// Calls checked (rejoins included).
    pub calls: usize,
    /// What the calls ended up as.
    pub outcomes: Outcomes,
    /// One message per failed call (or per setup problem).
    pub failures: Vec<String>,
    /// The drawn parameters, for the log.
    pub params: String,
    /// Virtual time simulated.
    pub simulated: Duration,
    /// Wall time taken.
    pub wall: Duration,
    /// The readable trace, if [`RunOptions::trace`] asked for it.
    pub trace: Vec<String>,
}

/// The command that replays one run.
pub fn replay_command(scenario: Scenario, seed: u64) -> String {
    format!("ringcast sim --scenario {scenario} --seed {seed} --seeds 1")
}

/// Mixes the scenario into the seed so scenarios do not share random streams.
fn run_seed(scenario: Scenario, seed: u64) -> u64 {
    // SplitMix64 finaliser over (seed, scenario).
    let mut z = seed ^ (scenario.index() + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The chat's tone: 110 Hz apart, far beyond the ±5 Hz check.
fn tone_hz(chat: i64) -> f32 {
    300.0 + 110.0 * chat as f32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn draw_ms(rng: &mut fastrand::Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.u64(lo..=hi))
}

/// Frames of one second of a chat's tone, encoded once per process and looped by every call
/// of every run: encoding was a large part of a run's cost, and the bytes are the same
/// anyway (libopus is deterministic).
fn tone_frames(hz: f32) -> Result<Arc<[OpusFrame]>, String> {
    static CACHE: OnceLock<Mutex<HashMap<u32, Arc<[OpusFrame]>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(frames) = cache.get(&hz.to_bits()) {
        return Ok(frames.clone());
    }
    let mut tone = ToneSource::new(hz, None).map_err(|e| e.to_string())?;
    // Skip the encoder's start-up; 50 frames are one second, a whole number of periods of
    // every tone_hz(), so the loop has no phase jump.
    let mut frames = Vec::with_capacity(LOOP_FRAMES);
    for i in 0..LOOP_SKIP + LOOP_FRAMES {
        let frame = tone
            .next_frame()
            .map_err(|e| e.to_string())?
            .ok_or("tone ended")?;
        if i >= LOOP_SKIP {
            frames.push(frame);
        }
    }
    let frames: Arc<[OpusFrame]> = frames.into();
    cache.insert(hz.to_bits(), frames.clone());
    Ok(frames)
}

/// Frames a looped tone skips before its loop (encoder start-up).
const LOOP_SKIP: usize = 10;
/// Frames in a looped tone: one second.
const LOOP_FRAMES: usize = 50;

/// Plays [`tone_frames`] round and round.
struct LoopedTone {
    frames: Arc<[OpusFrame]>,
    next: usize,
}

impl FrameSource for LoopedTone {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        let frame = self
            .frames
            .get(self.next % self.frames.len().max(1))
            .cloned();
        self.next = self.next.wrapping_add(1);
        Ok(frame)
    }
}

/// One tracked call of a run.
struct Tracked {
    id: SimCallId,
    expect: Expect,
    /// SFU packet count and forwarded audio received at `since`, once taken.
    base: Option<(u64, u64)>,
}

/// Everything a run needs between script steps.
struct Run {
    world: World<Sfu>,
    tracked: Vec<Tracked>,
    loss: f64,
    tone_tolerance_hz: f32,
    /// The SFU forwards audio, so calls can be asked to receive it too.
    forwarding: bool,
    /// How long [`Run::verify_phase`] waits for the SFU to hear every call.
    hear_limit: Duration,
    failures: Vec<String>,
}

impl Run {
    fn add_calls(&mut self, chats: &[i64], expect: Expect) {
        for &chat in chats {
            let frames = match tone_frames(tone_hz(chat)) {
                Ok(f) => f,
                Err(e) => {
                    self.failures
                        .push(format!("setup: tone for chat {chat}: {e}"));
                    continue;
                }
            };
            let tone = LoopedTone { frames, next: 0 };
            match self.world.add_call(chat, Box::new(tone)) {
                Ok(id) => self.tracked.push(Tracked {
                    id,
                    expect,
                    base: None,
                }),
                Err(e) => self
                    .failures
                    .push(format!("setup: joining chat {chat}: {e}")),
            }
        }
    }

    /// Runs the last `d` of the run, with the SFU decoding (for the tone check) during the
    /// final [`ANALYSED_TAIL`] only.
    fn finish(&mut self, d: Duration) {
        self.world.run_for(d.saturating_sub(ANALYSED_TAIL));
        self.world.sfu_mut().set_analyse_audio(true);
        self.world.run_for(d.min(ANALYSED_TAIL));
    }

    /// Whether the SFU received something from every connected call that must stream since
    /// its last [`Run::mark_since`].
    fn sfu_hears_all(&self) -> bool {
        let stats = self.world.sfu().stats();
        self.tracked.iter().all(|t| {
            if matches!(t.expect, Expect::End { .. }) {
                return true;
            }
            let Some(call) = self.world.call(t.id) else {
                return true;
            };
            if call.state != CallState::Connected {
                return true;
            }
            let base = t.base.map_or(0, |(p, _)| p);
            find(&stats, call.chat_id, call.ssrc).is_some_and(|p| p.packets > base)
        })
    }

    /// The end of every run: waits (at most [`SFU_HEAR_LIMIT`]) until the SFU hears every
    /// call that must stream, marks every call, and streams for [`VERIFY_WINDOW`]. Returns
    /// how long the wait took.
    fn verify_phase(&mut self) -> Duration {
        let start = self.world.elapsed();
        while !self.sfu_hears_all() && self.world.elapsed() < start + self.hear_limit {
            self.world.run_for(SFU_HEAR_POLL);
        }
        let waited = self.world.elapsed().saturating_sub(start);
        let all: Vec<usize> = (0..self.tracked.len()).collect();
        self.mark_since(&all);
        self.finish(VERIFY_WINDOW);
        waited
    }

    /// Runs until every tracked call in `range` is connected (or ended), at most `limit`.
    fn run_until_connected(&mut self, from: usize, limit: Duration) -> bool {
        let ids: Vec<SimCallId> = self.tracked.iter().skip(from).map(|t| t.id).collect();
        self.world.run_until(limit, |w| {
            ids.iter().all(|id| {
                w.call(*id)
                    .is_some_and(|c| !matches!(c.state, CallState::New | CallState::Connecting))
            })
        })
    }

    /// Records, for every call expected to stream since now, the SFU's packet count and the
    /// call's forwarded-audio count, so only what comes after counts.
    fn mark_since(&mut self, which: &[usize]) {
        let stats = self.world.sfu().stats();
        let now = self.world.elapsed();
        for &i in which {
            let Some(t) = self.tracked.get_mut(i) else {
                continue;
            };
            let Some(call) = self.world.call(t.id) else {
                continue;
            };
            let packets = find(&stats, call.chat_id, call.ssrc).map_or(0, |p| p.packets);
            t.base = Some((packets, call.audio_received));
            match &mut t.expect {
                Expect::Stream { since } | Expect::StreamOr { since, .. } => *since = now,
                Expect::End { .. } => {}
            }
        }
    }

    fn cut(&mut self, which: &[usize]) {
        let addrs: Vec<SocketAddr> = which
            .iter()
            .filter_map(|i| self.tracked.get(*i))
            .filter_map(|t| self.world.call(t.id).and_then(|c| c.local_addr))
            .collect();
        self.world.partition(addrs);
    }

    /// Checks every call against its expectation.
    fn verdict(&mut self, force: Option<Expect>) -> Outcomes {
        let stats = self.world.sfu().stats();
        let end = self.world.elapsed();
        // Calls per chat expected to stream: forwarded audio can only be asked for where
        // someone else in the chat streams too.
        let mut streaming_per_chat: HashMap<i64, usize> = HashMap::new();
        for t in &self.tracked {
            if let (Expect::Stream { .. }, Some(c)) =
                (force.unwrap_or(t.expect), self.world.call(t.id))
                && c.state == CallState::Connected
            {
                *streaming_per_chat.entry(c.chat_id).or_default() += 1;
            }
        }
        let mut out = Outcomes::default();
        let mut failures = Vec::new();
        for t in &self.tracked {
            let expect = force.unwrap_or(t.expect);
            let Some(call) = self.world.call(t.id) else {
                out.failed += 1;
                failures.push(format!("call #{}: missing", t.id.0));
                continue;
            };
            let who = format!(
                "call #{} (chat {}, ssrc {})",
                t.id.0, call.chat_id, call.ssrc
            );
            let others =
                self.forwarding && streaming_per_chat.get(&call.chat_id).copied().unwrap_or(0) > 1;
            let stream = || self.check_stream(t, &stats, end, others);
            let ended = |reason: EndKind, not_before: Duration, by: Duration| {
                self.check_end(t, reason, not_before, by)
            };
            let result = match expect {
                Expect::Stream { since } => stream().map(|()| true).map_err(|e| {
                    format!("{who}: expected streaming since {:.0} ms: {e}", ms(since))
                }),
                Expect::End {
                    reason,
                    not_before,
                    by,
                } => ended(reason, not_before, by).map(|()| false).map_err(|e| {
                    format!(
                        "{who}: expected Ended({reason:?}) within {:.0}..{:.0} ms: {e}",
                        ms(not_before),
                        ms(by)
                    )
                }),
                Expect::StreamOr { since, reason, by } => match &call.state {
                    CallState::Ended(_) => ended(reason, Duration::ZERO, by)
                        .map(|()| false)
                        .map_err(|e| {
                            format!(
                                "{who}: expected streaming since {:.0} ms or Ended({reason:?}) by {:.0} ms: {e}",
                                ms(since),
                                ms(by)
                            )
                        }),
                    _ => stream().map(|()| true).map_err(|e| {
                        format!("{who}: expected streaming since {:.0} ms: {e}", ms(since))
                    }),
                },
            };
            match result {
                Ok(true) => out.verified += 1,
                Ok(false) => out.ended_as_expected += 1,
                Err(e) => {
                    out.failed += 1;
                    failures.push(e);
                }
            }
        }
        self.failures.append(&mut failures);
        out
    }

    fn check_stream(
        &self,
        t: &Tracked,
        stats: &[(i64, Vec<ParticipantStats>)],
        end: Duration,
        others: bool,
    ) -> Result<(), String> {
        let call = self.world.call(t.id).ok_or("missing")?;
        if call.state != CallState::Connected {
            return Err(format!("state {:?} (log {})", call.state, log(call)));
        }
        let since = match force_since(t.expect) {
            Some(s) => s,
            None => Duration::ZERO,
        };
        let connected_at = call
            .log
            .iter()
            .rev()
            .find(|(_, s)| *s == CallState::Connected)
            .map_or(Duration::ZERO, |(t, _)| *t);
        let from = since.max(connected_at);
        let (base_packets, base_audio) = t.base.unwrap_or((0, 0));
        let p = find(stats, call.chat_id, call.ssrc).ok_or("unknown to the sfu")?;
        let received = p.packets.saturating_sub(base_packets);
        let frames = end.saturating_sub(from).as_micros() / FRAME.as_micros();
        let want = (frames as f64 * (1.0 - self.loss) * MIN_DELIVERY) as u64;
        if frames < 25 {
            return Err(format!(
                "run too short to verify: {frames} frames between {:.0} ms and the end",
                ms(from)
            ));
        }
        if received < want {
            return Err(format!(
                "connected but the sfu received only {received} packets since {:.0} ms \
                 (want >= {want}: {frames} frames, {:.0} % loss)",
                ms(since),
                self.loss * 100.0
            ));
        }
        let hz = tone_hz(call.chat_id);
        match p.dominant_hz {
            Some(d) if (d - hz).abs() <= self.tone_tolerance_hz => {}
            Some(d) => return Err(format!("sfu decodes {d:.1} Hz, the chat plays {hz:.1} Hz")),
            None => return Err("sfu decodes silence".to_owned()),
        }
        if others && call.audio_received <= base_audio {
            return Err(format!(
                "no forwarded audio reached the call since {:.0} ms",
                ms(since)
            ));
        }
        Ok(())
    }

    fn check_end(
        &self,
        t: &Tracked,
        reason: EndKind,
        not_before: Duration,
        by: Duration,
    ) -> Result<(), String> {
        let call = self.world.call(t.id).ok_or("missing")?;
        let CallState::Ended(r) = &call.state else {
            return Err(format!("state {:?} (log {})", call.state, log(call)));
        };
        if !reason.matches(r) {
            return Err(format!("ended with {r:?} (log {})", log(call)));
        }
        let at = call
            .first_time(|s| matches!(s, CallState::Ended(_)))
            .unwrap_or_default();
        if at < not_before || at > by {
            return Err(format!("ended at {:.0} ms (log {})", ms(at), log(call)));
        }
        if self.world.snapshot(t.id).is_some() {
            return Err("ended but not reaped".to_owned());
        }
        Ok(())
    }
}

fn force_since(e: Expect) -> Option<Duration> {
    match e {
        Expect::Stream { since } | Expect::StreamOr { since, .. } => Some(since),
        Expect::End { .. } => None,
    }
}

fn find(stats: &[(i64, Vec<ParticipantStats>)], chat: i64, ssrc: u32) -> Option<&ParticipantStats> {
    stats
        .iter()
        .find(|(c, _)| *c == chat)
        .and_then(|(_, l)| l.iter().find(|p| p.ssrc == ssrc))
}

fn log(call: &ringcast_core::sim::SimCall) -> String {
    call.log
        .iter()
        .map(|(t, s)| format!("{:.0} ms {s:?}", ms(*t)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sfu_for(seed: u64, epoch: Instant, mtu: Option<usize>, forward: bool) -> Result<Sfu, String> {
    let cert = generate_cert().map_err(|e| format!("sfu certificate: {e}"))?;
    let mut config = SfuConfig::new(SFU_ADDR, seed, cert);
    config.crypto = Some(sim_crypto(seed ^ 1));
    config.mtu = mtu;
    config.forward_audio = forward;
    // Decoding starts shortly before the verdict (`Run::finish`).
    config.analyse_audio = false;
    Ok(Sfu::new(epoch, config))
}

/// Runs one scenario with one seed. See the [module docs](self).
pub fn run(scenario: Scenario, seed: u64, options: &RunOptions) -> RunReport {
    let started = Instant::now();
    let world_seed = run_seed(scenario, seed);
    let mut rng = fastrand::Rng::with_seed(world_seed.rotate_left(29) ^ 0x5EED);
    let mut report = RunReport {
        scenario,
        seed,
        digest: 0,
        calls: 0,
        outcomes: Outcomes::default(),
        failures: Vec::new(),
        params: String::new(),
        simulated: Duration::ZERO,
        wall: Duration::ZERO,
        trace: Vec::new(),
    };
    match run_inner(scenario, world_seed, &mut rng, options, &mut report) {
        Ok(mut run) => {
            report.outcomes = run.verdict(options.force_expect);
            report.calls = run.tracked.len();
            report.digest = run.world.digest();
            report.simulated = run.world.elapsed();
            if options.trace {
                report.trace = run.world.trace().to_vec();
            }
            report.failures.append(&mut run.failures);
        }
        Err(e) => report.failures.push(format!("setup: {e}")),
    }
    report.wall = started.elapsed();
    report
}

fn run_inner(
    scenario: Scenario,
    world_seed: u64,
    rng: &mut fastrand::Rng,
    options: &RunOptions,
    report: &mut RunReport,
) -> Result<Run, String> {
    let n_calls = rng.usize(24..=32);
    let n_chats = rng.usize(4..=8);
    let ice = IceTimings::default();
    // Partitions, restarts and MTU on an otherwise clean network, so the strict tone check
    // applies (half the seeds) or with up to 1 % loss (the other half).
    let quiet = |rng: &mut fastrand::Rng| NetConfig {
        latency: draw_ms(rng, 5, 40),
        jitter: draw_ms(rng, 0, 10),
        loss: if rng.bool() { 0.0 } else { rng.f64() * 0.01 },
        duplicate: 0.0,
    };
    let net = match scenario {
        Scenario::Lossy => NetConfig {
            latency: draw_ms(rng, 5, 40),
            jitter: draw_ms(rng, 0, 10),
            loss: rng.f64() * 0.30,
            duplicate: 0.0,
        },
        Scenario::Reorder => NetConfig {
            latency: draw_ms(rng, 5, 30),
            jitter: draw_ms(rng, 20, 80),
            loss: rng.f64() * 0.03,
            duplicate: 0.0,
        },
        Scenario::Duplicate => NetConfig {
            latency: draw_ms(rng, 5, 30),
            jitter: draw_ms(rng, 0, 10),
            loss: rng.f64() * 0.03,
            duplicate: 0.05 + rng.f64() * 0.45,
        },
        Scenario::Jitter => NetConfig {
            latency: draw_ms(rng, 20, 150),
            jitter: draw_ms(rng, 0, 250),
            loss: rng.f64() * 0.03,
            duplicate: 0.0,
        },
        _ => quiet(rng),
    };
    let path_mtu = (scenario == Scenario::Mtu).then(|| rng.usize(576..=1000));
    // Forwarding multiplies the work by the chat size; it is on where the verdict needs the
    // downlink (calls must hear their chat again after a partition heals).
    let forwarding = scenario == Scenario::PartitionShort;
    let epoch = Instant::now();
    let sfu = sfu_for(world_seed, epoch, path_mtu, forwarding)?;
    let cert = generate_cert().map_err(|e| format!("call certificate: {e}"))?;
    let mut world = World::new(world_seed, epoch, net.clone(), sfu, cert);
    world.keep_trace(options.trace);
    world.keep_audio_events(false);
    world.set_path_mtu(path_mtu);
    let mut run = Run {
        world,
        tracked: Vec::new(),
        loss: net.loss,
        tone_tolerance_hz: if net.jitter < FRAME && net.loss == 0.0 && net.duplicate == 0.0 {
            TONE_TOLERANCE_HZ
        } else {
            IMPAIRED_TONE_TOLERANCE_HZ
        },
        forwarding,
        hear_limit: if scenario == Scenario::Lossy {
            LOSSY_SFU_HEAR_LIMIT
        } else {
            SFU_HEAR_LIMIT
        },
        failures: Vec::new(),
    };
    let chats: Vec<i64> = (0..n_calls).map(|i| (i % n_chats) as i64 + 1).collect();
    let connect_by = DEFAULT_CONNECT_TIMEOUT + END_SLACK;
    let stream = Expect::Stream {
        since: Duration::ZERO,
    };
    report.params = format!(
        "{n_calls} calls in {n_chats} chats; latency {:.0} ms, jitter {:.0} ms, loss {:.1} %, dup {:.1} %",
        ms(net.latency),
        ms(net.jitter),
        net.loss * 100.0,
        net.duplicate * 100.0
    );
    match scenario {
        Scenario::Lossy | Scenario::Reorder | Scenario::Duplicate | Scenario::Jitter => {
            let expect = if scenario == Scenario::Lossy {
                Expect::StreamOr {
                    since: Duration::ZERO,
                    reason: EndKind::ConnectTimeout,
                    by: connect_by,
                }
            } else {
                stream
            };
            run.add_calls(&chats, expect);
            run.run_until_connected(0, DEFAULT_CONNECT_TIMEOUT + END_SLACK);
            let waited = run.verify_phase();
            report.params += &format!("; sfu heard every call {:.0} ms after", ms(waited));
        }
        Scenario::PartitionShort | Scenario::PartitionLong | Scenario::SfuRestart => {
            run.add_calls(&chats, stream);
            if !run.run_until_connected(0, CLEAN_CONNECT_LIMIT) {
                run.failures
                    .push("setup: not every call connected on a clean network".to_owned());
            }
            run.world.run_for(draw_ms(rng, 200, 1500));
            let cut_at = run.world.elapsed();
            let mut victims: Vec<usize> = (0..run.tracked.len()).collect();
            rng.shuffle(&mut victims);
            victims.truncate(rng.usize(n_calls.div_ceil(3)..=n_calls));
            victims.sort_unstable();
            match scenario {
                Scenario::PartitionShort => {
                    let down = draw_ms(rng, 500, 6000);
                    report.params += &format!(
                        "; {} calls cut at {:.0} ms for {:.0} ms",
                        victims.len(),
                        ms(cut_at),
                        ms(down)
                    );
                    run.cut(&victims);
                    run.world.run_for(down);
                    run.world.heal();
                    let all: Vec<usize> = (0..run.tracked.len()).collect();
                    run.mark_since(&all);
                    let waited = run.verify_phase();
                    report.params += &format!(
                        "; sfu heard every call again {:.0} ms after the heal",
                        ms(waited)
                    );
                }
                Scenario::PartitionLong => {
                    let heal_after = ice.failed_after + draw_ms(rng, 500, 2000);
                    report.params += &format!(
                        "; {} calls cut at {:.0} ms, healed {:.0} ms later",
                        victims.len(),
                        ms(cut_at),
                        ms(heal_after)
                    );
                    for &i in &victims {
                        if let Some(t) = run.tracked.get_mut(i) {
                            t.expect = Expect::End {
                                reason: EndKind::IceDisconnected,
                                not_before: cut_at + ice.failed_after.saturating_sub(ice.keepalive),
                                by: cut_at + ice.failed_after + END_SLACK,
                            };
                        }
                    }
                    run.cut(&victims);
                    run.world.run_for(heal_after);
                    run.world.heal();
                    run.verify_phase();
                }
                _ => {
                    let restart_seed = world_seed ^ 0xDEAD_BEEF;
                    let fresh = sfu_for(restart_seed, run.world.now(), None, forwarding)?;
                    report.params += &format!(
                        "; sfu restarts at {:.0} ms, then every call rejoins",
                        ms(cut_at)
                    );
                    let by = cut_at + ice.failed_after + END_SLACK;
                    for t in &mut run.tracked {
                        t.expect = Expect::End {
                            reason: EndKind::IceDisconnected,
                            not_before: cut_at + ice.failed_after.saturating_sub(ice.keepalive),
                            by,
                        };
                    }
                    drop(run.world.replace_sfu(fresh));
                    let old = run.tracked.len();
                    let ids: Vec<SimCallId> = run.tracked.iter().map(|t| t.id).collect();
                    run.world.run_until(ice.failed_after + END_SLACK, |w| {
                        ids.iter().all(|id| {
                            w.call(*id)
                                .is_some_and(|c| matches!(c.state, CallState::Ended(_)))
                        })
                    });
                    // The application joins again, as a Telegram client does after a failure.
                    let rejoin_at = run.world.elapsed();
                    run.add_calls(&chats, Expect::Stream { since: rejoin_at });
                    run.run_until_connected(old, CLEAN_CONNECT_LIMIT);
                    run.verify_phase();
                }
            }
        }
        Scenario::Mtu => {
            let mtu = path_mtu.unwrap_or(576);
            let default_expect = if mtu >= MTU_DEFAULT_SURE {
                stream
            } else if mtu < MTU_DEFAULT_FAILS_BELOW {
                Expect::End {
                    reason: EndKind::ConnectTimeout,
                    not_before: DEFAULT_CONNECT_TIMEOUT,
                    by: connect_by,
                }
            } else {
                Expect::StreamOr {
                    since: Duration::ZERO,
                    reason: EndKind::ConnectTimeout,
                    by: connect_by,
                }
            };
            report.params += &format!("; path mtu {mtu}");
            let (told, untold): (Vec<usize>, Vec<usize>) =
                (0..chats.len()).partition(|i| i % 2 == 0);
            run.world.set_call_mtu(Some(mtu));
            let told_chats: Vec<i64> = told.iter().filter_map(|i| chats.get(*i).copied()).collect();
            run.add_calls(&told_chats, stream);
            run.world.set_call_mtu(None);
            let untold_chats: Vec<i64> = untold
                .iter()
                .filter_map(|i| chats.get(*i).copied())
                .collect();
            run.add_calls(&untold_chats, default_expect);
            run.run_until_connected(0, DEFAULT_CONNECT_TIMEOUT + END_SLACK);
            run.verify_phase();
        }
    }
    Ok(run)
}

/// What to sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepOptions {
    /// How many seeds.
    pub seeds: u64,
    /// The first seed; seeds run `first_seed..first_seed + seeds`.
    pub first_seed: u64,
    /// The scenarios each seed runs.
    pub scenarios: Vec<Scenario>,
    /// Worker threads (each run is single-threaded and deterministic wherever it runs).
    pub threads: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            seeds: 50,
            first_seed: 1,
            scenarios: Scenario::ALL.to_vec(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A failed run in a [`SweepReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepFailure {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// The run's digest.
    pub digest: u64,
    /// The command that replays the run.
    pub replay: String,
    /// What went wrong, one line per call.
    pub messages: Vec<String>,
}

/// The result of a sweep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    /// Seeds swept.
    pub seeds: u64,
    /// Runs (seeds × scenarios).
    pub runs: usize,
    /// Calls checked across all runs.
    pub calls: usize,
    /// Outcomes across all runs.
    pub outcomes: Outcomes,
    /// Virtual time simulated across all runs.
    pub simulated: Duration,
    /// Wall time of the sweep.
    pub wall: Duration,
    /// Failed runs, by seed then scenario.
    pub failures: Vec<SweepFailure>,
}

impl SweepReport {
    /// The summary line `ringcast sim` prints last:
    /// `{"seeds": N, "calls": N, "failures": [{"seed": S, "scenario": "...", "replay": "..."}]}`
    /// (plus run counts, outcomes, times and each failure's digest and messages).
    pub fn to_json(&self) -> serde_json::Value {
        let failures: Vec<serde_json::Value> = self
            .failures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "seed": f.seed,
                    "scenario": f.scenario.name(),
                    "replay": f.replay,
                    "digest": format!("{:016x}", f.digest),
                    "messages": f.messages,
                })
            })
            .collect();
        serde_json::json!({
            "seeds": self.seeds,
            "calls": self.calls,
            "failures": failures,
            "runs": self.runs,
            "verified": self.outcomes.verified,
            "ended_as_expected": self.outcomes.ended_as_expected,
            "simulated_s": (self.simulated.as_secs_f64() * 10.0).round() / 10.0,
            "wall_s": (self.wall.as_secs_f64() * 10.0).round() / 10.0,
        })
    }
}

/// Runs every `(seed, scenario)` of `options` on `options.threads` threads, calling `progress`
/// with each finished run (from the worker threads, in completion order).
pub fn sweep(options: &SweepOptions, progress: &(dyn Fn(&RunReport) + Sync)) -> SweepReport {
    let started = Instant::now();
    let jobs: Vec<(u64, Scenario)> = (0..options.seeds)
        .flat_map(|i| {
            let seed = options.first_seed.wrapping_add(i);
            options.scenarios.iter().map(move |s| (seed, *s))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<RunReport>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(seed, scenario)) = jobs.get(i) else {
                return;
            };
            let r = run(scenario, seed, &RunOptions::default());
            progress(&r);
            results
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..options.threads.max(1) {
            s.spawn(worker);
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|r| (r.seed, r.scenario));
    let mut report = SweepReport {
        seeds: options.seeds,
        runs: results.len(),
        ..SweepReport::default()
    };
    for r in results {
        report.calls += r.calls;
        report.outcomes.verified += r.outcomes.verified;
        report.outcomes.ended_as_expected += r.outcomes.ended_as_expected;
        report.outcomes.failed += r.outcomes.failed;
        report.simulated += r.simulated;
        if !r.failures.is_empty() {
            report.failures.push(SweepFailure {
                seed: r.seed,
                scenario: r.scenario,
                digest: r.digest,
                replay: replay_command(r.scenario, r.seed),
                messages: r.failures,
            });
        }
    }
    report.wall = started.elapsed();
    report
}

/// Usage of `ringcast sim`.
pub const USAGE: &str =
    "ringcast sim --seeds N [--scenario NAME|all] [--seed S] [--threads T] [--verbose] [--trace]";

/// Parsed `ringcast sim` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliOptions {
    /// What to sweep.
    pub sweep: SweepOptions,
    /// One line per run on stderr.
    pub verbose: bool,
    /// With a single run: print its readable trace to stderr.
    pub trace: bool,
}

impl CliOptions {
    /// Parses the arguments after `sim`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self {
            sweep: SweepOptions::default(),
            verbose: false,
            trace: false,
        };
        let mut seeds = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .map(String::as_str)
                    .ok_or_else(|| format!("{flag} needs a value\nusage: {USAGE}"))
            };
            match flag.as_str() {
                "--seeds" => seeds = Some(parse_num(value()?, flag)?),
                "--seed" => o.sweep.first_seed = parse_num(value()?, flag)?,
                "--threads" => o.sweep.threads = parse_num(value()?, flag)?,
                "--scenario" => {
                    let v = value()?;
                    o.sweep.scenarios = if v == "all" {
                        Scenario::ALL.to_vec()
                    } else {
                        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                        vec![Scenario::from_name(v).ok_or_else(|| {
                            format!("unknown scenario {v:?}; one of: all, {}", names.join(", "))
                        })?]
                    };
                }
                "--verbose" => o.verbose = true,
                "--trace" => o.trace = true,
                other => return Err(format!("unknown argument {other:?}\nusage: {USAGE}")),
            }
        }
        o.sweep.seeds = seeds.ok_or_else(|| format!("--seeds is required\nusage: {USAGE}"))?;
        if o.sweep.seeds == 0 || o.sweep.threads == 0 {
            return Err("--seeds and --threads must be at least 1".to_owned());
        }
        Ok(o)
    }
}

fn parse_num<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a non-negative integer"))
}

/// One line about a run: digest, outcomes, times and the drawn parameters.
pub fn describe(r: &RunReport) -> String {
    format!(
        "{} seed {}: digest {:016x}, {} calls ({} verified, {} ended as expected, {} failed), \
         {:.1} s simulated in {:.2} s; {}",
        r.scenario,
        r.seed,
        r.digest,
        r.calls,
        r.outcomes.verified,
        r.outcomes.ended_as_expected,
        r.outcomes.failed,
        r.simulated.as_secs_f64(),
        r.wall.as_secs_f64(),
        r.params
    )
}

/// `ringcast sim`: parses `args` (those after `sim`), sweeps, reports every failed run with
/// its replay command on stderr, prints the JSON summary as the last stdout line, and returns
/// an error if any run failed.
pub fn cli(args: &[String]) -> Result<(), String> {
    let o = CliOptions::parse(args)?;
    let single = o.sweep.seeds == 1 && o.sweep.scenarios.len() == 1;
    let report = if single && o.trace {
        // A replay with its trace: one run on this thread.
        let scenario = o
            .sweep
            .scenarios
            .first()
            .copied()
            .unwrap_or(Scenario::Lossy);
        let r = run(
            scenario,
            o.sweep.first_seed,
            &RunOptions {
                trace: true,
                force_expect: None,
            },
        );
        for line in &r.trace {
            eprintln!("{line}");
        }
        eprintln!("{}", describe(&r));
        let mut report = SweepReport {
            seeds: 1,
            runs: 1,
            calls: r.calls,
            outcomes: r.outcomes,
            simulated: r.simulated,
            wall: r.wall,
            failures: Vec::new(),
        };
        if !r.failures.is_empty() {
            report.failures.push(SweepFailure {
                seed: r.seed,
                scenario: r.scenario,
                digest: r.digest,
                replay: replay_command(r.scenario, r.seed),
                messages: r.failures,
            });
        }
        report
    } else {
        eprintln!(
            "ringcast sim: {} seeds from {} × {} scenarios on {} threads",
            o.sweep.seeds,
            o.sweep.first_seed,
            o.sweep.scenarios.len(),
            o.sweep.threads
        );
        let verbose = o.verbose || single;
        sweep(&o.sweep, &|r: &RunReport| {
            if verbose || !r.failures.is_empty() {
                eprintln!("{}", describe(r));
            }
            if !r.failures.is_empty() {
                for m in &r.failures {
                    eprintln!("  FAIL {m}");
                }
                eprintln!("  replay: {}", replay_command(r.scenario, r.seed));
            }
        })
    };
    eprintln!(
        "ringcast sim: {} runs, {} calls: {} verified, {} ended as expected, {} failed; \
         {:.0} s simulated in {:.1} s",
        report.runs,
        report.calls,
        report.outcomes.verified,
        report.outcomes.ended_as_expected,
        report.outcomes.failed,
        report.simulated.as_secs_f64(),
        report.wall.as_secs_f64()
    );
    println!("{}", report.to_json());
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} runs failed",
            report.failures.len(),
            report.runs
        ))
    }
}
