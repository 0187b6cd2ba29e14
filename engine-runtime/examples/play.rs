//! Play a file or URL into many chats from one decode.
//!
//! Starts an in-process SFU mock, joins `--chats` group calls and plays the same input in
//! every one (on demand: each from its own start; `--live`: one position for all). Prints, every
//! second, what the SFU received and how many ffmpeg processes and Opus encoders it took (one
//! each, whatever the number of chats), and the stream ends as they arrive.
//!
//! ```text
//! cargo run -p ringcast --example play -- song.mp3 [--chats 20] [--seconds 10] [--live]
//! cargo run -p ringcast --example play -- https://example.com/radio.mp3 --live
//! ```
//! Without an input it makes a 10 s 440 Hz mp3 with ffmpeg and plays that.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringcast::{CallState, Engine, EventKind, MediaSource};
use sfu_mock::server::{Server, ServerOptions};

/// One input, many chats, one decode.
#[derive(Debug, clap::Parser)]
struct Args {
    /// A file in any format ffmpeg reads, or a URL. Default: a generated 440 Hz mp3.
    input: Option<String>,
    /// Chats to play it in.
    #[arg(long, default_value_t = 20)]
    chats: i64,
    /// How long to play, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Every chat at the same position (radio) instead of each from its start.
    #[arg(long)]
    live: bool,
}

/// A 10 s 440 Hz mp3 in the temp directory, made with ffmpeg.
fn generated_mp3() -> Result<PathBuf, Box<dyn Error>> {
    let path = std::env::temp_dir().join(format!("ringcast-example-{}.mp3", std::process::id()));
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:duration=10")
        .args(["-c:a", "libmp3lame"])
        .arg(&path)
        .status()?;
    if !status.success() {
        return Err("ffmpeg could not make the example mp3".into());
    }
    Ok(path)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = <Args as clap::Parser>::parse();
    let input = match &args.input {
        Some(input) => input.clone(),
        None => generated_mp3()?.display().to_string(),
    };
    let sfu = Server::start(ServerOptions::default())?;
    let engine = Engine::builder().build()?;
    for chat in 1..=args.chats {
        let payload = engine.create_call(-chat)?;
        let mut source = if input.contains("://") {
            MediaSource::url(input.clone())
        } else {
            MediaSource::file(&input)
        };
        if args.live {
            source = source.live();
        }
        engine.set_stream_sources(-chat, source)?;
        let answer = sfu.join(-chat, payload.as_bytes())?;
        engine.connect(-chat, &answer)?;
    }
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut next = Instant::now() + Duration::from_secs(1);
    let mut ended = 0;
    while Instant::now() < end && ended < args.chats {
        let wait = next.min(end).saturating_duration_since(Instant::now());
        if let Ok(event) = engine.events().recv_timeout(wait) {
            match event.kind {
                EventKind::StreamEnded { error, .. } => {
                    ended += 1;
                    if let Some(e) = error {
                        eprintln!("chat {}: the track failed: {e}", event.chat_id);
                    }
                }
                EventKind::ConnectionChanged(CallState::Ended(reason)) => {
                    eprintln!("chat {}: call ended: {reason:?}", event.chat_id);
                }
                _ => {}
            }
        }
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            let stats = engine.stats()?;
            let media = engine.media_stats();
            println!(
                "{} calls, {} packets sent; ffmpeg processes started {}, Opus encoders {}, \
                 cache hits {}, underruns {}; streams ended {ended}",
                stats.calls,
                stats.packets_sent,
                media.processes_spawned,
                media.encoders_created,
                media.cache_hits,
                media.underruns
            );
        }
    }
    let sfu_stats = sfu.stats()?;
    let received: u64 = sfu_stats["chats"]
        .as_object()
        .map(|chats| {
            chats
                .values()
                .flat_map(|c| c.as_array().into_iter().flatten())
                .filter_map(|p| p["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "the SFU received {received} packets from {} chats",
        args.chats
    );
    if args.input.is_none() {
        let _ = std::fs::remove_file(&input);
    }
    Ok(())
}
