//! Two `P2pCall`s (caller and callee) over real loopback UDP: the Diffie-Hellman exchange of
//! `signaling::p2p::dh`, the encrypted signaling carried by a pretend messenger, full ICE, DTLS
//! and Opus both ways, each side checking the other's tone.

use ringcast_core::crypto::generate_certificate;
use std::time::{Duration, Instant};

use ringcast_core::p2p_call::{
    Command, Input, P2pCall, P2pCallError, P2pConfig, P2pEndReason, P2pState,
};
use ringcast_core::signaling::p2p::Role;
use ringcast_core::signaling::p2p::messages::DtlsSetup;

mod common;

use common::p2p::{
    CALLEE_HZ, CALLER_HZ, End, assert_tones, dh_exchange, print_connected, run, run_faithful,
    set_tone,
};

fn pair() -> (End, End) {
    let (caller_key, callee_key) = dh_exchange();
    println!(
        "key fingerprint {} emoji {:?}",
        caller_key.fingerprint(),
        caller_key.emoji()
    );
    assert_eq!(caller_key.fingerprint(), callee_key.fingerprint());
    assert_eq!(caller_key.emoji(), callee_key.emoji());
    assert_eq!(caller_key.as_bytes(), callee_key.as_bytes());
    let now = Instant::now();
    (
        End::new(Role::Caller, caller_key, 11, now),
        End::new(Role::Callee, callee_key, 22, now),
    )
}

#[test]
fn caller_and_callee_connect_and_hear_each_others_tone() {
    let (mut caller, mut callee) = pair();
    set_tone(&mut caller, CALLER_HZ);
    set_tone(&mut callee, CALLEE_HZ);
    // tgcalls roles: the caller offers actpass and becomes the DTLS client, the callee passive.
    let caller_setup = caller.call.local_setup();
    let callee_setup = callee.call.local_setup();
    assert_eq!(caller_setup.fingerprints[0].setup, DtlsSetup::Actpass);
    assert_eq!(callee_setup.fingerprints[0].setup, DtlsSetup::Passive);
    assert!(callee_setup.local_is_dtls_client(Role::Caller));
    assert!(!caller_setup.local_is_dtls_client(Role::Callee));
    let start = Instant::now();
    run_faithful(
        &mut caller,
        &mut callee,
        Duration::from_secs(5),
        Duration::ZERO,
        |a, b| a.connected_at.is_some() && b.connected_at.is_some(),
    );
    let connect_ms = |e: &End| e.connected_at.map(|t| (t - start).as_millis());
    println!(
        "connected: caller after {:?} ms, callee after {:?} ms",
        connect_ms(&caller),
        connect_ms(&callee)
    );
    assert_eq!(caller.call.state(), &P2pState::Connected);
    assert_eq!(callee.call.state(), &P2pState::Connected);
    // One second of audio each way (50 frames), then measure the tones.
    run_faithful(
        &mut caller,
        &mut callee,
        Duration::from_secs(5),
        Duration::ZERO,
        |a, b| a.audio_packets >= 50 && b.audio_packets >= 50,
    );
    assert_tones(&caller, &callee);
    // NegotiateChannels offer (caller) and answer (callee) carried each side's SSRC.
    assert_eq!(caller.call.remote_ssrc(), Some(callee.call.audio_ssrc()));
    assert_eq!(callee.call.remote_ssrc(), Some(caller.call.audio_ssrc()));
    for end in [&caller, &callee] {
        let s = end.call.stats();
        println!("{:?}: {s:?}", end.call.role());
        assert!(s.packets_sent >= 50);
        assert!(s.packets_received >= 50);
        assert_eq!(s.signaling_rejected, 0);
        assert_eq!(s.signaling_invalid, 0);
        assert_eq!(s.signaling_ignored, 0);
    }
    // Muted, the caller keeps its stream going with Opus silence.
    let now = Instant::now();
    caller
        .call
        .handle_input(now, Input::Command(Command::Mute))
        .expect("mute");
    caller.drain(now);
    let heard = callee.audio_packets;
    run_faithful(
        &mut caller,
        &mut callee,
        Duration::from_secs(5),
        Duration::ZERO,
        |_, b| b.audio_packets >= heard + 25,
    );
    println!("callee while caller muted: rms {}", callee.meter.rms());
    assert!(callee.meter.rms() < 0.001, "rms {}", callee.meter.rms());
    // Hanging up sends close_notify; the other end sees the call end.
    let now = Instant::now();
    caller
        .call
        .handle_input(now, Input::Command(Command::Hangup))
        .expect("hangup");
    caller.drain(now);
    let deadline = Instant::now() + Duration::from_secs(2);
    while callee.ended.is_none() && Instant::now() < deadline {
        let now = Instant::now();
        callee.read_socket(now);
        callee.tick(now);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        matches!(callee.ended, Some(P2pState::Ended(_))),
        "callee did not see the hangup: {:?}",
        callee.call.state()
    );
}

#[test]
fn tampered_and_replayed_signaling_is_rejected_and_counted() {
    let (mut caller, mut callee) = pair();
    set_tone(&mut caller, CALLER_HZ);
    set_tone(&mut callee, CALLEE_HZ);
    let mut first_from_caller = true;
    // The first packet from the caller arrives as: a tampered copy, garbage, the original,
    // and the original again (a replay).
    let mut messenger = |from: Role, bytes: Vec<u8>| {
        if from == Role::Caller && first_from_caller {
            first_from_caller = false;
            let mut tampered = bytes.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 0x01;
            vec![tampered, vec![0u8; 8], bytes.clone(), bytes]
        } else {
            vec![bytes]
        }
    };
    run(
        &mut caller,
        &mut callee,
        Duration::from_secs(5),
        Duration::ZERO,
        &mut messenger,
        |a, b| a.audio_packets >= 25 && b.audio_packets >= 25,
    );
    let s = callee.call.stats();
    let ch = callee.call.channel_stats();
    println!("callee: {s:?}\nchannel: {ch:?}");
    assert_eq!(s.signaling_rejected, 3, "tampered, garbage, replay");
    assert_eq!(ch.rejected_tampered, 1);
    assert_eq!(ch.rejected_size, 1);
    assert_eq!(ch.rejected_replay, 1);
    assert_eq!(caller.call.stats().signaling_rejected, 0);
    assert_eq!(callee.call.state(), &P2pState::Connected);
    assert_tones(&caller, &callee);

    // A rejected packet is an error the application can log, nothing more.
    let now = Instant::now();
    let err = callee
        .call
        .handle_input(now, Input::Signaling(&[0u8; 64]))
        .expect_err("garbage is rejected");
    assert!(matches!(err, P2pCallError::SignalingRejected(_)), "{err}");
    assert_eq!(callee.call.state(), &P2pState::Connected);
}

#[test]
fn caller_without_an_answer_times_out() {
    let start = Instant::now();
    let (mut caller, _callee) = pair();
    caller.drain(start);
    assert_eq!(
        caller.outbox.len(),
        3,
        "InitialSetup, Candidates, NegotiateChannels"
    );
    assert!(caller.timeout <= start + Duration::from_secs(10));
    // Nothing is ever delivered: no datagrams go out before the answer, and the connect timer
    // ends the call (sans-IO: the clock is ours).
    let now = caller.run_clock_until_ended(start, Duration::from_secs(11));
    assert_eq!(
        caller.ended,
        Some(P2pState::Ended(P2pEndReason::ConnectTimeout))
    );
    assert!(now >= start + Duration::from_secs(10), "ended early");
    assert_eq!(caller.call.stats().datagrams_sent, 0);
    let err = caller
        .call
        .handle_input(now, Input::Signaling(&[0u8; 64]))
        .expect_err("ended");
    assert!(matches!(err, P2pCallError::Ended), "{err}");
}

#[test]
fn connects_with_messenger_latency_and_notices_a_vanished_peer() {
    let (mut caller, mut callee) = pair();
    set_tone(&mut caller, CALLER_HZ);
    set_tone(&mut callee, CALLEE_HZ);
    let start = Instant::now();
    // The messenger is far slower than UDP: the callee's checks reach the caller before the
    // callee's InitialSetup does, and are dropped until it arrives.
    run_faithful(
        &mut caller,
        &mut callee,
        Duration::from_secs(8),
        Duration::from_millis(300),
        |a, b| a.audio_packets >= 25 && b.audio_packets >= 25,
    );
    print_connected("with 300 ms signaling latency", &caller, &callee, start);
    assert_tones(&caller, &callee);
    // The callee's first checks arrive before its InitialSetup (at 600 ms): kept and answered
    // once it is applied, so connecting does not wait for a STUN retransmission.
    assert!(
        caller.call.stats().early_stun_buffered > 0,
        "early checks kept"
    );
    let caller_connected = caller.connected_at.expect("connected") - start;
    assert!(
        caller_connected < Duration::from_millis(950),
        "connected after {caller_connected:?}, expected about 600 ms"
    );

    // The callee disappears without a word; the caller gives up after the disconnect timeout
    // (sans-IO: we drive its clock forward).
    drop(callee);
    let gone = Instant::now();
    let now = caller.run_clock_until_ended(gone, Duration::from_secs(12));
    assert_eq!(
        caller.ended,
        Some(P2pState::Ended(P2pEndReason::IceDisconnected))
    );
    assert!(now >= gone + Duration::from_secs(9), "ended too early");
}

#[test]
fn a_dtls_peer_without_the_signaled_certificate_is_refused() {
    // Mallory sits on the callee's UDP path with the callee's ICE credentials (same seed) but
    // her own certificate. The caller's DTLS must fail on the fingerprint the real callee sent
    // through the encrypted signaling, before any media flows.
    let (caller_key, callee_key) = dh_exchange();
    let now = Instant::now();
    let mut caller = End::new(Role::Caller, caller_key, 11, now);
    let mut callee = End::new(Role::Callee, callee_key.clone(), 22, now);
    let shared = callee.socket.try_clone().expect("clone socket");
    let mut mallory = End::with_socket(Role::Callee, callee_key, 22, now, shared, |_| {});
    assert_eq!(
        mallory.call.local_setup().ufrag,
        callee.call.local_setup().ufrag
    );
    assert_ne!(
        mallory.call.local_setup().fingerprints,
        callee.call.local_setup().fingerprints
    );
    set_tone(&mut caller, CALLER_HZ);
    set_tone(&mut mallory, CALLEE_HZ);
    let start = Instant::now();
    for end in [&mut caller, &mut callee, &mut mallory] {
        end.drain(start);
    }
    while caller.ended.is_none() && start.elapsed() < Duration::from_secs(5) {
        let now = Instant::now();
        // The messenger: caller -> callee and mallory; callee -> caller; mallory's is lost.
        for bytes in std::mem::take(&mut caller.outbox) {
            for end in [&mut callee, &mut mallory] {
                let _ = end.call.handle_input(now, Input::Signaling(&bytes));
                end.drain(now);
            }
        }
        for bytes in std::mem::take(&mut callee.outbox) {
            let _ = caller.call.handle_input(now, Input::Signaling(&bytes));
            caller.drain(now);
        }
        mallory.outbox.clear();
        // UDP to the callee's address reaches mallory.
        caller.read_socket(now);
        mallory.read_socket(now);
        caller.tick(now);
        mallory.tick(now);
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "caller: {:?} after {:?}; mallory heard {} audio packets",
        caller.ended,
        start.elapsed(),
        mallory.audio_packets
    );
    assert_eq!(
        caller.ended,
        Some(P2pState::Ended(P2pEndReason::FingerprintMismatch))
    );
    assert!(caller.connected_at.is_none());
    assert_eq!(caller.call.stats().packets_sent, 0, "no media before dtls");
    assert_eq!(mallory.audio_packets, 0);
}

#[test]
fn unspecified_local_address_is_a_config_error() {
    let (key, _) = dh_exchange();
    let cert = generate_certificate().expect("certificate");
    for addr in ["0.0.0.0:5000", "127.0.0.1:0"] {
        let config = P2pConfig::new(
            Role::Caller,
            key.clone(),
            1,
            cert.clone(),
            addr.parse().expect("addr"),
        );
        let err = P2pCall::new(Instant::now(), config).expect_err("unusable address");
        assert!(matches!(err, P2pCallError::Config { .. }), "{addr}: {err}");
    }
}
