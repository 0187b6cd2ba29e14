//! A shard: one thread, one io_uring, one [`Endpoint`] and the sockets it sends from.
//!
//! Everything in here runs on the shard's thread; call state needs no lock. The API reaches
//! the shard through a bounded command queue polled every [`COMMAND_POLL`] at worst; received
//! datagrams arrive from one receive task per socket through a bounded local queue. Each turn
//! of the loop is one pacer tick: every packet due is collected from the endpoint and all of
//! them are submitted together: by default on the shard's private send ring
//! ([`crate::uring_send`], pre-allocated slots, one `io_uring_enter` per tick), or as joined
//! tokio-uring futures ([`SendPath::TokioUring`]).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_util::future::join_all;
use ringcast_core::call::{CallConfig, Event};
use ringcast_core::endpoint::{
    CallSnapshot, Endpoint, EndpointStats, P2pEndpointEvent, P2pSnapshot, SocketId,
};
use ringcast_core::p2p_call::{self, P2pConfig};
use ringcast_core::signaling::group::JoinResponse;
use tokio::sync::Notify;
use tokio_uring::net::UdpSocket;

use crate::engine::{EngineEvent, EventKind, SendPath};
use crate::error::EngineError;
use crate::pcm::PcmSinks;
use crate::pool::SocketPool;
use crate::uring_send::UringSender;

/// Longest the shard sleeps before looking at the command queue.
const COMMAND_POLL: Duration = Duration::from_millis(2);
/// Commands handled per loop turn, so a flood of API calls cannot starve media.
const COMMANDS_PER_TURN: usize = 256;
/// Received datagrams waiting for the shard; beyond it they are dropped and counted.
const RX_QUEUE: usize = 16_384;
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
    Shutdown,
}

/// What a shard reports for [`crate::Engine::stats`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardStats {
    pub(crate) endpoint: EndpointStats,
    pub(crate) dropped_rx_queue_full: u64,
    pub(crate) send_errors: u64,
    pub(crate) forwarded_out: u64,
    pub(crate) dropped_forward_full: u64,
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
    socket: SocketId,
    source: SocketAddr,
    contents: Vec<u8>,
}

/// A datagram received on a 1:1 call's own socket.
#[derive(Debug)]
struct P2pDatagram {
    user_id: i64,
    source: SocketAddr,
    contents: Vec<u8>,
}

/// A 1:1 call's own socket (see `ringcast_core::endpoint`'s 1:1 section).
struct P2pSocket {
    socket: Rc<UdpSocket>,
    /// A `dup` of the same socket: the send ring's descriptor, and the sender of the wake-up
    /// datagram when the call is reaped.
    dup: std::net::UdpSocket,
    fd: std::os::fd::RawFd,
    /// Set when the call is reaped: its receive task ends at its next completion.
    closed: Rc<Cell<bool>>,
}

/// Datagrams from the receive tasks to the shard loop.
#[derive(Default)]
struct Inbox {
    queue: RefCell<VecDeque<Datagram>>,
    p2p_queue: RefCell<VecDeque<P2pDatagram>>,
    dropped: RefCell<u64>,
    notify: Notify,
}

struct Shard {
    config: ShardConfig,
    endpoint: Endpoint,
    events: Sender<EngineEvent>,
    sockets: Vec<Rc<UdpSocket>>,
    /// 1:1 calls' own sockets, by user id.
    p2p_sockets: HashMap<i64, P2pSocket>,
    /// User ids of reaped 1:1 calls whose sockets (still in `p2p_sockets`) close after the
    /// next flush, so their last datagrams (DTLS close_notify) go out first.
    p2p_closing: Vec<i64>,
    /// The batched send ring ([`SendPath::IoUringBatch`]).
    sender: Option<UringSender>,
    inbox: Rc<Inbox>,
    send_errors: u64,
    dropped_events: u64,
    forwarded_out: u64,
    dropped_forward_full: u64,
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
    tokio_uring::start(async move {
        let mut shard = Shard {
            sender,
            endpoint: Endpoint::new(Instant::now(), config.index),
            config,
            events,
            sockets: Vec::new(),
            p2p_sockets: HashMap::new(),
            p2p_closing: Vec::new(),
            inbox: Rc::new(Inbox::default()),
            send_errors: 0,
            dropped_events: 0,
            forwarded_out: 0,
            dropped_forward_full: 0,
            pcm_sinks: PcmSinks::default(),
        };
        if let Err(e) = shard.sync_sockets() {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        shard.run(commands).await;
        // Stopped. Every call is ended and dropped with the endpoint, but the ring stays up:
        // dropping a tokio-uring runtime while receives are in flight on sockets shared with
        // other rings corrupted the heap in our tests ("corrupted double-linked list", the
        // same abort as tokio-rs/tokio-uring#328, open). Until that is fixed upstream (or the
        // runtime moves to raw io-uring with explicit cancellation), a stopped shard parks
        // here: an idle thread whose pending receives never complete.
        for (_, s) in shard.p2p_sockets.drain() {
            close_p2p_socket(&s);
        }
        let Shard {
            endpoint, events, ..
        } = shard;
        drop(endpoint);
        drop(events);
        stopped.store(true, std::sync::atomic::Ordering::Release);
        std::future::pending::<()>().await;
    });
}

impl Shard {
    async fn run(&mut self, commands: Receiver<Request>) {
        loop {
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
            self.endpoint.handle_timeout(Instant::now());
            self.after_work();
            self.flush().await;
            for id in std::mem::take(&mut self.p2p_closing) {
                if let Some(s) = self.p2p_sockets.remove(&id) {
                    close_p2p_socket(&s);
                }
            }

            let now = Instant::now();
            let next = self
                .endpoint
                .poll_timeout()
                .map_or(now + COMMAND_POLL, |t| t.min(now + COMMAND_POLL));
            if next > now
                && self.inbox.queue.borrow().is_empty()
                && self.inbox.p2p_queue.borrow().is_empty()
                && self.config.forwarded.is_empty()
                && commands.is_empty()
            {
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
                let wake = self.config.wakes.get(self.config.index).cloned();
                let woken = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => {}
                    () = self.inbox.notify.notified() => {}
                    () = woken => {}
                }
            }
        }
    }

    /// Registers every pool socket this shard does not have yet (in pool order, so socket
    /// ids agree across shards) and starts receiving on it.
    fn sync_sockets(&mut self) -> io::Result<()> {
        while self.sockets.len() < self.config.pool.len() {
            let (std_socket, addr) = self.config.pool.clone_socket(self.sockets.len())?;
            if let Some(sender) = &mut self.sender {
                sender.add_socket(std::os::fd::AsRawFd::as_raw_fd(&std_socket));
            }
            let socket = Rc::new(UdpSocket::from_std(std_socket));
            let id = self.endpoint.add_socket(addr);
            self.sockets.push(socket.clone());
            tokio_uring::spawn(receive_loop(socket, id, self.inbox.clone()));
        }
        Ok(())
    }

    /// Routes received datagrams: to this shard's calls without any lock; to another shard
    /// (via the pool's ownership table and its forward queue) when the call lives there.
    fn handle_received(&mut self) {
        let now = Instant::now();
        loop {
            let next = self.inbox.p2p_queue.borrow_mut().pop_front();
            let Some(d) = next else { break };
            self.endpoint
                .handle_p2p_datagram(now, d.user_id, d.source, &d.contents);
        }
        while let Ok(d) = self.config.forwarded.try_recv() {
            self.endpoint
                .handle_datagram(now, d.socket, d.source, &d.contents);
        }
        loop {
            let next = self.inbox.queue.borrow_mut().pop_front();
            let Some(d) = next else { break };
            if !self.endpoint.routes(d.socket, &d.source, &d.contents)
                && let Some(owner) = self.config.pool.owner(d.socket, &d.source, &d.contents)
                && owner != self.config.index
                && let Some(tx) = self.config.forward.get(owner)
            {
                match tx.try_send(d) {
                    Ok(()) => {
                        self.forwarded_out += 1;
                        if let Some(wake) = self.config.wakes.get(owner) {
                            wake.notify_one();
                        }
                    }
                    Err(_) => self.dropped_forward_full += 1,
                }
                continue;
            }
            // Ours, or nobody's (the endpoint counts it as unroutable).
            self.endpoint
                .handle_datagram(now, d.socket, d.source, &d.contents);
        }
    }

    /// Gives the pool back what reaped calls held; queues reaped 1:1 calls' sockets for
    /// closing.
    fn release_reaped(&mut self) {
        while let Some(r) = self.endpoint.poll_reaped() {
            self.pcm_sinks.remove(r.chat_id);
            self.config.pool.release(r.socket, &r.remotes, &r.ufrag);
        }
        while let Some(r) = self.endpoint.poll_p2p_reaped() {
            self.pcm_sinks.remove(r.user_id);
            if self.p2p_sockets.contains_key(&r.user_id) && !self.p2p_closing.contains(&r.user_id) {
                self.p2p_closing.push(r.user_id);
            }
        }
    }

    /// Binds the 1:1 call's own socket, creates the call on it and applies `commands`.
    fn create_p2p(
        &mut self,
        user_id: i64,
        mut config: P2pConfig,
        commands: Vec<p2p_call::Command>,
    ) -> Result<(), EngineError> {
        let now = Instant::now();
        // The id's previous call was reaped this turn: close its socket now (its last
        // datagrams, not flushed yet, are lost and counted as send errors).
        if let Some(pos) = self.p2p_closing.iter().position(|id| *id == user_id) {
            self.p2p_closing.swap_remove(pos);
            if let Some(s) = self.p2p_sockets.remove(&user_id) {
                close_p2p_socket(&s);
            }
        }
        if self.p2p_sockets.contains_key(&user_id) || self.endpoint.p2p_call(user_id).is_some() {
            return Err(EngineError::ConnectionExists(user_id));
        }
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(self.config.pool.ip(), 0))?;
        let addr = std_socket.local_addr()?;
        config.local_addr = addr;
        let dup = std_socket.try_clone()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dup);
        let socket = Rc::new(UdpSocket::from_std(std_socket));
        let closed = Rc::new(Cell::new(false));
        self.endpoint
            .create_p2p_call(now, user_id, config)
            .map_err(EngineError::from)?;
        tokio_uring::spawn(p2p_receive_loop(
            socket.clone(),
            user_id,
            self.inbox.clone(),
            closed.clone(),
        ));
        self.p2p_sockets.insert(
            user_id,
            P2pSocket {
                socket,
                dup,
                fd,
                closed,
            },
        );
        for command in commands {
            self.endpoint
                .p2p_command(now, user_id, command)
                .map_err(EngineError::from)?;
        }
        Ok(())
    }

    fn connect(&mut self, chat_id: i64, response: &JoinResponse) -> Result<(), EngineError> {
        let now = Instant::now();
        let ufrag = self
            .endpoint
            .local_ufrag(chat_id)
            .ok_or(EngineError::ConnectionNotFound(chat_id))?
            .to_owned();
        let remotes: Vec<SocketAddr> = response
            .transport
            .candidates
            .iter()
            .map(|c| c.address())
            .filter(|a| a.is_ipv4() == self.config.pool.is_ipv4())
            .collect();
        let socket = self
            .config
            .pool
            .place(&remotes, &ufrag, self.config.index)?;
        let result = self.sync_sockets().map_err(EngineError::Io).and_then(|()| {
            self.endpoint
                .connect_on(now, chat_id, response, socket)
                .map_err(EngineError::from)
        });
        if result.is_err() {
            self.config.pool.release(Some(socket), &remotes, &ufrag);
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
                    .create_call(now, chat_id, config)
                    .map_err(EngineError::from);
                let _ = reply.send(r);
            }
            Request::Connect {
                chat_id,
                response,
                reply,
            } => {
                let _ = reply.send(self.connect(chat_id, &response));
            }
            Request::Command {
                chat_id,
                command,
                reply,
            } => {
                let r = self
                    .endpoint
                    .command(now, chat_id, command)
                    .map_err(EngineError::from);
                let _ = reply.send(r);
            }
            Request::Info { chat_id, reply } => {
                let _ = reply.send(self.endpoint.call(chat_id));
            }
            Request::Exists { chat_id, reply } => {
                let _ = reply.send(
                    self.endpoint.call(chat_id).is_some()
                        || self.endpoint.p2p_call(chat_id).is_some(),
                );
            }
            Request::CreateP2p {
                user_id,
                config,
                commands,
                reply,
            } => {
                let _ = reply.send(self.create_p2p(user_id, *config, commands));
            }
            Request::P2pSignaling {
                user_id,
                bytes,
                reply,
            } => {
                let r = self
                    .endpoint
                    .p2p_signaling(now, user_id, &bytes)
                    .map_err(EngineError::from);
                let _ = reply.send(r);
            }
            Request::P2pInfo { user_id, reply } => {
                let _ = reply.send(self.endpoint.p2p_call(user_id));
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
                    dropped_rx_queue_full: *self.inbox.dropped.borrow(),
                    send_errors: self.send_errors
                        + self.sender.as_ref().map_or(0, |s| s.counters().errors),
                    forwarded_out: self.forwarded_out,
                    dropped_forward_full: self.dropped_forward_full,
                });
            }
            Request::SetPcmSink {
                chat_id,
                sink,
                reply,
            } => {
                let _ = reply.send(self.pcm_sinks.attach(&self.endpoint, chat_id, *sink));
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
        while let Some((chat_id, e)) = self.endpoint.poll_event() {
            self.pcm_sinks.on_event(chat_id, &e);
            let kind = match e {
                Event::ConnectionChanged(state) => Some(EventKind::ConnectionChanged(state)),
                Event::StreamEnded { error } => Some(EventKind::StreamEnded { error }),
                Event::MediaStateChanged(m) => Some(EventKind::MediaStateChanged(m)),
                Event::AudioReceived {
                    ssrc, seq, payload, ..
                } => self
                    .config
                    .receive_audio
                    .then_some(EventKind::AudioReceived {
                        ssrc: ssrc.0,
                        seq,
                        payload,
                    }),
                _ => None,
            };
            if let Some(kind) = kind {
                self.emit(EngineEvent { chat_id, kind });
            }
        }
        while let Some((user_id, e)) = self.endpoint.poll_p2p_event() {
            let kind = match e {
                P2pEndpointEvent::Signaling(bytes) => Some(EventKind::SignalingData(bytes)),
                P2pEndpointEvent::Call(p2p_call::Event::StateChanged(state)) => {
                    Some(EventKind::P2pConnectionChanged(state))
                }
                P2pEndpointEvent::Call(p2p_call::Event::StreamEnded { error }) => {
                    Some(EventKind::StreamEnded { error })
                }
                P2pEndpointEvent::Call(p2p_call::Event::AudioReceived {
                    ssrc,
                    seq,
                    payload,
                    ..
                }) => {
                    self.pcm_sinks.on_audio(user_id, ssrc.0, seq, &payload);
                    self.config
                        .receive_audio
                        .then_some(EventKind::AudioReceived {
                            ssrc: ssrc.0,
                            seq,
                            payload,
                        })
                }
                _ => None,
            };
            if let Some(kind) = kind {
                self.emit(EngineEvent {
                    chat_id: user_id,
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

    /// Submits everything the endpoint wants sent. On the batch path every datagram takes a
    /// slot of the shard's send ring and the tick goes out with one `io_uring_enter`; on the
    /// tokio-uring path all sends of a batch are pushed before any is awaited.
    async fn flush(&mut self) {
        if let Some(sender) = &mut self.sender {
            while let Some(t) = self.endpoint.poll_transmit() {
                sender.push(t.socket.0, t.destination, t.contents);
            }
            while let Some(t) = self.endpoint.poll_p2p_transmit() {
                match self.p2p_sockets.get(&t.user_id) {
                    Some(s) => sender.push_fd(s.fd, t.destination, t.contents),
                    None => self.send_errors += 1,
                }
            }
            sender.submit();
            return;
        }
        let mut p2p = Vec::new();
        while let Some(t) = self.endpoint.poll_p2p_transmit() {
            match self.p2p_sockets.get(&t.user_id) {
                Some(s) => {
                    let socket = s.socket.clone();
                    p2p.push(async move { socket.send_to(t.contents, t.destination).await.0 });
                }
                None => self.send_errors += 1,
            }
        }
        for result in join_all(p2p).await {
            if let Err(e) = result {
                self.send_errors += 1;
                tracing::debug!("p2p send: {e}");
            }
        }
        while self.endpoint.pending_transmits() > 0 {
            let mut batch = Vec::with_capacity(self.endpoint.pending_transmits().min(SEND_BATCH));
            while batch.len() < SEND_BATCH {
                let Some(t) = self.endpoint.poll_transmit() else {
                    break;
                };
                let Some(socket) = self.sockets.get(t.socket.0) else {
                    self.send_errors += 1;
                    continue;
                };
                let socket = socket.clone();
                batch.push(async move { socket.send_to(t.contents, t.destination).await.0 });
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

/// Ends a 1:1 socket's receive task: flag it, then wake its pending receive with an empty
/// datagram from the socket to itself (`shutdown(SHUT_RD)` would complete the receive without
/// a source address, which tokio-uring 0.5 unwraps). The task then drops its handle and the
/// descriptor closes with the last one. If the socket's receive buffer is full the wake-up is
/// lost and the task ends at the next datagram instead.
fn close_p2p_socket(s: &P2pSocket) {
    s.closed.set(true);
    if let Ok(own) = s.dup.local_addr() {
        let _ = s.dup.send_to(&[], own);
    }
}

async fn p2p_receive_loop(
    socket: Rc<UdpSocket>,
    user_id: i64,
    inbox: Rc<Inbox>,
    closed: Rc<Cell<bool>>,
) {
    let mut buf = vec![0u8; RX_BUF];
    while !closed.get() {
        let (result, b) = socket.recv_from(buf).await;
        buf = b;
        if closed.get() {
            break;
        }
        match result {
            Ok((n, source)) => {
                let mut queue = inbox.p2p_queue.borrow_mut();
                if queue.len() >= RX_QUEUE {
                    *inbox.dropped.borrow_mut() += 1;
                } else {
                    queue.push_back(P2pDatagram {
                        user_id,
                        source,
                        contents: buf.get(..n).unwrap_or(&[]).to_vec(),
                    });
                }
                drop(queue);
                inbox.notify.notify_one();
            }
            Err(e) => tracing::trace!("p2p recv: {e}"),
        }
    }
}

async fn receive_loop(socket: Rc<UdpSocket>, id: SocketId, inbox: Rc<Inbox>) {
    let mut buf = vec![0u8; RX_BUF];
    loop {
        let (result, b) = socket.recv_from(buf).await;
        buf = b;
        match result {
            Ok((n, source)) => {
                let mut queue = inbox.queue.borrow_mut();
                if queue.len() >= RX_QUEUE {
                    *inbox.dropped.borrow_mut() += 1;
                } else {
                    queue.push_back(Datagram {
                        socket: id,
                        source,
                        contents: buf.get(..n).unwrap_or(&[]).to_vec(),
                    });
                }
                drop(queue);
                inbox.notify.notify_one();
            }
            Err(e) => {
                // ICMP errors (port unreachable) surface here on Linux; they are not fatal.
                tracing::trace!("recv: {e}");
            }
        }
    }
}
