//! The 1:1-call signaling channel on arbitrary packets: flags byte (framing, receiving role),
//! then `[u16 BE length][packet]` frames fed to `EncryptedChannel::receive` with acks and
//! resends polled in between. Must not panic, must count every packet, and must still accept a
//! genuine packet afterwards.
#![no_main]

#[path = "../harness/p2p.rs"]
mod p2p;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = p2p::decrypt(data);
});
