//! Helpers shared by the scale tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringcast::{CallState, Engine, EventKind, SharedSource, StreamSource};
use ringcast_core::media::ToneSource;
use serde_json::Value;
use sfu_mock::server::Server;

pub(crate) fn tone_for(chat: i64) -> f32 {
    300.0 + 20.0 * chat as f32
}

/// Joins `calls` calls spread over `chats` chats, each chat playing its own shared tone.
pub(crate) fn join_all(
    engine: &Engine,
    sfu: &Server,
    calls: i64,
    chats: i64,
) -> (HashMap<i64, (i64, u32)>, Vec<SharedSource>) {
    let sources: Vec<SharedSource> = (0..chats)
        .map(|c| SharedSource::new(Box::new(ToneSource::new(tone_for(c), None).unwrap())))
        .collect();
    let mut plan = HashMap::new();
    for key in 0..calls {
        let chat = key % chats;
        let payload = engine.create_call(key).unwrap();
        let response = sfu.join(chat, payload.as_bytes()).unwrap();
        engine.connect(key, &response).unwrap();
        engine
            .set_stream_sources(key, StreamSource::Shared(sources[chat as usize].clone()))
            .unwrap();
        plan.insert(key, (chat, engine.audio_ssrc(key).unwrap()));
    }
    (plan, sources)
}

pub(crate) fn wait_connected(engine: &Engine, n: usize, limit: Duration) {
    let end = Instant::now() + limit;
    let mut connected = 0;
    while connected < n {
        let left = end.saturating_duration_since(Instant::now());
        let e = engine
            .events()
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {connected}/{n} connected in {limit:?}"));
        match e.kind {
            EventKind::ConnectionChanged(CallState::Connected) => connected += 1,
            EventKind::ConnectionChanged(CallState::Ended(r)) => {
                panic!("call {} ended: {r:?}", e.chat_id)
            }
            _ => {}
        }
    }
}

pub(crate) fn participant(stats: &Value, chat: i64, ssrc: u32) -> Value {
    stats["chats"][chat.to_string()]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ssrc"].as_u64() == Some(u64::from(ssrc)))
        .cloned()
        .unwrap()
}

/// Every call in `keys`: connected at the SFU, >= 95 % of its packets received, its chat's tone.
pub(crate) fn verify(
    engine: &Engine,
    sfu: &Server,
    plan: &HashMap<i64, (i64, u32)>,
    keys: &[i64],
) -> Value {
    let infos: HashMap<i64, u64> = engine
        .calls()
        .unwrap()
        .into_iter()
        .map(|c| (c.chat_id, c.stats.packets_sent))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let stats = sfu.stats().unwrap();
    for key in keys {
        let (chat, ssrc) = plan[key];
        let p = participant(&stats, chat, ssrc);
        let sent = infos[key];
        let got = p["packets"].as_u64().unwrap();
        assert!(
            p["connected"].as_bool().unwrap(),
            "call {key} not connected at the sfu"
        );
        assert!(sent > 50, "call {key} sent {sent}");
        assert!(
            got as f64 >= sent as f64 * 0.95,
            "call {key}: sfu got {got} of {sent}"
        );
        let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
        let want = f64::from(tone_for(chat));
        assert!((hz - want).abs() <= 5.0, "call {key}: {hz} Hz, want {want}");
    }
    stats
}
