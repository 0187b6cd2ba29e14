//! Live inputs: one decode per input, every call at the same position (radio).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use ringcast_core::media::{SharedReader, SharedSource};
use ringcast_core::{FrameSource, OpusFrame, SourceError};

use super::decode::{self, FrameOut, Spec, Status, silence_frame};
use super::{Counters, LIVE_QUEUE_FRAMES, MediaSource, START_TIMEOUT};

/// The running live decodes, by input. Entries are weak: the last call to stop playing an
/// input drops it, which stops its decode. A decode that failed to start stays in the map
/// (ended) until replaced by the next attempt.
#[derive(Debug, Default)]
pub(crate) struct LiveInputs {
    inputs: Mutex<HashMap<MediaSource, Weak<LiveInput>>>,
}

/// One live decode and the [`SharedSource`] its calls read through.
struct LiveInput {
    shared: SharedSource,
    status: Arc<Status>,
    seek: Duration,
}

impl Drop for LiveInput {
    fn drop(&mut self) {
        self.status.cancel();
    }
}

impl LiveInputs {
    /// A reader of `spec`'s live decode, started if none runs. Waits for the decode's first
    /// frame (or its failure); the map is not locked meanwhile, so a slow URL holds back only
    /// the calls that asked for it.
    pub(crate) fn open(
        &self,
        spec: Spec,
        counters: &Arc<Counters>,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        let program = decode::program(&spec);
        let (input, decode) = {
            let mut inputs = crate::sync::lock(&self.inputs);
            inputs.retain(|_, w| w.strong_count() > 0);
            match inputs.get(&spec.source).and_then(Weak::upgrade) {
                Some(input) if input.status.end().is_none() => {
                    Counters::add(&counters.shared_plays);
                    (input, None)
                }
                _ => {
                    let (tx, rx) = bounded(LIVE_QUEUE_FRAMES);
                    let status = Arc::new(Status::default());
                    let source = ChannelSource {
                        rx,
                        status: status.clone(),
                        counters: counters.clone(),
                    };
                    let input = Arc::new(LiveInput {
                        shared: SharedSource::new(Box::new(source)),
                        status,
                        seek: spec.source.seek,
                    });
                    inputs.insert(spec.source.clone(), Arc::downgrade(&input));
                    (input, Some((spec, ChannelOut { tx })))
                }
            }
        };
        if let Some((spec, out)) = decode {
            decode::start(spec, Arc::new(out), input.status.clone(), counters.clone())
                .inspect_err(|e| input.status.fail(e.clone()))?;
        }
        input.status.wait_started(START_TIMEOUT, &program)?;
        Ok(Box::new(LiveReader::new(input)))
    }
}

/// The decode's side of the live queue.
struct ChannelOut {
    tx: Sender<OpusFrame>,
}

impl FrameOut for ChannelOut {
    fn push(&self, frame: OpusFrame) -> bool {
        // Blocks while the queue is full: the calls set the pace, ffmpeg waits on its pipe.
        self.tx.send(frame).is_ok()
    }
}

/// The calls' side of the live queue, behind the [`SharedSource`]: a frame if one is ready,
/// silence (an underrun) if not, the decode's end once it is over and drained.
struct ChannelSource {
    rx: Receiver<OpusFrame>,
    status: Arc<Status>,
    counters: Arc<Counters>,
}

impl FrameSource for ChannelSource {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        match self.rx.try_recv() {
            Ok(frame) => Ok(Some(frame)),
            Err(TryRecvError::Empty) => {
                Counters::add(&self.counters.underruns);
                Ok(Some(silence_frame()))
            }
            Err(TryRecvError::Disconnected) => match self.status.end() {
                Some(Err(e)) => Err(e),
                _ => Ok(None),
            },
        }
    }
}

/// One call's view of a live input.
struct LiveReader {
    reader: SharedReader,
    seek: Duration,
    /// Keeps the decode alive while this call plays it.
    _input: Arc<LiveInput>,
}

impl LiveReader {
    fn new(input: Arc<LiveInput>) -> Self {
        Self {
            reader: input.shared.reader(),
            seek: input.seek,
            _input: input,
        }
    }
}

impl FrameSource for LiveReader {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        self.reader.next_frame()
    }

    fn start_position(&self) -> Duration {
        self.seek
    }
}
