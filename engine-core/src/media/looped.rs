//! A source that plays pre-encoded frames round and round.

use std::sync::Arc;

use super::{FrameSource, OpusFrame, SourceError};

/// Plays the same pre-encoded frames over and over: hold music, a jingle, a test tone, or a
/// benchmark's source that costs nothing per frame (each frame handed out is an `Arc` clone of
/// the payload, never a copy). An empty list of frames ends at once.
#[derive(Debug, Clone)]
pub struct LoopedFrames {
    frames: Arc<[OpusFrame]>,
    next: usize,
}

impl LoopedFrames {
    /// Plays `frames` from the first, then again from the first, forever.
    pub fn new(frames: impl Into<Arc<[OpusFrame]>>) -> Self {
        Self {
            frames: frames.into(),
            next: 0,
        }
    }
}

impl FrameSource for LoopedFrames {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        let frame = self
            .frames
            .get(self.next % self.frames.len().max(1))
            .cloned();
        self.next = self.next.wrapping_add(1);
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(byte: u8) -> OpusFrame {
        OpusFrame {
            data: Arc::from(&[0xF8, byte][..]),
            duration_samples: 960,
            audio_level: 30,
            voice_activity: true,
        }
    }

    #[test]
    fn plays_the_frames_in_a_loop_sharing_their_payloads() {
        let frames = vec![frame(1), frame(2)];
        let mut looped = LoopedFrames::new(frames);
        let played: Vec<OpusFrame> = (0..5)
            .map(|_| looped.next_frame().unwrap().unwrap())
            .collect();
        let bytes: Vec<u8> = played.iter().map(|f| f.data[1]).collect();
        assert_eq!(bytes, [1, 2, 1, 2, 1]);
        assert!(Arc::ptr_eq(&played[0].data, &played[2].data));
    }

    #[test]
    fn no_frames_ends_at_once() {
        let mut looped = LoopedFrames::new(Vec::<OpusFrame>::new());
        assert_eq!(looped.next_frame().unwrap(), None);
    }
}
