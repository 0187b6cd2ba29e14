//! The group-call join payload parser (the SFU side) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringcast_core::signaling::group::JoinPayload::parse(data);
});
