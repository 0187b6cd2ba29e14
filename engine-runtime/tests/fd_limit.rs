//! The open-file limit reached while calls are being created: the calls that cannot get a
//! socket fail with a typed error, nothing panics, the shards go on serving, and the calls
//! already connected keep streaming.
//!
//! The engine runs in a child process (this test binary again) whose limit is lowered with
//! the shell's `ulimit -n` before it starts, so the parent's limit is untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{silent_sfu, try_join_tone, wait_event};
use ringcast::{CallState, Engine, EngineError, EventKind};

const CHILD_ENV: &str = "RINGCAST_FD_LIMIT_CHILD";
/// The limit the child runs under: room for the engine and a few dozen calls.
const LIMIT: u32 = 96;
const ATTEMPTS: i64 = 80;

/// The child's half: creates and connects calls until the limit refuses them.
#[test]
fn child_under_a_low_fd_limit() {
    if std::env::var(CHILD_ENV).is_err() {
        return; // Only meaningful in the child run by the test below.
    }
    let sfu = silent_sfu();
    let engine = Engine::builder().shards(2).build().unwrap();
    let mut connected = Vec::new();
    let mut refused = 0;
    for key in 0..ATTEMPTS {
        let result = try_join_tone(&engine, &sfu, key);
        match result {
            Ok(()) => connected.push(key),
            Err(EngineError::Io(e)) if e.raw_os_error() == Some(libc_emfile()) => {
                refused += 1;
                // The refused call is not left half-made: stop frees its id.
                let _ = engine.stop(key);
            }
            Err(e) => panic!(
                "call {key}: an error other than the fd limit: {e:?} (refused so far: {refused})"
            ),
        }
    }
    assert!(refused > 0, "the limit of {LIMIT} never refused a call");
    assert!(
        connected.len() >= 5,
        "only {} calls before the limit",
        connected.len()
    );
    // The calls that got a socket connect and stream; the shards still answer.
    let mut up = 0;
    while up < connected.len() {
        let e = wait_event(&engine, Duration::from_secs(15), |e| {
            connected.contains(&e.chat_id)
                && matches!(
                    e.kind,
                    EventKind::ConnectionChanged(CallState::Connected | CallState::Ended(_))
                )
        })
        .expect("the connected calls report");
        assert!(
            matches!(e.kind, EventKind::ConnectionChanged(CallState::Connected)),
            "{e:?}"
        );
        up += 1;
    }
    std::thread::sleep(Duration::from_secs(1));
    let stats = engine.stats().unwrap();
    let sent: u64 = connected
        .iter()
        .map(|k| engine.call_info(*k).unwrap().stats.packets_sent)
        .sum();
    assert!(
        sent >= 40 * connected.len() as u64,
        "{sent} packets from {} calls",
        connected.len()
    );
    println!(
        "@@FD connected {} refused {refused} packets {sent} send_errors {}",
        connected.len(),
        stats.send_errors
    );
}

/// EMFILE ("Too many open files") on Linux.
fn libc_emfile() -> i32 {
    24
}

#[test]
fn the_fd_limit_refuses_calls_typed_and_the_rest_stream_on() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {LIMIT} && exec \"$0\" --exact child_under_a_low_fd_limit --nocapture --test-threads 1"
        ))
        .arg(&exe)
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("@@FD ").map(|at| &l[at + 5..]))
        .unwrap_or_else(|| panic!("no report from the child:\n{stdout}\n{stderr}"));
    assert!(line.starts_with("connected "), "{line}");
    eprintln!("child: {line}");
}
