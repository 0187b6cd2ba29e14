//! [`P2pCall`]: two ends in memory, signaling through the encrypted channel.

use std::time::Duration;

use super::util::{P2pPair, binding_messages, tone};
use crate::demux::rtp_header;
use crate::media::track::Replayed;
use crate::p2p_call::{Command, Input, P2pCallError, P2pState};
use crate::signaling::p2p::Framing;
use crate::transport::{DatagramError, RejectReason};

fn connected_with_tones() -> P2pPair {
    let mut pair = P2pPair::new();
    let now = pair.now;
    pair.caller
        .call
        .handle_input(now, Input::Command(Command::SetSource(tone(440.0))))
        .expect("caller source");
    pair.callee
        .call
        .handle_input(now, Input::Command(Command::SetSource(tone(1000.0))))
        .expect("callee source");
    pair.drive(Duration::from_secs(2));
    assert!(pair.caller.connected() && pair.callee.connected());
    pair
}

#[test]
fn both_ends_hear_each_others_tone() {
    let pair = connected_with_tones();
    assert!(
        pair.caller.heard.packets > 60,
        "{}",
        pair.caller.heard.packets
    );
    assert!(
        pair.callee.heard.packets > 60,
        "{}",
        pair.callee.heard.packets
    );
    assert_eq!(pair.callee.heard.dominant_hz(), 440);
    assert_eq!(pair.caller.heard.dominant_hz(), 1000);
    let stats = pair.caller.call.stats();
    assert_eq!(stats.played_samples, stats.packets_sent * 960);
}

#[test]
fn replayed_srtp_is_refused_and_counted() {
    let mut pair = connected_with_tones();
    let srtp: Vec<_> = pair
        .delivered_to_callee
        .iter()
        .filter(|t| rtp_header(&t.contents).is_some())
        .cloned()
        .collect();
    assert!(srtp.len() > 60);
    let heard = pair.callee.heard.packets;
    let received = pair.callee.call.stats().datagrams_received;
    // The last ten packets again, then a very old one (outside the window).
    for t in srtp[srtp.len() - 10..].iter().chain(&srtp[..1]) {
        let Err(P2pCallError::Datagram(DatagramError::Replayed(Replayed { ssrc, .. }))) =
            pair.deliver_to_callee(t)
        else {
            panic!("a replay was taken");
        };
        assert_eq!(ssrc, pair.caller.call.audio_ssrc().0);
    }
    assert_eq!(pair.callee.call.stats().dropped_replayed, 11);
    assert_eq!(pair.callee.call.stats().datagrams_received, received);
    assert_eq!(
        pair.callee.heard.packets, heard,
        "no replay reached the application"
    );
    assert_eq!(pair.callee.call.state(), &P2pState::Connected);
    // And the stream goes on.
    pair.drive(Duration::from_millis(200));
    assert!(pair.callee.heard.packets >= heard + 9);
}

#[test]
fn forged_stun_is_refused_and_replayed_stun_keeps_no_dead_call_alive() {
    let mut pair = connected_with_tones();
    // The caller's authenticated binding requests and responses (types 0x0001 and 0x0101).
    let stun = binding_messages(&pair.delivered_to_callee);
    assert!(
        stun.iter().any(|t| t.contents[..2] == [0x00, 0x01]),
        "the caller sent binding requests"
    );
    // A forged request: a byte of its MESSAGE-INTEGRITY value changed (the 20-byte HMAC just
    // before the 8-byte FINGERPRINT attribute).
    let rejected_before = pair.callee.call.stats().dropped_rejected;
    let mut forged = stun
        .iter()
        .find(|t| t.contents[..2] == [0x00, 0x01])
        .cloned()
        .expect("a request");
    let at = forged.contents.len() - 12;
    forged.contents[at] ^= 0x40;
    let result = pair.deliver_to_callee(&forged);
    assert!(
        matches!(
            result,
            Err(P2pCallError::Datagram(DatagramError::Rejected(
                RejectReason::StunUnauthenticated
            )))
        ),
        "{result:?}"
    );
    assert_eq!(
        pair.callee.call.stats().dropped_rejected,
        rejected_before + 1
    );
    // Genuine STUN again: accepted (a request is answered again) and counted as repeated.
    for t in &stun {
        pair.deliver_to_callee(t).expect("genuine stun again");
    }
    assert_eq!(pair.callee.call.stats().stun_replayed, stun.len() as u64);
    // The caller goes away; someone on the path replays its STUN every half second. The
    // callee must still notice (disconnect timeout).
    let timeout = crate::p2p_call::DEFAULT_P2P_DISCONNECT_TIMEOUT;
    let mut waited = Duration::ZERO;
    while pair.callee.call.state() == &P2pState::Connected {
        assert!(
            waited < timeout + Duration::from_secs(2),
            "replayed stun kept a dead call alive"
        );
        pair.now += Duration::from_millis(500);
        waited += Duration::from_millis(500);
        let now = pair.now;
        pair.callee
            .call
            .handle_input(now, Input::Timeout)
            .expect("timeout");
        pair.callee.drain();
        pair.callee.datagrams.clear();
        for t in &stun {
            let _ = pair.deliver_to_callee(t);
        }
    }
    assert!(
        waited >= timeout,
        "ended after {waited:?}, before the timeout"
    );
}

#[test]
fn pause_stops_packets_and_mute_keeps_the_stream() {
    let mut pair = connected_with_tones();
    let now = pair.now;
    pair.caller
        .call
        .handle_input(now, Input::Command(Command::Pause))
        .expect("pause");
    assert!(pair.caller.call.is_paused());
    let sent = pair.caller.call.stats().packets_sent;
    pair.drive(Duration::from_millis(400));
    assert_eq!(pair.caller.call.stats().packets_sent, sent);
    let now = pair.now;
    for cmd in [Command::Resume, Command::Mute] {
        pair.caller
            .call
            .handle_input(now, Input::Command(cmd))
            .expect("command");
    }
    assert!(pair.caller.call.is_muted() && !pair.caller.call.is_paused());
    let heard = pair.callee.heard.packets;
    pair.drive(Duration::from_millis(400));
    let more = pair.callee.heard.packets - heard;
    assert!((18..=21).contains(&more), "muted stream heard {more}");
}

/// RTT comes from RTCP: a receiver report echoes the last sender report's timestamp with
/// the delay since it arrived. str0m sends audio reports every few seconds and the first
/// receiver report has no sender report to echo, so the first RTT is known ~11 s in.
#[test]
fn rtt_and_loss_are_measured_from_rtcp_over_a_delayed_link() {
    let mut pair = P2pPair::new();
    pair.latency = Duration::from_millis(25);
    let now = pair.now;
    for (end, hz) in [(&mut pair.caller, 440.0), (&mut pair.callee, 1000.0)] {
        end.call
            .handle_input(now, Input::Command(Command::SetSource(tone(hz))))
            .expect("source");
    }
    pair.drive(Duration::from_secs(15));
    assert!(pair.caller.connected() && pair.callee.connected());
    for (name, end) in [("caller", &pair.caller), ("callee", &pair.callee)] {
        let link = end.call.link_stats();
        let rtt = link
            .rtt
            .unwrap_or_else(|| panic!("{name}: no rtt: {link:?}"));
        assert!(
            rtt >= Duration::from_millis(49) && rtt <= Duration::from_millis(52),
            "{name}: rtt {rtt:?} over a 2 x 25 ms link"
        );
        assert_eq!(link.egress_loss, Some(0.0), "{name}: {link:?}");
        assert_eq!(link.ingress_loss, Some(0.0), "{name}: {link:?}");
    }
}

/// Signaling V3 (12.0.0/13.0.0): the same call with every signaling message gzip'd, encrypted
/// and carried as an SCTP user message whose SCTP packets are the messenger's blobs.
#[test]
fn signaling_v3_carries_the_call_over_sctp() {
    let mut pair = P2pPair::with_framing(Framing::Sctp);
    let now = pair.now;
    for (end, hz) in [(&mut pair.caller, 440.0), (&mut pair.callee, 1000.0)] {
        end.call
            .handle_input(now, Input::Command(Command::SetSource(tone(hz))))
            .expect("source");
    }
    pair.drive(Duration::from_secs(2));
    assert!(pair.caller.connected() && pair.callee.connected());
    assert_eq!(pair.callee.heard.dominant_hz(), 440);
    assert_eq!(pair.caller.heard.dominant_hz(), 1000);
    for end in [&pair.caller, &pair.callee] {
        let sctp = end.call.sctp_stats().expect("V3 has an SCTP carrier");
        assert!(sctp.established && !sctp.lost, "{sctp:?}");
        // InitialSetup, Candidates and NegotiateChannels at least, each one SCTP message.
        assert!(
            sctp.messages_sent >= 3 && sctp.messages_received >= 3,
            "{sctp:?}"
        );
        assert_eq!(
            sctp.rejected_dropped + sctp.rejected_not_sctp,
            0,
            "{sctp:?}"
        );
        let channel = end.call.channel_stats();
        assert_eq!(channel.packets_sent, sctp.messages_sent);
        assert_eq!(channel.packets_received, sctp.messages_received);
        assert_eq!(end.call.stats().signaling_invalid, 0);
    }
}

/// A lost blob (the caller's INIT) is made up for by SCTP's retransmission; garbage blobs are
/// refused, counted and change nothing.
#[test]
fn signaling_v3_survives_a_lost_blob_and_garbage() {
    let mut pair = P2pPair::with_framing(Framing::Sctp);
    pair.lose_signaling = 1;
    let now = pair.now;
    for garbage in [
        &[][..],
        &[0u8; 3][..],
        &[0x13, 0x88, 0x13, 0x88, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 4][..],
    ] {
        let e = pair
            .callee
            .call
            .handle_input(now, Input::Signaling(garbage))
            .expect_err("garbage is refused");
        assert!(matches!(e, P2pCallError::SignalingCarrier(_)), "{e:?}");
    }
    pair.drive(Duration::from_secs(4));
    assert!(pair.caller.connected() && pair.callee.connected());
    let sctp = pair.callee.call.sctp_stats().expect("carrier");
    assert_eq!(
        sctp.rejected_not_sctp + sctp.rejected_dropped,
        3,
        "{sctp:?}"
    );
    assert_eq!(pair.callee.call.stats().signaling_rejected, 3);
}
