//! Structure-aware: mutated real datagrams (STUN, DTLS, SRTP, SRTCP captured from a
//! simulated call, see `corpus/call_datagrams`) sent as the SFU into a connected call,
//! rebuilt from a fixed seed for every input (about 20 ms). The call must not panic, must end
//! cleanly or stay connected and sending, and the other call in the chat must not notice.
#![no_main]

#[path = "../harness/call.rs"]
mod call;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = call::run(data);
});
