//! A hostile SFU toward one call, over real UDP: sfu-mock sends one participant thousands of
//! hostile SRTCP datagrams protected with its keys (NACK storms over every sequence number,
//! PLI and FIR floods, REMB of zero, oversized and self-contradictory compounds, compounds
//! from its own SSRC, replays; `sfu_mock::hostile`). That call stays up, counts them and
//! spends at most its budgets on them; the other calls on the same shard keep their verified
//! counts and their pacing. The bounds themselves are pinned per item by
//! `ringcast-core`'s `tests::hostile`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{join_all, silent_sfu, verify, wait_connected};
use ringcast::{CallState, Engine};
use sfu_mock::Misbehaviour;

#[test]
fn a_hostile_sfu_costs_only_its_own_call_and_that_within_its_budgets() {
    let sfu = silent_sfu();
    // One shard: the hostile call shares its thread with every other call.
    let engine = Engine::builder().shards(1).build().unwrap();
    let (plan, _sources) = join_all(&engine, &sfu, 10, 5);
    wait_connected(&engine, 10, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let before = engine.calls().unwrap();

    // Three seconds of 300 hostile datagrams (and 75 replays) every 100 ms at call 3.
    let (chat, ssrc) = plan[&3];
    for _ in 0..30 {
        sfu.misbehave(chat, ssrc, Misbehaviour::HostileRtcp { datagrams: 300 })
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));

    let after = engine.calls().unwrap();
    let hostile = after.iter().find(|c| c.chat_id == 3).unwrap();
    assert_eq!(hostile.state, CallState::Connected);
    let s = &hostile.stats;
    eprintln!(
        "hostile call: over budget {}, own ssrc {}, replayed {}, oversized {}, received {}, \
         rtx {}, remb {}",
        s.dropped_rtcp_over_budget,
        s.dropped_own_ssrc,
        s.dropped_rtcp_replayed,
        s.dropped_rtcp_oversized,
        s.datagrams_received,
        s.rtx_sent,
        s.remb_received
    );
    // 9,000 datagrams in ~3.4 s against a budget of 100 a second.
    assert!(
        s.dropped_rtcp_over_budget >= 5_000,
        "over budget {}",
        s.dropped_rtcp_over_budget
    );
    // One compound in six claims the call's own SSRC (refused before any budget).
    assert!(s.dropped_own_ssrc >= 500, "own ssrc {}", s.dropped_own_ssrc);
    // Every call, the hostile one too, still delivers its tone at >= 95 %.
    let keys: Vec<i64> = (0..10).collect();
    verify(&engine, &sfu, &plan, &keys);
    // The others' pacing during the attack: no frame later than one frame interval (a shard
    // stalled by the attack would show hundreds of ms). A busy machine alone can reach 10 ms.
    for a in after.iter().filter(|a| a.chat_id != 3) {
        let b = before.iter().find(|b| b.chat_id == a.chat_id).unwrap();
        let during = a.stats.lateness.since(&b.stats.lateness);
        let p99 = during.percentile(0.99);
        assert!(
            p99 <= Duration::from_millis(25),
            "call {}: p99 lateness {p99:?} during the attack",
            a.chat_id
        );
    }
}
