//! 1:1 (private) calls: the end-to-end key exchange, the encrypted signaling channel and the JSON
//! control messages, all without I/O (telegram-signaling.md §4).
//!
//! A 1:1 call is set up through the messenger: the caller's and the callee's MTProto clients move
//! every byte (`phone.requestCall` / `acceptCall` / `confirmCall` for the key exchange,
//! `phone.sendSignalingData` / `updatePhoneCallSignalingData` for everything after it). This
//! module turns those bytes into typed, validated values and back:
//!
//! - [`dh`]: validates the server's `messages.dhConfig` (2048-bit safe prime, generator residue
//!   conditions), runs the caller's and the callee's side of the three-message Diffie-Hellman
//!   exchange with every range and hash check Telegram's end-to-end spec demands, and yields the
//!   256-byte [`CallKey`] with its `key_fingerprint`.
//! - [`exchange`]: [`KeyExchange`], the state of one call's exchange (created, waiting for
//!   `g_b`/`g_a`, keyed, connected, failed) over the [`dh`] steps, refusing steps out of order;
//!   and [`DhRng`], the hash DRBG its secrets come from.
//! - [`emoji`]: the four-emoji key visualization both users compare.
//! - [`channel`]: [`EncryptedChannel`], the MTProto-2.0-like encryption of every signaling blob
//!   (tgcalls `EncryptedConnection`): counters, replay window, acks and resends for the
//!   "reliable" framing of protocol versions 8.0.0/9.0.0, the "raw" framing of 7.0.0.
//! - [`messages`]: the JSON control messages of tgcalls `InstanceV2Impl` (versions 7.0.0-13.0.0):
//!   `InitialSetup`, `Candidates`, `NegotiateChannels`, `MediaState`.
//! - [`sctp`]: "signaling V3" (12.0.0, 13.0.0): the plain SCTP association whose packets are the
//!   messenger's blobs, and the gzip of its payloads.
//! - [`link`]: [`SignalingLink`], the whole path from JSON messages to blobs at the negotiated
//!   version (channel alone, or gzip + channel + SCTP).
//!
//! Nothing here reads a clock or the OS random generator: randomness (DH secrets, the
//! Miller-Rabin seed) and the current time come in as arguments, so the simulator can replay a
//! call exactly. Nothing panics on any input; every rejection is a typed [`P2pError`],
//! [`Rejected`] or [`crate::SignalingError`].

pub mod channel;
pub mod dh;
pub mod emoji;
pub mod exchange;
pub mod link;
pub mod messages;
pub mod sctp;

pub use channel::{ChannelStats, EncryptedChannel, Framing, Received, Rejected};
pub use dh::{CallKey, CalleeExchange, CallerExchange, DhConfig, DhParams};
pub use exchange::{AuthParams, DhRng, ExchangeError, KeyExchange};
pub use link::{LinkRejected, SignalingLink};
pub use messages::SignalingMessage;
pub use sctp::{CarrierRejected, SctpStats};

/// Protocol versions ([`phoneCallProtocol.library_versions`]) this module implements, newest
/// first, as ringcast should offer them.
///
/// All use the same JSON messages ([`messages`]); 7.0.0 uses the raw framing, 8.0.0 and 9.0.0
/// the reliable one, 12.0.0 and 13.0.0 the SCTP-carried "signaling V3"
/// ([`Framing::for_version`]). ntgcalls 3.0.5 offers 8.0.0, 9.0.0, 12.0.0 and 13.0.0 and
/// picks the highest both speak.
///
/// [`phoneCallProtocol.library_versions`]: https://core.telegram.org/constructor/phoneCallProtocol
pub const LIBRARY_VERSIONS: [&str; 5] = ["13.0.0", "12.0.0", "9.0.0", "8.0.0", "7.0.0"];

/// The version a call runs at, from `phoneCall.protocol.library_versions`: the **highest**
/// of [`LIBRARY_VERSIONS`] in the list, whatever the list's order (ntgcalls `bestMatch` sorts
/// the list newest first and takes the first it supports; taking the list's first entry instead
/// would run 7.0.0's raw framing against a peer on 8.0.0 for `["7.0.0", "8.0.0"]`). `None` if
/// the list holds none of them.
pub fn select_version<S: AsRef<str>>(versions: &[S]) -> Option<&'static str> {
    // LIBRARY_VERSIONS is newest first.
    LIBRARY_VERSIONS
        .iter()
        .copied()
        .find(|ours| versions.iter().any(|v| v.as_ref().trim() == *ours))
}

/// Which end of the call this side is. Decides the key slices of the signaling encryption, the
/// DTLS role and the ICE role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The calling party (A, "outgoing" in tgcalls): sends `g_a_hash`, then `g_a`.
    Caller,
    /// The called party (B, "incoming" in tgcalls): sends `g_b`.
    Callee,
}

/// Which Diffie-Hellman public value a check refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicValue {
    /// The caller's `g_a`.
    GA,
    /// The callee's `g_b`.
    GB,
}

impl std::fmt::Display for PublicValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::GA => "g_a",
            Self::GB => "g_b",
        })
    }
}

/// Why a Diffie-Hellman step or an outgoing signaling message failed.
///
/// Every check of telegram-signaling.md §4.3 has its own variant, so a refused call can say
/// exactly which one failed. None of them is recoverable within the same call except
/// [`P2pError::OwnValueOutOfRange`] and [`P2pError::SecretOutOfRange`] (retry with fresh
/// randomness); all others mean the call must be discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum P2pError {
    /// `p` is not a 2048-bit number (`2^2047 < p < 2^2048`, given as 256 big-endian bytes).
    #[error("dh prime has {len} bytes and {bits} bits, expected a 2048-bit number in 256 bytes")]
    PrimeWrongSize {
        /// Length of the received `p` in bytes.
        len: usize,
        /// Bit length of its value (0 for zero).
        bits: usize,
    },
    /// `p` is composite.
    #[error("dh prime is not prime")]
    PrimeNotPrime,
    /// `p` is prime but `(p-1)/2` is not: not a safe prime.
    #[error("dh prime is not a safe prime: (p-1)/2 is composite")]
    PrimeNotSafe,
    /// `g` is not one of 2..=7.
    #[error("dh generator {g} is outside 2..=7")]
    GeneratorOutOfRange {
        /// The received generator.
        g: i32,
    },
    /// `g` is not a quadratic residue mod `p`, so it does not generate the subgroup of prime
    /// order `(p-1)/2` (the `p mod 4g` condition of the spec fails).
    #[error("dh generator {g} is not a quadratic residue: p mod {modulus} = {residue}")]
    GeneratorNotResidue {
        /// The received generator.
        g: u32,
        /// The modulus of the failed condition (8, 3, 5, 24 or 7).
        modulus: u32,
        /// `p` modulo it.
        residue: u32,
    },
    /// The server's `random` or the locally supplied randomness is not 256 bytes.
    #[error("dh random has {len} bytes, expected 256")]
    RandomWrongSize {
        /// Length of the offending input in bytes.
        len: usize,
    },
    /// The secret exponent (own randomness XOR server random) is 0 or 1; retry with fresh
    /// randomness.
    #[error("dh secret exponent is degenerate (0 or 1)")]
    SecretOutOfRange,
    /// The locally generated `g_a`/`g_b` failed the range check; retry with fresh randomness
    /// (tdesktop and ntgcalls loop the same way). Happens with probability about 2^-63.
    #[error("own {value} is outside [2^1984, p - 2^1984]; retry with fresh randomness")]
    OwnValueOutOfRange {
        /// Which value was generated.
        value: PublicValue,
    },
    /// A received `g_a`/`g_b` is not in `[2^(2048-64), p - 2^(2048-64)]` (which implies
    /// `1 < g_x < p-1`), or is longer than 256 bytes.
    #[error("received {value} is outside [2^1984, p - 2^1984]")]
    ValueOutOfRange {
        /// Which value was received.
        value: PublicValue,
    },
    /// The `g_a_hash` from `phoneCallRequested` is not 32 bytes.
    #[error("g_a_hash has {len} bytes, expected 32")]
    GaHashWrongSize {
        /// Length of the received hash in bytes.
        len: usize,
    },
    /// `SHA256(g_a)` differs from the `g_a_hash` the caller committed to.
    #[error("sha256(g_a) does not match the g_a_hash received with the call request")]
    GaHashMismatch,
    /// The other side's `key_fingerprint` differs from the one computed here.
    #[error("key fingerprint mismatch: received {received}, computed {computed}")]
    FingerprintMismatch {
        /// The fingerprint received in `phoneCall.key_fingerprint`.
        received: i64,
        /// The fingerprint of the locally computed key.
        computed: i64,
    },
    /// An outgoing signaling message does not fit in one packet of the negotiated framing.
    #[error("signaling message of {len} bytes exceeds the {max} bytes one packet can carry")]
    MessageTooLarge {
        /// Length of the message in bytes.
        len: usize,
        /// Largest message the framing allows.
        max: usize,
    },
    /// The outgoing counter reached 2^30 - 1; the spec requires the call to be aborted.
    #[error("signaling counter exhausted; the call must end")]
    CounterExhausted,
    /// Too many sent messages wait for an ack; the peer is not acknowledging.
    #[error("{count} signaling messages are waiting for an ack")]
    TooManyUnacked {
        /// Number of messages waiting.
        count: usize,
    },
    /// The crypto library refused an operation that cannot fail with valid sizes.
    #[error("crypto backend error")]
    Crypto,
    /// The SCTP association carrying signaling V3 is gone (the peer aborted it); nothing more
    /// can be sent.
    #[error("the signaling SCTP association was lost")]
    SignalingTransportLost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_version_takes_the_highest_we_speak_in_any_order() {
        assert_eq!(select_version(&["7.0.0", "8.0.0"]), Some("8.0.0"));
        assert_eq!(
            select_version(&["8.0.0", "9.0.0", "12.0.0", "13.0.0"]),
            Some("13.0.0")
        );
        assert_eq!(
            select_version(&["13.0.0", "9.0.0", "8.0.0"]),
            Some("13.0.0")
        );
        assert_eq!(select_version(&["12.0.0", "9.0.0"]), Some("12.0.0"));
        assert_eq!(select_version(&["9.0.0", "8.0.0"]), Some("9.0.0"));
        assert_eq!(select_version(&["7.0.0"]), Some("7.0.0"));
        assert_eq!(select_version(&["10.0.0", "11.0.0", "4.0.0"]), None);
        assert_eq!(select_version::<&str>(&[]), None);
    }
}
