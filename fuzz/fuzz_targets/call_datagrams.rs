//! Structure-aware: mutated real datagrams (STUN, DTLS, SRTP, SRTCP captured from a
//! simulated call, see `corpus/call_datagrams`) sent as the SFU into a connected call. The
//! call must not panic, must end cleanly or stay connected and sending, and the other call in
//! the chat must not notice.
//!
//! One connected world per process takes input after input (`call::Persistent`): building it
//! (a DTLS handshake) costs ~150 ms under ASan, an input ~1 ms. `RINGCAST_FUZZ_FRESH=1` builds
//! a fresh world for every input instead (the old mode, ~7 inputs a second). A failure is
//! retried on a fresh world before the process aborts, so a crash file reproduces alone
//! (README.md, "call_datagrams").
#![no_main]

#[path = "../harness/call.rs"]
mod call;

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static WORLD: RefCell<call::Persistent> = RefCell::new(call::Persistent::default());
    static FRESH: bool = std::env::var_os("RINGCAST_FUZZ_FRESH").is_some_and(|v| v == "1");
}

fuzz_target!(|data: &[u8]| {
    if FRESH.with(|f| *f) {
        let _ = call::run(data);
    } else {
        let _ = WORLD.with_borrow_mut(|w| w.feed(data));
    }
});
