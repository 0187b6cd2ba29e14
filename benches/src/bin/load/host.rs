//! What this process costs (CPU time, RSS) and where it runs (pinning, open-file limit).

use std::process::{Command, Stdio};

use crate::args::Args;

/// CPU time (user + system) of this process, from /proc/self/stat, in nanoseconds.
pub(crate) fn cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks = crate::ntgcalls_peer::stat_cpu_ticks(&stat);
    // USER_HZ is 100 on Linux.
    ticks * 10_000_000
}

pub(crate) fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The cores sfu-mock is pinned to: every core after the engine's (None: no pinning).
pub(crate) fn sfu_cpus(args: &Args) -> Option<String> {
    let n = args.cores;
    (args.pin && n > args.shards).then(|| format!("{}-{}", args.shards, n - 1))
}

/// Loopback's receive queue: which cores process what arrives on `lo` (RPS).
const LO_RPS_CPUS: &str = "/sys/class/net/lo/queues/rx-0/rps_cpus";

/// Receive processing of loopback packets moved to sfu-mock's cores (Receive Packet Steering
/// on `lo`), as a real NIC's interrupt and softirq run apart from the sender's core. Without
/// it, `loopback_xmit` queues each packet on the sending core's backlog, and the receiver's
/// whole UDP receive path (socket lookup, queueing, waking sfu-mock) is charged to the engine.
/// The previous mask is restored on drop.
pub(crate) struct LoopbackSteering {
    previous: String,
    /// The mask written (hex), for the report.
    pub(crate) mask: String,
}

impl LoopbackSteering {
    /// Steers `lo`'s receives to every core after the first `shards` (sfu-mock's).
    pub(crate) fn apply(args: &Args) -> Result<Self, String> {
        if args.cores <= args.shards {
            return Err("--steer-loopback needs a core for sfu-mock".to_owned());
        }
        let mut steering = Self::read()?;
        let bits = (args.shards..args.cores.min(64)).fold(0_u64, |m, c| m | 1 << c);
        steering.set(bits)?;
        eprintln!(
            "load: loopback receives steered to cores {} (was {})",
            steering.mask, steering.previous
        );
        Ok(steering)
    }

    /// Remembers the current mask (restored on drop) without changing it; fails if `lo`'s
    /// mask cannot be written (not root).
    pub(crate) fn read() -> Result<Self, String> {
        let previous = std::fs::read_to_string(LO_RPS_CPUS)
            .map_err(|e| format!("{LO_RPS_CPUS}: {e}"))?
            .trim()
            .to_owned();
        std::fs::write(LO_RPS_CPUS, &previous)
            .map_err(|e| format!("writing {LO_RPS_CPUS} (root?): {e}"))?;
        Ok(Self {
            mask: previous.clone(),
            previous,
        })
    }

    /// Sets the cores (a bit mask; 0: the sending core) that process loopback receives.
    pub(crate) fn set(&mut self, bits: u64) -> Result<(), String> {
        let mask = format!("{bits:x}");
        std::fs::write(LO_RPS_CPUS, &mask)
            .map_err(|e| format!("writing {mask} to {LO_RPS_CPUS} (root?): {e}"))?;
        self.mask = mask;
        Ok(())
    }
}

impl Drop for LoopbackSteering {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(LO_RPS_CPUS, &self.previous) {
            eprintln!(
                "load: could not restore {LO_RPS_CPUS} to {}: {e}",
                self.previous
            );
        }
    }
}

/// Pins every thread of this process (and the threads it starts later, which inherit it) to
/// the first `shards` cores.
pub(crate) fn pin_self(shards: usize) -> Result<(), String> {
    let cpus = format!("0-{}", shards.max(1) - 1);
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset failed: {status}"))
    }
}

/// Raises this process's open-file limit (each call toward one SFU address needs its own
/// socket, and every shard holds a dup of each). Needs root or CAP_SYS_RESOURCE beyond the
/// hard limit; a failure is reported and the run goes on.
pub(crate) fn raise_nofile(want: u64) {
    let r = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={want}:{want}"),
        ])
        .status();
    if !matches!(r, Ok(s) if s.success()) {
        eprintln!("load: could not raise the open-file limit to {want}; large steps may fail");
    }
}
