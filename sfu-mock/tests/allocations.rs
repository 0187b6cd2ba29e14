//! Steady-state sending allocates nothing per packet.
//!
//! A counting global allocator counts allocations made inside the endpoint's pacer ticks
//! (frame fetch, RTP write, SRTP, queueing the datagrams), while 20 calls stream pre-encoded
//! frames (a looping source that only clones `Arc`s). Packets take the send fast path
//! (`DirectApi::write_rtp_into`, our str0m patch in third_party/): str0m protects each one into
//! a buffer the simulator handed back after delivering an earlier datagram, as the runtime does
//! with the buffers its sockets sent. What is left is str0m's periodic work per call (RTCP
//! sender reports, consent checks, stats), measured against the same calls paused.
#![allow(clippy::unwrap_used)]
// A counting allocator is the one place a test needs `unsafe`: it forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringcast_core::media::{FrameSource, LoopedFrames, OpusFrame, ToneSource};
use ringcast_core::sim::{NetConfig, World, sim_crypto};
use sfu_mock::server::generate_cert;
use sfu_mock::{Sfu, SfuConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counting(on: bool) {
    COUNTING.with(|c| c.set(on));
}

#[test]
fn steady_state_sending_allocates_nothing_per_packet() {
    let mut tone = ToneSource::new(440.0, None).unwrap();
    let frames: Vec<OpusFrame> = (0..50)
        .map(|_| tone.next_frame().unwrap().unwrap())
        .collect();
    let epoch = Instant::now();
    let addr: SocketAddr = "198.19.0.1:3478".parse().unwrap();
    let mut config = SfuConfig::new(addr, 1, generate_cert().unwrap());
    config.crypto = Some(sim_crypto(2));
    config.analyse_audio = false;
    config.forward_audio = false;
    let sfu = Sfu::new(epoch, config);
    let mut w = World::new(
        1,
        epoch,
        NetConfig::default(),
        sfu,
        generate_cert().unwrap(),
    );
    for i in 0..20 {
        // Each call starts at another frame of the loop.
        let mut source = LoopedFrames::new(frames.clone());
        for _ in 0..i {
            source.next_frame().unwrap();
        }
        w.add_call(i as i64, Box::new(source)).unwrap();
    }
    // Connect and warm up: buffers, queues and maps reach their steady size.
    w.run_for(Duration::from_secs(8));
    assert!(w.calls().iter().all(|c| c.connected()));

    let packets_before = w.endpoint_stats().packets_sent;
    ALLOCATIONS.store(0, Ordering::Relaxed);
    w.set_tick_hook(Some(counting));
    w.run_for(Duration::from_secs(4));
    w.set_tick_hook(None);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let packets = w.endpoint_stats().packets_sent - packets_before;
    assert!(packets >= 20 * 190, "only {packets} packets in 4 s");

    // Baseline in the same run: the same calls paused for as long. No media moves, but the
    // same ticks run str0m's own timers (STUN keepalives, RTCP, stats).
    for i in 0..20 {
        w.command(
            ringcast_core::sim::SimCallId(i),
            ringcast_core::Command::Pause,
        )
        .unwrap();
    }
    w.run_for(Duration::from_secs(1));
    ALLOCATIONS.store(0, Ordering::Relaxed);
    w.set_tick_hook(Some(counting));
    w.run_for(Duration::from_secs(4));
    w.set_tick_hook(None);
    let idle = ALLOCATIONS.load(Ordering::Relaxed);

    let per_packet = allocations as f64 / packets as f64;
    let media_per_packet = allocations.saturating_sub(idle) as f64 / packets as f64;
    eprintln!(
        "{allocations} allocations in ticks for {packets} packets ({per_packet:.3} per packet); \
         {idle} in the same ticks with media paused; {media_per_packet:.3} per packet for media"
    );
    // Per packet: nothing. What sending adds over the paused baseline is str0m's periodic
    // work of a sending stream, which runs in the same ticks: RTCP sender reports with SDES,
    // egress stats and feedback (sampled backtraces show only `create_sdes`,
    // `StreamTxStats::fill`, `poll_feedback` and `protect_rtcp`). It comes to ~0.3 per packet
    // here (~15 per call per second); a single allocation per packet anywhere in the send path
    // (as str0m's own `protect_rtp` made before our patch) would add 1.0 on top.
    let per_call_second = allocations.saturating_sub(idle) as f64 / (20.0 * 4.0);
    eprintln!(
        "{per_call_second:.2} allocations per call per second of sending (str0m's RTCP/stats)"
    );
    assert!(
        media_per_packet < 0.6,
        "{media_per_packet:.3} allocations per packet"
    );
    // Keep the Arc import honest: frames share their payload.
    assert!(Arc::ptr_eq(&frames[0].data, &frames[0].clone().data));
}
