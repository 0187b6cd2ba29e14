//! The sweep runner: every `(seed, scenario)` of a [`SweepOptions`] on worker threads, each run
//! single-threaded and deterministic wherever it runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::report::{RunReport, SweepReport};
use crate::run::{RunOptions, run};
use crate::scenario::Scenario;

/// What to sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepOptions {
    /// How many seeds.
    pub seeds: u64,
    /// The first seed; seeds run `first_seed..first_seed + seeds`.
    pub first_seed: u64,
    /// The scenarios each seed runs.
    pub scenarios: Vec<Scenario>,
    /// Worker threads (each run is single-threaded and deterministic wherever it runs).
    pub threads: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            seeds: 50,
            first_seed: 1,
            scenarios: Scenario::ALL.to_vec(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Runs every `(seed, scenario)` of `options` on `options.threads` threads, calling `progress`
/// with each finished run (from the worker threads, in completion order).
pub fn sweep(options: &SweepOptions, progress: &(dyn Fn(&RunReport) + Sync)) -> SweepReport {
    let started = Instant::now();
    let jobs: Vec<(u64, Scenario)> = (0..options.seeds)
        .flat_map(|i| {
            let seed = options.first_seed.wrapping_add(i);
            options.scenarios.iter().map(move |s| (seed, *s))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<RunReport>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(seed, scenario)) = jobs.get(i) else {
                return;
            };
            let r = run(scenario, seed, &RunOptions::default());
            progress(&r);
            results
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..options.threads.max(1) {
            s.spawn(worker);
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|r| (r.seed, r.scenario));
    let mut report = SweepReport {
        seeds: options.seeds,
        ..SweepReport::default()
    };
    for r in results {
        report.add(r);
    }
    report.wall = started.elapsed();
    report
}
