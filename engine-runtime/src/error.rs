//! The runtime's error type.

use ringcast_core::p2p_call::P2pCallError;
use ringcast_core::signaling::p2p::P2pError;
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
    /// No socket could be found or opened for the call: no free local port (every port of
    /// `net.ipv4.ip_local_port_range` is taken), or no registered socket the call may use.
    #[error("no free socket for this sfu address")]
    NoFreeSocket,
    /// A Diffie-Hellman step of a 1:1 call failed a check of the spec (bad `p` or `g`, `g_a`/`g_b`
    /// out of range, `g_a_hash` or key fingerprint mismatch, ...). The exchange is over; stop
    /// the call.
    #[error(transparent)]
    KeyExchange(#[from] P2pError),
    /// The 1:1 call refused: signaling bytes rejected (tampered, replayed, wrong key: counted,
    /// the call goes on), or the call has ended.
    #[error(transparent)]
    P2pCall(#[from] P2pCallError),
    /// A 1:1 step called out of order (e.g. `exchange_keys` before `init_exchange`, or a
    /// second `init_exchange`).
    #[error("1:1 call {user_id}: {step} is not allowed now (exchange is {state})")]
    OutOfOrder {
        /// The peer's user id.
        user_id: i64,
        /// The method called.
        step: &'static str,
        /// Where the exchange is.
        state: &'static str,
    },
    /// A key for `skip_exchange` that is not 256 bytes.
    #[error("call key has {len} bytes, expected 256")]
    InvalidKeyLength {
        /// Its length.
        len: usize,
    },
    /// None of the offered `library_versions` is implemented.
    #[error("no supported protocol version among {offered:?}")]
    NoCommonVersion {
        /// What was offered.
        offered: Vec<String>,
    },
    /// `connect_p2p` with `p2p_allowed = false` but no usable TURN server (UDP, with user name
    /// and password) in `rtc_servers`: the call would need Telegram's reflectors, which are not
    /// implemented.
    #[error("relay-only 1:1 call (p2p_allowed = false) without a usable TURN server")]
    RelayOnlyUnsupported,
    /// The call's source cannot change its bitrate (only tone sources re-encode; Ogg files and
    /// shared sources pass fixed Opus packets through).
    #[error("the source of call {0} cannot change its bitrate")]
    BitrateUnsupported(i64),
    /// A bitrate outside what Opus supports for voice.
    #[error("bitrate {0} bit/s is outside 6000..=510000")]
    InvalidBitrate(i32),
    /// The builder's settings are unusable (for example an unspecified bind address).
    #[error("invalid engine config: {0}")]
    InvalidConfig(&'static str),
    /// The DTLS configuration could not be built.
    #[error(transparent)]
    Crypto(#[from] ringcast_core::crypto::CryptoConfigError),
    /// The OS could not supply what the engine's cryptography needs (randomness for a DTLS
    /// certificate or a Diffie-Hellman secret).
    #[error("os randomness unavailable: {0}")]
    Randomness(&'static str),
    /// The endpoint refused an operation in a way the variants above do not name.
    #[error(transparent)]
    Endpoint(ringcast_core::endpoint::EndpointError),
    /// A socket or thread could not be set up: an operating-system I/O error, and only that.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ringcast_core::endpoint::EndpointError> for EngineError {
    fn from(e: ringcast_core::endpoint::EndpointError) -> Self {
        use ringcast_core::endpoint::EndpointError as E;
        match e {
            E::ConnectionExists(c) => Self::ConnectionExists(c.0),
            E::ConnectionNotFound(c) => Self::ConnectionNotFound(c.0),
            E::NoFreeSocket => Self::NoFreeSocket,
            E::Call(c) => Self::Call(c),
            E::P2pCall(c) => Self::P2pCall(c),
            // EndpointError is non_exhaustive; a future variant still reaches the caller typed.
            other => Self::Endpoint(other),
        }
    }
}
