//! The real ntgcalls 3.0.5 wheel (py-tgcalls' engine; libwebrtc inside) as a baseline: one
//! Python process (`interop/ntgcalls_driver.py`) holding every call, as a py-tgcalls bot does,
//! each call playing a pre-made sine through `MediaSource.SHELL`, joined to sfu-mock by this
//! tool with the SFU's answer relayed verbatim.
//!
//! libwebrtc gathers no loopback candidates, so the driver runs in a network namespace joined by
//! a veth pair (`interop/ntgcalls_peer.rs`), and sfu-mock listens on the host end with
//! `--latency-ms 20` (at 0 ms ntgcalls often misses its own Connected event and never sends).
//! The driver inherits this process's CPU affinity (with pinning: the engine's core), so
//! "cores used" is comparable with ringcast's pinned shard.
//!
//! ntgcalls sends 60 ms Opus frames (16.7 packets/s per call, ringcast and the other baselines
//! 20 ms: 50/s), so every step reports CPU per packet **and** per call. Pacer lateness is not
//! observable from outside ntgcalls: a step is good when every call connected, the SFU counted
//! no loss and at least 95 % of the packets 16.7/s per call should give. Streams per core is
//! the highest good step's calls divided by the cores the Python process used there (its CPU
//! seconds per wall second, from `/proc/<pid>/stat`): an extrapolation from measured CPU, since
//! one ntgcalls process cannot hold many more calls than the steps (its open files grow with
//! N², ~11,600 at 100 calls, and connects slowed past 100 calls on the 2-core test machine).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::args::Args;
use crate::host::sfu_cpus;
use crate::sfu::Sfu;
use crate::system::{CHATS, tone_for};

use crate::ntgcalls_peer::{
    NTGCALLS_PACKETS_PER_SECOND, Netns, NtgcallsDriver, ProcSample, SETUP_HINT, proc_sample,
};

/// sfu-mock's added latency for ntgcalls (see the module docs).
const LATENCY_MS: u64 = 20;
/// How long a step may take to connect its new calls.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// A good step delivers at least this share of the expected packets.
const MIN_DELIVERED: f64 = 0.95;

/// One step of the ntgcalls ramp.
#[derive(Debug, Clone)]
pub(crate) struct NtgStep {
    calls: usize,
    connected: usize,
    seconds: f64,
    packets_counted: u64,
    lost: u64,
    cores_used: f64,
    cpu_ns_per_packet: f64,
    rss_kb: u64,
    rss_kb_per_call: f64,
    threads: u64,
    fds: u64,
    /// The previous step's (calls, cores used, RSS KiB, threads): the cost of each added call.
    previous: Option<(usize, f64, u64, u64)>,
}

impl NtgStep {
    fn expected_packets(&self) -> f64 {
        self.connected as f64 * NTGCALLS_PACKETS_PER_SECOND * self.seconds
    }

    /// Every call connected, no loss at the SFU and the packet rate 60 ms frames give.
    pub(crate) fn good(&self) -> bool {
        self.connected == self.calls
            && self.lost == 0
            && self.packets_counted as f64 >= MIN_DELIVERED * self.expected_packets()
    }

    fn packets_per_second(&self) -> f64 {
        self.packets_counted as f64 / self.seconds.max(1e-9)
    }

    /// Calls per core at this step (calls / cores used).
    fn calls_per_core(&self) -> f64 {
        if self.cores_used > 0.0 {
            self.calls as f64 / self.cores_used
        } else {
            0.0
        }
    }

    /// (CPU % of a core, RSS KiB, threads) per call added since the previous step.
    fn per_added_call(&self) -> Option<(f64, f64, f64)> {
        let (calls, cores, rss, threads) = self.previous?;
        let added = self.calls.checked_sub(calls).filter(|&a| a > 0)? as f64;
        Some((
            (self.cores_used - cores) * 100.0 / added,
            (self.rss_kb as f64 - rss as f64) / added,
            (self.threads as f64 - threads as f64) / added,
        ))
    }

    pub(crate) fn json(&self) -> Value {
        let per_call = |v: f64| v / self.calls.max(1) as f64;
        let added = self.per_added_call();
        json!({
            "calls": self.calls,
            "connected": self.connected,
            "seconds": self.seconds,
            "packets_counted_by_sfu": self.packets_counted,
            "lost": self.lost,
            "packets_per_second": self.packets_per_second(),
            "packets_per_second_per_call": per_call(self.packets_per_second()),
            "cores_used": self.cores_used,
            "cpu_ns_per_packet": self.cpu_ns_per_packet,
            "cpu_pct_of_core_per_call": per_call(self.cores_used * 100.0),
            "calls_per_core": self.calls_per_core(),
            "rss_kb": self.rss_kb,
            "rss_kb_per_call": self.rss_kb_per_call,
            "threads": self.threads,
            "open_fds": self.fds,
            "cpu_pct_of_core_per_added_call": added.map(|a| a.0),
            "rss_kb_per_added_call": added.map(|a| a.1),
            "threads_per_added_call": added.map(|a| a.2),
            "good": self.good(),
        })
    }
}

/// The calls, the driver and its SFU. Fields drop in order: driver, SFU, then the namespace.
struct Ntgcalls {
    driver: NtgcallsDriver,
    sfu: Sfu,
    netns: Netns,
    calls: usize,
    connected: BTreeSet<i64>,
    /// Calls ntgcalls gave up on, or whose methods raised: chat id -> what it said.
    failed: HashMap<i64, String>,
    /// The driver before any call (RSS per call is counted from here).
    idle: ProcSample,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/ntgcalls_driver.py")
}

/// The SFU's chat of call `index` (ntgcalls' own chat id is `-(index + 1)`).
fn sfu_chat(chat_id: i64) -> usize {
    usize::try_from(chat_id.unsigned_abs().saturating_sub(1)).unwrap_or(0) % CHATS
}

impl Ntgcalls {
    fn start(args: &Args) -> Result<Self, String> {
        let netns = Netns::create()?;
        let sfu = Sfu::start_on(sfu_cpus(args), IpAddr::V4(netns.host_ip()), LATENCY_MS)?;
        let driver = NtgcallsDriver::spawn(&netns, &script(), Duration::from_secs(20))?;
        if driver.version() != "3.0.5" {
            return Err(format!(
                "ntgcalls {} installed, the baseline is 3.0.5; {SETUP_HINT}",
                driver.version()
            ));
        }
        let idle = proc_sample(driver.pid())?;
        Ok(Self {
            driver,
            sfu,
            netns,
            calls: 0,
            connected: BTreeSet::new(),
            failed: HashMap::new(),
            idle,
        })
    }

    /// Handles one driver event (relays payloads to the SFU and answers back).
    fn handle(&mut self, event: &Value) -> Result<(), String> {
        let chat_id = event["chat_id"].as_i64().unwrap_or(0);
        match event["event"].as_str() {
            Some("payload") => {
                let payload = event["payload"].as_str().ok_or("payload is not a string")?;
                let answer = self.sfu.join(sfu_chat(chat_id), payload)?;
                self.driver.answer(chat_id, &answer)?;
            }
            Some("state") => match event["state"].as_str() {
                Some("CONNECTED") => {
                    self.connected.insert(chat_id);
                }
                Some("CONNECTING") => {}
                _ => {
                    self.connected.remove(&chat_id);
                    self.failed.insert(chat_id, event.to_string());
                }
            },
            Some("connect_returned") => {}
            _ => {
                self.failed.insert(chat_id, event.to_string());
            }
        }
        Ok(())
    }

    /// Handles whatever the driver said since the last call.
    fn drain(&mut self) -> Result<(), String> {
        while let Some(event) = self.driver.next(Duration::ZERO)? {
            self.handle(&event)?;
        }
        Ok(())
    }

    /// Adds calls until there are `n` and waits until they connected (or gave up).
    fn grow_to(&mut self, n: usize) -> Result<(), String> {
        while self.calls < n {
            let chat_id = -(self.calls as i64 + 1);
            self.driver
                .call(chat_id, f64::from(tone_for(sfu_chat(chat_id))))?;
            self.calls += 1;
        }
        let deadline = Instant::now() + CONNECT_LIMIT;
        while self.connected.len() + self.failed.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{}/{n} connected after {CONNECT_LIMIT:?}",
                    self.connected.len()
                ));
            }
            if let Some(event) = self.driver.next(left.min(Duration::from_millis(200)))? {
                self.handle(&event)?;
            }
        }
        if let Some((chat, what)) = self.failed.iter().next() {
            return Err(format!(
                "{} of {n} calls failed (chat {chat}: {what})",
                self.failed.len()
            ));
        }
        Ok(())
    }

    /// Measures `seconds` of the current calls.
    fn measure(&mut self, seconds: f64, previous: Option<&NtgStep>) -> Result<NtgStep, String> {
        // Settle: handshakes done, the burst of starts out of the window.
        std::thread::sleep(Duration::from_secs(1));
        self.drain()?;
        let (packets0, lost0) = self.sfu.totals()?;
        let p0 = proc_sample(self.driver.pid())?;
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let (packets1, lost1) = self.sfu.totals()?;
        let p1 = proc_sample(self.driver.pid())?;
        self.drain()?;
        let wall = match (p0.at, p1.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => seconds,
        };
        let packets = packets1.saturating_sub(packets0);
        let cpu = p1.cpu_ns.saturating_sub(p0.cpu_ns);
        Ok(NtgStep {
            calls: self.calls,
            connected: self.connected.len(),
            seconds: wall,
            packets_counted: packets,
            lost: lost1.saturating_sub(lost0),
            cores_used: cpu as f64 / 1e9 / wall.max(1e-9),
            cpu_ns_per_packet: cpu as f64 / packets.max(1) as f64,
            rss_kb: p1.rss_kb,
            rss_kb_per_call: p1.rss_kb.saturating_sub(self.idle.rss_kb) as f64
                / self.calls.max(1) as f64,
            threads: p1.threads,
            fds: p1.fds,
            previous: previous.map(|p| (p.calls, p.cores_used, p.rss_kb, p.threads)),
        })
    }
}

/// Fails fast (before any other system's ramp) if the ntgcalls baseline cannot run here.
pub(crate) fn preflight(args: &Args) -> Result<(), String> {
    let ntgcalls = Ntgcalls::start(args)?;
    ntgcalls.driver.quit(Duration::from_secs(5));
    drop(ntgcalls.sfu);
    drop(ntgcalls.netns);
    Ok(())
}

/// Ramps ntgcalls through `args.ntgcalls_steps`; stops at the first bad step. Returns the steps
/// and the driver's ntgcalls version.
pub(crate) fn ramp(args: &Args) -> Result<(Vec<NtgStep>, String), String> {
    let mut ntgcalls = Ntgcalls::start(args)?;
    let version = ntgcalls.driver.version().to_owned();
    eprintln!(
        "[ntgcalls {version}] driver pid {} in {} ({} -> sfu {}, latency {LATENCY_MS} ms); \
         idle RSS {} KB, {} threads",
        ntgcalls.driver.pid(),
        ntgcalls.netns.name(),
        ntgcalls.netns.ns_ip(),
        ntgcalls.netns.host_ip(),
        ntgcalls.idle.rss_kb,
        ntgcalls.idle.threads,
    );
    let mut steps = Vec::new();
    for (i, &n) in args.ntgcalls_steps.iter().enumerate() {
        eprint!(
            "[ntgcalls] step {}/{}: {n} calls ... ",
            i + 1,
            args.ntgcalls_steps.len()
        );
        let grown = ntgcalls.grow_to(n);
        let step = ntgcalls.measure(args.step_seconds, steps.last())?;
        let added = step
            .per_added_call()
            .map_or(String::new(), |(cpu, rss, _)| {
                format!(" (added calls: {cpu:.2} % of a core, {rss:.0} KB each)")
            });
        eprintln!(
            "{}/{} connected, {:.1} packets/s/call, lost {}, {:.2} cores ({:.2} % of a core per \
             call, {:.0} ns CPU/packet), {:.0} KB RSS/call, {} threads, {} fds{added}{}",
            step.connected,
            step.calls,
            step.packets_per_second() / n as f64,
            step.lost,
            step.cores_used,
            step.cores_used * 100.0 / n as f64,
            step.cpu_ns_per_packet,
            step.rss_kb_per_call,
            step.threads,
            step.fds,
            match &grown {
                Err(e) => format!("  <- breaks the target: {e}"),
                Ok(()) if !step.good() => "  <- breaks the target".to_owned(),
                Ok(()) => String::new(),
            }
        );
        let good = grown.is_ok() && step.good();
        steps.push(step);
        if !good {
            break;
        }
    }
    ntgcalls.driver.quit(Duration::from_secs(10));
    Ok((steps, version))
}

/// ringcast's calls send 20 ms frames: 50 packets per second each.
const RINGCAST_PACKETS_PER_SECOND: f64 = 50.0;

/// `baselines.ntgcalls` of the report. `ours_spc` is ringcast's streams per core and `ours_cpu`
/// its (calls, CPU ns per packet) at its highest good step, else its last (if it ran). At a
/// small step ringcast's per-packet figure carries the harness's fixed cost (the chats' tone
/// encoders), so the step is reported with the ratio.
pub(crate) fn report(
    steps: &[NtgStep],
    version: &str,
    ours_spc: usize,
    ours_cpu: Option<(usize, f64)>,
) -> Value {
    let best = steps.iter().filter(|s| s.good()).max_by_key(|s| s.calls);
    let spc = best.map_or(0.0, NtgStep::calls_per_core);
    // CPU per call, ringcast's and ntgcalls', in cores: the comparison that does not depend on
    // where each system's "good" breaks (lateness for ringcast, the steps for ntgcalls).
    let ours_cores_per_call = ours_cpu
        .map(|(_, c)| c)
        .filter(|c| c.is_finite() && *c > 0.0)
        .map(|c| c * RINGCAST_PACKETS_PER_SECOND / 1e9);
    let ntg_cores_per_call = best.map(|s| s.cores_used / s.calls.max(1) as f64);
    json!({
        "measured": true,
        "version": version,
        // Integer like the other systems' figure; the exact value beside it.
        "streams_per_core": spc.floor() as u64,
        "streams_per_core_exact": spc,
        "streams_per_core_definition": "calls of the highest good step / cores the ntgcalls \
            process used there (CPU seconds per wall second): an extrapolation from measured CPU",
        "highest_good_step": best.map(|s| s.calls),
        "good_criterion": "every call connected, zero loss at the SFU and >= 95 % of 16.7 \
            packets/s per call; pacer lateness is not observable inside ntgcalls",
        "frame_ms": 60,
        "packets_per_second_per_call": NTGCALLS_PACKETS_PER_SECOND,
        "sfu_latency_ms": LATENCY_MS,
        // ringcast's streams per core (lateness-bound, pinned core) over this CPU-extrapolated
        // figure: the two definitions differ; cpu_per_call_ratio compares like with like.
        "ratio": if spc > 0.0 && ours_spc > 0 { json!(ours_spc as f64 / spc) } else { Value::Null },
        "cpu_pct_of_core_per_call": ntg_cores_per_call.map(|c| c * 100.0),
        "ringcast_cpu_pct_of_core_per_call": ours_cores_per_call.map(|c| c * 100.0),
        "ringcast_cpu_step_calls": ours_cpu.map(|(calls, _)| calls),
        "cpu_per_call_ratio": match (ntg_cores_per_call, ours_cores_per_call) {
            (Some(n), Some(o)) if o > 0.0 => json!(n / o),
            _ => Value::Null,
        },
        "steps": steps.iter().map(NtgStep::json).collect::<Vec<_>>(),
    })
}
