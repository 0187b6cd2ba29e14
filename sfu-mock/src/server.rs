//! The SFU on real sockets: one UDP thread running [`Sfu`], a few HTTP threads serving the
//! loopback control API. The HTTP threads never touch SFU state; they send commands to the
//! UDP thread over a bounded channel, wake it (an eventfd it polls beside its socket) and wait
//! for the answer. Joins are therefore answered concurrently, as Telegram answers parallel
//! `phone.joinGroupCall` requests: while one request waits, the others are read and queued, and
//! the UDP thread handles every queued command each time it wakes.
//!
//! Control API:
//! - `POST /v1/chats/{chat_id}/join`, body = join payload JSON → 200 + response JSON, or 400
//!   `{"error": "..."}`;
//! - `POST /v1/chats/{chat_id}/leave`, body `{"ssrc": N}` → 200 `{}` or 404/400;
//! - `GET /v1/stats` → `{"chats": {"<chat_id>": [{"ssrc", "connected", "packets", "bytes",
//!   "lost", "dominant_hz", ...}]}, "dropped": {...}}`.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringcast_core::crypto::{CallCrypto, CryptoOptions};
use ringcast_core::str0m::config::DtlsCert;

use crate::control::parse_leave;
use crate::wake::{Waker, try_recv_from, wait};
use crate::{Misbehaviour, Sfu, SfuConfig};

/// Largest body the control API reads (a join payload is well under 1 KiB).
const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Queue between the HTTP and UDP threads.
const COMMAND_QUEUE: usize = 1024;
/// How long a control request waits for the UDP thread.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the UDP thread sleeps before checking its stop flag; datagrams, commands and the
/// stop itself wake it earlier.
const MAX_POLL: Duration = Duration::from_millis(50);
/// Shortest sleep when a participant's timer is already due (as before: a timer str0m keeps in
/// the past must not turn the loop into a busy spin).
const MIN_POLL: Duration = Duration::from_micros(100);
/// Datagrams read per wake-up before timers, commands and sends get their turn.
const RECV_BATCH: usize = 256;
/// Threads serving the control API. Each serves one request at a time and spends most of it
/// waiting for the UDP thread, so a few are enough to keep the command queue full: the UDP
/// thread then handles a batch of joins per wake-up. A slow client (a body that trickles in)
/// holds only its own thread.
const HTTP_WORKERS: usize = 8;
/// Requested SO_RCVBUF/SO_SNDBUF.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Receive buffer: larger than any datagram str0m produces (its MTU is 1150-1400).
const RECV_BUF: usize = 2048;

/// Options for [`Server::start`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// UDP address (port 0 = any free port). Must be a concrete IP: str0m matches the
    /// destination of every STUN check against it.
    pub udp: SocketAddr,
    /// HTTP control address (port 0 = any free port). Loopback by default; the control API
    /// has no authentication (anyone who reaches it can join, leave and read stats), so
    /// [`Server::start`] refuses a non-loopback address unless `allow_remote_control` is set.
    pub http: Option<SocketAddr>,
    /// Allow `http` on a non-loopback address (off by default).
    pub allow_remote_control: bool,
    /// Seed for the SFU's ICE credentials.
    pub seed: u64,
    /// See [`SfuConfig::analyse_audio`].
    pub analyse_audio: bool,
    /// See [`SfuConfig::forward_audio`].
    pub forward_audio: bool,
    /// See [`SfuConfig::header_only`].
    pub header_only: bool,
    /// Every datagram the SFU sends leaves this much later (zero: at once). Loopback answers
    /// within microseconds, faster than any real network; Telegram's SFU is tens of
    /// milliseconds away, and some clients (ntgcalls) miss their own Connected event when the
    /// handshake finishes too fast.
    pub latency: Duration,
    /// Up to this much more, drawn per datagram from the seed; datagrams may then leave out of
    /// order, as on a real network.
    pub jitter: Duration,
    /// See [`SfuConfig::drop_video_every`](crate::SfuConfig::drop_video_every).
    pub drop_video_every: Option<u64>,
    /// See [`SfuConfig::twcc_feedback`](crate::SfuConfig::twcc_feedback); on by default.
    pub twcc_feedback: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            udp: loopback,
            http: Some(loopback),
            allow_remote_control: false,
            seed: 1,
            analyse_audio: true,
            forward_audio: true,
            header_only: false,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            drop_video_every: None,
            twcc_feedback: true,
        }
    }
}

/// Errors of the in-process control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The SFU refused (bad payload, unknown participant...).
    #[error("{0}")]
    Refused(String),
    /// The UDP thread is gone or did not answer in time.
    #[error("sfu thread unavailable")]
    Unavailable,
}

enum Command {
    Join {
        chat_id: i64,
        body: Vec<u8>,
        reply: mpsc::Sender<Result<String, String>>,
    },
    Leave {
        chat_id: i64,
        ssrc: u32,
        reply: mpsc::Sender<Result<String, String>>,
    },
    Stats {
        reply: mpsc::Sender<serde_json::Value>,
    },
    Misbehave {
        chat_id: i64,
        ssrc: u32,
        how: Misbehaviour,
        reply: mpsc::Sender<Result<String, String>>,
    },
}

/// A running SFU. Dropping it stops both threads.
#[derive(Debug)]
pub struct Server {
    udp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    commands: SyncSender<Command>,
    /// Wakes the UDP thread after a command is queued (and to stop it).
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the sockets and starts the threads. Fails with `InvalidInput` if the control
    /// address is not loopback and [`ServerOptions::allow_remote_control`] is not set.
    pub fn start(options: ServerOptions) -> io::Result<Self> {
        if let Some(http) = options.http
            && !http.ip().is_loopback()
            && !options.allow_remote_control
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "refusing to serve the unauthenticated control api on non-loopback {http} \
                     (allow it explicitly: --allow-remote-control)"
                ),
            ));
        }
        let socket = UdpSocket::bind(options.udp)?;
        // Hundreds of calls send their frames in bursts; the default buffer (208 KiB) drops
        // them. The kernel caps this at net.core.rmem_max (scripts/setup.sh raises it).
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        let udp_addr = socket.local_addr()?;
        if udp_addr.ip().is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the sfu's udp address must be a concrete ip (str0m matches it against STUN destinations)",
            ));
        }
        let cert = generate_cert()?;
        let mut config = SfuConfig::new(udp_addr, options.seed, cert);
        config.crypto = Some(
            CallCrypto::new(CryptoOptions::default())
                .map_err(|e| io::Error::other(e.to_string()))?
                .provider(),
        );
        config.analyse_audio = options.analyse_audio;
        config.forward_audio = options.forward_audio;
        config.header_only = options.header_only;
        config.drop_video_every = options.drop_video_every;
        config.twcc_feedback = options.twcc_feedback;
        let delay = DelayLine::new(options.latency, options.jitter, options.seed);
        let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
        let waker = Arc::new(Waker::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();

        let udp_stop = stop.clone();
        let udp_waker = waker.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sfu-udp".to_owned())
                .spawn(move || udp_loop(socket, config, delay, rx, &udp_waker, &udp_stop))?,
        );

        let mut http_addr = None;
        if let Some(addr) = options.http {
            let listener = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("http bind {addr}: {e}")))?;
            // Accepted connections inherit TCP_NODELAY from the listener. Without it, an
            // answer longer than tiny_http's 1 KiB write buffer leaves as two segments and the
            // second waits for the client's delayed ACK: ~40 ms per join on a kept-alive
            // connection, several ms on a fresh one.
            socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
            let http = tiny_http::Server::from_listener(listener, None)
                .map_err(|e| io::Error::other(format!("http server on {addr}: {e}")))?;
            let bound = http
                .server_addr()
                .to_ip()
                .ok_or_else(|| io::Error::other("http server has no ip address"))?;
            http_addr = Some(bound);
            let http = Arc::new(http);
            for i in 0..HTTP_WORKERS {
                let http = http.clone();
                let http_stop = stop.clone();
                let control = Control {
                    commands: tx.clone(),
                    waker: waker.clone(),
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("sfu-http-{i}"))
                    .spawn(move || http_loop(&http, &control, &http_stop));
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        // Stop what already runs before reporting.
                        stop.store(true, Ordering::Relaxed);
                        waker.wake();
                        for t in threads {
                            let _ = t.join();
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(Self {
            udp_addr,
            http_addr,
            commands: tx,
            waker,
            stop,
            threads,
        })
    }

    /// The UDP address every participant talks to.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The HTTP control address, if started with one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The join URL of a chat on this server's control API.
    pub fn join_url(&self, chat_id: i64) -> Option<String> {
        self.http_addr
            .map(|a| format!("http://{a}/v1/chats/{chat_id}/join"))
    }

    /// Sends a command to the UDP thread and waits for its answer.
    fn request<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Command) -> Result<T, ControlError> {
        let (reply, rx) = mpsc::channel();
        send(&self.commands, &self.waker, make(reply))?;
        rx.recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| ControlError::Unavailable)
    }

    /// Joins in-process (same as `POST .../join`).
    pub fn join(&self, chat_id: i64, payload: &[u8]) -> Result<String, ControlError> {
        self.request(|reply| Command::Join {
            chat_id,
            body: payload.to_vec(),
            reply,
        })?
        .map_err(ControlError::Refused)
    }

    /// Leaves in-process (same as `POST .../leave`).
    pub fn leave(&self, chat_id: i64, ssrc: u32) -> Result<(), ControlError> {
        self.request(|reply| Command::Leave {
            chat_id,
            ssrc,
            reply,
        })?
        .map(|_| ())
        .map_err(ControlError::Refused)
    }

    /// Makes one participant misbehave (tests of the engine's isolation). In-process only.
    pub fn misbehave(
        &self,
        chat_id: i64,
        ssrc: u32,
        how: Misbehaviour,
    ) -> Result<(), ControlError> {
        self.request(|reply| Command::Misbehave {
            chat_id,
            ssrc,
            how,
            reply,
        })?
        .map(|_| ())
        .map_err(ControlError::Refused)
    }

    /// Asks the participant for a key frame of its video (an RTCP PLI with its next video
    /// packet). In-process only.
    pub fn request_keyframe(&self, chat_id: i64, ssrc: u32) -> Result<(), ControlError> {
        self.misbehave(chat_id, ssrc, Misbehaviour::RequestKeyframe)
    }

    /// Stats in-process (same JSON as `GET /v1/stats`).
    pub fn stats(&self) -> Result<serde_json::Value, ControlError> {
        self.request(|reply| Command::Stats { reply })
    }

    /// Stops the threads and waits for them.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.waker.wake();
        for t in self.threads.drain(..) {
            // A panicked thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// What an HTTP thread needs to reach the UDP thread.
struct Control {
    commands: SyncSender<Command>,
    waker: Arc<Waker>,
}

/// Queues a command for the UDP thread and wakes it.
fn send(commands: &SyncSender<Command>, waker: &Waker, cmd: Command) -> Result<(), ControlError> {
    match commands.try_send(cmd) {
        Ok(()) => {
            waker.wake();
            Ok(())
        }
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            Err(ControlError::Unavailable)
        }
    }
}

/// A fresh self-signed DTLS certificate.
pub fn generate_cert() -> io::Result<DtlsCert> {
    ringcast_core::crypto::generate_certificate()
        .ok_or_else(|| io::Error::other("dtls certificate generation failed"))
}

/// Datagrams held back by [`ServerOptions::latency`], at most this many; beyond it a datagram is
/// dropped and counted (`delay_dropped` in the stats).
const MAX_DELAYED: usize = 65_536;

/// A held-back datagram: when it may leave, its send order, where it goes, its bytes.
type Delayed = std::cmp::Reverse<(Instant, u64, SocketAddr, Vec<u8>)>;

/// The delay line of [`ServerOptions::latency`] and [`ServerOptions::jitter`]: datagrams by the
/// instant they may leave.
struct DelayLine {
    latency: Duration,
    jitter: Duration,
    rng: fastrand::Rng,
    queue: std::collections::BinaryHeap<Delayed>,
    /// Insertion counter: equal due times leave in the order they were sent.
    order: u64,
    dropped: u64,
}

impl DelayLine {
    fn new(latency: Duration, jitter: Duration, seed: u64) -> Self {
        Self {
            latency,
            jitter,
            rng: fastrand::Rng::with_seed(seed),
            queue: std::collections::BinaryHeap::new(),
            order: 0,
            dropped: 0,
        }
    }

    fn is_off(&self) -> bool {
        self.latency.is_zero() && self.jitter.is_zero()
    }

    fn push(&mut self, now: Instant, destination: SocketAddr, contents: Vec<u8>) {
        if self.queue.len() >= MAX_DELAYED {
            self.dropped += 1;
            tracing::debug!(dropped = self.dropped, "sfu delay line full");
            return;
        }
        let extra = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.f64())
        };
        self.order += 1;
        self.queue.push(std::cmp::Reverse((
            now + self.latency + extra,
            self.order,
            destination,
            contents,
        )));
    }

    /// The next datagram due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.queue.peek().is_some_and(|e| e.0.0 <= now) {
            return self.queue.pop().map(|e| (e.0.2, e.0.3));
        }
        None
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|e| e.0.0)
    }
}

fn udp_loop(
    socket: UdpSocket,
    config: SfuConfig,
    mut delay: DelayLine,
    commands: Receiver<Command>,
    waker: &Waker,
    stop: &AtomicBool,
) {
    let local = config.udp_addr;
    let mut sfu = Sfu::new(Instant::now(), config);
    let mut buf = vec![0u8; RECV_BUF];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let next = [sfu.poll_timeout(), delay.next_due()]
            .into_iter()
            .flatten()
            .min();
        let timeout = next
            .map_or(MAX_POLL, |t| t.saturating_duration_since(now).min(MAX_POLL))
            .max(MIN_POLL);
        let ready = match wait(&socket, waker, timeout) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("sfu poll: {e}");
                break;
            }
        };
        if ready.readable {
            // Level-triggered: whatever is left after one batch wakes the next wait at once.
            for _ in 0..RECV_BATCH {
                match try_recv_from(&socket, &mut buf) {
                    Ok(Some((n, source))) => {
                        let data = buf.get(..n).unwrap_or(&[]);
                        sfu.handle_datagram(Instant::now(), source, local, data);
                    }
                    Ok(None) => break,
                    Err(e) => tracing::debug!("sfu recv: {e}"),
                }
            }
        }
        let now = Instant::now();
        if sfu.poll_timeout().is_some_and(|t| t <= now) {
            sfu.handle_timeout(now);
        }
        while let Ok(cmd) = commands.try_recv() {
            handle_command(&mut sfu, cmd, delay.dropped);
        }
        let now = Instant::now();
        while let Some(t) = sfu.poll_transmit() {
            if delay.is_off() {
                send_datagram(&socket, t.destination, &t.contents);
            } else {
                delay.push(now, t.destination, t.contents);
            }
        }
        while let Some((destination, contents)) = delay.pop_due(now) {
            send_datagram(&socket, destination, &contents);
        }
    }
}

fn send_datagram(socket: &UdpSocket, destination: SocketAddr, contents: &[u8]) {
    if let Err(e) = socket.send_to(contents, destination) {
        tracing::debug!(dest = %destination, "sfu send: {e}");
    }
}

/// `delay_dropped`: datagrams the delay line dropped when full, reported with the stats.
fn handle_command(sfu: &mut Sfu, cmd: Command, delay_dropped: u64) {
    // A requester that gave up waiting is not an error for the SFU.
    match cmd {
        Command::Join {
            chat_id,
            body,
            reply,
        } => {
            let _ = reply.send(
                sfu.join(Instant::now(), chat_id, &body)
                    .map_err(|e| e.to_string()),
            );
        }
        Command::Leave {
            chat_id,
            ssrc,
            reply,
        } => {
            let _ = reply.send(
                sfu.leave(chat_id, ssrc)
                    .map(|()| "{}".to_owned())
                    .map_err(|e| e.to_string()),
            );
        }
        Command::Stats { reply } => {
            let mut stats = sfu.stats_json();
            if let Some(map) = stats.as_object_mut() {
                map.insert("delay_dropped".to_owned(), delay_dropped.into());
            }
            let _ = reply.send(stats);
        }
        Command::Misbehave {
            chat_id,
            ssrc,
            how,
            reply,
        } => {
            let _ = reply.send(
                sfu.misbehave(chat_id, ssrc, how)
                    .map(|()| "{}".to_owned())
                    .map_err(|e| e.to_string()),
            );
        }
    }
}

fn http_loop(http: &tiny_http::Server, control: &Control, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let request = match http.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!("http recv: {e}");
                continue;
            }
        };
        serve(request, control);
    }
}

fn serve(mut request: tiny_http::Request, control: &Control) {
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body);
    let (status, json) = if read.is_err() {
        (400, error_json("could not read body"))
    } else if body.len() as u64 > MAX_BODY_BYTES {
        (413, error_json("body too large"))
    } else {
        route(request.method(), request.url(), body, control)
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]);
    let mut response = tiny_http::Response::from_string(json).with_status_code(status);
    if let Ok(h) = header {
        response = response.with_header(h);
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!("http respond: {e}");
    }
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn route(method: &tiny_http::Method, url: &str, body: Vec<u8>, control: &Control) -> (u16, String) {
    let path = url.split('?').next().unwrap_or(url);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (tiny_http::Method::Get, ["v1", "stats"]) => {
            let (reply, rx) = mpsc::channel();
            if send(&control.commands, &control.waker, Command::Stats { reply }).is_err() {
                return (503, error_json("sfu busy"));
            }
            match rx.recv_timeout(COMMAND_TIMEOUT) {
                Ok(v) => (200, v.to_string()),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    (503, error_json("sfu unavailable"))
                }
            }
        }
        (tiny_http::Method::Post, ["v1", "chats", chat, action]) => {
            let Ok(chat_id) = chat.parse::<i64>() else {
                return (400, error_json("chat_id must be an integer"));
            };
            let (reply, rx) = mpsc::channel();
            let cmd = match *action {
                "join" => Command::Join {
                    chat_id,
                    body,
                    reply,
                },
                "leave" => match parse_leave(&body) {
                    Ok(ssrc) => Command::Leave {
                        chat_id,
                        ssrc,
                        reply,
                    },
                    Err(e) => return (400, error_json(&e)),
                },
                _ => return (404, error_json("no such action")),
            };
            if send(&control.commands, &control.waker, cmd).is_err() {
                return (503, error_json("sfu busy"));
            }
            match rx.recv_timeout(COMMAND_TIMEOUT) {
                Ok(Ok(json)) => (200, json),
                Ok(Err(e)) => {
                    let status = if e.starts_with("no participant") {
                        404
                    } else {
                        400
                    };
                    (status, error_json(&e))
                }
                Err(_) => (503, error_json("sfu unavailable")),
            }
        }
        _ => (404, error_json("not found")),
    }
}
