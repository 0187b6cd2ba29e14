//! Media sources: where the Opus frames a call sends come from.
//!
//! A [`FrameSource`] yields one [`OpusFrame`] per call to [`FrameSource::next_frame`]; it never
//! blocks, never reads a clock and never touches the file system. The caller (the pacer in the
//! runtime) decides *when* to ask for the next frame. The sources:
//!
//! - [`ToneSource`] synthesises a sine and encodes it with libopus: deterministic test audio whose
//!   pitch the SFU mock can check on the far side.
//! - [`PcmSource`] encodes 16-bit PCM frames an application pushes through its [`PcmWriter`];
//!   [`PcmSink`] is the way back, decoding received Opus to PCM frames (see [`pcm`]).
//! - [`OggOpusReader`] passes the packets of an Ogg/Opus file (RFC 7845) through without decoding
//!   or re-encoding them, so one file can feed thousands of calls for the price of a parse.
//!
//! [`Resampler`] converts PCM of any rate and channel count to the 48 kHz the encoders take.
//!
//! [`OggOpusWriter`] is the inverse of the reader, for fixtures, tests and tools.
//!
//! Opus in RTP always runs on a 48 kHz clock (RFC 7587 §4.1) whatever the audio bandwidth, so every
//! duration in this module is counted in 48 kHz ticks ("samples").

use std::time::Duration;

use std::sync::Arc;

pub mod looped;
pub mod ogg;
pub mod pcm;
pub mod resample;
pub mod shared;
pub mod tone;
pub mod track;
pub mod video;
pub mod video_rx;
pub mod video_track;

pub use looped::LoopedFrames;
pub use ogg::{OggOpusReader, OggOpusStream, OggOpusWriter};
pub use pcm::{
    PcmChannels, PcmFrame, PcmPushError, PcmReceiver, PcmSink, PcmSinkConfig, PcmSinkStats,
    PcmSource, PcmSourceConfig, PcmSourceStats, PcmWriter, pcm_sink, pcm_source,
};
pub use resample::Resampler;
pub use shared::{SharedReader, SharedSource};
pub use tone::ToneSource;
pub use video::{VideoCodec, VideoFrame, VideoPoll, VideoSource};

/// Duration of one Opus frame produced by the sources in this crate: 20 ms.
///
/// 20 ms is the Opus default and what WebRTC endpoints (Telegram included) send; it is the
/// `ptime` our SDP advertises. RFC 7587 §4.2 allows 2.5 to 120 ms per packet, so passthrough
/// sources may still yield other durations: see [`OpusFrame::duration_samples`].
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// The RTP clock rate of Opus, in Hz.
///
/// RFC 7587 §4.1: "the RTP timestamp is incremented with a 48000 Hz clock rate for all modes of
/// Opus and all sampling rates", and the SDP must say `opus/48000/2` regardless.
pub const OPUS_CLOCK_RATE_HZ: u32 = 48_000;

/// Number of 48 kHz ticks in one [`FRAME_DURATION`] frame: 48 000 Hz × 20 ms = 960.
pub const SAMPLES_PER_FRAME: u32 = 960;

/// Longest Opus packet, in 48 kHz ticks: 120 ms (RFC 6716 §3.2.5, "R5": a code 3 packet may hold
/// at most 120 ms of audio).
pub const MAX_PACKET_DURATION_SAMPLES: u32 = 5_760;

/// One Opus packet ready to be put in an RTP payload, with what the RTP layer needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct OpusFrame {
    /// Exactly one Opus packet (RFC 6716 §3), TOC byte first. Shared, never copied per call:
    /// cloning a frame for a thousand calls clones a reference count. An `Arc<[u8]>` rather
    /// than `Bytes` because str0m's `RtpWrite` takes `Arc<[u8]>`: a `Bytes` payload would be
    /// copied into a new allocation for every call and every packet.
    pub data: Arc<[u8]>,
    /// Audio duration of the packet in 48 kHz ticks ([`OPUS_CLOCK_RATE_HZ`]); the RTP timestamp
    /// advances by this much. Usually [`SAMPLES_PER_FRAME`] (20 ms).
    pub duration_samples: u32,
    /// Audio level for the RFC 6464 header extension, in -dBov: 0 is the loudest (a full-scale
    /// square wave), 127 is silence (-127 dBov or quieter). See [`audio_level_dbov`].
    pub audio_level: u8,
    /// The voice-activity ("V") flag of the RFC 6464 header extension.
    pub voice_activity: bool,
}

/// A producer of Opus frames, pulled by the caller at the pace of real time.
///
/// The caller paces: it calls [`next_frame`](Self::next_frame) once per frame, i.e. every
/// [`OpusFrame::duration_samples`] of the previous frame ([`FRAME_DURATION`] for the sources in
/// this crate), and stamps RTP timestamps from the durations. A source therefore must not block or
/// sleep, and must not look at the clock: it hands out the next frame now or reports the end.
/// `Send` so a source can be built on one thread and moved to the shard that owns the call.
pub trait FrameSource: Send {
    /// Returns the next frame, `Ok(None)` at the end of the stream, or an error.
    ///
    /// After `Ok(None)` or an error the source is finished; further calls may return `Ok(None)`
    /// or the same kind of error again, but never panic.
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError>;

    /// Where in its media the source starts (a seek offset): the call's played position
    /// (ntgcalls' `time`) counts from here. Zero unless the source starts mid-stream.
    fn start_position(&self) -> Duration {
        Duration::ZERO
    }
}

/// Errors from media sources: decoding or parsing the audio failed.
///
/// The reasons are `String`s rather than wrapped causes so the error is `Clone` and `PartialEq`
/// and does not expose the `opus` crate's error type in our API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// libopus reported an error (encoder creation or encoding).
    #[error("opus codec error: {reason}")]
    Opus {
        /// libopus's description of the failure, with the function that failed.
        reason: String,
    },
    /// The Ogg container is malformed: bad capture pattern, CRC mismatch, truncated page, broken
    /// packet lacing or an invalid Opus packet inside it.
    #[error("malformed ogg stream at byte {offset}: {reason}")]
    Ogg {
        /// Byte offset, from the start of the input, of the page where the problem was found, or
        /// the length of the input when it ends with a packet left open.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The container is well formed but does not carry a usable Opus stream: the `OpusHead`
    /// identification header or the `OpusTags` header is missing or invalid (RFC 7845 §5).
    #[error("not an opus stream: {reason}")]
    NotOpus {
        /// What was missing or wrong.
        reason: String,
    },
    /// Reading the input failed (only [`OggOpusReader::from_reader`] reads anything).
    #[error("i/o error: {reason}")]
    Io {
        /// The I/O error's description.
        reason: String,
    },
    /// The caller passed a value the source cannot work with, e.g. a tone frequency above the
    /// Nyquist frequency. The caller's fault, not the media's.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// Which argument and why.
        reason: String,
    },
    /// The process that decodes the input (ffmpeg, or the application's shell command) could
    /// not open it, exited with an error or was killed: a missing file, an unreachable URL, a
    /// format it cannot read, a command that failed. `stderr` is the tail of what the process
    /// wrote to its standard error (the last lines, at most a few KiB), where ffmpeg says why.
    #[error("{program} failed: {reason}{}", stderr_suffix(stderr))]
    Decoder {
        /// The program: `ffmpeg`, or the first word of a shell command.
        program: String,
        /// What went wrong: the exit status, the signal, or why it could not be started.
        reason: String,
        /// The tail of the process's standard error; empty if it wrote nothing.
        stderr: String,
    },
    /// Encoded video that cannot be used: not the container or codec expected, a frame out of
    /// bounds, a raw frame of the wrong size.
    #[error("bad video: {reason}")]
    Video {
        /// What was wrong.
        reason: String,
    },
    /// The `ffmpeg` binary could not be run from the configured path (not installed, not
    /// executable). Install Debian's `ffmpeg` package or set the path on the engine builder.
    #[error("ffmpeg not found at {path}: {reason}")]
    FfmpegNotFound {
        /// The path that was tried.
        path: String,
        /// Why it did not run.
        reason: String,
    },
}

/// `": <stderr>"` for a non-empty stderr tail, for [`SourceError::Decoder`]'s message.
fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl SourceError {
    /// A [`SourceError::Video`].
    pub(crate) fn video(reason: impl Into<String>) -> Self {
        Self::Video {
            reason: reason.into(),
        }
    }

    /// Wraps a libopus error. Not a `From` impl so the `opus` crate stays out of our public API.
    pub(crate) fn opus(err: &opus::Error) -> Self {
        Self::Opus {
            reason: err.to_string(),
        }
    }
}

/// Full scale of 16-bit PCM: the overload point 0 dBov is measured against (RFC 6465 §3 defines
/// dBov relative to the overload point; a full-scale square wave of ±32767 has an RMS of 0 dBov).
const PCM_FULL_SCALE: f64 = 32_767.0;

/// The RFC 6464 level meaning "silence": -127 dBov or quieter.
const SILENT_AUDIO_LEVEL: u8 = 127;

/// Audio level of 16-bit PCM for the RFC 6464 header extension, in -dBov (0..=127).
///
/// RFC 6464 §3 carries the level as a 7-bit value "in -dBov", where dBov is relative to the
/// overload point of the system (RFC 6465 §3): we compute the RMS of the samples against a
/// full-scale square wave (±32767 = 0 dBov), negate, round to the nearest integer and clamp to
/// 0..=127. Digital silence and an empty slice give 127. One pass over the samples, no allocation.
pub fn audio_level_dbov(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return SILENT_AUDIO_LEVEL;
    }
    let sum_of_squares: f64 = pcm
        .iter()
        .map(|&s| {
            let s = f64::from(s);
            s * s
        })
        .sum();
    // The slice length fits an f64 exactly up to 2^53 samples.
    let mean_square = sum_of_squares / pcm.len() as f64;
    let rms = mean_square.sqrt();
    if rms <= 0.0 {
        return SILENT_AUDIO_LEVEL;
    }
    let minus_dbov = -20.0 * (rms / PCM_FULL_SCALE).log10();
    // `clamp` keeps the value in 0..=127, so the cast cannot truncate; i16::MIN squared makes the
    // RMS slightly above full scale, which the clamp maps to 0.
    minus_dbov.round().clamp(0.0, f64::from(SILENT_AUDIO_LEVEL)) as u8
}

/// Audio duration of one Opus packet in 48 kHz ticks, read from its TOC byte (RFC 6716 §3.1).
///
/// The TOC's configuration number gives the frame size (2.5, 5, 10, 20, 40 or 60 ms) and its code
/// the frame count: code 0 is one frame, codes 1 and 2 are two, code 3 reads the count from the
/// second byte. Returns `None` for an empty packet, a code 3 packet without a count byte or with
/// zero frames, and a packet longer than 120 ms ([`MAX_PACKET_DURATION_SAMPLES`], RFC 6716
/// §3.2.5). Only the duration is checked; frame lengths are left to the decoder at the far end.
pub fn packet_duration_samples(packet: &[u8]) -> Option<u32> {
    toc_duration_samples(packet).ok()
}

/// [`packet_duration_samples`] with a reason for the failure, for error messages.
pub(crate) fn toc_duration_samples(packet: &[u8]) -> Result<u32, &'static str> {
    let Some(&toc) = packet.first() else {
        return Err("empty opus packet");
    };
    let config = toc >> 3;
    // Frame sizes in 48 kHz ticks, RFC 6716 §3.1 Table 2: configs 0..=11 are SILK-only
    // (10/20/40/60 ms), 12..=15 hybrid (10/20 ms), 16..=31 CELT-only (2.5/5/10/20 ms).
    let frame_samples: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames: u32 = match toc & 0b11 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let Some(&count_byte) = packet.get(1) else {
                return Err("code 3 opus packet without a frame count byte");
            };
            // The low six bits are the count; the top two are the VBR and padding flags.
            let count = u32::from(count_byte & 0x3f);
            if count == 0 {
                return Err("code 3 opus packet with zero frames");
            }
            count
        }
    };
    let total = frame_samples * frames;
    if total > MAX_PACKET_DURATION_SAMPLES {
        return Err("opus packet longer than 120 ms");
    }
    Ok(total)
}

/// Test helpers shared by the media modules' tests.
#[cfg(test)]
pub(crate) mod test_util {
    use std::f64::consts::TAU;

    /// Power of `pcm` at `frequency_hz` (Goertzel algorithm).
    pub(crate) fn goertzel_power(pcm: &[i16], frequency_hz: f64) -> f64 {
        let coeff = 2.0 * (TAU * frequency_hz / 48_000.0).cos();
        let (mut s1, mut s2) = (0.0_f64, 0.0_f64);
        for &x in pcm {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    }

    /// The frequency in `range` (1 Hz steps) with the most power.
    pub(crate) fn dominant_hz(pcm: &[i16], range: std::ops::RangeInclusive<u32>) -> u32 {
        range
            .max_by(|&a, &b| {
                goertzel_power(pcm, f64::from(a)).total_cmp(&goertzel_power(pcm, f64::from(b)))
            })
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_agree() {
        let per_frame = u128::from(OPUS_CLOCK_RATE_HZ) * FRAME_DURATION.as_micros() / 1_000_000;
        assert_eq!(per_frame, u128::from(SAMPLES_PER_FRAME));
        assert_eq!(MAX_PACKET_DURATION_SAMPLES, 6 * SAMPLES_PER_FRAME);
    }

    #[test]
    fn audio_level_of_silence_and_empty_is_127() {
        assert_eq!(audio_level_dbov(&[]), 127);
        assert_eq!(audio_level_dbov(&[0; 960]), 127);
    }

    #[test]
    fn audio_level_of_full_scale_square_is_0() {
        let square: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { i16::MAX } else { -i16::MAX })
            .collect();
        assert_eq!(audio_level_dbov(&square), 0);
        assert_eq!(audio_level_dbov(&[i16::MIN; 960]), 0);
    }

    #[test]
    fn audio_level_of_half_scale_sine_is_9() {
        // RMS of a sine of amplitude 0.5 is 0.5/sqrt(2) = -9.03 dBov.
        let sine: Vec<i16> = (0..960)
            .map(|i| {
                let x = (f64::from(i) * 2.0 * std::f64::consts::PI * 440.0 / 48_000.0).sin();
                (x * 0.5 * 32_767.0) as i16
            })
            .collect();
        assert_eq!(audio_level_dbov(&sine), 9);
    }

    #[test]
    fn audio_level_of_tiny_signal_clamps_to_127() {
        let mut pcm = vec![0_i16; 1_000_000];
        pcm[0] = 1;
        assert_eq!(audio_level_dbov(&pcm), 127);
        // A lone LSB in a 960-sample frame: -20 log10(sqrt(1/960)/32767) = 120 dBov.
        let mut frame = [0_i16; 960];
        frame[0] = 1;
        assert_eq!(audio_level_dbov(&frame), 120);
    }

    #[test]
    fn toc_durations() {
        // (packet: TOC byte and maybe a frame count byte, expected duration, what it is)
        let cases: &[(&[u8], Option<u32>, &str)] = &[
            (&[0 << 3], Some(480), "SILK NB 10 ms, code 0"),
            (&[1 << 3], Some(960), "SILK NB 20 ms"),
            (&[2 << 3], Some(1920), "SILK NB 40 ms"),
            (&[3 << 3], Some(2880), "SILK NB 60 ms"),
            (&[(11 << 3) | 1, 0], Some(5760), "SILK WB 60 ms × 2"),
            (&[12 << 3], Some(480), "hybrid SWB 10 ms"),
            (&[(15 << 3) | 2, 1, 0], Some(1920), "FB 20 ms × 2"),
            (&[16 << 3], Some(120), "CELT NB 2.5 ms"),
            (&[21 << 3], Some(240), "CELT WB 5 ms"),
            (&[26 << 3], Some(480), "CELT SWB 10 ms"),
            (&[31 << 3], Some(960), "CELT FB 20 ms"),
            (&[(31 << 3) | 3, 6], Some(5760), "20 ms × 6"),
            (&[(16 << 3) | 3, 48], Some(5760), "2.5 ms × 48"),
            (&[(31 << 3) | 3, 0xc3], Some(2880), "flags ignored"),
            (&[(3 << 3) | 1], Some(5760), "60 ms × 2"),
            (&[(31 << 3) | 3, 7], None, "20 ms × 7"),
            (&[(3 << 3) | 3, 3], None, "60 ms × 3"),
            (&[(31 << 3) | 3, 0], None, "zero frames"),
            (&[(31 << 3) | 3], None, "no count byte"),
            (&[], None, "empty"),
        ];
        for &(packet, expected, what) in cases {
            assert_eq!(packet_duration_samples(packet), expected, "{what}");
        }
    }

    #[test]
    fn error_messages_are_lowercase_and_specific() {
        let err = SourceError::Ogg {
            offset: 58,
            reason: "crc mismatch".into(),
        };
        assert_eq!(
            err.to_string(),
            "malformed ogg stream at byte 58: crc mismatch"
        );
    }
}
