//! What a group call keeps on the heap once it has applied the SFU's answer, before any
//! datagram: the state every held call of an engine carries (`load --hold` measures the whole
//! engine; docs/performance.md, "Scale").
//!
//! A counting allocator records, on this thread only, the bytes allocated and freed while the
//! call is created and connected; what is still live at the end is the call's. The bound is set
//! between what the call keeps with our str0m patch (third_party/README.md, "Memory per
//! session") and without it: the padding probe's RTX cache (~4 KB of empty slots) and the send
//! stream stored inline in a four-bucket map (~7 KB) alone add more than the margin.
#![allow(clippy::unwrap_used)]
// A counting allocator is the one place a test needs `unsafe`: it forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use ringcast_core::call::{Call, CallConfig};
use ringcast_core::crypto::{CallCrypto, CryptoOptions, generate_certificate};
use ringcast_core::signaling::group::JoinResponse;

struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed on this thread while counting.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|live| live.set(live.get() + delta));
        }
    });
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The heap a connected-but-silent call keeps may not grow past this (bytes; the `Call` value
/// itself, ~13.8 KB, is on the stack here and in a boxed slot in the engine, not counted).
/// Measured when written: 16.1 KB with the patch, 27.9 KB without its memory part.
const HEAP_PER_CALL_MAX: i64 = 22 * 1024;

/// A Telegram-shaped answer (the group-response fuzz corpus's own sample: two candidates, audio
/// and video sections; the call has no video track, so only audio is set up).
fn answer() -> JoinResponse {
    JoinResponse::parse(include_bytes!(
        "../../fuzz/corpus/group_response/telegram_strings.json"
    ))
    .unwrap()
}

#[test]
fn a_connected_call_keeps_little_heap() {
    let provider = CallCrypto::new(CryptoOptions::default())
        .unwrap()
        .provider();
    let answer = answer();
    let now = Instant::now();
    let mut held = Vec::new();
    let mut per_call = Vec::new();
    for seed in 0..4u64 {
        let mut config = CallConfig::new(seed, generate_certificate().unwrap());
        config.crypto = Some(provider.clone());
        LIVE.with(|l| l.set(0));
        COUNTING.with(|c| c.set(true));
        let mut call = Call::new(now, config).unwrap();
        call.connect(now, &answer, "10.0.0.2:5000".parse().unwrap())
            .unwrap();
        COUNTING.with(|c| c.set(false));
        per_call.push(LIVE.with(Cell::get));
        // Kept alive, so that nothing counted above is freed before it is read.
        held.push(call);
    }
    eprintln!("heap kept per connected call: {per_call:?} bytes");
    assert_eq!(held.len(), 4);
    for live in per_call {
        // A call that kept nothing would mean the counter is broken, not that the call is lean.
        assert!(live > 4 * 1024, "only {live} bytes counted");
        assert!(
            live <= HEAP_PER_CALL_MAX,
            "a connected call keeps {live} bytes of heap, more than {HEAP_PER_CALL_MAX}"
        );
    }
}
