//! Cost of creating and connecting a call (`Call::new` + `Call::connect`, which builds the
//! str0m `Rtc`): str0m's default crypto provider (builds and validates a dimpl config per
//! `Rtc`) against ringcast's `CallCrypto` (one validated config shared by every call).
//! `cargo bench -p ringcast-benches --bench call_create`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use ringcast_benches::SAMPLE_RESPONSE;
use ringcast_core::call::{Call, CallConfig};
use ringcast_core::crypto::{CallCrypto, CryptoOptions, generate_certificate};
use ringcast_core::signaling::group::JoinResponse;

fn create_and_connect(c: &mut Criterion) {
    let cert = generate_certificate().expect("certificate");
    let response = JoinResponse::parse(SAMPLE_RESPONSE.as_bytes()).expect("sample parses");
    let local: SocketAddr = "192.0.2.1:40000".parse().expect("address");
    let shared = CallCrypto::new(CryptoOptions::default())
        .expect("dtls config")
        .provider();
    let default = Arc::new(ringcast_core::str0m::crypto::from_feature_flags());
    let mut group = c.benchmark_group("call_create_connect");
    group.sample_size(30);
    for (name, crypto) in [
        ("str0m_default_provider", default),
        ("ringcast_shared_config", shared),
    ] {
        group.bench_function(name, |b| {
            let mut seed = 0;
            b.iter(|| {
                seed += 1;
                let mut config = CallConfig::new(seed, cert.clone());
                config.crypto = Some(crypto.clone());
                let now = Instant::now();
                let mut call = Call::new(now, config).expect("call");
                call.connect(now, &response, local).expect("connect");
                call
            })
        });
    }
    group.finish();
}

criterion_group!(benches, create_and_connect);
criterion_main!(benches);
