//! The transport half of a call: what a group [`crate::Call`] and a 1:1
//! [`crate::p2p_call::P2pCall`] do alike with their one [`str0m::Rtc`] (ICE, DTLS, SRTP), apart
//! from their signaling and their media tracks ([`crate::media::track`]).
//!
//! - [`Transport`]: the `Rtc` with what we keep around it: our final DTLS flight and its
//!   resends ([`FinalFlight`]), str0m's next deadline, the close handshake after a stop, and the
//!   transport counters. A call owns one and drives it from its own `handle_input` /
//!   `poll_output`. [`Transport::receive`] takes one datagram into str0m, refused with a typed
//!   [`DatagramError`] or ending the call with a typed [`TransportEnd`]; [`Transport::poll`]
//!   gives one step of str0m's output, with our final DTLS flight kept for resending.
//! - [`opus_rtc_config`]: the str0m configuration both kinds build (RTP mode, one Opus payload
//!   type, the audio-level extension, our ICE credentials and DTLS certificate).
//! - [`TransportEnd::from_rtc_error`]: the one place that reads str0m's error text (str0m 0.25
//!   reports a certificate mismatch only as text); `tests` pin its actual message.
//!
//! - [`MediaOut`]: where the tracks write their packets during [`Transport::handle_timeout`].
//!   A connected group call takes str0m's send fast path (`DirectApi::write_rtp_into`, our
//!   str0m patch in `third_party/str0m`): each packet comes back protected at once, into a
//!   buffer recycled from an earlier send, so a frame costs no str0m timeout, no `poll_output`
//!   round and no allocation. str0m itself is then driven only when its own deadline is due or
//!   something was fed to it (a datagram, a packet on the regular path, a setup change).
//!
//! Refusing a datagram allocates nothing: reasons are enums, not strings.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, Ssrc as StrSsrc};
use str0m::{IceCreds, Rtc, RtcConfig, RtcError};

use crate::call::Transmit;
use crate::demux::{DatagramKind, classify, rtp_header};
use crate::flight::FinalFlight;
use crate::media::track::Replayed;

/// One UDP datagram as it arrived: where from, on which local address, its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Where it came from.
    pub source: SocketAddr,
    /// The local address it arrived on.
    pub destination: SocketAddr,
    /// Its bytes.
    pub contents: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// A datagram from `source` that arrived on `destination`.
    pub fn new(source: SocketAddr, destination: SocketAddr, contents: &'a [u8]) -> Self {
        Self {
            source,
            destination,
            contents,
        }
    }
}

/// What part of str0m refused a datagram or failed, without its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcErrorKind {
    /// The DTLS layer.
    Dtls,
    /// SRTP / RTP.
    Rtp,
    /// The ICE agent.
    Ice,
    /// Packet parsing.
    Net,
    /// An I/O error inside str0m.
    Io,
    /// Anything else str0m reports.
    Other,
}

impl RtcErrorKind {
    fn of(e: &RtcError) -> Self {
        match e {
            RtcError::Dtls(_) => Self::Dtls,
            RtcError::Rtp(_) | RtcError::Packet(..) => Self::Rtp,
            RtcError::Ice(_) => Self::Ice,
            RtcError::Net(_) => Self::Net,
            RtcError::Io(_) => Self::Io,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for RtcErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dtls => "dtls",
            Self::Rtp => "rtp",
            Self::Ice => "ice",
            Self::Net => "packet parsing",
            Self::Io => "io",
            Self::Other => "str0m",
        })
    }
}

/// Why a call refused a datagram (the call goes on; the datagram is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// STUN that failed our credential or MESSAGE-INTEGRITY check.
    StunUnauthenticated,
    /// str0m refused it.
    Refused(RtcErrorKind),
    /// An SRTCP datagram above [`MAX_RTCP_DATAGRAM`] bytes.
    RtcpOversized,
    /// An SRTCP datagram beyond the call's budget of [`RTCP_BUDGET_PER_SEC`].
    RtcpOverBudget,
    /// An authenticated SRTCP datagram whose SRTCP index was already received from its sender
    /// SSRC, or is older than the replay window: a replay (str0m drops it unread).
    RtcpReplayed,
    /// RTP, or RTCP from a sender, that claims one of our own SSRCs.
    OwnSsrc,
    /// A DTLS datagram, once connected, beyond [`DTLS_BUDGET_PER_SEC`].
    DtlsOverBudget,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StunUnauthenticated => f.write_str("stun failed credential or integrity checks"),
            Self::Refused(kind) => write!(f, "refused by {kind}"),
            Self::RtcpOversized => write!(f, "srtcp datagram above {MAX_RTCP_DATAGRAM} bytes"),
            Self::RtcpOverBudget => {
                write!(f, "srtcp beyond {RTCP_BUDGET_PER_SEC} datagrams per second")
            }
            Self::RtcpReplayed => f.write_str("replayed srtcp packet"),
            Self::OwnSsrc => f.write_str("packet claims one of our own ssrcs"),
            Self::DtlsOverBudget => {
                write!(f, "dtls beyond {DTLS_BUDGET_PER_SEC} datagrams per second")
            }
        }
    }
}

/// Largest SRTCP datagram a call hands to str0m. A peer's RTCP compound packets stay below the
/// path MTU (str0m's own at most [`str0m::DATAGRAM_MTU_TARGET_MAX`], 1,500 bytes); bigger ones
/// are refused unread, so one datagram carries at most ~60 report blocks or ~370 NACK items.
pub const MAX_RTCP_DATAGRAM: usize = str0m::DATAGRAM_MTU_TARGET_MAX;

/// SRTCP datagrams per second a call hands to str0m (a token bucket of this many, refilled
/// continuously); more are refused unread and counted. Telegram's SFU sends a receiver report
/// per stream every second or so, and NACK, PLI and FIR for video well below this. It bounds
/// what any RTCP content (NACK storms, PLI and FIR floods, report blocks) can cost a call:
/// at most this many SRTCP authentications and parses per second.
pub const RTCP_BUDGET_PER_SEC: u32 = 100;

/// DTLS datagrams per second a connected call hands to str0m (a token bucket of this many);
/// more are refused unread and counted. Once connected, a peer sends DTLS only to repeat its
/// last handshake flight (when ours was lost), to close, and to carry the SCTP of a data
/// channel (a call with incoming video: the association's handshake, a constraints message
/// per change, acknowledgements and a heartbeat; a few records a second at most); str0m
/// ignores, without an error,
/// records it cannot use (garbage, bad lengths, forged alerts, records that fail decryption).
pub const DTLS_BUDGET_PER_SEC: u32 = 20;

/// How a DTLS association ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsEnd {
    /// The peer closed it (close_notify).
    ClosedByPeer,
    /// The handshake failed or a fatal alert arrived.
    Failed,
}

impl fmt::Display for DtlsEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClosedByPeer => "closed by peer",
            Self::Failed => "handshake failed or fatal alert",
        })
    }
}

/// Why the transport cannot go on; each call maps it to its own end reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportEnd {
    /// DTLS ended.
    Dtls(DtlsEnd),
    /// The peer's certificate does not match the signaled fingerprint.
    FingerprintMismatch,
    /// str0m failed otherwise.
    Failed(RtcErrorKind),
}

impl TransportEnd {
    /// Classifies a fatal str0m error. The only place that reads str0m's text: str0m 0.25
    /// reports a peer certificate that does not match the remote fingerprint as
    /// `RemoteSdp("remote fingerprint no match")` (lib.rs, `DtlsOutput::PeerCert`), and an
    /// unusable hash function as `RemoteSdp("unsupported fingerprint hash ...")`. The test
    /// `tests::call::a_wrong_fingerprint_ends_the_call_typed` fails if that wording changes.
    pub fn from_rtc_error(e: &RtcError) -> Self {
        tracing::debug!("transport failed: {e}");
        match e {
            RtcError::Dtls(_) => Self::Dtls(DtlsEnd::Failed),
            RtcError::RemoteSdp(m) if m.contains("fingerprint") => Self::FingerprintMismatch,
            other => Self::Failed(RtcErrorKind::of(other)),
        }
    }
}

/// A datagram a call refused, counted in its stats; the call goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Not STUN, DTLS, RTP or RTCP (the parser's words).
    #[error("malformed datagram: {0}")]
    Malformed(String),
    /// Refused (bad STUN integrity, refused by str0m, ...).
    #[error("datagram rejected: {0}")]
    Rejected(RejectReason),
    /// An SRTP packet whose sequence number was already received, or is older than the replay
    /// window (see [`crate::media::track::IncomingStreams`]).
    #[error("replayed rtp packet: ssrc {} seq {}", .0.ssrc, .0.seq)]
    Replayed(Replayed),
}

/// A datagram the transport did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveError {
    /// Refused; the call goes on.
    Refused(DatagramError),
    /// The transport is dead; the call must end.
    Fatal(TransportEnd),
}

impl From<DatagramError> for ReceiveError {
    fn from(e: DatagramError) -> Self {
        Self::Refused(e)
    }
}

/// Counters of a [`Transport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// Datagrams str0m accepted.
    pub datagrams_received: u64,
    /// Datagrams that did not parse.
    pub dropped_malformed: u64,
    /// Datagrams refused ([`RejectReason`]).
    pub dropped_rejected: u64,
    /// DTLS datagrams of our final flight resent ([`crate::flight`]).
    pub dtls_flight_resent: u64,
    /// SRTCP datagrams above [`MAX_RTCP_DATAGRAM`] (also in `dropped_rejected`).
    pub dropped_rtcp_oversized: u64,
    /// SRTCP datagrams beyond [`RTCP_BUDGET_PER_SEC`] (also in `dropped_rejected`).
    pub dropped_rtcp_over_budget: u64,
    /// SRTCP datagrams str0m authenticated and dropped as replays (also in `dropped_rejected`).
    pub dropped_rtcp_replayed: u64,
    /// DTLS datagrams received once connected (within [`DTLS_BUDGET_PER_SEC`]), handed to
    /// str0m, which ignores what it cannot use (also in `datagrams_received`).
    pub dtls_received_connected: u64,
    /// DTLS datagrams beyond [`DTLS_BUDGET_PER_SEC`] once connected (also in
    /// `dropped_rejected`).
    pub dropped_dtls_over_budget: u64,
}

/// A token bucket of `per_sec` datagrams, refilled continuously: the budgets behind
/// [`RTCP_BUDGET_PER_SEC`] and [`DTLS_BUDGET_PER_SEC`].
#[derive(Debug, Clone, Copy)]
struct Budget {
    per_sec: u32,
    /// Tokens left, in millitokens (one datagram = 1,000).
    milli: u64,
    /// When the bucket was last refilled.
    at: Option<Instant>,
}

impl Budget {
    /// A full bucket of `per_sec`.
    fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            milli: u64::from(per_sec) * 1_000,
            at: None,
        }
    }

    /// Takes one datagram's token at `now`; false if the bucket is empty.
    fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            // `per_sec` tokens per second = that many millitokens per whole millisecond; the
            // fraction of a millisecond is carried over.
            let ms = now.saturating_duration_since(at).as_millis() as u64;
            if ms > 0 {
                let refill = ms.saturating_mul(u64::from(self.per_sec));
                let full = u64::from(self.per_sec) * 1_000;
                self.milli = self.milli.saturating_add(refill).min(full);
                self.at = Some(at + Duration::from_millis(ms));
            }
        } else {
            self.at = Some(now);
        }
        if self.milli < 1_000 {
            return false;
        }
        self.milli -= 1_000;
        true
    }
}

/// One call's [`Rtc`] and what a call keeps around it. See the [module docs](self).
#[derive(Debug)]
pub struct Transport {
    rtc: Rtc,
    /// We are the DTLS server: our final flight is kept and resent until the peer proves it has
    /// the keys.
    dtls_server: bool,
    final_flight: FinalFlight,
    /// Datagrams ready before str0m's own: final-flight resends and fast-path media.
    resends: VecDeque<Transmit>,
    /// Buffers for the send fast path ([`Transport::stock_buffer`]); a frame takes one and
    /// gives it back if the fast path could not use it.
    spare: Vec<Vec<u8>>,
    /// The deadline str0m last asked for.
    rtc_timeout: Option<Instant>,
    /// Something was fed to str0m since it last said "nothing until `rtc_timeout`": it must be
    /// polled (and, at a timeout, driven) before that answer holds again.
    rtc_dirty: bool,
    /// After [`Transport::close`], until str0m's closing datagrams are out.
    closing: bool,
    counters: TransportCounters,
    rtcp_budget: Budget,
    dtls_budget: Budget,
}

impl Transport {
    /// Wraps `rtc`; `dtls_server` says whether we answer the DTLS handshake (then our final
    /// flight is resent until confirmed).
    pub fn new(rtc: Rtc, dtls_server: bool) -> Self {
        Self {
            rtc,
            dtls_server,
            final_flight: FinalFlight::default(),
            resends: VecDeque::new(),
            spare: Vec::new(),
            rtc_timeout: None,
            rtc_dirty: true,
            closing: false,
            counters: TransportCounters::default(),
            rtcp_budget: Budget::new(RTCP_BUDGET_PER_SEC),
            dtls_budget: Budget::new(DTLS_BUDGET_PER_SEC),
        }
    }

    /// The str0m instance, for setup and media writes.
    pub fn rtc(&mut self) -> &mut Rtc {
        self.rtc_dirty = true;
        &mut self.rtc
    }

    /// Takes a buffer from `pool` (buffers of datagrams already sent) unless the fast path still
    /// holds one: the next packet is protected into it, so sending allocates nothing.
    pub fn stock_buffer(&mut self, pool: &mut Vec<Vec<u8>>) {
        if self.spare.is_empty()
            && let Some(buf) = pool.pop()
        {
            self.spare.push(buf);
        }
    }

    /// True once ICE and DTLS-SRTP are up.
    pub fn is_connected(&self) -> bool {
        self.rtc.is_connected()
    }

    /// The transport counters.
    pub fn counters(&self) -> TransportCounters {
        self.counters
    }

    /// The earliest instant the transport needs [`Transport::handle_timeout`]: str0m's
    /// deadline and the final flight's next resend.
    pub fn deadline(&self) -> Option<Instant> {
        [self.rtc_timeout, self.final_flight.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// DTLS-SRTP came up at `now`: as DTLS server our final flight is out, and resent until
    /// confirmed.
    pub fn on_connected(&mut self, now: Instant) {
        self.final_flight.on_connected(now);
    }

    /// The peer proved it has the SRTP keys (authenticated SRTP or SRTCP from it).
    pub fn on_confirmed(&mut self) {
        self.final_flight.on_confirmed();
    }

    /// Queues the final-flight resends due at `now`, runs `before_rtc` (the tracks write their
    /// due frames into the [`MediaOut`]), then gives str0m its timeout as `drive_rtc` says
    /// ([`Drive`]).
    ///
    /// # Errors
    /// [`TransportEnd`] if str0m failed; the call must end.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        drive_rtc: Drive,
        before_rtc: impl FnOnce(&mut MediaOut<'_>),
    ) -> Result<(), TransportEnd> {
        let resends = &mut self.resends;
        self.final_flight
            .poll_resend(now, |source, destination, contents| {
                resends.push_back(Transmit {
                    source,
                    destination,
                    contents: contents.to_vec(),
                });
            });
        self.counters.dtls_flight_resent = self.final_flight.resent();
        let fast = drive_rtc == Drive::WhenDue && self.rtc.is_connected();
        let mut out = MediaOut {
            rtc: &mut self.rtc,
            now,
            fast: fast.then_some(FastPath {
                sent: &mut self.resends,
                spare: &mut self.spare,
            }),
            queued: false,
        };
        before_rtc(&mut out);
        let queued = out.queued;
        let due = match drive_rtc {
            Drive::No => false,
            Drive::Always => true,
            Drive::WhenDue => queued || self.rtc_dirty || self.rtc_timeout.is_none_or(|t| now >= t),
        };
        if due {
            self.rtc_dirty = true;
            self.rtc
                .handle_input(str0m::Input::Timeout(now))
                .map_err(|e| TransportEnd::from_rtc_error(&e))?;
        }
        Ok(())
    }

    /// Hands one datagram to str0m, after `gate` (run with the parsed datagram's `Rtc`: replay
    /// and SSRC checks, STUN authentication) let it through. Counts what it accepts and refuses
    /// (replays are counted by the track that found them).
    ///
    /// # Errors
    /// See [`ReceiveError`]; on [`ReceiveError::Fatal`] the call must end.
    pub fn receive(
        &mut self,
        now: Instant,
        datagram: Datagram<'_>,
        gate: impl FnOnce(&mut Rtc) -> Result<(), ReceiveError>,
    ) -> Result<(), ReceiveError> {
        let contents = datagram.contents;
        self.rtc_dirty = true;
        let is_rtcp = classify(contents) == DatagramKind::Rtp && rtp_header(contents).is_none();
        let is_dtls = classify(contents) == DatagramKind::Dtls;
        let replayed_before = self.counters.dropped_rtcp_replayed;
        let result = parse(datagram).and_then(|datagram| {
            gate(&mut self.rtc)?;
            if is_rtcp {
                self.admit_rtcp(now, contents)?;
            }
            let dtls_connected = is_dtls && self.rtc.is_connected();
            if dtls_connected {
                if !self.dtls_budget.take(now) {
                    self.counters.dropped_dtls_over_budget += 1;
                    return Err(DatagramError::Rejected(RejectReason::DtlsOverBudget).into());
                }
                self.counters.dtls_received_connected += 1;
            }
            receive(&mut self.rtc, now, datagram)?;
            if is_rtcp {
                // str0m authenticates SRTCP, then drops a replay unread (our patch to it,
                // `third_party/README.md`): refuse and count it here instead of as received.
                self.counters.dropped_rtcp_replayed = self.rtc.direct_api().srtcp_replayed();
                if self.counters.dropped_rtcp_replayed > replayed_before {
                    return Err(DatagramError::Rejected(RejectReason::RtcpReplayed).into());
                }
            }
            Ok(())
        });
        match &result {
            Ok(()) => {
                self.counters.datagrams_received += 1;
                if classify(contents) == DatagramKind::Dtls {
                    self.final_flight.on_received();
                }
            }
            Err(ReceiveError::Refused(DatagramError::Malformed(_))) => {
                self.counters.dropped_malformed += 1;
            }
            Err(ReceiveError::Refused(DatagramError::Rejected(_))) => {
                self.counters.dropped_rejected += 1;
            }
            Err(_) => {}
        }
        result
    }

    /// The SRTCP gate before str0m: refuses (and counts) a datagram above
    /// [`MAX_RTCP_DATAGRAM`] or beyond [`RTCP_BUDGET_PER_SEC`].
    fn admit_rtcp(&mut self, now: Instant, contents: &[u8]) -> Result<(), ReceiveError> {
        if contents.len() > MAX_RTCP_DATAGRAM {
            self.counters.dropped_rtcp_oversized += 1;
            return Err(DatagramError::Rejected(RejectReason::RtcpOversized).into());
        }
        if !self.rtcp_budget.take(now) {
            self.counters.dropped_rtcp_over_budget += 1;
            return Err(DatagramError::Rejected(RejectReason::RtcpOverBudget).into());
        }
        Ok(())
    }

    /// The next datagram or str0m event: final-flight resends first, then str0m's output.
    pub fn poll(&mut self) -> Polled {
        if let Some(t) = self.resends.pop_front() {
            return Polled::Transmit(t);
        }
        if !self.rtc_dirty
            && let Some(t) = self.rtc_timeout
        {
            // Nothing fed to str0m since it last had nothing to say.
            return Polled::Timeout(t);
        }
        let flight = self.dtls_server.then_some(&mut self.final_flight);
        let polled = poll(&mut self.rtc, flight);
        if let Polled::Timeout(t) = polled {
            self.rtc_timeout = Some(t);
            self.rtc_dirty = false;
        }
        polled
    }

    /// Starts closing: RTCP BYE and DTLS close_notify tell the peer at once that we left (it
    /// otherwise notices only when its consent checks time out). `handshake_done` false (the
    /// remote parameters were never applied) just drops the association.
    pub fn close(&mut self, handshake_done: bool) {
        self.resends.clear();
        self.rtc_dirty = true;
        if handshake_done && self.rtc.close().is_ok() {
            self.closing = true;
        } else {
            self.rtc.disconnect();
        }
    }

    /// After [`Transport::close`]: the next closing datagram, until there are none left.
    pub fn poll_closing(&mut self) -> Option<Transmit> {
        while self.closing {
            match poll(&mut self.rtc, None) {
                Polled::Transmit(t) => return Some(t),
                Polled::Event(_) => {}
                Polled::Timeout(_) | Polled::Failed(_) => {
                    self.closing = false;
                    self.rtc.disconnect();
                }
            }
        }
        None
    }
}

/// The transaction id of `contents` if it is an ICE STUN message from the peer whose
/// credentials are `remote`: a Binding request naming `local.ufrag:remote.ufrag` and signed
/// with our password, or a Binding response signed with the peer's; `None` otherwise. str0m
/// ignores STUN that fails these checks without telling us; a call checks first, so such STUN
/// is refused and counted and never counts as hearing from the peer (consent freshness, RFC
/// 7675), and the id lets it count repeats ([`crate::replay::RecentTransactions`]).
pub fn authentic_stun_id(
    contents: &[u8],
    local: &IceCreds,
    remote: &IceCreds,
    crypto: &CryptoProvider,
) -> Option<[u8; 12]> {
    let msg = str0m::ice::StunMessage::parse(contents).ok()?;
    let hmac = |key: &[u8], parts: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(key, parts);
    let authentic = if msg.is_binding_request() {
        msg.split_username() == Some((local.ufrag.as_str(), remote.ufrag.as_str()))
            && msg.verify(local.pass.as_bytes(), hmac)
    } else if msg.is_successful_binding_response() || msg.is_failed_binding_response() {
        msg.verify(remote.pass.as_bytes(), hmac)
    } else {
        false
    };
    if authentic {
        crate::replay::RecentTransactions::id_of(contents)
    } else {
        None
    }
}

/// How [`Transport::handle_timeout`] drives str0m.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// Not at all (the remote parameters are not applied yet).
    No,
    /// At every call (the regular path: packets wait in str0m's queue for its timeout).
    Always,
    /// Only when str0m's own deadline is due or something was fed to it; packets of a
    /// connected call take the send fast path ([`MediaOut`]).
    WhenDue,
}

/// The fast path's share of a [`Transport`]: where its datagrams go and its buffers.
struct FastPath<'a> {
    sent: &'a mut VecDeque<Transmit>,
    spare: &'a mut Vec<Vec<u8>>,
}

/// Where a track writes its packets during [`Transport::handle_timeout`]: straight out as
/// protected datagrams (the send fast path of a connected call), or into str0m's send queue,
/// which the timeout that follows drains.
pub struct MediaOut<'a> {
    rtc: &'a mut Rtc,
    now: Instant,
    fast: Option<FastPath<'a>>,
    /// A packet went into str0m's queue: str0m must be driven to send it.
    queued: bool,
}

impl fmt::Debug for MediaOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaOut")
            .field("now", &self.now)
            .field("fast", &self.fast.is_some())
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl<'a> MediaOut<'a> {
    /// Sends one RTP packet on the declared send stream `ssrc`. Returns false, sending
    /// nothing, if `rtc` has no such stream.
    pub fn write_rtp(&mut self, ssrc: StrSsrc, write: RtpWrite) -> bool {
        let write = match &mut self.fast {
            Some(fast) => {
                let mut buf = fast.spare.pop().unwrap_or_default();
                match self
                    .rtc
                    .direct_api()
                    .write_rtp_into(ssrc, write, self.now, &mut buf)
                {
                    Ok(Some(t)) => {
                        fast.sent.push_back(Transmit {
                            source: t.source,
                            destination: t.destination,
                            contents: t.contents.into(),
                        });
                        return true;
                    }
                    Ok(None) => {
                        fast.spare.push(buf);
                        self.queued = true;
                        return true;
                    }
                    Err(write) => {
                        fast.spare.push(buf);
                        write
                    }
                }
            }
            None => write,
        };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx(&ssrc) else {
            return false;
        };
        stream.write_rtp(write);
        self.queued = true;
        true
    }
}

/// The str0m configuration of a call: RTP mode (we packetize), our ICE credentials and DTLS
/// certificate, one Opus payload type `pt` (48 kHz stereo, in-band FEC, as Telegram's clients
/// announce it) and the RFC 6464 audio-level extension at `audio_level_id`, nothing else.
pub fn opus_rtc_config(
    creds: &IceCreds,
    cert: &DtlsCert,
    crypto: Option<&Arc<CryptoProvider>>,
    pt: u8,
    audio_level_id: u8,
) -> RtcConfig {
    let mut config = RtcConfig::new()
        .set_rtp_mode(true)
        .set_local_ice_credentials(creds.clone())
        .set_dtls_cert(cert.clone())
        .clear_codecs()
        .clear_extension_map()
        .set_extension(audio_level_id, Extension::AudioLevel);
    if let Some(crypto) = crypto {
        config = config.set_crypto_provider(crypto.clone());
    }
    config.codec_config().add_config(
        pt.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    config
}

/// Adds a video codec to a call's str0m configuration: `pt` for `codec` on the 90 kHz clock
/// and `rtx_pt` as its retransmission payload type (RFC 4588), so str0m answers NACKs from
/// its history on the RTX stream. H.264 is announced in packetization mode 1, Constrained
/// Baseline level 3.1 (`42e01f`), as WebRTC endpoints do.
pub fn add_video_codec(
    config: &mut RtcConfig,
    codec: crate::media::video::VideoCodec,
    pt: u8,
    rtx_pt: u8,
) {
    use crate::media::video::VideoCodec;
    let (str0m_codec, format) = match codec {
        VideoCodec::Vp8 => (Codec::Vp8, FormatParams::default()),
        VideoCodec::H264 => (
            Codec::H264,
            FormatParams {
                level_asymmetry_allowed: Some(true),
                packetization_mode: Some(1),
                profile_level_id: Some(0x42e01f),
                ..Default::default()
            },
        ),
    };
    config.codec_config().add_config(
        pt.into(),
        Some(rtx_pt.into()),
        str0m_codec,
        Frequency::NINETY_KHZ,
        None,
        format,
    );
}

/// Parses one UDP datagram for str0m.
///
/// # Errors
/// [`ReceiveError::Malformed`] if it is not STUN, DTLS, RTP or RTCP.
fn parse(datagram: Datagram<'_>) -> Result<Receive<'_>, ReceiveError> {
    Receive::new(
        Protocol::Udp,
        datagram.source,
        datagram.destination,
        datagram.contents,
    )
    .map_err(|e| DatagramError::Malformed(e.to_string()).into())
}

/// Hands one parsed datagram to str0m.
///
/// # Errors
/// [`ReceiveError::Rejected`] if a live `rtc` refused it, [`ReceiveError::Fatal`] if the
/// error left `rtc` dead.
fn receive(rtc: &mut Rtc, now: Instant, datagram: Receive<'_>) -> Result<(), ReceiveError> {
    match rtc.handle_input(str0m::Input::Receive(now, datagram)) {
        Ok(()) => Ok(()),
        Err(e) if rtc.is_alive() => {
            Err(DatagramError::Rejected(RejectReason::Refused(RtcErrorKind::of(&e))).into())
        }
        Err(e) => Err(ReceiveError::Fatal(TransportEnd::from_rtc_error(&e))),
    }
}

/// One step of str0m's output.
// str0m's `Event` is large (a received RTP packet inline); this value lives for one match and
// boxing it would allocate per received packet, so the size difference is accepted, as str0m
// accepts it for its own `Output`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Polled {
    /// A datagram to send (DTLS ones are also kept in the final flight when given one).
    Transmit(Transmit),
    /// A str0m event for the call to map.
    Event(str0m::Event),
    /// str0m has nothing more until this instant.
    Timeout(Instant),
    /// str0m failed; the call must end.
    Failed(TransportEnd),
}

/// Polls `rtc` once. `flight` is the call's final-flight keeper when it is the DTLS server.
fn poll(rtc: &mut Rtc, flight: Option<&mut FinalFlight>) -> Polled {
    match rtc.poll_output() {
        Ok(str0m::Output::Timeout(t)) => Polled::Timeout(t),
        Ok(str0m::Output::Transmit(t)) => {
            let contents: Vec<u8> = t.contents.into();
            if let Some(flight) = flight
                && classify(&contents) == DatagramKind::Dtls
            {
                flight.on_sent(t.source, t.destination, &contents);
            }
            Polled::Transmit(Transmit {
                source: t.source,
                destination: t.destination,
                contents,
            })
        }
        Ok(str0m::Output::Event(e)) => Polled::Event(e),
        Err(e) => Polled::Failed(TransportEnd::from_rtc_error(&e)),
    }
}

/// Our ICE credentials, drawn from `rng`. libwebrtc uses 4-char ufrags and 24-char passwords
/// (RFC 8445 §5.3 needs >= 4 / >= 22 ice-chars); ours are longer so ufrags stay unique across
/// thousands of calls.
pub fn random_ice_creds(rng: &mut fastrand::Rng) -> IceCreds {
    let ufrag = random_ice_chars(rng, 16);
    let pass = random_ice_chars(rng, 24);
    IceCreds { ufrag, pass }
}

/// ICE characters (RFC 8445 §5.3 `ice-char`: ALPHA / DIGIT / "+" / "/"). We use only
/// alphanumerics so the values are also safe in JSON and logs.
pub fn random_ice_chars(rng: &mut fastrand::Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.usize(..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_gives_its_bucket_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(100);
        assert_eq!(
            (0..150).filter(|_| b.take(t0)).count(),
            100,
            "a full bucket"
        );
        // 100 a second: one per 10 ms, sub-millisecond time carried over.
        assert!(!b.take(t0 + Duration::from_millis(9)));
        assert!(b.take(t0 + Duration::from_millis(10)));
        assert!(!b.take(t0 + Duration::from_millis(10)));
        assert!(!b.take(t0 + Duration::from_micros(19_500)));
        assert!(b.take(t0 + Duration::from_millis(20)));
        // A long quiet spell refills the bucket, no more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..150).filter(|_| b.take(later)).count(), 100);
    }
}
