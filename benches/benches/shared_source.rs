//! Fan-out of one radio stream to N calls for one 20 ms frame: a `SharedSource` (one encode,
//! N `Arc` clones) against N independent encoders (what a process per call does).
//! `cargo bench -p ringcast-benches --bench shared_source`.

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use ringcast_core::media::{FrameSource, SharedSource, ToneSource};

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out_one_frame");
    group.sample_size(20);
    for n in [10usize, 100] {
        group.bench_with_input(BenchmarkId::new("shared_source", n), &n, |b, &n| {
            let shared = SharedSource::new(Box::new(ToneSource::new(440.0, None).expect("tone")));
            let mut readers: Vec<_> = (0..n).map(|_| shared.reader()).collect();
            b.iter(|| {
                for r in &mut readers {
                    black_box(r.next_frame().expect("frame"));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("encoder_per_call", n), &n, |b, &n| {
            let mut encoders: Vec<_> = (0..n)
                .map(|_| ToneSource::new(440.0, None).expect("tone"))
                .collect();
            b.iter(|| {
                for e in &mut encoders {
                    black_box(e.next_frame().expect("frame"));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
