//! Routing datagrams on a shared socket to their call, in O(1).
//!
//! str0m's `Rtc::accepts` is a per-call question ("is this yours?"); asking it of every call
//! for every datagram is O(calls). Here a datagram is routed with at most two map lookups:
//! first by its remote address (a call registers the SFU addresses it talks to), then, for
//! STUN only, by the local ufrag in the USERNAME attribute (RFC 8445 §7.2.2: USERNAME is
//! `receiver_ufrag:sender_ufrag`). Anything else is dropped and counted by the caller.
//!
//! The socket rule (one live call per remote address per local socket) is what makes routing
//! by remote address unambiguous; [`Demux::register_remote`] refuses a second claim.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// STUN magic cookie, RFC 5389 §6.
const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN header length, RFC 5389 §6.
const STUN_HEADER_LEN: usize = 20;
/// USERNAME attribute type, RFC 5389 §15.3.
const STUN_ATTR_USERNAME: u16 = 0x0006;
/// RFC 5389 §15.3: USERNAME is at most 513 bytes.
const STUN_USERNAME_MAX: usize = 513;

/// What kind of datagram this is, by its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// 0..=3: STUN.
    Stun,
    /// 20..=63: DTLS.
    Dtls,
    /// 128..=191: RTP or RTCP.
    Rtp,
    /// Anything else (including empty).
    Unknown,
}

/// Classifies a datagram by its first byte (RFC 7983 §7).
pub fn classify(buf: &[u8]) -> DatagramKind {
    match buf.first() {
        Some(0..=3) => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) => DatagramKind::Rtp,
        _ => DatagramKind::Unknown,
    }
}

/// The clear-text part of an RTP header (SRTP encrypts only the payload, RFC 3711 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeaderPeek {
    /// Payload type.
    pub pt: u8,
    /// 16-bit sequence number.
    pub seq: u16,
    /// Synchronization source.
    pub ssrc: u32,
    /// The X bit: a header extension (such as ssrc-audio-level) follows.
    pub has_extension: bool,
}

/// Reads the clear-text header of an RTP (not RTCP) datagram. RFC 7983 §7: a first byte of
/// 128..=191 is RTP or RTCP; RFC 5761 §4: payload types 64..=95 (with the marker bit) are RTCP
/// packet types 192..=223, so those are `None`.
pub fn rtp_header(buf: &[u8]) -> Option<RtpHeaderPeek> {
    let h = buf.get(..12)?;
    if classify(h) != DatagramKind::Rtp {
        return None;
    }
    let pt = h[1] & 0x7F;
    if (64..=95).contains(&pt) {
        return None;
    }
    Some(RtpHeaderPeek {
        pt,
        seq: u16::from_be_bytes([h[2], h[3]]),
        ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        has_extension: h[0] & 0x10 != 0,
    })
}

/// The receiver's (our) ufrag from a STUN message's USERNAME, if the datagram is a well-formed
/// STUN message that carries one. Never panics; does not verify integrity (the call does).
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < STUN_HEADER_LEN || classify(buf) != DatagramKind::Stun {
        return None;
    }
    let msg_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if cookie != STUN_MAGIC_COOKIE || msg_len % 4 != 0 {
        return None;
    }
    let body = buf.get(STUN_HEADER_LEN..STUN_HEADER_LEN + msg_len)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == STUN_ATTR_USERNAME {
            if len > STUN_USERNAME_MAX {
                return None;
            }
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to 4 bytes (RFC 5389 §15).
        let padded = (4 + len + 3) & !3;
        rest = rest.get(padded..)?;
    }
    None
}

/// Why [`Demux::register_remote`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote address {remote} already belongs to another call on this socket")]
pub struct AddressTaken {
    /// The contested address.
    pub remote: SocketAddr,
}

/// The routing table of one socket. `K` is the caller's call handle (a slab index, say).
#[derive(Debug)]
pub struct Demux<K> {
    /// Remote transport address -> call. The peer picks these keys, so std's SipHash keeps a
    /// hostile peer from steering collisions.
    by_remote: HashMap<SocketAddr, K>,
    /// Local ufrag -> call. We generate the ufrags, but STUN USERNAME bytes come from the
    /// network, so SipHash here too; the lookup is only on STUN, never on media.
    by_ufrag: HashMap<String, K>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Self {
            by_remote: HashMap::new(),
            by_ufrag: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `call`'s datagrams from `remote`. Fails if another call already has `remote`.
    pub fn register_remote(&mut self, remote: SocketAddr, call: K) -> Result<(), AddressTaken> {
        match self.by_remote.get(&remote) {
            Some(existing) if *existing != call => Err(AddressTaken { remote }),
            _ => {
                self.by_remote.insert(remote, call);
                Ok(())
            }
        }
    }

    /// True if some call other than `call` owns `remote`.
    pub fn is_taken(&self, remote: &SocketAddr, call: K) -> bool {
        self.by_remote.get(remote).is_some_and(|k| *k != call)
    }

    /// Routes STUN whose USERNAME starts with `ufrag` to `call`.
    pub fn register_ufrag(&mut self, ufrag: &str, call: K) {
        self.by_ufrag.insert(ufrag.to_owned(), call);
    }

    /// Forgets everything routed to `call`.
    pub fn remove_call(&mut self, call: K) {
        self.by_remote.retain(|_, k| *k != call);
        self.by_ufrag.retain(|_, k| *k != call);
    }

    /// Forgets `remote` if it belongs to `call`.
    pub fn remove_remote(&mut self, remote: &SocketAddr, call: K) {
        if self.by_remote.get(remote) == Some(&call) {
            self.by_remote.remove(remote);
        }
    }

    /// Forgets `ufrag` if it belongs to `call`.
    pub fn remove_ufrag(&mut self, ufrag: &str, call: K) {
        if self.by_ufrag.get(ufrag) == Some(&call) {
            self.by_ufrag.remove(ufrag);
        }
    }

    /// The call a datagram from `source` belongs to, if any.
    pub fn route(&self, source: &SocketAddr, buf: &[u8]) -> Option<K> {
        if let Some(k) = self.by_remote.get(source) {
            return Some(*k);
        }
        let ufrag = stun_local_ufrag(buf)?;
        self.by_ufrag.get(ufrag).copied()
    }

    /// Number of remote addresses routed.
    pub fn remotes(&self) -> usize {
        self.by_remote.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut buf = vec![0x00, 0x01];
        buf.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        buf.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&[7; 12]);
        buf.extend_from_slice(&attr);
        buf
    }

    #[test]
    fn rtp_header_peek() {
        let mut pkt = [0u8; 20];
        pkt[0] = 0x90;
        pkt[1] = 111;
        pkt[2..4].copy_from_slice(&7u16.to_be_bytes());
        pkt[8..12].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
        let h = rtp_header(&pkt).unwrap();
        assert_eq!(
            (h.pt, h.seq, h.ssrc, h.has_extension),
            (111, 7, 0xDEAD_BEEF, true)
        );
        pkt[1] = 200; // RTCP SR with marker bit set
        assert_eq!(rtp_header(&pkt), None);
        assert_eq!(rtp_header(&pkt[..8]), None);
        pkt[0] = 0x16; // DTLS
        assert_eq!(rtp_header(&pkt), None);
    }

    #[test]
    fn username_is_found() {
        let buf = stun_with_username("abcd:efgh");
        assert_eq!(stun_local_ufrag(&buf), Some("abcd"));
    }

    #[test]
    fn bad_stun_is_none() {
        let mut buf = stun_with_username("abcd:efgh");
        buf[4] = 0; // cookie
        assert_eq!(stun_local_ufrag(&buf), None);
        let buf = stun_with_username("abcd:efgh");
        assert_eq!(stun_local_ufrag(&buf[..buf.len() - 2]), None);
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0x16; 40]), None);
    }

    #[test]
    fn routes_by_remote_then_ufrag() {
        let mut d = Demux::new();
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        d.register_remote(a, 1u32).unwrap();
        d.register_ufrag("uf2", 2u32);
        assert_eq!(d.route(&a, &[0x80; 20]), Some(1));
        assert_eq!(d.route(&b, &[0x80; 20]), None);
        assert_eq!(d.route(&b, &stun_with_username("uf2:x")), Some(2));
        assert_eq!(d.register_remote(a, 2), Err(AddressTaken { remote: a }));
        d.remove_ufrag("uf2", 1);
        assert_eq!(
            d.route(&b, &stun_with_username("uf2:x")),
            Some(2),
            "not 1's to remove"
        );
        d.remove_ufrag("uf2", 2);
        assert_eq!(d.route(&b, &stun_with_username("uf2:x")), None);
        d.remove_call(1);
        assert!(d.register_remote(a, 2).is_ok());
        assert_eq!(d.route(&a, &[0x80; 20]), Some(2));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = stun_local_ufrag(&buf);
            let _ = classify(&buf);
        }
    }
}
