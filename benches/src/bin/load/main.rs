//! `load`: how many streaming audio calls per core, against the obvious alternative design.
//!
//! Runs `sfu-mock --header-only` as a separate process on loopback, ramps the number of
//! streaming Opus calls in steps and records, per step: calls connected, packets sent and
//! counted by the SFU, loss (RTP sequence gaps at the SFU), pacer lateness p50/p99/max, CPU time
//! of this process per packet, RSS per call and allocations per packet. A ramp stops at the first
//! step with p99 lateness >= 2 ms or any loss; the highest good step divided by the cores used is
//! **streams per core**. The same harness drives the baseline: one tokio task, one socket and one
//! str0m `Rtc` (through the same `ringcast_core::Call`) per call, with a timer per call; and
//! webrtc-rs, one `RTCPeerConnection` per call (module `webrtc_rs`). The real ntgcalls 3.0.5
//! wheel (py-tgcalls' engine) is measured at its own steps (`--ntgcalls-steps`, default
//! 10,20,40,60) in a network namespace, CPU and memory read from its Python process, per packet
//! and per call (it sends 60 ms frames: 16.7 packets/s; module `ntgcalls`). `--quick` leaves it
//! out unless `--systems` names it.
//!
//! ```text
//! load [--quick] [--report PATH] [--plot PATH.svg] [--steps 250,500,...] [--step-seconds S]
//!      [--shards N] [--no-baseline] [--send-path batch|tokio-uring] [--no-pin]
//!      [--bursts 100,1000] [--systems ringcast,tokio_per_call,webrtc_rs,ntgcalls]
//!      [--ntgcalls-steps 10,20,40,60] [--steer-loopback]
//! load --soak SECONDS [--soak-calls N] [--churn PERCENT] [--soak-interval S] [--report PATH]
//! load --hold N [--hold-sfus K] [--report PATH]
//! load --play-bench [--play-calls 500,100] [--play-seconds S] [--play-file PATH] [--report PATH]
//! load --kernel-floor [--floor-sockets 2000] [--floor-frames 150] [--floor-runs 3]
//! ```
//!
//! `load --help` lists every flag with its default (module `args`).
//!
//! By default the engine gets one shard pinned to core 0 and sfu-mock the other cores
//! (`taskset`), so streams per core is the calls one engine core carries. The connect burst
//! creates N calls at once on a fresh engine, with a full certificate pool and without one, and
//! times create, join (the SFU's HTTP answer) and connect until every call is up.
//!
//! `--steer-loopback` (root) moves the receive processing of loopback packets to sfu-mock's
//! cores (RPS on `lo`, restored at exit), as a NIC's would be: otherwise the receiving half of
//! every packet the engine sends (socket lookup, queueing, waking sfu-mock) runs on, and is
//! charged to, the engine's core. Baselines run under the same setting.
//!
//! `--soak` holds N streaming calls for a long run instead, stopping and replacing `--churn`
//! percent of them at every sample (about 20 samples per run, or every `--soak-interval`
//! seconds), and reports RSS and live heap over time, loss and lateness. At the end it checks
//! every live call at the SFU (connected, nothing lost, the packets its age implies) and
//! counts those past the RTP sequence wrap. It fails (exit 1) on any loss, any call not
//! verified, or if RSS grows after warm-up (the first quarter) by more than 5 % + 4 MB.
//!
//! `--hold N` connects N calls with their sources paused (joins concurrent, several sfu-mock
//! processes with `--hold-sfus`) and reports RSS, live heap and descriptors per call, and the
//! connect time (module `hold`).
//!
//! `--play-bench` plays the same mp3 on demand in N calls, decoded once through the engine's
//! track cache, then with one ffmpeg and one encoder per call (the incumbents' design), and
//! reports CPU and memory per call of each and their ratio (module `play`, issue 13).
//!
//! `--kernel-floor` measures what the kernel alone charges the sending core per datagram here
//! (many sockets to one, `sendto` and io_uring, with and without RPS): the ceiling of streams
//! per core for any engine on this machine (module `floor`).
//!
//! Modules: `args` (command line), `sfu` (the sfu-mock process), `system` (what a system under
//! test offers), `engine` (ringcast), `tokio_per_call`, `webrtc_rs` and `ntgcalls` (the
//! baselines; `ntgcalls_peer` is the namespace and driver it shares with sfu-mock's
//! `ntgcalls_interop` test), `ramp`,
//! `burst`, `soak`, `plot` (the SVG), `host` (CPU, RSS, pinning); `run` below ties them into
//! the report.

use std::alloc::{GlobalAlloc, Layout};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use mimalloc::MiMalloc;
use serde_json::{Value, json};

mod args;
mod burst;
mod engine;
mod floor;
mod hold;
mod host;
mod ntgcalls;
#[path = "../../../../interop/ntgcalls_peer.rs"]
mod ntgcalls_peer;
mod play;
mod plot;
mod ramp;
mod sfu;
mod soak;
mod system;
mod tokio_per_call;
mod video;
mod webrtc_rs;

use args::{Args, SystemName};
use engine::Ringcast;
use host::{LoopbackSteering, pin_self, raise_nofile, sfu_cpus};
use ramp::{Step, ramp, streams_per_core};
use tokio_per_call::TokioPerCall;

/// Counts every allocation of the process (for allocations per packet), then defers to mimalloc.
struct Counting;

pub(crate) static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes currently allocated (live heap), for heap per call next to RSS per call.
pub(crate) static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to mimalloc; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Ramps (or soaks), then writes the report and the plot.
fn run(args: &Args) -> Result<(), String> {
    if !args.play_bench && !args.video_bench && !args.kernel_floor {
        eprintln!(
            "load: steps {:?}, {} s each, {} shards{}",
            args.steps,
            args.step_seconds,
            args.shards,
            if args.quick { " (quick)" } else { "" }
        );
    }
    raise_nofile(1 << 18);
    if args.kernel_floor {
        // Pins its own threads (sender on core 0, receiver on the others).
        let report = floor::kernel_floor(args)?;
        std::fs::write(&args.report, format!("{report:#}\n")).map_err(|e| e.to_string())?;
        println!("{report}");
        return Ok(());
    }
    if args.pin && args.cores > args.shards {
        pin_self(args.shards)?;
    }
    // Restored when `run` returns (also on an error).
    let steering = if args.steer_loopback {
        Some(LoopbackSteering::apply(args)?)
    } else {
        None
    };
    if let Some(seconds) = args.soak {
        let (report, pass) = soak::soak(seconds, args)?;
        std::fs::write(&args.report, format!("{report:#}\n")).map_err(|e| e.to_string())?;
        println!("{report}");
        return if pass {
            Ok(())
        } else {
            Err("soak failed: loss or RSS growth (see the report)".to_owned())
        };
    }
    if args.play_bench {
        let report = play::play_bench(args)?;
        std::fs::write(&args.report, format!("{report:#}\n")).map_err(|e| e.to_string())?;
        println!("{report}");
        return Ok(());
    }
    if args.video_bench {
        let report = video::video_bench(args)?;
        std::fs::write(&args.report, format!("{report:#}\n")).map_err(|e| e.to_string())?;
        println!("{report}");
        return Ok(());
    }
    if let Some(n) = args.hold {
        let report = hold::hold(n, args)?;
        std::fs::write(&args.report, format!("{report:#}\n")).map_err(|e| e.to_string())?;
        println!("{report}");
        return Ok(());
    }
    let want_ntgcalls = args.baseline && args.wants(SystemName::Ntgcalls);
    if want_ntgcalls {
        // Minutes of other ramps are not lost to a missing wheel or missing root at the end.
        ntgcalls::preflight(args).map_err(|e| {
            format!(
                "the ntgcalls baseline cannot run: {e} (or leave it out: --systems \
                 ringcast,tokio_per_call,webrtc_rs)"
            )
        })?;
    }
    let ours = if args.wants(SystemName::Ringcast) {
        let mut ringcast = Ringcast::new(args.shards, args.send_path)?;
        ramp(&mut ringcast, args)?
    } else {
        Vec::new()
    };
    let ours_spc = streams_per_core(&ours, args.shards);
    let mut baselines = serde_json::Map::new();
    let mut tokio_steps = Vec::new();
    if args.baseline && args.wants(SystemName::TokioPerCall) {
        let mut tokio = TokioPerCall::new(args.shards)?;
        tokio_steps = ramp(&mut tokio, args)?;
        let spc = streams_per_core(&tokio_steps, args.shards);
        baselines.insert(
            "tokio_per_call".to_owned(),
            json!({
                "streams_per_core": spc,
                "ratio": if spc > 0 { json!(ours_spc as f64 / spc as f64) } else { Value::Null },
                "steps": tokio_steps.iter().map(Step::json).collect::<Vec<_>>(),
            }),
        );
    }
    let mut webrtc_steps = Vec::new();
    if args.baseline && args.wants(SystemName::WebrtcRs) {
        let mut webrtc = webrtc_rs::WebrtcRs::new(args.shards)?;
        webrtc_steps = ramp(&mut webrtc, args)?;
        let spc = streams_per_core(&webrtc_steps, args.shards);
        baselines.insert(
            "webrtc_rs".to_owned(),
            json!({
                "streams_per_core": spc,
                "measured": true,
                "ratio": if spc > 0 && !ours.is_empty() {
                    json!(ours_spc as f64 / spc as f64)
                } else {
                    Value::Null
                },
                "steps": webrtc_steps.iter().map(Step::json).collect::<Vec<_>>(),
            }),
        );
    } else {
        baselines.insert(
            "webrtc_rs".to_owned(),
            json!({ "streams_per_core": Value::Null, "measured": false }),
        );
    }
    if want_ntgcalls {
        let (steps, version) = ntgcalls::ramp(args)?;
        baselines.insert(
            "ntgcalls".to_owned(),
            ntgcalls::report(
                &steps,
                &version,
                ours_spc,
                // Its highest good step, else its last (CPU is measured either way).
                ours.iter()
                    .rev()
                    .find(|s| s.good())
                    .or(ours.last())
                    .map(|s| (s.calls, s.cpu_ns_per_packet)),
            ),
        );
    } else {
        baselines.insert(
            "ntgcalls".to_owned(),
            json!({ "streams_per_core": Value::Null, "measured": false }),
        );
    }
    let mut bursts = Vec::new();
    for &n in &args.bursts {
        for pool in [n, 0] {
            bursts.push(burst::burst(n, pool, args)?);
        }
    }
    let last_good = ours.iter().rev().find(|s| s.good()).or(ours.last());
    let report = json!({
        "streams_per_core": ours_spc,
        "shards": args.shards,
        "p99_lateness_ms": last_good.map(|s| s.p99_ms),
        "cpu_ns_per_packet": last_good.map(|s| s.cpu_ns_per_packet),
        "allocs_per_packet": last_good.map(|s| s.allocs_per_packet),
        "rss_kb_per_call": last_good.map(|s| s.rss_kb_per_call),
        "steps": ours.iter().map(Step::json).collect::<Vec<_>>(),
        "baselines": baselines,
        "connect_burst": bursts,
        "sfu_cpus": sfu_cpus(args),
        "loopback_rps_cpus": steering.as_ref().map(|s| s.mask.clone()),
        "quick": args.quick,
    });
    std::fs::write(&args.report, format!("{report:#}\n")).map_err(|e| e.to_string())?;
    if let Some(path) = &args.plot {
        let mut series: Vec<(&str, &[Step])> = vec![("ringcast", &ours)];
        if !tokio_steps.is_empty() {
            series.push(("tokio_per_call", &tokio_steps));
        }
        if !webrtc_steps.is_empty() {
            series.push(("webrtc_rs", &webrtc_steps));
        }
        std::fs::write(path, plot::plot(&series)?).map_err(|e| e.to_string())?;
    }
    println!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}
