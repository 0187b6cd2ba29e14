//! PCM hooks end to end: PCM pushed by the application reaches the SFU as the right tone, and
//! a PCM sink hands the application decoded frames of what another participant plays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::f64::consts::TAU;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{participant, silent_sfu, wait_connected, wait_event};
use ringcast::{
    Engine, EngineError, EventKind, PcmPushError, PcmSinkConfig, PcmSourceConfig, PcmSourceStats,
    PcmWriter, StreamSource,
};
use sfu_mock::analysis::dominant_frequency_hz;
use sfu_mock::server::{Server, ServerOptions};

/// Frame `index` (20 ms, mono, at `rate` Hz) of a phase-continuous half-scale sine of `hz`.
fn sine_frame(rate: usize, hz: f64, index: usize) -> Vec<i16> {
    let len = rate / 50;
    (index * len..(index + 1) * len)
        .map(|i| ((i as f64 * TAU * hz / rate as f64).sin() * 16_384.0).round() as i16)
        .collect()
}

/// The application's audio thread: keeps the writer's queue topped up with `frame(index)`
/// until `stop` is set, then drops the writer (which ends the stream). Returns the frames
/// pushed and the writer's last stats.
fn push_until_stopped(
    writer: PcmWriter,
    stop: Arc<AtomicBool>,
    frame: impl Fn(usize) -> Vec<i16> + Send + 'static,
) -> std::thread::JoinHandle<(usize, PcmSourceStats)> {
    std::thread::spawn(move || {
        let mut index = 0;
        while !stop.load(Ordering::Relaxed) {
            match writer.try_push(&frame(index)) {
                Ok(()) => index += 1,
                Err(PcmPushError::Full) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("push: {e}"),
            }
        }
        let stats = writer.stats();
        drop(writer);
        (index, stats)
    })
}

/// Waits (bounded: 20 s) until the SFU has counted 100 packets (2 s of audio) of `ssrc` in
/// `chat`, while the tone still plays, and returns its participant stats.
fn heard_by_sfu(sfu: &Server, chat: i64, ssrc: u32) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let stats = sfu.stats().unwrap();
        let p = participant(&stats, chat, ssrc);
        if p["packets"].as_u64().unwrap_or(0) >= 100 {
            return p;
        }
    }
    panic!("the sfu got fewer than 100 packets in 20 s");
}

/// Waits (bounded: 15 s) for call `key`'s stream to end without an error.
fn wait_stream_ended(engine: &Engine, key: i64) {
    let ended = wait_event(engine, Duration::from_secs(15), |e| {
        e.chat_id == key && matches!(e.kind, EventKind::StreamEnded { error: None, .. })
    });
    assert!(
        ended.is_some(),
        "no StreamEnded after the writer was dropped"
    );
}

#[test]
fn pushed_pcm_reaches_the_sfu_as_523_hz() {
    let sfu = silent_sfu();
    let engine = Engine::builder().shards(1).build().unwrap();
    let payload = engine.create_call(1).unwrap();
    let response = sfu.join(11, payload.as_bytes()).unwrap();
    engine.connect(1, &response).unwrap();
    let (source, writer) = StreamSource::pcm(&PcmSourceConfig::default()).unwrap();
    engine.set_stream_sources(1, source).unwrap();
    let ssrc = engine.audio_ssrc(1).unwrap();

    // The application's audio thread: keeps the queue topped up until told to stop, then
    // drops the writer, which ends the stream.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = push_until_stopped(writer, stop.clone(), |index| {
        sine_frame(48_000, 523.0, index)
    });
    wait_connected(&engine, 1, Duration::from_secs(10));
    let p = heard_by_sfu(&sfu, 11, ssrc);
    let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
    assert!((hz - 523.0).abs() <= 5.0, "sfu heard {hz} Hz");
    eprintln!("sfu: {hz:.1} Hz over {} packets", p["packets"]);

    stop.store(true, Ordering::Relaxed);
    let (pushed, stats) = pusher.join().unwrap();
    assert_eq!(stats.frames_pushed, pushed as u64);
    assert!(stats.frames_encoded >= 100, "{stats:?}");
    assert!(
        stats.frames_dropped_full > 0,
        "the pusher ran ahead: {stats:?}"
    );
    // Writer gone: the queue drains (at most 50 frames, 1 s), then the stream ends.
    wait_stream_ended(&engine, 1);
    // Every pushed frame was sent: the call's packets are the pushed frames plus the silence
    // of underruns (if the pusher ever fell behind), nothing lost in between.
    let info = engine.call_info(1).unwrap();
    eprintln!(
        "source: {pushed} pushed, {} sent, {stats:?}",
        info.stats.packets_sent
    );
    // (The snapshot was taken with a full queue, so no underrun can have followed it.)
    assert_eq!(
        info.stats.packets_sent,
        pushed as u64 + stats.underruns,
        "packets sent vs {pushed} pushed frames, {} underruns",
        stats.underruns
    );
}

#[test]
fn pushed_44_1_khz_pcm_is_resampled_and_reaches_the_sfu_as_659_hz() {
    let sfu = silent_sfu();
    let engine = Engine::builder().shards(1).build().unwrap();
    let payload = engine.create_call(1).unwrap();
    let response = sfu.join(11, payload.as_bytes()).unwrap();
    engine.connect(1, &response).unwrap();
    let config = PcmSourceConfig {
        sample_rate: 44_100,
        ..PcmSourceConfig::default()
    };
    let (source, writer) = StreamSource::pcm(&config).unwrap();
    assert_eq!(writer.frame_len(), 882);
    engine.set_stream_sources(1, source).unwrap();
    let ssrc = engine.audio_ssrc(1).unwrap();

    // 20 ms frames at 44.1 kHz (882 samples), phase-continuous.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = push_until_stopped(writer, stop.clone(), |index| {
        sine_frame(44_100, 659.0, index)
    });
    wait_connected(&engine, 1, Duration::from_secs(10));
    let p = heard_by_sfu(&sfu, 11, ssrc);
    let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
    assert!((hz - 659.0).abs() <= 5.0, "sfu heard {hz} Hz");
    eprintln!("sfu: {hz:.1} Hz over {} packets", p["packets"]);

    stop.store(true, Ordering::Relaxed);
    let (pushed, stats) = pusher.join().unwrap();
    // One 48 kHz frame per 44.1 kHz frame, but for the first (the resampler's delay).
    assert_eq!(stats.frames_pushed + 1, pushed as u64, "{stats:?}");
    assert!(stats.frames_encoded >= 100, "{stats:?}");
    wait_stream_ended(&engine, 1);
    // Every queued frame was sent, plus the tail the dropped writer flushed (one frame, if
    // the queue had room) and the silence of underruns.
    let sent = engine.call_info(1).unwrap().stats.packets_sent;
    let queued = stats.frames_pushed + stats.underruns;
    assert!(
        (queued..=queued + 1).contains(&sent),
        "{sent} packets sent vs {stats:?}"
    );
}

#[test]
fn pcm_sink_decodes_the_other_participants_tone() {
    let sfu = Server::start(ServerOptions::default()).unwrap();
    let engine = Engine::builder().shards(2).build().unwrap();
    assert!(matches!(
        engine.set_pcm_sink(99, &PcmSinkConfig::default()),
        Err(EngineError::ConnectionNotFound(99))
    ));
    let mut ssrcs = Vec::new();
    let mut receiver = None;
    for (key, hz) in [(1, 440.0), (2, 1000.0)] {
        let payload = engine.create_call(key).unwrap();
        if key == 2 {
            receiver = Some(engine.set_pcm_sink(2, &PcmSinkConfig::default()).unwrap());
        }
        let response = sfu.join(7, payload.as_bytes()).unwrap();
        engine.connect(key, &response).unwrap();
        engine
            .set_stream_sources(key, StreamSource::Tone { frequency_hz: hz })
            .unwrap();
        ssrcs.push(engine.audio_ssrc(key).unwrap());
    }
    let receiver = receiver.unwrap();
    wait_connected(&engine, 2, Duration::from_secs(10));

    // Three seconds of call 1's tone, as call 2's application reads it.
    let mut pcm = Vec::new();
    let mut frames = 0_u64;
    let end = Instant::now() + Duration::from_secs(20);
    while frames < 150 && Instant::now() < end {
        let Ok(frame) = receiver.frames().recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        assert_eq!(frame.ssrc, ssrcs[0], "call 2 hears only call 1");
        assert_eq!(frame.samples.len(), 960);
        pcm.extend(frame.samples.iter().map(|&s| f32::from(s) / 32_768.0));
        frames += 1;
    }
    assert_eq!(frames, 150, "only {frames} frames in 20 s");
    let hz = dominant_frequency_hz(&pcm[pcm.len() - 16_384..], 48_000).unwrap();
    assert!((hz - 440.0).abs() <= 5.0, "call 2's sink decoded {hz} Hz");
    let stats = receiver.stats();
    assert_eq!(stats.decode_errors, 0, "{stats:?}");
    assert_eq!(stats.frames_dropped_full, 0, "{stats:?}");
    assert!(stats.frames_decoded >= frames, "{stats:?}");
    // Every packet the call received went to the sink; each 20 ms packet is one frame
    // (packets that overtook each other between shards are dropped as late, small gaps
    // concealed).
    let received = engine.call_info(2).unwrap().stats.audio_packets_received;
    assert!(
        stats.packets <= received,
        "{stats:?} vs {received} received"
    );
    assert!(stats.packets + 5 >= frames, "{stats:?}");
    assert_eq!(
        stats.frames_decoded,
        stats.packets - stats.packets_late + stats.packets_concealed,
        "{stats:?}"
    );
    eprintln!("sink: {frames} frames read, {hz:.1} Hz, {stats:?}");

    // A second sink replaces the first: the first disconnects, the second gets the tone.
    let second = engine.set_pcm_sink(2, &PcmSinkConfig::default()).unwrap();
    assert!(
        disconnects(&receiver),
        "the replaced receiver still connected"
    );
    let end = Instant::now() + Duration::from_secs(20);
    let mut pcm = Vec::new();
    while pcm.len() < 50 * 960 && Instant::now() < end {
        if let Ok(frame) = second.frames().recv_timeout(Duration::from_millis(200)) {
            assert_eq!(frame.ssrc, ssrcs[0]);
            pcm.extend(frame.samples.iter().map(|&s| f32::from(s) / 32_768.0));
        }
    }
    assert_eq!(pcm.len(), 50 * 960, "the second sink got too little");
    let hz = dominant_frequency_hz(&pcm[pcm.len() - 16_384..], 48_000).unwrap();
    assert!((hz - 440.0).abs() <= 5.0, "second sink decoded {hz} Hz");

    // The call ends: the sink goes with it and the receiver disconnects once drained.
    engine.stop(2).unwrap();
    assert!(disconnects(&second), "the receiver outlived its call");
}

/// True if `receiver` disconnects (its queue drained) within 10 s.
fn disconnects(receiver: &ringcast::PcmReceiver) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match receiver.frames().recv_timeout(Duration::from_millis(200)) {
            Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return true,
        }
    }
    false
}
