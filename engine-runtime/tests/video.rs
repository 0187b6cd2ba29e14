//! Video in group calls: a 1280x720, 30 fps test pattern (ffmpeg's `testsrc2`, made at test
//! time) shown as VP8 and as H.264 into sfu-mock over real UDP, with its audio; frames, key
//! frames, resolution and frame rate checked at the SFU, which reassembles and reads them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::media::{MediaDir, av_clip, serial, sine};
use common::{participant, silent_sfu, wait_connected, wait_event};
use ringcast::{
    CallOptions, Engine, EngineError, EventKind, MediaSource, SourceError, VideoCodec, VideoParams,
};
use serde_json::Value;
use sfu_mock::server::{Server, ServerOptions};

/// A 720p30 test pattern with a 440 Hz tone, `seconds` long.
fn pattern(dir: &MediaDir, seconds: u32) -> std::path::PathBuf {
    let out = dir.path("pattern.mp4");
    av_clip(
        &out,
        &format!("testsrc2=size=1280x720:rate=30:duration={seconds}"),
        &sine(440, seconds as f32),
    );
    out
}

/// A 15 fps test pattern of `size` with a 440 Hz tone, `seconds` long.
fn small_clip(dir: &MediaDir, size: &str, seconds: u32) -> std::path::PathBuf {
    let out = dir.path("clip.mp4");
    av_clip(
        &out,
        &format!("testsrc2=size={size}:rate=15:duration={seconds}"),
        &sine(440, seconds as f32),
    );
    out
}

/// Creates call `key` with a camera track of `codec` in `chat`, connects it and waits until
/// it is up; returns its audio SSRC.
fn join_video(engine: &Engine, sfu: &Server, key: i64, chat: i64, codec: VideoCodec) -> u32 {
    let payload = engine
        .create_call_with(key, CallOptions::new().video(codec))
        .unwrap();
    let json: Value = serde_json::from_str(&payload).unwrap();
    let groups = json["ssrc-groups"].as_array().expect("ssrc-groups");
    assert_eq!(groups.len(), 1, "{payload}");
    assert_eq!(groups[0]["semantics"], "FID");
    let ssrc = engine.audio_ssrc(key).unwrap();
    let sources: Vec<i64> = groups[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(sources, [i64::from(ssrc) + 1, i64::from(ssrc) + 2]);
    let response = sfu.join(chat, payload.as_bytes()).unwrap();
    engine.connect(key, &response).unwrap();
    ssrc
}

/// Polls the SFU's stats until `check` holds for the participant's video, or panics after
/// `limit` with the last stats.
fn wait_video(
    sfu: &Server,
    chat: i64,
    ssrc: u32,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + limit;
    loop {
        let p = participant(&sfu.stats().unwrap(), chat, ssrc);
        if check(&p["video"]) {
            return p;
        }
        assert!(Instant::now() < end, "video never got there: {p}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until each of `chats` reports the end of its video track, without an error.
fn video_ends(engine: &Engine, chats: &[i64]) {
    let mut left: Vec<i64> = chats.to_vec();
    while !left.is_empty() {
        let e = wait_event(engine, Duration::from_secs(10), |e| {
            left.contains(&e.chat_id)
                && matches!(
                    e.kind,
                    EventKind::StreamEnded {
                        track: ringcast::TrackKind::Video,
                        ..
                    }
                )
        });
        let Some(e) = e else {
            panic!("no end of video from {left:?}");
        };
        assert!(
            matches!(e.kind, EventKind::StreamEnded { error: None, .. }),
            "{e:?}"
        );
        left.retain(|&c| c != e.chat_id);
    }
}

/// Waits until the participant's video has `frames` decodable frames, checks their size, and
/// returns its video stats.
fn wait_shown(
    sfu: &Server,
    chat: i64,
    ssrc: u32,
    limit: Duration,
    frames: u64,
    (width, height): (u64, u64),
) -> Value {
    let p = wait_video(sfu, chat, ssrc, limit, |v| {
        v["decodable_frames"].as_u64().unwrap_or(0) >= frames
    });
    let v = p["video"].clone();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(width), Some(height)),
        "{chat}/{ssrc}: {v}"
    );
    v
}

fn shows_pattern_as(codec: VideoCodec) {
    let _serial = serial();
    let dir = MediaDir::new(&format!("video-{codec}"));
    let file = pattern(&dir, 20);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let ssrc = join_video(&engine, &sfu, 1, 10, codec);
    wait_connected(&engine, 1, Duration::from_secs(10));
    engine
        .set_stream_sources(1, MediaSource::file(&file).live())
        .unwrap();
    let params = VideoParams {
        codec,
        ..VideoParams::default()
    };
    engine
        .set_video_source(1, MediaSource::file(&file), params)
        .unwrap();
    let started = Instant::now();
    // Three seconds of video: ~90 frames, at least two key frames (one per second).
    let p = wait_video(&sfu, 10, ssrc, Duration::from_secs(15), |v| {
        v["decodable_frames"].as_u64().unwrap_or(0) >= 90
    });
    let v = &p["video"];
    println!("{codec} after {:?}: {p}", started.elapsed());
    assert_eq!(v["codec"], codec.to_string());
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert!(v["keyframes"].as_u64().unwrap() >= 2, "{v}");
    let fps = v["fps"].as_f64().unwrap();
    assert!((28.0..=32.0).contains(&fps), "fps {fps}");
    assert_eq!(v["incomplete_frames"], 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    // Audio beside it: the file's 440 Hz tone.
    let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
    assert!((hz - 440.0).abs() < 5.0, "audio {hz} Hz: {p}");
    assert!(p["packets"].as_u64().unwrap() > 100, "{p}");
    // The engine's side agrees, and one encoder served the call.
    let stats = engine.call_info(1).unwrap().stats;
    assert!(stats.video.frames_sent >= 90, "{:?}", stats.video);
    assert!(stats.video.keyframes_sent >= 2, "{:?}", stats.video);
    assert_eq!(engine.video_stats().encoders_started, 1);
}

#[test]
fn vp8_pattern_reaches_the_sfu_with_its_size_rate_and_key_frames() {
    shows_pattern_as(VideoCodec::Vp8);
}

#[test]
fn h264_pattern_reaches_the_sfu_with_its_size_rate_and_key_frames() {
    shows_pattern_as(VideoCodec::H264);
}

#[test]
fn video_misuse_is_a_typed_error_and_the_call_stays_up() {
    let _serial = serial();
    let dir = MediaDir::new("video-misuse");
    let file = pattern(&dir, 5);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    // An audio-only call refuses a video source.
    let payload = engine.create_call(1).unwrap();
    assert!(!payload.contains("ssrc-groups"), "{payload}");
    let response = sfu.join(1, payload.as_bytes()).unwrap();
    engine.connect(1, &response).unwrap();
    wait_connected(&engine, 1, Duration::from_secs(10));
    let err = engine
        .set_video_source(1, MediaSource::file(&file), VideoParams::default())
        .unwrap_err();
    assert!(matches!(err, EngineError::Call(_)), "{err:?}");
    // A codec other than the call's.
    join_video(&engine, &sfu, 2, 2, VideoCodec::Vp8);
    wait_connected(&engine, 1, Duration::from_secs(10));
    let h264 = VideoParams {
        codec: VideoCodec::H264,
        ..VideoParams::default()
    };
    let err = engine
        .set_video_source(2, MediaSource::file(&file), h264)
        .unwrap_err();
    assert!(matches!(err, EngineError::Call(_)), "{err:?}");
    // Bad parameters, a missing file, a file that is not video.
    let odd = VideoParams {
        width: 641,
        ..VideoParams::default()
    };
    let err = engine
        .set_video_source(2, MediaSource::file(&file), odd)
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Source(SourceError::InvalidArgument { .. })
        ),
        "{err:?}"
    );
    let err = engine
        .set_video_source(
            2,
            MediaSource::file(dir.path("nope.mp4")),
            VideoParams::default(),
        )
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Source(SourceError::Decoder { .. })),
        "{err:?}"
    );
    let garbage = dir.path("garbage.mp4");
    std::fs::write(&garbage, vec![0x42u8; 10_000]).unwrap();
    let err = engine
        .set_video_source(2, MediaSource::file(&garbage), VideoParams::default())
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Source(SourceError::Decoder { .. })),
        "{err:?}"
    );
    // Both calls are still up.
    for key in [1, 2] {
        assert_eq!(
            engine.get_state(key).unwrap(),
            ringcast::CallState::Connected
        );
    }
    // No stream-end event was raised by any of it.
    while let Ok(e) = engine.events().try_recv() {
        assert!(
            !matches!(e.kind, EventKind::StreamEnded { .. }),
            "unexpected {e:?}"
        );
    }
}

/// 5 % of the video packets lost on the way to the SFU (every 20th first transmission): str0m
/// at the SFU NACKs each, the engine resends it on the RTX stream from its history, and the
/// frames complete; the picture never breaks for long.
#[test]
fn lost_video_packets_are_nacked_and_repaired_through_rtx() {
    let _serial = serial();
    let dir = MediaDir::new("video-nack");
    let file = pattern(&dir, 20);
    let sfu = Server::start(ServerOptions {
        forward_audio: false,
        drop_video_every: Some(20),
        ..ServerOptions::default()
    })
    .unwrap();
    let engine = Engine::builder().build().unwrap();
    let ssrc = join_video(&engine, &sfu, 1, 1, VideoCodec::Vp8);
    wait_connected(&engine, 1, Duration::from_secs(10));
    engine
        .set_video_source(1, MediaSource::file(&file), VideoParams::default())
        .unwrap();
    let p = wait_video(&sfu, 1, ssrc, Duration::from_secs(15), |v| {
        v["decodable_frames"].as_u64().unwrap_or(0) >= 90
    });
    let v = &p["video"];
    let engine_stats = engine.stats().unwrap();
    println!(
        "{v}\nengine: {} dropped for a full send buffer",
        engine_stats.dropped_send_buffer_full
    );
    let dropped = v["dropped_by_impairment"].as_u64().unwrap();
    let repaired = v["late_packets"].as_u64().unwrap();
    assert!(dropped >= 20, "{v}");
    // Every dropped packet but the last few (still in flight) came back through RTX.
    assert!(repaired + 3 >= dropped, "{v}");
    assert!(v["incomplete_frames"].as_u64().unwrap() <= 2, "{v}");
    assert!(v["lost"].as_u64().unwrap() <= 3, "{v}");
}

/// 100 calls in 10 chats show the same input: one encoder for all, every call's video
/// verified at the SFU; a call that joins 10 s later gets a key frame within a second.
#[test]
fn hundred_calls_share_one_encoder_and_a_late_call_starts_on_a_key_frame() {
    let _serial = serial();
    let dir = MediaDir::new("video-100");
    let file = pattern(&dir, 40);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    // A small picture keeps 100 calls' packets within what this test machine's two cores
    // carry beside the SFU; the encoder is shared whatever its size.
    let params = VideoParams {
        width: 320,
        height: 180,
        fps: 15,
        bitrate_kbps: 150,
        ..VideoParams::default()
    };
    let mut ssrcs = Vec::new();
    for key in 0..100 {
        ssrcs.push((
            key,
            key % 10,
            join_video(&engine, &sfu, key, key % 10, VideoCodec::Vp8),
        ));
    }
    wait_connected(&engine, 100, Duration::from_secs(30));
    // Live: every call shows the same picture; the late call joins at the live edge.
    for key in 0..100 {
        engine
            .set_video_source(key, MediaSource::file(&file).live(), params)
            .unwrap();
    }
    let stats = engine.video_stats();
    assert_eq!(stats.encoders_started, 1, "{stats:?}");
    assert_eq!(stats.shared_plays, 99, "{stats:?}");
    for &(key, chat, ssrc) in &ssrcs {
        let v = &wait_shown(&sfu, chat, ssrc, Duration::from_secs(20), 30, (320, 180));
        assert!(v["keyframes"].as_u64().unwrap() >= 1, "{key}: {v}");
    }
    // A late call: its first frame at the SFU is a key frame, within a second.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(Duration::from_secs(5)));
    let late = join_video(&engine, &sfu, 1000, 77, VideoCodec::Vp8);
    wait_connected(&engine, 1, Duration::from_secs(10));
    let asked = Instant::now();
    engine
        .set_video_source(1000, MediaSource::file(&file).live(), params)
        .unwrap();
    let p = wait_video(&sfu, 77, late, Duration::from_secs(5), |v| {
        v["keyframes"].as_u64().unwrap_or(0) >= 1
    });
    let took = asked.elapsed();
    let v = &p["video"];
    println!("late call's first key frame after {took:?}: {v}");
    // It starts from the ring's last key frame (at most a second old), not the next one.
    assert!(took < Duration::from_millis(1_000), "{took:?}");
    assert_eq!(v["incomplete_frames"], 0, "{v}");
    assert_eq!(
        v["frames"], v["decodable_frames"],
        "a delta frame before the key frame: {v}"
    );
    assert_eq!(engine.video_stats().encoders_started, 1);
}

/// On demand (the default): a call that starts a clip 2 s after another sees it from its
/// first frame, as it hears its audio from its start; one encoder serves both through the
/// video cache. A live reader joining then would see only the frames from the last key frame.
#[test]
fn on_demand_video_starts_each_call_at_the_first_frame_from_one_encoder() {
    let _serial = serial();
    let dir = MediaDir::new("video-demand");
    let file = small_clip(&dir, "320x180", 4);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let params = VideoParams {
        width: 320,
        height: 180,
        fps: 15,
        bitrate_kbps: 200,
        ..VideoParams::default()
    };
    let first = join_video(&engine, &sfu, 1, 1, VideoCodec::Vp8);
    let late = join_video(&engine, &sfu, 2, 2, VideoCodec::Vp8);
    wait_connected(&engine, 2, Duration::from_secs(10));
    engine
        .set_video_source(1, MediaSource::file(&file), params)
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    engine
        .set_video_source(2, MediaSource::file(&file), params)
        .unwrap();
    let stats = engine.video_stats();
    assert_eq!(
        (stats.encoders_started, stats.cache_misses, stats.cache_hits),
        (1, 1, 1),
        "{stats:?}"
    );
    // Both calls show the whole clip, then end their video track.
    video_ends(&engine, &[1, 2]);
    std::thread::sleep(Duration::from_millis(300));
    let frames: Vec<Value> = [(1, first), (2, late)]
        .iter()
        .map(|&(chat, ssrc)| participant(&sfu.stats().unwrap(), chat, ssrc)["video"].clone())
        .collect();
    println!("first: {}\nlate: {}", frames[0], frames[1]);
    for v in &frames {
        let n = v["frames"].as_u64().unwrap();
        assert!((58..=62).contains(&n), "the whole clip is 60 frames: {v}");
        assert_eq!(v["frames"], v["decodable_frames"], "{v}");
        assert!(v["keyframes"].as_u64().unwrap() >= 4, "{v}");
    }
    assert_eq!(frames[0]["frames"], frames[1]["frames"]);
    let stats = engine.video_stats();
    assert_eq!(stats.encoders_started, 1, "{stats:?}");
    assert!(
        stats.cache_bytes > 0 && stats.cache_tracks == 1,
        "{stats:?}"
    );
}

/// A key frame request (PLI) from the SFU is answered within 200 ms, five times in a row at
/// random points of the encoder's one-second key frame cycle: the call's stream is replayed
/// from the last key frame the shared ring (live) or the cached track (on demand) keeps
/// (ffmpeg cannot be asked for one).
fn pli_gets_a_key_frame_within_200_ms(live: bool) {
    let _serial = serial();
    let dir = MediaDir::new("video-pli");
    let file = pattern(&dir, 30);
    let source = if live {
        MediaSource::file(&file).live()
    } else {
        MediaSource::file(&file)
    };
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let ssrc = join_video(&engine, &sfu, 1, 1, VideoCodec::H264);
    wait_connected(&engine, 1, Duration::from_secs(10));
    engine
        .set_video_source(
            1,
            source,
            VideoParams {
                codec: VideoCodec::H264,
                ..VideoParams::default()
            },
        )
        .unwrap();
    wait_video(&sfu, 1, ssrc, Duration::from_secs(15), |v| {
        v["keyframes"].as_u64().unwrap_or(0) >= 2
    });
    let replays = engine.video_stats().keyframe_replays;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..5 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 700));
        let before = participant(&sfu.stats().unwrap(), 1, ssrc)["video"]["keyframes"]
            .as_u64()
            .unwrap();
        let asked = Instant::now();
        sfu.request_keyframe(1, ssrc).unwrap();
        let p = wait_video(&sfu, 1, ssrc, Duration::from_secs(2), |v| {
            v["keyframes"].as_u64().unwrap_or(0) > before
        });
        let took = asked.elapsed();
        println!("round {round}: key frame after {took:?}");
        assert!(
            took < Duration::from_millis(200),
            "round {round}: {took:?}: {p}"
        );
        assert_eq!(p["video"]["incomplete_frames"], 0, "{p}");
    }
    assert!(engine.video_stats().keyframe_replays >= replays + 5);
    let stats = engine.call_info(1).unwrap().stats.video;
    assert!(stats.keyframe_requests >= 5, "{stats:?}");
    assert!(stats.frames_caught_up > 0, "{stats:?}");
}

#[test]
fn pli_gets_a_key_frame_within_200_ms_live() {
    pli_gets_a_key_frame_within_200_ms(true);
}

#[test]
fn pli_gets_a_key_frame_within_200_ms_on_demand() {
    pli_gets_a_key_frame_within_200_ms(false);
}

/// Raw frames written by the application (ntgcalls' `EXTERNAL` source): one encoder for two
/// calls, shown at the parameters' size; a frame of the wrong size is a typed error; dropping
/// the writer ends both calls' video track.
#[test]
fn frames_written_by_the_application_are_encoded_once_and_shown() {
    let _serial = serial();
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let a = join_video(&engine, &sfu, 1, 1, VideoCodec::H264);
    let b = join_video(&engine, &sfu, 2, 2, VideoCodec::H264);
    wait_connected(&engine, 2, Duration::from_secs(10));
    let params = VideoParams {
        codec: VideoCodec::H264,
        width: 320,
        height: 240,
        fps: 15,
        bitrate_kbps: 300,
    };
    let writer = engine.video_writer(params).unwrap();
    assert_eq!(writer.frame_bytes(), 320 * 240 * 3 / 2);
    let wrong = writer.write(&[0u8; 100]);
    assert!(
        matches!(wrong, Err(SourceError::InvalidArgument { .. })),
        "{wrong:?}"
    );
    engine.set_video_writer(1, &writer).unwrap();
    engine.set_video_writer(2, &writer).unwrap();
    // Three seconds at 15 fps, paced as a camera would: a grey level that changes per frame.
    let luma = 320 * 240;
    let mut frame = vec![128u8; writer.frame_bytes()];
    let start = Instant::now();
    for i in 0..45u32 {
        frame[..luma].fill((40 + i * 4) as u8);
        assert!(writer.write(&frame).unwrap(), "frame {i} dropped");
        let due = start + Duration::from_micros(u64::from(i + 1) * 66_667);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    for (chat, ssrc) in [(1, a), (2, b)] {
        let v = &wait_shown(&sfu, chat, ssrc, Duration::from_secs(10), 30, (320, 240));
        assert!(v["keyframes"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(v["frames"], v["decodable_frames"], "{v}");
    }
    let stats = engine.video_stats();
    assert_eq!(stats.encoders_started, 1, "{stats:?}");
    assert_eq!(
        (stats.external_frames, stats.external_dropped),
        (45, 0),
        "{stats:?}"
    );
    // The writer gone, the encoder finishes and both calls end their video track.
    drop(writer);
    video_ends(&engine, &[1, 2]);
    assert_eq!(
        engine.call_info(1).unwrap().state,
        ringcast::CallState::Connected
    );
}

/// Presentation (screen share) and camera in one chat: two connections with their own ICE
/// credentials, certificate and SSRCs (the presentation announcing two layers), each verified
/// at the SFU; stopping the presentation leaves the main connection streaming.
#[test]
fn presentation_and_camera_stream_side_by_side() {
    let _serial = serial();
    let dir = MediaDir::new("video-presentation");
    let file = small_clip(&dir, "640x360", 30);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let camera = join_video(&engine, &sfu, 1, 1, VideoCodec::Vp8);
    wait_connected(&engine, 1, Duration::from_secs(10));
    let main: Value = serde_json::from_str(&engine.create_call(2).unwrap()).unwrap();
    engine.stop(2).unwrap();

    let payload = engine.init_presentation(1, VideoCodec::Vp8).unwrap();
    let json: Value = serde_json::from_str(&payload).unwrap();
    let screen = json["ssrc"].as_u64().unwrap() as u32;
    assert_ne!(screen, camera);
    assert_ne!(json["ufrag"], main["ufrag"]);
    let groups = json["ssrc-groups"].as_array().unwrap();
    let semantics: Vec<&str> = groups
        .iter()
        .map(|g| g["semantics"].as_str().unwrap())
        .collect();
    assert_eq!(semantics, ["SIM", "FID", "FID"], "{payload}");
    let base = i64::from(screen) + 1;
    assert_eq!(groups[0]["sources"], serde_json::json!([base, base + 2]));
    assert_eq!(
        groups[2]["sources"],
        serde_json::json!([base + 2, base + 3])
    );
    assert!(matches!(
        engine.init_presentation(1, VideoCodec::Vp8),
        Err(EngineError::ConnectionExists(1))
    ));
    assert!(matches!(
        engine.init_presentation(5, VideoCodec::Vp8),
        Err(EngineError::ConnectionNotFound(5))
    ));

    let answer = sfu.join(1, payload.as_bytes()).unwrap();
    engine.connect_presentation(1, &answer).unwrap();
    let up = wait_event(&engine, Duration::from_secs(10), |e| {
        e.presentation
            && matches!(
                e.kind,
                EventKind::ConnectionChanged(ringcast::CallState::Connected)
            )
    });
    assert_eq!(up.map(|e| e.chat_id), Some(1));
    assert_eq!(
        engine.calls().unwrap().len(),
        1,
        "a presentation is not a call"
    );

    let small = VideoParams {
        width: 320,
        height: 180,
        fps: 15,
        bitrate_kbps: 200,
        ..VideoParams::default()
    };
    let large = VideoParams {
        width: 640,
        height: 360,
        bitrate_kbps: 400,
        ..small
    };
    engine
        .set_video_source(1, MediaSource::file(&file), small)
        .unwrap();
    engine
        .set_presentation_source(1, MediaSource::file(&file), large)
        .unwrap();
    for (ssrc, size) in [(camera, (320, 180)), (screen, (640, 360))] {
        wait_shown(&sfu, 1, ssrc, Duration::from_secs(10), 30, size);
    }
    let info = engine.presentation_info(1).unwrap();
    assert_eq!(info.chat_id, 1);
    assert!(info.stats.video.frames_sent >= 30, "{:?}", info.stats.video);

    engine.stop_presentation(1).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let frames = |ssrc| {
        participant(&sfu.stats().unwrap(), 1, ssrc)["video"]["frames"]
            .as_u64()
            .unwrap_or(0)
    };
    let (cam0, screen0) = (frames(camera), frames(screen));
    std::thread::sleep(Duration::from_secs(1));
    let (cam1, screen1) = (frames(camera), frames(screen));
    assert!(cam1 >= cam0 + 10, "the camera stopped: {cam0} -> {cam1}");
    assert_eq!(screen1, screen0, "the presentation still sends");
    assert_eq!(
        engine.call_info(1).unwrap().state,
        ringcast::CallState::Connected
    );
    assert!(matches!(
        engine.presentation_info(1),
        Err(EngineError::ConnectionNotFound(1))
    ));
}

/// Raw yuv420p frames from a shell command (py-tgcalls' camera command) are encoded once and
/// arrive at the parameters' size and rate.
#[test]
fn raw_frames_from_a_shell_command_are_encoded_and_shown() {
    let _serial = serial();
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let ssrc = join_video(&engine, &sfu, 1, 1, VideoCodec::H264);
    wait_connected(&engine, 1, Duration::from_secs(10));
    let command = "ffmpeg -nostdin -loglevel error -re -f lavfi -i \
                   testsrc2=size=640x360:rate=25:duration=20 -f rawvideo -pix_fmt yuv420p pipe:1";
    let params = VideoParams {
        codec: VideoCodec::H264,
        width: 640,
        height: 360,
        fps: 25,
        bitrate_kbps: 600,
    };
    engine
        .set_video_source(1, MediaSource::shell(command, 48_000, 2), params)
        .unwrap();
    let v = &wait_shown(&sfu, 1, ssrc, Duration::from_secs(15), 50, (640, 360));
    let fps = v["fps"].as_f64().unwrap();
    assert!((23.0..=27.0).contains(&fps), "fps {fps}: {v}");
    assert_eq!(v["incomplete_frames"], 0, "{v}");
    // A command that fails is a typed error with its words.
    let err = engine
        .set_video_source(
            1,
            MediaSource::shell("echo broken >&2; exit 3", 48_000, 2),
            params,
        )
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Source(SourceError::Decoder { stderr, .. }) if stderr.contains("broken")),
        "{err:?}"
    );
}

/// The participant's `ssrc_groups` as sfu-mock reports them (Telegram's `source_groups`).
fn ssrc_groups_of(p: &Value) -> Vec<ringcast::SsrcGroup> {
    p["ssrc_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| ringcast::SsrcGroup {
            semantics: g["semantics"].as_str().unwrap().to_owned(),
            sources: g["sources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| ringcast::Ssrc(u32::try_from(s.as_u64().unwrap()).unwrap()))
                .collect(),
        })
        .collect()
}

/// Waits for the next incoming video frame of `chat`.
fn next_frame(
    engine: &Engine,
    chat: i64,
    limit: Duration,
) -> Option<(String, u32, ringcast::ReceivedFrame)> {
    wait_event(engine, limit, |e| {
        e.chat_id == chat && matches!(e.kind, EventKind::VideoReceived { .. })
    })
    .and_then(|e| match e.kind {
        EventKind::VideoReceived {
            endpoint,
            ssrc,
            frame,
        } => Some((endpoint.to_string(), ssrc, frame)),
        _ => None,
    })
}

#[test]
fn incoming_video_arrives_after_asking_over_the_data_channel_and_none_before() {
    let _serial = serial();
    let dir = MediaDir::new("video-incoming");
    let file = small_clip(&dir, "320x180", 30);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let chat = 30;
    let sender = join_video(&engine, &sfu, 1, chat, VideoCodec::Vp8);
    let payload = engine.create_call(2).unwrap();
    let response = sfu.join(chat, payload.as_bytes()).unwrap();
    engine.connect(2, &response).unwrap();
    let receiver = engine.audio_ssrc(2).unwrap();
    wait_connected(&engine, 2, Duration::from_secs(10));
    engine
        .set_stream_sources(1, MediaSource::file(&file).live())
        .unwrap();
    let params = VideoParams {
        width: 320,
        height: 180,
        fps: 15,
        bitrate_kbps: 200,
        ..VideoParams::default()
    };
    engine
        .set_video_source(1, MediaSource::file(&file).live(), params)
        .unwrap();
    wait_shown(&sfu, chat, sender, Duration::from_secs(10), 15, (320, 180));

    // Not asked for: nothing arrives, and the SFU forwards nothing.
    assert!(next_frame(&engine, 2, Duration::from_secs(1)).is_none());
    let stats = sfu.stats().unwrap();
    let from = participant(&stats, chat, sender);
    let to = participant(&stats, chat, receiver);
    assert_eq!(to["video_forwarded"], 0, "{to}");
    let endpoint = from["endpoint"].as_str().unwrap().to_owned();
    let groups = ssrc_groups_of(&from);
    assert!(!groups.is_empty(), "{from}");

    // Asked for over the data channel: frames of the right size, from a key frame on.
    let asked = Instant::now();
    engine.add_incoming_video(2, &endpoint, &groups).unwrap();
    let (ep, ssrc, first) = next_frame(&engine, 2, Duration::from_secs(5)).expect("no frame");
    let waited = asked.elapsed();
    assert_eq!((ep.as_str(), ssrc), (endpoint.as_str(), sender + 1));
    assert!(first.keyframe, "the first frame shown must be a key frame");
    assert!(
        waited < Duration::from_secs(1),
        "first frame after {waited:?}"
    );
    let mut frames = 1;
    let mut keyframes = 1;
    while frames < 30 {
        let (_, _, f) = next_frame(&engine, 2, Duration::from_secs(3)).expect("frames stopped");
        assert_eq!(f.codec, VideoCodec::Vp8);
        assert_eq!((f.width, f.height), (320, 180));
        assert!(!f.data.is_empty());
        frames += 1;
        keyframes += u32::from(f.keyframe);
    }
    assert!(keyframes >= 1 && keyframes < frames, "{keyframes}/{frames}");
    let to = participant(&sfu.stats().unwrap(), chat, receiver);
    assert_eq!(to["wants"], serde_json::json!([endpoint]), "{to}");
    assert!(to["video_forwarded"].as_u64().unwrap() > 0, "{to}");
    let counters = engine.call_info(2).unwrap().stats.incoming_video;
    assert!(counters.channel_open, "{counters:?}");
    assert_eq!(counters.channel_messages_sent, 1, "{counters:?}");
    assert!(counters.frames >= 30, "{counters:?}");

    // Malformed messages on the data channel: counted, the call stays up and keeps receiving.
    sfu.misbehave(
        chat,
        receiver,
        sfu_mock::Misbehaviour::ChannelGarbage { messages: 30 },
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let c = engine.call_info(2).unwrap().stats.incoming_video;
        if c.channel_messages_malformed >= 30 {
            break;
        }
        assert!(Instant::now() < end, "garbage not counted: {c:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(next_frame(&engine, 2, Duration::from_secs(2)).is_some());

    // Removed: the SFU is told and the frames stop.
    engine.remove_incoming_video(2, &endpoint).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    while engine.events().try_recv().is_ok() {}
    assert!(next_frame(&engine, 2, Duration::from_secs(1)).is_none());
    let to = participant(&sfu.stats().unwrap(), chat, receiver);
    assert_eq!(to["wants"], serde_json::json!([]), "{to}");
    let counters = engine.call_info(2).unwrap().stats.incoming_video;
    assert_eq!(counters.channel_messages_sent, 2, "{counters:?}");
    // The sender was never disturbed: its frames go on arriving whole at the SFU.
    let v = participant(&sfu.stats().unwrap(), chat, sender)["video"].clone();
    let shown = v["decodable_frames"].as_u64().unwrap();
    wait_shown(
        &sfu,
        chat,
        sender,
        Duration::from_secs(5),
        shown + 15,
        (320, 180),
    );
    let v = participant(&sfu.stats().unwrap(), chat, sender)["video"].clone();
    assert_eq!(v["incomplete_frames"], 0, "{v}");
}
