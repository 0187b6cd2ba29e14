//! The outgoing half: PCM the application pushes, encoded to Opus frames a call plays.

use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use opus::{Application, Bitrate, Encoder};

use super::PcmChannels;
use crate::media::{
    FrameSource, OPUS_CLOCK_RATE_HZ, OpusFrame, Resampler, SAMPLES_PER_FRAME, SourceError,
    audio_level_dbov,
};

/// Lowest Opus bitrate libopus accepts, in bit/s.
pub const MIN_BITRATE_BPS: i32 = 500;

/// Highest Opus bitrate libopus accepts, in bit/s.
pub const MAX_BITRATE_BPS: i32 = 512_000;

/// Output buffer for one encoded 20 ms packet: RFC 6716 §3.2.1 caps a frame at 1275 bytes.
const MAX_PACKET_BYTES: usize = 1275;

/// Why [`PcmWriter::try_push`] did not queue a frame. Nothing was queued in any case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcmPushError {
    /// The frame is not 20 ms long for the writer's sample rate and channel count.
    #[error("pcm frame has {got} samples, expected {expected}")]
    WrongLength {
        /// Samples a frame must have: [`PcmWriter::frame_len`].
        expected: usize,
        /// Samples given.
        got: usize,
    },
    /// The queue is full: the call consumes one frame per 20 ms and the application is ahead
    /// (or the call is not sending yet). Counted in [`PcmSourceStats::frames_dropped_full`].
    #[error("pcm queue full")]
    Full,
    /// The call side is gone: the source was dropped (replaced, call ended).
    #[error("pcm source is gone")]
    Disconnected,
}

/// Settings of [`pcm_source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmSourceConfig {
    /// Mono (default) or interleaved stereo.
    pub channels: PcmChannels,
    /// Sample rate of the pushed PCM, in Hz: 48 000 (default, encoded as is) or any multiple of
    /// 50 Hz in 8 000..=384 000 (so that 20 ms is a whole number of samples: 882 per channel at
    /// 44 100 Hz), resampled to 48 kHz inside [`PcmWriter::try_push`]; see
    /// [`media::resample`](crate::media::resample) for the method and its 10 ms of latency.
    pub sample_rate: u32,
    /// Frames the queue holds; at least 1. Default 50 (one second).
    pub capacity: usize,
    /// Opus encoder bitrate in bit/s, [`MIN_BITRATE_BPS`]..=[`MAX_BITRATE_BPS`]. Default 32 000
    /// mono, 64 000 stereo is a good choice. Changeable later with [`PcmWriter::set_bitrate`].
    pub bitrate_bps: i32,
}

impl Default for PcmSourceConfig {
    fn default() -> Self {
        Self {
            channels: PcmChannels::Mono,
            sample_rate: OPUS_CLOCK_RATE_HZ,
            capacity: 50,
            bitrate_bps: 32_000,
        }
    }
}

/// Counters of one PCM source, shared by the [`PcmSource`] and its [`PcmWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcmSourceStats {
    /// 48 kHz frames queued for the encoder by [`PcmWriter::try_push`]: one per accepted frame at
    /// 48 kHz. At other rates the first frame pushed queues none (the resampler's 10 ms delay
    /// holds half a frame back), each later one queues one, and dropping the writer queues
    /// what the resampler still held.
    pub frames_pushed: u64,
    /// Frames refused because the queue was full.
    pub frames_dropped_full: u64,
    /// Pushed frames encoded and handed to the call.
    pub frames_encoded: u64,
    /// Frame times at which the queue was empty and silence was sent instead.
    pub underruns: u64,
    /// Frames waiting in the queue now.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct SourceCounters {
    pushed: AtomicU64,
    dropped_full: AtomicU64,
    encoded: AtomicU64,
    underruns: AtomicU64,
    /// The bitrate the application asked for; the source applies it before its next encode.
    bitrate_bps: AtomicI32,
}

impl SourceCounters {
    fn snapshot(&self, queued: usize) -> PcmSourceStats {
        PcmSourceStats {
            frames_pushed: self.pushed.load(Ordering::Relaxed),
            frames_dropped_full: self.dropped_full.load(Ordering::Relaxed),
            frames_encoded: self.encoded.load(Ordering::Relaxed),
            underruns: self.underruns.load(Ordering::Relaxed),
            queued: queued as u64,
        }
    }
}

fn check_bitrate(bps: i32) -> Result<(), SourceError> {
    if (MIN_BITRATE_BPS..=MAX_BITRATE_BPS).contains(&bps) {
        Ok(())
    } else {
        Err(SourceError::InvalidArgument {
            reason: format!(
                "opus bitrate must be in {MIN_BITRATE_BPS}..={MAX_BITRATE_BPS} bit/s, got {bps}"
            ),
        })
    }
}

/// A PCM source and the writer that feeds it.
///
/// Fails with [`SourceError::InvalidArgument`] for a zero capacity, a bitrate out of range or a
/// sample rate out of range or not a multiple of 50 Hz, or [`SourceError::Opus`] if libopus
/// cannot create the encoder.
pub fn pcm_source(config: &PcmSourceConfig) -> Result<(PcmSource, PcmWriter), SourceError> {
    if config.capacity == 0 {
        return Err(SourceError::InvalidArgument {
            reason: "pcm queue capacity must be at least 1 frame".to_owned(),
        });
    }
    check_bitrate(config.bitrate_bps)?;
    if !config.sample_rate.is_multiple_of(50) {
        return Err(SourceError::InvalidArgument {
            reason: format!(
                "pcm sample rate must be a multiple of 50 Hz (20 ms frames), got {}",
                config.sample_rate
            ),
        });
    }
    let resampling = if config.sample_rate == OPUS_CLOCK_RATE_HZ {
        None
    } else {
        let channels = config.channels.count() as u8;
        Some(Mutex::new(Resampling {
            resampler: Resampler::new(config.sample_rate, channels, channels)?,
            pending: Vec::with_capacity(2 * config.channels.frame_len()),
        }))
    };
    let mut encoder = Encoder::new(
        OPUS_CLOCK_RATE_HZ,
        config.channels.opus(),
        Application::Audio,
    )
    .map_err(|e| SourceError::opus(&e))?;
    encoder
        .set_bitrate(Bitrate::Bits(config.bitrate_bps))
        .map_err(|e| SourceError::opus(&e))?;
    let counters = Arc::new(SourceCounters {
        bitrate_bps: AtomicI32::new(config.bitrate_bps),
        ..SourceCounters::default()
    });
    let (tx, rx) = bounded(config.capacity);
    let source = PcmSource {
        encoder,
        frames: rx,
        counters: counters.clone(),
        channels: config.channels,
        bitrate_bps: config.bitrate_bps,
        silence: vec![0; config.channels.frame_len()],
        packet: vec![0; MAX_PACKET_BYTES],
    };
    let writer = PcmWriter {
        frames: tx,
        counters,
        channels: config.channels,
        sample_rate: config.sample_rate,
        resampling,
    };
    Ok((source, writer))
}

/// The application's end of a [`PcmSource`]: pushes 20 ms PCM frames. `Send` and `Sync`.
///
/// Dropping it ends the stream once the queued frames have been sent (when resampling, it first
/// queues what the resampler still holds, padded with silence to whole frames, if there is room).
pub struct PcmWriter {
    frames: Sender<Vec<i16>>,
    counters: Arc<SourceCounters>,
    channels: PcmChannels,
    sample_rate: u32,
    /// `None` at 48 kHz. A mutex because [`PcmWriter::try_push`] takes `&self`; it is only ever
    /// contended by an application pushing from several threads at once.
    resampling: Option<Mutex<Resampling>>,
}

/// The writer's resampling state.
#[derive(Debug)]
struct Resampling {
    resampler: Resampler,
    /// Resampled 48 kHz samples short of a whole frame.
    pending: Vec<i16>,
}

impl fmt::Debug for PcmWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcmWriter")
            .field("channels", &self.channels)
            .field("sample_rate", &self.sample_rate)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PcmWriter {
    /// Queues one 20 ms frame: [`frame_len`](Self::frame_len) samples of 16-bit PCM at the
    /// configured sample rate, interleaved when stereo. Never blocks. At a rate other than
    /// 48 kHz the frame is resampled here, on the caller's thread, and the 48 kHz frames it
    /// completes are queued (see [`PcmSourceStats::frames_pushed`]).
    ///
    /// Errors: [`PcmPushError::WrongLength`], [`PcmPushError::Full`] (counted) or
    /// [`PcmPushError::Disconnected`]. Nothing is queued on error, and a refused frame is not
    /// resampled either.
    pub fn try_push(&self, frame: &[i16]) -> Result<(), PcmPushError> {
        let expected = self.frame_len();
        if frame.len() != expected {
            return Err(PcmPushError::WrongLength {
                expected,
                got: frame.len(),
            });
        }
        // Cheap checks first, so a full queue costs no allocation.
        if self.frames.is_full() {
            self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
            return Err(PcmPushError::Full);
        }
        let Some(resampling) = &self.resampling else {
            return self.send(frame.to_vec());
        };
        let mut state = resampling.lock().unwrap_or_else(PoisonError::into_inner);
        let Resampling { resampler, pending } = &mut *state;
        // The length was checked: the resampler cannot refuse it.
        if resampler.process(frame, pending).is_err() {
            return Err(PcmPushError::WrongLength {
                expected,
                got: frame.len(),
            });
        }
        // One frame after the first push (the delay holds half a frame back), so the fullness
        // check above covers it unless another thread pushes at the same time.
        self.send_whole_frames(pending, false)
    }

    /// Queues the whole 48 kHz frames at the front of `pending` (all of it, padded with
    /// silence, when `pad`), keeping the rest.
    fn send_whole_frames(&self, pending: &mut Vec<i16>, pad: bool) -> Result<(), PcmPushError> {
        let len = self.channels.frame_len();
        if pad && !pending.len().is_multiple_of(len) {
            pending.resize(pending.len().next_multiple_of(len), 0);
        }
        let mut result = Ok(());
        let whole = pending.len() / len * len;
        for chunk in pending[..whole].chunks_exact(len) {
            result = self.send(chunk.to_vec());
            if result.is_err() {
                break;
            }
        }
        pending.drain(..whole);
        result
    }

    fn send(&self, frame: Vec<i16>) -> Result<(), PcmPushError> {
        match self.frames.try_send(frame) {
            Ok(()) => {
                self.counters.pushed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                Err(PcmPushError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(PcmPushError::Disconnected),
        }
    }

    /// Sets the Opus encoder's bitrate; the source applies it before its next frame.
    ///
    /// Fails with [`SourceError::InvalidArgument`] outside
    /// [`MIN_BITRATE_BPS`]..=[`MAX_BITRATE_BPS`].
    pub fn set_bitrate(&self, bps: i32) -> Result<(), SourceError> {
        check_bitrate(bps)?;
        self.counters.bitrate_bps.store(bps, Ordering::Relaxed);
        Ok(())
    }

    /// The channel layout frames must have.
    pub fn channels(&self) -> PcmChannels {
        self.channels
    }

    /// The sample rate frames must have, in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples one frame must have: 20 ms at the configured rate,
    /// [`PcmChannels::frame_len_at`] (960 or 1920 at 48 kHz).
    pub fn frame_len(&self) -> usize {
        self.channels.frame_len_at(self.sample_rate)
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.frames.len()
    }

    /// Frames the queue holds.
    pub fn capacity(&self) -> usize {
        self.frames.capacity().unwrap_or(0)
    }

    /// The source's counters.
    pub fn stats(&self) -> PcmSourceStats {
        self.counters.snapshot(self.frames.len())
    }
}

impl Drop for PcmWriter {
    fn drop(&mut self) {
        let Some(resampling) = self.resampling.take() else {
            return;
        };
        let mut state = resampling
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let Resampling { resampler, pending } = &mut state;
        // Best effort: the stream ends either way.
        if resampler.flush(pending).is_ok() {
            let _ = self.send_whole_frames(pending, true);
        }
    }
}

/// A [`FrameSource`] that encodes the PCM frames pushed through its [`PcmWriter`].
///
/// At each frame time ([`next_frame`](FrameSource::next_frame)): the next queued frame,
/// encoded; silence when the queue is empty and the writer alive (counted as an underrun);
/// the end of the stream (`Ok(None)`) when the writer was dropped and the queue is empty.
pub struct PcmSource {
    encoder: Encoder,
    frames: Receiver<Vec<i16>>,
    counters: Arc<SourceCounters>,
    channels: PcmChannels,
    /// The bitrate the encoder runs at now.
    bitrate_bps: i32,
    /// One frame of zeros, encoded on underruns.
    silence: Vec<i16>,
    /// Encoder output, reused.
    packet: Vec<u8>,
}

impl fmt::Debug for PcmSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcmSource")
            .field("channels", &self.channels)
            .field("bitrate_bps", &self.bitrate_bps)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PcmSource {
    /// The source's counters (the same as [`PcmWriter::stats`]).
    pub fn stats(&self) -> PcmSourceStats {
        self.counters.snapshot(self.frames.len())
    }

    /// The channel layout of the frames it encodes.
    pub fn channels(&self) -> PcmChannels {
        self.channels
    }

    fn encode(&mut self, pcm: &[i16], voice: bool) -> Result<OpusFrame, SourceError> {
        let requested = self.counters.bitrate_bps.load(Ordering::Relaxed);
        if requested != self.bitrate_bps {
            self.encoder
                .set_bitrate(Bitrate::Bits(requested))
                .map_err(|e| SourceError::opus(&e))?;
            self.bitrate_bps = requested;
        }
        let len = self
            .encoder
            .encode(pcm, &mut self.packet)
            .map_err(|e| SourceError::opus(&e))?;
        let Some(encoded) = self.packet.get(..len) else {
            return Err(SourceError::Opus {
                reason: format!(
                    "encoder reported {len} bytes for a {MAX_PACKET_BYTES}-byte buffer"
                ),
            });
        };
        let audio_level = audio_level_dbov(pcm);
        Ok(OpusFrame {
            data: Arc::from(encoded),
            duration_samples: SAMPLES_PER_FRAME,
            audio_level,
            voice_activity: voice && audio_level < 127,
        })
    }
}

impl FrameSource for PcmSource {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        match self.frames.try_recv() {
            Ok(pcm) => {
                let frame = self.encode(&pcm, true)?;
                self.counters.encoded.fetch_add(1, Ordering::Relaxed);
                Ok(Some(frame))
            }
            Err(TryRecvError::Empty) => {
                self.counters.underruns.fetch_add(1, Ordering::Relaxed);
                let silence = std::mem::take(&mut self.silence);
                let frame = self.encode(&silence, false);
                self.silence = silence;
                frame.map(Some)
            }
            // Only once the queue is empty and the writer gone.
            Err(TryRecvError::Disconnected) => Ok(None),
        }
    }
}
