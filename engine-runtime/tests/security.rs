//! Security properties on real UDP, against an in-process sfu-mock (some through an in-test
//! relay that can capture, drop and inject datagrams on the path):
//! - a DTLS certificate that does not match the signaled fingerprint fails the call with a
//!   typed reason, and no media is sent (both directions of the check);
//! - replayed SRTP is dropped and counted, by the engine and by sfu-mock;
//! - datagrams from unknown sources never reach a connected call; forged ones from the SFU's
//!   own address do not keep a dead call alive;
//!
//! The STUN flood with random usernames (bounded memory) is in `stun_flood.rs`: it measures the
//! process's RSS, so it must be the only test in its process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod relay;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{
    forged_stun, join_with, no_edit, participant, silent_sfu, wait_calls_connected, wait_event,
};
use relay::Relay;
use ringcast::{CallState, EndReason, Engine, EventKind, IceTimings};
use serde_json::Value;
use sfu_mock::server::{Server, ServerOptions};

/// Changes the first byte of a colon-separated hex fingerprint.
fn alter_fingerprint(fp: &mut Value) {
    let s = fp.as_str().unwrap().to_owned();
    let first = if s.starts_with("00") { "01" } else { "00" };
    *fp = Value::String(format!("{first}{}", &s[2..]));
}

#[test]
fn a_dtls_fingerprint_mismatch_fails_the_call_typed_and_sends_no_media() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap();

    // The SFU's answer carries a fingerprint one byte off: the engine must refuse the SFU.
    let (_, _, ssrc1) = join_with(&engine, &sfu, 1, 31, 440.0, no_edit, |r| {
        let mut v: Value = serde_json::from_str(&r).unwrap();
        alter_fingerprint(&mut v["transport"]["fingerprints"][0]["fingerprint"]);
        v.to_string()
    });
    let e = wait_event(&engine, Duration::from_secs(5), |e| {
        matches!(e.kind, EventKind::ConnectionChanged(CallState::Ended(_)))
    })
    .expect("the call ends");
    assert_eq!(
        (e.chat_id, e.kind),
        (
            1,
            EventKind::ConnectionChanged(CallState::Ended(EndReason::FingerprintMismatch))
        )
    );
    assert!(EndReason::FingerprintMismatch.is_failure());
    assert!(engine.calls().unwrap().is_empty(), "reaped");
    assert_eq!(engine.stats().unwrap().packets_sent, 0, "no media written");
    std::thread::sleep(Duration::from_millis(300));
    let p = participant(&sfu.stats().unwrap(), 31, ssrc1);
    assert_eq!(p["packets"].as_u64(), Some(0), "{p}");

    // The reverse: the SFU is given a client fingerprint one byte off and must refuse us.
    // The engine (DTLS server) never completes the handshake and times out.
    let (_, _, ssrc2) = join_with(
        &engine,
        &sfu,
        2,
        32,
        440.0,
        |p| alter_fingerprint(&mut p["fingerprints"][0]["fingerprint"]),
        |r| r,
    );
    let e = wait_event(&engine, Duration::from_secs(6), |e| {
        matches!(e.kind, EventKind::ConnectionChanged(CallState::Ended(_)))
    })
    .expect("the call ends");
    assert_eq!(e.chat_id, 2);
    let EventKind::ConnectionChanged(CallState::Ended(reason)) = e.kind else {
        unreachable!()
    };
    assert!(
        matches!(reason, EndReason::ConnectTimeout | EndReason::Dtls(_)),
        "{reason:?}"
    );
    assert_eq!(engine.stats().unwrap().packets_sent, 0, "no media written");
    let p = participant(&sfu.stats().unwrap(), 32, ssrc2);
    assert_eq!(p["packets"].as_u64(), Some(0), "{p}");
    assert_eq!(p["connected"].as_bool(), Some(false), "{p}");
}

#[test]
fn replayed_srtp_is_dropped_and_counted_by_the_engine_and_the_sfu() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let relay = Relay::start(sfu.udp_addr());
    let engine = Engine::builder().build().unwrap();
    // Call 1 behind the relay, call 2 direct, same chat: the SFU forwards call 2's audio to
    // call 1 through the relay, and call 1's audio passes the relay on its way in.
    let (_, _, ssrc1) = join_with(&engine, &sfu, 1, 41, 440.0, no_edit, |r| {
        relay.rewrite_response(&r)
    });
    join_with(&engine, &sfu, 2, 41, 880.0, no_edit, |r| r);
    wait_calls_connected(&engine, &[1, 2]);
    std::thread::sleep(Duration::from_millis(1500));

    // SFU -> engine: replay what the SFU sent call 1 (call 2's forwarded audio).
    let to_engine = relay.captured_to_engine();
    assert!(to_engine.len() >= 40, "captured {}", to_engine.len());
    let before = engine.call_info(1).unwrap().stats;
    let engine_dropped_before = engine.stats().unwrap().dropped_by_call;
    for d in &to_engine {
        relay.inject_to_engine(d);
    }
    // SFU side: replay call 1's own packets at the SFU from its nominated address.
    let to_sfu = relay.captured_to_sfu();
    assert!(to_sfu.len() >= 40, "captured {}", to_sfu.len());
    for d in &to_sfu {
        relay.inject_to_sfu(d);
    }
    std::thread::sleep(Duration::from_millis(500));

    let info = engine.call_info(1).unwrap();
    assert_eq!(info.state, CallState::Connected);
    let replayed = info.stats.dropped_replayed - before.dropped_replayed;
    assert_eq!(replayed, to_engine.len() as u64, "{:?}", info.stats);
    assert!(
        engine.stats().unwrap().dropped_by_call - engine_dropped_before >= replayed,
        "the engine counts them as dropped by the call"
    );
    // 2 s of forwarded audio at most arrived in the meantime, not the replays on top.
    let heard = info.stats.audio_packets_received - before.audio_packets_received;
    assert!(heard <= 100, "heard {heard} packets in 0.5 s");

    let stats = sfu.stats().unwrap();
    assert_eq!(
        stats["dropped"]["replayed"].as_u64(),
        Some(to_sfu.len() as u64),
        "{}",
        stats["dropped"]
    );
    let p = participant(&stats, 41, ssrc1);
    let got = p["packets"].as_u64().unwrap();
    let sent = engine.call_info(1).unwrap().stats.packets_sent;
    assert!(
        got <= sent,
        "the sfu counted {got} of {sent} sent: replays got in"
    );
    assert!(got as f64 >= sent as f64 * 0.9, "sfu got {got} of {sent}");
}

/// An RTP header with our Opus PT and a random SSRC, and 100 bytes that are not SRTP.
fn forged_rtp(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut d = vec![0x90, 111];
    d.extend_from_slice(&rng.u16(..).to_be_bytes());
    d.extend_from_slice(&rng.u32(..).to_be_bytes());
    d.extend_from_slice(&rng.u32(..).to_be_bytes());
    d.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0x7F, 0, 0]); // audio-level extension
    d.extend((0..100).map(|_| rng.u8(..)));
    d
}

fn username(payload: &Value, response: &Value) -> String {
    format!(
        "{}:{}",
        payload["ufrag"].as_str().unwrap(),
        response["transport"]["ufrag"].as_str().unwrap()
    )
}

#[test]
fn datagrams_from_unknown_sources_never_reach_a_call() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder().build().unwrap();
    let (payload, response, ssrc) = join_with(&engine, &sfu, 1, 51, 440.0, no_edit, |r| r);
    wait_calls_connected(&engine, &[1]);
    std::thread::sleep(Duration::from_millis(500));
    let engine_addr = engine.call_info(1).unwrap().local_addr.unwrap();
    let user = username(&payload, &response);

    let before = engine.call_info(1).unwrap().stats;
    let unroutable_before = engine.stats().unwrap().dropped_unroutable;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut sent = 0u64;
    // From many new addresses: STUN with the call's real ufrags (so the demux routes it by
    // USERNAME) but no valid integrity, valid-looking RTP, DTLS-looking and random garbage.
    for port_round in 0..20 {
        let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..25u8 {
            let mut txid = [0u8; 12];
            rng.fill(&mut txid);
            attacker
                .send_to(&forged_stun(&user, txid), engine_addr)
                .unwrap();
            attacker
                .send_to(&forged_rtp(&mut rng), engine_addr)
                .unwrap();
            let mut g: Vec<u8> = (0..1 + rng.usize(..300)).map(|_| rng.u8(..)).collect();
            g[0] = [0x16, 0x17, 0x80, 0x01, 0xFF][usize::from(i) % 5];
            attacker.send_to(&g, engine_addr).unwrap();
            sent += 3;
        }
        if port_round % 4 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(500));

    let info = engine.call_info(1).unwrap();
    assert_eq!(info.state, CallState::Connected);
    let s = &info.stats;
    assert_eq!(
        (
            s.dropped_malformed,
            s.dropped_rejected,
            s.dropped_not_live,
            s.dropped_replayed,
            s.dropped_unknown_ssrc
        ),
        (
            before.dropped_malformed,
            before.dropped_rejected,
            before.dropped_not_live,
            before.dropped_replayed,
            before.dropped_unknown_ssrc
        ),
        "the call saw none of it: {s:?}"
    );
    let unroutable = engine.stats().unwrap().dropped_unroutable - unroutable_before;
    assert_eq!(unroutable, sent, "every datagram counted as unroutable");
    // And the call kept streaming, verified by the SFU.
    let p = participant(&sfu.stats().unwrap(), 51, ssrc);
    let got = p["packets"].as_u64().unwrap();
    assert!(
        got as f64 >= s.packets_sent as f64 * 0.95,
        "sfu got {got} of {}",
        s.packets_sent
    );
    assert!((p["dominant_hz"].as_f64().unwrap() - 440.0).abs() <= 5.0);

    // The same forged STUN at the SFU, with its ufrag, from new ports: refused (and not
    // remembered per source address, see sfu.rs `by_check_addr`).
    let rejected_before = sfu.stats().unwrap()["dropped"]["rejected"]
        .as_u64()
        .unwrap();
    let to_sfu = format!(
        "{}:{}",
        response["transport"]["ufrag"].as_str().unwrap(),
        payload["ufrag"].as_str().unwrap()
    );
    for _ in 0..10 {
        let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..10 {
            let mut txid = [0u8; 12];
            rng.fill(&mut txid);
            attacker
                .send_to(&forged_stun(&to_sfu, txid), sfu.udp_addr())
                .unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let sfu_stats = sfu.stats().unwrap();
    let rejected = sfu_stats["dropped"]["rejected"].as_u64().unwrap() - rejected_before;
    assert_eq!(rejected, 100, "{}", sfu_stats["dropped"]);
    assert_eq!(
        participant(&sfu_stats, 51, ssrc)["connected"].as_bool(),
        Some(true)
    );

    // Before ICE has connected, STUN with the call's ufrag is routed to it (an SFU's checks may
    // come from an address it did not list), but forged STUN is refused there without any
    // change of state.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (payload2, response2, _) = join_with(&engine, &sfu, 2, 52, 440.0, no_edit, |r| {
        let port = sfu.udp_addr().port();
        r.replace(
            &format!("\"{port}\""),
            &format!("\"{}\"", dead.local_addr().unwrap().port()),
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    let addr2 = engine.call_info(2).unwrap().local_addr.unwrap();
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        let mut txid = [0u8; 12];
        rng.fill(&mut txid);
        attacker
            .send_to(&forged_stun(&username(&payload2, &response2), txid), addr2)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let info2 = engine.call_info(2).unwrap();
    assert_eq!(info2.state, CallState::Connecting);
    assert_eq!(info2.stats.dropped_rejected, 50, "{:?}", info2.stats);
    assert_eq!(info2.stats.dropped_malformed, 0, "forged stun parses");
}

#[test]
fn forged_datagrams_from_the_sfu_address_do_not_keep_a_dead_call_alive() {
    let sfu = silent_sfu();
    let relay = Relay::start(sfu.udp_addr());
    let failed_after = Duration::from_secs(2);
    let engine = Engine::builder()
        .ice_timings(IceTimings {
            keepalive: Duration::from_millis(500),
            failed_after,
            ..IceTimings::default()
        })
        .build()
        .unwrap();
    let (payload, response, _) = join_with(&engine, &sfu, 1, 61, 440.0, no_edit, |r| {
        relay.rewrite_response(&r)
    });
    wait_calls_connected(&engine, &[1]);
    std::thread::sleep(Duration::from_millis(500));

    // The SFU is gone; an on-path attacker keeps sending from its address: STUN with the
    // right ufrags and a bad MESSAGE-INTEGRITY, and RTP that is not SRTP.
    relay.set_blocked(true);
    let broken_at = Instant::now();
    let user = username(&payload, &response);
    let mut rng = fastrand::Rng::with_seed(9);
    let mut forged = 0u64;
    let ended = loop {
        let mut txid = [0u8; 12];
        rng.fill(&mut txid);
        relay.inject_to_engine(&forged_stun(&user, txid));
        relay.inject_to_engine(&forged_rtp(&mut rng));
        forged += 2;
        if let Some(e) = wait_event(&engine, Duration::from_millis(50), |e| {
            matches!(e.kind, EventKind::ConnectionChanged(CallState::Ended(_)))
        }) {
            break Some(e);
        }
        if broken_at.elapsed() > failed_after + Duration::from_secs(2) {
            break None;
        }
    };
    let e = ended.expect("forged datagrams from the sfu address kept the dead call alive");
    assert_eq!(
        e.kind,
        EventKind::ConnectionChanged(CallState::Ended(EndReason::IceDisconnected))
    );
    assert!(forged >= 40, "only {forged} forged datagrams sent");
    let elapsed = broken_at.elapsed();
    assert!(
        elapsed <= failed_after + Duration::from_secs(1),
        "{elapsed:?}"
    );
}
