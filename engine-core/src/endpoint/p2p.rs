//! 1:1 calls in an [`Endpoint`]: creation, signaling, snapshots and the source-address rule.
//!
//! **Sockets.** Every 1:1 call has a UDP socket of its own, bound by the runtime before
//! [`Endpoint::create_p2p_call`] ([`P2pConfig::local_addr`]) and named [`Socket::Own`] with the
//! call's id: datagrams from it come in with [`Endpoint::handle_datagram`], and the call's
//! transmits name it; there is no routing by address or ufrag. One socket per call is what
//! makes two calls that talk to the same remote socket (both ends of many calls in one
//! process, or one peer in two calls) unambiguous; the cost is one descriptor and one pending
//! receive per call.
//!
//! **Source rule.** While connecting, any datagram reaches the call (str0m checks STUN
//! integrity and the DTLS fingerprint). Once connected, only datagrams from an address the call
//! has itself sent to are accepted: str0m sends only to signaled candidates and to peer-reflexive
//! addresses whose checks passed integrity, and after nomination only on the nominated pair, so
//! this is "the validated peer path". Anything else is dropped before the call sees it and
//! counted in [`EndpointStats::dropped_unroutable`](super::EndpointStats).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Socket;
use super::{CallId, CallKind, Endpoint, EndpointError, EndpointEvent, EndpointTransmit, Polled};
use crate::p2p_call::{
    Command, Input, Output, P2pCall, P2pConfig, P2pLinkStats, P2pState, P2pStats,
};
use crate::signaling::Ssrc;
use crate::signaling::p2p::{ChannelStats, Role, SctpStats};
use crate::transport::Datagram;

/// Remote addresses remembered per call for the source rule (a call sends to its signaled
/// candidates and validated peer-reflexive addresses; more than this is not a real peer).
const MAX_PEER_ADDRS: usize = 16;

/// A snapshot of one 1:1 call.
#[derive(Debug, Clone, PartialEq)]
pub struct P2pSnapshot {
    /// The peer's user id (the call's key).
    pub user_id: i64,
    /// Caller or callee.
    pub role: Role,
    /// Connection state.
    pub state: P2pState,
    /// Whether the call sends silence.
    pub muted: bool,
    /// Whether the call sends nothing.
    pub paused: bool,
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// The peer's SSRC once negotiated.
    pub remote_ssrc: Option<u32>,
    /// The call's socket address.
    pub local_addr: SocketAddr,
    /// How long connecting took, once connected.
    pub connect_duration: Option<Duration>,
    /// Media and signaling counters.
    pub stats: P2pStats,
    /// The encrypted signaling channel's counters (rejections by reason, resends).
    pub channel: ChannelStats,
    /// The SCTP carrier's counters when the call runs signaling V3 (12.0.0/13.0.0).
    pub sctp: Option<SctpStats>,
    /// RTT and loss.
    pub link: P2pLinkStats,
}

/// A 1:1 call as the endpoint's table holds it.
pub(super) struct P2pEntry {
    pub(super) call: P2pCall,
    /// Addresses the call has sent to (the source rule).
    peers: Vec<SocketAddr>,
}

/// A group call's command as a 1:1 call's (`Stop` is `Hangup`). 1:1 calls carry no video
/// yet: video commands are refused with [`CallError::Config`](crate::call::CallError).
pub(super) fn command_of(command: crate::call::Command) -> Result<Command, super::EndpointError> {
    use crate::call::Command as Group;
    Ok(match command {
        Group::SetSource(s) => Command::SetSource(s),
        Group::Pause => Command::Pause,
        Group::Resume => Command::Resume,
        Group::Mute => Command::Mute,
        Group::Unmute => Command::Unmute,
        Group::Stop => Command::Hangup,
        other => {
            return Err(crate::call::CallError::Config {
                reason: format!("{other:?}: 1:1 calls send no video yet"),
            }
            .into());
        }
    })
}

impl P2pEntry {
    pub(super) fn poll(&mut self, id: CallId) -> Polled {
        match self.call.poll_output() {
            Output::Timeout(at) => Polled::Timeout(at),
            Output::Transmit(t) => {
                if !self.peers.contains(&t.destination) && self.peers.len() < MAX_PEER_ADDRS {
                    self.peers.push(t.destination);
                }
                Polled::Transmit(EndpointTransmit {
                    socket: Socket::Own(id),
                    destination: t.destination,
                    contents: t.contents,
                })
            }
            Output::Signaling(bytes) => Polled::Event(EndpointEvent::Signaling(bytes)),
            Output::Event(e) => Polled::Event(EndpointEvent::P2p(e)),
        }
    }

    /// The source rule (module docs).
    pub(super) fn accepts(&self, source: &SocketAddr) -> bool {
        *self.call.state() != P2pState::Connected || self.peers.contains(source)
    }

    pub(super) fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> Result<(), EndpointError> {
        let destination = self.call.local_addr();
        let input = Input::Datagram(Datagram::new(source, destination, contents));
        Ok(self.call.handle_input(now, input)?)
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        // Timeouts never fail.
        let _ = self.call.handle_input(now, Input::Timeout);
    }

    pub(super) fn command(&mut self, now: Instant, command: Command) -> Result<(), EndpointError> {
        Ok(self.call.handle_input(now, Input::Command(command))?)
    }

    fn snapshot(&self, id: CallId) -> P2pSnapshot {
        let call = &self.call;
        P2pSnapshot {
            user_id: id.0,
            role: call.role(),
            state: call.state().clone(),
            muted: call.is_muted(),
            paused: call.is_paused(),
            ssrc: call.audio_ssrc().0,
            remote_ssrc: call.remote_ssrc().map(|Ssrc(s)| s),
            local_addr: call.local_addr(),
            connect_duration: call.connect_duration(),
            stats: call.stats().clone(),
            channel: call.channel_stats(),
            sctp: call.sctp_stats(),
            link: call.link_stats(),
        }
    }
}

impl Endpoint {
    /// Creates a 1:1 call with the peer `id` (their user id) on the socket bound to
    /// [`P2pConfig::local_addr`]. A caller's first signaling packets are waiting in
    /// [`Endpoint::poll_event`] when this returns.
    ///
    /// # Errors
    /// [`EndpointError::ConnectionExists`] if a call of either kind has this id;
    /// [`EndpointError::P2pCall`] if the call refuses its configuration.
    pub fn create_p2p_call(
        &mut self,
        now: Instant,
        id: CallId,
        config: P2pConfig,
    ) -> Result<(), EndpointError> {
        if self.contains(id) {
            return Err(EndpointError::ConnectionExists(id));
        }
        let role = config.role;
        let call = P2pCall::new(now, config)?;
        let span = tracing::info_span!("p2p", user_id = id.0, ?role, shard = self.shard);
        let entry = P2pEntry {
            call,
            peers: Vec::new(),
        };
        let idx = self.insert(id, CallKind::P2p(Box::new(entry)), span)?;
        self.drain(idx);
        Ok(())
    }

    /// The index of a live 1:1 call and its entry.
    fn p2p_mut(
        &mut self,
        id: CallId,
    ) -> Result<(usize, &mut P2pEntry, tracing::Span), EndpointError> {
        let (idx, slot) = self.slot_mut(id)?;
        let span = slot.span.clone();
        match &mut slot.kind {
            CallKind::P2p(p) => Ok((idx, p, span)),
            CallKind::Group(_) => Err(EndpointError::ConnectionNotFound(id)),
        }
    }

    /// Hands signaling bytes from the messenger (`updatePhoneCallSignalingData`) to a 1:1 call.
    ///
    /// # Errors
    /// [`EndpointError::ConnectionNotFound`]; [`EndpointError::P2pCall`] when the call refused
    /// the packet (tampered, replayed, wrong key: counted in its stats, the call goes on).
    pub fn p2p_signaling(
        &mut self,
        now: Instant,
        id: CallId,
        bytes: &[u8],
    ) -> Result<(), EndpointError> {
        let (idx, entry, span) = self.p2p_mut(id)?;
        let result = {
            let _enter = span.entered();
            entry.call.handle_input(now, Input::Signaling(bytes))
        };
        self.drain(idx);
        result.map_err(EndpointError::from)
    }

    /// Gives a command to a 1:1 call.
    ///
    /// # Errors
    /// [`EndpointError::ConnectionNotFound`]; [`EndpointError::P2pCall`] if the call has ended.
    pub fn p2p_command(
        &mut self,
        now: Instant,
        id: CallId,
        command: Command,
    ) -> Result<(), EndpointError> {
        let (idx, entry, span) = self.p2p_mut(id)?;
        let result = {
            let _enter = span.entered();
            entry.command(now, command)
        };
        self.drain(idx);
        result
    }

    /// One 1:1 call's snapshot.
    pub fn p2p_call(&self, id: CallId) -> Option<P2pSnapshot> {
        match &self.slot(id)?.kind {
            CallKind::P2p(p) => Some(p.snapshot(id)),
            CallKind::Group(_) => None,
        }
    }

    /// Every live 1:1 call's snapshot.
    pub fn p2p_calls(&self) -> Vec<P2pSnapshot> {
        self.calls
            .iter()
            .flatten()
            .filter_map(|s| match &s.kind {
                CallKind::P2p(p) => Some(p.snapshot(s.id)),
                CallKind::Group(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::crypto::generate_certificate;
    use crate::endpoint::ReapedCall;
    use crate::media::ToneSource;
    use crate::p2p_call::Event;
    use crate::signaling::p2p::CallKey;

    const A: CallId = CallId(42);
    const B: CallId = CallId(43);

    fn config(role: Role, seed: u64, addr: SocketAddr) -> P2pConfig {
        let key = CallKey::from_parts([7u8; 256], &[1u8; 256]);
        P2pConfig::new(role, key, seed, generate_certificate().unwrap(), addr)
    }

    /// Moves what `from` emitted to `to` (signaling, and datagrams addressed to `to_addr`);
    /// returns the audio packets `from` received and whether it connected.
    fn pass(
        now: Instant,
        from: &mut Endpoint,
        (to, to_id): (&mut Endpoint, CallId),
        (from_addr, to_addr): (SocketAddr, SocketAddr),
    ) -> (u64, bool) {
        let (mut audio, mut connected) = (0, false);
        let mut signaling = Vec::new();
        while let Some((_, e)) = from.poll_event() {
            match e {
                EndpointEvent::Signaling(b) => signaling.push(b),
                EndpointEvent::P2p(Event::AudioReceived(_)) => audio += 1,
                EndpointEvent::P2p(Event::StateChanged(P2pState::Connected)) => {
                    connected = true;
                }
                _ => {}
            }
        }
        while let Some(t) = from.poll_transmit() {
            assert!(matches!(t.socket, Socket::Own(_)), "{t:?}");
            if t.destination == to_addr {
                to.handle_datagram(now, Socket::Own(to_id), from_addr, &t.contents);
            }
        }
        for b in signaling {
            let _ = to.p2p_signaling(now, to_id, &b);
        }
        (audio, connected)
    }

    /// One step of virtual time for both ends.
    fn step(
        now: Instant,
        (ea, eb): (&mut Endpoint, &mut Endpoint),
        (aa, ab): (SocketAddr, SocketAddr),
        audio: &mut [u64; 2],
        connected: &mut [bool; 2],
    ) {
        ea.handle_timeout(now);
        eb.handle_timeout(now);
        for _ in 0..4 {
            let (n, c) = pass(now, ea, (eb, A), (aa, ab));
            audio[0] += n;
            connected[0] |= c;
            let (n, c) = pass(now, eb, (ea, B), (ab, aa));
            audio[1] += n;
            connected[1] |= c;
        }
    }

    #[test]
    fn two_endpoints_connect_a_p2p_call_and_apply_the_source_rule() {
        let t0 = Instant::now();
        let aa: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let ab: SocketAddr = "10.0.0.2:6000".parse().unwrap();
        let mut ea = Endpoint::new(t0, 0);
        let mut eb = Endpoint::new(t0, 1);
        // A calls user B (keyed B on A's endpoint), B answers user A.
        ea.create_p2p_call(t0, B, config(Role::Caller, 1, aa))
            .unwrap();
        eb.create_p2p_call(t0, A, config(Role::Callee, 2, ab))
            .unwrap();
        assert!(matches!(
            ea.create_p2p_call(t0, B, config(Role::Caller, 3, aa)),
            Err(EndpointError::ConnectionExists(B))
        ));
        for (e, id, hz) in [(&mut ea, B, 440.0), (&mut eb, A, 1000.0)] {
            let tone = ToneSource::new(hz, None).unwrap();
            e.p2p_command(t0, id, Command::SetSource(Box::new(tone)))
                .unwrap();
        }
        let mut audio = [0u64; 2];
        let mut connected = [false; 2];
        let mut now = t0;
        // Virtual time: 5 ms steps, at most 10 s.
        while audio.iter().any(|n| *n < 25) {
            assert!(
                now - t0 < Duration::from_secs(10),
                "{audio:?} {connected:?}"
            );
            now += Duration::from_millis(5);
            step(
                now,
                (&mut ea, &mut eb),
                (aa, ab),
                &mut audio,
                &mut connected,
            );
        }
        assert_eq!(connected, [true, true]);
        let sa = ea.p2p_call(B).unwrap();
        assert_eq!(sa.state, P2pState::Connected);
        assert_eq!(sa.remote_ssrc, Some(eb.p2p_call(A).unwrap().ssrc));
        assert_eq!(ea.stats().p2p_calls, 1);
        assert!(ea.stats().packets_sent >= 25);

        // The source rule: once connected, a stranger's datagram never reaches the call.
        let dropped = ea.stats().dropped_unroutable;
        let received = sa.stats.datagrams_received;
        let stranger: SocketAddr = "10.0.0.9:7000".parse().unwrap();
        ea.handle_datagram(now, Socket::Own(B), stranger, &[0x80; 60]);
        assert_eq!(ea.stats().dropped_unroutable, dropped + 1);
        let after = ea.p2p_call(B).unwrap();
        assert_eq!(after.stats.datagrams_received, received);
        assert_eq!(after.stats.dropped_rejected, sa.stats.dropped_rejected);
        // An unknown user id is unroutable too, and so is the call's peer on a shared socket.
        ea.handle_datagram(now, Socket::Own(CallId(999)), ab, &[0x80; 60]);
        assert_eq!(ea.stats().dropped_unroutable, dropped + 2);
        let shared = ea.add_socket("10.0.0.1:5001".parse().unwrap());
        ea.handle_datagram(now, shared, ab, &[0x80; 60]);
        assert_eq!(ea.stats().dropped_unroutable, dropped + 3);
        assert_eq!(ea.socket_addr(Socket::Own(B)), Some(aa));
        assert!(ea.contains(B));
        assert_eq!(ea.call(B), None, "a 1:1 call is not a group call");

        // Group commands map onto the 1:1 call; Stop hangs up and the call is reaped.
        ea.command(now, B, crate::call::Command::Stop).unwrap();
        assert_eq!(
            ea.poll_reaped(),
            Some(ReapedCall {
                id: B,
                socket: Some(Socket::Own(B)),
            })
        );
        assert!(!ea.contains(B));
        assert!(ea.p2p_call(B).is_none());
        assert_eq!(ea.stats().p2p_calls, 0);
        // close_notify went out: the callee ends.
        let mut ended = false;
        while let Some(t) = ea.poll_transmit() {
            eb.handle_datagram(now, Socket::Own(A), aa, &t.contents);
        }
        while let Some((id, e)) = eb.poll_event() {
            assert_eq!(id, A);
            ended |= e.ends_call();
        }
        assert!(ended, "callee did not see the hangup");
        assert!(eb.p2p_call(A).is_none());
    }
}
