//! A minimal TURN client over UDP (RFC 8656, formerly RFC 5766) for relay candidates, sans-IO.
//!
//! A 1:1 call ([`crate::p2p_call::P2pCall`]) allocates a relayed transport address on each
//! configured TURN server from its own socket; that address becomes a relayed ICE candidate
//! (RFC 8445 §5.1.1.2). What ICE sends from the relayed candidate goes to the server in a Send
//! indication (§11.3); what the server relays back arrives in a Data indication (§11.4).
//!
//! Implemented: Allocate with REQUESTED-TRANSPORT UDP and the long-term credential mechanism
//! (RFC 8489 §9.2: the first request goes without credentials, the 401 answer's REALM and NONCE
//! are used for a retry carrying USERNAME, REALM, NONCE and MESSAGE-INTEGRITY keyed with
//! MD5(username:realm:password); a 438 Stale Nonce is retried with the new nonce), Refresh
//! before the allocation's LIFETIME runs out, CreatePermission for each peer IP (refreshed every
//! [`PERMISSION_REFRESH`]), Send and Data indications. Not implemented: ChannelBind/ChannelData,
//! TCP/TLS to the server, SASLprep of credentials, checking MESSAGE-INTEGRITY of responses
//! (responses are matched by transaction id and source address, like [`crate::stun`]),
//! FINGERPRINT, the ALTERNATE-SERVER redirect, deallocating (Refresh with LIFETIME 0) when a
//! call ends: the server drops the allocation when its lifetime runs out. A relay that is lost
//! later (a failed Refresh) stays a candidate in str0m; its pairs just stop working.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::stun::{
    MAGIC_COOKIE, STUN_INITIAL_RTO, STUN_MAX_REQUESTS, STUN_MAX_RTO, TransactionId, parse_address,
    peek,
};

const HEADER_LEN: usize = 20;
const ALLOCATE_REQUEST: u16 = 0x0003;
const ALLOCATE_SUCCESS: u16 = 0x0103;
const ALLOCATE_ERROR: u16 = 0x0113;
const REFRESH_REQUEST: u16 = 0x0004;
const REFRESH_SUCCESS: u16 = 0x0104;
const REFRESH_ERROR: u16 = 0x0114;
const PERMISSION_REQUEST: u16 = 0x0008;
const PERMISSION_SUCCESS: u16 = 0x0108;
const PERMISSION_ERROR: u16 = 0x0118;
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;

const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_LIFETIME: u16 = 0x000D;
const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
const ATTR_DATA: u16 = 0x0013;
const ATTR_REALM: u16 = 0x0014;
const ATTR_NONCE: u16 = 0x0015;
const ATTR_XOR_RELAYED_ADDRESS: u16 = 0x0016;
const ATTR_REQUESTED_TRANSPORT: u16 = 0x0019;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// IANA protocol number of UDP, for REQUESTED-TRANSPORT.
const TRANSPORT_UDP: u8 = 17;

/// Attributes read per message; a message with more is malformed.
const MAX_ATTRIBUTES: usize = 32;

/// REALM, NONCE, USERNAME and the password longer than this are refused (RFC 8489 allows 763
/// bytes for REALM/NONCE/USERNAME).
pub const MAX_CREDENTIAL_LEN: usize = 763;

/// Peer IPs with a permission per allocation; more are refused (and counted by the call).
pub const MAX_PERMISSIONS: usize = 16;

/// Requests waiting to be sent (CreatePermission for new peers); more are dropped.
const MAX_QUEUED_REQUESTS: usize = MAX_PERMISSIONS;

/// Permissions last 300 s (RFC 8656 §9); they are refreshed after this.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);

/// 401/438 answers followed with a new request before the allocation counts as failed.
const MAX_AUTH_RETRIES: u32 = 3;

/// The allocation is refreshed this long before its lifetime ends (or at half of a lifetime
/// shorter than twice this).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A TURN server and the long-term credentials to use on it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// The server's UDP address.
    pub addr: SocketAddr,
    /// USERNAME.
    pub username: String,
    /// Password (only its MD5 with username and realm goes on the wire).
    pub password: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The server answered the authenticated request with 401 again: wrong credentials.
    #[error("TURN server refused the credentials")]
    Unauthorized,
    /// The server answered with another error code.
    #[error("TURN server answered error {0}")]
    Rejected(u16),
    /// No answer after [`STUN_MAX_REQUESTS`] requests or before the deadline.
    #[error("TURN server did not answer")]
    Timeout,
    /// A success response without XOR-RELAYED-ADDRESS, or a 401 without REALM/NONCE.
    #[error("malformed TURN response: {0}")]
    Malformed(&'static str),
    /// The credentials (or the server's REALM/NONCE) are longer than [`MAX_CREDENTIAL_LEN`].
    #[error("TURN credentials too long")]
    CredentialsTooLong,
}

/// What [`TurnClient::handle_datagram`] made of a datagram from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation succeeded.
    Allocated {
        /// The relayed transport address (the relay candidate).
        relay: SocketAddr,
        /// Our address as the server saw it (XOR-MAPPED-ADDRESS), if given.
        mapped: Option<SocketAddr>,
    },
    /// The allocation failed (or a refresh of it did: the relay is gone).
    Failed(TurnError),
    /// A Data indication: `payload` came from `peer` to the relayed address.
    Data {
        /// The peer that sent it to the relay.
        peer: SocketAddr,
        /// The relayed datagram.
        payload: Vec<u8>,
    },
    /// A permission was refused by the server.
    PermissionFailed {
        /// The peer IP.
        ip: IpAddr,
        /// The error code.
        code: u16,
    },
    /// Something handled inside (a refresh/permission success, a 401 leading to a retry) or a
    /// duplicate/malformed message: nothing for the caller.
    Handled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh,
    Permission(IpAddr),
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    txid: TransactionId,
    message: Vec<u8>,
    sends: u32,
    next_send: Instant,
    rto: Duration,
}

/// Where an allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnState {
    /// Allocate requests are in progress.
    Allocating,
    /// The relayed address is usable.
    Allocated(SocketAddr),
    /// Failed (or given up); the relay is not usable.
    Failed,
}

/// One allocation on one TURN server, sans-IO.
///
/// Drive it like [`crate::stun::StunGatherer`]: [`Self::poll_transmit`] (datagrams to
/// [`TurnServer::addr`]), [`Self::poll_timeout`], [`Self::handle_timeout`], and offer it every
/// datagram first ([`Self::handle_datagram`]).
pub struct TurnClient {
    server: TurnServer,
    state: TurnState,
    rng: fastrand::Rng,
    realm: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    key: Option<[u8; 16]>,
    auth_retries: u32,
    pending: Option<Pending>,
    queued: VecDeque<Kind>,
    /// Peer IP → when its permission needs a refresh (`None` while requested, not granted).
    permissions: Vec<(IpAddr, Option<Instant>)>,
    refresh_at: Option<Instant>,
    deadline: Instant,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.server.addr)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    /// An allocation on `server`, the first Allocate request due at `now`; it fails if not
    /// allocated by `now + timeout`. Transaction ids come from `seed`.
    ///
    /// # Errors
    /// [`TurnError::CredentialsTooLong`].
    pub fn new(
        server: TurnServer,
        seed: u64,
        now: Instant,
        timeout: Duration,
    ) -> Result<Self, TurnError> {
        if server.username.len() > MAX_CREDENTIAL_LEN || server.password.len() > MAX_CREDENTIAL_LEN
        {
            return Err(TurnError::CredentialsTooLong);
        }
        let mut client = Self {
            server,
            state: TurnState::Allocating,
            rng: fastrand::Rng::with_seed(seed),
            realm: None,
            nonce: None,
            key: None,
            auth_retries: 0,
            pending: None,
            queued: VecDeque::new(),
            permissions: Vec::new(),
            refresh_at: None,
            deadline: now + timeout,
        };
        client.start(Kind::Allocate, now);
        Ok(client)
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.server.addr
    }

    /// Where the allocation stands.
    pub fn state(&self) -> TurnState {
        self.state
    }

    /// The relayed address once allocated.
    pub fn relay(&self) -> Option<SocketAddr> {
        match self.state {
            TurnState::Allocated(relay) => Some(relay),
            _ => None,
        }
    }

    /// Asks for a permission for `ip` (a remote candidate's IP) unless there is one or it is
    /// requested. Returns false if [`MAX_PERMISSIONS`] IPs have one already.
    pub fn ensure_permission(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.permissions.iter().any(|(p, _)| *p == ip) {
            return true;
        }
        if self.permissions.len() >= MAX_PERMISSIONS || self.queued.len() >= MAX_QUEUED_REQUESTS {
            return false;
        }
        self.permissions.push((ip, None));
        if self.state != TurnState::Failed {
            self.queued.push_back(Kind::Permission(ip));
            self.start_next(now);
        }
        true
    }

    /// A Send indication carrying `payload` to `peer` through the relay (RFC 8656 §11.3).
    pub fn send_indication(&mut self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let txid = self.txid();
        let attrs = [
            (ATTR_XOR_PEER_ADDRESS, xor_address(peer, &txid)),
            (ATTR_DATA, payload.to_vec()),
        ];
        encode(SEND_INDICATION, &txid, &attrs, None)
    }

    /// The next datagram to send to the server at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.start_next(now);
        let p = self.pending.as_mut()?;
        if p.sends >= STUN_MAX_REQUESTS || p.next_send > now {
            return None;
        }
        p.sends += 1;
        p.next_send = now + p.rto;
        p.rto = (p.rto * 2).min(STUN_MAX_RTO);
        Some(p.message.clone())
    }

    /// When [`Self::handle_timeout`] or [`Self::poll_transmit`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == TurnState::Failed {
            return None;
        }
        let mut next = None::<Instant>;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(p) = &self.pending {
            // The next retransmission, or (after the last one) when it is given up.
            consider(p.next_send);
        } else {
            if let Some(t) = self.refresh_at {
                consider(t);
            }
            for (_, t) in &self.permissions {
                if let Some(t) = t {
                    consider(*t);
                }
            }
        }
        if self.state == TurnState::Allocating {
            consider(self.deadline);
        }
        next
    }

    /// Gives up on what has timed out and schedules refreshes; returns the failure if the
    /// allocation failed now.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TurnError> {
        if self.state == TurnState::Failed {
            return None;
        }
        if self.state == TurnState::Allocating && now >= self.deadline {
            return Some(self.fail());
        }
        if let Some(p) = &self.pending
            && p.sends >= STUN_MAX_REQUESTS
            && now >= p.next_send
        {
            let kind = p.kind;
            self.pending = None;
            match kind {
                Kind::Allocate | Kind::Refresh => return Some(self.fail()),
                Kind::Permission(ip) => self.permissions.retain(|(p, _)| *p != ip),
            }
        }
        if let Some(t) = self.refresh_at
            && now >= t
            && !self.queued.contains(&Kind::Refresh)
        {
            self.refresh_at = None;
            self.queued.push_back(Kind::Refresh);
        }
        for (ip, t) in &mut self.permissions {
            if t.is_some_and(|t| now >= t) && self.queued.len() < MAX_QUEUED_REQUESTS {
                *t = None;
                self.queued.push_back(Kind::Permission(*ip));
            }
        }
        self.start_next(now);
        None
    }

    /// Claims a datagram from the server: a response to our transaction (matched by
    /// transaction id and source) or a Data indication. `None` for anything else, which is not
    /// consumed.
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        buf: &[u8],
        now: Instant,
    ) -> Option<TurnEvent> {
        if source != self.server.addr {
            return None;
        }
        let (kind, txid) = peek(buf)?;
        if kind == DATA_INDICATION {
            let Ok(attrs) = parse_attributes(buf) else {
                return Some(TurnEvent::Handled);
            };
            let peer = attrs
                .iter()
                .find(|(k, _)| *k == ATTR_XOR_PEER_ADDRESS)
                .and_then(|(_, v)| parse_address(v, Some(&txid)));
            let data = attrs.iter().find(|(k, _)| *k == ATTR_DATA);
            return Some(match (peer, data) {
                (Some(peer), Some((_, data))) if self.relay().is_some() => TurnEvent::Data {
                    peer,
                    payload: data.to_vec(),
                },
                _ => TurnEvent::Handled,
            });
        }
        let p = self.pending.as_ref()?;
        if p.txid != txid {
            return if matches!(
                kind,
                ALLOCATE_SUCCESS
                    | ALLOCATE_ERROR
                    | REFRESH_SUCCESS
                    | REFRESH_ERROR
                    | PERMISSION_SUCCESS
                    | PERMISSION_ERROR
            ) {
                Some(TurnEvent::Handled)
            } else {
                None
            };
        }
        let request = p.kind;
        let Ok(attrs) = parse_attributes(buf) else {
            return Some(TurnEvent::Handled);
        };
        let get = |k: u16| attrs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v);
        let error = get(ATTR_ERROR_CODE)
            .filter(|v| v.len() >= 4)
            .map(|v| u16::from(v[2] & 0x07) * 100 + u16::from(v[3]));
        let event = match (request, kind) {
            (Kind::Allocate, ALLOCATE_SUCCESS) => {
                self.pending = None;
                let Some(relay) =
                    get(ATTR_XOR_RELAYED_ADDRESS).and_then(|v| parse_address(v, Some(&txid)))
                else {
                    self.state = TurnState::Failed;
                    return Some(TurnEvent::Failed(TurnError::Malformed(
                        "no XOR-RELAYED-ADDRESS",
                    )));
                };
                let mapped =
                    get(ATTR_XOR_MAPPED_ADDRESS).and_then(|v| parse_address(v, Some(&txid)));
                self.state = TurnState::Allocated(relay);
                self.schedule_refresh(get(ATTR_LIFETIME), now);
                TurnEvent::Allocated { relay, mapped }
            }
            (Kind::Refresh, REFRESH_SUCCESS) => {
                self.pending = None;
                self.schedule_refresh(get(ATTR_LIFETIME), now);
                TurnEvent::Handled
            }
            (Kind::Permission(ip), PERMISSION_SUCCESS) => {
                self.pending = None;
                for (p, t) in &mut self.permissions {
                    if *p == ip {
                        *t = Some(now + PERMISSION_REFRESH);
                    }
                }
                TurnEvent::Handled
            }
            (_, ALLOCATE_ERROR | REFRESH_ERROR | PERMISSION_ERROR) => {
                let code = error.unwrap_or(0);
                self.pending = None;
                if code == 401 || code == 438 {
                    let first = self.key.is_none();
                    let (Some(realm), Some(nonce)) = (get(ATTR_REALM), get(ATTR_NONCE)) else {
                        return Some(self.fail_with(TurnError::Malformed("401 without realm")));
                    };
                    if realm.len() > MAX_CREDENTIAL_LEN || nonce.len() > MAX_CREDENTIAL_LEN {
                        return Some(self.fail_with(TurnError::CredentialsTooLong));
                    }
                    self.auth_retries += 1;
                    if (code == 401 && !first) || self.auth_retries > MAX_AUTH_RETRIES {
                        if matches!(request, Kind::Permission(_)) {
                            self.permissions
                                .retain(|(p, _)| Kind::Permission(*p) != request);
                            return Some(TurnEvent::PermissionFailed {
                                ip: peer_ip(request),
                                code,
                            });
                        }
                        return Some(self.fail_with(TurnError::Unauthorized));
                    }
                    self.realm = Some(realm.to_vec());
                    self.nonce = Some(nonce.to_vec());
                    self.key = Some(long_term_key(
                        &self.server.username,
                        realm,
                        &self.server.password,
                    ));
                    self.queued.push_front(request);
                    self.start_next(now);
                    // Not a success: the retry counter keeps counting.
                    return Some(TurnEvent::Handled);
                } else {
                    match request {
                        Kind::Permission(ip) => {
                            self.permissions.retain(|(p, _)| *p != ip);
                            TurnEvent::PermissionFailed { ip, code }
                        }
                        _ => self.fail_with(TurnError::Rejected(code)),
                    }
                }
            }
            _ => TurnEvent::Handled,
        };
        if matches!(event, TurnEvent::Handled | TurnEvent::Allocated { .. }) {
            self.auth_retries = 0;
        }
        Some(event)
    }

    fn fail(&mut self) -> TurnError {
        match self.fail_with(TurnError::Timeout) {
            TurnEvent::Failed(e) => e,
            _ => TurnError::Timeout,
        }
    }

    fn fail_with(&mut self, e: TurnError) -> TurnEvent {
        self.state = TurnState::Failed;
        self.pending = None;
        self.queued.clear();
        self.refresh_at = None;
        TurnEvent::Failed(e)
    }

    fn schedule_refresh(&mut self, lifetime: Option<&[u8]>, now: Instant) {
        let secs = lifetime
            .and_then(|v| v.get(..4))
            .map_or(600, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        let lifetime = Duration::from_secs(u64::from(secs));
        let wait = if lifetime > REFRESH_MARGIN * 2 {
            lifetime - REFRESH_MARGIN
        } else {
            lifetime / 2
        };
        self.refresh_at = Some(now + wait);
    }

    fn txid(&mut self) -> TransactionId {
        let mut txid = [0u8; 12];
        self.rng.fill(&mut txid);
        txid
    }

    fn start(&mut self, kind: Kind, now: Instant) {
        self.queued.push_back(kind);
        self.start_next(now);
    }

    /// Starts the next queued request if none is in flight (permissions wait for the
    /// allocation).
    fn start_next(&mut self, now: Instant) {
        if self.pending.is_some() || self.state == TurnState::Failed {
            return;
        }
        let ready = |k: &Kind| match k {
            Kind::Allocate => true,
            _ => matches!(self.state, TurnState::Allocated(_)),
        };
        let Some(pos) = self.queued.iter().position(ready) else {
            return;
        };
        let Some(kind) = self.queued.remove(pos) else {
            return;
        };
        let txid = self.txid();
        let mut attrs = Vec::with_capacity(5);
        let method = match kind {
            Kind::Allocate => {
                attrs.push((ATTR_REQUESTED_TRANSPORT, vec![TRANSPORT_UDP, 0, 0, 0]));
                ALLOCATE_REQUEST
            }
            Kind::Refresh => REFRESH_REQUEST,
            Kind::Permission(ip) => {
                attrs.push((ATTR_XOR_PEER_ADDRESS, xor_address((ip, 0).into(), &txid)));
                PERMISSION_REQUEST
            }
        };
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            attrs.push((ATTR_USERNAME, self.server.username.as_bytes().to_vec()));
            attrs.push((ATTR_REALM, realm.clone()));
            attrs.push((ATTR_NONCE, nonce.clone()));
        }
        let message = encode(method, &txid, &attrs, self.key.as_ref().map(|k| &k[..]));
        self.pending = Some(Pending {
            kind,
            txid,
            message,
            sends: 0,
            next_send: now,
            rto: STUN_INITIAL_RTO,
        });
    }
}

fn peer_ip(kind: Kind) -> IpAddr {
    match kind {
        Kind::Permission(ip) => ip,
        _ => IpAddr::from([0, 0, 0, 0]),
    }
}

/// The long-term credential key, RFC 8489 §9.2.2: MD5(username ":" realm ":" password)
/// (without SASLprep).
fn long_term_key(username: &str, realm: &[u8], password: &str) -> [u8; 16] {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm);
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// A STUN message with `attrs` (padded) and, with `key`, MESSAGE-INTEGRITY (RFC 8489 §14.5).
fn encode(
    kind: u16,
    txid: &TransactionId,
    attrs: &[(u16, Vec<u8>)],
    key: Option<&[u8]>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&kind.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    buf.extend_from_slice(txid);
    for (k, v) in attrs {
        buf.extend_from_slice(&k.to_be_bytes());
        // Values are bounded by the callers (credentials ≤ 763, payloads ≤ a datagram).
        buf.extend_from_slice(&(v.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        buf.extend_from_slice(v);
        buf.resize(buf.len().next_multiple_of(4), 0);
    }
    if let Some(key) = key {
        // The length covers MESSAGE-INTEGRITY (24 bytes) while hashing up to it.
        let len = buf.len() - HEADER_LEN + 24;
        set_len(&mut buf, len);
        let hmac_key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let tag = aws_lc_rs::hmac::sign(&hmac_key, &buf);
        buf.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
        buf.extend_from_slice(&20u16.to_be_bytes());
        buf.extend_from_slice(tag.as_ref());
    } else {
        let len = buf.len() - HEADER_LEN;
        set_len(&mut buf, len);
    }
    buf
}

fn set_len(buf: &mut [u8], len: usize) {
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    buf[2..4].copy_from_slice(&len.to_be_bytes());
}

/// An XOR-PEER-ADDRESS / XOR-MAPPED-ADDRESS value (RFC 8489 §14.2).
fn xor_address(addr: SocketAddr, txid: &TransactionId) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ u16::from_be_bytes([cookie[0], cookie[1]]);
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(0x01);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(cookie).map(|(o, c)| o ^ c));
        }
        IpAddr::V6(ip) => {
            v.push(0x02);
            v.extend_from_slice(&port.to_be_bytes());
            let mask = cookie.iter().chain(txid.iter());
            v.extend(ip.octets().iter().zip(mask).map(|(o, m)| o ^ m));
        }
    }
    v
}

/// The attributes of a STUN message, at most [`MAX_ATTRIBUTES`].
fn parse_attributes(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, TurnError> {
    let truncated = TurnError::Malformed("truncated");
    let len = usize::from(u16::from_be_bytes([
        *buf.get(2).ok_or(truncated.clone())?,
        *buf.get(3).ok_or(truncated.clone())?,
    ]));
    let mut rest = buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(truncated.clone())?;
    let mut attrs = Vec::new();
    while !rest.is_empty() {
        if attrs.len() >= MAX_ATTRIBUTES {
            return Err(TurnError::Malformed("too many attributes"));
        }
        let header = rest.get(..4).ok_or(truncated.clone())?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let value_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = rest.get(4..4 + value_len).ok_or(truncated.clone())?;
        attrs.push((kind, value));
        let padded = (4 + value_len + 3) & !3;
        rest = rest.get(padded..).ok_or(truncated.clone())?;
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn server() -> TurnServer {
        TurnServer {
            addr: "127.0.0.1:3478".parse().expect("addr"),
            username: "u".to_owned(),
            password: "p".to_owned(),
        }
    }

    /// RFC 5769 §2.4: long-term key of "<U+30DE><U+30C8><U+30EA><U+30C3><U+30AF><U+30B9>" /
    /// realm "example.org" / "TheMatrIX" is MD5 of the SASLprepped string; ASCII here.
    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        let key = long_term_key("user", b"realm", "pass");
        // md5("user:realm:pass")
        assert_eq!(
            key,
            [
                0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb, 0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc,
                0x40, 0xeb
            ]
        );
    }

    #[test]
    fn send_indication_round_trips_through_the_parser() {
        let now = Instant::now();
        let mut c = TurnClient::new(server(), 1, now, Duration::from_secs(5)).expect("client");
        let peer: SocketAddr = "10.1.2.3:4567".parse().expect("addr");
        let msg = c.send_indication(peer, b"hello");
        let (kind, txid) = peek(&msg).expect("stun");
        assert_eq!(kind, SEND_INDICATION);
        let attrs = parse_attributes(&msg).expect("parses");
        let p = attrs
            .iter()
            .find(|(k, _)| *k == ATTR_XOR_PEER_ADDRESS)
            .and_then(|(_, v)| parse_address(v, Some(&txid)));
        assert_eq!(p, Some(peer));
        assert!(attrs.iter().any(|(k, v)| *k == ATTR_DATA && *v == b"hello"));
    }

    #[test]
    fn first_allocate_is_unauthenticated_and_retransmitted() {
        let now = Instant::now();
        let mut c = TurnClient::new(server(), 1, now, Duration::from_secs(5)).expect("client");
        let first = c.poll_transmit(now).expect("allocate");
        assert_eq!(peek(&first).map(|(k, _)| k), Some(ALLOCATE_REQUEST));
        assert!(c.poll_transmit(now).is_none());
        let again = c.poll_transmit(now + STUN_INITIAL_RTO).expect("retransmit");
        assert_eq!(first, again);
    }

    /// An error response to `request` with ERROR-CODE `code`, REALM and NONCE.
    fn auth_error(request: &[u8], code: u16, nonce: &[u8]) -> Vec<u8> {
        let (kind, txid) = peek(request).expect("stun");
        let error = (kind | 0x0110).to_be_bytes();
        let attrs = [
            (
                ATTR_ERROR_CODE,
                vec![0, 0, (code / 100) as u8, (code % 100) as u8],
            ),
            (ATTR_REALM, b"ringcast".to_vec()),
            (ATTR_NONCE, nonce.to_vec()),
        ];
        encode(u16::from_be_bytes(error), &txid, &attrs, None)
    }

    #[test]
    fn a_401_gets_one_authenticated_retry_and_stale_nonces_are_bounded() {
        let now = Instant::now();
        let mut c = TurnClient::new(server(), 1, now, Duration::from_secs(5)).expect("client");
        let first = c.poll_transmit(now).expect("allocate");
        let ev = c.handle_datagram(server().addr, &auth_error(&first, 401, b"n1"), now);
        assert_eq!(ev, Some(TurnEvent::Handled));
        let retry = c.poll_transmit(now).expect("authenticated allocate");
        let attrs = parse_attributes(&retry).expect("parses");
        assert!(attrs.iter().any(|(k, v)| *k == ATTR_USERNAME && *v == b"u"));
        assert!(attrs.iter().any(|(k, v)| *k == ATTR_NONCE && *v == b"n1"));
        // MESSAGE-INTEGRITY last, over the message up to it with the length including it.
        let (k, mi) = attrs.last().expect("attrs");
        assert_eq!(*k, ATTR_MESSAGE_INTEGRITY);
        let key = long_term_key("u", b"ringcast", "p");
        let hmac_key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
        let signed = &retry[..retry.len() - 24];
        assert!(aws_lc_rs::hmac::verify(&hmac_key, signed, mi).is_ok());
        // Stale nonces: retried with the new nonce, a bounded number of times.
        let mut request = retry;
        for i in 0..MAX_AUTH_RETRIES {
            let nonce = format!("stale{i}");
            let ev = c.handle_datagram(
                server().addr,
                &auth_error(&request, 438, nonce.as_bytes()),
                now,
            );
            if i + 1 < MAX_AUTH_RETRIES {
                assert_eq!(ev, Some(TurnEvent::Handled));
                request = c.poll_transmit(now).expect("retry");
                let attrs = parse_attributes(&request).expect("parses");
                assert!(
                    attrs
                        .iter()
                        .any(|(k, v)| *k == ATTR_NONCE && *v == nonce.as_bytes())
                );
            } else {
                assert_eq!(ev, Some(TurnEvent::Failed(TurnError::Unauthorized)));
            }
        }
        assert_eq!(c.state(), TurnState::Failed);
        assert!(c.poll_transmit(now).is_none());
    }

    #[test]
    fn a_second_401_means_wrong_credentials() {
        let now = Instant::now();
        let mut c = TurnClient::new(server(), 1, now, Duration::from_secs(5)).expect("client");
        let first = c.poll_transmit(now).expect("allocate");
        c.handle_datagram(server().addr, &auth_error(&first, 401, b"n1"), now);
        let retry = c.poll_transmit(now).expect("retry");
        let ev = c.handle_datagram(server().addr, &auth_error(&retry, 401, b"n2"), now);
        assert_eq!(ev, Some(TurnEvent::Failed(TurnError::Unauthorized)));
    }

    /// A success response to `request` with `attrs`.
    fn success(request: &[u8], attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let (kind, txid) = peek(request).expect("stun");
        encode(kind | 0x0100, &txid, attrs, None)
    }

    #[test]
    fn allocation_is_refreshed_before_its_lifetime_and_permissions_follow() {
        let t0 = Instant::now();
        let mut c = TurnClient::new(server(), 1, t0, Duration::from_secs(5)).expect("client");
        let first = c.poll_transmit(t0).expect("allocate");
        c.handle_datagram(server().addr, &auth_error(&first, 401, b"n1"), t0);
        let alloc = c.poll_transmit(t0).expect("authenticated allocate");
        let (_, txid) = peek(&alloc).expect("stun");
        let relay: SocketAddr = "192.0.2.7:50000".parse().expect("addr");
        let ok = success(
            &alloc,
            &[
                (ATTR_XOR_RELAYED_ADDRESS, xor_address(relay, &txid)),
                (ATTR_LIFETIME, 300u32.to_be_bytes().to_vec()),
            ],
        );
        let ev = c.handle_datagram(server().addr, &ok, t0);
        assert_eq!(
            ev,
            Some(TurnEvent::Allocated {
                relay,
                mapped: None
            })
        );
        assert_eq!(c.relay(), Some(relay));
        // A permission for a peer goes out at once (authenticated).
        let peer_ip: IpAddr = "198.51.100.1".parse().expect("ip");
        assert!(c.ensure_permission(peer_ip, t0));
        let perm = c.poll_transmit(t0).expect("create permission");
        assert_eq!(peek(&perm).map(|(k, _)| k), Some(PERMISSION_REQUEST));
        assert_eq!(
            c.handle_datagram(server().addr, &success(&perm, &[]), t0),
            Some(TurnEvent::Handled)
        );
        // Refresh 60 s before the 300 s lifetime ends, and not earlier.
        let due = t0 + Duration::from_secs(240);
        assert_eq!(c.poll_timeout(), Some(due));
        c.handle_timeout(due - Duration::from_secs(1));
        assert!(c.poll_transmit(due - Duration::from_secs(1)).is_none());
        assert!(c.handle_timeout(due).is_none());
        let refresh = c.poll_transmit(due).expect("refresh");
        assert_eq!(peek(&refresh).map(|(k, _)| k), Some(REFRESH_REQUEST));
        assert_eq!(
            c.handle_datagram(server().addr, &success(&refresh, &[]), due),
            Some(TurnEvent::Handled)
        );
        // The permission (granted at t0) is refreshed after PERMISSION_REFRESH too.
        let perm_due = t0 + PERMISSION_REFRESH;
        c.handle_timeout(perm_due);
        let again = c.poll_transmit(perm_due).expect("permission refresh");
        assert_eq!(peek(&again).map(|(k, _)| k), Some(PERMISSION_REQUEST));
        // A lost refresh (no answer to any retransmission) loses the relay.
        let mut now = perm_due;
        c.handle_datagram(server().addr, &success(&again, &[]), now);
        now += Duration::from_secs(600);
        c.handle_timeout(now);
        let mut failed = None;
        for _ in 0..20 {
            while c.poll_transmit(now).is_some() {}
            if let Some(e) = c.handle_timeout(now) {
                failed = Some(e);
                break;
            }
            now += STUN_MAX_RTO;
        }
        assert_eq!(failed, Some(TurnError::Timeout));
        assert_eq!(c.relay(), None);
    }

    proptest! {
        #[test]
        fn handle_datagram_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let now = Instant::now();
            let mut c = TurnClient::new(server(), 1, now, Duration::from_secs(5)).expect("client");
            let _ = c.poll_transmit(now);
            let _ = c.handle_datagram(server().addr, &bytes, now);
            let _ = parse_attributes(&bytes);
        }

        #[test]
        fn matching_txid_garbage_never_panics(
            kind in prop_oneof![Just(ALLOCATE_SUCCESS), Just(ALLOCATE_ERROR), Just(DATA_INDICATION)],
            body in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let now = Instant::now();
            let mut c = TurnClient::new(server(), 1, now, Duration::from_secs(5)).expect("client");
            let req = c.poll_transmit(now).expect("allocate");
            let mut msg = req[..HEADER_LEN].to_vec();
            msg[0..2].copy_from_slice(&kind.to_be_bytes());
            let len = body.len() & !3;
            msg.extend_from_slice(&body[..len]);
            set_len(&mut msg, len);
            let _ = c.handle_datagram(server().addr, &msg, now);
        }
    }
}
