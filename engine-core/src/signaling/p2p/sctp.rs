//! "Signaling V3" (protocol versions 12.0.0 and 13.0.0): the signaling of a 1:1 call carried by a
//! plain SCTP association whose packets are the messenger's blobs, sans I/O.
//!
//! What ntgcalls does (repo pytgcalls/ntgcalls, `ntgcalls/src/signaling/signaling_sctp_connection.cpp`,
//! `signaling_packet_transport.cpp`, `signaling_interface.cpp`, commit "Added Protocol V12 and V13
//! for Private Calls"; the same design as tgcalls `SignalingSctpConnection` of
//! `InstanceV2ReferenceImpl`):
//!
//! - libwebrtc's SCTP transport (dcsctp) runs over a packet transport with **no DTLS**: every SCTP
//!   packet it emits is handed unchanged to `phone.sendSignalingData`, and every blob from
//!   `updatePhoneCallSignalingData` is fed to it as a received SCTP packet. SCTP ports 5000/5000,
//!   max message size 262144, stream 0, ordered, binary (PPID 53) messages.
//! - Both ends start the association at once (`SctpTransport::Start` on a transport that is
//!   always writable): each sends an INIT, and dcsctp resolves the collision (RFC 9260 §5.2).
//! - The **user message**, not the SCTP packet, is encrypted: each message is one packet of
//!   the §4.6 encryption with the raw framing (`seq || payload`, a fresh counter per message, no
//!   acks: SCTP is reliable), and the payload is gzip'd JSON (`supportsCompression()` is true for
//!   V3). Receivers inflate what starts with the gzip magic (at most 2 MiB) and take anything
//!   else as it is.
//!
//! Here the association is [`sctp_proto`]'s (the SCTP stack str0m already brings into the
//! build, sans I/O like the rest of this crate). One side must send the INIT that the other
//! answers: the caller connects, the callee accepts. Against a peer that also sends an INIT
//! (ntgcalls, tgcalls), the caller ignores the peer's INIT (the peer answers ours with an
//! INIT ACK, as RFC 9260 §5.2.1 has it) and the callee answers it. That is how str0m talks to
//! libwebrtc's data channels too (str0m `src/sctp/mod.rs`).
//!
//! Two things of sctp-proto do not follow this crate's rule that time and randomness come in
//! as arguments: it draws its initial TSN, verification tag and cookie from the thread's RNG,
//! and [`sctp_proto::Endpoint::connect`] starts the INIT retransmission timer from the
//! real clock, and its association ids are random too (its id generator trait is private).
//! None of this changes what reaches the call: the messages and their order.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier, ServerConfig, TransportConfig,
};

use super::Role;

/// SCTP port of both ends (ntgcalls `sctpTransport->Start({5000, 5000, ...})`).
pub const SCTP_PORT: u16 = 5000;

/// Largest user message either end sends or accepts (ntgcalls' `max_message_size`, 262144).
pub const MAX_MESSAGE_BYTES: u32 = 262_144;

/// The stream signaling messages travel on.
pub const SIGNALING_STREAM: u16 = 0;

/// Largest inflated payload (ntgcalls `GZip::unzip(data, 2 * 1024 * 1024)`).
pub const MAX_INFLATED_BYTES: usize = 2 * 1024 * 1024;

/// The gzip magic a compressed payload starts with (ntgcalls `GZip::isGzip`).
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

/// Largest blob handed to SCTP (a peer's packets stay near the path MTU; this only bounds a
/// hostile one).
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// SCTP common header (ports, verification tag, checksum) plus one chunk header.
const MIN_PACKET_BYTES: usize = 16;

/// Messages kept while the association is not established yet.
const MAX_PENDING_MESSAGES: usize = 256;

/// Received messages kept until [`SctpCarrier::poll_message`] takes them.
const MAX_RECEIVED_MESSAGES: usize = 256;

/// INITs the callee hands to SCTP (the peer's first one and its retransmissions); an INIT with
/// a fresh tag keeps a small record in the endpoint even when ignored, so a peer repeating fresh
/// INITs cannot grow it without bound.
const MAX_ASSOCIATION_ATTEMPTS: u32 = 16;

/// Chunk type of INIT (RFC 9260 §3.3.2).
const CHUNK_INIT: u8 = 1;

/// Why a blob was not taken as an SCTP packet of this association; each is counted in
/// [`SctpStats`] and changes nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CarrierRejected {
    /// Shorter than an SCTP common header and one chunk header, longer than
    /// [`MAX_PACKET_BYTES`], or not between ports 5000 and 5000.
    #[error("signaling blob is not an SCTP packet of the signaling association")]
    NotSctp,
    /// SCTP dropped it: bad checksum, unknown verification tag, malformed chunks.
    #[error("SCTP dropped the signaling packet")]
    Dropped,
    /// An INIT this side does not answer: the caller's own INIT starts the association, or the
    /// callee already has one (see the module docs).
    #[error("SCTP INIT ignored")]
    InitIgnored,
    /// An authentic payload that starts with the gzip magic but does not inflate.
    #[error("signaling payload is not valid gzip")]
    GzipCorrupt,
    /// An authentic payload that inflates past [`MAX_INFLATED_BYTES`].
    #[error("signaling payload inflates past {MAX_INFLATED_BYTES} bytes")]
    GzipTooLarge,
}

/// Counters of one carrier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SctpStats {
    /// SCTP packets produced (each one blob for the messenger).
    pub packets_sent: u64,
    /// Blobs taken by SCTP.
    pub packets_received: u64,
    /// Blobs dropped as [`CarrierRejected::NotSctp`].
    pub rejected_not_sctp: u64,
    /// Blobs dropped as [`CarrierRejected::Dropped`].
    pub rejected_dropped: u64,
    /// Blobs dropped as [`CarrierRejected::InitIgnored`].
    pub inits_ignored: u64,
    /// User messages written to the association.
    pub messages_sent: u64,
    /// User messages received on the signaling stream.
    pub messages_received: u64,
    /// User messages received on another stream or with another payload type, dropped.
    pub messages_dropped: u64,
    /// Messages not sent because the association was lost or too many were waiting.
    pub messages_not_sent: u64,
    /// The association was established.
    pub established: bool,
    /// The association was lost (the peer aborted it, or it gave up retransmitting).
    pub lost: bool,
}

/// One call's SCTP association over the messenger (see the [module docs](self)).
///
/// - [`Self::send`] queues a user message (one encrypted signaling packet);
/// - [`Self::receive`] takes a blob from the messenger;
/// - [`Self::poll_transmit`] gives the blobs to hand to the messenger;
/// - [`Self::poll_message`] gives the user messages received, in order;
/// - [`Self::poll_timeout`] / [`Self::handle_timeout`] drive retransmissions.
pub struct SctpCarrier {
    endpoint: Endpoint,
    association: Option<(AssociationHandle, Association)>,
    role: Role,
    /// The remote address sctp-proto wants (never on the wire).
    remote: SocketAddr,
    /// Whether the signaling stream was opened on our side.
    stream_open: bool,
    /// Messages waiting for the association to be established.
    pending: VecDeque<Vec<u8>>,
    received: VecDeque<Vec<u8>>,
    transmits: VecDeque<Vec<u8>>,
    association_attempts: u32,
    stats: SctpStats,
}

impl std::fmt::Debug for SctpCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SctpCarrier")
            .field("role", &self.role)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The transport configuration of both ends: ports 5000/5000, 256 KiB messages, unlimited DATA
/// retransmissions (the call's own timeouts decide when to give up).
fn transport_config() -> Arc<TransportConfig> {
    Arc::new(
        TransportConfig::default()
            .with_local_port(SCTP_PORT)
            .with_remote_port(SCTP_PORT)
            .with_max_send_message_size(MAX_MESSAGE_BYTES)
            .with_max_receive_message_size(MAX_MESSAGE_BYTES)
            .with_max_receive_buffer_size(4 * MAX_MESSAGE_BYTES)
            .with_max_data_retransmits(None)
            .with_rto_initial_ms(1000),
    )
}

impl SctpCarrier {
    /// A carrier for `role`'s end; the caller's INIT is queued at once.
    pub fn new(role: Role, now: Instant) -> Self {
        let mut server_config = ServerConfig::new();
        server_config.transport = transport_config();
        // sctp-proto needs a server configuration on both sides: an INIT reaching an endpoint
        // without one is not refused but panics.
        let endpoint = Endpoint::new(
            Arc::new(EndpointConfig::new()),
            Some(Arc::new(server_config)),
        );
        let mut carrier = Self {
            endpoint,
            association: None,
            role,
            remote: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SCTP_PORT)),
            stream_open: false,
            pending: VecDeque::new(),
            received: VecDeque::new(),
            transmits: VecDeque::new(),
            association_attempts: 0,
            stats: SctpStats::default(),
        };
        if role == Role::Caller {
            let mut config = ClientConfig::new();
            config.transport = transport_config();
            match carrier.endpoint.connect(config, carrier.remote) {
                Ok((handle, association)) => carrier.association = Some((handle, association)),
                Err(e) => {
                    // Cannot happen with this configuration (ports and address are fixed).
                    tracing::warn!("SCTP connect refused: {e}");
                    carrier.stats.lost = true;
                }
            }
            carrier.drive(now);
        }
        carrier
    }

    /// The carrier's counters.
    pub fn stats(&self) -> SctpStats {
        self.stats
    }

    /// Whether the association is established.
    pub fn is_established(&self) -> bool {
        self.stats.established && !self.stats.lost
    }

    /// Queues `message` (one user message on stream 0, ordered, binary). Sent at once if the
    /// association is established, else when it is. Returns `false` (and counts it) if the
    /// association was lost or too many messages wait.
    pub fn send(&mut self, message: Vec<u8>, now: Instant) -> bool {
        if self.stats.lost || self.pending.len() >= MAX_PENDING_MESSAGES {
            self.stats.messages_not_sent += 1;
            return false;
        }
        self.pending.push_back(message);
        self.drive(now);
        true
    }

    /// Takes one blob from the messenger as an SCTP packet.
    ///
    /// # Errors
    /// The [`CarrierRejected`] reason; the blob is counted and otherwise ignored.
    pub fn receive(&mut self, packet: &[u8], now: Instant) -> Result<(), CarrierRejected> {
        let result = self.receive_inner(packet, now);
        match result {
            Ok(()) => self.stats.packets_received += 1,
            Err(CarrierRejected::NotSctp) => self.stats.rejected_not_sctp += 1,
            Err(CarrierRejected::InitIgnored) => self.stats.inits_ignored += 1,
            Err(_) => self.stats.rejected_dropped += 1,
        }
        self.drive(now);
        result
    }

    fn receive_inner(&mut self, packet: &[u8], now: Instant) -> Result<(), CarrierRejected> {
        if !(MIN_PACKET_BYTES..=MAX_PACKET_BYTES).contains(&packet.len()) {
            return Err(CarrierRejected::NotSctp);
        }
        let port = |at: usize| {
            packet
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        if port(0) != Some(SCTP_PORT) || port(2) != Some(SCTP_PORT) {
            return Err(CarrierRejected::NotSctp);
        }
        let verification_tag = packet
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let is_init = verification_tag == Some(0) && packet.get(12) == Some(&CHUNK_INIT);
        if is_init && self.role == Role::Caller {
            // Ours starts the association; the peer answers it.
            return Err(CarrierRejected::InitIgnored);
        }
        if is_init {
            // Retransmissions of the peer's INIT reach the association it created; an INIT
            // with a fresh tag leaves a record in the endpoint even when it is ignored below.
            if self.association_attempts >= MAX_ASSOCIATION_ATTEMPTS {
                return Err(CarrierRejected::InitIgnored);
            }
            self.association_attempts += 1;
        }
        let (handle, event) = self
            .endpoint
            .handle(now, self.remote, None, None, Bytes::copy_from_slice(packet))
            .ok_or(CarrierRejected::Dropped)?;
        match event {
            DatagramEvent::NewAssociation(association) => {
                if self.association.is_some() {
                    // A second INIT with a fresh tag: one association per call.
                    return Err(CarrierRejected::InitIgnored);
                }
                self.association = Some((handle, association));
            }
            DatagramEvent::AssociationEvent(event) => match self.association.as_mut() {
                Some((ours, association)) if *ours == handle => association.handle_event(event),
                _ => return Err(CarrierRejected::Dropped),
            },
        }
        Ok(())
    }

    /// The next blob for the messenger.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.transmits.is_empty() {
            self.collect_transmits(now);
        }
        let packet = self.transmits.pop_front()?;
        self.stats.packets_sent += 1;
        Some(packet)
    }

    /// The next user message received, in order.
    pub fn poll_message(&mut self) -> Option<Vec<u8>> {
        self.received.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.association
            .as_ref()
            .and_then(|(_, a)| a.poll_timeout())
    }

    /// Drives SCTP's timers (retransmissions, delayed SACKs, heartbeats).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, association)) = self.association.as_mut() {
            association.handle_timeout(now);
        }
        self.drive(now);
    }

    fn collect_transmits(&mut self, now: Instant) {
        let mut transmits = Vec::new();
        while let Some(t) = self.endpoint.poll_transmit() {
            transmits.push(t);
        }
        if let Some((_, association)) = self.association.as_mut() {
            while let Some(t) = association.poll_transmit(now) {
                transmits.push(t);
            }
        }
        for t in transmits {
            if let Payload::RawEncode(packets) = t.payload {
                self.transmits
                    .extend(packets.into_iter().map(|p| p.to_vec()));
            }
        }
    }

    /// Moves events between the association and the endpoint, reads what arrived and writes
    /// what waits.
    fn drive(&mut self, now: Instant) {
        let Some((handle, association)) = self.association.as_mut() else {
            return;
        };
        while let Some(e) = association.poll_endpoint_event() {
            if let Some(back) = self.endpoint.handle_event(*handle, e) {
                association.handle_event(back);
            }
        }
        while let Some(event) = association.poll() {
            match event {
                Event::Connected => self.stats.established = true,
                Event::HandshakeFailed { reason } | Event::AssociationLost { reason } => {
                    tracing::debug!(role = ?self.role, "signaling SCTP association lost: {reason}");
                    self.stats.lost = true;
                }
                // Streams are read below whatever the event; the rest is not used.
                _ => {}
            }
        }
        // Accept the streams the peer opened, then read every stream.
        while association.accept_stream().is_some() {}
        for id in association.stream_ids() {
            let Ok(mut stream) = association.stream(id) else {
                continue;
            };
            while let Ok(Some(chunks)) = stream.read_sctp() {
                let mut message = vec![0; chunks.len()];
                let complete = chunks.read(&mut message).is_ok_and(|n| n == message.len());
                let binary = matches!(
                    chunks.ppi,
                    PayloadProtocolIdentifier::Binary | PayloadProtocolIdentifier::String
                );
                if id == SIGNALING_STREAM
                    && binary
                    && complete
                    && self.received.len() < MAX_RECEIVED_MESSAGES
                {
                    self.stats.messages_received += 1;
                    self.received.push_back(message);
                } else {
                    self.stats.messages_dropped += 1;
                }
            }
        }
        if self.stats.established && !self.stats.lost {
            if !self.stream_open {
                self.stream_open = association
                    .open_stream(SIGNALING_STREAM, PayloadProtocolIdentifier::Binary)
                    .is_ok()
                    || association.stream(SIGNALING_STREAM).is_ok();
            }
            while self.stream_open
                && let Some(message) = self.pending.front()
            {
                let Ok(mut stream) = association.stream(SIGNALING_STREAM) else {
                    break;
                };
                match stream.write_with_ppi(message, PayloadProtocolIdentifier::Binary) {
                    Ok(_) => {
                        self.stats.messages_sent += 1;
                        self.pending.pop_front();
                    }
                    Err(e) => {
                        tracing::debug!("signaling SCTP write failed: {e}");
                        break;
                    }
                }
            }
        }
        if self.stats.lost {
            self.stats.messages_not_sent += self.pending.len() as u64;
            self.pending.clear();
        }
        self.collect_transmits(now);
    }
}

/// gzip of an outgoing V3 payload (ntgcalls `GZip::zip`).
pub fn gzip(payload: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(payload.len() / 2 + 32),
        Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(payload);
    encoder.finish().unwrap_or_default()
}

/// A received payload as the JSON it carries: inflated if it starts with the gzip magic (at
/// most [`MAX_INFLATED_BYTES`]), else as it is (ntgcalls `preReadData`, any version).
///
/// # Errors
/// [`CarrierRejected::GzipCorrupt`], [`CarrierRejected::GzipTooLarge`].
pub fn inflate_if_gzip(payload: Vec<u8>) -> Result<Vec<u8>, CarrierRejected> {
    if !payload.starts_with(&GZIP_MAGIC) {
        return Ok(payload);
    }
    let mut out = Vec::new();
    let limit = MAX_INFLATED_BYTES as u64 + 1;
    GzDecoder::new(payload.as_slice())
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| CarrierRejected::GzipCorrupt)?;
    if out.len() > MAX_INFLATED_BYTES {
        return Err(CarrierRejected::GzipTooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Moves blobs between two carriers until neither has anything to send; returns how many
    /// moved.
    fn shuttle(a: &mut SctpCarrier, b: &mut SctpCarrier, now: Instant) -> usize {
        let mut moved = 0;
        loop {
            let mut any = false;
            while let Some(p) = a.poll_transmit(now) {
                let _ = b.receive(&p, now);
                any = true;
                moved += 1;
            }
            while let Some(p) = b.poll_transmit(now) {
                let _ = a.receive(&p, now);
                any = true;
                moved += 1;
            }
            if !any {
                return moved;
            }
        }
    }

    #[test]
    fn caller_and_callee_establish_and_exchange_messages_in_order() {
        let now = Instant::now();
        let mut caller = SctpCarrier::new(Role::Caller, now);
        let mut callee = SctpCarrier::new(Role::Callee, now);
        // Queued before the association exists: sent once it does.
        assert!(caller.send(b"one".to_vec(), now));
        assert!(caller.send(b"two".to_vec(), now));
        assert!(callee.send(b"back".to_vec(), now));
        shuttle(&mut caller, &mut callee, now);
        assert!(caller.is_established() && callee.is_established());
        assert_eq!(callee.poll_message().as_deref(), Some(&b"one"[..]));
        assert_eq!(callee.poll_message().as_deref(), Some(&b"two"[..]));
        assert_eq!(callee.poll_message(), None);
        assert_eq!(caller.poll_message().as_deref(), Some(&b"back"[..]));
        assert_eq!(caller.stats().messages_sent, 2);
        assert_eq!(callee.stats().messages_received, 2);
    }

    #[test]
    fn a_lost_packet_is_retransmitted() {
        let start = Instant::now();
        let mut caller = SctpCarrier::new(Role::Caller, start);
        let mut callee = SctpCarrier::new(Role::Callee, start);
        shuttle(&mut caller, &mut callee, start);
        assert!(caller.send(b"lost once".to_vec(), start));
        let lost = caller.poll_transmit(start);
        assert!(lost.is_some());
        assert_eq!(callee.poll_message(), None);
        let mut now = start;
        for _ in 0..100 {
            now += Duration::from_millis(100);
            if caller.poll_timeout().is_some_and(|t| t <= now) {
                caller.handle_timeout(now);
            }
            if callee.poll_timeout().is_some_and(|t| t <= now) {
                callee.handle_timeout(now);
            }
            shuttle(&mut caller, &mut callee, now);
            if callee.stats().messages_received > 0 {
                break;
            }
        }
        assert_eq!(callee.poll_message().as_deref(), Some(&b"lost once"[..]));
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let now = Instant::now();
        let mut caller = SctpCarrier::new(Role::Caller, now);
        let mut callee = SctpCarrier::new(Role::Callee, now);
        assert_eq!(callee.receive(&[], now), Err(CarrierRejected::NotSctp));
        assert_eq!(callee.receive(&[0; 40], now), Err(CarrierRejected::NotSctp));
        let mut fake = vec![0x13, 0x88, 0x13, 0x88];
        fake.extend_from_slice(&[0xAB; 60]);
        assert_eq!(callee.receive(&fake, now), Err(CarrierRejected::Dropped));
        // An INIT with a broken checksum.
        let init = caller.poll_transmit(now).expect("INIT");
        let mut broken = init.clone();
        broken[9] ^= 1;
        assert_eq!(callee.receive(&broken, now), Err(CarrierRejected::Dropped));
        // The caller ignores INITs (its own starts the association).
        assert_eq!(
            caller.receive(&init, now),
            Err(CarrierRejected::InitIgnored)
        );
        assert_eq!(callee.receive(&init, now), Ok(()));
        shuttle(&mut caller, &mut callee, now);
        assert!(caller.is_established() && callee.is_established());
        let stats = callee.stats();
        assert_eq!((stats.rejected_not_sctp, stats.rejected_dropped), (2, 2));
        assert_eq!(caller.stats().inits_ignored, 1);
        // Fresh INITs after that are ignored, and past the limit not even handed to SCTP.
        let mut ignored = 0;
        for _ in 0..2 * MAX_ASSOCIATION_ATTEMPTS {
            let mut other = SctpCarrier::new(Role::Caller, now);
            let init = other.poll_transmit(now).expect("INIT");
            ignored += u32::from(callee.receive(&init, now) == Err(CarrierRejected::InitIgnored));
        }
        assert_eq!(ignored, 2 * MAX_ASSOCIATION_ATTEMPTS);
        assert!(callee.is_established());
    }

    #[test]
    fn gzip_round_trips_and_inflation_is_bounded() {
        let json = br#"{"@type":"Candidates","candidates":[]}"#;
        let zipped = gzip(json);
        assert!(zipped.starts_with(&GZIP_MAGIC));
        assert_eq!(inflate_if_gzip(zipped).as_deref(), Ok(&json[..]));
        assert_eq!(inflate_if_gzip(json.to_vec()).as_deref(), Ok(&json[..]));
        let bomb = gzip(&vec![b' '; MAX_INFLATED_BYTES + 1]);
        assert_eq!(inflate_if_gzip(bomb), Err(CarrierRejected::GzipTooLarge));
        assert_eq!(
            inflate_if_gzip(vec![0x1F, 0x8B, 8, 0, 1, 2, 3]),
            Err(CarrierRejected::GzipCorrupt)
        );
    }
}
