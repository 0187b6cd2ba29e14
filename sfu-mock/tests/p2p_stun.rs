//! STUN servers in a 1:1 call: two `P2pCall`s over real loopback UDP (as in `p2p_call.rs`) with
//! tiny STUN servers on loopback sockets in the test. A server that reports a NAT mapping yields
//! a server-reflexive candidate that reaches the peer through the encrypted signaling; one that
//! reports the host address (no NAT) yields nothing new; one that never answers is retried, then
//! counted as failed. Every call still connects on its host candidates and carries both tones.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ringcast_core::crypto::generate_certificate;
use ringcast_core::p2p_call::{MAX_STUN_SERVERS, P2pCall, P2pCallError, P2pConfig};
use ringcast_core::signaling::p2p::Role;
use ringcast_core::stun::STUN_MAX_REQUESTS;

mod common;

use common::p2p::{End, assert_tones, dh_exchange, print_connected, run_with, tone_pair};

/// Where the pretend NAT maps our sockets: another loopback address nothing listens on.
const NAT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// What a test STUN server answers.
#[derive(Clone, Copy)]
enum Mapping {
    /// XOR-MAPPED-ADDRESS = the request's source (no NAT in between).
    Mirror,
    /// The source port on [`NAT_IP`]: a NAT's public side.
    Nat,
    /// Never answers.
    Silent,
}

/// A STUN server (RFC 5389 Binding only), encoded by hand here, independently of
/// `ringcast_core::stun`.
struct StunServer {
    socket: UdpSocket,
    addr: SocketAddr,
    mapping: Mapping,
    requests: u64,
}

impl StunServer {
    fn new(mapping: Mapping) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind stun");
        socket.set_nonblocking(true).expect("nonblocking");
        let addr = socket.local_addr().expect("addr");
        Self {
            socket,
            addr,
            mapping,
            requests: 0,
        }
    }

    fn poll(&mut self) {
        let mut buf = [0u8; 1500];
        loop {
            let (n, source) = match self.socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => panic!("stun recv: {e}"),
            };
            let req = &buf[..n];
            // Binding Request with the magic cookie.
            assert!(n >= 20, "short datagram to the STUN server");
            assert_eq!(&req[0..2], &[0x00, 0x01], "only Binding Requests expected");
            assert_eq!(&req[4..8], &[0x21, 0x12, 0xA4, 0x42]);
            self.requests += 1;
            let mapped = match self.mapping {
                Mapping::Mirror => source,
                Mapping::Nat => SocketAddr::new(NAT_IP, source.port()),
                Mapping::Silent => continue,
            };
            let IpAddr::V4(ip) = mapped.ip() else {
                panic!("ipv4 only")
            };
            let mut resp = vec![0x01, 0x01, 0x00, 0x0C, 0x21, 0x12, 0xA4, 0x42];
            resp.extend_from_slice(&req[8..20]);
            resp.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
            resp.extend_from_slice(&(mapped.port() ^ 0x2112).to_be_bytes());
            resp.extend_from_slice(&(u32::from(ip) ^ 0x2112_A442).to_be_bytes());
            let _ = self.socket.send_to(&resp, source);
        }
    }
}

/// Runs both ends and the STUN servers until `done`; the messenger delays signaling by `delay`.
fn run(
    caller: &mut End,
    callee: &mut End,
    servers: &mut [&mut StunServer],
    delay: Duration,
    limit: Duration,
    done: impl FnMut(&End, &End) -> bool,
) {
    run_with(
        caller,
        callee,
        limit,
        delay,
        &mut |_, bytes| vec![bytes],
        &mut || {
            for server in servers.iter_mut() {
                server.poll();
            }
        },
        done,
    );
}

#[test]
fn stun_server_reflexive_candidates_are_gathered_signaled_and_the_call_connects() {
    let mut mirror = StunServer::new(Mapping::Mirror);
    let mut nat = StunServer::new(Mapping::Nat);
    let (mut caller, mut callee) = tone_pair(
        |c| c.stun_servers = vec![mirror.addr, nat.addr],
        |c| c.stun_servers = vec![nat.addr],
    );
    let start = Instant::now();
    // 300 ms messenger latency: the caller's srflx candidate is trickled after its
    // InitialSetup (sent at creation); the callee's is gathered before the caller's setup
    // reaches it, so it goes out with the callee's own InitialSetup.
    run(
        &mut caller,
        &mut callee,
        &mut [&mut mirror, &mut nat],
        Duration::from_millis(300),
        Duration::from_secs(8),
        |a, b| a.audio_packets >= 50 && b.audio_packets >= 50,
    );
    print_connected("with stun servers", &caller, &callee, start);
    assert_tones(&caller, &callee);
    let (cs, es) = (caller.call.stats().clone(), callee.call.stats().clone());
    println!("caller: {cs:?}\ncallee: {es:?}");
    println!(
        "stun requests: mirror {}, nat {}",
        mirror.requests, nat.requests
    );
    // The caller asked both servers: the NAT one gave a new candidate, the mirror only the
    // host address again (redundant, not signaled).
    assert!(cs.stun_requests_sent >= 2);
    assert_eq!(cs.stun_srflx_candidates, 1);
    assert_eq!(cs.stun_redundant, 1);
    assert_eq!(cs.stun_failed, 0);
    assert_eq!(es.stun_srflx_candidates, 1);
    assert_eq!(es.stun_redundant, 0);
    assert_eq!(es.stun_failed, 0);
    assert!(mirror.requests >= 1 && nat.requests >= 2);
    assert_eq!(
        mirror.requests + nat.requests,
        cs.stun_requests_sent + es.stun_requests_sent,
        "every request reached its server"
    );
    for s in [&cs, &es] {
        assert_eq!(s.stun_responses_ignored, 0);
        assert_eq!(s.signaling_invalid, 0);
        assert_eq!(s.candidates_skipped, 0);
    }
    // Each side's candidates reached the other through the encrypted signaling: host first,
    // then the NAT mapping of the same port.
    assert_eq!(
        callee.call.remote_addrs(),
        &[caller.addr, SocketAddr::new(NAT_IP, caller.addr.port())]
    );
    assert_eq!(
        caller.call.remote_addrs(),
        &[callee.addr, SocketAddr::new(NAT_IP, callee.addr.port())]
    );
}

#[test]
fn an_unanswered_stun_server_is_counted_and_the_call_connects_on_host_candidates() {
    let mut silent = StunServer::new(Mapping::Silent);
    let stun_timeout = Duration::from_secs(1);
    let v6: SocketAddr = "[::1]:3478".parse().expect("addr");
    let (mut caller, mut callee) = tone_pair(
        |c| {
            // An IPv6 server cannot be asked from an IPv4 socket: skipped and counted.
            c.stun_servers = vec![silent.addr, v6];
            c.stun_timeout = stun_timeout;
        },
        |c| {
            c.stun_servers = vec![silent.addr];
            c.stun_timeout = stun_timeout;
        },
    );
    let start = Instant::now();
    run(
        &mut caller,
        &mut callee,
        &mut [&mut silent],
        Duration::ZERO,
        Duration::from_secs(8),
        |a, b| {
            a.audio_packets >= 50
                && b.audio_packets >= 50
                && a.call.stats().stun_failed == 1
                && b.call.stats().stun_failed == 1
        },
    );
    let connected = caller.connected_at.expect("caller connected") - start;
    println!(
        "connected after {connected:?}; gathering given up after {:?}",
        start.elapsed()
    );
    assert_tones(&caller, &callee);
    // Connecting did not wait for the STUN server.
    assert!(
        connected < stun_timeout,
        "connected only after {connected:?}"
    );
    let (cs, es) = (caller.call.stats().clone(), callee.call.stats().clone());
    println!(
        "caller: {cs:?}\ncallee: {es:?}\nsilent server got {} requests",
        silent.requests
    );
    assert_eq!(cs.stun_servers_skipped, 1);
    assert_eq!(es.stun_servers_skipped, 0);
    for s in [&cs, &es] {
        assert_eq!(s.stun_failed, 1);
        assert_eq!(s.stun_srflx_candidates, 0);
        // Retransmitted (250 ms, then 500 ms) within the 1 s deadline, never more than the cap.
        assert!(
            (2..=u64::from(STUN_MAX_REQUESTS)).contains(&s.stun_requests_sent),
            "{} requests",
            s.stun_requests_sent
        );
    }
    assert_eq!(
        silent.requests,
        cs.stun_requests_sent + es.stun_requests_sent
    );
    assert_eq!(callee.call.remote_addrs(), &[caller.addr]);
    assert_eq!(caller.call.remote_addrs(), &[callee.addr]);
    // Gathering is over: no more requests go out.
    let before = silent.requests;
    run(
        &mut caller,
        &mut callee,
        &mut [&mut silent],
        Duration::ZERO,
        Duration::from_secs(5),
        |a, _| a.audio_packets >= 75,
    );
    assert_eq!(silent.requests, before);
}

#[test]
fn too_many_stun_servers_is_a_config_error() {
    let (key, _) = dh_exchange();
    let mut config = P2pConfig::new(
        Role::Caller,
        key,
        1,
        generate_certificate().expect("certificate"),
        "127.0.0.1:5000".parse().expect("addr"),
    );
    config.stun_servers = (0..=MAX_STUN_SERVERS as u16)
        .map(|i| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 3478 + i))
        .collect();
    let err = P2pCall::new(Instant::now(), config).expect_err("too many");
    assert!(matches!(err, P2pCallError::Config { .. }), "{err}");
}
