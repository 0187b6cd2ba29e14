//! `--play-bench`: N calls playing the same mp3 on demand, decoded once and shared through the
//! engine's track cache, against the incumbents' design (gotgcall, ntgcalls' `SHELL` source):
//! one ffmpeg and one Opus encoder per call. Issue 13.
//!
//! The baseline runs through the same code: an engine built with
//! `MediaCacheConfig { max_bytes: 0, .. }` finds the cache full on every play and decodes
//! outside it ([`MediaStats::cache_bypassed`](ringcast::MediaStats)), so every call gets its
//! own ffprobe, ffmpeg process, decode thread and libopus encoder. Only the sharing differs.
//!
//! For each N of `--play-calls` and each design, in one run: a fresh sfu-mock (`--header-only`)
//! and a fresh engine; N calls connect, then start the file (from `--play-threads` threads at
//! once, as a bot starting N chats would); after a warm-up of [`WARMUP`] (each decode first
//! runs up to 10 s ahead of its furthest call as fast as it can, then at real time),
//! `--play-seconds` are measured: CPU time of this process and of its ffmpeg/ffprobe
//! children (live children's utime+stime plus this process's cutime+cstime, so a child that
//! exits inside the window still counts), RSS and PSS of this process plus its children,
//! packets the engine sent and the SFU counted and lost, underruns, and what the media hub
//! spawned. CPU per call is µs of CPU per second per call; memory per call is the growth of
//! this process's RSS since the engine was built plus the children's RSS, over N.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringcast::{CallState, Engine, EventKind, MediaCacheConfig, MediaSource};
use serde_json::{Value, json};

use crate::args::Args;
use crate::host::{cpu_ns, rss_kb, sfu_cpus};
use crate::ntgcalls_peer::proc_sample;
use crate::ramp::ms;
use crate::sfu::Sfu;
use crate::system::CHATS;

/// Between the last call starting its track and the measured window: the decodes' initial
/// run-ahead (up to 10 s of frames each, as fast as the CPU allows) is mostly behind.
const WARMUP: Duration = Duration::from_secs(5);
/// Longest wait for the calls of one phase to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Length of the generated test track: longer than any phase, so no decode ends inside one.
const TRACK_SECONDS: u32 = 600;
/// Packets a call sends per second (20 ms frames).
const PACKETS_PER_SECOND: f64 = 50.0;

/// The two designs compared.
#[derive(Debug, Clone, Copy)]
enum Design {
    /// One decode for every call, frames shared through the cache (ringcast's default).
    Shared,
    /// One ffmpeg and one encoder per call (`max_bytes: 0`).
    PerCall,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared_cache",
            Self::PerCall => "per_call_ffmpeg",
        }
    }

    fn cache(self) -> MediaCacheConfig {
        match self {
            Self::Shared => MediaCacheConfig::default(),
            Self::PerCall => MediaCacheConfig {
                max_bytes: 0,
                ..MediaCacheConfig::default()
            },
        }
    }
}

/// CPU and memory of this process and its decoder children at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// This process, user + system.
    pub(crate) self_cpu_ns: u64,
    /// Reaped children (cutime + cstime) plus live ffmpeg/ffprobe children (utime + stime).
    pub(crate) children_cpu_ns: u64,
    pub(crate) self_rss_kb: u64,
    pub(crate) children_rss_kb: u64,
    pub(crate) self_pss_kb: u64,
    pub(crate) children_pss_kb: u64,
    /// Live ffmpeg/ffprobe children.
    pub(crate) children: u64,
}

/// cutime + cstime (fields 16 and 17 of stat(5)) of a `/proc/<pid>/stat` text, in ticks.
fn stat_children_ticks(stat: &str) -> u64 {
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    [13, 14]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum()
}

/// Pss of a process from `/proc/<pid>/smaps_rollup`, in KB (0 if unreadable).
fn pss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Pids of this process's live children named ffmpeg or ffprobe (the decoders; not sfu-mock).
pub(crate) fn decoder_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let comm = stat
                .split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map_or("", |(c, _)| c);
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1));
            ppid == Some(me.as_str()) && (comm == "ffmpeg" || comm == "ffprobe")
        })
        .collect()
}

impl Usage {
    /// Reads it now; `memory` also reads PSS (slower: one smaps_rollup per process).
    pub(crate) fn now(memory: bool) -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // USER_HZ is 100 on Linux.
        let reaped_ns = stat_children_ticks(&stat) * 10_000_000;
        let mut u = Self {
            self_cpu_ns: cpu_ns(),
            children_cpu_ns: reaped_ns,
            self_rss_kb: rss_kb(),
            self_pss_kb: if memory { pss_kb("self") } else { 0 },
            ..Self::default()
        };
        for pid in decoder_children() {
            // A child that exited since the listing counts once reaped (cutime).
            if let Ok(s) = proc_sample(pid) {
                u.children_cpu_ns += s.cpu_ns;
                u.children_rss_kb += s.rss_kb;
                u.children += 1;
                if memory {
                    u.children_pss_kb += pss_kb(&pid.to_string());
                }
            }
        }
        u
    }
}

/// The test track: `--play-file`, or a sine made with ffmpeg (440 Hz, 44.1 kHz stereo mp3 at
/// 128 kbit/s, [`TRACK_SECONDS`] long) in the system's temp directory.
fn test_track(args: &Args) -> Result<(PathBuf, bool), String> {
    if let Some(path) = &args.play_file {
        if !path.is_file() {
            return Err(format!("--play-file {}: no such file", path.display()));
        }
        return Ok((path.clone(), false));
    }
    let path = std::env::temp_dir().join(format!("ringcast-playbench-{}.mp3", std::process::id()));
    let input = format!("sine=frequency=440:duration={TRACK_SECONDS}:sample_rate=44100");
    let t0 = Instant::now();
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &input,
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
        ])
        .args(["-b:a", "128k"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("ffmpeg (to make the test mp3): {e}"))?;
    if !status.success() {
        return Err(format!(
            "ffmpeg could not make {}: {status}",
            path.display()
        ));
    }
    eprintln!(
        "[play] made {} ({TRACK_SECONDS} s of 440 Hz) in {:.1} s",
        path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok((path, true))
}

/// Removes the generated track when the run ends (also on error).
pub(crate) struct TrackGuard(pub(crate) Option<PathBuf>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Connects `n` idle calls to `sfu`; returns the number connected.
fn connect_calls(engine: &Engine, sfu: &Sfu, n: usize) -> Result<usize, String> {
    let mut joins = Vec::with_capacity(n);
    for key in 0..n as i64 {
        let join = engine
            .create_call(key)
            .map_err(|e| format!("create {key}: {e}"))?;
        joins.push((key as usize % CHATS, join));
    }
    let answers = sfu.join_all(&joins)?;
    for (key, answer) in answers.iter().enumerate() {
        engine
            .connect(key as i64, answer)
            .map_err(|e| format!("connect {key}: {e}"))?;
    }
    crate::engine::wait_connected(engine, n, CONNECT_TIMEOUT)?;
    Ok(n)
}

/// Starts `track` on calls 0..n from `threads` threads; returns (started, first error).
fn start_playing(
    engine: &Engine,
    track: &Path,
    n: usize,
    threads: usize,
) -> (usize, Option<String>) {
    let next = AtomicUsize::new(0);
    let started = AtomicUsize::new(0);
    let t0 = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, n.max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut error = None;
                    loop {
                        let key = next.fetch_add(1, Ordering::Relaxed);
                        if key >= n {
                            break;
                        }
                        match engine.set_stream_sources(key as i64, MediaSource::file(track)) {
                            Ok(()) => {
                                let done = started.fetch_add(1, Ordering::Relaxed) + 1;
                                if done.is_multiple_of(100) || done == n {
                                    eprintln!(
                                        "[play]   {done}/{n} playing ({:.1} s)",
                                        t0.elapsed().as_secs_f64()
                                    );
                                }
                            }
                            Err(e) => {
                                error.get_or_insert_with(|| format!("call {key}: {e}"));
                            }
                        }
                    }
                    error
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| {
                w.join()
                    .unwrap_or_else(|_| Some("a start thread panicked".into()))
            })
            .collect()
    });
    (started.load(Ordering::Relaxed), errors.into_iter().next())
}

/// One design at one N.
fn phase(design: Design, n: usize, track: &Path, args: &Args) -> Result<Value, String> {
    let label = format!("[play {} x{n}]", design.name());
    let sfu = Sfu::start(sfu_cpus(args))?;
    let engine = Engine::builder()
        .shards(args.shards)
        .send_path(args.send_path)
        .event_queue(1 << 16)
        .command_queue(2 * n + 64)
        .media_cache(design.cache())
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let base = Usage::now(true);
    let t0 = Instant::now();
    let connected = connect_calls(&engine, &sfu, n)?;
    eprintln!(
        "{label} {connected} calls connected in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    let (playing, start_error) = start_playing(&engine, track, n, args.play_threads);
    let start_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "{label} {playing}/{n} playing in {start_s:.1} s{}; warm-up {WARMUP:?}",
        start_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first error: {e})"))
    );
    std::thread::sleep(WARMUP);
    // Calls that ended and tracks that ended since the calls connected, by reason.
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    let mut drain = |engine: &Engine| {
        while let Ok(e) = engine.events().try_recv() {
            let what = match e.kind {
                EventKind::StreamEnded { error, .. } => format!(
                    "track ended: {}",
                    error.map_or_else(|| "end of input".to_owned(), |e| e.to_string())
                ),
                EventKind::ConnectionChanged(CallState::Ended(r)) => format!("call ended: {r:?}"),
                _ => continue,
            };
            // Reasons may name a process or a time: keep the kinds countable.
            let what: String = what.chars().take(80).collect();
            *ended.entry(what).or_default() += 1;
        }
    };
    drain(&engine);
    let u0 = Usage::now(false);
    let w0 = Instant::now();
    let stats0 = engine.stats().map_err(|e| e.to_string())?;
    let media0 = engine.media_stats();
    let (sfu0, lost0) = sfu.totals()?;
    let window = Duration::from_secs_f64(args.play_seconds);
    let mut last = (u0, w0);
    while w0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(w0.elapsed())));
        drain(&engine);
        let u = Usage::now(false);
        let dt = last.1.elapsed().as_secs_f64().max(1e-3);
        let m = engine.media_stats();
        eprintln!(
            "{label} t={:>4.1}s  cpu {:>5.1}% engine + {:>5.1}% ffmpeg (of one core), {} decoders \
             running, underruns {}",
            w0.elapsed().as_secs_f64(),
            (u.self_cpu_ns - last.0.self_cpu_ns) as f64 / dt / 1e7,
            u.children_cpu_ns.saturating_sub(last.0.children_cpu_ns) as f64 / dt / 1e7,
            m.processes_running,
            m.underruns - media0.underruns,
        );
        last = (u, Instant::now());
    }
    let u1 = Usage::now(false);
    let wall = w0.elapsed().as_secs_f64();
    let stats1 = engine.stats().map_err(|e| e.to_string())?;
    let media1 = engine.media_stats();
    // Read in the same order as at the start, so both ends of the window match (on loopback
    // a packet lands within microseconds).
    let (sfu1, lost1) = sfu.totals()?;
    let mem = Usage::now(true);
    drain(&engine);
    let self_cpu = u1.self_cpu_ns - u0.self_cpu_ns;
    let children_cpu = u1.children_cpu_ns.saturating_sub(u0.children_cpu_ns);
    let per_call_us = |ns: u64| ns as f64 / 1e3 / wall / n as f64;
    let cpu_us = per_call_us(self_cpu + children_cpu);
    let rss_growth = mem.self_rss_kb.saturating_sub(base.self_rss_kb) + mem.children_rss_kb;
    let pss_growth = mem.self_pss_kb.saturating_sub(base.self_pss_kb) + mem.children_pss_kb;
    let sent = stats1.packets_sent - stats0.packets_sent;
    let expected = (n as f64 * PACKETS_PER_SECOND * wall).round() as u64;
    let counted = sfu1.saturating_sub(sfu0);
    let lost = lost1.saturating_sub(lost0);
    let lateness = stats1.lateness.since(&stats0.lateness);
    let underruns = media1.underruns - media0.underruns;
    eprintln!(
        "{label} {cpu_us:.0} µs CPU per second per call ({:.2} % of a core: engine {:.0} + \
         ffmpeg {:.0} µs/s), memory {:.0} KB RSS / {:.0} KB PSS per call; SFU counted {counted} \
         of {expected} expected packets, lost {lost}; underruns {underruns}; {} ffmpeg spawned, \
         {} encoders; ended: {ended:?}",
        cpu_us / 1e4,
        per_call_us(self_cpu),
        per_call_us(children_cpu),
        rss_growth as f64 / n as f64,
        pss_growth as f64 / n as f64,
        media1.processes_spawned,
        media1.encoders_created,
    );
    let report = json!({
        "design": design.name(),
        "calls": n,
        "connected": connected,
        "playing": playing,
        "start_error": start_error,
        "start_s": start_s,
        "window_s": wall,
        "cpu": {
            "us_per_s_per_call": cpu_us,
            "pct_core_per_call": cpu_us / 1e4,
            "engine_us_per_s_per_call": per_call_us(self_cpu),
            "ffmpeg_us_per_s_per_call": per_call_us(children_cpu),
            "total_cores": (self_cpu + children_cpu) as f64 / 1e9 / wall,
        },
        "memory": {
            "rss_kb_per_call": rss_growth as f64 / n as f64,
            "pss_kb_per_call": pss_growth as f64 / n as f64,
            "engine_rss_kb_before": base.self_rss_kb,
            "engine_rss_kb": mem.self_rss_kb,
            "children_rss_kb": mem.children_rss_kb,
            "engine_pss_kb_before": base.self_pss_kb,
            "engine_pss_kb": mem.self_pss_kb,
            "children_pss_kb": mem.children_pss_kb,
            "ffmpeg_children": mem.children,
        },
        "packets": {
            "sent": sent,
            "expected": expected,
            "counted_by_sfu": counted,
            "lost": lost,
            "delivered_ratio": counted as f64 / expected.max(1) as f64,
        },
        "p99_lateness_ms": ms(lateness.percentile(0.99)),
        "underruns": underruns,
        "ended": ended,
        "media": {
            "processes_spawned": media1.processes_spawned,
            "processes_running": media1.processes_running,
            "probes": media1.probes,
            "encoders_created": media1.encoders_created,
            "cache_hits": media1.cache_hits,
            "cache_misses": media1.cache_misses,
            "cache_bypassed": media1.cache_bypassed,
            "cache_bytes": media1.cache_bytes,
            "decode_errors": media1.decode_errors,
        },
    });
    drop(engine);
    wait_decoders_gone();
    drop(sfu);
    Ok(report)
}

/// `b / a` of two JSON numbers (null unless both are numbers and `a` is positive): how many
/// times the per-call design's figure the shared design's is.
pub(crate) fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if a > 0.0 => json!(b / a),
        _ => Value::Null,
    }
}

/// The decoders and encoders die with their engine; waits (at most 10 s) for them to be gone
/// so the next phase starts clean.
pub(crate) fn wait_decoders_gone() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !decoder_children().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The whole benchmark: every N of `--play-calls`, both designs, and their ratios.
pub(crate) fn play_bench(args: &Args) -> Result<Value, String> {
    let (track, generated) = test_track(args)?;
    let _guard = TrackGuard(generated.then(|| track.clone()));
    let mut runs = Vec::new();
    for &n in &args.play_calls {
        eprintln!(
            "[play] {n} calls, {} s measured, both designs ({} shards, sfu-mock on {:?})",
            args.play_seconds,
            args.shards,
            sfu_cpus(args)
        );
        let shared = phase(Design::Shared, n, &track, args)?;
        let per_call = phase(Design::PerCall, n, &track, args)?;
        let cpu_ratio = ratio(
            &shared["cpu"]["us_per_s_per_call"],
            &per_call["cpu"]["us_per_s_per_call"],
        );
        let rss_ratio = ratio(
            &shared["memory"]["rss_kb_per_call"],
            &per_call["memory"]["rss_kb_per_call"],
        );
        let pss_ratio = ratio(
            &shared["memory"]["pss_kb_per_call"],
            &per_call["memory"]["pss_kb_per_call"],
        );
        eprintln!(
            "[play] {n} calls: per-call ffmpeg / shared cache = {cpu_ratio} x CPU, {rss_ratio} x \
             RSS, {pss_ratio} x PSS per call"
        );
        runs.push(json!({
            "calls": n,
            "shared_cache": shared,
            "per_call_ffmpeg": per_call,
            "ratio_per_call_over_shared": {
                "cpu": cpu_ratio, "rss": rss_ratio, "pss": pss_ratio,
            },
        }));
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    Ok(json!({
        "play_bench": {
            "track": track.display().to_string(),
            "generated_track": generated,
            "seconds": args.play_seconds,
            "warmup_s": WARMUP.as_secs_f64(),
            "shards": args.shards,
            "pinned": args.pin,
            "sfu_cpus": sfu_cpus(args),
            "cores": args.cores,
            "loadavg_at_end": loadavg.trim(),
            "runs": runs,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntgcalls_peer::stat_cpu_ticks;

    #[test]
    fn children_ticks_are_cutime_plus_cstime() {
        // pid (comm with ) space) state ppid ... utime=14 stime=15 cutime=16 cstime=17
        let stat = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16";
        assert_eq!(stat_cpu_ticks(stat), 11 + 12);
        assert_eq!(stat_children_ticks(stat), 13 + 14);
    }
}
