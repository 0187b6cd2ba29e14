//! One decode: ffmpeg (or a shell command) on its own thread, its output turned into Opus
//! frames and handed to a [`FrameOut`].

use std::ffi::OsString;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opus::{Application, Bitrate, Channels, Encoder};
use ringcast_core::media::resample::Resampler;
use ringcast_core::media::track::OPUS_SILENCE_FRAME;
use ringcast_core::media::{OggOpusStream, SAMPLES_PER_FRAME, audio_level_dbov};
use ringcast_core::{OpusFrame, SourceError};

use super::{Counters, MediaInput, MediaSource};
use crate::ffmpeg::{Ffmpeg, Killer, Pipes, Process, shell_command, shell_program};

/// Bytes read from a decoder's pipe at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Longest Opus packet libopus writes for a 20 ms frame (RFC 6716 §3.2.1).
const MAX_PACKET_BYTES: usize = 1275;

/// ffmpeg's read/write timeout for network inputs, in microseconds (`-rw_timeout`).
const NETWORK_TIMEOUT_US: &str = "15000000";

/// What to decode and with which ffmpeg.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) source: MediaSource,
    pub(crate) ffmpeg: Ffmpeg,
}

/// Where a decode's frames go: the live queue or a cache track.
pub(crate) trait FrameOut: Send + Sync + 'static {
    /// Hands over a frame, waiting while the consumer is full or far enough ahead; false when
    /// nobody listens any more (the decode then stops).
    fn push(&self, frame: OpusFrame) -> bool;

    /// The decode ended, cleanly or not (called before those waiting on it learn it).
    fn ended(&self, _result: &Result<(), SourceError>) {}
}

/// A decode's progress, shared by its thread and those that play it.
#[derive(Debug, Default)]
pub(crate) struct Status {
    state: Mutex<StatusState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct StatusState {
    started: bool,
    end: Option<Result<(), SourceError>>,
    killer: Option<Killer>,
    cancelled: bool,
}

impl Status {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusState> {
        crate::sync::lock(&self.state)
    }

    /// Waits until the first frame was handed over or the decode ended; a decode that shows
    /// neither within `timeout` is cancelled and reported.
    pub(crate) fn wait_started(&self, timeout: Duration, program: &str) -> Result<(), SourceError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.started && state.end.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                self.cancel();
                return Err(SourceError::Decoder {
                    program: program.to_owned(),
                    reason: format!("no frame within {} s", timeout.as_secs()),
                    stderr: String::new(),
                });
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if state.started {
            return Ok(());
        }
        state.end.clone().unwrap_or(Ok(()))
    }

    /// How the decode ended, once it has.
    pub(crate) fn end(&self) -> Option<Result<(), SourceError>> {
        self.lock().end.clone()
    }

    /// Stops the decode: kills its process; it will not restart.
    pub(crate) fn cancel(&self) {
        let mut state = self.lock();
        state.cancelled = true;
        if let Some(killer) = &state.killer {
            killer.kill();
        }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// The process now running, or none; a cancel that came first kills it at once.
    pub(crate) fn set_killer(&self, killer: Option<Killer>) {
        let mut state = self.lock();
        if state.cancelled
            && let Some(k) = &killer
        {
            k.kill();
        }
        state.killer = killer;
    }

    pub(crate) fn mark_started(&self) {
        let mut state = self.lock();
        if !state.started {
            state.started = true;
            self.changed.notify_all();
        }
    }

    /// The decode could not start: those waiting for it get `error`.
    pub(crate) fn fail(&self, error: SourceError) {
        self.finish(Err(error));
    }

    /// The decode ended with `result`: those waiting on it or reading learn it.
    pub(crate) fn finish(&self, result: Result<(), SourceError>) {
        let mut state = self.lock();
        state.end = Some(result);
        state.killer = None;
        self.changed.notify_all();
    }
}

/// A 20 ms silent frame, sent when a call finds no decoded frame ready.
pub(crate) fn silence_frame() -> OpusFrame {
    OpusFrame {
        data: Arc::from(&OPUS_SILENCE_FRAME[..]),
        duration_samples: SAMPLES_PER_FRAME,
        audio_level: 127,
        voice_activity: false,
    }
}

/// The program name in errors about this spec's decoder.
pub(crate) fn program(spec: &Spec) -> String {
    match &spec.source.input {
        MediaInput::Shell { command, .. } => shell_program(command),
        _ => spec.ffmpeg.program(),
    }
}

/// Starts decoding `spec` into `out` on a thread of its own. Probes a file or URL first (on
/// the calling thread: an input ffmpeg cannot open fails here, with ffprobe's words).
pub(crate) fn start(
    spec: Spec,
    out: Arc<dyn FrameOut>,
    status: Arc<Status>,
    counters: Arc<Counters>,
) -> Result<(), SourceError> {
    let passthrough = match &spec.source.input {
        MediaInput::Shell { .. } => false,
        _ => {
            Counters::add(&counters.probes);
            probe_codec(&spec)? == "opus"
        }
    };
    if passthrough {
        Counters::add(&counters.passthrough_decodes);
    }
    let thread_status = status;
    std::thread::Builder::new()
        .name("ringcast-decode".into())
        .spawn(move || {
            let result = run(&spec, passthrough, out.as_ref(), &thread_status, &counters);
            if result.is_err() {
                Counters::add(&counters.decode_errors);
            }
            out.ended(&result);
            thread_status.finish(result);
        })
        .map_err(|e| SourceError::Decoder {
            program: "ringcast-decode".to_owned(),
            reason: format!("cannot start the decode thread: {e}"),
            stderr: String::new(),
        })?;
    Ok(())
}

/// The decode thread: runs the process (again, if looped live) until the input ends, fails,
/// or nobody listens.
fn run(
    spec: &Spec,
    passthrough: bool,
    out: &dyn FrameOut,
    status: &Status,
    counters: &Counters,
) -> Result<(), SourceError> {
    let mut encoder = None;
    loop {
        let produced = decode_once(spec, passthrough, out, status, counters, &mut encoder)?;
        // A live input that loops starts over (on demand, the readers loop over the cache).
        let again = spec.source.looped
            && spec.source.mode == super::PlayMode::Live
            && produced > 0
            && !status.cancelled();
        if !again {
            return Ok(());
        }
    }
}

/// One run of the process. Returns the frames handed over.
fn decode_once(
    spec: &Spec,
    passthrough: bool,
    out: &dyn FrameOut,
    status: &Status,
    counters: &Counters,
    encoder: &mut Option<FrameEncoder>,
) -> Result<u64, SourceError> {
    let (cmd, program, ffmpeg) = match &spec.source.input {
        MediaInput::Shell { command, .. } => (shell_command(command), shell_program(command), None),
        _ => {
            let mut cmd = spec.ffmpeg.command();
            cmd.args(input_args(&spec.source, true));
            cmd.args(["-vn", "-sn", "-dn"]);
            if passthrough {
                cmd.args(["-c:a", "copy", "-f", "ogg", "pipe:1"]);
            } else {
                cmd.args(["-f", "s16le", "-ar", "48000", "-ac"]);
                cmd.arg(spec.source.channels.to_string());
                cmd.arg("pipe:1");
            }
            (cmd, spec.ffmpeg.program(), Some(&spec.ffmpeg))
        }
    };
    let mut process = Process::spawn(cmd, program, Pipes::Stdout, ffmpeg)?;
    Counters::add(&counters.processes_spawned);
    counters.processes_running.fetch_add(1, Ordering::Relaxed);
    let _running = RunningGuard(counters);
    status.set_killer(Some(process.killer()));
    let stdout = process.take_stdout();
    let mut frames = 0_u64;
    let outcome = match stdout {
        None => Err(process.failure("no standard output".to_owned())),
        Some(stdout) if passthrough => pump_ogg(stdout, out, status, &mut frames),
        Some(stdout) => {
            let enc = match encoder {
                Some(enc) => enc,
                None => encoder.insert(FrameEncoder::new(&spec.source, counters)?),
            };
            enc.reset_input(&spec.source)?;
            pump_pcm(stdout, enc, out, status, &mut frames)
        }
    };
    status.set_killer(None);
    let stopped = matches!(outcome, Ok(Pump::Stopped)) || status.cancelled();
    if stopped {
        process.kill();
    }
    let exit = process.finish(stopped);
    match outcome {
        Err(e) => Err(e),
        Ok(Pump::Stopped) => Ok(frames),
        Ok(Pump::Eof) => exit.map(|()| frames),
    }
}

/// Keeps [`Counters::processes_running`] right whichever way a run ends.
struct RunningGuard<'a>(&'a Counters);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.processes_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a pump loop ended.
enum Pump {
    /// The process closed its output.
    Eof,
    /// Nobody listens any more.
    Stopped,
}

/// Reads Ogg/Opus from `stdout` and hands its packets over unchanged.
fn pump_ogg(
    mut stdout: impl Read,
    out: &dyn FrameOut,
    status: &Status,
    frames: &mut u64,
) -> Result<Pump, SourceError> {
    let mut ogg = OggOpusStream::new();
    let mut buf = vec![0_u8; READ_CHUNK];
    while let Some(n) = read_some(&mut stdout, &mut buf) {
        ogg.push(buf.get(..n).unwrap_or_default())?;
        while let Some(frame) = ogg.pop() {
            if !out.push(frame) {
                return Ok(Pump::Stopped);
            }
            *frames += 1;
            status.mark_started();
        }
    }
    if status.cancelled() {
        return Ok(Pump::Stopped);
    }
    if *frames > 0 || ogg.pending() > 0 {
        ogg.finish()?;
    }
    Ok(Pump::Eof)
}

/// The next read from a decoder's pipe: `None` at its end (or on a read error, which ends it
/// the same way; the process's exit status says what happened).
fn read_some(pipe: &mut impl Read, buf: &mut [u8]) -> Option<usize> {
    loop {
        match pipe.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Reads s16le PCM from `stdout`, encodes 20 ms frames and hands them over.
fn pump_pcm(
    mut stdout: impl Read,
    encoder: &mut FrameEncoder,
    out: &dyn FrameOut,
    status: &Status,
    frames: &mut u64,
) -> Result<Pump, SourceError> {
    let mut buf = vec![0_u8; READ_CHUNK];
    // A byte left over when a read ends mid-sample.
    let mut odd: Option<u8> = None;
    let mut samples: Vec<i16> = Vec::with_capacity(READ_CHUNK / 2 + 1);
    while let Some(n) = read_some(&mut stdout, &mut buf) {
        samples.clear();
        let mut bytes = buf.get(..n).unwrap_or_default();
        if let Some(low) = odd.take()
            && let Some((&high, rest)) = bytes.split_first()
        {
            samples.push(i16::from_le_bytes([low, high]));
            bytes = rest;
        }
        let mut pairs = bytes.chunks_exact(2);
        samples.extend(pairs.by_ref().map(|p| i16::from_le_bytes([p[0], p[1]])));
        odd = pairs.remainder().first().copied();
        if !encoder.feed(&samples, out, status, frames)? {
            return Ok(Pump::Stopped);
        }
    }
    if status.cancelled() {
        return Ok(Pump::Stopped);
    }
    if !encoder.finish(out, status, frames)? {
        return Ok(Pump::Stopped);
    }
    Ok(Pump::Eof)
}

/// PCM in, 20 ms Opus frames out: a resampler (for a shell command's rate and channels), a
/// frame buffer and one libopus encoder.
struct FrameEncoder {
    encoder: Encoder,
    channels: usize,
    resampler: Resampler,
    /// 48 kHz samples not encoded yet.
    pending: Vec<i16>,
    resampled: Vec<i16>,
    packet: Vec<u8>,
}

impl FrameEncoder {
    fn new(source: &MediaSource, counters: &Counters) -> Result<Self, SourceError> {
        let opus = |e: opus::Error| SourceError::Opus {
            reason: e.to_string(),
        };
        let channels = if source.channels == 1 {
            Channels::Mono
        } else {
            Channels::Stereo
        };
        let mut encoder = Encoder::new(48_000, channels, Application::Audio).map_err(opus)?;
        encoder
            .set_bitrate(Bitrate::Bits(source.bitrate_bps))
            .map_err(opus)?;
        Counters::add(&counters.encoders_created);
        Ok(Self {
            encoder,
            channels: usize::from(source.channels),
            resampler: Self::resampler(source)?,
            pending: Vec::new(),
            resampled: Vec::new(),
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// What the input delivers, converted to 48 kHz and the stream's channels.
    fn resampler(source: &MediaSource) -> Result<Resampler, SourceError> {
        match &source.input {
            MediaInput::Shell {
                sample_rate,
                channels,
                ..
            } => Resampler::new(*sample_rate, *channels, source.channels),
            // ffmpeg is asked for 48 kHz in the stream's channels.
            _ => Resampler::new(48_000, source.channels, source.channels),
        }
    }

    /// A new run of the process starts (a looped live input): fresh resampler state.
    fn reset_input(&mut self, source: &MediaSource) -> Result<(), SourceError> {
        self.resampler = Self::resampler(source)?;
        self.pending.clear();
        Ok(())
    }

    fn frame_len(&self) -> usize {
        SAMPLES_PER_FRAME as usize * self.channels
    }

    fn feed(
        &mut self,
        input: &[i16],
        out: &dyn FrameOut,
        status: &Status,
        frames: &mut u64,
    ) -> Result<bool, SourceError> {
        self.resampled.clear();
        self.resampler.process(input, &mut self.resampled)?;
        self.pending.extend_from_slice(&self.resampled);
        self.drain(out, status, frames)
    }

    /// The input ended: what the resampler holds, and a last frame padded with silence.
    fn finish(
        &mut self,
        out: &dyn FrameOut,
        status: &Status,
        frames: &mut u64,
    ) -> Result<bool, SourceError> {
        self.resampled.clear();
        self.resampler.flush(&mut self.resampled)?;
        self.pending.extend_from_slice(&self.resampled);
        let rem = self.pending.len() % self.frame_len();
        if rem != 0 {
            let pad = self.frame_len() - rem;
            self.pending.extend(std::iter::repeat_n(0, pad));
        }
        self.drain(out, status, frames)
    }

    fn drain(
        &mut self,
        out: &dyn FrameOut,
        status: &Status,
        frames: &mut u64,
    ) -> Result<bool, SourceError> {
        let len = self.frame_len();
        let mut used = 0;
        while self.pending.len() - used >= len {
            let pcm = self.pending.get(used..used + len).unwrap_or_default();
            used += len;
            let n = self
                .encoder
                .encode(pcm, &mut self.packet)
                .map_err(|e| SourceError::Opus {
                    reason: e.to_string(),
                })?;
            let level = audio_level_dbov(pcm);
            let frame = OpusFrame {
                data: Arc::from(self.packet.get(..n).unwrap_or_default()),
                duration_samples: SAMPLES_PER_FRAME,
                audio_level: level,
                voice_activity: level < 127,
            };
            if !out.push(frame) {
                self.pending.drain(..used);
                return Ok(false);
            }
            *frames += 1;
            status.mark_started();
        }
        self.pending.drain(..used);
        Ok(true)
    }
}

/// ffmpeg/ffprobe arguments that open the input: network options for http(s), request
/// headers, the seek (decode only) and `-i`.
pub(crate) fn input_args(source: &MediaSource, with_seek: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    match &source.input {
        MediaInput::File(path) => {
            if with_seek && !source.seek.is_zero() {
                args.push("-ss".into());
                args.push(format!("{:.3}", source.seek.as_secs_f64()).into());
            }
            args.push("-i".into());
            args.push(path.as_os_str().to_owned());
        }
        MediaInput::Url { url, headers } => {
            if url.starts_with("http://") || url.starts_with("https://") {
                for a in [
                    "-reconnect",
                    "1",
                    "-reconnect_streamed",
                    "1",
                    "-reconnect_delay_max",
                    "2",
                ] {
                    args.push(a.into());
                }
                if !headers.is_empty() {
                    let joined: String = headers
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}\r\n"))
                        .collect();
                    args.push("-headers".into());
                    args.push(joined.into());
                }
            }
            args.push("-rw_timeout".into());
            args.push(NETWORK_TIMEOUT_US.into());
            if with_seek && !source.seek.is_zero() {
                args.push("-ss".into());
                args.push(format!("{:.3}", source.seek.as_secs_f64()).into());
            }
            args.push("-i".into());
            args.push(url.into());
        }
        MediaInput::Shell { .. } => {}
    }
    args
}

/// The codec of the input's first audio stream, by ffprobe (next to the ffmpeg binary).
fn probe_codec(spec: &Spec) -> Result<String, SourceError> {
    let ffprobe = spec.ffmpeg.ffprobe();
    let mut cmd = std::process::Command::new(&ffprobe);
    cmd.args([
        "-v",
        "error",
        "-select_streams",
        "a:0",
        "-show_entries",
        "stream=codec_name",
        "-of",
        "csv=p=0",
    ]);
    cmd.args(input_args(&spec.source, false));
    let prober = Ffmpeg::new(&ffprobe);
    let mut process = Process::spawn(cmd, "ffprobe".to_owned(), Pipes::Stdout, Some(&prober))?;
    let mut text = String::new();
    if let Some(mut stdout) = process.take_stdout() {
        let _ = stdout.read_to_string(&mut text);
    }
    process.finish(false)?;
    let codec = text.lines().next().unwrap_or_default().trim().to_owned();
    if codec.is_empty() {
        return Err(process.failure("the input has no audio stream".to_owned()));
    }
    Ok(codec)
}
