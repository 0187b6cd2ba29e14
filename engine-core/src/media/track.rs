//! Media tracks: what a call sends and receives, apart from its transport.
//!
//! A call, group ([`crate::Call`]) or 1:1 ([`crate::p2p_call::P2pCall`]), is a transport (one
//! [`str0m::Rtc`]: ICE, DTLS, SRTP, set up by its signaling) plus media tracks. The tracks are
//! the same for both kinds of call, so they live here once:
//!
//! - [`AudioTrack`]: one outgoing audio stream. It owns the [`FrameSource`], the pause/mute
//!   state and the played time, paces frames ([`FramePacer`]) and writes them into str0m
//!   ([`RtpSender`]: SSRC, payload type, extended sequence number, RTP time).
//! - [`IncomingStreams`]: the receive side. It accepts a bounded number of remote SSRCs (each
//!   one an `expect_stream_rx` in str0m), refuses replayed SRTP before str0m sees it
//!   ([`ReplayWindow`] on the clear header, advanced only once str0m has authenticated a packet)
//!   and counts what it drops.
//!
//! [`RtpSender`] and [`FramePacer`] know nothing of Opus: a video track is a second user of them
//! (a 90 kHz clock, several packets per frame with the marker bit on the last, keyframe requests
//! and RTX on top), not a third copy of the pacing and sequence logic.
//!
//! Nothing here reads a clock: every method that depends on time takes `now`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::Rtc;
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, Ssrc as StrSsrc};

use crate::demux::{RtpHeaderPeek, rtp_header};
use crate::media::{FRAME_DURATION, FrameSource, OPUS_CLOCK_RATE_HZ, OpusFrame, SourceError};
use crate::pacer::LatenessHistogram;
use crate::replay::ReplayWindow;
use crate::signaling::Ssrc;
use crate::transport::MediaOut;

/// How early a frame may be sent. Timers in the runtimes have ~1 ms resolution (tokio's
/// timer wheel); sending up to this much ahead keeps frames from going out late because of it.
/// Receivers' jitter buffers absorb a millisecond of earliness without noticing.
pub const FRAME_SEND_AHEAD: Duration = Duration::from_millis(1);

/// If the caller drives a track this late, frames are skipped instead of burst out: more than
/// this many overdue frames are dropped (and counted) and the schedule restarts near `now`.
pub const MAX_CATCH_UP_FRAMES: u32 = 3;

/// A 20 ms Opus packet that decodes to silence: TOC 0xF8 (CELT-only fullband 20 ms, code 0)
/// followed by the "silence" frame libopus itself emits in DTX (RFC 6716 §3.1). Sent while a
/// track is muted, so the far end keeps seeing a live stream with the audio-level extension.
pub const OPUS_SILENCE_FRAME: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// RFC 6464 level meaning "silence" (-127 dBov).
const AUDIO_LEVEL_SILENCE: u8 = 127;

/// Initial RTP sequence numbers are drawn below this (see [`RtpSender::random`]).
pub const INITIAL_SEQ_LIMIT: u16 = 0x8000;

/// Sequence numbers and RTP time of one outgoing RTP stream, and the write into str0m.
///
/// Media-agnostic: audio writes one packet per frame, video several (the same RTP time, the
/// marker bit on the last), then [`RtpSender::advance`] moves the clock by the frame's length.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: Ssrc,
    pt: Pt,
    clock_rate: u32,
    /// Extended sequence number of the next packet (the high bits are str0m's SRTP ROC).
    seq: u64,
    /// RTP time of the current frame.
    rtp_time: u32,
    /// Packets may be resent on NACK (video, through RTX); audio packets are not.
    nackable: bool,
}

impl RtpSender {
    /// A stream that sends as `ssrc` with payload type `pt` on a `clock_rate` Hz clock, starting
    /// at sequence number `seq` and RTP time `rtp_time` (both drawn at random by the call, RFC
    /// 3550 §5.1).
    pub fn new(ssrc: Ssrc, pt: Pt, clock_rate: u32, seq: u64, rtp_time: u32) -> Self {
        Self {
            ssrc,
            pt,
            clock_rate,
            seq,
            rtp_time,
            nackable: false,
        }
    }

    /// Sets the payload type (known once the far end's answer is applied).
    pub fn set_payload_type(&mut self, pt: Pt) {
        self.pt = pt;
    }

    /// Marks every packet written from now on as one str0m keeps to answer NACKs with (a video
    /// stream with an RTX stream).
    pub fn set_nackable(&mut self, nackable: bool) {
        self.nackable = nackable;
    }

    /// A stream with its SSRC, initial sequence number and RTP time drawn from `rng`, in that
    /// order (so a call's seed gives the same values as before this type existed).
    ///
    /// The SSRC is a positive non-zero int32, as ntgcalls' `generateSsrcs` (Telegram rejects
    /// others). RFC 3550 §5.1: random initial sequence number and timestamp. The sequence number
    /// is drawn below 2^15, as libwebrtc does (`kMaxInitRtpSeqNumber`): SRTP signals no rollover
    /// counter, so a receiver that starts decrypting late (a DTLS server is done before its
    /// client is) assumes ROC 0, and a wrap before that moment would make every packet fail to
    /// decrypt. Below 2^15 leaves >= 32,768 packets (10 min of audio).
    pub fn random(rng: &mut fastrand::Rng, pt: Pt, clock_rate: u32) -> Self {
        let ssrc = Ssrc(rng.u32(1..=0x7FFF_FFFF));
        let seq = u64::from(rng.u16(..INITIAL_SEQ_LIMIT));
        let rtp_time = rng.u32(..);
        Self::new(ssrc, pt, clock_rate, seq, rtp_time)
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The stream's payload type.
    pub fn pt(&self) -> Pt {
        self.pt
    }

    /// Extended sequence number of the next packet.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Writes one packet of the current frame into `out` (RTP time unchanged). Returns false,
    /// sending nothing, if the `Rtc` has no send stream for this SSRC (declare it first).
    pub fn write(
        &mut self,
        out: &mut MediaOut<'_>,
        wallclock: Instant,
        payload: Arc<[u8]>,
        marker: bool,
        ext: ExtensionValues,
    ) -> bool {
        let write = RtpWrite::new(
            self.pt,
            SeqNo::from(self.seq),
            self.rtp_time,
            wallclock,
            payload,
        )
        .marker(marker)
        .nackable(self.nackable)
        .ext_vals(ext);
        if !out.write_rtp(StrSsrc::from(self.ssrc.0), write) {
            return false;
        }
        self.seq += 1;
        true
    }

    /// Ends the current frame: the next one starts `ticks` (of the stream's clock) later.
    pub fn advance(&mut self, ticks: u32) {
        self.rtp_time = self.rtp_time.wrapping_add(ticks);
    }

    /// Moves the RTP clock on by a stretch of wall time in which nothing was sent (a pause), so
    /// receivers' jitter buffers see a gap rather than a jump back.
    pub fn skip(&mut self, gap: Duration) {
        let ticks = gap.as_micros() * u128::from(self.clock_rate) / 1_000_000;
        self.advance(ticks as u32);
    }
}

/// When the next frame of a track is due, and what being driven late cost.
///
/// The caller (the call, driven by the runtime's timer wheel) asks [`FramePacer::begin`] which
/// frame is due first at `now`; frames more than [`MAX_CATCH_UP_FRAMES`] behind are skipped and
/// counted. It then sends frames while their due time is within [`FRAME_SEND_AHEAD`] of `now`,
/// recording each one's lateness, and hands the next due time back ([`FramePacer::resume_at`]).
/// The lateness histogram belongs to the call's stats and is passed in, so reading a call's
/// stats copies nothing.
#[derive(Debug)]
pub struct FramePacer {
    next_due: Option<Instant>,
    /// Frame length assumed for skipping (the track's usual frame).
    frame: Duration,
    /// How long after [`FramePacer::start`] the first frame is due (less than a frame).
    phase: Duration,
    frames_skipped_late: u64,
    /// Lateness of the frames sent since the last drain (bounded, allocated once).
    recent: Vec<Duration>,
}

impl FramePacer {
    /// A stopped pacer for frames of `frame` length whose first frame is due at the start.
    pub fn new(frame: Duration) -> Self {
        Self::with_phase(frame, Duration::ZERO)
    }

    /// A stopped pacer whose first frame is due `phase` after each start (`phase` is taken
    /// modulo `frame`).
    ///
    /// Calls that connect in the same turn of a runtime would otherwise send in lockstep: their
    /// frames all come due in the same tick, which then takes as long as all of them together,
    /// and the frames of the next tick wait behind it. A phase spread over the frame (from the
    /// SSRC, which is random) keeps each tick's share of the work small. Delaying a stream's
    /// first frame by less than one frame costs nothing a listener could hear.
    pub fn with_phase(frame: Duration, phase: Duration) -> Self {
        let phase = if frame.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos((phase.as_nanos() % frame.as_nanos()) as u64)
        };
        Self {
            next_due: None,
            frame,
            phase,
            frames_skipped_late: 0,
            recent: Vec::with_capacity(MAX_CATCH_UP_FRAMES as usize + 2),
        }
    }

    /// Starts the clock at `now` (the first frame due after the pacer's phase) unless it is
    /// running.
    pub fn start(&mut self, now: Instant) {
        if self.next_due.is_none() {
            self.next_due = Some(now + self.phase);
        }
    }

    /// Stops the clock (nothing to send).
    pub fn stop(&mut self) {
        self.next_due = None;
    }

    /// When the next frame is due, while running.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    /// When the caller should wake for the next frame (its due time less
    /// [`FRAME_SEND_AHEAD`]), while running.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_due.map(|t| t - FRAME_SEND_AHEAD)
    }

    /// The due time of the first frame to send at `now`, after skipping (and counting) frames
    /// beyond the catch-up budget; `None` if the clock is stopped or nothing is due yet.
    pub fn begin(&mut self, now: Instant) -> Option<Instant> {
        let mut due = self.next_due?;
        if due > Self::horizon(now) {
            return None;
        }
        let behind =
            (now.saturating_duration_since(due).as_micros() / self.frame.as_micros().max(1)) as u32;
        if behind > MAX_CATCH_UP_FRAMES {
            let skip = behind - MAX_CATCH_UP_FRAMES;
            self.frames_skipped_late += u64::from(skip);
            due += self.frame * skip;
        }
        Some(due)
    }

    /// The latest due time that may go out at `now`.
    pub fn horizon(now: Instant) -> Instant {
        now + FRAME_SEND_AHEAD
    }

    /// Records in `histogram` that the frame due at `due` went out at `now`.
    pub fn record(&mut self, now: Instant, due: Instant, histogram: &mut LatenessHistogram) {
        let lateness = now.saturating_duration_since(due);
        histogram.record(lateness);
        if self.recent.len() < self.recent.capacity() {
            self.recent.push(lateness);
        }
    }

    /// Sets when the next frame is due after a round of sending.
    pub fn resume_at(&mut self, due: Instant) {
        self.next_due = Some(due);
    }

    /// Frames skipped because the caller drove the track late.
    pub fn frames_skipped_late(&self) -> u64 {
        self.frames_skipped_late
    }

    /// Hands `f` the lateness of every frame sent since the last drain, and forgets them.
    pub fn drain_recent(&mut self, mut f: impl FnMut(Duration)) {
        for l in self.recent.drain(..) {
            f(l);
        }
    }
}

/// Pause and mute, as a call reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaState {
    /// Sending nothing, time stopped.
    pub paused: bool,
    /// Sending silence.
    pub muted: bool,
    /// The camera track sends nothing while its source keeps running (ntgcalls'
    /// `video_stopped`). Always false for a call without video.
    pub video_stopped: bool,
}

/// Counters of an outgoing track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackCounters {
    /// RTP media packets handed to str0m.
    pub packets_sent: u64,
    /// Payload bytes of those packets.
    pub payload_bytes_sent: u64,
    /// Samples (ticks of the track's clock) of media played; stops while paused.
    pub played_samples: u64,
    /// Frames skipped because the call was driven late.
    pub frames_skipped_late: u64,
    /// Position in the current source, in ticks of the track's clock: where it started
    /// ([`FrameSource::start_position`]) plus what was played of it. ntgcalls' `time`.
    pub position_samples: u64,
}

/// Why a track stopped sending on its own. Either way the call stays up, ready for the next
/// source (as in ntgcalls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEnd {
    /// The source ran out of frames.
    Finished,
    /// The source failed (broken file, ffmpeg exited with an error, failed encoder).
    Failed(SourceError),
}

impl SourceEnd {
    /// The error a `StreamEnded` event carries: `None` when the source ran out.
    pub fn error(self) -> Option<SourceError> {
        match self {
            Self::Finished => None,
            Self::Failed(e) => Some(e),
        }
    }
}

/// Which kind of track a stream-end event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrackKind {
    /// The outgoing audio track (the microphone, in ntgcalls' words).
    Audio,
    /// The outgoing video track (the camera, in ntgcalls' words).
    Video,
}

/// Stats of a call that carry an outgoing track's counters under the same names.
pub trait TrackStats {
    /// Stores `counters`.
    fn set_track_counters(&mut self, counters: TrackCounters);
}

macro_rules! impl_track_stats {
    ($($stats:ty),*) => {$(
        impl TrackStats for $stats {
            fn set_track_counters(&mut self, c: TrackCounters) {
                self.packets_sent = c.packets_sent;
                self.payload_bytes_sent = c.payload_bytes_sent;
                self.played_samples = c.played_samples;
                self.frames_skipped_late = c.frames_skipped_late;
                self.position_samples = c.position_samples;
            }
        }
    )*};
}

impl_track_stats!(crate::call::CallStats, crate::p2p_call::P2pStats);

/// One outgoing Opus audio track. See the [module docs](self).
pub struct AudioTrack {
    rtp: RtpSender,
    pacer: FramePacer,
    source: Option<Box<dyn FrameSource>>,
    media: MediaState,
    /// Whether the transport can carry media (DTLS-SRTP up).
    live: bool,
    /// When the track was paused, to move the RTP clock by the gap on resume.
    paused_at: Option<Instant>,
    /// [`OPUS_SILENCE_FRAME`], allocated once per track and shared by every muted packet.
    silence: Arc<[u8]>,
    counters: TrackCounters,
}

impl fmt::Debug for AudioTrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioTrack")
            .field("rtp", &self.rtp)
            .field("media", &self.media)
            .field("live", &self.live)
            .field("has_source", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

impl AudioTrack {
    /// An audio track that sends as `rtp` once the transport is live and a source is set.
    pub fn new(rtp: RtpSender) -> Self {
        // The SSRC is random: its low bits spread the tracks' phases over the frame.
        let phase = FRAME_DURATION * (rtp.ssrc().0 % 1024) / 1024;
        Self {
            pacer: FramePacer::with_phase(FRAME_DURATION, phase),
            rtp,
            source: None,
            media: MediaState::default(),
            live: false,
            paused_at: None,
            silence: Arc::from(&OPUS_SILENCE_FRAME[..]),
            counters: TrackCounters::default(),
        }
    }

    /// The RTP stream (SSRC, payload type, sequence numbers).
    pub fn rtp(&self) -> &RtpSender {
        &self.rtp
    }

    /// Pause/mute.
    pub fn media_state(&self) -> MediaState {
        self.media
    }

    /// True while a source is attached.
    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }

    /// The track's counters.
    pub fn counters(&self) -> TrackCounters {
        TrackCounters {
            frames_skipped_late: self.pacer.frames_skipped_late(),
            ..self.counters
        }
    }

    /// Sets the payload type (known once the far end's answer is applied).
    pub fn set_payload_type(&mut self, pt: Pt) {
        self.rtp.pt = pt;
    }

    /// Media played so far (stops while paused).
    pub fn played(&self) -> Duration {
        Duration::from_micros(
            self.counters.played_samples * 1_000_000 / u64::from(OPUS_CLOCK_RATE_HZ),
        )
    }

    /// When the caller should wake for the next frame, while frames are flowing.
    pub fn deadline(&self) -> Option<Instant> {
        self.pacer.deadline()
    }

    /// Hands `f` the lateness of every frame sent since the last drain, and forgets them.
    pub fn drain_frame_lateness(&mut self, f: impl FnMut(Duration)) {
        self.pacer.drain_recent(f);
    }

    /// The transport is up: frames may flow from `now`.
    pub fn set_live(&mut self, now: Instant) {
        self.live = true;
        self.schedule(now);
    }

    /// Plays `source` from `now`, replacing any current one.
    pub fn set_source(&mut self, now: Instant, source: Box<dyn FrameSource>) {
        let start = source.start_position();
        self.counters.position_samples =
            (start.as_micros() * u128::from(OPUS_CLOCK_RATE_HZ) / 1_000_000) as u64;
        self.source = Some(source);
        self.schedule(now);
    }

    /// Stops sending; the played time and the source stop too. Returns true if this changed
    /// the media state.
    pub fn pause(&mut self, now: Instant) -> bool {
        if self.media.paused {
            return false;
        }
        self.media.paused = true;
        self.paused_at = Some(now);
        self.pacer.stop();
        true
    }

    /// Continues after [`AudioTrack::pause`]; the RTP clock moves on by the pause. Returns true
    /// if this changed the media state.
    pub fn resume(&mut self, now: Instant) -> bool {
        if !self.media.paused {
            return false;
        }
        self.media.paused = false;
        if let Some(at) = self.paused_at.take() {
            self.rtp.skip(now.saturating_duration_since(at));
        }
        self.schedule(now);
        true
    }

    /// Sends silence instead of the source's frames (the source keeps advancing). Returns true
    /// if this changed the media state.
    pub fn mute(&mut self) -> bool {
        !std::mem::replace(&mut self.media.muted, true)
    }

    /// Undoes [`AudioTrack::mute`]. Returns true if this changed the media state.
    pub fn unmute(&mut self) -> bool {
        std::mem::replace(&mut self.media.muted, false)
    }

    /// The call ended: drop the source and stop the clock.
    pub fn stop(&mut self) {
        self.source = None;
        self.live = false;
        self.pacer.stop();
    }

    /// Sends every frame due at `now` into `rtc`, recording each frame's lateness in
    /// `lateness`. Returns why the source stopped, if it did.
    pub fn send_due(
        &mut self,
        now: Instant,
        out: &mut MediaOut<'_>,
        lateness: &mut LatenessHistogram,
    ) -> Option<SourceEnd> {
        let mut due = self.pacer.begin(now)?;
        // A frame within FRAME_SEND_AHEAD of its due time goes now: runtimes wake with ~1 ms
        // timer resolution, and a frame a little early is harmless where one late is not.
        while due <= FramePacer::horizon(now) {
            let frame = match self.next_source_frame() {
                Ok(frame) => frame,
                Err(end) => {
                    self.pacer.stop();
                    return Some(end);
                }
            };
            self.pacer.record(now, due, lateness);
            self.write_frame(out, due, &frame);
            due += Duration::from_micros(
                u64::from(frame.duration_samples) * 1_000_000 / u64::from(OPUS_CLOCK_RATE_HZ),
            );
        }
        self.pacer.resume_at(due);
        None
    }

    fn schedule(&mut self, now: Instant) {
        if self.live && self.source.is_some() && !self.media.paused {
            self.pacer.start(now);
        }
    }

    fn next_source_frame(&mut self) -> Result<OpusFrame, SourceEnd> {
        let Some(source) = self.source.as_mut() else {
            return Err(SourceEnd::Finished);
        };
        match source.next_frame() {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => {
                self.source = None;
                Err(SourceEnd::Finished)
            }
            Err(e) => {
                self.source = None;
                Err(SourceEnd::Failed(e))
            }
        }
    }

    fn write_frame(&mut self, out: &mut MediaOut<'_>, wallclock: Instant, frame: &OpusFrame) {
        // Arc clones: no allocation or copy per packet.
        let (payload, level, vad): (Arc<[u8]>, u8, bool) = if self.media.muted {
            (self.silence.clone(), AUDIO_LEVEL_SILENCE, false)
        } else {
            (frame.data.clone(), frame.audio_level, frame.voice_activity)
        };
        let ext = ExtensionValues {
            audio_level: Some(-(level.min(127) as i8)),
            voice_activity: Some(vad),
            ..Default::default()
        };
        let payload_len = payload.len() as u64;
        if !self.rtp.write(out, wallclock, payload, false, ext) {
            return;
        }
        self.rtp.advance(frame.duration_samples);
        self.counters.packets_sent += 1;
        self.counters.payload_bytes_sent += payload_len;
        self.counters.played_samples += u64::from(frame.duration_samples);
        self.counters.position_samples += u64::from(frame.duration_samples);
    }
}

/// An SRTP packet refused as a replay: its sequence number was already received, or is older
/// than the replay window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// The packet's SSRC.
    pub ssrc: u32,
    /// Its RTP sequence number.
    pub seq: u16,
}

/// One authenticated, decrypted audio packet from another participant (or the 1:1 peer).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedAudio {
    /// The speaker's SSRC.
    pub ssrc: Ssrc,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub rtp_time: u32,
    /// RFC 6464 level if the packet carried the extension.
    pub audio_level: Option<i8>,
    /// The Opus packet.
    pub payload: Arc<[u8]>,
}

/// Counters of the receive side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncomingCounters {
    /// SRTP packets refused as replays (see [`crate::replay`]).
    pub dropped_replayed: u64,
    /// Packets from new SSRCs beyond the call's limit.
    pub dropped_unknown_ssrc: u64,
}

/// The receive side of a call's media: which remote SSRCs it takes, with a replay window each.
/// See the [module docs](self).
#[derive(Debug)]
pub struct IncomingStreams {
    local_ssrc: u32,
    mid: Mid,
    max: usize,
    windows: HashMap<u32, ReplayWindow>,
    counters: IncomingCounters,
}

impl IncomingStreams {
    /// Accepts at most `max` remote SSRCs (never `local_ssrc`, our own), received on `mid`.
    pub fn new(local_ssrc: Ssrc, mid: Mid, max: usize) -> Self {
        Self {
            local_ssrc: local_ssrc.0,
            mid,
            max,
            windows: HashMap::new(),
            counters: IncomingCounters::default(),
        }
    }

    /// The receive side's counters.
    pub fn counters(&self) -> IncomingCounters {
        self.counters
    }

    /// True if `ssrc` is accepted.
    pub fn contains(&self, ssrc: u32) -> bool {
        self.windows.contains_key(&ssrc)
    }

    /// Refuses (and counts) a packet whose clear header shows it is a replay on an accepted
    /// SSRC. Call before str0m sees the packet.
    ///
    /// # Errors
    /// [`Replayed`] for a sequence number already received or older than the window.
    pub fn check_replay(&mut self, header: &RtpHeaderPeek) -> Result<(), Replayed> {
        match self.windows.get(&header.ssrc) {
            Some(window) if !window.accepts(window.extend(header.seq)) => {
                self.counters.dropped_replayed += 1;
                Err(Replayed {
                    ssrc: header.ssrc,
                    seq: header.seq,
                })
            }
            _ => Ok(()),
        }
    }

    /// Lets str0m receive RTP from `ssrc` unless it is ours, already accepted, or over the
    /// limit (counted in [`IncomingCounters::dropped_unknown_ssrc`]).
    pub fn accept(&mut self, rtc: &mut Rtc, ssrc: u32) {
        if ssrc == self.local_ssrc || self.windows.contains_key(&ssrc) {
            return;
        }
        if self.windows.len() >= self.max {
            self.counters.dropped_unknown_ssrc += 1;
            return;
        }
        self.windows.insert(ssrc, ReplayWindow::new());
        rtc.direct_api()
            .expect_stream_rx(StrSsrc::from(ssrc), None, self.mid, None);
    }

    /// The receive-side gate for one datagram about to reach str0m: an RTP packet on an accepted
    /// SSRC must not be a replay; a packet with payload type `pt` from a new SSRC is accepted
    /// (while `rtc` is connected and the limit allows). Not RTP: let through.
    ///
    /// # Errors
    /// [`Replayed`], counted.
    pub fn admit(&mut self, rtc: &mut Rtc, contents: &[u8], pt: u8) -> Result<(), Replayed> {
        let Some(header) = rtp_header(contents) else {
            return Ok(());
        };
        self.check_replay(&header)?;
        if header.pt == pt && rtc.is_connected() {
            self.accept(rtc, header.ssrc);
        }
        Ok(())
    }

    /// str0m authenticated and decrypted this packet: record it in its SSRC's window and hand
    /// it on as the application sees it.
    pub fn on_rtp(&mut self, packet: str0m::rtp::RtpPacket) -> ReceivedAudio {
        let header = &packet.header;
        self.on_authenticated(*header.ssrc, header.sequence_number);
        ReceivedAudio {
            ssrc: Ssrc(*header.ssrc),
            seq: header.sequence_number,
            rtp_time: header.timestamp,
            audio_level: header.ext_vals.audio_level,
            payload: packet.payload,
        }
    }

    /// str0m authenticated and decrypted packet `seq` of `ssrc`: record it in the window.
    pub fn on_authenticated(&mut self, ssrc: u32, seq: u16) {
        if let Some(window) = self.windows.get_mut(&ssrc) {
            window.update(window.extend(seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> RtpSender {
        RtpSender::new(Ssrc(7), Pt::from(111), 48_000, 100, 1_000)
    }

    #[test]
    fn skip_moves_rtp_time_by_the_gap_in_clock_ticks() {
        let mut audio = sender();
        audio.skip(Duration::from_millis(500));
        assert_eq!(audio.rtp_time, 1_000 + 24_000);
        let mut video = RtpSender::new(Ssrc(8), Pt::from(96), 90_000, 0, u32::MAX - 10);
        video.skip(Duration::from_millis(100));
        assert_eq!(video.rtp_time, 9_000 - 11, "wraps like RTP time");
    }

    #[test]
    fn pacer_skips_frames_beyond_the_catch_up_budget() {
        let t0 = Instant::now();
        let mut pacer = FramePacer::new(FRAME_DURATION);
        assert_eq!(pacer.begin(t0), None, "stopped");
        pacer.start(t0);
        assert_eq!(pacer.begin(t0), Some(t0));
        // Due in 5 ms: not yet (beyond the send-ahead).
        pacer.resume_at(t0 + Duration::from_millis(5));
        assert_eq!(pacer.begin(t0), None);
        // Driven 200 ms late: 10 frames behind, 3 kept, 7 skipped.
        pacer.resume_at(t0);
        let late = t0 + Duration::from_millis(200);
        let first = pacer.begin(late).expect("due");
        assert_eq!(pacer.frames_skipped_late(), 7);
        assert_eq!(first, t0 + FRAME_DURATION * 7);
        let mut histogram = LatenessHistogram::default();
        pacer.record(late, first, &mut histogram);
        let mut drained = Vec::new();
        pacer.drain_recent(|l| drained.push(l));
        assert_eq!(drained, vec![Duration::from_millis(60)]);
        assert_eq!(histogram.count(), 1);
    }

    #[test]
    fn pause_and_mute_report_changes_once() {
        let mut track = AudioTrack::new(sender());
        let t0 = Instant::now();
        assert!(track.pause(t0));
        assert!(!track.pause(t0));
        assert!(track.mute());
        assert!(!track.mute());
        assert_eq!(
            track.media_state(),
            MediaState {
                paused: true,
                muted: true,
                ..MediaState::default()
            }
        );
        assert!(track.resume(t0 + Duration::from_secs(1)));
        assert_eq!(
            track.rtp.rtp_time,
            1_000 + 48_000,
            "clock moved by the pause"
        );
        assert!(track.unmute());
        assert!(!track.unmute());
    }

    #[test]
    fn frames_flow_only_when_live_with_a_source_and_not_paused() {
        struct Silence;
        impl FrameSource for Silence {
            fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
                Ok(None)
            }
        }
        let t0 = Instant::now();
        let mut track = AudioTrack::new(sender());
        track.set_source(t0, Box::new(Silence));
        assert_eq!(track.deadline(), None, "not live yet");
        track.pause(t0);
        track.set_live(t0);
        assert_eq!(track.deadline(), None, "paused");
        track.resume(t0);
        assert!(track.deadline().is_some());
        track.stop();
        assert_eq!(track.deadline(), None);
        assert!(!track.has_source());
    }

    fn header(ssrc: u32, seq: u16) -> RtpHeaderPeek {
        RtpHeaderPeek {
            pt: 111,
            seq,
            ssrc,
            has_extension: false,
        }
    }

    #[test]
    fn incoming_refuses_replays_only_after_authentication() {
        let mut rtc = str0m::RtcConfig::new()
            .set_rtp_mode(true)
            .build(Instant::now());
        let mid = Mid::from("0");
        rtc.direct_api()
            .declare_media(mid, str0m::media::MediaKind::Audio);
        let mut incoming = IncomingStreams::new(Ssrc(1), mid, 2);
        incoming.accept(&mut rtc, 1);
        assert!(!incoming.contains(1), "our own ssrc is never accepted");
        incoming.accept(&mut rtc, 10);
        incoming.accept(&mut rtc, 11);
        incoming.accept(&mut rtc, 12);
        assert_eq!(
            incoming.counters().dropped_unknown_ssrc,
            1,
            "over the limit"
        );
        assert!(incoming.contains(10) && incoming.contains(11) && !incoming.contains(12));
        // Unauthenticated: a header alone moves nothing.
        assert_eq!(incoming.check_replay(&header(10, 5)), Ok(()));
        assert_eq!(incoming.check_replay(&header(10, 5)), Ok(()));
        incoming.on_authenticated(10, 5);
        assert_eq!(
            incoming.check_replay(&header(10, 5)),
            Err(Replayed { ssrc: 10, seq: 5 })
        );
        assert_eq!(incoming.check_replay(&header(10, 6)), Ok(()));
        assert_eq!(incoming.check_replay(&header(11, 5)), Ok(()), "per ssrc");
        assert_eq!(incoming.counters().dropped_replayed, 1);
    }
}
