//! Group calls in an [`Endpoint`]: creation, placement on a shared socket, snapshots, and the
//! source rule.
//!
//! **Source rule.** STUN is routed by ufrag from any address (the SFU's checks may come from an
//! address it did not list). Once the call is connected the path is known: a datagram from
//! anywhere but the SFU's addresses is not the call's business and must not reach its state or
//! counters; it is counted in [`EndpointStats::dropped_unroutable`](super::EndpointStats).

use std::net::SocketAddr;
use std::time::Instant;

use super::{CallId, CallKind, Endpoint, EndpointError, EndpointEvent, EndpointTransmit, Polled};
use crate::call::{Call, CallConfig, CallState, CallStats, Command, Input, MediaState, Output};
use crate::placement::SocketId;
use crate::signaling::group::JoinResponse;

/// A snapshot of one group call.
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

/// A group call as the endpoint's table holds it.
pub(super) struct GroupEntry {
    pub(super) call: Call,
    /// The shared socket it was placed on, once connecting.
    pub(super) socket: Option<SocketId>,
}

impl GroupEntry {
    pub(super) fn poll(&mut self) -> Polled {
        loop {
            return match self.call.poll_output() {
                Output::Timeout(at) => Polled::Timeout(at),
                Output::Transmit(t) => {
                    let Some(socket) = self.socket else {
                        continue; // not placed yet: nowhere to send from
                    };
                    Polled::Transmit(EndpointTransmit {
                        socket: socket.into(),
                        destination: t.destination,
                        contents: t.contents,
                    })
                }
                Output::Event(e) => Polled::Event(EndpointEvent::Group(e)),
            };
        }
    }

    /// The source rule (module docs).
    pub(super) fn accepts(&self, source: &SocketAddr) -> bool {
        *self.call.state() != CallState::Connected || self.call.remote_addrs().contains(source)
    }

    pub(super) fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> Result<(), EndpointError> {
        // Routed only once placed (connect), when the local address is known.
        let Some(destination) = self.call.local_addr() else {
            return Ok(());
        };
        let input = Input::Datagram {
            source,
            destination,
            contents,
        };
        Ok(self.call.handle_input(now, input)?)
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        // Timeouts never fail.
        let _ = self.call.handle_input(now, Input::Timeout);
    }

    pub(super) fn command(&mut self, now: Instant, command: Command) -> Result<(), EndpointError> {
        Ok(self.call.handle_input(now, Input::Command(command))?)
    }

    fn snapshot(&self, id: CallId) -> CallSnapshot {
        CallSnapshot {
            chat_id: id.0,
            state: self.call.state().clone(),
            media: self.call.media_state(),
            ssrc: self.call.audio_ssrc().0,
            local_addr: self.call.local_addr(),
            stats: self.call.stats().clone(),
        }
    }
}

/// Every SFU address in an answer, whatever its family (placement keeps those a socket can
/// reach).
fn sfu_addrs(response: &JoinResponse) -> Vec<SocketAddr> {
    response
        .transport
        .candidates
        .iter()
        .map(|c| c.address())
        .collect()
}

impl Endpoint {
    /// Creates a group call and returns its join payload JSON.
    ///
    /// # Errors
    /// [`EndpointError::ConnectionExists`] if a call of either kind has this id;
    /// [`EndpointError::Call`] if the call refuses its configuration.
    pub fn create_call(
        &mut self,
        now: Instant,
        id: CallId,
        config: CallConfig,
    ) -> Result<String, EndpointError> {
        if self.contains(id) {
            return Err(EndpointError::ConnectionExists(id));
        }
        let call = Call::new(now, config)?;
        let payload = call.join_payload().to_json();
        let span = tracing::info_span!("call", chat_id = id.0, shard = self.shard);
        let entry = GroupEntry { call, socket: None };
        self.insert(id, CallKind::Group(entry), span)?;
        Ok(payload)
    }

    /// The index of a live group call.
    fn group_index(&self, id: CallId) -> Result<usize, EndpointError> {
        match self.slot(id).map(|s| &s.kind) {
            Some(CallKind::Group(_)) => self
                .by_id
                .get(&id)
                .copied()
                .ok_or(EndpointError::ConnectionNotFound(id)),
            _ => Err(EndpointError::ConnectionNotFound(id)),
        }
    }

    /// Applies the SFU's answer to a group call, placing it on a socket by the socket rule.
    ///
    /// # Errors
    /// [`EndpointError::NoFreeSocket`]: register another socket and call again;
    /// [`EndpointError::ConnectionNotFound`]; [`EndpointError::Call`] if the call refuses the
    /// answer.
    pub fn connect(
        &mut self,
        now: Instant,
        id: CallId,
        response: &JoinResponse,
    ) -> Result<SocketId, EndpointError> {
        self.group_index(id)?;
        let socket = self
            .placement
            .find(id, &sfu_addrs(response))
            .ok_or(EndpointError::NoFreeSocket)?;
        self.connect_on(now, id, response, socket)?;
        Ok(socket)
    }

    /// Applies the SFU's answer to a group call on a socket the caller chose. For runtimes
    /// whose shards share sockets: the socket rule must then hold across shards, so placement
    /// is decided by whoever sees them all (the engine's socket pool), not by one endpoint.
    ///
    /// # Errors
    /// [`EndpointError::NoFreeSocket`] if `socket` is not registered or another call here
    /// talks to one of the SFU's addresses from it; otherwise as [`Endpoint::connect`].
    pub fn connect_on(
        &mut self,
        now: Instant,
        id: CallId,
        response: &JoinResponse,
        socket: SocketId,
    ) -> Result<(), EndpointError> {
        let idx = self.group_index(id)?;
        let local = self
            .placement
            .socket_addr(socket)
            .ok_or(EndpointError::NoFreeSocket)?;
        self.placement
            .check(id, socket, &sfu_addrs(response))
            .map_err(|_| EndpointError::NoFreeSocket)?;
        let Some(Some(slot)) = self.calls.get_mut(idx) else {
            return Err(EndpointError::ConnectionNotFound(id));
        };
        let CallKind::Group(entry) = &mut slot.kind else {
            return Err(EndpointError::ConnectionNotFound(id));
        };
        {
            let _enter = slot.span.clone().entered();
            entry.call.connect(now, response, local)?;
        }
        entry.socket = Some(socket);
        // Cannot fail: the call's addresses are the answer's, just checked.
        let claimed = self.placement.claim(
            id,
            socket,
            entry.call.remote_addrs(),
            entry.call.local_ufrag(),
        );
        self.drain(idx);
        claimed.map_err(|_| EndpointError::NoFreeSocket)
    }

    /// True if a datagram from `source` on shared socket `socket` belongs to one of this
    /// endpoint's calls.
    pub fn routes(&self, socket: SocketId, source: &SocketAddr, contents: &[u8]) -> bool {
        self.placement.route(socket, source, contents).is_some()
    }

    /// One group call's snapshot.
    pub fn call(&self, id: CallId) -> Option<CallSnapshot> {
        match &self.slot(id)?.kind {
            CallKind::Group(g) => Some(g.snapshot(id)),
            CallKind::P2p(_) => None,
        }
    }

    /// A live group call's ICE ufrag (for runtimes that route STUN across shards).
    pub fn local_ufrag(&self, id: CallId) -> Option<&str> {
        match &self.slot(id)?.kind {
            CallKind::Group(g) => Some(g.call.local_ufrag()),
            CallKind::P2p(_) => None,
        }
    }

    /// Every live group call's snapshot.
    pub fn calls(&self) -> Vec<CallSnapshot> {
        self.calls
            .iter()
            .flatten()
            .filter_map(|s| match &s.kind {
                CallKind::Group(g) => Some(g.snapshot(s.id)),
                CallKind::P2p(_) => None,
            })
            .collect()
    }
}
