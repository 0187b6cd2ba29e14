//! The virtual soak past the RTP sequence wraps (see `ringcast_sim::soak` and
//! docs/simulation.md): two calls stream through the simulated SFU for hours of virtual time,
//! every stream wraps many times, and every checkpoint and the end are verified.
//!
//! `RINGCAST_SOAK_HOURS` sets the virtual length (default [`DEFAULT_HOURS`], a day), e.g. a
//! week: `RINGCAST_SOAK_HOURS=168 cargo test --workspace --locked --release --test soak --
//! --nocapture`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ringcast_sim::{SoakOptions, soak};

/// Virtual hours in the test suite: the whole day fits in CI time (about 50 s of CPU in the
/// test profile, docs/simulation.md).
const DEFAULT_HOURS: f64 = 24.0;

#[test]
fn calls_stream_past_many_sequence_wraps_in_virtual_time() {
    let hours = std::env::var("RINGCAST_SOAK_HOURS")
        .ok()
        .and_then(|h| h.parse::<f64>().ok())
        .unwrap_or(DEFAULT_HOURS);
    let report = soak(&SoakOptions::hours(hours));
    eprintln!("{}", report.describe());
    for f in &report.failures {
        eprintln!("  {f}");
    }
    assert!(
        report.failures.is_empty(),
        "{} failures",
        report.failures.len()
    );
    // 50 packets a second wrap a 16-bit sequence number every 21.8 minutes: every stream
    // (two uplinks, two forwarded downlinks) crossed the wrap hours / 21.8 min times.
    let want = (hours * 3600.0 * 50.0 / 65_536.0).floor() as u64;
    assert!(want >= 1, "too short to cross a wrap");
    for s in report.uplink.iter().chain(&report.downlink) {
        assert!(s.wraps >= want, "{} wraps, want >= {want}", s.wraps);
    }
    assert!(report.simulated >= Duration::from_secs_f64(hours * 3600.0));
}

#[test]
fn the_soak_verifier_can_fail() {
    // Call 0 cut off for 2 s: the window misses its packets both ways and its uplink skips
    // sequence numbers on the wire; the soak must say so.
    let mut options = SoakOptions::hours(0.05);
    options.checkpoint = Duration::from_secs(60);
    options.cut = Some((Duration::from_secs(10), Duration::from_secs(2)));
    let report = soak(&options);
    eprintln!("{}", report.describe());
    let has = |needle: &str| report.failures.iter().any(|f| f.contains(needle));
    assert!(has("the sfu decrypted"), "{:?}", report.failures);
    assert!(has("call 0 uplink"), "{:?}", report.failures);
    assert!(has("forwarded packets"), "{:?}", report.failures);
}
