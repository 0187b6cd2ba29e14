//! Recovery on real UDP: a call's path through an in-test relay breaks (the relay drops
//! everything both ways). Shorter than the consent grace (`IceTimings::failed_after`), the call
//! carries on by itself; longer, it fails with `IceDisconnected` and is reaped, while a call on
//! the same engine that is not behind the relay keeps streaming.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod relay;

use std::time::{Duration, Instant};

use common::{participant, silent_sfu};
use relay::Relay;
use ringcast::{CallState, EndReason, Engine, EngineError, EventKind, IceTimings, StreamSource};
use sfu_mock::server::{Server, ServerOptions};

/// Consent grace used here: short, so the tests stay short.
const FAILED_AFTER: Duration = Duration::from_secs(3);

fn engine() -> Engine {
    Engine::builder()
        .ice_timings(IceTimings {
            keepalive: Duration::from_millis(500),
            failed_after: FAILED_AFTER,
            ..IceTimings::default()
        })
        .build()
        .unwrap()
}

/// Creates and connects `key` in `chat`, through `relay` if given, playing a tone.
fn join(engine: &Engine, sfu: &Server, relay: Option<&Relay>, key: i64, chat: i64, hz: f32) -> u32 {
    let payload = engine.create_call(key).unwrap();
    let mut response = sfu.join(chat, payload.as_bytes()).unwrap();
    if let Some(r) = relay {
        response = r.rewrite_response(&response);
    }
    engine.connect(key, &response).unwrap();
    engine
        .set_stream_sources(key, StreamSource::Tone { frequency_hz: hz })
        .unwrap();
    engine.audio_ssrc(key).unwrap()
}

/// Waits until every key in `keys` is connected; panics on an end.
fn wait_connected(engine: &Engine, keys: &[i64]) {
    let end = Instant::now() + Duration::from_secs(10);
    let mut up = Vec::new();
    while up.len() < keys.len() {
        let left = end.saturating_duration_since(Instant::now());
        let e = engine.events().recv_timeout(left).expect("calls connect");
        match e.kind {
            EventKind::ConnectionChanged(CallState::Connected) => up.push(e.chat_id),
            EventKind::ConnectionChanged(CallState::Ended(r)) => {
                panic!("call {} ended while connecting: {r:?}", e.chat_id)
            }
            _ => {}
        }
    }
}

/// Every `ConnectionChanged(Ended)` seen in the event channel until `until`.
fn ends_until(engine: &Engine, until: Instant) -> Vec<(i64, EndReason, Instant)> {
    let mut ends = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Ok(e) = engine.events().recv_timeout(left)
            && let EventKind::ConnectionChanged(CallState::Ended(r)) = e.kind
        {
            ends.push((e.chat_id, r, Instant::now()));
        }
    }
    ends
}

fn sfu_packets(sfu: &Server, chat: i64, ssrc: u32) -> (u64, f64) {
    let p = participant(&sfu.stats().unwrap(), chat, ssrc);
    (
        p["packets"].as_u64().unwrap(),
        p["dominant_hz"].as_f64().unwrap_or(0.0),
    )
}

#[test]
fn a_break_shorter_than_the_grace_heals_without_any_api_call() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let relay = Relay::start(sfu.udp_addr());
    let engine = engine();
    let ssrc = join(&engine, &sfu, Some(&relay), 1, 11, 440.0);
    wait_connected(&engine, &[1]);
    std::thread::sleep(Duration::from_secs(1));
    let (before, _) = sfu_packets(&sfu, 11, ssrc);
    assert!(before >= 30, "streaming before the break: {before}");

    // Break the path for half the grace.
    let broken_at = Instant::now();
    relay.set_blocked(true);
    std::thread::sleep(FAILED_AFTER / 2);
    let (during, _) = sfu_packets(&sfu, 11, ssrc);
    relay.set_blocked(false);
    assert!(
        relay.dropped() >= 50,
        "the relay dropped {}",
        relay.dropped()
    );
    // Nothing crossed while blocked (a few may have been in flight at the switch).
    assert!(during <= before + 5, "{before} -> {during} while blocked");

    // Watch until well past the point where an unhealed call would have failed.
    let ends = ends_until(&engine, broken_at + FAILED_AFTER + Duration::from_secs(2));
    assert!(ends.is_empty(), "the call ended: {ends:?}");
    assert_eq!(engine.get_state(1).unwrap(), CallState::Connected);
    let (after, hz) = sfu_packets(&sfu, 11, ssrc);
    // Healed ~3.5 s before this point: 175 frames; ask for most of them.
    assert!(after >= during + 120, "after the heal: {during} -> {after}");
    assert!(
        (hz - 440.0).abs() <= 5.0,
        "sfu hears {hz} Hz after the heal"
    );
    let info = engine.call_info(1).unwrap();
    assert_eq!(info.stats.frames_skipped_late, 0, "{:?}", info.stats);
}

#[test]
fn a_break_past_the_grace_fails_the_call_and_spares_the_others() {
    let sfu = silent_sfu();
    let relay = Relay::start(sfu.udp_addr());
    let engine = engine();
    join(&engine, &sfu, Some(&relay), 1, 21, 440.0);
    let ssrc2 = join(&engine, &sfu, None, 2, 22, 620.0);
    wait_connected(&engine, &[1, 2]);
    std::thread::sleep(Duration::from_secs(1));

    let broken_at = Instant::now();
    relay.set_blocked(true);
    let (before2, _) = sfu_packets(&sfu, 22, ssrc2);
    let ends = {
        let mut ends = Vec::new();
        let limit = broken_at + FAILED_AFTER + Duration::from_secs(2);
        while ends.is_empty() && Instant::now() < limit {
            ends = ends_until(
                &engine,
                (Instant::now() + Duration::from_millis(100)).min(limit),
            );
        }
        ends
    };
    let [(chat, reason, at)] = ends.as_slice() else {
        panic!("expected one end within the grace + 2 s, got {ends:?}");
    };
    assert_eq!((*chat, reason), (1, &EndReason::IceDisconnected));
    let after = at.duration_since(broken_at);
    // Consent runs from the last authenticated datagram, at most one keepalive (500 ms) before
    // the break; the timer fires within a few ms.
    assert!(
        after >= FAILED_AFTER - Duration::from_millis(600)
            && after <= FAILED_AFTER + Duration::from_secs(1),
        "ended {after:?} after the break"
    );

    // Reaped: gone from every view, and the chat can be created again at once.
    assert!(matches!(
        engine.get_state(1),
        Err(EngineError::ConnectionNotFound(1))
    ));
    assert!(engine.calls().unwrap().iter().all(|c| c.chat_id != 1));
    assert_eq!(engine.stats().unwrap().calls_reaped, 1);
    engine.create_call(1).unwrap();

    // The call that was not behind the relay kept streaming throughout.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(engine.get_state(2).unwrap(), CallState::Connected);
    let sent2 = engine.call_info(2).unwrap().stats.packets_sent;
    std::thread::sleep(Duration::from_millis(200));
    let (after2, hz2) = sfu_packets(&sfu, 22, ssrc2);
    assert!(after2 >= before2 + 150, "call 2: {before2} -> {after2}");
    assert!(
        after2 as f64 >= sent2 as f64 * 0.95,
        "call 2: sfu got {after2} of {sent2}"
    );
    assert!((hz2 - 620.0).abs() <= 5.0, "call 2: {hz2} Hz");
}
