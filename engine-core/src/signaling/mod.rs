//! Telegram call signaling: the JSON documents exchanged with Telegram, parsed and emitted
//! without I/O.
//!
//! Every parser here takes untrusted bytes (they come from the MTProto layer, i.e. from a server
//! or another client) and returns either a fully validated value or a [`SignalingError`] that
//! names the offending JSON path. Parsers never panic, reject input larger than
//! [`MAX_SIGNALING_BYTES`] before looking at it, and cap every list they read.
//!
//! - [`group`]: group calls (voice chats): the join payload sent with `phone.joinGroupCall` and
//!   the SFU answer carried by `updateGroupCallConnection`.
//!
//! SSRCs cross this boundary as MTProto `int` (signed 32-bit) but are unsigned on the RTP wire;
//! [`Ssrc`] holds the wire value and converts with a bit-cast, never a range check.

use std::fmt;

pub mod group;
mod json;
pub mod p2p;

/// Largest signaling document any parser in this module accepts, in bytes (64 KiB).
///
/// A real group-call answer is 2-4 KiB; the cap bounds the work an attacker-controlled document
/// can cause and is checked before any parsing, so oversized input costs nothing.
pub const MAX_SIGNALING_BYTES: usize = 64 * 1024;

/// Checks the [`MAX_SIGNALING_BYTES`] cap, then parses `bytes` as one JSON document.
///
/// serde_json bounds nesting depth (128) itself, so deep input cannot overflow the stack.
pub(crate) fn parse_document(bytes: &[u8]) -> Result<serde_json::Value, SignalingError> {
    if bytes.len() > MAX_SIGNALING_BYTES {
        return Err(SignalingError::TooLarge {
            len: bytes.len(),
            max: MAX_SIGNALING_BYTES,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| SignalingError::InvalidJson {
        reason: e.to_string(),
    })
}

/// Why a signaling document was rejected.
///
/// `field` values are JSON paths relative to the document root, written like
/// `transport.fingerprints[0].fingerprint`; the document root itself is written `$`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    /// The bytes are not JSON: syntax error, truncated input, invalid UTF-8, empty input.
    #[error("invalid json: {reason}")]
    InvalidJson {
        /// The JSON parser's description of the problem, with line and column.
        reason: String,
    },
    /// The document is larger than [`MAX_SIGNALING_BYTES`]; it was not parsed.
    #[error("signaling document is {len} bytes, larger than the {max} bytes allowed")]
    TooLarge {
        /// Length of the rejected input in bytes.
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// A required field is absent (or `null`).
    #[error("missing field `{field}`")]
    MissingField {
        /// JSON path of the missing field, e.g. `transport.fingerprints[0].fingerprint`.
        field: String,
    },
    /// A field is present but unusable: wrong JSON type, out of range, unparsable value, or a
    /// list longer than the parser accepts.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// JSON path of the offending field, e.g. `transport.candidates[1].port`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The group-call answer offers no WebRTC transport: the call is an RTMP broadcast
    /// (`"rtmp"`) or its media must be fetched over MTProto (`"stream"`). Not a parse failure
    /// as such; the caller cannot use this call with the RTC engine.
    #[error("the answer has no rtc transport, only `{kind}`")]
    NoRtcTransport {
        /// The top-level key found instead of `transport`: `"rtmp"` or `"stream"`.
        kind: &'static str,
    },
}

/// An RTP synchronization source identifier (RFC 3550 §3), as carried on the RTP wire.
///
/// Telegram transports SSRCs as MTProto `int` (signed 32-bit), so values above `i32::MAX`
/// appear negative in JSON and TL; convert with [`Ssrc::from_i32_bits`] /
/// [`Ssrc::as_i32_bits`], which reinterpret the bits and never fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl Ssrc {
    /// Reinterprets a Telegram signed 32-bit `source` as an SSRC (bit-cast, `-1` is `0xFFFF_FFFF`).
    pub const fn from_i32_bits(bits: i32) -> Self {
        Self(bits.cast_unsigned())
    }

    /// The signed 32-bit form Telegram expects in JSON and TL (bit-cast, `0xFFFF_FFFF` is `-1`).
    pub const fn as_i32_bits(self) -> i32 {
        self.0.cast_signed()
    }
}

impl fmt::Display for Ssrc {
    /// Writes the unsigned wire value, as RTP tools (Wireshark, SDP `a=ssrc`) show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for Ssrc {
    fn from(value: u32) -> Self {
        Self(value)
    }
}

impl From<Ssrc> for u32 {
    fn from(value: Ssrc) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrc_bit_cast_round_trips() {
        assert_eq!(Ssrc::from_i32_bits(-1), Ssrc(u32::MAX));
        assert_eq!(Ssrc(u32::MAX).as_i32_bits(), -1);
        assert_eq!(Ssrc::from_i32_bits(i32::MIN), Ssrc(0x8000_0000));
        assert_eq!(Ssrc(1_234_567_890).as_i32_bits(), 1_234_567_890);
        // The server_sources value from the telegram-signaling.md §2 example.
        assert_eq!(Ssrc::from_i32_bits(-1_017_713_629).0, 3_277_253_667);
    }

    #[test]
    fn ssrc_displays_unsigned() {
        assert_eq!(Ssrc::from_i32_bits(-1).to_string(), "4294967295");
    }

    #[test]
    fn errors_have_lowercase_messages_naming_the_path() {
        let e = SignalingError::MissingField {
            field: "transport.ufrag".into(),
        };
        assert_eq!(e.to_string(), "missing field `transport.ufrag`");
        let e = SignalingError::NoRtcTransport { kind: "rtmp" };
        assert_eq!(
            e.to_string(),
            "the answer has no rtc transport, only `rtmp`"
        );
    }
}
