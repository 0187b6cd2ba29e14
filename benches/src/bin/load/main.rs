//! `load`: how many streaming audio calls per core, against the obvious alternative design.
//!
//! Runs `sfu-mock --header-only` as a separate process on loopback, ramps the number of
//! streaming Opus calls in steps and records, per step: calls connected, packets sent and
//! counted by the SFU, loss (RTP sequence gaps at the SFU), pacer lateness p50/p99/max, CPU time
//! of this process per packet, RSS per call and allocations per packet. A ramp stops at the first
//! step with p99 lateness >= 2 ms or any loss; the highest good step divided by the cores used is
//! **streams per core**. The same harness drives the baseline: one tokio task, one socket and one
//! str0m `Rtc` (through the same `ringcast_core::Call`) per call, with a timer per call; and
//! webrtc-rs, one `RTCPeerConnection` per call (module `webrtc_rs`).
//!
//! ```text
//! load [--quick] [--report PATH] [--plot PATH.svg] [--steps 250,500,...] [--step-seconds S]
//!      [--shards N] [--no-baseline] [--send-path batch|tokio-uring] [--no-pin]
//!      [--bursts 100,1000] [--systems ringcast,tokio_per_call,webrtc_rs]
//! load --soak SECONDS [--soak-calls N] [--churn PERCENT] [--report PATH]
//! ```
//!
//! By default the engine gets one shard pinned to core 0 and sfu-mock the other cores
//! (`taskset`), so streams per core is the calls one engine core carries. The connect burst
//! creates N calls at once on a fresh engine, with a full certificate pool and without one, and
//! times create, join (the SFU's HTTP answer) and connect until every call is up.
//!
//! `--soak` holds N streaming calls for a long run instead, stopping and replacing `--churn`
//! percent of them at every sample (about 20 samples per run), and reports RSS and live heap
//! over time, loss and lateness. It fails (exit 1) on any loss or if RSS grows after warm-up
//! (the first quarter) by more than 5 % + 4 MB.
//!
//! ```text
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use ringcast::{CallState, EndReason, Engine, EventKind, SendPath, SharedSource, StreamSource};
use ringcast_core::call::{Call, CallConfig, Command as CallCommand, Input, Output};
use ringcast_core::crypto::{CallCrypto, CryptoOptions, generate_certificate};
use ringcast_core::media::ToneSource;
use ringcast_core::pacer::LatenessHistogram;
use ringcast_core::signaling::group::JoinResponse;
use serde_json::{Value, json};

mod webrtc_rs;

/// Counts every allocation of the process (for allocations per packet), then defers to mimalloc.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes currently allocated (live heap), for heap per call next to RSS per call.
static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

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

/// p99 lateness at or above this breaks a step (architecture.md target).
const MAX_P99: Duration = Duration::from_millis(2);
/// Chats the calls are spread over; each chat plays one shared tone. Each tone is one Opus
/// encoder (about 60 µs per 20 ms frame): a fixed cost of ~3 % of a core for 10 chats, which
/// every system under test pays alike.
const CHATS: usize = 10;

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    report: PathBuf,
    plot: Option<PathBuf>,
    steps: Vec<usize>,
    step_seconds: f64,
    shards: usize,
    baseline: bool,
    send_path: SendPath,
    /// Pin this process to the first `shards` cores and sfu-mock to the others.
    pin: bool,
    /// Connect-burst sizes (empty: no burst measurement).
    bursts: Vec<usize>,
    /// Cores of the machine, read before this process pins itself.
    cores: usize,
    /// Which systems to ramp (`--systems`); all three by default.
    systems: Vec<String>,
    /// Soak instead of ramp: run this long (seconds).
    soak: Option<f64>,
    /// Calls in the soak.
    soak_calls: usize,
    /// Percent of the soak's calls stopped and replaced at every sample.
    churn_pct: usize,
}

impl Args {
    fn wants(&self, system: &str) -> bool {
        self.systems.iter().any(|s| s == system)
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        report: PathBuf::from("load-report.json"),
        plot: None,
        steps: vec![
            100, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10_000,
        ],
        step_seconds: 5.0,
        // One core for the engine and the rest for sfu-mock, so "per core" means what it says.
        shards: cores().saturating_sub(1).max(1),
        baseline: true,
        send_path: SendPath::default(),
        pin: true,
        bursts: vec![100, 1000],
        cores: cores(),
        soak: None,
        soak_calls: 500,
        churn_pct: 2,
        systems: ["ringcast", "tokio_per_call", "webrtc_rs"]
            .map(String::from)
            .to_vec(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let value = |i: &mut usize, flag: &str| -> Result<String, String> {
        *i += 1;
        args.get(*i).cloned().ok_or(format!("{flag} needs a value"))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => {
                a.quick = true;
                a.steps = vec![20, 50];
                a.step_seconds = 2.0;
                a.bursts = vec![20];
            }
            "--report" => a.report = value(&mut i, "--report")?.into(),
            "--plot" => a.plot = Some(value(&mut i, "--plot")?.into()),
            "--steps" => {
                a.steps = value(&mut i, "--steps")?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|_| format!("bad step {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--step-seconds" => {
                a.step_seconds = value(&mut i, "--step-seconds")?
                    .parse()
                    .map_err(|_| "--step-seconds needs a number")?;
            }
            "--shards" => {
                a.shards = value(&mut i, "--shards")?
                    .parse()
                    .map_err(|_| "--shards needs a number")?;
            }
            "--no-baseline" => a.baseline = false,
            "--no-pin" => a.pin = false,
            "--soak" => {
                a.soak = Some(
                    value(&mut i, "--soak")?
                        .parse()
                        .map_err(|_| "--soak needs seconds")?,
                );
            }
            "--soak-calls" => {
                a.soak_calls = value(&mut i, "--soak-calls")?
                    .parse()
                    .map_err(|_| "--soak-calls needs a number")?;
            }
            "--churn" => {
                a.churn_pct = value(&mut i, "--churn")?
                    .parse()
                    .map_err(|_| "--churn needs a percentage")?;
            }
            "--bursts" => {
                a.bursts = value(&mut i, "--bursts")?
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse().map_err(|_| format!("bad burst {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--send-path" => {
                a.send_path = match value(&mut i, "--send-path")?.as_str() {
                    "batch" => SendPath::IoUringBatch,
                    "tokio-uring" => SendPath::TokioUring,
                    other => {
                        return Err(format!("--send-path: batch or tokio-uring, not {other:?}"));
                    }
                };
            }
            "--systems" => {
                a.systems = value(&mut i, "--systems")?
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .collect();
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
        i += 1;
    }
    Ok(a)
}

/// The sfu-mock process.
struct Sfu {
    child: Child,
    http: String,
}

impl Sfu {
    fn start(pin: Option<String>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin = exe.with_file_name("sfu-mock");
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it first (cargo build --release -p sfu-mock)",
                bin.display()
            ));
        }
        let mut command = match &pin {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args([
                "--header-only",
                "--udp",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting sfu-mock: {e}"))?;
        let stdout = child.stdout.take().ok_or("no sfu-mock stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("sfu-mock said {line:?}: {e}"))?;
        let http = v["http"].as_str().ok_or("no http address")?.to_owned();
        Ok(Self { child, http })
    }

    fn join(&self, chat: usize, payload: &str) -> Result<String, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("http://{}/v1/chats/{chat}/join", self.http);
        let mut r = agent.post(&url).send(payload).map_err(|e| e.to_string())?;
        let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        if r.status().as_u16() == 200 {
            Ok(body)
        } else {
            Err(format!("join: HTTP {}: {body}", r.status()))
        }
    }

    /// The SFU's whole stats document (for diagnostics).
    fn stats_text(&self) -> Result<String, String> {
        let mut r = ureq::get(&format!("http://{}/v1/stats", self.http))
            .call()
            .map_err(|e| e.to_string())?;
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| e.to_string())
    }

    /// (packets, lost) summed over every participant.
    fn totals(&self) -> Result<(u64, u64), String> {
        let mut r = ureq::get(&format!("http://{}/v1/stats", self.http))
            .call()
            .map_err(|e| e.to_string())?;
        let body = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let (mut packets, mut lost) = (0, 0);
        if let Some(chats) = v["chats"].as_object() {
            for list in chats.values() {
                for p in list.as_array().into_iter().flatten() {
                    packets += p["packets"].as_u64().unwrap_or(0);
                    lost += p["lost"].as_u64().unwrap_or(0);
                }
            }
        }
        Ok((packets, lost))
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of this process, from /proc/self/stat, in nanoseconds.
fn cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    ticks * 10_000_000
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// What a system under test reports at a moment.
#[derive(Debug, Clone, Default)]
struct Sample {
    packets_sent: u64,
    connected: usize,
    lateness: LatenessHistogram,
}

/// A system under test: ringcast or a baseline.
trait System {
    fn name(&self) -> &'static str;
    /// Adds calls until there are `n`, and waits until they connected.
    fn grow_to(&mut self, n: usize, sfu: &Sfu) -> Result<(), String>;
    fn sample(&self) -> Sample;
}

fn tone_for(chat: usize) -> f32 {
    300.0 + 20.0 * chat as f32
}

/// One shared tone per chat: both systems play exactly the same sources.
fn chat_tones() -> Result<Vec<SharedSource>, String> {
    (0..CHATS)
        .map(|c| {
            ToneSource::new(tone_for(c), None)
                .map(|t| SharedSource::new(Box::new(t)))
                .map_err(|e| e.to_string())
        })
        .collect()
}

struct Ringcast {
    engine: Engine,
    tones: Vec<SharedSource>,
    /// Chat ids of live calls, oldest first (the soak's churn stops the oldest).
    live: std::collections::VecDeque<i64>,
    next_key: i64,
    /// `Connected` events seen, and calls stopped on purpose.
    connected: usize,
    stopped: usize,
    /// Join payload and SFU answer of each live call, for the diagnostics of a call that
    /// ends on its own.
    signaling: HashMap<i64, (String, String)>,
}

impl Ringcast {
    /// Writes what is known about a call that ended on its own to
    /// `target/load-failure-<key>.json` (join, answer, SFU stats, engine stats) and names it.
    fn diagnose(&self, key: i64, reason: &EndReason, sfu: &Sfu) -> String {
        let (join, answer) = self.signaling.get(&key).cloned().unwrap_or_default();
        let doc = serde_json::json!({
            "chat_id": key,
            "reason": format!("{reason:?}"),
            "join": join,
            "answer": answer,
            "engine_stats": format!("{:?}", self.engine.stats()),
            "sfu_stats": sfu.stats_text().unwrap_or_else(|e| e),
        });
        let path = format!("target/load-failure-{key}.json");
        match std::fs::write(&path, doc.to_string()) {
            Ok(()) => format!("call {key} ended: {reason:?} (diagnostics in {path})"),
            Err(_) => format!("call {key} ended: {reason:?}"),
        }
    }

    fn new(shards: usize, send_path: SendPath) -> Result<Self, String> {
        let engine = Engine::builder()
            .shards(shards)
            .send_path(send_path)
            .event_queue(1 << 16)
            .cert_pool(256)
            .build()
            .map_err(|e| e.to_string())?;
        let tones = chat_tones()?;
        Ok(Self {
            engine,
            tones,
            live: std::collections::VecDeque::new(),
            next_key: 0,
            connected: 0,
            stopped: 0,
            signaling: HashMap::new(),
        })
    }

    /// Stops the `k` oldest calls and starts `k` new ones (the soak's churn), waiting until
    /// the new ones are connected.
    fn churn(&mut self, k: usize, sfu: &Sfu) -> Result<(), String> {
        let n = self.live.len();
        for _ in 0..k.min(n) {
            if let Some(key) = self.live.pop_front() {
                self.signaling.remove(&key);
                self.engine
                    .stop(key)
                    .map_err(|e| format!("stop {key}: {e}"))?;
                self.stopped += 1;
            }
        }
        self.grow_to(n, sfu)
    }

    /// Calls that ended without being asked to since the last look, with their reasons;
    /// they are dropped from the live set (the soak counts them as failures).
    fn take_unexpected_ends(&mut self) -> Vec<(i64, EndReason)> {
        let mut ended = Vec::new();
        while let Ok(e) = self.engine.events().try_recv() {
            match e.kind {
                EventKind::ConnectionChanged(CallState::Connected) => self.connected += 1,
                EventKind::ConnectionChanged(CallState::Ended(EndReason::Stopped)) => {}
                EventKind::ConnectionChanged(CallState::Ended(r)) => {
                    if let Some(i) = self.live.iter().position(|k| *k == e.chat_id) {
                        self.live.remove(i);
                        self.stopped += 1;
                    }
                    ended.push((e.chat_id, r));
                }
                _ => {}
            }
        }
        ended
    }
}

impl System for Ringcast {
    fn name(&self) -> &'static str {
        "ringcast"
    }

    fn grow_to(&mut self, n: usize, sfu: &Sfu) -> Result<(), String> {
        while self.live.len() < n {
            let key = self.next_key;
            let chat = (key as usize) % CHATS;
            let join = self.engine.create_call(key).map_err(|e| e.to_string())?;
            let answer = sfu.join(chat, &join)?;
            self.engine
                .connect(key, &answer)
                .map_err(|e| e.to_string())?;
            self.signaling.insert(key, (join, answer));
            self.engine
                .set_stream_sources(key, StreamSource::Shared(self.tones[chat].clone()))
                .map_err(|e| e.to_string())?;
            self.live.push_back(key);
            self.next_key += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.connected - self.stopped < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.engine.events().recv_timeout(left) {
                Ok(e) => match e.kind {
                    EventKind::ConnectionChanged(CallState::Connected) => self.connected += 1,
                    EventKind::ConnectionChanged(CallState::Ended(EndReason::Stopped)) => {}
                    EventKind::ConnectionChanged(CallState::Ended(r)) => {
                        return Err(self.diagnose(e.chat_id, &r, sfu));
                    }
                    _ => {}
                },
                Err(_) => {
                    return Err(format!(
                        "{}/{n} connected after 60 s",
                        self.connected - self.stopped
                    ));
                }
            }
        }
        Ok(())
    }

    fn sample(&self) -> Sample {
        let s = self.engine.stats().unwrap_or_default();
        Sample {
            packets_sent: s.packets_sent,
            connected: self.connected - self.stopped,
            lateness: s.lateness,
        }
    }
}

/// The obvious design: a tokio task, a socket and an `Rtc` per call, a timer per call.
struct TokioPerCall {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Mutex<HashMap<usize, (u64, LatenessHistogram)>>>,
    connected: Arc<AtomicU64>,
    crypto: Arc<ringcast_core::str0m::crypto::CryptoProvider>,
    /// The same shared tones as ringcast: the comparison isolates the I/O and timer design,
    /// not encoding (an encoder per call would only widen the gap).
    tones: Vec<SharedSource>,
    calls: usize,
}

impl TokioPerCall {
    fn new(threads: usize) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        // Same str0m, same shared DTLS config: only the I/O design differs.
        let crypto = CallCrypto::new(CryptoOptions::default())
            .map_err(|e| e.to_string())?
            .provider();
        let tones = chat_tones()?;
        Ok(Self {
            runtime,
            shared: Arc::new(Mutex::new(HashMap::new())),
            connected: Arc::new(AtomicU64::new(0)),
            crypto,
            tones,
            calls: 0,
        })
    }
}

async fn tokio_call(
    index: usize,
    mut call: Call,
    response: JoinResponse,
    source: SharedSource,
    shared: Arc<Mutex<HashMap<usize, (u64, LatenessHistogram)>>>,
    connected: Arc<AtomicU64>,
) {
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let now = Instant::now();
    if call.connect(now, &response, local).is_err() {
        return;
    }
    let _ = call.handle_input(
        now,
        Input::Command(CallCommand::SetSource(Box::new(source.reader()))),
    );
    let mut buf = vec![0u8; 2048];
    let mut was_connected = false;
    let mut next_report = Instant::now() + Duration::from_millis(500);
    loop {
        let deadline = loop {
            match call.poll_output() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(_) => {}
                _ => {}
            }
        };
        if !was_connected && *call.state() == CallState::Connected {
            was_connected = true;
            connected.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(call.state(), CallState::Ended(_)) {
            return;
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = r {
                    let input = Input::Datagram { source, destination: local, contents: &buf[..n] };
                    let _ = call.handle_input(Instant::now(), input);
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let _ = call.handle_input(Instant::now(), Input::Timeout);
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_millis(500);
            let s = call.stats();
            if let Ok(mut m) = shared.lock() {
                m.insert(index, (s.packets_sent, s.lateness.clone()));
            }
        }
    }
}

impl System for TokioPerCall {
    fn name(&self) -> &'static str {
        "tokio_per_call"
    }

    fn grow_to(&mut self, n: usize, sfu: &Sfu) -> Result<(), String> {
        while self.calls < n {
            let chat = self.calls % CHATS;
            let cert = generate_certificate().ok_or("certificate")?;
            let mut config = CallConfig::new(0xB45E_0000 + self.calls as u64, cert);
            config.crypto = Some(self.crypto.clone());
            let call = Call::new(Instant::now(), config).map_err(|e| e.to_string())?;
            let answer = sfu.join(chat, &call.join_payload().to_json())?;
            let response = JoinResponse::parse(answer.as_bytes()).map_err(|e| e.to_string())?;
            self.runtime.spawn(tokio_call(
                self.calls,
                call,
                response,
                self.tones[chat].clone(),
                self.shared.clone(),
                self.connected.clone(),
            ));
            self.calls += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while (self.connected.load(Ordering::Relaxed) as usize) < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "{}/{n} connected after 60 s",
                    self.connected.load(Ordering::Relaxed)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn sample(&self) -> Sample {
        let mut s = Sample {
            connected: self.connected.load(Ordering::Relaxed) as usize,
            ..Sample::default()
        };
        if let Ok(m) = self.shared.lock() {
            for (packets, lateness) in m.values() {
                s.packets_sent += packets;
                s.lateness.merge(lateness);
            }
        }
        s
    }
}

/// One step of a ramp.
#[derive(Debug, Clone)]
struct Step {
    calls: usize,
    connected: usize,
    packets_sent: u64,
    packets_counted: u64,
    lost: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu_ns_per_packet: f64,
    rss_kb_per_call: f64,
    heap_kb_per_call: f64,
    allocs_per_packet: f64,
}

impl Step {
    fn good(&self) -> bool {
        self.connected == self.calls
            && self.lost == 0
            && self.p99_ms < MAX_P99.as_secs_f64() * 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "calls": self.calls, "connected": self.connected,
            "packets_sent": self.packets_sent, "packets_counted_by_sfu": self.packets_counted,
            "lost": self.lost, "p50_lateness_ms": self.p50_ms, "p99_lateness_ms": self.p99_ms,
            "max_lateness_ms": self.max_ms, "cpu_ns_per_packet": self.cpu_ns_per_packet,
            "rss_kb_per_call": self.rss_kb_per_call, "heap_kb_per_call": self.heap_kb_per_call, "allocs_per_packet": self.allocs_per_packet,
            "good": self.good(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Ramps `system` through `args.steps`; stops at the first bad step.
fn ramp(system: &mut dyn System, args: &Args) -> Result<Vec<Step>, String> {
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
        };
        eprintln!(
            "p99 {:.2} ms, lost {}, {:.0} ns CPU/packet, {:.1} KB RSS/call ({:.1} KB heap), {:.2} allocs/packet{}",
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

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The cores sfu-mock is pinned to: every core after the engine's (None: no pinning).
fn sfu_cpus(args: &Args) -> Option<String> {
    let n = args.cores;
    (args.pin && n > args.shards).then(|| format!("{}-{}", args.shards, n - 1))
}

/// Pins every thread of this process (and the threads it starts later, which inherit it) to
/// the first `shards` cores.
fn pin_self(shards: usize) -> Result<(), String> {
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
fn raise_nofile(want: u64) {
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

/// One connect burst: `n` calls created at once on a fresh engine with a certificate pool of
/// `pool` (filled before the clock starts; 0 = every certificate generated inline).
fn burst(n: usize, pool: usize, args: &Args) -> Result<Value, String> {
    let sfu = Sfu::start(sfu_cpus(args))?;
    let engine = Engine::builder()
        .shards(args.shards)
        .send_path(args.send_path)
        .cert_pool(pool)
        .event_queue(n * 4 + 64)
        .command_queue(n + 64)
        .build()
        .map_err(|e| e.to_string())?;
    let fill_deadline = Instant::now() + Duration::from_secs(120);
    while engine.cert_pool_ready() < pool && Instant::now() < fill_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = Instant::now();
    let joins = (0..n)
        .map(|i| engine.create_call(i as i64).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let created = t0.elapsed();
    // On Telegram these are n phone.joinGroupCall requests; here sequential HTTP posts.
    let answers = joins
        .iter()
        .enumerate()
        .map(|(i, j)| sfu.join(i % CHATS, j))
        .collect::<Result<Vec<_>, _>>()?;
    let answered = t0.elapsed();
    for (i, a) in answers.iter().enumerate() {
        engine.connect(i as i64, a).map_err(|e| e.to_string())?;
    }
    let mut connected = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match engine.events().recv_timeout(left) {
            Ok(e) => match e.kind {
                EventKind::ConnectionChanged(CallState::Connected) => connected += 1,
                EventKind::ConnectionChanged(CallState::Ended(r)) => {
                    return Err(format!("burst: call {} ended: {r:?}", e.chat_id));
                }
                _ => {}
            },
            Err(_) => return Err(format!("burst: {connected}/{n} connected after 60 s")),
        }
    }
    let done = t0.elapsed();
    let engine_ms = ms(created) + ms(done - answered);
    eprintln!(
        "[burst] {n} calls, certificate pool {pool}: create {:.0} ms, SFU answers {:.0} ms, \
         connect {:.0} ms; engine time {engine_ms:.0} ms, wall {:.0} ms ({} certificates inline)",
        ms(created),
        ms(answered - created),
        ms(done - answered),
        ms(done),
        engine.certs_generated_inline(),
    );
    Ok(json!({
        "calls": n, "cert_pool": pool, "create_ms": ms(created),
        "sfu_answers_ms": ms(answered - created), "connect_ms": ms(done - answered),
        "engine_ms": engine_ms, "wall_ms": ms(done),
        "certs_generated_inline": engine.certs_generated_inline(),
    }))
}

/// The soak: see the module docs.
fn soak(seconds: f64, args: &Args) -> Result<(Value, bool), String> {
    let calls = args.soak_calls;
    let sfu = Sfu::start(sfu_cpus(args))?;
    let mut rc = Ringcast::new(args.shards, args.send_path)?;
    eprintln!("[soak] connecting {calls} calls ...");
    rc.grow_to(calls, &sfu)?;
    std::thread::sleep(Duration::from_secs(1));
    let interval = Duration::from_secs_f64((seconds / 20.0).clamp(1.0, 60.0));
    let churn = calls * args.churn_pct / 100;
    let t0 = Instant::now();
    let (sfu0, lost0) = sfu.totals()?;
    let first = rc.sample();
    let mut prev = first.clone();
    let mut samples: Vec<Value> = Vec::new();
    let mut rss = Vec::new();
    let mut unexpected: Vec<Value> = Vec::new();
    while t0.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(interval);
        for (chat, reason) in rc.take_unexpected_ends() {
            eprintln!("[soak] call {chat} ended on its own: {reason:?}");
            unexpected.push(json!({"chat": chat, "reason": format!("{reason:?}")}));
        }
        if churn > 0 {
            rc.churn(churn, &sfu)?;
        }
        let s = rc.sample();
        let (packets, lost) = sfu.totals()?;
        let window = s.lateness.since(&prev.lateness);
        let (r, heap) = (rss_kb(), LIVE_BYTES.load(Ordering::Relaxed) / 1024);
        rss.push(r);
        let t = t0.elapsed().as_secs_f64();
        eprintln!(
            "[soak] {t:>6.0} s: {} calls, {} packets sent, {} counted by the SFU, lost {}, \
             p99 {:.2} ms, RSS {r} KB, heap {heap} KB",
            s.connected,
            s.packets_sent - first.packets_sent,
            packets - sfu0,
            lost - lost0,
            ms(window.percentile(0.99)),
        );
        samples.push(json!({
            "t_s": t, "calls": s.connected, "rss_kb": r, "heap_kb": heap,
            "packets_sent": s.packets_sent - first.packets_sent,
            "packets_counted_by_sfu": packets - sfu0, "lost": lost - lost0,
            "p99_lateness_ms": ms(window.percentile(0.99)),
        }));
        prev = s;
    }
    // Let the last packets land before the final count.
    std::thread::sleep(Duration::from_millis(300));
    let (packets, lost) = sfu.totals()?;
    let lost = lost - lost0;
    let warm = rss.get(rss.len() / 4).copied().unwrap_or(0);
    let end = rss.last().copied().unwrap_or(0);
    let allowed = warm / 20 + 4096;
    let flat = end <= warm + allowed;
    let all = prev.lateness.since(&first.lateness);
    let pass = lost == 0 && flat && unexpected.is_empty() && !samples.is_empty();
    eprintln!(
        "[soak] {:.0} s, {calls} calls, {} replaced, {} ended on their own: lost {lost}, RSS \
         {warm} KB after warm-up -> {end} KB at the end (allowed +{allowed} KB): {}",
        t0.elapsed().as_secs_f64(),
        churn * samples.len(),
        unexpected.len(),
        if pass { "pass" } else { "FAIL" }
    );
    Ok((
        json!({
            "soak_seconds": t0.elapsed().as_secs_f64(), "calls": calls,
            "calls_replaced": churn * samples.len(), "lost": lost,
            "packets_counted_by_sfu": packets - sfu0,
            "rss_kb_after_warmup": warm, "rss_kb_end": end, "rss_flat": flat,
            "p99_lateness_ms": ms(all.percentile(0.99)), "max_lateness_ms": ms(all.max()),
            "ended_unexpectedly": unexpected, "samples": samples, "pass": pass,
        }),
        pass,
    ))
}

fn streams_per_core(steps: &[Step], cores: usize) -> usize {
    steps
        .iter()
        .filter(|s| s.good())
        .map(|s| s.calls)
        .max()
        .unwrap_or(0)
        / cores.max(1)
}

/// A small SVG: p99 lateness and CPU per packet against calls, one line per system.
fn plot(series: &[(&str, &[Step])]) -> String {
    let (w, h, pad) = (720.0, 420.0, 50.0);
    let max_calls = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.calls))
        .max()
        .unwrap_or(1) as f64;
    let max_p99 = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.p99_ms))
        .fold(2.5, f64::max);
    let max_cpu = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.cpu_ns_per_packet))
        .fold(1.0, f64::max);
    let x = |c: usize| pad + (c as f64 / max_calls) * (w - 2.0 * pad);
    let y = |v: f64, max: f64| h - pad - (v / max) * (h - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\
         <rect width='100%' height='100%' fill='white'/>\
         <line x1='{pad}' y1='{}' x2='{}' y2='{}' stroke='black'/>\
         <line x1='{pad}' y1='{pad}' x2='{pad}' y2='{}' stroke='black'/>\
         <text x='{}' y='{}' text-anchor='middle'>calls (max {max_calls})</text>\
         <text x='10' y='20'>solid: p99 lateness (max {max_p99:.1} ms, target 2 ms dashed) · dotted: CPU ns/packet (max {max_cpu:.0})</text>\
         <line x1='{pad}' y1='{}' x2='{}' y2='{}' stroke='grey' stroke-dasharray='4'/>",
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        w / 2.0,
        h - 10.0,
        y(2.0, max_p99),
        w - pad,
        y(2.0, max_p99),
    );
    let colors = ["#1f77b4", "#d62728", "#2ca02c"];
    for (i, (name, steps)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let p99: Vec<String> = steps
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.calls), y(s.p99_ms, max_p99)))
            .collect();
        let cpu: Vec<String> = steps
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.calls), y(s.cpu_ns_per_packet, max_cpu)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill='none' stroke='{color}' stroke-width='2' points='{}'/>\
             <polyline fill='none' stroke='{color}' stroke-dasharray='2' points='{}'/>\
             <text x='{}' y='{}' fill='{color}'>{name}</text>",
            p99.join(" "),
            cpu.join(" "),
            w - pad - 120.0,
            pad + 16.0 * i as f64,
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn run(args: &Args) -> Result<(), String> {
    eprintln!(
        "load: steps {:?}, {} s each, {} shards{}",
        args.steps,
        args.step_seconds,
        args.shards,
        if args.quick { " (quick)" } else { "" }
    );
    raise_nofile(1 << 18);
    if args.pin && args.cores > args.shards {
        pin_self(args.shards)?;
    }
    if let Some(seconds) = args.soak {
        let (report, pass) = soak(seconds, args)?;
        std::fs::write(&args.report, format!("{report:#}\n")).map_err(|e| e.to_string())?;
        println!("{report}");
        return if pass {
            Ok(())
        } else {
            Err("soak failed: loss or RSS growth (see the report)".to_owned())
        };
    }
    let ours = if args.wants("ringcast") {
        let mut ringcast = Ringcast::new(args.shards, args.send_path)?;
        ramp(&mut ringcast, args)?
    } else {
        Vec::new()
    };
    let ours_spc = streams_per_core(&ours, args.shards);
    let mut baselines = serde_json::Map::new();
    let mut tokio_steps = Vec::new();
    if args.baseline && args.wants("tokio_per_call") {
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
    if args.baseline && args.wants("webrtc_rs") {
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
    let mut bursts = Vec::new();
    for &n in &args.bursts {
        for pool in [n, 0] {
            bursts.push(burst(n, pool, args)?);
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
        std::fs::write(path, plot(&series)).map_err(|e| e.to_string())?;
    }
    println!("{report}");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}
