//! A shard: one thread, one io_uring, one [`Endpoint`] and the sockets it sends from.
//!
//! Everything in here runs on the shard's thread; call state needs no lock. The API reaches
//! the shard through a bounded command queue polled every [`COMMAND_POLL`] at worst; received
//! datagrams arrive from one receive task per socket through a bounded local queue. Each turn
//! of the loop is one pacer tick: every packet due is collected from the endpoint and all of
//! them are submitted to the ring together (one `io_uring_enter` for the batch).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_util::future::join_all;
use ringcast_core::call::{CallConfig, Event};
use ringcast_core::endpoint::{CallSnapshot, Endpoint, EndpointError, EndpointStats, SocketId};
use ringcast_core::signaling::group::JoinResponse;
use tokio::sync::Notify;
use tokio_uring::net::UdpSocket;

use crate::engine::{EngineEvent, EventKind};
use crate::error::EngineError;

/// Longest the shard sleeps before looking at the command queue.
const COMMAND_POLL: Duration = Duration::from_millis(2);
/// Commands handled per loop turn, so a flood of API calls cannot starve media.
const COMMANDS_PER_TURN: usize = 256;
/// Received datagrams waiting for the shard; beyond it they are dropped and counted.
const RX_QUEUE: usize = 16_384;
/// Receive buffer size: above str0m's largest datagram.
const RX_BUF: usize = 2048;
/// Requested SO_RCVBUF/SO_SNDBUF per socket.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Sends submitted per batch (bounds the futures alive at once).
const SEND_BATCH: usize = 1024;

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
    List {
        reply: Sender<Vec<CallSnapshot>>,
    },
    Stats {
        reply: Sender<ShardStats>,
    },
    Shutdown,
}

/// What a shard reports for [`crate::Engine::stats`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardStats {
    pub(crate) endpoint: EndpointStats,
    pub(crate) dropped_rx_queue_full: u64,
    pub(crate) send_errors: u64,
}

/// Shard settings.
#[derive(Debug, Clone)]
pub(crate) struct ShardConfig {
    pub(crate) index: usize,
    pub(crate) bind: SocketAddr,
    pub(crate) receive_audio: bool,
}

struct Datagram {
    socket: SocketId,
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

struct Shard {
    config: ShardConfig,
    endpoint: Endpoint,
    events: Sender<EngineEvent>,
    sockets: Vec<Rc<UdpSocket>>,
    inbox: Rc<Inbox>,
    send_errors: u64,
    dropped_events: u64,
}

/// The shard thread's body.
pub(crate) fn run(
    config: ShardConfig,
    commands: Receiver<Request>,
    events: Sender<EngineEvent>,
    ready: Sender<io::Result<SocketAddr>>,
) {
    tokio_uring::start(async move {
        let mut shard = Shard {
            endpoint: Endpoint::new(Instant::now(), config.index),
            config,
            events,
            sockets: Vec::new(),
            inbox: Rc::new(Inbox::default()),
            send_errors: 0,
            dropped_events: 0,
        };
        match shard.open_socket() {
            Ok(id) => {
                let addr = shard.endpoint.socket_addr(id);
                let _ = ready.send(addr.ok_or_else(|| io::Error::other("no socket address")));
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
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
            let now = Instant::now();
            loop {
                let next = self.inbox.queue.borrow_mut().pop_front();
                let Some(d) = next else { break };
                self.endpoint
                    .handle_datagram(now, d.socket, d.source, &d.contents);
            }
            self.endpoint.handle_timeout(Instant::now());
            self.forward_events();
            self.flush().await;

            let now = Instant::now();
            let next = self
                .endpoint
                .poll_timeout()
                .map_or(now + COMMAND_POLL, |t| t.min(now + COMMAND_POLL));
            if next > now && self.inbox.queue.borrow().is_empty() {
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
                tokio::select! {
                    () = sleep => {}
                    () = self.inbox.notify.notified() => {}
                }
            }
        }
    }

    fn open_socket(&mut self) -> io::Result<SocketId> {
        // The first socket takes the configured port; the rest any free port on the same IP.
        let addr = if self.sockets.is_empty() {
            self.config.bind
        } else {
            SocketAddr::new(self.config.bind.ip(), 0)
        };
        let std_socket = std::net::UdpSocket::bind(addr)?;
        // A pacer tick sends every due packet at once; give the kernel room for the burst.
        // Capped by net.core.{r,w}mem_max (scripts/setup.sh raises them where it can).
        let sock = socket2::SockRef::from(&std_socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        let local = std_socket.local_addr()?;
        let socket = Rc::new(UdpSocket::from_std(std_socket));
        let id = self.endpoint.add_socket(local);
        self.sockets.push(socket.clone());
        let inbox = self.inbox.clone();
        tokio_uring::spawn(receive_loop(socket, id, inbox));
        Ok(id)
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
                let r = match self.endpoint.connect(now, chat_id, &response) {
                    Err(EndpointError::NoFreeSocket) => match self.open_socket() {
                        Ok(_) => self.endpoint.connect(now, chat_id, &response),
                        Err(e) => {
                            let _ = reply.send(Err(EngineError::Io(e)));
                            return;
                        }
                    },
                    other => other,
                };
                let _ = reply.send(r.map(|_| ()).map_err(EngineError::from));
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
            Request::List { reply } => {
                let _ = reply.send(self.endpoint.calls());
            }
            Request::Stats { reply } => {
                let mut endpoint = self.endpoint.stats().clone();
                endpoint.dropped_events += self.dropped_events;
                let _ = reply.send(ShardStats {
                    endpoint,
                    dropped_rx_queue_full: *self.inbox.dropped.borrow(),
                    send_errors: self.send_errors,
                });
            }
            Request::Shutdown => {}
        }
        self.forward_events();
    }

    fn forward_events(&mut self) {
        while let Some((chat_id, e)) = self.endpoint.poll_event() {
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
                match self.events.try_send(EngineEvent { chat_id, kind }) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        self.dropped_events += 1;
                    }
                }
            }
        }
    }

    /// Submits everything the endpoint wants sent, in batches: all sends of a batch are pushed
    /// to the submission queue before any is awaited, so the ring gets them in one go.
    async fn flush(&mut self) {
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
