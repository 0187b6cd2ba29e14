//! A misbehaving remote affects only its own call: a garbage flood at the engine's sockets, a
//! peer that stops answering, a peer that closes DTLS. The others keep their verified counts and
//! the bad calls end with a typed reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{join_all, silent_sfu, verify, wait_connected};
use ringcast::{CallState, EndReason, Engine, EventKind, IceTimings};
use sfu_mock::Misbehaviour;

#[test]
fn bad_peers_end_with_typed_reasons_and_disturb_no_one_else() {
    let sfu = silent_sfu();
    let engine = Engine::builder()
        .shards(2)
        .ice_timings(IceTimings {
            keepalive: Duration::from_millis(500),
            max_retransmits: 3,
            failed_after: Duration::from_secs(1),
            ..IceTimings::default()
        })
        .build()
        .unwrap();
    let (plan, _sources) = join_all(&engine, &sfu, 20, 5);
    wait_connected(&engine, 20, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    let infos = engine.calls().unwrap();

    // Call 3's peer goes silent, call 4's peer closes DTLS.
    let (chat3, ssrc3) = plan[&3];
    let (chat4, ssrc4) = plan[&4];
    sfu.misbehave(chat3, ssrc3, Misbehaviour::Silent).unwrap();
    sfu.misbehave(chat4, ssrc4, Misbehaviour::CloseDtls)
        .unwrap();

    // And garbage at every engine socket while that happens.
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    for info in &infos {
        let addr = info.local_addr.unwrap();
        for i in 0..50u8 {
            attacker.send_to(&[0x80 | (i & 0x3F); 120], addr).unwrap();
            attacker
                .send_to(&[i, 1, 0, 8, 0x21, 0x12, 0xA4, 0x42], addr)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut ended: HashMap<i64, EndReason> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ended.len() < 2 && Instant::now() < deadline {
        if let Ok(e) = engine.events().recv_timeout(Duration::from_millis(100))
            && let EventKind::ConnectionChanged(CallState::Ended(reason)) = e.kind
        {
            ended.insert(e.chat_id, reason);
        }
    }
    assert_eq!(
        ended.get(&3),
        Some(&EndReason::IceDisconnected),
        "{ended:?}"
    );
    assert!(
        matches!(ended.get(&4), Some(EndReason::Dtls(_))),
        "{ended:?}"
    );
    assert_eq!(ended.len(), 2, "only the two bad calls ended: {ended:?}");

    let others: Vec<i64> = (0..20).filter(|k| *k != 3 && *k != 4).collect();
    verify(&engine, &sfu, &plan, &others);
    let stats = engine.stats().unwrap();
    assert!(
        stats.dropped_unroutable + stats.dropped_by_call >= 1000,
        "{stats:?}"
    );
    assert_eq!(engine.calls().unwrap().len(), 18);
    // Reaped: both chats can be created again at once.
    assert!(engine.create_call(3).is_ok());
    assert!(engine.create_call(4).is_ok());
}
