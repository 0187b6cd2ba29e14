//! `--video-bench`: N calls showing the same 1280x720, 30 fps video, encoded once by one
//! shared ffmpeg, against the incumbents' design (ntgcalls, gotgcall): an encoder per call.
//! Issue 14.
//!
//! The baseline runs through the same code: each call asks for its own encoding parameters
//! (the default 1,500 kbit/s plus the call's index in kbit/s), so the engine's video hub,
//! which shares an encoder between calls with equal source and parameters, starts one ffmpeg
//! per call. Only the sharing differs.
//!
//! For each N of `--video-calls` and each design, in one run: a fresh sfu-mock
//! (`--header-only`, counting each participant's video packets from their clear-text
//! headers) and a fresh engine; N calls with a VP8 camera track connect, then start the video;
//! after [`WARMUP`], `--video-seconds` are measured: CPU of this process and its ffmpeg
//! children, RSS/PSS, and the video packets the SFU counted. CPU per call is µs of CPU per
//! second per call; CPU per call-frame divides the CPU by the frames the calls got (a shared
//! encoder's frame reaches every call), which stays comparable when per-call encoders cannot
//! keep up at 30 fps on the machine (the report says whether they did).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringcast::{CallOptions, Engine, MediaSource, VideoCodec, VideoParams};
use serde_json::{Value, json};

use crate::args::Args;
use crate::host::sfu_cpus;
use crate::play::{TrackGuard, Usage, ratio, wait_decoders_gone};
use crate::sfu::Sfu;
use crate::system::CHATS;

/// Between the last call starting its video and the measured window.
const WARMUP: Duration = Duration::from_secs(3);
/// Longest wait for the calls of one phase to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Length of the generated test video (looped anyway).
const VIDEO_SECONDS: u32 = 30;

/// The two designs compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Design {
    /// One encoder for every call.
    Shared,
    /// One encoder per call.
    PerCall,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared_encoder",
            Self::PerCall => "encoder_per_call",
        }
    }

    /// Call `key`'s encoding parameters.
    fn params(self, key: usize) -> VideoParams {
        let base = VideoParams::default();
        match self {
            Self::Shared => base,
            Self::PerCall => VideoParams {
                bitrate_kbps: base.bitrate_kbps + key as u32,
                ..base
            },
        }
    }
}

/// A 720p30 testsrc2 clip made with ffmpeg (H.264, so every phase decodes it too).
fn test_video() -> Result<PathBuf, String> {
    let path = std::env::temp_dir().join(format!("ringcast-videobench-{}.mp4", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size=1280x720:rate=30:duration={VIDEO_SECONDS}"
        ))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "30"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("ffmpeg (to make the test video): {e}"))?;
    if !status.success() {
        return Err(format!(
            "ffmpeg could not make {}: {status}",
            path.display()
        ));
    }
    Ok(path)
}

/// Video packets the SFU counted, summed over participants.
fn video_packets(sfu: &Sfu) -> Result<u64, String> {
    let v = sfu.stats_json()?;
    let mut packets = 0;
    if let Some(chats) = v["chats"].as_object() {
        for list in chats.values() {
            for p in list.as_array().into_iter().flatten() {
                packets += p["video"]["packets"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(packets)
}

/// One design at one N.
fn phase(design: Design, n: usize, video: &std::path::Path, args: &Args) -> Result<Value, String> {
    let label = format!("[video {} x{n}]", design.name());
    let sfu = Sfu::start(sfu_cpus(args))?;
    let engine = Engine::builder()
        .shards(args.shards)
        .send_path(args.send_path)
        .event_queue(1 << 16)
        .command_queue(2 * n + 64)
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let base = Usage::now(true);
    let mut joins = Vec::with_capacity(n);
    for key in 0..n as i64 {
        let join = engine
            .create_call_with(key, CallOptions::new().video(VideoCodec::Vp8))
            .map_err(|e| format!("create {key}: {e}"))?;
        joins.push((key as usize % CHATS, join));
    }
    let answers = sfu.join_all(&joins)?;
    for (key, answer) in answers.iter().enumerate() {
        engine
            .connect(key as i64, answer)
            .map_err(|e| format!("connect {key}: {e}"))?;
    }
    crate::engine::wait_connected(&engine, n, CONNECT_TIMEOUT)?;
    let t1 = Instant::now();
    let mut start_error = None;
    let mut showing = 0;
    for key in 0..n {
        match engine.set_video_source(
            key as i64,
            MediaSource::file(video).looped(true).live(),
            design.params(key),
        ) {
            Ok(()) => showing += 1,
            Err(e) => {
                start_error.get_or_insert_with(|| format!("call {key}: {e}"));
            }
        }
    }
    eprintln!(
        "{label} {showing}/{n} showing in {:.1} s; warm-up {WARMUP:?}",
        t1.elapsed().as_secs_f64()
    );
    std::thread::sleep(WARMUP);
    let u0 = Usage::now(false);
    let w0 = Instant::now();
    let video0 = engine.video_stats();
    let sfu0 = video_packets(&sfu)?;
    let window = Duration::from_secs_f64(args.video_seconds);
    let mut last = (u0, w0);
    while w0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(w0.elapsed())));
        let u = Usage::now(false);
        let dt = last.1.elapsed().as_secs_f64().max(1e-3);
        let s = engine.video_stats();
        eprintln!(
            "{label} t={:>4.1}s  cpu {:>5.1}% engine + {:>5.1}% ffmpeg (of one core), {} encoders \
             running, underruns {}",
            w0.elapsed().as_secs_f64(),
            (u.self_cpu_ns - last.0.self_cpu_ns) as f64 / dt / 1e7,
            u.children_cpu_ns.saturating_sub(last.0.children_cpu_ns) as f64 / dt / 1e7,
            s.encoders_running,
            s.underruns - video0.underruns,
        );
        last = (u, Instant::now());
    }
    let u1 = Usage::now(false);
    let wall = w0.elapsed().as_secs_f64();
    let video1 = engine.video_stats();
    let sfu1 = video_packets(&sfu)?;
    let mem = Usage::now(true);
    let self_cpu = u1.self_cpu_ns - u0.self_cpu_ns;
    let children_cpu = u1.children_cpu_ns.saturating_sub(u0.children_cpu_ns);
    let per_call_us = |ns: u64| ns as f64 / 1e3 / wall / n as f64;
    let cpu_us = per_call_us(self_cpu + children_cpu);
    let rss_growth = mem.self_rss_kb.saturating_sub(base.self_rss_kb) + mem.children_rss_kb;
    let pss_growth = mem.self_pss_kb.saturating_sub(base.self_pss_kb) + mem.children_pss_kb;
    let frames = video1.frames_encoded - video0.frames_encoded;
    let counted = sfu1.saturating_sub(sfu0);
    // Frames the calls got: a shared encoder's frame reaches every call, a per-call
    // encoder's only its own. CPU per call-frame compares designs that did not both keep up.
    let encoders = video1.encoders_running.max(1) as f64;
    let call_frames = frames as f64 * n as f64 / encoders;
    let cpu_us_per_call_frame = (self_cpu + children_cpu) as f64 / 1e3 / call_frames.max(1.0);
    // What the encoders should have made in the window at 30 fps: fewer means they could not
    // keep up (the design does not hold N calls on this machine).
    let expected_frames = (30.0 * wall * video1.encoders_running.max(1) as f64).round() as u64;
    eprintln!(
        "{label} {cpu_us:.0} µs CPU per second per call ({:.2} % of a core: engine {:.0} + \
         ffmpeg {:.0} µs/s), {:.0} KB RSS / {:.0} KB PSS per call; {} encoders made {frames} \
         frames of {expected_frames} due; SFU counted {counted} video packets",
        cpu_us / 1e4,
        per_call_us(self_cpu),
        per_call_us(children_cpu),
        rss_growth as f64 / n as f64,
        pss_growth as f64 / n as f64,
        video1.encoders_running,
    );
    let report = json!({
        "design": design.name(),
        "calls": n,
        "showing": showing,
        "start_error": start_error,
        "window_s": wall,
        "cpu": {
            "us_per_s_per_call": cpu_us,
            "pct_core_per_call": cpu_us / 1e4,
            "engine_us_per_s_per_call": per_call_us(self_cpu),
            "ffmpeg_us_per_s_per_call": per_call_us(children_cpu),
            "total_cores": (self_cpu + children_cpu) as f64 / 1e9 / wall,
            "us_per_call_frame": cpu_us_per_call_frame,
        },
        "memory": {
            "rss_kb_per_call": rss_growth as f64 / n as f64,
            "pss_kb_per_call": pss_growth as f64 / n as f64,
            "ffmpeg_children": mem.children,
        },
        "video": {
            "encoders_started": video1.encoders_started,
            "encoders_running": video1.encoders_running,
            "frames_encoded": frames,
            "frames_due": expected_frames,
            "encoders_kept_up": frames * 100 >= expected_frames * 95,
            "underruns": video1.underruns - video0.underruns,
            "sfu_video_packets": counted,
            "sfu_video_packets_per_call_per_s": counted as f64 / wall / n as f64,
        },
    });
    drop(engine);
    wait_decoders_gone();
    drop(sfu);
    Ok(report)
}

/// The whole benchmark: every N of `--video-calls`, both designs, and their ratios.
pub(crate) fn video_bench(args: &Args) -> Result<Value, String> {
    let video = test_video()?;
    let _guard = TrackGuard(Some(video.clone()));
    let mut runs = Vec::new();
    for &n in &args.video_calls {
        eprintln!(
            "[video] {n} calls, {} s measured, both designs ({} shards, sfu-mock on {:?})",
            args.video_seconds,
            args.shards,
            sfu_cpus(args)
        );
        let shared = phase(Design::Shared, n, &video, args)?;
        let per_call = phase(Design::PerCall, n, &video, args)?;
        let cpu_ratio = ratio(
            &shared["cpu"]["us_per_s_per_call"],
            &per_call["cpu"]["us_per_s_per_call"],
        );
        let pss_ratio = ratio(
            &shared["memory"]["pss_kb_per_call"],
            &per_call["memory"]["pss_kb_per_call"],
        );
        let frame_ratio = ratio(
            &shared["cpu"]["us_per_call_frame"],
            &per_call["cpu"]["us_per_call_frame"],
        );
        eprintln!(
            "[video] {n} calls: encoder per call / shared = {cpu_ratio} x CPU per call, \
             {frame_ratio} x CPU per frame delivered, {pss_ratio} x PSS per call (per-call \
             encoders kept up: {})",
            per_call["video"]["encoders_kept_up"]
        );
        runs.push(json!({
            "calls": n,
            "shared_encoder": shared,
            "encoder_per_call": per_call,
            "ratio_per_call_over_shared": {
                "cpu": cpu_ratio, "cpu_per_call_frame": frame_ratio, "pss": pss_ratio,
            },
        }));
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    Ok(json!({
        "video_bench": {
            "video": "testsrc2 1280x720 30 fps, VP8 at 1500 kbit/s (libvpx realtime, cpu-used 8)",
            "seconds": args.video_seconds,
            "warmup_s": WARMUP.as_secs_f64(),
            "shards": args.shards,
            "sfu_cpus": sfu_cpus(args),
            "cores": args.cores,
            "loadavg_at_end": loadavg.trim(),
            "runs": runs,
        }
    }))
}
