//! The chats' tones: one second of each, encoded once per process and looped by every call of
//! every run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ringcast_core::media::{FrameSource, OpusFrame, ToneSource};

/// One Opus frame.
pub(crate) const FRAME: Duration = Duration::from_millis(20);

/// The chat's tone: 110 Hz apart, far beyond the ±5 Hz check.
pub(crate) fn tone_hz(chat: i64) -> f32 {
    300.0 + 110.0 * chat as f32
}

/// Frames of one second of a chat's tone, encoded once per process and looped by every call
/// of every run: encoding was a large part of a run's cost, and the bytes are the same
/// anyway (libopus is deterministic).
pub(crate) fn tone_frames(hz: f32) -> Result<Arc<[OpusFrame]>, String> {
    static CACHE: OnceLock<Mutex<HashMap<u32, Arc<[OpusFrame]>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(frames) = cache.get(&hz.to_bits()) {
        return Ok(frames.clone());
    }
    let mut tone = ToneSource::new(hz, None).map_err(|e| e.to_string())?;
    // Skip the encoder's start-up; 50 frames are one second, a whole number of periods of
    // every tone_hz(), so the loop has no phase jump.
    let mut frames = Vec::with_capacity(LOOP_FRAMES);
    for i in 0..LOOP_SKIP + LOOP_FRAMES {
        let frame = tone
            .next_frame()
            .map_err(|e| e.to_string())?
            .ok_or("tone ended")?;
        if i >= LOOP_SKIP {
            frames.push(frame);
        }
    }
    let frames: Arc<[OpusFrame]> = frames.into();
    cache.insert(hz.to_bits(), frames.clone());
    Ok(frames)
}

/// Frames a looped tone skips before its loop (encoder start-up).
const LOOP_SKIP: usize = 10;
/// Frames in a looped tone: one second.
const LOOP_FRAMES: usize = 50;
