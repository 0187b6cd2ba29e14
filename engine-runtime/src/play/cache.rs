//! The on-demand track cache: each call plays from the start, each track is decoded once.
//!
//! A track is the encoded frames of one input with its parameters ([`MediaSource`] is the
//! key: path, URL and headers, or command line; seek, channels, bitrate). The first call to
//! play it starts a decode into the track; later calls read the frames already there, from
//! the first. The decode runs at most [`DECODE_LEAD`] ahead of the furthest call playing
//! the track, so a paused or slow audience holds it back and a track nobody finishes is never
//! decoded whole.
//!
//! **Bound and eviction** ([`MediaCacheConfig`]): the cache holds at most `max_bytes` of frames
//! (Opus payload plus [`FRAME_OVERHEAD`] each). When a frame would go over it, the least
//! recently used tracks that no call is playing are evicted first; if every track is being
//! played, the growing track leaves the cache instead. A track that outgrows
//! `max_track_bytes` leaves it too. A track out of the cache serves the calls already playing
//! it and no new one (they start a decode of their own: a miss), and sheds the frames behind
//! its slowest call, so its memory stays bounded by the spread of its calls plus the lead.
//! When every track is in use and the cache is full, a new play decodes outside the cache
//! ([`MediaStats::cache_bypassed`](super::MediaStats::cache_bypassed)).
//!
//! The same cache, over [`VideoFrame`]s, holds on-demand video ([`super::video`]): a reader
//! starts at frame 0 (a key frame), and shedding keeps the frames from the key frame before
//! the slowest reader, so that a key frame request can still be answered from the track.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use ringcast_core::media::SAMPLES_PER_FRAME;
use ringcast_core::media::video::VideoFrame;
use ringcast_core::{FrameSource, OpusFrame, SourceError};

use super::decode::{self, FrameOut, Spec, Status, silence_frame};
use super::{Counters, DECODE_LEAD, MediaSource, START_TIMEOUT};

/// Bookkeeping counted per cached frame on top of its payload: the `OpusFrame` in the deque
/// and the `Arc<[u8]>` header.
pub const FRAME_OVERHEAD: usize = std::mem::size_of::<OpusFrame>() + 16;

/// How often a decode that is [`DECODE_LEAD`] ahead looks again.
const LEAD_POLL: Duration = Duration::from_millis(20);

/// Limits of an on-demand cache: audio
/// ([`EngineBuilder::media_cache`](crate::EngineBuilder::media_cache)) or video
/// ([`EngineBuilder::video_cache`](crate::EngineBuilder::video_cache)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaCacheConfig {
    /// Bytes of frames the cache holds at most. Default 256 MiB: at the default 64 kbit/s,
    /// about 8 hours of audio, some 120 four-minute songs.
    pub max_bytes: usize,
    /// Bytes one track may hold and stay cached. Default 32 MiB (about an hour).
    pub max_track_bytes: usize,
}

impl Default for MediaCacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_track_bytes: 32 << 20,
        }
    }
}

impl MediaCacheConfig {
    /// The video cache's default: 512 MiB in all, 128 MiB per track (about 11 minutes at
    /// 1,500 kbit/s, the default [`VideoParams`](crate::VideoParams)).
    pub fn video_default() -> Self {
        Self {
            max_bytes: 512 << 20,
            max_track_bytes: 128 << 20,
        }
    }
}

/// Frames of an audio decode that runs [`DECODE_LEAD`] ahead of the furthest call.
fn lead_frames() -> u64 {
    let frame = Duration::from_micros(u64::from(SAMPLES_PER_FRAME) * 1_000_000 / 48_000);
    (DECODE_LEAD.as_micros() / frame.as_micros()) as u64
}

/// What a track holds: encoded audio or video frames.
pub(crate) trait CachedFrame: Clone + Send + Sync + 'static {
    /// Bytes the frame counts for in the cache's bound.
    fn cost(&self) -> usize;

    /// Whether a reader can start at this frame (a key frame; every audio frame).
    fn is_start(&self) -> bool {
        true
    }
}

impl CachedFrame for OpusFrame {
    fn cost(&self) -> usize {
        self.data.len() + FRAME_OVERHEAD
    }
}

impl CachedFrame for VideoFrame {
    fn cost(&self) -> usize {
        // Payload bytes, plus each payload's `Arc` header and slice entry.
        self.payloads.iter().map(|p| p.len() + 32).sum::<usize>() + FRAME_OVERHEAD
    }

    fn is_start(&self) -> bool {
        self.keyframe
    }
}

/// The cache. See the [module docs](self). `K` names a track (its input and parameters),
/// `F` is its frame type.
#[derive(Debug)]
pub(crate) struct TrackCache<K, F> {
    config: MediaCacheConfig,
    counters: Arc<Counters>,
    inner: Mutex<Inner<K, F>>,
}

/// The audio cache.
pub(crate) type AudioCache = TrackCache<MediaSource, OpusFrame>;

#[derive(Debug)]
struct Inner<K, F> {
    tracks: HashMap<K, Arc<Track<K, F>>>,
    /// Bytes of the tracks in `tracks`.
    bytes: usize,
    /// Use clock for LRU.
    tick: u64,
}

/// One track's frames and the state its decode and calls share.
#[derive(Debug)]
pub(crate) struct Track<K, F> {
    key: K,
    /// Readers play the whole track again when it ends.
    looped: bool,
    /// Frames the decode may run ahead of the furthest reader.
    lead: u64,
    frames: RwLock<Frames<F>>,
    status: Arc<Status>,
    /// Calls playing the track.
    readers: AtomicUsize,
    /// Highest frame index any call reached.
    furthest: AtomicU64,
    last_used: AtomicU64,
    /// Whether the track is in the cache's map (serves new calls, counts in its bytes).
    in_cache: AtomicBool,
    bytes: AtomicUsize,
    /// Each reader's position, for shedding frames out of the cache.
    positions: Mutex<Vec<Weak<AtomicU64>>>,
    cache: Weak<TrackCache<K, F>>,
}

#[derive(Debug)]
struct Frames<F> {
    /// Index of `frames[0]` in the track (frames before it were shed).
    base: u64,
    frames: VecDeque<F>,
}

impl<K, F> TrackCache<K, F>
where
    K: Clone + Eq + Hash,
    F: CachedFrame,
{
    pub(crate) fn new(config: MediaCacheConfig, counters: Arc<Counters>) -> Self {
        Self {
            config,
            counters,
            inner: Mutex::new(Inner {
                tracks: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, F>> {
        crate::sync::lock(&self.inner)
    }

    /// (bytes, tracks) held now.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.bytes as u64, inner.tracks.len() as u64)
    }

    /// A reader of `key`'s track from its start: from the cache, or from a new decode that
    /// `start` begins (it hands frames to the [`TrackOut`] and reports to the [`Status`]).
    /// Waits for the first frame; `program` names the decoder in a timeout error.
    pub(crate) fn open(
        self: &Arc<Self>,
        key: K,
        looped: bool,
        lead: u64,
        program: &str,
        start: impl FnOnce(Arc<TrackOut<K, F>>, Arc<Status>) -> Result<(), SourceError>,
    ) -> Result<TrackReader<K, F>, SourceError> {
        let (reader, new) = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(track) = inner.tracks.get(&key) {
                track.last_used.store(tick, Ordering::Relaxed);
                let reader = TrackReader::new(track.clone(), self.counters.clone());
                Counters::add(&self.counters.cache_hits);
                Counters::add(&self.counters.shared_plays);
                (reader, false)
            } else {
                Counters::add(&self.counters.cache_misses);
                let room = inner.bytes < self.config.max_bytes || self.evict_idle(&mut inner, None);
                let track = Arc::new(Track {
                    key: key.clone(),
                    looped,
                    lead,
                    frames: RwLock::new(Frames {
                        base: 0,
                        frames: VecDeque::new(),
                    }),
                    status: Arc::new(Status::default()),
                    readers: AtomicUsize::new(0),
                    furthest: AtomicU64::new(0),
                    last_used: AtomicU64::new(tick),
                    in_cache: AtomicBool::new(room),
                    bytes: AtomicUsize::new(0),
                    positions: Mutex::new(Vec::new()),
                    cache: Arc::downgrade(self),
                });
                if room {
                    inner.tracks.insert(key, track.clone());
                } else {
                    Counters::add(&self.counters.cache_bypassed);
                }
                (TrackReader::new(track, self.counters.clone()), true)
            }
        };
        let status = reader.track.status.clone();
        if new {
            let out = Arc::new(TrackOut(reader.track.clone()));
            if let Err(e) = start(out, status.clone()) {
                self.remove(&reader.track);
                status.fail(e.clone());
                return Err(e);
            }
        }
        if let Err(e) = status.wait_started(START_TIMEOUT, program) {
            self.remove(&reader.track);
            return Err(e);
        }
        Ok(reader)
    }

    /// Evicts least recently used tracks nobody plays (never `keep`) until the cache is under
    /// its bound. Returns whether it is.
    fn evict_idle(&self, inner: &mut Inner<K, F>, keep: Option<&Arc<Track<K, F>>>) -> bool {
        while inner.bytes >= self.config.max_bytes {
            let victim = inner
                .tracks
                .values()
                .filter(|t| t.readers.load(Ordering::Relaxed) == 0)
                .filter(|t| keep.is_none_or(|k| !Arc::ptr_eq(k, t)))
                .min_by_key(|t| t.last_used.load(Ordering::Relaxed))
                .cloned();
            let Some(victim) = victim else {
                return false;
            };
            Self::unlink(inner, &victim);
            Counters::add(&self.counters.cache_evictions);
        }
        true
    }

    /// Takes `track` out of the map (no new calls; its bytes leave the cache's count).
    fn unlink(inner: &mut Inner<K, F>, track: &Arc<Track<K, F>>) {
        if track.in_cache.swap(false, Ordering::Relaxed) {
            inner.tracks.remove(&track.key);
            inner.bytes = inner
                .bytes
                .saturating_sub(track.bytes.load(Ordering::Relaxed));
        }
    }

    fn remove(&self, track: &Arc<Track<K, F>>) {
        let mut inner = self.lock();
        Self::unlink(&mut inner, track);
    }

    /// `track` grew by `added` bytes: keep the cache within its bounds.
    fn grew(&self, track: &Arc<Track<K, F>>, added: usize) {
        if !track.in_cache.load(Ordering::Relaxed) {
            return;
        }
        let mut inner = self.lock();
        if !track.in_cache.load(Ordering::Relaxed) {
            return;
        }
        inner.bytes += added;
        if track.bytes.load(Ordering::Relaxed) > self.config.max_track_bytes
            || !self.evict_idle(&mut inner, Some(track))
        {
            Self::unlink(&mut inner, track);
        }
    }
}

impl AudioCache {
    /// A reader of `spec`'s audio from its start.
    pub(crate) fn open_audio(
        self: &Arc<Self>,
        spec: Spec,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        let program = decode::program(&spec);
        let counters = self.counters.clone();
        let key = spec.source.clone();
        let looped = spec.source.looped;
        let reader = self.open(key, looped, lead_frames(), &program, |out, status| {
            decode::start(spec, out, status, counters)
        })?;
        Ok(Box::new(reader))
    }
}

/// The decode's side of a track.
pub(crate) struct TrackOut<K, F>(Arc<Track<K, F>>);

impl<K, F> TrackOut<K, F>
where
    K: Clone + Eq + Hash,
    F: CachedFrame,
{
    /// Hands a frame over, waiting while the track is its lead ahead of the furthest reader;
    /// false once nobody plays the track (the decode then stops).
    pub(crate) fn push_frame(&self, frame: F) -> bool {
        let track = &self.0;
        loop {
            if track.readers.load(Ordering::Relaxed) == 0 {
                if let Some(cache) = track.cache.upgrade() {
                    cache.remove(track);
                }
                return false;
            }
            let produced = {
                let frames = track.frames.read().unwrap_or_else(PoisonError::into_inner);
                frames.base + frames.frames.len() as u64
            };
            if produced < track.furthest.load(Ordering::Relaxed) + track.lead {
                break;
            }
            std::thread::sleep(LEAD_POLL);
        }
        let size = frame.cost();
        {
            let mut frames = track.frames.write().unwrap_or_else(PoisonError::into_inner);
            frames.frames.push_back(frame);
        }
        track.bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(cache) = track.cache.upgrade() {
            cache.grew(track, size);
        }
        if !track.in_cache.load(Ordering::Relaxed) {
            track.shed();
        }
        true
    }

    /// The decode ended. A track whose decode failed is incomplete: later calls must decode
    /// afresh, not play it to the same error.
    pub(crate) fn decode_ended(&self, result: &Result<(), SourceError>) {
        if result.is_err()
            && let Some(cache) = self.0.cache.upgrade()
        {
            cache.remove(&self.0);
        }
    }
}

impl FrameOut for TrackOut<MediaSource, OpusFrame> {
    fn push(&self, frame: OpusFrame) -> bool {
        self.push_frame(frame)
    }

    fn ended(&self, result: &Result<(), SourceError>) {
        self.decode_ended(result);
    }
}

impl<K, F: CachedFrame> Track<K, F> {
    /// Drops the frames every reader is past (a track out of the cache serves no new call),
    /// keeping the frames from the last start frame at or before the slowest reader.
    fn shed(&self) {
        let slowest = {
            let mut positions = crate::sync::lock(&self.positions);
            positions.retain(|p| p.strong_count() > 0);
            positions
                .iter()
                .filter_map(Weak::upgrade)
                .map(|p| p.load(Ordering::Relaxed))
                .min()
        };
        let Some(slowest) = slowest else {
            return;
        };
        let mut frames = self.frames.write().unwrap_or_else(PoisonError::into_inner);
        let held = frames.frames.len() as u64;
        let upto = slowest.saturating_sub(frames.base).min(held);
        // The newest start frame at or before the slowest reader's position.
        let keep_from = (0..upto.min(held.saturating_sub(1)) + 1)
            .rev()
            .find(|&i| frames.frames.get(i as usize).is_some_and(F::is_start))
            .unwrap_or(0);
        let mut freed = 0;
        for _ in 0..keep_from {
            let Some(frame) = frames.frames.pop_front() else {
                break;
            };
            freed += frame.cost();
            frames.base += 1;
        }
        self.bytes.fetch_sub(
            freed.min(self.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }
}

/// One call's position in a track.
pub(crate) struct TrackReader<K, F> {
    track: Arc<Track<K, F>>,
    next: u64,
    position: Arc<AtomicU64>,
    counters: Arc<Counters>,
    /// After a replay from a start frame ([`TrackReader::rewind_to_start`]): the position it
    /// came from. The frames before it are due at once.
    replay_until: u64,
}

/// What a reader found ([`TrackReader::poll`]).
pub(crate) enum TrackPoll<F> {
    /// The next frame.
    Frame(F),
    /// None ready yet: the decode is behind.
    Pending,
    /// The track ended.
    End,
}

impl<K, F> TrackReader<K, F> {
    fn new(track: Arc<Track<K, F>>, counters: Arc<Counters>) -> Self {
        track.readers.fetch_add(1, Ordering::Relaxed);
        let position = Arc::new(AtomicU64::new(0));
        crate::sync::lock(&track.positions).push(Arc::downgrade(&position));
        Self {
            track,
            next: 0,
            position,
            counters,
            replay_until: 0,
        }
    }

    /// The track's name (its input and parameters).
    pub(crate) fn key(&self) -> &K {
        &self.track.key
    }
}

impl<K, F> Drop for TrackReader<K, F> {
    fn drop(&mut self) {
        self.track.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<K, F: CachedFrame> TrackReader<K, F> {
    /// The next frame of the track if it is there: at this reader's position, or, when the
    /// decode ended cleanly (`ended_ok`) and the track loops, its first frame again.
    fn take_frame(&mut self, ended_ok: bool) -> Option<F> {
        let frame = {
            let frames = self
                .track
                .frames
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            self.next = self.next.max(frames.base);
            let index = (self.next - frames.base) as usize;
            match frames.frames.get(index) {
                Some(frame) => Some(frame.clone()),
                None if ended_ok
                    && self.track.looped
                    && frames.base == 0
                    && !frames.frames.is_empty() =>
                {
                    // The whole track is here: play it again from the cache.
                    self.next = 0;
                    self.replay_until = 0;
                    frames.frames.front().cloned()
                }
                None => None,
            }
        }?;
        self.next += 1;
        self.position.store(self.next, Ordering::Relaxed);
        self.track.furthest.fetch_max(self.next, Ordering::Relaxed);
        Some(frame)
    }

    /// The next frame, none ready yet, or the end (an error if the decode failed). Counts an
    /// underrun when none is ready.
    pub(crate) fn poll(&mut self) -> Result<TrackPoll<F>, SourceError> {
        // The common case, a frame ready, takes no lock but the track's read lock.
        if let Some(frame) = self.take_frame(false) {
            return Ok(TrackPoll::Frame(frame));
        }
        // None ready: has the decode ended? It hands over all its frames before it ends, so
        // a second look after seeing the end is final.
        let end = self.track.status.end();
        if let Some(frame) = end
            .as_ref()
            .and_then(|result| self.take_frame(result.is_ok()))
        {
            return Ok(TrackPoll::Frame(frame));
        }
        match end {
            Some(Ok(())) => Ok(TrackPoll::End),
            Some(Err(e)) => Err(e),
            None => {
                Counters::add(&self.counters.underruns);
                Ok(TrackPoll::Pending)
            }
        }
    }

    /// Goes back to the newest start frame before this reader's position, if the track still
    /// holds one; the frames up to the old position are then [`TrackReader::replay_backlog`].
    /// Returns whether it went back.
    pub(crate) fn rewind_to_start(&mut self) -> bool {
        let frames = self
            .track
            .frames
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(last_taken) = self.next.checked_sub(1) else {
            return false;
        };
        let start = (frames.base..=last_taken).rev().find(|&i| {
            frames
                .frames
                .get((i - frames.base) as usize)
                .is_some_and(F::is_start)
        });
        let Some(start) = start else {
            return false;
        };
        self.replay_until = self.replay_until.max(self.next);
        self.next = start;
        self.position.store(self.next, Ordering::Relaxed);
        true
    }

    /// Frames after the one just taken that were already sent once before a rewind: due now.
    pub(crate) fn replay_backlog(&self) -> usize {
        self.replay_until.saturating_sub(self.next) as usize
    }
}

impl FrameSource for TrackReader<MediaSource, OpusFrame> {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        match self.poll()? {
            TrackPoll::Frame(frame) => Ok(Some(frame)),
            TrackPoll::End => Ok(None),
            TrackPoll::Pending => Ok(Some(silence_frame())),
        }
    }

    fn start_position(&self) -> Duration {
        self.track.key.seek
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A frame of 100 bytes; `key` frames are where a reader may start.
    #[derive(Clone, Debug)]
    struct Frame {
        key: bool,
    }

    impl CachedFrame for Frame {
        fn cost(&self) -> usize {
            100
        }

        fn is_start(&self) -> bool {
            self.key
        }
    }

    fn base(reader: &TrackReader<u32, Frame>) -> u64 {
        reader.track.frames.read().unwrap().base
    }

    fn take(reader: &mut TrackReader<u32, Frame>) -> Frame {
        match reader.poll().unwrap() {
            TrackPoll::Frame(f) => f,
            _ => panic!("no frame"),
        }
    }

    /// A track out of the cache (no room) sheds what its reader passed, but keeps the frames
    /// from the key frame before it, so a key frame request rewinds there and the frames up
    /// to where the reader was are its backlog.
    #[test]
    fn out_of_cache_a_track_keeps_the_key_frame_before_its_slowest_reader() {
        let counters = Arc::new(Counters::default());
        let none = MediaCacheConfig {
            max_bytes: 0,
            max_track_bytes: 0,
        };
        let cache = Arc::new(TrackCache::<u32, Frame>::new(none, counters.clone()));
        let slot = Mutex::new(None);
        let mut reader = cache
            .open(7, false, 1_000, "test", |out, status| {
                status.mark_started();
                *slot.lock().unwrap() = Some(out);
                Ok(())
            })
            .unwrap();
        assert_eq!(counters.cache_bypassed.load(Ordering::Relaxed), 1);
        assert_eq!(cache.usage(), (0, 0));
        let out = slot.lock().unwrap().take().unwrap();
        // Key frames at 0, 4 and 8.
        for i in 0..10 {
            assert!(out.push_frame(Frame { key: i % 4 == 0 }));
        }
        for _ in 0..6 {
            take(&mut reader);
        }
        assert_eq!(base(&reader), 0);
        assert!(out.push_frame(Frame { key: false }));
        // The reader is at 6: frames before the key frame 4 are gone, 4 and 5 are kept.
        assert_eq!(base(&reader), 4);
        assert_eq!(reader.track.bytes.load(Ordering::Relaxed), 7 * 100);
        assert!(reader.rewind_to_start());
        assert!(take(&mut reader).key);
        assert_eq!(reader.replay_backlog(), 1);
        take(&mut reader);
        assert_eq!(reader.replay_backlog(), 0);
        // Nobody reads any more: the decode is told to stop.
        drop(reader);
        assert!(!out.push_frame(Frame { key: false }));
    }
}
