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
