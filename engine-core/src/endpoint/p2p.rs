//! 1:1 calls in an [`Endpoint`]: slab, timer-wheel entries, queues and the source-address rule.
//!
//! **Sockets.** Every 1:1 call has a UDP socket of its own, bound by the runtime before
//! [`Endpoint::create_p2p_call`] ([`P2pConfig::local_addr`]). Datagrams from it come in with
//! [`Endpoint::handle_p2p_datagram`] keyed by user id, and [`P2pTransmit`]s name the user id
//! whose socket sends them; there is no routing by address or ufrag. One socket per call is
//! what makes two calls that talk to the same remote socket (both ends of many calls in one
//! process, or one peer in two calls) unambiguous; the cost is one descriptor and one pending
//! receive per call.
//!
//! **Source rule.** While connecting, any datagram reaches the call (str0m checks STUN
//! integrity and the DTLS fingerprint). Once connected, only datagrams from an address the call
//! has itself sent to are accepted: str0m sends only to signaled candidates and to peer-reflexive
//! addresses whose checks passed integrity, and after nomination only on the nominated pair, so
//! this is "the validated peer path". Anything else is dropped before the call sees it and
//! counted in [`EndpointStats::dropped_unroutable`](super::EndpointStats).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Endpoint, EndpointError, MAX_QUEUED_EVENTS, WheelKey};
use crate::p2p_call::{
    Command, Event, Input, Output, P2pCall, P2pConfig, P2pLinkStats, P2pState, P2pStats,
};
use crate::signaling::Ssrc;
use crate::signaling::p2p::{ChannelStats, Role};

/// Remote addresses remembered per call for the source rule (a call sends to its signaled
/// candidates and validated peer-reflexive addresses; more than this is not a real peer).
const MAX_PEER_ADDRS: usize = 16;

/// A datagram a 1:1 call sends from its own socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2pTransmit {
    /// The call (its socket) that sends it.
    pub user_id: i64,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// What a 1:1 call has for the application ([`Endpoint::poll_p2p_event`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum P2pEndpointEvent {
    /// Encrypted signaling bytes for the messenger (`phone.sendSignalingData`).
    Signaling(Vec<u8>),
    /// A call event (state, stream end, received audio).
    Call(Event),
}

/// A 1:1 call that ended and was removed: the runtime closes its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2pReaped {
    /// The peer's user id.
    pub user_id: i64,
    /// The address of the call's socket.
    pub local_addr: SocketAddr,
}

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
    /// RTT and loss.
    pub link: P2pLinkStats,
}

pub(super) struct P2pSlot {
    user_id: i64,
    call: P2pCall,
    scheduled: Option<Instant>,
    /// Addresses the call has sent to (the source rule).
    peers: Vec<SocketAddr>,
    /// The call's `packets_sent` already added to the endpoint's counter.
    packets_counted: u64,
    span: tracing::Span,
}

/// The 1:1 half of an endpoint.
#[derive(Default)]
pub(super) struct P2pCalls {
    slots: Vec<Option<P2pSlot>>,
    free: Vec<usize>,
    by_user: HashMap<i64, usize>,
    transmits: VecDeque<P2pTransmit>,
    events: VecDeque<(i64, P2pEndpointEvent)>,
    reaped: VecDeque<P2pReaped>,
}

impl P2pCalls {
    pub(super) fn contains(&self, user_id: i64) -> bool {
        self.by_user.contains_key(&user_id)
    }

    fn slot_mut(&mut self, user_id: i64) -> Result<(usize, &mut P2pSlot), EndpointError> {
        let idx = *self
            .by_user
            .get(&user_id)
            .ok_or(EndpointError::ConnectionNotFound(user_id))?;
        match self.slots.get_mut(idx) {
            Some(Some(slot)) => Ok((idx, slot)),
            _ => Err(EndpointError::ConnectionNotFound(user_id)),
        }
    }
}

fn snapshot(slot: &P2pSlot) -> P2pSnapshot {
    let call = &slot.call;
    P2pSnapshot {
        user_id: slot.user_id,
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
        link: call.link_stats(),
    }
}

impl Endpoint {
    /// Creates a 1:1 call with the peer `user_id` on the socket bound to
    /// [`P2pConfig::local_addr`]. A caller's first signaling packets are waiting in
    /// [`Endpoint::poll_p2p_event`] when this returns.
    ///
    /// # Errors
    /// [`EndpointError::ConnectionExists`] if a group or 1:1 call has this id;
    /// [`EndpointError::P2pCall`] if the call refuses its configuration.
    pub fn create_p2p_call(
        &mut self,
        now: Instant,
        user_id: i64,
        config: P2pConfig,
    ) -> Result<(), EndpointError> {
        if self.by_chat.contains_key(&user_id) || self.p2p.contains(user_id) {
            return Err(EndpointError::ConnectionExists(user_id));
        }
        let role = config.role;
        let call = P2pCall::new(now, config)?;
        let slot = P2pSlot {
            user_id,
            call,
            scheduled: None,
            peers: Vec::new(),
            packets_counted: 0,
            span: tracing::info_span!("p2p", user_id, ?role, shard = self.shard),
        };
        let p2p = &mut self.p2p;
        let idx = match p2p.free.pop() {
            Some(i) => {
                if let Some(s) = p2p.slots.get_mut(i) {
                    *s = Some(slot);
                }
                i
            }
            None => {
                p2p.slots.push(Some(slot));
                p2p.slots.len() - 1
            }
        };
        p2p.by_user.insert(user_id, idx);
        self.stats.p2p_calls = p2p.by_user.len() as u64;
        self.p2p_drain(idx);
        Ok(())
    }

    /// Hands signaling bytes from the messenger (`updatePhoneCallSignalingData`) to a 1:1 call.
    ///
    /// # Errors
    /// [`EndpointError::ConnectionNotFound`]; [`EndpointError::P2pCall`] when the call refused
    /// the packet (tampered, replayed, wrong key: counted in its stats, the call goes on).
    pub fn p2p_signaling(
        &mut self,
        now: Instant,
        user_id: i64,
        bytes: &[u8],
    ) -> Result<(), EndpointError> {
        let (idx, slot) = self.p2p.slot_mut(user_id)?;
        let result = {
            let _enter = slot.span.clone().entered();
            slot.call.handle_input(now, Input::Signaling(bytes))
        };
        self.p2p_drain(idx);
        result.map_err(EndpointError::from)
    }

    /// Gives a command to a 1:1 call.
    ///
    /// # Errors
    /// [`EndpointError::ConnectionNotFound`]; [`EndpointError::P2pCall`] if the call has ended.
    pub fn p2p_command(
        &mut self,
        now: Instant,
        user_id: i64,
        command: Command,
    ) -> Result<(), EndpointError> {
        let (idx, slot) = self.p2p.slot_mut(user_id)?;
        let result = {
            let _enter = slot.span.clone().entered();
            slot.call.handle_input(now, Input::Command(command))
        };
        self.p2p_drain(idx);
        result.map_err(EndpointError::from)
    }

    /// A datagram that arrived on 1:1 call `user_id`'s socket from `source`.
    pub fn handle_p2p_datagram(
        &mut self,
        now: Instant,
        user_id: i64,
        source: SocketAddr,
        contents: &[u8],
    ) {
        self.stats.datagrams_received += 1;
        let Ok((idx, slot)) = self.p2p.slot_mut(user_id) else {
            self.stats.dropped_unroutable += 1;
            return;
        };
        if *slot.call.state() == P2pState::Connected && !slot.peers.contains(&source) {
            self.stats.dropped_unroutable += 1;
            return;
        }
        let destination = slot.call.local_addr();
        let result = {
            let _enter = slot.span.clone().entered();
            slot.call.handle_input(
                now,
                Input::Datagram {
                    source,
                    destination,
                    contents,
                },
            )
        };
        if let Err(e) = result {
            self.stats.dropped_by_call += 1;
            tracing::trace!(user_id, "p2p datagram dropped: {e}");
        }
        self.p2p_drain(idx);
    }

    /// Next datagram a 1:1 call sends (from its own socket).
    pub fn poll_p2p_transmit(&mut self) -> Option<P2pTransmit> {
        let t = self.p2p.transmits.pop_front()?;
        self.stats.datagrams_sent += 1;
        Some(t)
    }

    /// Next 1:1 event, with the user id it belongs to.
    pub fn poll_p2p_event(&mut self) -> Option<(i64, P2pEndpointEvent)> {
        self.p2p.events.pop_front()
    }

    /// A 1:1 call that ended and was removed (its socket can be closed).
    pub fn poll_p2p_reaped(&mut self) -> Option<P2pReaped> {
        self.p2p.reaped.pop_front()
    }

    /// One 1:1 call's snapshot.
    pub fn p2p_call(&self, user_id: i64) -> Option<P2pSnapshot> {
        let idx = self.p2p.by_user.get(&user_id)?;
        self.p2p.slots.get(*idx)?.as_ref().map(snapshot)
    }

    /// Every live 1:1 call's snapshot.
    pub fn p2p_calls(&self) -> Vec<P2pSnapshot> {
        self.p2p.slots.iter().flatten().map(snapshot).collect()
    }

    /// A wheel entry of 1:1 call `idx` fired.
    pub(super) fn p2p_timeout(&mut self, now: Instant, at: Instant, idx: usize) {
        let Some(Some(slot)) = self.p2p.slots.get_mut(idx) else {
            return;
        };
        if slot.scheduled != Some(at) {
            return; // stale entry
        }
        slot.scheduled = None;
        {
            let _enter = slot.span.clone().entered();
            // Timeouts never fail.
            let _ = slot.call.handle_input(now, Input::Timeout);
        }
        self.p2p_drain(idx);
    }

    /// Drains a 1:1 call's outputs into the queues, reschedules it, reaps it if it ended.
    fn p2p_drain(&mut self, idx: usize) {
        let mut ended = false;
        loop {
            let Some(Some(slot)) = self.p2p.slots.get_mut(idx) else {
                return;
            };
            let user_id = slot.user_id;
            let event = match slot.call.poll_output() {
                Output::Timeout(at) => {
                    if !ended && slot.scheduled != Some(at) {
                        slot.scheduled = Some(at);
                        self.wheel.insert(at, WheelKey::P2p(idx));
                    }
                    break;
                }
                Output::Transmit(t) => {
                    if !slot.peers.contains(&t.destination) && slot.peers.len() < MAX_PEER_ADDRS {
                        slot.peers.push(t.destination);
                    }
                    self.p2p.transmits.push_back(P2pTransmit {
                        user_id,
                        destination: t.destination,
                        contents: t.contents,
                    });
                    continue;
                }
                Output::Signaling(bytes) => P2pEndpointEvent::Signaling(bytes),
                Output::Event(e) => {
                    ended |= matches!(e, Event::StateChanged(P2pState::Ended(_)));
                    P2pEndpointEvent::Call(e)
                }
            };
            if self.p2p.events.len() >= MAX_QUEUED_EVENTS {
                self.stats.dropped_events += 1;
            } else {
                self.p2p.events.push_back((user_id, event));
            }
        }
        if let Some(Some(slot)) = self.p2p.slots.get_mut(idx) {
            let sent = slot.call.stats().packets_sent;
            self.stats.packets_sent += sent.saturating_sub(slot.packets_counted);
            slot.packets_counted = sent;
        }
        if ended {
            self.p2p_reap(idx);
        }
    }

    fn p2p_reap(&mut self, idx: usize) {
        let Some(slot) = self.p2p.slots.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.p2p.by_user.remove(&slot.user_id);
        self.p2p.free.push(idx);
        if self.p2p.reaped.len() < MAX_QUEUED_EVENTS {
            self.p2p.reaped.push_back(P2pReaped {
                user_id: slot.user_id,
                local_addr: slot.call.local_addr(),
            });
        }
        self.stats.p2p_calls = self.p2p.by_user.len() as u64;
        self.stats.calls_reaped += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::crypto::generate_certificate;
    use crate::media::ToneSource;
    use crate::signaling::p2p::CallKey;

    const A: i64 = 42;
    const B: i64 = 43;

    fn config(role: Role, seed: u64, addr: SocketAddr) -> P2pConfig {
        let key = CallKey::from_parts([7u8; 256], &[1u8; 256]);
        P2pConfig::new(role, key, seed, generate_certificate().unwrap(), addr)
    }

    /// Moves what `from` emitted to `to` (signaling, and datagrams addressed to `to_addr`);
    /// returns the audio packets `from` received and whether it connected.
    fn pass(
        now: Instant,
        from: &mut Endpoint,
        (to, to_id): (&mut Endpoint, i64),
        (from_addr, to_addr): (SocketAddr, SocketAddr),
    ) -> (u64, bool) {
        let (mut audio, mut connected) = (0, false);
        let mut signaling = Vec::new();
        while let Some((_, e)) = from.poll_p2p_event() {
            match e {
                P2pEndpointEvent::Signaling(b) => signaling.push(b),
                P2pEndpointEvent::Call(Event::AudioReceived { .. }) => audio += 1,
                P2pEndpointEvent::Call(Event::StateChanged(P2pState::Connected)) => {
                    connected = true;
                }
                P2pEndpointEvent::Call(_) => {}
            }
        }
        while let Some(t) = from.poll_p2p_transmit() {
            if t.destination == to_addr {
                to.handle_p2p_datagram(now, to_id, from_addr, &t.contents);
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
        ea.handle_p2p_datagram(now, B, stranger, &[0x80; 60]);
        assert_eq!(ea.stats().dropped_unroutable, dropped + 1);
        let after = ea.p2p_call(B).unwrap();
        assert_eq!(after.stats.datagrams_received, received);
        assert_eq!(after.stats.dropped_rejected, sa.stats.dropped_rejected);
        // An unknown user id is unroutable too.
        ea.handle_p2p_datagram(now, 999, ab, &[0x80; 60]);
        assert_eq!(ea.stats().dropped_unroutable, dropped + 2);

        // Group commands map onto the 1:1 call; Stop hangs up and the call is reaped.
        ea.command(now, B, crate::call::Command::Stop).unwrap();
        assert_eq!(
            ea.poll_p2p_reaped(),
            Some(P2pReaped {
                user_id: B,
                local_addr: aa
            })
        );
        assert!(ea.p2p_call(B).is_none());
        assert_eq!(ea.stats().p2p_calls, 0);
        // close_notify went out: the callee ends.
        let mut ended = false;
        while let Some(t) = ea.poll_p2p_transmit() {
            eb.handle_p2p_datagram(now, A, aa, &t.contents);
        }
        while let Some((_, e)) = eb.poll_p2p_event() {
            ended |= matches!(
                e,
                P2pEndpointEvent::Call(Event::StateChanged(P2pState::Ended(_)))
            );
        }
        assert!(ended, "callee did not see the hangup");
        assert!(eb.p2p_call(A).is_none());
    }
}
