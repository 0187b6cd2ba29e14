//! `--hold N`: what a call costs in memory when it is held, not streaming. N calls connect (in
//! waves, joins sent concurrently) to `--hold-sfus` sfu-mock processes with their tone
//! attached but paused, so the engine holds N live transports (ICE keepalives, DTLS/SRTP state,
//! RTCP) without 50 packets/s each; then RSS, live heap and open descriptors are compared with
//! the values before the first call was created.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringcast::{CallState, EndReason, Engine, EventKind, StreamSource};
use serde_json::{Value, json};

use crate::LIVE_BYTES;
use crate::args::Args;
use crate::host::{rss_kb, sfu_cpus};
use crate::ramp::ms;
use crate::sfu::Sfu;
use crate::system::{CHATS, chat_tones};

/// Calls created, joined and connected together: the engine's connect timeout (10 s) must cover
/// a wave's handshakes on the SFU's one thread.
const WAVE: usize = 1_000;
/// How long the calls are held before the memory is read: past the handshakes' retransmission
/// timers and the first RTCP and ICE consent intervals, so what is measured is what a held call
/// keeps.
const SETTLE: Duration = Duration::from_secs(10);
/// Longest wait for one wave to connect.
const WAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// One wave's calls on one SFU: `(chat, join payload)` and the call keys, in the same order.
#[derive(Debug, Default)]
struct SfuWave {
    joins: Vec<(usize, String)>,
    keys: Vec<i64>,
}

/// Memory and descriptors of this process at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kb: u64,
    heap_bytes: u64,
    fds: u64,
}

impl Usage {
    fn now() -> Self {
        Self {
            rss_kb: rss_kb(),
            heap_bytes: LIVE_BYTES.load(Ordering::Relaxed),
            fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        }
    }
}

/// Open-file limits (soft, hard) of this process, from /proc/self/limits.
fn nofile_limits() -> Option<(String, String)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.split_whitespace().skip(3);
    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
}

/// Connects `n` paused calls and reports what they hold.
pub(crate) fn hold(n: usize, args: &Args) -> Result<Value, String> {
    let sfus = (0..args.hold_sfus)
        .map(|_| Sfu::start(sfu_cpus(args)))
        .collect::<Result<Vec<_>, _>>()?;
    // No certificate pool: each call's certificate is made when it is created, so it counts
    // in the memory per call rather than in the baseline.
    let engine = Engine::builder()
        .shards(args.shards)
        .send_path(args.send_path)
        .cert_pool(0)
        .event_queue(WAVE * 4 + 64)
        .command_queue(WAVE + 64)
        .build()
        .map_err(|e| e.to_string())?;
    let tones = chat_tones()?;
    let limits = nofile_limits();
    eprintln!(
        "[hold] {n} calls to {} sfu-mock processes, open-file limit {limits:?}",
        sfus.len()
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = Usage::now();
    let t0 = Instant::now();
    let mut waves = Vec::new();
    let mut connected = 0;
    for start in (0..n).step_by(WAVE) {
        let keys: Vec<i64> = (start..(start + WAVE).min(n)).map(|k| k as i64).collect();
        let w0 = Instant::now();
        let mut per_sfu: Vec<SfuWave> = (0..sfus.len()).map(|_| SfuWave::default()).collect();
        for &key in &keys {
            let join = engine
                .create_call(key)
                .map_err(|e| format!("create {key}: {e}"))?;
            // Paused before it connects: the call never sends a frame, but holds its source.
            engine.pause(key).map_err(|e| format!("pause {key}: {e}"))?;
            let chat = key as usize % CHATS;
            let tone = tones.get(chat).ok_or("no tone")?.clone();
            engine
                .set_stream_sources(key, StreamSource::Shared(tone))
                .map_err(|e| format!("source {key}: {e}"))?;
            let wave = per_sfu.get_mut(key as usize % sfus.len()).ok_or("no sfu")?;
            wave.joins.push((chat, join));
            wave.keys.push(key);
        }
        let created = w0.elapsed();
        let mut answers = Vec::with_capacity(keys.len());
        for (sfu, wave) in sfus.iter().zip(&per_sfu) {
            answers.extend(wave.keys.iter().copied().zip(sfu.join_all(&wave.joins)?));
        }
        let answered = w0.elapsed();
        for (key, answer) in &answers {
            engine
                .connect(*key, answer)
                .map_err(|e| format!("connect {key}: {e}"))?;
        }
        crate::engine::wait_connected(&engine, keys.len(), WAVE_TIMEOUT)
            .map_err(|e| format!("hold: wave after {connected} connected: {e}"))?;
        connected += keys.len();
        let done = w0.elapsed();
        eprintln!(
            "[hold] {connected} connected: wave of {} created in {:.0} ms, joined {:.0} ms, \
             connected {:.0} ms ({:.0} ms in all)",
            keys.len(),
            ms(created),
            ms(answered - created),
            ms(done - answered),
            ms(done),
        );
        waves.push(json!({
            "calls": keys.len(), "create_ms": ms(created),
            "sfu_answers_ms": ms(answered - created), "connect_ms": ms(done - answered),
            "wall_ms": ms(done),
        }));
    }
    let connect_wall = t0.elapsed();
    let sent_before = engine.stats().map_or(0, |s| s.packets_sent);
    std::thread::sleep(SETTLE);
    let mut ended = Vec::new();
    while let Ok(e) = engine.events().try_recv() {
        if let EventKind::ConnectionChanged(CallState::Ended(r)) = e.kind
            && r != EndReason::Stopped
        {
            ended.push(json!({"chat": e.chat_id, "reason": format!("{r:?}")}));
        }
    }
    let after = Usage::now();
    let media_sent = engine.stats().map_or(0, |s| s.packets_sent) - sent_before;
    let mut sfu_packets = 0;
    for sfu in &sfus {
        sfu_packets += sfu.totals()?.0;
    }
    let per_call = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / n as f64;
    let rss_kb_per_call = per_call(after.rss_kb, before.rss_kb);
    let heap_kb_per_call = per_call(after.heap_bytes, before.heap_bytes) / 1024.0;
    let fds_per_call = per_call(after.fds, before.fds);
    eprintln!(
        "[hold] {n} calls held {SETTLE:?}: RSS {:.1} KB per call ({} -> {} KB), live heap \
         {heap_kb_per_call:.1} KB per call ({} -> {} KB), {fds_per_call:.2} fds per call ({} -> \
         {}); connected in {:.0} ms; {media_sent} packets sent while held, {sfu_packets} RTP \
         packets counted by the SFUs, {} calls ended on their own",
        rss_kb_per_call,
        before.rss_kb,
        after.rss_kb,
        before.heap_bytes / 1024,
        after.heap_bytes / 1024,
        before.fds,
        after.fds,
        ms(connect_wall),
        ended.len(),
    );
    Ok(json!({
        "hold": {
            "calls": n,
            "connected": connected,
            "sfus": sfus.len(),
            "shards": args.shards,
            "connect_ms": ms(connect_wall),
            "waves": waves,
            "settle_s": SETTLE.as_secs_f64(),
            "rss_kb_before": before.rss_kb, "rss_kb_after": after.rss_kb,
            "rss_kb_per_call": rss_kb_per_call,
            "heap_kb_before": before.heap_bytes / 1024, "heap_kb_after": after.heap_bytes / 1024,
            "heap_kb_per_call": heap_kb_per_call,
            "fds_before": before.fds, "fds_after": after.fds, "fds_per_call": fds_per_call,
            "nofile_limit": limits.map(|(soft, hard)| json!({"soft": soft, "hard": hard})),
            "packets_sent_while_held": media_sent,
            "rtp_packets_counted_by_sfus": sfu_packets,
            "ended_on_their_own": ended,
        }
    }))
}
