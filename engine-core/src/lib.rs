//! ringcast-core: the sans-IO heart of ringcast.
//!
//! This crate holds everything about a call that can be decided without touching the operating
//! system. A guide, top down:
//!
//! - [`signaling`]: the wire formats. Telegram's group-call join/answer JSON
//!   ([`signaling::group`]) and the 1:1 call signaling ([`signaling::p2p`]: Diffie-Hellman key
//!   exchange, encrypted channel, control messages), on one JSON module.
//! - [`Call`] (group) and [`p2p_call::P2pCall`] (1:1): one state machine per call. Each is its
//!   signaling state plus a [`transport::Transport`] (one [`str0m`] `Rtc`: ICE, DTLS, SRTP, with
//!   typed refusals and ends) plus media tracks ([`media::track`]: the outgoing
//!   [`media::track::AudioTrack`], the incoming [`media::track::IncomingStreams`]). 1:1 calls
//!   add full ICE candidates from [`stun`] and [`turn`].
//! - [`media`]: sources of 20 ms Opus frames (tone, Ogg/Opus passthrough, shared, PCM in and
//!   out) and the tracks that send them.
//! - [`endpoint::Endpoint`]: a shard's worth of calls minus the sockets: one slab keyed by
//!   [`endpoint::CallId`], [`placement`] (the socket rule and routing), [`demux`], the
//!   [`pacer`] timer wheel, bounded event queue, reaping.
//! - Behind the `sim` feature, a deterministic network simulator (`sim`) that drives the same
//!   `Endpoint` on a virtual clock.
//!
//! Tests of the state machines live next to them: unit tests per module and an in-memory pair
//! harness (`src/tests/`) for `Call` and `P2pCall`.
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
//!             call.handle_input(now, Input::Datagram(Datagram::new(..))) / call.handle_input(now, Input::Timeout)
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
pub mod incoming_video;
pub mod media;
pub mod p2p_call;
pub mod pacer;
pub mod placement;
pub mod replay;
pub mod rtcp_craft;
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
pub use media::track::TrackKind;
pub use media::{FrameSource, OpusFrame, SourceError};
pub use signaling::SignalingError;
pub use transport::Datagram;

/// Re-exported so users can name str0m types (certificates, crypto providers) without a direct
/// dependency on the exact str0m version ringcast was built with.
pub use str0m;
