//! One group call: a sans-IO state machine around one [`str0m::Rtc`].
//!
//! A [`Call`] knows the Telegram parameters (what goes into the join payload, what came back
//! in the SFU's answer), the media source and its cursor (pause/mute/time), and its stats. It
//! sets str0m up through the direct API (no SDP) in the roles Telegram's own clients take
//! toward the SFU: **ICE-controlled** and **DTLS server** (`setup: "passive"` in the join
//! payload); see `telegram-signaling.md` §2.3-2.4 and tgcalls' `GroupNetworkManager.cpp`.
//!
//! The surface is push in ([`Call::handle_input`]), poll out ([`Call::poll_output`]). After
//! every `handle_input` the caller drains `poll_output` until it returns [`Output::Timeout`].

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::crypto::CryptoProvider;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::Ssrc as StrSsrc;
use str0m::{Candidate, IceCreds};

use crate::demux::{DatagramKind, classify, rtp_header};
use crate::incoming_video::{IncomingVideo, IncomingVideoCounters, ReceivedVideo};
use crate::media::track::{
    AudioTrack, IncomingStreams, ReceivedAudio, RtpSender, SourceEnd, TrackKind, TrackStats,
};
use crate::media::video::{VIDEO_CLOCK_RATE_HZ, VideoCodec, VideoSource};
use crate::media::video_track::{VideoCounters, VideoTrack};
use crate::media::{FrameSource, OPUS_CLOCK_RATE_HZ, SourceError};
use crate::pacer::LatenessHistogram;
use crate::replay::RecentTransactions;
use crate::signaling::group::{
    AUDIO_LEVEL_DEFAULT_ID, DtlsFingerprint, JoinPayload, JoinResponse, SsrcGroup, URI_AUDIO_LEVEL,
    fingerprint_hex, parse_fingerprint_hex,
};
use crate::signaling::{SignalingError, Ssrc};
use crate::transport::add_video_codec;
use crate::transport::{
    Datagram, Drive, Polled, ReceiveError, Transport, TransportEnd, opus_rtc_config,
    random_ice_creds,
};
pub use crate::transport::{DatagramError, DtlsEnd, RejectReason, RtcErrorKind};

/// How long a call may take from [`Call::connect`] to a working DTLS-SRTP path before it
/// fails with [`EndReason::ConnectTimeout`]. ntgcalls uses the same order of magnitude.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often str0m reports peer and egress stats (which carry the RTCP round-trip time).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The mid we give the single audio media section. Telegram's SFU never sees it (no SDP, and
/// we do not send the MID header extension), so any value works; "0" mirrors a BUNDLE offer.
const AUDIO_MID: &str = "0";

/// The mid of the video media section (never on the wire either).
const VIDEO_MID: &str = "1";

pub use crate::media::track::{FRAME_SEND_AHEAD, INITIAL_SEQ_LIMIT, MediaState};

/// Retransmissions (RTX) a call with video sends per second at most. str0m answers every NACK
/// from its RTX cache ([`RTX_CACHE_PACKETS`], 3 s) and its own cap (retransmitted bytes under 15 % of
/// the stream's, re-evaluated every 50 ms) let a NACK storm draw 12 RTX packets per video
/// packet (`tests::hostile`). Once a second's budget is spent the call empties str0m's RTX
/// cache until the second is over, so NACKs find nothing to resend and cost no encryption.
/// A camera stream of 30 frames per second loses ~1 packet in 10 at 10 % loss; this is far
/// above what loss asks for.
pub const RTX_BUDGET_PER_SEC: u64 = 50;

/// str0m's RTX cache for our video stream: 1,024 packets over 3 s (str0m's documented
/// default).
const RTX_CACHE_PACKETS: usize = 1_024;
/// See [`RTX_CACHE_PACKETS`].
const RTX_CACHE_AGE: Duration = Duration::from_secs(3);
/// str0m's default `rtx_ratio_cap`.
const RTX_RATIO_CAP: f32 = 0.15;

/// Upper bound on the remote SSRCs a call will accept audio from (other speakers forwarded by
/// the SFU). A hostile SFU cannot make us allocate a receive stream per random SSRC.
const MAX_REMOTE_SSRCS: usize = 64;

/// Static configuration of one call.
#[derive(Clone)]
pub struct CallConfig {
    /// Seed for everything the call picks at random: ICE ufrag/pwd, SSRC, initial RTP sequence
    /// number and timestamp. Same seed, same choices.
    pub seed: u64,
    /// The DTLS certificate. Generating one needs OS randomness, so the caller supplies it
    /// (the runtime keeps a pool, the simulator a fixed one).
    pub dtls_cert: DtlsCert,
    /// Crypto provider for str0m. `None` uses str0m's default from its feature flags.
    pub crypto: Option<Arc<CryptoProvider>>,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// ICE timers (keepalive, retransmissions, how long a lost path may stay lost).
    pub ice: IceTimings,
    /// Wait this long after [`Call::connect`] before starting ICE (ntgcalls waits for the
    /// SFU to install the participant; zero by default).
    pub pre_connect_delay: Duration,
    /// Largest UDP payload str0m may emit (DTLS handshake fragments included), for paths with
    /// a lower MTU. `None` keeps str0m's default (`str0m::DATAGRAM_MTU_TARGET`, 1150 bytes).
    /// Must be within `str0m::DATAGRAM_MTU_TARGET_MIN..=str0m::DATAGRAM_MTU_TARGET_MAX`
    /// (576..=1500), else [`Call::connect`] fails with [`CallError::Config`].
    pub mtu: Option<usize>,
    /// Announce a camera track sent with this codec: the join payload then carries the video
    /// SSRC and its RTX SSRC (`ssrc-groups`: one `FID` group, a single layer) and
    /// [`Call::connect`] takes the codec's payload types from the answer's `video` section.
    /// `None` (the default): audio only, as before.
    pub video: Option<VideoCodec>,
    /// Simulcast layers the join payload announces for the video track: 1 (a camera: one
    /// `FID` group) or 2 (a presentation, as ntgcalls announces a screen: a `SIM` group of two
    /// layers, each with its `FID` group; telegram-signaling.md §1, §2.7). Only layer 0 is
    /// sent, which is what a Telegram client sends until the SFU's bandwidth feedback.
    pub video_layers: u8,
}

/// ICE timing knobs, passed to str0m's ICE agent and to the call's own disconnect handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceTimings {
    /// First STUN retransmission timeout (str0m default 250 ms; doubles per retry).
    pub initial_rto: Duration,
    /// Keepalive: how often a working pair is re-checked (str0m's max RTO, default 3 s).
    pub keepalive: Duration,
    /// STUN retransmissions before a check or a pair fails: the ICE binding budget
    /// (str0m default 9).
    pub max_retransmits: usize,
    /// Consent freshness (RFC 7675): once connected, a call that receives nothing from the
    /// SFU for this long (no STUN that passes integrity checks, no SRTP that decrypts) fails
    /// with [`EndReason::IceDisconnected`].
    /// Must exceed `keepalive`: our own checks, answered, are what a quiet SFU sends us.
    pub failed_after: Duration,
}

impl Default for IceTimings {
    fn default() -> Self {
        Self {
            initial_rto: Duration::from_millis(250),
            keepalive: Duration::from_secs(3),
            max_retransmits: 9,
            failed_after: Duration::from_secs(10),
        }
    }
}

impl CallConfig {
    /// A configuration with default timeouts.
    pub fn new(seed: u64, dtls_cert: DtlsCert) -> Self {
        Self {
            seed,
            dtls_cert,
            crypto: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ice: IceTimings::default(),
            pre_connect_delay: Duration::ZERO,
            mtu: None,
            video: None,
            video_layers: 1,
        }
    }
}

impl fmt::Debug for CallConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallConfig")
            .field("seed", &self.seed)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Where a call is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallState {
    /// Created; the join payload exists but no SFU answer has been applied.
    New,
    /// The SFU's answer is applied; ICE and DTLS are in progress.
    Connecting,
    /// ICE, DTLS and SRTP are up; media flows.
    Connected,
    /// The call is over. No further datagrams are accepted.
    Ended(EndReason),
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// [`Command::Stop`] was handled.
    Stopped,
    /// No working path within [`CallConfig::connect_timeout`].
    ConnectTimeout,
    /// ICE lost the path after it had connected (consent checks failed).
    IceDisconnected,
    /// The peer closed DTLS (close_notify) or sent a fatal alert, or the handshake failed.
    Dtls(DtlsEnd),
    /// The certificate the SFU presented in the DTLS handshake does not match the fingerprint
    /// in its answer (`transport.fingerprints`): someone else may be on the path. str0m
    /// checks this before any SRTP key is used, so no media was sent on the call.
    FingerprintMismatch,
    /// str0m reported an unrecoverable error (which part of it; the text is logged at debug).
    Transport(RtcErrorKind),
    /// The call's processing panicked (a bug in ringcast or below): the call ended alone, the
    /// shard and its other calls went on. The panic's message.
    Panicked(String),
}

impl EndReason {
    /// True for every reason but a local [`Command::Stop`].
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Stopped)
    }
}

/// Commands a caller can give a call.
#[non_exhaustive]
pub enum Command {
    /// Play frames from this source, replacing any current one.
    SetSource(Box<dyn FrameSource>),
    /// Stop sending; the played time stops too.
    Pause,
    /// Continue after [`Command::Pause`].
    Resume,
    /// Keep the stream going but send silence (the source keeps advancing).
    Mute,
    /// Undo [`Command::Mute`].
    Unmute,
    /// Play video frames from this source on the camera track, replacing any current one.
    /// Fails with [`CallError::Config`] for a call created without
    /// [`CallConfig::video`] or a source of another codec.
    SetVideoSource(Box<dyn VideoSource>),
    /// Remove the video source: nothing more is sent on the camera track.
    ClearVideoSource,
    /// Stop sending video while the source keeps running (ntgcalls' `video_stopped`).
    StopVideo,
    /// Undo [`Command::StopVideo`]; sending resumes at the next key frame.
    StartVideo,
    /// Receive another participant's video (ntgcalls' `add_incoming_video`): its frames arrive
    /// as [`Event::VideoReceived`]. The SFU is asked for it over the data channel, which the
    /// first source opens. Fails with [`CallError::IncomingVideo`] past the bounds of
    /// [`crate::incoming_video`].
    AddIncomingVideo {
        /// The participant's video endpoint (its `video.endpoint` in Telegram's updates).
        endpoint: String,
        /// Its `video.source_groups` (SIM and FID groups).
        ssrc_groups: Vec<SsrcGroup>,
    },
    /// Stop receiving an endpoint's video (ntgcalls' `remove_incoming_video`).
    RemoveIncomingVideo {
        /// As given to [`Command::AddIncomingVideo`].
        endpoint: String,
    },
    /// End the call ([`EndReason::Stopped`]).
    Stop,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::SetSource(_) => "SetSource",
            Self::Pause => "Pause",
            Self::Resume => "Resume",
            Self::Mute => "Mute",
            Self::Unmute => "Unmute",
            Self::SetVideoSource(_) => "SetVideoSource",
            Self::ClearVideoSource => "ClearVideoSource",
            Self::StopVideo => "StopVideo",
            Self::StartVideo => "StartVideo",
            Self::AddIncomingVideo { .. } => "AddIncomingVideo",
            Self::RemoveIncomingVideo { .. } => "RemoveIncomingVideo",
            Self::Stop => "Stop",
        };
        f.write_str(name)
    }
}

/// Input to [`Call::handle_input`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// The deadline from [`Output::Timeout`] has passed (or any time: spurious wakeups are fine).
    Timeout,
    /// A datagram arrived on the call's socket (its destination is the `local_addr` given to
    /// [`Call::connect`]).
    Datagram(Datagram<'a>),
    /// A command from the application.
    Command(Command),
}

/// A datagram to send. Plain data, as quinn-udp's and str0m's `Transmit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address to send from.
    pub source: SocketAddr,
    /// The remote address to send to.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed. A failure is `ConnectionChanged(CallState::Ended(r))` with
    /// `r.is_failure()`.
    ConnectionChanged(CallState),
    /// The source ran out of frames (`error: None`) or failed (`Some`). The call stays up,
    /// ready for the next source.
    StreamEnded {
        /// Which track's stream ended.
        track: TrackKind,
        /// The source error, if the stream ended because of one.
        error: Option<SourceError>,
    },
    /// Pause/mute changed.
    MediaStateChanged(MediaState),
    /// An Opus packet from another participant, forwarded by the SFU.
    AudioReceived(ReceivedAudio),
    /// A video frame (reassembled, still encoded) from a source added with
    /// [`Command::AddIncomingVideo`].
    VideoReceived(ReceivedVideo),
}

/// Output of [`Call::poll_output`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Deliver this event.
    Event(Event),
    /// Nothing more to do until this instant (or until the next input).
    Timeout(Instant),
}

/// Errors from [`Call`]'s methods. None of them ends the call by itself unless the docs of the
/// variant say so; a dropped datagram is also counted in [`CallStats`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The SFU's answer was not usable.
    #[error("invalid sfu answer: {0}")]
    Signaling(#[from] SignalingError),
    /// [`Call::connect`] was called twice.
    #[error("call is already connecting or connected")]
    AlreadyConnecting,
    /// The call has ended; nothing more is accepted.
    #[error("call has ended")]
    Ended,
    /// A datagram arrived before [`Call::connect`].
    #[error("datagram before connect")]
    NotConnecting,
    /// A datagram was refused and counted in [`CallStats`]. The call goes on.
    #[error(transparent)]
    Datagram(#[from] DatagramError),
    /// The configuration is unusable (for example an unspecified local address).
    #[error("invalid call config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// [`Command::AddIncomingVideo`] refused the source; the call goes on.
    #[error(transparent)]
    IncomingVideo(#[from] crate::incoming_video::IncomingVideoError),
}

/// Counters of one call. Every datagram the call drops is counted under its reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// RTP media packets handed to str0m (one per 20 ms frame sent).
    pub packets_sent: u64,
    /// Opus payload bytes of those packets.
    pub payload_bytes_sent: u64,
    /// Datagrams emitted (STUN, DTLS, SRTP, SRTCP).
    pub datagrams_sent: u64,
    /// Bytes of those datagrams.
    pub bytes_sent: u64,
    /// Datagrams received and accepted by str0m.
    pub datagrams_received: u64,
    /// Audio packets received from other participants.
    pub audio_packets_received: u64,
    /// Datagrams dropped because they were not parseable.
    pub dropped_malformed: u64,
    /// Datagrams str0m refused.
    pub dropped_rejected: u64,
    /// Datagrams that arrived before connect or after the end.
    pub dropped_not_live: u64,
    /// Frames skipped because the caller drove the call late.
    pub frames_skipped_late: u64,
    /// Packets from remote SSRCs beyond the first 64 a call accepts.
    pub dropped_unknown_ssrc: u64,
    /// SRTP packets refused as replays: their sequence number was already received, or is
    /// older than the replay window (see [`crate::replay`]). str0m drops these too, silently;
    /// these are counted here instead of in `datagrams_received`.
    pub dropped_replayed: u64,
    /// 48 kHz samples of media played (stops while paused), all sources together.
    pub played_samples: u64,
    /// Position in the current source in 48 kHz samples: its start offset plus what was
    /// played of it (ntgcalls' `time`).
    pub position_samples: u64,
    /// How late each frame was handed to str0m (`now` minus its due time).
    pub lateness: LatenessHistogram,
    /// Round-trip time to the SFU, from RTCP (str0m's peer/egress stats).
    pub rtt: Option<Duration>,
    /// DTLS datagrams of our final flight resent because the SFU had not yet shown it
    /// finished the handshake (see [`crate::flight`]).
    pub dtls_flight_resent: u64,
    /// The camera track's counters (all zero without video).
    pub video: VideoCounters,
    /// Authenticated STUN whose transaction id was already received (see
    /// [`crate::replay::RecentTransactions`]): a retransmission or a replay. It is handed to
    /// str0m, which answers a request again as RFC 5389 §7.3.1 asks of retransmissions (a
    /// replayed request costs one response to the SFU's own address; dropping it would fail
    /// the SFU's checks whenever our first answer is lost), but it is never a sign of life:
    /// it refreshes no consent.
    pub stun_replayed: u64,
    /// SRTCP refused as a replay: str0m authenticated it and found its SRTCP index already
    /// received from that sender (see [`crate::replay`]); its RTCP was not read.
    pub dropped_rtcp_replayed: u64,
    /// SRTCP datagrams above [`crate::transport::MAX_RTCP_DATAGRAM`] bytes, refused unread.
    pub dropped_rtcp_oversized: u64,
    /// SRTCP datagrams beyond [`crate::transport::RTCP_BUDGET_PER_SEC`], refused unread.
    pub dropped_rtcp_over_budget: u64,
    /// DTLS datagrams received once connected, within
    /// [`crate::transport::DTLS_BUDGET_PER_SEC`] (str0m ignores what it cannot use).
    pub dtls_received_connected: u64,
    /// DTLS datagrams beyond [`crate::transport::DTLS_BUDGET_PER_SEC`] once connected,
    /// refused unread.
    pub dropped_dtls_over_budget: u64,
    /// RTP packets, and RTCP compound packets from a sender, claiming one of our own SSRCs
    /// (audio, video or its RTX): refused.
    pub dropped_own_ssrc: u64,
    /// Retransmissions (RTX) sent in answer to NACKs.
    pub rtx_sent: u64,
    /// Seconds in which [`RTX_BUDGET_PER_SEC`] was spent and str0m's RTX cache emptied (NACKs
    /// left unanswered until the second was over).
    pub rtx_budget_spent: u64,
    /// REMB bitrate estimates received from the SFU. They change nothing: a call sends at its
    /// source's rate (a REMB of zero does not stop it).
    pub remb_received: u64,
    /// Other participants' video ([`Command::AddIncomingVideo`]) and the data channel.
    pub incoming_video: IncomingVideoCounters,
}

/// Media plumbing that exists once the SFU's answer is applied.
struct Session {
    /// The str0m instance and what we keep around it (final flight, close handshake).
    transport: Transport,
    /// The local address (the socket's concrete bound address).
    local_addr: SocketAddr,
    /// The SFU candidates' addresses.
    remotes: Vec<SocketAddr>,
    /// The SFU's ICE credentials, to authenticate its STUN before str0m sees it.
    remote_creds: IceCreds,
}

/// The camera track of a call with video: the codec it was created for, its RTX SSRC and the
/// track.
struct Camera {
    codec: VideoCodec,
    rtx: Ssrc,
    track: VideoTrack,
    /// The current second of [`RTX_BUDGET_PER_SEC`]: when it started and what was sent in it.
    rtx_window: Option<(Instant, u64)>,
    /// str0m's RTX cache is emptied until the current second is over.
    rtx_suspended: bool,
}

/// One call to a Telegram-style SFU. See the [module docs](self).
pub struct Call {
    config: CallConfig,
    local_creds: IceCreds,
    local_fingerprint: DtlsFingerprint,
    state: CallState,
    session: Option<Session>,
    connect_deadline: Option<Instant>,
    /// Our outgoing audio: source, pause/mute, pacing, sequence numbers and RTP time.
    track: AudioTrack,
    /// Our outgoing video, when [`CallConfig::video`] is set.
    video: Option<Camera>,
    /// Other speakers' audio: accepted SSRCs and their replay windows.
    incoming: IncomingStreams,
    /// Other participants' video and the data channel that asks the SFU for it.
    incoming_video: IncomingVideo,
    /// ICE starts at this instant (pre-connect delay); `None` once started.
    ice_start_at: Option<Instant>,
    /// When the SFU was last heard from (any datagram str0m accepted), for consent freshness.
    last_heard: Option<Instant>,
    events: VecDeque<Event>,
    stats: CallStats,
    last_now: Instant,
    /// Transaction ids of the last authenticated STUN received, to refuse replays.
    stun_seen: RecentTransactions,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("state", &self.state)
            .field("track", &self.track)
            .finish_non_exhaustive()
    }
}

/// The `ssrc-groups` of a video track with `layers` simulcast layers in ntgcalls' layout:
/// layer `i` is `media + 2i` with its RTX `media + 2i + 1` (one `FID` each), listed in a
/// `SIM` group when there is more than one.
fn video_ssrc_groups(media: Ssrc, rtx: Ssrc, layers: u8) -> Vec<SsrcGroup> {
    let layers = u32::from(layers.max(1));
    let fid = |i: u32| SsrcGroup {
        semantics: "FID".to_owned(),
        sources: if i == 0 {
            vec![media, rtx]
        } else {
            vec![Ssrc(media.0 + 2 * i), Ssrc(media.0 + 2 * i + 1)]
        },
    };
    let mut groups = Vec::new();
    if layers > 1 {
        groups.push(SsrcGroup {
            semantics: "SIM".to_owned(),
            sources: (0..layers).map(|i| Ssrc(media.0 + 2 * i)).collect(),
        });
    }
    groups.extend((0..layers).map(fid));
    groups
}

impl Call {
    /// Creates a call. Nothing is sent until [`Call::connect`] applies the SFU's answer.
    pub fn new(now: Instant, config: CallConfig) -> Result<Self, CallError> {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let local_creds = random_ice_creds(&mut rng);
        // The payload type is the SFU's; it is set from the answer in `connect`.
        let rtp = RtpSender::random(&mut rng, Pt::from(0), OPUS_CLOCK_RATE_HZ);
        let ssrc = rtp.ssrc();
        // ntgcalls' layout: video SSRC = audio + 1, its RTX = audio + 2 (the audio SSRC is a
        // positive int32, so neither overflows). Drawn after the audio values, so a seed gives
        // the same audio stream with or without video.
        let video = config.video.map(|codec| {
            let media = Ssrc(ssrc.0 + 1);
            let rtp = RtpSender::new(
                media,
                Pt::from(0),
                VIDEO_CLOCK_RATE_HZ,
                u64::from(rng.u16(..crate::media::track::INITIAL_SEQ_LIMIT)),
                rng.u32(..),
            );
            Camera {
                codec,
                rtx: Ssrc(ssrc.0 + 2),
                track: VideoTrack::new(rtp),
                rtx_window: None,
                rtx_suspended: false,
            }
        });
        tracing::debug!(ssrc = ssrc.0, video = ?config.video, "call created");
        let crypto = config
            .crypto
            .clone()
            .unwrap_or_else(|| Arc::new(str0m::crypto::from_feature_flags()));
        let digest = crypto.sha256_provider.sha256(&config.dtls_cert.certificate);
        let local_fingerprint = DtlsFingerprint {
            hash: "sha-256".to_owned(),
            setup: "passive".to_owned(),
            fingerprint: fingerprint_hex(&digest),
        };
        Ok(Self {
            config: CallConfig {
                crypto: Some(crypto),
                ..config
            },
            local_creds,
            local_fingerprint,
            state: CallState::New,
            session: None,
            connect_deadline: None,
            track: AudioTrack::new(rtp),
            video,
            incoming: IncomingStreams::new(ssrc, Mid::from(AUDIO_MID), MAX_REMOTE_SSRCS),
            incoming_video: IncomingVideo::new(),
            ice_start_at: None,
            last_heard: None,
            events: VecDeque::new(),
            stats: CallStats::default(),
            last_now: now,
            stun_seen: RecentTransactions::new(),
        })
    }

    /// The join payload to send with `phone.joinGroupCall` (or to the sfu-mock's join URL).
    pub fn join_payload(&self) -> JoinPayload {
        JoinPayload {
            ufrag: self.local_creds.ufrag.clone(),
            pwd: self.local_creds.pass.clone(),
            fingerprints: vec![self.local_fingerprint.clone()],
            ssrc: self.audio_ssrc(),
            ssrc_groups: self
                .video
                .as_ref()
                .map(|c| video_ssrc_groups(c.track.rtp().ssrc(), c.rtx, self.config.video_layers))
                .unwrap_or_default(),
        }
    }

    /// The SSRCs of our camera track and its RTX stream, for a call with video.
    pub fn video_ssrcs(&self) -> Option<(Ssrc, Ssrc)> {
        self.video.as_ref().map(|c| (c.track.rtp().ssrc(), c.rtx))
    }

    /// The SSRC of our outgoing audio.
    pub fn audio_ssrc(&self) -> Ssrc {
        self.track.rtp().ssrc()
    }

    /// Our ICE username fragment; the demultiplexer routes STUN by it.
    pub fn local_ufrag(&self) -> &str {
        &self.local_creds.ufrag
    }

    /// The local address this call sends from, once connecting.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.session.as_ref().map(|s| s.local_addr)
    }

    /// The SFU addresses (from the answer's candidates) this call may talk to, once connecting.
    /// The runtime routes datagrams from these addresses to this call.
    pub fn remote_addrs(&self) -> &[SocketAddr] {
        self.session.as_ref().map_or(&[], |s| &s.remotes)
    }

    /// Current state.
    pub fn state(&self) -> &CallState {
        &self.state
    }

    /// Pause/mute state.
    pub fn media_state(&self) -> MediaState {
        MediaState {
            video_stopped: self.camera().is_some_and(VideoTrack::is_muted),
            ..self.track.media_state()
        }
    }

    /// Counters.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// The camera track, for a call with video.
    fn camera(&self) -> Option<&VideoTrack> {
        self.video.as_ref().map(|c| &c.track)
    }

    /// See [`Call::camera`].
    fn camera_mut(&mut self) -> Option<&mut VideoTrack> {
        self.video.as_mut().map(|c| &mut c.track)
    }

    /// True while a video source is attached.
    pub fn has_video_source(&self) -> bool {
        self.camera().is_some_and(VideoTrack::has_source)
    }

    /// Duration of media played so far (stops while paused). ntgcalls calls this `time`.
    pub fn played(&self) -> Duration {
        self.track.played()
    }

    /// Hands `f` the lateness (time handed to str0m minus due time) of every frame sent since
    /// the last call, and forgets them.
    pub fn drain_frame_lateness(&mut self, f: impl FnMut(Duration)) {
        self.track.drain_frame_lateness(f);
    }

    /// True while a source is attached.
    pub fn has_source(&self) -> bool {
        self.track.has_source()
    }

    /// Applies the SFU's answer: remote ICE credentials, candidates, DTLS fingerprint, Opus
    /// payload type and the audio-level extension id. Starts ICE and the connect timer.
    ///
    /// `local_addr` is the exact address the call's socket is bound to: str0m drops STUN whose
    /// destination is not a local candidate, so `0.0.0.0` does not work (str0m-notes.md §8).
    pub fn connect(
        &mut self,
        now: Instant,
        response: &JoinResponse,
        local_addr: SocketAddr,
    ) -> Result<(), CallError> {
        if local_addr.ip().is_unspecified() || local_addr.port() == 0 {
            return Err(CallError::Config {
                reason: format!("local address {local_addr} must be the concrete bound address"),
            });
        }
        match self.state {
            CallState::New => {}
            CallState::Ended(_) => return Err(CallError::Ended),
            _ => return Err(CallError::AlreadyConnecting),
        }
        self.last_now = now;
        let remote_fp = response
            .transport
            .fingerprints
            .iter()
            .find(|f| f.hash.eq_ignore_ascii_case("sha-256"))
            .ok_or_else(|| SignalingError::InvalidField {
                field: "transport.fingerprints".to_owned(),
                reason: "no sha-256 fingerprint".to_owned(),
            })?;
        let remote_fp_bytes = parse_fingerprint_hex(&remote_fp.fingerprint).ok_or_else(|| {
            SignalingError::InvalidField {
                field: "transport.fingerprints[].fingerprint".to_owned(),
                reason: "not colon-separated hex".to_owned(),
            }
        })?;

        let video_pts = match &self.video {
            Some(Camera { codec, .. }) => {
                Some(response.video_payload_types(*codec).ok_or_else(|| {
                    SignalingError::InvalidField {
                        field: "video.payload-types".to_owned(),
                        reason: format!("no {codec} payload type with an rtx payload type"),
                    }
                })?)
            }
            None => None,
        };
        let pt = response.opus_pt();
        let level_id = response
            .audio_extension_id(URI_AUDIO_LEVEL)
            .unwrap_or(AUDIO_LEVEL_DEFAULT_ID);

        // Only the ssrc-audio-level extension: Telegram's SFU reads it for speaker selection and
        // drops audio without it; we do not send MID/TWCC/abs-send-time because we do not run
        // bandwidth estimation for audio.
        let mut rtc_config = opus_rtc_config(
            &self.local_creds,
            &self.config.dtls_cert,
            self.config.crypto.as_ref(),
            pt,
            level_id,
        );
        if let Some(mtu) = self.config.mtu {
            let range = str0m::DATAGRAM_MTU_TARGET_MIN..=str0m::DATAGRAM_MTU_TARGET_MAX;
            if !range.contains(&mtu) {
                return Err(CallError::Config {
                    reason: format!("mtu {mtu} outside {range:?}"),
                });
            }
            // Warn threshold = target: str0m then flags anything it could not fit.
            rtc_config = rtc_config.set_mtu(mtu..=mtu);
        }
        if let (Some(camera), Some((vpt, rtx_pt))) = (&self.video, video_pts) {
            add_video_codec(&mut rtc_config, camera.codec, vpt, rtx_pt);
        }
        // Incoming video is read in whichever codec the answer lists (the SFU forwards what the
        // sender sends); an answer without a video section receives none.
        let receive_pts = [VideoCodec::Vp8, VideoCodec::H264]
            .map(|codec| (codec, response.video_payload_types(codec)));
        for (codec, pts) in receive_pts {
            let is_camera = self.video.as_ref().is_some_and(|c| c.codec == codec);
            if let (Some((vpt, rtx_pt)), false) = (pts, is_camera) {
                add_video_codec(&mut rtc_config, codec, vpt, rtx_pt);
            }
        }
        if let [(_, Some((vp8, _))), (_, Some((h264, _)))] = receive_pts {
            self.incoming_video.set_payload_types(vp8, h264);
        }
        rtc_config.set_initial_stun_rto(self.config.ice.initial_rto);
        rtc_config.set_max_stun_rto(self.config.ice.keepalive);
        rtc_config.set_max_stun_retransmits(self.config.ice.max_retransmits);
        // Peer stats carry the RTT str0m measures from RTCP receiver reports.
        let rtc_config = rtc_config.set_stats_interval(Some(STATS_INTERVAL));
        let mut rtc = rtc_config.build(now);

        let local = Candidate::host(local_addr, "udp").map_err(|e| CallError::Config {
            reason: format!("local candidate: {e}"),
        })?;
        rtc.add_local_candidate(local);
        let mut remotes = Vec::new();
        for c in &response.transport.candidates {
            // An IPv4 socket cannot reach an IPv6 candidate (and vice versa): skip them.
            if c.address().is_ipv4() != local_addr.is_ipv4() {
                continue;
            }
            match Candidate::host(c.address(), "udp") {
                Ok(cand) => {
                    rtc.add_remote_candidate(cand);
                    remotes.push(c.address());
                }
                Err(e) => tracing::debug!(addr = %c.address(), "skipping sfu candidate: {e}"),
            }
        }
        if remotes.is_empty() {
            return Err(SignalingError::InvalidField {
                field: "transport.candidates".to_owned(),
                reason: "no usable udp candidate".to_owned(),
            }
            .into());
        }
        let mid = Mid::from(AUDIO_MID);
        {
            let mut api = rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds {
                ufrag: response.transport.ufrag.clone(),
                pass: response.transport.pwd.clone(),
            });
            api.set_remote_fingerprint(str0m::config::Fingerprint {
                hash_func: "sha-256".to_owned(),
                bytes: remote_fp_bytes,
            });
            // Telegram's clients are ICE-controlled toward the SFU (tgcalls hardcodes
            // isOutgoing = false) and DTLS server (setup "passive").
            api.set_ice_controlling(false);
            api.start_dtls(false).map_err(|e| CallError::Config {
                reason: format!("start dtls: {e}"),
            })?;
            api.declare_media(mid, MediaKind::Audio);
            // No RTX for Telegram's audio (no NACKs are answered): no retransmission cache,
            // which str0m would otherwise allocate per send stream (~4 KB per call).
            api.declare_stream_tx(StrSsrc::from(self.audio_ssrc().0), None, mid, None)
                .set_rtx_cache(0, Duration::ZERO, None);
            if let Some(Camera { rtx, track, .. }) = &self.video {
                // Video keeps a history (NACKs answered on the RTX stream, within
                // RTX_BUDGET_PER_SEC).
                let vmid = Mid::from(VIDEO_MID);
                api.declare_media(vmid, MediaKind::Video);
                api.declare_stream_tx(
                    StrSsrc::from(track.rtp().ssrc().0),
                    Some(StrSsrc::from(rtx.0)),
                    vmid,
                    None,
                )
                .set_rtx_cache(
                    RTX_CACHE_PACKETS,
                    RTX_CACHE_AGE,
                    Some(RTX_RATIO_CAP),
                );
            }
        }
        // str0m schedules nothing until it has seen a first timeout: start ICE now, or after
        // the pre-connect delay.
        if self.config.pre_connect_delay.is_zero() {
            if let Err(e) = rtc.handle_input(str0m::Input::Timeout(now)) {
                return Err(CallError::Config {
                    reason: format!("starting ice: {e}"),
                });
            }
        } else {
            self.ice_start_at = Some(now + self.config.pre_connect_delay);
        }
        self.track.set_payload_type(pt.into());
        if let (Some(track), Some((vpt, _))) = (self.camera_mut(), video_pts) {
            track.set_payload_type(vpt.into());
        }
        self.session = Some(Session {
            // Telegram's clients are the DTLS server toward the SFU.
            transport: Transport::new(rtc, true),
            local_addr,
            remotes,
            remote_creds: IceCreds {
                ufrag: response.transport.ufrag.clone(),
                pass: response.transport.pwd.clone(),
            },
        });
        if self.incoming_video.wanted()
            && let Some(session) = self.session.as_mut()
        {
            self.incoming_video.apply(session.transport.rtc());
        }
        self.connect_deadline =
            Some(now + self.config.pre_connect_delay + self.config.connect_timeout);
        self.set_state(CallState::Connecting);
        Ok(())
    }

    /// Takes a buffer from `pool` (buffers of datagrams already sent) for the next packet of the
    /// send fast path, unless the call still holds one: sending then allocates nothing.
    pub fn stock_buffer(&mut self, pool: &mut Vec<Vec<u8>>) {
        if let Some(s) = self.session.as_mut() {
            s.transport.stock_buffer(pool);
        }
    }

    /// Feeds one input. Drain [`Call::poll_output`] afterwards.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) -> Result<(), CallError> {
        self.last_now = self.last_now.max(now);
        match input {
            Input::Timeout => {
                self.handle_timeout(now);
                Ok(())
            }
            Input::Datagram(datagram) => self.handle_datagram(now, datagram),
            Input::Command(cmd) => self.handle_command(now, cmd),
        }
    }

    /// Next output. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        if !matches!(self.state, CallState::Ended(_)) {
            if let Some(out) = self.poll_rtc() {
                return out;
            }
        } else if let Some(t) = self
            .session
            .as_mut()
            .and_then(|s| s.transport.poll_closing())
        {
            // After Stop: let the BYE and close_notify out; events of a closed call are moot.
            return self.sent(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.next_deadline())
    }

    /// When consent expires if nothing more is heard (only while connected).
    fn consent_deadline(&self) -> Option<Instant> {
        if self.state != CallState::Connected {
            return None;
        }
        let heard = self.last_heard.unwrap_or(self.last_now);
        Some(heard + self.config.ice.failed_after)
    }

    fn next_deadline(&self) -> Instant {
        // Far future when idle: the caller only wakes us for input.
        let idle = self.last_now + Duration::from_secs(3600);
        if matches!(self.state, CallState::Ended(_)) {
            return idle;
        }
        let mut at = idle;
        let candidates = [
            self.session.as_ref().and_then(|s| s.transport.deadline()),
            self.track.deadline(),
            self.camera().and_then(VideoTrack::deadline),
            self.connect_deadline,
            self.ice_start_at,
            self.consent_deadline(),
        ];
        for t in candidates.into_iter().flatten() {
            at = at.min(t);
        }
        at
    }

    fn poll_rtc(&mut self) -> Option<Output> {
        loop {
            let session = self.session.as_mut()?;
            match session.transport.poll() {
                Polled::Timeout(_) => return None,
                Polled::Transmit(t) => {
                    self.count_rtx(&t.contents);
                    return Some(self.sent(t));
                }
                Polled::Event(e) => {
                    if let Some(ev) = self.map_rtc_event(e) {
                        return Some(Output::Event(ev));
                    }
                }
                Polled::Failed(end) => {
                    self.end(EndReason::from(end));
                    return self.events.pop_front().map(Output::Event);
                }
            }
        }
    }

    /// A datagram going out on our RTX SSRC is counted against [`RTX_BUDGET_PER_SEC`]; once
    /// the budget is spent, str0m's RTX cache is emptied until the second is over.
    fn count_rtx(&mut self, contents: &[u8]) {
        let (Some(camera), Some(session)) = (self.video.as_mut(), self.session.as_mut()) else {
            return;
        };
        if rtp_header(contents).is_none_or(|h| h.ssrc != camera.rtx.0) {
            return;
        }
        self.stats.rtx_sent += 1;
        let now = self.last_now;
        let (start, sent) = camera.rtx_window.get_or_insert((now, 0));
        if now >= *start + Duration::from_secs(1) {
            (*start, *sent) = (now, 0);
        }
        *sent += 1;
        if *sent >= RTX_BUDGET_PER_SEC && !camera.rtx_suspended {
            camera.rtx_suspended = true;
            self.stats.rtx_budget_spent += 1;
            let ssrc = StrSsrc::from(camera.track.rtp().ssrc().0);
            if let Some(stream) = session.transport.rtc().direct_api().stream_tx(&ssrc) {
                // A fresh, inert cache: queued resends find nothing, new NACKs too.
                stream.set_rtx_cache(0, Duration::ZERO, None);
            }
        }
    }

    /// Gives str0m its RTX cache back once the second whose budget was spent is over.
    fn restore_rtx(&mut self, now: Instant) {
        let (Some(camera), Some(session)) = (self.video.as_mut(), self.session.as_mut()) else {
            return;
        };
        let over = camera
            .rtx_window
            .is_none_or(|(start, _)| now >= start + Duration::from_secs(1));
        if camera.rtx_suspended && over {
            camera.rtx_suspended = false;
            camera.rtx_window = None;
            let ssrc = StrSsrc::from(camera.track.rtp().ssrc().0);
            if let Some(stream) = session.transport.rtc().direct_api().stream_tx(&ssrc) {
                stream.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
            }
        }
    }

    /// A datagram goes out: counted.
    fn sent(&mut self, t: Transmit) -> Output {
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += t.contents.len() as u64;
        Output::Transmit(t)
    }

    fn map_rtc_event(&mut self, e: str0m::Event) -> Option<Event> {
        match e {
            str0m::Event::Connected => {
                self.connect_deadline = None;
                // We are the DTLS server: str0m is done once our final flight is out, the
                // SFU only once it arrives.
                if let Some(session) = self.session.as_mut() {
                    session.transport.on_connected(self.last_now);
                }
                self.set_state(CallState::Connected);
                let now = self.last_now;
                self.track.set_live(now);
                if let Some(video) = self.camera_mut() {
                    video.set_live(now);
                }
                self.events.pop_front()
            }
            str0m::Event::IceConnectionStateChange(state) => {
                // Not used for liveness: str0m's controlled agent reports Disconnected ("none
                // nominated") while media flows. Consent freshness decides (`failed_after`).
                tracing::debug!(?state, "ice state");
                None
            }
            str0m::Event::PeerStats(stats) => {
                if let Some(rtt) = stats.rtt {
                    self.stats.rtt = Some(rtt);
                }
                None
            }
            str0m::Event::MediaEgressStats(stats) => {
                // A receiver report about our stream: the SFU has the SRTP keys and decrypted
                // our packets (an RR is SRTCP, which only a peer with the keys can send).
                if stats.remote.is_some() || stats.rtt.is_some() {
                    self.confirmed();
                }
                if let Some(rtt) = stats.rtt {
                    self.stats.rtt = Some(rtt);
                }
                None
            }
            str0m::Event::Closed => {
                self.end(EndReason::Dtls(DtlsEnd::ClosedByPeer));
                self.events.pop_front()
            }
            str0m::Event::EgressBitrateEstimate(str0m::bwe::BweKind::Remb { .. }) => {
                // Counted, not acted on: the send rate is the source's.
                self.stats.remb_received += 1;
                None
            }
            str0m::Event::KeyframeRequest(request) => {
                let now = self.last_now;
                if let Some(video) = self.camera_mut() {
                    tracing::trace!(kind = ?request.kind, "keyframe requested");
                    video.request_keyframe(now);
                    let counters = video.counters();
                    self.stats.video = counters;
                }
                None
            }
            str0m::Event::RtpPacket(p) if self.incoming_video.contains(*p.header.ssrc) => {
                self.last_heard = Some(self.last_now);
                self.confirmed();
                let session = self.session.as_mut()?;
                let events = &mut self.events;
                self.incoming_video
                    .on_rtp(self.last_now, session.transport.rtc(), p, &mut |v| {
                        events.push_back(Event::VideoReceived(v));
                    });
                self.stats.incoming_video = self.incoming_video.counters();
                self.events.pop_front()
            }
            str0m::Event::ChannelOpen(id, _) => {
                let session = self.session.as_mut()?;
                self.incoming_video
                    .on_channel_open(id, session.transport.rtc());
                self.stats.incoming_video = self.incoming_video.counters();
                None
            }
            str0m::Event::ChannelData(d) => {
                self.incoming_video.on_channel_data(&d.data);
                self.stats.incoming_video = self.incoming_video.counters();
                None
            }
            str0m::Event::ChannelClose(id) => {
                self.incoming_video.on_channel_close(id);
                self.stats.incoming_video = self.incoming_video.counters();
                None
            }
            str0m::Event::RtpPacket(p) => {
                self.stats.audio_packets_received += 1;
                // Authenticated by str0m: now it counts as received for replay detection,
                // and as a sign of life.
                self.last_heard = Some(self.last_now);
                self.confirmed();
                Some(Event::AudioReceived(self.incoming.on_rtp(p)))
            }
            _ => None,
        }
    }

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram<'_>) -> Result<(), CallError> {
        let contents = datagram.contents;
        let is_stun = classify(contents) == DatagramKind::Stun;
        let stun_id = if is_stun {
            self.authentic_stun_id(contents)
        } else {
            None
        };
        let stun_authentic = stun_id.is_some();
        let own_ssrcs = self.own_ssrcs();
        let Some(session) = self.session.as_mut() else {
            self.stats.dropped_not_live += 1;
            return Err(CallError::NotConnecting);
        };
        if matches!(self.state, CallState::Ended(_)) {
            self.stats.dropped_not_live += 1;
            return Err(CallError::Ended);
        }
        // The SFU's Opus payload type (from its answer, set on our track in `connect`).
        let pt = *self.track.rtp().pt();
        let incoming = &mut self.incoming;
        let result = session.transport.receive(now, datagram, |rtc| {
            // Our own SSRCs from the far end: a collision (RFC 3550 §8.2) or a reflection.
            // Refused before str0m, which would otherwise take an SR "from" our own stream.
            if claimed_ssrc(contents).is_some_and(|ssrc| own_ssrcs.contains(&Some(ssrc))) {
                return Err(DatagramError::Rejected(RejectReason::OwnSsrc).into());
            }
            // The SFU forwards other speakers with their own SSRCs and no MID extension,
            // which str0m drops unless the SSRC is expected. Like ntgcalls, accept audio
            // from any new SSRC carrying our Opus PT (the RTP header is not encrypted by
            // SRTP). Replays: str0m drops them without telling us (see `crate::replay`);
            // refuse and count them here.
            incoming
                .admit(rtc, contents, pt)
                .map_err(DatagramError::Replayed)?;
            // str0m ignores STUN that fails its checks (ufrags, MESSAGE-INTEGRITY) without
            // an error, and `Rtc::accepts` waves through anything from the nominated
            // address before it looks at STUN. Check first, so such STUN is refused and
            // counted and, above all, does not count as hearing from the SFU.
            if is_stun && !stun_authentic {
                return Err(DatagramError::Rejected(RejectReason::StunUnauthenticated).into());
            }
            Ok(())
        });
        if let Err(ReceiveError::Refused(DatagramError::Rejected(RejectReason::OwnSsrc))) = &result
        {
            self.stats.dropped_own_ssrc += 1;
        }
        self.sync_receive_stats();
        match result {
            Ok(()) => {
                // A genuine STUN message again (a retransmission or a replay): answered by
                // str0m like the first, but no sign of life.
                let repeated = self.stun_seen.is_repeat(stun_id);
                self.stats.stun_replayed += u64::from(repeated);
                // Consent freshness (RFC 7675) counts only what is authenticated: STUN that
                // passed the check above, and (in `map_rtc_event`) SRTP str0m decrypted. DTLS
                // and SRTCP are handed in unauthenticated from our side (str0m drops forged
                // ones silently), so a spoofed datagram from the SFU's address keeps no
                // dead call alive.
                if is_stun && !repeated {
                    self.last_heard = Some(now);
                }
                Ok(())
            }
            Err(ReceiveError::Fatal(end)) => {
                self.end(EndReason::from(end));
                Ok(())
            }
            Err(ReceiveError::Refused(e)) => Err(e.into()),
        }
    }

    /// Copies the transport's and the incoming streams' counters into the call's stats.
    fn sync_receive_stats(&mut self) {
        if let Some(session) = &self.session {
            let t = session.transport.counters();
            self.stats.datagrams_received = t.datagrams_received;
            self.stats.dropped_malformed = t.dropped_malformed;
            self.stats.dropped_rejected = t.dropped_rejected;
            self.stats.dtls_flight_resent = t.dtls_flight_resent;
            self.stats.dropped_rtcp_oversized = t.dropped_rtcp_oversized;
            self.stats.dropped_rtcp_over_budget = t.dropped_rtcp_over_budget;
            self.stats.dropped_rtcp_replayed = t.dropped_rtcp_replayed;
            self.stats.dtls_received_connected = t.dtls_received_connected;
            self.stats.dropped_dtls_over_budget = t.dropped_dtls_over_budget;
        }
        let incoming = self.incoming.counters();
        self.stats.dropped_replayed = incoming.dropped_replayed;
        self.stats.dropped_unknown_ssrc = incoming.dropped_unknown_ssrc;
    }

    /// Our SSRCs: audio, and video with its RTX when the call has a camera track.
    fn own_ssrcs(&self) -> [Option<u32>; 3] {
        let video = self.video_ssrcs();
        [
            Some(self.audio_ssrc().0),
            video.map(|(v, _)| v.0),
            video.map(|(_, rtx)| rtx.0),
        ]
    }

    /// The SFU proved it has the SRTP keys: our final flight arrived.
    fn confirmed(&mut self) {
        if let Some(session) = self.session.as_mut() {
            session.transport.on_confirmed();
        }
    }

    /// True for a STUN binding request from the SFU to us (USERNAME `ours:theirs`, integrity
    /// with our password) or a binding response from it (integrity with its password): the
    /// checks str0m's ICE agent makes, less the transaction-id match of responses.
    /// See [`crate::transport::authentic_stun_id`]: with the SFU's credentials from its answer.
    fn authentic_stun_id(&self, contents: &[u8]) -> Option<[u8; 12]> {
        let (Some(session), Some(crypto)) = (self.session.as_ref(), self.config.crypto.as_ref())
        else {
            return None;
        };
        crate::transport::authentic_stun_id(
            contents,
            &self.local_creds,
            &session.remote_creds,
            crypto,
        )
    }

    fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, CallState::Ended(_)) {
            return;
        }
        if let Some(deadline) = self.connect_deadline
            && now >= deadline
        {
            self.end(EndReason::ConnectTimeout);
            return;
        }
        if let Some(deadline) = self.consent_deadline()
            && now >= deadline
        {
            tracing::debug!("consent expired: nothing heard from the sfu");
            self.end(EndReason::IceDisconnected);
            return;
        }
        if let Some(start) = self.ice_start_at {
            if now < start {
                return;
            }
            self.ice_start_at = None;
        }
        self.restore_rtx(now);
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let (track, lateness) = (&mut self.track, &mut self.stats.lateness);
        let video = self.video.as_mut().map(|c| &mut c.track);
        let mut source_end = None;
        let mut video_end = None;
        // Connected: the send fast path, str0m driven only when its own deadline is due. Until
        // then every turn drives it, as the handshake (and the first timeout that starts ICE
        // after a pre-connect delay) needs.
        let drive = if self.state == CallState::Connected {
            Drive::WhenDue
        } else {
            Drive::Always
        };
        let result = session.transport.handle_timeout(now, drive, |out| {
            source_end = track.send_due(now, out, lateness);
            if let Some(video) = video {
                video_end = video.send_due(now, out, lateness);
            }
        });
        self.sync_receive_stats();
        self.after_frames(source_end);
        self.after_video(video_end);
        if let Err(end) = result {
            self.end(EndReason::from(end));
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CallError> {
        if matches!(self.state, CallState::Ended(_)) {
            return Err(CallError::Ended);
        }
        let changed = match cmd {
            Command::SetSource(source) => {
                self.track.set_source(now, source);
                // The position starts at the source's offset at once, not at its first frame.
                self.stats.set_track_counters(self.track.counters());
                false
            }
            Command::Pause => {
                if let Some(v) = self.camera_mut() {
                    v.pause(now);
                }
                self.track.pause(now)
            }
            Command::Resume => {
                if let Some(v) = self.camera_mut() {
                    v.resume(now);
                }
                self.track.resume(now)
            }
            Command::Mute => self.track.mute(),
            Command::Unmute => self.track.unmute(),
            Command::SetVideoSource(source) => {
                let Camera {
                    codec,
                    track: video,
                    ..
                } = self.video.as_mut().ok_or_else(|| CallError::Config {
                    reason: "the call was created without video (CallConfig::video)".to_owned(),
                })?;
                if source.codec() != *codec {
                    return Err(CallError::Config {
                        reason: format!("a {} source on a call that sends {codec}", source.codec()),
                    });
                }
                video.set_source(now, source);
                false
            }
            Command::ClearVideoSource => {
                if let Some(v) = self.camera_mut() {
                    v.clear_source();
                }
                false
            }
            Command::StopVideo => self.camera_mut().is_some_and(VideoTrack::mute),
            Command::StartVideo => self.camera_mut().is_some_and(|v| v.unmute(now)),
            Command::AddIncomingVideo {
                endpoint,
                ssrc_groups,
            } => {
                let own = self.own_ssrcs();
                let result = self.incoming_video.add(&endpoint, &ssrc_groups, &own);
                self.apply_incoming_video();
                result?;
                false
            }
            Command::RemoveIncomingVideo { endpoint } => {
                self.incoming_video.remove(&endpoint);
                self.apply_incoming_video();
                false
            }
            Command::Stop => {
                // RTCP BYE and DTLS close_notify tell the SFU at once that we left (an SFU
                // otherwise notices only when consent checks time out).
                if let Some(session) = self.session.as_mut() {
                    session.transport.close(true);
                }
                self.end(EndReason::Stopped);
                false
            }
        };
        if changed {
            self.events
                .push_back(Event::MediaStateChanged(self.track.media_state()));
        }
        Ok(())
    }

    /// After the track sent its due frames: its counters into the stats, and a source that ran
    /// out or failed reported.
    fn after_frames(&mut self, source_end: Option<SourceEnd>) {
        self.stats.set_track_counters(self.track.counters());
        let Some(end) = source_end else {
            return;
        };
        // Ran out or failed, the call stays up for the next track, as in ntgcalls: a broken
        // file or a dead ffmpeg is the track's problem, not the connection's.
        if let SourceEnd::Failed(e) = &end {
            tracing::debug!(error = %e, "source failed");
        }
        self.events.push_back(Event::StreamEnded {
            track: TrackKind::Audio,
            error: end.error(),
        });
    }

    /// After the camera track sent its due frames: its counters, and a source that ran out
    /// or failed reported.
    fn after_video(&mut self, end: Option<SourceEnd>) {
        let Some(video) = self.camera() else {
            return;
        };
        self.stats.video = video.counters();
        if let Some(end) = end {
            if let SourceEnd::Failed(e) = &end {
                tracing::debug!(error = %e, "video source failed");
            }
            self.events.push_back(Event::StreamEnded {
                track: TrackKind::Video,
                error: end.error(),
            });
        }
    }

    /// Brings str0m in line with the incoming video sources (once the answer is applied).
    fn apply_incoming_video(&mut self) {
        if let Some(session) = self.session.as_mut() {
            self.incoming_video.apply(session.transport.rtc());
        }
        self.stats.incoming_video = self.incoming_video.counters();
    }

    fn set_state(&mut self, state: CallState) {
        if self.state != state {
            tracing::debug!(?state, "call state");
            self.state = state.clone();
            self.events.push_back(Event::ConnectionChanged(state));
        }
    }

    fn end(&mut self, reason: EndReason) {
        if matches!(self.state, CallState::Ended(_)) {
            return;
        }
        self.track.stop();
        if let Some(video) = self.camera_mut() {
            video.stop();
        }
        self.connect_deadline = None;
        self.set_state(CallState::Ended(reason));
    }
}

/// The SSRC an RTP or SRTCP datagram claims in its clear header: the RTP packet's SSRC, or the
/// sender SSRC of an RTCP compound's first packet (bytes 4..8, RFC 3550 §6.4).
fn claimed_ssrc(contents: &[u8]) -> Option<u32> {
    if let Some(header) = rtp_header(contents) {
        return Some(header.ssrc);
    }
    if classify(contents) != DatagramKind::Rtp {
        return None;
    }
    let b = contents.get(4..8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl From<TransportEnd> for EndReason {
    fn from(end: TransportEnd) -> Self {
        match end {
            TransportEnd::Dtls(d) => Self::Dtls(d),
            TransportEnd::FingerprintMismatch => Self::FingerprintMismatch,
            TransportEnd::Failed(kind) => Self::Transport(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initial sequence number stays below 2^15 for every seed, so a receiver that starts
    /// decrypting late still guesses the SRTP rollover counter (0) right; see [`Call::new`].
    /// (Found by `ringcast sim`: `jitter` seed 306 drew a sequence number close to 2^16, the
    /// SFU finished DTLS after the wrap and could not decrypt one packet of the call.)
    #[test]
    fn initial_sequence_numbers_leave_room_before_a_wrap() {
        let Some(cert) = crate::crypto::generate_certificate() else {
            panic!("certificate generation failed");
        };
        let now = Instant::now();
        let mut highest = 0;
        for seed in 0..2_000 {
            let call = Call::new(now, CallConfig::new(seed, cert.clone())).expect("call");
            highest = highest.max(call.track.rtp().next_seq());
        }
        assert!(highest < u64::from(INITIAL_SEQ_LIMIT), "highest {highest}");
        // And the draw still spreads over the range (not a constant).
        assert!(
            highest > u64::from(INITIAL_SEQ_LIMIT) * 9 / 10,
            "highest {highest}"
        );
    }
}
