//! A shard: one thread, one io_uring, the calls it owns and the sockets they share.
//!
//! Everything in here runs on the shard's thread; call state needs no lock. The API reaches
//! the shard through a bounded command queue polled every [`COMMAND_POLL`] at worst; received
//! datagrams arrive from one receive task per socket through a bounded local queue.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use ringcast_core::call::{Call, CallConfig, CallState, Command, Event, Input, Output};
use ringcast_core::demux::Demux;
use ringcast_core::signaling::group::JoinResponse;
use tokio::sync::Notify;
use tokio_uring::net::UdpSocket;

use crate::engine::{CallInfo, EngineEvent, EngineStats, EventKind};
use crate::error::EngineError;

/// Longest the shard sleeps before looking at the command queue.
const COMMAND_POLL: Duration = Duration::from_millis(2);
/// Commands handled per loop turn, so a flood of API calls cannot starve media.
const COMMANDS_PER_TURN: usize = 256;
/// Received datagrams waiting for the shard; beyond it they are dropped and counted.
const RX_QUEUE: usize = 16_384;
/// Receive buffer size: above str0m's largest datagram.
const RX_BUF: usize = 2048;

/// Requests from the API thread.
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
        command: Command,
        reply: Sender<Result<(), EngineError>>,
    },
    Info {
        chat_id: i64,
        reply: Sender<Result<CallInfo, EngineError>>,
    },
    List {
        reply: Sender<Vec<CallInfo>>,
    },
    Stats {
        reply: Sender<EngineStats>,
    },
    Shutdown,
}

/// Shard settings.
#[derive(Debug, Clone)]
pub(crate) struct ShardConfig {
    pub(crate) index: usize,
    pub(crate) bind: SocketAddr,
    pub(crate) connect_timeout: Duration,
    pub(crate) receive_audio: bool,
}

struct Datagram {
    socket: usize,
    source: SocketAddr,
    contents: Vec<u8>,
}

/// Datagrams from the receive tasks to the shard loop.
#[derive(Default)]
struct Inbox {
    queue: RefCell<VecDeque<Datagram>>,
    dropped: RefCell<u64>,
    notify: Notify,
}

struct SocketSlot {
    socket: Rc<UdpSocket>,
    addr: SocketAddr,
    demux: Demux<usize>,
}

struct Slot {
    chat_id: i64,
    call: Call,
    socket: Option<usize>,
    deadline: Instant,
    span: tracing::Span,
}

struct Shard {
    config: ShardConfig,
    events: Sender<EngineEvent>,
    calls: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_chat: HashMap<i64, usize>,
    sockets: Vec<SocketSlot>,
    inbox: Rc<Inbox>,
    outbox: Vec<(usize, SocketAddr, Vec<u8>)>,
    stats: EngineStats,
}

/// The shard thread's body.
pub(crate) fn run(
    config: ShardConfig,
    commands: Receiver<Request>,
    events: Sender<EngineEvent>,
    ready: Sender<io::Result<()>>,
) {
    tokio_uring::start(async move {
        let mut shard = Shard {
            config,
            events,
            calls: Vec::new(),
            free: Vec::new(),
            by_chat: HashMap::new(),
            sockets: Vec::new(),
            inbox: Rc::new(Inbox::default()),
            outbox: Vec::new(),
            stats: EngineStats::default(),
        };
        if let Err(e) = shard.open_socket() {
            let _ = ready.send(Err(e));
            return;
        }
        let _ = ready.send(Ok(()));
        shard.run(commands).await;
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
            self.handle_received();
            self.handle_timeouts();
            self.flush().await;

            let now = Instant::now();
            let next = self
                .calls
                .iter()
                .flatten()
                .map(|s| s.deadline)
                .min()
                .unwrap_or(now + COMMAND_POLL)
                .min(now + COMMAND_POLL);
            if next > now && self.inbox.queue.borrow().is_empty() {
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
                tokio::select! {
                    () = sleep => {}
                    () = self.inbox.notify.notified() => {}
                }
            }
        }
    }

    fn open_socket(&mut self) -> io::Result<usize> {
        // The first socket takes the configured port; the rest any free port on the same IP.
        let addr = if self.sockets.is_empty() {
            self.config.bind
        } else {
            SocketAddr::new(self.config.bind.ip(), 0)
        };
        let std_socket = std::net::UdpSocket::bind(addr)?;
        let local = std_socket.local_addr()?;
        let socket = Rc::new(UdpSocket::from_std(std_socket));
        let index = self.sockets.len();
        self.sockets.push(SocketSlot {
            socket: socket.clone(),
            addr: local,
            demux: Demux::new(),
        });
        let inbox = self.inbox.clone();
        tokio_uring::spawn(receive_loop(socket, index, inbox));
        self.stats.sockets = self.sockets.len() as u64;
        Ok(index)
    }

    fn handle_request(&mut self, req: Request) {
        match req {
            Request::Create {
                chat_id,
                config,
                reply,
            } => {
                let _ = reply.send(self.create(chat_id, config));
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
                let result = match self.by_chat.get(&chat_id).copied() {
                    Some(idx) => self.with_call(idx, |call, now| {
                        call.handle_input(now, Input::Command(command))
                            .map_err(EngineError::from)
                    }),
                    None => Err(EngineError::ConnectionNotFound(chat_id)),
                };
                let _ = reply.send(result);
            }
            Request::Info { chat_id, reply } => {
                let info = self
                    .by_chat
                    .get(&chat_id)
                    .and_then(|i| self.calls.get(*i))
                    .and_then(Option::as_ref)
                    .map(info_of)
                    .ok_or(EngineError::ConnectionNotFound(chat_id));
                let _ = reply.send(info);
            }
            Request::List { reply } => {
                let _ = reply.send(self.calls.iter().flatten().map(info_of).collect());
            }
            Request::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.calls = self.by_chat.len() as u64;
                stats.dropped_rx_queue_full = *self.inbox.dropped.borrow();
                let _ = reply.send(stats);
            }
            Request::Shutdown => {}
        }
    }

    fn create(&mut self, chat_id: i64, mut config: CallConfig) -> Result<String, EngineError> {
        if self.by_chat.contains_key(&chat_id) {
            return Err(EngineError::ConnectionExists(chat_id));
        }
        let now = Instant::now();
        config.connect_timeout = self.config.connect_timeout;
        let call = Call::new(now, config)?;
        let payload = call.join_payload().to_json();
        let span = tracing::info_span!("call", chat_id, shard = self.config.index);
        let slot = Slot {
            chat_id,
            call,
            socket: None,
            deadline: now,
            span,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.calls.get_mut(i) {
                    *s = Some(slot);
                }
                i
            }
            None => {
                self.calls.push(Some(slot));
                self.calls.len() - 1
            }
        };
        self.by_chat.insert(chat_id, idx);
        Ok(payload)
    }

    /// Places the call on a socket with no live call to any of its SFU addresses (an SFU
    /// tells participants apart by 5-tuple), then applies the answer.
    fn connect(&mut self, chat_id: i64, response: &JoinResponse) -> Result<(), EngineError> {
        let idx = *self
            .by_chat
            .get(&chat_id)
            .ok_or(EngineError::ConnectionNotFound(chat_id))?;
        let remotes: Vec<SocketAddr> = response
            .transport
            .candidates
            .iter()
            .map(|c| c.address())
            .filter(|a| a.is_ipv4() == self.config.bind.is_ipv4())
            .collect();
        let socket = match self
            .sockets
            .iter()
            .position(|s| remotes.iter().all(|r| !s.demux.is_taken(r, idx)))
        {
            Some(s) => s,
            None => self.open_socket()?,
        };
        let local = self
            .sockets
            .get(socket)
            .map(|s| s.addr)
            .ok_or(EngineError::ShardGone)?;
        self.with_call(idx, |call, now| {
            call.connect(now, response, local)
                .map_err(EngineError::from)
        })?;
        if let Some(slot) = self.sockets.get_mut(socket) {
            for r in &remotes {
                // Cannot fail: the socket was chosen because these are free.
                let _ = slot.demux.register_remote(*r, idx);
            }
            if let Some(Some(s)) = self.calls.get(idx) {
                slot.demux.register_ufrag(s.call.local_ufrag(), idx);
            }
        }
        if let Some(Some(s)) = self.calls.get_mut(idx) {
            s.socket = Some(socket);
        }
        Ok(())
    }

    /// Runs `f` on call `idx` inside its span, then drains its outputs.
    fn with_call<T>(
        &mut self,
        idx: usize,
        f: impl FnOnce(&mut Call, Instant) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let now = Instant::now();
        let result = {
            let Some(Some(slot)) = self.calls.get_mut(idx) else {
                return Err(EngineError::ShardGone);
            };
            let _enter = slot.span.clone().entered();
            f(&mut slot.call, now)
        };
        self.drain(idx);
        result
    }

    fn handle_received(&mut self) {
        loop {
            let next = self.inbox.queue.borrow_mut().pop_front();
            let Some(d) = next else {
                break;
            };
            self.stats.datagrams_received += 1;
            let Some(slot) = self.sockets.get(d.socket) else {
                continue;
            };
            let local = slot.addr;
            let Some(idx) = slot.demux.route(&d.source, &d.contents) else {
                self.stats.dropped_unroutable += 1;
                continue;
            };
            let now = Instant::now();
            if let Some(Some(s)) = self.calls.get_mut(idx) {
                let _enter = s.span.clone().entered();
                let input = Input::Datagram {
                    source: d.source,
                    destination: local,
                    contents: &d.contents,
                };
                if let Err(e) = s.call.handle_input(now, input) {
                    self.stats.dropped_by_call += 1;
                    tracing::trace!("datagram dropped: {e}");
                }
            }
            self.drain(idx);
        }
    }

    fn handle_timeouts(&mut self) {
        let now = Instant::now();
        for idx in 0..self.calls.len() {
            let due = matches!(self.calls.get(idx), Some(Some(s)) if s.deadline <= now);
            if due {
                if let Some(Some(s)) = self.calls.get_mut(idx) {
                    let _enter = s.span.clone().entered();
                    // Timeouts do not fail.
                    let _ = s.call.handle_input(now, Input::Timeout);
                }
                self.drain(idx);
            }
        }
    }

    /// Polls call `idx` until it waits; queues its transmits, forwards its events, reaps it
    /// if it ended.
    fn drain(&mut self, idx: usize) {
        let mut ended = false;
        loop {
            let Some(Some(slot)) = self.calls.get_mut(idx) else {
                return;
            };
            match slot.call.poll_output() {
                Output::Timeout(t) => {
                    slot.deadline = t;
                    break;
                }
                Output::Transmit(t) => {
                    if let Some(sock) = slot.socket {
                        self.outbox.push((sock, t.destination, t.contents));
                    }
                }
                Output::Event(e) => {
                    let chat_id = slot.chat_id;
                    let kind = match e {
                        Event::ConnectionChanged(state) => {
                            ended |= matches!(state, CallState::Ended(_));
                            Some(EventKind::ConnectionChanged(state))
                        }
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
                _ => break,
            }
        }
        if ended {
            self.reap(idx);
        }
    }

    fn emit(&mut self, event: EngineEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped_events += 1;
            }
        }
    }

    /// Removes an ended call so its chat can be created again at once.
    fn reap(&mut self, idx: usize) {
        let Some(slot) = self.calls.get_mut(idx).and_then(Option::take) else {
            return;
        };
        if let Some(sock) = slot.socket.and_then(|s| self.sockets.get_mut(s)) {
            sock.demux.remove_call(idx);
        }
        self.by_chat.remove(&slot.chat_id);
        self.free.push(idx);
    }

    async fn flush(&mut self) {
        for (sock, dest, contents) in self.outbox.drain(..) {
            let Some(slot) = self.sockets.get(sock) else {
                continue;
            };
            let (result, _buf) = slot.socket.send_to(contents, dest).await;
            match result {
                Ok(_) => self.stats.datagrams_sent += 1,
                Err(e) => {
                    self.stats.send_errors += 1;
                    tracing::debug!(%dest, "send: {e}");
                }
            }
        }
    }
}

fn info_of(slot: &Slot) -> CallInfo {
    CallInfo {
        chat_id: slot.chat_id,
        state: slot.call.state().clone(),
        media: slot.call.media_state(),
        ssrc: slot.call.audio_ssrc().0,
        local_addr: slot.call.local_addr(),
        stats: slot.call.stats().clone(),
    }
}

async fn receive_loop(socket: Rc<UdpSocket>, index: usize, inbox: Rc<Inbox>) {
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
                        socket: index,
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
