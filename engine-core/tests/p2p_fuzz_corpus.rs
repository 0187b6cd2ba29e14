#![allow(clippy::unwrap_used)]
//! The 1:1-call fuzz seed corpora (`fuzz/corpus/p2p_decrypt/`, `fuzz/corpus/p2p_message/`,
//! `fuzz/corpus/p2p_sctp/`) as a
//! regression suite on stable, through the fuzz targets' own checks (`fuzz/harness/p2p.rs`).
//!
//! `p2p_decrypt` seeds: `valid_*` = every packet accepted; `replay_*` = the first accepted, the
//! others rejected as replays; `broken_*` = every packet rejected. `p2p_message` seeds:
//! `valid_*` must parse (and round-trip), `broken_*` must be refused. Other files (inputs
//! libFuzzer found) only have to pass the harness checks.
//!
//! The generated seeds must equal the checked-in files (`generated_seeds_match_the_corpus`);
//! `RINGCAST_WRITE_SEEDS=1 cargo test -p ringcast-core --test p2p_fuzz_corpus generated_seeds`
//! rewrites them instead.

mod common;
#[path = "../../fuzz/harness/p2p.rs"]
mod p2p;
#[path = "../../fuzz/harness/turn.rs"]
mod turn;

use std::time::Instant;

use common::{corpus_files, seed_file};
use ringcast_core::signaling::p2p::messages::{
    Candidates, DtlsFingerprint, InitialSetup, MediaState, VideoState,
};
use ringcast_core::signaling::p2p::{
    CarrierRejected, EncryptedChannel, Framing, LinkRejected, Rejected, Role, SignalingMessage,
};

#[test]
fn p2p_decrypt_corpus() {
    let mut named = 0;
    for (name, data) in corpus_files("p2p_decrypt") {
        let got = p2p::decrypt(&data);
        if name.starts_with("valid_") {
            assert_eq!(got.accepted, got.packets, "{name}: {got:?}");
            assert!(got.messages > 0, "{name}: {got:?}");
        } else if name.starts_with("replay_") {
            assert_eq!(got.accepted, 1, "{name}: {got:?}");
            assert!(
                got.rejected.iter().all(|r| *r == Rejected::Replay),
                "{name}"
            );
        } else if name.starts_with("broken_") {
            assert_eq!(got.accepted, 0, "{name}: {got:?}");
            assert_eq!(got.rejected.len(), got.packets, "{name}");
        } else {
            continue;
        }
        named += 1;
    }
    assert!(named >= 8, "only {named} named seeds");
}

#[test]
fn p2p_message_corpus() {
    let mut named = 0;
    for (name, data) in corpus_files("p2p_message") {
        let got = p2p::message(&data);
        if name.starts_with("valid_") {
            got.unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.starts_with("broken_") {
            assert!(got.is_err(), "{name} was accepted: {got:?}");
        } else {
            continue;
        }
        named += 1;
    }
    assert!(named >= 10, "only {named} named seeds");
}

/// Control messages as ringcast would send them.
fn messages() -> Vec<(&'static str, SignalingMessage)> {
    let setup = |role| {
        SignalingMessage::InitialSetup(InitialSetup {
            ufrag: "Ab12".into(),
            pwd: "abcdefghijklmnopqrstuvwx".into(),
            renomination: true,
            fingerprints: vec![DtlsFingerprint::sha256(
                &[0x5A; 32],
                InitialSetup::setup_for(role),
            )],
        })
    };
    vec![
        ("initial_setup_caller", setup(Role::Caller)),
        ("initial_setup_callee", setup(Role::Callee)),
        (
            "candidates",
            SignalingMessage::Candidates(Candidates {
                candidates: vec![
                    "candidate:1 1 udp 2122260223 192.0.2.5 50000 typ host generation 0 ufrag Ab12 network-id 1".into(),
                    "candidate:2 1 udp 1686052607 203.0.113.7 61000 typ srflx raddr 192.0.2.5 rport 50000 generation 0".into(),
                ],
            }),
        ),
        (
            "media_state",
            SignalingMessage::MediaState(MediaState {
                muted: true,
                low_battery: false,
                video_state: VideoState::Inactive,
                video_rotation: 0,
                screencast_state: VideoState::Inactive,
            }),
        ),
    ]
}

/// The generated `p2p_*` seeds are the checked-in ones (`RINGCAST_WRITE_SEEDS=1` rewrites them).
#[test]
fn generated_seeds_match_the_corpus() {
    let write = seed_file;

    // p2p_message: the messages above, the §4.7 NegotiateChannels example, and broken ones.
    for (name, msg) in messages() {
        write(
            "p2p_message",
            &format!("valid_{name}.json"),
            msg.to_json().as_bytes(),
        );
    }
    let negotiate = r#"{"@type":"NegotiateChannels","exchangeId":"2894763621","contents":[{"type":"audio","ssrc":"3400000001","payloadTypes":[{"id":111,"name":"opus","clockrate":48000,"channels":2,"feedbackTypes":[{"type":"transport-cc","subtype":""}],"parameters":{"minptime":"10","useinbandfec":"1"}}],"rtpExtensions":[{"id":2,"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"},{"id":3,"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"}]},{"type":"video","ssrc":"3400000002","ssrcGroups":[{"semantics":"FID","ssrcs":["3400000002","3400000003"]}],"payloadTypes":[{"id":96,"name":"VP8","clockrate":90000,"channels":0,"feedbackTypes":[{"type":"nack","subtype":"pli"}],"parameters":{}}],"rtpExtensions":[{"id":13,"uri":"urn:3gpp:video-orientation"}]}]}"#;
    write(
        "p2p_message",
        "valid_negotiate_channels.json",
        negotiate.as_bytes(),
    );
    write(
        "p2p_message",
        "valid_unknown_type.json",
        br#"{"@type":"RemoteVideoIsActive","active":true}"#,
    );
    let broken: [(&str, &str); 7] = [
        ("no_type", r#"{"ufrag":"Ab12"}"#),
        (
            "no_fingerprints",
            r#"{"@type":"InitialSetup","ufrag":"Ab12","pwd":"abcdefghijklmnopqrstuvwx","fingerprints":[]}"#,
        ),
        (
            "fingerprint_short",
            r#"{"@type":"InitialSetup","ufrag":"Ab12","pwd":"abcdefghijklmnopqrstuvwx","fingerprints":[{"hash":"sha-256","setup":"actpass","fingerprint":"AB:CD"}]}"#,
        ),
        (
            "candidate_not_string",
            r#"{"@type":"Candidates","candidates":[{"sdpString":1}]}"#,
        ),
        (
            "exchange_id_text",
            r#"{"@type":"NegotiateChannels","exchangeId":"abc"}"#,
        ),
        (
            "rotation_45",
            r#"{"@type":"MediaState","videoRotation":45}"#,
        ),
        ("truncated", r#"{"@type":"MediaState","muted":tr"#),
    ];
    for (name, json) in broken {
        write(
            "p2p_message",
            &format!("broken_{name}.json"),
            json.as_bytes(),
        );
    }

    // p2p_decrypt: genuine traffic under the §5 key.
    let key = p2p::key();
    let now = Instant::now();
    let jsons: Vec<Vec<u8>> = messages()
        .into_iter()
        .map(|(_, m)| m.to_json().into_bytes())
        .collect();
    // Caller -> callee, reliable: three sends (the later ones carry the unacked earlier ones).
    let mut caller = EncryptedChannel::new(&key, Role::Caller, Framing::Reliable);
    let reliable: Vec<Vec<u8>> = jsons
        .iter()
        .take(3)
        .map(|m| caller.send(m, now).unwrap())
        .collect();
    write(
        "p2p_decrypt",
        "valid_reliable_caller_to_callee",
        &p2p::encode(1, &reliable),
    );
    // Callee -> caller, reliable, with an ack item: the callee acks the caller's first packet.
    let mut callee = EncryptedChannel::new(&key, Role::Callee, Framing::Reliable);
    callee.receive(&reliable[0], now).unwrap();
    let ack = callee.poll_transmit(now).unwrap();
    let answer = callee.send(&jsons[1], now).unwrap();
    write(
        "p2p_decrypt",
        "valid_reliable_callee_ack_and_answer",
        &p2p::encode(3, &[ack, answer]),
    );
    // Raw framing (7.0.0), callee -> caller.
    let mut raw_callee = EncryptedChannel::new(&key, Role::Callee, Framing::Raw);
    let raw: Vec<Vec<u8>> = jsons
        .iter()
        .take(2)
        .map(|m| raw_callee.send(m, now).unwrap())
        .collect();
    write(
        "p2p_decrypt",
        "valid_raw_callee_to_caller",
        &p2p::encode(2, &raw),
    );

    write(
        "p2p_decrypt",
        "replay_reliable_same_packet_thrice",
        &p2p::encode(
            1,
            &[
                reliable[0].clone(),
                reliable[0].clone(),
                reliable[0].clone(),
            ],
        ),
    );
    write(
        "p2p_decrypt",
        "replay_raw_same_packet_twice",
        &p2p::encode(2, &[raw[0].clone(), raw[0].clone()]),
    );
    let mut flipped = reliable[0].clone();
    flipped[20] ^= 0x04;
    let mut flipped_key = reliable[0].clone();
    flipped_key[3] ^= 0x80;
    write(
        "p2p_decrypt",
        "broken_tampered",
        &p2p::encode(1, &[flipped, flipped_key]),
    );
    write(
        "p2p_decrypt",
        "broken_truncated",
        &p2p::encode(
            1,
            &[
                reliable[0][..reliable[0].len() - 1].to_vec(),
                reliable[0][..20].to_vec(),
                Vec::new(),
            ],
        ),
    );
    // The caller's packet reflected back to the caller: wrong direction.
    write(
        "p2p_decrypt",
        "broken_wrong_direction",
        &p2p::encode(3, &reliable[..1]),
    );
    let mut other_key = key;
    other_key[130] ^= 1;
    let mut stranger = EncryptedChannel::new(&other_key, Role::Caller, Framing::Reliable);
    let foreign = stranger.send(&jsons[0], now).unwrap();
    write(
        "p2p_decrypt",
        "broken_wrong_key",
        &p2p::encode(1, &[foreign]),
    );
    // A raw-framed packet fed to a reliable receiver: authentic, but `{` is no item type.
    let mut raw_caller = EncryptedChannel::new(&key, Role::Caller, Framing::Raw);
    let misframed = raw_caller.send(&jsons[0], now).unwrap();
    write(
        "p2p_decrypt",
        "broken_wrong_framing",
        &p2p::encode(1, &[misframed]),
    );

    // p2p_sctp: an SCTP INIT as libwebrtc's or sctp-proto's (built here with fixed tag and TSN
    // so the seed is reproducible), and broken variants of it.
    let init = sctp_init();
    write(
        "p2p_sctp",
        "valid_init_to_callee",
        &p2p::encode(0, std::slice::from_ref(&init)),
    );
    write(
        "p2p_sctp",
        "ignored_init_to_caller",
        &p2p::encode(2, std::slice::from_ref(&init)),
    );
    let mut bad_checksum = init.clone();
    bad_checksum[8] ^= 0x01;
    let mut wrong_port = init.clone();
    wrong_port[1] = 0x89;
    let mut unknown_tag = init.clone();
    unknown_tag[7] = 0x2A;
    write(
        "p2p_sctp",
        "broken_blobs",
        &p2p::encode(
            0,
            &[
                bad_checksum,
                wrong_port,
                unknown_tag,
                init[..15].to_vec(),
                Vec::new(),
                vec![0xFF; 300],
            ],
        ),
    );
}

/// An SCTP packet (RFC 9260) from port 5000 to 5000 with verification tag 0 and one INIT
/// chunk (initiate tag 0x0A0B0C0D, a_rwnd 1 MiB, 65535 streams each way, initial TSN 1000),
/// CRC32c in place.
fn sctp_init() -> Vec<u8> {
    let mut p = vec![0x13, 0x88, 0x13, 0x88, 0, 0, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&[1, 0, 0, 20]); // INIT, flags 0, length 20
    p.extend_from_slice(&0x0A0B_0C0D_u32.to_be_bytes());
    p.extend_from_slice(&(1u32 << 20).to_be_bytes());
    p.extend_from_slice(&u16::MAX.to_be_bytes());
    p.extend_from_slice(&u16::MAX.to_be_bytes());
    p.extend_from_slice(&1000u32.to_be_bytes());
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// CRC32c (Castagnoli, reflected), as SCTP's checksum.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `fuzz/corpus/p2p_sctp`: `valid_*` blobs are all taken by SCTP and answered (INIT ACK),
/// `ignored_*` are INITs a caller ignores, `broken_*` are all refused; anything else must only
/// pass the harness checks (no panic, every blob counted once).
#[test]
fn p2p_sctp_corpus() {
    let mut named = 0;
    for (name, data) in corpus_files("p2p_sctp") {
        let got = p2p::sctp(&data);
        if name.starts_with("valid_") {
            assert_eq!(got.accepted, got.blobs, "{name}: {got:?}");
            assert!(got.replies > 0, "{name}: {got:?}");
        } else if name.starts_with("ignored_") {
            assert_eq!(got.accepted, 0, "{name}: {got:?}");
            assert!(
                got.rejected
                    .iter()
                    .all(|r| *r == LinkRejected::Carrier(CarrierRejected::InitIgnored)),
                "{name}: {got:?}"
            );
        } else if name.starts_with("broken_") {
            assert_eq!(got.accepted, 0, "{name}: {got:?}");
            assert_eq!(got.rejected.len(), got.blobs, "{name}: {got:?}");
        } else {
            continue;
        }
        named += 1;
    }
    assert!(named >= 3, "only {named} named seeds");
}

/// `fuzz/corpus/stun_response`: STUN server answers for server-reflexive gathering. `valid_*`
/// parse (the RFC 5769 sample to its documented address), `broken_*` are refused with an
/// error, anything else must merely not panic.
#[test]
fn stun_response_corpus() {
    use ringcast_core::stun::{BindingResponse, parse_binding_response};
    let files = corpus_files("stun_response");
    assert!(files.len() >= 8, "{} seeds", files.len());
    for (name, data) in files {
        let parsed = parse_binding_response(&data);
        if name.starts_with("valid_") {
            let (_, resp) = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "valid_rfc5769_ipv4.bin" {
                assert_eq!(
                    resp,
                    BindingResponse::Success {
                        mapped: "192.0.2.1:32853".parse().unwrap()
                    }
                );
            }
        } else if name.starts_with("broken_") {
            assert!(parsed.is_err(), "{name} parsed: {parsed:?}");
        }
    }
}

/// `fuzz/corpus/turn_response`: TURN server answers. `valid_*` end with an allocation (the
/// 401 / 438 retries with credentials work), `broken_*` leave the client allocating; nothing
/// panics.
#[test]
fn turn_response_corpus() {
    use ringcast_core::turn::TurnState;
    let files = corpus_files("turn_response");
    assert!(files.len() >= 5, "{} seeds", files.len());
    for (name, data) in files {
        let state = turn::run(&data);
        if name.starts_with("valid_") {
            assert_eq!(
                state,
                Some(TurnState::Allocated("127.0.0.1:50000".parse().unwrap())),
                "{name}"
            );
        } else if name.starts_with("broken_") {
            assert_eq!(state, Some(TurnState::Allocating), "{name}");
        }
    }
}
