//! ringcast-core: the sans-IO heart of ringcast.
//!
//! This crate holds everything about a call that can be decided without touching the operating
//! system: the Telegram group-call signaling ([`signaling`]), one state machine per call on top of
//! [`str0m`] ([`Call`]), media sources that yield 20 ms Opus frames ([`media`]), the datagram
//! demultiplexer for a shared socket ([`demux`]) and, behind the `sim` feature, a deterministic
//! network simulator (`sim`).
//!
//! The contract, as in `quinn-proto` and `str0m`: **no sockets, no threads, no clock reads, no OS
//! randomness.** Time comes in as an argument (`now: Instant`) to every method that can change
//! timers; randomness comes from a seed in [`CallConfig`]. Given the same inputs in the same order,
//! a [`Call`] produces the same outputs. Running it on a real network is the job of the
//! `ringcast` crate (engine-runtime).
//!
//! # Run loop
//!
//! ```text
//! loop {
//!     match call.poll_output() {
//!         Output::Transmit(t) => socket.send_to(&t.contents, t.destination),
//!         Output::Event(e) => handle(e),
//!         Output::Timeout(at) => {
//!             // wait for a datagram or `at`, whichever comes first, then feed it in:
//!             call.handle_input(now, Input::Datagram(..)) / call.handle_input(now, Input::Timeout)
//!         }
//!     }
//! }
//! ```
//!
//! After *every* `handle_input` the caller drains `poll_output` until it returns
//! [`Output::Timeout`] (str0m's single-mutation invariant).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod call;
pub mod crypto;
pub mod demux;
pub mod endpoint;
pub mod flight;
pub mod media;
pub mod p2p_call;
pub mod pacer;
pub mod placement;
pub mod replay;
pub mod signaling;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stun;
pub mod transport;
pub mod turn;

#[cfg(test)]
mod tests;

pub use call::{
    Call, CallConfig, CallError, CallState, Command, EndReason, Event, Input, Output, Transmit,
};
pub use media::{FrameSource, OpusFrame, SourceError};
pub use signaling::SignalingError;

/// Re-exported so users can name str0m types (certificates, crypto providers) without a direct
/// dependency on the exact str0m version ringcast was built with.
pub use str0m;
