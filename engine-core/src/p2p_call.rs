//! One 1:1 (private) call: a sans-IO state machine around one [`str0m::Rtc`], set up through
//! the end-to-end encrypted signaling of [`crate::signaling::p2p`].
//!
//! Where a group [`crate::Call`] talks to an SFU with ICE-lite, a [`P2pCall`] talks to another
//! client with full ICE on both ends. The roles follow tgcalls `InstanceV2Impl`
//! (telegram-signaling.md §4.7): the **caller** is ICE-controlling and the DTLS client, the
//! **callee** ICE-controlled and the DTLS server. ICE credentials, DTLS fingerprints and
//! candidates travel as JSON control messages ([`SignalingMessage`]) inside an
//! [`EncryptedChannel`] keyed by the Diffie-Hellman [`CallKey`]; the bytes it produces
//! ([`Output::Signaling`]) go to the messenger (`phone.sendSignalingData`), and bytes from the
//! messenger (`updatePhoneCallSignalingData`) come back in as [`Input::Signaling`].
//!
//! Sequence: the caller sends `InitialSetup` (setup `actpass`) and `Candidates` at once; the
//! callee applies them, answers with its own `InitialSetup` (setup `passive`) and `Candidates`,
//! and starts ICE; the caller starts ICE when the answer arrives. Candidates received before the
//! remote `InitialSetup` are queued. Once ICE and DTLS-SRTP are up the call is
//! [`P2pState::Connected`] and sends 20 ms Opus frames from its [`FrameSource`] on a 20 ms clock;
//! incoming Opus comes out as [`Event::AudioReceived`] (decoding is the application's job).
//!
//! [`Command::Pause`] stops sending media altogether (ICE keepalives go on), [`Command::Mute`]
//! sends Opus silence. RTT and loss from RTCP reports are in [`P2pCall::link_stats`].
//!
//! Once connected, a call that accepts nothing from the peer for
//! [`P2pConfig::disconnect_timeout`] ends ([`P2pEndReason::IceDisconnected`]). Unlike
//! [`crate::Call`] this counts any datagram str0m accepts (not only authenticated STUN/SRTP).
//!
//! Media negotiation follows tgcalls' `ContentNegotiationContext` (what ntgcalls 3.0.5 and
//! tgcalls `InstanceV2Impl` run): each side **offers** the contents it sends
//! ([`P2pCall::local_content`]: our audio SSRC, Opus on [`P2P_OPUS_PT`], audio level), and the
//! **answer** lists, under the offer's `exchangeId`, the offered contents the answerer takes,
//! with the offerer's SSRCs (a peer only creates its sending channel once its own SSRC comes back
//! in the answer). The caller offers right after its `InitialSetup`; the callee answers the
//! caller's offer (which may arrive before the caller's `InitialSetup`), then offers its own
//! audio, which the caller answers. We answer audio offered with Opus on [`P2P_OPUS_PT`] (with
//! Opus alone and only the audio-level extension, so the peer sends nothing else) and leave out
//! video and other codecs; the peer's SSRC is also taken from the first RTP packet with our Opus
//! PT. Not implemented: `MediaState`, Telegram reflectors, TURN over TCP/TLS and ChannelData,
//! ICE restarts, decoded-PCM hooks.
//!
//! Candidates: the host candidate ([`P2pConfig::local_addr`]) goes out with our `InitialSetup`.
//! For each of [`P2pConfig::stun_servers`] the call sends STUN Binding Requests from the same
//! socket ([`crate::stun`]: retransmitted from 250 ms doubling, at most
//! [`crate::stun::STUN_MAX_REQUESTS`], given up after [`P2pConfig::stun_timeout`]); a Binding
//! Success adds a server-reflexive candidate, signaled in a `Candidates` message (or with the
//! `InitialSetup` if that has not gone out yet). A mapped address equal to the host address (no
//! NAT) is redundant and not signaled, as in libwebrtc. Responses are claimed by transaction id
//! and source address before anything reaches str0m's ICE. A server that never answers, or
//! answers with an error, is counted in [`P2pStats::stun_failed`]; the call goes on with the
//! candidates it has.
//!
//! For each of [`P2pConfig::turn_servers`] the call allocates a relayed address from the same
//! socket ([`crate::turn`]: long-term credentials, Refresh before the lifetime ends, a
//! CreatePermission for each remote candidate IP and each destination ICE sends to). An
//! allocation adds a relayed candidate to str0m, signaled like a server-reflexive one. What str0m
//! sends from the relayed address goes to the server in a Send indication; Data indications from
//! the server are unwrapped and given to str0m as received from the peer on the relayed address.
//! Failures are counted ([`P2pStats::turn_failed`]) and the call goes on with what it has. With
//! [`P2pConfig::relay_only`] the host candidate is neither added nor signaled and STUN servers
//! are not asked: every path goes through a relay.
//!
//! The surface is push in ([`P2pCall::handle_input`]), poll out ([`P2pCall::poll_output`]). After
//! every `handle_input` the caller drains `poll_output` until it returns [`Output::Timeout`].

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc as StrSsrc;
use str0m::{Candidate, IceCreds};

use crate::call::Transmit;
use crate::demux::{DatagramKind, classify, stun_local_ufrag};
use crate::media::track::{
    AudioTrack, IncomingStreams, ReceivedAudio, RtpSender, SourceEnd, TrackKind, TrackStats,
};
use crate::media::{FrameSource, OPUS_CLOCK_RATE_HZ, SourceError};
use crate::pacer::LatenessHistogram;
use crate::replay::RecentTransactions;
use crate::signaling::group::URI_AUDIO_LEVEL;
use crate::signaling::p2p::messages::{
    Candidates, DtlsFingerprint, InitialSetup, MediaContent, MediaKind as ContentKind,
    NegotiateChannels, PayloadType, RtpExtension,
};
use crate::signaling::p2p::{
    CallKey, CarrierRejected, ChannelStats, Framing, LinkRejected, P2pError, Rejected, Role,
    SctpStats, SignalingLink, SignalingMessage,
};
use crate::signaling::{SignalingError, Ssrc};
use crate::stun::{GatherEvent, StunGatherer};
use crate::transport::{
    Datagram, DatagramError, Drive, DtlsEnd, Polled, ReceiveError, RejectReason, RtcErrorKind,
    Transport, TransportEnd, authentic_stun_id, opus_rtc_config, random_ice_creds,
};
use crate::turn::{TurnClient, TurnError, TurnEvent, TurnServer};

/// How long a call may take from [`P2pCall::new`] to a working DTLS-SRTP path (the remote side's
/// signaling included) before it fails with [`P2pEndReason::ConnectTimeout`].
pub const DEFAULT_P2P_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Once connected, a call that accepts nothing from the peer for this long ends with
/// [`P2pEndReason::IceDisconnected`]. Both ends send ICE keepalives every few seconds, so a
/// silent (muted, sourceless) peer still counts as alive.
pub const DEFAULT_P2P_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Opus payload type both ends use (tgcalls and libwebrtc default).
pub const P2P_OPUS_PT: u8 = 111;

/// Extension id of RFC 6464 audio level in our RTP packets.
const AUDIO_LEVEL_ID: u8 = 1;

/// The mid of the single audio media section (never on the wire: no SDP, no MID extension).
const AUDIO_MID: &str = "0";

/// Remote SSRCs a call accepts audio from. A 1:1 peer sends one audio stream; a few more
/// allow an SSRC change without letting a hostile peer make us allocate without bound.
const MAX_REMOTE_SSRCS: usize = 4;

/// STUN datagrams kept while waiting for the peer's `InitialSetup`.
const MAX_EARLY_STUN: usize = 8;

/// Remote candidates accepted per call, queued or applied.
const MAX_REMOTE_CANDIDATES: usize = 32;

/// How long gathering from one STUN server may take before it counts as failed.
pub const DEFAULT_STUN_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many STUN servers per call ([`P2pConfig::stun_servers`]).
pub const MAX_STUN_SERVERS: usize = 4;

/// At most this many TURN servers per call ([`P2pConfig::turn_servers`]).
pub const MAX_TURN_SERVERS: usize = 4;

/// Static configuration of one 1:1 call.
#[derive(Clone)]
pub struct P2pConfig {
    /// Which end of the call this is; decides ICE and DTLS roles and the channel's key slices.
    pub role: Role,
    /// The key from the Diffie-Hellman exchange ([`crate::signaling::p2p::dh`]).
    pub key: CallKey,
    /// The signaling framing of the negotiated protocol version ([`Framing::for_version`]).
    pub framing: Framing,
    /// Seed for everything the call picks at random: ICE ufrag/pwd, SSRC, initial RTP sequence
    /// number and timestamp.
    pub seed: u64,
    /// The DTLS certificate (generating one needs OS randomness; the caller supplies it).
    pub dtls_cert: DtlsCert,
    /// Crypto provider for str0m; `None` uses str0m's default from its feature flags.
    pub crypto: Option<Arc<CryptoProvider>>,
    /// The concrete address the call's UDP socket is bound to: the host candidate.
    pub local_addr: SocketAddr,
    /// See [`DEFAULT_P2P_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_P2P_DISCONNECT_TIMEOUT`].
    pub disconnect_timeout: Duration,
    /// STUN servers to gather server-reflexive candidates from (at most [`MAX_STUN_SERVERS`]);
    /// those of the other address family than `local_addr` are skipped and counted
    /// ([`P2pStats::stun_servers_skipped`]). Empty by default: host candidates only.
    pub stun_servers: Vec<SocketAddr>,
    /// See [`DEFAULT_STUN_TIMEOUT`]; also bounds a TURN allocation.
    pub stun_timeout: Duration,
    /// TURN servers to allocate relay candidates on (at most [`MAX_TURN_SERVERS`]); those of
    /// the other address family than `local_addr` are skipped and counted
    /// ([`P2pStats::turn_servers_skipped`]). Empty by default.
    pub turn_servers: Vec<TurnServer>,
    /// Relay only (ntgcalls' `p2pAllowed = false`): no host or server-reflexive candidate is
    /// used or signaled, so every path goes through one of [`Self::turn_servers`] and the peer
    /// never learns our address. Needs at least one TURN server of our address family.
    pub relay_only: bool,
}

impl P2pConfig {
    /// A configuration with the reliable framing (versions 8.0.0/9.0.0) and default timeouts.
    pub fn new(
        role: Role,
        key: CallKey,
        seed: u64,
        dtls_cert: DtlsCert,
        local_addr: SocketAddr,
    ) -> Self {
        Self {
            role,
            key,
            framing: Framing::Reliable,
            seed,
            dtls_cert,
            crypto: None,
            local_addr,
            connect_timeout: DEFAULT_P2P_CONNECT_TIMEOUT,
            disconnect_timeout: DEFAULT_P2P_DISCONNECT_TIMEOUT,
            stun_servers: Vec::new(),
            stun_timeout: DEFAULT_STUN_TIMEOUT,
            turn_servers: Vec::new(),
            relay_only: false,
        }
    }
}

impl fmt::Debug for P2pConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pConfig")
            .field("role", &self.role)
            .field("key", &self.key)
            .field("framing", &self.framing)
            .field("seed", &self.seed)
            .field("local_addr", &self.local_addr)
            .field("connect_timeout", &self.connect_timeout)
            .field("stun_servers", &self.stun_servers)
            .field("turn_servers", &self.turn_servers)
            .field("relay_only", &self.relay_only)
            .finish_non_exhaustive()
    }
}

/// Where a 1:1 call is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum P2pState {
    /// Signaling, ICE and DTLS are in progress.
    Connecting,
    /// ICE, DTLS and SRTP are up; media flows both ways.
    Connected,
    /// The call is over; nothing more is accepted.
    Ended(P2pEndReason),
}

/// Why a 1:1 call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum P2pEndReason {
    /// [`Command::Hangup`] was handled.
    Hangup,
    /// No working path within [`P2pConfig::connect_timeout`].
    ConnectTimeout,
    /// Connected, then nothing accepted from the peer for [`P2pConfig::disconnect_timeout`].
    IceDisconnected,
    /// The peer closed DTLS or the handshake failed.
    Dtls(DtlsEnd),
    /// The peer's DTLS certificate does not match the fingerprint in its `InitialSetup`.
    FingerprintMismatch,
    /// The peer's signaling is unusable (no sha-256 fingerprint, bad credentials, ...).
    Signaling(String),
    /// The encrypted channel cannot go on (counter exhausted, peer stopped acking).
    Channel(String),
    /// str0m reported an unrecoverable error (which part of it; the text is logged at debug).
    Transport(RtcErrorKind),
    /// The call's processing panicked (a bug): the call ended alone. The panic's message.
    Panicked(String),
}

impl P2pEndReason {
    /// True for every reason but a local [`Command::Hangup`].
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Hangup)
    }
}

impl From<TransportEnd> for P2pEndReason {
    fn from(end: TransportEnd) -> Self {
        match end {
            TransportEnd::Dtls(d) => Self::Dtls(d),
            TransportEnd::FingerprintMismatch => Self::FingerprintMismatch,
            TransportEnd::Failed(kind) => Self::Transport(kind),
        }
    }
}

/// Commands the application gives a call.
#[non_exhaustive]
pub enum Command {
    /// Send frames from this source (replacing any current one) once connected.
    SetSource(Box<dyn FrameSource>),
    /// Keep the stream going but send silence.
    Mute,
    /// Undo [`Command::Mute`].
    Unmute,
    /// Stop sending media (no RTP at all, the source is not read); ICE keepalives go on.
    Pause,
    /// Undo [`Command::Pause`]: the source is read again from where it stopped.
    Resume,
    /// End the call ([`P2pEndReason::Hangup`]); DTLS close_notify goes out.
    Hangup,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SetSource(_) => "SetSource",
            Self::Mute => "Mute",
            Self::Unmute => "Unmute",
            Self::Pause => "Pause",
            Self::Resume => "Resume",
            Self::Hangup => "Hangup",
        })
    }
}

/// Input to [`P2pCall::handle_input`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// The deadline from [`Output::Timeout`] has passed (spurious wakeups are fine).
    Timeout,
    /// A datagram arrived on the call's socket (its destination is [`P2pConfig::local_addr`]).
    Datagram(Datagram<'a>),
    /// Signaling bytes from the messenger (`updatePhoneCallSignalingData.data`).
    Signaling(&'a [u8]),
    /// A command from the application.
    Command(Command),
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The state changed; a failure is `StateChanged(P2pState::Ended(r))` with `r.is_failure()`.
    StateChanged(P2pState),
    /// The source ran out (`error: None`) or failed (`Some`). The call stays up.
    StreamEnded {
        /// Which track's stream ended.
        track: TrackKind,
        /// The source error, if any.
        error: Option<SourceError>,
    },
    /// An Opus packet from the peer, authenticated and decrypted.
    AudioReceived(ReceivedAudio),
}

/// Output of [`P2pCall::poll_output`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send this datagram from the call's socket.
    Transmit(Transmit),
    /// Hand these bytes to the messenger (`phone.sendSignalingData`).
    Signaling(Vec<u8>),
    /// Deliver this event.
    Event(Event),
    /// Nothing more to do until this instant (or the next input).
    Timeout(Instant),
}

/// Errors from [`P2pCall`]'s methods. None ends the call unless its docs say so; every dropped
/// input is also counted in [`P2pStats`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum P2pCallError {
    /// The configuration is unusable.
    #[error("invalid p2p call config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The call has ended.
    #[error("call has ended")]
    Ended,
    /// A datagram arrived before the peer's `InitialSetup` was applied.
    #[error("datagram before the remote setup")]
    NotStarted,
    /// A datagram was refused and counted in [`P2pStats`]. The call goes on.
    #[error(transparent)]
    Datagram(#[from] DatagramError),
    /// The encrypted channel refused a signaling packet (tampered, replayed, ...). The call
    /// goes on.
    #[error("signaling packet rejected: {0}")]
    SignalingRejected(#[from] Rejected),
    /// A signaling V3 blob was refused by the SCTP carrier (not SCTP, dropped by SCTP, an INIT
    /// ignored), or an authentic payload did not inflate. The call goes on.
    #[error("signaling blob rejected: {0}")]
    SignalingCarrier(#[from] CarrierRejected),
    /// An authentic signaling message that does not parse or cannot be applied. The call goes
    /// on unless it was the peer's `InitialSetup`.
    #[error("invalid signaling message: {0}")]
    SignalingInvalid(#[from] SignalingError),
    /// The encrypted channel could not send (the call ends).
    #[error("signaling channel: {0}")]
    Channel(#[from] P2pError),
}

/// Counters of one 1:1 call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct P2pStats {
    /// RTP media packets handed to str0m.
    pub packets_sent: u64,
    /// Opus payload bytes of those packets.
    pub payload_bytes_sent: u64,
    /// Datagrams emitted (STUN, DTLS, SRTP, SRTCP).
    pub datagrams_sent: u64,
    /// Bytes of those datagrams.
    pub bytes_sent: u64,
    /// Datagrams received and accepted (by str0m, or answers from our STUN servers).
    pub datagrams_received: u64,
    /// Bytes of those datagrams.
    pub bytes_received: u64,
    /// Audio packets received from the peer.
    pub packets_received: u64,
    /// Opus payload bytes of those packets.
    pub payload_bytes_received: u64,
    /// Datagrams str0m could not parse.
    pub dropped_malformed: u64,
    /// Datagrams str0m refused.
    pub dropped_rejected: u64,
    /// Datagrams before the remote setup (other than buffered STUN) or after the end.
    pub dropped_not_live: u64,
    /// DTLS datagrams of the callee's final flight resent because the caller had not yet
    /// shown it finished the handshake (see [`crate::flight`]).
    pub dtls_flight_resent: u64,
    /// STUN checks to our ufrag kept while waiting for the remote setup (see
    /// [`P2pCall::handle_input`]), handed to str0m once it is applied.
    pub early_stun_buffered: u64,
    /// RTP packets from new SSRCs once a call already accepts four (a 1:1 peer sends one).
    pub dropped_unknown_ssrc: u64,
    /// SRTP packets refused as replays: their sequence number was already received, or is
    /// older than the replay window (see [`crate::replay`]). Not in `datagrams_received`.
    pub dropped_replayed: u64,
    /// SRTCP datagrams above [`crate::transport::MAX_RTCP_DATAGRAM`] bytes, refused unread.
    pub dropped_rtcp_oversized: u64,
    /// SRTCP datagrams beyond [`crate::transport::RTCP_BUDGET_PER_SEC`], refused unread.
    pub dropped_rtcp_over_budget: u64,
    /// SRTCP refused as a replay (its SRTCP index already received from that sender).
    pub dropped_rtcp_replayed: u64,
    /// DTLS datagrams, once connected, beyond [`crate::transport::DTLS_BUDGET_PER_SEC`].
    pub dropped_dtls_over_budget: u64,
    /// Frames skipped because the call was driven late.
    pub frames_skipped_late: u64,
    /// 48 kHz samples of media played (stops while paused), all sources together.
    pub played_samples: u64,
    /// Position in the current source in 48 kHz samples (start offset plus played).
    pub position_samples: u64,
    /// How late each frame was handed to str0m (`now` minus its due time).
    pub lateness: LatenessHistogram,
    /// Signaling packets emitted ([`Output::Signaling`]).
    pub signaling_sent: u64,
    /// Signaling packets the channel accepted.
    pub signaling_received: u64,
    /// Signaling packets the channel rejected (tampered, replayed, bad size, bad framing).
    pub signaling_rejected: u64,
    /// Authentic messages that did not parse or could not be applied.
    pub signaling_invalid: u64,
    /// Authentic messages ignored (unknown `@type`, not implemented, duplicate setup).
    pub signaling_ignored: u64,
    /// Remote candidate lines skipped (unparseable, other address family, over the limit).
    pub candidates_skipped: u64,
    /// STUN Binding Requests sent to [`P2pConfig::stun_servers`] (retransmissions included).
    pub stun_requests_sent: u64,
    /// Server-reflexive candidates gathered and signaled to the peer.
    pub stun_srflx_candidates: u64,
    /// STUN servers that mapped us to our host address or to an already gathered address (no
    /// new candidate).
    pub stun_redundant: u64,
    /// STUN servers that answered with an error or not within [`P2pConfig::stun_timeout`].
    pub stun_failed: u64,
    /// Authenticated ICE STUN from the peer whose transaction id was already received (see
    /// [`crate::replay::RecentTransactions`]): a retransmission or a replay. Answered by str0m
    /// like the first, but never a sign of life. STUN that fails the peer's credentials is
    /// refused before str0m and counted in `dropped_rejected`.
    pub stun_replayed: u64,
    /// Configured STUN servers of the other address family, not asked.
    pub stun_servers_skipped: u64,
    /// Responses to finished STUN transactions (duplicates) or malformed ones, dropped.
    pub stun_responses_ignored: u64,
    /// TURN requests sent (Allocate, Refresh, CreatePermission; retransmissions included).
    pub turn_requests_sent: u64,
    /// TURN allocations that succeeded: relay candidates signaled to the peer.
    pub turn_allocations: u64,
    /// TURN allocations that failed (wrong credentials, error, no answer) or were lost.
    pub turn_failed: u64,
    /// Configured TURN servers of the other address family, not used.
    pub turn_servers_skipped: u64,
    /// Datagrams sent through a relay (Send indications).
    pub turn_relayed_out: u64,
    /// Datagrams received through a relay (Data indications) handed on to ICE.
    pub turn_relayed_in: u64,
    /// Permissions refused by a server or over [`crate::turn::MAX_PERMISSIONS`].
    pub turn_permissions_failed: u64,
}

/// How often str0m reports link statistics ([`P2pCall::link_stats`]).
const LINK_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Link quality as str0m last reported it (every second once connected); `None` until known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct P2pLinkStats {
    /// Round-trip time from RTCP receiver reports.
    pub rtt: Option<Duration>,
    /// Fraction (0..=1) of our packets the peer reports lost.
    pub egress_loss: Option<f32>,
    /// Fraction (0..=1) of the peer's packets we lost.
    pub ingress_loss: Option<f32>,
}

/// One 1:1 call. See the [module docs](self).
pub struct P2pCall {
    config: P2pConfig,
    /// The str0m instance and what we keep around it (final flight, close handshake).
    transport: Transport,
    /// JSON messages to and from the messenger's blobs at the negotiated version.
    signaling: SignalingLink,
    local_creds: IceCreds,
    local_digest: [u8; 32],
    /// Our outgoing audio: source, pause/mute, pacing, sequence numbers and RTP time.
    track: AudioTrack,
    /// The peer's audio: accepted SSRCs and their replay windows.
    incoming: IncomingStreams,
    state: P2pState,
    /// The peer's setup once applied (ICE has started).
    remote_setup: Option<InitialSetup>,
    /// Whether our own InitialSetup + Candidates went out.
    local_sent: bool,
    /// STUN addressed to us that arrived before the remote setup: (source, destination, bytes).
    early_stun: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// `exchangeId` of our next `NegotiateChannels` offer (incremented per offer).
    exchange_id: u32,
    /// Our outgoing audio still has to be offered (tgcalls `needNegotiation`).
    offer_needed: bool,
    /// `exchangeId` of our offer waiting for its answer.
    pending_offer: Option<u32>,
    /// The peer answered our offer accepting our audio content.
    negotiated: bool,
    /// The peer's audio SSRC from its `NegotiateChannels`, once received.
    remote_ssrc: Option<Ssrc>,
    /// Candidate lines received before the remote setup.
    queued_candidates: Vec<String>,
    remote_addrs: Vec<SocketAddr>,
    /// Binding transactions with the STUN servers.
    stun: StunGatherer,
    /// Server-reflexive candidates gathered so far, as signaled (SDP candidate lines).
    local_srflx: Vec<(SocketAddr, String)>,
    /// Allocations on the TURN servers.
    turn: Vec<TurnClient>,
    /// Relayed candidates allocated so far, as signaled (relay address, SDP line).
    local_relays: Vec<(SocketAddr, String)>,
    connect_deadline: Option<Instant>,
    connected_at: Option<Instant>,
    /// When the peer was last heard from: authenticated STUN (not a repeat) or SRTP str0m
    /// decrypted (consent freshness, RFC 7675).
    last_heard: Option<Instant>,
    /// Transaction ids of the last authenticated STUN received, to count repeats.
    stun_seen: RecentTransactions,
    started_at: Instant,
    link: P2pLinkStats,
    events: VecDeque<Event>,
    stats: P2pStats,
    last_now: Instant,
}

impl fmt::Debug for P2pCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pCall")
            .field("role", &self.config.role)
            .field("track", &self.track)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl P2pCall {
    /// Creates a call and, for the caller, queues its `InitialSetup` and `Candidates` as
    /// [`Output::Signaling`]. The connect timer starts now.
    ///
    /// # Errors
    /// [`P2pCallError::Config`] for an unspecified local address or an unusable certificate;
    /// [`P2pCallError::Channel`] if the first signaling message cannot be encrypted.
    pub fn new(now: Instant, config: P2pConfig) -> Result<Self, P2pCallError> {
        let local_addr = config.local_addr;
        if local_addr.ip().is_unspecified() || local_addr.port() == 0 {
            return Err(P2pCallError::Config {
                reason: format!("local address {local_addr} must be the concrete bound address"),
            });
        }
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let local_creds = random_ice_creds(&mut rng);
        let rtp = RtpSender::random(&mut rng, P2P_OPUS_PT.into(), OPUS_CLOCK_RATE_HZ);
        let ssrc = rtp.ssrc();
        let exchange_id = rng.u32(..);
        let mut stats = P2pStats::default();
        if config.stun_servers.len() > MAX_STUN_SERVERS {
            return Err(P2pCallError::Config {
                reason: format!(
                    "{} STUN servers, at most {MAX_STUN_SERVERS}",
                    config.stun_servers.len()
                ),
            });
        }
        let mut stun_servers = Vec::new();
        for &server in &config.stun_servers {
            if server.is_ipv4() != local_addr.is_ipv4() {
                stats.stun_servers_skipped += 1;
                continue;
            }
            // Drawn after everything above, so a seed gives the same ICE credentials and SSRC
            // with or without STUN servers.
            let mut txid = [0u8; 12];
            rng.fill(&mut txid);
            stun_servers.push((server, txid));
        }
        if config.relay_only {
            // No server-reflexive candidate either: our address stays private.
            stun_servers.clear();
        }
        let stun = StunGatherer::new(&stun_servers, now, config.stun_timeout);
        if config.turn_servers.len() > MAX_TURN_SERVERS {
            return Err(P2pCallError::Config {
                reason: format!(
                    "{} TURN servers, at most {MAX_TURN_SERVERS}",
                    config.turn_servers.len()
                ),
            });
        }
        let mut turn = Vec::new();
        for server in &config.turn_servers {
            if server.addr.is_ipv4() != local_addr.is_ipv4() {
                stats.turn_servers_skipped += 1;
                continue;
            }
            let client = TurnClient::new(server.clone(), rng.u64(..), now, config.stun_timeout)
                .map_err(|e| P2pCallError::Config {
                    reason: format!("TURN server {}: {e}", server.addr),
                })?;
            turn.push(client);
        }
        if config.relay_only && turn.is_empty() {
            return Err(P2pCallError::Config {
                reason: "relay only needs a TURN server of the local address family".to_owned(),
            });
        }
        let crypto = config
            .crypto
            .clone()
            .unwrap_or_else(|| Arc::new(str0m::crypto::from_feature_flags()));
        let local_digest = crypto.sha256_provider.sha256(&config.dtls_cert.certificate);

        let mut rtc = opus_rtc_config(
            &local_creds,
            &config.dtls_cert,
            Some(&crypto),
            P2P_OPUS_PT,
            AUDIO_LEVEL_ID,
        )
        .set_stats_interval(Some(LINK_STATS_INTERVAL))
        .build(now);
        let local = Candidate::host(local_addr, "udp").map_err(|e| P2pCallError::Config {
            reason: format!("local candidate: {e}"),
        })?;
        if !config.relay_only {
            rtc.add_local_candidate(local);
        }
        let mid = Mid::from(AUDIO_MID);
        {
            let mut api = rtc.direct_api();
            api.set_ice_controlling(config.role == Role::Caller);
            api.declare_media(mid, MediaKind::Audio);
            api.declare_stream_tx(StrSsrc::from(ssrc.0), None, mid, None);
        }
        let signaling = SignalingLink::new(config.key.as_bytes(), config.role, config.framing, now);
        let connect_deadline = now + config.connect_timeout;
        let mut call = Self {
            // The callee is the DTLS server: its final flight is resent until the caller proves
            // it has the keys ([`crate::flight`]).
            transport: Transport::new(rtc, config.role == Role::Callee),
            config: P2pConfig {
                crypto: Some(crypto),
                ..config
            },
            signaling,
            local_creds,
            local_digest,
            track: AudioTrack::new(rtp),
            incoming: IncomingStreams::new(ssrc, Mid::from(AUDIO_MID), MAX_REMOTE_SSRCS),
            state: P2pState::Connecting,
            remote_setup: None,
            local_sent: false,
            exchange_id,
            offer_needed: true,
            pending_offer: None,
            negotiated: false,
            remote_ssrc: None,
            queued_candidates: Vec::new(),
            early_stun: Vec::new(),
            remote_addrs: Vec::new(),
            stun,
            local_srflx: Vec::new(),
            turn,
            local_relays: Vec::new(),
            connect_deadline: Some(connect_deadline),
            connected_at: None,
            last_heard: None,
            stun_seen: RecentTransactions::new(),
            started_at: now,
            link: P2pLinkStats::default(),
            events: VecDeque::new(),
            stats,
            last_now: now,
        };
        if call.config.role == Role::Caller {
            call.send_local_setup(now)?;
        }
        Ok(call)
    }

    /// The `InitialSetup` this side sends.
    pub fn local_setup(&self) -> InitialSetup {
        InitialSetup {
            ufrag: self.local_creds.ufrag.clone(),
            pwd: self.local_creds.pass.clone(),
            renomination: false,
            fingerprints: vec![DtlsFingerprint::sha256(
                &self.local_digest,
                InitialSetup::setup_for(self.config.role),
            )],
        }
    }

    /// The `NegotiateChannels` content describing our audio stream: our SSRC, Opus on
    /// [`P2P_OPUS_PT`] and the audio-level extension.
    pub fn local_content(&self) -> MediaContent {
        MediaContent {
            kind: ContentKind::Audio,
            ssrc: self.audio_ssrc(),
            ssrc_groups: Vec::new(),
            payload_types: vec![PayloadType {
                id: P2P_OPUS_PT,
                name: "opus".to_owned(),
                clockrate: 48_000,
                channels: 2,
                feedback_types: Vec::new(),
                parameters: vec![
                    ("minptime".to_owned(), "10".to_owned()),
                    ("useinbandfec".to_owned(), "1".to_owned()),
                ],
            }],
            rtp_extensions: vec![RtpExtension {
                id: AUDIO_LEVEL_ID,
                uri: URI_AUDIO_LEVEL.to_owned(),
            }],
        }
    }

    /// The peer's audio SSRC as announced in its `NegotiateChannels`, once received.
    pub fn remote_ssrc(&self) -> Option<Ssrc> {
        self.remote_ssrc
    }

    /// Whether the peer answered our offer and takes our audio (it has a receiving channel for
    /// our SSRC).
    pub fn is_negotiated(&self) -> bool {
        self.negotiated
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.config.role
    }

    /// The SSRC of our outgoing audio.
    pub fn audio_ssrc(&self) -> Ssrc {
        self.track.rtp().ssrc()
    }

    /// The local (host candidate) address.
    pub fn local_addr(&self) -> SocketAddr {
        self.config.local_addr
    }

    /// The peer's candidate addresses applied so far.
    pub fn remote_addrs(&self) -> &[SocketAddr] {
        &self.remote_addrs
    }

    /// Current state.
    pub fn state(&self) -> &P2pState {
        &self.state
    }

    /// How long connecting took (from [`P2pCall::new`] to DTLS-SRTP up), once connected.
    pub fn connect_duration(&self) -> Option<Duration> {
        self.connected_at
            .map(|t| t.saturating_duration_since(self.started_at))
    }

    /// The call's counters.
    pub fn stats(&self) -> &P2pStats {
        &self.stats
    }

    /// Round-trip time and loss as str0m last reported them.
    pub fn link_stats(&self) -> P2pLinkStats {
        self.link
    }

    /// True while [`Command::Pause`] is in effect.
    pub fn is_paused(&self) -> bool {
        self.track.media_state().paused
    }

    /// True while [`Command::Mute`] is in effect.
    pub fn is_muted(&self) -> bool {
        self.track.media_state().muted
    }

    /// Duration of media played so far (stops while paused).
    pub fn played(&self) -> Duration {
        self.track.played()
    }

    /// Hands `f` the lateness (time handed to str0m minus due time) of every frame sent since
    /// the last call, and forgets them.
    pub fn drain_frame_lateness(&mut self, f: impl FnMut(Duration)) {
        self.track.drain_frame_lateness(f);
    }

    /// The encrypted channel's counters (rejections by reason, resends, acks).
    pub fn channel_stats(&self) -> ChannelStats {
        self.signaling.channel_stats()
    }

    /// The SCTP carrier's counters (signaling V3, versions 12.0.0/13.0.0, only).
    pub fn sctp_stats(&self) -> Option<SctpStats> {
        self.signaling.sctp_stats()
    }

    /// Feeds one input. Drain [`P2pCall::poll_output`] afterwards.
    ///
    /// # Errors
    /// See [`P2pCallError`]; a rejected input is counted and the call goes on.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), P2pCallError> {
        self.last_now = self.last_now.max(now);
        match input {
            Input::Timeout => {
                self.handle_timeout(now);
                Ok(())
            }
            Input::Datagram(datagram) => self.handle_datagram(now, datagram),
            Input::Signaling(bytes) => self.handle_signaling(now, bytes),
            Input::Command(cmd) => self.handle_command(now, cmd),
        }
    }

    /// Next output. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        let ended = matches!(self.state, P2pState::Ended(_));
        if !ended {
            if let Some(bytes) = self.signaling.poll_transmit(self.last_now) {
                self.stats.signaling_sent += 1;
                return Output::Signaling(bytes);
            }
            if let Some((server, request)) = self.stun.poll_transmit(self.last_now) {
                self.stats.stun_requests_sent += 1;
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += request.len() as u64;
                return Output::Transmit(Transmit {
                    source: self.config.local_addr,
                    destination: server,
                    contents: request.to_vec(),
                });
            }
            let now = self.last_now;
            if let Some((server, request)) = self
                .turn
                .iter_mut()
                .find_map(|c| c.poll_transmit(now).map(|r| (c.server(), r)))
            {
                self.stats.turn_requests_sent += 1;
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += request.len() as u64;
                return Output::Transmit(Transmit {
                    source: self.config.local_addr,
                    destination: server,
                    contents: request,
                });
            }
            if self.remote_setup.is_some()
                && let Some(out) = self.poll_rtc()
            {
                return out;
            }
        } else if let Some(t) = self.transport.poll_closing() {
            return self.sent(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.next_deadline())
    }

    fn next_deadline(&self) -> Instant {
        let idle = self.last_now + Duration::from_secs(3600);
        if matches!(self.state, P2pState::Ended(_)) {
            return idle;
        }
        // The transport's deadline includes str0m's, which exists only once str0m has been
        // polled: after the remote setup is applied (see `poll_output`).
        let candidates = [
            self.track.deadline(),
            self.connect_deadline,
            self.disconnect_deadline(),
            self.signaling.poll_timeout(),
            self.stun.poll_timeout(),
            self.turn.iter().filter_map(TurnClient::poll_timeout).min(),
            self.transport.deadline(),
        ];
        candidates.into_iter().flatten().fold(idle, Instant::min)
    }

    /// When the call ends if nothing more is accepted from the peer (only while connected).
    fn disconnect_deadline(&self) -> Option<Instant> {
        if self.state != P2pState::Connected {
            return None;
        }
        let heard = self.last_heard.or(self.connected_at)?;
        Some(heard + self.config.disconnect_timeout)
    }

    fn send_message(&mut self, message: &SignalingMessage, now: Instant) -> Result<(), P2pError> {
        self.signaling.send(message.to_json().as_bytes(), now)
    }

    /// Sends our InitialSetup and host candidate.
    fn send_local_setup(&mut self, now: Instant) -> Result<(), P2pCallError> {
        if self.local_sent {
            return Ok(());
        }
        self.local_sent = true;
        let setup = SignalingMessage::InitialSetup(self.local_setup());
        let mut host =
            Candidate::host(self.config.local_addr, "udp").map_err(|e| P2pCallError::Config {
                reason: format!("local candidate: {e}"),
            })?;
        host.set_ufrag(&self.local_creds.ufrag);
        let mut lines = Vec::new();
        if !self.config.relay_only {
            lines.push(host.to_sdp_string());
            lines.extend(self.local_srflx.iter().map(|(_, line)| line.clone()));
        }
        lines.extend(self.local_relays.iter().map(|(_, line)| line.clone()));
        let candidates = SignalingMessage::Candidates(Candidates { candidates: lines });
        for message in [setup, candidates] {
            self.send_or_end(&message, now)?;
        }
        // The caller offers its media right after its InitialSetup (ntgcalls `connect`); the
        // callee offers once it has answered the caller's offer (see `apply_negotiation`).
        if self.config.role == Role::Caller {
            self.offer_if_needed(now)?;
        }
        Ok(())
    }

    /// Sends `message`; a channel failure ends the call.
    fn send_or_end(
        &mut self,
        message: &SignalingMessage,
        now: Instant,
    ) -> Result<(), P2pCallError> {
        if let Err(e) = self.send_message(message, now) {
            self.end(P2pEndReason::Channel(e.to_string()));
            return Err(e.into());
        }
        Ok(())
    }

    /// Offers our audio content unless it was offered already or an offer of ours waits for
    /// its answer (tgcalls `sendOfferIfNeeded`).
    fn offer_if_needed(&mut self, now: Instant) -> Result<(), P2pCallError> {
        if !self.offer_needed || self.pending_offer.is_some() {
            return Ok(());
        }
        self.offer_needed = false;
        let exchange_id = self.exchange_id;
        self.exchange_id = self.exchange_id.wrapping_add(1);
        self.pending_offer = Some(exchange_id);
        let offer = SignalingMessage::NegotiateChannels(NegotiateChannels {
            exchange_id,
            contents: vec![self.local_content()],
        });
        self.send_or_end(&offer, now)
    }

    fn handle_signaling(&mut self, now: Instant, bytes: &[u8]) -> Result<(), P2pCallError> {
        if matches!(self.state, P2pState::Ended(_)) {
            return Err(P2pCallError::Ended);
        }
        let messages = match self.signaling.receive(bytes, now) {
            Ok(m) => m,
            Err(e) => {
                self.stats.signaling_rejected += 1;
                tracing::debug!("signaling packet rejected: {e}");
                return Err(match e {
                    LinkRejected::Channel(e) => e.into(),
                    LinkRejected::Carrier(e) => e.into(),
                });
            }
        };
        self.stats.signaling_received += 1;
        let mut first_error = None;
        for body in messages {
            let result = match SignalingMessage::parse(&body) {
                Ok(message) => self.apply_message(now, message),
                Err(e) => Err(P2pCallError::SignalingInvalid(e)),
            };
            if let Err(e) = result {
                self.stats.signaling_invalid += 1;
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn apply_message(
        &mut self,
        now: Instant,
        message: SignalingMessage,
    ) -> Result<(), P2pCallError> {
        match message {
            SignalingMessage::InitialSetup(setup) => {
                if self.remote_setup.is_some() {
                    // A resend or a renegotiation; ICE restarts are not supported.
                    self.stats.signaling_ignored += 1;
                    return Ok(());
                }
                if let Err(e) = self.apply_remote_setup(now, setup) {
                    let reason = e.to_string();
                    self.end(P2pEndReason::Signaling(reason));
                    return Err(e);
                }
                if self.config.role == Role::Callee {
                    self.send_local_setup(now)?;
                }
                let queued = std::mem::take(&mut self.queued_candidates);
                self.add_remote_candidates(&queued);
                for (source, destination, contents) in std::mem::take(&mut self.early_stun) {
                    // Stale or forged ones are refused and counted like any datagram.
                    let datagram = Datagram {
                        source,
                        destination,
                        contents: &contents,
                    };
                    let _ = self.handle_datagram(now, datagram);
                }
                Ok(())
            }
            SignalingMessage::Candidates(Candidates { candidates }) => {
                if self.remote_setup.is_some() {
                    self.add_remote_candidates(&candidates);
                } else {
                    for c in candidates {
                        if self.queued_candidates.len() < MAX_REMOTE_CANDIDATES {
                            self.queued_candidates.push(c);
                        } else {
                            self.stats.candidates_skipped += 1;
                        }
                    }
                }
                Ok(())
            }
            SignalingMessage::NegotiateChannels(n) => self.apply_negotiation(now, n),
            SignalingMessage::MediaState(_) | SignalingMessage::Unknown { .. } => {
                self.stats.signaling_ignored += 1;
                Ok(())
            }
        }
    }

    /// One `NegotiateChannels` (tgcalls `ContentNegotiationContext::setPendingAnswer`): each
    /// side offers the contents it sends, and the answer lists the offered contents the answerer
    /// receives, under the offer's SSRCs and `exchangeId`.
    ///
    /// - The answer to our pending offer: our audio is negotiated if it lists our SSRC. (An
    ///   answer listing another audio SSRC, as ringcast answered before it mirrored offers, is
    ///   taken as the peer's stream.)
    /// - Any other exchange is the peer's offer: we answer it with its audio content we can
    ///   receive (Opus on [`P2P_OPUS_PT`]) and take its SSRC. While our own offer waits, the
    ///   caller ignores the peer's offer (the callee answers ours first, then offers again) and
    ///   the callee drops its offer to answer the caller's, as tgcalls does.
    ///
    /// Then we offer our audio if it has not been offered yet.
    fn apply_negotiation(
        &mut self,
        now: Instant,
        negotiation: NegotiateChannels,
    ) -> Result<(), P2pCallError> {
        let our_ssrc = self.audio_ssrc();
        if self.pending_offer == Some(negotiation.exchange_id) {
            self.pending_offer = None;
            let mut accepted = false;
            for content in &negotiation.contents {
                if content.kind != ContentKind::Audio {
                    continue;
                }
                if content.ssrc == our_ssrc {
                    accepted = true;
                } else if receivable_opus(content).is_some() {
                    self.remote_ssrc = Some(content.ssrc);
                    self.accept_remote_ssrc(content.ssrc.0);
                }
            }
            self.negotiated = accepted;
            if !accepted {
                tracing::debug!(role = ?self.config.role, "the peer's answer does not take our audio");
                self.stats.signaling_ignored += 1;
            }
        } else {
            if self.pending_offer.is_some() {
                if self.config.role == Role::Caller {
                    self.stats.signaling_ignored += 1;
                    return Ok(());
                }
                self.pending_offer = None;
                self.offer_needed = true;
            }
            let mut contents = Vec::new();
            for content in &negotiation.contents {
                match receivable_opus(content) {
                    Some(opus) => {
                        self.remote_ssrc = Some(content.ssrc);
                        self.accept_remote_ssrc(content.ssrc.0);
                        contents.push(answer_content(content, opus));
                    }
                    None => self.stats.signaling_ignored += 1,
                }
            }
            let answer = SignalingMessage::NegotiateChannels(NegotiateChannels {
                exchange_id: negotiation.exchange_id,
                contents,
            });
            self.send_or_end(&answer, now)?;
        }
        self.offer_if_needed(now)
    }

    /// Lets str0m receive RTP from `ssrc` (up to [`MAX_REMOTE_SSRCS`] per call).
    fn accept_remote_ssrc(&mut self, ssrc: u32) {
        self.incoming.accept(self.transport.rtc(), ssrc);
        self.stats.dropped_unknown_ssrc = self.incoming.counters().dropped_unknown_ssrc;
    }

    fn apply_remote_setup(
        &mut self,
        now: Instant,
        setup: InitialSetup,
    ) -> Result<(), P2pCallError> {
        let fingerprint = setup
            .fingerprints
            .iter()
            .find(|f| f.hash.eq_ignore_ascii_case("sha-256"))
            .ok_or_else(|| SignalingError::InvalidField {
                field: "fingerprints".to_owned(),
                reason: "no sha-256 fingerprint".to_owned(),
            })?;
        let digest = fingerprint
            .digest()
            .filter(|d| d.len() == 32)
            .ok_or_else(|| SignalingError::InvalidField {
                field: "fingerprints[].fingerprint".to_owned(),
                reason: "not 32 colon-separated hex bytes".to_owned(),
            })?;
        let dtls_client = setup.local_is_dtls_client(self.config.role);
        {
            let mut api = self.transport.rtc().direct_api();
            api.set_remote_ice_credentials(IceCreds {
                ufrag: setup.ufrag.clone(),
                pass: setup.pwd.clone(),
            });
            api.set_remote_fingerprint(str0m::config::Fingerprint {
                hash_func: "sha-256".to_owned(),
                bytes: digest,
            });
            api.start_dtls(dtls_client)
                .map_err(|e| P2pCallError::Config {
                    reason: format!("start dtls: {e}"),
                })?;
        }
        // str0m schedules nothing until its first timeout: this starts ICE.
        self.transport
            .rtc()
            .handle_input(str0m::Input::Timeout(now))
            .map_err(|e| P2pCallError::Config {
                reason: format!("starting ice: {e}"),
            })?;
        tracing::debug!(role = ?self.config.role, dtls_client, "remote setup applied");
        self.remote_setup = Some(setup);
        Ok(())
    }

    fn add_remote_candidates(&mut self, lines: &[String]) {
        for line in lines {
            let parsed = Candidate::from_sdp_string(line.strip_prefix("a=").unwrap_or(line));
            let usable = match parsed {
                Ok(c) if c.addr().is_ipv4() == self.config.local_addr.is_ipv4() => Some(c),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("skipping remote candidate: {e}");
                    None
                }
            };
            match usable {
                Some(c) if self.remote_addrs.len() < MAX_REMOTE_CANDIDATES => {
                    if !self.remote_addrs.contains(&c.addr()) {
                        self.remote_addrs.push(c.addr());
                    }
                    // The peer's checks to our relayed candidates need a permission for its IP.
                    let now = self.last_now;
                    for client in &mut self.turn {
                        if !client.ensure_permission(c.addr().ip(), now) {
                            self.stats.turn_permissions_failed += 1;
                        }
                    }
                    self.transport.rtc().add_remote_candidate(c);
                }
                _ => self.stats.candidates_skipped += 1,
            }
        }
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: Datagram<'_>,
    ) -> Result<(), P2pCallError> {
        let Datagram {
            source, contents, ..
        } = datagram;
        if matches!(self.state, P2pState::Ended(_)) {
            self.stats.dropped_not_live += 1;
            return Err(P2pCallError::Ended);
        }
        // Answers and Data indications from our TURN servers, then answers from our STUN servers
        // (matched by transaction id and source), never reach ICE as such.
        let turn_event = self.turn.iter_mut().find_map(|c| {
            c.handle_datagram(source, contents, now)
                .map(|e| (c.server(), c.relay(), e))
        });
        if let Some((server, relay, event)) = turn_event {
            // A relayed datagram is counted by the ICE path if accepted there.
            if !matches!(event, TurnEvent::Data { .. }) {
                self.stats.datagrams_received += 1;
                self.stats.bytes_received += contents.len() as u64;
            }
            return self.handle_turn_event(now, server, relay, event);
        }
        self.handle_ice_datagram(now, datagram)
    }

    /// A datagram for ICE/DTLS/SRTP: straight from the socket, or unwrapped from a Data
    /// indication (then `destination` is the relayed address).
    fn handle_ice_datagram(
        &mut self,
        now: Instant,
        datagram: Datagram<'_>,
    ) -> Result<(), P2pCallError> {
        let Datagram {
            source,
            destination,
            contents,
        } = datagram;
        if let Some(event) = self.stun.handle_datagram(source, contents) {
            self.stats.datagrams_received += 1;
            self.stats.bytes_received += contents.len() as u64;
            return self.handle_stun_event(now, event);
        }
        if self.remote_setup.is_none() {
            // UDP is faster than the messenger: the callee's checks reach the caller before the
            // callee's InitialSetup does. Keep a few addressed to our ufrag and hand them to
            // str0m once the setup is applied; a controlled agent whose own check is still in
            // progress waits for it before accepting a nomination, so answering the early check
            // saves a STUN retransmission timeout (~450 ms with 300 ms of messenger latency).
            if stun_local_ufrag(contents) == Some(self.local_creds.ufrag.as_str())
                && self.early_stun.len() < MAX_EARLY_STUN
            {
                self.early_stun
                    .push((source, destination, contents.to_vec()));
                self.stats.early_stun_buffered += 1;
            } else {
                self.stats.dropped_not_live += 1;
            }
            return Err(P2pCallError::NotStarted);
        }
        let is_stun = classify(contents) == DatagramKind::Stun;
        let stun_id = if is_stun {
            self.authentic_stun_id(contents)
        } else {
            None
        };
        let stun_authentic = stun_id.is_some();
        let incoming = &mut self.incoming;
        let result = self.transport.receive(now, datagram, |rtc| {
            // str0m ignores STUN that fails the peer's credentials without an error: refuse
            // and count it here, so that it never counts as hearing from the peer.
            if is_stun && !stun_authentic {
                return Err(DatagramError::Rejected(RejectReason::StunUnauthenticated).into());
            }
            // Replays: str0m drops them silently (see `crate::replay`); refuse and count
            // them here. No NegotiateChannels yet: accept the peer's audio SSRC from the
            // first packet with our Opus PT (the RTP header is clear text; str0m
            // authenticates the packet itself).
            incoming
                .admit(rtc, contents, P2P_OPUS_PT)
                .map_err(|r| DatagramError::Replayed(r).into())
        });
        let counters = self.incoming.counters();
        self.stats.dropped_replayed = counters.dropped_replayed;
        self.stats.dropped_unknown_ssrc = counters.dropped_unknown_ssrc;
        match result {
            Ok(()) => {
                self.stats.datagrams_received += 1;
                self.stats.bytes_received += contents.len() as u64;
                // A genuine STUN message again (a retransmission or a replay): answered by
                // str0m like the first, but no sign of life. DTLS and SRTCP are handed in
                // unauthenticated from our side (str0m drops forged ones silently), so only
                // STUN here and decrypted SRTP (`map_rtc_event`) keep the call alive.
                let repeated = self.stun_seen.is_repeat(stun_id);
                self.stats.stun_replayed += u64::from(repeated);
                if stun_id.is_some() && !repeated {
                    self.last_heard = Some(now);
                }
                Ok(())
            }
            Err(ReceiveError::Fatal(end)) => {
                self.end(P2pEndReason::from(end));
                Ok(())
            }
            Err(ReceiveError::Refused(e)) => {
                // Counted by the transport (malformed, rejected, over budget, replayed SRTCP)
                // and the incoming streams (replayed SRTP, above).
                let counters = self.transport.counters();
                self.stats.dropped_malformed = counters.dropped_malformed;
                self.stats.dropped_rejected = counters.dropped_rejected;
                self.stats.dropped_rtcp_oversized = counters.dropped_rtcp_oversized;
                self.stats.dropped_rtcp_over_budget = counters.dropped_rtcp_over_budget;
                self.stats.dropped_rtcp_replayed = counters.dropped_rtcp_replayed;
                self.stats.dropped_dtls_over_budget = counters.dropped_dtls_over_budget;
                Err(e.into())
            }
        }
    }

    /// See [`authentic_stun_id`]: with the peer's credentials from its InitialSetup.
    fn authentic_stun_id(&self, contents: &[u8]) -> Option<[u8; 12]> {
        let (Some(setup), Some(crypto)) = (self.remote_setup.as_ref(), self.config.crypto.as_ref())
        else {
            return None;
        };
        let remote = IceCreds {
            ufrag: setup.ufrag.clone(),
            pass: setup.pwd.clone(),
        };
        authentic_stun_id(contents, &self.local_creds, &remote, crypto)
    }

    /// A TURN server sent something: an allocation (relayed candidate added to ICE and
    /// signaled), a failure, or a relayed datagram from the peer.
    fn handle_turn_event(
        &mut self,
        now: Instant,
        server: SocketAddr,
        relay: Option<SocketAddr>,
        event: TurnEvent,
    ) -> Result<(), P2pCallError> {
        match event {
            TurnEvent::Data { peer, payload } => {
                let Some(relay) = relay else {
                    return Ok(());
                };
                self.stats.turn_relayed_in += 1;
                let datagram = Datagram {
                    source: peer,
                    destination: relay,
                    contents: &payload,
                };
                self.handle_ice_datagram(now, datagram)
            }
            TurnEvent::Failed(e) => {
                self.turn_failed(server, &e);
                Ok(())
            }
            TurnEvent::PermissionFailed { ip, code } => {
                tracing::debug!(%server, %ip, code, "TURN permission refused");
                self.stats.turn_permissions_failed += 1;
                Ok(())
            }
            TurnEvent::Handled => Ok(()),
            TurnEvent::Allocated { relay, .. } => self.add_relay_candidate(now, relay),
        }
    }

    fn turn_failed(&mut self, server: SocketAddr, e: &TurnError) {
        tracing::debug!(%server, "TURN allocation failed: {e}");
        self.stats.turn_failed += 1;
        self.local_relays
            .retain(|(relay, _)| self.turn.iter().any(|c| c.relay() == Some(*relay)));
    }

    fn add_relay_candidate(&mut self, now: Instant, relay: SocketAddr) -> Result<(), P2pCallError> {
        let candidate = match Candidate::relayed(relay, self.config.local_addr, "udp") {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%relay, "unusable relayed address: {e}");
                self.stats.turn_failed += 1;
                return Ok(());
            }
        };
        let line = self.add_local_candidate(candidate);
        self.local_relays.push((relay, line.clone()));
        self.stats.turn_allocations += 1;
        tracing::debug!(role = ?self.config.role, %relay, "relayed candidate");
        // Permissions for the peer candidates we already know.
        for addr in self.remote_addrs.clone() {
            for client in &mut self.turn {
                if !client.ensure_permission(addr.ip(), now) {
                    self.stats.turn_permissions_failed += 1;
                }
            }
        }
        self.trickle(now, line)
    }

    /// Gives a gathered candidate our ufrag and to str0m; returns its SDP line.
    fn add_local_candidate(&mut self, mut candidate: Candidate) -> String {
        candidate.set_ufrag(&self.local_creds.ufrag);
        let line = candidate.to_sdp_string();
        self.transport.rtc().add_local_candidate(candidate);
        line
    }

    /// Signals a candidate gathered after our `InitialSetup` went out in a `Candidates`
    /// message; before that it goes with the setup (see `send_local_setup`).
    fn trickle(&mut self, now: Instant, line: String) -> Result<(), P2pCallError> {
        if !self.local_sent {
            return Ok(());
        }
        let message = SignalingMessage::Candidates(Candidates {
            candidates: vec![line],
        });
        if let Err(e) = self.send_message(&message, now) {
            self.end(P2pEndReason::Channel(e.to_string()));
            return Err(e.into());
        }
        Ok(())
    }

    /// A datagram str0m sends from a relayed candidate goes to its TURN server in a Send
    /// indication (with a permission for the destination IP).
    fn through_relay(&mut self, t: Transmit) -> Transmit {
        let now = self.last_now;
        let Some(client) = self.turn.iter_mut().find(|c| c.relay() == Some(t.source)) else {
            return t;
        };
        if !client.ensure_permission(t.destination.ip(), now) {
            self.stats.turn_permissions_failed += 1;
        }
        self.stats.turn_relayed_out += 1;
        Transmit {
            source: self.config.local_addr,
            destination: client.server(),
            contents: client.send_indication(t.destination, &t.contents),
        }
    }

    /// A STUN server answered: a new server-reflexive candidate is added to ICE and signaled.
    fn handle_stun_event(&mut self, now: Instant, event: GatherEvent) -> Result<(), P2pCallError> {
        let mapped = match event {
            GatherEvent::Mapped { mapped, .. } => mapped,
            GatherEvent::Failed { server, code } => {
                tracing::debug!(%server, code, "STUN server refused the binding");
                self.stats.stun_failed += 1;
                return Ok(());
            }
            GatherEvent::Ignored => {
                self.stats.stun_responses_ignored += 1;
                return Ok(());
            }
        };
        let base = self.config.local_addr;
        if mapped == base || self.local_srflx.iter().any(|(addr, _)| *addr == mapped) {
            self.stats.stun_redundant += 1;
            return Ok(());
        }
        let candidate = match Candidate::server_reflexive(mapped, base, "udp") {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%mapped, "unusable mapped address: {e}");
                self.stats.stun_failed += 1;
                return Ok(());
            }
        };
        let line = self.add_local_candidate(candidate);
        self.local_srflx.push((mapped, line.clone()));
        self.stats.stun_srflx_candidates += 1;
        tracing::debug!(role = ?self.config.role, %mapped, "server-reflexive candidate");
        self.trickle(now, line)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, P2pState::Ended(_)) {
            return;
        }
        self.signaling.handle_timeout(now);
        for server in self.stun.handle_timeout(now) {
            tracing::debug!(%server, "STUN server did not answer");
            self.stats.stun_failed += 1;
        }
        let mut failed = Vec::new();
        for client in &mut self.turn {
            if let Some(e) = client.handle_timeout(now) {
                failed.push((client.server(), e));
            }
        }
        for (server, e) in failed {
            self.turn_failed(server, &e);
        }
        if let Some(deadline) = self.connect_deadline
            && now >= deadline
        {
            self.end(P2pEndReason::ConnectTimeout);
            return;
        }
        if let Some(deadline) = self.disconnect_deadline()
            && now >= deadline
        {
            self.end(P2pEndReason::IceDisconnected);
            return;
        }
        // 1:1 datagrams may go through a TURN relay: they keep the regular path.
        let drive = if self.remote_setup.is_some() {
            Drive::Always
        } else {
            Drive::No
        };
        let (track, lateness) = (&mut self.track, &mut self.stats.lateness);
        let mut source_end = None;
        let result = self.transport.handle_timeout(now, drive, |out| {
            source_end = track.send_due(now, out, lateness);
        });
        self.stats.dtls_flight_resent = self.transport.counters().dtls_flight_resent;
        self.after_frames(source_end);
        if let Err(end) = result {
            self.end(P2pEndReason::from(end));
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), P2pCallError> {
        if matches!(self.state, P2pState::Ended(_)) {
            return Err(P2pCallError::Ended);
        }
        match cmd {
            Command::SetSource(source) => {
                self.track.set_source(now, source);
                self.stats.set_track_counters(self.track.counters());
            }
            Command::Mute => {
                self.track.mute();
            }
            Command::Unmute => {
                self.track.unmute();
            }
            Command::Pause => {
                self.track.pause(now);
            }
            Command::Resume => {
                self.track.resume(now);
            }
            Command::Hangup => {
                self.transport.close(self.remote_setup.is_some());
                self.end(P2pEndReason::Hangup);
            }
        }
        Ok(())
    }

    fn poll_rtc(&mut self) -> Option<Output> {
        loop {
            match self.transport.poll() {
                Polled::Timeout(_) => return None,
                Polled::Transmit(t) => return Some(self.sent(t)),
                Polled::Event(e) => {
                    if let Some(ev) = self.map_rtc_event(e) {
                        return Some(Output::Event(ev));
                    }
                }
                Polled::Failed(end) => {
                    self.end(P2pEndReason::from(end));
                    return self.events.pop_front().map(Output::Event);
                }
            }
        }
    }

    /// A datagram of the transport goes out (through a relay if it leaves from a relayed
    /// candidate): counted.
    fn sent(&mut self, t: Transmit) -> Output {
        let t = self.through_relay(t);
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += t.contents.len() as u64;
        Output::Transmit(t)
    }

    fn map_rtc_event(&mut self, e: str0m::Event) -> Option<Event> {
        match e {
            str0m::Event::Connected => {
                self.connect_deadline = None;
                self.connected_at = Some(self.last_now);
                // The callee (DTLS server) is done once its final flight is out; resend it
                // until the caller shows it got it (see `crate::flight`).
                self.transport.on_connected(self.last_now);
                self.set_state(P2pState::Connected);
                self.track.set_live(self.last_now);
                self.events.pop_front()
            }
            str0m::Event::IceConnectionStateChange(state) => {
                tracing::debug!(role = ?self.config.role, ?state, "ice state");
                None
            }
            str0m::Event::Closed => {
                self.end(P2pEndReason::Dtls(DtlsEnd::ClosedByPeer));
                self.events.pop_front()
            }
            // RTT and loss from RTCP receiver reports (PeerStats' RTT needs TWCC, not used).
            str0m::Event::MediaEgressStats(s) => {
                self.link.rtt = s.rtt.or(self.link.rtt);
                self.link.egress_loss = s.loss.or(self.link.egress_loss);
                None
            }
            str0m::Event::MediaIngressStats(s) => {
                self.link.rtt = s.rtt.or(self.link.rtt);
                self.link.ingress_loss = s.loss.or(self.link.ingress_loss);
                None
            }
            str0m::Event::RtpPacket(p) => {
                self.last_heard = Some(self.last_now);
                self.transport.on_confirmed();
                self.stats.packets_received += 1;
                self.stats.payload_bytes_received += p.payload.len() as u64;
                Some(Event::AudioReceived(self.incoming.on_rtp(p)))
            }
            _ => None,
        }
    }

    /// After the track sent its due frames: its counters into the stats, and a source that ran
    /// out or failed reported (the call stays up either way).
    fn after_frames(&mut self, source_end: Option<SourceEnd>) {
        self.stats.set_track_counters(self.track.counters());
        let Some(end) = source_end else {
            return;
        };
        if let SourceEnd::Failed(e) = &end {
            tracing::debug!(error = %e, "source failed");
        }
        self.events.push_back(Event::StreamEnded {
            track: TrackKind::Audio,
            error: end.error(),
        });
    }

    fn set_state(&mut self, state: P2pState) {
        if self.state != state {
            tracing::debug!(role = ?self.config.role, ?state, "p2p call state");
            self.state = state.clone();
            self.events.push_back(Event::StateChanged(state));
        }
    }

    fn end(&mut self, reason: P2pEndReason) {
        if matches!(self.state, P2pState::Ended(_)) {
            return;
        }
        self.track.stop();
        self.connect_deadline = None;
        self.set_state(P2pState::Ended(reason));
    }
}

/// The Opus payload type of an offered audio content that we can receive: Opus at 48 kHz on
/// [`P2P_OPUS_PT`] (str0m is configured with that one).
fn receivable_opus(content: &MediaContent) -> Option<&PayloadType> {
    if content.kind != ContentKind::Audio {
        return None;
    }
    content.payload_types.iter().find(|pt| {
        pt.id == P2P_OPUS_PT && pt.name.eq_ignore_ascii_case("opus") && pt.clockrate == 48_000
    })
}

/// Our answer to an offered audio `content` (tgcalls `getAnswer`): the offerer's SSRC and SSRC
/// groups, the one payload type we take (`opus`, with our parameters) and, of the offered RTP
/// header extensions, the audio level (the only one we read).
fn answer_content(content: &MediaContent, opus: &PayloadType) -> MediaContent {
    MediaContent {
        kind: ContentKind::Audio,
        ssrc: content.ssrc,
        ssrc_groups: content.ssrc_groups.clone(),
        payload_types: vec![PayloadType {
            id: opus.id,
            name: opus.name.clone(),
            clockrate: opus.clockrate,
            channels: opus.channels,
            feedback_types: Vec::new(),
            parameters: vec![
                ("minptime".to_owned(), "10".to_owned()),
                ("useinbandfec".to_owned(), "1".to_owned()),
            ],
        }],
        rtp_extensions: content
            .rtp_extensions
            .iter()
            .filter(|e| e.uri == URI_AUDIO_LEVEL)
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    //! Media negotiation against messages shaped as ntgcalls 3.0.5 / tgcalls `InstanceV2Impl`
    //! send them (ntgcalls/src/signaling/messages/negotiate_channels_message.cpp,
    //! wrtc/src/models/content_negotiation_context.cpp): the peer here is a bare
    //! [`EncryptedChannel`] the test writes JSON into.

    use super::*;
    use crate::crypto::generate_certificate;
    use crate::signaling::p2p::EncryptedChannel;
    use crate::signaling::p2p::dh::DH_BYTES;

    /// The offer the real ntgcalls 3.0.5 sent as the caller (see testdata/README.md): audio
    /// (Opus 111 first, then red, G722, PCMU, PCMA, CN, telephone-event; abs-send-time 2,
    /// transport-cc 3) and video (VP8, VP9, AV1, H264, RTX).
    const NTGCALLS_OFFER: &str = include_str!("signaling/p2p/testdata/ntgcalls-3.0.5-offer.json");
    const NTGCALLS_SSRC: u32 = 4_117_331_399;
    const NTGCALLS_EXCHANGE: u32 = 591_650_521;

    fn keys() -> CallKey {
        let mut key = [0u8; DH_BYTES];
        fastrand::Rng::with_seed(7).fill(&mut key);
        CallKey::from_parts(key, &[3u8; DH_BYTES])
    }

    fn call(role: Role, now: Instant) -> P2pCall {
        let cert = generate_certificate().expect("certificate");
        let addr = SocketAddr::from(([10, 0, 0, 2], 40_000));
        P2pCall::new(now, P2pConfig::new(role, keys(), 9, cert, addr)).expect("call")
    }

    /// The other end's channel.
    fn peer(role: Role) -> EncryptedChannel {
        let other = match role {
            Role::Caller => Role::Callee,
            Role::Callee => Role::Caller,
        };
        EncryptedChannel::new(keys().as_bytes(), other, Framing::Reliable)
    }

    /// Everything the call said, decrypted by the peer.
    fn said(
        call: &mut P2pCall,
        peer: &mut EncryptedChannel,
        now: Instant,
    ) -> Vec<SignalingMessage> {
        let mut out = Vec::new();
        loop {
            match call.poll_output() {
                Output::Signaling(bytes) => {
                    let received = peer.receive(&bytes, now).expect("our packet decrypts");
                    for m in received.messages {
                        out.push(SignalingMessage::parse(&m).expect("our message parses"));
                    }
                }
                Output::Timeout(_) => return out,
                Output::Transmit(_) | Output::Event(_) => {}
            }
        }
    }

    fn tell(call: &mut P2pCall, peer: &mut EncryptedChannel, json: &str, now: Instant) {
        let packet = peer.send(json.as_bytes(), now).expect("peer encrypts");
        call.handle_input(now, Input::Signaling(&packet))
            .expect("the call takes the message");
    }

    fn negotiations(messages: &[SignalingMessage]) -> Vec<NegotiateChannels> {
        messages
            .iter()
            .filter_map(|m| match m {
                SignalingMessage::NegotiateChannels(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// ntgcalls calling us sends its offer before its InitialSetup (the offer is sent at once,
    /// the setup after a hop to its network thread). We answer with its own SSRC under its
    /// `exchangeId`, taking only Opus and none of its extensions, then offer our audio.
    #[test]
    fn callee_mirrors_the_callers_offer_then_offers_its_own() {
        let now = Instant::now();
        let mut ours = call(Role::Callee, now);
        let mut theirs = peer(Role::Callee);
        assert!(
            said(&mut ours, &mut theirs, now).is_empty(),
            "the callee waits"
        );
        tell(&mut ours, &mut theirs, NTGCALLS_OFFER, now);
        let sent = negotiations(&said(&mut ours, &mut theirs, now));
        assert_eq!(sent.len(), 2, "{sent:?}");
        let answer = &sent[0];
        assert_eq!(answer.exchange_id, NTGCALLS_EXCHANGE);
        assert_eq!(answer.contents.len(), 1);
        let content = &answer.contents[0];
        assert_eq!(
            content.ssrc,
            Ssrc(NTGCALLS_SSRC),
            "the answer names the offerer's SSRC"
        );
        assert_eq!(content.kind, ContentKind::Audio);
        let names: Vec<_> = content
            .payload_types
            .iter()
            .map(|p| (p.id, p.name.as_str()))
            .collect();
        assert_eq!(names, [(111, "opus")]);
        assert!(
            content.rtp_extensions.is_empty(),
            "{:?}",
            content.rtp_extensions
        );
        assert_eq!(ours.remote_ssrc(), Some(Ssrc(NTGCALLS_SSRC)));

        let offer = &sent[1];
        assert_ne!(offer.exchange_id, NTGCALLS_EXCHANGE);
        assert_eq!(offer.contents, vec![ours.local_content()]);
        assert!(!ours.is_negotiated());
        // ntgcalls answers with our SSRC (and only the codecs it takes).
        let mut answer = ours.local_content();
        answer.payload_types[0].feedback_types.clear();
        let answer = SignalingMessage::NegotiateChannels(NegotiateChannels {
            exchange_id: offer.exchange_id,
            contents: vec![answer],
        });
        tell(&mut ours, &mut theirs, &answer.to_json(), now);
        assert!(ours.is_negotiated());
        assert!(
            negotiations(&said(&mut ours, &mut theirs, now)).is_empty(),
            "nothing more to offer"
        );
    }

    /// Calling ntgcalls: we offer at once; its answer mirrors our SSRC; then it offers its own
    /// audio, which we answer.
    #[test]
    fn caller_offers_then_answers_the_callees_offer() {
        let now = Instant::now();
        let mut ours = call(Role::Caller, now);
        let mut theirs = peer(Role::Caller);
        let first = said(&mut ours, &mut theirs, now);
        assert!(
            matches!(first[0], SignalingMessage::InitialSetup(_)),
            "{first:?}"
        );
        let offers = negotiations(&first);
        assert_eq!(offers.len(), 1);
        assert_eq!(offers[0].contents, vec![ours.local_content()]);
        let answer = SignalingMessage::NegotiateChannels(NegotiateChannels {
            exchange_id: offers[0].exchange_id,
            contents: offers[0].contents.clone(),
        });
        tell(&mut ours, &mut theirs, &answer.to_json(), now);
        assert!(ours.is_negotiated());
        assert_eq!(
            ours.remote_ssrc(),
            None,
            "a mirrored answer names no peer stream"
        );
        assert!(negotiations(&said(&mut ours, &mut theirs, now)).is_empty());

        tell(&mut ours, &mut theirs, NTGCALLS_OFFER, now);
        let sent = negotiations(&said(&mut ours, &mut theirs, now));
        assert_eq!(sent.len(), 1, "an answer, no new offer: {sent:?}");
        assert_eq!(sent[0].exchange_id, NTGCALLS_EXCHANGE);
        assert_eq!(sent[0].contents[0].ssrc, Ssrc(NTGCALLS_SSRC));
        assert_eq!(ours.remote_ssrc(), Some(Ssrc(NTGCALLS_SSRC)));
    }

    /// Both offered at once: the caller keeps its offer and ignores the callee's (tgcalls
    /// `setPendingAnswer` with `isOutgoing`), so the callee must offer again after answering.
    #[test]
    fn caller_ignores_an_offer_while_its_own_waits() {
        let now = Instant::now();
        let mut ours = call(Role::Caller, now);
        let mut theirs = peer(Role::Caller);
        let offers = negotiations(&said(&mut ours, &mut theirs, now));
        tell(&mut ours, &mut theirs, NTGCALLS_OFFER, now);
        assert!(negotiations(&said(&mut ours, &mut theirs, now)).is_empty());
        assert_eq!(ours.remote_ssrc(), None);
        assert_eq!(ours.stats().signaling_ignored, 1);
        // The callee's answer, then its offer again.
        let answer = SignalingMessage::NegotiateChannels(NegotiateChannels {
            exchange_id: offers[0].exchange_id,
            contents: offers[0].contents.clone(),
        });
        tell(&mut ours, &mut theirs, &answer.to_json(), now);
        tell(&mut ours, &mut theirs, NTGCALLS_OFFER, now);
        let sent = negotiations(&said(&mut ours, &mut theirs, now));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].exchange_id, NTGCALLS_EXCHANGE);
    }

    /// The callee drops its own waiting offer to answer the caller's, and offers again.
    #[test]
    fn callee_yields_to_the_callers_offer() {
        let now = Instant::now();
        let mut ours = call(Role::Callee, now);
        let mut theirs = peer(Role::Callee);
        tell(&mut ours, &mut theirs, NTGCALLS_OFFER, now);
        let first = negotiations(&said(&mut ours, &mut theirs, now));
        let our_offer = first[1].exchange_id;
        // A second offer from the caller (another exchange) before it answered ours.
        let second = NTGCALLS_OFFER.replace("591650521", "17");
        tell(&mut ours, &mut theirs, &second, now);
        let sent = negotiations(&said(&mut ours, &mut theirs, now));
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0].exchange_id, 17);
        assert_ne!(sent[1].exchange_id, our_offer, "a new offer");
        assert_eq!(sent[1].contents, vec![ours.local_content()]);
    }

    /// Contents we cannot receive are left out of the answer: video, and audio without Opus
    /// on our payload type.
    #[test]
    fn answer_leaves_out_what_we_cannot_receive() {
        let now = Instant::now();
        let mut ours = call(Role::Callee, now);
        let mut theirs = peer(Role::Callee);
        let offer = r#"{"@type":"NegotiateChannels","exchangeId":"5","contents":[{"type":"video","ssrc":"11","ssrcGroups":[{"semantics":"FID","ssrcs":["11","12"]}],"payloadTypes":[{"id":96,"name":"VP8","clockrate":90000,"channels":0,"feedbackTypes":[],"parameters":{}}],"rtpExtensions":[]},{"type":"audio","ssrc":"13","payloadTypes":[{"id":109,"name":"opus","clockrate":48000,"channels":2,"feedbackTypes":[],"parameters":{}}],"rtpExtensions":[{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"}]},{"type":"audio","ssrc":"14","payloadTypes":[{"id":111,"name":"opus","clockrate":48000,"channels":2,"feedbackTypes":[],"parameters":{}}],"rtpExtensions":[{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"}]}]}"#;
        tell(&mut ours, &mut theirs, offer, now);
        let sent = negotiations(&said(&mut ours, &mut theirs, now));
        let answer = &sent[0];
        assert_eq!(answer.exchange_id, 5);
        assert_eq!(answer.contents.len(), 1);
        assert_eq!(answer.contents[0].ssrc, Ssrc(14));
        assert_eq!(
            answer.contents[0].rtp_extensions.len(),
            1,
            "audio level kept"
        );
        assert_eq!(ours.remote_ssrc(), Some(Ssrc(14)));
    }
}
