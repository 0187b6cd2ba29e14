//! Join/response JSON parsing: ringcast's typed, path-naming parser against the floor of
//! parsing the same bytes into an untyped `serde_json::Value` (which any parser must at least
//! do). `cargo bench -p ringcast-benches --bench signaling`.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use ringcast_benches::SAMPLE_RESPONSE;
use ringcast_core::signaling::group::JoinResponse;

fn parse_response(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_response_parse");
    let bytes = SAMPLE_RESPONSE.as_bytes();
    group.bench_function("serde_json_value_baseline", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(bytes)))
    });
    group.bench_function("ringcast_typed", |b| {
        b.iter(|| JoinResponse::parse(black_box(bytes)))
    });
    group.finish();
}

criterion_group!(benches, parse_response);
criterion_main!(benches);
