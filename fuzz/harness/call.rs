//! Shared by the `call_datagrams` fuzz target and its stable replay (and seed capture) in
//! `sfu-mock/tests/fuzz_corpus.rs` (both include this file with `#[path]`).
//!
//! A connected call is rebuilt for every input from a fixed seed in the simulator: two calls
//! in one chat on `sfu_mock::Sfu`, no loss. The input's datagrams are then sent to call 0 from
//! the SFU's own address, as if the SFU (or someone spoofing it) had sent them, and the world
//! runs on. The SFU is wrapped in [`Recorder`], which can also log every datagram it sends:
//! that is how the seed corpus was captured (real STUN, DTLS, SRTP and SRTCP of this call).
//!
//! Input layout: byte 0 holds flags ([`FLAG_SPACED`]), then datagrams as
//! `[u16 big-endian length][bytes]`; a length running past the end takes the rest. At most
//! [`MAX_DATAGRAMS`] datagrams are used.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // shared by a fuzz target and a test

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringcast_core::demux::{DatagramKind, classify};
use ringcast_core::media::ToneSource;
use ringcast_core::sim::{NetConfig, SimCallId, SimSfu, World, sim_crypto};
use ringcast_core::{CallState, EndReason, Event};
use sfu_mock::server::generate_cert;
use sfu_mock::{Sfu, SfuConfig};

/// The simulated SFU's address.
pub const SFU_ADDR: &str = "198.19.0.1:3478";
/// World seed: the same connected call for every input.
pub const SEED: u64 = 0x5EED_F022;
/// Flag: deliver the datagrams 20 ms apart instead of all at once.
pub const FLAG_SPACED: u8 = 0x01;
/// Most datagrams one input sends.
pub const MAX_DATAGRAMS: usize = 16;
/// How long the world runs after the datagrams went out.
const AFTER: Duration = Duration::from_millis(300);

/// Direction of a recorded datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// SFU to a call.
    ToCall,
    /// A call to the SFU.
    ToSfu,
}

/// `sfu_mock::Sfu` plus a log of its traffic and a queue of datagrams to send as it.
pub struct Recorder {
    inner: Sfu,
    /// Every datagram in and out, if recording: direction, the call's address, bytes.
    pub log: Option<Vec<(Dir, SocketAddr, Vec<u8>)>>,
    inject: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl SimSfu for Recorder {
    fn addr(&self) -> SocketAddr {
        SimSfu::addr(&self.inner)
    }

    fn join(&mut self, now: Instant, chat_id: i64, payload: &[u8]) -> Result<String, String> {
        SimSfu::join(&mut self.inner, now, chat_id, payload)
    }

    fn handle_datagram(&mut self, now: Instant, d: ringcast_core::transport::Datagram<'_>) {
        if let Some(log) = self.log.as_mut() {
            log.push((Dir::ToSfu, d.source, d.contents.to_vec()));
        }
        SimSfu::handle_datagram(&mut self.inner, now, d);
    }

    fn handle_timeout(&mut self, now: Instant) {
        SimSfu::handle_timeout(&mut self.inner, now);
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        if let Some((to, bytes)) = SimSfu::poll_transmit(&mut self.inner) {
            if let Some(log) = self.log.as_mut() {
                log.push((Dir::ToCall, to, bytes.clone()));
            }
            return Some((to, bytes));
        }
        self.inject.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        SimSfu::poll_timeout(&self.inner)
    }
}

/// Splits an input into its flags and datagrams.
pub fn decode(data: &[u8]) -> (u8, Vec<&[u8]>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut out = Vec::new();
    while !rest.is_empty() && out.len() < MAX_DATAGRAMS {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            out.push(rest);
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len));
        let take = len.min(tail.len());
        let (datagram, after) = tail.split_at(take);
        out.push(datagram);
        rest = after;
    }
    (flags, out)
}

/// Builds an input from flags and datagrams (the inverse of [`decode`]).
pub fn encode(flags: u8, datagrams: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![flags];
    for d in datagrams {
        let len = u16::try_from(d.len()).expect("datagram under 64 KiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Two connected calls in chat 1, seeded with [`SEED`]; `record` keeps the SFU's log.
pub fn connected_world(record: bool) -> World<Recorder> {
    let epoch = Instant::now();
    let addr: SocketAddr = SFU_ADDR.parse().expect("addr");
    let mut config = SfuConfig::new(addr, SEED, generate_cert().expect("certificate"));
    config.crypto = Some(sim_crypto(SEED ^ 1));
    let sfu = Recorder {
        inner: Sfu::new(epoch, config),
        log: record.then(Vec::new),
        inject: VecDeque::new(),
    };
    let cert = generate_cert().expect("certificate");
    let mut w = World::new(SEED, epoch, NetConfig::default(), sfu, cert);
    for freq in [440.0, 660.0] {
        let tone = ToneSource::new(freq, None).expect("tone");
        w.add_call(1, Box::new(tone)).expect("add call");
    }
    let up = w.run_until(Duration::from_secs(5), |w| {
        w.calls().iter().all(|c| c.state == CallState::Connected)
    });
    assert!(up, "the fixture calls must connect");
    w
}

/// What the input did to call 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still connected and still sending.
    Connected,
    /// It ended, for this reason (reaped and reported like any other end).
    Ended(EndReason),
}

/// Sends the input's datagrams to call 0 from the SFU's address and checks both calls after.
pub fn run(data: &[u8]) -> Outcome {
    let mut w = connected_world(false);
    feed(&mut w, data)
}

/// [`run`] on a world that is already connected.
pub fn feed(w: &mut World<Recorder>, data: &[u8]) -> Outcome {
    let (flags, datagrams) = decode(data);
    let target = w
        .snapshot(SimCallId(0))
        .and_then(|s| s.local_addr)
        .expect("call 0 is connected");
    let sent_before: Vec<u64> = (0..2)
        .map(|i| w.snapshot(SimCallId(i)).map_or(0, |s| s.stats.packets_sent))
        .collect();
    let events_before = w.calls()[0].events.len();
    for d in &datagrams {
        w.sfu_mut().inject.push_back((target, d.to_vec()));
        if flags & FLAG_SPACED != 0 {
            w.run_for(Duration::from_millis(20));
        }
    }
    w.run_for(AFTER);

    // The other participant never notices.
    let other = w.snapshot(SimCallId(1)).expect("call 1 is still there");
    assert_eq!(
        other.state,
        CallState::Connected,
        "call 1 must stay connected"
    );
    assert!(
        other.stats.packets_sent > sent_before[1],
        "call 1 must keep sending"
    );

    let sim = &w.calls()[0];
    match &sim.state {
        CallState::Connected => {
            let snap = w.snapshot(SimCallId(0)).expect("a connected call is live");
            assert_eq!(snap.state, CallState::Connected);
            assert!(
                snap.stats.packets_sent > sent_before[0],
                "call 0 is connected but stopped sending"
            );
            Outcome::Connected
        }
        CallState::Ended(reason) => {
            assert!(
                w.snapshot(SimCallId(0)).is_none(),
                "an ended call is reaped"
            );
            assert!(reason.is_failure());
            let ends = sim.events[events_before..]
                .iter()
                .filter(|e| matches!(e, Event::ConnectionChanged(CallState::Ended(_))))
                .count();
            assert_eq!(ends, 1, "an end is reported exactly once");
            Outcome::Ended(reason.clone())
        }
        other => panic!("call 0 went from connected to {other:?}"),
    }
}

/// A name for a captured datagram's kind: stun, dtls, srtp, srtcp or other.
pub fn kind_name(d: &[u8]) -> &'static str {
    match classify(d) {
        DatagramKind::Stun => "stun",
        DatagramKind::Dtls => "dtls",
        DatagramKind::Rtp if d.get(1).is_some_and(|b| (192..=223).contains(b)) => "srtcp",
        DatagramKind::Rtp => "srtp",
        DatagramKind::Unknown => "other",
    }
}
