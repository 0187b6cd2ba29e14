//! Shared by the `demux_first_datagram` fuzz target and its stable replay in
//! `engine-core/tests/fuzz_corpus.rs` (both include this file with `#[path]`).
//!
//! Input layout: byte 0 picks the source address and socket (see [`source_for`]); the rest is
//! the first datagram a never-seen peer sends to one of the endpoint's sockets.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // shared by a fuzz target and a test

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use ringcast_core::CallConfig;
use ringcast_core::crypto::{CallCrypto, CryptoOptions};
use ringcast_core::demux::{DatagramKind, Demux, classify, rtp_header, stun_local_ufrag};
use ringcast_core::endpoint::{CallId, Endpoint, SocketId};
use ringcast_core::signaling::group::JoinResponse;
use ringcast_core::str0m::config::DtlsCert;
use ringcast_core::str0m::crypto::CryptoProvider;

/// The SFU addresses the fixture's calls are connected to.
pub const SFU_ADDRS: [&str; 2] = ["203.0.113.10:32001", "[2001:db8::10]:32001"];

/// Where an unknown first datagram comes from: never an address a call registered.
const UNKNOWN_SOURCES: [&str; 4] = [
    "203.0.113.11:32001",
    "198.51.100.7:5000",
    "[2001:db8::11]:32001",
    "203.0.113.10:32002",
];

/// What happened to the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No call: counted in `dropped_unroutable`, no call saw it.
    Unroutable,
    /// Its STUN USERNAME named a call's ufrag (a peer-reflexive check): that call got it.
    RoutedByUfrag {
        /// The call answered it or raised an event: it took the check as genuine, so its ICE
        /// state may have changed (a new peer-reflexive candidate) and the fixture is spent.
        /// A check whose integrity fails changes nothing and leaves this false.
        answered: bool,
    },
}

impl Outcome {
    /// True if a call got the datagram.
    pub fn routed(self) -> bool {
        matches!(self, Self::RoutedByUfrag { .. })
    }
}

/// An endpoint with three connected-in-progress calls on two sockets.
pub struct Fixture {
    endpoint: Endpoint,
    now: Instant,
    sockets: [SocketId; 2],
    /// Each call's ufrag and the socket it is registered on.
    ufrags: Vec<(SocketId, String)>,
}

fn cert_and_crypto() -> &'static (DtlsCert, std::sync::Arc<CryptoProvider>) {
    static CELL: OnceLock<(DtlsCert, std::sync::Arc<CryptoProvider>)> = OnceLock::new();
    CELL.get_or_init(|| {
        let cert = ringcast_core::crypto::generate_certificate().expect("certificate");
        let options = CryptoOptions {
            dangerous_rng_seed: Some(7),
            ..CryptoOptions::default()
        };
        let crypto = CallCrypto::new(options).expect("crypto config").provider();
        (cert, crypto)
    })
}

fn response_json(port: u16) -> String {
    format!(
        r#"{{"transport":{{"ufrag":"sfuufrag","pwd":"sfupassword0123456789abc","fingerprints":[{{"hash":"sha-256","setup":"active","fingerprint":"0B:7C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:EA:FB:0C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:E1"}}],"candidates":[{{"generation":"0","component":"1","protocol":"udp","port":"{port}","ip":"203.0.113.10","foundation":"1","id":"a","priority":"2130706431","type":"host","network":"0"}},{{"generation":"0","component":"1","protocol":"udp","port":"{port}","ip":"2001:db8::10","foundation":"2","id":"b","priority":"2130706430","type":"host","network":"0"}}]}},"audio":{{"payload-types":[{{"id":111,"name":"opus","clockrate":48000,"channels":2,"parameters":{{"minptime":10,"useinbandfec":1}}}}],"rtp-hdrexts":[{{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"}}]}}}}"#
    )
}

impl Fixture {
    /// Builds the endpoint: socket 0 (IPv4) and socket 1 (IPv6). Calls 1 and 2 join the same
    /// SFU address, so the socket rule puts call 2 on socket 1 (reaching the SFU over IPv6);
    /// call 3 talks to another SFU port and shares socket 0 with call 1.
    pub fn new() -> Self {
        let (cert, crypto) = cert_and_crypto();
        let now = Instant::now();
        let mut endpoint = Endpoint::new(now, 0);
        let sockets = [
            endpoint.add_socket("192.0.2.1:40000".parse().expect("addr")),
            endpoint.add_socket("[2001:db8::1]:40000".parse().expect("addr")),
        ];
        let mut ufrags = Vec::new();
        for (chat, port) in [(1_i64, 32001_u16), (2, 32001), (3, 32009)] {
            let mut config = CallConfig::new(1000 + chat as u64, cert.clone());
            config.crypto = Some(crypto.clone());
            let chat = CallId(chat);
            endpoint
                .create_call(now, chat, config)
                .expect("create call");
            let response = JoinResponse::parse(response_json(port).as_bytes()).expect("response");
            endpoint.connect(now, chat, &response).expect("connect");
            let local = endpoint
                .call(chat)
                .and_then(|c| c.local_addr)
                .expect("local addr");
            let socket = sockets
                .iter()
                .copied()
                .find(|s| endpoint.socket_addr(*s) == Some(local))
                .expect("the call is on a socket");
            ufrags.push((
                socket,
                endpoint.local_ufrag(chat).expect("ufrag").to_owned(),
            ));
        }
        while endpoint.poll_transmit().is_some() {}
        while endpoint.poll_event().is_some() {}
        Self {
            endpoint,
            now,
            sockets,
            ufrags,
        }
    }

    /// The calls' local ufrags and their sockets (a STUN USERNAME starting with one routes to
    /// that call on that socket).
    pub fn ufrags(&self) -> &[(SocketId, String)] {
        &self.ufrags
    }

    /// Feeds `data` (selector byte + datagram) to the endpoint and checks what happened.
    /// Panics if routing or the pure demux helpers break one of their promises.
    pub fn feed(&mut self, data: &[u8]) -> Outcome {
        let (selector, datagram) = match data.split_first() {
            Some((s, rest)) => (*s, rest),
            None => (0, data),
        };
        let source: SocketAddr = UNKNOWN_SOURCES[usize::from(selector) % UNKNOWN_SOURCES.len()]
            .parse()
            .expect("addr");
        let socket = self.sockets[usize::from(selector >> 4) % 2];
        check_pure_helpers(datagram);

        let expect_ufrag = stun_local_ufrag(datagram)
            .is_some_and(|u| self.ufrags.iter().any(|(s, f)| *s == socket && f == u));
        assert_eq!(
            self.endpoint.routes(socket, &source, datagram),
            expect_ufrag,
            "an unknown source must route only by a known STUN ufrag"
        );
        let before_calls = self.endpoint.calls();
        let before = self.endpoint.stats().clone();
        self.endpoint
            .handle_datagram(self.now, socket, source, datagram);
        let after = self.endpoint.stats().clone();
        assert_eq!(after.datagrams_received, before.datagrams_received + 1);
        if expect_ufrag {
            assert_eq!(after.dropped_unroutable, before.dropped_unroutable);
            let mut answered = false;
            while self.endpoint.poll_transmit().is_some() {
                answered = true;
            }
            while self.endpoint.poll_event().is_some() {
                answered = true;
            }
            Outcome::RoutedByUfrag { answered }
        } else {
            assert_eq!(
                after.dropped_unroutable,
                before.dropped_unroutable + 1,
                "an unroutable datagram must be counted"
            );
            assert_eq!(after.dropped_by_call, before.dropped_by_call);
            assert_eq!(
                self.endpoint.calls(),
                before_calls,
                "an unroutable datagram must not reach a call"
            );
            assert_eq!(self.endpoint.pending_transmits(), 0);
            assert!(self.endpoint.poll_event().is_none());
            Outcome::Unroutable
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// The promises of `classify`, `rtp_header`, `stun_local_ufrag` and `Demux::route`.
fn check_pure_helpers(buf: &[u8]) {
    let kind = classify(buf);
    if let Some(h) = rtp_header(buf) {
        assert_eq!(kind, DatagramKind::Rtp);
        assert!(buf.len() >= 12);
        assert!(!(64..=95).contains(&h.pt), "RTCP must not peek as RTP");
        assert_eq!(h.pt, buf[1] & 0x7F);
    }
    if let Some(ufrag) = stun_local_ufrag(buf) {
        assert_eq!(kind, DatagramKind::Stun);
        assert!(buf.len() >= 20);
        assert!(!ufrag.contains(':'));
        assert!(ufrag.len() <= 513);
        // A table with only that ufrag routes it from anywhere; an empty one routes nothing.
        let mut demux = Demux::new();
        let anywhere: SocketAddr = "192.0.2.200:1".parse().expect("addr");
        assert_eq!(demux.route(&anywhere, buf), None);
        demux.register_ufrag(ufrag, 1_u8);
        assert_eq!(demux.route(&anywhere, buf), Some(1));
    }
}
