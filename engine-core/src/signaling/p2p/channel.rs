//! The encrypted signaling channel of a 1:1 call (telegram-signaling.md §4.6): every blob of
//! `phone.sendSignalingData` / `updatePhoneCallSignalingData` is one packet of this channel.
//!
//! Wire format (core.telegram.org/api/end-to-end/video-calls "Encrypting Call Data"; tgcalls
//! `EncryptedConnection::encryptPrepared` / `handleIncomingRawPacket`, branch `development`):
//!
//! ```text
//! x             = 128 (caller encrypts / callee decrypts) or 136 (callee encrypts / caller decrypts)
//! msg_key_large = SHA256(key[88+x .. 120+x] || plain);  msg_key = msg_key_large[8..24]
//! sha256_a      = SHA256(msg_key || key[x .. x+36]);   sha256_b = SHA256(key[40+x .. 76+x] || msg_key)
//! aes_key       = a[0..8] || b[8..24] || a[24..32];     aes_iv   = b[0..4] || a[8..16] || b[24..28]
//! packet        = msg_key || AES-256-CTR(aes_key, aes_iv, plain)
//! ```
//!
//! `plain` starts with a 32-bit big-endian `seq`: a counter starting at 1 (bits 0-29), bit 30
//! "requires ack", bit 31 "single message". The receiver keeps the counters seen within 64 of
//! the largest and drops a packet whose first counter is old or already seen.
//!
//! [`Framing::Reliable`] (8.0.0, 9.0.0): `plain` is a list of items `seq || type || body`: type
//! 0x7F = a message (`len:u32 || len bytes`), 0xFE = empty (first item only, to carry
//! acks/resends under a fresh seq), 0xFF = ack of the item seq it carries (never first).
//! Messages are sent with "requires ack" and resent until acked; see [`EncryptedChannel`].
//! [`Framing::Raw`] (7.0.0): `plain = seq || message`, no acks.
//!
//! Every rejected packet is counted in [`ChannelStats`] and changes nothing else: a forged,
//! truncated, replayed or wrong-key packet cannot disturb the call.

use std::fmt;
use std::time::{Duration, Instant};

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;

use super::dh::{DH_BYTES, ct_eq, sha256};
use super::{P2pError, Role};

/// Smallest packet accepted: msg_key (16), seq (4) and one byte (tgcalls: `size < 21` dropped).
pub const MIN_PACKET_BYTES: usize = 21;

/// Largest packet accepted (tgcalls `kMaxIncomingPacketSize`, 128 KiB).
pub const MAX_PACKET_BYTES: usize = 128 * 1024;

/// Largest packet [`Framing::Reliable`] sends (tgcalls `kMaxSignalingPacketSize`, 16 KiB).
pub const MAX_RELIABLE_PACKET_BYTES: usize = 16 * 1024;

/// Largest message one reliable item may carry when received (tgcalls `DeserializeRawMessage`).
const MAX_ITEM_BYTES: usize = 1024 * 1024;

/// The replay window: counters this far below the largest one seen are too old.
pub const REPLAY_WINDOW: u32 = 64;

/// Highest counter; sending past it must end the call (the spec: abort when `seq` reaches 2^30).
const MAX_COUNTER: u32 = (1 << 30) - 1;
const SINGLE_MESSAGE_BIT: u32 = 1 << 31;
const REQUIRES_ACK_BIT: u32 = 1 << 30;

const TYPE_CUSTOM: u8 = 0x7F;
const TYPE_EMPTY: u8 = 0xFE;
const TYPE_ACK: u8 = 0xFF;

/// An unacked message is not resent within this long of its last sending (tgcalls
/// `minDelayBeforeMessageResend` for signaling).
pub const MIN_RESEND_DELAY: Duration = Duration::from_millis(3000);
/// Unacked messages are resent in a dedicated packet after at most this long (tgcalls
/// `maxDelayBeforeMessageResend`).
pub const MAX_RESEND_DELAY: Duration = Duration::from_millis(5000);
/// Pending acks go out after at most this long when no new message asked for them at once
/// (tgcalls `maxDelayBeforeAckResend`).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(5000);

/// Most sent messages kept for resending (tgcalls allows 65536; each may hold 16 KiB).
const MAX_UNACKED: usize = 1024;
/// Most acks queued, and most acked counters remembered for duplicate suppression.
const MAX_ACK_STATE: usize = 4096;
/// Most items one received packet may hold (a full 16 KiB packet of acks has 3276).
const MAX_ITEMS_PER_PACKET: usize = 4096;

/// How signaling messages are framed inside the encrypted packets; fixed by the negotiated
/// protocol version (telegram-signaling.md §4.1, pitfall 10: never guess it from the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// `seq || message`, no acks or resends (7.0.0; tgcalls `encryptRawPacket`).
    Raw,
    /// Items with acks and resends (8.0.0, 9.0.0; tgcalls `prepareForSendingRawMessage`).
    Reliable,
    /// "Signaling V3" (12.0.0, 13.0.0): each packet is encrypted as [`Framing::Raw`] and is one
    /// user message of a plain SCTP association whose packets are the messenger's blobs; the
    /// payload is gzip'd JSON ([`super::sctp`], [`super::SignalingLink`]). The channel itself
    /// treats it exactly as [`Framing::Raw`].
    Sctp,
}

impl Framing {
    /// The framing of a `library_versions` entry this module implements (tgcalls
    /// `signalingProtocolVersion`, tgcalls/v2/InstanceV2Impl.cpp, branch `development`;
    /// ntgcalls `Signaling::matchVersion`, ntgcalls/src/signaling/signaling.cpp):
    /// "7.0.0" raw, "8.0.0" and "9.0.0" reliable, "12.0.0" and "13.0.0" SCTP-carried; `None`
    /// for anything else.
    pub fn for_version(version: &str) -> Option<Self> {
        match version {
            "7.0.0" => Some(Self::Raw),
            "8.0.0" | "9.0.0" => Some(Self::Reliable),
            "12.0.0" | "13.0.0" => Some(Self::Sctp),
            _ => None,
        }
    }
}

/// Why a received packet was dropped. Each is counted in [`ChannelStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejected {
    /// Shorter than [`MIN_PACKET_BYTES`] or longer than [`MAX_PACKET_BYTES`].
    #[error("signaling packet size out of range")]
    Size,
    /// `msg_key` does not match the decrypted contents: the packet was altered or truncated,
    /// or it was encrypted with another key or for the other direction.
    #[error("signaling packet failed authentication")]
    Tampered,
    /// Its first counter was seen before or is older than the replay window.
    #[error("signaling packet replayed or too old")]
    Replay,
    /// Authentic, but the item list violates the framing (the peer's bug, or the wrong
    /// [`Framing`] for the negotiated version).
    #[error("signaling packet framing is malformed")]
    Malformed,
}

/// What an accepted packet carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// The messages to hand to [`super::SignalingMessage::parse`], in order; duplicates of
    /// messages delivered before are left out. Empty for a packet of acks only.
    pub messages: Vec<Vec<u8>>,
}

/// Counters of one channel; rejected packets appear here and nowhere else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChannelStats {
    /// Packets produced by [`EncryptedChannel::send`] and [`EncryptedChannel::poll_transmit`].
    pub packets_sent: u64,
    /// Packets accepted by [`EncryptedChannel::receive`].
    pub packets_received: u64,
    /// Messages handed out in [`Received::messages`].
    pub messages_delivered: u64,
    /// Messages put back into a packet because no ack had come.
    pub messages_resent: u64,
    /// Own messages the peer acknowledged.
    pub acks_received: u64,
    /// Messages received again (a resend whose ack was lost) and not delivered twice.
    pub duplicates_dropped: u64,
    /// Packets dropped as [`Rejected::Size`].
    pub rejected_size: u64,
    /// Packets dropped as [`Rejected::Tampered`] (altered, truncated or wrong key).
    pub rejected_tampered: u64,
    /// Packets dropped as [`Rejected::Replay`].
    pub rejected_replay: u64,
    /// Packets dropped as [`Rejected::Malformed`].
    pub rejected_malformed: u64,
}

/// A sent message waiting for its ack: its item bytes (`seq || 0x7F || len || message`) and
/// when it last went out (`None`: at the next opportunity).
#[derive(Debug, Clone)]
struct Unacked {
    item: Vec<u8>,
    seq: u32,
    last_sent: Option<Instant>,
    /// Whether it went out at least once (a later sending counts as a resend).
    sent: bool,
}

/// One item of a received reliable packet, borrowed from the decrypted plaintext.
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    Empty,
    Ack { seq: u32 },
    Message { seq: u32, body: &'a [u8] },
}

/// The signaling encryption of one call, sans I/O.
///
/// - [`Self::send`] turns a message into the packet to send now;
/// - [`Self::receive`] authenticates and decrypts a packet, drops replays and returns the
///   messages it carries;
/// - [`Self::poll_transmit`] / [`Self::poll_timeout`] drive acks and resends
///   ([`Framing::Reliable`]): call `poll_transmit` whenever `poll_timeout` has passed (and after
///   each `receive`) and send what it returns.
///
/// Sending follows tgcalls `EncryptedConnection`: each message gets a fresh `seq` with the
/// requires-ack bit; a packet carries, after its first item, the pending acks and the unacked
/// messages last sent at least [`MIN_RESEND_DELAY`] ago. One difference: tgcalls arms its resend
/// timer only when a packet already carried resends, so a first message that is lost waits for
/// the next one; here every unacked message is resent after [`MAX_RESEND_DELAY`].
pub struct EncryptedChannel {
    key: Box<[u8; DH_BYTES]>,
    encrypt_x: usize,
    decrypt_x: usize,
    framing: Framing,
    counter: u32,
    /// Counters seen within [`REPLAY_WINDOW`] of the largest, ascending.
    seen: Vec<u32>,
    unacked: Vec<Unacked>,
    /// Seqs (with flag bits) of received requires-ack messages not acked yet.
    acks_to_send: Vec<u32>,
    /// Counters of requires-ack messages already delivered, ascending (tgcalls
    /// `_acksSentCounters`).
    delivered: Vec<u32>,
    ack_due: Option<Instant>,
    resend_due: Option<Instant>,
    stats: ChannelStats,
}

impl fmt::Debug for EncryptedChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedChannel")
            .field("framing", &self.framing)
            .field("encrypt_x", &self.encrypt_x)
            .field("counter", &self.counter)
            .field("unacked", &self.unacked.len())
            .field("acks_to_send", &self.acks_to_send.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl EncryptedChannel {
    /// A channel for `role`'s end of a call with the 256-byte shared `key`
    /// ([`super::CallKey::as_bytes`]) and the framing of the negotiated version.
    pub fn new(key: &[u8; DH_BYTES], role: Role, framing: Framing) -> Self {
        // tgcalls: x = (isOutgoing ? 0 : 8) + 128 to encrypt, (isOutgoing ? 8 : 0) + 128 to decrypt.
        let (encrypt_x, decrypt_x) = match role {
            Role::Caller => (128, 136),
            Role::Callee => (136, 128),
        };
        Self {
            key: Box::new(*key),
            encrypt_x,
            decrypt_x,
            framing,
            counter: 0,
            seen: Vec::new(),
            unacked: Vec::new(),
            acks_to_send: Vec::new(),
            delivered: Vec::new(),
            ack_due: None,
            resend_due: None,
            stats: ChannelStats::default(),
        }
    }

    /// The framing this channel was created with.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The channel's counters.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Number of sent messages still waiting for an ack.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Largest message [`Self::send`] accepts with this framing.
    pub fn max_message_len(&self) -> usize {
        match self.framing {
            // msg_key + seq + type + len.
            Framing::Reliable => MAX_RELIABLE_PACKET_BYTES - 16 - 9,
            Framing::Raw | Framing::Sctp => MAX_PACKET_BYTES - 16 - 4,
        }
    }

    /// Encrypts `message` (a JSON control message) into the packet to send now.
    ///
    /// With [`Framing::Reliable`], the message is kept until acked and resent as needed; while
    /// older messages are unacked, the packet returned is an empty item followed by all of them
    /// in order (tgcalls: "all requiring ack messages should always be sent in order").
    ///
    /// # Errors
    /// [`P2pError::MessageTooLarge`]; [`P2pError::CounterExhausted`] (the call must end);
    /// [`P2pError::TooManyUnacked`] (the peer stopped acking).
    pub fn send(&mut self, message: &[u8], now: Instant) -> Result<Vec<u8>, P2pError> {
        let max = self.max_message_len();
        if message.len() > max {
            return Err(P2pError::MessageTooLarge {
                len: message.len(),
                max,
            });
        }
        match self.framing {
            Framing::Raw | Framing::Sctp => {
                let seq = self.next_counter()?;
                let mut plain = Vec::with_capacity(4 + message.len());
                plain.extend_from_slice(&seq.to_be_bytes());
                plain.extend_from_slice(message);
                self.seal(&plain)
            }
            Framing::Reliable => {
                if self.unacked.len() >= MAX_UNACKED {
                    return Err(P2pError::TooManyUnacked {
                        count: self.unacked.len(),
                    });
                }
                // Queued behind unacked messages, it goes out in a service packet with a
                // seq of its own: check both counters before changing anything.
                let needed = if self.unacked.is_empty() { 1 } else { 2 };
                if self.counter + needed > MAX_COUNTER {
                    return Err(P2pError::CounterExhausted);
                }
                let seq = self.next_counter()? | REQUIRES_ACK_BIT;
                let len = u32::try_from(message.len()).map_err(|_| P2pError::MessageTooLarge {
                    len: message.len(),
                    max,
                })?;
                let mut item = Vec::with_capacity(9 + message.len());
                item.extend_from_slice(&seq.to_be_bytes());
                item.push(TYPE_CUSTOM);
                item.extend_from_slice(&len.to_be_bytes());
                item.extend_from_slice(message);
                if self.unacked.is_empty() {
                    let mut plain = item.clone();
                    self.append_additional(&mut plain, now);
                    self.push_unacked(item, seq, now, true);
                    self.seal(&plain)
                } else {
                    self.push_unacked(item, seq, now, false);
                    for queued in &mut self.unacked {
                        queued.last_sent = None;
                    }
                    self.service_packet(now)?.ok_or(P2pError::Crypto)
                }
            }
        }
    }

    /// Authenticates, decrypts and de-duplicates one received packet.
    ///
    /// # Errors
    /// The [`Rejected`] reason; the packet is counted and otherwise ignored.
    pub fn receive(&mut self, packet: &[u8], now: Instant) -> Result<Received, Rejected> {
        let result = self.receive_inner(packet, now);
        match result {
            Ok(ref received) => {
                self.stats.packets_received += 1;
                self.stats.messages_delivered += received.messages.len() as u64;
            }
            Err(Rejected::Size) => self.stats.rejected_size += 1,
            Err(Rejected::Tampered) => self.stats.rejected_tampered += 1,
            Err(Rejected::Replay) => self.stats.rejected_replay += 1,
            Err(Rejected::Malformed) => self.stats.rejected_malformed += 1,
        }
        result
    }

    /// When [`Self::poll_transmit`] next has something to send (acks or resends), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.ack_due, self.resend_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A packet of pending acks and due resends, if one is due at `now` (tgcalls
    /// `prepareForSendingService`): an empty item under a fresh seq, then the acks, then the
    /// unacked messages last sent at least [`MIN_RESEND_DELAY`] ago.
    ///
    /// Returns `None` when nothing is due, or when the counter is exhausted (the next
    /// [`Self::send`] reports that).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let mut due = false;
        if self.ack_due.is_some_and(|t| t <= now) {
            self.ack_due = None;
            due = true;
        }
        if self.resend_due.is_some_and(|t| t <= now) {
            self.resend_due = None;
            due = true;
        }
        if !due {
            return None;
        }
        self.service_packet(now).ok().flatten()
    }

    fn next_counter(&mut self) -> Result<u32, P2pError> {
        if self.counter >= MAX_COUNTER {
            return Err(P2pError::CounterExhausted);
        }
        self.counter += 1;
        Ok(self.counter)
    }

    fn push_unacked(&mut self, item: Vec<u8>, seq: u32, now: Instant, sent: bool) {
        self.unacked.push(Unacked {
            item,
            seq,
            last_sent: Some(now),
            sent,
        });
        if self.resend_due.is_none() {
            self.resend_due = Some(now + MAX_RESEND_DELAY);
        }
    }

    /// An empty item plus acks and due resends; `None` if there is nothing to carry.
    fn service_packet(&mut self, now: Instant) -> Result<Option<Vec<u8>>, P2pError> {
        if self.unacked.is_empty() && self.acks_to_send.is_empty() {
            return Ok(None);
        }
        let seq = self.next_counter()?;
        let mut plain = Vec::with_capacity(64);
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.push(TYPE_EMPTY);
        self.append_additional(&mut plain, now);
        self.seal(&plain).map(Some)
    }

    /// tgcalls `appendAdditionalMessages`: acks that fit, then unacked messages in order while
    /// they are due and fit.
    fn append_additional(&mut self, plain: &mut Vec<u8>, now: Instant) {
        let mut acked = 0;
        for &seq in &self.acks_to_send {
            if !fits(plain.len(), 5) {
                break;
            }
            plain.extend_from_slice(&seq.to_be_bytes());
            plain.push(TYPE_ACK);
            acked += 1;
        }
        self.acks_to_send.drain(..acked);
        if self.acks_to_send.is_empty() {
            self.ack_due = None;
        }
        if self.unacked.is_empty() {
            return;
        }
        for queued in &mut self.unacked {
            if queued
                .last_sent
                .is_some_and(|sent| sent + MIN_RESEND_DELAY > now)
            {
                break;
            }
            if !fits(plain.len(), queued.item.len()) {
                break;
            }
            plain.extend_from_slice(&queued.item);
            if queued.sent {
                self.stats.messages_resent += 1;
            }
            queued.sent = true;
            queued.last_sent = Some(now);
        }
        if self.resend_due.is_none() {
            self.resend_due = Some(now + MAX_RESEND_DELAY);
        }
    }

    fn receive_inner(&mut self, packet: &[u8], now: Instant) -> Result<Received, Rejected> {
        if !(MIN_PACKET_BYTES..=MAX_PACKET_BYTES).contains(&packet.len()) {
            return Err(Rejected::Size);
        }
        let plain = self.open(packet).ok_or(Rejected::Tampered)?;
        let seq = read_u32(&plain, 0).ok_or(Rejected::Malformed)?;
        let counter = seq & MAX_COUNTER;
        if !self.is_fresh(counter) {
            return Err(Rejected::Replay);
        }
        match self.framing {
            Framing::Raw | Framing::Sctp => {
                self.remember(counter);
                Ok(Received {
                    messages: vec![plain.get(4..).unwrap_or_default().to_vec()],
                })
            }
            Framing::Reliable => {
                let items = parse_items(&plain, seq).ok_or(Rejected::Malformed)?;
                self.remember(counter);
                Ok(self.apply_items(&items, now))
            }
        }
    }

    /// tgcalls `processRawPacket` after parsing: acks remove own messages, messages are
    /// delivered unless already delivered, requires-ack messages are acked.
    fn apply_items(&mut self, items: &[Item<'_>], now: Instant) -> Received {
        let mut received = Received::default();
        let mut first_requiring_ack = true;
        let mut new_requiring_ack = false;
        for (index, item) in items.iter().enumerate() {
            match *item {
                Item::Empty => {}
                Item::Ack { seq } => {
                    if let Some(pos) = self.unacked.iter().position(|u| u.seq == seq) {
                        self.unacked.remove(pos);
                        self.stats.acks_received += 1;
                    }
                }
                Item::Message { seq, body } => {
                    let counter = seq & MAX_COUNTER;
                    let requires_ack = seq & REQUIRES_ACK_BIT != 0;
                    let skip = if requires_ack {
                        !self.register_delivered(counter, first_requiring_ack)
                    } else {
                        // The first item's counter was registered with the packet.
                        index > 0 && !self.register_additional(counter)
                    };
                    if requires_ack {
                        first_requiring_ack = false;
                        new_requiring_ack |= !skip;
                        if !self.acks_to_send.contains(&seq)
                            && self.acks_to_send.len() < MAX_ACK_STATE
                        {
                            self.acks_to_send.push(seq);
                        }
                    }
                    if skip {
                        self.stats.duplicates_dropped += 1;
                    } else {
                        received.messages.push(body.to_vec());
                    }
                }
            }
        }
        if self.unacked.is_empty() {
            self.resend_due = None;
        }
        if !self.acks_to_send.is_empty() {
            if new_requiring_ack {
                self.ack_due = Some(now);
            } else if self.ack_due.is_none() {
                self.ack_due = Some(now + MAX_ACK_DELAY);
            }
        }
        received
    }

    /// tgcalls `registerIncomingCounter`, check half: not seen, not older than the window.
    fn is_fresh(&self, counter: u32) -> bool {
        let largest = self.seen.last().copied().unwrap_or(0);
        self.seen.binary_search(&counter).is_err()
            && u64::from(counter) + u64::from(REPLAY_WINDOW) > u64::from(largest)
    }

    /// tgcalls `registerIncomingCounter`, insert half: forget counters that fell out of the
    /// window, keep the list sorted.
    fn remember(&mut self, counter: u32) {
        self.seen
            .retain(|&c| u64::from(c) + u64::from(REPLAY_WINDOW) > u64::from(counter));
        if let Err(pos) = self.seen.binary_search(&counter) {
            self.seen.insert(pos, counter);
        }
    }

    /// A non-first item without the requires-ack bit: registered like a packet's first seq.
    fn register_additional(&mut self, counter: u32) -> bool {
        if self.is_fresh(counter) {
            self.remember(counter);
            true
        } else {
            false
        }
    }

    /// tgcalls `registerSentAck`: whether a requires-ack message is new. Resends arrive in
    /// order starting with the oldest unacked one, so the first requires-ack item of a packet
    /// lets everything below it be forgotten.
    fn register_delivered(&mut self, counter: u32, first_in_packet: bool) -> bool {
        let search = self.delivered.binary_search(&counter);
        let already = search.is_ok();
        let pos = search.unwrap_or_else(|p| p);
        if first_in_packet {
            self.delivered.drain(..pos);
            if !already {
                self.delivered.insert(0, counter);
            }
        } else if !already {
            self.delivered.insert(pos, counter);
        }
        if self.delivered.len() > MAX_ACK_STATE {
            self.delivered.remove(0);
        }
        !already
    }

    /// `msg_key || AES-256-CTR(plain)` with this side's encryption slice of the key.
    fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, P2pError> {
        let x = self.encrypt_x;
        let msg_key = msg_key(&self.key, x, plain);
        let mut packet = Vec::with_capacity(16 + plain.len());
        packet.extend_from_slice(&msg_key);
        packet.extend_from_slice(plain);
        let (aes_key, aes_iv) = aes_key_iv(&self.key, &msg_key, x);
        let body = packet.get_mut(16..).ok_or(P2pError::Crypto)?;
        aes_ctr(&aes_key, aes_iv, body).ok_or(P2pError::Crypto)?;
        self.stats.packets_sent += 1;
        Ok(packet)
    }

    /// Decrypts with the peer's slice and checks `msg_key` in constant time.
    fn open(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let x = self.decrypt_x;
        let msg_key: [u8; 16] = packet.get(..16)?.try_into().ok()?;
        let mut plain = packet.get(16..)?.to_vec();
        let (aes_key, aes_iv) = aes_key_iv(&self.key, &msg_key, x);
        aes_ctr(&aes_key, aes_iv, &mut plain)?;
        ct_eq(&self::msg_key(&self.key, x, &plain), &msg_key).then_some(plain)
    }
}

/// Whether `amount` more bytes fit in a reliable packet whose plaintext is `len` bytes (tgcalls
/// `enoughSpaceInPacket`).
fn fits(len: usize, amount: usize) -> bool {
    amount < MAX_RELIABLE_PACKET_BYTES && 16 + len + amount <= MAX_RELIABLE_PACKET_BYTES
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Splits a reliable plaintext into items, or `None` if it breaks a rule tgcalls enforces
/// (`processRawPacket`): empty only first, ack never first, a single-message seq only alone,
/// known types, complete bodies, at least 5 bytes per further item.
fn parse_items(plain: &[u8], first_seq: u32) -> Option<Vec<Item<'_>>> {
    let mut items = Vec::new();
    let mut seq = first_seq;
    let mut at = 4;
    loop {
        let additional = !items.is_empty();
        if items.len() >= MAX_ITEMS_PER_PACKET || (additional && seq & SINGLE_MESSAGE_BIT != 0) {
            return None;
        }
        let kind = *plain.get(at)?;
        at += 1;
        match kind {
            TYPE_EMPTY if !additional => items.push(Item::Empty),
            TYPE_ACK if additional => items.push(Item::Ack { seq }),
            TYPE_CUSTOM => {
                let len = usize::try_from(read_u32(plain, at)?).ok()?;
                at += 4;
                if len > MAX_ITEM_BYTES {
                    return None;
                }
                let body = plain.get(at..at.checked_add(len)?)?;
                at += len;
                items.push(Item::Message { seq, body });
            }
            _ => return None,
        }
        let rest = plain.len().checked_sub(at)?;
        if rest == 0 {
            return Some(items);
        }
        if seq & SINGLE_MESSAGE_BIT != 0 || rest < 5 {
            return None;
        }
        seq = read_u32(plain, at)?;
        at += 4;
    }
}

/// `SHA256(key[88+x .. 120+x] || plain)[8..24]`.
fn msg_key(key: &[u8; DH_BYTES], x: usize, plain: &[u8]) -> [u8; 16] {
    let large = sha256(&[key.get(88 + x..120 + x).unwrap_or_default(), plain]);
    let mut out = [0u8; 16];
    out.copy_from_slice(large.get(8..24).unwrap_or(&[0; 16]));
    out
}

/// tgcalls `PrepareAesKeyIv`.
fn aes_key_iv(key: &[u8; DH_BYTES], msg_key: &[u8; 16], x: usize) -> ([u8; 32], [u8; 16]) {
    let a = sha256(&[msg_key, key.get(x..x + 36).unwrap_or_default()]);
    let b = sha256(&[key.get(40 + x..76 + x).unwrap_or_default(), msg_key]);
    let mut aes_key = [0u8; 32];
    aes_key[..8].copy_from_slice(&a[..8]);
    aes_key[8..24].copy_from_slice(&b[8..24]);
    aes_key[24..].copy_from_slice(&a[24..]);
    let mut aes_iv = [0u8; 16];
    aes_iv[..4].copy_from_slice(&b[..4]);
    aes_iv[4..12].copy_from_slice(&a[8..16]);
    aes_iv[12..].copy_from_slice(&b[24..28]);
    (aes_key, aes_iv)
}

/// AES-256-CTR in place, the 16-byte IV as the initial counter block incremented as one
/// 128-bit big-endian number (OpenSSL `CRYPTO_ctr128_encrypt`, which tgcalls uses).
fn aes_ctr(key: &[u8; 32], iv: [u8; 16], data: &mut [u8]) -> Option<()> {
    let key = UnboundCipherKey::new(&AES_256, key).ok()?;
    let cipher = EncryptingKey::ctr(key).ok()?;
    cipher
        .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
        .ok()?;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The §5 key: bytes 00 01 .. FF.
    fn vector_key() -> [u8; DH_BYTES] {
        std::array::from_fn(|i| i as u8)
    }

    fn pair(framing: Framing) -> (EncryptedChannel, EncryptedChannel) {
        let key = vector_key();
        (
            EncryptedChannel::new(&key, Role::Caller, framing),
            EncryptedChannel::new(&key, Role::Callee, framing),
        )
    }

    const MSG: &[u8] = br#"{"@type":"Candidates","candidates":[]}"#;

    /// telegram-signaling.md §5, reliable framing, caller -> callee.
    #[test]
    fn published_reliable_vector() {
        let now = Instant::now();
        let (mut caller, mut callee) = pair(Framing::Reliable);
        let packet = caller.send(MSG, now).unwrap();
        assert_eq!(
            packet,
            unhex(
                "a348149ee08ad4643b7269884ff1b53415979bdaee2615b86eb1143a4d5170a67bf50441\
                 08059b8eff1363c64a53fd67cf6f077b8c6867371748da0372b40d"
            )
        );
        let (aes_key, aes_iv) = aes_key_iv(&vector_key(), &packet[..16].try_into().unwrap(), 128);
        assert_eq!(
            aes_key.to_vec(),
            unhex("b53e64abf6c503a9596bedb8561cb80fab38839114a27466d4bba6f8c0f8ef08")
        );
        assert_eq!(aes_iv.to_vec(), unhex("c6e578791c388d53b73ebc49dc4a10fb"));
        let got = callee.receive(&packet, now).unwrap();
        assert_eq!(got.messages, vec![MSG.to_vec()]);
    }

    /// telegram-signaling.md §5, raw framing, callee -> caller.
    #[test]
    fn published_raw_vector() {
        let now = Instant::now();
        let (mut caller, mut callee) = pair(Framing::Raw);
        let packet = callee.send(MSG, now).unwrap();
        assert_eq!(
            packet,
            unhex(
                "04e8e040e7e58cea2050145c169f8d0fe153bc1964011a56ccdff4d062b22ec8d035325f\
                 2e1f0fcdb4b438d3bd38287d82d2ab2306f42d84abe5"
            )
        );
        let (aes_key, aes_iv) = aes_key_iv(&vector_key(), &packet[..16].try_into().unwrap(), 136);
        assert_eq!(
            aes_key.to_vec(),
            unhex("4461a577bd2053fc9c1968bd5b495d998b12484ed98b66bde16147bc37dfa94b")
        );
        assert_eq!(aes_iv.to_vec(), unhex("f92cb47108ac2116c4bc018a3d898d5c"));
        assert_eq!(
            caller.receive(&packet, now).unwrap().messages,
            vec![MSG.to_vec()]
        );
        assert_eq!(caller.poll_timeout(), None);
    }

    /// The counter block carries into the upper 96 bits like OpenSSL's `CRYPTO_ctr128_encrypt`
    /// (expected values from Python `cryptography`, i.e. OpenSSL).
    #[test]
    fn ctr_counter_is_128_bit_big_endian() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let cases = [
            (
                "000102030405060708090a0bffffffff",
                "9d52ea871d37e206b64e902d1d857e44daa648ffc7cfc3a6d9f65499ff0b1781\
                 8d72da2ac9d194201498fdb04c4cc401",
            ),
            (
                "ffffffffffffffffffffffffffffffff",
                "e999e41d4ca770da5387117b5d8f57eef29000b62a499fd0a9f39a6add2e7780\
                 f05d76ae4ab99fe5a6f69b3148c2363d",
            ),
        ];
        for (iv, expected) in cases {
            let mut data = [0u8; 48];
            aes_ctr(&key, unhex(iv).try_into().unwrap(), &mut data).unwrap();
            let expected: String = expected.split_whitespace().collect();
            assert_eq!(data.to_vec(), unhex(&expected));
        }
    }

    #[test]
    fn framing_follows_the_version() {
        assert_eq!(Framing::for_version("7.0.0"), Some(Framing::Raw));
        assert_eq!(Framing::for_version("8.0.0"), Some(Framing::Reliable));
        assert_eq!(Framing::for_version("9.0.0"), Some(Framing::Reliable));
        assert_eq!(Framing::for_version("12.0.0"), Some(Framing::Sctp));
        assert_eq!(Framing::for_version("13.0.0"), Some(Framing::Sctp));
        assert_eq!(Framing::for_version("11.0.0"), None);
        assert_eq!(Framing::for_version("4.0.0"), None);
    }

    #[test]
    fn reliable_round_trip_with_acks() {
        let t0 = Instant::now();
        let (mut caller, mut callee) = pair(Framing::Reliable);
        let p1 = caller.send(b"one", t0).unwrap();
        assert_eq!(caller.unacked(), 1);
        assert_eq!(
            callee.receive(&p1, t0).unwrap().messages,
            vec![b"one".to_vec()]
        );
        // A new requires-ack message: the ack is due at once.
        assert_eq!(callee.poll_timeout(), Some(t0));
        let ack = callee.poll_transmit(t0).unwrap();
        assert_eq!(callee.poll_timeout(), None);
        assert!(caller.receive(&ack, t0).unwrap().messages.is_empty());
        assert_eq!(caller.unacked(), 0);
        assert_eq!(caller.stats().acks_received, 1);
        assert_eq!(caller.poll_transmit(t0 + MAX_RESEND_DELAY), None);
        // And back, with the ack riding along the next message.
        let p2 = callee.send(b"two", t0).unwrap();
        assert_eq!(
            caller.receive(&p2, t0).unwrap().messages,
            vec![b"two".to_vec()]
        );
        let p3 = caller.send(b"three", t0).unwrap();
        let got = callee.receive(&p3, t0).unwrap();
        assert_eq!(got.messages, vec![b"three".to_vec()]);
        assert_eq!(callee.unacked(), 0, "the ack came with caller's message");
    }

    #[test]
    fn lost_message_is_resent_and_duplicates_are_dropped_but_acked() {
        let t0 = Instant::now();
        let (mut caller, mut callee) = pair(Framing::Reliable);
        let first = caller.send(b"hello", t0).unwrap();
        // `first` is lost. Nothing is due before MAX_RESEND_DELAY.
        assert_eq!(caller.poll_timeout(), Some(t0 + MAX_RESEND_DELAY));
        assert_eq!(caller.poll_transmit(t0 + Duration::from_millis(4999)), None);
        let resend = caller
            .poll_transmit(t0 + MAX_RESEND_DELAY)
            .expect("resend due");
        assert_eq!(caller.stats().messages_resent, 1);
        let t1 = t0 + MAX_RESEND_DELAY;
        assert_eq!(
            callee.receive(&resend, t1).unwrap().messages,
            vec![b"hello".to_vec()]
        );
        // The original arrives late: a fresh packet seq, but the message was delivered.
        assert!(callee.receive(&first, t1).unwrap().messages.is_empty());
        assert_eq!(callee.stats().duplicates_dropped, 1);
        let ack = callee.poll_transmit(t1).unwrap();
        caller.receive(&ack, t1).unwrap();
        assert_eq!(caller.unacked(), 0);
        assert_eq!(caller.poll_timeout(), None);
    }

    #[test]
    fn queued_messages_go_out_in_order_behind_an_empty_item() {
        let t0 = Instant::now();
        let (mut caller, mut callee) = pair(Framing::Reliable);
        let _lost = caller.send(b"a", t0).unwrap();
        let second = caller.send(b"b", t0).unwrap();
        let got = callee.receive(&second, t0).unwrap();
        assert_eq!(got.messages, vec![b"a".to_vec(), b"b".to_vec()]);
        let ack = callee.poll_transmit(t0).unwrap();
        caller.receive(&ack, t0).unwrap();
        assert_eq!(caller.unacked(), 0);
    }

    #[test]
    fn tampered_packets_are_rejected_and_counted_without_harm() {
        let t0 = Instant::now();
        for framing in [Framing::Reliable, Framing::Raw] {
            let (mut caller, mut callee) = pair(framing);
            let packet = caller.send(MSG, t0).unwrap();
            for i in [0, 15, 16, 20, packet.len() - 1] {
                let mut bad = packet.clone();
                bad[i] ^= 0x01;
                assert_eq!(callee.receive(&bad, t0), Err(Rejected::Tampered));
            }
            // Truncated below the minimum, and truncated above it.
            assert_eq!(callee.receive(&packet[..20], t0), Err(Rejected::Size));
            assert_eq!(callee.receive(&[], t0), Err(Rejected::Size));
            assert_eq!(
                callee.receive(&packet[..packet.len() - 1], t0),
                Err(Rejected::Tampered)
            );
            assert_eq!(
                callee.receive(&vec![0u8; MAX_PACKET_BYTES + 1], t0),
                Err(Rejected::Size)
            );
            let stats = callee.stats();
            assert_eq!(stats.rejected_tampered, 6);
            assert_eq!(stats.rejected_size, 3);
            assert_eq!(stats.packets_received, 0);
            // The genuine packet still goes through, and later ones too.
            assert_eq!(
                callee.receive(&packet, t0).unwrap().messages,
                vec![MSG.to_vec()]
            );
            let next = caller.send(b"next", t0).unwrap();
            assert!(
                callee
                    .receive(&next, t0)
                    .unwrap()
                    .messages
                    .contains(&b"next".to_vec())
            );
        }
    }

    #[test]
    fn wrong_key_and_wrong_direction_are_rejected() {
        let t0 = Instant::now();
        let (mut caller, mut callee) = pair(Framing::Reliable);
        let packet = caller.send(MSG, t0).unwrap();
        let mut other_key = vector_key();
        other_key[200] ^= 0x80;
        let mut stranger = EncryptedChannel::new(&other_key, Role::Callee, Framing::Reliable);
        assert_eq!(stranger.receive(&packet, t0), Err(Rejected::Tampered));
        // The caller's own packet reflected back: decrypted with the callee's slice, fails.
        assert_eq!(caller.receive(&packet, t0), Err(Rejected::Tampered));
        assert_eq!(caller.stats().rejected_tampered, 1);
        assert!(callee.receive(&packet, t0).is_ok());
    }

    #[test]
    fn replayed_and_too_old_packets_are_rejected() {
        let t0 = Instant::now();
        for framing in [Framing::Reliable, Framing::Raw] {
            let (mut caller, mut callee) = pair(framing);
            let packets: Vec<_> = (0..70)
                .map(|i| caller.send(format!("m{i}").as_bytes(), t0).unwrap())
                .collect();
            let last = packets.last().unwrap();
            callee.receive(last, t0).unwrap();
            assert_eq!(callee.receive(last, t0), Err(Rejected::Replay));
            // Out of order inside the window: fine. Older than the window: refused.
            assert!(callee.receive(&packets[60], t0).is_ok());
            assert_eq!(callee.receive(&packets[60], t0), Err(Rejected::Replay));
            assert_eq!(callee.receive(&packets[0], t0), Err(Rejected::Replay));
            assert_eq!(callee.stats().rejected_replay, 3);
            let more = caller.send(b"more", t0).unwrap();
            assert!(callee.receive(&more, t0).is_ok());
        }
    }

    /// Seals an arbitrary plaintext as `from` would.
    fn forge(from: Role, plain: &[u8]) -> Vec<u8> {
        let mut sender = EncryptedChannel::new(&vector_key(), from, Framing::Reliable);
        sender.seal(plain).unwrap()
    }

    #[test]
    fn authentic_but_malformed_packets_are_rejected_without_consuming_the_seq() {
        let t0 = Instant::now();
        let (_, mut callee) = pair(Framing::Reliable);
        let seq = 5u32.to_be_bytes();
        let cases: Vec<Vec<u8>> = vec![
            [&seq[..], &[TYPE_ACK]].concat(),                      // ack first
            [&seq[..], &[0x01]].concat(),                          // unknown type
            [&seq[..], &[TYPE_CUSTOM, 0, 0, 0, 9, b'x']].concat(), // short body
            [&seq[..], &[TYPE_CUSTOM, 0, 0]].concat(),             // short length
            [&seq[..], &[TYPE_CUSTOM, 0x00, 0x10, 0x00, 0x01]].concat(), // > 1 MiB
            [&seq[..], &[TYPE_EMPTY, 0, 0, 0, 6, TYPE_EMPTY]].concat(), // empty not first
            [&seq[..], &[TYPE_EMPTY, 0, 0, 0]].concat(),           // trailing bytes
            [
                &(5u32 | SINGLE_MESSAGE_BIT).to_be_bytes()[..],
                &[TYPE_EMPTY, 0, 0, 0, 6, TYPE_ACK],
            ]
            .concat(), // single + more
        ];
        for plain in &cases {
            let packet = forge(Role::Caller, plain);
            assert_eq!(
                callee.receive(&packet, t0),
                Err(Rejected::Malformed),
                "{plain:02x?}"
            );
        }
        assert_eq!(callee.stats().rejected_malformed, cases.len() as u64);
        // Counter 5 was never registered: a well-formed packet with it is accepted.
        let good = [&seq[..], &[TYPE_CUSTOM, 0, 0, 0, 2, b'o', b'k']].concat();
        let got = callee.receive(&forge(Role::Caller, &good), t0).unwrap();
        assert_eq!(got.messages, vec![b"ok".to_vec()]);
    }

    #[test]
    fn send_limits() {
        let t0 = Instant::now();
        let (mut caller, _) = pair(Framing::Reliable);
        let max = caller.max_message_len();
        assert!(caller.send(&vec![b'x'; max], t0).is_ok());
        assert_eq!(
            caller.send(&vec![b'x'; max + 1], t0).unwrap_err(),
            P2pError::MessageTooLarge { len: max + 1, max }
        );
        // Queued behind an unacked message, a send needs two counters.
        caller.counter = MAX_COUNTER - 1;
        assert_eq!(
            caller.send(b"x", t0).unwrap_err(),
            P2pError::CounterExhausted
        );
        assert_eq!(caller.unacked(), 1, "nothing was queued");
        let (mut caller, _) = pair(Framing::Reliable);
        caller.counter = MAX_COUNTER - 1;
        assert!(caller.send(b"last", t0).is_ok());
        assert_eq!(
            caller.send(b"over", t0).unwrap_err(),
            P2pError::CounterExhausted
        );

        let (mut raw, _) = pair(Framing::Raw);
        let max = raw.max_message_len();
        assert_eq!(16 + 4 + max, MAX_PACKET_BYTES);
        assert!(raw.send(&vec![0; max + 1], t0).is_err());
    }

    #[test]
    fn unacked_backlog_is_bounded() {
        let t0 = Instant::now();
        let (mut caller, _) = pair(Framing::Reliable);
        for _ in 0..MAX_UNACKED {
            caller.send(b"x", t0).unwrap();
        }
        assert_eq!(
            caller.send(b"x", t0).unwrap_err(),
            P2pError::TooManyUnacked { count: MAX_UNACKED }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes never panic, never deliver anything, and leave the channel working.
        #[test]
        fn arbitrary_packets_are_harmless(
            junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
            reliable in any::<bool>(),
        ) {
            let framing = if reliable { Framing::Reliable } else { Framing::Raw };
            let t0 = Instant::now();
            let (mut caller, mut callee) = pair(framing);
            for bytes in &junk {
                prop_assert!(callee.receive(bytes, t0).is_err());
            }
            let _ = callee.poll_transmit(t0);
            let packet = caller.send(b"still here", t0).unwrap();
            let got = callee.receive(&packet, t0).unwrap();
            prop_assert_eq!(got.messages, vec![b"still here".to_vec()]);
        }

        /// Authentic packets with arbitrary plaintext (a buggy or hostile peer) never panic.
        #[test]
        fn arbitrary_authentic_plaintext_is_harmless(
            plain in proptest::collection::vec(any::<u8>(), 5..300),
        ) {
            let t0 = Instant::now();
            let (_, mut callee) = pair(Framing::Reliable);
            let _ = callee.receive(&forge(Role::Caller, &plain), t0);
            let _ = callee.poll_transmit(t0 + MAX_ACK_DELAY);
        }
    }
}
