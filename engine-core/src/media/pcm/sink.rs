//! The incoming half: received Opus packets decoded to PCM frames for the application.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use opus::Decoder;

use super::PcmChannels;
use crate::media::{
    MAX_PACKET_DURATION_SAMPLES, OPUS_CLOCK_RATE_HZ, SourceError, toc_duration_samples,
};

/// Lost packets (a gap in sequence numbers) concealed with libopus's packet-loss concealment;
/// a longer gap is taken as a pause or a restart and not filled in.
const MAX_CONCEALED_PACKETS: u16 = 5;

/// A packet up to this many sequence numbers behind the newest one is late or a duplicate
/// (dropped: the decoder has moved past it); further back, the sender restarted its numbering.
const MAX_REORDER: i16 = 200;

/// A decoder whose SSRC was last heard this many packets (of any SSRC) ago may be evicted to
/// make room for a new speaker when [`PcmSinkConfig::max_ssrcs`] are already decoding.
pub(super) const EVICT_AFTER_PACKETS: u64 = 500;

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
