//! Shared by the `p2p_decrypt` and `p2p_message` fuzz targets and their stable replay in
//! `engine-core/tests/p2p_fuzz_corpus.rs` (both include this file with `#[path]`).
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // shared by a fuzz target and a test

use std::time::{Duration, Instant};

use ringcast_core::SignalingError;
use ringcast_core::signaling::p2p::{
    EncryptedChannel, Framing, LinkRejected, Rejected, Role, SctpStats, SignalingLink,
    SignalingMessage,
};

/// The telegram-signaling.md §5 key (bytes 00 01 .. FF): the seeds are encrypted with it.
pub fn key() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// `p2p_decrypt` input: flags byte, then packets as `[u16 BE length][bytes]`.
/// Flags bit 0: reliable framing (else raw); bit 1: the receiver is the caller (else callee).
pub fn encode(flags: u8, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![flags];
    for p in packets {
        let len = u16::try_from(p.len()).expect("seed packet fits in u16");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Splits an input into flags and packets; a truncated last frame is fed as it is.
pub fn decode(data: &[u8]) -> (u8, Vec<&[u8]>) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut packets = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = (2 + len).min(rest.len());
        packets.push(&rest[2..end]);
        rest = &rest[end..];
    }
    (flags, packets)
}

/// The roles and framing an input's flags select: (framing, receiver role, sender role).
pub fn setup(flags: u8) -> (Framing, Role, Role) {
    let framing = if flags & 1 == 1 {
        Framing::Reliable
    } else {
        Framing::Raw
    };
    let (receiver, sender) = if flags & 2 == 2 {
        (Role::Caller, Role::Callee)
    } else {
        (Role::Callee, Role::Caller)
    };
    (framing, receiver, sender)
}

/// What feeding one input gave.
#[derive(Debug)]
pub struct Decrypted {
    /// Packets fed.
    pub packets: usize,
    /// Packets accepted.
    pub accepted: usize,
    /// Messages delivered from them.
    pub messages: usize,
    /// Rejections, in order.
    pub rejected: Vec<Rejected>,
}

/// Feeds every packet of `data` to a fresh channel holding [`key`], 100 ms apart, polling
/// for acks and resends in between. Panics if the channel breaks a promise: a counter that does
/// not match what happened, or a channel that no longer accepts a genuine packet afterwards
/// (a rejected packet must leave the call unaffected).
pub fn decrypt(data: &[u8]) -> Decrypted {
    let (flags, packets) = decode(data);
    let (framing, receiver_role, sender_role) = setup(flags);
    let key = key();
    let mut receiver = EncryptedChannel::new(&key, receiver_role, framing);
    let mut now = Instant::now();
    let mut out = Decrypted {
        packets: packets.len(),
        accepted: 0,
        messages: 0,
        rejected: Vec::new(),
    };
    for packet in &packets {
        match receiver.receive(packet, now) {
            Ok(got) => {
                out.accepted += 1;
                out.messages += got.messages.len();
            }
            Err(e) => out.rejected.push(e),
        }
        now += Duration::from_millis(100);
        while let Some(reply) = receiver.poll_transmit(now) {
            assert!(
                reply.len() <= 16 * 1024,
                "service packet over the signaling limit"
            );
        }
    }
    let stats = receiver.stats();
    let rejected = stats.rejected_size
        + stats.rejected_tampered
        + stats.rejected_replay
        + stats.rejected_malformed;
    assert_eq!(stats.packets_received, out.accepted as u64);
    assert_eq!(rejected, out.rejected.len() as u64);
    assert_eq!(stats.messages_delivered, out.messages as u64);

    // The call goes on: a genuine packet with a counter past anything in the seeds (which use
    // counters below 5, so 70 sends move past the replay window) is still accepted.
    let check = check_packet(framing, sender_role);
    let got = receiver
        .receive(&check, now)
        .expect("a genuine packet is accepted after any input");
    assert!(
        got.messages
            .iter()
            .any(|m| m == br#"{"@type":"MediaState"}"#),
        "the genuine message is delivered"
    );
    out
}

/// A check packet per (framing, sender role).
type Checks = Vec<((Framing, Role), Vec<u8>)>;

thread_local! {
    /// [`check_packet`]'s packets, made once per (framing, sender role): the 70 sends behind
    /// one cost more than the rest of a run (a reliable-framing packet repeats every unacked
    /// message), and the bytes depend on neither the input nor the clock.
    static CHECKS: std::cell::RefCell<Checks> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A genuine packet from `sender_role` whose counter is past anything in the seeds (they use
/// counters below 5; 70 sends move past the replay window), carrying `{"@type":"MediaState"}`.
fn check_packet(framing: Framing, sender_role: Role) -> Vec<u8> {
    CHECKS.with_borrow_mut(|cache| {
        if let Some((_, packet)) = cache.iter().find(|(k, _)| *k == (framing, sender_role)) {
            return packet.clone();
        }
        let now = Instant::now();
        let mut sender = EncryptedChannel::new(&key(), sender_role, framing);
        for _ in 0..70 {
            let _ = sender.send(b"{}", now);
        }
        let packet = sender
            .send(br#"{"@type":"MediaState"}"#, now)
            .or_else(|_| {
                sender
                    .poll_transmit(now + Duration::from_secs(60))
                    .ok_or(())
            })
            .expect("sender produces a packet");
        cache.push(((framing, sender_role), packet.clone()));
        packet
    })
}

/// Parses `data` as a control message; whatever parses must emit JSON that parses back to the
/// same value.
pub fn message(data: &[u8]) -> Result<SignalingMessage, SignalingError> {
    let parsed = SignalingMessage::parse(data)?;
    let json = parsed.to_json();
    let again = SignalingMessage::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("emitted json does not parse: {e}: {json}"));
    assert_eq!(again, parsed, "round trip changed the message: {json}");
    Ok(parsed)
}

/// What feeding one `p2p_sctp` input gave.
#[derive(Debug)]
pub struct Carried {
    /// Blobs fed.
    pub blobs: usize,
    /// Blobs SCTP took.
    pub accepted: usize,
    /// Rejections, in order.
    pub rejected: Vec<LinkRejected>,
    /// Blobs the receiver sent back (INIT ACK, SACK, ...).
    pub replies: usize,
}

/// Feeds every blob of `data` (flags byte as [`setup`], bit 0 unused) to a fresh signaling
/// V3 link ([`Framing::Sctp`]) holding [`key`], 100 ms apart, driving its timers and draining
/// what it sends in between. Panics if the link breaks a promise: a blob not counted exactly
/// once in its SCTP counters, or a reply larger than an SCTP packet can be.
pub fn sctp(data: &[u8]) -> Carried {
    let (flags, blobs) = decode(data);
    let (_, receiver_role, _) = setup(flags);
    let mut now = Instant::now();
    let mut link = SignalingLink::new(&key(), receiver_role, Framing::Sctp, now);
    let mut out = Carried {
        blobs: blobs.len(),
        accepted: 0,
        rejected: Vec::new(),
        replies: 0,
    };
    // The caller's own INIT.
    while link.poll_transmit(now).is_some() {}
    for blob in &blobs {
        let before = link.sctp_stats().expect("a V3 link has a carrier");
        match link.receive(blob, now) {
            Ok(_) => out.accepted += 1,
            Err(e) => out.rejected.push(e),
        }
        let after = link.sctp_stats().expect("a V3 link has a carrier");
        let counted = |s: SctpStats| {
            s.packets_received + s.rejected_not_sctp + s.rejected_dropped + s.inits_ignored
        };
        assert_eq!(
            counted(after),
            counted(before) + 1,
            "each blob counted once"
        );
        now += Duration::from_millis(100);
        if link.poll_timeout().is_some_and(|t| t <= now) {
            link.handle_timeout(now);
        }
        while let Some(reply) = link.poll_transmit(now) {
            assert!(reply.len() <= 64 * 1024, "reply over an SCTP packet's size");
            out.replies += 1;
        }
    }
    out
}
