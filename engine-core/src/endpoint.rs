//! A shard's logic without its ring: many calls, their sockets, routing and pacing.
//!
//! An [`Endpoint`] owns its calls outright (a slab of [`Call`]s keyed by the application's
//! chat id), the routing table of every socket it sends from ([`Demux`]), and one
//! [`TimerWheel`] entry per call. The runtime's shard feeds it datagrams and the time and
//! sends what it returns; the simulator does the same with a virtual network. Both therefore
//! run exactly this code (the quinn-proto `Endpoint` split).
//!
//! **Socket rule.** An SFU tells participants apart by 5-tuple, so two live calls that reach
//! the same SFU address must not share a local socket. [`Endpoint::connect`] places a call on
//! the first registered socket where none of the SFU's candidate addresses is taken, and
//! returns [`EndpointError::NoFreeSocket`] when there is none; the runtime then opens a socket,
//! registers it with [`Endpoint::add_socket`] and retries.
//!
//! **1:1 calls** ([`P2pCall`](crate::p2p_call::P2pCall)) live in the same endpoint, keyed by the
//! peer's user id in the same id space as group calls' chat ids (ntgcalls does the same: one
//! `chat_id` argument for both), driven by the same timer wheel. Each has a UDP socket of its
//! own, outside the [`SocketId`] space (see [`Endpoint::create_p2p_call`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use crate::call::{
    Call, CallConfig, CallError, CallState, CallStats, Command, Event, Input, MediaState, Output,
};
use crate::demux::Demux;
use crate::pacer::{LatenessHistogram, TimerWheel};
use crate::signaling::group::JoinResponse;

mod p2p;
pub use p2p::{P2pEndpointEvent, P2pReaped, P2pSnapshot, P2pTransmit};

/// Upper bound on queued events; beyond it events are dropped and counted.
pub const MAX_QUEUED_EVENTS: usize = 65_536;

/// A socket registered with an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub usize);

/// Errors of the endpoint API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// `create_call` for a key that has a live call (ntgcalls: `ConnectionExists`).
    #[error("a call for chat {0} already exists")]
    ConnectionExists(i64),
    /// No live call for this key.
    #[error("no call for chat {0}")]
    ConnectionNotFound(i64),
    /// Every registered socket already has a live call to one of the SFU's addresses.
    #[error("no socket without a live call to this sfu address; register another socket")]
    NoFreeSocket,
    /// The call refused.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The 1:1 call refused.
    #[error(transparent)]
    P2pCall(#[from] crate::p2p_call::P2pCallError),
}

/// A datagram to send from one of the endpoint's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointTransmit {
    /// The socket to send from.
    pub socket: SocketId,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// What [`Endpoint::poll_reaped`] reports about a removed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedCall {
    /// Its chat id.
    pub chat_id: i64,
    /// The socket it was on, if it got as far as connecting.
    pub socket: Option<SocketId>,
    /// The SFU addresses it was routed from.
    pub remotes: Vec<SocketAddr>,
    /// Its ICE ufrag.
    pub ufrag: String,
}

/// A snapshot of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSnapshot {
    /// The application's key (chat id).
    pub chat_id: i64,
    /// Connection state.
    pub state: CallState,
    /// Pause/mute.
    pub media: MediaState,
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Local address once connecting.
    pub local_addr: Option<SocketAddr>,
    /// Counters.
    pub stats: CallStats,
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Live calls (group calls; 1:1 calls are in `p2p_calls`).
    pub calls: u64,
    /// Live 1:1 calls.
    pub p2p_calls: u64,
    /// Registered sockets.
    pub sockets: u64,
    /// Datagrams handed in.
    pub datagrams_received: u64,
    /// Datagrams handed out.
    pub datagrams_sent: u64,
    /// RTP media packets sent by all calls, ended ones included.
    pub packets_sent: u64,
    /// Datagrams that matched no call, and datagrams routed to a connected call (by the
    /// ufrag in a STUN USERNAME) from an address other than its SFU's.
    pub dropped_unroutable: u64,
    /// Datagrams a call refused (malformed, failed integrity, replay...).
    pub dropped_by_call: u64,
    /// Events dropped because the event queue was full.
    pub dropped_events: u64,
    /// Calls reaped after they ended.
    pub calls_reaped: u64,
    /// Lateness of every frame sent (handed to str0m minus due), all calls, ended ones too.
    pub lateness: LatenessHistogram,
}

/// What a timer-wheel entry drives: a group call or a 1:1 call (slab indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum WheelKey {
    Group(usize),
    P2p(usize),
}

struct SocketEntry {
    addr: SocketAddr,
    demux: Demux<usize>,
}

struct Slot {
    chat_id: i64,
    call: Call,
    socket: Option<SocketId>,
    /// The deadline this call has in the wheel (lazy deletion: other entries are stale).
    scheduled: Option<Instant>,
    span: tracing::Span,
}

/// Many calls and their sockets. See the [module docs](self).
pub struct Endpoint {
    shard: usize,
    calls: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_chat: HashMap<i64, usize>,
    sockets: Vec<SocketEntry>,
    wheel: TimerWheel<WheelKey>,
    p2p: p2p::P2pCalls,
    due: Vec<(Instant, WheelKey)>,
    transmits: VecDeque<EndpointTransmit>,
    events: VecDeque<(i64, Event)>,
    reaped: VecDeque<ReapedCall>,
    stats: EndpointStats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("shard", &self.shard)
            .field("calls", &self.by_chat.len())
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with no calls and no sockets. `shard` only labels tracing spans.
    pub fn new(now: Instant, shard: usize) -> Self {
        Self {
            shard,
            calls: Vec::new(),
            free: Vec::new(),
            by_chat: HashMap::new(),
            sockets: Vec::new(),
            wheel: TimerWheel::new(now),
            p2p: p2p::P2pCalls::default(),
            due: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            reaped: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    /// Registers a socket bound to `addr` (a concrete address, not `0.0.0.0`).
    pub fn add_socket(&mut self, addr: SocketAddr) -> SocketId {
        self.sockets.push(SocketEntry {
            addr,
            demux: Demux::new(),
        });
        self.stats.sockets = self.sockets.len() as u64;
        SocketId(self.sockets.len() - 1)
    }

    /// The address of a registered socket.
    pub fn socket_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        self.sockets.get(socket.0).map(|s| s.addr)
    }

    /// Creates a call and returns its join payload JSON.
    pub fn create_call(
        &mut self,
        now: Instant,
        chat_id: i64,
        config: CallConfig,
    ) -> Result<String, EndpointError> {
        if self.by_chat.contains_key(&chat_id) || self.p2p.contains(chat_id) {
            return Err(EndpointError::ConnectionExists(chat_id));
        }
        let call = Call::new(now, config)?;
        let payload = call.join_payload().to_json();
        let slot = Slot {
            chat_id,
            call,
            socket: None,
            scheduled: None,
            span: tracing::info_span!("call", chat_id, shard = self.shard),
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
        self.stats.calls = self.by_chat.len() as u64;
        Ok(payload)
    }

    /// Applies the SFU's answer to a call, placing it on a socket by the socket rule.
    pub fn connect(
        &mut self,
        now: Instant,
        chat_id: i64,
        response: &JoinResponse,
    ) -> Result<SocketId, EndpointError> {
        let idx = *self
            .by_chat
            .get(&chat_id)
            .ok_or(EndpointError::ConnectionNotFound(chat_id))?;
        let mut chosen = None;
        for (i, s) in self.sockets.iter().enumerate() {
            let remotes = response
                .transport
                .candidates
                .iter()
                .map(|c| c.address())
                .filter(|a| a.is_ipv4() == s.addr.is_ipv4());
            let mut any = false;
            let mut free = true;
            for r in remotes {
                any = true;
                free &= !s.demux.is_taken(&r, idx);
            }
            if any && free {
                chosen = Some(i);
                break;
            }
        }
        let socket = chosen.ok_or(EndpointError::NoFreeSocket)?;
        self.connect_on(now, chat_id, response, SocketId(socket))?;
        Ok(SocketId(socket))
    }

    /// Applies the SFU's answer to a call on a socket the caller chose. For runtimes whose
    /// shards share sockets: the socket rule must then hold across shards, so placement is
    /// decided by whoever sees them all (the engine's socket pool), not by one endpoint.
    pub fn connect_on(
        &mut self,
        now: Instant,
        chat_id: i64,
        response: &JoinResponse,
        socket: SocketId,
    ) -> Result<(), EndpointError> {
        let idx = *self
            .by_chat
            .get(&chat_id)
            .ok_or(EndpointError::ConnectionNotFound(chat_id))?;
        let socket = socket.0;
        let local = self
            .sockets
            .get(socket)
            .map(|s| s.addr)
            .ok_or(EndpointError::NoFreeSocket)?;
        {
            let Some(Some(slot)) = self.calls.get_mut(idx) else {
                return Err(EndpointError::ConnectionNotFound(chat_id));
            };
            let _enter = slot.span.clone().entered();
            slot.call.connect(now, response, local)?;
            slot.socket = Some(SocketId(socket));
        }
        if let (Some(entry), Some(Some(slot))) = (self.sockets.get_mut(socket), self.calls.get(idx))
        {
            for r in slot.call.remote_addrs() {
                // Cannot fail: the socket was chosen because these are free.
                let _ = entry.demux.register_remote(*r, idx);
            }
            entry.demux.register_ufrag(slot.call.local_ufrag(), idx);
        }
        self.drain(idx);
        Ok(())
    }

    /// True if a datagram from `source` on `socket` belongs to one of this endpoint's calls.
    pub fn routes(&self, socket: SocketId, source: &SocketAddr, contents: &[u8]) -> bool {
        self.sockets
            .get(socket.0)
            .and_then(|s| s.demux.route(source, contents))
            .is_some()
    }

    /// A call that ended and was removed: its chat id, socket, SFU addresses and ufrag, so a
    /// runtime that shares sockets between shards can release them.
    pub fn poll_reaped(&mut self) -> Option<ReapedCall> {
        self.reaped.pop_front()
    }

    /// Gives a command to a call. For a 1:1 call with this id the command is mapped onto
    /// [`crate::p2p_call::Command`] (`Stop` is `Hangup`).
    pub fn command(
        &mut self,
        now: Instant,
        chat_id: i64,
        command: Command,
    ) -> Result<(), EndpointError> {
        let Some(&idx) = self.by_chat.get(&chat_id) else {
            if self.p2p.contains(chat_id) {
                use crate::p2p_call::Command as P2p;
                let command = match command {
                    Command::SetSource(s) => P2p::SetSource(s),
                    Command::Pause => P2p::Pause,
                    Command::Resume => P2p::Resume,
                    Command::Mute => P2p::Mute,
                    Command::Unmute => P2p::Unmute,
                    Command::Stop => P2p::Hangup,
                };
                return self.p2p_command(now, chat_id, command);
            }
            return Err(EndpointError::ConnectionNotFound(chat_id));
        };
        let result = match self.calls.get_mut(idx) {
            Some(Some(slot)) => {
                let _enter = slot.span.clone().entered();
                slot.call.handle_input(now, Input::Command(command))
            }
            _ => return Err(EndpointError::ConnectionNotFound(chat_id)),
        };
        self.drain(idx);
        result.map_err(EndpointError::from)
    }

    /// Routes a datagram that arrived on `socket` from `source` to its call.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        source: SocketAddr,
        contents: &[u8],
    ) {
        self.stats.datagrams_received += 1;
        let Some(entry) = self.sockets.get(socket.0) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        let local = entry.addr;
        let Some(idx) = entry.demux.route(&source, contents) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        if let Some(Some(slot)) = self.calls.get_mut(idx) {
            // STUN is routed by ufrag from any address (the SFU's checks may come from an
            // address it did not list). Once the call is connected the path is known: a
            // datagram from anywhere but the SFU's addresses is not the call's business and
            // must not reach its state or counters.
            if *slot.call.state() == CallState::Connected
                && !slot.call.remote_addrs().contains(&source)
            {
                self.stats.dropped_unroutable += 1;
                return;
            }
            let _enter = slot.span.clone().entered();
            let input = Input::Datagram {
                source,
                destination: local,
                contents,
            };
            if let Err(e) = slot.call.handle_input(now, input) {
                self.stats.dropped_by_call += 1;
                tracing::trace!("datagram dropped: {e}");
            }
        }
        self.drain(idx);
    }

    /// Drives every call whose deadline has passed: the pacer tick. Their packets are then
    /// waiting in [`Endpoint::poll_transmit`] as one batch.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.wheel.pop_due(now, &mut due);
        for (at, key) in due.drain(..) {
            let idx = match key {
                WheelKey::Group(idx) => idx,
                WheelKey::P2p(idx) => {
                    self.p2p_timeout(now, at, idx);
                    continue;
                }
            };
            let Some(Some(slot)) = self.calls.get_mut(idx) else {
                continue;
            };
            if slot.scheduled != Some(at) {
                continue; // stale entry
            }
            slot.scheduled = None;
            let _enter = slot.span.clone().entered();
            let sent_before = slot.call.stats().packets_sent;
            // Timeouts never fail.
            let _ = slot.call.handle_input(now, Input::Timeout);
            self.stats.packets_sent += slot.call.stats().packets_sent - sent_before;
            let lateness = &mut self.stats.lateness;
            slot.call.drain_frame_lateness(|l| lateness.record(l));
            drop(_enter);
            self.drain(idx);
        }
        self.due = due;
    }

    /// The earliest instant [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<EndpointTransmit> {
        let t = self.transmits.pop_front()?;
        self.stats.datagrams_sent += 1;
        Some(t)
    }

    /// Number of datagrams waiting in [`Endpoint::poll_transmit`].
    pub fn pending_transmits(&self) -> usize {
        self.transmits.len()
    }

    /// Next event, with the chat id it belongs to.
    pub fn poll_event(&mut self) -> Option<(i64, Event)> {
        self.events.pop_front()
    }

    /// One call's snapshot.
    pub fn call(&self, chat_id: i64) -> Option<CallSnapshot> {
        let idx = self.by_chat.get(&chat_id)?;
        self.calls.get(*idx)?.as_ref().map(snapshot)
    }

    /// A live call's ICE ufrag (for runtimes that route STUN across shards).
    pub fn local_ufrag(&self, chat_id: i64) -> Option<&str> {
        let idx = self.by_chat.get(&chat_id)?;
        self.calls.get(*idx)?.as_ref().map(|s| s.call.local_ufrag())
    }

    /// Every live call's snapshot.
    pub fn calls(&self) -> Vec<CallSnapshot> {
        self.calls.iter().flatten().map(snapshot).collect()
    }

    /// Counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Drains a call's outputs into the endpoint's queues, reschedules it, reaps it if it ended.
    fn drain(&mut self, idx: usize) {
        let mut ended = false;
        loop {
            let Some(Some(slot)) = self.calls.get_mut(idx) else {
                return;
            };
            match slot.call.poll_output() {
                Output::Timeout(at) => {
                    if !ended && slot.scheduled != Some(at) {
                        slot.scheduled = Some(at);
                        self.wheel.insert(at, WheelKey::Group(idx));
                    }
                    break;
                }
                Output::Transmit(t) => {
                    if let Some(socket) = slot.socket {
                        self.transmits.push_back(EndpointTransmit {
                            socket,
                            destination: t.destination,
                            contents: t.contents,
                        });
                    }
                }
                Output::Event(e) => {
                    ended |= matches!(e, Event::ConnectionChanged(CallState::Ended(_)));
                    let chat_id = slot.chat_id;
                    if self.events.len() >= MAX_QUEUED_EVENTS {
                        self.stats.dropped_events += 1;
                    } else {
                        self.events.push_back((chat_id, e));
                    }
                }
            }
        }
        if ended {
            self.reap(idx);
        }
    }

    /// Removes an ended call so its chat id can be used again at once.
    fn reap(&mut self, idx: usize) {
        let Some(slot) = self.calls.get_mut(idx).and_then(Option::take) else {
            return;
        };
        if let Some(entry) = slot.socket.and_then(|s| self.sockets.get_mut(s.0)) {
            entry.demux.remove_call(idx);
        }
        self.by_chat.remove(&slot.chat_id);
        self.free.push(idx);
        // Bounded by the number of calls: a runtime that never polls it holds at most one
        // entry per call ever reaped, so cap it.
        if self.reaped.len() < MAX_QUEUED_EVENTS {
            self.reaped.push_back(ReapedCall {
                chat_id: slot.chat_id,
                socket: slot.socket,
                remotes: slot.call.remote_addrs().to_vec(),
                ufrag: slot.call.local_ufrag().to_owned(),
            });
        }
        self.stats.calls = self.by_chat.len() as u64;
        self.stats.calls_reaped += 1;
    }
}

fn snapshot(slot: &Slot) -> CallSnapshot {
    CallSnapshot {
        chat_id: slot.chat_id,
        state: slot.call.state().clone(),
        media: slot.call.media_state(),
        ssrc: slot.call.audio_ssrc().0,
        local_addr: slot.call.local_addr(),
        stats: slot.call.stats().clone(),
    }
}
