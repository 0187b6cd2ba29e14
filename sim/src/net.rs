//! The network models: the [`NetConfig`] each scenario draws from its seed, and how far the
//! impairments it draws may smear the SFU's tone check.

use std::time::Duration;

use ringcast_core::sim::NetConfig;

use crate::scenario::Scenario;
use crate::tone::FRAME;

/// The dominant frequency the SFU decodes must be this close to the chat's tone on a network
/// without loss, duplication or reordering.
const TONE_TOLERANCE_HZ: f32 = 5.0;
/// The same where the network reorders (jitter above the 20 ms packet spacing), duplicates
/// or loses: the SFU decodes what arrives in arrival order, without a jitter
/// buffer or loss concealment, so reordered, repeated and missing frames put phase jumps into
/// the analysed audio and
/// smear the peak by up to ~25 Hz. Still well under half the 110 Hz between two chats'
/// tones, so a call carrying another chat's audio (or silence) still fails.
const IMPAIRED_TONE_TOLERANCE_HZ: f32 = 40.0;

/// A duration of `lo..=hi` milliseconds drawn from `rng`.
pub(crate) fn draw_ms(rng: &mut fastrand::Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.u64(lo..=hi))
}

/// The network `scenario` runs on, drawn from `rng`:
///
/// - `lossy`: 0-30 % loss, 5-40 ms latency, up to 10 ms jitter;
/// - `reorder`: 20-80 ms jitter (above the 20 ms packet spacing), up to 3 % loss;
/// - `duplicate`: 5-50 % duplicated, up to 3 % loss;
/// - `jitter`: 20-150 ms latency plus up to 250 ms jitter, up to 3 % loss;
/// - every other scenario (partitions, restarts, MTU) disturbs something else, on a quiet
///   network: clean (half the seeds) or with up to 1 % loss (the other half), so the strict
///   tone check applies where it can.
pub(crate) fn draw(scenario: Scenario, rng: &mut fastrand::Rng) -> NetConfig {
    let quiet = |rng: &mut fastrand::Rng| NetConfig {
        latency: draw_ms(rng, 5, 40),
        jitter: draw_ms(rng, 0, 10),
        loss: if rng.bool() { 0.0 } else { rng.f64() * 0.01 },
        duplicate: 0.0,
    };
    match scenario {
        Scenario::Lossy => NetConfig {
            latency: draw_ms(rng, 5, 40),
            jitter: draw_ms(rng, 0, 10),
            loss: rng.f64() * 0.30,
            duplicate: 0.0,
        },
        Scenario::Reorder => NetConfig {
            latency: draw_ms(rng, 5, 30),
            jitter: draw_ms(rng, 20, 80),
            loss: rng.f64() * 0.03,
            duplicate: 0.0,
        },
        Scenario::Duplicate => NetConfig {
            latency: draw_ms(rng, 5, 30),
            jitter: draw_ms(rng, 0, 10),
            loss: rng.f64() * 0.03,
            duplicate: 0.05 + rng.f64() * 0.45,
        },
        Scenario::Jitter => NetConfig {
            latency: draw_ms(rng, 20, 150),
            jitter: draw_ms(rng, 0, 250),
            loss: rng.f64() * 0.03,
            duplicate: 0.0,
        },
        _ => quiet(rng),
    }
}

/// The path MTU `scenario` runs with, drawn from `rng`: 576-1000 bytes for `mtu`, none (the
/// network carries any size) for the others, which draw nothing.
pub(crate) fn draw_path_mtu(scenario: Scenario, rng: &mut fastrand::Rng) -> Option<usize> {
    (scenario == Scenario::Mtu).then(|| rng.usize(576..=1000))
}

/// How close the SFU's decoded tone must be to the chat's on `net`.
pub(crate) fn tone_tolerance_hz(net: &NetConfig) -> f32 {
    if net.jitter < FRAME && net.loss == 0.0 && net.duplicate == 0.0 {
        TONE_TOLERANCE_HZ
    } else {
        IMPAIRED_TONE_TOLERANCE_HZ
    }
}
