//! The Ogg/Opus passthrough reader on arbitrary bytes: open, read every packet to the end or
//! the first error. Must not panic, must stop, must not hand out more than the input holds.
#![no_main]

#[path = "../harness/ogg.rs"]
mod ogg;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ogg::read_all(data);
});
