//! What a call can play.

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use ringcast_core::media::{
    OggOpusReader, PcmSource, PcmSourceConfig, PcmWriter, SharedSource, ToneSource, pcm_source,
};
use ringcast_core::{FrameSource, SourceError};

use crate::play::{MediaHub, MediaSource};

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
    /// 16-bit 48 kHz PCM pushed by the application through the [`PcmWriter`] that
    /// [`StreamSource::pcm`] returns with it, encoded with libopus at each frame time.
    Pcm(PcmSource),
    /// Any frame source.
    Custom(Box<dyn FrameSource>),
    /// A file in any format, a URL or a shell command, decoded by ffmpeg once per distinct
    /// input (see [`crate::play`]).
    Media(MediaSource),
}

impl From<MediaSource> for StreamSource {
    fn from(source: MediaSource) -> Self {
        Self::Media(source)
    }
}

impl fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tone { frequency_hz } => write!(f, "Tone({frequency_hz} Hz)"),
            Self::OggFile(p) => write!(f, "OggFile({})", p.display()),
            Self::OggBytes(b) => write!(f, "OggBytes({} bytes)", b.len()),
            Self::Shared(s) => write!(f, "Shared({s:?})"),
            Self::Pcm(s) => write!(f, "Pcm({s:?})"),
            Self::Custom(_) => f.write_str("Custom"),
            Self::Media(m) => write!(f, "Media({m:?})"),
        }
    }
}

impl StreamSource {
    /// A [`StreamSource::Pcm`] and the writer the application pushes 20 ms frames with
    /// ([`PcmWriter::try_push`]). Silence is sent while its queue is empty (counted as
    /// underruns); dropping the writer ends the stream once the queue is drained, which the
    /// call reports as [`EventKind::StreamEnded`](crate::EventKind::StreamEnded).
    ///
    /// Fails with [`SourceError::InvalidArgument`] for a zero capacity or a bitrate out of
    /// range.
    pub fn pcm(config: &PcmSourceConfig) -> Result<(Self, PcmWriter), SourceError> {
        let (source, writer) = pcm_source(config)?;
        Ok((Self::Pcm(source), writer))
    }

    /// Opens the source. Runs on the API thread so file I/O never blocks a shard.
    pub(crate) fn open(self, media: &MediaHub) -> Result<Box<dyn FrameSource>, SourceError> {
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
            Self::Pcm(source) => Box::new(source),
            Self::Custom(source) => source,
            Self::Media(source) => media.open(source)?,
        })
    }
}
