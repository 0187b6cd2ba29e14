//! What the ramp and the soak drive: a [`System`] under test and the tones every system plays.

use ringcast::{LatenessCauses, SharedSource};
use ringcast_core::media::{FrameSource, LoopedFrames, ToneSource};
use ringcast_core::pacer::LatenessHistogram;

use crate::sfu::Sfu;

/// Chats the calls are spread over; each chat plays one shared source.
pub(crate) const CHATS: usize = 10;

/// Frames of each chat's tone encoded before the ramp and played in a loop: what a file, a
/// cached track or any source shared by many calls looks like once its frames exist. No
/// encoder runs during the measurement (ten live encoders cost ~3 % of a core, which is not
/// the engine's cost per stream); every system under test plays the same frames.
const LOOP_FRAMES: usize = 50;

/// What a system under test reports at a moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub(crate) packets_sent: u64,
    pub(crate) connected: usize,
    pub(crate) lateness: LatenessHistogram,
    /// Where ringcast's lateness comes from (empty for the baselines).
    pub(crate) causes: LatenessCauses,
}

impl Sample {
    /// The sum over calls that each report their own counters (the baselines): `connected`
    /// calls, and each `(packets sent, lateness)` of `calls` added up.
    pub(crate) fn sum<'a>(
        connected: usize,
        calls: impl IntoIterator<Item = (u64, &'a LatenessHistogram)>,
    ) -> Self {
        let mut s = Self {
            connected,
            ..Self::default()
        };
        for (packets, lateness) in calls {
            s.packets_sent += packets;
            s.lateness.merge(lateness);
        }
        s
    }
}

/// A system under test: ringcast or a baseline.
pub(crate) trait System {
    fn name(&self) -> &'static str;
    /// Adds calls until there are `n`, and waits until they connected.
    fn grow_to(&mut self, n: usize, sfu: &Sfu) -> Result<(), String>;
    fn sample(&self) -> Sample;
}

pub(crate) fn tone_for(chat: usize) -> f32 {
    300.0 + 20.0 * chat as f32
}

/// One shared source per chat, a second of its tone pre-encoded and looped (a whole number of
/// cycles, so the loop is seamless): every system plays exactly the same frames.
pub(crate) fn chat_tones() -> Result<Vec<SharedSource>, String> {
    (0..CHATS)
        .map(|c| {
            let mut tone = ToneSource::new(tone_for(c), None).map_err(|e| e.to_string())?;
            let frames = (0..LOOP_FRAMES)
                .map(|_| match tone.next_frame() {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err("tone ended".to_owned()),
                    Err(e) => Err(e.to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SharedSource::new(Box::new(LoopedFrames::new(frames))))
        })
        .collect()
}
