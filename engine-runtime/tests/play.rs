//! Play anything: files in every common format, URLs and shell commands, decoded by ffmpeg once
//! per distinct input, played into sfu-mock over real UDP, and checked there (tone, packets).
//! Test media is made with ffmpeg at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::media::{
    MediaDir, av_clip, children_named, make, serial, sine, tone_file, wait_no_children,
};
use common::{participant, silent_sfu, wait_connected, wait_event};
use ringcast::{
    CallState, Engine, EngineError, EventKind, Ffmpeg, MediaSource, SourceError, StreamSource,
};
use sfu_mock::server::Server;

/// Creates call `key` in `chat`, plays `source` on it and connects it; returns its SSRC.
fn join_playing(
    engine: &Engine,
    sfu: &Server,
    key: i64,
    chat: i64,
    source: impl Into<StreamSource>,
) -> u32 {
    let payload = engine.create_call(key).unwrap();
    engine
        .set_stream_sources(key, source)
        .unwrap_or_else(|e| panic!("call {key}: {e}"));
    let ssrc = engine.audio_ssrc(key).unwrap();
    let response = sfu.join(chat, payload.as_bytes()).unwrap();
    engine.connect(key, &response).unwrap();
    ssrc
}

/// Creates and connects call `key` in `chat` with nothing to play yet.
fn join_idle(engine: &Engine, sfu: &Server, key: i64, chat: i64) -> u32 {
    let payload = engine.create_call(key).unwrap();
    let ssrc = engine.audio_ssrc(key).unwrap();
    let response = sfu.join(chat, payload.as_bytes()).unwrap();
    engine.connect(key, &response).unwrap();
    ssrc
}

/// The call reached the SFU: connected, >= 95 % of what it sent, and its tone within 5 Hz.
fn check_tone(engine: &Engine, sfu: &Server, key: i64, chat: i64, ssrc: u32, want_hz: f64) {
    let sent = engine.call_info(key).unwrap().stats.packets_sent;
    std::thread::sleep(Duration::from_millis(200));
    let stats = sfu.stats().unwrap();
    let p = participant(&stats, chat, ssrc);
    let got = p["packets"].as_u64().unwrap();
    assert!(
        p["connected"].as_bool().unwrap(),
        "call {key} not connected"
    );
    assert!(sent >= 50, "call {key} sent only {sent} packets");
    assert!(
        got as f64 >= sent as f64 * 0.95,
        "call {key}: the sfu got {got} of {sent}"
    );
    let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
    assert!(
        (hz - want_hz).abs() <= 5.0,
        "call {key}: the sfu hears {hz} Hz, want {want_hz}"
    );
}

#[test]
fn every_format_plays_its_tone_and_opus_is_passed_through() {
    let _serial = serial();
    let dir = MediaDir::new("play-formats");
    // (file, tone, ffmpeg codec arguments)
    let formats: Vec<(&str, u32, Vec<&str>)> = vec![
        ("tone.mp3", 400, vec!["-c:a", "libmp3lame", "-b:a", "128k"]),
        ("tone.m4a", 460, vec!["-c:a", "aac", "-b:a", "128k"]),
        ("tone.flac", 520, vec!["-c:a", "flac"]),
        ("tone.wav", 580, vec!["-c:a", "pcm_s16le"]),
        ("tone.webm", 640, vec!["-c:a", "libopus", "-b:a", "64k"]),
        ("tone.ogg", 700, vec!["-c:a", "libvorbis", "-q:a", "4"]),
    ];
    let mut files: Vec<(PathBuf, u32)> = formats
        .iter()
        .map(|(name, hz, args)| (tone_file(&dir, name, *hz, 5.0, args), *hz))
        .collect();
    // A video file: its audio track plays (video goes to a camera track through
    // set_video_source, tests/video.rs).
    let video = dir.path("clip.mp4");
    av_clip(
        &video,
        "testsrc=size=160x120:rate=15:duration=5",
        &sine(760, 5.0),
    );
    files.push((video, 760));

    let sfu = silent_sfu();
    let engine = Engine::builder().shards(2).build().unwrap();
    let mut ssrcs = HashMap::new();
    for (key, (path, _)) in files.iter().enumerate() {
        let key = key as i64;
        ssrcs.insert(
            key,
            join_playing(&engine, &sfu, key, key, MediaSource::file(path)),
        );
    }
    wait_connected(&engine, files.len(), Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    for (key, (path, hz)) in files.iter().enumerate() {
        let key = key as i64;
        eprintln!("{}", path.display());
        check_tone(&engine, &sfu, key, key, ssrcs[&key], f64::from(*hz));
    }
    let media = engine.media_stats();
    // Seven inputs, seven decodes; the Opus one (webm) needs no encoder.
    assert_eq!(media.processes_spawned, 7, "{media:?}");
    assert_eq!(media.passthrough_decodes, 1, "{media:?}");
    assert_eq!(media.encoders_created, 6, "{media:?}");
    // The 5 s files end: every call reports the end of its audio stream, and stays up.
    let mut ended = 0;
    while ended < files.len() {
        let e = wait_event(&engine, Duration::from_secs(10), |e| {
            matches!(e.kind, EventKind::StreamEnded { .. })
        })
        .expect("every stream ends");
        assert!(
            matches!(
                e.kind,
                EventKind::StreamEnded {
                    track: ringcast::TrackKind::Audio,
                    error: None
                }
            ),
            "{e:?}"
        );
        ended += 1;
    }
    assert_eq!(engine.calls().unwrap().len(), files.len());
    assert_eq!(wait_no_children("ffmpeg", Duration::from_secs(5)), 0);
}

/// A one-file HTTP server for the URL tests: serves `body` at `/tone.mp3`, 404 elsewhere, and
/// records the request headers it saw.
fn serve(body: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                request.push_str(&line);
                line.clear();
            }
            log.lock().unwrap().push(request.clone());
            let found = request.starts_with("GET /tone.mp3 ");
            let head = if found {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(head.as_bytes());
            if found && !request.starts_with("HEAD") {
                let _ = stream.write_all(&body);
            }
        }
    });
    (base, seen)
}

#[test]
fn urls_and_shell_commands_play_their_tones() {
    let _serial = serial();
    let dir = MediaDir::new("play-url");
    let mp3 = tone_file(&dir, "tone.mp3", 450, 5.0, &["-c:a", "libmp3lame"]);
    let (base, seen) = serve(std::fs::read(&mp3).unwrap());

    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    // A URL with a request header.
    let url = MediaSource::url(format!("{base}/tone.mp3")).header("X-Ringcast-Test", "yes");
    let s0 = join_playing(&engine, &sfu, 0, 0, url);
    // A shell command writing 48 kHz stereo PCM (what py-tgcalls builds)...
    let cmd48 = format!(
        "ffmpeg -nostdin -loglevel error -f lavfi -i {} -f s16le -ac 2 -ar 48000 pipe:1",
        sine(550, 5.0)
    );
    let s1 = join_playing(
        &engine,
        &sfu,
        1,
        1,
        MediaSource::shell(cmd48.clone(), 48_000, 2),
    );
    // ... and one at 44.1 kHz mono, resampled.
    let cmd44 = format!(
        "ffmpeg -nostdin -loglevel error -f lavfi -i {} -f s16le -ac 1 -ar 44100 pipe:1",
        sine(650, 5.0)
    );
    let s2 = join_playing(&engine, &sfu, 2, 2, MediaSource::shell(cmd44, 44_100, 1));
    // The same command line again is the same input: read from the cache, no new process.
    let spawned = engine.media_stats().processes_spawned;
    let s4 = join_playing(&engine, &sfu, 4, 4, MediaSource::shell(cmd48, 48_000, 2));
    let media = engine.media_stats();
    assert_eq!(media.processes_spawned, spawned, "{media:?}");
    assert_eq!(media.cache_hits, 1, "{media:?}");
    wait_connected(&engine, 4, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    check_tone(&engine, &sfu, 4, 4, s4, 550.0);
    check_tone(&engine, &sfu, 0, 0, s0, 450.0);
    check_tone(&engine, &sfu, 1, 1, s1, 550.0);
    check_tone(&engine, &sfu, 2, 2, s2, 650.0);
    let requests = seen.lock().unwrap().join("\n");
    assert!(
        requests.contains("X-Ringcast-Test: yes"),
        "header not sent: {requests}"
    );

    // A URL that is not there: a typed error with ffmpeg's words, and the call is still up.
    join_idle(&engine, &sfu, 3, 3);
    wait_connected(&engine, 1, Duration::from_secs(10));
    let err = engine
        .set_stream_sources(3, MediaSource::url(format!("{base}/missing.mp3")))
        .expect_err("404");
    let EngineError::Source(SourceError::Decoder { stderr, .. }) = &err else {
        panic!("{err:?}");
    };
    assert!(stderr.contains("404"), "{err}");
    assert_eq!(engine.get_state(3).unwrap(), CallState::Connected);
    drop(engine);
    assert_eq!(wait_no_children("ffmpeg", Duration::from_secs(5)), 0);
    assert_eq!(wait_no_children("sh", Duration::from_secs(5)), 0);
}

#[test]
fn live_mode_runs_one_decode_for_a_hundred_calls() {
    let _serial = serial();
    let dir = MediaDir::new("play-live");
    let mp3 = tone_file(&dir, "radio.mp3", 480, 30.0, &["-c:a", "libmp3lame"]);
    let sfu = silent_sfu();
    let engine = Engine::builder()
        .shards(2)
        .event_queue(16_384)
        .build()
        .unwrap();
    let mut ssrcs = HashMap::new();
    for key in 0..100_i64 {
        let source = MediaSource::file(&mp3).live();
        ssrcs.insert(key, join_playing(&engine, &sfu, key, key % 10, source));
    }
    wait_connected(&engine, 100, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(children_named("ffmpeg"), 1, "one ffmpeg for every call");
    for key in 0..100_i64 {
        check_tone(&engine, &sfu, key, key % 10, ssrcs[&key], 480.0);
    }
    let media = engine.media_stats();
    assert_eq!(media.processes_spawned, 1, "{media:?}");
    assert_eq!(media.encoders_created, 1, "{media:?}");
    assert_eq!(media.shared_plays, 99, "{media:?}");
    // Stopping every call stops the decode.
    for key in 0..100_i64 {
        engine.stop(key).unwrap();
    }
    assert_eq!(wait_no_children("ffmpeg", Duration::from_secs(5)), 0);
    assert_eq!(engine.media_stats().processes_running, 0);
}

/// The SFU's view of `ssrc`'s tone once call `key` has played `at` of its track.
fn tone_at(engine: &Engine, sfu: &Server, key: i64, chat: i64, ssrc: u32, at: Duration) -> f64 {
    let end = Instant::now() + Duration::from_secs(10);
    while engine.time(key).unwrap() < at {
        assert!(Instant::now() < end, "call {key} does not advance");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = sfu.stats().unwrap();
    participant(&stats, chat, ssrc)["dominant_hz"]
        .as_f64()
        .unwrap_or(0.0)
}

#[test]
fn on_demand_calls_each_hear_the_track_from_its_start_from_one_decode() {
    let _serial = serial();
    let dir = MediaDir::new("play-ondemand");
    // 1.5 s of 440 Hz, then 3.5 s of 880 Hz.
    let track = dir.path("two-tones.mp3");
    let (a, b) = (sine(440, 1.5), sine(880, 3.5));
    make(
        &track,
        &[
            "-f",
            "lavfi",
            "-i",
            &a,
            "-f",
            "lavfi",
            "-i",
            &b,
            "-filter_complex",
            "[0:a][1:a]concat=n=2:v=0:a=1",
            "-c:a",
            "libmp3lame",
        ],
    );
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let mut heard = Vec::new();
    let mut calls: Vec<(i64, u32)> = Vec::new();
    for key in 0..3_i64 {
        let ssrc = join_idle(&engine, &sfu, key, key);
        wait_connected(&engine, 1, Duration::from_secs(10));
        engine
            .set_stream_sources(key, MediaSource::file(&track))
            .unwrap();
        calls.push((key, ssrc));
        let first = tone_at(&engine, &sfu, key, key, ssrc, Duration::from_millis(1100));
        heard.push((key, first));
        // The next call starts about a second after this one.
    }
    for (key, hz) in &heard {
        assert!((hz - 440.0).abs() <= 5.0, "call {key} started at {hz} Hz");
    }
    for (key, ssrc) in &calls {
        let later = tone_at(
            &engine,
            &sfu,
            *key,
            *key,
            *ssrc,
            Duration::from_millis(2600),
        );
        assert!(
            (later - 880.0).abs() <= 5.0,
            "call {key} then heard {later} Hz"
        );
    }
    let media = engine.media_stats();
    assert_eq!(media.processes_spawned, 1, "{media:?}");
    assert_eq!(media.encoders_created, 1, "{media:?}");
    assert_eq!((media.cache_misses, media.cache_hits), (1, 2), "{media:?}");
    assert!(
        media.cache_bytes > 0 && media.cache_tracks == 1,
        "{media:?}"
    );

    // Started 2 s in: the second tone at once, and time() counts from the seek.
    let ssrc = join_idle(&engine, &sfu, 3, 3);
    wait_connected(&engine, 1, Duration::from_secs(10));
    engine
        .set_stream_sources(3, MediaSource::file(&track).seek(Duration::from_secs(2)))
        .unwrap();
    assert!(engine.time(3).unwrap() >= Duration::from_secs(2));
    let hz = tone_at(&engine, &sfu, 3, 3, ssrc, Duration::from_millis(2600));
    assert!((hz - 880.0).abs() <= 5.0, "seeked call heard {hz} Hz");
    // A seek is another input: its own decode.
    assert_eq!(engine.media_stats().processes_spawned, 2);
}

#[test]
fn looped_tracks_play_on_live_and_on_demand() {
    let _serial = serial();
    let dir = MediaDir::new("play-loop");
    let short = tone_file(&dir, "short.mp3", 540, 1.0, &["-c:a", "libmp3lame"]);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let s0 = join_playing(&engine, &sfu, 0, 0, MediaSource::file(&short).looped(true));
    let s1 = join_playing(
        &engine,
        &sfu,
        1,
        1,
        MediaSource::file(&short).looped(true).live(),
    );
    wait_connected(&engine, 2, Duration::from_secs(10));
    // Three and a half times the track: no end, every packet, the tone.
    let ended = wait_event(&engine, Duration::from_millis(3500), |e| {
        matches!(e.kind, EventKind::StreamEnded { .. })
    });
    assert!(ended.is_none(), "a looped track ended: {ended:?}");
    for (key, ssrc) in [(0, s0), (1, s1)] {
        let sent = engine.call_info(key).unwrap().stats.packets_sent;
        assert!(sent >= 160, "call {key} sent {sent} packets in 3.5 s");
        check_tone(&engine, &sfu, key, key, ssrc, 540.0);
    }
    let media = engine.media_stats();
    // On demand loops over the cache (one decode); live runs ffmpeg again each time.
    assert!(media.processes_spawned >= 3, "{media:?}");
    assert!(media.underruns < 10, "{media:?}");
}

#[test]
fn bad_inputs_end_their_track_typed_and_touch_nothing_else() {
    let _serial = serial();
    let dir = MediaDir::new("play-bad");
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    // A call that must not notice anything.
    let steady = join_playing(
        &engine,
        &sfu,
        0,
        0,
        StreamSource::Tone {
            frequency_hz: 500.0,
        },
    );
    join_idle(&engine, &sfu, 1, 1);
    wait_connected(&engine, 2, Duration::from_secs(10));

    let decoder_error = |source: MediaSource| -> String {
        match engine.set_stream_sources(1, source) {
            Err(EngineError::Source(e @ SourceError::Decoder { .. })) => e.to_string(),
            other => panic!("{other:?}"),
        }
    };
    let missing = decoder_error(MediaSource::file(dir.path("nothing-here.mp3")));
    assert!(missing.contains("No such file"), "{missing}");
    let garbage = dir.path("garbage.mp3");
    std::fs::write(&garbage, vec![0x5a_u8; 10_000]).unwrap();
    let garbage = decoder_error(MediaSource::file(&garbage));
    assert!(garbage.contains("garbage.mp3"), "{garbage}");
    let failing = decoder_error(MediaSource::shell(
        "echo no such device >&2; exit 3",
        48_000,
        2,
    ));
    assert!(
        failing.contains("exited with status 3") && failing.contains("no such device"),
        "{failing}"
    );
    assert_eq!(engine.get_state(1).unwrap(), CallState::Connected);

    // ffmpeg killed in the middle of a track: the track ends with the error, the call stays.
    let long = tone_file(&dir, "long.mp3", 600, 60.0, &["-c:a", "libmp3lame"]);
    engine
        .set_stream_sources(1, MediaSource::file(&long).live())
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill_the_reader_of(&long);
    let end = wait_event(&engine, Duration::from_secs(10), |e| {
        e.chat_id == 1 && matches!(e.kind, EventKind::StreamEnded { .. })
    })
    .expect("stream end after the kill");
    let EventKind::StreamEnded {
        error: Some(SourceError::Decoder { reason, .. }),
        ..
    } = &end.kind
    else {
        panic!("{end:?}");
    };
    assert!(reason.contains("signal 9"), "{reason}");
    assert_eq!(engine.get_state(1).unwrap(), CallState::Connected);
    // The next track plays.
    let next = tone_file(&dir, "next.mp3", 660, 5.0, &["-c:a", "libmp3lame"]);
    engine
        .set_stream_sources(1, MediaSource::file(&next))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let ssrc1 = engine.audio_ssrc(1).unwrap();
    check_tone(&engine, &sfu, 1, 1, ssrc1, 660.0);
    check_tone(&engine, &sfu, 0, 0, steady, 500.0);
    assert_eq!(
        engine.media_stats().decode_errors,
        2,
        "{:?}",
        engine.media_stats()
    );

    // On demand, a decode killed mid-track leaves the cache: the next play decodes afresh.
    engine
        .set_stream_sources(1, MediaSource::file(&long))
        .unwrap();
    let tracks = engine.media_stats().cache_tracks;
    kill_the_reader_of(&long);
    let end = Instant::now() + Duration::from_secs(5);
    while engine.media_stats().cache_tracks >= tracks {
        assert!(Instant::now() < end, "the failed track stayed cached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spawned = engine.media_stats().processes_spawned;
    engine
        .set_stream_sources(1, MediaSource::file(&long))
        .unwrap();
    assert_eq!(engine.media_stats().processes_spawned, spawned + 1);
    assert_eq!(engine.media_stats().cache_hits, 0);

    // No ffmpeg where the builder says: a typed error when the engine is built.
    let err = Engine::builder()
        .ffmpeg(Ffmpeg::new("/nonexistent/ffmpeg"))
        .build()
        .expect_err("no ffmpeg there");
    assert!(
        matches!(err, EngineError::Source(SourceError::FfmpegNotFound { .. })),
        "{err:?}"
    );
    drop(engine);
    assert_eq!(wait_no_children("ffmpeg", Duration::from_secs(5)), 0);
}

/// Processes whose command line mentions `path`.
fn pids_reading(path: &Path) -> Vec<u32> {
    let needle = path.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

/// Kills (`SIGKILL`) the one process reading `path`: an ffmpeg dying mid-track.
fn kill_the_reader_of(path: &Path) {
    let pids = pids_reading(path);
    assert_eq!(pids.len(), 1, "one ffmpeg reads the file");
    let killed = Command::new("/bin/sh")
        .args(["-c", &format!("kill -9 {}", pids[0])])
        .status()
        .unwrap();
    assert!(killed.success(), "no ffmpeg to kill");
}

/// Run by `decoders_die_with_the_process` in a child process: starts decodes, then exits
/// without dropping anything.
#[test]
fn child_exits_while_playing() {
    let Ok(marker) = std::env::var("RINGCAST_PLAY_CHILD") else {
        return; // Only meaningful as the child of the test below.
    };
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    join_playing(&engine, &sfu, 0, 0, MediaSource::file(&marker).live());
    join_playing(&engine, &sfu, 1, 1, MediaSource::file(&marker));
    std::process::exit(0);
}

#[test]
fn decoders_die_with_the_process() {
    let _serial = serial();
    let dir = MediaDir::new("play-exit");
    let marker = tone_file(&dir, "exit-marker.mp3", 500, 60.0, &["-c:a", "libmp3lame"]);
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_exits_while_playing", "--nocapture"])
        .env("RINGCAST_PLAY_CHILD", &marker)
        .status()
        .unwrap();
    assert!(status.success());
    // Any ffmpeg still reading the marker file outlived its process.
    let survivors = |marker: &Path| pids_reading(marker).len();
    let end = Instant::now() + Duration::from_secs(5);
    while survivors(&marker) > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(survivors(&marker), 0, "an ffmpeg outlived its process");
}

#[test]
fn a_paused_call_holds_its_decode_back() {
    let _serial = serial();
    let dir = MediaDir::new("play-pause");
    let long = tone_file(&dir, "long.mp3", 620, 120.0, &["-c:a", "libmp3lame"]);
    let sfu = silent_sfu();
    let engine = Engine::builder().build().unwrap();
    let ssrc = join_playing(&engine, &sfu, 0, 0, MediaSource::file(&long));
    wait_connected(&engine, 1, Duration::from_secs(10));
    engine.pause(0).unwrap();
    // The decode runs at most DECODE_LEAD (10 s) ahead of the call, then waits on its pipe.
    std::thread::sleep(Duration::from_secs(2));
    let held = engine.media_stats().cache_bytes;
    std::thread::sleep(Duration::from_secs(1));
    let later = engine.media_stats().cache_bytes;
    assert_eq!(
        held, later,
        "the decode went on while the only call was paused"
    );
    let frames = later / (ringcast::play::FRAME_OVERHEAD as u64 + 150);
    assert!(
        frames <= 600,
        "{later} bytes cached: about {frames} frames, more than 10 s ahead"
    );
    // Resumed, it plays on from where it was.
    engine.resume(0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    check_tone(&engine, &sfu, 0, 0, ssrc, 620.0);
    assert!(engine.media_stats().cache_bytes > later);
}
