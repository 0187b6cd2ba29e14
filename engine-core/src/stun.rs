//! A minimal STUN client (RFC 5389) for gathering server-reflexive candidates, sans-IO.
//!
//! A 1:1 call ([`crate::p2p_call::P2pCall`]) asks each configured STUN server "what address do you
//! see me at?" with a Binding Request from its own socket; the XOR-MAPPED-ADDRESS of the Binding
//! Success response becomes a server-reflexive ICE candidate (RFC 8445 §5.1.1.1).
//!
//! Only what that needs is here: the 20-byte Binding Request (no attributes: no credentials,
//! no FINGERPRINT, as RFC 5389 §7.2.1 permits for Binding), and a parser for Binding Success and
//! Error responses that reads XOR-MAPPED-ADDRESS (falling back to MAPPED-ADDRESS, §15.1) and
//! ERROR-CODE and ignores every other attribute. Responses are matched to requests by transaction
//! id (96 random bits from the call's seed) *and* source address, so they are never confused with
//! ICE connectivity checks (whose transaction ids str0m owns). Retransmission follows §7.2.1 with
//! a bounded number of requests and an overall deadline; time is passed in.
//!
//! TURN relay candidates are in [`crate::turn`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// STUN magic cookie, RFC 5389 §6.
pub(crate) const MAGIC_COOKIE: u32 = 0x2112_A442;
/// STUN header length, RFC 5389 §6.
const HEADER_LEN: usize = 20;
/// Binding Request message type (method 0x001, class request).
const BINDING_REQUEST: u16 = 0x0001;
/// Binding Success Response.
const BINDING_SUCCESS: u16 = 0x0101;
/// Binding Error Response.
const BINDING_ERROR: u16 = 0x0111;
/// MAPPED-ADDRESS, RFC 5389 §15.1.
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// ERROR-CODE, RFC 5389 §15.6.
const ATTR_ERROR_CODE: u16 = 0x0009;
/// XOR-MAPPED-ADDRESS, RFC 5389 §15.2.
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Length of a Binding Request from [`binding_request`].
pub const BINDING_REQUEST_LEN: usize = HEADER_LEN;

/// First retransmission timeout (RFC 5389 §7.2.1 recommends 500 ms for unknown paths; a call
/// is waiting, so start lower, like libwebrtc's 250 ms).
pub const STUN_INITIAL_RTO: Duration = Duration::from_millis(250);

/// The retransmission timeout doubles after each request up to this.
pub const STUN_MAX_RTO: Duration = Duration::from_secs(2);

/// At most this many requests per server (RFC 5389 §7.2.1 `Rc` = 7); fewer when the gathering
/// deadline comes first.
pub const STUN_MAX_REQUESTS: u32 = 7;

/// A STUN transaction id (RFC 5389 §6: 96 bits).
pub type TransactionId = [u8; 12];

/// A Binding Request with `txid` and no attributes.
pub fn binding_request(txid: &TransactionId) -> [u8; BINDING_REQUEST_LEN] {
    let mut buf = [0u8; BINDING_REQUEST_LEN];
    buf[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Message length 0: no attributes.
    buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf[8..20].copy_from_slice(txid);
    buf
}

/// What a Binding response said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingResponse {
    /// Binding Success: the address the server saw the request come from.
    Success {
        /// XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489 server).
        mapped: SocketAddr,
    },
    /// Binding Error with its ERROR-CODE (0 if the attribute is missing or malformed).
    Error {
        /// Class × 100 + number, e.g. 400.
        code: u16,
    },
}

/// Why [`parse_binding_response`] refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunParseError {
    /// Not a STUN message (too short, top bits set, no magic cookie, length not a multiple
    /// of 4).
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message, but not a Binding response (e.g. an ICE Binding Request).
    #[error("not a STUN binding response (type {0:#06x})")]
    NotBindingResponse(u16),
    /// The length field or an attribute runs past the end of the datagram.
    #[error("truncated STUN message")]
    Truncated,
    /// A Binding Success without a usable (XOR-)MAPPED-ADDRESS.
    #[error("binding success without a mapped address")]
    NoMappedAddress,
}

/// The message type and transaction id of a STUN message (RFC 5389 §6), or `None` if `buf` is
/// not one.
pub fn peek(buf: &[u8]) -> Option<(u16, TransactionId)> {
    if buf.len() < HEADER_LEN || buf[0] & 0xC0 != 0 {
        return None;
    }
    let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let len = u16::from_be_bytes([buf[2], buf[3]]);
    if cookie != MAGIC_COOKIE || !len.is_multiple_of(4) {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&buf[8..20]);
    Some((u16::from_be_bytes([buf[0], buf[1]]), txid))
}

/// Parses a Binding Success or Error response.
///
/// # Errors
/// [`StunParseError`] for anything else or a malformed message. Never panics.
pub fn parse_binding_response(
    buf: &[u8],
) -> Result<(TransactionId, BindingResponse), StunParseError> {
    let (kind, txid) = peek(buf).ok_or(StunParseError::NotStun)?;
    if kind != BINDING_SUCCESS && kind != BINDING_ERROR {
        return Err(StunParseError::NotBindingResponse(kind));
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let mut attrs = buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(StunParseError::Truncated)?;
    let mut xor_mapped = None;
    let mut mapped = None;
    let mut error_code = None;
    while !attrs.is_empty() {
        let header = attrs.get(..4).ok_or(StunParseError::Truncated)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let value_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = attrs
            .get(4..4 + value_len)
            .ok_or(StunParseError::Truncated)?;
        match kind {
            ATTR_XOR_MAPPED_ADDRESS if xor_mapped.is_none() => {
                xor_mapped = parse_address(value, Some(&txid));
            }
            ATTR_MAPPED_ADDRESS if mapped.is_none() => mapped = parse_address(value, None),
            ATTR_ERROR_CODE if error_code.is_none() && value.len() >= 4 => {
                // Class in the low 3 bits of byte 2, number (0..=99) in byte 3.
                error_code = Some(u16::from(value[2] & 0x07) * 100 + u16::from(value[3]));
            }
            _ => {}
        }
        // Attributes are padded to 4 bytes (§15); the message length is a multiple of 4, so a
        // last attribute without its padding is truncated.
        let padded = (4 + value_len + 3) & !3;
        attrs = attrs.get(padded..).ok_or(StunParseError::Truncated)?;
    }
    if kind == BINDING_ERROR {
        return Ok((
            txid,
            BindingResponse::Error {
                code: error_code.unwrap_or(0),
            },
        ));
    }
    let mapped = xor_mapped
        .or(mapped)
        .ok_or(StunParseError::NoMappedAddress)?;
    Ok((txid, BindingResponse::Success { mapped }))
}

/// A (XOR-)MAPPED-ADDRESS value: reserved byte, family, port, address (§15.1, §15.2).
pub(crate) fn parse_address(value: &[u8], xor_with: Option<&TransactionId>) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port_mask = if xor_with.is_some() {
        u16::from_be_bytes([cookie[0], cookie[1]])
    } else {
        0
    };
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ port_mask;
    let ip = match *value.get(1)? {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let mut octets = raw;
            if xor_with.is_some() {
                for (o, c) in octets.iter_mut().zip(cookie) {
                    *o ^= c;
                }
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut octets = raw;
            if let Some(txid) = xor_with {
                let mask = cookie.iter().chain(txid.iter());
                for (o, m) in octets.iter_mut().zip(mask) {
                    *o ^= m;
                }
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Where one server's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatherState {
    /// Requests are going out; no answer yet.
    Pending,
    /// The server answered with this mapped address.
    Succeeded(SocketAddr),
    /// The server answered with an error, or not before the deadline.
    Failed,
}

/// What [`StunGatherer::handle_datagram`] made of a datagram it recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatherEvent {
    /// The first Binding Success from `server`.
    Mapped {
        /// The server that answered.
        server: SocketAddr,
        /// Our address as the server saw it.
        mapped: SocketAddr,
    },
    /// A Binding Error from `server`: gathering from it failed.
    Failed {
        /// The server that answered.
        server: SocketAddr,
        /// Its ERROR-CODE.
        code: u16,
    },
    /// A response to a finished transaction (a duplicate) or a malformed one: dropped.
    Ignored,
}

struct Transaction {
    server: SocketAddr,
    txid: TransactionId,
    state: GatherState,
    requests: u32,
    next_send: Instant,
    rto: Duration,
    deadline: Instant,
}

/// Binding transactions with a set of STUN servers, one each, sans-IO.
///
/// Drive it with [`Self::poll_transmit`] / [`Self::poll_timeout`] / [`Self::handle_timeout`] and
/// offer it every received datagram first ([`Self::handle_datagram`]); what it does not claim
/// belongs to ICE.
pub struct StunGatherer {
    transactions: Vec<Transaction>,
}

impl std::fmt::Debug for StunGatherer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.transactions.iter().map(|t| (t.server, t.state)))
            .finish()
    }
}

impl StunGatherer {
    /// One transaction per `(server, transaction id)`, the first request due at `now`; a
    /// transaction that has no answer by `now + timeout` fails.
    pub fn new(servers: &[(SocketAddr, TransactionId)], now: Instant, timeout: Duration) -> Self {
        let transactions = servers
            .iter()
            .map(|&(server, txid)| Transaction {
                server,
                txid,
                state: GatherState::Pending,
                requests: 0,
                next_send: now,
                rto: STUN_INITIAL_RTO,
                deadline: now + timeout,
            })
            .collect();
        Self { transactions }
    }

    /// Each server and where its transaction stands.
    pub fn states(&self) -> impl Iterator<Item = (SocketAddr, GatherState)> + '_ {
        self.transactions.iter().map(|t| (t.server, t.state))
    }

    /// True while some transaction is pending.
    pub fn is_gathering(&self) -> bool {
        self.transactions
            .iter()
            .any(|t| t.state == GatherState::Pending)
    }

    /// The next request due at `now`, as (server, datagram).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
    ) -> Option<(SocketAddr, [u8; BINDING_REQUEST_LEN])> {
        let t = self.transactions.iter_mut().find(|t| {
            t.state == GatherState::Pending
                && t.requests < STUN_MAX_REQUESTS
                && t.next_send <= now
                && now < t.deadline
        })?;
        t.requests += 1;
        t.next_send = now + t.rto;
        t.rto = (t.rto * 2).min(STUN_MAX_RTO);
        Some((t.server, binding_request(&t.txid)))
    }

    /// When [`Self::handle_timeout`] or [`Self::poll_transmit`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transactions
            .iter()
            .filter(|t| t.state == GatherState::Pending)
            .map(|t| {
                if t.requests < STUN_MAX_REQUESTS {
                    t.next_send.min(t.deadline)
                } else {
                    t.deadline
                }
            })
            .min()
    }

    /// Fails the transactions whose deadline has passed; returns the servers that failed now.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut failed = Vec::new();
        for t in &mut self.transactions {
            if t.state == GatherState::Pending && now >= t.deadline {
                t.state = GatherState::Failed;
                failed.push(t.server);
            }
        }
        failed
    }

    /// Claims a datagram that answers one of our transactions: a STUN Binding response whose
    /// transaction id is ours and that comes from that transaction's server. `None` for anything
    /// else (ICE checks and their responses, DTLS, RTP, ...), which is not consumed.
    pub fn handle_datagram(&mut self, source: SocketAddr, buf: &[u8]) -> Option<GatherEvent> {
        let (kind, txid) = peek(buf)?;
        if kind != BINDING_SUCCESS && kind != BINDING_ERROR {
            return None;
        }
        let t = self
            .transactions
            .iter_mut()
            .find(|t| t.txid == txid && t.server == source)?;
        if t.state != GatherState::Pending {
            return Some(GatherEvent::Ignored);
        }
        match parse_binding_response(buf) {
            Ok((_, BindingResponse::Success { mapped })) => {
                t.state = GatherState::Succeeded(mapped);
                Some(GatherEvent::Mapped {
                    server: t.server,
                    mapped,
                })
            }
            Ok((_, BindingResponse::Error { code })) => {
                t.state = GatherState::Failed;
                Some(GatherEvent::Failed {
                    server: t.server,
                    code,
                })
            }
            // Malformed: keep waiting (a retransmission may get a good answer).
            Err(_) => Some(GatherEvent::Ignored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.2 "Sample IPv4 Response" (SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
    /// FINGERPRINT; the last two are not checked here).
    const RFC5769_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    const RFC5769_TXID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    fn success(txid: &TransactionId, attrs: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
        buf.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(txid);
        buf.extend_from_slice(attrs);
        buf
    }

    #[test]
    fn rfc5769_ipv4_vector() {
        let (txid, resp) = parse_binding_response(&RFC5769_IPV4_RESPONSE).expect("parses");
        assert_eq!(txid, RFC5769_TXID);
        assert_eq!(
            resp,
            BindingResponse::Success {
                mapped: "192.0.2.1:32853".parse().expect("addr")
            }
        );
    }

    #[test]
    fn rfc5769_ipv6_xor_mapped_address() {
        // The XOR-MAPPED-ADDRESS of RFC 5769 §2.3 "Sample IPv6 Response" (same transaction id).
        let attr = [
            0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3,
            0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        ];
        let (_, resp) = parse_binding_response(&success(&RFC5769_TXID, &attr)).expect("parses");
        assert_eq!(
            resp,
            BindingResponse::Success {
                mapped: "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .expect("addr")
            }
        );
    }

    #[test]
    fn request_layout() {
        let req = binding_request(&RFC5769_TXID);
        assert_eq!(&req[..8], &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&req[8..], &RFC5769_TXID);
        assert_eq!(peek(&req), Some((BINDING_REQUEST, RFC5769_TXID)));
        assert_eq!(
            parse_binding_response(&req),
            Err(StunParseError::NotBindingResponse(BINDING_REQUEST))
        );
    }

    #[test]
    fn plain_mapped_address_and_error_code() {
        // MAPPED-ADDRESS 10.0.0.1:4660 (an RFC 3489 server), then a 420 Binding Error.
        let attr = [0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x12, 0x34, 10, 0, 0, 1];
        let (_, resp) = parse_binding_response(&success(&[7; 12], &attr)).expect("parses");
        assert_eq!(
            resp,
            BindingResponse::Success {
                mapped: "10.0.0.1:4660".parse().expect("addr")
            }
        );
        let mut err = success(&[7; 12], &[0x00, 0x09, 0x00, 0x04, 0, 0, 4, 20]);
        err[1] = 0x11;
        assert_eq!(
            parse_binding_response(&err),
            Ok(([7; 12], BindingResponse::Error { code: 420 }))
        );
    }

    #[test]
    fn malformed_is_refused() {
        let good = RFC5769_IPV4_RESPONSE;
        for cut in [0, 19, 20, 24, 40, 79] {
            assert!(
                parse_binding_response(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut no_cookie = good;
        no_cookie[4] = 0;
        assert_eq!(
            parse_binding_response(&no_cookie),
            Err(StunParseError::NotStun)
        );
        // An attribute claiming more than the message holds.
        let mut long_attr = good;
        long_attr[39] = 0x40;
        assert_eq!(
            parse_binding_response(&long_attr),
            Err(StunParseError::Truncated)
        );
        assert_eq!(
            parse_binding_response(&success(&[1; 12], &[])),
            Err(StunParseError::NoMappedAddress)
        );
    }

    #[test]
    fn gatherer_retransmits_then_fails_at_the_deadline() {
        let server: SocketAddr = "192.0.2.9:3478".parse().expect("addr");
        let t0 = Instant::now();
        let mut g = StunGatherer::new(&[(server, [3; 12])], t0, Duration::from_secs(1));
        let mut sent = Vec::new();
        let mut now = t0;
        while g.is_gathering() {
            while let Some((to, req)) = g.poll_transmit(now) {
                assert_eq!(to, server);
                assert_eq!(peek(&req), Some((BINDING_REQUEST, [3; 12])));
                sent.push(now - t0);
            }
            g.handle_timeout(now);
            now = g.poll_timeout().unwrap_or(now);
        }
        // 250 ms, then 500 ms doubling; the deadline at 1 s ends it.
        assert_eq!(
            sent,
            [0, 250, 750].map(Duration::from_millis).to_vec(),
            "requests at"
        );
        assert_eq!(now - t0, Duration::from_secs(1));
        assert_eq!(g.states().next(), Some((server, GatherState::Failed)));
    }

    #[test]
    fn gatherer_matches_txid_and_source() {
        let a: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
        let b: SocketAddr = "192.0.2.2:3478".parse().expect("addr");
        let t0 = Instant::now();
        let mut g = StunGatherer::new(&[(a, [1; 12]), (b, [2; 12])], t0, Duration::from_secs(5));
        while g.poll_transmit(t0).is_some() {}
        // XOR-MAPPED-ADDRESS 192.0.2.1:32853 (the RFC 5769 value).
        let attr = [
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
        ];
        let mapped: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
        // A's transaction id from B, an unknown id, and a request: not ours.
        assert_eq!(g.handle_datagram(b, &success(&[1; 12], &attr)), None);
        assert_eq!(g.handle_datagram(a, &success(&[9; 12], &attr)), None);
        assert_eq!(g.handle_datagram(a, &binding_request(&[1; 12])), None);
        assert_eq!(
            g.handle_datagram(a, &success(&[1; 12], &attr)),
            Some(GatherEvent::Mapped { server: a, mapped })
        );
        // A duplicate is claimed (not handed to ICE) but changes nothing.
        assert_eq!(
            g.handle_datagram(a, &success(&[1; 12], &attr)),
            Some(GatherEvent::Ignored)
        );
        assert!(g.is_gathering(), "b is still pending");
        assert_eq!(g.handle_timeout(t0 + Duration::from_secs(5)), vec![b]);
        assert!(!g.is_gathering());
        assert_eq!(g.poll_transmit(t0 + Duration::from_secs(6)), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_binding_response(&buf);
            let server: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
            let mut g = StunGatherer::new(&[(server, [0; 12])], Instant::now(), STUN_MAX_RTO);
            let _ = g.handle_datagram(server, &buf);
        }

        /// Past a valid header, with any length field: the attribute walk never panics.
        #[test]
        fn attribute_walk_never_panics(
            error in proptest::bool::ANY,
            len in 0u16..256,
            attrs in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let mut buf = success(&[0; 12], &attrs);
            if error {
                buf[1] = 0x11;
            }
            buf[2..4].copy_from_slice(&(len & !3).to_be_bytes());
            let _ = parse_binding_response(&buf);
        }
    }
}
