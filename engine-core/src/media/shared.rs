//! Encode once, send many: one source shared by any number of calls.
//!
//! A [`SharedSource`] wraps one [`FrameSource`] (one Opus encoder, one file cursor). Each call
//! that plays it gets a [`SharedReader`]; the first reader to need frame *n* pulls it from the
//! inner source, the others get the same [`OpusFrame`] whose payload is an `Arc<[u8]>`, so a
//! radio stream in 1,000 chats runs one encoder and copies no payload per call.
//!
//! Readers join live, like a radio: a new reader starts at the newest frame. The source keeps
//! the last [`HISTORY_FRAMES`] frames; a reader that falls further behind skips ahead to the
//! oldest kept frame (counted in [`SharedSource::frames_skipped`]).
//!
//! Readers live on different shard threads, so the state sits behind a `Mutex`, taken once per
//! frame per reader for a few hundred nanoseconds (a clone of the frame), and held during an
//! encode only by the one reader that produces the frame.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{FrameSource, OpusFrame, SourceError};

/// Frames kept for readers that lag (one second of 20 ms frames).
pub const HISTORY_FRAMES: usize = 50;

struct Inner {
    source: Box<dyn FrameSource>,
    /// Frames `first..first + frames.len()`.
    frames: VecDeque<OpusFrame>,
    first: u64,
    /// Set when the inner source ended or failed; readers past the last frame see it.
    end: Option<Result<(), SourceError>>,
}

struct Shared {
    inner: Mutex<Inner>,
    frames_pulled: AtomicU64,
    frames_skipped: AtomicU64,
    readers: AtomicU64,
}

/// A source shared by many calls. Cheap to clone (a reference count).
#[derive(Clone)]
pub struct SharedSource {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSource")
            .field("frames_pulled", &self.frames_pulled())
            .field("readers", &self.readers())
            .finish_non_exhaustive()
    }
}

impl SharedSource {
    /// Shares `source`.
    pub fn new(source: Box<dyn FrameSource>) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    source,
                    frames: VecDeque::with_capacity(HISTORY_FRAMES),
                    first: 0,
                    end: None,
                }),
                frames_pulled: AtomicU64::new(0),
                frames_skipped: AtomicU64::new(0),
                readers: AtomicU64::new(0),
            }),
        }
    }

    /// A new reader, starting at the newest frame.
    pub fn reader(&self) -> SharedReader {
        let next = {
            let inner = self.lock();
            inner.first + inner.frames.len().saturating_sub(1) as u64
        };
        self.shared.readers.fetch_add(1, Ordering::Relaxed);
        SharedReader {
            shared: self.shared.clone(),
            next,
        }
    }

    /// Frames pulled from the inner source: with one encoder behind it, frames encoded.
    pub fn frames_pulled(&self) -> u64 {
        self.shared.frames_pulled.load(Ordering::Relaxed)
    }

    /// Frames readers skipped because they fell more than [`HISTORY_FRAMES`] behind.
    pub fn frames_skipped(&self) -> u64 {
        self.shared.frames_skipped.load(Ordering::Relaxed)
    }

    /// Readers created so far.
    pub fn readers(&self) -> u64 {
        self.shared.readers.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.shared)
    }
}

/// A mutex poisoned by a panicking source still holds consistent frames (every mutation is a
/// single push/pop), so readers go on.
fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    shared.inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One call's view of a [`SharedSource`].
pub struct SharedReader {
    shared: Arc<Shared>,
    next: u64,
}

impl std::fmt::Debug for SharedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReader")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl FrameSource for SharedReader {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        let mut inner = lock(&self.shared);
        if self.next < inner.first {
            let skipped = inner.first - self.next;
            self.shared
                .frames_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            self.next = inner.first;
        }
        let newest = inner.first + inner.frames.len() as u64;
        if self.next >= newest {
            if let Some(end) = &inner.end {
                return end.clone().map(|()| None);
            }
            // This reader is first to need the next frame: pull it (one encode for everyone).
            match inner.source.next_frame() {
                Ok(Some(frame)) => {
                    self.shared.frames_pulled.fetch_add(1, Ordering::Relaxed);
                    if inner.frames.len() >= HISTORY_FRAMES {
                        inner.frames.pop_front();
                        inner.first += 1;
                    }
                    inner.frames.push_back(frame);
                }
                Ok(None) => {
                    inner.end = Some(Ok(()));
                    return Ok(None);
                }
                Err(e) => {
                    inner.end = Some(Err(e.clone()));
                    return Err(e);
                }
            }
        }
        let index = (self.next - inner.first) as usize;
        let frame = inner.frames.get(index).cloned();
        if frame.is_some() {
            self.next += 1;
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ToneSource;
    use std::time::Duration;

    #[test]
    fn many_readers_one_encode_per_frame() {
        let shared = SharedSource::new(Box::new(ToneSource::new(440.0, None).unwrap()));
        let mut readers: Vec<_> = (0..100).map(|_| shared.reader()).collect();
        for _ in 0..30 {
            let mut first: Option<OpusFrame> = None;
            for r in &mut readers {
                let f = r.next_frame().unwrap().unwrap();
                match &first {
                    None => first = Some(f),
                    Some(x) => assert!(Arc::ptr_eq(&x.data, &f.data), "same payload, no copy"),
                }
            }
        }
        assert_eq!(shared.frames_pulled(), 30);
        assert_eq!(shared.readers(), 100);
    }

    #[test]
    fn late_reader_joins_live_and_laggard_skips() {
        let shared = SharedSource::new(Box::new(ToneSource::new(440.0, None).unwrap()));
        let mut a = shared.reader();
        let mut lag = shared.reader();
        for _ in 0..(HISTORY_FRAMES + 10) {
            a.next_frame().unwrap().unwrap();
        }
        let mut b = shared.reader();
        // b starts at the newest frame, which a already has.
        let fb = b.next_frame().unwrap().unwrap();
        assert_eq!(shared.frames_pulled(), HISTORY_FRAMES as u64 + 10);
        let fa = a.next_frame().unwrap().unwrap();
        assert!(!Arc::ptr_eq(&fa.data, &fb.data));
        lag.next_frame().unwrap().unwrap();
        assert!(shared.frames_skipped() >= 10);
    }

    #[test]
    fn end_reaches_every_reader() {
        let tone = ToneSource::new(440.0, Some(Duration::from_millis(60))).unwrap();
        let shared = SharedSource::new(Box::new(tone));
        let mut a = shared.reader();
        let mut b = shared.reader();
        for _ in 0..3 {
            a.next_frame().unwrap().unwrap();
        }
        assert!(a.next_frame().unwrap().is_none());
        // b started at frame 0 and still gets all three kept frames, then the end.
        for _ in 0..3 {
            b.next_frame().unwrap().unwrap();
        }
        assert!(b.next_frame().unwrap().is_none());
        assert_eq!(shared.frames_pulled(), 3);
    }
}
