//! The sans-IO SFU: every participant of every chat behind one UDP address.
//!
//! It plays Telegram's side of the roles (telegram-signaling.md §2.3-2.4): a full ICE agent that
//! learns each client's address from the client's own checks (the join payload carries no
//! candidates), takes the controlling role and nominates, and opens DTLS as the client. Once ICE
//! has nominated a pair, a participant *is* its remote transport address: a datagram from that
//! address belongs to that participant, whoever sent it. Two clients behind one 5-tuple are one
//! participant here, exactly as on a real SFU.
//!
//! Audio without the ssrc-audio-level extension is ignored (counted, not forwarded), as
//! Telegram's SFU is reported to do. Everything else is forwarded to the other participants of
//! the same chat and measured: packets, bytes, loss from RTP sequence numbers, and the dominant
//! frequency of the decoded audio.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ringcast_core::demux::{DatagramKind, classify, rtp_header, stun_local_ufrag};
use ringcast_core::signaling::Ssrc;
use ringcast_core::signaling::group::{
    DtlsFingerprint, HeaderExtension, IceCandidate, JoinPayload, JoinResponse, MediaDescription,
    OPUS_DEFAULT_PT, PayloadType, RtcpFeedback, Transport, URI_ABS_SEND_TIME, URI_AUDIO_LEVEL,
    URI_TRANSPORT_CC, VideoDescription, fingerprint_hex, parse_fingerprint_hex,
};
use ringcast_core::str0m::config::{DtlsCert, Fingerprint};
use ringcast_core::str0m::crypto::CryptoProvider;
use ringcast_core::str0m::media::{MediaKind, Mid};
use ringcast_core::str0m::net::{Protocol, Receive};
use ringcast_core::str0m::rtp::{Extension, ExtensionValues, RtpWrite, Ssrc as StrSsrc};
use ringcast_core::str0m::{Candidate, IceConnectionState, IceCreds, Rtc, RtcConfig};

use ringcast_core::pacer::TimerWheel;
use ringcast_core::replay::ReplayWindow;

use crate::analysis::ToneMeter;
use crate::video::{VideoReceiver, VideoStats};
use ringcast_core::media::video::VideoCodec;
use ringcast_core::signaling::group::SsrcGroup;
use ringcast_core::str0m::channel::ChannelId;
use ringcast_core::transport::add_video_codec;

/// The extension id we tell clients to use for ssrc-audio-level (tgcalls' hardcoded id).
const AUDIO_LEVEL_ID: u8 = 1;
/// transport-cc id, announced like Telegram does: packets that carry the transport-wide
/// sequence number get transport-cc feedback ([`SfuConfig::twcc_feedback`]).
const TRANSPORT_CC_ID: u8 = 3;
/// abs-send-time id of Telegram's video section.
const ABS_SEND_TIME_ID: u8 = 2;
/// video-orientation id of Telegram's video section.
const VIDEO_ORIENTATION_ID: u8 = 13;
/// URI of the video-orientation extension (3GPP TS 26.114 §7.4.5).
const URI_VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
/// VP8 and its RTX payload types in Telegram's video section.
const VP8_PT: u8 = 100;
const VP8_RTX_PT: u8 = 101;
/// H.264 (packetization mode 1) and its RTX payload types in the video section.
const H264_PT: u8 = 102;
const H264_RTX_PT: u8 = 103;
/// The video media section of each participant's Rtc.
const VIDEO_MID: &str = "v";
/// Video layers (FID groups) read from one join payload at most; libwebrtc announces three.
const MAX_VIDEO_LAYERS: usize = 4;
/// The SSRC the answer names for bandwidth probing (`server_sources`), -1017713629 as a signed
/// int32, as in telegram-signaling.md §2's example.
const PROBING_SSRC: u32 = 3_277_253_667;
/// The single audio media section of each participant's Rtc.
const AUDIO_MID: &str = "0";
/// Upper bound on participants across all chats; a join beyond it is refused.
pub const MAX_PARTICIPANTS: usize = 20_000;
/// Upper bound on queued outgoing datagrams; beyond it new ones are dropped and counted.
const MAX_OUTBOX: usize = 65_536;
/// Largest decoded frame: 120 ms at 48 kHz mono (RFC 6716 §2).
const MAX_FRAME_SAMPLES: usize = 5_760;

/// Errors of the SFU's signaling side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// The join payload did not parse.
    #[error("bad join payload: {0}")]
    BadPayload(#[from] ringcast_core::SignalingError),
    /// Too many participants.
    #[error("sfu is full ({0} participants)")]
    Full(usize),
    /// `leave` named a participant that is not in the chat.
    #[error("no participant with ssrc {ssrc} in chat {chat_id}")]
    UnknownParticipant {
        /// The chat.
        chat_id: i64,
        /// The SSRC asked for.
        ssrc: u32,
    },
    /// Setting up the participant's transport failed.
    #[error("transport setup failed: {0}")]
    Setup(String),
}

/// Ways to make one participant misbehave, for tests of the engine's isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misbehaviour {
    /// Stop answering: drop everything from and to the participant (a dead peer).
    Silent,
    /// Close the participant's DTLS association (a close_notify alert), then forget it.
    CloseDtls,
    /// Ask for a key frame of the participant's video now (RTCP PLI), as a receiver that lost
    /// the picture does; with the next video packet. Not a fault: tests of key frame
    /// answers drive it through the same control path.
    RequestKeyframe,
    /// Send the participant this many hostile SRTCP datagrams at once, protected with its
    /// keys ([`crate::hostile`]): NACK storms over every sequence number, PLI and FIR, REMB of
    /// zero, oversized and self-contradictory compounds, compounds from its own SSRC, and
    /// every fourth datagram sent twice (a replay).
    HostileRtcp {
        /// How many distinct datagrams (replays come on top).
        datagrams: u32,
    },
    /// Send this many malformed messages on the participant's data channel (once it is
    /// open): invalid UTF-8, JSON without a `colibriClass`, truncated JSON, in turn.
    ChannelGarbage {
        /// How many messages.
        messages: u32,
    },
}

/// Configuration of an [`Sfu`].
#[derive(Clone)]
pub struct SfuConfig {
    /// The one UDP address every participant talks to (must be concrete, not 0.0.0.0).
    pub udp_addr: SocketAddr,
    /// Seed for the SFU's ICE credentials.
    pub seed: u64,
    /// The SFU's DTLS certificate.
    pub dtls_cert: DtlsCert,
    /// Crypto provider; `None` = str0m's default.
    pub crypto: Option<Arc<CryptoProvider>>,
    /// Decode and analyse received audio (dominant frequency). Costs one Opus decode per packet.
    pub analyse_audio: bool,
    /// Forward each participant's audio to the others in its chat, as Telegram does. Load runs
    /// turn it off: with ten speakers a chat it multiplies the SFU's sends by nine.
    pub forward_audio: bool,
    /// Load mode: once a participant is connected, count its RTP from the clear-text header
    /// (packets, bytes, loss, audio-level extension present) without decrypting it. No
    /// decoding, no forwarding; for load runs with thousands of calls on one SFU thread.
    pub header_only: bool,
    /// Largest UDP payload a participant's transport may emit (DTLS handshake fragments
    /// included), for paths with a lower MTU; `None` keeps str0m's default (1150 bytes).
    /// Clamped into str0m's accepted range, 576..=1500.
    pub mtu: Option<usize>,
    /// Impairment for tests: drop every n-th first transmission of a participant's video
    /// (media SSRC; RTX repairs pass) before it reaches the participant's transport, which
    /// then NACKs it. `None`: nothing dropped.
    pub drop_video_every: Option<u64>,
    /// Send transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01) for
    /// the packets that carry the transport-wide sequence number, every 100 ms, as Telegram's
    /// SFU does. A sender running Google congestion control (libwebrtc, so ntgcalls) raises
    /// its bitrate, and sends its upper simulcast layers, only with it. On by default; off
    /// only to show that difference.
    pub twcc_feedback: bool,
}

impl SfuConfig {
    /// Defaults: analysis and forwarding on.
    pub fn new(udp_addr: SocketAddr, seed: u64, dtls_cert: DtlsCert) -> Self {
        Self {
            udp_addr,
            seed,
            dtls_cert,
            crypto: None,
            analyse_audio: true,
            forward_audio: true,
            header_only: false,
            mtu: None,
            drop_video_every: None,
            twcc_feedback: true,
        }
    }
}

impl std::fmt::Debug for SfuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuConfig")
            .field("udp_addr", &self.udp_addr)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// A datagram the SFU wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuTransmit {
    /// Destination (a participant's address).
    pub destination: SocketAddr,
    /// Bytes.
    pub contents: Vec<u8>,
}

/// Per-participant statistics, as served by `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantStats {
    /// The participant's audio SSRC (from its join payload).
    pub ssrc: u32,
    /// ICE+DTLS up and not left.
    pub connected: bool,
    /// The participant left (or was replaced by a rejoin).
    pub left: bool,
    /// Audio packets received (with the audio-level extension).
    pub packets: u64,
    /// Payload bytes of those packets.
    pub bytes: u64,
    /// Packets lost, from RTP sequence numbers (expected - received, RFC 3550 A.3).
    pub lost: u64,
    /// Times the audio's 16-bit RTP sequence number wrapped while counted (SRTP rollovers;
    /// in full mode every packet was decrypted across them).
    pub seq_wraps: u64,
    /// Audio packets ignored because they lacked the ssrc-audio-level extension.
    pub dropped_no_audio_level: u64,
    /// Packets forwarded to other participants on this participant's behalf.
    pub forwarded: u64,
    /// Dominant frequency of the most recently decoded audio, if any.
    pub dominant_hz: Option<f32>,
    /// The nominated remote address.
    pub remote: Option<SocketAddr>,
    /// The participant's video, if its join payload announced some (`ssrc-groups`): its
    /// first FID group's media SSRC.
    pub video: Option<VideoStats>,
    /// Every video layer the join payload announced (one per FID group, the first is
    /// `video`): SSRC and what arrived on it. Simulcast senders (libwebrtc) announce three.
    pub video_layers: Vec<(u32, VideoStats)>,
    /// RTP packets (audio and video) that carried the transport-wide sequence number.
    pub transport_cc_packets: u64,
    /// Its video endpoint (its ufrag; the answer's `video.endpoint`), what other participants
    /// ask for.
    pub endpoint: String,
    /// Its join payload's `ssrc-groups`.
    pub ssrc_groups: Vec<SsrcGroup>,
    /// Endpoints it asked for on the data channel.
    pub wants: Vec<String>,
    /// Messages received on its data channel.
    pub channel_messages: u64,
    /// Of them, malformed (not colibri JSON).
    pub channel_malformed: u64,
    /// Video packets forwarded to it.
    pub video_forwarded: u64,
}

/// SFU-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuCounters {
    /// Datagrams that were neither STUN, DTLS nor RTP/RTCP.
    pub dropped_garbage: u64,
    /// Datagrams from an unknown address that were not routable STUN.
    pub dropped_unknown_source: u64,
    /// Datagrams a participant's transport refused.
    pub dropped_rejected: u64,
    /// A participant's SRTP packets refused as replays (sequence number already received or
    /// older than the replay window; see `ringcast_core::replay`).
    pub dropped_replayed: u64,
    /// Outgoing datagrams dropped because the outbox was full.
    pub dropped_outbox_full: u64,
    /// Joins refused for a bad payload.
    pub bad_joins: u64,
}

/// RTP loss tracking after RFC 3550 A.3 (extended sequence numbers from str0m).
#[derive(Debug, Default)]
struct LossTracker {
    base: Option<u64>,
    max: u64,
    received: u64,
}

/// Extends 16-bit RTP sequence numbers across wraps (RFC 3550 A.1, without probation).
#[derive(Debug, Default)]
struct SeqUnwrap {
    last: Option<u64>,
}

impl SeqUnwrap {
    fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.last {
            None => u64::from(seq) + (1 << 16),
            Some(last) => {
                let cycles = last & !0xFFFF;
                let candidates = [cycles.wrapping_sub(1 << 16), cycles, cycles + (1 << 16)];
                candidates
                    .into_iter()
                    .map(|c| c + u64::from(seq))
                    .min_by_key(|v| v.abs_diff(last))
                    .unwrap_or(last)
            }
        };
        if self.last.is_none_or(|l| ext > l) {
            self.last = Some(ext);
        }
        ext
    }
}

impl LossTracker {
    fn on_packet(&mut self, ext_seq: u64) {
        self.received += 1;
        match self.base {
            None => {
                self.base = Some(ext_seq);
                self.max = ext_seq;
            }
            Some(_) => self.max = self.max.max(ext_seq),
        }
    }

    fn lost(&self) -> u64 {
        match self.base {
            Some(base) => (self.max - base + 1).saturating_sub(self.received),
            None => 0,
        }
    }

    /// How often the 16-bit sequence number wrapped between the first packet and the highest
    /// (each wrap moves SRTP's rollover counter).
    fn wraps(&self) -> u64 {
        self.base.map_or(0, |base| (self.max >> 16) - (base >> 16))
    }
}

struct Participant {
    chat_id: i64,
    ssrc: u32,
    ufrag: String,
    rtc: Rtc,
    timeout: Option<Instant>,
    remote: Option<SocketAddr>,
    connected: bool,
    left: bool,
    packets: u64,
    bytes: u64,
    dropped_no_audio_level: u64,
    forwarded: u64,
    loss: LossTracker,
    seq_unwrap: SeqUnwrap,
    /// Sequence numbers of the participant's audio already received (replay detection).
    replay: ReplayWindow,
    decoder: Option<opus::Decoder>,
    meter: ToneMeter,
    /// SSRCs of other participants this one's Rtc has a send stream for.
    tx_streams: HashSet<u32>,
    /// [`Misbehaviour::Silent`]: everything to and from it is dropped.
    silent: bool,
    /// The video SSRC from the join payload's first FID group, and what arrived on it.
    video: Option<(u32, VideoReceiver)>,
    /// The media SSRCs of the join payload's other FID groups (simulcast layers), and what
    /// arrived on each. Counted, not forwarded: receivers get the first layer.
    layers: Vec<(u32, VideoReceiver)>,
    /// RTP packets that carried the transport-wide sequence number.
    transport_cc_packets: u64,
    /// The join payload's `ssrc-groups` (what Telegram lists as the participant's video
    /// `source_groups`; its endpoint is its ufrag, the answer's `video.endpoint`).
    ssrc_groups: Vec<SsrcGroup>,
    /// Video endpoints it asked for on the data channel (colibri `ReceiverVideoConstraints`).
    wants: HashSet<String>,
    /// Messages received on its data channel, and of them the malformed ones.
    channel_messages: u64,
    /// See `channel_messages`.
    channel_malformed: u64,
    /// Video packets forwarded to it from the endpoints it wants.
    video_forwarded: u64,
    /// Forwarded video's mid -> the sender's video SSRC (a PLI names the mid).
    forwarded_mids: HashMap<Mid, u32>,
    /// Its data channel, once open.
    channel: Option<ChannelId>,
}

/// A Telegram-like SFU. See the module docs of `sfu_mock::sfu`.
pub struct Sfu {
    config: SfuConfig,
    fingerprint: String,
    crypto: Arc<CryptoProvider>,
    rng: fastrand::Rng,
    participants: Vec<Option<Participant>>,
    /// Nominated remote address -> participant (the 5-tuple identity).
    by_addr: HashMap<SocketAddr, usize>,
    /// SFU-side ufrag -> participant, for STUN requests before nomination.
    by_ufrag: HashMap<String, usize>,
    /// Address a participant's STUN requests came from before nomination, so the answers to
    /// the SFU's own checks (which carry no USERNAME) reach the right participant.
    by_check_addr: HashMap<SocketAddr, usize>,
    /// Live participants per chat.
    chats: HashMap<i64, Vec<usize>>,
    /// Participants that have joined and not left (a count, not a scan of `participants`,
    /// which keeps the ones that left for their stats: a scan per join made a burst quadratic).
    live: usize,
    outbox: VecDeque<SfuTransmit>,
    /// One entry per participant deadline (lazy deletion, see `ringcast_core::pacer`).
    wheel: TimerWheel<usize>,
    due: Vec<(Instant, usize)>,
    counters: SfuCounters,
    pcm: Vec<i16>,
    last_now: Instant,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("udp_addr", &self.config.udp_addr)
            .field("participants", &self.participants.len())
            .finish_non_exhaustive()
    }
}

impl Sfu {
    /// A new SFU with no participants.
    pub fn new(now: Instant, config: SfuConfig) -> Self {
        let crypto = config
            .crypto
            .clone()
            .unwrap_or_else(|| Arc::new(ringcast_core::str0m::crypto::from_feature_flags()));
        let digest = crypto.sha256_provider.sha256(&config.dtls_cert.certificate);
        let fingerprint = fingerprint_hex(&digest);
        Self {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            fingerprint,
            crypto,
            participants: Vec::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_check_addr: HashMap::new(),
            chats: HashMap::new(),
            live: 0,
            outbox: VecDeque::new(),
            wheel: TimerWheel::new(now),
            due: Vec::new(),
            counters: SfuCounters::default(),
            pcm: vec![0; MAX_FRAME_SAMPLES],
            last_now: now,
        }
    }

    /// The UDP address participants must use.
    pub fn udp_addr(&self) -> SocketAddr {
        self.config.udp_addr
    }

    /// SFU-wide counters.
    pub fn counters(&self) -> &SfuCounters {
        &self.counters
    }

    /// Handles `phone.joinGroupCall`: parses the join payload, sets up the participant's
    /// transport and returns the response JSON (`updateGroupCallConnection.params.data`).
    /// A participant rejoining with the same SSRC in the same chat replaces its old self.
    pub fn join(&mut self, now: Instant, chat_id: i64, payload: &[u8]) -> Result<String, SfuError> {
        self.last_now = self.last_now.max(now);
        let join = match JoinPayload::parse(payload) {
            Ok(j) => j,
            Err(e) => {
                self.counters.bad_joins += 1;
                return Err(e.into());
            }
        };
        if self.live >= MAX_PARTICIPANTS {
            return Err(SfuError::Full(self.live));
        }
        if let Some(old) = self.find(chat_id, join.ssrc.0) {
            self.remove(old);
        }
        let fp = join
            .fingerprints
            .iter()
            .find(|f| f.hash.eq_ignore_ascii_case("sha-256"))
            .ok_or_else(|| SfuError::Setup("no sha-256 fingerprint".to_owned()))?;
        let fp_bytes = parse_fingerprint_hex(&fp.fingerprint)
            .ok_or_else(|| SfuError::Setup("fingerprint is not colon-separated hex".to_owned()))?;

        // A camera track: each FID group is [media SSRC, RTX SSRC] (telegram-signaling.md §1;
        // a SIM group lists layers, whose FID groups follow, lowest first).
        let video_ssrcs: Vec<(u32, u32)> = join
            .ssrc_groups
            .iter()
            .filter(|g| g.semantics == "FID")
            .filter_map(|g| Some((g.sources.first()?.0, g.sources.get(1)?.0)))
            .take(MAX_VIDEO_LAYERS)
            .collect();
        let ufrag = self.random_chars(8);
        let pwd = self.random_chars(24);
        let mut rtc_config = RtcConfig::new()
            .set_rtp_mode(true)
            .set_ice_lite(false)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass: pwd.clone(),
            })
            .set_dtls_cert(self.config.dtls_cert.clone())
            .set_crypto_provider(self.crypto.clone())
            .clear_codecs()
            .enable_opus(true, false)
            .clear_extension_map()
            .set_extension(AUDIO_LEVEL_ID, Extension::AudioLevel)
            .set_extension(TRANSPORT_CC_ID, Extension::TransportSequenceNumber);
        if let Some(mtu) = self.config.mtu {
            let mtu = mtu.clamp(
                ringcast_core::str0m::DATAGRAM_MTU_TARGET_MIN,
                ringcast_core::str0m::DATAGRAM_MTU_TARGET_MAX,
            );
            rtc_config = rtc_config.set_mtu(mtu..=mtu);
        }
        // Every participant can be sent video (forwarded to it once it asks), not only those
        // that send some.
        add_video_codec(&mut rtc_config, VideoCodec::Vp8, VP8_PT, VP8_RTX_PT);
        add_video_codec(&mut rtc_config, VideoCodec::H264, H264_PT, H264_RTX_PT);
        let mut rtc = rtc_config.build(now);
        let local = Candidate::host(self.config.udp_addr, "udp")
            .map_err(|e| SfuError::Setup(format!("local candidate: {e}")))?;
        rtc.add_local_candidate(local);
        let mid = Mid::from(AUDIO_MID);
        {
            let mut api = rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds {
                ufrag: join.ufrag.clone(),
                pass: join.pwd.clone(),
            });
            api.set_remote_fingerprint(Fingerprint {
                hash_func: "sha-256".to_owned(),
                bytes: fp_bytes,
            });
            // Telegram's SFU is the controlling side toward native clients, and the DTLS
            // client (the join payload says setup "passive").
            api.set_ice_controlling(true);
            if self.config.twcc_feedback {
                api.enable_twcc_feedback();
            }
            api.start_dtls(true)
                .map_err(|e| SfuError::Setup(format!("start dtls: {e}")))?;
            // The data channel: the client opens it (SCTP initiator) and we accept. Not in
            // the header-only load mode, which never decrypts anything once connected.
            if !self.config.header_only {
                api.start_sctp(false);
            }
            api.declare_media(mid, MediaKind::Audio);
            api.expect_stream_rx(StrSsrc::from(join.ssrc.0), None, mid, None);
            if !video_ssrcs.is_empty() {
                let vmid = Mid::from(VIDEO_MID);
                api.declare_media(vmid, MediaKind::Video);
                for &(media, rtx) in &video_ssrcs {
                    api.expect_stream_rx(
                        StrSsrc::from(media),
                        Some(StrSsrc::from(rtx)),
                        vmid,
                        None,
                    );
                }
            }
        }
        let decoder = if self.config.analyse_audio {
            Some(
                opus::Decoder::new(48_000, opus::Channels::Mono)
                    .map_err(|e| SfuError::Setup(format!("opus decoder: {e}")))?,
            )
        } else {
            None
        };
        let participant = Participant {
            chat_id,
            ssrc: join.ssrc.0,
            ufrag: ufrag.clone(),
            rtc,
            timeout: None,
            remote: None,
            connected: false,
            left: false,
            packets: 0,
            bytes: 0,
            dropped_no_audio_level: 0,
            forwarded: 0,
            loss: LossTracker::default(),
            seq_unwrap: SeqUnwrap::default(),
            replay: ReplayWindow::new(),
            decoder,
            meter: ToneMeter::new(),
            tx_streams: HashSet::new(),
            silent: false,
            video: video_ssrcs
                .first()
                .map(|(media, _)| (*media, VideoReceiver::new(VP8_PT, H264_PT))),
            layers: video_ssrcs
                .iter()
                .skip(1)
                .map(|(media, _)| (*media, VideoReceiver::new(VP8_PT, H264_PT)))
                .collect(),
            transport_cc_packets: 0,
            ssrc_groups: join.ssrc_groups.clone(),
            wants: HashSet::new(),
            channel_messages: 0,
            channel_malformed: 0,
            video_forwarded: 0,
            forwarded_mids: HashMap::new(),
            channel: None,
        };
        let idx = self.participants.len();
        self.participants.push(Some(participant));
        self.by_ufrag.insert(ufrag.clone(), idx);
        self.chats.entry(chat_id).or_default().push(idx);
        self.live += 1;
        self.drain(idx);
        Ok(self.response_json(&ufrag, &pwd))
    }

    /// Handles `phone.leaveGroupCall` for the participant with `ssrc` in `chat_id`.
    pub fn leave(&mut self, chat_id: i64, ssrc: u32) -> Result<(), SfuError> {
        let idx = self
            .find(chat_id, ssrc)
            .ok_or(SfuError::UnknownParticipant { chat_id, ssrc })?;
        self.remove(idx);
        Ok(())
    }

    /// Makes the participant with `ssrc` in `chat_id` misbehave.
    pub fn misbehave(
        &mut self,
        chat_id: i64,
        ssrc: u32,
        how: Misbehaviour,
    ) -> Result<(), SfuError> {
        let idx = self
            .find(chat_id, ssrc)
            .ok_or(SfuError::UnknownParticipant { chat_id, ssrc })?;
        match how {
            Misbehaviour::Silent => {
                if let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut) {
                    p.silent = true;
                }
            }
            Misbehaviour::CloseDtls => {
                if let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut)
                    && let Err(e) = p.rtc.close()
                {
                    tracing::debug!("close: {e}");
                }
                // Sends the BYE and close_notify, then the participant is gone.
                self.drain(idx);
                self.remove(idx);
            }
            Misbehaviour::HostileRtcp { datagrams } => {
                let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut) else {
                    return Ok(());
                };
                let Some(destination) = p.remote else {
                    return Ok(());
                };
                let media = p.ssrc;
                let mut out = Vec::new();
                for i in 0..datagrams {
                    let compound = crate::hostile::compound(i, media);
                    let Some(contents) = p.rtc.direct_api().protect_rtcp_raw(&compound) else {
                        break;
                    };
                    if i % 4 == 0 {
                        out.push(contents.clone());
                    }
                    out.push(contents);
                }
                for contents in out {
                    self.push_transmit(SfuTransmit {
                        destination,
                        contents,
                    });
                }
            }
            Misbehaviour::ChannelGarbage { messages } => {
                if let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut)
                    && let Some(mut channel) = p.channel.and_then(|id| p.rtc.channel(id))
                {
                    const GARBAGE: [&[u8]; 3] = [
                        b"\xff\xfe\x00garbage",
                        br#"{"no":"class"}"#,
                        br#"{"colibriClass":"#,
                    ];
                    for i in 0..messages as usize {
                        let msg = GARBAGE[i % GARBAGE.len()];
                        if !matches!(channel.write(true, msg), Ok(true)) {
                            break;
                        }
                    }
                }
                self.drain(idx);
            }
            Misbehaviour::RequestKeyframe => {
                if let Some((_, video)) = self
                    .participants
                    .get_mut(idx)
                    .and_then(Option::as_mut)
                    .and_then(|p| p.video.as_mut())
                {
                    video.force_pli();
                }
            }
        }
        Ok(())
    }

    fn find(&self, chat_id: i64, ssrc: u32) -> Option<usize> {
        self.chats.get(&chat_id)?.iter().copied().find(|i| {
            self.participants
                .get(*i)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.ssrc == ssrc && !p.left)
        })
    }

    /// Marks a participant as left, stops routing to it and keeps its stats.
    fn remove(&mut self, idx: usize) {
        let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if !p.left {
            self.live -= 1;
        }
        p.left = true;
        p.connected = false;
        p.timeout = None;
        p.rtc.disconnect();
        self.by_ufrag.remove(&p.ufrag);
        self.by_check_addr.retain(|_, i| *i != idx);
        if let Some(addr) = p.remote
            && self.by_addr.get(&addr) == Some(&idx)
        {
            self.by_addr.remove(&addr);
        }
        if let Some(list) = self.chats.get_mut(&p.chat_id) {
            list.retain(|i| *i != idx);
        }
    }

    fn response_json(&self, ufrag: &str, pwd: &str) -> String {
        let addr = self.config.udp_addr;
        let response = JoinResponse {
            transport: Transport {
                ufrag: ufrag.to_owned(),
                pwd: pwd.to_owned(),
                fingerprints: vec![DtlsFingerprint {
                    hash: "sha-256".to_owned(),
                    setup: "active".to_owned(),
                    fingerprint: self.fingerprint.clone(),
                }],
                candidates: vec![IceCandidate {
                    foundation: "1".to_owned(),
                    component: 1,
                    protocol: "udp".to_owned(),
                    priority: 2_130_706_431,
                    ip: addr.ip(),
                    port: addr.port(),
                    kind: "host".to_owned(),
                    generation: 0,
                    network: 0,
                    id: "1".to_owned(),
                    rel_addr: None,
                }],
            },
            audio: Some(MediaDescription {
                payload_types: vec![PayloadType {
                    id: OPUS_DEFAULT_PT,
                    name: "opus".to_owned(),
                    clockrate: 48_000,
                    channels: 2,
                    parameters: vec![
                        ("minptime".to_owned(), "10".to_owned()),
                        ("useinbandfec".to_owned(), "1".to_owned()),
                    ],
                    rtcp_fbs: vec![RtcpFeedback {
                        kind: "transport-cc".to_owned(),
                        subtype: None,
                    }],
                }],
                rtp_hdrexts: vec![
                    HeaderExtension {
                        id: AUDIO_LEVEL_ID,
                        uri: URI_AUDIO_LEVEL.to_owned(),
                    },
                    HeaderExtension {
                        id: TRANSPORT_CC_ID,
                        uri: URI_TRANSPORT_CC.to_owned(),
                    },
                ],
            }),
            video: Some(telegram_video_section(ufrag)),
        };
        response.to_json()
    }

    fn random_chars(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| char::from(ALPHABET[self.rng.usize(..ALPHABET.len())]))
            .collect()
    }

    /// Handles one datagram that arrived at the SFU's port.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.last_now = self.last_now.max(now);
        let kind = classify(contents);
        if kind == DatagramKind::Unknown {
            self.counters.dropped_garbage += 1;
            return;
        }
        // A STUN request names its participant by ufrag: it wins over a 5-tuple that an
        // earlier participant held (a client reuses its socket for a new call after the old
        // one left, and the old one's close may have been lost).
        let stun_owner = if kind == DatagramKind::Stun {
            stun_local_ufrag(contents).and_then(|u| self.by_ufrag.get(u).copied())
        } else {
            None
        };
        // STUN without a USERNAME we know (the answers to our own checks) goes to whoever last
        // sent authentic checks from this address: after a takeover that is the new
        // participant, while the 5-tuple still names the old one until the new one is
        // nominated. Routing those answers by the 5-tuple left a client that reused its
        // socket after a call that ended without a DTLS close (a crash, a lost close_notify)
        // unable to finish ICE: the churn ConnectTimeout of issue 16.
        let check_owner = if kind == DatagramKind::Stun && stun_owner.is_none() {
            self.by_check_addr.get(&source).copied()
        } else {
            None
        };
        let by_addr = check_owner.or_else(|| {
            self.by_addr
                .get(&source)
                .copied()
                .filter(|i| stun_owner.is_none_or(|o| o == *i))
        });
        let idx = match by_addr {
            Some(i) => i,
            None => {
                let by_ufrag = if kind == DatagramKind::Stun {
                    stun_local_ufrag(contents).and_then(|u| self.by_ufrag.get(u).copied())
                } else {
                    None
                };
                match by_ufrag {
                    Some(i) => {
                        // Remember the address only for STUN that passes the participant's
                        // ICE checks (ufrags, MESSAGE-INTEGRITY): otherwise anyone who saw a
                        // ufrag could grow this map by one entry per source port.
                        let authentic = Receive::new(Protocol::Udp, source, destination, contents)
                            .ok()
                            .zip(self.participants.get(i).and_then(Option::as_ref))
                            .is_some_and(|(r, p)| {
                                p.rtc.accepts(&ringcast_core::str0m::Input::Receive(now, r))
                            });
                        if !authentic {
                            self.counters.dropped_rejected += 1;
                            return;
                        }
                        self.by_check_addr.insert(source, i);
                        i
                    }
                    None => match self.by_check_addr.get(&source) {
                        Some(i) if kind == DatagramKind::Stun => *i,
                        _ => {
                            self.counters.dropped_unknown_source += 1;
                            return;
                        }
                    },
                }
            }
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, contents) else {
            self.counters.dropped_garbage += 1;
            return;
        };
        let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if p.left || p.silent {
            self.counters.dropped_unknown_source += 1;
            return;
        }
        let header = if kind == DatagramKind::Rtp {
            rtp_header(contents)
        } else {
            None
        };
        // str0m drops replayed SRTP silently; check the clear-text header first to count them.
        // The window moves when str0m has decrypted a packet (`handle_event`), or in header-only
        // mode (which authenticates nothing) right here.
        if let Some(h) = header.filter(|h| h.ssrc == p.ssrc) {
            let ext = p.replay.extend(h.seq);
            if !p.replay.accepts(ext) {
                self.counters.dropped_replayed += 1;
                return;
            }
            if self.config.header_only && p.connected {
                p.replay.update(ext);
            }
        }
        if let (Some(every), Some(h), Some((video_ssrc, video))) =
            (self.config.drop_video_every, header, p.video.as_mut())
            && h.ssrc == *video_ssrc
            && video.impair(every)
        {
            return;
        }
        if self.config.header_only
            && p.connected
            && let Some(header) = header
        {
            // Load mode: account from the clear-text RTP header (sequence number, SSRC) and
            // skip decryption, so one SFU thread can count what thousands of calls send.
            if let Some((video_ssrc, video)) = p.video.as_mut()
                && header.ssrc == *video_ssrc
            {
                video.count_unread(contents.len());
                return;
            }
            if header.ssrc == p.ssrc {
                if !header.has_extension {
                    p.dropped_no_audio_level += 1;
                    return;
                }
                let ext = p.seq_unwrap.extend(header.seq);
                p.packets += 1;
                p.bytes += contents.len() as u64;
                p.loss.on_packet(ext);
            }
            return;
        }
        if let Err(e) = p
            .rtc
            .handle_input(ringcast_core::str0m::Input::Receive(now, receive))
        {
            tracing::debug!(ssrc = p.ssrc, "participant refused datagram: {e}");
            self.counters.dropped_rejected += 1;
        }
        self.drain(idx);
    }

    /// The earliest instant any participant needs [`Sfu::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    /// Drives every participant whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.wheel.pop_due(now, &mut due);
        for (at, idx) in due.drain(..) {
            let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if p.timeout != Some(at) || p.left || p.silent {
                continue; // stale wheel entry, or a participant that no longer talks
            }
            p.timeout = None;
            if let Err(e) = p
                .rtc
                .handle_input(ringcast_core::str0m::Input::Timeout(now))
            {
                tracing::debug!(ssrc = p.ssrc, "participant timeout error: {e}");
            }
            self.drain(idx);
        }
        self.due = due;
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<SfuTransmit> {
        self.outbox.pop_front()
    }

    fn push_transmit(&mut self, t: SfuTransmit) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.counters.dropped_outbox_full += 1;
        } else {
            self.outbox.push_back(t);
        }
    }

    /// Polls participant `idx` until it has nothing more to say.
    fn drain(&mut self, idx: usize) {
        loop {
            let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if p.left || p.silent {
                return;
            }
            let out = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(ssrc = p.ssrc, "participant failed: {e}");
                    p.connected = false;
                    p.timeout = None;
                    return;
                }
            };
            match out {
                ringcast_core::str0m::Output::Timeout(t) => {
                    if p.timeout != Some(t) {
                        p.timeout = Some(t);
                        self.wheel.insert(t, idx);
                    }
                    return;
                }
                ringcast_core::str0m::Output::Transmit(t) => {
                    let contents: Vec<u8> = t.contents.into();
                    if classify(&contents) != DatagramKind::Stun && p.remote != Some(t.destination)
                    {
                        // Non-STUN traffic only goes to the nominated pair: this is the
                        // participant's 5-tuple from now on.
                        let old = p.remote.replace(t.destination);
                        if let Some(old) = old
                            && self.by_addr.get(&old) == Some(&idx)
                        {
                            self.by_addr.remove(&old);
                        }
                        // A second client on the same 5-tuple takes it over, like on a real
                        // SFU; the earlier participant no longer receives anything.
                        self.by_addr.insert(t.destination, idx);
                    }
                    self.push_transmit(SfuTransmit {
                        destination: t.destination,
                        contents,
                    });
                }
                ringcast_core::str0m::Output::Event(e) => self.handle_event(idx, e),
            }
        }
    }

    fn handle_event(&mut self, idx: usize, e: ringcast_core::str0m::Event) {
        use ringcast_core::str0m::Event;
        let Some(p) = self.participants.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        match e {
            Event::Connected => {
                tracing::debug!(ssrc = p.ssrc, chat = p.chat_id, "participant connected");
                p.connected = true;
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                p.connected = false;
            }
            Event::Closed => {
                // The participant closed DTLS (it left): its 5-tuple is free for whoever
                // uses that address next. Stats stay.
                p.connected = false;
                let remote = p.remote.take();
                if let Some(addr) = remote
                    && self.by_addr.get(&addr) == Some(&idx)
                {
                    self.by_addr.remove(&addr);
                }
                self.by_check_addr.retain(|_, i| *i != idx);
            }
            Event::ChannelOpen(id, _) => p.channel = Some(id),
            Event::ChannelData(d) => {
                let chat_id = p.chat_id;
                let newly = on_colibri(p, &d.data);
                // A receiver that starts watching gets a key frame at once, as from a real
                // SFU, instead of waiting for the sender's next one.
                for endpoint in newly {
                    self.ask_keyframe(chat_id, &endpoint);
                }
            }
            Event::KeyframeRequest(req) => {
                // A receiver lost the picture of a forwarded video: ask its sender.
                if let Some(&ssrc) = p.forwarded_mids.get(&req.mid) {
                    let chat_id = p.chat_id;
                    self.ask_keyframe_of_ssrc(chat_id, ssrc);
                }
            }
            Event::RtpPacket(pkt) => {
                if pkt.header.ext_vals.transport_cc.is_some() {
                    p.transport_cc_packets += 1;
                }
                // Video: the first layer (forwarded to whoever asked for it) or another
                // simulcast layer (counted only).
                let ssrc = *pkt.header.ssrc;
                let first = p.video.as_ref().is_some_and(|(s, _)| *s == ssrc);
                if let Some((_, receiver)) = p
                    .video
                    .iter_mut()
                    .chain(p.layers.iter_mut())
                    .find(|(s, _)| *s == ssrc)
                {
                    let new = receiver.on_rtp(self.last_now, &mut p.rtc, &pkt);
                    // A duplicate (a bandwidth probe repeating old packets on RTX, a resend
                    // of a packet that was not lost) is not forwarded again.
                    if first && new {
                        let (chat_id, endpoint) = (p.chat_id, p.ufrag.clone());
                        self.forward_video(chat_id, idx, &endpoint, &pkt);
                    }
                    return;
                }
                if *pkt.header.ssrc == p.ssrc {
                    p.replay.update(p.replay.extend(pkt.header.sequence_number));
                }
                let Some(level) = pkt.header.ext_vals.audio_level else {
                    p.dropped_no_audio_level += 1;
                    return;
                };
                p.packets += 1;
                p.bytes += pkt.payload.len() as u64;
                p.loss.on_packet(*pkt.seq_no);
                if self.config.analyse_audio && p.decoder.is_none() {
                    // Analysis turned on after the join (`set_analyse_audio`).
                    match opus::Decoder::new(48_000, opus::Channels::Mono) {
                        Ok(d) => p.decoder = Some(d),
                        Err(e) => tracing::debug!(ssrc = p.ssrc, "opus decoder: {e}"),
                    }
                }
                if let Some(decoder) = p.decoder.as_mut().filter(|_| self.config.analyse_audio) {
                    match decoder.decode(&pkt.payload, &mut self.pcm, false) {
                        Ok(n) => p.meter.push(self.pcm.get(..n).unwrap_or(&[])),
                        Err(e) => tracing::debug!(ssrc = p.ssrc, "opus decode: {e}"),
                    }
                }
                let chat_id = p.chat_id;
                let from_ssrc = p.ssrc;
                if self.config.forward_audio {
                    self.forward(chat_id, idx, from_ssrc, &pkt, level);
                }
            }
            _ => {}
        }
    }

    fn forward(
        &mut self,
        chat_id: i64,
        from: usize,
        ssrc: u32,
        pkt: &ringcast_core::str0m::rtp::RtpPacket,
        level: i8,
    ) {
        let now = self.last_now;
        let mut forwarded = 0;
        for t in self.others(chat_id, from) {
            let write = forwarded_write(pkt, now).ext_vals(ExtensionValues {
                audio_level: Some(level),
                voice_activity: pkt.header.ext_vals.voice_activity,
                ..Default::default()
            });
            forwarded += u64::from(self.send_forwarded(t, ssrc, MediaKind::Audio, write));
        }
        if let Some(p) = self.participants.get_mut(from).and_then(Option::as_mut) {
            p.forwarded += forwarded;
        }
    }

    /// Forwards a video packet of `from` (whose endpoint is `endpoint`) to every connected
    /// participant of the chat that asked for that endpoint, with its SSRC, sequence number,
    /// RTP time and marker (no RTX toward receivers: a receiver's loss ends in a PLI).
    fn forward_video(
        &mut self,
        chat_id: i64,
        from: usize,
        endpoint: &str,
        pkt: &ringcast_core::str0m::rtp::RtpPacket,
    ) {
        let now = self.last_now;
        for t in self.others(chat_id, from) {
            let wants = self
                .participants
                .get(t)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.wants.contains(endpoint));
            if !wants {
                continue;
            }
            let write = forwarded_write(pkt, now).marker(pkt.header.marker);
            if self.send_forwarded(t, *pkt.header.ssrc, MediaKind::Video, write)
                && let Some(p) = self.participants.get_mut(t).and_then(Option::as_mut)
            {
                p.video_forwarded += 1;
            }
        }
    }

    /// The participants of `chat_id` other than `from`.
    fn others(&self, chat_id: i64, from: usize) -> Vec<usize> {
        self.chats.get(&chat_id).map_or_else(Vec::new, |list| {
            list.iter().copied().filter(|i| *i != from).collect()
        })
    }

    /// Sends `write` to participant `t` on a send stream for `ssrc` (declared on first use),
    /// if it is connected; true if it went out.
    fn send_forwarded(&mut self, t: usize, ssrc: u32, kind: MediaKind, write: RtpWrite) -> bool {
        let now = self.last_now;
        let Some(p) = self.participants.get_mut(t).and_then(Option::as_mut) else {
            return false;
        };
        if !p.connected || p.left {
            return false;
        }
        let mut api = p.rtc.direct_api();
        if p.tx_streams.insert(ssrc) {
            // One media (mid) per forwarded source: str0m's pacer queues by (mid, rid) and
            // sends from the first stream it finds for it, so two speakers on one mid left the
            // second speaker's packets queued forever and the Rtc asking for a timeout in the
            // past on every poll. The mid never goes on the wire (no MID extension). A
            // receiver's PLI names the mid, hence the map for video.
            let prefix = if kind == MediaKind::Video { "v" } else { "f" };
            let mid = Mid::from(format!("{prefix}{ssrc}").as_str());
            api.declare_media(mid, kind);
            api.declare_stream_tx(StrSsrc::from(ssrc), None, mid, None);
            if kind == MediaKind::Video {
                p.forwarded_mids.insert(mid, ssrc);
            }
        }
        let Some(stream) = api.stream_tx(&StrSsrc::from(ssrc)) else {
            return false;
        };
        stream.write_rtp(write);
        // str0m releases queued RTP on the next timeout; make that now.
        if let Err(e) = p
            .rtc
            .handle_input(ringcast_core::str0m::Input::Timeout(now))
        {
            tracing::debug!("forward timeout: {e}");
        }
        self.drain(t);
        true
    }

    /// Asks the participant of `chat_id` whose endpoint is `endpoint` for a key frame (at most
    /// one PLI per `PLI_INTERVAL`, with its next video packet).
    fn ask_keyframe(&mut self, chat_id: i64, endpoint: &str) {
        let sender = self.chats.get(&chat_id).and_then(|list| {
            list.iter().copied().find(|i| {
                self.participants
                    .get(*i)
                    .and_then(Option::as_ref)
                    .is_some_and(|p| p.ufrag == endpoint)
            })
        });
        if let Some((_, video)) = sender
            .and_then(|i| self.participants.get_mut(i))
            .and_then(Option::as_mut)
            .and_then(|p| p.video.as_mut())
        {
            video.ask_pli();
        }
    }

    /// [`Sfu::ask_keyframe`] for the participant whose video SSRC is `ssrc`.
    fn ask_keyframe_of_ssrc(&mut self, chat_id: i64, ssrc: u32) {
        let Some(list) = self.chats.get(&chat_id) else {
            return;
        };
        for &i in list {
            if let Some((video_ssrc, video)) = self
                .participants
                .get_mut(i)
                .and_then(Option::as_mut)
                .and_then(|p| p.video.as_mut())
                && *video_ssrc == ssrc
            {
                video.ask_pli();
            }
        }
    }

    /// Stats of every participant, grouped by chat, in join order.
    pub fn stats(&self) -> Vec<(i64, Vec<ParticipantStats>)> {
        let mut chats: Vec<(i64, Vec<ParticipantStats>)> = Vec::new();
        let mut index: HashMap<i64, usize> = HashMap::new();
        for p in self.participants.iter().flatten() {
            let slot = *index.entry(p.chat_id).or_insert_with(|| {
                chats.push((p.chat_id, Vec::new()));
                chats.len() - 1
            });
            if let Some((_, list)) = chats.get_mut(slot) {
                list.push(ParticipantStats {
                    ssrc: p.ssrc,
                    connected: p.connected && !p.left,
                    left: p.left,
                    packets: p.packets,
                    bytes: p.bytes,
                    lost: p.loss.lost(),
                    seq_wraps: p.loss.wraps(),
                    dropped_no_audio_level: p.dropped_no_audio_level,
                    forwarded: p.forwarded,
                    dominant_hz: p.meter.dominant_hz(),
                    remote: p.remote,
                    video: p.video.as_ref().map(|(_, v)| v.stats()),
                    video_layers: p
                        .video
                        .iter()
                        .chain(&p.layers)
                        .map(|(ssrc, v)| (*ssrc, v.stats()))
                        .collect(),
                    transport_cc_packets: p.transport_cc_packets,
                    endpoint: p.ufrag.clone(),
                    ssrc_groups: p.ssrc_groups.clone(),
                    wants: {
                        let mut w: Vec<String> = p.wants.iter().cloned().collect();
                        w.sort();
                        w
                    },
                    channel_messages: p.channel_messages,
                    channel_malformed: p.channel_malformed,
                    video_forwarded: p.video_forwarded,
                });
            }
        }
        chats
    }

    /// Stats as the JSON served by `GET /v1/stats`.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut chats = serde_json::Map::new();
        for (chat_id, list) in self.stats() {
            let entries: Vec<serde_json::Value> = list
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "ssrc": p.ssrc,
                        "connected": p.connected,
                        "left": p.left,
                        "packets": p.packets,
                        "bytes": p.bytes,
                        "lost": p.lost,
                        "seq_wraps": p.seq_wraps,
                        "dropped_no_audio_level": p.dropped_no_audio_level,
                        "forwarded": p.forwarded,
                        "dominant_hz": p.dominant_hz,
                        "remote": p.remote.map(|a| a.to_string()),
                        "endpoint": p.endpoint,
                        "ssrc_groups": p.ssrc_groups.iter().map(|g| serde_json::json!({
                            "semantics": g.semantics,
                            "sources": g.sources.iter().map(|s| s.0).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "wants": p.wants,
                        "channel_messages": p.channel_messages,
                        "channel_malformed": p.channel_malformed,
                        "video_forwarded": p.video_forwarded,
                        "transport_cc_packets": p.transport_cc_packets,
                        "video_layers": p.video_layers.iter().map(|(ssrc, v)| serde_json::json!({
                            "ssrc": ssrc,
                            "packets": v.packets,
                            "frames": v.frames,
                            "keyframes": v.keyframes,
                            "width": v.width,
                            "height": v.height,
                            "fps": v.fps,
                            "lost": v.lost,
                            "duplicates": v.duplicates,
                        })).collect::<Vec<_>>(),
                        "video": p.video.as_ref().map(|v| serde_json::json!({
                            "codec": v.codec.map(|c| c.to_string()),
                            "packets": v.packets,
                            "bytes": v.bytes,
                            "frames": v.frames,
                            "keyframes": v.keyframes,
                            "decodable_frames": v.decodable_frames,
                            "incomplete_frames": v.incomplete_frames,
                            "width": v.width,
                            "height": v.height,
                            "fps": v.fps,
                            "plis_sent": v.plis_sent,
                            "lost": v.lost,
                            "late_packets": v.late_packets,
                            "duplicates": v.duplicates,
                            "dropped_by_impairment": v.dropped_by_impairment,
                        })),
                    })
                })
                .collect();
            chats.insert(chat_id.to_string(), serde_json::Value::Array(entries));
        }
        let c = &self.counters;
        serde_json::json!({
            "chats": chats,
            "dropped": {
                "garbage": c.dropped_garbage,
                "unknown_source": c.dropped_unknown_source,
                "rejected": c.dropped_rejected,
                "replayed": c.dropped_replayed,
                "outbox_full": c.dropped_outbox_full,
                "bad_joins": c.bad_joins,
            }
        })
    }

    /// Turns decoding and analysis of received audio ([`SfuConfig::analyse_audio`]) on or
    /// off from now on. A simulation that only asks for the dominant frequency at the end
    /// turns it on shortly before: the analysis keeps only the last ~0.34 s anyway, and
    /// decoding every packet of a run was most of its cost.
    pub fn set_analyse_audio(&mut self, on: bool) {
        self.config.analyse_audio = on;
    }

    /// Number of participants that have joined and not left.
    pub fn participants(&self) -> usize {
        self.live
    }
}

/// A received packet as it is forwarded: same payload type, sequence number, RTP time and
/// payload (shared, not copied); the caller adds what the media kind needs.
fn forwarded_write(pkt: &ringcast_core::str0m::rtp::RtpPacket, now: Instant) -> RtpWrite {
    RtpWrite::new(
        pkt.header.payload_type,
        pkt.seq_no,
        pkt.header.timestamp,
        now,
        pkt.payload.clone(),
    )
}

/// Reads a colibri message from participant `p`'s data channel: a `ReceiverVideoConstraints`
/// replaces the endpoints it wants (those with a `maxHeight` above 0; all of them if the
/// default constraint allows any height, which this mock does not do: it forwards only what
/// was named). Returns the endpoints newly wanted. Anything else is counted; malformed
/// messages too.
fn on_colibri(p: &mut Participant, data: &[u8]) -> Vec<String> {
    p.channel_messages += 1;
    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(data) else {
        p.channel_malformed += 1;
        return Vec::new();
    };
    match msg.get("colibriClass").and_then(|c| c.as_str()) {
        Some("ReceiverVideoConstraints") => {
            let Some(constraints) = msg.get("constraints").and_then(|c| c.as_object()) else {
                p.channel_malformed += 1;
                return Vec::new();
            };
            let wants: HashSet<String> = constraints
                .iter()
                .filter(|(_, c)| c.get("maxHeight").and_then(|h| h.as_u64()).unwrap_or(0) > 0)
                .map(|(endpoint, _)| endpoint.clone())
                .take(64)
                .collect();
            let newly = wants.difference(&p.wants).cloned().collect();
            p.wants = wants;
            newly
        }
        Some(_) => Vec::new(),
        None => {
            p.channel_malformed += 1;
            Vec::new()
        }
    }
}

/// The SFU as the simulator's node: `sim::World` drives it as it drives calls.
impl ringcast_core::sim::SimSfu for Sfu {
    fn addr(&self) -> SocketAddr {
        self.config.udp_addr
    }

    fn join(&mut self, now: Instant, chat_id: i64, payload: &[u8]) -> Result<String, String> {
        Self::join(self, now, chat_id, payload).map_err(|e| e.to_string())
    }

    fn handle_datagram(&mut self, now: Instant, d: ringcast_core::transport::Datagram<'_>) {
        Self::handle_datagram(self, now, d.source, d.destination, d.contents);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        Self::poll_transmit(self).map(|t| (t.destination, t.contents))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }
}

/// The `video` section Telegram's SFU always sends, even to a client that sends no video:
/// VP8 and H.264 with their RTX payload types, abs-send-time, transport-cc and video-orientation, and the
/// bandwidth-probing SSRC (telegram-signaling.md §2). The real ntgcalls refuses an answer
/// without it ("Invalid JSON: Not iterable") and aborts on one with empty lists.
fn telegram_video_section(endpoint: &str) -> VideoDescription {
    let fb = |kind: &str, subtype: Option<&str>| RtcpFeedback {
        kind: kind.to_owned(),
        subtype: subtype.map(str::to_owned),
    };
    // What Telegram's video payload types announce: REMB, transport-cc, FIR, NACK and PLI.
    let video_fbs = || {
        [
            ("goog-remb", None),
            ("transport-cc", None),
            ("ccm", Some("fir")),
            ("nack", None),
            ("nack", Some("pli")),
        ]
        .into_iter()
        .map(|(kind, subtype)| fb(kind, subtype))
        .collect::<Vec<_>>()
    };
    let ext = |id: u8, uri: &str| HeaderExtension {
        id,
        uri: uri.to_owned(),
    };
    VideoDescription {
        endpoint: Some(endpoint.to_owned()),
        server_sources: vec![Ssrc(PROBING_SSRC)],
        media: MediaDescription {
            payload_types: vec![
                PayloadType {
                    id: VP8_PT,
                    name: "VP8".to_owned(),
                    clockrate: 90_000,
                    channels: 1,
                    parameters: Vec::new(),
                    rtcp_fbs: video_fbs(),
                },
                PayloadType {
                    id: VP8_RTX_PT,
                    name: "rtx".to_owned(),
                    clockrate: 90_000,
                    channels: 1,
                    parameters: vec![("apt".to_owned(), VP8_PT.to_string())],
                    rtcp_fbs: Vec::new(),
                },
                PayloadType {
                    id: H264_PT,
                    name: "H264".to_owned(),
                    clockrate: 90_000,
                    channels: 1,
                    parameters: vec![
                        ("level-asymmetry-allowed".to_owned(), "1".to_owned()),
                        ("packetization-mode".to_owned(), "1".to_owned()),
                        ("profile-level-id".to_owned(), "42e01f".to_owned()),
                    ],
                    rtcp_fbs: video_fbs(),
                },
                PayloadType {
                    id: H264_RTX_PT,
                    name: "rtx".to_owned(),
                    clockrate: 90_000,
                    channels: 1,
                    parameters: vec![("apt".to_owned(), H264_PT.to_string())],
                    rtcp_fbs: Vec::new(),
                },
            ],
            rtp_hdrexts: vec![
                ext(ABS_SEND_TIME_ID, URI_ABS_SEND_TIME),
                ext(TRANSPORT_CC_ID, URI_TRANSPORT_CC),
                ext(VIDEO_ORIENTATION_ID, URI_VIDEO_ORIENTATION),
            ],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_wraps_and_reordering() {
        let mut u = SeqUnwrap::default();
        let a = u.extend(65_534);
        assert_eq!(u.extend(65_535), a + 1);
        assert_eq!(u.extend(0), a + 2);
        assert_eq!(u.extend(65_535), a + 1, "late packet from before the wrap");
        assert_eq!(u.extend(1), a + 3);
        let mut loss = LossTracker::default();
        for ext in [a, a + 1, a + 3] {
            loss.on_packet(ext);
        }
        assert_eq!(loss.lost(), 1);
        assert_eq!(loss.wraps(), 1, "65,534 .. 65,536+1 crossed one wrap");
        let mut fresh = LossTracker::default();
        assert_eq!(fresh.wraps(), 0);
        fresh.on_packet(5);
        fresh.on_packet(65_535);
        assert_eq!(fresh.wraps(), 0);
        fresh.on_packet(3 * 65_536 + 2);
        assert_eq!(fresh.wraps(), 3);
    }
}
