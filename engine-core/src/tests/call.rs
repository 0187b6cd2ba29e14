//! [`Call`] against an in-memory SFU peer.

use std::time::Duration;

use super::util::{GroupPair, tone};
use crate::call::{CallError, CallState, Command, EndReason, Event, Input, MediaState};
use crate::demux::rtp_header;
use crate::media::track::Replayed;
use crate::transport::DatagramError;

#[test]
fn connects_and_the_sfu_hears_the_tone() {
    let mut pair = GroupPair::connecting(7);
    pair.call
        .handle_input(pair.now, Input::Command(Command::SetSource(tone(440.0))))
        .expect("set source");
    pair.drive(Duration::from_secs(2));
    assert_eq!(pair.call.state(), &CallState::Connected);
    let sent = pair.call.stats().packets_sent;
    // ~2 s of 20 ms frames, less the handshake.
    assert!((90..=101).contains(&sent), "sent {sent}");
    assert!(
        pair.sfu.heard.packets + 2 >= sent,
        "heard {}",
        pair.sfu.heard.packets
    );
    assert_eq!(pair.sfu.heard.dominant_hz(), 440);
    assert_eq!(pair.call.stats().played_samples, sent * 960);
    assert_eq!(pair.call.stats().lateness.count(), sent);
}

#[test]
fn pause_stops_packets_and_time_and_mute_keeps_the_stream() {
    let mut pair = GroupPair::connecting(8);
    pair.call
        .handle_input(pair.now, Input::Command(Command::SetSource(tone(440.0))))
        .expect("set source");
    pair.drive(Duration::from_secs(1));
    pair.call
        .handle_input(pair.now, Input::Command(Command::Pause))
        .expect("pause");
    let paused_at = pair.call.stats().packets_sent;
    let played = pair.call.played();
    pair.drive(Duration::from_millis(500));
    assert_eq!(
        pair.call.stats().packets_sent,
        paused_at,
        "nothing sent while paused"
    );
    assert_eq!(pair.call.played(), played, "time stops while paused");
    pair.call
        .handle_input(pair.now, Input::Command(Command::Resume))
        .expect("resume");
    pair.call
        .handle_input(pair.now, Input::Command(Command::Mute))
        .expect("mute");
    pair.drive(Duration::from_millis(500));
    let muted_sent = pair.call.stats().packets_sent - paused_at;
    assert!((24..=26).contains(&muted_sent), "muted sent {muted_sent}");
    let states: Vec<MediaState> = pair
        .events
        .iter()
        .filter_map(|e| match e {
            Event::MediaStateChanged(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            MediaState {
                paused: true,
                muted: false,
                ..MediaState::default()
            },
            MediaState {
                paused: false,
                muted: false,
                ..MediaState::default()
            },
            MediaState {
                paused: false,
                muted: true,
                ..MediaState::default()
            },
        ]
    );
}

#[test]
fn replayed_srtp_is_refused_and_counted() {
    let mut pair = GroupPair::connecting(9);
    pair.drive(Duration::from_millis(500));
    assert_eq!(pair.call.state(), &CallState::Connected);
    // Another speaker, forwarded by the SFU: 20 packets of real Opus.
    let mut encoder =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Audio).expect("enc");
    let packet = encoder.encode_vec(&[0i16; 960], 400).expect("encode");
    for _ in 0..20 {
        let now = pair.now;
        pair.sfu.send_audio(now, &packet);
        pair.drive(Duration::from_millis(20));
    }
    assert_eq!(
        pair.heard.packets, 20,
        "the call heard the forwarded speaker"
    );
    let srtp: Vec<_> = pair
        .delivered_to_call
        .iter()
        .filter(|t| rtp_header(&t.contents).is_some())
        .cloned()
        .collect();
    assert_eq!(srtp.len(), 20);
    let received = pair.call.stats().datagrams_received;
    for t in &srtp[15..] {
        let Err(CallError::Datagram(DatagramError::Replayed(Replayed { ssrc, .. }))) =
            pair.deliver_to_call(t)
        else {
            panic!("a replay was taken");
        };
        assert_eq!(ssrc, super::util::FORWARDED_SSRC);
    }
    assert_eq!(pair.call.stats().dropped_replayed, 5);
    assert_eq!(pair.call.stats().datagrams_received, received);
    assert_eq!(pair.heard.packets, 20, "no replay reached the application");
    assert_eq!(pair.call.state(), &CallState::Connected);
}

#[test]
fn a_failing_source_ends_the_track_with_a_typed_error_and_the_call_stays() {
    struct Broken;
    impl crate::FrameSource for Broken {
        fn next_frame(&mut self) -> Result<Option<crate::OpusFrame>, crate::SourceError> {
            Err(crate::SourceError::Opus {
                reason: "test".to_owned(),
            })
        }
    }
    let mut pair = GroupPair::connecting(10);
    pair.drive(Duration::from_millis(300));
    pair.call
        .handle_input(
            pair.now,
            Input::Command(Command::SetSource(Box::new(Broken))),
        )
        .expect("set source");
    pair.drive(Duration::from_millis(50));
    assert_eq!(
        pair.call.state(),
        &CallState::Connected,
        "a failed source ends the track, not the call"
    );
    assert!(pair.events.iter().any(|e| matches!(
        e,
        Event::StreamEnded {
            track: crate::TrackKind::Audio,
            error: Some(crate::SourceError::Opus { .. })
        }
    )));
}

/// str0m reports a certificate that does not match the signaled fingerprint only as text;
/// `TransportEnd::from_rtc_error` reads it. This pins str0m's actual wording.
#[test]
fn a_wrong_fingerprint_ends_the_call_typed() {
    let mut pair = GroupPair::with_answer(11, |answer| {
        let fp = &mut answer.transport.fingerprints[0].fingerprint;
        // Flip the last hex digit: a well-formed fingerprint of another certificate.
        let last = if fp.ends_with('0') { '1' } else { '0' };
        fp.pop();
        fp.push(last);
    });
    pair.drive(Duration::from_secs(1));
    assert_eq!(
        pair.call.state(),
        &CallState::Ended(EndReason::FingerprintMismatch)
    );
    assert_eq!(
        pair.call.stats().packets_sent,
        0,
        "no media before the check"
    );
}

#[test]
fn unauthenticated_stun_is_rejected_with_a_typed_reason() {
    let mut pair = GroupPair::connecting(12);
    pair.drive(Duration::from_millis(300));
    // A binding request with our ufrag but a wrong password: a forged consent check.
    let username = format!("{}:sfuUfrag", pair.call.local_ufrag());
    let request = str0m::ice::StunMessage::binding_request(
        &username,
        str0m::ice::TransId::new(),
        true,
        1,
        100,
        false,
    );
    let crypto = str0m::crypto::from_feature_flags();
    let hmac = |key: &[u8], parts: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(key, parts);
    let mut buf = [0u8; 512];
    let len = request
        .to_bytes(Some(b"not the call's password".as_slice()), &mut buf, hmac)
        .expect("stun");
    let forged = buf[..len].to_vec();
    let t = crate::call::Transmit {
        source: super::util::addr(super::util::SFU_ADDR),
        destination: super::util::addr(super::util::CALL_ADDR),
        contents: forged,
    };
    let Err(CallError::Datagram(DatagramError::Rejected(reason))) = pair.deliver_to_call(&t) else {
        panic!("forged stun was taken");
    };
    assert_eq!(reason, crate::transport::RejectReason::StunUnauthenticated);
    assert_eq!(pair.call.stats().dropped_rejected, 1);
}
