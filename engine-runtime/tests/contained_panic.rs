//! A panic inside one call's processing (a bug, injected here through the test-only fault
//! hook) ends that call alone, with a typed reason and an event; the shard, its other calls
//! and the engine go on, and the id can be used again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{join_all, silent_sfu, verify, wait_connected, wait_event};
use ringcast::{CallState, EndReason, Engine, EventKind, StreamSource};

#[test]
fn a_panicking_call_ends_alone_and_the_others_play_on() {
    let sfu = silent_sfu();
    let engine = Engine::builder().shards(2).build().unwrap();
    let (mut plan, _sources) = join_all(&engine, &sfu, 6, 3);
    wait_connected(&engine, 6, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));

    engine.inject_panic(2).unwrap();
    let ended = wait_event(&engine, Duration::from_secs(5), |e| {
        e.chat_id == 2 && matches!(e.kind, EventKind::ConnectionChanged(CallState::Ended(_)))
    })
    .expect("the call that panicked reports its end");
    let EventKind::ConnectionChanged(CallState::Ended(EndReason::Panicked(message))) = &ended.kind
    else {
        panic!("{ended:?}");
    };
    assert!(message.contains("injected fault"), "{message}");
    let stats = engine.stats().unwrap();
    assert_eq!(stats.calls_panicked, 1, "{stats:?}");
    assert_eq!(stats.calls, 5, "only that call is gone");

    // The others, on both shards, play on: verified at the SFU after the panic.
    std::thread::sleep(Duration::from_secs(2));
    let others: Vec<i64> = vec![0, 1, 3, 4, 5];
    verify(&engine, &sfu, &plan, &others);

    // The id is free again, and a new call under it connects and plays.
    let payload = engine.create_call(2).unwrap();
    engine
        .set_stream_sources(
            2,
            StreamSource::Tone {
                frequency_hz: common::tone_for(2),
            },
        )
        .unwrap();
    let response = sfu.join(2, payload.as_bytes()).unwrap();
    engine.connect(2, &response).unwrap();
    plan.insert(2, (2, engine.audio_ssrc(2).unwrap()));
    wait_connected(&engine, 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    verify(&engine, &sfu, &plan, &[2]);
    assert_eq!(engine.stats().unwrap().calls_panicked, 1);
}
