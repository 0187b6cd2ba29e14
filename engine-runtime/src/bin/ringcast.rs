//! The `ringcast` command line.
//!
//! - `ringcast play --join-url URL (--tone HZ | --file F.ogg) --seconds S`: joins a voice chat
//!   through any server speaking sfu-mock's control API, streams, prints a JSON summary.
//! - `ringcast demo [--calls N] [--chats M] [--seconds S] [--json]`: starts an embedded sfu-mock,
//!   streams tones into it, shows live stats and what the SFU verified.
//! - `ringcast p2p-demo [--calls N] [--json] [--timeout S] [--shards K]`: N 1:1 calls between
//!   two engines in one process (key exchange, encrypted signaling relayed by the demo, tones
//!   both ways, each side decoding); last stdout line
//!   `{"calls": N, "keys_match": N, "emojis_match": N, "verified_both_ways": N}`.
//! - `ringcast sim --seeds N [--scenario NAME|all] [--seed S]`: the deterministic simulation
//!   sweep (`sfu_mock::sweep`); the last stdout line is a JSON summary, the exit status
//!   non-zero if any call missed its expectation.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use ringcast::{CallState, Engine, EngineError, EventKind, SharedSource, StreamSource};
use ringcast_core::media::ToneSource;
use sfu_mock::server::{Server, ServerOptions};

#[path = "ringcast/p2p_demo.rs"]
mod p2p_demo;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const USAGE: &str = "usage:
  ringcast play --join-url URL (--tone HZ | --file F.ogg) --seconds S [--bind IP:PORT]
  ringcast demo [--calls N] [--chats M] [--seconds S] [--json]
  ringcast p2p-demo [--calls N] [--json] [--timeout S] [--shards K]
  ringcast sim --seeds N [--scenario NAME|all] [--seed S] [--threads T] [--verbose] [--trace]";

/// Dominant frequency must be within this of the tone sent for the SFU to count a call verified.
const VERIFY_TOLERANCE_HZ: f32 = 5.0;
/// Share of sent packets the SFU must have received for a call to count as verified.
const VERIFY_MIN_DELIVERY: f64 = 0.95;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("play") => parse_play(&args[1..]).and_then(|o| play(&o)),
        Some("demo") => parse_demo(&args[1..]).and_then(|o| demo(&o)),
        Some("p2p-demo") => p2p_demo::parse(&args[1..]).and_then(|o| p2p_demo::run(&o)),
        Some("sim") => sfu_mock::sweep::cli(&args[1..]),
        _ => Err(format!("missing or unknown command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: {e}");
            ExitCode::FAILURE
        }
    }
}

struct PlayOptions {
    join_url: String,
    source: SourceArg,
    seconds: f64,
    bind: SocketAddr,
}

enum SourceArg {
    Tone(f32),
    File(PathBuf),
}

fn flag_value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn parse_num<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a number"))
}

fn parse_play(args: &[String]) -> Result<PlayOptions, String> {
    let mut join_url = None;
    let mut source = None;
    let mut seconds = None;
    let mut bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--join-url" => join_url = Some(flag_value(args, &mut i, flag)?.to_owned()),
            "--tone" => {
                source = Some(SourceArg::Tone(parse_num(
                    flag_value(args, &mut i, flag)?,
                    flag,
                )?))
            }
            "--file" => source = Some(SourceArg::File(flag_value(args, &mut i, flag)?.into())),
            "--seconds" => seconds = Some(parse_num(flag_value(args, &mut i, flag)?, flag)?),
            "--bind" => bind = parse_num(flag_value(args, &mut i, flag)?, flag)?,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    Ok(PlayOptions {
        join_url: join_url.ok_or("--join-url is required")?,
        source: source.ok_or("--tone or --file is required")?,
        seconds: seconds.ok_or("--seconds is required")?,
        bind,
    })
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

fn play(o: &PlayOptions) -> Result<(), String> {
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
    let source = match &o.source {
        SourceArg::Tone(hz) => StreamSource::Tone { frequency_hz: *hz },
        SourceArg::File(p) => StreamSource::OggFile(p.clone()),
    };
    engine
        .set_stream_sources(chat_id, source)
        .map_err(|e| format!("source: {e}"))?;
    if !wait_connected(&engine, chat_id, Duration::from_secs(15))? {
        return Err("could not connect: no ICE/DTLS path within the connect timeout".to_owned());
    }
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "connected in {connect_ms:.1} ms; streaming for {} s",
        o.seconds
    );
    let stream_end = Instant::now() + Duration::from_secs_f64(o.seconds.max(0.0));
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
                EventKind::StreamEnded { error } => {
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
                    info.stats.played_samples as f64 / 48_000.0,
                    info.stats.packets_sent,
                    info.stats.bytes_sent
                );
            }
        }
    }
    let info = engine.call_info(chat_id).map_err(|e| e.to_string())?;
    // Let the last packets leave before the call goes away.
    std::thread::sleep(Duration::from_millis(100));
    let _ = engine.stop(chat_id);
    let summary = serde_json::json!({
        "connected": true,
        "connect_ms": (connect_ms * 10.0).round() / 10.0,
        "packets_sent": info.stats.packets_sent,
        "bytes_sent": info.stats.bytes_sent,
        "ssrc": info.ssrc,
    });
    println!("{summary}");
    Ok(())
}

struct DemoOptions {
    calls: usize,
    chats: usize,
    seconds: f64,
    json: bool,
}

fn parse_demo(args: &[String]) -> Result<DemoOptions, String> {
    let mut o = DemoOptions {
        calls: 6,
        chats: 3,
        seconds: 5.0,
        json: false,
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--calls" => o.calls = parse_num(flag_value(args, &mut i, flag)?, flag)?,
            "--chats" => o.chats = parse_num(flag_value(args, &mut i, flag)?, flag)?,
            "--seconds" => o.seconds = parse_num(flag_value(args, &mut i, flag)?, flag)?,
            "--json" => o.json = true,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    if o.calls == 0 || o.chats == 0 {
        return Err("--calls and --chats must be at least 1".to_owned());
    }
    Ok(o)
}

/// The tone a demo chat plays: distinct per chat (up to 150 chats), well inside Opus' band
/// and far enough apart for the SFU's ±5 Hz check.
fn chat_tone_hz(chat: usize) -> f32 {
    300.0 + 20.0 * (chat % 150) as f32
}

fn demo(o: &DemoOptions) -> Result<(), String> {
    let sfu = Server::start(ServerOptions {
        forward_audio: o.calls <= 50,
        ..ServerOptions::default()
    })
    .map_err(|e| format!("sfu-mock: {e}"))?;
    let engine = Engine::builder()
        .event_queue(o.calls * 8 + 1024)
        .build()
        .map_err(|e| format!("engine: {e}"))?;
    eprintln!(
        "sfu-mock on udp {} ; {} calls in {} chats for {} s",
        sfu.udp_addr(),
        o.calls,
        o.chats,
        o.seconds
    );
    // One shared tone per chat: each chat's frames are encoded once for all its calls.
    let mut tones = Vec::with_capacity(o.chats);
    for chat in 1..=o.chats {
        let tone = ToneSource::new(chat_tone_hz(chat), None).map_err(|e| e.to_string())?;
        tones.push(SharedSource::new(Box::new(tone)));
    }
    // Engine key = call number; SFU chat = call number mod chats.
    let mut plan = Vec::new();
    for i in 0..o.calls {
        let key = i as i64 + 1;
        let chat = (i % o.chats) as i64 + 1;
        let hz = chat_tone_hz(chat as usize);
        let join = engine.create_call(key).map_err(|e| e.to_string())?;
        let response = sfu
            .join(chat, join.as_bytes())
            .map_err(|e| format!("join: {e}"))?;
        engine.connect(key, &response).map_err(|e| e.to_string())?;
        let tone = tones[(chat - 1) as usize].clone();
        engine
            .set_stream_sources(key, StreamSource::Shared(tone))
            .map_err(|e| e.to_string())?;
        let ssrc = engine.audio_ssrc(key).map_err(|e| e.to_string())?;
        plan.push((key, chat, hz, ssrc));
    }
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(o.seconds);
    let mut next_progress = started + Duration::from_secs(1);
    while Instant::now() < end {
        while let Ok(e) = engine.events().try_recv() {
            if let EventKind::ConnectionChanged(CallState::Ended(r)) = e.kind {
                eprintln!("call {} ended: {r:?}", e.chat_id);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            print_live(&engine, started, o.calls <= 12);
        }
    }
    let calls = engine.calls().map_err(|e| e.to_string())?;
    // Give the SFU a moment to take in the last packets before reading its stats.
    std::thread::sleep(Duration::from_millis(200));
    let stats = sfu.stats().map_err(|e| e.to_string())?;
    let mut connected = 0;
    let mut verified = 0;
    let mut packets_sent = 0u64;
    let mut packets_verified = 0u64;
    let mut rows = Vec::new();
    for (key, chat, hz, ssrc) in &plan {
        let sent = calls
            .iter()
            .find(|c| c.chat_id == *key)
            .map_or(0, |c| c.stats.packets_sent);
        packets_sent += sent;
        let entry = stats["chats"][chat.to_string()]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|p| p["ssrc"].as_u64() == Some(u64::from(*ssrc)))
            })
            .cloned()
            .unwrap_or_default();
        let is_connected = entry["connected"].as_bool().unwrap_or(false);
        let received = entry["packets"].as_u64().unwrap_or(0);
        let dominant = entry["dominant_hz"].as_f64().map(|f| f as f32);
        let ok = is_connected
            && dominant.is_some_and(|d| (d - hz).abs() <= VERIFY_TOLERANCE_HZ)
            && sent > 0
            && received as f64 >= sent as f64 * VERIFY_MIN_DELIVERY;
        connected += usize::from(is_connected);
        if ok {
            verified += 1;
            packets_verified += received;
        }
        rows.push((
            *key,
            *chat,
            *hz,
            *ssrc,
            sent,
            received,
            entry["lost"].as_u64().unwrap_or(0),
            dominant,
            ok,
        ));
    }
    if !o.json || o.calls <= 12 {
        let mut out = std::io::stderr().lock();
        let _ = writeln!(
            out,
            "\n call  chat   tone Hz       ssrc    sent    recv  lost  dominant Hz  verified"
        );
        for (key, chat, hz, ssrc, sent, received, lost, dominant, ok) in &rows {
            let d = dominant.map_or_else(|| "-".to_owned(), |d| format!("{d:.1}"));
            let _ = writeln!(
                out,
                "{key:>5} {chat:>5} {hz:>9.1} {ssrc:>10} {sent:>7} {received:>7} {lost:>5} {d:>12}  {}",
                if *ok { "yes" } else { "NO" }
            );
        }
        let _ = writeln!(out, "\n{verified}/{} calls verified by the SFU", o.calls);
    }
    let estats = engine.stats().map_err(|e| e.to_string())?;
    let p99_ms = estats.lateness.percentile(0.99).as_secs_f64() * 1000.0;
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "calls": o.calls,
                "connected": connected,
                "verified": verified,
                "packets_sent": packets_sent,
                "packets_verified": packets_verified,
                "p99_lateness_ms": (p99_ms * 1000.0).round() / 1000.0,
            })
        );
    } else {
        eprintln!(
            "pacer lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} packets; {} shards, {} sockets",
            estats.lateness.percentile(0.5).as_secs_f64() * 1000.0,
            p99_ms,
            estats.lateness.max().as_secs_f64() * 1000.0,
            estats.lateness.count(),
            estats.shards,
            estats.sockets
        );
    }
    engine.shutdown();
    sfu.shutdown();
    if verified == o.calls {
        Ok(())
    } else {
        Err(format!("only {verified}/{} calls verified", o.calls))
    }
}

fn print_live(engine: &Engine, started: Instant, per_call: bool) {
    let calls = match engine.calls() {
        Ok(c) => c,
        Err(EngineError::QueueFull | EngineError::Timeout) => return,
        Err(e) => {
            eprintln!("stats: {e}");
            return;
        }
    };
    let connected = calls
        .iter()
        .filter(|c| c.state == CallState::Connected)
        .count();
    let packets: u64 = calls.iter().map(|c| c.stats.packets_sent).sum();
    let (p99, drops) = engine.stats().map_or((0.0, 0), |s| {
        (
            s.lateness.percentile(0.99).as_secs_f64() * 1000.0,
            s.dropped_unroutable + s.dropped_by_call + s.dropped_events + s.dropped_rx_queue_full,
        )
    });
    eprintln!(
        "[{:>4.1} s] {connected}/{} connected, {packets} packets sent, p99 lateness {p99:.2} ms, {drops} drops",
        started.elapsed().as_secs_f64(),
        calls.len()
    );
    if per_call {
        for c in &calls {
            eprintln!(
                "    call {:>3}  {:<10}  packets {:>5}  bytes {:>7}",
                c.chat_id,
                format!("{:?}", c.state),
                c.stats.packets_sent,
                c.stats.bytes_sent
            );
        }
    }
}
