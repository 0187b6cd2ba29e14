//! RTMP push: a [`MediaSource`]'s input sent to an `rtmp://` URL by one ffmpeg (gotgcall's
//! `StartRTMP`; Telegram's RTMP live streams take their stream this way).
//!
//! ffmpeg reads the input at its native rate (`-re`) and writes FLV: AAC audio, and, when the
//! input has a video track (a cover picture of an mp3 does not count), H.264 video made by
//! libx264 with `-preset veryfast -tune zerolatency`. A shell command's raw PCM goes through a
//! pipe into that ffmpeg. No call or engine is involved: [`RtmpPush::start`] needs only the
//! [`Ffmpeg`] ([`Engine::start_rtmp`] uses the engine's).
//!
//! A supervisor thread owns the process(es) for their whole life (the death signal of
//! [`crate::ffmpeg`] follows it), so neither a dropped [`RtmpPush`] nor an exiting process
//! leaves an ffmpeg behind. The push ends when the input ends (`Ok`), when ffmpeg fails (a
//! [`SourceError::Decoder`] with the tail of its standard error: an unreachable server, a
//! refused stream key, an unreadable input), or when [`RtmpPush::stop`] is called (`Ok`).
//!
//! Pause is `SIGSTOP` of the process group and resume `SIGCONT`: nothing is sent meanwhile.
//! Note what ffmpeg does after a resume: `-re` paces against the wall clock since the start,
//! so the paused time is sent in a burst until the push catches up; and an RTMP server may
//! close a connection that stays silent too long.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use ringcast_core::SourceError;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ffmpeg::{Ffmpeg, Killer, Pipes, Process, shell_command, shell_program};
use crate::play::{MediaInput, MediaSource, input_args};

/// AAC bitrate of the pushed audio.
pub const RTMP_AUDIO_BITRATE: &str = "128k";

/// Sample rate of the pushed audio (FLV's native AAC rate).
pub const RTMP_AUDIO_RATE_HZ: u32 = 44_100;

/// A running push of one input to an RTMP URL. Dropping it stops the push.
#[derive(Debug)]
pub struct RtmpPush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The process groups running now (ffmpeg, and the shell command feeding it).
    killers: Vec<Killer>,
    stopped: bool,
    paused: bool,
    end: Option<Result<(), SourceError>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    fn finish(&self, result: Result<(), SourceError>) {
        let mut state = self.lock();
        state.killers.clear();
        state.end = Some(result);
        self.changed.notify_all();
    }
}

/// Whether the input has a video track worth sending (not an attached cover picture).
fn has_video(ffmpeg: &Ffmpeg, source: &MediaSource) -> Result<bool, SourceError> {
    let mut cmd = std::process::Command::new(ffmpeg.ffprobe());
    cmd.args([
        "-v",
        "error",
        "-select_streams",
        "v",
        "-show_entries",
        "stream=codec_name:stream_disposition=attached_pic",
        "-of",
        "csv=p=0",
    ]);
    cmd.args(input_args(source, false));
    let mut probe = Process::spawn(cmd, "ffprobe".to_owned(), Pipes::Stdout, Some(ffmpeg))?;
    let mut text = String::new();
    if let Some(mut stdout) = probe.take_stdout() {
        let _ = stdout.read_to_string(&mut text);
    }
    probe.finish(false)?;
    // One line per video stream: "h264,0"; a cover picture is "mjpeg,1".
    Ok(text
        .lines()
        .any(|l| l.split(',').nth(1).is_some_and(|pic| pic.trim() == "0")))
}

/// The ffmpeg command that pushes `source` (a shell command's PCM arrives on its stdin).
fn push_command(
    ffmpeg: &Ffmpeg,
    source: &MediaSource,
    url: &str,
    video: bool,
) -> std::process::Command {
    let mut cmd = ffmpeg.command();
    cmd.arg("-re");
    match source.input() {
        MediaInput::Shell {
            sample_rate,
            channels,
            ..
        } => {
            cmd.args(["-f", "s16le", "-ar"]);
            cmd.arg(sample_rate.to_string());
            cmd.arg("-ac");
            cmd.arg(channels.to_string());
            cmd.args(["-i", "pipe:0"]);
        }
        _ => {
            cmd.args(input_args(source, true));
        }
    }
    if video {
        cmd.args([
            "-map",
            "0:v:0",
            "-map",
            "0:a:0?",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
        ]);
    } else {
        cmd.args(["-map", "0:a:0", "-vn"]);
    }
    cmd.args([
        "-sn",
        "-dn",
        "-c:a",
        "aac",
        "-b:a",
        RTMP_AUDIO_BITRATE,
        "-ar",
    ]);
    cmd.arg(RTMP_AUDIO_RATE_HZ.to_string());
    cmd.args(["-ac", "2", "-f", "flv", url]);
    cmd
}

impl RtmpPush {
    /// Starts pushing `source`'s input to `url` (`rtmp://` or `rtmps://`, stream key included)
    /// with `ffmpeg`. Returns once the process runs; how the push ends is told by
    /// [`RtmpPush::wait`] / [`RtmpPush::try_end`].
    ///
    /// A file or URL is probed first (for a video track), on the calling thread: an input
    /// that cannot be opened fails here with ffprobe's words. The source's seek applies; its
    /// play mode, loop, channels and bitrate do not (the push is AAC, stereo).
    ///
    /// Errors: [`SourceError::InvalidArgument`] for a URL that is not RTMP or a bad shell
    /// command, [`SourceError::FfmpegNotFound`], [`SourceError::Decoder`].
    pub fn start(
        ffmpeg: &Ffmpeg,
        source: MediaSource,
        url: impl Into<String>,
    ) -> Result<Self, SourceError> {
        let url = url.into();
        let invalid = |reason: String| SourceError::InvalidArgument { reason };
        if !(url.starts_with("rtmp://") || url.starts_with("rtmps://")) {
            return Err(invalid(format!("not an rtmp:// or rtmps:// url: {url:?}")));
        }
        let video = match source.input() {
            MediaInput::Shell {
                command,
                sample_rate,
                channels,
            } => {
                if command.trim().is_empty() {
                    return Err(invalid("empty shell command".to_owned()));
                }
                if *sample_rate == 0 || !(1..=2).contains(channels) {
                    return Err(invalid(format!(
                        "shell PCM must have a rate and 1 or 2 channels, got {sample_rate} Hz, {channels} channels"
                    )));
                }
                false
            }
            _ => has_video(ffmpeg, &source)?,
        };
        let shared = Arc::new(Shared::default());
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let thread_shared = shared.clone();
        let ffmpeg = ffmpeg.clone();
        let thread = std::thread::Builder::new()
            .name("ringcast-rtmp".into())
            .spawn(move || supervise(&ffmpeg, &source, &url, video, &thread_shared, &started_tx))
            .map_err(|e| SourceError::Decoder {
                program: "ringcast-rtmp".to_owned(),
                reason: format!("cannot start the supervisor thread: {e}"),
                stderr: String::new(),
            })?;
        let started = started_rx.recv().unwrap_or_else(|_| {
            Err(SourceError::Decoder {
                program: "ringcast-rtmp".to_owned(),
                reason: "the supervisor thread ended before starting ffmpeg".to_owned(),
                stderr: String::new(),
            })
        });
        let push = Self {
            shared,
            thread: Some(thread),
        };
        started.map(|()| push)
    }

    /// Stops sending (`SIGSTOP` of ffmpeg and of the shell command feeding it).
    pub fn pause(&self) {
        let mut state = self.shared.lock();
        state.paused = true;
        for k in &state.killers {
            k.signal(libc::SIGSTOP);
        }
    }

    /// Sends again after [`RtmpPush::pause`] (`SIGCONT`).
    pub fn resume(&self) {
        let mut state = self.shared.lock();
        state.paused = false;
        for k in &state.killers {
            k.signal(libc::SIGCONT);
        }
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.shared.lock().paused
    }

    /// Stops the push (kills ffmpeg) and waits for the supervisor; the end is `Ok` unless the
    /// push had already failed. Returns that end.
    pub fn stop(&mut self) -> Result<(), SourceError> {
        {
            let mut state = self.shared.lock();
            state.stopped = true;
            for k in &state.killers {
                k.kill();
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.lock().end.clone().unwrap_or(Ok(()))
    }

    /// True once the push has ended (input done, failure, or stop).
    pub fn is_finished(&self) -> bool {
        self.shared.lock().end.is_some()
    }

    /// How the push ended, if it has: `Ok` at the end of the input (or after a stop), or the
    /// typed error.
    pub fn try_end(&self) -> Option<Result<(), SourceError>> {
        self.shared.lock().end.clone()
    }

    /// Waits up to `timeout` for the push to end; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<(), SourceError>> {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.end.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        state.end.clone()
    }

    /// Waits for the push to end (the input's end, for a file) and returns how.
    pub fn wait(&self) -> Result<(), SourceError> {
        let state = self.shared.lock();
        let state = self
            .shared
            .changed
            .wait_while(state, |s| s.end.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        state.end.clone().unwrap_or(Ok(()))
    }
}

impl Drop for RtmpPush {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The supervisor thread: spawns the process(es), reports the start, waits for the end.
fn supervise(
    ffmpeg: &Ffmpeg,
    source: &MediaSource,
    url: &str,
    video: bool,
    shared: &Shared,
    started: &crossbeam_channel::Sender<Result<(), SourceError>>,
) {
    let spawned = spawn_all(ffmpeg, source, url, video, shared);
    let (mut push, feeder) = match spawned {
        Ok(p) => {
            let _ = started.send(Ok(()));
            p
        }
        Err(e) => {
            shared.finish(Err(e.clone()));
            let _ = started.send(Err(e));
            return;
        }
    };
    let pushed = push.finish(false);
    let stopped = shared.lock().stopped;
    let result = match feeder {
        None => pushed,
        Some(Feeder {
            mut process,
            copier,
        }) => {
            let fed = if pushed.is_err() || stopped {
                process.kill();
                let _ = process.finish(true);
                Ok(())
            } else {
                // ffmpeg saw the end of the PCM: the command closed its output.
                process.finish(false)
            };
            let _ = copier.join();
            pushed.and(fed)
        }
    };
    // What a stop killed is not a failure.
    let stopped = stopped || shared.lock().stopped;
    shared.finish(if stopped { Ok(()) } else { result });
}

/// A shell command feeding ffmpeg's stdin through a copy thread.
struct Feeder {
    process: Process,
    copier: JoinHandle<()>,
}

fn spawn_all(
    ffmpeg: &Ffmpeg,
    source: &MediaSource,
    url: &str,
    video: bool,
    shared: &Shared,
) -> Result<(Process, Option<Feeder>), SourceError> {
    let cmd = push_command(ffmpeg, source, url, video);
    match source.input() {
        MediaInput::Shell { command, .. } => {
            let mut feeder = Process::spawn(
                shell_command(command),
                shell_program(command),
                Pipes::Stdout,
                None,
            )?;
            let mut push = Process::spawn(cmd, ffmpeg.program(), Pipes::Stdin, Some(ffmpeg))?;
            register(shared, &[&push, &feeder]);
            let (Some(mut from), Some(mut to)) = (feeder.take_stdout(), push.take_stdin()) else {
                return Err(push.failure("no pipe to feed ffmpeg".to_owned()));
            };
            let copier = std::thread::Builder::new()
                .name("ringcast-rtmp-feed".into())
                .spawn(move || {
                    // Ends at the command's end of output or ffmpeg's exit (broken pipe);
                    // dropping `to` is ffmpeg's end of input.
                    let _ = std::io::copy(&mut from, &mut to);
                })
                .map_err(|e| push.failure(format!("cannot start the feed thread: {e}")))?;
            Ok((
                push,
                Some(Feeder {
                    process: feeder,
                    copier,
                }),
            ))
        }
        _ => {
            let push = Process::spawn(cmd, ffmpeg.program(), Pipes::None, Some(ffmpeg))?;
            register(shared, &[&push]);
            Ok((push, None))
        }
    }
}

/// Makes the processes reachable by pause/stop; a stop that came first kills them at once.
fn register(shared: &Shared, processes: &[&Process]) {
    let mut state = shared.lock();
    for p in processes {
        let k = p.killer();
        if state.stopped {
            k.kill();
        } else if state.paused {
            k.signal(libc::SIGSTOP);
        }
        state.killers.push(k);
    }
}

impl Engine {
    /// Pushes `source` to the RTMP `url` with the engine's ffmpeg: [`RtmpPush::start`]
    /// (Telegram's RTMP live streams; gotgcall's `StartRTMP`). Independent of the engine's
    /// calls; the push lives as long as the returned handle.
    pub fn start_rtmp(
        &self,
        source: MediaSource,
        url: impl Into<String>,
    ) -> Result<RtmpPush, EngineError> {
        Ok(RtmpPush::start(self.ffmpeg(), source, url)?)
    }
}
