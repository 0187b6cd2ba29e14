//! TURN server datagrams (`ringcast_core::turn`, relay candidates of 1:1 calls) on arbitrary
//! bytes. The input is a sequence of `[u16 BE length][datagram]`; before each datagram is fed,
//! its transaction id (bytes 8..20) is overwritten with the one of the client's outstanding
//! request when the length's top bit is set, so the fuzzer reaches the response paths (401
//! with realm/nonce, 438, Allocate/Refresh/CreatePermission success, errors) and not only the
//! "not ours" check. Nothing may panic; the client's own requests must stay well-formed.
#![no_main]

#[path = "../harness/turn.rs"]
mod turn;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = turn::run(data);
});
