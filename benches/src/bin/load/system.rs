//! What the ramp and the soak drive: a [`System`] under test and the tones every system plays.

use ringcast::SharedSource;
use ringcast_core::media::ToneSource;
use ringcast_core::pacer::LatenessHistogram;

use crate::sfu::Sfu;

/// Chats the calls are spread over; each chat plays one shared tone. Each tone is one Opus
/// encoder (about 60 µs per 20 ms frame): a fixed cost of ~3 % of a core for 10 chats, which
/// every system under test pays alike.
pub(crate) const CHATS: usize = 10;

/// What a system under test reports at a moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub(crate) packets_sent: u64,
    pub(crate) connected: usize,
    pub(crate) lateness: LatenessHistogram,
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

/// One shared tone per chat: both systems play exactly the same sources.
pub(crate) fn chat_tones() -> Result<Vec<SharedSource>, String> {
    (0..CHATS)
        .map(|c| {
            ToneSource::new(tone_for(c), None)
                .map(|t| SharedSource::new(Box::new(t)))
                .map_err(|e| e.to_string())
        })
        .collect()
}
