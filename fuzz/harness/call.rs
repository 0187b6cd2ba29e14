//! Shared by the `call_datagrams` fuzz target and its stable replay (and seed capture) in
//! `sfu-mock/tests/fuzz_corpus.rs` (both include this file with `#[path]`).
//!
//! A connected call is built from a fixed seed in the simulator: two calls in one chat on
//! `sfu_mock::Sfu`, no loss. The input's datagrams are then sent to call 0 from the SFU's own
//! address, as if the SFU (or someone spoofing it) had sent them, and the world runs on.
//! [`run`] builds that world afresh for the input (about 20 ms of CPU, 150 ms under ASan);
//! [`Persistent`] keeps one world and feeds it input after input, rebuilding it only when call
//! 0 ended or after [`PERSISTENT_INPUTS`] inputs (the fuzz target's mode). A failure in a
//! persistent world is retried on a fresh world so the crash libFuzzer records reproduces
//! alone; see [`Persistent::feed`] for the case where it does not. The SFU is wrapped in [`Recorder`], which can also log every datagram it sends:
//! that is how the seed corpus was captured (real STUN, DTLS, SRTP and SRTCP of this call).
//!
//! Input layout: byte 0 holds flags ([`FLAG_SPACED`]), then datagrams as
//! `[u16 big-endian length][bytes]`; a length running past the end takes the rest. At most
//! [`MAX_DATAGRAMS`] datagrams are used.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // shared by a fuzz target and a test

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use ringcast_core::demux::{DatagramKind, classify};
use ringcast_core::media::{FrameSource, LoopedFrames, OpusFrame, ToneSource};
use ringcast_core::sim::{NetConfig, SimCallId, SimSfu, World, sim_crypto};
use ringcast_core::{CallState, EndReason, Event};
use sfu_mock::server::generate_cert;
use sfu_mock::{Sfu, SfuConfig};

/// The simulated SFU's address.
pub const SFU_ADDR: &str = "198.19.0.1:3478";
/// World seed: the same connected call for every input.
pub const SEED: u64 = 0x5EED_F022;
/// Flag: deliver the datagrams [`SPACING`] apart instead of all at once.
pub const FLAG_SPACED: u8 = 0x01;
/// Time between datagrams with [`FLAG_SPACED`]: a quarter of a 20 ms frame, so the calls'
/// frames and timers interleave with the input without a long run per input.
pub const SPACING: Duration = Duration::from_millis(5);
/// Most datagrams one input sends.
pub const MAX_DATAGRAMS: usize = 16;
/// One-way latency of the fuzzing world's network.
const LATENCY: Duration = Duration::from_millis(1);
/// How long the world runs after the datagrams went out until the last has arrived: the
/// one-way latency plus 1 ms. What an input does happens on arrival (str0m and the call handle
/// a datagram synchronously); timer-driven ends (consent, DTLS retransmission limits) take
/// seconds and are left to the tests of those timers.
const ARRIVAL: Duration = Duration::from_millis(2);
/// How long the world runs after [`ARRIVAL`]: one 20 ms frame interval plus 1 ms, so each call
/// that still works sends at least one frame after the input arrived, which is what the checks
/// look for. (The whole run per input was 300 ms: 15 frames that showed nothing more.)
const AFTER: Duration = Duration::from_millis(21);
/// Inputs a [`Persistent`] world takes before it is rebuilt, so state that builds up over
/// many inputs (replay windows, str0m's stream tables) does not drift too far from the fresh
/// world a reproduction starts from.
pub const PERSISTENT_INPUTS: u32 = 2_000;

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
    // Nothing here asks the SFU what it hears: one Opus decode per packet saved. Forwarding
    // (each call's audio to the other) only matters for capturing the seeds: the SRTP the SFU
    // sends a call is forwarded audio. An injected SRTP packet fails authentication either
    // way (the keys are new in every world), so fuzzing goes without: half the work per frame.
    config.analyse_audio = false;
    config.forward_audio = record;
    let sfu = Recorder {
        inner: Sfu::new(epoch, config),
        log: record.then(Vec::new),
        inject: VecDeque::new(),
    };
    let cert = generate_cert().expect("certificate");
    // 1 ms one way: an input arrives [`ARRIVAL`] after it was sent.
    let net = NetConfig {
        latency: LATENCY,
        ..NetConfig::default()
    };
    let mut w = World::new(SEED, epoch, net, sfu, cert);
    for frames in tones() {
        w.add_call(1, Box::new(LoopedFrames::new(frames.clone())))
            .expect("add call");
    }
    let up = w.run_until(Duration::from_secs(5), |w| {
        w.calls().iter().all(|c| c.state == CallState::Connected)
    });
    assert!(up, "the fixture calls must connect");
    w
}

/// The two calls' tones (440 and 660 Hz), one second each, encoded once per process and
/// looped: encoding was most of the per-input cost.
fn tones() -> &'static [Arc<[OpusFrame]>; 2] {
    static TONES: OnceLock<[Arc<[OpusFrame]>; 2]> = OnceLock::new();
    TONES.get_or_init(|| {
        [440.0, 660.0].map(|freq| {
            let mut tone = ToneSource::new(freq, None).expect("tone");
            (0..50)
                .map(|_| {
                    tone.next_frame()
                        .expect("encode")
                        .expect("a tone never ends")
                })
                .collect()
        })
    })
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
    let events_before = w.calls()[0].events.len();
    for d in &datagrams {
        w.sfu_mut().inject.push_back((target, d.to_vec()));
        if flags & FLAG_SPACED != 0 {
            w.run_for(SPACING);
        }
    }
    w.run_for(ARRIVAL);
    let sent_before: Vec<u64> = (0..2)
        .map(|i| w.snapshot(SimCallId(i)).map_or(0, |s| s.stats.packets_sent))
        .collect();
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
        "call 1 must keep sending after the input arrived"
    );

    let sim = &w.calls()[0];
    match &sim.state {
        CallState::Connected => {
            let snap = w.snapshot(SimCallId(0)).expect("a connected call is live");
            assert_eq!(snap.state, CallState::Connected);
            assert!(
                snap.stats.packets_sent > sent_before[0],
                "call 0 is connected but sent no frame after the input arrived"
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

thread_local! {
    /// While set, a panic is being caught by [`Persistent::feed`]: the panic hook stays quiet
    /// instead of passing it on (libFuzzer's hook aborts the process).
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Puts a hook in front of the current panic hook (libFuzzer's, which aborts) that keeps
/// quiet while [`CATCHING`] is set.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.get() {
                previous(info);
            }
        }));
    });
}

/// One connected world fed input after input (the fuzz target's mode).
#[derive(Default)]
pub struct Persistent {
    world: Option<World<Recorder>>,
    /// The inputs this world has taken, oldest first.
    history: Vec<Vec<u8>>,
    /// Worlds built so far.
    builds: u32,
}

impl Persistent {
    /// Feeds `data` to the kept world (built first if there is none).
    ///
    /// If the checks fail, the input is run again on a fresh world, with the panic passed on
    /// as usual: if it fails there too, libFuzzer's crash file reproduces alone. If it passes
    /// on a fresh world, the failure needed what earlier inputs did to this world: the inputs
    /// since the world was built are written, numbered in order, to the directory
    /// `$RINGCAST_FUZZ_HISTORY_DIR` (default `artifacts/call_datagrams/history-<pid>-<n>`),
    /// and the process panics naming it. Replaying those files in one process
    /// (`cargo fuzz run call_datagrams DIR/*`: libFuzzer runs file arguments in order, in one
    /// process, and the first builds the world) plays the same sequence again.
    pub fn feed(&mut self, data: &[u8]) -> Outcome {
        install_hook();
        if self.history.len() >= PERSISTENT_INPUTS as usize {
            self.world = None;
        }
        if self.world.is_none() {
            self.history.clear();
            self.builds += 1;
        }
        let world = self.world.get_or_insert_with(|| connected_world(false));
        self.history.push(data.to_vec());
        CATCHING.set(true);
        let result = catch_unwind(AssertUnwindSafe(|| feed(world, data)));
        CATCHING.set(false);
        match result {
            Ok(outcome) => {
                if outcome != Outcome::Connected {
                    // Call 0 is gone: the next input gets a fresh world.
                    self.world = None;
                    self.history.clear();
                }
                outcome
            }
            Err(caught) => {
                let message = caught
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| caught.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
                    .to_owned();
                self.world = None;
                let history = std::mem::take(&mut self.history);
                // Panics on its own (and libFuzzer saves `data`) if the input fails alone.
                let _ = run(data);
                let dir = write_history(&history);
                panic!(
                    "call_datagrams failed only after {} earlier inputs on the same world \
                     ({message}); replay the sequence with: cargo fuzz run call_datagrams {}/*",
                    history.len().saturating_sub(1),
                    dir.display()
                );
            }
        }
    }
}

impl Persistent {
    /// Worlds built so far (the first one included).
    pub fn builds(&self) -> u32 {
        self.builds
    }
}

/// Writes a persistent world's inputs, in order, into a fresh directory and returns it.
fn write_history(history: &[Vec<u8>]) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::var_os("RINGCAST_FUZZ_HISTORY_DIR").map_or_else(
        || {
            PathBuf::from(format!(
                "artifacts/call_datagrams/history-{}-{n}",
                std::process::id()
            ))
        },
        PathBuf::from,
    );
    let _ = std::fs::create_dir_all(&dir);
    for (i, input) in history.iter().enumerate() {
        let _ = std::fs::write(dir.join(format!("{i:05}")), input);
    }
    dir
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
