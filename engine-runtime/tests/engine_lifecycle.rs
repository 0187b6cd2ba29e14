//! Engines that come and go: creating and dropping many engines in one process, each with
//! calls streaming to sfu-mock, leaves no thread, socket or io_uring ring behind, and each
//! drop returns within a bounded time (it joins the shard threads).
//!
//! The count is 200 engines of 2 shards with 2 calls each (400 calls) on the default send
//! path, then 20 more on the tokio-uring send path, sized for CI on a 2-core machine (~15 s):
//! every call connects (ICE, DTLS) and is seen streaming before its engine is dropped. One
//! test function, so nothing else of this binary runs beside the counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{silent_sfu, wait_calls_connected};
use ringcast::{Engine, SendPath, StreamSource};

const ENGINES: i64 = 200;
/// Engines on the tokio-uring send path (its sockets are tokio-uring's, closed through its
/// ring).
const TOKIO_URING_ENGINES: i64 = 20;
const CALLS: i64 = 2;
/// Longest an engine's drop may take (it stops and joins its shard threads).
const DROP_LIMIT: Duration = Duration::from_secs(2);

/// What the process holds: threads, socket descriptors and io_uring instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    threads: usize,
    sockets: usize,
    rings: usize,
}

fn held() -> Held {
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
    let (mut sockets, mut rings) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        // The directory's own descriptor is gone by the time it is read: skip what vanished.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target.starts_with("socket:") {
            sockets += 1;
        } else if target == "anon_inode:[io_uring]" {
            rings += 1;
        }
    }
    Held {
        threads,
        sockets,
        rings,
    }
}

/// `held()` once it equals `want`, or what it last was after a short grace (threads leave
/// the task list once the kernel has reaped them).
fn settle(want: Held) -> Held {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let now = held();
        if now == want || Instant::now() > end {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates, streams on and drops `engines` engines; returns the slowest drop and what was
/// held while the middle one was live.
fn come_and_go(
    sfu: &sfu_mock::server::Server,
    first: i64,
    engines: i64,
    path: SendPath,
) -> (Duration, Held) {
    let mut slowest_drop = Duration::ZERO;
    let mut during = held();
    for e in first..first + engines {
        let engine = Engine::builder()
            .shards(2)
            .cert_pool(0)
            .send_path(path)
            .build()
            .unwrap();
        let keys: Vec<i64> = (0..CALLS).collect();
        for &key in &keys {
            let payload = engine.create_call(key).unwrap();
            engine
                .set_stream_sources(
                    key,
                    StreamSource::Tone {
                        frequency_hz: 440.0,
                    },
                )
                .unwrap();
            let response = sfu.join(e * CALLS + key, payload.as_bytes()).unwrap();
            engine.connect(key, &response).unwrap();
        }
        wait_calls_connected(&engine, &keys);
        // Streaming: every call has media out (a few 20 ms packets) before the drop.
        let end = Instant::now() + Duration::from_secs(5);
        while keys
            .iter()
            .any(|k| engine.call_info(*k).unwrap().stats.packets_sent < 3)
        {
            assert!(Instant::now() < end, "engine {e}: the calls do not stream");
            std::thread::sleep(Duration::from_millis(5));
        }
        if e == first + engines / 2 {
            during = held();
        }
        let t = Instant::now();
        drop(engine);
        let took = t.elapsed();
        slowest_drop = slowest_drop.max(took);
        assert!(took <= DROP_LIMIT, "engine {e}: drop took {took:?}");
    }
    (slowest_drop, during)
}

#[test]
fn two_hundred_engines_with_streaming_calls_leave_nothing_behind() {
    let started = Instant::now();
    let sfu = silent_sfu();
    // A first engine warms up what lives once per process (the SFU's threads are up, lazy
    // statics, the allocator's arenas); the baseline is taken after it is gone.
    let warm = Engine::builder().shards(2).cert_pool(0).build().unwrap();
    drop(warm);
    let before = settle(held());
    let (slowest_drop, during) = come_and_go(&sfu, 0, ENGINES, SendPath::IoUringBatch);
    let after = settle(before);
    println!(
        "@@LIFECYCLE engines {ENGINES} calls {} before {before:?} mid-run (engine live) {during:?} after {after:?} slowest drop {slowest_drop:?} total {:?}",
        ENGINES * CALLS,
        started.elapsed()
    );
    assert_eq!(
        after, before,
        "{ENGINES} engines came and went: threads, sockets or rings were left behind"
    );
    let (slowest_drop, during) =
        come_and_go(&sfu, ENGINES, TOKIO_URING_ENGINES, SendPath::TokioUring);
    let after = settle(before);
    println!(
        "@@LIFECYCLE tokio-uring send path: engines {TOKIO_URING_ENGINES} mid-run {during:?} after {after:?} slowest drop {slowest_drop:?}"
    );
    assert_eq!(
        after, before,
        "{TOKIO_URING_ENGINES} engines on the tokio-uring send path left something behind"
    );
}
