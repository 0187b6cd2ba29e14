//! Pacer tick over N playing calls: ringcast's timing wheel against the two obvious
//! alternatives, a binary heap of deadlines and a scan over every call's deadline.
//! One "tick" here is 1 ms of virtual time: pop what is due, reschedule it 20 ms later.
//! `cargo bench -p ringcast-benches --bench pacer`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use ringcast_core::pacer::TimerWheel;

const FRAME: Duration = Duration::from_millis(20);
const TICK: Duration = Duration::from_millis(1);

fn pacer_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pacer_tick");
    for calls in [1_000usize, 10_000] {
        // Calls' phases spread over the 20 ms frame, as connect times spread them.
        let t0 = Instant::now();
        let phase = |i: usize| t0 + Duration::from_micros((i as u64 * 7_919) % 20_000);

        group.bench_with_input(BenchmarkId::new("timing_wheel", calls), &calls, |b, &n| {
            let mut wheel = TimerWheel::new(t0);
            for i in 0..n {
                wheel.insert(phase(i), i);
            }
            let mut now = t0;
            let mut due = Vec::with_capacity(n);
            b.iter(|| {
                now += TICK;
                due.clear();
                wheel.pop_due(now, &mut due);
                for (at, i) in due.drain(..) {
                    wheel.insert(at + FRAME, black_box(i));
                }
            })
        });

        group.bench_with_input(BenchmarkId::new("binary_heap", calls), &calls, |b, &n| {
            let mut heap: BinaryHeap<Reverse<(Instant, usize)>> =
                (0..n).map(|i| Reverse((phase(i), i))).collect();
            let mut now = t0;
            b.iter(|| {
                now += TICK;
                while let Some(Reverse((at, i))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    heap.push(Reverse((at + FRAME, black_box(i))));
                }
            })
        });

        group.bench_with_input(
            BenchmarkId::new("scan_all_calls", calls),
            &calls,
            |b, &n| {
                let mut deadlines: Vec<Instant> = (0..n).map(phase).collect();
                let mut now = t0;
                b.iter(|| {
                    now += TICK;
                    for d in deadlines.iter_mut() {
                        if *d <= now {
                            *d += FRAME;
                            black_box(&d);
                        }
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, pacer_tick);
criterion_main!(benches);
