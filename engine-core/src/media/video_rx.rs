//! Incoming video: frames reassembled from RTP, key frames, resolution, frame rate and loss,
//! and when to ask for a key frame. sfu-mock uses it on every participant's camera; a call
//! uses it on each source the application added (`Command::AddIncomingVideo`), and then
//! also hands the reassembled frames on ([`VideoReceiver::deliver_frames`]).
//!
//! A [`VideoReceiver`] takes one source's video RTP packets (the media SSRC, after str0m
//! has decrypted them and folded RTX resends back into the media stream) and reassembles
//! frames: packets of one RTP timestamp, in sequence, up to the marker bit, depacketized with
//! str0m's VP8/H.264 depacketizers. A frame with a hole (a sequence number missing) is counted
//! as incomplete and not decoded; every frame after it is undecodable until the next key
//! frame, so the receiver then asks for one (PLI), as an SFU or a decoder does, at most once
//! per [`PLI_INTERVAL`]. The resolution comes from the key frames themselves (VP8 frame header,
//! H.264 SPS: `crate::media::video::frame_info`), the frame rate from the RTP
//! timestamps of the last second of frames.

use std::collections::VecDeque;
#[cfg(test)]
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::video::{VideoCodec, frame_info};
use crate::str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};

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
    /// Packets that arrived after a later one: NACKed packets repaired through RTX (and any
    /// reordering).
    pub late_packets: u64,
    /// Datagrams of the media SSRC that arrived at the SFU (before decryption), and of them
    /// those the test impairment dropped (`SfuConfig::drop_video_every`).
    pub arrivals: u64,
    /// See `arrivals`.
    pub dropped_by_impairment: u64,
    /// Packets refused because their payload type is neither VP8's nor H.264's.
    pub dropped_unknown_pt: u64,
    /// Packets received before (a resend of one that was not lost after all, a libwebrtc
    /// bandwidth probe that repeats old packets on the RTX stream): counted once, and not
    /// forwarded by the SFU.
    pub duplicates: u64,
    /// Complete frames not handed on: the pending queue was full, or the frame was not
    /// decodable (no key frame since the last loss).
    pub frames_dropped: u64,
}

/// Frames waiting for [`VideoReceiver::take_frame`] at most; more are dropped and counted
/// ([`VideoStats::frames_dropped`]).
pub const MAX_PENDING_FRAMES: usize = 16;

/// A reassembled (depacketized, still encoded) frame: VP8 frame or H.264 access unit in
/// Annex B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// Its codec.
    pub codec: VideoCodec,
    /// A key frame (decodable on its own).
    pub keyframe: bool,
    /// Picture size from the last key frame that said, `(0, 0)` before one did.
    pub width: u16,
    /// See `width`.
    pub height: u16,
    /// RTP timestamp (90 kHz).
    pub rtp_time: u32,
    /// The encoded frame.
    pub data: Vec<u8>,
}

/// Packets held for reassembly at most (a bound against a flood of sequence numbers).
const MAX_HELD_PACKETS: usize = 4_096;

/// A frame whose packets are missing is given up once this many later frames have
/// completed their packets (their marker arrived): time for NACK and RTX to repair it (half
/// a second at 30 fps, what a WebRTC receiver's jitter buffer waits at most for a
/// retransmission on a short path).
pub const GIVE_UP_AFTER_FRAMES: usize = 15;

/// One held packet.
#[derive(Debug)]
struct Held {
    pt: u8,
    timestamp: u32,
    marker: bool,
    /// str0m's decrypted payload, shared (not copied) until the frame completes.
    payload: std::sync::Arc<[u8]>,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct VideoReceiver {
    stats: VideoStats,
    vp8_pt: u8,
    h264_pt: u8,
    vp8: Vp8Depacketizer,
    h264: H264Depacketizer,
    /// Packets by extended sequence number, until their frame completes or is given up.
    held: std::collections::BTreeMap<u64, Held>,
    /// The sequence number the next frame starts at (after the last marker consumed).
    next_start: Option<u64>,
    /// Extended sequence number of the highest packet seen, and the first.
    highest: Option<u64>,
    first: Option<u64>,
    /// Distinct sequence numbers received (for loss).
    received: u64,
    /// Which sequence numbers arrived (a sliding window), so duplicates count once.
    seen: crate::replay::ReplayWindow,
    /// Packets that arrived after a later one (RTX repairs, reordering).
    late_packets: u64,
    /// A decodable chain: the last complete frame was decodable.
    chain_ok: bool,
    /// RTP timestamps of the recent complete frames (fps).
    recent: VecDeque<u32>,
    last_pli: Option<Instant>,
    /// A PLI should go out (set by loss or a frame that cannot be decoded; taken by
    /// [`VideoReceiver::take_pli`]).
    want_pli: bool,
    /// Hand decodable frames on ([`VideoReceiver::deliver_frames`]).
    deliver: bool,
    frames: VecDeque<ReceivedFrame>,
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
            held: std::collections::BTreeMap::new(),
            next_start: None,
            highest: None,
            first: None,
            received: 0,
            seen: crate::replay::ReplayWindow::new(),
            late_packets: 0,
            chain_ok: false,
            recent: VecDeque::new(),
            last_pli: None,
            want_pli: false,
            deliver: false,
            frames: VecDeque::new(),
        }
    }

    /// Keeps every decodable frame for [`VideoReceiver::take_frame`] (at most
    /// [`MAX_PENDING_FRAMES`] waiting; more are counted in [`VideoStats::frames_dropped`]).
    pub fn deliver_frames(mut self) -> Self {
        self.deliver = true;
        self
    }

    /// The next reassembled, decodable frame, oldest first.
    pub fn take_frame(&mut self) -> Option<ReceivedFrame> {
        self.frames.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> VideoStats {
        VideoStats {
            late_packets: self.late_packets,
            ..self.stats
        }
    }

    /// [`VideoReceiver::on_packet`] for a packet str0m handed on, then the key frame request
    /// it may call for ([`VideoReceiver::take_pli`]) sent on the packet's stream through
    /// `rtc`. Returns `on_packet`'s answer (false: a duplicate, or not video).
    pub fn on_rtp(
        &mut self,
        now: Instant,
        rtc: &mut crate::str0m::Rtc,
        packet: &crate::str0m::rtp::RtpPacket,
    ) -> bool {
        let new = self.on_packet(
            now,
            *packet.header.payload_type,
            *packet.seq_no,
            packet.header.timestamp,
            packet.header.marker,
            packet.payload.clone(),
        );
        if self.take_pli(now)
            && let Some(rx) = rtc.direct_api().stream_rx(&packet.header.ssrc)
        {
            rx.request_keyframe(crate::str0m::media::KeyframeRequestKind::Pli);
        }
        new
    }

    /// One packet of the media stream (RTX repairs arrive here unwrapped, with their original
    /// sequence number), `seq` extended (str0m's `seq_no`). Returns false for a packet that is
    /// not new (a duplicate, counted in [`VideoStats::duplicates`]) or not video; an SFU
    /// forwards only the new ones.
    pub fn on_packet(
        &mut self,
        now: Instant,
        pt: u8,
        seq: u64,
        timestamp: u32,
        marker: bool,
        payload: std::sync::Arc<[u8]>,
    ) -> bool {
        self.stats.packets += 1;
        self.stats.bytes += payload.len() as u64;
        if pt != self.vp8_pt && pt != self.h264_pt {
            self.stats.dropped_unknown_pt += 1;
            return false;
        }
        // A packet received before (an RTX resend of one that was not lost after all, a
        // second NACK answered twice, a bandwidth probe): counted once.
        if self.held.contains_key(&seq) || !self.seen.check_and_update(seq as u16) {
            self.stats.duplicates += 1;
            return false;
        }
        let before_start = self.next_start.is_some_and(|s| seq < s);
        self.received += 1;
        if self.highest.is_some_and(|h| seq < h) {
            self.late_packets += 1;
        }
        if before_start {
            // A repair of a frame already given up: it arrived, too late.
            self.update_lost();
            return true;
        }
        self.first = Some(self.first.map_or(seq, |f| f.min(seq)));
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.update_lost();
        self.next_start.get_or_insert(seq);
        self.held.insert(
            seq,
            Held {
                pt,
                timestamp,
                marker,
                payload,
            },
        );
        while self.held.len() > MAX_HELD_PACKETS {
            self.held.pop_first();
        }
        self.assemble(now);
        true
    }

    /// Completes every frame whose packets are all in, in order; gives up a frame with a hole
    /// once enough later frames are complete.
    fn assemble(&mut self, now: Instant) {
        loop {
            let Some(start) = self.next_start else {
                return;
            };
            // Walk contiguous packets from `start` to a marker.
            let mut seq = start;
            let mut end = None;
            while let Some(h) = self.held.get(&seq) {
                if h.marker {
                    end = Some(seq);
                    break;
                }
                seq += 1;
            }
            if let Some(end) = end {
                let packets: Vec<Held> =
                    (start..=end).filter_map(|s| self.held.remove(&s)).collect();
                self.next_start = Some(end + 1);
                self.complete(now, &packets);
                continue;
            }
            // A hole: wait for repairs, unless later frames are already complete.
            let markers_after: Vec<u64> = self
                .held
                .range(start..)
                .filter(|(_, h)| h.marker)
                .map(|(s, _)| *s)
                .take(GIVE_UP_AFTER_FRAMES)
                .collect();
            if markers_after.len() < GIVE_UP_AFTER_FRAMES {
                return;
            }
            let Some(&give_up_to) = markers_after.first() else {
                return;
            };
            let dropped: Vec<u64> = self.held.range(..=give_up_to).map(|(s, _)| *s).collect();
            for s in dropped {
                self.held.remove(&s);
            }
            self.next_start = Some(give_up_to + 1);
            self.frame_lost();
        }
    }

    fn complete(&mut self, now: Instant, packets: &[Held]) {
        let Some(first) = packets.first() else {
            return;
        };
        let codec = if first.pt == self.vp8_pt {
            VideoCodec::Vp8
        } else {
            VideoCodec::H264
        };
        self.stats.codec = Some(codec);
        let mut data = Vec::new();
        let mut extra = crate::str0m::format::CodecExtra::None;
        for p in packets {
            let result = match codec {
                VideoCodec::H264 => self.h264.depacketize(&p.payload, &mut data, &mut extra),
                _ => self.vp8.depacketize(&p.payload, &mut data, &mut extra),
            };
            if result.is_err() || data.len() > MAX_FRAME || p.timestamp != first.timestamp {
                self.frame_lost();
                return;
            }
        }
        // Packets that depacketize to nothing (an H.264 payload of only parameter sets the
        // depacketizer keeps, say): no frame to show. Found by the `incoming_video` fuzz target.
        if data.is_empty() {
            self.frame_lost();
            return;
        }
        self.frame_done(now, codec, first.timestamp, data);
    }

    fn update_lost(&mut self) {
        if let (Some(first), Some(high)) = (self.first, self.highest) {
            self.stats.lost = (high - first + 1).saturating_sub(self.received);
        }
    }

    fn frame_lost(&mut self) {
        self.stats.incomplete_frames += 1;
        self.chain_ok = false;
        self.want_pli = true;
    }

    fn frame_done(&mut self, now: Instant, codec: VideoCodec, timestamp: u32, data: Vec<u8>) {
        let info = frame_info(codec, &data);
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
            if self.deliver {
                if self.frames.len() >= MAX_PENDING_FRAMES {
                    self.stats.frames_dropped += 1;
                } else {
                    self.frames.push_back(ReceivedFrame {
                        codec,
                        keyframe: info.keyframe,
                        width: self.stats.width,
                        height: self.stats.height,
                        rtp_time: timestamp,
                        data,
                    });
                }
            }
        } else {
            self.want_pli = true;
            self.stats.frames_dropped += u64::from(self.deliver);
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
        self.last_pli = Some(now);
        self.stats.plis_sent += 1;
        true
    }

    /// Counts a packet of the media SSRC that is not decrypted (the SFU's header-only load
    /// mode): packets and bytes only.
    pub fn count_unread(&mut self, bytes: usize) {
        self.stats.packets += 1;
        self.stats.bytes += bytes as u64;
    }

    /// Counts a datagram of the media SSRC arriving (before decryption); true if the test
    /// impairment drops it: every `every`-th one.
    pub fn impair(&mut self, every: u64) -> bool {
        self.stats.arrivals += 1;
        let drop = self.stats.arrivals.is_multiple_of(every.max(1));
        self.stats.dropped_by_impairment += u64::from(drop);
        drop
    }

    /// Asks for a key frame at the next [`VideoReceiver::take_pli`] (within the
    /// [`PLI_INTERVAL`] limit): a receiver of the forwarded stream needs one.
    pub fn ask_pli(&mut self) {
        self.want_pli = true;
    }

    /// Asks for a key frame at the next [`VideoReceiver::take_pli`] regardless of loss (the
    /// control API's `pli`).
    pub fn force_pli(&mut self) {
        self.want_pli = true;
        self.last_pli = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::video::VideoFrame;

    /// A VP8 key frame of `len` bytes: frame tag (key frame, shown), start code, 320x180.
    fn vp8_key(len: usize) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00];
        f.extend((0..len.saturating_sub(f.len())).map(|i| (i % 251) as u8));
        f
    }

    /// A VP8 delta frame of `len` bytes.
    fn vp8_delta(len: usize) -> Vec<u8> {
        let mut f = vec![0x11, 0x02, 0x00];
        f.extend((0..len.saturating_sub(f.len())).map(|i| (i % 241) as u8));
        f
    }

    /// Feeds `frame`'s packets from `seq` on, leaving out the packet at index `skip`.
    fn feed(
        rx: &mut VideoReceiver,
        now: Instant,
        frame: &[u8],
        seq: &mut u64,
        ts: u32,
        skip: Option<usize>,
    ) {
        let packets = VideoFrame::packetize(VideoCodec::Vp8, frame, 3_000).unwrap();
        let n = packets.payloads.len();
        for (i, p) in packets.payloads.iter().enumerate() {
            if skip != Some(i) {
                rx.on_packet(now, 96, *seq, ts, i + 1 == n, p.clone());
            }
            *seq += 1;
        }
    }

    #[test]
    fn frames_are_reassembled_byte_for_byte_and_undecodable_ones_held_back() {
        let now = Instant::now();
        let mut rx = VideoReceiver::new(96, 98).deliver_frames();
        let mut seq = 1_000;
        let key = vp8_key(3_000);
        let delta = vp8_delta(2_500);
        feed(&mut rx, now, &key, &mut seq, 0, None);
        feed(&mut rx, now, &delta, &mut seq, 3_000, None);
        let f = rx.take_frame().unwrap();
        assert!(f.keyframe);
        assert_eq!((f.width, f.height, f.rtp_time), (320, 180, 0));
        assert_eq!(f.data, key);
        let f = rx.take_frame().unwrap();
        assert!(!f.keyframe);
        assert_eq!(f.data, delta);
        assert!(rx.take_frame().is_none());

        // A packet lost for good: the frame is given up, the delta frames after it are not
        // handed on, and a key frame is asked for; the next key frame starts a chain again.
        feed(&mut rx, now, &delta, &mut seq, 6_000, Some(1));
        for i in 0..GIVE_UP_AFTER_FRAMES as u32 {
            feed(&mut rx, now, &delta, &mut seq, 9_000 + 3_000 * i, None);
        }
        assert!(rx.take_frame().is_none());
        assert!(rx.take_pli(now));
        feed(&mut rx, now, &key, &mut seq, 90_000, None);
        assert_eq!(rx.take_frame().map(|f| f.keyframe), Some(true));
        let stats = rx.stats();
        assert_eq!(stats.incomplete_frames, 1);
        assert!(
            stats.frames_dropped >= GIVE_UP_AFTER_FRAMES as u64 - 1,
            "{stats:?}"
        );

        // A payload type that is neither codec's: counted, not read.
        rx.on_packet(now, 111, seq, 0, true, Arc::from(&b"opus"[..]));
        assert_eq!(rx.stats().dropped_unknown_pt, 1);
    }

    #[test]
    fn a_repeated_packet_is_a_counted_duplicate_and_not_new() {
        let now = Instant::now();
        let mut rx = VideoReceiver::new(96, 98).deliver_frames();
        let key = vp8_key(2_000);
        let packets = VideoFrame::packetize(VideoCodec::Vp8, &key, 1_000).unwrap();
        let n = packets.payloads.len();
        assert!(n >= 2, "{n} packets");
        for (i, p) in packets.payloads.iter().enumerate() {
            let seq = 500 + i as u64;
            assert!(
                rx.on_packet(now, 96, seq, 0, i + 1 == n, p.clone()),
                "packet {i} is new"
            );
        }
        // A bandwidth probe repeats the first two packets (on RTX, unwrapped by str0m): neither
        // is new, both are counted, and no second frame appears.
        for (i, p) in packets.payloads.iter().take(2).enumerate() {
            assert!(!rx.on_packet(now, 96, 500 + i as u64, 0, false, p.clone()));
        }
        assert_eq!(rx.stats().duplicates, 2);
        assert_eq!(rx.stats().frames, 1);
        assert!(rx.take_frame().is_some());
        assert!(rx.take_frame().is_none(), "a duplicate made a second frame");
        // A packet of another payload type is not new either, but it is no duplicate.
        assert!(!rx.on_packet(now, 111, 600, 0, true, Arc::from(&b"opus"[..])));
        assert_eq!(rx.stats().duplicates, 2);
    }

    #[test]
    fn pending_frames_are_bounded() {
        let now = Instant::now();
        let mut rx = VideoReceiver::new(96, 98).deliver_frames();
        let mut seq = 0;
        let key = vp8_key(500);
        for i in 0..(MAX_PENDING_FRAMES as u32 + 5) {
            feed(&mut rx, now, &key, &mut seq, i * 3_000, None);
        }
        assert_eq!(rx.stats().frames_dropped, 5);
        assert_eq!(
            std::iter::from_fn(|| rx.take_frame()).count(),
            MAX_PENDING_FRAMES
        );
    }
}
