//! The signaling path of one 1:1 call between its JSON messages and the messenger's blobs:
//! the [`EncryptedChannel`] alone (7.0.0-9.0.0: each blob one encrypted packet), or, for
//! [`Framing::Sctp`] (12.0.0, 13.0.0, "signaling V3"), gzip, the channel and an
//! [`SctpCarrier`] (each blob one SCTP packet, each SCTP user message one encrypted packet).

use std::collections::VecDeque;
use std::time::Instant;

use super::channel::{ChannelStats, EncryptedChannel, Framing, Rejected};
use super::dh::DH_BYTES;
use super::sctp::{CarrierRejected, SctpCarrier, SctpStats, gzip, inflate_if_gzip};
use super::{P2pError, Role};

/// Why a received blob gave no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum LinkRejected {
    /// The encrypted channel refused the (or every) packet it carried.
    #[error(transparent)]
    Channel(#[from] Rejected),
    /// The SCTP carrier refused the blob, or an authentic payload did not inflate.
    #[error(transparent)]
    Carrier(#[from] CarrierRejected),
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct SignalingLink {
    channel: EncryptedChannel,
    sctp: Option<SctpCarrier>,
    /// Blobs of the direct framings waiting for [`Self::poll_transmit`].
    out: VecDeque<Vec<u8>>,
    /// Authentic payloads that did not inflate.
    inflate_failed: u64,
}

impl SignalingLink {
    /// The link of `role`'s end of a call with the 256-byte shared `key` at the negotiated
    /// `framing`. With [`Framing::Sctp`], the caller's SCTP INIT is ready at once.
    pub fn new(key: &[u8; DH_BYTES], role: Role, framing: Framing, now: Instant) -> Self {
        Self {
            channel: EncryptedChannel::new(key, role, framing),
            sctp: (framing == Framing::Sctp).then(|| SctpCarrier::new(role, now)),
            out: VecDeque::new(),
            inflate_failed: 0,
        }
    }

    /// The framing the link was created with.
    pub fn framing(&self) -> Framing {
        self.channel.framing()
    }

    /// The encrypted channel's counters.
    pub fn channel_stats(&self) -> ChannelStats {
        self.channel.stats()
    }

    /// The SCTP carrier's counters ([`Framing::Sctp`] only).
    pub fn sctp_stats(&self) -> Option<SctpStats> {
        self.sctp.as_ref().map(SctpCarrier::stats)
    }

    /// Authentic payloads that started with the gzip magic but did not inflate (or inflated
    /// past the limit).
    pub fn inflate_failed(&self) -> u64 {
        self.inflate_failed
    }

    /// Sends one JSON message; what goes out comes from [`Self::poll_transmit`].
    ///
    /// # Errors
    /// The channel's [`P2pError`]s; [`P2pError::SignalingTransportLost`] when the SCTP
    /// association is gone (the call must end).
    pub fn send(&mut self, message: &[u8], now: Instant) -> Result<(), P2pError> {
        match self.sctp.as_mut() {
            None => {
                let packet = self.channel.send(message, now)?;
                self.out.push_back(packet);
            }
            Some(sctp) => {
                let packet = self.channel.send(&gzip(message), now)?;
                if !sctp.send(packet, now) {
                    return Err(P2pError::SignalingTransportLost);
                }
            }
        }
        Ok(())
    }

    /// Takes one blob from the messenger and returns the JSON messages it completed, in order.
    ///
    /// With [`Framing::Sctp`], a blob may complete none (an SCTP control packet) or several.
    ///
    /// # Errors
    /// Why the blob gave nothing. A V3 blob whose SCTP part was taken but whose every
    /// encrypted packet was refused reports the first refusal.
    pub fn receive(&mut self, blob: &[u8], now: Instant) -> Result<Vec<Vec<u8>>, LinkRejected> {
        let Some(sctp) = self.sctp.as_mut() else {
            let received = self.channel.receive(blob, now)?;
            return self.inflate_all(received.messages);
        };
        sctp.receive(blob, now)?;
        let mut payloads = Vec::new();
        let mut first_error = None;
        while let Some(packet) = sctp.poll_message() {
            match self.channel.receive(&packet, now) {
                Ok(received) => payloads.extend(received.messages),
                Err(e) => {
                    first_error.get_or_insert(LinkRejected::Channel(e));
                }
            }
        }
        let messages = self.inflate_all(payloads);
        match (messages, first_error) {
            (Ok(m), Some(e)) if m.is_empty() => Err(e),
            (result, _) => result,
        }
    }

    fn inflate_all(&mut self, payloads: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, LinkRejected> {
        let mut messages = Vec::with_capacity(payloads.len());
        let mut first_error = None;
        for payload in payloads {
            match inflate_if_gzip(payload) {
                Ok(m) => messages.push(m),
                Err(e) => {
                    self.inflate_failed += 1;
                    first_error.get_or_insert(LinkRejected::Carrier(e));
                }
            }
        }
        match first_error {
            Some(e) if messages.is_empty() => Err(e),
            _ => Ok(messages),
        }
    }

    /// The next blob for the messenger: a packet of the direct framings, the channel's acks
    /// and resends ([`Framing::Reliable`]), or an SCTP packet.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(blob) = self.out.pop_front() {
            return Some(blob);
        }
        if let Some(blob) = self.channel.poll_transmit(now) {
            return Some(blob);
        }
        self.sctp.as_mut()?.poll_transmit(now)
    }

    /// When [`Self::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sctp = self.sctp.as_ref().and_then(SctpCarrier::poll_timeout);
        match (self.channel.poll_timeout(), sctp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drives the SCTP timers (the channel's are driven by [`Self::poll_transmit`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(sctp) = self.sctp.as_mut()
            && sctp.poll_timeout().is_some_and(|t| t <= now)
        {
            sctp.handle_timeout(now);
        }
    }
}
