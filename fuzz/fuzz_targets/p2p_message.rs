//! The 1:1-call JSON control messages (`InitialSetup`, `Candidates`, `NegotiateChannels`,
//! `MediaState`) on arbitrary bytes: parse must not panic, and what parses must emit JSON that
//! parses back to the same value.
#![no_main]

#[path = "../harness/p2p.rs"]
mod p2p;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2p::message(data);
});
