//! Encode once, send many: one shared tone feeding 200 calls, verified at the SFU.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{participant, silent_sfu, tone_for, wait_connected};
use ringcast::{Engine, SharedSource, StreamSource};
use ringcast_core::media::ToneSource;

#[test]
fn shared_source_feeds_200_calls_with_one_encoder() {
    let sfu = silent_sfu();
    let engine = Engine::builder().shards(2).build().unwrap();
    let radio = SharedSource::new(Box::new(ToneSource::new(tone_for(7), None).unwrap()));
    let mut plan = HashMap::new();
    for key in 0..200 {
        let chat = 7 + 1000 * (key % 20);
        let payload = engine.create_call(key).unwrap();
        let response = sfu.join(chat, payload.as_bytes()).unwrap();
        engine.connect(key, &response).unwrap();
        engine
            .set_stream_sources(key, StreamSource::Shared(radio.clone()))
            .unwrap();
        plan.insert(key, (chat, engine.audio_ssrc(key).unwrap()));
    }
    wait_connected(&engine, 200, Duration::from_secs(20));
    let started = Instant::now();
    let pulled_before = radio.frames_pulled();
    std::thread::sleep(Duration::from_secs(3));
    let infos = engine.calls().unwrap();
    let elapsed_frames = started.elapsed().as_millis() as u64 / 20;
    // One encoder: frames pulled from the tone track wall time, not calls x time.
    let pulled = radio.frames_pulled() - pulled_before;
    assert!(
        pulled <= elapsed_frames + 10,
        "{pulled} frames encoded in {elapsed_frames} frame times"
    );
    let total_sent: u64 = infos.iter().map(|c| c.stats.packets_sent).sum();
    assert!(total_sent >= 200 * 150 * 9 / 10, "sent {total_sent}");
    assert_eq!(radio.readers(), 200);
    std::thread::sleep(Duration::from_millis(300));
    let stats = sfu.stats().unwrap();
    for info in &infos {
        let (chat, ssrc) = plan[&info.chat_id];
        let p = participant(&stats, chat, ssrc);
        let got = p["packets"].as_u64().unwrap();
        let sent = info.stats.packets_sent;
        assert!(
            got as f64 >= sent as f64 * 0.95,
            "call {}: sfu got {got} of {sent}",
            info.chat_id
        );
        let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
        assert!(
            (hz - f64::from(tone_for(7))).abs() <= 5.0,
            "call {}: {hz} Hz",
            info.chat_id
        );
    }
}
