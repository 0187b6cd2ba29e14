//! RTMP push end to end: ringcast pushes a 440 Hz mp3 (and a shell command's 660 Hz PCM) to a
//! local RTMP receiver (an ffmpeg listening), whose recording is decoded back and its tone
//! verified; pause holds the push; a push to a port where nothing listens ends with a typed
//! error carrying ffmpeg's stderr; no ffmpeg is left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::{Ffmpeg, MediaSource, RtmpPush, SourceError};
use sfu_mock::analysis::dominant_frequency_hz;

mod common;

use common::media::{MediaDir, children_named, decode, make, serial, tone_file, wait_no_children};

/// A child process killed and reaped on drop (the RTMP receiver).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True once something listens on 127.0.0.1:`port` (read from /proc/net/tcp, so the
/// receiver's single accepted connection is not spent on a probe).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")
        })
}

/// An ffmpeg that accepts one RTMP publisher on `port` and copies its stream into `out`.
fn receiver(port: u16, out: &Path) -> ChildGuard {
    let child = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-listen", "1", "-i"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/key"))
        .args(["-c", "copy"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let end = Instant::now() + Duration::from_secs(10);
    while !listening(port) {
        assert!(Instant::now() < end, "the receiver never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}

/// Waits (bounded) for the receiver to exit once the publisher is gone.
fn wait_exit(guard: &mut ChildGuard) {
    let end = Instant::now() + Duration::from_secs(15);
    while guard.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "the receiver did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_ffmpeg_left() {
    // A killed child is reaped by the thread that owns it; give it a moment.
    let left = wait_no_children("ffmpeg", Duration::from_secs(5));
    assert_eq!(left, 0, "{left} ffmpeg left");
}

fn tone_of(pcm: &[f32]) -> f32 {
    let n = pcm.len().min(32_768);
    assert!(n >= 16_384, "only {} samples", pcm.len());
    let mid = pcm.len() / 2;
    let start = mid.saturating_sub(n / 2);
    dominant_frequency_hz(&pcm[start..start + n], 48_000).unwrap()
}

#[test]
fn pushes_an_mp3_with_a_pause_and_a_shell_command_to_a_local_receiver() {
    let _serial = serial();
    let dir = MediaDir::new("rtmp");
    let mp3 = tone_file(&dir, "a440.mp3", 440, 2.0, &["-c:a", "libmp3lame"]);
    let ffmpeg_bin = Ffmpeg::default();

    // 1. The mp3, paused for longer than the file lasts: the push holds, then ends Ok.
    let port = free_port();
    let out = dir.0.join("got.flv");
    let mut rx = receiver(port, &out);
    let started = Instant::now();
    let push = RtmpPush::start(
        &ffmpeg_bin,
        MediaSource::file(&mp3),
        format!("rtmp://127.0.0.1:{port}/live/key"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    push.pause();
    assert!(push.is_paused());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !push.is_finished(),
        "a paused push ended: {:?}",
        push.try_end()
    );
    push.resume();
    let end = push
        .wait_timeout(Duration::from_secs(20))
        .expect("the push did not end in 20 s");
    assert_eq!(end, Ok(()));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    wait_exit(&mut rx);
    let pcm = decode(&out);
    let secs = pcm.len() as f32 / 48_000.0;
    assert!((1.5..=2.6).contains(&secs), "received {secs:.2} s");
    let hz = tone_of(&pcm);
    assert!((hz - 440.0).abs() <= 5.0, "received {hz} Hz");
    eprintln!("mp3 push: {secs:.2} s at {hz:.1} Hz, paused 3 s");
    drop(push);
    assert_no_ffmpeg_left();

    // 2. A shell command's PCM (py-tgcalls' kind of command), 660 Hz.
    let port = free_port();
    let out = dir.0.join("shell.flv");
    let mut rx = receiver(port, &out);
    let command = "ffmpeg -nostdin -loglevel quiet -f lavfi -i sine=frequency=660:duration=2 \
                   -f s16le -ar 44100 -ac 1 pipe:1";
    let push = RtmpPush::start(
        &ffmpeg_bin,
        MediaSource::shell(command, 44_100, 1),
        format!("rtmp://127.0.0.1:{port}/live/key"),
    )
    .unwrap();
    let end = push
        .wait_timeout(Duration::from_secs(20))
        .expect("the shell push did not end in 20 s");
    assert_eq!(end, Ok(()));
    wait_exit(&mut rx);
    let pcm = decode(&out);
    let hz = tone_of(&pcm);
    assert!((hz - 660.0).abs() <= 5.0, "received {hz} Hz");
    eprintln!(
        "shell push: {:.2} s at {hz:.1} Hz",
        pcm.len() as f32 / 48_000.0
    );
    drop(push);
    assert_no_ffmpeg_left();
}

#[test]
fn a_push_to_nowhere_ends_with_ffmpegs_words_and_stop_leaves_nothing() {
    let _serial = serial();
    let dir = MediaDir::new("rtmp-err");
    let mp3 = tone_file(&dir, "a440.mp3", 440, 30.0, &["-c:a", "libmp3lame"]);
    let ffmpeg_bin = Ffmpeg::default();

    // Nothing listens: a typed error with ffmpeg's stderr.
    let port = free_port();
    let push = RtmpPush::start(
        &ffmpeg_bin,
        MediaSource::file(&mp3),
        format!("rtmp://127.0.0.1:{port}/live/key"),
    )
    .unwrap();
    let end = push
        .wait_timeout(Duration::from_secs(20))
        .expect("the push to nowhere did not end");
    let Err(SourceError::Decoder {
        program,
        reason,
        stderr,
    }) = &end
    else {
        panic!("{end:?}");
    };
    assert_eq!(program, "ffmpeg");
    assert!(reason.starts_with("exited with status"), "{reason}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert_eq!(push.wait(), end);
    drop(push);

    // Bad arguments and a missing input are refused at start.
    assert!(matches!(
        RtmpPush::start(&ffmpeg_bin, MediaSource::file(&mp3), "http://example.com/x"),
        Err(SourceError::InvalidArgument { .. })
    ));
    let missing = RtmpPush::start(
        &ffmpeg_bin,
        MediaSource::file(dir.0.join("missing.mp3")),
        format!("rtmp://127.0.0.1:{port}/live/key"),
    )
    .expect_err("a missing file");
    assert!(
        matches!(&missing, SourceError::Decoder { stderr, .. } if stderr.contains("No such file")),
        "{missing:?}"
    );
    assert!(matches!(
        RtmpPush::start(
            &Ffmpeg::new("/nonexistent/ffmpeg"),
            MediaSource::shell("true", 48_000, 1),
            format!("rtmp://127.0.0.1:{port}/live/key"),
        ),
        Err(SourceError::FfmpegNotFound { .. })
    ));

    // A long push into a receiver, stopped: Ok, and ffmpeg is gone at once; so is one
    // only dropped while paused.
    let out = dir.0.join("stopped.flv");
    let port = free_port();
    let _rx = receiver(port, &out);
    let mut push = RtmpPush::start(
        &ffmpeg_bin,
        MediaSource::file(&mp3),
        format!("rtmp://127.0.0.1:{port}/live/key"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(children_named("ffmpeg"), 2, "the receiver and the push");
    assert!(!push.is_finished());
    assert_eq!(push.stop(), Ok(()));
    assert!(push.is_finished());
    drop(_rx);
    assert_no_ffmpeg_left();

    let port = free_port();
    let _rx = receiver(port, &dir.0.join("paused.flv"));
    let push = RtmpPush::start(
        &ffmpeg_bin,
        MediaSource::file(&mp3),
        format!("rtmp://127.0.0.1:{port}/live/key"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    push.pause();
    drop(push);
    drop(_rx);
    assert_no_ffmpeg_left();
}

#[test]
fn a_file_with_video_is_pushed_as_h264_and_aac() {
    let _serial = serial();
    let dir = MediaDir::new("rtmp-video");
    let mp4 = dir.0.join("clip.mp4");
    make(
        &mp4,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-c:v",
            "mpeg4",
            "-c:a",
            "aac",
            "-shortest",
        ],
    );
    let port = free_port();
    let out = dir.0.join("video.flv");
    let mut rx = receiver(port, &out);
    let push = RtmpPush::start(
        &Ffmpeg::default(),
        MediaSource::file(&mp4),
        format!("rtmp://127.0.0.1:{port}/live/key"),
    )
    .unwrap();
    let end = push
        .wait_timeout(Duration::from_secs(30))
        .expect("the video push did not end in 30 s");
    assert_eq!(end, Ok(()));
    wait_exit(&mut rx);
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let streams = String::from_utf8_lossy(&probe.stdout);
    assert!(streams.contains("h264,video"), "{streams}");
    assert!(streams.contains("aac,audio"), "{streams}");
    let hz = tone_of(&decode(&out));
    assert!((hz - 440.0).abs() <= 5.0, "received {hz} Hz");
    eprintln!(
        "video push: {} at {hz:.1} Hz",
        streams.trim().replace('\n', " + ")
    );
    drop(push);
    assert_no_ffmpeg_left();
}
