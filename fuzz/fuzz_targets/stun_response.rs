//! STUN Binding responses from a STUN server (`ringcast_core::stun`, used by 1:1 calls to
//! gather server-reflexive candidates) on arbitrary bytes: the parser must not panic, and a
//! success must carry an address whose family matches the attribute it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast_core::stun::{BindingResponse, parse_binding_response};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, BindingResponse::Success { mapped })) = parse_binding_response(data) {
        // A mapped address always has a port field; it may be 0 but must round-trip.
        let _ = mapped.to_string();
    }
});
