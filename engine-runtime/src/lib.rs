//! ringcast: run many WebRTC calls from one process on io_uring.
//!
//! An [`Engine`] runs N shards (default: one per core), each a thread with its own
//! `tokio-uring` ring and its own [`ringcast_core::endpoint::Endpoint`]: the calls it owns
//! outright (a sans-IO state machine per call), one timing-wheel entry per call (the pacer),
//! and O(1) routing tables. All shards serve one small pool of UDP sockets (each through its
//! own `dup` of the fd); a call is placed on a socket with no live call to the same SFU
//! address (the socket rule), so calls to different SFUs share a socket whichever shard they
//! are on. A datagram that reaches the wrong shard is handed to its owner through a bounded
//! queue. A pacer tick's packets are submitted to the ring together.
//!
//! The application talks to the shards through bounded command queues and receives
//! [`EngineEvent`]s from one bounded channel; a full queue is an error to the caller or a
//! counted drop, never a blocked shard.
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
pub mod ffmpeg;
mod pcm;
pub mod play;
mod pool;
pub mod record;
pub mod rtmp;
mod shard;
mod source;
mod sync;
mod uring_recv;
mod uring_send;

/// The engine's io_uring send path, exposed for one measurement only: the load tool's
/// `--kernel-floor` mode sends through it with no WebRTC above, to measure what the kernel
/// charges per datagram the way the engine sends. Not part of the API; may change at any time.
#[doc(hidden)]
pub mod bench {
    pub use crate::uring_send::{SendCounters, UringSender};
}

pub use engine::{
    AuthParams, CallInfo, CallOptions, Engine, EngineBuilder, EngineEvent, EngineStats, EventKind,
    LatenessCauses, P2pCallInfo, P2pKeyInfo, RtcServer, SendPath,
};
pub use error::EngineError;
pub use ffmpeg::Ffmpeg;
pub use play::{
    KEYFRAME_INTERVAL, MediaCacheConfig, MediaInput, MediaSource, MediaStats, PlayMode,
    VideoParams, VideoStats, VideoWriter,
};
pub use record::{
    RecordConfig, RecordLayout, RecordOutput, RecordedOutput, Recording, RecordingSummary,
};
pub use ringcast_core::call::{CallState, CallStats, EndReason, IceTimings, MediaState};
pub use ringcast_core::incoming_video::{IncomingVideoCounters, IncomingVideoError};
pub use ringcast_core::media::SharedSource;
pub use ringcast_core::media::pcm::{
    PcmChannels, PcmFrame, PcmPushError, PcmReceiver, PcmSinkConfig, PcmSinkStats, PcmSource,
    PcmSourceConfig, PcmSourceStats, PcmWriter,
};
pub use ringcast_core::media::video::VideoCodec;
pub use ringcast_core::media::video_rx::ReceivedFrame;
pub use ringcast_core::p2p_call::{P2pEndReason, P2pLinkStats, P2pState, P2pStats};
pub use ringcast_core::signaling::Ssrc;
pub use ringcast_core::signaling::group::SsrcGroup;
pub use ringcast_core::signaling::p2p::{DhConfig, LIBRARY_VERSIONS, P2pError, Role};
pub use ringcast_core::{SourceError, TrackKind};
pub use rtmp::RtmpPush;
pub use source::StreamSource;
