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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use ringcast_core::media::SAMPLES_PER_FRAME;
use ringcast_core::{FrameSource, OpusFrame, SourceError};

use super::decode::{self, FrameOut, Spec, Status, silence_frame};
use super::{Counters, DECODE_LEAD, MediaSource, START_TIMEOUT};

/// Bookkeeping counted per cached frame on top of its payload: the `OpusFrame` in the deque
/// and the `Arc<[u8]>` header.
pub const FRAME_OVERHEAD: usize = std::mem::size_of::<OpusFrame>() + 16;

/// How often a decode that is [`DECODE_LEAD`] ahead looks again.
const LEAD_POLL: Duration = Duration::from_millis(20);

/// Limits of the on-demand cache ([`EngineBuilder::media_cache`](crate::EngineBuilder::media_cache)).
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

/// Frames of a decode that runs [`DECODE_LEAD`] ahead of the furthest call.
fn lead_frames() -> u64 {
    let frame = Duration::from_micros(u64::from(SAMPLES_PER_FRAME) * 1_000_000 / 48_000);
    (DECODE_LEAD.as_micros() / frame.as_micros()) as u64
}

fn cost(frame: &OpusFrame) -> usize {
    frame.data.len() + FRAME_OVERHEAD
}

/// The cache. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct TrackCache {
    config: MediaCacheConfig,
    counters: Arc<Counters>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tracks: HashMap<MediaSource, Arc<Track>>,
    /// Bytes of the tracks in `tracks`.
    bytes: usize,
    /// Use clock for LRU.
    tick: u64,
}

/// One track's frames and the state its decode and calls share.
#[derive(Debug)]
struct Track {
    key: MediaSource,
    frames: RwLock<Frames>,
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
    cache: Weak<TrackCache>,
}

#[derive(Debug, Default)]
struct Frames {
    /// Index of `frames[0]` in the track (frames before it were shed).
    base: u64,
    frames: VecDeque<OpusFrame>,
}

impl TrackCache {
    pub(crate) fn new(config: MediaCacheConfig, counters: Arc<Counters>) -> Self {
        Self {
            config,
            counters,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// (bytes, tracks) held now.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.bytes as u64, inner.tracks.len() as u64)
    }

    /// A reader of `spec`'s track from its start: from the cache, or from a new decode.
    pub(crate) fn open(self: &Arc<Self>, spec: Spec) -> Result<Box<dyn FrameSource>, SourceError> {
        let program = decode::program(&spec);
        let (track, new) = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(track) = inner.tracks.get(&spec.source) {
                track.last_used.store(tick, Ordering::Relaxed);
                let reader = TrackReader::new(track.clone(), self.counters.clone());
                Counters::add(&self.counters.cache_hits);
                Counters::add(&self.counters.shared_plays);
                (reader, false)
            } else {
                Counters::add(&self.counters.cache_misses);
                let room = inner.bytes < self.config.max_bytes || self.evict_idle(&mut inner, None);
                let track = Arc::new(Track {
                    key: spec.source.clone(),
                    frames: RwLock::new(Frames::default()),
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
                    inner.tracks.insert(spec.source.clone(), track.clone());
                } else {
                    Counters::add(&self.counters.cache_bypassed);
                }
                (TrackReader::new(track, self.counters.clone()), true)
            }
        };
        let status = track.track.status.clone();
        if new {
            let out = Arc::new(TrackOut(track.track.clone()));
            if let Err(e) = decode::start(spec, out, status.clone(), self.counters.clone()) {
                self.remove(&track.track);
                status.fail(e.clone());
                return Err(e);
            }
        }
        if let Err(e) = status.wait_started(START_TIMEOUT, &program) {
            self.remove(&track.track);
            return Err(e);
        }
        Ok(Box::new(track))
    }

    /// Evicts least recently used tracks nobody plays (never `keep`) until the cache is under
    /// its bound. Returns whether it is.
    fn evict_idle(&self, inner: &mut Inner, keep: Option<&Arc<Track>>) -> bool {
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
    fn unlink(inner: &mut Inner, track: &Arc<Track>) {
        if track.in_cache.swap(false, Ordering::Relaxed) {
            inner.tracks.remove(&track.key);
            inner.bytes = inner
                .bytes
                .saturating_sub(track.bytes.load(Ordering::Relaxed));
        }
    }

    fn remove(&self, track: &Arc<Track>) {
        let mut inner = self.lock();
        Self::unlink(&mut inner, track);
    }

    /// `track` grew by `added` bytes: keep the cache within its bounds.
    fn grew(&self, track: &Arc<Track>, added: usize) {
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

/// The decode's side of a track.
struct TrackOut(Arc<Track>);

impl FrameOut for TrackOut {
    fn push(&self, frame: OpusFrame) -> bool {
        let track = &self.0;
        // Stay within the lead of the furthest call; stop once nobody plays the track.
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
            if produced < track.furthest.load(Ordering::Relaxed) + lead_frames() {
                break;
            }
            std::thread::sleep(LEAD_POLL);
        }
        let size = cost(&frame);
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

    fn ended(&self, result: &Result<(), SourceError>) {
        // A track whose decode failed is incomplete: later calls must decode afresh, not
        // play it to the same error.
        if result.is_err()
            && let Some(cache) = self.0.cache.upgrade()
        {
            cache.remove(&self.0);
        }
    }
}

impl Track {
    /// Drops the frames every reader is past (a track out of the cache serves no new call).
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
        let mut freed = 0;
        while frames.base < slowest {
            let Some(frame) = frames.frames.pop_front() else {
                break;
            };
            freed += cost(&frame);
            frames.base += 1;
        }
        self.bytes.fetch_sub(
            freed.min(self.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }
}

/// One call's position in a track.
struct TrackReader {
    track: Arc<Track>,
    next: u64,
    position: Arc<AtomicU64>,
    counters: Arc<Counters>,
}

impl TrackReader {
    fn new(track: Arc<Track>, counters: Arc<Counters>) -> Self {
        track.readers.fetch_add(1, Ordering::Relaxed);
        let position = Arc::new(AtomicU64::new(0));
        crate::sync::lock(&track.positions).push(Arc::downgrade(&position));
        Self {
            track,
            next: 0,
            position,
            counters,
        }
    }
}

impl Drop for TrackReader {
    fn drop(&mut self) {
        self.track.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TrackReader {
    /// The next frame of the track if it is there: at this reader's position, or, when the
    /// decode ended cleanly (`ended_ok`) and the track loops, its first frame again.
    fn take_frame(&mut self, ended_ok: bool) -> Option<OpusFrame> {
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
                    && self.track.key.looped
                    && frames.base == 0
                    && !frames.frames.is_empty() =>
                {
                    // The whole track is here: play it again from the cache.
                    self.next = 0;
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
}

impl FrameSource for TrackReader {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        // The common case, a frame ready, takes no lock but the track's read lock.
        if let Some(frame) = self.take_frame(false) {
            return Ok(Some(frame));
        }
        // None ready: has the decode ended? It hands over all its frames before it ends, so
        // a second look after seeing the end is final.
        let end = self.track.status.end();
        if let Some(frame) = end
            .as_ref()
            .and_then(|result| self.take_frame(result.is_ok()))
        {
            return Ok(Some(frame));
        }
        match end {
            Some(Ok(())) => Ok(None),
            Some(Err(e)) => Err(e),
            None => {
                Counters::add(&self.counters.underruns);
                Ok(Some(silence_frame()))
            }
        }
    }

    fn start_position(&self) -> Duration {
        self.track.key.seek
    }
}
