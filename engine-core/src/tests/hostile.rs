//! A hostile SFU, or anything on its path that has the 5-tuple, after ICE: replayed SRTCP and
//! STUN, malformed DTLS, oversized and self-contradictory RTCP, NACK storms, PLI and FIR
//! floods, REMB of zero, floods of new SSRCs and SSRCs that collide with ours. Each is counted
//! in [`crate::CallStats`], bounded per call (`docs/design.md`, "Hostile peers"), and leaves
//! the call up. RTCP is crafted by the test and protected with the SFU's own SRTCP keys
//! ([`super::util::SfuPeer::protect_rtcp`]), so it reaches str0m's parser as a hostile SFU's
//! would.

use std::sync::Arc;
use std::time::Duration;

use str0m::media::Mid;
use str0m::rtp::{ExtensionValues, RtpWrite, SeqNo, Ssrc as StrSsrc};

use super::util::{GroupPair, binding_messages, tone};
use crate::call::{CallError, CallState, Command, EndReason, Input, RTX_BUDGET_PER_SEC};
use crate::demux::rtp_header;
use crate::media::SourceError;
use crate::media::video::{VideoCodec, VideoFrame, VideoPoll, VideoSource};
use crate::rtcp_craft as craft;
use crate::signaling::group::OPUS_DEFAULT_PT;
use crate::transport::{
    DTLS_BUDGET_PER_SEC, DatagramError, MAX_RTCP_DATAGRAM, RTCP_BUDGET_PER_SEC, RejectReason,
};

/// The sender SSRC of the RTCP the tests craft (not one of the call's).
const SFU_SSRC: u32 = 0x5F0_0001;

/// A VP8 camera of 30 frames per second: a key frame first and when asked, else delta frames
/// of two packets.
struct TestCamera {
    keyframe_next: bool,
}

impl VideoSource for TestCamera {
    fn codec(&self) -> VideoCodec {
        VideoCodec::Vp8
    }

    fn next_frame(&mut self) -> Result<VideoPoll, SourceError> {
        let mut data = if std::mem::take(&mut self.keyframe_next) {
            // Frame tag with the key frame bit clear, start code, 320x240.
            vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
        } else {
            vec![0x11, 0x02, 0x00]
        };
        data.resize(1_600, 0x55);
        Ok(VideoPoll::Frame(VideoFrame::packetize(
            VideoCodec::Vp8,
            &data,
            3_000,
        )?))
    }

    fn request_keyframe(&mut self) {
        self.keyframe_next = true;
    }
}

/// A call sending the tone (and, with `video`, the test camera) connected to its SFU.
fn connected(seed: u64, video: bool) -> GroupPair {
    let mut pair = if video {
        GroupPair::with_video(seed)
    } else {
        GroupPair::connecting(seed)
    };
    pair.call
        .handle_input(pair.now, Input::Command(Command::SetSource(tone(440.0))))
        .expect("set source");
    if video {
        pair.call
            .handle_input(
                pair.now,
                Input::Command(Command::SetVideoSource(Box::new(TestCamera {
                    keyframe_next: true,
                }))),
            )
            .expect("set video source");
    }
    pair.drive(Duration::from_secs(2));
    assert_eq!(pair.call.state(), &CallState::Connected);
    pair
}

/// See [`craft::rr_empty`].
fn rr_empty(sender: u32) -> Vec<u8> {
    craft::rr_empty(sender)
}

/// See [`craft::packet`].
fn rtcp(count: u8, pt: u8, body: &[u8], length: Option<u16>) -> Vec<u8> {
    craft::packet(count, pt, body, length)
}

/// Sender ([`SFU_SSRC`]) and media SSRC of a feedback message.
fn fb_ssrcs(media: u32) -> Vec<u8> {
    craft::feedback_ssrcs(SFU_SSRC, media)
}

/// A NACK from [`SFU_SSRC`] ([`craft::nack`]).
fn nack(media: u32, items: impl IntoIterator<Item = (u16, u16)>) -> Vec<u8> {
    craft::nack(SFU_SSRC, media, items)
}

/// A PLI from [`SFU_SSRC`].
fn pli(media: u32) -> Vec<u8> {
    craft::pli(SFU_SSRC, media)
}

/// A FIR from [`SFU_SSRC`].
fn fir(media: u32, seq: u8) -> Vec<u8> {
    craft::fir(SFU_SSRC, media, seq)
}

/// A REMB from [`SFU_SSRC`].
fn remb(bitrate: u32, ssrcs: &[u32]) -> Vec<u8> {
    craft::remb(SFU_SSRC, bitrate, ssrcs)
}

/// A receiver report from [`SFU_SSRC`] with `blocks` report blocks about `about`.
fn rr(blocks: u8, about: u32) -> Vec<u8> {
    craft::rr(SFU_SSRC, blocks, about)
}

/// A compound from [`SFU_SSRC`]: an empty receiver report, then `parts`.
fn compound(parts: &[Vec<u8>]) -> Vec<u8> {
    craft::compound(SFU_SSRC, parts)
}

/// Datagrams the SFU received on `ssrc`.
fn sent_on(pair: &GroupPair, ssrc: u32) -> usize {
    pair.delivered_to_sfu
        .iter()
        .filter(|t| rtp_header(&t.contents).is_some_and(|h| h.ssrc == ssrc))
        .count()
}

/// The sequence number of the last packet the SFU received on `ssrc`.
fn last_seq_on(pair: &GroupPair, ssrc: u32) -> u16 {
    pair.delivered_to_sfu
        .iter()
        .rev()
        .filter_map(|t| rtp_header(&t.contents))
        .find(|h| h.ssrc == ssrc)
        .map(|h| h.seq)
        .expect("sent on ssrc")
}

/// The call's answer to a datagram, as the refusal reason it gave.
fn rejected(result: Result<(), CallError>) -> Option<RejectReason> {
    match result {
        Err(CallError::Datagram(DatagramError::Rejected(r))) => Some(r),
        _ => None,
    }
}

/// The SFU sends one Opus packet on `ssrc` (declaring a send stream for it first).
fn sfu_send_on(pair: &mut GroupPair, ssrc: u32, seq: u64) {
    let now = pair.now;
    let mut api = pair.sfu.rtc.direct_api();
    let ssrc = StrSsrc::from(ssrc);
    if api.stream_tx(&ssrc).is_none() {
        // A rid of its own: str0m sends one stream per mid and rid (no RID extension is
        // negotiated, so it never reaches the wire).
        let rid = str0m::media::Rid::from(format!("{:x}", *ssrc).as_str());
        api.declare_stream_tx(ssrc, None, Mid::from("0"), Some(rid));
    }
    let write = RtpWrite::new(
        OPUS_DEFAULT_PT.into(),
        SeqNo::from(seq),
        (seq * 960) as u32,
        now,
        Arc::<[u8]>::from(&crate::media::track::OPUS_SILENCE_FRAME[..]),
    )
    .ext_vals(ExtensionValues {
        audio_level: Some(-127),
        ..Default::default()
    });
    api.stream_tx(&ssrc).expect("declared").write_rtp(write);
}

/// A timeout at the SFU stamps the packets [`sfu_send_on`] queued (and gives new streams their
/// kind); its next tick sends them.
fn sfu_flush(pair: &mut GroupPair) {
    pair.sfu
        .rtc
        .handle_input(str0m::Input::Timeout(pair.now))
        .expect("sfu timeout");
}

#[test]
fn replayed_srtcp_is_refused_counted_and_not_read() {
    let mut pair = connected(31, true);
    // The SFU's receiver report about our audio comes every 5 s.
    pair.drive(Duration::from_secs(5));
    let (video, _) = pair.call.video_ssrcs().expect("video");
    let requests = pair.call.stats().video.keyframe_requests;
    let captured = pair.sfu.protect_rtcp(&compound(&[pli(video.0)]));
    pair.deliver_to_call(&captured).expect("a fresh pli");
    assert_eq!(pair.call.stats().video.keyframe_requests, requests + 1);
    for _ in 0..3 {
        assert_eq!(
            rejected(pair.deliver_to_call(&captured)),
            Some(RejectReason::RtcpReplayed)
        );
    }
    assert_eq!(pair.call.stats().dropped_rtcp_replayed, 3);
    assert_eq!(
        pair.call.stats().video.keyframe_requests,
        requests + 1,
        "a replayed pli is not read"
    );
    // The SFU's own reports (str0m's receiver reports about our audio) replayed.
    let genuine: Vec<_> = pair
        .delivered_to_call
        .iter()
        .filter(|t| {
            crate::demux::classify(&t.contents) == crate::demux::DatagramKind::Rtp
                && rtp_header(&t.contents).is_none()
                && t.contents != captured.contents
        })
        .cloned()
        .collect();
    assert!(!genuine.is_empty(), "the sfu sent srtcp");
    for t in &genuine {
        assert_eq!(
            rejected(pair.deliver_to_call(t)),
            Some(RejectReason::RtcpReplayed)
        );
    }
    assert_eq!(
        pair.call.stats().dropped_rtcp_replayed,
        3 + genuine.len() as u64
    );
    // Fresh RTCP still goes through, and the call goes on.
    let fresh = pair.sfu.protect_rtcp(&compound(&[pli(video.0)]));
    pair.deliver_to_call(&fresh).expect("a fresh pli");
    pair.drive(Duration::from_secs(1));
    assert_eq!(pair.call.state(), &CallState::Connected);
}

#[test]
fn replayed_stun_is_counted_and_keeps_no_dead_call_alive() {
    let mut pair = connected(32, false);
    // Authenticated binding requests and responses the SFU sent (STUN message types 0x0001
    // and 0x0101).
    let stun = binding_messages(&pair.delivered_to_call);
    assert!(
        stun.iter().any(|t| t.contents[..2] == [0x00, 0x01]),
        "the sfu sent binding requests"
    );
    // Replayed (or retransmitted) genuine STUN is counted, and a request is answered again
    // as RFC 5389 asks of retransmissions, but it is no sign of life (below).
    let sent = pair.call.stats().datagrams_sent;
    for t in &stun {
        assert_eq!(rejected(pair.deliver_to_call(t)), None);
    }
    assert_eq!(pair.call.stats().stun_replayed, stun.len() as u64);
    assert!(
        pair.call.stats().datagrams_sent > sent,
        "a repeated request is answered, as a retransmission must be"
    );
    // The SFU goes away; someone on the path replays its STUN every half second. Consent
    // (10 s) must still expire.
    pair.call
        .handle_input(pair.now, Input::Command(Command::Pause))
        .expect("pause");
    for _ in 0..30 {
        pair.drive_call_only(Duration::from_millis(500));
        for t in &stun {
            let _ = pair.deliver_to_call(t);
        }
    }
    assert_eq!(
        pair.call.state(),
        &CallState::Ended(EndReason::IceDisconnected),
        "replayed stun kept a dead call alive"
    );
}

#[test]
fn nack_storm_over_every_sequence_number_is_answered_within_the_rtx_cap() {
    let mut pair = connected(33, true);
    let (video, rtx) = pair.call.video_ssrcs().expect("video");
    pair.log_to_sfu = true;
    pair.drive(Duration::from_millis(100));
    let last_seq = last_seq_on(&pair, video.0);
    let before_video = pair.call.stats().video.packets_sent;
    let before_rtx = sent_on(&pair, rtx.0);
    // NACK items 17 sequence numbers apart, each with all 16 following bits set; str0m reads
    // 31 items of a NACK packet, so a datagram carries as many 31-item NACK packets as fit
    // (~5,000 sequence numbers). 13 datagrams cover all 65,536.
    let per_packet = 31;
    let packets_per_datagram = (MAX_RTCP_DATAGRAM - 8 - 14) / (12 + 4 * per_packet);
    let datagram_of = |first: u16| {
        let packets: Vec<_> = (0..packets_per_datagram)
            .map(|p| {
                let start = first.wrapping_add((p * per_packet * 17) as u16);
                nack(
                    video.0,
                    (0..per_packet).map(|i| (start.wrapping_add(i as u16 * 17), 0xffff)),
                )
            })
            .collect();
        compound(&packets)
    };
    let span = (packets_per_datagram * per_packet * 17) as u16;
    let storm: Vec<_> = (0..=u16::MAX / span)
        .map(|d| datagram_of(d * span))
        .collect();
    // And one that covers the last 3 s of our stream (str0m's RTX cache) and what follows.
    let recent = datagram_of(last_seq.wrapping_sub(400));
    assert!(
        storm
            .iter()
            .chain([&recent])
            .all(|c| c.len() + 14 <= MAX_RTCP_DATAGRAM)
    );
    // Two seconds of a NACK datagram every millisecond: the whole sequence space 150 times,
    // and every 10th datagram the recent window.
    let mut refused = 0;
    for i in 0..2_000 {
        let c = if i % 10 == 0 {
            &recent
        } else {
            &storm[i % storm.len()]
        };
        let t = pair.sfu.protect_rtcp(c);
        if pair.deliver_to_call(&t).is_err() {
            refused += 1;
        }
        pair.drive(Duration::from_millis(1));
    }
    let stats = pair.call.stats().clone();
    let video_sent = stats.video.packets_sent - before_video;
    let rtx_sent = (sent_on(&pair, rtx.0) - before_rtx) as u64;
    // Media kept its pace: 2 s of 30 fps at 2 packets a frame.
    assert!((110..=130).contains(&video_sent), "video sent {video_sent}");
    // At most RTX_BUDGET_PER_SEC retransmissions a second (plus what one poll had already
    // protected when the budget ran out). str0m alone sent 1,422 here (12 per video packet).
    eprintln!("rtx {rtx_sent} for {video_sent} video packets, {refused} nack datagrams refused");
    assert!(
        rtx_sent <= 2 * RTX_BUDGET_PER_SEC + 20,
        "rtx {rtx_sent} for {video_sent} video packets"
    );
    assert_eq!(stats.rtx_sent, rtx_sent);
    assert!(
        stats.rtx_budget_spent >= 1,
        "spent {}",
        stats.rtx_budget_spent
    );
    assert!(rtx_sent > 0, "nacks for packets in the cache were answered");
    // The budget: at most 100 per second (plus the bucket's 100) reached str0m.
    let budget = u64::from(RTCP_BUDGET_PER_SEC);
    assert!(
        stats.dropped_rtcp_over_budget >= 2_000 - 3 * budget,
        "over budget {}",
        stats.dropped_rtcp_over_budget
    );
    assert_eq!(refused, stats.dropped_rtcp_over_budget);
    assert_eq!(pair.call.state(), &CallState::Connected);
    // Once the storm is over, a NACK for a recent packet is answered again.
    pair.drive(Duration::from_millis(1_100));
    let rtx_before = sent_on(&pair, rtx.0);
    let last_seq = last_seq_on(&pair, video.0);
    let t = pair
        .sfu
        .protect_rtcp(&compound(&[nack(video.0, [(last_seq.wrapping_sub(2), 0)])]));
    pair.deliver_to_call(&t).expect("one nack");
    pair.drive(Duration::from_millis(20));
    assert_eq!(
        sent_on(&pair, rtx.0),
        rtx_before + 1,
        "a single nack is answered"
    );
}

#[test]
fn pli_and_fir_floods_make_a_keyframe_at_most_every_250_ms() {
    let mut pair = connected(34, true);
    let (video, _) = pair.call.video_ssrcs().expect("video");
    let before = pair.call.stats().video;
    // Two seconds of a PLI and a FIR every millisecond (in one compound, then apart).
    for i in 0..2_000u32 {
        let c = if i % 2 == 0 {
            compound(&[pli(video.0), fir(video.0, i as u8)])
        } else {
            compound(&[fir(video.0, i as u8)])
        };
        let t = pair.sfu.protect_rtcp(&c);
        let _ = pair.deliver_to_call(&t);
        pair.drive(Duration::from_millis(1));
    }
    let after = pair.call.stats().video;
    let keyframes = after.keyframes_sent - before.keyframes_sent;
    let forwarded = after.keyframe_requests_forwarded - before.keyframe_requests_forwarded;
    // One forwarded request per 250 ms: at most 9 in 2 s; each gives one key frame.
    assert!(forwarded <= 9, "forwarded {forwarded}");
    assert!((4..=9).contains(&keyframes), "key frames {keyframes}");
    let requests = after.keyframe_requests - before.keyframe_requests;
    assert!(requests > 0);
    assert!(
        pair.call.stats().dropped_rtcp_over_budget >= 2_000 - 3 * u64::from(RTCP_BUDGET_PER_SEC)
    );
    assert_eq!(pair.call.state(), &CallState::Connected);
}

#[test]
fn remb_of_zero_is_counted_and_changes_nothing() {
    let mut pair = connected(35, true);
    let (video, _) = pair.call.video_ssrcs().expect("video");
    let audio = pair.call.audio_ssrc();
    pair.drive(Duration::from_secs(1));
    let v0 = pair.call.stats().video.packets_sent;
    let a0 = pair.call.stats().packets_sent;
    pair.drive(Duration::from_secs(1));
    let (v_rate, a_rate) = (
        pair.call.stats().video.packets_sent - v0,
        pair.call.stats().packets_sent - a0,
    );
    let (v1, a1) = (
        pair.call.stats().video.packets_sent,
        pair.call.stats().packets_sent,
    );
    for _ in 0..10 {
        let t = pair
            .sfu
            .protect_rtcp(&compound(&[remb(0, &[video.0, audio.0])]));
        pair.deliver_to_call(&t).expect("remb");
        pair.drive(Duration::from_millis(100));
    }
    assert_eq!(pair.call.stats().remb_received, 10);
    let v = pair.call.stats().video.packets_sent - v1;
    let a = pair.call.stats().packets_sent - a1;
    assert!(v.abs_diff(v_rate) <= 2, "video {v} per s, was {v_rate}");
    assert!(a.abs_diff(a_rate) <= 1, "audio {a} per s, was {a_rate}");
}

#[test]
fn oversized_and_self_contradictory_rtcp_is_survived() {
    let mut pair = connected(36, false);
    let audio = pair.call.audio_ssrc().0;
    // Thousands of report blocks: 100 receiver reports of 31 blocks (~75 KB, an IPv6
    // jumbogram's worth). Refused unread.
    let huge: Vec<_> = (0..100).map(|_| rr(31, audio)).collect();
    let t = pair.sfu.protect_rtcp(&compound(&huge));
    assert!(t.contents.len() > 60_000);
    assert_eq!(
        rejected(pair.deliver_to_call(&t)),
        Some(RejectReason::RtcpOversized)
    );
    assert_eq!(pair.call.stats().dropped_rtcp_oversized, 1);
    // Within the size limit, lengths that disagree with the contents.
    let cases: Vec<Vec<u8>> = vec![
        // Report count 31, room for one block.
        rtcp(31, 201, &rr(1, audio)[4..], None),
        // A length far beyond the datagram.
        rtcp(1, 201, &rr(1, audio)[4..], Some(0xffff)),
        // Length zero with a body.
        rtcp(1, 201, &rr(1, audio)[4..], Some(0)),
        // A NACK whose length cuts an item in half.
        {
            let mut n = nack(audio, [(1, 0xffff), (2, 0xffff)]);
            n[3] = 3;
            n
        },
        // A REMB announcing 255 SSRCs and carrying one.
        {
            let mut r = remb(0, &[audio]);
            r[16] = 255;
            r
        },
        // A FIR without its FCI.
        rtcp(4, 206, &fb_ssrcs(audio), None),
        // Version 1, unknown types, trailing bytes.
        vec![0x40, 201, 0, 1, 1, 2, 3, 4],
        rtcp(0, 255, &[0; 8], None),
        vec![0x80, 201, 0, 1, 0, 0, 0],
        // As many one-block reports as fit: ~60 blocks about our stream.
        {
            let mut c = Vec::new();
            while c.len() + 52 + 8 + 14 <= MAX_RTCP_DATAGRAM {
                c.extend_from_slice(&rr(1, audio));
            }
            c
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let t = pair.sfu.protect_rtcp(&compound(std::slice::from_ref(case)));
        assert!(t.contents.len() <= MAX_RTCP_DATAGRAM, "case {i}");
        // Authenticated, so str0m parses it; whatever it makes of it, the call goes on.
        let _ = pair.deliver_to_call(&t);
        pair.drive(Duration::from_millis(20));
        assert_eq!(pair.call.state(), &CallState::Connected, "case {i}");
    }
    let heard = pair.sfu.heard.packets;
    pair.drive(Duration::from_secs(1));
    assert!(pair.sfu.heard.packets >= heard + 45, "media flows on");
}

#[test]
fn malformed_dtls_records_after_connect_leave_the_call_up() {
    let mut pair = connected(37, false);
    let sfu = pair.delivered_to_call[0].source;
    let call = pair.delivered_to_call[0].destination;
    let records: Vec<Vec<u8>> = vec![
        // Application data, epoch 1, a length beyond the datagram.
        vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 1, 2, 3],
        // A handshake record (a new ClientHello?) of garbage, epoch 0.
        [
            vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 50, 0, 12],
            vec![0xab; 12],
        ]
        .concat(),
        // A fatal alert in the clear, epoch 0 (not authenticated).
        vec![21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 60, 0, 2, 2, 40],
        // close_notify in the clear.
        vec![21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 61, 0, 2, 1, 0],
        // A truncated header; a change cipher spec; two records, the second cut short.
        vec![22, 0xfe],
        vec![20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 62, 0, 1, 1],
        [
            vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 10, 0, 3, 1, 2, 3],
            vec![23, 0xfe, 0xfd, 0, 1],
        ]
        .concat(),
        // Epoch 1 application data of the right shape with a bad tag.
        [
            vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 11, 0, 40],
            vec![0x5a; 40],
        ]
        .concat(),
    ];
    let base = pair.call.stats().clone();
    // 50 rounds of the 8 records in 1 s: 400 datagrams, DTLS_BUDGET_PER_SEC handed to str0m.
    for _ in 0..50 {
        for r in &records {
            let t = crate::call::Transmit {
                source: sfu,
                destination: call,
                contents: r.clone(),
            };
            let _ = pair.deliver_to_call(&t);
        }
        pair.drive(Duration::from_millis(20));
        assert_eq!(pair.call.state(), &CallState::Connected);
    }
    let stats = pair.call.stats();
    let taken = stats.dtls_received_connected - base.dtls_received_connected;
    let refused = stats.dropped_dtls_over_budget - base.dropped_dtls_over_budget;
    assert_eq!(
        taken + refused,
        50 * records.len() as u64,
        "every one counted"
    );
    // A full bucket and a second of refill.
    let budget = u64::from(DTLS_BUDGET_PER_SEC);
    assert!(taken <= 2 * budget + 1, "taken {taken}");
    let heard = pair.sfu.heard.packets;
    pair.drive(Duration::from_secs(1));
    assert!(pair.sfu.heard.packets >= heard + 45, "media flows on");
    assert_eq!(pair.call.state(), &CallState::Connected);
}

#[test]
fn a_flood_of_new_ssrcs_is_capped() {
    let mut pair = connected(38, false);
    let before = pair.call.stats().audio_packets_received;
    // 300 new speakers, two packets each.
    const SPEAKERS: u32 = 300;
    for round in 0..2u64 {
        for i in 0..SPEAKERS {
            sfu_send_on(&mut pair, 0x1000_0000 + i, 10 + round);
        }
        sfu_flush(&mut pair);
        pair.drive(Duration::from_millis(100));
    }
    let ssrcs: std::collections::HashSet<u32> = pair
        .delivered_to_call
        .iter()
        .filter_map(|t| rtp_header(&t.contents))
        .map(|h| h.ssrc)
        .collect();
    assert_eq!(
        ssrcs.len() as u32,
        SPEAKERS,
        "every speaker reached the call"
    );
    let stats = pair.call.stats();
    let accepted = stats.audio_packets_received - before;
    // 64 SSRCs (the call's limit), two packets each.
    assert_eq!(accepted, 2 * 64, "accepted");
    assert_eq!(
        stats.dropped_unknown_ssrc,
        2 * u64::from(SPEAKERS - 64),
        "dropped"
    );
    assert_eq!(pair.call.state(), &CallState::Connected);
}

#[test]
fn ssrc_collisions_with_our_own_are_refused() {
    let mut pair = connected(39, true);
    let audio = pair.call.audio_ssrc().0;
    let (video, rtx) = pair.call.video_ssrcs().expect("video");
    let before = pair.call.stats().audio_packets_received;
    // RTP on our video and RTX SSRCs, with the Opus payload type the call accepts speakers on.
    for seq in 0..20 {
        sfu_send_on(&mut pair, video.0, 100 + seq);
        sfu_send_on(&mut pair, rtx.0, 100 + seq);
        sfu_flush(&mut pair);
        pair.drive(Duration::from_millis(20));
    }
    let collisions = pair
        .delivered_to_call
        .iter()
        .filter(|t| rtp_header(&t.contents).is_some_and(|h| h.ssrc == video.0 || h.ssrc == rtx.0))
        .count() as u64;
    assert_eq!(collisions, 40, "the sfu sent on our ssrcs");
    // RTCP "from" each of our SSRCs: a sender report about our own stream, a NACK.
    for own in [audio, video.0, rtx.0] {
        let mut sr = rr_empty(own);
        sr.extend_from_slice(&nack(video.0, [(0, 0xffff)]));
        let t = pair.sfu.protect_rtcp(&sr);
        assert_eq!(
            rejected(pair.deliver_to_call(&t)),
            Some(RejectReason::OwnSsrc)
        );
    }
    let stats = pair.call.stats();
    // The 40 RTP packets, our 3 compounds, and the SFU's own sender reports for the streams
    // it sent on our SSRCs.
    assert!(stats.dropped_own_ssrc >= 40 + 3, "{stats:?}");
    assert_eq!(stats.audio_packets_received, before, "none taken as audio");
    assert_eq!(pair.call.state(), &CallState::Connected);
}
