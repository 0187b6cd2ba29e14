//! Signaling V3 (12.0.0/13.0.0) on arbitrary blobs: flags byte (bit 1: the receiver is the
//! caller), then `[u16 BE length][blob]` frames fed to a `SignalingLink` whose blobs are SCTP
//! packets, timers driven and replies drained in between. Must not panic and must count every
//! blob exactly once.
#![no_main]

#[path = "../harness/p2p.rs"]
mod p2p;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2p::sctp(data);
});
