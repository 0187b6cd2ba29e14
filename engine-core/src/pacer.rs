//! The pacer: a timing wheel with one entry per call, and the lateness histogram.
//!
//! Every call has exactly one deadline at a time (its next frame, or a str0m timer, whichever
//! is first). The [`TimerWheel`] keeps those deadlines in 1 ms slots covering about a second
//! ahead, with a heap for the rare deadline further out (connect timeouts, idle calls).
//! [`TimerWheel::pop_due`] hands back every call due at `now` in one batch, so the runtime
//! drives them all and submits their packets together: no task, timer or sleep per call.
//!
//! Entries are never removed in place. When a call's deadline moves, the caller inserts a new
//! entry and remembers it; an entry that no longer matches its call's current deadline is
//! stale and skipped when popped (lazy deletion keeps insert and pop O(1)).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Slot width. Audio frames are 20 ms apart; 1 ms slots keep wheel-induced lateness under a
/// millisecond without touching many empty slots per tick.
pub const WHEEL_TICK: Duration = Duration::from_millis(1);
/// Number of slots: 1,024 ms ahead fit in the wheel, later deadlines go to the overflow heap.
const WHEEL_SLOTS: usize = 1024;

/// A timing wheel of `(deadline, key)` entries. See the [module docs](self).
#[derive(Debug)]
pub struct TimerWheel<K> {
    origin: Instant,
    /// Index of the first tick not yet fully popped.
    current: u64,
    slots: Vec<Vec<(Instant, K)>>,
    overflow: BinaryHeap<Reverse<(Instant, u64, K)>>,
    overflow_seq: u64,
    len: usize,
}

impl<K: Copy + Ord> TimerWheel<K> {
    /// An empty wheel whose tick 0 starts at `origin`.
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            current: 0,
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            overflow: BinaryHeap::new(),
            overflow_seq: 0,
            len: 0,
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        (since.as_nanos() / WHEEL_TICK.as_nanos()) as u64
    }

    /// Number of entries, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no entries are queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `key` at `at`. A deadline in the past is due at the next pop.
    pub fn insert(&mut self, at: Instant, key: K) {
        let tick = self.tick_of(at).max(self.current);
        self.len += 1;
        if tick - self.current < WHEEL_SLOTS as u64 {
            let slot = (tick % WHEEL_SLOTS as u64) as usize;
            if let Some(s) = self.slots.get_mut(slot) {
                s.push((at, key));
            }
        } else {
            self.overflow_seq += 1;
            self.overflow.push(Reverse((at, self.overflow_seq, key)));
        }
    }

    /// Moves every entry due at or before `now` into `out` (in no particular order within a
    /// tick). Entries later in the current tick stay.
    pub fn pop_due(&mut self, now: Instant, out: &mut Vec<(Instant, K)>) {
        let now_tick = self.tick_of(now);
        // Overflow entries that are now due or fit in the wheel move first.
        while let Some(Reverse((at, _, _))) = self.overflow.peek() {
            let due = *at <= now;
            let tick = self.tick_of(*at).max(self.current);
            if !due && tick - self.current >= WHEEL_SLOTS as u64 {
                break;
            }
            if let Some(Reverse((at, _, key))) = self.overflow.pop() {
                self.len -= 1;
                if due {
                    out.push((at, key));
                } else {
                    self.insert(at, key);
                }
            }
        }
        // Walk at most one revolution; anything beyond was moved in from overflow above.
        let last = now_tick.min(self.current + WHEEL_SLOTS as u64 - 1);
        let mut tick = self.current;
        while tick <= last {
            let slot = (tick % WHEEL_SLOTS as u64) as usize;
            if let Some(entries) = self.slots.get_mut(slot) {
                let before = entries.len();
                let mut i = 0;
                while i < entries.len() {
                    if entries[i].0 <= now {
                        out.push(entries.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                self.len -= before - entries.len();
                if tick < now_tick && !entries.is_empty() {
                    // Cannot happen: an entry in an earlier tick is at or before `now`.
                    let rest = std::mem::take(entries);
                    self.len -= rest.len();
                    out.extend(rest);
                }
            }
            tick += 1;
        }
        self.current = self.current.max(now_tick);
    }

    /// The earliest deadline, or `None` when empty. O(slots) in the worst case.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = self.overflow.peek().map(|Reverse((at, _, _))| *at);
        for offset in 0..WHEEL_SLOTS as u64 {
            let slot = ((self.current + offset) % WHEEL_SLOTS as u64) as usize;
            let Some(entries) = self.slots.get(slot) else {
                continue;
            };
            if let Some(min) = entries.iter().map(|(at, _)| *at).min() {
                best = Some(best.map_or(min, |b| b.min(min)));
                // Every later slot holds later deadlines than this whole slot.
                break;
            }
        }
        best
    }
}

/// Lateness histogram bucket width below [`FINE_LIMIT`].
const FINE_BUCKET: Duration = Duration::from_micros(100);
/// Fine buckets cover 0..10 ms; coarse ones 10 ms each up to 1 s; then one overflow bucket.
const FINE_LIMIT: Duration = Duration::from_millis(10);
const FINE_BUCKETS: usize = 100;
const COARSE_BUCKET: Duration = Duration::from_millis(10);
const COARSE_BUCKETS: usize = 99;
const BUCKETS: usize = FINE_BUCKETS + COARSE_BUCKETS + 1;

/// How late packets went out: actual send time minus due time. 100 µs resolution up to 10 ms,
/// 10 ms resolution up to 1 s, one bucket beyond. Fixed size, no allocation when recording.
#[derive(Clone, PartialEq, Eq)]
pub struct LatenessHistogram {
    buckets: [u64; BUCKETS],
    count: u64,
    max_us: u64,
}

impl Default for LatenessHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            count: 0,
            max_us: 0,
        }
    }
}

impl std::fmt::Debug for LatenessHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatenessHistogram")
            .field("count", &self.count)
            .field("p50", &self.percentile(0.5))
            .field("p99", &self.percentile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl LatenessHistogram {
    /// Records one lateness value.
    pub fn record(&mut self, lateness: Duration) {
        let us = lateness.as_micros() as u64;
        let idx = if lateness < FINE_LIMIT {
            (lateness.as_micros() / FINE_BUCKET.as_micros()) as usize
        } else {
            let coarse = ((lateness - FINE_LIMIT).as_micros() / COARSE_BUCKET.as_micros()) as usize;
            (FINE_BUCKETS + coarse).min(BUCKETS - 1)
        };
        if let Some(b) = self.buckets.get_mut(idx) {
            *b += 1;
        }
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The values recorded since `earlier` (a previous copy of this histogram). The maximum
    /// cannot be windowed; it stays the overall maximum.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = self.clone();
        for (a, b) in out.buckets.iter_mut().zip(earlier.buckets.iter()) {
            *a = a.saturating_sub(*b);
        }
        out.count = self.count.saturating_sub(earlier.count);
        out
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value recorded.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The upper edge of the bucket holding the `q` quantile (`0.0..=1.0`); zero when empty.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let edge = if i < FINE_BUCKETS {
                    FINE_BUCKET * (i as u32 + 1)
                } else if i < BUCKETS - 1 {
                    FINE_LIMIT + COARSE_BUCKET * ((i - FINE_BUCKETS) as u32 + 1)
                } else {
                    self.max()
                };
                return edge.min(self.max().max(FINE_BUCKET));
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_across_ticks() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(t0 + Duration::from_millis(20), 1u32);
        w.insert(t0 + Duration::from_millis(5), 2);
        w.insert(t0 + Duration::from_secs(5), 3); // overflow
        w.insert(t0, 4);
        assert_eq!(w.next_deadline(), Some(t0));
        let mut out = Vec::new();
        w.pop_due(t0 + Duration::from_millis(4), &mut out);
        assert_eq!(out.iter().map(|e| e.1).collect::<Vec<_>>(), vec![4]);
        out.clear();
        w.pop_due(t0 + Duration::from_millis(20), &mut out);
        let mut keys: Vec<u32> = out.iter().map(|e| e.1).collect();
        keys.sort();
        assert_eq!(keys, vec![1, 2]);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(5)));
        out.clear();
        w.pop_due(t0 + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn entry_later_in_the_same_tick_waits() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(t0 + Duration::from_micros(900), 1u32);
        let mut out = Vec::new();
        w.pop_due(t0 + Duration::from_micros(500), &mut out);
        assert!(out.is_empty());
        w.pop_due(t0 + Duration::from_micros(900), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn past_deadlines_are_due_at_once() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut out = Vec::new();
        w.pop_due(t0 + Duration::from_secs(3), &mut out);
        w.insert(t0 + Duration::from_secs(1), 9u32);
        w.pop_due(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = LatenessHistogram::default();
        for _ in 0..99 {
            h.record(Duration::from_micros(150));
        }
        h.record(Duration::from_millis(30));
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(0.5), Duration::from_micros(200));
        assert_eq!(h.percentile(0.99), Duration::from_micros(200));
        assert_eq!(h.percentile(1.0), Duration::from_millis(30));
        assert_eq!(h.max(), Duration::from_millis(30));
        let mut g = LatenessHistogram::default();
        g.merge(&h);
        assert_eq!(g, h);
    }

    proptest::proptest! {
        #[test]
        fn never_pops_early_nor_loses_entries(offsets in proptest::collection::vec(0u64..3_000_000, 1..200), steps in proptest::collection::vec(1u64..50_000, 1..400)) {
            let t0 = Instant::now();
            let mut w = TimerWheel::new(t0);
            for (i, us) in offsets.iter().enumerate() {
                w.insert(t0 + Duration::from_micros(*us), i);
            }
            let mut now = t0;
            let mut seen = 0;
            let mut out = Vec::new();
            for s in steps {
                now += Duration::from_micros(s);
                out.clear();
                w.pop_due(now, &mut out);
                for (at, _) in &out {
                    proptest::prop_assert!(*at <= now);
                }
                seen += out.len();
            }
            out.clear();
            w.pop_due(t0 + Duration::from_secs(10), &mut out);
            seen += out.len();
            proptest::prop_assert_eq!(seen, offsets.len());
            proptest::prop_assert!(w.is_empty());
        }
    }
}
