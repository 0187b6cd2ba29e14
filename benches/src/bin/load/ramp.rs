//! The ramp: calls added step by step, each step measured, until the first bad one.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::args::Args;
use crate::host::{cpu_ns, rss_kb, sfu_cpus};
use crate::sfu::Sfu;
use crate::system::System;
use crate::{ALLOCATIONS, LIVE_BYTES};
use ringcast::LatenessCauses;
use ringcast_core::pacer::LatenessHistogram;

/// p99 lateness at or above this breaks a step (architecture.md target).
pub(crate) const MAX_P99: Duration = Duration::from_millis(2);

/// One step of a ramp.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) calls: usize,
    pub(crate) connected: usize,
    pub(crate) packets_sent: u64,
    pub(crate) packets_counted: u64,
    pub(crate) lost: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) cpu_ns_per_packet: f64,
    pub(crate) rss_kb_per_call: f64,
    pub(crate) heap_kb_per_call: f64,
    pub(crate) allocs_per_packet: f64,
    /// p99 of each lateness cause in the window, ms (ringcast only; see
    /// `ringcast::LatenessCauses`): timer, before_tick, tick, flush.
    pub(crate) causes_p99_ms: Option<[f64; 4]>,
}

impl Step {
    pub(crate) fn good(&self) -> bool {
        self.connected == self.calls
            && self.lost == 0
            && self.p99_ms < MAX_P99.as_secs_f64() * 1000.0
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "calls": self.calls, "connected": self.connected,
            "packets_sent": self.packets_sent, "packets_counted_by_sfu": self.packets_counted,
            "lost": self.lost, "p50_lateness_ms": self.p50_ms, "p99_lateness_ms": self.p99_ms,
            "max_lateness_ms": self.max_ms, "cpu_ns_per_packet": self.cpu_ns_per_packet,
            "rss_kb_per_call": self.rss_kb_per_call, "heap_kb_per_call": self.heap_kb_per_call, "allocs_per_packet": self.allocs_per_packet,
            "lateness_causes_p99_ms": self.causes_p99_ms.map(|[timer, before_tick, tick, flush]| json!({
                "timer": timer, "before_tick": before_tick, "tick": tick, "flush": flush,
            })),
            "good": self.good(),
        })
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Ramps `system` through `args.steps`; stops at the first bad step.
pub(crate) fn ramp(system: &mut dyn System, args: &Args) -> Result<Vec<Step>, String> {
    let sfu = Sfu::start(sfu_cpus(args))?;
    let rss0 = rss_kb();
    let heap0 = LIVE_BYTES.load(Ordering::Relaxed);
    let mut steps = Vec::new();
    for (i, &n) in args.steps.iter().enumerate() {
        eprint!(
            "[{}] step {}/{}: {n} calls ... ",
            system.name(),
            i + 1,
            args.steps.len()
        );
        let _ = std::io::stderr().flush();
        if let Err(e) = system.grow_to(n, &sfu) {
            // A step that cannot even connect its calls is a bad step, not a crashed run.
            eprintln!("{e}  <- breaks the target");
            let b = system.sample();
            steps.push(Step {
                calls: n,
                connected: b.connected,
                packets_sent: 0,
                packets_counted: 0,
                lost: 0,
                p50_ms: f64::NAN,
                p99_ms: f64::NAN,
                max_ms: f64::NAN,
                cpu_ns_per_packet: f64::NAN,
                rss_kb_per_call: f64::NAN,
                heap_kb_per_call: f64::NAN,
                allocs_per_packet: f64::NAN,
                causes_p99_ms: None,
            });
            break;
        }
        // Settle: handshakes done, the burst of starts out of the window.
        std::thread::sleep(Duration::from_secs(1));
        let (sfu0, lost0) = sfu.totals()?;
        let a = system.sample();
        let cpu0 = cpu_ns();
        let alloc0 = ALLOCATIONS.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs_f64(args.step_seconds));
        let b = system.sample();
        let cpu1 = cpu_ns();
        let alloc1 = ALLOCATIONS.load(Ordering::Relaxed);
        // Let the window's last packets land before counting.
        std::thread::sleep(Duration::from_millis(300));
        let (sfu1, lost1) = sfu.totals()?;
        let sent = b.packets_sent.saturating_sub(a.packets_sent).max(1);
        let window = b.lateness.since(&a.lateness);
        let cause = |f: fn(&LatenessCauses) -> &LatenessHistogram| {
            ms(f(&b.causes).since(f(&a.causes)).percentile(0.99))
        };
        let causes_p99_ms = (b.causes.tick.count() > a.causes.tick.count()).then(|| {
            [
                cause(|c| &c.timer),
                cause(|c| &c.before_tick),
                cause(|c| &c.tick),
                cause(|c| &c.flush),
            ]
        });
        let step = Step {
            calls: n,
            connected: b.connected,
            packets_sent: sent,
            packets_counted: sfu1.saturating_sub(sfu0),
            lost: lost1.saturating_sub(lost0),
            p50_ms: ms(window.percentile(0.5)),
            p99_ms: ms(window.percentile(0.99)),
            max_ms: ms(b.lateness.max()),
            cpu_ns_per_packet: (cpu1.saturating_sub(cpu0)) as f64 / sent as f64,
            rss_kb_per_call: rss_kb().saturating_sub(rss0) as f64 / n as f64,
            heap_kb_per_call: LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(heap0) as f64
                / 1024.0
                / n as f64,
            allocs_per_packet: (alloc1.saturating_sub(alloc0)) as f64 / sent as f64,
            causes_p99_ms,
        };
        let causes = step.causes_p99_ms.map_or(String::new(), |[t, b, k, f]| {
            format!(" [p99 causes: timer {t:.2}, before tick {b:.2}, tick {k:.2}, flush {f:.2} ms]")
        });
        eprintln!(
            "p99 {:.2} ms{causes}, lost {}, {:.0} ns CPU/packet, {:.1} KB RSS/call ({:.1} KB heap), {:.2} allocs/packet{}",
            step.p99_ms,
            step.lost,
            step.cpu_ns_per_packet,
            step.rss_kb_per_call,
            step.heap_kb_per_call,
            step.allocs_per_packet,
            if step.good() {
                ""
            } else {
                "  <- breaks the target"
            }
        );
        let good = step.good();
        steps.push(step);
        if !good {
            break;
        }
    }
    Ok(steps)
}

pub(crate) fn streams_per_core(steps: &[Step], cores: usize) -> usize {
    steps
        .iter()
        .filter(|s| s.good())
        .map(|s| s.calls)
        .max()
        .unwrap_or(0)
        / cores.max(1)
}
