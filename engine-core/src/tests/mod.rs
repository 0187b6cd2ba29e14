//! In-crate tests of the call state machines, on the in-memory harness of [`util`]: what a
//! [`crate::Call`] and a [`crate::p2p_call::P2pCall`] promise, pinned next to their code.
//! End-to-end tests over real UDP sockets live with the runtime and sfu-mock.

mod call;
mod hostile;
mod p2p_call;
mod util;
