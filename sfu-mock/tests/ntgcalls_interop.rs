//! The real ntgcalls 3.0.5 wheel from PyPI (the engine py-tgcalls uses; libwebrtc inside) joins
//! sfu-mock, unmodified, as py-tgcalls drives it, and its tone arrives.
//!
//! `interop/ntgcalls_driver.py` runs two group calls in one process, each playing its own sine
//! through `MediaSource.SHELL` (raw s16le PCM on a command's stdout, as py-tgcalls feeds ffmpeg's
//! output). The test plays Telegram's MTProto layer: it joins sfu-mock in-process with each
//! call's payload and relays the answer **verbatim** (Telegram's shape, with its `video` section)
//! to `connect()`. libwebrtc gathers no loopback candidates, so the driver runs in a network
//! namespace joined to the SFU by a veth pair (`interop/ntgcalls_peer.rs`).
//!
//! sfu-mock runs with `latency: 20 ms`: at 0 ms it finishes ICE and DTLS faster than any real
//! network and ntgcalls often misses its own Connected event (it then never sends media; see
//! docs/performance.md, "ntgcalls 3.0.5 beside ringcast").
//!
//! Verified at the SFU: each call connected from the namespace's address, ~16.7 packets/s (60 ms
//! Opus frames), no loss, and the dominant frequency of the decoded audio is the call's sine; a
//! wrong expected frequency is refused by the same check.
//!
//! Needs root, `ip`, python3 and the ntgcalls wheel (`scripts/setup.sh --with-test-peers`, which
//! CI runs): without them the test fails with that hint, it does not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use sfu_mock::server::{Server, ServerOptions};

#[path = "../../interop/ntgcalls_peer.rs"]
mod ntgcalls_peer;

use ntgcalls_peer::{NTGCALLS_PACKETS_PER_SECOND, Netns, NtgcallsDriver};

/// The calls: (chat id as py-tgcalls passes it for a group, the sine each plays).
const CALLS: [(i64, f64); 2] = [(-1_001, 440.0), (-1_002, 660.0)];
const LATENCY: Duration = Duration::from_millis(20);
const CONNECT_LIMIT: Duration = Duration::from_secs(25);
/// Media before the window opens, and the window packets are counted in.
const SETTLE: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(3);
const TOLERANCE_HZ: f64 = 5.0;
/// Packet rate bounds around 16.7/s (the window's edges cost at most one packet each side).
const MIN_RATE: f64 = 14.5;
const MAX_RATE: f64 = 19.0;

/// One participant's counters in the stats JSON of `chat_id` (exactly one per chat here).
fn participant(stats: &Value, chat_id: i64) -> Result<&Value, String> {
    let list = stats["chats"][chat_id.to_string()]
        .as_array()
        .ok_or_else(|| format!("chat {chat_id} not in the sfu's stats"))?;
    match list.as_slice() {
        [p] => Ok(p),
        other => Err(format!(
            "chat {chat_id}: {} participants, want 1",
            other.len()
        )),
    }
}

/// What the SFU must have seen of one call between `before` and `after` (`seconds` apart).
fn verify(
    before: &Value,
    after: &Value,
    seconds: f64,
    chat_id: i64,
    hz: f64,
    from_ip: &str,
) -> Result<String, String> {
    let a = participant(before, chat_id)?;
    let b = participant(after, chat_id)?;
    if b["connected"] != true {
        return Err(format!("chat {chat_id}: not connected at the sfu: {b}"));
    }
    let remote = b["remote"].as_str().unwrap_or("");
    if !remote.starts_with(&format!("{from_ip}:")) {
        return Err(format!(
            "chat {chat_id}: media from {remote}, not the namespace's {from_ip}"
        ));
    }
    let count = |v: &Value, key: &str| v[key].as_u64().unwrap_or(0);
    let packets = count(b, "packets").saturating_sub(count(a, "packets"));
    let lost = count(b, "lost").saturating_sub(count(a, "lost"));
    let rate = packets as f64 / seconds;
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(format!(
            "chat {chat_id}: {rate:.1} packets/s, want ~{NTGCALLS_PACKETS_PER_SECOND:.1} \
             ({packets} in {seconds:.2} s)"
        ));
    }
    if lost > 0 {
        return Err(format!(
            "chat {chat_id}: {lost} lost of {packets} in the window"
        ));
    }
    let dominant = b["dominant_hz"]
        .as_f64()
        .ok_or_else(|| format!("chat {chat_id}: no dominant frequency: {b}"))?;
    if (dominant - hz).abs() > TOLERANCE_HZ {
        return Err(format!(
            "chat {chat_id}: dominant {dominant:.1} Hz, the call plays {hz} Hz"
        ));
    }
    Ok(format!(
        "chat {chat_id}: {packets} packets in {seconds:.2} s ({rate:.1}/s), {lost} lost, \
         {dominant:.1} Hz (sent {hz} Hz)"
    ))
}

#[test]
fn real_ntgcalls_joins_at_20ms_latency_unpatched_and_its_tone_arrives() {
    let started = Instant::now();
    // Dropped last: the driver (declared after) is killed before the namespace goes.
    let netns = Netns::create().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(ServerOptions {
        udp: SocketAddr::from((netns.host_ip(), 0)),
        http: None,
        latency: LATENCY,
        ..ServerOptions::default()
    })
    .expect("sfu-mock starts on the veth address");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/ntgcalls_driver.py");
    let mut driver = NtgcallsDriver::spawn(&netns, &script, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(driver.version(), "3.0.5", "the pinned wheel");

    for (chat_id, hz) in CALLS {
        driver.call(chat_id, hz).expect("driver takes the call");
    }
    // Relay payload -> join -> answer, and wait for every CONNECTED.
    let deadline = Instant::now() + CONNECT_LIMIT;
    let mut connected = Vec::new();
    while connected.len() < CALLS.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "connected {connected:?} of {CALLS:?} within {CONNECT_LIMIT:?}"
        );
        let Some(event) = driver.next(left).unwrap_or_else(|e| panic!("{e}")) else {
            continue;
        };
        let chat_id = event["chat_id"].as_i64().unwrap_or(0);
        match event["event"].as_str() {
            Some("payload") => {
                let payload = event["payload"].as_str().expect("payload is a string");
                let answer = server
                    .join(chat_id, payload.as_bytes())
                    .unwrap_or_else(|e| panic!("sfu-mock refused ntgcalls' payload: {e}"));
                driver
                    .answer(chat_id, &answer)
                    .expect("driver takes the answer");
            }
            Some("state") => match event["state"].as_str() {
                Some("CONNECTED") => connected.push(chat_id),
                Some("CONNECTING") => {}
                _ => panic!("ntgcalls gave up: {event}"),
            },
            Some("connect_returned") => {}
            _ => panic!("ntgcalls driver: {event}"),
        }
    }
    eprintln!("connected {connected:?} after {:?}", started.elapsed());

    std::thread::sleep(SETTLE);
    let before = server.stats().expect("stats");
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let after = server.stats().expect("stats");
    let seconds = t0.elapsed().as_secs_f64();
    let from = netns.ns_ip().to_string();
    for (chat_id, hz) in CALLS {
        match verify(&before, &after, seconds, chat_id, hz, &from) {
            Ok(line) => eprintln!("{line}"),
            Err(e) => panic!("{e}\nsfu stats: {after}"),
        }
        // The check can fail: the same audio is not another tone.
        let wrong = verify(&before, &after, seconds, chat_id, hz * 1.5, &from);
        assert!(
            wrong.is_err(),
            "a wrong frequency passed the check: {wrong:?}"
        );
    }
    // Anything the driver said meanwhile must not be an error.
    while let Some(event) = driver
        .next(Duration::ZERO)
        .unwrap_or_else(|e| panic!("{e}"))
    {
        assert!(
            event["event"] == "state" && event["state"] == "CONNECTED"
                || event["event"] == "connect_returned",
            "ntgcalls driver: {event}"
        );
    }
    driver.quit(Duration::from_secs(5));
    drop(server);
    drop(netns);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
