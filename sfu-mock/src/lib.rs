//! sfu-mock: a Telegram-like SFU for tests, demos and load runs.
//!
//! One UDP port serves every participant of every chat. The SFU plays Telegram's side of the
//! group-call roles (full ICE agent, controlling; DTLS client), answers the join JSON of
//! `phone.joinGroupCall` with the transport/audio JSON of `updateGroupCallConnection`,
//! identifies a participant by its 5-tuple once ICE has nominated it, ignores audio without the
//! ssrc-audio-level extension, forwards audio within a chat and verifies what it receives
//! (packets, loss, dominant frequency of the decoded audio).
//!
//! [`Sfu`] is the sans-IO core; it is also the SFU node of ringcast-core's simulator (it
//! implements `ringcast_core::sim::SimSfu`, used by the simulation tests here and the sweep in
//! the `ringcast-sim` crate). [`server::Server`] runs it on a real UDP socket with a loopback
//! HTTP control API, in-process or as the `sfu-mock` binary.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod analysis;
pub mod control;
pub mod coturn;
pub mod hostile;
pub mod server;
mod sfu;
pub mod video;
mod wake;

pub use sfu::{
    MAX_PARTICIPANTS, Misbehaviour, ParticipantStats, Sfu, SfuConfig, SfuCounters, SfuError,
    SfuTransmit,
};
