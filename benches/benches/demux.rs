//! Routing a datagram to its call among 10,000 on one socket: ringcast's `Demux` (a map by
//! remote address, then by STUN ufrag) against asking every call "is this yours?" in turn,
//! which is what str0m's `Rtc::accepts` loop in its chat example does.
//! `cargo bench -p ringcast-benches --bench demux`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use ringcast_core::demux::Demux;

const CALLS: u32 = 10_000;

fn addr(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0xC612_0000 | (i / 50_000));
    SocketAddr::V4(SocketAddrV4::new(ip, 10_000 + (i % 50_000) as u16))
}

fn demux(c: &mut Criterion) {
    let mut table = Demux::new();
    let mut calls = Vec::new();
    for i in 0..CALLS {
        table
            .register_remote(addr(i), i)
            .expect("distinct addresses");
        calls.push(addr(i));
    }
    // An RTP-looking datagram from call 7,777's SFU address.
    let packet = [0x80u8; 120];
    let probe = addr(7_777);
    let mut group = c.benchmark_group("demux_10k_calls");
    group.bench_function("ringcast_map", |b| {
        b.iter(|| table.route(black_box(&probe), black_box(&packet)))
    });
    group.bench_function("ask_every_call", |b| {
        b.iter(|| {
            calls
                .iter()
                .position(|remote| remote == black_box(&probe))
                .map(|i| i as u32)
        })
    });
    group.finish();
}

criterion_group!(benches, demux);
criterion_main!(benches);
