//! Shared by the `incoming_video` fuzz target and its stable replay in
//! `engine-core/tests/fuzz_corpus.rs` (both include this file with `#[path]`).
//!
//! What a call does with another participant's video and with the SFU's data channel
//! messages, on arbitrary input: the reassembly of `ringcast_core::media::video_rx` (VP8 and
//! H.264 depacketizing, holes, duplicates, reordering, give-up) and the colibri parsing of
//! `ringcast_core::incoming_video`.
//!
//! Input layout, a sequence of records until the input ends:
//! - `k` even: one RTP packet, `[k, pt, seq_step, ts_step, len, payload[len]]`. Bit 1 of `k`
//!   is the marker; `pt` picks VP8 (even) or H.264 (odd) and, if above 250, an unknown
//!   payload type; the sequence number moves by `seq_step as i8` and the RTP time by
//!   `ts_step * 300`.
//! - `k` odd: one data channel message, `[k, len, bytes[len]]`.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // shared by a fuzz target and a test

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast_core::incoming_video::IncomingVideo;
use ringcast_core::media::video_rx::{MAX_PENDING_FRAMES, VideoReceiver};

/// Payload types the receiver reads as VP8 and H.264.
pub const VP8_PT: u8 = 100;
/// See [`VP8_PT`].
pub const H264_PT: u8 = 102;

/// What an input did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames handed on.
    pub frames: u64,
    /// Of them, key frames.
    pub keyframes: u64,
    /// Frames given up (holes, undepacketizable payloads).
    pub incomplete: u64,
    /// Data channel messages, and of them malformed ones.
    pub messages: u64,
    /// See `messages`.
    pub malformed: u64,
}

/// Feeds `data` (see the module docs) and checks the receiver's invariants.
pub fn incoming(data: &[u8]) -> Summary {
    let start = Instant::now();
    let mut rx = VideoReceiver::new(VP8_PT, H264_PT).deliver_frames();
    let mut channel = IncomingVideo::new();
    let (mut seq, mut ts): (u64, u32) = (1 << 20, 0);
    let mut summary = Summary::default();
    let mut at = 0;
    let mut step = 0u32;
    while let Some(&k) = data.get(at) {
        step += 1;
        let now = start + Duration::from_millis(u64::from(step) * 5);
        if k % 2 == 1 {
            let len = usize::from(*data.get(at + 1).unwrap_or(&0));
            let msg = data
                .get(at + 2..(at + 2 + len).min(data.len()))
                .unwrap_or(&[]);
            channel.on_channel_data(msg);
            at += 2 + len;
            continue;
        }
        let Some(&[pt, seq_step, ts_step, len]) = data.get(at + 1..at + 5).map(|h| {
            let h: &[u8; 4] = h.try_into().expect("4 bytes");
            h
        }) else {
            break;
        };
        let payload = data
            .get(at + 5..(at + 5 + usize::from(len)).min(data.len()))
            .unwrap_or(&[]);
        at += 5 + usize::from(len);
        seq = seq.saturating_add_signed(i64::from(seq_step as i8));
        ts = ts.wrapping_add(u32::from(ts_step) * 300);
        let pt = match pt {
            251.. => 111,
            p if p % 2 == 0 => VP8_PT,
            _ => H264_PT,
        };
        rx.on_packet(now, pt, seq, ts, k & 2 != 0, Arc::from(payload));
        let _ = rx.take_pli(now);
        let mut pending = 0;
        while let Some(frame) = rx.take_frame() {
            pending += 1;
            assert!(!frame.data.is_empty(), "an empty frame was handed on");
            summary.frames += 1;
            summary.keyframes += u64::from(frame.keyframe);
        }
        assert!(pending <= MAX_PENDING_FRAMES, "{pending} frames pending");
    }
    let stats = rx.stats();
    assert!(
        summary.frames <= stats.decodable_frames,
        "{summary:?} {stats:?}"
    );
    assert!(stats.decodable_frames <= stats.frames, "{stats:?}");
    let c = channel.counters();
    assert!(
        c.channel_messages_malformed <= c.channel_messages_received,
        "{c:?}"
    );
    summary.incomplete = stats.incomplete_frames;
    summary.messages = c.channel_messages_received;
    summary.malformed = c.channel_messages_malformed;
    summary
}

/// A record of one RTP packet (see the module docs).
pub fn packet_record(
    marker: bool,
    h264: bool,
    seq_step: i8,
    ts_step: u8,
    payload: &[u8],
) -> Vec<u8> {
    let len = u8::try_from(payload.len()).expect("payload of at most 255 bytes");
    let mut r = vec![
        if marker { 2 } else { 0 },
        u8::from(h264),
        seq_step as u8,
        ts_step,
        len,
    ];
    r.extend_from_slice(payload);
    r
}

/// A record of one data channel message.
pub fn message_record(msg: &[u8]) -> Vec<u8> {
    let len = u8::try_from(msg.len()).expect("message of at most 255 bytes");
    let mut r = vec![1, len];
    r.extend_from_slice(msg);
    r
}
