//! sfu-mock's control API bodies: the join payload as the SFU handles it (`Sfu::join`, which
//! parses and then sets up a participant) and the leave body (`control::parse_leave`).
#![no_main]

#[path = "../harness/control.rs"]
mod control;

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static FIXTURE: RefCell<Option<control::Fixture>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with_borrow_mut(|slot| {
        if slot.as_ref().is_some_and(control::Fixture::worn_out) {
            *slot = None;
        }
        let _ = slot.get_or_insert_with(control::Fixture::new).feed(data);
    });
});
