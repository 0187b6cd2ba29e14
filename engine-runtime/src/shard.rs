//! A shard: one thread, one io_uring, one [`Endpoint`] and the sockets it sends from.
//!
//! Everything in here runs on the shard's thread; call state needs no lock. The API reaches
//! the shard through a bounded command queue polled every [`COMMAND_POLL`] at worst; received
//! datagrams arrive on the shard's receive ring ([`crate::uring_recv`]: one receive in flight
//! per socket, the pool's shared sockets and 1:1 calls' own ones alike, cancelled explicitly
//! when a socket goes and when the shard stops). Each turn of the loop is one pacer tick:
//! every packet due is collected from the endpoint and all of them are submitted together: by
//! default on the shard's private send ring ([`crate::uring_send`], pre-allocated slots, one
//! `io_uring_enter` per tick), or as joined tokio-uring futures ([`SendPath::TokioUring`]).
//!
//! The endpoint names sockets ([`Socket`]); the shard's [`Sockets`] table maps a name to the
//! descriptor, so receiving, flushing and event mapping are each one path for both call kinds.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_util::future::join_all;
use ringcast_core::call::{self, CallConfig};
use ringcast_core::endpoint::{
    CallId, CallSnapshot, Endpoint, EndpointEvent, EndpointStats, P2pSnapshot, Socket,
};
use ringcast_core::media::track::ReceivedAudio;
use ringcast_core::p2p_call::{self, P2pConfig};
use ringcast_core::signaling::group::JoinResponse;
use tokio::sync::Notify;

use crate::engine::{EngineEvent, EventKind, LatenessCauses, SendPath};
use crate::error::EngineError;
use crate::pcm::PcmSinks;
use crate::pool::{Owner, SocketPool, socket_error};
use crate::uring_recv::{RecvId, UringReceiver};
use crate::uring_send::UringSender;

/// Longest the shard sleeps before looking at the command queue.
const COMMAND_POLL: Duration = Duration::from_millis(2);
/// Commands handled per loop turn, so a flood of API calls cannot starve media.
const COMMANDS_PER_TURN: usize = 256;
/// Received datagrams handled per loop turn (the rest wait in the sockets' buffers), so a
/// flood cannot starve the pacer.
const RX_PER_TURN: usize = 4096;
/// Longest a stopping shard waits for its receives' cancellations.
const STOP_LIMIT: Duration = Duration::from_secs(1);
/// Receive buffer size: above str0m's largest datagram.
const RX_BUF: usize = 2048;
/// Sends submitted per batch on the tokio-uring path (bounds the futures alive at once).
const SEND_BATCH: usize = 1024;
/// Datagrams in flight at once on the batched path (slots of the send ring).
const SEND_SLOTS: usize = 16_384;

/// Requests from the API threads.
pub(crate) enum Request {
    Create {
        chat_id: i64,
        config: CallConfig,
        reply: Sender<Result<String, EngineError>>,
    },
    Connect {
        chat_id: i64,
        response: Box<JoinResponse>,
        reply: Sender<Result<(), EngineError>>,
    },
    Command {
        chat_id: i64,
        command: ringcast_core::Command,
        reply: Sender<Result<(), EngineError>>,
    },
    Info {
        chat_id: i64,
        reply: Sender<Option<CallSnapshot>>,
    },
    /// Is this id taken by a live group or 1:1 call?
    Exists {
        chat_id: i64,
        reply: Sender<bool>,
    },
    /// Bind a socket and start a 1:1 call on it, then apply the commands in order.
    CreateP2p {
        user_id: i64,
        config: Box<P2pConfig>,
        commands: Vec<p2p_call::Command>,
        reply: Sender<Result<(), EngineError>>,
    },
    P2pSignaling {
        user_id: i64,
        bytes: Vec<u8>,
        reply: Sender<Result<(), EngineError>>,
    },
    P2pInfo {
        user_id: i64,
        reply: Sender<Option<P2pSnapshot>>,
    },
    P2pList {
        reply: Sender<Vec<P2pSnapshot>>,
    },
    List {
        reply: Sender<Vec<CallSnapshot>>,
    },
    Stats {
        reply: Sender<ShardStats>,
    },
    /// Decode a call's received audio into a PCM sink ([`crate::Engine::set_pcm_sink`]).
    SetPcmSink {
        chat_id: i64,
        sink: Box<ringcast_core::media::PcmSink>,
        reply: Sender<Result<(), EngineError>>,
    },
    /// Test-only fault hook ([`Engine::inject_panic`](crate::Engine::inject_panic)).
    InjectPanic {
        chat_id: i64,
        reply: Sender<Result<(), EngineError>>,
    },
    Shutdown,
}

/// What a shard reports for [`crate::Engine::stats`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardStats {
    pub(crate) endpoint: EndpointStats,
    pub(crate) dropped_rx_queue_full: u64,
    pub(crate) send_errors: u64,
    pub(crate) dropped_send_buffer_full: u64,
    pub(crate) forwarded_out: u64,
    pub(crate) dropped_forward_full: u64,
    pub(crate) causes: LatenessCauses,
}

/// Shard settings.
#[derive(Debug, Clone)]
pub(crate) struct ShardConfig {
    pub(crate) index: usize,
    pub(crate) receive_audio: bool,
    pub(crate) send_path: SendPath,
    pub(crate) pool: Arc<SocketPool>,
    /// One bounded queue into every shard (this one's included), for datagrams that arrived
    /// here but belong to a call on another shard.
    pub(crate) forward: Vec<Sender<Datagram>>,
    pub(crate) forwarded: Receiver<Datagram>,
    /// Every shard's wake-up (indexed like `forward`): notified after queueing work for it.
    pub(crate) wakes: Vec<Arc<Notify>>,
}

/// A received datagram.
#[derive(Debug)]
pub(crate) struct Datagram {
    socket: Socket,
    source: SocketAddr,
    contents: Vec<u8>,
}

/// One of the shard's sockets: its descriptor closes when this drops.
struct ShardSocket {
    handle: SocketHandle,
    /// How the batched send ring names it.
    ring: RingSocket,
    /// Its receive on the shard's receive ring.
    rx: RecvId,
}

/// A shard's descriptor of a socket, as its send path wants it.
enum SocketHandle {
    /// The batched send path sends by descriptor from the send ring.
    Std(std::net::UdpSocket),
    /// The tokio-uring send path sends with `send_to` futures.
    TokioUring(Rc<tokio_uring::net::UdpSocket>),
}

impl SocketHandle {
    fn new(socket: std::net::UdpSocket, path: SendPath) -> Self {
        match path {
            SendPath::IoUringBatch => Self::Std(socket),
            SendPath::TokioUring => {
                Self::TokioUring(Rc::new(tokio_uring::net::UdpSocket::from_std(socket)))
            }
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Self::Std(s) => s.as_raw_fd(),
            Self::TokioUring(s) => s.as_raw_fd(),
        }
    }
}

/// A socket as [`UringSender`] knows it.
#[derive(Clone, Copy)]
enum RingSocket {
    /// A pool socket, in the ring's table under its [`SocketId`](ringcast_core::endpoint::SocketId).
    Registered(usize),
    /// A 1:1 call's own socket, by descriptor.
    Fd(std::os::fd::RawFd),
}

/// The shard's sockets by the name the endpoint gives them (quinn's runtime boundary: the
/// endpoint says which socket, the runtime holds the descriptor).
#[derive(Default)]
struct Sockets {
    /// The pool's sockets by `SocketId` (registered in pool order, so ids agree across shards).
    shared: Vec<ShardSocket>,
    /// 1:1 calls' own sockets.
    own: HashMap<CallId, ShardSocket>,
}

impl Sockets {
    fn get(&self, socket: Socket) -> Option<&ShardSocket> {
        match socket {
            Socket::Shared(id) => self.shared.get(id.0),
            Socket::Own(id) => self.own.get(&id),
        }
    }
}

struct Shard {
    config: ShardConfig,
    endpoint: Endpoint,
    events: Sender<EngineEvent>,
    sockets: Sockets,
    /// Reaped 1:1 calls whose own sockets (still in `sockets`) close after the next flush, so
    /// their last datagrams (DTLS close_notify) go out first.
    closing: Vec<CallId>,
    /// The batched send ring ([`SendPath::IoUringBatch`]).
    sender: Option<UringSender>,
    /// Every socket's receive.
    receiver: UringReceiver,
    send_errors: u64,
    dropped_events: u64,
    forwarded_out: u64,
    dropped_forward_full: u64,
    causes: LatenessCauses,
    /// Calls whose received audio is decoded to PCM for the application.
    pcm_sinks: PcmSinks,
}

/// The shard thread's body.
pub(crate) fn run(
    config: ShardConfig,
    commands: Receiver<Request>,
    events: Sender<EngineEvent>,
    ready: Sender<io::Result<()>>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
) {
    let sender = match config.send_path {
        SendPath::IoUringBatch => match UringSender::new(SEND_SLOTS) {
            Ok(s) => Some(s),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        },
        SendPath::TokioUring => None,
    };
    let mut receiver = match UringReceiver::new(RX_BUF) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    tokio_uring::start(async move {
        if let Err(e) = receiver.register() {
            let _ = ready.send(Err(e));
            return;
        }
        let mut shard = Shard {
            sender,
            receiver,
            endpoint: Endpoint::new(Instant::now(), config.index),
            config,
            events,
            sockets: Sockets::default(),
            closing: Vec::new(),
            send_errors: 0,
            dropped_events: 0,
            forwarded_out: 0,
            dropped_forward_full: 0,
            causes: LatenessCauses::default(),
            pcm_sinks: PcmSinks::default(),
        };
        if let Err(e) = shard.sync_sockets() {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        shard.run(commands).await;
        shard.stop();
        stopped.store(true, std::sync::atomic::Ordering::Release);
        // Nothing of tokio-uring is in flight any more (receives are on the shard's own ring,
        // tokio-uring sends are awaited within their tick), so its runtime drops cleanly
        // here (tokio-rs/tokio-uring#328 is about dropping it with receives in flight), and
        // the thread ends.
    });
}

impl Shard {
    /// Ends the shard: every receive cancelled and waited for (bounded), then the calls, the
    /// sockets and both rings go.
    fn stop(mut self) {
        if !self.receiver.shutdown(STOP_LIMIT) {
            tracing::warn!(
                "shard {}: receives still in flight at stop",
                self.config.index
            );
        }
        // The endpoint's last datagrams (DTLS close_notify of calls it ended) go out first.
        if let Some(sender) = &mut self.sender {
            sender.submit();
        }
        let Self {
            endpoint,
            events,
            sockets,
            sender,
            receiver,
            ..
        } = self;
        drop(endpoint);
        drop(events);
        // The send ring waits (bounded) for its sends in flight before its slots go.
        drop(sender);
        drop(sockets);
        drop(receiver);
    }

    async fn run(&mut self, commands: Receiver<Request>) {
        // The pacer deadline the shard last slept for.
        let mut slept_for: Option<Instant> = None;
        loop {
            let woke = Instant::now();
            if let Some(deadline) = slept_for.take()
                && woke >= deadline
            {
                self.causes.timer.record(woke - deadline);
            }
            for _ in 0..COMMANDS_PER_TURN {
                match commands.try_recv() {
                    Ok(Request::Shutdown) => return,
                    Ok(req) => self.handle_request(req),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                }
            }
            if let Err(e) = self.sync_sockets() {
                tracing::warn!("registering a pool socket: {e}");
            }
            self.handle_received();
            let tick = Instant::now();
            let ticking = self.endpoint.poll_timeout().is_some_and(|t| t <= tick);
            self.endpoint.handle_timeout(tick);
            self.after_work();
            let ticked = Instant::now();
            self.flush().await;
            if ticking {
                self.causes.before_tick.record(tick - woke);
                self.causes.tick.record(ticked - tick);
                self.causes.flush.record(ticked.elapsed());
            }
            for id in std::mem::take(&mut self.closing) {
                if let Some(s) = self.sockets.own.remove(&id) {
                    self.close_own_socket(s);
                }
            }

            let now = Instant::now();
            let pacer = self.endpoint.poll_timeout();
            let next = pacer.map_or(now + COMMAND_POLL, |t| t.min(now + COMMAND_POLL));
            if next > now
                && !self.receiver.has_completions()
                && self.config.forwarded.is_empty()
                && commands.is_empty()
            {
                slept_for = pacer.filter(|t| *t == next);
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
                let wake = self.config.wakes.get(self.config.index).cloned();
                let woken = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                };
                let received = self.receiver.readable();
                tokio::select! {
                    () = sleep => {}
                    () = received => {}
                    () = woken => {}
                }
            }
        }
    }

    /// Registers every pool socket this shard does not have yet (in pool order, so socket
    /// ids agree across shards) and starts receiving on it.
    fn sync_sockets(&mut self) -> io::Result<()> {
        while self.sockets.shared.len() < self.config.pool.len() {
            let (std_socket, addr) = self.config.pool.clone_socket(self.sockets.shared.len())?;
            if let Some(sender) = &mut self.sender {
                sender.add_socket(std_socket.as_raw_fd());
            }
            let handle = SocketHandle::new(std_socket, self.config.send_path);
            let id = self.endpoint.add_socket(addr);
            let rx = self.receiver.add(id.into(), handle.fd());
            self.sockets.shared.push(ShardSocket {
                handle,
                ring: RingSocket::Registered(id.0),
                rx,
            });
        }
        Ok(())
    }

    /// Routes received datagrams: to this shard's calls without any lock; to another shard
    /// (via the pool's ownership table and its forward queue) when the call lives there.
    fn handle_received(&mut self) {
        let now = Instant::now();
        while let Ok(d) = self.config.forwarded.try_recv() {
            self.endpoint
                .handle_datagram(now, d.socket, d.source, &d.contents);
        }
        let Self {
            receiver,
            endpoint,
            config,
            forwarded_out,
            dropped_forward_full,
            ..
        } = self;
        receiver.reap(RX_PER_TURN, |socket, source, contents| {
            if let Socket::Shared(shared) = socket
                && !endpoint.routes(shared, &source, contents)
                && let Some(owner) = config.pool.owner(shared, &source, contents)
                && owner != config.index
                && let Some(tx) = config.forward.get(owner)
            {
                let d = Datagram {
                    socket,
                    source,
                    contents: contents.to_vec(),
                };
                match tx.try_send(d) {
                    Ok(()) => {
                        *forwarded_out += 1;
                        if let Some(wake) = config.wakes.get(owner) {
                            wake.notify_one();
                        }
                    }
                    Err(_) => *dropped_forward_full += 1,
                }
                return;
            }
            // Ours, or nobody's (the endpoint counts it as unroutable). Stamped when it is
            // handled: reaping goes on past `now`, and a datagram stamped before it arrived
            // skews round-trip times (RTCP's DLSR) negative.
            endpoint.handle_datagram(Instant::now(), socket, source, contents);
        });
    }

    /// Gives the pool back what reaped calls held; queues reaped 1:1 calls' sockets for
    /// closing.
    fn release_reaped(&mut self) {
        while let Some(r) = self.endpoint.poll_reaped() {
            self.pcm_sinks.remove(r.id.0);
            if r.socket == Some(Socket::Own(r.id)) {
                if self.sockets.own.contains_key(&r.id) && !self.closing.contains(&r.id) {
                    self.closing.push(r.id);
                }
            } else {
                self.config.pool.release(self.owner(r.id));
            }
        }
    }

    /// This shard's call `id` as the pool knows it.
    fn owner(&self, id: CallId) -> Owner {
        Owner {
            shard: self.config.index,
            call: id,
        }
    }

    /// Binds the 1:1 call's own socket, creates the call on it and applies `commands`.
    fn create_p2p(
        &mut self,
        id: CallId,
        mut config: P2pConfig,
        commands: Vec<p2p_call::Command>,
    ) -> Result<(), EngineError> {
        let now = Instant::now();
        // The id's previous call was reaped this turn: close its socket now (its last
        // datagrams, not flushed yet, are lost and counted as send errors).
        if let Some(pos) = self.closing.iter().position(|c| *c == id) {
            self.closing.swap_remove(pos);
            if let Some(s) = self.sockets.own.remove(&id) {
                self.close_own_socket(s);
            }
        }
        if self.sockets.own.contains_key(&id) || self.endpoint.contains(id) {
            return Err(EngineError::ConnectionExists(id.0));
        }
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(self.config.pool.ip(), 0))
            .map_err(socket_error)?;
        config.local_addr = std_socket.local_addr()?;
        self.endpoint
            .create_p2p_call(now, id, config)
            .map_err(EngineError::from)?;
        let handle = SocketHandle::new(std_socket, self.config.send_path);
        let fd = handle.fd();
        let rx = self.receiver.add(Socket::Own(id), fd);
        self.sockets.own.insert(
            id,
            ShardSocket {
                handle,
                ring: RingSocket::Fd(fd),
                rx,
            },
        );
        for command in commands {
            self.endpoint
                .p2p_command(now, id, command)
                .map_err(EngineError::from)?;
        }
        Ok(())
    }

    fn connect(&mut self, id: CallId, response: &JoinResponse) -> Result<(), EngineError> {
        let now = Instant::now();
        let ufrag = self
            .endpoint
            .local_ufrag(id)
            .ok_or(EngineError::ConnectionNotFound(id.0))?
            .to_owned();
        let remotes: Vec<SocketAddr> = response
            .transport
            .candidates
            .iter()
            .map(|c| c.address())
            .collect();
        let owner = self.owner(id);
        let socket = self
            .config
            .pool
            .place(owner, &remotes, &ufrag)
            .map_err(socket_error)?;
        let result = self.sync_sockets().map_err(EngineError::Io).and_then(|()| {
            self.endpoint
                .connect_on(now, id, response, socket)
                .map_err(EngineError::from)
        });
        if result.is_err() {
            self.config.pool.release(owner);
        }
        result
    }

    fn handle_request(&mut self, req: Request) {
        let now = Instant::now();
        match req {
            Request::Create {
                chat_id,
                config,
                reply,
            } => {
                let r = self
                    .endpoint
                    .create_call(now, CallId(chat_id), config)
                    .map_err(EngineError::from);
                let _ = reply.send(r);
            }
            Request::Connect {
                chat_id,
                response,
                reply,
            } => {
                let _ = reply.send(self.connect(CallId(chat_id), &response));
            }
            Request::Command {
                chat_id,
                command,
                reply,
            } => {
                let r = self
                    .endpoint
                    .command(now, CallId(chat_id), command)
                    .map_err(EngineError::from);
                let _ = reply.send(r);
            }
            Request::Info { chat_id, reply } => {
                let _ = reply.send(self.endpoint.call(CallId(chat_id)));
            }
            Request::Exists { chat_id, reply } => {
                let _ = reply.send(self.endpoint.contains(CallId(chat_id)));
            }
            Request::CreateP2p {
                user_id,
                config,
                commands,
                reply,
            } => {
                let _ = reply.send(self.create_p2p(CallId(user_id), *config, commands));
            }
            Request::P2pSignaling {
                user_id,
                bytes,
                reply,
            } => {
                let r = self
                    .endpoint
                    .p2p_signaling(now, CallId(user_id), &bytes)
                    .map_err(EngineError::from);
                let _ = reply.send(r);
            }
            Request::P2pInfo { user_id, reply } => {
                let _ = reply.send(self.endpoint.p2p_call(CallId(user_id)));
            }
            Request::P2pList { reply } => {
                let _ = reply.send(self.endpoint.p2p_calls());
            }
            Request::List { reply } => {
                let _ = reply.send(self.endpoint.calls());
            }
            Request::Stats { reply } => {
                let mut endpoint = self.endpoint.stats().clone();
                endpoint.dropped_events += self.dropped_events;
                let _ = reply.send(ShardStats {
                    endpoint,
                    // Received datagrams wait in the sockets' buffers, not in a queue of ours.
                    dropped_rx_queue_full: 0,
                    send_errors: self.send_errors
                        + self.sender.as_ref().map_or(0, |s| s.counters().errors),
                    dropped_send_buffer_full: self
                        .sender
                        .as_ref()
                        .map_or(0, |s| s.counters().dropped_full),
                    forwarded_out: self.forwarded_out,
                    dropped_forward_full: self.dropped_forward_full,
                    causes: self.causes.clone(),
                });
            }
            Request::SetPcmSink {
                chat_id,
                sink,
                reply,
            } => {
                let _ = reply.send(self.pcm_sinks.attach(&self.endpoint, chat_id, *sink));
            }
            Request::InjectPanic { chat_id, reply } => {
                let _ = reply.send(
                    self.endpoint
                        .inject_panic(CallId(chat_id))
                        .map_err(EngineError::from),
                );
            }
            Request::Shutdown => {}
        }
        // A command may have ended (and reaped) a call: release its sockets at once too.
        self.after_work();
    }

    /// Moves the endpoint's events to the engine's channel and releases reaped calls'
    /// sockets. Called after every batch of work.
    fn after_work(&mut self) {
        self.forward_events();
        self.release_reaped();
    }

    fn forward_events(&mut self) {
        use EndpointEvent::{Group, P2p};
        while let Some((id, e)) = self.endpoint.poll_event() {
            let kind = match e {
                Group(call::Event::ConnectionChanged(state)) => {
                    Some(EventKind::ConnectionChanged(state))
                }
                P2p(p2p_call::Event::StateChanged(state)) => {
                    Some(EventKind::P2pConnectionChanged(state))
                }
                Group(call::Event::StreamEnded { track, error })
                | P2p(p2p_call::Event::StreamEnded { track, error }) => {
                    Some(EventKind::StreamEnded { track, error })
                }
                Group(call::Event::MediaStateChanged(m)) => Some(EventKind::MediaStateChanged(m)),
                EndpointEvent::Signaling(bytes) => Some(EventKind::SignalingData(bytes)),
                Group(call::Event::AudioReceived(ReceivedAudio {
                    ssrc, seq, payload, ..
                }))
                | P2p(p2p_call::Event::AudioReceived(ReceivedAudio {
                    ssrc, seq, payload, ..
                })) => {
                    self.pcm_sinks.on_audio(id.0, ssrc.0, seq, &payload);
                    self.config
                        .receive_audio
                        .then_some(EventKind::AudioReceived {
                            ssrc: ssrc.0,
                            seq,
                            payload,
                        })
                }
                Group(call::Event::VideoReceived(v)) => Some(EventKind::VideoReceived {
                    endpoint: v.endpoint,
                    ssrc: v.ssrc.0,
                    frame: v.frame,
                }),
                _ => None,
            };
            if let Some(kind) = kind {
                let (chat_id, presentation) = crate::engine::split_call_id(id.0);
                self.emit(EngineEvent {
                    chat_id,
                    presentation,
                    kind,
                });
            }
        }
    }

    fn emit(&mut self, event: EngineEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped_events += 1;
            }
        }
    }

    /// Closes a 1:1 call's own socket: its receive is cancelled (the ring keeps the socket
    /// until the cancellation completes) and the shard's descriptor closes.
    fn close_own_socket(&mut self, s: ShardSocket) {
        self.receiver.remove(s.rx);
        self.receiver.submit();
        drop(s);
    }

    /// Submits everything the endpoint wants sent, whichever socket it leaves by. On the batch
    /// path every datagram takes a slot of the shard's send ring and the tick goes out with one
    /// `io_uring_enter`; on the tokio-uring path all sends of a batch are pushed before any is
    /// awaited.
    async fn flush(&mut self) {
        if let Some(sender) = &mut self.sender {
            while let Some(t) = self.endpoint.poll_transmit() {
                let spent = match self.sockets.get(t.socket).map(|s| s.ring) {
                    Some(RingSocket::Registered(i)) => sender.push(i, t.destination, t.contents),
                    Some(RingSocket::Fd(fd)) => sender.push_fd(fd, t.destination, t.contents),
                    None => {
                        self.send_errors += 1;
                        Some(t.contents)
                    }
                };
                // A sent datagram's buffer carries a later packet: no allocation per send.
                if let Some(buf) = spent
                    && buf.capacity() > 0
                {
                    self.endpoint.recycle(buf);
                }
            }
            sender.submit();
            return;
        }
        while self.endpoint.pending_transmits() > 0 {
            let mut batch = Vec::with_capacity(self.endpoint.pending_transmits().min(SEND_BATCH));
            while batch.len() < SEND_BATCH {
                let Some(t) = self.endpoint.poll_transmit() else {
                    break;
                };
                let Some(SocketHandle::TokioUring(udp)) =
                    self.sockets.get(t.socket).map(|s| &s.handle)
                else {
                    self.send_errors += 1;
                    continue;
                };
                let udp = udp.clone();
                batch.push(async move { udp.send_to(t.contents, t.destination).await.0 });
            }
            for result in join_all(batch).await {
                if let Err(e) = result {
                    self.send_errors += 1;
                    tracing::debug!("send: {e}");
                }
            }
        }
    }
}
