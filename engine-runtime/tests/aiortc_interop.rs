//! Interop against aiortc, an independent WebRTC stack (Python), playing the Telegram SFU's side.
//!
//! `interop/aiortc_sfu.py` reads ringcast's join payload, answers with aiortc's ICE credentials,
//! DTLS fingerprint and loopback candidate in the group-call response format, then receives
//! ringcast's audio over real UDP (ICE: aiortc controlling; DTLS: aiortc client; SRTP, Opus PT
//! 111 with ssrc-audio-level), decodes it with its own Opus decoder and reports the dominant
//! frequency. Needs `python3` with `aiortc` (installed by `scripts/setup.sh`): without them the
//! test fails, it does not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../interop/python_peer.rs"]
mod python_peer;

use std::time::{Duration, Instant};

use python_peer::PythonPeer;
use ringcast::{CallState, Engine, EventKind, StreamSource};

/// Runs one call playing `tone_hz` into aiortc; returns aiortc's result JSON.
fn play_into_aiortc(chat: i64, tone_hz: f32) -> serde_json::Value {
    let engine = Engine::builder().shards(1).build().unwrap();
    let join = engine.create_call(chat).unwrap();
    let engine_addr = engine.call_info(chat).unwrap().local_addr;

    let args: Vec<String> = engine_addr.iter().map(ToString::to_string).collect();
    let mut peer = PythonPeer::spawn("aiortc_sfu.py", &args);
    peer.send(&join);
    peer.close_stdin();

    let answer = peer.next("answer", Duration::from_secs(15));
    engine.connect(chat, &answer.to_string()).unwrap();
    engine
        .set_stream_sources(
            chat,
            StreamSource::Tone {
                frequency_hz: tone_hz,
            },
        )
        .unwrap();

    let end = Instant::now() + Duration::from_secs(10);
    let mut connected = false;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match engine.events().recv_timeout(left) {
            Ok(e) if e.kind == EventKind::ConnectionChanged(CallState::Connected) => {
                connected = true;
                break;
            }
            Ok(e) => {
                if let EventKind::ConnectionChanged(CallState::Ended(reason)) = &e.kind {
                    panic!("call ended before connecting to aiortc: {reason:?}");
                }
            }
            Err(_) => break,
        }
    }
    assert!(connected, "ringcast never reached Connected with aiortc");

    let result = peer.next("result", Duration::from_secs(15));
    peer.finish(Duration::from_secs(15));
    engine.shutdown();
    result
}

fn check(result: &serde_json::Value, tone_hz: f64) {
    let frames = result["frames"].as_u64().expect("frames");
    let hz = result["dominant_hz"].as_f64().expect("dominant_hz");
    eprintln!("aiortc decoded {tone_hz} Hz tone: {result}");
    assert!(
        frames >= 100,
        "aiortc decoded only {frames} frames: {result}"
    );
    assert!(
        (hz - tone_hz).abs() <= 10.0,
        "aiortc heard {hz} Hz, ringcast played {tone_hz} Hz: {result}"
    );
}

#[test]
fn aiortc_as_sfu_decodes_ringcast_tone() {
    let low = play_into_aiortc(1, 440.0);
    check(&low, 440.0);
    // A second call at another pitch: the measurement follows the tone, it is not a constant.
    let high = play_into_aiortc(2, 1000.0);
    check(&high, 1000.0);
}
