//! What the SFU hears: the dominant frequency and level of decoded audio.
//!
//! Tests stream a [`ToneSource`](ringcast_core::media::ToneSource) at a known pitch and ask the
//! SFU what it received; "440 Hz arrived at 440 Hz" checks the whole path (Opus encoding,
//! packetisation, SRTP, forwarding, decoding) in one number. [`ToneMeter`] keeps the most recent
//! audio of one participant; [`dominant_frequency_hz`] does the spectral analysis.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

/// Sample rate of the PCM the SFU decodes to: Opus always decodes at 48 kHz here (RFC 7587 §4.1).
const SAMPLE_RATE_HZ: u32 = 48_000;

/// Samples a [`ToneMeter`] keeps: 16 384, about 0.34 s at 48 kHz. A power of two (the fastest FFT
/// size) giving 2.9 Hz bins, which the peak interpolation refines to well under 1 Hz.
pub const TONE_METER_CAPACITY: usize = 16_384;

/// Fewest samples [`dominant_frequency_hz`] analyses: 1024 samples give 47 Hz bins at 48 kHz,
/// already coarse; fewer would not tell neighbouring tones apart.
pub const MIN_ANALYSIS_SAMPLES: usize = 1024;

/// RMS (full scale = 1.0) below which a signal counts as silence: -80 dBFS, below the noise floor
/// of a decoded Opus stream and far below any test tone.
const SILENCE_RMS: f32 = 1e-4;

/// Lowest frequency considered: below 20 Hz is DC offset and rumble, not a tone.
const MIN_FREQUENCY_HZ: f32 = 20.0;

/// Full scale of 16-bit PCM, to bring samples into -1.0..=1.0.
const PCM_FULL_SCALE: f32 = 32_768.0;

/// The strongest frequency in `samples`, in Hz, or `None` for short or silent input.
///
/// `samples` is mono audio at `sample_rate_hz`, full scale being ±1.0. The spectrum is the FFT of
/// the whole slice under a Hann window (to keep the leakage of a strong tone from hiding weaker
/// ones); bins below 20 Hz are skipped; the peak bin is refined by fitting a parabola through the
/// log magnitudes of it and its two neighbours. For a Hann window that is accurate to a small
/// fraction of a bin away from DC: within 0.05 Hz with 16 384 samples at 48 kHz, 0.2 Hz with 4096.
///
/// Returns `None` with fewer than [`MIN_ANALYSIS_SAMPLES`] samples, a zero sample rate, or an RMS
/// below 1e-4 (-80 dBFS; also when a sample is not finite).
///
/// Allocates the FFT buffer and plans a transform on each call: it runs when someone asks for
/// stats, not per packet, and a cached plan would tie the caller to one length.
pub fn dominant_frequency_hz(samples: &[f32], sample_rate_hz: u32) -> Option<f32> {
    let n = samples.len();
    if n < MIN_ANALYSIS_SAMPLES || sample_rate_hz == 0 {
        return None;
    }
    let rms = rms_f32(samples);
    // A non-finite sample makes the RMS non-finite: nothing meaningful to analyse.
    if !rms.is_finite() || rms < SILENCE_RMS {
        return None;
    }

    // Periodic Hann window: w[i] = 0.5 - 0.5 cos(2πi/n).
    let step = std::f32::consts::TAU / n as f32;
    let mut buffer: Vec<Complex<f32>> = samples
        .iter()
        .enumerate()
        .map(|(i, &x)| Complex::new(x * (0.5 - 0.5 * (step * i as f32).cos()), 0.0))
        .collect();
    FftPlanner::new().plan_fft_forward(n).process(&mut buffer);

    // Real input: bins above n/2 mirror those below.
    let bin_hz = sample_rate_hz as f32 / n as f32;
    let first_bin = ((MIN_FREQUENCY_HZ / bin_hz).ceil() as usize).max(1);
    let last_bin = n / 2;
    let magnitudes = buffer.get(..=last_bin)?;
    let (peak, peak_magnitude) = magnitudes
        .iter()
        .enumerate()
        .skip(first_bin)
        .map(|(k, c)| (k, c.norm()))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if peak_magnitude.is_nan() || peak_magnitude <= 0.0 {
        return None;
    }

    let offset = match (
        peak.checked_sub(1).and_then(|k| magnitudes.get(k)),
        magnitudes.get(peak + 1),
    ) {
        // Only around a true local maximum: below the first searched bin a neighbour may be DC.
        (Some(left), Some(right)) if left.norm() <= peak_magnitude => {
            parabolic_offset(left.norm(), peak_magnitude, right.norm())
        }
        // At the Nyquist edge, or next to a larger sub-20 Hz bin: no interpolation.
        _ => 0.0,
    };
    Some((peak as f32 + offset) * bin_hz)
}

/// Where the vertex of the parabola through `(-1, left)`, `(0, centre)`, `(1, right)` lies, in bins
/// from the centre, fitted to log magnitudes ("Gaussian" interpolation: a Hann-windowed tone's
/// main lobe is close to a Gaussian, whose log is a parabola). Within ±0.5 when `centre` is the
/// largest of the three.
fn parabolic_offset(left: f32, centre: f32, right: f32) -> f32 {
    // A tiny floor keeps ln() finite for exact zeros.
    let (l, c, r) = (
        (left + f32::MIN_POSITIVE).ln(),
        (centre + f32::MIN_POSITIVE).ln(),
        (right + f32::MIN_POSITIVE).ln(),
    );
    let denominator = l - 2.0 * c + r;
    if denominator.abs() < f32::EPSILON || !denominator.is_finite() {
        return 0.0;
    }
    (0.5 * (l - r) / denominator).clamp(-0.5, 0.5)
}

/// Root mean square of `samples`; 0.0 for an empty slice.
fn rms_f32(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// The most recent decoded audio of one participant, for "what tone is this?" questions.
///
/// A fixed ring of [`TONE_METER_CAPACITY`] mono 48 kHz samples (about 0.34 s): [`push`] copies
/// into it and never allocates, so it can sit on the per-packet path; the analysis
/// ([`dominant_hz`], [`rms`]) runs on demand.
///
/// [`push`]: Self::push
/// [`dominant_hz`]: Self::dominant_hz
/// [`rms`]: Self::rms
#[derive(Clone, Debug)]
pub struct ToneMeter {
    /// Ring buffer, always [`TONE_METER_CAPACITY`] long.
    ring: Vec<i16>,
    /// Index where the next sample goes; also the oldest sample once the ring is full.
    write: usize,
    /// Samples stored so far, up to the capacity.
    filled: usize,
}

impl Default for ToneMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneMeter {
    /// An empty meter for 48 kHz mono PCM.
    pub fn new() -> Self {
        Self {
            ring: vec![0; TONE_METER_CAPACITY],
            write: 0,
            filled: 0,
        }
    }

    /// Appends decoded mono PCM, dropping the oldest samples once full. No allocation.
    pub fn push(&mut self, pcm: &[i16]) {
        let capacity = self.ring.len();
        // Only the last `capacity` samples can survive.
        let pcm = pcm.get(pcm.len().saturating_sub(capacity)..).unwrap_or(&[]);
        // Fill up to the end of the ring, then wrap around to its start: at most two copies.
        let until_wrap = capacity.saturating_sub(self.write).min(pcm.len());
        let (before_wrap, after_wrap) = pcm.split_at(until_wrap);
        if let Some(dst) = self.ring.get_mut(self.write..self.write + until_wrap) {
            dst.copy_from_slice(before_wrap);
        }
        if let Some(dst) = self.ring.get_mut(..after_wrap.len()) {
            dst.copy_from_slice(after_wrap);
        }
        self.write = if capacity == 0 {
            0
        } else {
            (self.write + pcm.len()) % capacity
        };
        self.filled = (self.filled + pcm.len()).min(capacity);
    }

    /// Number of samples held (at most [`TONE_METER_CAPACITY`]).
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether no audio has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The dominant frequency of the held audio in Hz; `None` until [`MIN_ANALYSIS_SAMPLES`]
    /// samples have arrived or while the audio is silent. See [`dominant_frequency_hz`].
    pub fn dominant_hz(&self) -> Option<f32> {
        let samples: Vec<f32> = self
            .chronological()
            .map(|s| f32::from(s) / PCM_FULL_SCALE)
            .collect();
        dominant_frequency_hz(&samples, SAMPLE_RATE_HZ)
    }

    /// RMS level of the held audio, full scale = 1.0 (a full-scale sine is about 0.707); 0.0 when
    /// empty.
    pub fn rms(&self) -> f32 {
        if self.filled == 0 {
            return 0.0;
        }
        let sum: f64 = self
            .chronological()
            .map(|s| {
                let x = f64::from(s) / f64::from(PCM_FULL_SCALE);
                x * x
            })
            .sum();
        (sum / self.filled as f64).sqrt() as f32
    }

    /// The held samples, oldest first.
    fn chronological(&self) -> impl Iterator<Item = i16> + '_ {
        let start = if self.filled < self.ring.len() {
            0
        } else {
            self.write
        };
        let (newer, older) = self.ring.split_at(start.min(self.ring.len()));
        older.iter().chain(newer).take(self.filled).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sine of `frequency_hz` at `amplitude` (full scale 1.0), `n` samples at 48 kHz.
    fn sine(frequency_hz: f64, amplitude: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 48_000.0;
                (amplitude * (std::f64::consts::TAU * frequency_hz * t).sin()) as f32
            })
            .collect()
    }

    fn to_pcm(samples: &[f32]) -> Vec<i16> {
        samples.iter().map(|&x| (x * 32_767.0) as i16).collect()
    }

    fn assert_near(found: Option<f32>, expected: f32, tolerance: f32) {
        let found = found.expect("a tone was found");
        assert!(
            (found - expected).abs() <= tolerance,
            "found {found} Hz, expected {expected} ± {tolerance}"
        );
    }

    #[test]
    fn finds_pure_tones() {
        for hz in [440.0, 1000.0, 123.4, 3_141.5, 15_000.0] {
            assert_near(
                dominant_frequency_hz(&sine(hz, 0.5, 16_384), 48_000),
                hz as f32,
                0.5,
            );
        }
        // The shortest accepted input, 47 Hz bins: still within a couple of Hz.
        assert_near(
            dominant_frequency_hz(&sine(440.0, 0.5, 1024), 48_000),
            440.0,
            2.0,
        );
        assert_near(
            dominant_frequency_hz(&sine(1000.0, 0.5, 4096), 48_000),
            1000.0,
            2.0,
        );
    }

    #[test]
    fn other_sample_rates() {
        let samples: Vec<f32> = (0..8000)
            .map(|i| (std::f64::consts::TAU * 440.0 * i as f64 / 16_000.0).sin() as f32)
            .collect();
        assert_near(dominant_frequency_hz(&samples, 16_000), 440.0, 2.0);
    }

    #[test]
    fn short_silent_or_broken_input_is_none() {
        assert_eq!(dominant_frequency_hz(&sine(440.0, 0.5, 1023), 48_000), None);
        assert_eq!(dominant_frequency_hz(&[0.0; 16_384], 48_000), None);
        assert_eq!(
            dominant_frequency_hz(&sine(440.0, 1e-5, 16_384), 48_000),
            None
        );
        assert_eq!(dominant_frequency_hz(&sine(440.0, 0.5, 4096), 0), None);
        let mut with_nan = sine(440.0, 0.5, 4096);
        with_nan[100] = f32::NAN;
        assert_eq!(dominant_frequency_hz(&with_nan, 48_000), None);
        with_nan[100] = f32::INFINITY;
        assert_eq!(dominant_frequency_hz(&with_nan, 48_000), None);
    }

    #[test]
    fn ignores_dc_offset() {
        let samples: Vec<f32> = sine(440.0, 0.1, 16_384).iter().map(|x| x + 0.5).collect();
        assert_near(dominant_frequency_hz(&samples, 48_000), 440.0, 0.5);
    }

    #[test]
    fn finds_a_tone_in_white_noise() {
        // Deterministic uniform noise (xorshift), RMS 0.17: louder than the tone's 0.14 RMS, but
        // spread over 8192 bins while the tone sits in one.
        let mut state: u32 = 0x9e37_79b9;
        let noisy: Vec<f32> = sine(1000.0, 0.2, 16_384)
            .iter()
            .map(|&x| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                x + (state as f32 / u32::MAX as f32 - 0.5) * 0.6
            })
            .collect();
        assert_near(dominant_frequency_hz(&noisy, 48_000), 1000.0, 2.0);
    }

    #[test]
    fn meter_measures_440_and_1000_hz() {
        for hz in [440.0, 1000.0] {
            let mut meter = ToneMeter::new();
            // Pushed in 20 ms frames, more than the ring holds, as the SFU does.
            for frame in to_pcm(&sine(hz, 0.5, 48_000)).chunks(960) {
                meter.push(frame);
            }
            assert_eq!(meter.len(), TONE_METER_CAPACITY);
            assert_near(meter.dominant_hz(), hz as f32, 2.0);
            // A half-scale sine: RMS 0.5 / sqrt(2).
            assert!((meter.rms() - 0.3535).abs() < 0.001, "rms {}", meter.rms());
        }
    }

    #[test]
    fn meter_keeps_only_recent_audio() {
        let mut meter = ToneMeter::new();
        for frame in to_pcm(&sine(440.0, 0.5, 48_000)).chunks(960) {
            meter.push(frame);
        }
        // A pitch change: after a full ring of the new tone, the old one is gone.
        for frame in to_pcm(&sine(1000.0, 0.5, TONE_METER_CAPACITY)).chunks(960) {
            meter.push(frame);
        }
        assert_near(meter.dominant_hz(), 1000.0, 2.0);
        // Then silence: the meter goes quiet.
        meter.push(&vec![0; TONE_METER_CAPACITY + 5]);
        assert_eq!(meter.dominant_hz(), None);
        assert_eq!(meter.rms(), 0.0);
        assert_eq!(meter.len(), TONE_METER_CAPACITY);
    }

    #[test]
    fn meter_order_is_chronological_across_the_wrap() {
        let mut meter = ToneMeter::new();
        let ramp: Vec<i16> = (0..TONE_METER_CAPACITY as i32 + 100)
            .map(|i| (i % 30_000) as i16)
            .collect();
        for chunk in ramp.chunks(777) {
            meter.push(chunk);
        }
        let held: Vec<i16> = meter.chronological().collect();
        assert_eq!(held, ramp[ramp.len() - TONE_METER_CAPACITY..]);
    }

    #[test]
    fn meter_starts_empty_and_needs_enough_audio() {
        let mut meter = ToneMeter::default();
        assert!(meter.is_empty());
        assert_eq!(meter.rms(), 0.0);
        assert_eq!(meter.dominant_hz(), None);
        let pcm = to_pcm(&sine(440.0, 0.5, 1000));
        meter.push(&pcm);
        assert_eq!(meter.len(), 1000);
        assert_eq!(meter.dominant_hz(), None);
        meter.push(&pcm[..24]);
        assert_near(meter.dominant_hz(), 440.0, 3.0);
        meter.push(&[]);
        assert_eq!(meter.len(), 1024);
    }
}
