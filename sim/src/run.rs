//! One run: a [`World`] of calls on one [`Sfu`], set up from the seed, played through its
//! scenario's script ([`crate::scenario`]), and every call checked against its expectation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringcast_core::CallState;
use ringcast_core::media::LoopedFrames;
use ringcast_core::sim::{SimCallId, World, sim_crypto};
use sfu_mock::server::generate_cert;
use sfu_mock::{ParticipantStats, Sfu, SfuConfig};

use crate::net;
use crate::report::{Outcomes, RunReport, ms};
use crate::scenario::{self, EndKind, Expect, Scenario};
use crate::tone::{FRAME, tone_frames, tone_hz};

/// The simulated SFU's address (198.18.0.0/15 is reserved for benchmarking, RFC 2544).
const SFU_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 19, 0, 1)),
    3478,
);
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
/// How a run should go besides its scenario. The default is what `ringcast sim` does.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunOptions {
    /// Keep the world's readable trace and return it in [`RunReport::trace`].
    pub trace: bool,
    /// Replace every call's expectation with this one. For testing the verifier: a run with
    /// an expectation that cannot hold must report failures.
    pub force_expect: Option<Expect>,
}

/// Mixes the scenario into the seed so scenarios do not share random streams.
fn run_seed(scenario: Scenario, seed: u64) -> u64 {
    // SplitMix64 finaliser over (seed, scenario).
    let mut z = seed ^ (scenario.index() + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One tracked call of a run.
pub(crate) struct Tracked {
    pub(crate) id: SimCallId,
    pub(crate) expect: Expect,
    /// SFU packet count and forwarded audio received at `since`, once taken.
    base: Option<(u64, u64)>,
}

/// Everything a run needs between script steps.
pub(crate) struct Run {
    pub(crate) world: World<Sfu>,
    pub(crate) tracked: Vec<Tracked>,
    loss: f64,
    tone_tolerance_hz: f32,
    /// The SFU forwards audio, so calls can be asked to receive it too.
    pub(crate) forwarding: bool,
    /// How long [`Run::verify_phase`] waits for the SFU to hear every call.
    hear_limit: Duration,
    pub(crate) failures: Vec<String>,
}

impl Run {
    pub(crate) fn add_calls(&mut self, chats: &[i64], expect: Expect) {
        for &chat in chats {
            let frames = match tone_frames(tone_hz(chat)) {
                Ok(f) => f,
                Err(e) => {
                    self.failures
                        .push(format!("setup: tone for chat {chat}: {e}"));
                    continue;
                }
            };
            let tone = LoopedFrames::new(frames);
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
    pub(crate) fn verify_phase(&mut self) -> Duration {
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
    pub(crate) fn run_until_connected(&mut self, from: usize, limit: Duration) -> bool {
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
    pub(crate) fn mark_since(&mut self, which: &[usize]) {
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

    pub(crate) fn cut(&mut self, which: &[usize]) {
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

/// The simulated SFU: seeded, at [`SFU_ADDR`], told the path MTU, forwarding or not.
pub(crate) fn sfu_for(
    seed: u64,
    epoch: Instant,
    mtu: Option<usize>,
    forward: bool,
) -> Result<Sfu, String> {
    let cert = generate_cert().map_err(|e| format!("sfu certificate: {e}"))?;
    let mut config = SfuConfig::new(SFU_ADDR, seed, cert);
    config.crypto = Some(sim_crypto(seed ^ 1));
    config.mtu = mtu;
    config.forward_audio = forward;
    // Decoding starts shortly before the verdict (`Run::finish`).
    config.analyse_audio = false;
    Ok(Sfu::new(epoch, config))
}

/// Runs one scenario with one seed. See the [crate docs](crate).
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
    let net = net::draw(scenario, rng);
    let path_mtu = net::draw_path_mtu(scenario, rng);
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
        tone_tolerance_hz: net::tone_tolerance_hz(&net),
        forwarding,
        hear_limit: if scenario == Scenario::Lossy {
            LOSSY_SFU_HEAR_LIMIT
        } else {
            SFU_HEAR_LIMIT
        },
        failures: Vec::new(),
    };
    let chats: Vec<i64> = (0..n_calls).map(|i| (i % n_chats) as i64 + 1).collect();
    report.params = format!(
        "{n_calls} calls in {n_chats} chats; latency {:.0} ms, jitter {:.0} ms, loss {:.1} %, dup {:.1} %",
        ms(net.latency),
        ms(net.jitter),
        net.loss * 100.0,
        net.duplicate * 100.0
    );
    scenario::play(
        scenario, &mut run, &chats, path_mtu, world_seed, rng, report,
    )?;
    Ok(run)
}
