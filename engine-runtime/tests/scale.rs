//! Many calls on one engine against one sfu-mock UDP port, over real loopback UDP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{join_all, participant, silent_sfu, verify, wait_connected};
use ringcast::Engine;
use sfu_mock::server::Server;

#[test]
fn five_hundred_calls_fifty_chats_one_sfu_port_two_shards() {
    let sfu = silent_sfu();
    let engine = Engine::builder()
        .shards(2)
        .event_queue(16_384)
        // As long as the test waits: 500 handshakes on a busy 2-core machine can take more
        // than the default 10 s (one ConnectTimeout seen in CI with a build running beside).
        .connect_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (plan, _sources) = join_all(&engine, &sfu, 500, 50);
    wait_connected(&engine, 500, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let all: Vec<i64> = (0..500).collect();
    verify(&engine, &sfu, &plan, &all);
    let estats = engine.stats().unwrap();
    // The socket rule: 500 calls to one SFU address need 500 local sockets.
    assert!(estats.sockets >= 500, "{estats:?}");

    // Stop half: the SFU sees them leave (DTLS close_notify), the rest stream on.
    let (stopped, kept): (Vec<i64>, Vec<i64>) = all.iter().partition(|k| *k % 2 == 0);
    for k in &stopped {
        engine.stop(*k).unwrap();
    }
    // Let what was already in flight land: each stopped call's close_notify, which it sends
    // after its last packet, has reached the SFU (on a loaded machine the SFU's thread can be
    // seconds behind). From then on nothing more may arrive from the stopped calls.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let stats = sfu.stats().unwrap();
        let left = stopped
            .iter()
            .filter(|k| {
                let (chat, ssrc) = plan[*k];
                participant(&stats, chat, ssrc)["connected"].as_bool() == Some(true)
            })
            .count();
        if left == 0 {
            break stats;
        }
        assert!(
            std::time::Instant::now() < end,
            "{left} stopped calls still connected at the sfu"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(2));
    let after = verify(&engine, &sfu, &plan, &kept);
    for k in &stopped {
        let (chat, ssrc) = plan[k];
        let a = participant(&before, chat, ssrc);
        let b = participant(&after, chat, ssrc);
        assert!(
            !b["connected"].as_bool().unwrap(),
            "call {k} still connected at the sfu"
        );
        let extra = b["packets"].as_u64().unwrap() - a["packets"].as_u64().unwrap();
        assert_eq!(extra, 0, "call {k} kept sending after stop");
    }
    for k in &kept {
        let (chat, ssrc) = plan[k];
        let a = participant(&before, chat, ssrc);
        let b = participant(&after, chat, ssrc);
        let extra = b["packets"].as_u64().unwrap() - a["packets"].as_u64().unwrap();
        assert!(
            extra >= 90,
            "call {k} sent only {extra} packets in 2 s after the stops"
        );
    }
    assert_eq!(engine.calls().unwrap().len(), 250);
}

/// Telegram puts many chats on few SFU addresses: calls to *different* SFU addresses share
/// one local socket, whichever shard they live on.
#[test]
fn calls_to_different_sfus_share_sockets_across_shards() {
    let sfus: Vec<Server> = (0..3).map(|_| silent_sfu()).collect();
    let engine = Engine::builder().shards(2).build().unwrap();
    let mut ssrcs = Vec::new();
    for key in 0..30i64 {
        let sfu = &sfus[(key % 3) as usize];
        let payload = engine.create_call(key).unwrap();
        let response = sfu.join(key, payload.as_bytes()).unwrap();
        engine.connect(key, &response).unwrap();
        engine
            .set_stream_sources(
                key,
                ringcast::StreamSource::Tone {
                    frequency_hz: 600.0,
                },
            )
            .unwrap();
        ssrcs.push(engine.audio_ssrc(key).unwrap());
    }
    wait_connected(&engine, 30, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    let stats = engine.stats().unwrap();
    // 10 calls per SFU address need 10 sockets; 30 calls fit in those 10.
    assert_eq!(stats.sockets, 10, "{stats:?}");
    let infos = engine.calls().unwrap();
    let mut shards_per_socket = std::collections::HashMap::new();
    for info in &infos {
        shards_per_socket
            .entry(info.local_addr.unwrap())
            .or_insert_with(Vec::new)
            .push(info.chat_id);
    }
    assert_eq!(shards_per_socket.len(), 10);
    std::thread::sleep(Duration::from_millis(200));
    for info in &infos {
        let sfu = &sfus[(info.chat_id % 3) as usize];
        let p = participant(&sfu.stats().unwrap(), info.chat_id, info.ssrc);
        let got = p["packets"].as_u64().unwrap();
        assert!(
            got as f64 >= info.stats.packets_sent as f64 * 0.95,
            "call {}: {got}",
            info.chat_id
        );
        assert!((p["dominant_hz"].as_f64().unwrap() - 600.0).abs() <= 5.0);
    }
    // Shards really share the sockets: some answers arrived on one shard for the other.
    assert!(stats.forwarded_between_shards > 0, "{stats:?}");
}
