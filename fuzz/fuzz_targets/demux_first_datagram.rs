//! The first datagram from a source no call knows, through the endpoint's real routing path
//! (`Endpoint::handle_datagram`: per-socket `Demux`, then the call), plus the pure demux
//! helpers (`classify`, `rtp_header`, `stun_local_ufrag`). It must be dropped and counted
//! unless its STUN USERNAME names a call on that socket, and never touch a call otherwise.
#![no_main]

#[path = "../harness/demux.rs"]
mod demux;

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

thread_local! {
    // Building the endpoint (three str0m calls) costs more than a run; reuse it until a
    // datagram changes a call. An unroutable one changes nothing but counters. A check routed
    // by its ufrag whose integrity fails (nearly every mutated one) is dropped by the call with
    // no answer; the next inputs then assert that no call learned its source. Only a check the
    // call answered, which may have added a peer-reflexive candidate, spends the fixture.
    static FIXTURE: RefCell<Option<demux::Fixture>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with_borrow_mut(|slot| {
        let fixture = slot.get_or_insert_with(demux::Fixture::new);
        if fixture.feed(data) == (demux::Outcome::RoutedByUfrag { answered: true }) {
            *slot = None;
        }
    });
});
