#![allow(clippy::unwrap_used)]
//! The fuzz seed corpora (`fuzz/corpus/<target>/`) as a regression suite on stable Rust.
//!
//! Files named `valid_*` or `telegram_*` must parse and survive `parse(to_json(x)) == x`;
//! `broken_*` files must be rejected with an error; any other file (e.g. the hash-named inputs
//! `cargo fuzz run` adds) must merely not panic. A crash found by fuzzing becomes a regression
//! test by copying the input here as `broken_<what>.json` (or `valid_<what>.json`).
//!
//! The binary corpora follow the same idea with their own names: `demux_first_datagram` seeds
//! are `unroutable_*` or `routed_*`, `ogg_reader` seeds are `valid_*` (with the packet count
//! listed in [`OGG_VALID`]) or `broken_*`. Their checks are the fuzz targets' own
//! (`fuzz/harness/*.rs`, included here). The generated seeds must equal
//! the checked-in files (`generated_seeds_match_the_corpus`);
//! `RINGCAST_WRITE_SEEDS=1 cargo test -p ringcast-core --test fuzz_corpus generated_seeds`
//! rewrites them instead.

mod common;
#[path = "../../fuzz/harness/demux.rs"]
mod demux;
#[path = "../../fuzz/harness/ogg.rs"]
mod ogg;
#[path = "../../fuzz/harness/video.rs"]
mod video;

use std::fmt::Debug;

use common::{corpus_dir, corpus_files, seed_file};
use ringcast_core::SignalingError;
use ringcast_core::signaling::group::{JoinPayload, JoinResponse};

/// Checks every file of the corpus of `target`; returns how many named seed files it checked.
fn check_corpus<T: Debug + PartialEq>(
    target: &str,
    parse: fn(&[u8]) -> Result<T, SignalingError>,
    to_json: fn(&T) -> String,
) -> usize {
    let mut named = 0;
    for (name, data) in corpus_files(target) {
        let result = parse(&data);
        if name.starts_with("valid_") || name.starts_with("telegram_") {
            let parsed = result.unwrap_or_else(|e| panic!("{target}/{name} must parse: {e}"));
            let again = parse(to_json(&parsed).as_bytes());
            assert_eq!(again, Ok(parsed), "{target}/{name} must round-trip");
            named += 1;
        } else if name.starts_with("broken_") {
            assert!(
                result.is_err(),
                "{target}/{name} must be rejected: {result:?}"
            );
            named += 1;
        }
    }
    named
}

#[test]
fn group_response_corpus() {
    let checked = check_corpus("group_response", JoinResponse::parse, JoinResponse::to_json);
    assert!(
        checked >= 6,
        "only {checked} named seed files in group_response"
    );
}

#[test]
fn group_join_corpus() {
    let checked = check_corpus("group_join", JoinPayload::parse, JoinPayload::to_json);
    assert!(
        checked >= 6,
        "only {checked} named seed files in group_join"
    );
}

#[test]
fn demux_first_datagram_corpus() {
    let mut fixture = demux::Fixture::new();
    let (mut unroutable, mut routed) = (0, 0);
    for (name, data) in corpus_files("demux_first_datagram") {
        let outcome = fixture.feed(&data);
        if name.starts_with("unroutable_") {
            assert_eq!(outcome, demux::Outcome::Unroutable, "{name}");
            unroutable += 1;
        } else if name.starts_with("routed_") {
            assert!(outcome.routed(), "{name}: {outcome:?}");
            routed += 1;
            // As the fuzz target does: only a check the call answered spends the fixture, so
            // the seeds after an unanswered one also prove the call learned nothing from it.
            if outcome == (demux::Outcome::RoutedByUfrag { answered: true }) {
                fixture = demux::Fixture::new();
            }
        }
    }
    assert!(
        unroutable >= 8 && routed >= 1,
        "{unroutable} unroutable, {routed} routed seeds"
    );
}

/// The `valid_*` Ogg seeds and how many audio packets each must yield.
const OGG_VALID: &[(&str, usize)] = &[
    ("valid_mono_cbr_20ms_x40.ogg", 40),
    ("valid_stereo_mixed_durations.ogg", 6),
    ("valid_headers_only.ogg", 0),
    ("valid_packet_spans_two_pages.ogg", 2),
    ("valid_other_stream_first.ogg", 3),
    ("valid_cut_between_pages.ogg", 5),
];

#[test]
fn ogg_reader_corpus() {
    let mut named = 0;
    for (name, data) in corpus_files("ogg_reader") {
        let read = ogg::read_all(&data);
        if name.starts_with("valid_") {
            let expected = OGG_VALID
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("ogg_reader/{name} is not listed in OGG_VALID"))
                .1;
            assert!(
                read.end.is_ok(),
                "ogg_reader/{name} must read to the end: {:?}",
                read.end
            );
            assert_eq!(read.frames, expected, "ogg_reader/{name} packet count");
            named += 1;
        } else if name.starts_with("broken_") {
            assert!(
                read.end.is_err(),
                "ogg_reader/{name} must be rejected: {read:?}"
            );
            named += 1;
        }
    }
    let dir = corpus_dir("ogg_reader");
    for (name, _) in OGG_VALID {
        assert!(dir.join(name).is_file(), "ogg_reader/{name} is missing");
    }
    assert!(named >= 12, "only {named} named seeds in ogg_reader");
}

/// Ogg CRC-32 (RFC 3533 §6), to build pages the writer cannot.
fn ogg_crc(bytes: &[u8]) -> u32 {
    let mut crc = 0_u32;
    for &b in bytes {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One Ogg page with the given lacing values and body.
fn ogg_page(flags: u8, serial: u32, sequence: u32, lacing: &[u8], body: &[u8]) -> Vec<u8> {
    let mut page = b"OggS".to_vec();
    page.push(0);
    page.push(flags);
    page.extend_from_slice(&0_u64.to_le_bytes());
    page.extend_from_slice(&serial.to_le_bytes());
    page.extend_from_slice(&sequence.to_le_bytes());
    page.extend_from_slice(&[0; 4]);
    page.push(u8::try_from(lacing.len()).unwrap());
    page.extend_from_slice(lacing);
    page.extend_from_slice(body);
    let crc = ogg_crc(&page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    page
}

/// OpusHead and OpusTags pages of stream `serial`, sequence 0 and 1.
fn ogg_headers(serial: u32) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 1, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&[1, 0, 0, 0, b'r', 0, 0, 0, 0]);
    let mut out = ogg_page(0x02, serial, 0, &[19], &head);
    out.extend(ogg_page(0, serial, 1, &[17], &tags));
    out
}

/// A 20 ms CELT packet: TOC config 31, code 0.
const PKT_20MS: &[u8] = &[0xFC, 0xFF, 0xFE];

/// The generated seeds of `demux_first_datagram` and `ogg_reader` are the checked-in ones.
#[test]
fn generated_seeds_match_the_corpus() {
    use ringcast_core::media::OggOpusWriter;
    let w = seed_file;

    // Ogg.
    let mut writer = OggOpusWriter::new(7, 1, 312);
    for _ in 0..40 {
        writer.push_packet(PKT_20MS, 960);
    }
    let mono = writer.finish();
    w("ogg_reader", "valid_mono_cbr_20ms_x40.ogg", &mono);
    let mut writer = OggOpusWriter::new(8, 2, 0);
    // 20 ms SILK, 10 ms hybrid, 2.5 ms CELT, two 20 ms frames (code 1), three 20 ms (code 3), 60 ms SILK.
    for (p, d) in [
        (&[0x08_u8, 1, 2][..], 960),
        (&[0x60, 3][..], 480),
        (&[0x80, 4][..], 120),
        (&[0xFD, 5, 6][..], 1920),
        (&[0xFF, 0x03, 7][..], 2880),
        (&[0x18, 8][..], 2880),
    ] {
        writer.push_packet(p, d);
    }
    w(
        "ogg_reader",
        "valid_stereo_mixed_durations.ogg",
        &writer.finish(),
    );
    w(
        "ogg_reader",
        "valid_headers_only.ogg",
        &OggOpusWriter::new(9, 1, 0).finish(),
    );
    let mut spans = ogg_headers(5);
    let big: Vec<u8> = std::iter::once(0xFC)
        .chain((0..299).map(|i| i as u8))
        .collect();
    spans.extend(ogg_page(0, 5, 2, &[255], &big[..255]));
    spans.extend(ogg_page(
        0x01,
        5,
        3,
        &[45, 3],
        &[&big[255..], PKT_20MS].concat(),
    ));
    spans.extend(ogg_page(0x04, 5, 4, &[], &[]));
    w("ogg_reader", "valid_packet_spans_two_pages.ogg", &spans);
    let mut muxed = ogg_page(0x02, 99, 0, &[7], b"\x80theora");
    muxed.extend(ogg_headers(6));
    muxed.extend(ogg_page(0, 99, 1, &[4], b"junk"));
    muxed.extend(ogg_page(0x04, 6, 2, &[3, 3, 3], &PKT_20MS.repeat(3)));
    w("ogg_reader", "valid_other_stream_first.ogg", &muxed);
    let mut writer = OggOpusWriter::new(10, 1, 0);
    for _ in 0..5 {
        writer.push_packet(PKT_20MS, 960);
    }
    let mut cut = writer.finish();
    cut[5] &= !0x04; // no end-of-stream flag: a recording cut between pages
    let last = cut.len() - (27 + 1 + PKT_20MS.len());
    cut[last + 5] = 0;
    cut[last + 22..last + 26].fill(0);
    let crc = ogg_crc(&cut[last..]);
    cut[last + 22..last + 26].copy_from_slice(&crc.to_le_bytes());
    w("ogg_reader", "valid_cut_between_pages.ogg", &cut);

    let mut bad_crc = mono.clone();
    let at = bad_crc.len() - 1;
    bad_crc[at] ^= 1;
    w("ogg_reader", "broken_bad_crc.ogg", &bad_crc);
    w(
        "ogg_reader",
        "broken_truncated_last_page.ogg",
        &mono[..mono.len() - 2],
    );
    w("ogg_reader", "broken_empty.ogg", b"");
    let mut not_opus = mono;
    not_opus[28..36].copy_from_slice(b"OpusHeaX");
    w("ogg_reader", "broken_not_opus_head.ogg", &not_opus);
    let mut gap = ogg_headers(11);
    gap.extend(ogg_page(0, 11, 3, &[3], PKT_20MS));
    w("ogg_reader", "broken_sequence_gap.ogg", &gap);
    let mut orphan = ogg_headers(12);
    orphan.extend(ogg_page(0x01, 12, 2, &[3], PKT_20MS));
    w(
        "ogg_reader",
        "broken_continued_without_open_packet.ogg",
        &orphan,
    );
    let mut open_eos = ogg_headers(13);
    open_eos.extend(ogg_page(0x04, 13, 2, &[255], &[0xFC; 255]));
    w("ogg_reader", "broken_eos_with_open_packet.ogg", &open_eos);
    let mut zero_frames = ogg_headers(14);
    zero_frames.extend(ogg_page(0x04, 14, 2, &[2], &[0xFF, 0x00]));
    w("ogg_reader", "broken_code3_zero_frames.ogg", &zero_frames);
    let mut too_long = ogg_headers(15);
    too_long.extend(ogg_page(0x04, 15, 2, &[2], &[0xFF, 0x07]));
    w("ogg_reader", "broken_packet_over_120ms.ogg", &too_long);
    let mut lacing_past_end = ogg_headers(16);
    lacing_past_end.extend(ogg_page(0x04, 16, 2, &[200], &[0xFC; 10]));
    w("ogg_reader", "broken_lacing_past_end.ogg", &lacing_past_end);

    // Demux: selector byte (source and socket), then the datagram.
    let fixture = demux::Fixture::new();
    let stun = |username: &[u8], cookie: u32, extra_len: u16| {
        let mut attr = 0x0006_u16.to_be_bytes().to_vec();
        attr.extend_from_slice(&(username.len() as u16 + extra_len).to_be_bytes());
        attr.extend_from_slice(username);
        while !attr.len().is_multiple_of(4) {
            attr.push(0);
        }
        let mut buf = vec![0x00, 0x01];
        buf.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        buf.extend_from_slice(&cookie.to_be_bytes());
        buf.extend_from_slice(&[7; 12]);
        buf.extend_from_slice(&attr);
        buf
    };
    let sel = |s: u8, d: &[u8]| [&[s][..], d].concat();
    let ufrag = fixture.ufrags()[0].1.clone();
    let ufrag_v6 = fixture.ufrags()[1].1.clone();
    let routed = stun(format!("{ufrag}:sfu").as_bytes(), 0x2112_A442, 0);
    w(
        "demux_first_datagram",
        "routed_stun_known_ufrag.bin",
        &sel(0, &routed),
    );
    w(
        "demux_first_datagram",
        "routed_stun_known_ufrag_v6_socket.bin",
        &sel(
            0x12,
            &stun(format!("{ufrag_v6}:sfu").as_bytes(), 0x2112_A442, 0),
        ),
    );
    w(
        "demux_first_datagram",
        "unroutable_stun_ufrag_of_other_socket.bin",
        &sel(0x10, &routed),
    );
    let d = "demux_first_datagram";
    w(
        d,
        "unroutable_stun_unknown_ufrag.bin",
        &sel(0, &stun(b"nobody:sfu", 0x2112_A442, 0)),
    );
    w(
        d,
        "unroutable_stun_bad_cookie.bin",
        &sel(1, &stun(format!("{ufrag}:x").as_bytes(), 0x2112_A443, 0)),
    );
    w(
        d,
        "unroutable_stun_username_overruns.bin",
        &sel(2, &stun(format!("{ufrag}:x").as_bytes(), 0x2112_A442, 9)),
    );
    w(
        d,
        "unroutable_stun_username_not_utf8.bin",
        &sel(3, &stun(&[0xC3, 0x28, b':', b'x'], 0x2112_A442, 0)),
    );
    w(
        d,
        "unroutable_stun_username_too_long.bin",
        &sel(0x10, &stun(&[b'a'; 516], 0x2112_A442, 0)),
    );
    w(d, "unroutable_stun_header_only.bin", &sel(0, &routed[..20]));
    w(d, "unroutable_empty.bin", &[0]);
    w(
        d,
        "unroutable_dtls_client_hello.bin",
        &sel(
            1,
            &[22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0],
        ),
    );
    let mut rtp = vec![0x90, 111, 0, 7, 0, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF];
    rtp.extend_from_slice(&[0; 20]);
    w(d, "unroutable_rtp.bin", &sel(2, &rtp));
    w(d, "unroutable_rtp_header_only.bin", &sel(0x13, &rtp[..12]));
    w(
        d,
        "unroutable_rtcp_sr.bin",
        &sel(0, &[0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    w(d, "unroutable_unknown_first_byte.bin", &sel(1, &[0x40; 24]));
}

/// The `incoming_video` seeds: what each must give.
const VIDEO_SEEDS: &[(&str, video::Summary)] = &[
    (
        "valid_vp8_key_then_delta.bin",
        video::Summary {
            frames: 2,
            keyframes: 1,
            incomplete: 0,
            messages: 0,
            malformed: 0,
        },
    ),
    (
        "valid_h264_idr_then_delta.bin",
        video::Summary {
            frames: 2,
            keyframes: 1,
            incomplete: 0,
            messages: 0,
            malformed: 0,
        },
    ),
    (
        "broken_vp8_hole_then_key.bin",
        video::Summary {
            frames: 1,
            keyframes: 1,
            incomplete: 1,
            messages: 0,
            malformed: 0,
        },
    ),
    (
        "broken_channel_messages.bin",
        video::Summary {
            frames: 0,
            keyframes: 0,
            incomplete: 0,
            messages: 4,
            malformed: 3,
        },
    ),
];

#[test]
fn incoming_video_corpus() {
    let mut named = 0;
    for (name, data) in corpus_files("incoming_video") {
        let summary = video::incoming(&data);
        if let Some((_, want)) = VIDEO_SEEDS.iter().find(|(n, _)| *n == name) {
            assert_eq!(summary, *want, "{name}");
            named += 1;
        }
    }
    assert_eq!(named, VIDEO_SEEDS.len());
}

#[test]
fn incoming_video_seeds_match_the_corpus() {
    use ringcast_core::media::video::{VideoCodec, VideoFrame};
    use video::{message_record, packet_record};
    let t = "incoming_video";
    // The packetizers' own payloads of a small frame, the marker on the last.
    let frame = |codec: VideoCodec, data: &[u8], ts_step: u8| -> Vec<u8> {
        let f = VideoFrame::packetize(codec, data, 3_000).unwrap();
        let n = f.payloads.len();
        let h264 = codec == VideoCodec::H264;
        f.payloads
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                packet_record(i + 1 == n, h264, 1, if i == 0 { ts_step } else { 0 }, p)
            })
            .collect()
    };
    let mut vp8_key = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00];
    vp8_key.extend([7; 60]);
    let mut vp8_delta = vec![0x11, 0x02, 0x00];
    vp8_delta.extend([9; 40]);
    let seed = [
        frame(VideoCodec::Vp8, &vp8_key, 0),
        frame(VideoCodec::Vp8, &vp8_delta, 10),
    ]
    .concat();
    seed_file(t, "valid_vp8_key_then_delta.bin", &seed);
    // SPS, PPS and an IDR slice; then a non-IDR slice.
    let idr = [
        &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x68][..],
        &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
        &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33, 0x21],
    ]
    .concat();
    let non_idr = [0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x03, 0x04];
    let seed = [
        frame(VideoCodec::H264, &idr, 0),
        frame(VideoCodec::H264, &non_idr, 10),
    ]
    .concat();
    seed_file(t, "valid_h264_idr_then_delta.bin", &seed);
    // A key frame whose second packet never comes; enough later delta frames that it is given
    // up; then a key frame starts the picture again.
    let one = |data: &[u8]| -> Vec<u8> {
        let f = VideoFrame::packetize(VideoCodec::Vp8, data, 3_000).unwrap();
        assert_eq!(f.payloads.len(), 1);
        f.payloads[0].to_vec()
    };
    let (key, delta) = (one(&vp8_key), one(&vp8_delta));
    let mut seed = packet_record(false, false, 1, 0, &key);
    for i in 0..video_rx_give_up() {
        let step = if i == 0 { 2 } else { 1 };
        seed.extend(packet_record(true, false, step, 10, &delta));
    }
    seed.extend(packet_record(true, false, 1, 10, &key));
    seed_file(t, "broken_vp8_hole_then_key.bin", &seed);
    let seed = [
        message_record(br#"{"colibriClass":"DominantSpeakerEndpointChangeEvent"}"#),
        message_record(b"\xff\xfe"),
        message_record(br#"{"no":"class"}"#),
        message_record(br#"{"colibriClass":"#),
    ]
    .concat();
    seed_file(t, "broken_channel_messages.bin", &seed);
}

fn video_rx_give_up() -> usize {
    ringcast_core::media::video_rx::GIVE_UP_AFTER_FRAMES
}
