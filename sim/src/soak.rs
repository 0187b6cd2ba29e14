//! The long soak in virtual time: calls that stream for hours (24 by default in
//! [`SoakOptions::hours`]), across many RTP sequence-number wraps, and are still verified at
//! the end.
//!
//! At 50 packets a second a 16-bit RTP sequence number wraps every 65,536 packets, 21.8
//! minutes; SRTP's rollover counter (RFC 3711 §3.3.1) has to follow it at the sender and at the
//! receiver, or every packet after the wrap fails authentication (one-way audio after tens of
//! minutes, as users of other engines report). A real-time soak only gets there after 22
//! minutes; in the simulator's virtual time it takes as long as the work in it.
//!
//! The world: two calls in one chat on `sfu_mock::Sfu`, a clean network (10 ms one way), real
//! str0m ICE, DTLS and SRTP at both ends, the SFU forwarding each call's audio to the other
//! (so both directions wrap: each call's uplink to the SFU and the SFU's downlink to each
//! call). The per-frame work is cut to what the checks need: the chat's tone is encoded once
//! per process and looped ([`crate::tone`]), and the SFU decodes audio only for the final
//! tone check.
//!
//! Between the SFU and the network sits [`Watch`], which reads every datagram's clear-text
//! parts: the RTP header of every SRTP packet (per direction and SSRC: sequence-number wraps,
//! and any step other than +1, which on a clean network is a gap), the first RTCP header of
//! every SRTCP packet (sender reports, PT 200), and STUN binding requests and responses (ICE
//! consent, RFC 7675). Every [`SoakOptions::checkpoint`] of virtual time the soak checks, per
//! call, for that window:
//!
//! - the call is `Connected` (consent never lapsed, nothing ended it);
//! - the SFU received and decrypted at least all but one of the window's frames, and its loss
//!   count (from extended sequence numbers, RFC 3550 A.3) is still zero: after every wrap the
//!   SFU's SRTP context rolled over with the call's;
//! - the call received the other call's forwarded audio for at least all but one of the
//!   window's frames: the call's SRTP context rolled over with the SFU's;
//! - sender reports went both ways, and the call sent consent checks that the SFU answered.
//!
//! At the end it also checks that every stream on the wire wrapped as often as its packet
//! count says and never skipped or repeated a sequence number; that every packet on the wire
//! (bar the first few, sent while the SFU's side of DTLS finished) was decrypted at the other
//! end, the SFU for the uplinks and the calls for the forwarded downlinks; that the last wrap
//! of each of the four streams came at least 5 s before the end (the last window runs on until
//! it did, so the end checks always see streaming after the final wrap); that nothing was
//! dropped or refused at either end; and (SFU decoding on for the last 600 ms) that the SFU
//! hears each call's tone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringcast_core::CallState;
use ringcast_core::demux::{DatagramKind, classify};
use ringcast_core::media::LoopedFrames;
use ringcast_core::sim::{NetConfig, SimCallId, SimSfu, World};
use ringcast_core::transport::Datagram;
use sfu_mock::server::generate_cert;
use sfu_mock::{ParticipantStats, Sfu};

use crate::run::sfu_for;
use crate::tone::{FRAME, tone_frames, tone_hz};

/// The chat both calls join.
const CHAT: i64 = 1;
/// How long the calls may take to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Where the SFU's tone analysis is switched on before the end.
const ANALYSED_TAIL: Duration = Duration::from_millis(600);
/// Tone check tolerance on a clean network.
const TONE_TOLERANCE_HZ: f32 = 5.0;
/// RTP sequence numbers per wrap.
const SEQ_SPACE: u64 = 1 << 16;
/// The end checks need this much streaming after every stream's last wrap (250 packets); the
/// last window runs on, a second at a time, until it is so.
const AFTER_LAST_WRAP: Duration = Duration::from_secs(5);
/// Packets sent before the SFU's side of DTLS finished (the call's first frames race its final
/// flight) may be dropped; after that every packet on the wire must have been decrypted.
const EARLY_SLACK: u64 = 25;

/// What a soak runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoakOptions {
    /// Virtual time to stream, after the calls connected.
    pub duration: Duration,
    /// Virtual time between checkpoints (see the [module docs](self)).
    pub checkpoint: Duration,
    /// World seed.
    pub seed: u64,
    /// For testing the verifier: cut call 0 off the network this far into the first window,
    /// for this long (must end inside the first window).
    pub cut: Option<(Duration, Duration)>,
}

impl SoakOptions {
    /// `hours` of virtual streaming, a checkpoint every 10 virtual minutes, seed 1.
    pub fn hours(hours: f64) -> Self {
        Self {
            duration: Duration::from_secs_f64(hours * 3600.0),
            checkpoint: Duration::from_secs(600),
            seed: 1,
            cut: None,
        }
    }
}

/// One RTP stream as seen on the wire by [`Watch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSeen {
    /// SRTP packets.
    pub packets: u64,
    /// Times the sequence number went from 65535 to 0.
    pub wraps: u64,
    /// Steps other than +1 (mod 2^16) between consecutive packets: gaps, repeats, reorders.
    pub irregular: u64,
    /// Virtual time (since the epoch) of the last wrap.
    pub last_wrap: Option<Duration>,
    last_seq: Option<u16>,
}

impl StreamSeen {
    fn on_seq(&mut self, seq: u16, at: Duration) {
        self.packets += 1;
        if let Some(last) = self.last_seq {
            if seq != last.wrapping_add(1) {
                self.irregular += 1;
            }
            if seq < last {
                self.wraps += 1;
                self.last_wrap = Some(at);
            }
        }
        self.last_seq = Some(seq);
    }
}

/// Datagram counts of one direction, by what the clear-text header says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// SRTCP compound packets whose first packet is a sender report (PT 200).
    pub sender_reports: u64,
    /// SRTCP compound packets of any other kind.
    pub other_rtcp: u64,
    /// STUN binding requests.
    pub stun_requests: u64,
    /// STUN binding success responses.
    pub stun_responses: u64,
}

/// The SFU of the soak, with [`Watch`]'s reading of its traffic.
pub struct Watch {
    inner: Sfu,
    epoch: Instant,
    /// The time of the last event the SFU handled: when it sends what it polls out.
    last_now: Instant,
    /// Per `(call address, SSRC)`: call to SFU.
    pub uplink: HashMap<(SocketAddr, u32), StreamSeen>,
    /// Per `(call address, SSRC)`: SFU to call.
    pub downlink: HashMap<(SocketAddr, u32), StreamSeen>,
    /// Per call address: what the call sent.
    pub to_sfu: HashMap<SocketAddr, Counts>,
    /// Per call address: what the SFU sent it.
    pub to_call: HashMap<SocketAddr, Counts>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("uplink", &self.uplink)
            .field("downlink", &self.downlink)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// The SFU's own statistics.
    pub fn sfu(&self) -> &Sfu {
        &self.inner
    }

    fn see(
        streams: &mut HashMap<(SocketAddr, u32), StreamSeen>,
        counts: &mut HashMap<SocketAddr, Counts>,
        peer: SocketAddr,
        bytes: &[u8],
        at: Duration,
    ) {
        match classify(bytes) {
            DatagramKind::Rtp => {
                let pt = bytes.get(1).copied().unwrap_or(0);
                if (192..=223).contains(&pt) {
                    let c = counts.entry(peer).or_default();
                    if pt == 200 {
                        c.sender_reports += 1;
                    } else {
                        c.other_rtcp += 1;
                    }
                    return;
                }
                let (Some(seq), Some(ssrc)) = (bytes.get(2..4), bytes.get(8..12)) else {
                    return;
                };
                let seq = u16::from_be_bytes([seq[0], seq[1]]);
                let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
                streams.entry((peer, ssrc)).or_default().on_seq(seq, at);
            }
            DatagramKind::Stun => {
                let c = counts.entry(peer).or_default();
                match bytes.get(0..2) {
                    Some([0x00, 0x01]) => c.stun_requests += 1,
                    Some([0x01, 0x01]) => c.stun_responses += 1,
                    _ => {}
                }
            }
            DatagramKind::Dtls | DatagramKind::Unknown => {}
        }
    }
}

impl SimSfu for Watch {
    fn addr(&self) -> SocketAddr {
        SimSfu::addr(&self.inner)
    }

    fn join(&mut self, now: Instant, chat_id: i64, payload: &[u8]) -> Result<String, String> {
        self.last_now = now;
        SimSfu::join(&mut self.inner, now, chat_id, payload)
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) {
        self.last_now = now;
        let at = now.saturating_duration_since(self.epoch);
        Self::see(&mut self.uplink, &mut self.to_sfu, d.source, d.contents, at);
        SimSfu::handle_datagram(&mut self.inner, now, d);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        SimSfu::handle_timeout(&mut self.inner, now);
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let (to, bytes) = SimSfu::poll_transmit(&mut self.inner)?;
        // The world polls right after the event that produced the datagram.
        let at = self.last_now.saturating_duration_since(self.epoch);
        Self::see(&mut self.downlink, &mut self.to_call, to, &bytes, at);
        Some((to, bytes))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        SimSfu::poll_timeout(&self.inner)
    }
}

/// One checkpoint: the window since the previous one.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Virtual time (since the epoch) at the end of the window.
    pub at: Duration,
    /// Per call: audio packets the SFU received and decrypted in the window.
    pub sfu_received: Vec<u64>,
    /// Per call: forwarded audio packets the call received in the window.
    pub call_received: Vec<u64>,
    /// Uplink wraps seen so far, all calls together.
    pub wraps: u64,
    /// Wall time since the soak started.
    pub wall: Duration,
}

/// What a soak saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// Virtual time simulated (connecting and the final tone check included).
    pub simulated: Duration,
    /// Wall time taken.
    pub wall: Duration,
    /// The checkpoints, in order.
    pub checkpoints: Vec<Checkpoint>,
    /// Per call (by index): its uplink as seen on the wire.
    pub uplink: Vec<StreamSeen>,
    /// Per call (by index): the other call's audio forwarded to it, as seen on the wire.
    pub downlink: Vec<StreamSeen>,
    /// Per call: what the call sent (sender reports, consent requests).
    pub to_sfu: Vec<Counts>,
    /// Per call: what the SFU sent it.
    pub to_call: Vec<Counts>,
    /// Per call: packets of its uplink the SFU decrypted, and forwarded packets it decrypted,
    /// over the whole soak (compare [`SoakReport::uplink`], [`SoakReport::downlink`]).
    pub decrypted: Vec<(u64, u64)>,
    /// Per call: the dominant frequency the SFU decoded at the end, and the chat's tone.
    pub tones: Vec<(Option<f32>, f32)>,
    /// Everything that went wrong; empty if the soak passed.
    pub failures: Vec<String>,
}

impl SoakReport {
    /// One paragraph for the log.
    pub fn describe(&self) -> String {
        let wraps: Vec<String> = self
            .uplink
            .iter()
            .zip(&self.downlink)
            .map(|(u, d)| format!("{}/{}", u.wraps, d.wraps))
            .collect();
        let packets: u64 = self
            .uplink
            .iter()
            .chain(&self.downlink)
            .map(|s| s.packets)
            .sum();
        let srs: u64 = self
            .to_sfu
            .iter()
            .chain(&self.to_call)
            .map(|c| c.sender_reports)
            .sum();
        let consent: u64 = self.to_sfu.iter().map(|c| c.stun_requests).sum();
        format!(
            "soak: {:.2} virtual h in {:.1} s wall; {} calls; {packets} SRTP packets; \
             wraps up/down per call {}; decrypted up/down per call {:?}; {srs} sender \
             reports; {consent} consent checks; {} checkpoints; tones {:?}; {} failures",
            self.simulated.as_secs_f64() / 3600.0,
            self.wall.as_secs_f64(),
            self.uplink.len(),
            wraps.join(" "),
            self.decrypted,
            self.checkpoints.len(),
            self.tones,
            self.failures.len()
        )
    }
}

/// Per-call state between checkpoints.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    sfu_packets: u64,
    audio_received: u64,
    counts_to_sfu: Counts,
    counts_to_call: Counts,
}

fn participant(stats: &[(i64, Vec<ParticipantStats>)], ssrc: u32) -> Option<&ParticipantStats> {
    stats
        .iter()
        .filter(|(chat, _)| *chat == CHAT)
        .flat_map(|(_, ps)| ps)
        .find(|p| p.ssrc == ssrc && !p.left)
}

/// Runs a soak. See the [module docs](self).
pub fn soak(options: &SoakOptions) -> SoakReport {
    let started = Instant::now();
    let mut report = SoakReport::default();
    if let Err(e) = soak_inner(options, started, &mut report) {
        report.failures.push(e);
    }
    report.wall = started.elapsed();
    report
}

fn soak_inner(
    options: &SoakOptions,
    started: Instant,
    report: &mut SoakReport,
) -> Result<(), String> {
    if options.checkpoint < Duration::from_secs(10) || options.duration < options.checkpoint {
        return Err("the soak needs checkpoints of >= 10 s and at least one".to_owned());
    }
    let epoch = Instant::now();
    let sfu = sfu_for(options.seed, epoch, None, true)?;
    let watch = Watch {
        inner: sfu,
        epoch,
        last_now: epoch,
        uplink: HashMap::new(),
        downlink: HashMap::new(),
        to_sfu: HashMap::new(),
        to_call: HashMap::new(),
    };
    let cert = generate_cert().map_err(|e| format!("call certificate: {e}"))?;
    let mut world = World::new(options.seed, epoch, NetConfig::default(), watch, cert);
    world.keep_trace(false);
    world.keep_audio_events(false);
    let frames = tone_frames(tone_hz(CHAT))?;
    let ids: Vec<SimCallId> = (0..2)
        .map(|_| world.add_call(CHAT, Box::new(LoopedFrames::new(frames.clone()))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("joining: {e}"))?;
    let up = world.run_until(CONNECT_LIMIT, |w| {
        ids.iter()
            .all(|id| w.call(*id).is_some_and(|c| c.state == CallState::Connected))
    });
    if !up {
        return Err(format!(
            "the calls did not connect within {CONNECT_LIMIT:?}"
        ));
    }
    // Let the SFU's side of DTLS finish and the first packets through before the first mark.
    world.run_for(Duration::from_secs(1));

    let mut marks = vec![Mark::default(); ids.len()];
    let take_marks = |world: &World<Watch>, marks: &mut [Mark]| -> Result<(), String> {
        let stats = world.sfu().sfu().stats();
        for (i, id) in ids.iter().enumerate() {
            let call = world.call(*id).ok_or("call missing")?;
            let addr = call.local_addr.ok_or("call without address")?;
            marks[i] = Mark {
                sfu_packets: participant(&stats, call.ssrc).map_or(0, |p| p.packets),
                audio_received: call.audio_received,
                counts_to_sfu: world.sfu().to_sfu.get(&addr).copied().unwrap_or_default(),
                counts_to_call: world.sfu().to_call.get(&addr).copied().unwrap_or_default(),
            };
        }
        Ok(())
    };
    take_marks(&world, &mut marks)?;

    let end = world.elapsed() + options.duration;
    while world.elapsed() < end {
        let window_start = world.elapsed();
        let window = options.checkpoint.min(end - world.elapsed());
        let last = window < options.checkpoint || world.elapsed() + window >= end;
        if let Some((from, len)) = options.cut.filter(|_| report.checkpoints.is_empty()) {
            if from + len >= window {
                return Err("the cut must end inside the first window".to_owned());
            }
            let addr = world.call(ids[0]).and_then(|c| c.local_addr);
            world.run_for(from);
            world.partition(addr);
            world.run_for(len);
            world.heal();
            world.run_for(window - from - len);
        } else if last {
            world.run_for(window.saturating_sub(ANALYSED_TAIL));
            // The end checks must come well after every stream's last wrap: run on while one
            // wrapped just now (at most one wrap period, 22 min, which cannot happen twice).
            for _ in 0..1400 {
                let recent = world.elapsed().saturating_sub(AFTER_LAST_WRAP);
                let streams = world
                    .sfu()
                    .uplink
                    .values()
                    .chain(world.sfu().downlink.values());
                if !streams
                    .clone()
                    .any(|s| s.last_wrap.is_some_and(|t| t >= recent))
                {
                    break;
                }
                world.run_for(Duration::from_secs(1));
            }
            world.sfu_mut().inner.set_analyse_audio(true);
            world.run_for(window.min(ANALYSED_TAIL));
        } else {
            world.run_for(window);
        }
        let ran = world.elapsed().saturating_sub(window_start);
        let frames = (ran.as_micros() / FRAME.as_micros()) as u64;
        let stats = world.sfu().sfu().stats();
        let mut cp = Checkpoint {
            at: world.elapsed(),
            sfu_received: Vec::new(),
            call_received: Vec::new(),
            wraps: world.sfu().uplink.values().map(|s| s.wraps).sum(),
            wall: started.elapsed(),
        };
        let at = format!("{:.1} min", world.elapsed().as_secs_f64() / 60.0);
        for (i, id) in ids.iter().enumerate() {
            let call = world.call(*id).ok_or("call missing")?;
            if call.state != CallState::Connected {
                report
                    .failures
                    .push(format!("{at}: call {i} is {:?}", call.state));
                continue;
            }
            let addr = call.local_addr.ok_or("call without address")?;
            let p = participant(&stats, call.ssrc).ok_or("call unknown to the sfu")?;
            let sfu_got = p.packets - marks[i].sfu_packets;
            let call_got = call.audio_received - marks[i].audio_received;
            cp.sfu_received.push(sfu_got);
            cp.call_received.push(call_got);
            if sfu_got + 1 < frames {
                report.failures.push(format!(
                    "{at}: the sfu decrypted {sfu_got} of call {i}'s {frames} packets"
                ));
            }
            if p.lost != 0 {
                report
                    .failures
                    .push(format!("{at}: the sfu counts {} lost of call {i}", p.lost));
            }
            if call_got + 1 < frames {
                report.failures.push(format!(
                    "{at}: call {i} received {call_got} of the {frames} forwarded packets"
                ));
            }
            let to_sfu = world.sfu().to_sfu.get(&addr).copied().unwrap_or_default();
            let to_call = world.sfu().to_call.get(&addr).copied().unwrap_or_default();
            let m = marks[i];
            if to_sfu.sender_reports == m.counts_to_sfu.sender_reports {
                report
                    .failures
                    .push(format!("{at}: call {i} sent no sender report"));
            }
            if to_call.sender_reports == m.counts_to_call.sender_reports {
                report
                    .failures
                    .push(format!("{at}: the sfu sent call {i} no sender report"));
            }
            if to_sfu.stun_requests == m.counts_to_sfu.stun_requests
                || to_call.stun_responses == m.counts_to_call.stun_responses
            {
                report.failures.push(format!(
                    "{at}: no consent check of call {i} was sent and answered"
                ));
            }
        }
        take_marks(&world, &mut marks)?;
        report.checkpoints.push(cp);
    }
    report.simulated = world.elapsed();
    let wrapped_by = world.elapsed().saturating_sub(AFTER_LAST_WRAP);

    let stats = world.sfu().sfu().stats();
    let counters = world.sfu().sfu().counters().clone();
    if counters.dropped_rejected != 0 || counters.dropped_replayed != 0 {
        report
            .failures
            .push(format!("sfu dropped datagrams: {counters:?}"));
    }
    for (i, id) in ids.iter().enumerate() {
        let call = world.call(*id).ok_or("call missing")?;
        let addr = call.local_addr.ok_or("call without address")?;
        let up = world
            .sfu()
            .uplink
            .get(&(addr, call.ssrc))
            .copied()
            .unwrap_or_default();
        let down: Vec<StreamSeen> = world
            .sfu()
            .downlink
            .iter()
            .filter(|((a, _), _)| *a == addr)
            .map(|(_, s)| *s)
            .collect();
        let [down] = down[..] else {
            report.failures.push(format!(
                "call {i} got {} forwarded streams, not one",
                down.len()
            ));
            continue;
        };
        for (name, s) in [("uplink", up), ("downlink", down)] {
            // The first sequence number is random: the wraps are the packet count's, give or
            // take the one the start may or may not have been close to.
            let want = s.packets / SEQ_SPACE;
            if s.wraps < want || s.wraps > want + 1 {
                report.failures.push(format!(
                    "call {i} {name}: {} wraps in {} packets",
                    s.wraps, s.packets
                ));
            }
            if s.irregular != 0 {
                report.failures.push(format!(
                    "call {i} {name}: {} sequence steps other than +1",
                    s.irregular
                ));
            }
            if want > 0 && s.last_wrap.is_none_or(|t| t > wrapped_by) {
                report.failures.push(format!(
                    "call {i} {name}: last wrap at {:?}, less than {AFTER_LAST_WRAP:?} before \
                     the end",
                    s.last_wrap
                ));
            }
        }
        // Every packet on the wire, bar the first few, was decrypted at the other end: none
        // lost to a rollover-counter mismatch at any wrap.
        let sfu_decrypted = participant(&stats, call.ssrc).map_or(0, |p| p.packets);
        if sfu_decrypted + EARLY_SLACK < up.packets || sfu_decrypted > up.packets {
            report.failures.push(format!(
                "call {i}: the sfu decrypted {sfu_decrypted} of the {} packets it got",
                up.packets
            ));
        }
        if call.audio_received + EARLY_SLACK < down.packets || call.audio_received > down.packets {
            report.failures.push(format!(
                "call {i}: decrypted {} of the {} forwarded packets it got",
                call.audio_received, down.packets
            ));
        }
        report.decrypted.push((sfu_decrypted, call.audio_received));
        report.uplink.push(up);
        report.downlink.push(down);
        report
            .to_sfu
            .push(world.sfu().to_sfu.get(&addr).copied().unwrap_or_default());
        report
            .to_call
            .push(world.sfu().to_call.get(&addr).copied().unwrap_or_default());
        if let Some(snap) = world.snapshot(*id) {
            let s = snap.stats;
            if s.dropped_rejected != 0 || s.dropped_replayed != 0 || s.dropped_malformed != 0 {
                report.failures.push(format!(
                    "call {i} dropped datagrams: rejected {}, replayed {}, malformed {}",
                    s.dropped_rejected, s.dropped_replayed, s.dropped_malformed
                ));
            }
        }
        let hz = tone_hz(CHAT);
        let heard = participant(&stats, call.ssrc).and_then(|p| p.dominant_hz);
        report.tones.push((heard, hz));
        match heard {
            Some(d) if (d - hz).abs() <= TONE_TOLERANCE_HZ => {}
            Some(d) => report.failures.push(format!(
                "call {i}: the sfu decodes {d:.1} Hz, the chat plays {hz:.1} Hz"
            )),
            None => report
                .failures
                .push(format!("call {i}: the sfu decodes silence")),
        }
    }
    Ok(())
}
