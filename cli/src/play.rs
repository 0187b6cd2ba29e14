//! `ringcast play`: joins a voice chat through any server speaking sfu-mock's control API,
//! streams a tone, a file in any format ffmpeg reads or a URL, and prints a JSON summary as the
//! last stdout line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use ringcast::{CallState, Engine, EventKind, MediaSource, RecordConfig, StreamSource};

use crate::seconds;

/// `ringcast play` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["tone", "file"])))]
pub(crate) struct PlayArgs {
    /// The join URL: the call's join payload is POSTed here and the answer read back
    /// (sfu-mock: `http://HOST:PORT/v1/chats/{chat}/join`).
    #[arg(long, value_name = "URL")]
    join_url: String,
    /// Stream a sine tone of this frequency.
    #[arg(long, value_name = "HZ")]
    tone: Option<f32>,
    /// Stream this file (any format ffmpeg reads: mp3, m4a, flac, wav, ogg, webm, a video's
    /// audio...) or URL (http, https...), decoded by ffmpeg. Opus is passed through as is.
    #[arg(long, value_name = "PATH|URL")]
    file: Option<String>,
    /// Start this far into the file (seconds).
    #[arg(long, value_name = "S", value_parser = seconds, default_value = "0")]
    seek: f64,
    /// Play the file again each time it ends.
    #[arg(long = "loop")]
    looped: bool,
    /// Record what the other participants say, mixed, to this file while streaming (format
    /// by extension: mp3, flac, wav, ogg/opus, m4a; encoded by ffmpeg).
    #[arg(long, value_name = "PATH")]
    record: Option<PathBuf>,
    /// How long to stream once connected.
    #[arg(long, value_name = "S", value_parser = seconds, allow_negative_numbers = true)]
    seconds: f64,
    /// Local UDP address of the engine.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:0")]
    bind: SocketAddr,
}

/// POSTs `body` and returns the response body of a 200, or a message naming the failure.
fn post_json(url: &str, body: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("POST {url}: reading body: {e}"))?;
    if status == 200 {
        Ok(text)
    } else {
        Err(format!("POST {url}: HTTP {status}: {text}"))
    }
}

/// The chat id in a `/v1/chats/{id}/join` URL, else 1.
fn chat_id_from_url(url: &str) -> i64 {
    url.trim_end_matches('/')
        .rsplit('/')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Waits until the call connects or ends; returns whether it connected.
fn wait_connected(engine: &Engine, chat_id: i64, limit: Duration) -> Result<bool, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        match engine.events().recv_timeout(left) {
            Ok(e) if e.chat_id == chat_id => match e.kind {
                EventKind::ConnectionChanged(CallState::Connected) => return Ok(true),
                EventKind::ConnectionChanged(CallState::Ended(reason)) => {
                    return Err(format!("call ended before connecting: {reason:?}"));
                }
                _ => {}
            },
            Ok(_) => {}
            Err(_) => return Ok(false),
        }
    }
}

/// Runs `ringcast play`.
pub(crate) fn play(o: &PlayArgs) -> Result<(), String> {
    let engine = Engine::builder()
        .bind(o.bind)
        .build()
        .map_err(|e| format!("engine: {e}"))?;
    let chat_id = chat_id_from_url(&o.join_url);
    let join = engine.create_call(chat_id).map_err(|e| e.to_string())?;
    let response = post_json(&o.join_url, &join)?;
    let started = Instant::now();
    engine
        .connect(chat_id, &response)
        .map_err(|e| format!("connect: {e}"))?;
    let source = match (&o.tone, &o.file) {
        (Some(hz), _) => StreamSource::Tone { frequency_hz: *hz },
        (None, Some(input)) => {
            let media = if input.contains("://") {
                MediaSource::url(input.clone())
            } else {
                MediaSource::file(PathBuf::from(input))
            };
            media
                .seek(Duration::from_secs_f64(o.seek))
                .looped(o.looped)
                .into()
        }
        (None, None) => return Err("--tone or --file is required".to_owned()),
    };
    engine
        .set_stream_sources(chat_id, source)
        .map_err(|e| format!("source: {e}"))?;
    if !wait_connected(&engine, chat_id, Duration::from_secs(15))? {
        return Err("could not connect: no ICE/DTLS path within the connect timeout".to_owned());
    }
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let recording = match &o.record {
        Some(path) => Some(
            engine
                .record(chat_id, RecordConfig::file(path.clone()).mixed())
                .map_err(|e| format!("record: {e}"))?,
        ),
        None => None,
    };
    eprintln!(
        "connected in {connect_ms:.1} ms; streaming for {} s",
        o.seconds
    );
    let stream_end = Instant::now() + Duration::from_secs_f64(o.seconds);
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    while Instant::now() < stream_end {
        let wait = stream_end
            .min(next_progress)
            .saturating_duration_since(Instant::now());
        if let Ok(e) = engine.events().recv_timeout(wait) {
            match e.kind {
                EventKind::ConnectionChanged(CallState::Ended(reason)) => {
                    return Err(format!("call ended while streaming: {reason:?}"));
                }
                EventKind::StreamEnded { error, .. } => {
                    eprintln!(
                        "stream ended{}",
                        error.map(|e| format!(": {e}")).unwrap_or_default()
                    );
                    break;
                }
                _ => {}
            }
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            if let Ok(info) = engine.call_info(chat_id) {
                eprintln!(
                    "  {:>5.1} s  packets {:>6}  bytes {:>8}",
                    info.stats.position_samples as f64 / 48_000.0,
                    info.stats.packets_sent,
                    info.stats.bytes_sent
                );
            }
        }
    }
    let info = engine.call_info(chat_id).map_err(|e| e.to_string())?;
    // Let the last packets leave before the call goes away.
    std::thread::sleep(Duration::from_millis(100));
    let recorded_frames = match recording {
        Some(recording) => {
            let summary = recording.stop().map_err(|e| format!("record: {e}"))?;
            let frames: u64 = summary.outputs.iter().map(|o| o.frames).sum();
            eprintln!("recorded {frames} frames of {} speakers", summary.speakers);
            Some(frames)
        }
        None => None,
    };
    let _ = engine.stop(chat_id);
    let summary = serde_json::json!({
        "connected": true,
        "connect_ms": (connect_ms * 10.0).round() / 10.0,
        "packets_sent": info.stats.packets_sent,
        "bytes_sent": info.stats.bytes_sent,
        "ssrc": info.ssrc,
        "recorded_frames": recorded_frames,
    });
    println!("{summary}");
    Ok(())
}
