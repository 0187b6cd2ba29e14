//! Recording of a call's incoming audio: [`Engine::record`].
//!
//! The call's received Opus is decoded by a PCM sink (as [`Engine::set_pcm_sink`] does) and a
//! recorder thread writes it, as raw s16le 48 kHz PCM, into the standard input of
//!
//! - an ffmpeg that encodes a file, the format chosen by the extension (`.mp3` libmp3lame,
//!   `.flac`, `.wav`, `.ogg`/`.opus` libopus, `.m4a` AAC), or
//! - the application's shell command (ntgcalls' PLAYBACK `SHELL`: py-tgcalls builds
//!   `ffmpeg -y -loglevel quiet -f s16le -ar 48000 -ac 1 -i pipe:0 ... PATH`).
//!
//! [`RecordLayout::Mixed`] writes one stream: every speaker's frames are queued, and at each
//! 20 ms tick of the recording (wall clock, from the first frame heard) the recorder takes one
//! frame per speaker, silence for a speaker with none, and sums them with saturation. So
//! speakers are aligned by when their audio arrived, within a small jitter allowance
//! ([`PRIME_FRAMES`] queued before a speaker's first frame is used; at most
//! [`MAX_QUEUED_FRAMES`] held per speaker). [`RecordLayout::PerSpeaker`] gives every speaker
//! (SSRC) its own output, started at its first frame and fed one frame (or silence) per tick
//! from then on.
//!
//! The recorder thread owns the processes for their whole life (see [`crate::ffmpeg`]): a
//! dropped [`Recording`] or an exiting process leaves none behind. [`Recording::stop`] closes
//! each process's standard input and waits for it, so the files are complete (an mp3's last
//! frame, a wav's header sizes); a process that failed is reported as
//! [`SourceError::Decoder`] with the tail of its standard error.
//!
//! Not done: Ogg/Opus recorded from the received packets without decoding and re-encoding
//! (an `.ogg` is re-encoded with libopus like the other formats).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use ringcast_core::SourceError;
use ringcast_core::media::pcm::{PcmChannels, PcmReceiver, PcmSinkConfig};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ffmpeg::{Ffmpeg, Killer, Pipes, Process, shell_command, shell_program};
use crate::sync::lock;

/// The recording's tick: one 20 ms frame per speaker.
const TICK: Duration = Duration::from_millis(20);

/// Frames a speaker queues before its first frame is used (absorbs arrival jitter: 40 ms).
pub const PRIME_FRAMES: usize = 2;

/// Frames held per speaker at most (0.5 s); older frames are dropped (counted).
pub const MAX_QUEUED_FRAMES: usize = 25;

/// A recorder that falls this far behind its ticks skips ahead instead of writing the gap.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// How long [`Recording::stop`] waits for its outputs to finish before it kills them (a
/// command that stopped reading its input would otherwise hold the stop forever).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The placeholder a per-speaker output's path or command gets the speaker's SSRC in.
pub const SSRC_PLACEHOLDER: &str = "{ssrc}";

/// Where a recording goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordOutput {
    /// A file encoded by ffmpeg, the format from the extension: `mp3`, `flac`, `wav`, `ogg`,
    /// `opus` or `m4a`. Per speaker: `{ssrc}` in the path is replaced by the SSRC; without it,
    /// `-SSRC` is added before the extension (`talk.mp3` → `talk-1234.mp3`). Overwritten if
    /// it exists.
    File(PathBuf),
    /// A shell command (`/bin/sh -c`) that reads raw s16le 48 kHz PCM (the recording's
    /// channels) on its standard input. Per speaker: `{ssrc}` in the line is replaced by the
    /// SSRC, one process per speaker.
    Shell(String),
}

/// Which streams a recording writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordLayout {
    /// All speakers summed into one stream (the default).
    #[default]
    Mixed,
    /// One output per speaker (SSRC).
    PerSpeaker,
}

/// What [`Engine::record`] records, and where. Build with [`RecordConfig::file`] or
/// [`RecordConfig::shell`].
///
/// ```no_run
/// # use ringcast::{Engine, RecordConfig};
/// # let engine = Engine::builder().build()?;
/// let recording = engine.record(-100123, RecordConfig::file("/tmp/chat.mp3"))?;
/// // ...
/// let summary = recording.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    output: RecordOutput,
    layout: RecordLayout,
    channels: PcmChannels,
    max_speakers: usize,
}

impl RecordConfig {
    fn new(output: RecordOutput) -> Self {
        Self {
            output,
            layout: RecordLayout::Mixed,
            channels: PcmChannels::Mono,
            max_speakers: 16,
        }
    }

    /// A file encoded by ffmpeg (see [`RecordOutput::File`]), mixed, mono.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::new(RecordOutput::File(path.into()))
    }

    /// A shell command reading s16le 48 kHz PCM on stdin (see [`RecordOutput::Shell`]), mixed,
    /// mono.
    pub fn shell(command: impl Into<String>) -> Self {
        Self::new(RecordOutput::Shell(command.into()))
    }

    /// One output per speaker ([`RecordLayout::PerSpeaker`]).
    pub fn per_speaker(mut self) -> Self {
        self.layout = RecordLayout::PerSpeaker;
        self
    }

    /// All speakers in one output ([`RecordLayout::Mixed`], the default).
    pub fn mixed(mut self) -> Self {
        self.layout = RecordLayout::Mixed;
        self
    }

    /// Mono (default) or interleaved stereo.
    pub fn channels(mut self, channels: PcmChannels) -> Self {
        self.channels = channels;
        self
    }

    /// Speakers decoded at once (default 16); see [`PcmSinkConfig::max_ssrcs`].
    pub fn max_speakers(mut self, n: usize) -> Self {
        self.max_speakers = n;
        self
    }

    /// Where the recording goes.
    pub fn output(&self) -> &RecordOutput {
        &self.output
    }

    /// Mixed or per speaker.
    pub fn layout(&self) -> RecordLayout {
        self.layout
    }

    fn validate(&self) -> Result<(), SourceError> {
        let invalid = |reason: String| Err(SourceError::InvalidArgument { reason });
        if self.max_speakers == 0 {
            return invalid("max_speakers must be at least 1".to_owned());
        }
        match &self.output {
            RecordOutput::File(path) => format_args(path).map(|_| ()),
            RecordOutput::Shell(command) if command.trim().is_empty() => {
                invalid("empty shell command".to_owned())
            }
            RecordOutput::Shell(_) => Ok(()),
        }
    }

    /// The output of `ssrc` (per speaker) or of the mix (`None`).
    fn target(&self, ssrc: Option<u32>) -> RecordOutput {
        let Some(ssrc) = ssrc else {
            return self.output.clone();
        };
        let id = ssrc.to_string();
        match &self.output {
            RecordOutput::Shell(line) => RecordOutput::Shell(line.replace(SSRC_PLACEHOLDER, &id)),
            RecordOutput::File(path) => {
                let text = path.to_string_lossy();
                if text.contains(SSRC_PLACEHOLDER) {
                    return RecordOutput::File(PathBuf::from(text.replace(SSRC_PLACEHOLDER, &id)));
                }
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                let name = match path.extension() {
                    Some(ext) => format!("{stem}-{id}.{}", ext.to_string_lossy()),
                    None => format!("{stem}-{id}"),
                };
                RecordOutput::File(path.with_file_name(name))
            }
        }
    }
}

/// ffmpeg's output arguments for a file, by extension.
fn format_args(path: &Path) -> Result<&'static [&'static str], SourceError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "mp3" => &["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"],
        "flac" => &["-c:a", "flac", "-f", "flac"],
        "wav" => &["-c:a", "pcm_s16le", "-f", "wav"],
        "ogg" => &["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"],
        "opus" => &["-c:a", "libopus", "-b:a", "64k", "-f", "opus"],
        "m4a" => &["-c:a", "aac", "-b:a", "128k", "-f", "ipod"],
        _ => {
            return Err(SourceError::InvalidArgument {
                reason: format!(
                    "cannot tell the recording format of {}: use .mp3, .flac, .wav, .ogg, .opus or .m4a",
                    path.display()
                ),
            });
        }
    })
}

/// One output of a finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedOutput {
    /// The speaker, or `None` for the mix.
    pub ssrc: Option<u32>,
    /// The file or command it went to.
    pub output: RecordOutput,
    /// 20 ms frames written to it.
    pub frames: u64,
}

/// What a recording wrote ([`Recording::stop`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingSummary {
    /// Every output, in the order they started.
    pub outputs: Vec<RecordedOutput>,
    /// Speakers heard.
    pub speakers: usize,
    /// Received frames dropped because a speaker's queue held [`MAX_QUEUED_FRAMES`].
    pub frames_dropped: u64,
}

/// A running recording. [`Recording::stop`] (or drop) finishes its files.
#[derive(Debug)]
pub struct Recording {
    stop: Arc<AtomicBool>,
    /// The outputs' process groups, to kill those that do not finish by [`STOP_TIMEOUT`].
    killers: Arc<Mutex<Vec<Killer>>>,
    thread: Option<JoinHandle<()>>,
    end: Arc<Mutex<Option<Result<RecordingSummary, SourceError>>>>,
}

impl Recording {
    /// Stops recording: what is queued is written, each output's standard input is closed and
    /// its process waited for (killed, and reported as failed, if it has not finished after
    /// [`STOP_TIMEOUT`]). Returns what was written, or the first failure of an output
    /// ([`SourceError::Decoder`] with its stderr).
    pub fn stop(mut self) -> Result<RecordingSummary, SourceError> {
        self.finish()
    }

    /// True once the recording ended by itself (the call ended) or was stopped.
    pub fn is_finished(&self) -> bool {
        lock(&self.end).is_some()
    }

    fn finish(&mut self) -> Result<RecordingSummary, SourceError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !thread.is_finished() {
                for k in lock(&self.killers).iter() {
                    k.kill();
                }
            }
            let _ = thread.join();
        }
        lock(&self.end).clone().unwrap_or_else(|| {
            Err(SourceError::Decoder {
                program: "ringcast-record".to_owned(),
                reason: "the recorder thread ended without a result".to_owned(),
                stderr: String::new(),
            })
        })
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl Engine {
    /// Records the call's incoming audio as `config` says (see [`crate::record`]). The call
    /// of `chat_id` must exist (a 1:1 call: the peer's user id).
    ///
    /// The recording takes the call's PCM sink: it replaces one set with
    /// [`Engine::set_pcm_sink`] (whose receiver then disconnects), and a later `set_pcm_sink`
    /// or `record` ends it. It ends by itself when the call ends.
    ///
    /// Fails with [`EngineError::ConnectionNotFound`], or [`EngineError::Source`] for an
    /// unknown file extension, an empty command, an ffmpeg that is missing
    /// ([`SourceError::FfmpegNotFound`]) or a mixed output that cannot be started.
    pub fn record(&self, chat_id: i64, config: RecordConfig) -> Result<Recording, EngineError> {
        config.validate()?;
        let receiver = self.set_pcm_sink(
            chat_id,
            &PcmSinkConfig {
                channels: config.channels,
                capacity: 10 * MAX_QUEUED_FRAMES,
                max_ssrcs: config.max_speakers,
            },
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let killers = Arc::new(Mutex::new(Vec::new()));
        let end = Arc::new(Mutex::new(None));
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let recorder = Recorder {
            ffmpeg: self.ffmpeg().clone(),
            config,
            receiver,
            stop: stop.clone(),
            killers: killers.clone(),
        };
        let thread_end = end.clone();
        let thread = std::thread::Builder::new()
            .name("ringcast-record".into())
            .spawn(move || {
                let result = recorder.run(&started_tx);
                *lock(&thread_end) = Some(result);
            })
            .map_err(EngineError::Io)?;
        let mut recording = Recording {
            stop,
            killers,
            thread: Some(thread),
            end,
        };
        match started_rx.recv() {
            Ok(Ok(())) => Ok(recording),
            Ok(Err(e)) => {
                let _ = recording.finish();
                Err(e.into())
            }
            Err(_) => Err(recording
                .finish()
                .err()
                .unwrap_or(SourceError::Decoder {
                    program: "ringcast-record".to_owned(),
                    reason: "the recorder thread ended before starting".to_owned(),
                    stderr: String::new(),
                })
                .into()),
        }
    }
}

/// One running output process and what it has been fed.
struct Output {
    ssrc: Option<u32>,
    target: RecordOutput,
    process: Process,
    stdin: Option<ChildStdin>,
    frames: u64,
}

impl Output {
    fn start(
        ffmpeg: &Ffmpeg,
        target: RecordOutput,
        ssrc: Option<u32>,
        channels: PcmChannels,
    ) -> Result<Self, SourceError> {
        let mut process = match &target {
            RecordOutput::File(path) => {
                let mut cmd = ffmpeg.command();
                cmd.args(["-y", "-f", "s16le", "-ar", "48000", "-ac"]);
                cmd.arg(channels.count().to_string());
                cmd.args(["-i", "pipe:0"]);
                cmd.args(format_args(path)?);
                cmd.arg(path);
                Process::spawn(cmd, ffmpeg.program(), Pipes::Stdin, Some(ffmpeg))?
            }
            RecordOutput::Shell(line) => {
                Process::spawn(shell_command(line), shell_program(line), Pipes::Stdin, None)?
            }
        };
        let stdin = process.take_stdin();
        Ok(Self {
            ssrc,
            target,
            process,
            stdin,
            frames: 0,
        })
    }

    /// Writes one frame; a failed write ends the output and returns its error.
    fn write(&mut self, bytes: &[u8]) -> Result<(), SourceError> {
        let Some(stdin) = &mut self.stdin else {
            return Ok(());
        };
        match stdin.write_all(bytes) {
            Ok(()) => {
                self.frames += 1;
                Ok(())
            }
            Err(e) => {
                self.stdin = None;
                // The process closed its input: it failed (or exited early).
                match self.process.finish(false) {
                    Err(err) => Err(err),
                    Ok(()) => Err(self
                        .process
                        .failure(format!("stopped reading its input: {e}"))),
                }
            }
        }
    }

    /// Closes the input and waits for the process.
    fn close(mut self) -> (RecordedOutput, Result<(), SourceError>) {
        let result = if self.stdin.take().is_some() {
            self.process.finish(false)
        } else {
            // Failed earlier; that error was reported then.
            Ok(())
        };
        (
            RecordedOutput {
                ssrc: self.ssrc,
                output: self.target,
                frames: self.frames,
            },
            result,
        )
    }
}

/// A speaker's queued frames, and its output (per speaker).
#[derive(Default)]
struct Speaker {
    queue: VecDeque<Vec<i16>>,
    primed: bool,
    output: Option<usize>,
}

impl Speaker {
    fn next(&mut self) -> Option<Vec<i16>> {
        if !self.primed {
            if self.queue.len() < PRIME_FRAMES {
                return None;
            }
            self.primed = true;
        }
        self.queue.pop_front()
    }
}

/// The recorder thread's state.
struct Recorder {
    ffmpeg: Ffmpeg,
    config: RecordConfig,
    receiver: PcmReceiver,
    stop: Arc<AtomicBool>,
    killers: Arc<Mutex<Vec<Killer>>>,
}

impl Recorder {
    fn run(
        self,
        started: &crossbeam_channel::Sender<Result<(), SourceError>>,
    ) -> Result<RecordingSummary, SourceError> {
        let channels = self.config.channels;
        let frame_len = channels.frame_len();
        let mut outputs: Vec<Output> = Vec::new();
        let mut first_error: Option<SourceError> = None;
        if self.config.layout == RecordLayout::Mixed {
            match Output::start(&self.ffmpeg, self.config.target(None), None, channels) {
                Ok(o) => {
                    lock(&self.killers).push(o.process.killer());
                    outputs.push(o);
                }
                Err(e) => {
                    let _ = started.send(Err(e.clone()));
                    return Err(e);
                }
            }
        }
        let _ = started.send(Ok(()));
        let mut speakers: BTreeMap<u32, Speaker> = BTreeMap::new();
        let mut dropped = 0_u64;
        let mut next_tick: Option<Instant> = None;
        let mut mix = vec![0_i32; frame_len];
        let mut bytes = Vec::with_capacity(frame_len * 2);
        let mut tick = |speakers: &mut BTreeMap<u32, Speaker>,
                        outputs: &mut Vec<Output>,
                        first_error: &mut Option<SourceError>| {
            let mut fail = |r: Result<(), SourceError>| {
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
            };
            match self.config.layout {
                RecordLayout::Mixed => {
                    mix.iter_mut().for_each(|s| *s = 0);
                    for speaker in speakers.values_mut() {
                        if let Some(frame) = speaker.next() {
                            for (m, s) in mix.iter_mut().zip(&frame) {
                                *m += i32::from(*s);
                            }
                        }
                    }
                    bytes.clear();
                    for m in &mix {
                        let s = (*m).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                        bytes.extend_from_slice(&s.to_le_bytes());
                    }
                    if let Some(out) = outputs.first_mut() {
                        fail(out.write(&bytes));
                    }
                }
                RecordLayout::PerSpeaker => {
                    for speaker in speakers.values_mut() {
                        let Some(index) = speaker.output else {
                            continue;
                        };
                        let frame = speaker.next();
                        bytes.clear();
                        match &frame {
                            Some(f) => f
                                .iter()
                                .for_each(|s| bytes.extend_from_slice(&s.to_le_bytes())),
                            None => bytes.resize(frame_len * 2, 0),
                        }
                        if let Some(out) = outputs.get_mut(index) {
                            fail(out.write(&bytes));
                        }
                    }
                }
            }
        };
        loop {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(due) = &mut next_tick {
                let now = Instant::now();
                if now.saturating_duration_since(*due) > MAX_CATCH_UP {
                    *due = now;
                }
                while Instant::now() >= *due {
                    tick(&mut speakers, &mut outputs, &mut first_error);
                    *due += TICK;
                }
            }
            let deadline = next_tick.unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
            let frame = match self.receiver.frames().recv_deadline(deadline) {
                Ok(frame) => frame,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if frame.samples.len() != frame_len {
                continue;
            }
            if next_tick.is_none() {
                next_tick = Some(Instant::now() + TICK);
            }
            let speaker = speakers.entry(frame.ssrc).or_default();
            if self.config.layout == RecordLayout::PerSpeaker && speaker.output.is_none() {
                // Started once; a speaker whose output failed to start stays without one.
                speaker.output = Some(usize::MAX);
                let target = self.config.target(Some(frame.ssrc));
                match Output::start(&self.ffmpeg, target, Some(frame.ssrc), channels) {
                    Ok(o) => {
                        lock(&self.killers).push(o.process.killer());
                        speaker.output = Some(outputs.len());
                        outputs.push(o);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            speaker.queue.push_back(frame.samples);
            if speaker.queue.len() > MAX_QUEUED_FRAMES {
                speaker.queue.pop_front();
                dropped += 1;
            }
        }
        // What was received before the stop is written (no waiting).
        while let Some(frame) = self.receiver.try_recv() {
            if let Some(speaker) = speakers.get_mut(&frame.ssrc)
                && frame.samples.len() == frame_len
            {
                speaker.queue.push_back(frame.samples);
            }
        }
        if next_tick.is_some() {
            for speaker in speakers.values_mut() {
                // Whatever is queued counts, even below the priming threshold.
                speaker.primed = true;
            }
            let mut guard = 0;
            while speakers.values().any(|s| !s.queue.is_empty()) && guard < MAX_QUEUED_FRAMES * 2 {
                tick(&mut speakers, &mut outputs, &mut first_error);
                guard += 1;
            }
        }
        let mut summary = RecordingSummary {
            outputs: Vec::with_capacity(outputs.len()),
            speakers: speakers.len(),
            frames_dropped: dropped,
        };
        for output in outputs {
            let (recorded, result) = output.close();
            summary.outputs.push(recorded);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_speaker_targets_get_the_ssrc() {
        let pattern = RecordConfig::file("/rec/{ssrc}/talk.flac").per_speaker();
        assert_eq!(
            pattern.target(Some(42)),
            RecordOutput::File("/rec/42/talk.flac".into())
        );
        assert_eq!(pattern.target(None), pattern.output().clone());
        let plain = RecordConfig::file("/rec/talk.mp3").per_speaker();
        assert_eq!(
            plain.target(Some(7)),
            RecordOutput::File("/rec/talk-7.mp3".into())
        );
        let shell = RecordConfig::shell("ffmpeg -i pipe:0 /rec/{ssrc}.wav").per_speaker();
        assert_eq!(
            shell.target(Some(9)),
            RecordOutput::Shell("ffmpeg -i pipe:0 /rec/9.wav".into())
        );
    }

    #[test]
    fn the_extension_chooses_the_format() {
        for (name, codec) in [
            ("a.mp3", "libmp3lame"),
            ("a.FLAC", "flac"),
            ("a.wav", "pcm_s16le"),
            ("a.ogg", "libopus"),
            ("a.opus", "libopus"),
            ("a.m4a", "aac"),
        ] {
            let args = format_args(Path::new(name)).unwrap();
            assert_eq!(args.get(1), Some(&codec), "{name}");
        }
        for bad in ["a.txt", "noext"] {
            assert!(matches!(
                format_args(Path::new(bad)),
                Err(SourceError::InvalidArgument { .. })
            ));
        }
        assert!(
            RecordConfig::file("a.mp3")
                .max_speakers(0)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn a_speaker_is_used_once_primed() {
        let mut s = Speaker::default();
        s.queue.push_back(vec![1]);
        assert_eq!(s.next(), None, "one frame is not enough to start");
        s.queue.push_back(vec![2]);
        assert_eq!(s.next(), Some(vec![1]));
        assert_eq!(s.next(), Some(vec![2]));
        assert_eq!(s.next(), None);
        s.queue.push_back(vec![3]);
        assert_eq!(s.next(), Some(vec![3]), "primed once, used at once");
    }
}
