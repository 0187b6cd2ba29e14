//! The real ntgcalls wheel (`interop/ntgcalls_driver.py`) in its own network namespace, speaking
//! JSON lines: shared by sfu-mock's `ntgcalls_interop` test and the load tool's ntgcalls
//! baseline, which include this file with `#[path]`.
//!
//! libwebrtc (inside ntgcalls) skips loopback interfaces when it gathers ICE candidates, so the
//! driver cannot reach an SFU on 127.0.0.1. [`Netns`] creates a namespace joined to the root
//! namespace by a veth pair with private /30 addresses (derived from the process id, so
//! concurrent runs do not collide); the SFU binds [`Netns::host_ip`] and the driver runs inside
//! the namespace through `ip netns exec`. Dropping a [`Netns`] deletes the namespace and the
//! veth pair; dropping an [`NtgcallsDriver`] kills the driver (declare the driver after the
//! namespace, so it is dropped first).
//!
//! Needs root (CAP_NET_ADMIN), `ip` (iproute2), python3 and the ntgcalls 3.0.5 wheel: all set
//! up by `scripts/setup.sh --with-test-peers`. Every failure says so.
#![allow(dead_code)] // each includer uses part

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What to run when something is missing.
pub(crate) const SETUP_HINT: &str = "ntgcalls runs as root in a network namespace with python3 and \
     the ntgcalls 3.0.5 wheel: run scripts/setup.sh --with-test-peers (as root)";

/// ntgcalls sends 60 ms Opus frames: 16.7 packets per second per call.
pub(crate) const NTGCALLS_PACKETS_PER_SECOND: f64 = 1000.0 / 60.0;

/// Namespaces made by this process so far (several per process get distinct names).
static MADE: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}; {SETUP_HINT}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}; {SETUP_HINT}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the root namespace by a veth pair. Deleted on drop.
#[derive(Debug)]
pub(crate) struct Netns {
    name: String,
    veth_host: String,
    veth_ns: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Netns {
    /// Creates the namespace, the veth pair and its addresses, and brings both ends up.
    pub(crate) fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        // A /30 inside 10.213.0.0/16 per (process, namespace): 16,384 of them.
        let block = (pid.wrapping_mul(7).wrapping_add(n)) % 16_384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + block * 4;
        let host_ip = Ipv4Addr::from(base + 1);
        let ns_ip = Ipv4Addr::from(base + 2);
        // Interface names: at most 15 bytes.
        let tag = format!("{:x}", (pid << 4) | (n & 0xf));
        let veth_ns = format!("rcn{tag}n");
        let netns = Self {
            name: format!("ringcast-ntg-{pid}-{n}"),
            veth_host: format!("rcn{tag}h"),
            veth_ns: veth_ns.clone(),
            host_ip,
            ns_ip,
        };
        // A namespace left by a killed run of a recycled pid would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", &netns.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &netns.veth_host])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &netns.name])?;
        // From here on, Drop cleans up whatever was made.
        let host_cidr = format!("{host_ip}/30");
        let ns_cidr = format!("{ns_ip}/30");
        ip(&[
            "link",
            "add",
            &netns.veth_host,
            "type",
            "veth",
            "peer",
            "name",
            &veth_ns,
        ])?;
        ip(&["link", "set", &veth_ns, "netns", &netns.name])?;
        ip(&["addr", "add", &host_cidr, "dev", &netns.veth_host])?;
        ip(&["link", "set", &netns.veth_host, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &ns_cidr, "dev", &veth_ns])?;
        inside(&["link", "set", &veth_ns, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The root namespace's end of the veth pair: where the SFU binds.
    pub(crate) fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's end: the address ntgcalls' candidates carry.
    pub(crate) fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Adds unique-local IPv6 addresses to both ends (a /64 per namespace, no duplicate address
    /// detection so they are usable at once); returns (root end, namespace end).
    pub(crate) fn add_ipv6(&self) -> Result<(Ipv6Addr, Ipv6Addr), String> {
        let block = u16::try_from(u32::from(self.host_ip) >> 2 & 0xffff).unwrap_or(0);
        let host = Ipv6Addr::new(0xfd72, 0x1ca5, block, 0, 0, 0, 0, 1);
        let ns = Ipv6Addr::new(0xfd72, 0x1ca5, block, 0, 0, 0, 0, 2);
        let host_cidr = format!("{host}/64");
        let ns_cidr = format!("{ns}/64");
        ip(&[
            "-6",
            "addr",
            "add",
            &host_cidr,
            "dev",
            &self.veth_host,
            "nodad",
        ])?;
        ip(&[
            "netns",
            "exec",
            &self.name,
            "ip",
            "-6",
            "addr",
            "add",
            &ns_cidr,
            "dev",
            &self.veth_ns,
            "nodad",
        ])?;
        Ok((host, ns))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end and with it the pair; delete the host end
        // too in case the namespace still had a process in it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth_host])
            .stderr(Stdio::null())
            .status();
    }
}

/// The driver process (`python3 interop/ntgcalls_driver.py`) inside a [`Netns`].
#[derive(Debug)]
pub(crate) struct NtgcallsDriver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pid: u32,
    version: String,
    pcm_dir: PathBuf,
}

impl NtgcallsDriver {
    /// Starts the driver in `netns` and waits (at most `limit`) for its ready line.
    pub(crate) fn spawn(netns: &Netns, script: &Path, limit: Duration) -> Result<Self, String> {
        if !script.exists() {
            return Err(format!("{} not found", script.display()));
        }
        let pcm_dir =
            std::env::temp_dir().join(format!("ringcast-ntg-pcm-{}", netns.name.as_str()));
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns.name(), "python3"])
            .arg(script)
            .arg(&pcm_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run `ip netns exec .. python3`: {e}; {SETUP_HINT}"))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("driver has no stdout".to_owned());
        };
        // One reader thread: lines arrive through a channel so every wait is bounded.
        let (tx, lines) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut driver = Self {
            child,
            stdin,
            lines,
            pid: 0,
            version: String::new(),
            pcm_dir,
        };
        let ready = driver
            .next(limit)?
            .ok_or_else(|| format!("the ntgcalls driver sent nothing within {limit:?}"))?;
        if ready["event"] != "ready" {
            return Err(format!(
                "the ntgcalls driver did not start: {ready}; {SETUP_HINT}"
            ));
        }
        driver.pid = ready["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| format!("ready line without a pid: {ready}"))?;
        driver.version = ready["version"].as_str().unwrap_or("").to_owned();
        Ok(driver)
    }

    /// The python process's id (for `/proc/<pid>/...`).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `ntgcalls.__version__`.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// Sends one command line.
    pub(crate) fn send(&mut self, command: &Value) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("driver stdin closed")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to the ntgcalls driver: {e}"))
    }

    /// Asks for a call on `chat_id` playing a sine of `hz`; its payload comes as an event.
    pub(crate) fn call(&mut self, chat_id: i64, hz: f64) -> Result<(), String> {
        self.send(&json!({ "cmd": "call", "chat_id": chat_id, "hz": hz }))
    }

    /// [`NtgcallsDriver::call`] with a camera too: ffmpeg's `testsrc2` at `width`x`height`,
    /// `fps`, as raw yuv420p through `MediaSource.SHELL`.
    pub(crate) fn call_with_video(
        &mut self,
        chat_id: i64,
        hz: f64,
        (width, height, fps): (u32, u32, u32),
    ) -> Result<(), String> {
        self.send(&json!({
            "cmd": "call", "chat_id": chat_id, "hz": hz,
            "video": { "width": width, "height": height, "fps": fps },
        }))
    }

    /// Hands the SFU's answer to `chat_id` (verbatim).
    pub(crate) fn answer(&mut self, chat_id: i64, answer: &str) -> Result<(), String> {
        self.send(&json!({ "cmd": "answer", "chat_id": chat_id, "answer": answer }))
    }

    /// The next event within `limit` (None: none came). Fails if the driver exited.
    pub(crate) fn next(&self, limit: Duration) -> Result<Option<Value>, String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| format!("driver line is not JSON ({e}): {line}")),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(format!("the ntgcalls driver exited; {SETUP_HINT}"))
            }
        }
    }

    /// Asks the driver to stop its calls and exit, waiting at most `limit`; kills it after.
    pub(crate) fn quit(mut self, limit: Duration) {
        let _ = self.send(&json!({ "cmd": "quit" }));
        drop(self.stdin.take());
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Drop kills it.
    }
}

impl Drop for NtgcallsDriver {
    fn drop(&mut self) {
        // Killing python closes the pipes of the `sh -c 'while cat ...'` readers ntgcalls
        // started: `cat` dies of SIGPIPE and ends its loop.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pcm_dir);
    }
}

/// Figures of a process from /proc: CPU time (user + system, all threads), RSS, threads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcSample {
    /// utime + stime, nanoseconds.
    pub(crate) cpu_ns: u64,
    /// VmRSS, KiB.
    pub(crate) rss_kb: u64,
    /// Threads.
    pub(crate) threads: u64,
    /// Open file descriptors (sockets included).
    pub(crate) fds: u64,
    /// When it was read.
    pub(crate) at: Option<Instant>,
}

/// User + system CPU time in clock ticks (USER_HZ) from the text of a `/proc/<pid>/stat`.
pub(crate) fn stat_cpu_ticks(stat: &str) -> u64 {
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5): 11 and 12 after the name.
    [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum()
}

/// Reads `/proc/<pid>/stat`, `/proc/<pid>/status` and `/proc/<pid>/fd`.
pub(crate) fn proc_sample(pid: u32) -> Result<ProcSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let ticks = stat_cpu_ticks(&stat);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    Ok(ProcSample {
        // USER_HZ is 100 on Linux.
        cpu_ns: ticks * 10_000_000,
        rss_kb: field("VmRSS:"),
        threads: field("Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        at: Some(Instant::now()),
    })
}
