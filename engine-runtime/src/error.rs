//! The runtime's error type.

use ringcast_core::{CallError, SignalingError, SourceError};

/// Errors of the [`Engine`](crate::Engine) API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// `create_call` for a chat that already has a live call.
    #[error("a call for chat {0} already exists")]
    ConnectionExists(i64),
    /// No live call for this chat.
    #[error("no call for chat {0}")]
    ConnectionNotFound(i64),
    /// The shard's command queue is full; try again later.
    #[error("command queue full")]
    QueueFull,
    /// The shard thread is gone (engine shut down or crashed).
    #[error("engine shard is not running")]
    ShardGone,
    /// The shard did not answer in time.
    #[error("engine shard did not answer in time")]
    Timeout,
    /// The SFU's answer did not parse.
    #[error(transparent)]
    Signaling(#[from] SignalingError),
    /// The call refused the operation.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The media source could not be opened.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// No socket could be found or opened for the call.
    #[error("no free socket for this sfu address")]
    NoFreeSocket,
    /// Socket or thread setup failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ringcast_core::endpoint::EndpointError> for EngineError {
    fn from(e: ringcast_core::endpoint::EndpointError) -> Self {
        use ringcast_core::endpoint::EndpointError as E;
        match e {
            E::ConnectionExists(c) => Self::ConnectionExists(c),
            E::ConnectionNotFound(c) => Self::ConnectionNotFound(c),
            E::NoFreeSocket => Self::NoFreeSocket,
            E::Call(c) => Self::Call(c),
            // EndpointError is non_exhaustive; a future variant still reaches the caller.
            other => Self::Io(std::io::Error::other(other.to_string())),
        }
    }
}
