//! Sample-rate and channel conversion of 16-bit PCM to the 48 kHz Opus works at.
//!
//! [`Resampler`] takes interleaved `i16` PCM at any rate in [`MIN_RATE_HZ`]..=[`MAX_RATE_HZ`],
//! mono or stereo, in chunks of any length, and appends 48 kHz PCM with the channel count asked
//! for. At 48 kHz nothing is resampled: only the channels are converted (mono to stereo
//! duplicates, stereo to mono averages).
//!
//! Other rates go through `rubato`'s synchronous FFT resampler (`rubato::Fft`, fixed ratio,
//! Blackman-Harris² anti-aliasing window) with one FFT block per chunk of about 20 ms: the
//! quality of a long sinc filter (a flat pass band to near the lower Nyquist frequency, and
//! strong stop-band rejection) for the cost of two FFTs of 20 ms each per 20 ms of audio, which
//! suits music. Stereo to mono is averaged *before* resampling and mono to stereo duplicated
//! after, so no more channels are resampled than needed.
//!
//! Latency: the resampler's own delay (half an FFT block: 480 output samples, 10 ms, for every
//! rate that is a multiple of 50 Hz) is trimmed from the start of the output, so the output is
//! time-aligned with the input. Until [`Resampler::flush`], the output is shorter than
//! `input × 48 000 / in_rate` by at most one block plus that delay (30 ms at rates that are a
//! multiple of 50 Hz; a rate sharing only a small common divisor with 48 000, such as 44 101 Hz,
//! needs blocks of up to one second). After `flush` the total output is exactly
//! `ceil(input × 48 000 / in_rate)` samples per channel.
//!
//! Allocation-light: the sample buffers are allocated once in [`Resampler::new`] and reused;
//! only `out` grows.

use std::fmt;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _, WindowFunction};

use super::{OPUS_CLOCK_RATE_HZ, SourceError};

/// Lowest input rate [`Resampler::new`] accepts, in Hz.
pub const MIN_RATE_HZ: u32 = 8_000;

/// Highest input rate [`Resampler::new`] accepts, in Hz.
pub const MAX_RATE_HZ: u32 = 384_000;

/// Converts interleaved 16-bit PCM of any rate and channel count to 48 kHz.
///
/// Keeps state across [`process`](Self::process) calls, so chunk boundaries are seamless; see
/// the [module documentation](self) for the algorithm and its latency.
pub struct Resampler {
    in_rate: u32,
    in_channels: usize,
    out_channels: usize,
    /// `None` at 48 kHz: channel conversion only.
    inner: Option<Inner>,
}

/// The resampling state for rates other than 48 kHz.
struct Inner {
    fft: Fft<f32>,
    /// Channels resampled: the smaller of the input's and the output's.
    channels: usize,
    /// Input frames per block.
    chunk_in: usize,
    /// Input waiting for a full block, interleaved, `channels` wide, as floats.
    pending: Vec<f32>,
    /// One block of resampler output, interleaved.
    scratch: Vec<f32>,
    /// Output frames still to drop (the resampler's startup delay).
    to_trim: usize,
    /// Input frames taken since the start (or the last flush).
    frames_in: u64,
    /// Output frames appended since the start (or the last flush).
    frames_out: u64,
}

impl fmt::Debug for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Resampler");
        d.field("in_rate", &self.in_rate)
            .field("in_channels", &self.in_channels)
            .field("out_channels", &self.out_channels);
        if let Some(inner) = &self.inner {
            d.field("chunk_in", &inner.chunk_in)
                .field("delay", &inner.fft.output_delay())
                .field("pending_frames", &(inner.pending.len() / inner.channels));
        }
        d.finish_non_exhaustive()
    }
}

fn invalid(reason: String) -> SourceError {
    SourceError::InvalidArgument { reason }
}

fn check_channels(what: &str, channels: u8) -> Result<usize, SourceError> {
    match channels {
        1 | 2 => Ok(usize::from(channels)),
        other => Err(invalid(format!("{what} must be 1 or 2, got {other}"))),
    }
}

fn to_float(s: i16) -> f32 {
    f32::from(s) / 32_768.0
}

fn to_i16(x: f32) -> i16 {
    // Saturating: `as` clamps to the i16 range (and maps NaN to 0).
    (x * 32_768.0).round() as i16
}

impl Resampler {
    /// A resampler from `in_rate` Hz (8 000..=384 000) and `in_channels` (1 or 2, interleaved
    /// `i16`) to 48 kHz with `out_channels` (1 or 2).
    ///
    /// Fails with [`SourceError::InvalidArgument`] for a rate or channel count out of range.
    pub fn new(in_rate: u32, in_channels: u8, out_channels: u8) -> Result<Self, SourceError> {
        if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&in_rate) {
            return Err(invalid(format!(
                "input sample rate must be in {MIN_RATE_HZ}..={MAX_RATE_HZ} Hz, got {in_rate}"
            )));
        }
        let in_channels = check_channels("input channels", in_channels)?;
        let out_channels = check_channels("output channels", out_channels)?;
        let inner = if in_rate == OPUS_CLOCK_RATE_HZ {
            None
        } else {
            let channels = in_channels.min(out_channels);
            let rate = in_rate as usize;
            // One FFT block of about 20 ms (rubato rounds up to a multiple of the smallest
            // block the ratio allows; exactly 20 ms for rates that are multiples of 50 Hz).
            let fft = Fft::<f32>::new_custom(
                rate,
                OPUS_CLOCK_RATE_HZ as usize,
                (rate / 50).max(1),
                1,
                channels,
                WindowFunction::BlackmanHarris2,
                FixedSync::Both,
            )
            .map_err(|e| invalid(format!("resampler for {in_rate} Hz: {e}")))?;
            let chunk_in = fft.input_frames_next();
            Some(Inner {
                channels,
                chunk_in,
                pending: Vec::with_capacity(2 * chunk_in * channels),
                scratch: vec![0.0; fft.output_frames_max() * channels],
                to_trim: fft.output_delay(),
                frames_in: 0,
                frames_out: 0,
                fft,
            })
        };
        Ok(Self {
            in_rate,
            in_channels,
            out_channels,
            inner,
        })
    }

    /// The input rate, in Hz.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// Appends to `out` the 48 kHz interleaved samples (`out_channels` wide) for `input`
    /// (interleaved, `in_channels` wide).
    ///
    /// Any input length that is a multiple of `in_channels`; a trailing partial sample is a
    /// [`SourceError::InvalidArgument`] and nothing is consumed. Input short of a resampler
    /// block is held until the next call (or [`flush`](Self::flush)).
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), SourceError> {
        if !input.len().is_multiple_of(self.in_channels) {
            return Err(invalid(format!(
                "{} samples are not a whole number of {}-channel frames",
                input.len(),
                self.in_channels
            )));
        }
        let (in_channels, out_channels) = (self.in_channels, self.out_channels);
        let Some(inner) = &mut self.inner else {
            convert_channels(input, in_channels, out_channels, out);
            return Ok(());
        };
        // Into the pending buffer, as floats, down-mixed to the resampled channel count.
        if in_channels == inner.channels {
            inner.pending.extend(input.iter().map(|&s| to_float(s)));
        } else {
            inner.pending.extend(
                input
                    .chunks_exact(2)
                    .map(|lr| (to_float(lr[0]) + to_float(lr[1])) * 0.5),
            );
        }
        inner.frames_in += (input.len() / in_channels) as u64;
        let available = inner.pending.len() / inner.channels;
        let mut offset = 0;
        while available - offset >= inner.chunk_in {
            let indexing = Indexing::new().input_offset(offset);
            let produced = inner.block(Some(&indexing), available)?;
            inner.emit(produced, None, out_channels, out);
            offset += inner.chunk_in;
        }
        inner.pending.drain(..offset * inner.channels);
        Ok(())
    }

    /// Flushes what the resampler still holds (end of stream), appending to `out`.
    ///
    /// The output since [`new`](Self::new) (or the previous flush) then totals exactly
    /// `ceil(input frames × 48 000 / in_rate)` frames. The resampler is reset afterwards,
    /// ready for a new stream. Nothing to do at 48 kHz.
    pub fn flush(&mut self, out: &mut Vec<i16>) -> Result<(), SourceError> {
        let out_channels = self.out_channels;
        let in_rate = u64::from(self.in_rate);
        let Some(inner) = &mut self.inner else {
            return Ok(());
        };
        let expected = (inner.frames_in * u64::from(OPUS_CLOCK_RATE_HZ)).div_ceil(in_rate);
        let mut held = inner.pending.len() / inner.channels;
        while inner.frames_out < expected {
            // The held input first, then silence until the delay line has emptied.
            let indexing = Indexing::new().partial_len(held);
            let produced = inner.block(Some(&indexing), held)?;
            held = 0;
            inner.emit(produced, Some(expected), out_channels, out);
        }
        inner.pending.clear();
        inner.fft.reset();
        inner.to_trim = inner.fft.output_delay();
        inner.frames_in = 0;
        inner.frames_out = 0;
        Ok(())
    }
}

impl Inner {
    /// Runs one block from `pending` (which holds `frames` frames) into `scratch`; returns the
    /// frames produced.
    fn block(&mut self, indexing: Option<&Indexing>, frames: usize) -> Result<usize, SourceError> {
        let internal = |e: &dyn fmt::Display| invalid(format!("resampler: {e}"));
        // The adapter must describe at least one block even when `partial_len` says less is
        // valid; `pending` is grown with zeros to that size if needed.
        let frames = frames.max(self.chunk_in);
        if self.pending.len() < frames * self.channels {
            self.pending.resize(frames * self.channels, 0.0);
        }
        let input = InterleavedSlice::new(&self.pending[..], self.channels, frames)
            .map_err(|e| internal(&e))?;
        let out_frames = self.scratch.len() / self.channels;
        let mut output =
            InterleavedSlice::new_mut(&mut self.scratch[..], self.channels, out_frames)
                .map_err(|e| internal(&e))?;
        let (_, produced) = self
            .fft
            .process_into_buffer(&input, &mut output, indexing)
            .map_err(|e| internal(&e))?;
        Ok(produced)
    }

    /// Appends the first `produced` frames of `scratch` to `out`, dropping the startup delay
    /// first and stopping at `limit` frames in total.
    fn emit(
        &mut self,
        produced: usize,
        limit: Option<u64>,
        out_channels: usize,
        out: &mut Vec<i16>,
    ) {
        let skip = self.to_trim.min(produced);
        self.to_trim -= skip;
        let mut frames = produced - skip;
        if let Some(limit) = limit {
            let room = limit.saturating_sub(self.frames_out);
            frames = frames.min(usize::try_from(room).unwrap_or(usize::MAX));
        }
        self.frames_out += frames as u64;
        let samples = &self.scratch[skip * self.channels..(skip + frames) * self.channels];
        match (self.channels, out_channels) {
            (1, 2) => out.extend(samples.iter().flat_map(|&x| {
                let s = to_i16(x);
                [s, s]
            })),
            _ => out.extend(samples.iter().map(|&x| to_i16(x))),
        }
    }
}

/// Channel conversion alone (48 kHz input).
fn convert_channels(input: &[i16], in_channels: usize, out_channels: usize, out: &mut Vec<i16>) {
    match (in_channels, out_channels) {
        (1, 2) => out.extend(input.iter().flat_map(|&s| [s, s])),
        (2, 1) => out.extend(
            input
                .chunks_exact(2)
                .map(|lr| ((i32::from(lr[0]) + i32::from(lr[1])) / 2) as i16),
        ),
        _ => out.extend_from_slice(input),
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;

    use super::*;
    use crate::media::test_util::{dominant_hz, goertzel_power};

    /// `frames` frames of a half-scale sine of `hz` at `rate`, `channels` wide (all channels
    /// the same).
    fn sine(hz: f64, rate: u32, frames: usize, channels: usize) -> Vec<i16> {
        (0..frames)
            .flat_map(|i| {
                let s = ((i as f64 * TAU * hz / f64::from(rate)).sin() * 16_384.0).round() as i16;
                std::iter::repeat_n(s, channels)
            })
            .collect()
    }

    /// Resamples `input` in chunks of `chunk_frames` frames, then flushes.
    fn run(r: &mut Resampler, input: &[i16], chunk_frames: usize) -> (Vec<i16>, usize) {
        let mut out = Vec::new();
        for chunk in input.chunks(chunk_frames * r.in_channels) {
            r.process(chunk, &mut out).unwrap();
        }
        let before_flush = out.len();
        r.flush(&mut out).unwrap();
        (out, before_flush)
    }

    #[test]
    fn sine_comes_out_at_48_khz_with_its_frequency() {
        for rate in [44_100, 22_050, 96_000, 8_000] {
            for chunk in [441, 1000] {
                let mut r = Resampler::new(rate, 1, 1).unwrap();
                let frames = rate as usize; // one second
                let (out, before_flush) = run(&mut r, &sine(1000.0, rate, frames, 1), chunk);
                assert_eq!(out.len(), 48_000, "{rate} Hz in chunks of {chunk}");
                // Before the flush, at most one block (20 ms) plus the delay (10 ms) short.
                assert!(
                    before_flush >= 48_000 - 960 - 480,
                    "{rate} Hz: {before_flush} before flush"
                );
                // Away from the edges (the resampler's filter rings at the ends).
                let steady = &out[4_800..43_200];
                let hz = dominant_hz(steady, 900..=1100);
                assert!(
                    hz.abs_diff(1000) <= 2,
                    "{rate} Hz in chunks of {chunk}: {hz} Hz"
                );
                // A clean tone: nothing at other frequencies.
                let tone = goertzel_power(steady, 1000.0);
                for other in [500.0, 1500.0, 3000.0] {
                    assert!(
                        tone > 10_000.0 * goertzel_power(steady, other),
                        "{rate} Hz: energy at {other} Hz"
                    );
                }
                // Amplitude kept: peak near half scale.
                let peak = steady.iter().map(|s| s.unsigned_abs()).max().unwrap();
                assert!((15_800..=17_000).contains(&peak), "{rate} Hz: peak {peak}");
            }
        }
    }

    #[test]
    fn output_is_time_aligned_with_the_input() {
        // A click at input frame 4410 (100 ms at 44.1 kHz) comes out at 4800.
        let mut input = vec![0_i16; 44_100];
        input[4_410] = 30_000;
        let mut r = Resampler::new(44_100, 1, 1).unwrap();
        let (out, _) = run(&mut r, &input, 441);
        let peak = (0..out.len())
            .max_by_key(|&i| out[i].unsigned_abs())
            .unwrap();
        assert!(peak.abs_diff(4_800) <= 1, "click at {peak}");
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input = sine(440.0, 44_100, 10_000, 2);
        let mut a = Resampler::new(44_100, 2, 2).unwrap();
        let mut b = Resampler::new(44_100, 2, 2).unwrap();
        let (out_a, _) = run(&mut a, &input, 1);
        let (out_b, _) = run(&mut b, &input, 10_000);
        assert_eq!(out_a, out_b);
        assert_eq!(out_a.len(), 2 * (10_000_usize * 48_000).div_ceil(44_100));
        // Flushed: ready for another stream, which comes out the same.
        let (again, _) = run(&mut a, &input, 777);
        assert_eq!(again, out_b);
    }

    #[test]
    fn channel_conversions_at_48_khz_do_not_resample() {
        let mut up = Resampler::new(48_000, 1, 2).unwrap();
        let mut out = Vec::new();
        up.process(&[1, -2, 3], &mut out).unwrap();
        assert_eq!(out, [1, 1, -2, -2, 3, 3]);
        let mut down = Resampler::new(48_000, 2, 1).unwrap();
        let mut out = Vec::new();
        down.process(&[10, 20, -3, -5, i16::MAX, i16::MAX], &mut out)
            .unwrap();
        down.flush(&mut out).unwrap();
        assert_eq!(out, [15, -4, i16::MAX]);
        let mut same = Resampler::new(48_000, 2, 2).unwrap();
        let mut out = Vec::new();
        same.process(&[7, 8, 9, 10], &mut out).unwrap();
        assert_eq!(out, [7, 8, 9, 10]);
        assert!(same.inner.is_none());
    }

    #[test]
    fn channel_conversions_while_resampling() {
        // Stereo in, left 1000 Hz and right silent: mono out is the average (quarter scale).
        let input: Vec<i16> = sine(1000.0, 44_100, 44_100, 1)
            .into_iter()
            .flat_map(|s| [s, 0])
            .collect();
        let mut down = Resampler::new(44_100, 2, 1).unwrap();
        let (mono, _) = run(&mut down, &input, 1000);
        assert_eq!(mono.len(), 48_000);
        assert_eq!(dominant_hz(&mono[4_800..43_200], 900..=1100), 1000);
        let peak = mono[4_800..43_200].iter().map(|s| s.unsigned_abs()).max();
        assert!((7_900..=8_500).contains(&peak.unwrap()), "{peak:?}");
        // Mono in, stereo out: both channels the same.
        let mut up = Resampler::new(22_050, 1, 2).unwrap();
        let (stereo, _) = run(&mut up, &sine(1000.0, 22_050, 22_050, 1), 441);
        assert_eq!(stereo.len(), 96_000);
        assert!(stereo.chunks(2).all(|lr| lr[0] == lr[1]));
        let left: Vec<i16> = stereo.iter().step_by(2).copied().collect();
        assert_eq!(dominant_hz(&left[4_800..43_200], 900..=1100), 1000);
    }

    #[test]
    fn resampler_is_send_and_debug() {
        fn send<T: Send + fmt::Debug>(_: &T) {}
        let r = Resampler::new(44_100, 2, 1).unwrap();
        send(&r);
        let shown = format!("{r:?}");
        assert!(
            shown.contains("in_rate: 44100") && shown.contains("delay: 480"),
            "{shown}"
        );
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        for (rate, cin, cout) in [
            (7_999, 1, 1),
            (384_001, 1, 1),
            (0, 1, 1),
            (44_100, 0, 1),
            (44_100, 3, 1),
            (44_100, 1, 0),
            (48_000, 1, 3),
        ] {
            assert!(
                matches!(
                    Resampler::new(rate, cin, cout),
                    Err(SourceError::InvalidArgument { .. })
                ),
                "{rate} {cin} {cout}"
            );
        }
        for rate in [44_100, 48_000] {
            let mut r = Resampler::new(rate, 2, 2).unwrap();
            let mut out = Vec::new();
            assert!(matches!(
                r.process(&[1, 2, 3], &mut out),
                Err(SourceError::InvalidArgument { .. })
            ));
            assert!(out.is_empty());
            assert_eq!(r.in_rate(), rate);
        }
        // An odd rate (no common divisor with 48 000 but 1) still works, with long blocks.
        let mut odd = Resampler::new(44_101, 1, 1).unwrap();
        let (out, _) = run(&mut odd, &sine(1000.0, 44_101, 44_101, 1), 1000);
        assert_eq!(out.len(), 48_000);
        assert_eq!(dominant_hz(&out[4_800..43_200], 900..=1100), 1000);
    }
}
