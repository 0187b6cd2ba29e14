//! The control API answers joins concurrently, as Telegram answers parallel
//! `phone.joinGroupCall` requests: a request that stalls (its body trickles in) holds one HTTP
//! thread, not the API, and joins sent at once from many clients all succeed as distinct
//! participants.
//!
//! How fast joins are is the load tool's business (`load --bursts`); this test fails on a server
//! that serves one request at a time, whatever the machine's speed: such a server is stuck
//! reading the stalled body and never answers the others (their clients give up after 20 s).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

mod common;

use ringcast_core::signaling::group::JoinResponse;
use serde_json::Value;
use sfu_mock::server::{Server, ServerOptions};

/// Clients sending joins at once, and joins each.
const CLIENTS: usize = 16;
const JOINS_PER_CLIENT: usize = 16;
/// A client gives up on an answer after this long (a sequential server never answers).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
const CHAT: i64 = -1_001;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CLIENT_TIMEOUT))
        .build()
        .into()
}

/// Joins `ssrc` and returns the SFU's ufrag for it.
fn join(agent: &ureq::Agent, http: SocketAddr, ssrc: u32) -> Result<String, String> {
    let url = format!("http://{http}/v1/chats/{CHAT}/join");
    let mut r = agent
        .post(&url)
        .send(common::join_payload(&format!("ufrag{ssrc}"), ssrc).as_str())
        .map_err(|e| format!("join {ssrc}: {e}"))?;
    let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    if r.status().as_u16() != 200 {
        return Err(format!("join {ssrc}: HTTP {}: {body}", r.status()));
    }
    let answer = JoinResponse::parse(body.as_bytes()).map_err(|e| e.to_string())?;
    Ok(answer.transport.ufrag)
}

/// A join whose body stops halfway. The payload is padded past 1 KiB: tiny_http reads a body
/// up to 1 KiB before queueing the request, a longer one in the thread that serves it.
struct StalledJoin {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl StalledJoin {
    fn start(http: SocketAddr, ssrc: u32) -> Self {
        let mut body = common::join_payload(&format!("ufrag{ssrc}"), ssrc).into_bytes();
        body.resize(body.len() + 2048, b' ');
        let mut stream = TcpStream::connect(http).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let head = format!(
            "POST /v1/chats/{CHAT}/join HTTP/1.1\r\nHost: {http}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let rest = body.split_off(body.len() / 2);
        stream.write_all(&body).unwrap();
        stream.flush().unwrap();
        Self { stream, rest }
    }

    /// Sends the rest of the body and returns the status line of the answer.
    fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // The connection stays open (keep-alive): read up to the JSON's closing brace.
        while !answer.ends_with(b"}") {
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed before the answer");
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(answer).unwrap();
        text.lines().next().unwrap_or_default().to_owned()
    }
}

#[test]
fn joins_are_answered_concurrently_while_another_request_stalls() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let http = server.http_addr().unwrap();
    let stalled = StalledJoin::start(http, 1);
    // One join first: the stalled request is queued before it (or being served), so from here
    // on a one-at-a-time server is stuck in the stalled body.
    let first = join(&agent(), http, 2).unwrap();

    let ufrags: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    let agent = agent();
                    (0..JOINS_PER_CLIENT)
                        .map(|j| {
                            let ssrc = 1_000 + (c * JOINS_PER_CLIENT + j) as u32;
                            join(&agent, http, ssrc)
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap().unwrap())
            .collect()
    });
    assert_eq!(ufrags.len(), CLIENTS * JOINS_PER_CLIENT);
    let mut distinct: HashSet<&String> = ufrags.iter().collect();
    distinct.insert(&first);
    assert_eq!(
        distinct.len(),
        CLIENTS * JOINS_PER_CLIENT + 1,
        "every join is its own participant with its own ICE credentials"
    );

    // The stalled request is answered too once its body is complete.
    let status = stalled.finish();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let stats: Value = server.stats().unwrap();
    let participants = stats["chats"][CHAT.to_string()].as_array().unwrap();
    let ssrcs: HashSet<u64> = participants
        .iter()
        .map(|p| p["ssrc"].as_u64().unwrap())
        .collect();
    assert_eq!(participants.len(), CLIENTS * JOINS_PER_CLIENT + 2);
    assert_eq!(ssrcs.len(), participants.len());
}
