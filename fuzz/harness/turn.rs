//! Shared by the `turn_response` fuzz target and its stable replay in
//! `engine-core/tests/p2p_fuzz_corpus.rs` (both include this file with `#[path]`).
#![allow(dead_code, unreachable_pub)] // shared by a fuzz target and a test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringcast_core::turn::{TurnClient, TurnServer, TurnState};

/// Feeds `data` (`[u16 BE length][datagram]`..., top bit of the length: patch in the
/// outstanding transaction id) to a fresh client; returns its final state. Never panics on
/// input; the client's own requests must stay well-formed.
pub fn run(data: &[u8]) -> Option<TurnState> {
    let server: SocketAddr = "127.0.0.1:3478".parse().expect("addr");
    let now = Instant::now();
    let mut client = TurnClient::new(
        TurnServer {
            addr: server,
            username: "u".into(),
            password: "p".into(),
        },
        7,
        now,
        Duration::from_secs(5),
    )
    .ok()?;
    let mut txid = [0u8; 12];
    let mut rest = data;
    let mut t = now;
    while rest.len() >= 2 {
        let raw = u16::from_be_bytes([rest[0], rest[1]]);
        let patch = raw & 0x8000 != 0;
        let len = usize::from(raw & 0x7FFF).min(rest.len() - 2);
        let mut datagram = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        while let Some(request) = client.poll_transmit(t) {
            assert!(request.len() >= 20, "short request");
            txid.copy_from_slice(&request[8..20]);
        }
        if patch && datagram.len() >= 20 {
            datagram[8..20].copy_from_slice(&txid);
        }
        let _ = client.handle_datagram(server, &datagram, t);
        t += Duration::from_millis(300);
        let _ = client.handle_timeout(t);
    }
    Some(client.state())
}
