//! What a call can play.

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use ringcast_core::media::{OggOpusReader, SharedSource, ToneSource};
use ringcast_core::{FrameSource, SourceError};

/// A media source for [`Engine::set_stream_sources`](crate::Engine::set_stream_sources).
#[non_exhaustive]
pub enum StreamSource {
    /// A sine tone encoded with libopus (tests, demos, health checks).
    Tone {
        /// Frequency in Hz.
        frequency_hz: f32,
    },
    /// An Ogg/Opus file, passed through without re-encoding. Read on the caller's thread.
    OggFile(PathBuf),
    /// An Ogg/Opus file already in memory.
    OggBytes(Bytes),
    /// A source shared with other calls: encoded once, sent to all (radio in many chats).
    Shared(SharedSource),
    /// Any frame source.
    Custom(Box<dyn FrameSource>),
}

impl fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tone { frequency_hz } => write!(f, "Tone({frequency_hz} Hz)"),
            Self::OggFile(p) => write!(f, "OggFile({})", p.display()),
            Self::OggBytes(b) => write!(f, "OggBytes({} bytes)", b.len()),
            Self::Shared(s) => write!(f, "Shared({s:?})"),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl StreamSource {
    /// Opens the source. Runs on the API thread so file I/O never blocks a shard.
    pub(crate) fn open(self) -> Result<Box<dyn FrameSource>, SourceError> {
        Ok(match self {
            Self::Tone { frequency_hz } => Box::new(ToneSource::new(frequency_hz, None)?),
            Self::OggFile(path) => {
                let bytes = std::fs::read(&path).map_err(|e| SourceError::Io {
                    reason: format!("{}: {e}", path.display()),
                })?;
                Box::new(OggOpusReader::new(Bytes::from(bytes))?)
            }
            Self::OggBytes(bytes) => Box::new(OggOpusReader::new(bytes)?),
            Self::Shared(shared) => Box::new(shared.reader()),
            Self::Custom(source) => source,
        })
    }
}
