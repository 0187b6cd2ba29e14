//! Many calls on one engine against one sfu-mock UDP port, over real loopback UDP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{join_all, participant, verify, wait_connected};
use ringcast::Engine;
use sfu_mock::server::{Server, ServerOptions};

#[test]
fn five_hundred_calls_fifty_chats_one_sfu_port_two_shards() {
    let sfu = Server::start(ServerOptions {
        forward_audio: false,
        ..ServerOptions::default()
    })
    .unwrap();
    let engine = Engine::builder()
        .shards(2)
        .event_queue(16_384)
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
    // Let what was already in flight land, then nothing more may arrive from the stopped calls.
    std::thread::sleep(Duration::from_millis(300));
    let before = sfu.stats().unwrap();
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
