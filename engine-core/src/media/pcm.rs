//! Raw PCM in and out, for applications that bring their own audio (the pytgvoip model).
//!
//! Two halves, each split into the part the call side owns and the part the application holds:
//!
//! - **Outgoing**: [`pcm_source`] returns a [`PcmSource`] (a [`FrameSource`], played by a call
//!   like any other source) and a [`PcmWriter`] (`Send`, for the application's audio thread).
//!   The application pushes 20 ms frames of 16-bit 48 kHz PCM into a bounded queue with
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

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use opus::{Application, Bitrate, Channels, Decoder, Encoder};

use super::{
    FrameSource, MAX_PACKET_DURATION_SAMPLES, OPUS_CLOCK_RATE_HZ, OpusFrame, SAMPLES_PER_FRAME,
    SourceError, audio_level_dbov, toc_duration_samples,
};

/// Samples per channel in one PCM frame: 20 ms at 48 kHz.
pub const PCM_FRAME_SAMPLES: usize = SAMPLES_PER_FRAME as usize;

/// Lowest Opus bitrate libopus accepts, in bit/s.
pub const MIN_BITRATE_BPS: i32 = 500;

/// Highest Opus bitrate libopus accepts, in bit/s.
pub const MAX_BITRATE_BPS: i32 = 512_000;

/// Output buffer for one encoded 20 ms packet: RFC 6716 §3.2.1 caps a frame at 1275 bytes.
const MAX_PACKET_BYTES: usize = 1275;

/// Lost packets (a gap in sequence numbers) concealed with libopus's packet-loss concealment;
/// a longer gap is taken as a pause or a restart and not filled in.
const MAX_CONCEALED_PACKETS: u16 = 5;

/// A packet up to this many sequence numbers behind the newest one is late or a duplicate
/// (dropped: the decoder has moved past it); further back, the sender restarted its numbering.
const MAX_REORDER: i16 = 200;

/// A decoder whose SSRC was last heard this many packets (of any SSRC) ago may be evicted to
/// make room for a new speaker when [`PcmSinkConfig::max_ssrcs`] are already decoding.
const EVICT_AFTER_PACKETS: u64 = 500;

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

    /// Samples in one 20 ms frame, all channels: 960 or 1920.
    pub fn frame_len(self) -> usize {
        PCM_FRAME_SAMPLES * self.count()
    }

    fn opus(self) -> Channels {
        match self {
            Self::Mono => Channels::Mono,
            Self::Stereo => Channels::Stereo,
        }
    }
}

/// Why [`PcmWriter::try_push`] did not queue a frame. Nothing was queued in any case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcmPushError {
    /// The frame is not 20 ms long for the writer's channel count.
    #[error("pcm frame has {got} samples, expected {expected}")]
    WrongLength {
        /// Samples a frame must have: [`PcmChannels::frame_len`].
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
            capacity: 50,
            bitrate_bps: 32_000,
        }
    }
}

/// Counters of one PCM source, shared by the [`PcmSource`] and its [`PcmWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcmSourceStats {
    /// Frames accepted by [`PcmWriter::try_push`].
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
/// Fails with [`SourceError::InvalidArgument`] for a zero capacity or a bitrate out of range,
/// or [`SourceError::Opus`] if libopus cannot create the encoder.
pub fn pcm_source(config: &PcmSourceConfig) -> Result<(PcmSource, PcmWriter), SourceError> {
    if config.capacity == 0 {
        return Err(SourceError::InvalidArgument {
            reason: "pcm queue capacity must be at least 1 frame".to_owned(),
        });
    }
    check_bitrate(config.bitrate_bps)?;
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
    };
    Ok((source, writer))
}

/// The application's end of a [`PcmSource`]: pushes 20 ms PCM frames. `Send` and `Sync`.
///
/// Dropping it ends the stream once the queued frames have been sent.
pub struct PcmWriter {
    frames: Sender<Vec<i16>>,
    counters: Arc<SourceCounters>,
    channels: PcmChannels,
}

impl fmt::Debug for PcmWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcmWriter")
            .field("channels", &self.channels)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PcmWriter {
    /// Queues one 20 ms frame: [`PcmChannels::frame_len`] samples of 16-bit 48 kHz PCM,
    /// interleaved when stereo. Never blocks.
    ///
    /// Errors: [`PcmPushError::WrongLength`], [`PcmPushError::Full`] (counted) or
    /// [`PcmPushError::Disconnected`]. Nothing is queued on error.
    pub fn try_push(&self, frame: &[i16]) -> Result<(), PcmPushError> {
        let expected = self.channels.frame_len();
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
        match self.frames.try_send(frame.to_vec()) {
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

    /// Samples one frame must have: [`PcmChannels::frame_len`].
    pub fn frame_len(&self) -> usize {
        self.channels.frame_len()
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

/// Settings of [`pcm_sink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmSinkConfig {
    /// Decode to mono (default) or interleaved stereo.
    pub channels: PcmChannels,
    /// Frames the queue to the application holds (all SSRCs together); at least 1. Default
    /// 100 (two seconds of one speaker).
    pub capacity: usize,
    /// Remote SSRCs decoded at once; packets of further SSRCs are dropped (counted) unless
    /// an SSRC that went quiet can be evicted. At least 1. Default 16.
    pub max_ssrcs: usize,
}

impl Default for PcmSinkConfig {
    fn default() -> Self {
        Self {
            channels: PcmChannels::Mono,
            capacity: 100,
            max_ssrcs: 16,
        }
    }
}

/// One decoded 20 ms frame from one remote participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmFrame {
    /// The speaker's SSRC.
    pub ssrc: u32,
    /// [`PcmChannels::frame_len`] samples of 16-bit 48 kHz PCM, interleaved when stereo.
    pub samples: Vec<i16>,
}

/// Counters of one PCM sink, shared by the [`PcmSink`] and its [`PcmReceiver`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcmSinkStats {
    /// Opus packets handed to the sink.
    pub packets: u64,
    /// Packets that did not decode (malformed Opus); the decoder carries on.
    pub decode_errors: u64,
    /// Packets behind the newest one of their SSRC (reordered or duplicated): dropped.
    pub packets_late: u64,
    /// Packets of an SSRC beyond [`PcmSinkConfig::max_ssrcs`]: dropped.
    pub packets_dropped_ssrc_limit: u64,
    /// Lost packets filled in by libopus's packet-loss concealment.
    pub packets_concealed: u64,
    /// Decoders of quiet SSRCs removed to make room for new ones.
    pub decoders_evicted: u64,
    /// 20 ms frames decoded.
    pub frames_decoded: u64,
    /// Frames dropped because the application's queue was full.
    pub frames_dropped_full: u64,
    /// Frames waiting in the queue now.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct SinkCounters {
    packets: AtomicU64,
    decode_errors: AtomicU64,
    packets_late: AtomicU64,
    packets_dropped_ssrc_limit: AtomicU64,
    packets_concealed: AtomicU64,
    decoders_evicted: AtomicU64,
    frames_decoded: AtomicU64,
    frames_dropped_full: AtomicU64,
}

impl SinkCounters {
    fn snapshot(&self, queued: usize) -> PcmSinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PcmSinkStats {
            packets: get(&self.packets),
            decode_errors: get(&self.decode_errors),
            packets_late: get(&self.packets_late),
            packets_dropped_ssrc_limit: get(&self.packets_dropped_ssrc_limit),
            packets_concealed: get(&self.packets_concealed),
            decoders_evicted: get(&self.decoders_evicted),
            frames_decoded: get(&self.frames_decoded),
            frames_dropped_full: get(&self.frames_dropped_full),
            queued: queued as u64,
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A decoding sink and the receiver the application reads its frames from.
///
/// Fails with [`SourceError::InvalidArgument`] for a zero capacity or `max_ssrcs`.
pub fn pcm_sink(config: &PcmSinkConfig) -> Result<(PcmSink, PcmReceiver), SourceError> {
    if config.capacity == 0 || config.max_ssrcs == 0 {
        return Err(SourceError::InvalidArgument {
            reason: "pcm sink capacity and max_ssrcs must be at least 1".to_owned(),
        });
    }
    let (tx, rx) = bounded(config.capacity);
    let counters = Arc::new(SinkCounters::default());
    let sink = PcmSink {
        decoders: HashMap::new(),
        frames: tx,
        counters: counters.clone(),
        channels: config.channels,
        max_ssrcs: config.max_ssrcs,
        packets_seen: 0,
        closed: false,
        buf: vec![0; MAX_PACKET_DURATION_SAMPLES as usize * config.channels.count()],
    };
    let receiver = PcmReceiver {
        frames: rx,
        counters,
        channels: config.channels,
    };
    Ok((sink, receiver))
}

/// The application's end of a [`PcmSink`]: decoded frames, every SSRC in one queue in
/// arrival order. Dropping it tells the sink to stop decoding ([`PcmSink::is_closed`]).
pub struct PcmReceiver {
    frames: Receiver<PcmFrame>,
    counters: Arc<SinkCounters>,
    channels: PcmChannels,
}

impl fmt::Debug for PcmReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcmReceiver")
            .field("channels", &self.channels)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PcmReceiver {
    /// The queue of decoded frames: `recv_timeout`, `try_recv`, `iter`... It disconnects when
    /// the sink is dropped (the call ended or the sink was replaced) and the queue is drained.
    pub fn frames(&self) -> &Receiver<PcmFrame> {
        &self.frames
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&self) -> Option<PcmFrame> {
        self.frames.try_recv().ok()
    }

    /// The channel layout of the frames.
    pub fn channels(&self) -> PcmChannels {
        self.channels
    }

    /// The sink's counters.
    pub fn stats(&self) -> PcmSinkStats {
        self.counters.snapshot(self.frames.len())
    }
}

/// One remote SSRC's decoder and the samples not yet cut into a whole frame.
struct SsrcDecoder {
    decoder: Decoder,
    /// Newest sequence number decoded.
    last_seq: u16,
    /// Duration of the last packet, per channel, for concealing a lost one.
    last_duration: usize,
    /// Decoded samples (all channels) waiting for a whole frame.
    pending: Vec<i16>,
    /// The sink's packet count when this SSRC was last heard.
    last_heard: u64,
}

/// Decodes a call's received Opus, one libopus decoder per remote SSRC, into 20 ms PCM
/// frames for its [`PcmReceiver`]. Owned by whoever handles the call's events (the runtime's
/// shard); sans-IO: it decodes what it is given, when it is given it.
pub struct PcmSink {
    decoders: HashMap<u32, SsrcDecoder>,
    frames: Sender<PcmFrame>,
    counters: Arc<SinkCounters>,
    channels: PcmChannels,
    max_ssrcs: usize,
    /// Packets handed in so far: the clock of the eviction rule.
    packets_seen: u64,
    /// Set once the receiver is gone.
    closed: bool,
    /// Decoder output, reused: 120 ms, all channels.
    buf: Vec<i16>,
}

impl fmt::Debug for PcmSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcmSink")
            .field("channels", &self.channels)
            .field("ssrcs", &self.decoders.len())
            .field("closed", &self.closed)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PcmSink {
    /// Decodes one received Opus packet (RTP payload) of `ssrc` with RTP sequence number
    /// `seq`, and queues every whole 20 ms frame that completes. Never fails: bad packets,
    /// late packets, SSRCs over the limit and a full queue are counted in [`PcmSinkStats`].
    pub fn push_packet(&mut self, ssrc: u32, seq: u16, payload: &[u8]) {
        if self.closed {
            return;
        }
        self.packets_seen += 1;
        bump(&self.counters.packets);
        let Ok(duration) = toc_duration_samples(payload) else {
            bump(&self.counters.decode_errors);
            return;
        };
        let duration = duration as usize;
        if !self.decoders.contains_key(&ssrc) && !self.make_room() {
            bump(&self.counters.packets_dropped_ssrc_limit);
            return;
        }
        let channels = self.channels.count();
        let state = match self.decoders.entry(ssrc) {
            std::collections::hash_map::Entry::Occupied(o) => {
                let state = o.into_mut();
                let ahead = seq.wrapping_sub(state.last_seq) as i16;
                if (-MAX_REORDER..=0).contains(&ahead) {
                    bump(&self.counters.packets_late);
                    return;
                }
                // 2..=MAX+1 ahead: 1..=MAX packets lost in between. Conceal them.
                if ahead > 1 && ahead.unsigned_abs() <= MAX_CONCEALED_PACKETS + 1 {
                    for _ in 1..ahead {
                        let Some(out) = self.buf.get_mut(..state.last_duration * channels) else {
                            break;
                        };
                        match state.decoder.decode(&[], out, false) {
                            Ok(n) => {
                                bump(&self.counters.packets_concealed);
                                state
                                    .pending
                                    .extend_from_slice(out.get(..n * channels).unwrap_or(&[]));
                            }
                            Err(_) => break,
                        }
                    }
                }
                state
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                let Ok(decoder) = Decoder::new(OPUS_CLOCK_RATE_HZ, self.channels.opus()) else {
                    bump(&self.counters.decode_errors);
                    return;
                };
                v.insert(SsrcDecoder {
                    decoder,
                    last_seq: seq,
                    last_duration: duration,
                    pending: Vec::with_capacity(self.channels.frame_len() * 2),
                    last_heard: 0,
                })
            }
        };
        state.last_seq = seq;
        state.last_heard = self.packets_seen;
        let Some(out) = self.buf.get_mut(..duration * channels) else {
            bump(&self.counters.decode_errors);
            return;
        };
        match state.decoder.decode(payload, out, false) {
            Ok(n) => {
                state.last_duration = n;
                state
                    .pending
                    .extend_from_slice(out.get(..n * channels).unwrap_or(&[]));
            }
            Err(_) => {
                bump(&self.counters.decode_errors);
            }
        }
        let frame_len = self.channels.frame_len();
        while state.pending.len() >= frame_len {
            let rest = state.pending.split_off(frame_len);
            let samples = std::mem::replace(&mut state.pending, rest);
            bump(&self.counters.frames_decoded);
            match self.frames.try_send(PcmFrame { ssrc, samples }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => bump(&self.counters.frames_dropped_full),
                Err(TrySendError::Disconnected(_)) => {
                    self.closed = true;
                    self.decoders.clear();
                    return;
                }
            }
        }
    }

    /// Makes room for one more decoder: true if there is (possibly after evicting the SSRC
    /// heard least recently, if it has been quiet for a while).
    fn make_room(&mut self) -> bool {
        if self.decoders.len() < self.max_ssrcs {
            return true;
        }
        let oldest = self
            .decoders
            .iter()
            .min_by_key(|(_, d)| d.last_heard)
            .map(|(&ssrc, d)| (ssrc, d.last_heard));
        match oldest {
            Some((ssrc, last_heard))
                if self.packets_seen.saturating_sub(last_heard) >= EVICT_AFTER_PACKETS =>
            {
                self.decoders.remove(&ssrc);
                bump(&self.counters.decoders_evicted);
                true
            }
            _ => false,
        }
    }

    /// Stops decoding `ssrc` (the participant left) and frees its decoder.
    pub fn remove_ssrc(&mut self, ssrc: u32) {
        self.decoders.remove(&ssrc);
    }

    /// True once the [`PcmReceiver`] was dropped (noticed on the next frame): the owner can
    /// drop the sink and stop decoding.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// SSRCs with a decoder now.
    pub fn ssrcs(&self) -> usize {
        self.decoders.len()
    }

    /// The sink's counters (the same as [`PcmReceiver::stats`]).
    pub fn stats(&self) -> PcmSinkStats {
        self.counters.snapshot(self.frames.len())
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::TAU;

    use super::*;

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
