//! The SFU answer parser on arbitrary bytes (`updateGroupCallConnection` JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringcast_core::signaling::group::JoinResponse::parse(data);
});
