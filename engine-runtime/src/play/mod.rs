//! Play anything: files, URLs and shell commands, decoded by ffmpeg once per distinct input.
//!
//! A [`MediaSource`] names an input ([`MediaInput`]: a file in any format ffmpeg reads, an
//! http(s) URL with request headers, or a shell command that writes raw s16le PCM, which is
//! what py-tgcalls builds) and how to play it. [`Engine::set_stream_sources`] opens it through
//! the engine's media hub, which runs **one decode per distinct input**, whatever the number of
//! calls playing it:
//!
//! - [`PlayMode::OnDemand`] (the default; a music bot): every call starts the track from its
//!   own beginning. The encoded frames go into a bounded cache keyed by the input and its
//!   parameters ([`MediaCacheConfig`]); a call that starts the same track later reads the
//!   frames already made, and the decode runs ahead of its furthest listener by at most
//!   [`DECODE_LEAD`].
//! - [`PlayMode::Live`] (radio): every call playing the input hears the same position; a call
//!   that joins hears it from now on.
//!
//! Decoding runs on a thread per distinct input, never on a shard: ffmpeg (or the command)
//! writes PCM to a pipe, the thread encodes it with libopus (or, for an input that is already
//! Opus, passes its packets through without re-encoding) and hands frames to the calls through
//! a bounded queue (live) or the cache (on demand). A shard only takes a frame that is ready:
//! when none is, it sends silence and counts an underrun ([`MediaStats::underruns`]); it never
//! waits. A paused call stops taking frames, and the decode stops with it (a full queue blocks
//! ffmpeg's pipe) rather than buffering without bound.
//!
//! Errors: an input ffmpeg cannot open is an error of `set_stream_sources` itself
//! ([`SourceError::Decoder`] with the tail of ffmpeg's standard error, or
//! [`SourceError::FfmpegNotFound`]); one that fails later (a stream that breaks, ffmpeg killed)
//! ends the track with [`EventKind::StreamEnded`](crate::EventKind::StreamEnded) carrying the
//! error. Either way the call stays connected, ready for the next source. A decode whose last
//! listener is gone is killed; so is every ffmpeg when the engine is dropped or the process
//! exits (see [`crate::ffmpeg`]).
//!
//! [`Engine::set_stream_sources`]: crate::Engine::set_stream_sources

mod cache;
mod decode;
mod live;
pub(crate) mod video;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringcast_core::media::pcm::{MAX_BITRATE_BPS, MIN_BITRATE_BPS};
use ringcast_core::media::resample::{MAX_RATE_HZ, MIN_RATE_HZ};
use ringcast_core::{FrameSource, SourceError};

use crate::ffmpeg::Ffmpeg;

pub use cache::{FRAME_OVERHEAD, MediaCacheConfig};
pub(crate) use decode::input_args;
pub use video::{
    EXTERNAL_QUEUE, KEYFRAME_INTERVAL, VIDEO_RING, VideoParams, VideoStats, VideoWriter,
};

/// How far a decode may run ahead of the furthest call playing it (on demand): 10 s.
pub const DECODE_LEAD: Duration = Duration::from_secs(10);

/// Frames a live input queues for its calls: one second. A full queue stops the decode.
pub const LIVE_QUEUE_FRAMES: usize = 50;

/// How long [`Engine::set_stream_sources`](crate::Engine::set_stream_sources) waits for a new
/// decode's first frame (ffmpeg starting, a URL connecting) before giving up.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What to play.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaInput {
    /// A local file in any format ffmpeg reads (mp3, m4a/AAC, flac, wav, ogg, webm, a video
    /// file's audio...).
    File(PathBuf),
    /// A URL ffmpeg opens (http, https, or any protocol it knows), with HTTP request headers.
    /// http(s) inputs reconnect on errors (ffmpeg's `-reconnect` options).
    Url {
        /// The URL.
        url: String,
        /// Request headers, sent in order (`-headers`).
        headers: Vec<(String, String)>,
    },
    /// A shell command (`/bin/sh -c`) that writes raw signed 16-bit little-endian PCM to its
    /// standard output: exactly what py-tgcalls hands ntgcalls (`ffmpeg ... -f s16le -ac CH
    /// -ar RATE pipe:1`). Resampled to 48 kHz where `sample_rate` differs.
    Shell {
        /// The command line.
        command: String,
        /// Its sample rate in Hz.
        sample_rate: u32,
        /// Its channel count, 1 or 2 (interleaved).
        channels: u8,
    },
}

/// How calls playing the same input share its decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PlayMode {
    /// Each call starts from the input's beginning; encoded frames are cached and shared (a
    /// music bot). The default.
    #[default]
    OnDemand,
    /// Every call hears the same position, one decode for all (radio).
    Live,
}

/// A file, URL or shell command to play, and how. Build with [`MediaSource::file`],
/// [`MediaSource::url`] or [`MediaSource::shell`]; pass it to
/// [`Engine::set_stream_sources`](crate::Engine::set_stream_sources).
///
/// ```no_run
/// # use ringcast::{Engine, MediaSource};
/// # let engine = Engine::builder().build()?;
/// engine.set_stream_sources(-100123, MediaSource::file("song.mp3"))?;
/// engine.set_stream_sources(-100456, MediaSource::url("https://radio.example/stream").live())?;
/// # Ok::<(), ringcast::EngineError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaSource {
    input: MediaInput,
    seek: Duration,
    looped: bool,
    mode: PlayMode,
    channels: u8,
    bitrate_bps: i32,
}

impl MediaSource {
    fn new(input: MediaInput) -> Self {
        Self {
            input,
            seek: Duration::ZERO,
            looped: false,
            mode: PlayMode::OnDemand,
            channels: 2,
            bitrate_bps: 64_000,
        }
    }

    /// A local file in any format ffmpeg reads.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::new(MediaInput::File(path.into()))
    }

    /// A URL (http, https, or any protocol ffmpeg knows).
    pub fn url(url: impl Into<String>) -> Self {
        Self::new(MediaInput::Url {
            url: url.into(),
            headers: Vec::new(),
        })
    }

    /// A shell command that writes raw s16le PCM at `sample_rate` Hz and `channels` (1 or 2)
    /// to its standard output. Identical command lines are the same input: calls playing
    /// them share one process.
    pub fn shell(command: impl Into<String>, sample_rate: u32, channels: u8) -> Self {
        Self::new(MediaInput::Shell {
            command: command.into(),
            sample_rate,
            channels,
        })
    }

    /// Adds an HTTP request header (URL inputs; ignored for others).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let MediaInput::Url { headers, .. } = &mut self.input {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// Starts `offset` into the input (ffmpeg's `-ss`; files and URLs only: a shell command
    /// seeks by itself). [`Engine::time`](crate::Engine::time) counts from here.
    pub fn seek(mut self, offset: Duration) -> Self {
        self.seek = offset;
        self
    }

    /// Plays the input again from its start each time it ends, until replaced or stopped.
    pub fn looped(mut self, on: bool) -> Self {
        self.looped = on;
        self
    }

    /// [`PlayMode::Live`]: every call hears the same position (radio).
    pub fn live(mut self) -> Self {
        self.mode = PlayMode::Live;
        self
    }

    /// [`PlayMode::OnDemand`] (the default): each call from the start, frames cached.
    pub fn on_demand(mut self) -> Self {
        self.mode = PlayMode::OnDemand;
        self
    }

    /// Channels of the Opus stream sent, 1 or 2. Default 2 (ignored for Opus inputs, which
    /// are passed through as they are).
    pub fn channels(mut self, channels: u8) -> Self {
        self.channels = channels;
        self
    }

    /// Opus bitrate in bit/s. Default 64 000 (ignored for Opus inputs).
    pub fn bitrate(mut self, bits_per_second: i32) -> Self {
        self.bitrate_bps = bits_per_second;
        self
    }

    /// The input.
    pub fn input(&self) -> &MediaInput {
        &self.input
    }

    /// The play mode.
    pub fn mode(&self) -> PlayMode {
        self.mode
    }

    fn validate(&self) -> Result<(), SourceError> {
        let invalid = |reason: String| Err(SourceError::InvalidArgument { reason });
        if !(1..=2).contains(&self.channels) {
            return invalid(format!("channels must be 1 or 2, got {}", self.channels));
        }
        if !(MIN_BITRATE_BPS..=MAX_BITRATE_BPS).contains(&self.bitrate_bps) {
            return invalid(format!(
                "opus bitrate must be in {MIN_BITRATE_BPS}..={MAX_BITRATE_BPS}, got {}",
                self.bitrate_bps
            ));
        }
        if let MediaInput::Shell {
            command,
            sample_rate,
            channels,
        } = &self.input
        {
            if command.trim().is_empty() {
                return invalid("empty shell command".to_owned());
            }
            if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(sample_rate) {
                return invalid(format!(
                    "shell sample rate must be in {MIN_RATE_HZ}..={MAX_RATE_HZ} Hz, got {sample_rate}"
                ));
            }
            if !(1..=2).contains(channels) {
                return invalid(format!("shell channels must be 1 or 2, got {channels}"));
            }
            if !self.seek.is_zero() {
                return invalid(
                    "seek applies to files and URLs; put -ss in the shell command".to_owned(),
                );
            }
        }
        Ok(())
    }
}

/// Counters of an engine's media hub ([`Engine::media_stats`](crate::Engine::media_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Decoder processes started (ffmpeg or shell commands), probes excluded.
    pub processes_spawned: u64,
    /// Decoder processes running now.
    pub processes_running: u64,
    /// ffprobe runs (one per new decode of a file or URL).
    pub probes: u64,
    /// libopus encoders created for decoded PCM (an Opus input needs none).
    pub encoders_created: u64,
    /// Decodes of inputs that were already Opus, passed through without re-encoding.
    pub passthrough_decodes: u64,
    /// Plays served by a running live decode or by the cache (no new decode).
    pub shared_plays: u64,
    /// On-demand plays that found their track in the cache.
    pub cache_hits: u64,
    /// On-demand plays that started a new decode into the cache.
    pub cache_misses: u64,
    /// On-demand plays decoded outside the cache because it was full of tracks being played.
    pub cache_bypassed: u64,
    /// Tracks evicted from the cache (least recently used, with no call playing them).
    pub cache_evictions: u64,
    /// Bytes the cache holds now (Opus payload plus per-frame bookkeeping).
    pub cache_bytes: u64,
    /// Tracks in the cache now.
    pub cache_tracks: u64,
    /// Frame times at which a call found no decoded frame ready and sent silence.
    pub underruns: u64,
    /// Decodes that ended with an error.
    pub decode_errors: u64,
}

/// The hub's counters, shared by its threads and the calls' readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) processes_spawned: AtomicU64,
    pub(crate) processes_running: AtomicU64,
    pub(crate) probes: AtomicU64,
    pub(crate) encoders_created: AtomicU64,
    pub(crate) passthrough_decodes: AtomicU64,
    pub(crate) shared_plays: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) cache_bypassed: AtomicU64,
    pub(crate) cache_evictions: AtomicU64,
    pub(crate) underruns: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// An engine's media hub: the live decodes, the on-demand cache and their counters.
#[derive(Debug)]
pub(crate) struct MediaHub {
    ffmpeg: Ffmpeg,
    counters: Arc<Counters>,
    live: live::LiveInputs,
    cache: Arc<cache::AudioCache>,
}

impl MediaHub {
    pub(crate) fn new(ffmpeg: Ffmpeg, cache: MediaCacheConfig) -> Self {
        let counters = Arc::new(Counters::default());
        Self {
            live: live::LiveInputs::default(),
            cache: Arc::new(cache::TrackCache::new(cache, counters.clone())),
            ffmpeg,
            counters,
        }
    }

    /// Opens `source` for one call: joins a running decode or starts one, and waits for its
    /// first frame (or its failure).
    pub(crate) fn open(&self, source: MediaSource) -> Result<Box<dyn FrameSource>, SourceError> {
        source.validate()?;
        let spec = decode::Spec {
            source,
            ffmpeg: self.ffmpeg.clone(),
        };
        match spec.source.mode {
            PlayMode::Live => self.live.open(spec, &self.counters),
            PlayMode::OnDemand => self.cache.open_audio(spec),
        }
    }

    pub(crate) fn stats(&self) -> MediaStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (cache_bytes, cache_tracks) = self.cache.usage();
        MediaStats {
            processes_spawned: get(&c.processes_spawned),
            processes_running: get(&c.processes_running),
            probes: get(&c.probes),
            encoders_created: get(&c.encoders_created),
            passthrough_decodes: get(&c.passthrough_decodes),
            shared_plays: get(&c.shared_plays),
            cache_hits: get(&c.cache_hits),
            cache_misses: get(&c.cache_misses),
            cache_bypassed: get(&c.cache_bypassed),
            cache_evictions: get(&c.cache_evictions),
            cache_bytes,
            cache_tracks,
            underruns: get(&c.underruns),
            decode_errors: get(&c.decode_errors),
        }
    }

    pub(crate) fn ffmpeg(&self) -> &Ffmpeg {
        &self.ffmpeg
    }
}
