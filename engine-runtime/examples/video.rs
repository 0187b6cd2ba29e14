//! Show one video in many chats from one encoder.
//!
//! Starts an in-process SFU mock, joins `--chats` group calls with a camera track and shows the
//! same file (its video encoded once, its audio decoded once) in every one. Prints, every
//! second, what the SFU reassembled for each chat (frames, key frames, size, frame rate) and how
//! many encoders it took: one, whatever the number of chats.
//!
//! ```text
//! cargo run -p ringcast --example video -- clip.mp4 [--chats 10] [--seconds 10] [--h264]
//! ```
//! Without an input it makes a 20 s 720p test pattern with a 440 Hz tone and shows that.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringcast::{CallOptions, Engine, MediaSource, VideoCodec, VideoParams};
use sfu_mock::server::{Server, ServerOptions};

/// One video, many chats, one encoder.
#[derive(Debug, clap::Parser)]
struct Args {
    /// A file or URL with a video stream. Default: a generated test pattern.
    input: Option<String>,
    /// Chats to show it in.
    #[arg(long, default_value_t = 10)]
    chats: i64,
    /// How long to show it, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Send H.264 instead of VP8.
    #[arg(long)]
    h264: bool,
}

/// A 20 s 1280x720 30 fps test pattern with a 440 Hz tone, made with ffmpeg.
fn generated_clip() -> Result<PathBuf, Box<dyn Error>> {
    let path = std::env::temp_dir().join(format!("ringcast-example-{}.mp4", std::process::id()));
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=20",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=20"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&path)
        .status()?;
    if !status.success() {
        return Err("ffmpeg could not make the example clip".into());
    }
    Ok(path)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = <Args as clap::Parser>::parse();
    let input = match &args.input {
        Some(input) => input.clone(),
        None => generated_clip()?.display().to_string(),
    };
    let source = || {
        if input.contains("://") {
            MediaSource::url(input.clone())
        } else {
            MediaSource::file(&input)
        }
    };
    let codec = if args.h264 {
        VideoCodec::H264
    } else {
        VideoCodec::Vp8
    };
    let sfu = Server::start(ServerOptions {
        forward_audio: false,
        ..ServerOptions::default()
    })?;
    let engine = Engine::builder().build()?;
    let mut ssrcs = Vec::new();
    for chat in 1..=args.chats {
        let payload = engine.create_call_with(-chat, CallOptions::new().video(codec))?;
        let answer = sfu.join(-chat, payload.as_bytes())?;
        engine.connect(-chat, &answer)?;
        ssrcs.push((-chat, engine.audio_ssrc(-chat)?));
    }
    // Sources go on once the calls are up, so each starts at the shared encoder's live edge.
    let up = Instant::now() + Duration::from_secs(10);
    while engine
        .calls()?
        .iter()
        .any(|c| c.state != ringcast::CallState::Connected)
    {
        if Instant::now() > up {
            return Err("the calls did not connect within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let params = VideoParams {
        codec,
        ..VideoParams::default()
    };
    for &(chat, _) in &ssrcs {
        engine.set_stream_sources(chat, source().live())?;
        engine.set_video_source(chat, source(), params)?;
    }
    let end = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        let stats = sfu.stats()?;
        let video = engine.video_stats();
        let chat = &stats["chats"][ssrcs[0].0.to_string()][0];
        let v = &chat["video"];
        println!(
            "{} encoder(s) for {} chats, {} frames encoded; chat {} at the SFU: {} frames ({} key), \
             {}x{} at {:.1} fps, audio {:.0} Hz",
            video.encoders_started,
            ssrcs.len(),
            video.frames_encoded,
            ssrcs[0].0,
            v["frames"],
            v["keyframes"],
            v["width"],
            v["height"],
            v["fps"].as_f64().unwrap_or(0.0),
            chat["dominant_hz"].as_f64().unwrap_or(0.0),
        );
    }
    if args.input.is_none() {
        let _ = std::fs::remove_file(&input);
    }
    Ok(())
}
