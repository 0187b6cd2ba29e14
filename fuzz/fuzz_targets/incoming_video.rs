//! Another participant's video (RTP reassembly and depacketizing of VP8 and H.264) and the
//! SFU's data channel messages, as a call receives them, on arbitrary input: nothing panics,
//! queues stay bounded, and only complete, decodable frames are handed on.
#![no_main]

#[path = "../harness/video.rs"]
mod video;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = video::incoming(data);
});
