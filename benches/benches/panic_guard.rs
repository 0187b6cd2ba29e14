//! What the per-call panic guard costs: the endpoint runs every call's command, datagram,
//! timer and poll under `catch_unwind` (a panic ends that call alone). Same run, same calls,
//! guard on and off: 100 calls streaming in the deterministic simulator (real str0m, DTLS,
//! SRTP; sfu-mock's SFU in header-only mode, so the endpoint's work dominates), one iteration
//! = 20 ms of virtual time = 100 RTP packets sent.
//! `cargo bench -p ringcast-benches --bench panic_guard`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ringcast_core::media::ToneSource;
use ringcast_core::sim::{NetConfig, World, sim_crypto};
use ringcast_core::str0m::config::DtlsCert;
use sfu_mock::{Sfu, SfuConfig};

const CALLS: usize = 100;
const STEP: Duration = Duration::from_millis(20);

fn cert() -> DtlsCert {
    sfu_mock::server::generate_cert().expect("certificate")
}

/// A world with [`CALLS`] connected calls streaming tones.
fn streaming_world(seed: u64) -> World<Sfu> {
    let epoch = Instant::now();
    let addr: SocketAddr = "198.19.0.1:3478".parse().expect("address");
    let mut config = SfuConfig::new(addr, seed, cert());
    config.crypto = Some(sim_crypto(seed ^ 1));
    // The SFU only reads RTP headers (no SRTP decryption, decoding or forwarding), so the
    // time is mostly the endpoint's: what the guard wraps.
    config.header_only = true;
    config.analyse_audio = false;
    config.forward_audio = false;
    let sfu = Sfu::new(epoch, config);
    let mut world = World::new(seed, epoch, NetConfig::default(), sfu, cert());
    for i in 0..CALLS {
        let tone = ToneSource::new(300.0 + 10.0 * i as f32, None).expect("tone");
        world
            .add_call((i % 10) as i64 + 1, Box::new(tone))
            .expect("call");
    }
    world.run_for(Duration::from_secs(3));
    assert!(
        world.calls().iter().all(|c| c.connected()),
        "every call connects"
    );
    world
}

fn panic_guard(c: &mut Criterion) {
    let mut group = c.benchmark_group("panic_guard_100_calls_20ms");
    for (name, on) in [("guarded", true), ("unguarded", false)] {
        let mut world = streaming_world(7);
        world.set_panic_guard(on);
        group.bench_function(name, |b| b.iter(|| world.run_for(STEP)));
    }
    group.finish();
}

criterion_group!(benches, panic_guard);
criterion_main!(benches);
