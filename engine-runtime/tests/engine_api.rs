//! The Engine API against an in-process sfu-mock over real UDP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::participant;
use ringcast::{CallState, EndReason, Engine, EngineError, EventKind, StreamSource};
use sfu_mock::analysis::dominant_frequency_hz;
use sfu_mock::server::{Server, ServerOptions};

fn wait_for(
    engine: &Engine,
    limit: Duration,
    mut pred: impl FnMut(&ringcast::EngineEvent) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match engine.events().recv_timeout(left) {
            Ok(e) if pred(&e) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

fn join(engine: &Engine, sfu: &Server, key: i64, chat: i64, hz: f32) -> u32 {
    let payload = engine.create_call(key).unwrap();
    let response = sfu.join(chat, payload.as_bytes()).unwrap();
    engine.connect(key, &response).unwrap();
    engine
        .set_stream_sources(key, StreamSource::Tone { frequency_hz: hz })
        .unwrap();
    engine.audio_ssrc(key).unwrap()
}

/// Call 2 hears call 1 (forwarded with call 1's SSRC) and call 1 hears call 2: returns the
/// dominant frequency call 2 decoded from up to 4 s of events.
fn call_two_hears(engine: &Engine, ssrc_a: u32, ssrc_b: u32) -> f32 {
    let mut pcm = Vec::new();
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut buf = vec![0i16; 5760];
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end && pcm.len() < 48_000 {
        let Ok(e) = engine.events().recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if let EventKind::AudioReceived { ssrc, payload, .. } = e.kind {
            if e.chat_id == 2 {
                assert_eq!(ssrc, ssrc_a, "call 2 hears only call 1");
                let n = decoder.decode(&payload, &mut buf, false).unwrap();
                pcm.extend(buf[..n].iter().map(|s| f32::from(*s) / 32768.0));
            } else {
                assert_eq!(ssrc, ssrc_b, "call 1 hears only call 2");
            }
        }
    }
    assert!(pcm.len() >= 48_000, "received only {} samples", pcm.len());
    dominant_frequency_hz(&pcm[pcm.len() - 16_384..], 48_000).unwrap()
}

#[test]
fn second_participant_decodes_the_first_ones_tone() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder().receive_audio(true).build().unwrap();
    let ssrc_a = join(&engine, &sfu, 1, 7, 440.0);
    let ssrc_b = join(&engine, &sfu, 2, 7, 1000.0);
    let hz = call_two_hears(&engine, ssrc_a, ssrc_b);
    assert!((hz - 440.0).abs() <= 5.0, "call 2 decoded {hz} Hz");
}

/// sfu-mock's `latency` holds back everything it sends, as a real network does: the handshake
/// (SFU check -> our answer -> nomination and ClientHello -> our flight -> its Finished) takes at
/// least three of its one-way delays, and media still flows both ways.
#[test]
fn an_sfu_with_latency_connects_no_faster_than_its_round_trips() {
    let latency = Duration::from_millis(100);
    let sfu = Server::start(ServerOptions {
        latency,
        jitter: Duration::from_millis(5),
        ..ServerOptions::default()
    })
    .unwrap();
    let engine = Engine::builder().receive_audio(true).build().unwrap();
    let started = Instant::now();
    let ssrc_a = join(&engine, &sfu, 1, 7, 440.0);
    assert!(
        wait_for(&engine, Duration::from_secs(5), |e| e.chat_id == 1
            && matches!(
                e.kind,
                EventKind::ConnectionChanged(CallState::Connected)
            )),
        "call 1 did not connect"
    );
    let took = started.elapsed();
    assert!(
        took >= latency * 2,
        "connected after {took:?}, below two delays"
    );
    let ssrc_b = join(&engine, &sfu, 2, 7, 1000.0);
    let hz = call_two_hears(&engine, ssrc_a, ssrc_b);
    assert!((hz - 440.0).abs() <= 5.0, "call 2 decoded {hz} Hz");
}

#[test]
fn garbage_at_both_ports_does_not_disturb_a_streaming_call() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder().build().unwrap();
    let ssrc = join(&engine, &sfu, 1, 3, 520.0);
    assert!(wait_for(&engine, Duration::from_secs(5), |e| {
        e.kind == EventKind::ConnectionChanged(CallState::Connected)
    }));
    let engine_addr = engine.call_info(1).unwrap().local_addr.unwrap();
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = 0x1234_5678_u64;
    let mut garbage = |len: usize, first: u8| {
        let mut v = vec![first; len];
        for b in v.iter_mut().skip(1) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
        v
    };
    // Random bytes plus things that look like STUN, DTLS and RTP at first glance.
    for i in 0..2000 {
        let first = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, 0xFF, 0x42][i % 8];
        let d = garbage(1 + (i * 37) % 1400, first);
        attacker.send_to(&d, engine_addr).unwrap();
        attacker.send_to(&d, sfu.udp_addr()).unwrap();
        // Paced so the kernel's default socket buffer does not overflow: every datagram
        // must reach (and be counted by) the engine and the SFU.
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let info = engine.call_info(1).unwrap();
    assert_eq!(info.state, CallState::Connected, "the call survived");
    let estats = engine.stats().unwrap();
    assert!(
        estats.dropped_unroutable >= 1900,
        "engine counted {estats:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    let stats = sfu.stats().unwrap();
    let dropped = &stats["dropped"];
    let sfu_drops =
        dropped["garbage"].as_u64().unwrap() + dropped["unknown_source"].as_u64().unwrap();
    assert!(sfu_drops >= 1900, "sfu counted {dropped}");
    let p = participant(&stats, 3, ssrc);
    let sent = info.stats.packets_sent;
    let got = p["packets"].as_u64().unwrap();
    assert!(
        got as f64 >= sent as f64 * 0.95,
        "sfu verified {got} of {sent}"
    );
    assert!((p["dominant_hz"].as_f64().unwrap() - 520.0).abs() <= 5.0);
}

#[test]
fn connect_timeout_fails_the_call_and_frees_the_chat() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder()
        .connect_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let payload = engine.create_call(5).unwrap();
    assert!(matches!(
        engine.create_call(5),
        Err(EngineError::ConnectionExists(5))
    ));
    let response = sfu.join(1, payload.as_bytes()).unwrap();
    // Point the answer at a port where nobody answers.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let sfu_port = sfu.udp_addr().port().to_string();
    let response = response.replace(&format!("\"{sfu_port}\""), &format!("\"{dead_port}\""));
    engine.connect(5, &response).unwrap();
    let started = Instant::now();
    let failed = wait_for(&engine, Duration::from_secs(5), |e| {
        e.chat_id == 5
            && e.kind == EventKind::ConnectionChanged(CallState::Ended(EndReason::ConnectTimeout))
    });
    assert!(failed, "expected a ConnectTimeout event");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Reaped: the same chat can be created again at once.
    assert!(engine.create_call(5).is_ok());
}

#[test]
fn bad_answers_are_typed_errors() {
    let engine = Engine::builder().build().unwrap();
    engine.create_call(9).unwrap();
    let cases = [
        ("", "invalid json"),
        ("{\"transport\":", "invalid json"),
        ("[1,2]", "$"),
        (
            "{\"transport\":{\"ufrag\":\"abcd\",\"pwd\":\"0123456789012345678901\",\"candidates\":[]}}",
            "transport.fingerprints",
        ),
    ];
    for (json, needle) in cases {
        match engine.connect(9, json) {
            Err(EngineError::Signaling(e)) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{json:?}: {msg}");
            }
            other => panic!("{json:?}: expected a signaling error, got {other:?}"),
        }
    }
    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(100_000));
    assert!(matches!(
        engine.connect(9, &huge),
        Err(EngineError::Signaling(_))
    ));
    // The call is still there and usable.
    assert_eq!(engine.get_state(9).unwrap(), CallState::New);
}

/// A wrong setting is a typed configuration error, not an I/O error.
#[test]
fn an_unspecified_bind_address_is_a_config_error() {
    let bind = "0.0.0.0:0".parse().expect("address");
    match Engine::builder().bind(bind).build() {
        Err(EngineError::InvalidConfig(reason)) => assert!(reason.contains("bind address")),
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("an engine bound to 0.0.0.0 was built"),
    }
}
