//! What the SFU learns from a participant's video: frames reassembled from RTP, key frames,
//! resolution, frame rate and loss, and when to ask for a key frame.
//!
//! A [`VideoReceiver`] takes the participant's video RTP packets (the media SSRC, after str0m
//! has decrypted them and folded RTX resends back into the media stream) and reassembles
//! frames: packets of one RTP timestamp, in sequence, up to the marker bit, depacketized with
//! str0m's VP8/H.264 depacketizers. A frame with a hole (a sequence number missing) is counted
//! as incomplete and not decoded; every frame after it is undecodable until the next key
//! frame, so the receiver then asks for one (PLI), as an SFU or a decoder does, at most once
//! per [`PLI_INTERVAL`]. The resolution comes from the key frames themselves (VP8 frame header,
//! H.264 SPS: `ringcast_core::media::video::frame_info`), the frame rate from the RTP
//! timestamps of the last second of frames.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringcast_core::media::video::{VideoCodec, frame_info};
use ringcast_core::str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};

/// At most one key frame request per this interval.
pub const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// Largest frame reassembled (bigger ones are counted as incomplete).
const MAX_FRAME: usize = 4 << 20;

/// Counters of a participant's video, as `/v1/stats` serves them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VideoStats {
    /// The codec of the packets (from their payload type), once seen.
    pub codec: Option<VideoCodec>,
    /// Video RTP packets received on the media SSRC (resends included).
    pub packets: u64,
    /// Payload bytes of those packets.
    pub bytes: u64,
    /// Frames reassembled completely (every packet from the first to the marker).
    pub frames: u64,
    /// Complete key frames.
    pub keyframes: u64,
    /// Complete frames that were decodable: a key frame, or a delta frame after a decodable
    /// one with no incomplete frame between.
    pub decodable_frames: u64,
    /// Frames dropped because a packet was missing.
    pub incomplete_frames: u64,
    /// Picture size from the last key frame that said.
    pub width: u16,
    /// See `width`.
    pub height: u16,
    /// Frames per second over the last second of RTP time.
    pub fps: f64,
    /// Key frame requests (PLI) sent.
    pub plis_sent: u64,
    /// Packets lost, from sequence numbers (expected - received).
    pub lost: u64,
    /// When the last key frame arrived, for "a key frame within N ms of a PLI".
    pub last_keyframe_at: Option<Instant>,
}

/// The frame being reassembled.
#[derive(Debug)]
struct Partial {
    timestamp: u32,
    next_seq: u64,
    data: Vec<u8>,
    broken: bool,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct VideoReceiver {
    stats: VideoStats,
    vp8_pt: u8,
    h264_pt: u8,
    vp8: Vp8Depacketizer,
    h264: H264Depacketizer,
    partial: Option<Partial>,
    /// Extended sequence number of the highest packet seen, and the first.
    highest: Option<u64>,
    first: Option<u64>,
    /// Distinct sequence numbers received (for loss).
    received: u64,
    /// A decodable chain: the last complete frame was decodable.
    chain_ok: bool,
    /// RTP timestamps of the recent complete frames (fps).
    recent: VecDeque<u32>,
    last_pli: Option<Instant>,
    /// A PLI should go out (set by loss; taken by [`VideoReceiver::take_pli`]).
    want_pli: bool,
}

impl VideoReceiver {
    /// A receiver that reads payload type `vp8_pt` as VP8 and `h264_pt` as H.264.
    pub fn new(vp8_pt: u8, h264_pt: u8) -> Self {
        Self {
            stats: VideoStats::default(),
            vp8_pt,
            h264_pt,
            vp8: Vp8Depacketizer::default(),
            h264: H264Depacketizer::default(),
            partial: None,
            highest: None,
            first: None,
            received: 0,
            chain_ok: false,
            recent: VecDeque::new(),
            last_pli: None,
            want_pli: true,
        }
    }

    /// Counters.
    pub fn stats(&self) -> VideoStats {
        self.stats
    }

    /// One packet of the media stream, `seq` extended (str0m's `seq_no`).
    pub fn on_packet(
        &mut self,
        now: Instant,
        pt: u8,
        seq: u64,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) {
        self.stats.packets += 1;
        self.stats.bytes += payload.len() as u64;
        let codec = if pt == self.vp8_pt {
            VideoCodec::Vp8
        } else if pt == self.h264_pt {
            VideoCodec::H264
        } else {
            return;
        };
        self.stats.codec = Some(codec);
        if self.highest.is_some_and(|h| seq <= h) {
            // A resend (RTX) of a packet of a frame already given up, or a duplicate: the
            // frame it belonged to is gone; only loss accounting needs it.
            self.received += 1;
            self.update_lost();
            return;
        }
        self.received += 1;
        self.first.get_or_insert(seq);
        self.highest = Some(seq);
        self.update_lost();

        let starts_new = self
            .partial
            .as_ref()
            .is_none_or(|p| p.timestamp != timestamp);
        if starts_new {
            if let Some(p) = self.partial.take() {
                // The previous frame never saw its marker.
                let _ = p;
                self.frame_lost(now);
            }
            self.partial = Some(Partial {
                timestamp,
                next_seq: seq,
                data: Vec::new(),
                broken: false,
            });
        }
        let Some(mut p) = self.partial.take() else {
            return;
        };
        if p.next_seq != seq {
            p.broken = true;
        }
        p.next_seq = seq + 1;
        if !p.broken {
            let mut extra = ringcast_core::str0m::format::CodecExtra::None;
            let result = match codec {
                VideoCodec::Vp8 => self.vp8.depacketize(payload, &mut p.data, &mut extra),
                VideoCodec::H264 => self.h264.depacketize(payload, &mut p.data, &mut extra),
                _ => Ok(()),
            };
            if result.is_err() || p.data.len() > MAX_FRAME {
                p.broken = true;
            }
        }
        if marker {
            if p.broken {
                self.frame_lost(now);
            } else {
                self.frame_done(now, codec, p.timestamp, &p.data);
            }
        } else {
            self.partial = Some(p);
        }
    }

    fn update_lost(&mut self) {
        if let (Some(first), Some(high)) = (self.first, self.highest) {
            self.stats.lost = (high - first + 1).saturating_sub(self.received);
        }
    }

    fn frame_lost(&mut self, now: Instant) {
        self.stats.incomplete_frames += 1;
        self.chain_ok = false;
        self.want_pli = true;
        let _ = now;
    }

    fn frame_done(&mut self, now: Instant, codec: VideoCodec, timestamp: u32, data: &[u8]) {
        let info = frame_info(codec, data);
        self.stats.frames += 1;
        if info.keyframe {
            self.stats.keyframes += 1;
            self.stats.last_keyframe_at = Some(now);
            self.chain_ok = true;
            self.want_pli = false;
        }
        if let Some((w, h)) = info.size {
            self.stats.width = w;
            self.stats.height = h;
        }
        if self.chain_ok {
            self.stats.decodable_frames += 1;
        } else {
            self.want_pli = true;
        }
        self.recent.push_back(timestamp);
        while self
            .recent
            .front()
            .is_some_and(|t| timestamp.wrapping_sub(*t) > 90_000)
        {
            self.recent.pop_front();
        }
        if let (Some(first), true) = (self.recent.front(), self.recent.len() > 1) {
            let span = timestamp.wrapping_sub(*first);
            if span > 0 {
                self.stats.fps = (self.recent.len() - 1) as f64 * 90_000.0 / f64::from(span);
            }
        }
    }

    /// True when a key frame request should go out now (a frame was lost or the stream has
    /// not started with a key frame), at most once per [`PLI_INTERVAL`].
    pub fn take_pli(&mut self, now: Instant) -> bool {
        if !self.want_pli || self.last_pli.is_some_and(|t| now < t + PLI_INTERVAL) {
            return false;
        }
        if self.stats.packets == 0 {
            return false;
        }
        self.last_pli = Some(now);
        self.stats.plis_sent += 1;
        true
    }

    /// Asks for a key frame at the next [`VideoReceiver::take_pli`] regardless of loss (the
    /// control API's `pli`).
    pub fn force_pli(&mut self) {
        self.want_pli = true;
        self.last_pli = None;
    }
}
