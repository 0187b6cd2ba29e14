//! Deterministic simulation: calls against the in-process SFU through a seeded lossy,
//! jittery network. No sockets, no threads, no sleeps.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringcast_core::media::{SharedSource, ToneSource};
use ringcast_core::sim::{NetConfig, SimCallId, World, seed_from_env, sim_crypto};
use sfu_mock::server::generate_cert;
use sfu_mock::{Sfu, SfuConfig};

const SFU_ADDR: &str = "198.19.0.1:3478";

fn world(seed: u64, net: NetConfig, calls: usize, chats: usize) -> World<Sfu> {
    let epoch = Instant::now();
    let addr: SocketAddr = SFU_ADDR.parse().unwrap();
    let mut config = SfuConfig::new(addr, seed, generate_cert().unwrap());
    config.crypto = Some(sim_crypto(seed ^ 1));
    let sfu = Sfu::new(epoch, config);
    let mut w = World::new(seed, epoch, net, sfu, generate_cert().unwrap());
    for i in 0..calls {
        let chat = (i % chats) as i64 + 1;
        let tone = ToneSource::new(tone_for(chat), None).unwrap();
        w.add_call(chat, Box::new(tone)).unwrap();
    }
    w
}

fn tone_for(chat: i64) -> f32 {
    300.0 + 110.0 * chat as f32
}

fn lossy() -> NetConfig {
    // 20 ms ± 10 ms one way, 5 % loss.
    NetConfig {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(20),
        loss: 0.05,
        duplicate: 0.0,
    }
}

fn run(seed: u64, calls: usize) -> World<Sfu> {
    let mut w = world(seed, lossy(), calls, 5);
    w.run_for(Duration::from_secs(6));
    w
}

#[test]
fn ten_calls_connect_and_deliver_through_loss_and_jitter() {
    let seed = seed_from_env(7);
    eprintln!("seed {seed} (replay with RINGCAST_SIM_SEED={seed})");
    let w = run(seed, 10);
    let stats = w.sfu().stats();

    for (i, sim) in w.calls().iter().enumerate() {
        assert!(sim.connected(), "call {} never connected", sim.ssrc);
        let sent = w.snapshot(SimCallId(i)).unwrap().stats.packets_sent;
        assert!(sent > 200, "call sent only {sent} packets in 6 s");
        let ssrc = sim.ssrc;
        let (_, list) = stats.iter().find(|(c, _)| *c == sim.chat_id).unwrap();
        let p = list.iter().find(|p| p.ssrc == ssrc).unwrap();
        let share = p.packets as f64 / sent as f64;
        assert!(
            share >= 0.90,
            "ssrc {ssrc}: sfu got {} of {sent} ({share:.3})",
            p.packets
        );
        assert!(p.lost > 0, "5 % loss must show up as lost packets");
        let hz = p.dominant_hz.unwrap();
        assert!(
            (hz - tone_for(sim.chat_id)).abs() < 5.0,
            "ssrc {ssrc}: {hz} Hz"
        );
    }
    let net = w.net_stats();
    assert!(net.lost > 0 && net.delivered > net.lost);
}

fn traced(seed: u64) -> (u64, Vec<String>) {
    let mut w = world(seed, lossy(), 10, 5);
    w.keep_trace(true);
    w.run_for(Duration::from_secs(6));
    (w.digest(), w.trace().to_vec())
}

#[test]
fn same_seed_same_digest_different_seed_different_digest() {
    let (a, trace_a) = traced(11);
    let (b, trace_b) = traced(11);
    if a != b {
        // Show where the two runs parted, so the cause can be found from the output alone.
        let at = trace_a
            .iter()
            .zip(&trace_b)
            .position(|(x, y)| x != y)
            .unwrap_or(trace_a.len().min(trace_b.len()));
        for line in trace_a.iter().skip(at.saturating_sub(5)).take(8) {
            eprintln!("run 1: {line}");
        }
        for line in trace_b.iter().skip(at.saturating_sub(5)).take(8) {
            eprintln!("run 2: {line}");
        }
    }
    assert_eq!(a, b, "the same seed must replay exactly");
    assert!(trace_a.len() > 1000, "the trace must cover the run");
    let (c, _) = traced(12);
    assert_ne!(a, c, "a different seed must change the trace");
}

#[test]
fn forwarded_audio_reaches_the_other_participant() {
    let mut w = world(3, NetConfig::default(), 2, 1);
    w.run_for(Duration::from_secs(3));
    for sim in w.calls() {
        let received = sim
            .events
            .iter()
            .filter(|e| matches!(e, ringcast_core::Event::AudioReceived(_)))
            .count();
        assert!(received > 100, "only {received} forwarded packets arrived");
    }
}

#[test]
fn silent_sfu_ends_the_call_by_consent_freshness() {
    let mut w = world(5, NetConfig::default(), 2, 1);
    w.run_for(Duration::from_secs(2));
    let ssrc = w.calls()[0].ssrc;
    w.sfu_mut()
        .misbehave(1, ssrc, sfu_mock::Misbehaviour::Silent)
        .unwrap();
    // Default consent timeout is 10 s: still up after 8, ended after 12.
    w.run_for(Duration::from_secs(8));
    assert_eq!(w.calls()[0].state, ringcast_core::CallState::Connected);
    w.run_for(Duration::from_secs(4));
    assert_eq!(
        w.calls()[0].state,
        ringcast_core::CallState::Ended(ringcast_core::EndReason::IceDisconnected)
    );
    // The other participant is unaffected.
    assert_eq!(w.calls()[1].state, ringcast_core::CallState::Connected);
}

/// 1,000 calls in 50 chats (one shared encoder per chat) through loss and jitter.
fn thousand(seed: u64) -> World<Sfu> {
    let epoch = Instant::now();
    let addr: SocketAddr = SFU_ADDR.parse().unwrap();
    let mut config = SfuConfig::new(addr, seed, generate_cert().unwrap());
    config.crypto = Some(sim_crypto(seed ^ 1));
    config.analyse_audio = false;
    config.forward_audio = false;
    let sfu = Sfu::new(epoch, config);
    let net = NetConfig {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(10),
        loss: 0.02,
        duplicate: 0.01,
    };
    let mut w = World::new(seed, epoch, net, sfu, generate_cert().unwrap());
    let tones: Vec<SharedSource> = (0..50)
        .map(|c| SharedSource::new(Box::new(ToneSource::new(tone_for(c), None).unwrap())))
        .collect();
    for i in 0..1000 {
        let chat = (i % 50) as i64;
        w.add_call(chat, Box::new(tones[chat as usize].reader()))
            .unwrap();
    }
    w.run_for(Duration::from_secs(6));
    w
}

#[test]
fn thousand_calls_under_loss_stay_deterministic() {
    let seed = seed_from_env(21);
    eprintln!("seed {seed} (replay with RINGCAST_SIM_SEED={seed})");
    let a = thousand(seed);
    let connected = a.calls().iter().filter(|c| c.connected()).count();
    assert_eq!(connected, 1000);
    let sent = a.endpoint_stats().packets_sent;
    assert!(sent > 1000 * 200, "sent {sent}");
    let b = thousand(seed);
    assert_eq!(a.digest(), b.digest(), "same seed, same trace");
    assert_eq!(a.net_stats(), b.net_stats());
    let c = thousand(seed + 1);
    assert_ne!(a.digest(), c.digest());
}

/// Fails after a few frames, like a decoder hitting a broken file.
struct Dying {
    inner: ToneSource,
    left: u32,
}

impl ringcast_core::FrameSource for Dying {
    fn next_frame(
        &mut self,
    ) -> Result<Option<ringcast_core::OpusFrame>, ringcast_core::SourceError> {
        if self.left == 0 {
            return Err(ringcast_core::SourceError::Io {
                reason: "decoder died".to_owned(),
            });
        }
        self.left -= 1;
        self.inner.next_frame()
    }
}

#[test]
fn end_of_stream_and_a_dead_source_keep_the_call() {
    use ringcast_core::{CallState, Event, SourceError, TrackKind};
    let mut w = world(9, NetConfig::default(), 0, 1);
    let short = ToneSource::new(440.0, Some(Duration::from_millis(200))).unwrap();
    let a = w.add_call(1, Box::new(short)).unwrap();
    let dying = Dying {
        inner: ToneSource::new(440.0, None).unwrap(),
        left: 10,
    };
    let b = w.add_call(1, Box::new(dying)).unwrap();
    w.run_for(Duration::from_secs(3));
    let a = w.call(a).unwrap();
    assert!(a.events.contains(&Event::StreamEnded {
        track: TrackKind::Audio,
        error: None
    }));
    assert_eq!(
        a.state,
        CallState::Connected,
        "a finished track leaves the call up"
    );
    let b = w.call(b).unwrap();
    assert!(b.events.iter().any(|e| matches!(
        e,
        Event::StreamEnded { track: TrackKind::Audio, error: Some(SourceError::Io { reason }) }
            if reason.contains("decoder died")
    )));
    assert_eq!(
        b.state,
        CallState::Connected,
        "a dead source leaves the call up"
    );
    assert_eq!(w.endpoint_stats().calls, 2);
}
