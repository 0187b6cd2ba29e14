//! An engine built with no configuration reaches an SFU across a real interface: the default
//! bind picks, per SFU address, the local address the kernel routes toward it.
//!
//! The engine runs in a network namespace (this test binary, re-run inside it with
//! `ip netns exec`), joined to the root namespace by a veth pair with private addresses
//! (`interop/ntgcalls_peer.rs`'s `Netns`, with IPv4 and IPv6 addresses); two sfu-mocks run
//! here, one bound to each of the root end's addresses, and the engine has a call to each. No
//! loopback is involved: the namespace's only route to the SFU is the veth. An engine that bound
//! 127.0.0.1, as the default once did, cannot reach it. The join goes through this process
//! (the child prints its payload, this side answers with sfu-mock's answer), as the messenger
//! would carry it.
//!
//! Needs root and `ip` (`scripts/setup.sh --with-test-peers`, which CI runs): without them the
//! test fails with that hint, it does not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::participant;
use ringcast::{CallState, Engine, EventKind, StreamSource};
use sfu_mock::server::{Server, ServerOptions};

#[path = "../../interop/ntgcalls_peer.rs"]
mod ntgcalls_peer;

use ntgcalls_peer::Netns;

const CHILD_ENV: &str = "RINGCAST_DEFAULT_BIND_CHILD";

/// The calls: (id, tone). The first joins an SFU on IPv4, the second one on IPv6.
const CALLS: [(i64, f64); 2] = [(1, 700.0), (2, 900.0)];

/// The child's half: an engine with the default bind plays a tone into each call, whose
/// answers come on stdin. Lines for the parent carry `@@RC ` (libtest may print before them).
#[test]
fn child_in_namespace() {
    if std::env::var(CHILD_ENV).is_err() {
        return; // Only meaningful inside the namespace, run by the test below.
    }
    let engine = Engine::builder().build().unwrap();
    for (id, hz) in CALLS {
        let payload = engine.create_call(id).unwrap();
        engine
            .set_stream_sources(
                id,
                StreamSource::Tone {
                    frequency_hz: hz as f32,
                },
            )
            .unwrap();
        println!("@@RC payload {}", payload.replace('\n', " "));
        println!("@@RC ssrc {}", engine.audio_ssrc(id).unwrap());
    }
    for (id, _) in CALLS {
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).unwrap();
        engine.connect(id, answer.trim()).unwrap();
    }
    for _ in CALLS {
        let connected = common::wait_event(&engine, Duration::from_secs(15), |e| {
            matches!(
                e.kind,
                EventKind::ConnectionChanged(CallState::Connected | CallState::Ended(_))
            )
        });
        match connected.map(|e| (e.chat_id, e.kind)) {
            Some((id, EventKind::ConnectionChanged(CallState::Connected))) => {
                println!("@@RC connected {id}");
            }
            other => {
                println!("@@RC failed {other:?}");
                return;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    for (id, _) in CALLS {
        println!(
            "@@RC sent {}",
            engine.call_info(id).unwrap().stats.packets_sent
        );
    }
    std::io::stdout().flush().unwrap();
}

#[test]
fn an_engine_with_no_bind_reaches_sfus_over_a_real_interface_v4_and_v6() {
    let netns = Netns::create().unwrap_or_else(|e| {
        panic!("this test needs root and `ip` (scripts/setup.sh --with-test-peers): {e}")
    });
    let (host_v6, ns_v6) = netns.add_ipv6().unwrap();
    let sfus: Vec<(Server, IpAddr)> = [
        (IpAddr::from(netns.host_ip()), IpAddr::from(netns.ns_ip())),
        (IpAddr::from(host_v6), IpAddr::from(ns_v6)),
    ]
    .into_iter()
    .map(|(at, from)| {
        let sfu = Server::start(ServerOptions {
            udp: SocketAddr::new(at, 0),
            forward_audio: false,
            ..ServerOptions::default()
        })
        .unwrap();
        (sfu, from)
    })
    .collect();
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_in_namespace",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(at) = line.find("@@RC ") {
                let _ = tx.send(line[at + 5..].to_owned());
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the engine in the namespace answers")
    };
    let mut ssrcs = Vec::new();
    let mut answers = Vec::new();
    for (i, (sfu, _)) in sfus.iter().enumerate() {
        let payload = next();
        let payload = payload.strip_prefix("payload ").expect("a payload");
        let ssrc: u32 = next()
            .strip_prefix("ssrc ")
            .expect("then its ssrc")
            .parse()
            .unwrap();
        ssrcs.push(ssrc);
        answers.push(sfu.join(CALLS[i].0, payload.as_bytes()).unwrap());
    }
    let mut stdin = child.stdin.take().unwrap();
    for answer in &answers {
        writeln!(stdin, "{}", answer.replace('\n', " ")).unwrap();
    }
    for _ in CALLS {
        let line = next();
        assert!(
            line.starts_with("connected"),
            "a call did not connect: {line}"
        );
    }
    let sent: Vec<u64> = CALLS
        .iter()
        .map(|_| next().strip_prefix("sent ").expect("sent").parse().unwrap())
        .collect();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(200));
    for (i, (sfu, from)) in sfus.iter().enumerate() {
        let (id, hz_sent) = CALLS[i];
        let stats = sfu.stats().unwrap();
        let p = participant(&stats, id, ssrcs[i]);
        let got = p["packets"].as_u64().unwrap();
        assert!(sent[i] >= 100, "call {id} sent only {} packets", sent[i]);
        assert!(
            got as f64 >= sent[i] as f64 * 0.95,
            "call {id}: the sfu got {got} of {} packets",
            sent[i]
        );
        let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
        assert!(
            (hz - hz_sent).abs() <= 5.0,
            "call {id}: the sfu hears {hz} Hz"
        );
        // Each call came from the namespace's end of the veth, in its SFU's family.
        let remote: SocketAddr = p["remote"].as_str().unwrap().parse().unwrap();
        assert_eq!(remote.ip(), *from, "call {id}: {p}");
    }
}
