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
use crate::transport::Datagram;

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
        let input = Input::Datagram(Datagram::new(source, destination, contents));
        Ok(self.call.handle_input(now, input)?)
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, spare: &mut Vec<Vec<u8>>) {
        self.call.stock_buffer(spare);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;
    use crate::call::{EndReason, Event};
    use crate::crypto::generate_certificate;
    use crate::endpoint::{ReapedCall, Socket};

    /// An SFU answer with one IPv4 host candidate, 203.0.113.10:`port`.
    fn answer(port: u16) -> JoinResponse {
        let json = format!(
            r#"{{"transport":{{"ufrag":"sfuufrag","pwd":"sfupassword0123456789abc","fingerprints":[{{"hash":"sha-256","setup":"active","fingerprint":"0B:7C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:EA:FB:0C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:E1"}}],"candidates":[{{"generation":"0","component":"1","protocol":"udp","port":"{port}","ip":"203.0.113.10","foundation":"1","id":"a","priority":"2130706431","type":"host","network":"0"}}]}},"audio":{{"payload-types":[{{"id":111,"name":"opus","clockrate":48000,"channels":2,"parameters":{{"minptime":10,"useinbandfec":1}}}}],"rtp-hdrexts":[{{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"}}]}}}}"#
        );
        JoinResponse::parse(json.as_bytes()).unwrap()
    }

    fn sfu(port: u16) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 10], port))
    }

    fn create(e: &mut Endpoint, now: Instant, id: i64) {
        let config = CallConfig::new(id as u64, generate_certificate().unwrap());
        e.create_call(now, CallId(id), config).unwrap();
    }

    #[test]
    fn group_calls_are_placed_by_the_socket_rule_and_give_their_socket_back_on_reap() {
        let t0 = Instant::now();
        let mut e = Endpoint::new(t0, 0);
        for id in 1..=3 {
            create(&mut e, t0, id);
        }
        assert!(matches!(
            e.create_call(
                t0,
                CallId(2),
                CallConfig::new(9, generate_certificate().unwrap())
            ),
            Err(EndpointError::ConnectionExists(CallId(2)))
        ));
        assert!(matches!(
            e.connect(t0, CallId(9), &answer(32001)),
            Err(EndpointError::ConnectionNotFound(CallId(9)))
        ));
        // No socket yet: ask for one.
        assert!(matches!(
            e.connect(t0, CallId(1), &answer(32001)),
            Err(EndpointError::NoFreeSocket)
        ));
        let s0 = e.add_socket("192.0.2.1:40000".parse().unwrap());
        assert_eq!(e.connect(t0, CallId(1), &answer(32001)).unwrap(), s0);
        // Same SFU address: not on socket 0.
        assert!(matches!(
            e.connect(t0, CallId(2), &answer(32001)),
            Err(EndpointError::NoFreeSocket)
        ));
        assert!(matches!(
            e.connect_on(t0, CallId(2), &answer(32001), s0),
            Err(EndpointError::NoFreeSocket)
        ));
        let s1 = e.add_socket("192.0.2.1:40001".parse().unwrap());
        assert_eq!(e.connect(t0, CallId(2), &answer(32001)).unwrap(), s1);
        // Another SFU address shares socket 0.
        assert_eq!(e.connect(t0, CallId(3), &answer(32009)).unwrap(), s0);
        assert!(e.routes(s0, &sfu(32001), &[0x80; 20]));
        assert!(e.routes(s1, &sfu(32001), &[0x80; 20]));
        assert!(e.routes(s0, &sfu(32009), &[0x80; 20]));
        assert!(!e.routes(s1, &sfu(32009), &[0x80; 20]));
        assert_eq!(e.call(CallId(2)).unwrap().local_addr, e.socket_addr(s1));

        // What the calls send leaves by their shared sockets, toward their SFU.
        let mut now = t0;
        let mut sent = Vec::new();
        while sent.is_empty() && now < t0 + Duration::from_secs(1) {
            now += Duration::from_millis(5);
            e.handle_timeout(now);
            while let Some(t) = e.poll_transmit() {
                sent.push((t.socket, t.destination));
            }
        }
        assert!(!sent.is_empty());
        for (socket, destination) in &sent {
            let want = if *destination == sfu(32001) {
                vec![Socket::Shared(s0), Socket::Shared(s1)]
            } else {
                vec![Socket::Shared(s0)]
            };
            assert!(want.contains(socket), "{socket:?} -> {destination}");
        }

        // Stop call 1: it ends, is reaped, and socket 0 takes a new call to its SFU.
        e.command(now, CallId(1), Command::Stop).unwrap();
        let mut reaped = None;
        while reaped.is_none() && now < t0 + Duration::from_secs(5) {
            now += Duration::from_millis(5);
            e.handle_timeout(now);
            while e.poll_transmit().is_some() {}
            reaped = e.poll_reaped();
        }
        assert_eq!(
            reaped,
            Some(ReapedCall {
                id: CallId(1),
                socket: Some(Socket::Shared(s0)),
            })
        );
        let mut ended = false;
        while let Some((id, ev)) = e.poll_event() {
            if id == CallId(1) {
                ended |= ev
                    == EndpointEvent::Group(Event::ConnectionChanged(CallState::Ended(
                        EndReason::Stopped,
                    )));
            }
        }
        assert!(ended);
        assert!(!e.contains(CallId(1)));
        assert_eq!(e.stats().calls, 2);
        assert_eq!(e.stats().calls_reaped, 1);
        assert!(!e.routes(s0, &sfu(32001), &[0x80; 20]));
        create(&mut e, now, 4);
        assert_eq!(e.connect(now, CallId(4), &answer(32001)).unwrap(), s0);
    }
}
