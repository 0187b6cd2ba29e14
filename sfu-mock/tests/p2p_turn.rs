//! TURN servers in a 1:1 call: two `P2pCall`s over real loopback UDP with a real TURN server
//! (coturn's `turnserver`, long-term credentials) started and stopped by each test.
//!
//! A relay-only caller (ntgcalls' `p2pAllowed = false`) signals only its relayed candidate and
//! sends everything through the server in Send indications; the callee's checks and media come
//! back to it in Data indications. A wrong password fails the allocation (counted) and the call
//! still connects on host candidates. Relay only without a usable TURN server is a configuration
//! error.
//!
//! Needs `turnserver` on PATH (package `coturn`, installed by `scripts/setup.sh`): without it the
//! tests fail, they do not skip.

use std::time::{Duration, Instant};

use ringcast_core::crypto::generate_certificate;
use ringcast_core::p2p_call::{MAX_TURN_SERVERS, P2pCall, P2pCallError, P2pConfig};
use ringcast_core::signaling::p2p::Role;
use ringcast_core::turn::TurnServer;
use sfu_mock::coturn::Coturn;

mod common;

use common::p2p::{assert_tones, dh_exchange, print_connected, run_faithful, tone_pair};

const USER: &str = "ringcast-user";
const PASSWORD: &str = "ringcast-pass";

/// coturn with the test user, or a failure that says how to install it.
fn coturn() -> Coturn {
    Coturn::start(USER, PASSWORD)
        .unwrap_or_else(|e| panic!("{e} (run scripts/setup.sh to install coturn)"))
}

/// [`TurnServer`] entry for `coturn` with `password`.
fn server(coturn: &Coturn, password: &str) -> TurnServer {
    TurnServer {
        addr: coturn.addr(),
        username: USER.to_owned(),
        password: password.to_owned(),
    }
}

#[test]
fn a_relay_only_call_goes_through_coturn_both_ways() {
    let coturn = coturn();
    let (mut caller, mut callee) = tone_pair(
        |c| {
            c.turn_servers = vec![server(&coturn, PASSWORD)];
            c.relay_only = true;
        },
        |_| {},
    );
    let caller_host = caller.addr;
    let start = Instant::now();
    run_faithful(
        &mut caller,
        &mut callee,
        Duration::from_secs(10),
        Duration::from_millis(100),
        |a, b| a.audio_packets >= 50 && b.audio_packets >= 50,
    );
    print_connected("relay only", &caller, &callee, start);
    assert_tones(&caller, &callee);
    let (cs, es) = (caller.call.stats().clone(), callee.call.stats().clone());
    println!("caller {cs:?}\ncallee {es:?}");
    assert_eq!(cs.turn_allocations, 1);
    assert_eq!(cs.turn_failed, 0);
    // Everything the caller heard came through coturn in Data indications, and everything
    // ICE sent went out in Send indications.
    assert!(
        cs.turn_relayed_in >= caller.audio_packets,
        "{} relayed in, {} audio packets",
        cs.turn_relayed_in,
        caller.audio_packets
    );
    assert!(
        cs.turn_relayed_out >= 50,
        "{} relayed out",
        cs.turn_relayed_out
    );
    // The callee only ever talked to the relay: the caller's host address never reached it.
    assert!(
        !callee.call.remote_addrs().contains(&caller_host),
        "callee learned the caller's host address {caller_host}: {:?}",
        callee.call.remote_addrs()
    );
    assert!(
        callee
            .call
            .remote_addrs()
            .iter()
            .all(|a| a.ip() == coturn.addr().ip() && a.port() != coturn.addr().port()),
        "callee's remote candidates are not the relay: {:?}",
        callee.call.remote_addrs()
    );
}

#[test]
fn a_wrong_turn_password_fails_the_allocation_and_the_call_connects_on_host_candidates() {
    let coturn = coturn();
    let (mut caller, mut callee) =
        tone_pair(|c| c.turn_servers = vec![server(&coturn, "wrong")], |_| {});
    run_faithful(
        &mut caller,
        &mut callee,
        Duration::from_secs(10),
        Duration::from_millis(100),
        |a, b| a.audio_packets >= 50 && b.audio_packets >= 50 && a.call.stats().turn_failed > 0,
    );
    assert_tones(&caller, &callee);
    let cs = caller.call.stats().clone();
    println!("caller {cs:?}");
    assert_eq!(cs.turn_failed, 1);
    assert_eq!(cs.turn_allocations, 0);
    assert_eq!(cs.turn_relayed_out + cs.turn_relayed_in, 0);
    // Unauthenticated Allocate, then the authenticated retry that got 401 again.
    assert!(
        cs.turn_requests_sent >= 2,
        "{} TURN requests",
        cs.turn_requests_sent
    );
}

#[test]
fn relay_only_needs_a_turn_server_of_our_family_and_turn_servers_are_bounded() {
    let (key, _) = dh_exchange();
    let config = |configure: &dyn Fn(&mut P2pConfig)| {
        let mut config = P2pConfig::new(
            Role::Caller,
            key.clone(),
            1,
            generate_certificate().expect("certificate"),
            "127.0.0.1:5000".parse().expect("addr"),
        );
        configure(&mut config);
        P2pCall::new(Instant::now(), config)
    };
    let v6 = TurnServer {
        addr: "[::1]:3478".parse().expect("addr"),
        username: USER.to_owned(),
        password: PASSWORD.to_owned(),
    };
    let err = config(&|c| c.relay_only = true).expect_err("no TURN server");
    assert!(matches!(err, P2pCallError::Config { .. }), "{err}");
    let err = config(&|c| {
        c.relay_only = true;
        c.turn_servers = vec![v6.clone()];
    })
    .expect_err("only an IPv6 TURN server for an IPv4 socket");
    assert!(matches!(err, P2pCallError::Config { .. }), "{err}");
    let call = config(&|c| c.turn_servers = vec![v6.clone()]).expect("not relay only");
    assert_eq!(call.stats().turn_servers_skipped, 1);
    let err =
        config(&|c| c.turn_servers = vec![v6.clone(); MAX_TURN_SERVERS + 1]).expect_err("too many");
    assert!(matches!(err, P2pCallError::Config { .. }), "{err}");
}
