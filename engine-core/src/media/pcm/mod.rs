//! Raw PCM in and out, for applications that bring their own audio (the pytgvoip model).
//!
//! Two halves, each split into the part the call side owns and the part the application holds:
//!
//! - **Outgoing**: [`pcm_source`] returns a [`PcmSource`] (a [`FrameSource`](crate::media::FrameSource), played by a call
//!   like any other source) and a [`PcmWriter`] (`Send`, for the application's audio thread).
//!   The application pushes 20 ms frames of 16-bit PCM (48 kHz, or any rate that is a multiple
//!   of 50 Hz, resampled to 48 kHz on the application's thread by a
//!   [`Resampler`](crate::media::Resampler)) into a bounded queue with
//!   [`PcmWriter::try_push`]; at each frame time the source encodes the next queued frame with
//!   libopus, or silence when the queue is empty (an *underrun*, counted). Once the writer is
//!   dropped and the queue drained, the source ends, so the call reports the end of the stream.
//! - **Incoming**: [`pcm_sink`] returns a [`PcmSink`] (fed the call's received Opus packets by
//!   the runtime, one libopus decoder per remote SSRC) and a [`PcmReceiver`] the application
//!   reads decoded 20 ms frames from. A full queue drops the frame (counted); packets that do
//!   not decode are counted, never a panic; the number of SSRCs decoded at once is bounded.
//!
//! A frame is [`PCM_FRAME_SAMPLES`] samples per channel (960: 20 ms at 48 kHz), interleaved
//! left/right when stereo. The queues are crossbeam channels: lock-free, no thread or clock of
//! their own, so this module stays sans-IO; the caller paces by asking for frames.
//!
//! The outgoing half is `source`, the incoming half `sink`; what both use (frame size, channel
//! layout) is here.

mod sink;
mod source;

use opus::Channels;

use super::SAMPLES_PER_FRAME;

pub use sink::{PcmFrame, PcmReceiver, PcmSink, PcmSinkConfig, PcmSinkStats, pcm_sink};
pub use source::{
    MAX_BITRATE_BPS, MIN_BITRATE_BPS, PcmPushError, PcmSource, PcmSourceConfig, PcmSourceStats,
    PcmWriter, pcm_source,
};

/// Samples per channel in one PCM frame: 20 ms at 48 kHz.
pub const PCM_FRAME_SAMPLES: usize = SAMPLES_PER_FRAME as usize;

/// Mono or interleaved stereo PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PcmChannels {
    /// One channel: a frame is 960 samples.
    #[default]
    Mono,
    /// Two channels, interleaved left, right: a frame is 1920 samples.
    Stereo,
}

impl PcmChannels {
    /// Number of channels (1 or 2).
    pub fn count(self) -> usize {
        match self {
            Self::Mono => 1,
            Self::Stereo => 2,
        }
    }

    /// Samples in one 20 ms frame at 48 kHz, all channels: 960 or 1920.
    pub fn frame_len(self) -> usize {
        PCM_FRAME_SAMPLES * self.count()
    }

    /// Samples in one 20 ms frame at `sample_rate_hz`, all channels: `sample_rate_hz / 50` per
    /// channel (882 per channel at 44.1 kHz). Rounds down for a rate that is not a multiple of
    /// 50 Hz, which [`pcm_source`] refuses.
    pub fn frame_len_at(self, sample_rate_hz: u32) -> usize {
        (sample_rate_hz / 50) as usize * self.count()
    }

    fn opus(self) -> Channels {
        match self {
            Self::Mono => Channels::Mono,
            Self::Stereo => Channels::Stereo,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;

    use opus::Decoder;

    use super::sink::EVICT_AFTER_PACKETS;
    use super::*;
    use crate::media::{FrameSource, OpusFrame, SourceError};

    /// `frames` 20 ms mono frames of a half-scale sine of `hz`, phase-continuous.
    fn sine_frames(hz: f64, frames: usize) -> Vec<Vec<i16>> {
        let samples: Vec<i16> = (0..frames * PCM_FRAME_SAMPLES)
            .map(|i| ((i as f64 * TAU * hz / 48_000.0).sin() * 16_384.0).round() as i16)
            .collect();
        samples
            .chunks(PCM_FRAME_SAMPLES)
            .map(<[i16]>::to_vec)
            .collect()
    }

    use crate::media::test_util::{dominant_hz, goertzel_power as power};

    fn decode_mono(frames: &[OpusFrame]) -> Vec<i16> {
        let mut decoder = Decoder::new(48_000, Channels::Mono).unwrap();
        let mut buf = vec![0_i16; 5760];
        let mut pcm = Vec::new();
        for f in frames {
            let n = decoder.decode(&f.data, &mut buf, false).unwrap();
            pcm.extend_from_slice(&buf[..n]);
        }
        pcm
    }

    fn encode_tone(hz: f32, frames: usize) -> Vec<OpusFrame> {
        let mut tone = crate::media::ToneSource::new(hz, None).unwrap();
        (0..frames)
            .map(|_| tone.next_frame().unwrap().unwrap())
            .collect()
    }

    #[test]
    fn pushed_sine_encodes_to_440_hz() {
        let (mut source, writer) = pcm_source(&PcmSourceConfig::default()).unwrap();
        let mut frames = Vec::new();
        for pcm in sine_frames(440.0, 50) {
            writer.try_push(&pcm).unwrap();
            frames.push(source.next_frame().unwrap().unwrap());
        }
        let stats = writer.stats();
        assert_eq!(stats.frames_pushed, 50);
        assert_eq!(stats.frames_encoded, 50);
        assert_eq!(stats.underruns, 0);
        assert!(
            frames
                .iter()
                .all(|f| f.duration_samples == 960 && f.voice_activity)
        );
        // A half-scale sine is -9 dBov.
        assert_eq!(frames[10].audio_level, 9);
        let pcm = decode_mono(&frames);
        assert_eq!(pcm.len(), 50 * 960);
        let steady = &pcm[4800..];
        let hz = dominant_hz(steady, 300..=600);
        assert!(hz.abs_diff(440) <= 5, "decoded {hz} Hz");
        assert!(power(steady, 440.0) > 1000.0 * power(steady, 1000.0));
    }

    #[test]
    fn pushed_44_1_khz_sine_is_resampled_and_encodes_to_1000_hz() {
        let config = PcmSourceConfig {
            sample_rate: 44_100,
            ..PcmSourceConfig::default()
        };
        let (mut source, writer) = pcm_source(&config).unwrap();
        assert_eq!((writer.frame_len(), writer.sample_rate()), (882, 44_100));
        assert_eq!(
            writer.try_push(&[0; 960]),
            Err(PcmPushError::WrongLength {
                expected: 882,
                got: 960
            })
        );
        let samples: Vec<i16> = (0..50 * 882)
            .map(|i| ((i as f64 * TAU * 1000.0 / 44_100.0).sin() * 16_384.0).round() as i16)
            .collect();
        let mut frames = Vec::new();
        for pcm in samples.chunks(882) {
            writer.try_push(pcm).unwrap();
            if let Some(frame) = source
                .next_frame()
                .unwrap()
                .filter(|_| writer.queued() == 0)
            {
                frames.push(frame);
            }
        }
        // The first push queued nothing (the resampler's delay holds half a frame back); the
        // first frame time was an underrun.
        let stats = writer.stats();
        assert_eq!((stats.frames_pushed, stats.frames_encoded), (49, 49));
        assert_eq!(stats.underruns, 1);
        // Dropping the writer queues the held tail: half a frame, padded to one.
        drop(writer);
        frames.push(source.next_frame().unwrap().unwrap());
        assert_eq!(source.next_frame().unwrap(), None);
        assert_eq!(source.stats().frames_pushed, 50);
        let pcm = decode_mono(&frames[1..]);
        let steady = &pcm[4800..40_000];
        let hz = dominant_hz(steady, 800..=1200);
        assert!(hz.abs_diff(1000) <= 5, "decoded {hz} Hz");
        assert!(power(steady, 1000.0) > 1000.0 * power(steady, 1500.0));

        for rate in [44_101, 7_950, 384_050] {
            let bad = PcmSourceConfig {
                sample_rate: rate,
                ..PcmSourceConfig::default()
            };
            assert!(
                matches!(pcm_source(&bad), Err(SourceError::InvalidArgument { .. })),
                "{rate} Hz"
            );
        }
    }

    #[test]
    fn stereo_frames_encode_both_channels() {
        let config = PcmSourceConfig {
            channels: PcmChannels::Stereo,
            bitrate_bps: 64_000,
            ..PcmSourceConfig::default()
        };
        let (mut source, writer) = pcm_source(&config).unwrap();
        assert_eq!(writer.frame_len(), 1920);
        let mut frames = Vec::new();
        // Left 440 Hz, right 1000 Hz.
        for (l, r) in sine_frames(440.0, 30).iter().zip(sine_frames(1000.0, 30)) {
            let interleaved: Vec<i16> = l.iter().zip(&r).flat_map(|(&a, &b)| [a, b]).collect();
            writer.try_push(&interleaved).unwrap();
            frames.push(source.next_frame().unwrap().unwrap());
        }
        let mut decoder = Decoder::new(48_000, Channels::Stereo).unwrap();
        let mut buf = vec![0_i16; 5760 * 2];
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for f in &frames {
            let n = decoder.decode(&f.data, &mut buf, false).unwrap();
            assert_eq!(n, 960);
            for pair in buf[..2 * n].chunks(2) {
                left.push(pair[0]);
                right.push(pair[1]);
            }
        }
        assert!(dominant_hz(&left[4800..], 300..=1200).abs_diff(440) <= 5);
        assert!(dominant_hz(&right[4800..], 300..=1200).abs_diff(1000) <= 5);
    }

    #[test]
    fn full_queue_is_a_typed_error_and_counted() {
        let config = PcmSourceConfig {
            capacity: 3,
            ..PcmSourceConfig::default()
        };
        let (mut source, writer) = pcm_source(&config).unwrap();
        let frame = vec![100_i16; 960];
        for _ in 0..3 {
            writer.try_push(&frame).unwrap();
        }
        assert_eq!(writer.try_push(&frame), Err(PcmPushError::Full));
        assert_eq!(writer.try_push(&frame), Err(PcmPushError::Full));
        let stats = writer.stats();
        assert_eq!(
            (stats.frames_pushed, stats.frames_dropped_full, stats.queued),
            (3, 2, 3)
        );
        // One frame consumed: room for exactly one more.
        source.next_frame().unwrap().unwrap();
        writer.try_push(&frame).unwrap();
        assert_eq!(writer.try_push(&frame), Err(PcmPushError::Full));
        assert_eq!(source.stats().frames_dropped_full, 3);
    }

    #[test]
    fn wrong_length_is_a_typed_error_and_queues_nothing() {
        let (mut source, writer) = pcm_source(&PcmSourceConfig::default()).unwrap();
        for len in [0, 1, 959, 961, 1920] {
            assert_eq!(
                writer.try_push(&vec![0; len]),
                Err(PcmPushError::WrongLength {
                    expected: 960,
                    got: len
                })
            );
        }
        assert_eq!(writer.queued(), 0);
        assert_eq!(writer.stats().frames_pushed, 0);
        // Nothing queued: the source sends silence and counts an underrun.
        let frame = source.next_frame().unwrap().unwrap();
        assert_eq!(frame.audio_level, 127);
        assert!(!frame.voice_activity);
        assert_eq!(source.stats().underruns, 1);
        assert_eq!(source.stats().frames_encoded, 0);
    }

    #[test]
    fn underruns_send_decodable_silence() {
        let (mut source, writer) = pcm_source(&PcmSourceConfig::default()).unwrap();
        let frames: Vec<OpusFrame> = (0..10)
            .map(|_| source.next_frame().unwrap().unwrap())
            .collect();
        assert_eq!(writer.stats().underruns, 10);
        let pcm = decode_mono(&frames);
        assert_eq!(pcm.len(), 9600);
        assert!(pcm.iter().all(|s| s.unsigned_abs() < 10));
    }

    #[test]
    fn writer_dropped_ends_the_source_after_the_queue_drains() {
        let (mut source, writer) = pcm_source(&PcmSourceConfig::default()).unwrap();
        for pcm in sine_frames(440.0, 2) {
            writer.try_push(&pcm).unwrap();
        }
        drop(writer);
        assert!(source.next_frame().unwrap().is_some());
        assert!(source.next_frame().unwrap().is_some());
        assert_eq!(source.next_frame().unwrap(), None);
        assert_eq!(source.next_frame().unwrap(), None);
        let stats = source.stats();
        assert_eq!((stats.frames_encoded, stats.underruns), (2, 0));
    }

    #[test]
    fn source_dropped_disconnects_the_writer() {
        let (source, writer) = pcm_source(&PcmSourceConfig::default()).unwrap();
        drop(source);
        assert_eq!(writer.try_push(&[0; 960]), Err(PcmPushError::Disconnected));
        assert_eq!(writer.stats().frames_dropped_full, 0);
    }

    #[test]
    fn bitrate_changes_packet_sizes_and_is_validated() {
        let (mut source, writer) = pcm_source(&PcmSourceConfig::default()).unwrap();
        let sizes = |source: &mut PcmSource, frames: Vec<Vec<i16>>| -> usize {
            let mut total = 0;
            for pcm in frames {
                writer.try_push(&pcm).unwrap();
                total += source.next_frame().unwrap().unwrap().data.len();
            }
            total
        };
        // Noise-like content so the encoder uses what it is given.
        let noisy = |seed: u64| -> Vec<Vec<i16>> {
            let mut x = seed;
            (0..25)
                .map(|_| {
                    (0..960)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            (x as i16) / 4
                        })
                        .collect()
                })
                .collect()
        };
        let at_32k = sizes(&mut source, noisy(1));
        writer.set_bitrate(8_000).unwrap();
        let at_8k = sizes(&mut source, noisy(2));
        // 25 frames at 32 kbit/s are ~2000 bytes, at 8 kbit/s ~500.
        assert!(
            at_8k * 2 < at_32k,
            "8 kbit/s: {at_8k} B, 32 kbit/s: {at_32k} B"
        );
        for bad in [0, 499, 512_001, -1] {
            assert!(matches!(
                writer.set_bitrate(bad),
                Err(SourceError::InvalidArgument { .. })
            ));
        }
        let bad = PcmSourceConfig {
            bitrate_bps: 100,
            ..PcmSourceConfig::default()
        };
        assert!(matches!(
            pcm_source(&bad),
            Err(SourceError::InvalidArgument { .. })
        ));
        let zero = PcmSourceConfig {
            capacity: 0,
            ..PcmSourceConfig::default()
        };
        assert!(matches!(
            pcm_source(&zero),
            Err(SourceError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn sink_decodes_a_tone_to_its_frequency() {
        let (mut sink, receiver) = pcm_sink(&PcmSinkConfig::default()).unwrap();
        for (seq, f) in encode_tone(700.0, 50).iter().enumerate() {
            sink.push_packet(42, seq as u16, &f.data);
        }
        let mut pcm = Vec::new();
        let mut frames = 0;
        while let Some(frame) = receiver.try_recv() {
            assert_eq!(frame.ssrc, 42);
            assert_eq!(frame.samples.len(), 960);
            pcm.extend_from_slice(&frame.samples);
            frames += 1;
        }
        assert_eq!(frames, 50);
        let steady = &pcm[4800..];
        let hz = dominant_hz(steady, 500..=900);
        assert!(hz.abs_diff(700) <= 5, "sink decoded {hz} Hz");
        let stats = receiver.stats();
        assert_eq!((stats.packets, stats.frames_decoded), (50, 50));
        assert_eq!(stats.decode_errors + stats.frames_dropped_full, 0);
    }

    #[test]
    fn sink_keeps_ssrcs_apart_and_decodes_stereo() {
        let config = PcmSinkConfig {
            channels: PcmChannels::Stereo,
            ..PcmSinkConfig::default()
        };
        let (mut sink, receiver) = pcm_sink(&config).unwrap();
        let a = encode_tone(400.0, 30);
        let b = encode_tone(1200.0, 30);
        for (seq, (fa, fb)) in a.iter().zip(&b).enumerate() {
            sink.push_packet(1, seq as u16, &fa.data);
            sink.push_packet(2, 1000 + seq as u16, &fb.data);
        }
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        while let Some(frame) = receiver.try_recv() {
            assert_eq!(frame.samples.len(), 1920);
            // A mono stream decoded to stereo: both channels the same; keep the left.
            let left = frame.samples.iter().step_by(2).copied();
            match frame.ssrc {
                1 => pa.extend(left),
                2 => pb.extend(left),
                other => panic!("unexpected ssrc {other}"),
            }
        }
        assert_eq!((pa.len(), pb.len()), (30 * 960, 30 * 960));
        assert!(dominant_hz(&pa[4800..], 300..=1300).abs_diff(400) <= 5);
        assert!(dominant_hz(&pb[4800..], 300..=1300).abs_diff(1200) <= 5);
        assert_eq!(sink.ssrcs(), 2);
    }

    #[test]
    fn garbage_opus_is_counted_not_fatal() {
        let (mut sink, receiver) = pcm_sink(&PcmSinkConfig::default()).unwrap();
        let garbage: &[&[u8]] = &[
            &[],                       // empty
            &[(31 << 3) | 3],          // code 3 without a count byte
            &[(31 << 3) | 3, 0],       // zero frames
            &[(31 << 3) | 3, 7],       // 140 ms
            &[(31 << 3) | 1, 1, 2, 3], // code 1: two equal frames need an even length
            &[(31 << 3) | 2, 250, 1],  // code 2: first frame longer than the packet
        ];
        for (seq, g) in garbage.iter().enumerate() {
            sink.push_packet(9, seq as u16, g);
        }
        let stats = receiver.stats();
        assert_eq!(stats.packets, 6);
        assert_eq!(stats.decode_errors, 6);
        assert_eq!(stats.frames_decoded, 0);
        // The decoder still works afterwards.
        for (i, f) in encode_tone(500.0, 5).iter().enumerate() {
            sink.push_packet(9, 6 + i as u16, &f.data);
        }
        assert_eq!(receiver.stats().frames_decoded, 5);
    }

    #[test]
    fn sink_full_queue_drops_and_counts() {
        let config = PcmSinkConfig {
            capacity: 4,
            ..PcmSinkConfig::default()
        };
        let (mut sink, receiver) = pcm_sink(&config).unwrap();
        for (seq, f) in encode_tone(440.0, 10).iter().enumerate() {
            sink.push_packet(5, seq as u16, &f.data);
        }
        let stats = receiver.stats();
        assert_eq!(
            (
                stats.frames_decoded,
                stats.frames_dropped_full,
                stats.queued
            ),
            (10, 6, 4)
        );
        assert_eq!(receiver.frames().len(), 4);
    }

    #[test]
    fn sink_conceals_small_gaps_and_drops_late_packets() {
        let (mut sink, receiver) = pcm_sink(&PcmSinkConfig::default()).unwrap();
        let tone = encode_tone(440.0, 20);
        for seq in [0_u16, 1, 2, 5, 6, 4, 6, 7] {
            sink.push_packet(3, seq, &tone[usize::from(seq)].data);
        }
        let stats = receiver.stats();
        // 3 and 4 concealed when 5 came; the late 4 and the duplicate 6 dropped.
        assert_eq!(stats.packets_concealed, 2);
        assert_eq!(stats.packets_late, 2);
        assert_eq!(stats.frames_decoded, 8);
        // A jump far back is a restart, decoded.
        sink.push_packet(3, 7_u16.wrapping_sub(1000), &tone[8].data);
        assert_eq!(receiver.stats().frames_decoded, 9);
    }

    #[test]
    fn ssrc_limit_drops_new_speakers_until_one_goes_quiet() {
        let config = PcmSinkConfig {
            max_ssrcs: 2,
            capacity: 10_000,
            ..PcmSinkConfig::default()
        };
        let (mut sink, receiver) = pcm_sink(&config).unwrap();
        let tone = encode_tone(440.0, 1);
        let packet = &tone[0].data;
        sink.push_packet(1, 0, packet);
        sink.push_packet(2, 0, packet);
        sink.push_packet(3, 0, packet);
        assert_eq!(receiver.stats().packets_dropped_ssrc_limit, 1);
        assert_eq!(sink.ssrcs(), 2);
        // SSRC 1 stays quiet while 2 talks: after EVICT_AFTER_PACKETS its decoder goes.
        for seq in 1..=EVICT_AFTER_PACKETS as u16 {
            sink.push_packet(2, seq, packet);
        }
        sink.push_packet(3, 1, packet);
        let stats = receiver.stats();
        assert_eq!(stats.decoders_evicted, 1);
        assert_eq!(stats.packets_dropped_ssrc_limit, 1);
        assert_eq!(sink.ssrcs(), 2);
        sink.remove_ssrc(3);
        assert_eq!(sink.ssrcs(), 1);
    }

    #[test]
    fn receiver_dropped_closes_the_sink() {
        let (mut sink, receiver) = pcm_sink(&PcmSinkConfig::default()).unwrap();
        drop(receiver);
        assert!(!sink.is_closed());
        let tone = encode_tone(440.0, 2);
        sink.push_packet(1, 0, &tone[0].data);
        assert!(sink.is_closed());
        assert_eq!(sink.ssrcs(), 0);
        sink.push_packet(1, 1, &tone[1].data);
        assert_eq!(sink.stats().packets, 1, "a closed sink decodes nothing");
        assert!(
            pcm_sink(&PcmSinkConfig {
                max_ssrcs: 0,
                ..PcmSinkConfig::default()
            })
            .is_err()
        );
    }

    #[test]
    fn shared_pcm_is_encoded_once_for_many_calls() {
        let (source, writer) = pcm_source(&PcmSourceConfig::default()).unwrap();
        let shared = crate::media::SharedSource::new(Box::new(source));
        let mut readers: Vec<_> = (0..3).map(|_| shared.reader()).collect();
        let mut per_reader = vec![Vec::new(); 3];
        for pcm in sine_frames(660.0, 20) {
            writer.try_push(&pcm).unwrap();
            for (reader, out) in readers.iter_mut().zip(&mut per_reader) {
                out.push(reader.next_frame().unwrap().unwrap());
            }
        }
        assert_eq!(writer.stats().frames_encoded, 20);
        assert_eq!(writer.stats().underruns, 0);
        assert_eq!(shared.frames_pulled(), 20);
        for out in &per_reader {
            let pcm = decode_mono(out);
            assert!(dominant_hz(&pcm[4800..], 500..=800).abs_diff(660) <= 5);
        }
        drop(writer);
        assert!(
            readers
                .iter_mut()
                .all(|r| r.next_frame().unwrap().is_none())
        );
    }

    #[test]
    fn handles_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<PcmSource>();
        assert_send::<PcmWriter>();
        assert_send::<PcmSink>();
        assert_send::<PcmReceiver>();
    }
}
