//! Resource exhaustion, beyond the open-file limit (tests/fd_limit.rs):
//!
//! - **No free port**: every port of `net.ipv4.ip_local_port_range` taken. The calls that
//!   cannot get a socket fail with [`EngineError::NoFreeSocket`] (1:1 calls bind through the
//!   same mapping, once their key exchange is done; not driven here), nothing panics, the calls already connected stream on, and a call stopped frees its
//!   socket for the next.
//! - **The kernel's send buffer full**: one socket's datagrams leave through a link far slower
//!   than what its call sends, and the socket's `SO_SNDBUF` is tiny, so the kernel refuses its
//!   sends (`EAGAIN`). They are dropped and counted (`EngineStats::dropped_send_buffer_full`),
//!   the shard does not wait for that buffer, and the other calls keep every packet.
//!
//! Each runs in a child process (this test binary again) in a network namespace of its own
//! (`unshare -rn`: a user and a network namespace, gone with the child, nothing to clean
//! up), where the port range and the loopback's queueing discipline can be changed without
//! touching the host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{join_all, participant, try_join_tone, wait_connected, wait_event};
use ringcast::{CallState, Engine, EngineError, EventKind};
use sfu_mock::server::{Server, ServerOptions};

const CHILD_ENV: &str = "RINGCAST_EXHAUSTION_CHILD";
/// The SFU's port: outside the namespace's ephemeral range, so it takes none of it.
const SFU_PORT: u16 = 5000;
/// The ephemeral range of the no-free-port child: 8 ports.
const PORTS: (u16, u16) = (40_000, 40_007);
/// The socket whose datagrams the send-buffer child slows down.
const SLOW_PORT: u16 = 40_000;

fn sfu() -> Server {
    Server::start(ServerOptions {
        udp: SocketAddr::from(([127, 0, 0, 1], SFU_PORT)),
        forward_audio: false,
        ..ServerOptions::default()
    })
    .unwrap()
}

/// Runs `child` (a test of this binary) in a new user and network namespace after `setup`
/// (shell commands run there first) and returns its stdout. Panics if it fails.
fn run_in_namespace(child: &str, setup: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-rn", "/bin/sh", "-c"])
        .arg(format!(
            "set -e; ip link set lo up; {setup}; exec \"$0\" --exact {child} --nocapture --test-threads 1"
        ))
        .arg(&exe)
        .env(CHILD_ENV, "1")
        .output()
        .unwrap_or_else(|e| panic!("this test needs `unshare` (util-linux): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child {child} failed ({}; it needs user and network namespaces, `ip` and `tc`):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Waits until every call of `keys` is connected; events of other calls (the refused ones
/// ending) are passed over.
fn connected_among(engine: &Engine, keys: &[i64]) {
    let mut left = keys.to_vec();
    while !left.is_empty() {
        let e = wait_event(engine, Duration::from_secs(15), |e| {
            left.contains(&e.chat_id) && matches!(e.kind, EventKind::ConnectionChanged(_))
        })
        .unwrap_or_else(|| panic!("calls {left:?} did not connect"));
        match e.kind {
            EventKind::ConnectionChanged(CallState::Connected) => left.retain(|k| *k != e.chat_id),
            EventKind::ConnectionChanged(CallState::Ended(r)) => {
                panic!("call {} ended: {r:?}", e.chat_id)
            }
            _ => {}
        }
    }
}

/// The child's half of the no-free-port test.
#[test]
fn child_with_no_free_port() {
    if std::env::var(CHILD_ENV).is_err() {
        return; // Only meaningful in the child run by the test below.
    }
    let sfu = sfu();
    let engine = Engine::builder().shards(2).build().unwrap();
    let mut connected = Vec::new();
    let mut refused = 0;
    for key in 0..16 {
        let result = try_join_tone(&engine, &sfu, key);
        match result {
            Ok(()) => connected.push(key),
            Err(EngineError::NoFreeSocket) => {
                refused += 1;
                // The refused call is not left half-made: stop frees its id.
                let _ = engine.stop(key);
            }
            Err(e) => panic!("call {key}: an error other than no free port: {e:?}"),
        }
    }
    assert!(refused > 0, "8 ephemeral ports never refused a call");
    assert!(
        connected.len() >= 3,
        "only {} calls before the ports ran out",
        connected.len()
    );
    // The calls that got a socket connect and stream; the shards still answer.
    connected_among(&engine, &connected);
    let sent = |k: &i64| engine.call_info(*k).unwrap().stats.packets_sent;
    let start: Vec<u64> = connected.iter().map(sent).collect();
    std::thread::sleep(Duration::from_secs(1));
    for (k, s0) in connected.iter().zip(&start) {
        assert!(sent(k) >= s0 + 40, "call {k} stopped streaming");
    }
    // A stopped call's socket goes back to the pool: the next call gets it.
    engine.stop(connected[1]).unwrap();
    let payload = engine.create_call(100).unwrap();
    let response = sfu.join(100, payload.as_bytes()).unwrap();
    engine.connect(100, &response).unwrap();
    connected_among(&engine, &[100]);
    println!(
        "@@PORTS connected {} refused {refused} sockets {}",
        connected.len(),
        engine.stats().unwrap().sockets
    );
}

#[test]
fn no_free_port_is_a_typed_error_and_the_rest_stream_on() {
    let stdout = run_in_namespace(
        "child_with_no_free_port",
        &format!(
            "echo '{} {}' > /proc/sys/net/ipv4/ip_local_port_range",
            PORTS.0, PORTS.1
        ),
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("@@PORTS").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no report from the child:\n{stdout}"));
    println!("{line}");
}

/// The socket of this process bound to `port`, as a descriptor of our own (`pidfd_getfd`: the
/// same socket, not a copy), to set its options from outside the engine.
fn own_socket_on(port: u16) -> UdpSocket {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    let pid = Pid::from_raw(std::process::id() as i32).unwrap();
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).unwrap();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let Ok(owned) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let socket = UdpSocket::from(owned);
        if socket.local_addr().is_ok_and(|a| a.port() == port) {
            return socket;
        }
    }
    panic!("no socket on port {port}");
}

fn tc(args: &str) {
    let status = Command::new("tc")
        .args(args.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("tc {args}: {e}"));
    assert!(status.success(), "tc {args}: {status}");
}

/// The child's half of the send-buffer test.
#[test]
fn child_with_a_full_send_buffer() {
    if std::env::var(CHILD_ENV).is_err() {
        return; // Only meaningful in the child run by the test below.
    }
    const CALLS: i64 = 6;
    let sfu = sfu();
    // The pool's first socket on SLOW_PORT: the first call is placed on it, the others each
    // get a socket of their own (one SFU address).
    let engine = Engine::builder()
        .shards(2)
        .bind(SocketAddr::from(([127, 0, 0, 1], SLOW_PORT)))
        .build()
        .unwrap();
    let (plan, _sources) = join_all(&engine, &sfu, CALLS, CALLS);
    wait_connected(&engine, CALLS as usize, Duration::from_secs(20));
    // Now the first call's socket leaves through 8 kbit/s (its call sends ~40 kbit/s) and
    // holds at most a few datagrams in the kernel: the kernel refuses the rest.
    tc("qdisc add dev lo root handle 1: htb default 10 r2q 1000");
    tc("class add dev lo parent 1: classid 1:10 htb rate 10gbit");
    tc("class add dev lo parent 1: classid 1:20 htb rate 8kbit ceil 8kbit");
    tc(&format!(
        "filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport {SLOW_PORT} 0xffff flowid 1:20"
    ));
    let slow = own_socket_on(SLOW_PORT);
    socket2::SockRef::from(&slow)
        .set_send_buffer_size(1)
        .unwrap();
    drop(slow);
    let healthy: Vec<i64> = (1..CALLS).collect();
    let sent = |k: &i64| engine.call_info(*k).unwrap().stats.packets_sent;
    let heard = |stats: &serde_json::Value, k: &i64| {
        let (chat, ssrc) = plan[k];
        participant(stats, chat, ssrc)["packets"].as_u64().unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    let sent0: Vec<u64> = healthy.iter().map(sent).collect();
    let stats0 = sfu.stats().unwrap();
    let heard0: Vec<u64> = healthy.iter().map(|k| heard(&stats0, k)).collect();
    let drops0 = engine.stats().unwrap().dropped_send_buffer_full;
    // Three seconds with the slow socket's buffer full; the shards answer all along.
    let end = Instant::now() + Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    while Instant::now() < end {
        let t = Instant::now();
        engine.stats().unwrap();
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent1: Vec<u64> = healthy.iter().map(sent).collect();
    // What was sent has landed (loopback, the fast class) before the SFU is asked.
    std::thread::sleep(Duration::from_millis(300));
    let stats1 = sfu.stats().unwrap();
    let engine_stats = engine.stats().unwrap();
    let drops = engine_stats.dropped_send_buffer_full - drops0;
    assert!(
        drops >= 50,
        "the full send buffer dropped only {drops} datagrams: {engine_stats:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "the shards answered in {slowest:?} at worst"
    );
    for (i, k) in healthy.iter().enumerate() {
        let sent = sent1[i] - sent0[i];
        let got = heard(&stats1, k) - heard0[i];
        // 3 s of 20 ms frames: 150; the shard kept its pace.
        assert!(sent >= 130, "call {k} sent {sent} in 3 s");
        assert!(got >= sent, "call {k}: the sfu heard {got} of {sent}");
    }
    assert!(
        engine.call_info(0).unwrap().stats.packets_sent > 0,
        "the slow call is still a call"
    );
    println!(
        "@@SNDBUF dropped {drops} send_errors {} slowest stats reply {slowest:?} healthy calls {} all heard",
        engine_stats.send_errors,
        healthy.len()
    );
}

#[test]
fn a_full_send_buffer_drops_and_counts_and_the_other_calls_keep_their_packets() {
    let stdout = run_in_namespace("child_with_a_full_send_buffer", "true");
    let line = stdout
        .lines()
        .find_map(|l| l.find("@@SNDBUF").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no report from the child:\n{stdout}"));
    println!("{line}");
}
