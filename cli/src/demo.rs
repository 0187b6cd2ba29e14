//! `ringcast demo`: starts an embedded sfu-mock, streams a tone per chat into it from N calls,
//! shows live stats and what the SFU verified (packets, loss, dominant frequency).

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use ringcast::{CallState, Engine, EngineError, EventKind, SharedSource, StreamSource};
use ringcast_core::media::ToneSource;
use sfu_mock::server::{Server, ServerOptions};

use crate::{at_least_one, seconds};

/// Dominant frequency must be within this of the tone sent for the SFU to count a call verified.
const VERIFY_TOLERANCE_HZ: f32 = 5.0;
/// Share of sent packets the SFU must have received for a call to count as verified.
const VERIFY_MIN_DELIVERY: f64 = 0.95;

/// `ringcast demo` arguments.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Calls to run (above 50 the SFU stops forwarding audio back).
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = at_least_one())]
    calls: usize,
    /// Chats the calls are spread over, one tone each.
    #[arg(long, value_name = "M", default_value_t = 3, value_parser = at_least_one())]
    chats: usize,
    /// How long to stream.
    #[arg(long, value_name = "S", default_value_t = 5.0, value_parser = seconds, allow_negative_numbers = true)]
    seconds: f64,
    /// Print a JSON summary as the last stdout line (the table only for up to 12 calls).
    #[arg(long)]
    json: bool,
}

/// The tone a demo chat plays: distinct per chat (up to 150 chats), well inside Opus' band
/// and far enough apart for the SFU's ±5 Hz check.
fn chat_tone_hz(chat: usize) -> f32 {
    300.0 + 20.0 * (chat % 150) as f32
}

/// Runs `ringcast demo`.
pub(crate) fn demo(o: &DemoArgs) -> Result<(), String> {
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
