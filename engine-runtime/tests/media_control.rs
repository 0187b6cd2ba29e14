//! Mute, pause, resume and stop, verified at the SFU (what arrived), with events in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::participant;

use ringcast::{CallState, EndReason, Engine, EventKind, MediaState, StreamSource};
use serde_json::Value;
use sfu_mock::server::{Server, ServerOptions};

fn me(sfu: &Server, ssrc: u32) -> Value {
    // Let packets in flight land before reading.
    std::thread::sleep(Duration::from_millis(150));
    participant(&sfu.stats().unwrap(), 1, ssrc)
}

fn packets(v: &Value) -> u64 {
    v["packets"].as_u64().unwrap()
}

#[test]
fn mute_pause_resume_stop_are_what_the_sfu_sees() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder().shards(1).build().unwrap();
    let payload = engine.create_call(1).unwrap();
    let response = sfu.join(1, payload.as_bytes()).unwrap();
    engine.connect(1, &response).unwrap();
    engine
        .set_stream_sources(
            1,
            StreamSource::Tone {
                frequency_hz: 440.0,
            },
        )
        .unwrap();
    let ssrc = engine.audio_ssrc(1).unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    let playing = me(&sfu, ssrc);
    assert!(packets(&playing) > 50);
    assert!((playing["dominant_hz"].as_f64().unwrap() - 440.0).abs() <= 5.0);

    // Muted: packets keep flowing (with the audio-level extension), the audio is silence.
    engine.mute(1).unwrap();
    let t_mute = engine.time(1).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let muted = me(&sfu, ssrc);
    assert!(
        packets(&muted) - packets(&playing) >= 60,
        "muted calls keep sending"
    );
    assert!(
        muted["dominant_hz"].is_null(),
        "muted audio must be silent: {muted}"
    );
    assert_eq!(muted["dropped_no_audio_level"], 0);
    assert!(engine.time(1).unwrap() > t_mute + Duration::from_secs(1));

    engine.unmute(1).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let unmuted = me(&sfu, ssrc);
    assert!((unmuted["dominant_hz"].as_f64().unwrap() - 440.0).abs() <= 5.0);

    // Paused: nothing is sent and time stands still.
    engine.pause(1).unwrap();
    let t_pause = engine.time(1).unwrap();
    let at_pause = me(&sfu, ssrc);
    std::thread::sleep(Duration::from_millis(1000));
    let paused = me(&sfu, ssrc);
    assert_eq!(
        packets(&paused),
        packets(&at_pause),
        "no packets while paused"
    );
    assert_eq!(engine.time(1).unwrap(), t_pause, "time stops while paused");

    engine.resume(1).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let resumed = me(&sfu, ssrc);
    assert!(packets(&resumed) - packets(&paused) >= 40);
    assert!(engine.time(1).unwrap() >= t_pause + Duration::from_millis(800));
    assert_eq!(resumed["lost"], 0, "a pause is not loss: {resumed}");

    engine.stop(1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stopped = me(&sfu, ssrc);
    assert_eq!(stopped["connected"], false, "the SFU saw the call leave");

    let events: Vec<EventKind> = engine.events().try_iter().map(|e| e.kind).collect();
    let expected = vec![
        EventKind::ConnectionChanged(CallState::Connecting),
        EventKind::ConnectionChanged(CallState::Connected),
        EventKind::MediaStateChanged(MediaState {
            paused: false,
            muted: true,
            ..MediaState::default()
        }),
        EventKind::MediaStateChanged(MediaState {
            paused: false,
            muted: false,
            ..MediaState::default()
        }),
        EventKind::MediaStateChanged(MediaState {
            paused: true,
            muted: false,
            ..MediaState::default()
        }),
        EventKind::MediaStateChanged(MediaState {
            paused: false,
            muted: false,
            ..MediaState::default()
        }),
        EventKind::ConnectionChanged(CallState::Ended(EndReason::Stopped)),
    ];
    assert_eq!(events, expected);
    assert!(matches!(
        engine.mute(1),
        Err(ringcast::EngineError::ConnectionNotFound(1))
    ));
}
