//! Helpers shared by the engine-runtime integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod media;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringcast::{
    CallState, Engine, EngineError, EngineEvent, EventKind, SharedSource, StreamSource,
};
use ringcast_core::media::ToneSource;
use serde_json::Value;
use sfu_mock::server::{Server, ServerOptions};

/// An sfu-mock that does not forward audio between participants (each call only sends).
pub(crate) fn silent_sfu() -> Server {
    Server::start(ServerOptions {
        forward_audio: false,
        ..ServerOptions::default()
    })
    .unwrap()
}

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

/// Creates call `key`, gives it a 440 Hz tone, joins it to chat `key` on `sfu` and connects
/// it: the first error the engine gives (the resource tests count them).
pub(crate) fn try_join_tone(engine: &Engine, sfu: &Server, key: i64) -> Result<(), EngineError> {
    let payload = engine.create_call(key)?;
    engine.set_stream_sources(
        key,
        StreamSource::Tone {
            frequency_hz: 440.0,
        },
    )?;
    let response = sfu.join(key, payload.as_bytes()).unwrap();
    engine.connect(key, &response)
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

/// Waits for the first event matching `pred`; `None` on timeout.
pub(crate) fn wait_event(
    engine: &Engine,
    limit: Duration,
    mut pred: impl FnMut(&EngineEvent) -> bool,
) -> Option<EngineEvent> {
    let end = Instant::now() + limit;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match engine.events().recv_timeout(left) {
            Ok(e) if pred(&e) => return Some(e),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Waits until every call in `keys` is connected; panics on an end or after 10 s without one.
pub(crate) fn wait_calls_connected(engine: &Engine, keys: &[i64]) {
    let mut left: Vec<i64> = keys.to_vec();
    while !left.is_empty() {
        let e = wait_event(engine, Duration::from_secs(10), |e| {
            matches!(e.kind, EventKind::ConnectionChanged(_))
        })
        .expect("calls connect");
        match e.kind {
            EventKind::ConnectionChanged(CallState::Connected) => left.retain(|k| *k != e.chat_id),
            EventKind::ConnectionChanged(CallState::Ended(r)) => {
                panic!("call {} ended: {r:?}", e.chat_id)
            }
            _ => {}
        }
    }
}

/// A tone on `key`, joined to `chat`, the response passed through `edit`.
pub(crate) fn join_with(
    engine: &Engine,
    sfu: &Server,
    key: i64,
    chat: i64,
    hz: f32,
    edit_payload: impl FnOnce(&mut Value),
    edit_response: impl FnOnce(String) -> String,
) -> (Value, Value, u32) {
    let payload = engine.create_call(key).unwrap();
    // The source is set before connecting: media would flow the moment DTLS-SRTP is up.
    engine
        .set_stream_sources(key, StreamSource::Tone { frequency_hz: hz })
        .unwrap();
    let ssrc = engine.audio_ssrc(key).unwrap();
    let mut payload: Value = serde_json::from_str(&payload).unwrap();
    edit_payload(&mut payload);
    let response = sfu.join(chat, payload.to_string().as_bytes()).unwrap();
    let response = edit_response(response);
    engine.connect(key, &response).unwrap();
    (payload, serde_json::from_str(&response).unwrap(), ssrc)
}

pub(crate) fn no_edit(_: &mut Value) {}

/// A STUN binding request for `username` with a MESSAGE-INTEGRITY that is not computed with
/// any real password, and a correct FINGERPRINT (so it parses as STUN and fails only on
/// credentials).
pub(crate) fn forged_stun(username: &str, txid: [u8; 12]) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes()); // USERNAME
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&0x0024u16.to_be_bytes()); // PRIORITY (required by the parser)
    attrs.extend_from_slice(&4u16.to_be_bytes());
    attrs.extend_from_slice(&0x6E00_1EFFu32.to_be_bytes());
    attrs.extend_from_slice(&0x0008u16.to_be_bytes()); // MESSAGE-INTEGRITY
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(&[0x5A; 20]);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&((attrs.len() + 8) as u16).to_be_bytes());
    msg.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    msg.extend_from_slice(&txid);
    msg.extend_from_slice(&attrs);
    let crc = crc32(&msg) ^ 0x5354_554E;
    msg.extend_from_slice(&0x8028u16.to_be_bytes()); // FINGERPRINT
    msg.extend_from_slice(&4u16.to_be_bytes());
    msg.extend_from_slice(&crc.to_be_bytes());
    msg
}

/// CRC-32 (IEEE), as STUN's FINGERPRINT uses it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
