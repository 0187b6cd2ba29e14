//! A call's outgoing video: the camera track of a group call.
//!
//! [`VideoTrack`] pulls [`VideoFrame`]s from its [`VideoSource`] at the pace of their
//! durations and writes each frame's shared payloads as RTP packets (one RTP time, the marker
//! on the last packet) on the video send stream, nackable so str0m answers NACKs from its
//! history on the RTX stream. Its rules:
//!
//! - **Start on a key frame.** A new source, a resume, a call that joins a live stream late:
//!   delta frames are taken from the source (its position moves on) but not sent until a key
//!   frame comes, and a key frame is requested from the source at once. A receiver never gets
//!   a delta frame it cannot decode.
//! - **Key frame requests** (RTCP PLI/FIR from the SFU, via [`VideoTrack::request_keyframe`])
//!   are passed to the source, at most one per [`KEYFRAME_REQUEST_INTERVAL`]; a source shared
//!   by many calls coalesces them again.
//! - **Catching up**: a source that restarts a reader at its last key frame (a shared live
//!   stream, on a new source or a key frame request) reports the frames already due as its
//!   [`VideoSource::backlog`]; they go out at once (at most [`MAX_CATCH_UP_FRAMES`]), so the
//!   receiver has a picture without waiting for the encoder's next key frame.
//! - **Underruns**: a source with no frame ready ([`VideoPoll::Pending`]) is asked again in
//!   [`PENDING_RETRY`], counted, and the track never waits.
//! - **Pause** stops sending and pulling; **mute** (ntgcalls' `video_stopped`) keeps pulling,
//!   so a live position moves on, but sends nothing.

use std::fmt;
use std::time::{Duration, Instant};

use str0m::rtp::ExtensionValues;

use super::track::{FramePacer, RtpSender, SourceEnd};
use super::video::{VIDEO_CLOCK_RATE_HZ, VideoFrame, VideoPoll, VideoSource};
use crate::pacer::LatenessHistogram;
use crate::transport::MediaOut;

/// The frame length the pacer assumes when it skips frames of a track driven late (30 fps).
const NOMINAL_FRAME: Duration = Duration::from_micros(33_333);

/// How soon a source with no frame ready is asked again.
pub const PENDING_RETRY: Duration = Duration::from_millis(5);

/// Key frame requests reach the source at most this often (PLI floods from a broken
/// receiver cost one request per interval).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

/// Most frames sent at once to catch up with a source's backlog ([`VideoSource::backlog`]):
/// two seconds at 30 fps.
pub const MAX_CATCH_UP_FRAMES: usize = 60;

/// Counters of the outgoing video track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoCounters {
    /// Frames sent.
    pub frames_sent: u64,
    /// Key frames among them.
    pub keyframes_sent: u64,
    /// RTP packets sent (first transmissions; RTX resends are str0m's).
    pub packets_sent: u64,
    /// Payload bytes of those packets.
    pub payload_bytes_sent: u64,
    /// Frames taken from the source but not sent while waiting for a key frame.
    pub frames_dropped_waiting_keyframe: u64,
    /// Times the source had no frame ready when one was due.
    pub underruns: u64,
    /// Key frame requests received (PLI/FIR), before rate limiting.
    pub keyframe_requests: u64,
    /// Key frame requests passed to the source.
    pub keyframe_requests_forwarded: u64,
    /// Frames sent at once from a source's backlog (catching up after a start or a key
    /// frame request).
    pub frames_caught_up: u64,
}

/// See the [module docs](self).
pub struct VideoTrack {
    rtp: RtpSender,
    source: Option<Box<dyn VideoSource>>,
    pacer: FramePacer,
    live: bool,
    paused: bool,
    paused_at: Option<Instant>,
    muted: bool,
    waiting_keyframe: bool,
    /// When a key frame request last went to the source.
    last_request: Option<Instant>,
    /// A request arrived within the interval: forward it when the interval is over.
    request_pending: bool,
    /// Sending the source's backlog at once (after a start or a forwarded request).
    catching_up: bool,
    counters: VideoCounters,
}

impl fmt::Debug for VideoTrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoTrack")
            .field("rtp", &self.rtp)
            .field("live", &self.live)
            .field("paused", &self.paused)
            .field("muted", &self.muted)
            .field("has_source", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

impl VideoTrack {
    /// A track that sends as `rtp` (its packets nackable) once live and given a source.
    pub fn new(mut rtp: RtpSender) -> Self {
        rtp.set_nackable(true);
        Self {
            rtp,
            source: None,
            pacer: FramePacer::new(NOMINAL_FRAME),
            live: false,
            paused: false,
            paused_at: None,
            muted: false,
            waiting_keyframe: true,
            last_request: None,
            request_pending: false,
            catching_up: false,
            counters: VideoCounters::default(),
        }
    }

    /// The RTP stream.
    pub fn rtp(&self) -> &RtpSender {
        &self.rtp
    }

    /// Sets the payload type (from the SFU's answer).
    pub fn set_payload_type(&mut self, pt: str0m::media::Pt) {
        self.rtp.set_payload_type(pt);
    }

    /// Counters.
    pub fn counters(&self) -> VideoCounters {
        self.counters
    }

    /// True while a source is attached.
    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }

    /// Paused (nothing sent or pulled).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Muted (pulled, not sent: ntgcalls' `video_stopped`).
    pub fn is_muted(&self) -> bool {
        self.muted
    }

    /// When the caller should wake for the next frame or a held-back key frame request.
    pub fn deadline(&self) -> Option<Instant> {
        let request = self
            .request_pending
            .then(|| self.last_request.map(|t| t + KEYFRAME_REQUEST_INTERVAL))
            .flatten();
        match (self.pacer.deadline(), request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The transport is up: frames may flow from `now`.
    pub fn set_live(&mut self, now: Instant) {
        self.live = true;
        self.schedule(now);
    }

    /// Plays `source` from `now`, replacing any current one; sending starts at its first key
    /// frame.
    pub fn set_source(&mut self, now: Instant, source: Box<dyn VideoSource>) {
        self.source = Some(source);
        self.wait_for_keyframe(now);
        self.schedule(now);
    }

    /// Removes the source (nothing more is sent). Returns true if there was one.
    pub fn clear_source(&mut self) -> bool {
        self.pacer.stop();
        self.source.take().is_some()
    }

    /// Stops sending and pulling. Returns true if this changed the state.
    pub fn pause(&mut self, now: Instant) -> bool {
        if std::mem::replace(&mut self.paused, true) {
            return false;
        }
        self.paused_at = Some(now);
        self.pacer.stop();
        true
    }

    /// Continues after a pause, from the next key frame. Returns true if this changed the
    /// state.
    pub fn resume(&mut self, now: Instant) -> bool {
        if !std::mem::replace(&mut self.paused, false) {
            return false;
        }
        if let Some(at) = self.paused_at.take() {
            self.rtp.skip(now.saturating_duration_since(at));
        }
        self.wait_for_keyframe(now);
        self.schedule(now);
        true
    }

    /// Stops sending (the source keeps being pulled). Returns true if this changed the state.
    pub fn mute(&mut self) -> bool {
        !std::mem::replace(&mut self.muted, true)
    }

    /// Sends again, from the next key frame. Returns true if this changed the state.
    pub fn unmute(&mut self, now: Instant) -> bool {
        if !std::mem::replace(&mut self.muted, false) {
            return false;
        }
        self.wait_for_keyframe(now);
        true
    }

    /// The call ended.
    pub fn stop(&mut self) {
        self.source = None;
        self.live = false;
        self.pacer.stop();
    }

    /// A receiver asked for a key frame (PLI or FIR).
    pub fn request_keyframe(&mut self, now: Instant) {
        self.counters.keyframe_requests += 1;
        self.request_pending = true;
        self.forward_request(now);
    }

    fn wait_for_keyframe(&mut self, now: Instant) {
        self.waiting_keyframe = true;
        self.request_pending = true;
        self.forward_request(now);
    }

    fn forward_request(&mut self, now: Instant) {
        if !self.request_pending {
            return;
        }
        if self
            .last_request
            .is_some_and(|t| now < t + KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let Some(source) = self.source.as_mut() else {
            return;
        };
        source.request_keyframe();
        self.catching_up = true;
        self.request_pending = false;
        self.last_request = Some(now);
        self.counters.keyframe_requests_forwarded += 1;
    }

    fn schedule(&mut self, now: Instant) {
        if self.live && self.source.is_some() && !self.paused {
            self.pacer.start(now);
        }
    }

    /// Sends every frame due at `now`. Returns why the source stopped, if it did.
    pub fn send_due(
        &mut self,
        now: Instant,
        out: &mut MediaOut<'_>,
        lateness: &mut LatenessHistogram,
    ) -> Option<SourceEnd> {
        self.forward_request(now);
        let mut due = self.pacer.begin(now)?;
        let mut burst = 0;
        while due <= FramePacer::horizon(now) {
            let Some(source) = self.source.as_mut() else {
                self.pacer.stop();
                return None;
            };
            let frame = match source.next_frame() {
                Ok(VideoPoll::Frame(frame)) => frame,
                Ok(VideoPoll::Pending) => {
                    self.counters.underruns += 1;
                    due = now + PENDING_RETRY;
                    break;
                }
                Ok(VideoPoll::End) => {
                    self.source = None;
                    self.pacer.stop();
                    return Some(SourceEnd::Finished);
                }
                Err(e) => {
                    self.source = None;
                    self.pacer.stop();
                    return Some(SourceEnd::Failed(e));
                }
            };
            self.pacer.record(now, due, lateness);
            self.write_frame(out, due, &frame);
            let ticks = frame.duration_90k.max(1);
            self.rtp.advance(ticks);
            // The backlog is asked only while catching up (a shared source locks to answer).
            if self.catching_up
                && burst < MAX_CATCH_UP_FRAMES
                && self.source.as_ref().is_some_and(|s| s.backlog() > 0)
            {
                // Already due at the source: out now, the frame clock stays.
                burst += 1;
                self.counters.frames_caught_up += 1;
                continue;
            }
            self.catching_up = false;
            due += Duration::from_micros(
                u64::from(ticks) * 1_000_000 / u64::from(VIDEO_CLOCK_RATE_HZ),
            );
        }
        self.pacer.resume_at(due);
        None
    }

    fn write_frame(&mut self, out: &mut MediaOut<'_>, wallclock: Instant, frame: &VideoFrame) {
        if self.waiting_keyframe && frame.keyframe {
            self.waiting_keyframe = false;
        }
        if self.muted || self.waiting_keyframe {
            self.counters.frames_dropped_waiting_keyframe += u64::from(!self.muted);
            return;
        }
        let last = frame.payloads.len().saturating_sub(1);
        for (i, payload) in frame.payloads.iter().enumerate() {
            // An Arc clone: the payload bytes are shared by every call sending this frame.
            if !self.rtp.write(
                out,
                wallclock,
                payload.clone(),
                i == last,
                ExtensionValues::default(),
            ) {
                return;
            }
            self.counters.packets_sent += 1;
            self.counters.payload_bytes_sent += payload.len() as u64;
        }
        self.counters.frames_sent += 1;
        self.counters.keyframes_sent += u64::from(frame.keyframe);
    }
}
