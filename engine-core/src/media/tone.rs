//! A sine-wave source encoded with libopus: deterministic test audio with a known pitch.
//!
//! The SFU mock decodes what it receives and measures the dominant frequency, so a call streaming
//! a [`ToneSource`] can be verified end to end ("the SFU hears 440 Hz") without recordings.

use std::f64::consts::TAU;
use std::time::Duration;

use opus::{Application, Bitrate, Channels, Encoder};
use std::sync::Arc;

use super::{
    FRAME_DURATION, FrameSource, OPUS_CLOCK_RATE_HZ, OpusFrame, SAMPLES_PER_FRAME, SourceError,
    audio_level_dbov,
};

/// Peak amplitude of the tone as a fraction of full scale: loud enough to be far above the codec's
/// noise floor, with 6 dB of headroom so the encoder never clips.
const AMPLITUDE: f64 = 0.5;

/// Full scale of 16-bit PCM.
const PCM_FULL_SCALE: f64 = 32_767.0;

/// Encoder bitrate: 32 kbit/s, plenty for a mono tone and in line with what Telegram clients send
/// for voice.
const BITRATE_BPS: i32 = 32_000;

/// Output buffer size: RFC 6716 §3.2.1 caps one Opus frame at 1275 bytes, and a 20 ms code 0
/// packet is one frame (libopus fits the TOC byte within this limit for 20 ms frames).
const MAX_PACKET_BYTES: usize = 1275;

/// Frame length in PCM samples (mono, 48 kHz), as a buffer size.
const FRAME_LEN: usize = SAMPLES_PER_FRAME as usize;

/// A mono 48 kHz sine encoded to 20 ms Opus frames, optionally for a fixed duration.
///
/// Deterministic: the same frequency and duration always produce the same packets (no
/// randomness, no clock; libopus itself is deterministic for a given build). The phase is carried
/// across frames, so the tone has no clicks at frame boundaries.
///
/// Per frame, [`next_frame`](FrameSource::next_frame) fills a reused PCM buffer, encodes into a
/// reused output buffer, and makes exactly one allocation: the `Arc<[u8]>` holding the encoded packet
/// (a few dozen bytes), which the frame then shares with every call it is sent on.
#[derive(Debug)]
pub struct ToneSource {
    /// The libopus encoder (mono, 48 kHz, `Application::Audio`, 32 kbit/s).
    encoder: Encoder,
    /// The tone's frequency, as given.
    frequency_hz: f32,
    /// Current phase in radians, in `0..TAU`. `f64` so a tone running for days does not drift.
    phase: f64,
    /// Phase advance per sample: `TAU * frequency / 48 000`.
    phase_step: f64,
    /// Frames to produce before the end of the stream; `None` runs forever.
    frame_limit: Option<u64>,
    /// Frames encoded so far.
    frames_encoded: u64,
    /// PCM for one frame, reused: always [`FRAME_LEN`] samples.
    pcm: Vec<i16>,
    /// Encoder output, reused: always [`MAX_PACKET_BYTES`] bytes long.
    packet: Vec<u8>,
}

impl ToneSource {
    /// Creates a tone of `frequency_hz`, lasting `duration` (rounded up to whole 20 ms frames) or
    /// forever when `None`.
    ///
    /// `frequency_hz` must be finite and within `0.0..24_000.0` (below the Nyquist frequency of
    /// the 48 kHz signal); `0.0` gives digital silence. Fails with
    /// [`SourceError::InvalidArgument`] otherwise, or [`SourceError::Opus`] if libopus cannot
    /// create the encoder.
    pub fn new(frequency_hz: f32, duration: Option<Duration>) -> Result<Self, SourceError> {
        let nyquist_hz = f64::from(OPUS_CLOCK_RATE_HZ) / 2.0;
        if !frequency_hz.is_finite() || frequency_hz < 0.0 || f64::from(frequency_hz) >= nyquist_hz
        {
            return Err(SourceError::InvalidArgument {
                reason: format!(
                    "tone frequency must be finite and in 0..{nyquist_hz} hz, got {frequency_hz}"
                ),
            });
        }
        let mut encoder = Encoder::new(OPUS_CLOCK_RATE_HZ, Channels::Mono, Application::Audio)
            .map_err(|e| SourceError::opus(&e))?;
        encoder
            .set_bitrate(Bitrate::Bits(BITRATE_BPS))
            .map_err(|e| SourceError::opus(&e))?;
        Ok(Self {
            encoder,
            frequency_hz,
            phase: 0.0,
            phase_step: TAU * f64::from(frequency_hz) / f64::from(OPUS_CLOCK_RATE_HZ),
            frame_limit: duration.map(frames_for),
            frames_encoded: 0,
            pcm: vec![0; FRAME_LEN],
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// The tone's frequency in Hz, as passed to [`new`](Self::new).
    pub fn frequency_hz(&self) -> f32 {
        self.frequency_hz
    }

    /// How many frames this source has encoded so far (one libopus encode call each).
    pub fn frames_encoded(&self) -> u64 {
        self.frames_encoded
    }

    /// Changes the Opus encoder's bitrate (bits per second) from the next frame on.
    ///
    /// # Errors
    /// [`SourceError::Opus`] if libopus refuses the value (it accepts 500..=512000 and clamps
    /// within that range).
    pub fn set_bitrate(&mut self, bits_per_second: i32) -> Result<(), SourceError> {
        self.encoder
            .set_bitrate(Bitrate::Bits(bits_per_second))
            .map_err(|e| SourceError::Opus {
                reason: format!("opus_encoder_ctl(SET_BITRATE {bits_per_second}): {e}"),
            })
    }

    /// The encoder's current bitrate in bits per second, as libopus reports it.
    ///
    /// # Errors
    /// [`SourceError::Opus`] if libopus cannot report it.
    pub fn bitrate(&mut self) -> Result<i32, SourceError> {
        match self.encoder.get_bitrate() {
            Ok(Bitrate::Bits(b)) => Ok(b),
            Ok(other) => Err(SourceError::Opus {
                reason: format!("unexpected bitrate setting {other:?}"),
            }),
            Err(e) => Err(SourceError::Opus {
                reason: format!("opus_encoder_ctl(GET_BITRATE): {e}"),
            }),
        }
    }

    /// Writes the next [`FRAME_LEN`] samples of the sine into `self.pcm`.
    fn fill_pcm(&mut self) {
        for sample in &mut self.pcm {
            // |sin| <= 1 and AMPLITUDE < 1, so the product is within i16 range; `as` would
            // saturate anyway.
            *sample = (self.phase.sin() * AMPLITUDE * PCM_FULL_SCALE).round() as i16;
            self.phase += self.phase_step;
            // phase_step < PI (frequency below Nyquist), so one subtraction wraps it.
            if self.phase >= TAU {
                self.phase -= TAU;
            }
        }
    }
}

impl FrameSource for ToneSource {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        if self
            .frame_limit
            .is_some_and(|limit| self.frames_encoded >= limit)
        {
            return Ok(None);
        }
        self.fill_pcm();
        let audio_level = audio_level_dbov(&self.pcm);
        let len = self
            .encoder
            .encode(&self.pcm, &mut self.packet)
            .map_err(|e| SourceError::opus(&e))?;
        let Some(encoded) = self.packet.get(..len) else {
            // libopus never reports more bytes than the buffer it was given.
            return Err(SourceError::Opus {
                reason: format!(
                    "encoder reported {len} bytes for a {MAX_PACKET_BYTES}-byte buffer"
                ),
            });
        };
        // The one allocation per frame (see the type docs).
        let data: Arc<[u8]> = Arc::from(encoded);
        self.frames_encoded += 1;
        Ok(Some(OpusFrame {
            data,
            duration_samples: SAMPLES_PER_FRAME,
            audio_level,
            voice_activity: true,
        }))
    }
}

/// Number of whole frames covering `duration`, rounding a partial last frame up.
fn frames_for(duration: Duration) -> u64 {
    let frames = duration.as_nanos().div_ceil(FRAME_DURATION.as_nanos());
    u64::try_from(frames).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::test_util::{dominant_hz, goertzel_power};

    /// Decodes `frames` with libopus into mono 48 kHz PCM.
    fn decode(frames: &[OpusFrame]) -> Vec<i16> {
        let mut decoder = opus::Decoder::new(48_000, Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0_i16; 5760];
        for frame in frames {
            let n = decoder.decode(&frame.data, &mut buf, false).unwrap();
            assert_eq!(n, 960);
            pcm.extend_from_slice(&buf[..n]);
        }
        pcm
    }

    fn take_frames(source: &mut ToneSource, n: usize) -> Vec<OpusFrame> {
        (0..n)
            .map(|_| {
                source
                    .next_frame()
                    .unwrap()
                    .expect("an endless tone never ends")
            })
            .collect()
    }

    #[test]
    fn decodes_to_440_hz() {
        let mut source = ToneSource::new(440.0, None).unwrap();
        let frames = take_frames(&mut source, 50);
        assert_eq!(source.frames_encoded(), 50);
        assert_eq!(source.frequency_hz(), 440.0);
        for frame in &frames {
            assert_eq!(frame.duration_samples, 960);
            assert!(frame.voice_activity);
            assert!(!frame.data.is_empty() && frame.data.len() <= 1275);
        }
        // Skip the first 100 ms: encoder look-ahead and decoder warm-up.
        let pcm = decode(&frames);
        let steady = &pcm[4800..];
        let peak = dominant_hz(steady, 300..=600);
        assert!((435..=445).contains(&peak), "dominant frequency {peak} Hz");
        // The peak stands far above an unrelated frequency.
        assert!(goertzel_power(steady, 440.0) > 1000.0 * goertzel_power(steady, 1000.0));
    }

    #[test]
    fn other_frequencies_decode_too() {
        for hz in [300_u32, 1000, 3000] {
            let mut source = ToneSource::new(hz as f32, None).unwrap();
            let pcm = decode(&take_frames(&mut source, 25));
            let peak = dominant_hz(&pcm[4800..], hz - 50..=hz + 50);
            assert!(peak.abs_diff(hz) <= 5, "{hz} Hz tone decoded as {peak} Hz");
        }
    }

    #[test]
    fn duration_limits_frames() {
        let mut source = ToneSource::new(440.0, Some(Duration::from_millis(100))).unwrap();
        for _ in 0..5 {
            assert!(source.next_frame().unwrap().is_some());
        }
        assert_eq!(source.next_frame().unwrap(), None);
        assert_eq!(source.next_frame().unwrap(), None);
        assert_eq!(source.frames_encoded(), 5);
    }

    #[test]
    fn partial_frames_round_up_and_zero_is_empty() {
        assert_eq!(frames_for(Duration::from_millis(101)), 6);
        assert_eq!(frames_for(Duration::from_millis(1)), 1);
        assert_eq!(frames_for(Duration::ZERO), 0);
        // ~9.2e20 frames: more than u64 holds, saturated.
        assert_eq!(frames_for(Duration::MAX), u64::MAX);
        let mut source = ToneSource::new(440.0, Some(Duration::ZERO)).unwrap();
        assert_eq!(source.next_frame().unwrap(), None);
    }

    #[test]
    fn audio_level_reports_a_loud_tone() {
        let mut source = ToneSource::new(440.0, None).unwrap();
        for frame in take_frames(&mut source, 3) {
            // A half-scale sine is -9 dBov.
            assert_eq!(frame.audio_level, 9);
        }
        let mut silence = ToneSource::new(0.0, None).unwrap();
        assert_eq!(take_frames(&mut silence, 1)[0].audio_level, 127);
    }

    #[test]
    fn deterministic() {
        let a = take_frames(&mut ToneSource::new(440.0, None).unwrap(), 20);
        let b = take_frames(&mut ToneSource::new(440.0, None).unwrap(), 20);
        assert_eq!(a, b);
    }

    #[test]
    fn phase_is_continuous_across_frames() {
        let mut source = ToneSource::new(440.0, None).unwrap();
        source.fill_pcm();
        let last = *source.pcm.last().unwrap();
        source.fill_pcm();
        let first = source.pcm[0];
        // One sample of a 440 Hz half-scale sine moves at most 2π·440/48000·16384 ≈ 944.
        assert!((i32::from(first) - i32::from(last)).abs() < 1000);
    }

    #[test]
    fn rejects_bad_frequencies() {
        for hz in [f32::NAN, f32::INFINITY, -1.0, 24_000.0, 100_000.0] {
            assert!(
                matches!(
                    ToneSource::new(hz, None),
                    Err(SourceError::InvalidArgument { .. })
                ),
                "{hz}"
            );
        }
    }

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<ToneSource>();
    }
}
