//! An engine built with no configuration reaches an SFU across a real interface: the default
//! bind picks, per SFU address, the local address the kernel routes toward it.
//!
//! The engine runs in a network namespace (this test binary, re-run inside it with
//! `ip netns exec`), joined to the root namespace by a veth pair with private addresses
//! (`interop/ntgcalls_peer.rs`'s `Netns`); sfu-mock runs here, bound to the root end. No
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
use std::net::SocketAddr;
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
const TONE_HZ: f64 = 700.0;

/// The child's half: an engine with the default bind plays a tone into a call whose answer
/// comes on stdin. Lines for the parent carry `@@RC ` (libtest may print before them).
#[test]
fn child_in_namespace() {
    if std::env::var(CHILD_ENV).is_err() {
        return; // Only meaningful inside the namespace, run by the test below.
    }
    let engine = Engine::builder().build().unwrap();
    let payload = engine.create_call(1).unwrap();
    engine
        .set_stream_sources(
            1,
            StreamSource::Tone {
                frequency_hz: TONE_HZ as f32,
            },
        )
        .unwrap();
    println!("@@RC payload {}", payload.replace('\n', " "));
    println!("@@RC ssrc {}", engine.audio_ssrc(1).unwrap());
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).unwrap();
    engine.connect(1, answer.trim()).unwrap();
    let connected = common::wait_event(&engine, Duration::from_secs(15), |e| {
        matches!(
            e.kind,
            EventKind::ConnectionChanged(CallState::Connected | CallState::Ended(_))
        )
    });
    match connected.map(|e| e.kind) {
        Some(EventKind::ConnectionChanged(CallState::Connected)) => println!("@@RC connected"),
        other => {
            println!("@@RC failed {other:?}");
            return;
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let sent = engine.call_info(1).unwrap().stats.packets_sent;
    println!("@@RC sent {sent}");
    std::io::stdout().flush().unwrap();
}

#[test]
fn an_engine_with_no_bind_reaches_an_sfu_over_a_real_interface() {
    let netns = Netns::create().unwrap_or_else(|e| {
        panic!("this test needs root and `ip` (scripts/setup.sh --with-test-peers): {e}")
    });
    let sfu = Server::start(ServerOptions {
        udp: SocketAddr::new(netns.host_ip().into(), 0),
        forward_audio: false,
        ..ServerOptions::default()
    })
    .unwrap();
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
    let payload = next();
    let payload = payload.strip_prefix("payload ").expect("payload first");
    let ssrc: u32 = next()
        .strip_prefix("ssrc ")
        .expect("then the ssrc")
        .parse()
        .unwrap();
    let answer = sfu.join(1, payload.as_bytes()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", answer.replace('\n', " ")).unwrap();
    let connected = next();
    assert_eq!(
        connected, "connected",
        "the call from the namespace did not connect"
    );
    let sent: u64 = next()
        .strip_prefix("sent ")
        .expect("then what it sent")
        .parse()
        .unwrap();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(200));
    let stats = sfu.stats().unwrap();
    let p = participant(&stats, 1, ssrc);
    let got = p["packets"].as_u64().unwrap();
    assert!(sent >= 100, "sent only {sent} packets");
    assert!(
        got as f64 >= sent as f64 * 0.95,
        "the sfu got {got} of {sent} packets"
    );
    let hz = p["dominant_hz"].as_f64().unwrap_or(0.0);
    assert!((hz - TONE_HZ).abs() <= 5.0, "the sfu hears {hz} Hz");
    // The call came from the namespace's end of the veth: the route's address.
    let remote: SocketAddr = p["remote"].as_str().unwrap().parse().unwrap();
    assert_eq!(remote.ip(), std::net::IpAddr::from(netns.ns_ip()), "{p}");
}
