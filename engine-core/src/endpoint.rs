//! A shard's logic without its ring: many calls, their sockets, routing and pacing.
//!
//! An [`Endpoint`] owns its calls outright: one table of both kinds, group
//! [`Call`](crate::call::Call)s and 1:1 [`P2pCall`](crate::p2p_call::P2pCall)s, keyed by
//! [`CallId`] (the application's chat id or peer user id: one id space, as ntgcalls has one
//! `chat_id` argument for both), the [`Placement`] of group calls on the shared sockets, and
//! one [`TimerWheel`] entry per call.
//! The runtime's shard feeds it datagrams and the time and sends what it returns; the
//! simulator does the same with a virtual network. Both therefore run exactly this code (the
//! quinn-proto `Endpoint` split).
//!
//! **One poll API.** Whatever the kind of call, its datagrams come out of
//! [`Endpoint::poll_transmit`] naming the [`Socket`] they leave by, its events out of
//! [`Endpoint::poll_event`] and its removal out of [`Endpoint::poll_reaped`]. The runtime maps a
//! [`Socket`] to a descriptor (quinn's runtime boundary); datagrams come back in with
//! [`Endpoint::handle_datagram`] naming the socket they arrived on.
//!
//! **Sockets.** Group calls share sockets registered with [`Endpoint::add_socket`] under the
//! socket rule ([`crate::placement`]): [`Endpoint::connect`] places a call on the first socket
//! where none of the SFU's addresses is taken and returns [`EndpointError::NoFreeSocket`] when
//! there is none; the caller then opens a socket, registers it and retries. A runtime whose
//! shards share sockets places calls itself (one [`Placement`] across shards) and uses
//! [`Endpoint::connect_on`]. A 1:1 call has a UDP socket of its own ([`Socket::Own`], see
//! [`Endpoint::create_p2p_call`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use crate::call::{CallError, CallState, Command};
use crate::pacer::{LatenessHistogram, TimerWheel};
use crate::placement::Placement;

mod group;
mod p2p;
pub use crate::placement::SocketId;
pub use group::CallSnapshot;
pub use p2p::P2pSnapshot;

/// Upper bound on queued events; beyond it events are dropped and counted.
pub const MAX_QUEUED_EVENTS: usize = 65_536;

/// Recycled send buffers an [`Endpoint`] keeps for its calls' fast path (a pacer tick of this
/// many packets costs no allocation; ~200 bytes each for audio).
pub const MAX_SPARE_BUFFERS: usize = 4096;

/// A call in an endpoint: a group call's chat id or a 1:1 call's peer user id. The two kinds
/// share one id space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub i64);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The socket a datagram leaves by or arrived on. The endpoint names it; the runtime maps the
/// name to a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Socket {
    /// A socket registered with [`Endpoint::add_socket`], shared by group calls under the
    /// socket rule.
    Shared(SocketId),
    /// The 1:1 call's own socket (bound by the runtime for that call alone).
    Own(CallId),
}

impl From<SocketId> for Socket {
    fn from(socket: SocketId) -> Self {
        Self::Shared(socket)
    }
}

/// Errors of the endpoint API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A call with this id is live (ntgcalls: `ConnectionExists`).
    #[error("a call for chat {0} already exists")]
    ConnectionExists(CallId),
    /// No live call of the right kind has this id.
    #[error("no call for chat {0}")]
    ConnectionNotFound(CallId),
    /// Every registered socket already has a live call to one of the SFU's addresses.
    #[error("no socket without a live call to this sfu address; register another socket")]
    NoFreeSocket,
    /// The call refused.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The 1:1 call refused.
    #[error(transparent)]
    P2pCall(#[from] crate::p2p_call::P2pCallError),
    /// The call panicked while handling the request (a bug): it has ended, with its end event
    /// carrying the panic's message; the other calls are untouched.
    #[error("call {0} panicked and has ended")]
    CallPanicked(CallId),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointTransmit {
    /// The socket to send from.
    pub socket: Socket,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// What a call has for the application ([`Endpoint::poll_event`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// A group call's event.
    Group(crate::call::Event),
    /// A 1:1 call's event.
    P2p(crate::p2p_call::Event),
    /// Encrypted signaling bytes from a 1:1 call for the messenger
    /// (`phone.sendSignalingData`).
    Signaling(Vec<u8>),
}

impl EndpointEvent {
    /// True for the event that ends a call (it is reaped right after).
    pub fn ends_call(&self) -> bool {
        use crate::p2p_call::{Event as P2p, P2pState};
        matches!(
            self,
            Self::Group(crate::call::Event::ConnectionChanged(CallState::Ended(_)))
                | Self::P2p(P2p::StateChanged(P2pState::Ended(_)))
        )
    }
}

/// A call that ended and was removed ([`Endpoint::poll_reaped`]): its id can be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapedCall {
    /// The call.
    pub id: CallId,
    /// The socket it sent from: a shared one (its placement is released: a runtime that
    /// places calls across shards releases its own), or its own (close it). `None` for a
    /// group call that never connected.
    pub socket: Option<Socket>,
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Live group calls.
    pub calls: u64,
    /// Live 1:1 calls.
    pub p2p_calls: u64,
    /// Registered shared sockets.
    pub sockets: u64,
    /// Datagrams handed in.
    pub datagrams_received: u64,
    /// Datagrams handed out.
    pub datagrams_sent: u64,
    /// RTP media packets sent by all calls, ended ones included.
    pub packets_sent: u64,
    /// Datagrams that matched no call, and datagrams a connected call does not take from
    /// their source (a group call: any address but its SFU's; a 1:1 call: any address it has
    /// not sent to).
    pub dropped_unroutable: u64,
    /// Datagrams a call refused (malformed, failed integrity, replay...).
    pub dropped_by_call: u64,
    /// Events dropped because the event queue was full.
    pub dropped_events: u64,
    /// Calls reaped after they ended.
    pub calls_reaped: u64,
    /// Calls ended because their processing panicked (a bug): each ended alone, with
    /// [`EndReason::Panicked`](crate::EndReason::Panicked) or
    /// [`P2pEndReason::Panicked`](crate::p2p_call::P2pEndReason::Panicked), and the endpoint
    /// and its other calls went on.
    pub calls_panicked: u64,
    /// Lateness of every frame sent (handed to str0m minus due), all calls, ended ones too.
    pub lateness: LatenessHistogram,
}

/// A call of either kind, as the table holds it.
// The slot holding this is boxed already. A 1:1 call (16.3 KB, its `Rtc` plus the signaling
// crypto) is boxed once more so that a group call, the bulk of an engine's calls, pays its own
// 13.8 KB and not the larger kind's size: 2 KB less per group call (mimalloc's 14 KB size class
// instead of 16 KB; `load --hold`, docs/performance.md). The group variant stays inline: its
// slot is already its own allocation.
#[allow(clippy::large_enum_variant)]
enum CallKind {
    Group(group::GroupEntry),
    P2p(Box<p2p::P2pEntry>),
}

/// One output of a call, whatever its kind.
enum Polled {
    Transmit(EndpointTransmit),
    Event(EndpointEvent),
    Timeout(Instant),
}

impl CallKind {
    fn poll(&mut self, id: CallId) -> Polled {
        match self {
            Self::Group(g) => g.poll(),
            Self::P2p(p) => p.poll(id),
        }
    }

    /// Whether a datagram from `source` on `socket` may reach the call (the source rules).
    fn accepts(&self, socket: Socket, source: &SocketAddr) -> bool {
        match (self, socket) {
            (Self::Group(g), Socket::Shared(_)) => g.accepts(source),
            (Self::P2p(p), Socket::Own(_)) => p.accepts(source),
            _ => false,
        }
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> Result<(), EndpointError> {
        match self {
            Self::Group(g) => g.handle_datagram(now, source, contents),
            Self::P2p(p) => p.handle_datagram(now, source, contents),
        }
    }

    fn handle_timeout(&mut self, now: Instant, spare: &mut Vec<Vec<u8>>) {
        match self {
            Self::Group(g) => g.handle_timeout(now, spare),
            Self::P2p(p) => p.handle_timeout(now),
        }
    }

    fn command(&mut self, now: Instant, command: Command) -> Result<(), EndpointError> {
        match self {
            Self::Group(g) => g.command(now, command),
            Self::P2p(p) => p.command(now, p2p::command_of(command)?),
        }
    }

    fn packets_sent(&self) -> u64 {
        match self {
            Self::Group(g) => g.call.stats().packets_sent,
            Self::P2p(p) => p.call.stats().packets_sent,
        }
    }

    fn drain_frame_lateness(&mut self, lateness: &mut LatenessHistogram) {
        if let Self::Group(g) = self {
            g.call.drain_frame_lateness(|l| lateness.record(l));
        }
    }

    /// The socket the call sends from, once it has one.
    fn socket(&self, id: CallId) -> Option<Socket> {
        match self {
            Self::Group(g) => g.socket.map(Socket::Shared),
            Self::P2p(_) => Some(Socket::Own(id)),
        }
    }
}

struct Slot {
    id: CallId,
    kind: CallKind,
    /// The deadline this call has in the wheel (lazy deletion: other entries are stale).
    scheduled: Option<Instant>,
    /// The call's `packets_sent` already added to the endpoint's counter.
    packets_counted: u64,
    span: tracing::Span,
    /// Test-only fault: the call's next processing panics ([`Endpoint::inject_panic`]).
    fault: bool,
}

/// Many calls and their sockets. See the [module docs](self).
pub struct Endpoint {
    shard: usize,
    /// Boxed: a slot inline would be as large as the largest kind of call (~14 KB, a 1:1 call
    /// with its str0m `Rtc`), for every call and for the vector's spare capacity.
    calls: Vec<Option<Box<Slot>>>,
    free: Vec<usize>,
    by_id: HashMap<CallId, usize>,
    placement: Placement<CallId>,
    wheel: TimerWheel<CallId>,
    due: Vec<(Instant, CallId)>,
    transmits: VecDeque<EndpointTransmit>,
    /// Sent datagrams' buffers, for the calls' send fast path ([`Endpoint::recycle`]).
    spare: Vec<Vec<u8>>,
    events: VecDeque<(CallId, EndpointEvent)>,
    reaped: VecDeque<ReapedCall>,
    stats: EndpointStats,
    /// Whether each call's processing runs under `catch_unwind` (always, but for the
    /// benchmark that measures what the guard costs).
    panic_guard: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("shard", &self.shard)
            .field("calls", &self.by_id.len())
            .field("sockets", &self.placement.len())
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
            by_id: HashMap::new(),
            placement: Placement::new(),
            wheel: TimerWheel::new(now),
            due: Vec::new(),
            transmits: VecDeque::new(),
            spare: Vec::new(),
            events: VecDeque::new(),
            reaped: VecDeque::new(),
            stats: EndpointStats::default(),
            panic_guard: true,
        }
    }

    /// Registers a shared socket bound to `addr` (a concrete address, not `0.0.0.0`).
    pub fn add_socket(&mut self, addr: SocketAddr) -> SocketId {
        let id = self.placement.add_socket(addr);
        self.stats.sockets = self.placement.len() as u64;
        id
    }

    /// The local address of a socket: a registered one, or a live 1:1 call's own.
    pub fn socket_addr(&self, socket: impl Into<Socket>) -> Option<SocketAddr> {
        match socket.into() {
            Socket::Shared(s) => self.placement.socket_addr(s),
            Socket::Own(id) => match &self.slot(id)?.kind {
                CallKind::P2p(p) => Some(p.call.local_addr()),
                CallKind::Group(_) => None,
            },
        }
    }

    /// True if a call of either kind has this id.
    pub fn contains(&self, id: CallId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Gives a command to a call. A 1:1 call takes it as the matching
    /// [`crate::p2p_call::Command`] (`Stop` is `Hangup`).
    pub fn command(
        &mut self,
        now: Instant,
        id: CallId,
        command: Command,
    ) -> Result<(), EndpointError> {
        let (idx, _) = self.slot_mut(id)?;
        let Some(result) = self.guarded(idx, |kind| kind.command(now, command)) else {
            return Err(EndpointError::CallPanicked(id));
        };
        self.drain(idx);
        result
    }

    /// Test-only fault hook: the next processing of call `id` (a command, a datagram, a timer,
    /// a poll) panics inside the call's guard, as a bug in the call's code would. The call
    /// ends with [`EndReason::Panicked`](crate::EndReason::Panicked) (1:1:
    /// `P2pEndReason::Panicked`); nothing else is touched. For tests of that guarantee.
    #[doc(hidden)]
    pub fn inject_panic(&mut self, id: CallId) -> Result<(), EndpointError> {
        let (_, slot) = self.slot_mut(id)?;
        slot.fault = true;
        Ok(())
    }

    /// Turns the per-call panic guard off (`false`) or on. Only for the benchmark that
    /// measures what the guard costs (`benches/benches/panic_guard.rs`); a panic without it
    /// unwinds through the endpoint and the runtime's thread.
    #[doc(hidden)]
    pub fn set_panic_guard(&mut self, on: bool) {
        self.panic_guard = on;
    }

    /// Runs `f` on the call in slot `idx`, in its tracing span, under `catch_unwind`: a panic
    /// in the call's processing (a bug) ends that call alone ([`Endpoint::fail`]) and returns
    /// `None`. `None` too if the slot is empty.
    fn guarded<T>(&mut self, idx: usize, f: impl FnOnce(&mut CallKind) -> T) -> Option<T> {
        let guard = self.panic_guard;
        let Some(Some(slot)) = self.calls.get_mut(idx) else {
            return None;
        };
        let fault = std::mem::take(&mut slot.fault);
        let span = slot.span.clone();
        let kind = &mut slot.kind;
        let run = move || {
            let _enter = span.entered();
            if fault {
                panic!("injected fault (Endpoint::inject_panic)");
            }
            f(kind)
        };
        if !guard {
            return Some(run());
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(value) => Some(value),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic with a non-string payload".to_owned());
                self.fail(idx, message);
                None
            }
        }
    }

    /// Ends the call in slot `idx` after its processing panicked: its end event with the
    /// panic's message, counted, and the call reaped. Its state may be half-updated, so nothing
    /// of it is used again.
    fn fail(&mut self, idx: usize, message: String) {
        let Some(Some(slot)) = self.calls.get(idx) else {
            return;
        };
        tracing::error!(call = slot.id.0, %message, "call panicked; it ends, the others go on");
        let event = match slot.kind {
            CallKind::Group(_) => EndpointEvent::Group(crate::call::Event::ConnectionChanged(
                CallState::Ended(crate::call::EndReason::Panicked(message)),
            )),
            CallKind::P2p(_) => EndpointEvent::P2p(crate::p2p_call::Event::StateChanged(
                crate::p2p_call::P2pState::Ended(crate::p2p_call::P2pEndReason::Panicked(message)),
            )),
        };
        let id = slot.id;
        self.stats.calls_panicked += 1;
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.stats.dropped_events += 1;
        } else {
            self.events.push_back((id, event));
        }
        self.reap(idx);
    }

    /// A datagram that arrived on `socket` from `source`: routed to its call (by the shared
    /// socket's routing table, or to the owner of a call's own socket) if the call takes it
    /// from that source; otherwise counted in [`EndpointStats::dropped_unroutable`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: impl Into<Socket>,
        source: SocketAddr,
        contents: &[u8],
    ) {
        self.stats.datagrams_received += 1;
        let socket = socket.into();
        let id = match socket {
            Socket::Shared(s) => self.placement.route(s, &source, contents),
            Socket::Own(id) => Some(id),
        };
        let Some(idx) = id.and_then(|id| self.by_id.get(&id).copied()) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        let Some(Some(slot)) = self.calls.get_mut(idx) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        if !slot.kind.accepts(socket, &source) {
            self.stats.dropped_unroutable += 1;
            return;
        }
        match self.guarded(idx, |kind| kind.handle_datagram(now, source, contents)) {
            Some(Err(e)) => {
                self.stats.dropped_by_call += 1;
                tracing::trace!("datagram dropped: {e}");
            }
            Some(Ok(())) => {}
            None => return, // the call panicked and is gone
        }
        self.drain(idx);
    }

    /// Drives every call whose deadline has passed: the pacer tick. Their packets are then
    /// waiting in [`Endpoint::poll_transmit`] as one batch.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.wheel.pop_due(now, &mut due);
        let mut spare = std::mem::take(&mut self.spare);
        for (at, id) in due.drain(..) {
            let Ok((idx, slot)) = self.slot_mut(id) else {
                continue;
            };
            if slot.scheduled != Some(at) {
                continue; // stale entry
            }
            slot.scheduled = None;
            if self
                .guarded(idx, |kind| kind.handle_timeout(now, &mut spare))
                .is_some()
            {
                self.drain(idx);
            }
        }
        self.spare = spare;
        self.due = due;
    }

    /// Gives back the buffer of a datagram the runtime has sent, for a later packet of the send
    /// fast path ([`crate::transport::MediaOut`]): with every buffer recycled, sending costs no
    /// allocation. At most [`MAX_SPARE_BUFFERS`] are kept; the rest are freed.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        // Not cleared here: the fast path clears a buffer when it writes into it.
        if self.spare.len() < MAX_SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }

    /// The earliest instant [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Next datagram to send, from any call.
    pub fn poll_transmit(&mut self) -> Option<EndpointTransmit> {
        let t = self.transmits.pop_front()?;
        self.stats.datagrams_sent += 1;
        Some(t)
    }

    /// Number of datagrams waiting in [`Endpoint::poll_transmit`].
    pub fn pending_transmits(&self) -> usize {
        self.transmits.len()
    }

    /// Next event, with the call it belongs to.
    pub fn poll_event(&mut self) -> Option<(CallId, EndpointEvent)> {
        self.events.pop_front()
    }

    /// A call that ended and was removed: the runtime releases what it held outside the
    /// endpoint (a placement across shards, a 1:1 call's socket).
    pub fn poll_reaped(&mut self) -> Option<ReapedCall> {
        self.reaped.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    fn slot(&self, id: CallId) -> Option<&Slot> {
        let idx = self.by_id.get(&id)?;
        self.calls.get(*idx)?.as_deref()
    }

    fn slot_mut(&mut self, id: CallId) -> Result<(usize, &mut Slot), EndpointError> {
        let idx = *self
            .by_id
            .get(&id)
            .ok_or(EndpointError::ConnectionNotFound(id))?;
        match self.calls.get_mut(idx) {
            Some(Some(slot)) => Ok((idx, &mut **slot)),
            _ => Err(EndpointError::ConnectionNotFound(id)),
        }
    }

    /// Adds a call to the table; `ConnectionExists` if the id is live.
    fn insert(
        &mut self,
        id: CallId,
        kind: CallKind,
        span: tracing::Span,
    ) -> Result<usize, EndpointError> {
        if self.by_id.contains_key(&id) {
            return Err(EndpointError::ConnectionExists(id));
        }
        match kind {
            CallKind::Group(_) => self.stats.calls += 1,
            CallKind::P2p(_) => self.stats.p2p_calls += 1,
        }
        let slot = Slot {
            id,
            kind,
            scheduled: None,
            packets_counted: 0,
            fault: false,
            span,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.calls.get_mut(i) {
                    *s = Some(Box::new(slot));
                }
                i
            }
            None => {
                self.calls.push(Some(Box::new(slot)));
                self.calls.len() - 1
            }
        };
        self.by_id.insert(id, idx);
        Ok(idx)
    }

    /// Drains a call's outputs into the endpoint's queues, reschedules it, reaps it if it ended.
    fn drain(&mut self, idx: usize) {
        let mut ended = false;
        loop {
            let Some(Some(slot)) = self.calls.get(idx) else {
                return;
            };
            let id = slot.id;
            let Some(polled) = self.guarded(idx, |kind| kind.poll(id)) else {
                return; // the call panicked and is gone
            };
            let Some(Some(slot)) = self.calls.get_mut(idx) else {
                return;
            };
            match polled {
                Polled::Timeout(at) => {
                    if !ended && slot.scheduled != Some(at) {
                        slot.scheduled = Some(at);
                        self.wheel.insert(at, slot.id);
                    }
                    break;
                }
                Polled::Transmit(t) => self.transmits.push_back(t),
                Polled::Event(e) => {
                    ended |= e.ends_call();
                    if self.events.len() >= MAX_QUEUED_EVENTS {
                        self.stats.dropped_events += 1;
                    } else {
                        self.events.push_back((slot.id, e));
                    }
                }
            }
        }
        if let Some(Some(slot)) = self.calls.get_mut(idx) {
            let sent = slot.kind.packets_sent();
            self.stats.packets_sent += sent.saturating_sub(slot.packets_counted);
            slot.packets_counted = sent;
            slot.kind.drain_frame_lateness(&mut self.stats.lateness);
        }
        if ended {
            self.reap(idx);
        }
    }

    /// Removes an ended call so its id can be used again at once.
    fn reap(&mut self, idx: usize) {
        let Some(slot) = self.calls.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(&slot.id);
        self.free.push(idx);
        match slot.kind {
            CallKind::Group(_) => {
                self.placement.release(slot.id);
                self.stats.calls = self.stats.calls.saturating_sub(1);
            }
            CallKind::P2p(_) => self.stats.p2p_calls = self.stats.p2p_calls.saturating_sub(1),
        }
        // Bounded by the number of calls: a runtime that never polls it holds at most one
        // entry per call ever reaped, so cap it.
        if self.reaped.len() < MAX_QUEUED_EVENTS {
            self.reaped.push_back(ReapedCall {
                id: slot.id,
                socket: slot.kind.socket(slot.id),
            });
        }
        self.stats.calls_reaped += 1;
    }
}
