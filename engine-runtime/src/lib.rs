//! ringcast: run many WebRTC calls from one process on io_uring.
//!
//! An [`Engine`] owns a shard thread with its own `tokio-uring` ring. The shard owns its calls
//! outright ([`ringcast_core::Call`], a sans-IO state machine per call) and a small pool of UDP
//! sockets shared by all of them; datagrams are routed to calls with an O(1) lookup
//! ([`ringcast_core::demux`]). The application talks to the engine through a bounded command
//! queue and receives [`EngineEvent`]s from a bounded channel; a full queue is an error to the
//! caller, never a blocked shard.
//!
//! The method names follow ntgcalls/py-tgcalls (`create_call`, `connect`,
//! `set_stream_sources`, `pause`, `resume`, `mute`, `unmute`, `stop`, `time`, `get_state`,
//! `calls`) so bot code ports line by line.
//!
//! ```no_run
//! use ringcast::{Engine, StreamSource};
//! # fn post_to_telegram(_: &str) -> String { unimplemented!() }
//! let engine = Engine::builder().build()?;
//! let join_json = engine.create_call(-100123)?;
//! let response_json = post_to_telegram(&join_json); // phone.joinGroupCall
//! engine.connect(-100123, &response_json)?;
//! engine.set_stream_sources(-100123, StreamSource::Tone { frequency_hz: 440.0 })?;
//! for event in engine.events().iter() {
//!     println!("{event:?}");
//! }
//! # Ok::<(), ringcast::EngineError>(())
//! ```
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod engine;
mod error;
mod shard;
mod source;

pub use engine::{CallInfo, Engine, EngineBuilder, EngineEvent, EngineStats, EventKind};
pub use error::EngineError;
pub use ringcast_core::call::{CallState, CallStats, EndReason, IceTimings, MediaState};
pub use ringcast_core::media::SharedSource;
pub use source::StreamSource;
