//! Video from files, URLs and commands: decoded, scaled and encoded by ffmpeg once per
//! distinct input, shared by every call that shows it.
//!
//! A shell command ([`MediaSource::shell`]; its audio fields are unused here) writes raw
//! yuv420p frames of the [`VideoParams`]' size at its frame rate, as py-tgcalls' camera and
//! screen commands do; it is piped into the encoding ffmpeg.
//!
//! [`Engine::set_video_source`](crate::Engine::set_video_source) opens a [`MediaSource`] with
//! [`VideoParams`] (codec, size, frame rate, bitrate). One ffmpeg per distinct input (with
//! those parameters) scales and pads it to the size and encodes it with libvpx (VP8, written
//! as IVF) or libx264 (H.264, Annex B with access unit delimiters). A thread per input reads
//! ffmpeg's output and packetizes each frame once ([`VideoFrame::packetize`]); every call
//! showing the input sends the same payloads. Key frames come once per
//! [`KEYFRAME_INTERVAL`] (ffmpeg's `-g`). Nothing here runs on a shard: a call takes a frame
//! that is ready or none ([`VideoPoll::Pending`], counted), never waits. The two modes of
//! [`crate::play`]:
//!
//! - **On demand** (the default, as for audio): each call shows the input from its first
//!   frame, so a chat that starts a clip later sees it from the start, in step with its audio.
//!   The frames go into a track of the engine's video cache ([`MediaCacheConfig`], default
//!   [`MediaCacheConfig::video_default`]: the same bound and eviction rules as audio's), which
//!   later calls read from frame 0 (a key frame). ffmpeg runs as fast as its output is taken,
//!   at most [`DECODE_LEAD`] ahead of the furthest call. A track that leaves the cache keeps
//!   the frames from the key frame before its slowest call.
//! - **Live** ([`MediaSource::live`]): ffmpeg reads at the input's native rate (`-re`) into a
//!   ring of the last [`VIDEO_RING`] frames, and every call reads it from the live edge: the
//!   same picture for all.
//!
//! ffmpeg cannot be asked for a key frame while it runs. A receiver's key frame request
//! (PLI/FIR) is answered from the frames kept instead: that call's reader goes back to the
//! last key frame (at most [`KEYFRAME_INTERVAL`] old) and its track sends the frames since at
//! once (its backlog). A call that joins a live input starts the same way. The cost is a burst
//! of at most one key frame interval of video to that one receiver; the track rate-limits
//! requests.
//!
//! The last reader gone, the input's ffmpeg is killed; errors (an input ffmpeg cannot open, a
//! stream that breaks) end the video track with a typed [`SourceError`] carrying ffmpeg's
//! standard error, and the call stays connected.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use ringcast_core::SourceError;
use ringcast_core::media::video::{
    AnnexBStream, IvfStream, VIDEO_CLOCK_RATE_HZ, VideoCodec, VideoFrame, VideoPoll, VideoSource,
};

use super::cache::{TrackCache, TrackOut, TrackPoll, TrackReader};
use super::decode::{Status, input_args};
use super::{Counters, DECODE_LEAD, MediaCacheConfig, MediaInput, MediaSource, START_TIMEOUT};
use crate::ffmpeg::{Ffmpeg, Killer, Pipes, Process, shell_command, shell_program, shell_quote};
use crate::sync::lock;
use crossbeam_channel::{Sender, TrySendError};

/// Raw frames a [`VideoWriter`] queues for its encoder; more are dropped (counted).
pub const EXTERNAL_QUEUE: usize = 8;

/// Frames an input keeps for its readers: two seconds at 30 fps. A reader that falls further
/// behind jumps to the newest key frame.
pub const VIDEO_RING: usize = 60;

/// How often the encoder makes a key frame (ffmpeg's `-g`, in frames at the input's rate).
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// How a video input is encoded for the calls that show it. Part of the input's identity: two
/// calls share an encoder when source and parameters are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VideoParams {
    /// VP8 or H.264.
    pub codec: VideoCodec,
    /// Picture width (even, 16..=3840); the input is scaled and padded to it.
    pub width: u16,
    /// Picture height (even, 16..=2160).
    pub height: u16,
    /// Frames per second (1..=60).
    pub fps: u8,
    /// Target bitrate in kbit/s (50..=20,000).
    pub bitrate_kbps: u32,
}

impl Default for VideoParams {
    /// VP8, 1280x720, 30 fps, 1,500 kbit/s (what a camera track of a Telegram client sends at
    /// its top layer).
    fn default() -> Self {
        Self {
            codec: VideoCodec::Vp8,
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 1_500,
        }
    }
}

impl VideoParams {
    fn validate(&self) -> Result<(), SourceError> {
        let bad = |reason: String| Err(SourceError::InvalidArgument { reason });
        if !(16..=3840).contains(&self.width) || !(16..=2160).contains(&self.height) {
            return bad(format!("video size {}x{}", self.width, self.height));
        }
        if self.width % 2 == 1 || self.height % 2 == 1 {
            return bad(format!(
                "video size {}x{} must be even (yuv420p)",
                self.width, self.height
            ));
        }
        if !(1..=60).contains(&self.fps) {
            return bad(format!("video frame rate {} (1..=60)", self.fps));
        }
        if !(50..=20_000).contains(&self.bitrate_kbps) {
            return bad(format!(
                "video bitrate {} kbit/s (50..=20000)",
                self.bitrate_kbps
            ));
        }
        Ok(())
    }

    /// ffmpeg's output arguments: scale, pad, frame rate, the encoder and the container.
    fn output_args(&self) -> Vec<String> {
        let (w, h, fps) = (self.width, self.height, self.fps);
        let gop = (u64::from(fps) * KEYFRAME_INTERVAL.as_millis() as u64 / 1000).max(1);
        let mut args: Vec<String> = [
            "-an",
            "-sn",
            "-vf",
            &format!(
                "scale={w}:{h}:force_original_aspect_ratio=decrease,\
                 pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,fps={fps},format=yuv420p"
            ),
            "-b:v",
            &format!("{}k", self.bitrate_kbps),
            "-g",
            &gop.to_string(),
            "-keyint_min",
            &gop.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let codec: &[&str] = match self.codec {
            VideoCodec::H264 => &[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-profile:v",
                "baseline",
                "-sc_threshold",
                "0",
                "-x264-params",
                "aud=1",
                "-colorspace",
                "smpte170m",
                "-color_primaries",
                "smpte170m",
                "-color_trc",
                "smpte170m",
                "-color_range",
                "tv",
                "-bsf:v",
                "h264_mp4toannexb",
                "-f",
                "h264",
                "pipe:1",
            ],
            _ => &[
                "-c:v",
                "libvpx",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-lag-in-frames",
                "0",
                "-auto-alt-ref",
                "0",
                "-error-resilient",
                "1",
                "-f",
                "ivf",
                "pipe:1",
            ],
        };
        args.extend(codec.iter().map(|s| s.to_string()));
        args
    }
}

/// The ring of recent frames of one input.
#[derive(Debug, Default)]
struct Ring {
    frames: VecDeque<(u64, VideoFrame)>,
    /// Index the next frame will get.
    next: u64,
    /// The first frame arrived (or the decode ended).
    started: bool,
    /// The decode ended: `Ok` at the input's end, `Err` on failure.
    ended: Option<Result<(), SourceError>>,
}

/// One running input: its ring, and the handle that kills its ffmpeg.
#[derive(Debug)]
struct LiveVideo {
    codec: VideoCodec,
    ring: Mutex<Ring>,
    changed: Condvar,
    killer: Mutex<Option<Killer>>,
    counters: Arc<VideoCounters>,
}

impl Drop for LiveVideo {
    fn drop(&mut self) {
        // The last reader is gone: stop the encoder.
        if let Some(k) = lock(&self.killer).take() {
            k.kill();
        }
    }
}

/// Counters of the video hub, shared with its threads and readers.
#[derive(Debug, Default)]
pub(crate) struct VideoCounters {
    pub(crate) encoders_started: AtomicU64,
    pub(crate) encoders_running: AtomicU64,
    pub(crate) shared_plays: AtomicU64,
    pub(crate) frames_encoded: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) underruns: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) external_frames: AtomicU64,
    pub(crate) external_dropped: AtomicU64,
}

/// Counters of an engine's video encoders ([`Engine::video_stats`](crate::Engine::video_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoStats {
    /// ffmpeg encoders started (one per distinct input and parameters).
    pub encoders_started: u64,
    /// Encoders running now.
    pub encoders_running: u64,
    /// Calls that joined an encoder already running (live) or a cached track (on demand).
    pub shared_plays: u64,
    /// On-demand plays served from the video cache.
    pub cache_hits: u64,
    /// On-demand plays that started an encoder.
    pub cache_misses: u64,
    /// Bytes of frames the video cache holds.
    pub cache_bytes: u64,
    /// Tracks the video cache holds.
    pub cache_tracks: u64,
    /// Frames the encoders produced (each packetized once).
    pub frames_encoded: u64,
    /// Key frame requests answered by replaying a call's stream from the ring's last key
    /// frame.
    pub keyframe_replays: u64,
    /// Times a call found no new frame ready when one was due.
    pub underruns: u64,
    /// Encoders that ended with an error.
    pub errors: u64,
    /// Raw frames the application wrote into [`VideoWriter`]s and the encoder took.
    pub external_frames: u64,
    /// Raw frames dropped because their encoder's queue was full ([`EXTERNAL_QUEUE`]).
    pub external_dropped: u64,
}

/// A video track's name: its input and how it is encoded.
type VideoKey = (MediaSource, VideoParams);

/// An engine's video inputs.
#[derive(Debug)]
pub(crate) struct VideoHub {
    ffmpeg: Ffmpeg,
    live: Mutex<HashMap<VideoKey, Weak<LiveVideo>>>,
    /// On-demand tracks.
    cache: Arc<TrackCache<VideoKey, VideoFrame>>,
    /// The cache's own counters (hits, misses, its readers' underruns).
    cache_counters: Arc<Counters>,
    counters: Arc<VideoCounters>,
}

impl VideoHub {
    pub(crate) fn new(ffmpeg: Ffmpeg, cache: MediaCacheConfig) -> Self {
        let cache_counters = Arc::new(Counters::default());
        Self {
            ffmpeg,
            live: Mutex::new(HashMap::new()),
            cache: Arc::new(TrackCache::new(cache, cache_counters.clone())),
            cache_counters,
            counters: Arc::new(VideoCounters::default()),
        }
    }

    pub(crate) fn stats(&self) -> VideoStats {
        let (c, cc) = (&self.counters, &self.cache_counters);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (cache_bytes, cache_tracks) = self.cache.usage();
        VideoStats {
            encoders_started: get(&c.encoders_started),
            encoders_running: get(&c.encoders_running),
            shared_plays: get(&c.shared_plays) + get(&cc.shared_plays),
            cache_hits: get(&cc.cache_hits),
            cache_misses: get(&cc.cache_misses),
            cache_bytes,
            cache_tracks,
            frames_encoded: get(&c.frames_encoded),
            keyframe_replays: get(&c.replays),
            underruns: get(&c.underruns) + get(&cc.underruns),
            errors: get(&c.errors),
            external_frames: get(&c.external_frames),
            external_dropped: get(&c.external_dropped),
        }
    }

    /// A reader of `source` encoded with `params`: from the video cache (on demand) or the
    /// running encoder (live), starting an encoder if there is none, and waiting for its first
    /// frame (at most [`START_TIMEOUT`]).
    pub(crate) fn open(
        &self,
        source: MediaSource,
        params: VideoParams,
    ) -> Result<Box<dyn VideoSource>, SourceError> {
        source.validate()?;
        params.validate()?;
        if source.mode == super::PlayMode::OnDemand {
            return self.open_on_demand(source, params);
        }
        let key = (source.clone(), params);
        let live = {
            let mut map = lock(&self.live);
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(&key).and_then(Weak::upgrade) {
                Some(live) => {
                    self.counters.shared_plays.fetch_add(1, Ordering::Relaxed);
                    live
                }
                None => {
                    let live = self.start(source, params)?;
                    map.insert(key, Arc::downgrade(&live));
                    live
                }
            }
        };
        live.wait_started()?;
        // From the last key frame the ring keeps: the track sends the frames after it at once
        // (the backlog), so the call has a picture now rather than at the next key frame.
        let next = {
            let ring = lock(&live.ring);
            last_keyframe(&ring).unwrap_or(ring.next)
        };
        Ok(Box::new(LiveVideoReader { live, next }))
    }

    fn start(
        &self,
        source: MediaSource,
        params: VideoParams,
    ) -> Result<Arc<LiveVideo>, SourceError> {
        let live = LiveVideo::new(params.codec, &self.counters);
        let weak = Arc::downgrade(&live);
        let ffmpeg = self.ffmpeg.clone();
        spawn_encoder(
            &self.counters,
            move || encode(&ffmpeg, &source, params, &weak, true),
            LiveVideo::ended_with(Arc::downgrade(&live)),
        )?;
        Ok(live)
    }
}

impl VideoHub {
    /// A reader of the on-demand track of `source` and `params`, from its first frame.
    fn open_on_demand(
        &self,
        source: MediaSource,
        params: VideoParams,
    ) -> Result<Box<dyn VideoSource>, SourceError> {
        let program = match &source.input {
            MediaInput::Shell { command, .. } => shell_program(command),
            _ => self.ffmpeg.program(),
        };
        let lead = DECODE_LEAD.as_secs() * u64::from(params.fps);
        let (ffmpeg, counters) = (self.ffmpeg.clone(), self.counters.clone());
        let looped = source.looped;
        let reader = self.cache.open(
            (source.clone(), params),
            looped,
            lead,
            &program,
            move |out, status| {
                let sink = DemandOut {
                    out: out.clone(),
                    status: status.clone(),
                    counters: counters.clone(),
                    frames: AtomicU64::new(0),
                };
                spawn_encoder(
                    &counters,
                    move || encode(&ffmpeg, &source, params, &sink, false),
                    move |result| {
                        out.decode_ended(&result);
                        status.finish(result);
                    },
                )
            },
        )?;
        Ok(Box::new(DemandVideoReader {
            reader,
            counters: self.counters.clone(),
        }))
    }
}

/// Runs `encode` on a thread of its own, counted in `counters`; `done` gets its result.
fn spawn_encoder(
    counters: &Arc<VideoCounters>,
    encode: impl FnOnce() -> Result<(), SourceError> + Send + 'static,
    done: impl FnOnce(Result<(), SourceError>) + Send + 'static,
) -> Result<(), SourceError> {
    let counters = counters.clone();
    counters.encoders_started.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("ringcast-video".into())
        .spawn(move || {
            counters.encoders_running.fetch_add(1, Ordering::Relaxed);
            let result = encode();
            counters.encoders_running.fetch_sub(1, Ordering::Relaxed);
            if result.is_err() {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            done(result);
        })
        .map(|_| ())
        .map_err(|e| SourceError::Io {
            reason: format!("starting the video thread: {e}"),
        })
}

/// Where an encoder's frames go: a live ring or an on-demand track.
trait VideoOut {
    /// Takes a frame (waiting while an on-demand track is far enough ahead); false once
    /// nobody shows the input (the encoder then stops).
    fn push(&self, frame: VideoFrame) -> bool;

    /// The encoder's process started; false if nobody shows the input any more.
    fn running(&self, killer: Killer) -> bool;

    /// No frame came yet (and somebody still waits for one).
    fn no_frame(&self) -> bool;
}

impl VideoOut for Weak<LiveVideo> {
    fn push(&self, frame: VideoFrame) -> bool {
        match self.upgrade() {
            Some(live) => {
                live.push(frame);
                true
            }
            None => false,
        }
    }

    fn running(&self, killer: Killer) -> bool {
        match self.upgrade() {
            Some(live) => {
                *lock(&live.killer) = Some(killer);
                true
            }
            None => false,
        }
    }

    fn no_frame(&self) -> bool {
        self.upgrade().is_some_and(|l| lock(&l.ring).next == 0)
    }
}

/// The encoder's side of an on-demand track.
struct DemandOut {
    out: Arc<TrackOut<VideoKey, VideoFrame>>,
    status: Arc<Status>,
    counters: Arc<VideoCounters>,
    frames: AtomicU64,
}

impl VideoOut for DemandOut {
    fn push(&self, frame: VideoFrame) -> bool {
        if !self.out.push_frame(frame) {
            return false;
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.counters.frames_encoded.fetch_add(1, Ordering::Relaxed);
        self.status.mark_started();
        true
    }

    fn running(&self, killer: Killer) -> bool {
        self.status.set_killer(Some(killer));
        !self.status.cancelled()
    }

    fn no_frame(&self) -> bool {
        self.frames.load(Ordering::Relaxed) == 0
    }
}

impl LiveVideo {
    fn new(codec: VideoCodec, counters: &Arc<VideoCounters>) -> Arc<Self> {
        Arc::new(Self {
            codec,
            ring: Mutex::new(Ring::default()),
            changed: Condvar::new(),
            killer: Mutex::new(None),
            counters: counters.clone(),
        })
    }

    /// What an encoder's end does to the ring (if anyone still reads it): readers learn how
    /// it ended.
    fn ended_with(live: Weak<Self>) -> impl FnOnce(Result<(), SourceError>) + Send {
        move |result| {
            if let Some(live) = live.upgrade() {
                let mut ring = lock(&live.ring);
                ring.started = true;
                ring.ended = Some(result);
                live.changed.notify_all();
            }
        }
    }

    fn wait_started(&self) -> Result<(), SourceError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ring = lock(&self.ring);
        while !ring.started {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SourceError::Decoder {
                    program: "ffmpeg".to_owned(),
                    reason: format!("no video frame within {START_TIMEOUT:?}"),
                    stderr: String::new(),
                });
            }
            ring = self
                .changed
                .wait_timeout(ring, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        match &ring.ended {
            Some(Err(e)) if ring.frames.is_empty() => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn push(&self, frame: VideoFrame) {
        let mut ring = lock(&self.ring);
        let index = ring.next;
        ring.next += 1;
        ring.frames.push_back((index, frame));
        while ring.frames.len() > VIDEO_RING {
            ring.frames.pop_front();
        }
        if !ring.started {
            ring.started = true;
            self.changed.notify_all();
        }
        self.counters.frames_encoded.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs ffmpeg on `source` until it ends, the readers are gone or it fails; frames go to
/// `out`. `realtime` (live): ffmpeg reads at the input's rate (`-re`) and loops the input
/// itself; on demand it runs as fast as `out` takes frames, and readers loop over the track.
fn encode(
    ffmpeg: &Ffmpeg,
    source: &MediaSource,
    params: VideoParams,
    out: &dyn VideoOut,
    realtime: bool,
) -> Result<(), SourceError> {
    let mut args = base_args(realtime);
    let (cmd, program) = if let MediaInput::Shell { command, .. } = &source.input {
        // Raw yuv420p frames of the parameters' size and rate from the command (what
        // py-tgcalls builds: `ffmpeg ... -f rawvideo -pix_fmt yuv420p -r FPS pipe:1`), piped
        // into our ffmpeg, which encodes them: one pipeline, one process group.
        args.extend(raw_input_args(params));
        args.extend(params.output_args().into_iter().map(OsString::from));
        let mut line = format!("{command} | {}", shell_quote(ffmpeg.path().as_os_str()));
        for a in &args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        (shell_command(&line), shell_program(command))
    } else {
        if realtime && source.looped {
            args.push("-stream_loop".into());
            args.push("-1".into());
        }
        args.extend(input_args(source, true));
        args.extend(params.output_args().into_iter().map(OsString::from));
        let mut cmd = ffmpeg.command();
        cmd.args(&args);
        (cmd, ffmpeg.program())
    };
    let process = Process::spawn(cmd, program, Pipes::Stdout, Some(ffmpeg))?;
    run_encoder(process, params, out)
}

/// ffmpeg's first arguments; `realtime`: read the input at its native rate.
fn base_args(realtime: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .into_iter()
        .map(OsString::from)
        .collect();
    if realtime {
        args.push("-re".into());
    }
    args
}

/// Raw yuv420p frames of `params`' size and rate on standard input.
fn raw_input_args(params: VideoParams) -> impl Iterator<Item = OsString> {
    [
        "-f".to_owned(),
        "rawvideo".to_owned(),
        "-pix_fmt".to_owned(),
        "yuv420p".to_owned(),
        "-s".to_owned(),
        format!("{}x{}", params.width, params.height),
        "-r".to_owned(),
        params.fps.to_string(),
        "-i".to_owned(),
        "pipe:0".to_owned(),
    ]
    .into_iter()
    .map(OsString::from)
}

/// Reads the encoder `process`'s output until it ends, fails or nobody takes its frames.
fn run_encoder(
    mut process: Process,
    params: VideoParams,
    out: &dyn VideoOut,
) -> Result<(), SourceError> {
    if !out.running(process.killer()) {
        process.kill();
        return Ok(());
    }
    let mut stdout = process
        .take_stdout()
        .ok_or_else(|| process.failure("no standard output".to_owned()))?;
    let duration = VIDEO_CLOCK_RATE_HZ / u32::from(params.fps.max(1));
    let mut ivf = IvfStream::new();
    let mut annexb = AnnexBStream::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut killed = false;
    let result = loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(process.failure(format!("reading ffmpeg: {e}"))),
        };
        let step = match params.codec {
            VideoCodec::H264 => {
                annexb.push(&buf[..n]);
                drain(out, params.codec, duration, || annexb.next_access_unit())
            }
            _ => {
                ivf.push(&buf[..n]);
                drain(out, params.codec, duration, || {
                    ivf.next_frame().map(|f| f.map(|f| f.data))
                })
            }
        };
        match step {
            Ok(true) => {}
            Ok(false) => {
                // Nobody shows the input any more.
                killed = true;
                process.kill();
                break Ok(());
            }
            Err(e) => {
                killed = true;
                process.kill();
                break Err(e);
            }
        }
    };
    if result.is_ok()
        && !killed
        && let Some(unit) = annexb.finish()
        && let Ok(frame) = VideoFrame::packetize(params.codec, &unit, duration)
    {
        out.push(frame);
    }
    if result.is_ok() && !killed && out.no_frame() {
        // A command's exit status is its pipeline's last (our ffmpeg's): an input that gave
        // nothing is a failure, with what the command said on its standard error.
        let _ = process.finish(false);
        return Err(process.failure("ended before its first video frame".to_owned()));
    }
    let exit = process.finish(killed);
    result.and(if killed { Ok(()) } else { exit })
}

/// Packetizes every complete frame `next` yields into `out`. `Ok(false)`: nobody takes them
/// any more.
fn drain(
    out: &dyn VideoOut,
    codec: VideoCodec,
    duration: u32,
    mut next: impl FnMut() -> Result<Option<Vec<u8>>, SourceError>,
) -> Result<bool, SourceError> {
    while let Some(data) = next()? {
        if !out.push(VideoFrame::packetize(codec, &data, duration)?) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Index of the newest key frame in the ring.
fn last_keyframe(ring: &Ring) -> Option<u64> {
    ring.frames
        .iter()
        .rev()
        .find(|(_, f)| f.keyframe)
        .map(|(i, _)| *i)
}

/// One call's view of a running input.
struct LiveVideoReader {
    live: Arc<LiveVideo>,
    /// Index of the next frame to hand out.
    next: u64,
}

impl VideoSource for LiveVideoReader {
    fn codec(&self) -> VideoCodec {
        self.live.codec
    }

    fn next_frame(&mut self) -> Result<VideoPoll, SourceError> {
        let ring = lock(&self.live.ring);
        let oldest = ring.frames.front().map_or(ring.next, |(i, _)| *i);
        if ring.next.saturating_sub(self.next) > (VIDEO_RING / 2) as u64 {
            // Fell behind (a shard driven late): on to the newest key frame, if it is ahead.
            if let Some((i, _)) = ring.frames.iter().rev().find(|(_, f)| f.keyframe)
                && *i > self.next
            {
                self.next = *i;
            }
        }
        self.next = self.next.max(oldest);
        if let Some((_, frame)) = ring.frames.get((self.next - oldest) as usize) {
            self.next += 1;
            return Ok(VideoPoll::Frame(frame.clone()));
        }
        match &ring.ended {
            Some(Ok(())) => Ok(VideoPoll::End),
            Some(Err(e)) => Err(e.clone()),
            None => {
                self.live.counters.underruns.fetch_add(1, Ordering::Relaxed);
                Ok(VideoPoll::Pending)
            }
        }
    }

    /// The encoder cannot be asked for a key frame; the ring has the last one. Replay from it
    /// (the track sends the frames since at once) if this reader is past it.
    fn request_keyframe(&mut self) {
        let ring = lock(&self.live.ring);
        if let Some(k) = last_keyframe(&ring)
            && k < self.next
        {
            self.next = k;
            self.live.counters.replays.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn backlog(&self) -> usize {
        // The newest frame is the live edge; everything before it is already due.
        let ring = lock(&self.live.ring);
        ring.next.saturating_sub(self.next).saturating_sub(1) as usize
    }
}

/// One call's view of an on-demand track.
struct DemandVideoReader {
    reader: TrackReader<VideoKey, VideoFrame>,
    counters: Arc<VideoCounters>,
}

impl VideoSource for DemandVideoReader {
    fn codec(&self) -> VideoCodec {
        self.reader.key().1.codec
    }

    fn next_frame(&mut self) -> Result<VideoPoll, SourceError> {
        Ok(match self.reader.poll()? {
            TrackPoll::Frame(frame) => VideoPoll::Frame(frame),
            TrackPoll::Pending => VideoPoll::Pending,
            TrackPoll::End => VideoPoll::End,
        })
    }

    /// Back to the last key frame this call passed; the frames since go out at once.
    fn request_keyframe(&mut self) {
        if self.reader.rewind_to_start() {
            self.counters.replays.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn backlog(&self) -> usize {
        self.reader.replay_backlog()
    }
}

/// Raw yuv420p frames pushed by the application (ntgcalls' `EXTERNAL` video source), encoded
/// by one ffmpeg for every call that shows them
/// ([`Engine::set_video_writer`](crate::Engine::set_video_writer)). Made by
/// [`Engine::video_writer`](crate::Engine::video_writer); clones write to the same encoder.
///
/// The frames go through a queue of [`EXTERNAL_QUEUE`] frames to ffmpeg's standard input (a
/// full queue drops the frame, counted in [`VideoStats::external_dropped`]): writing never
/// blocks. Frames are shown at the [`VideoParams`]' rate in the order written; the application
/// paces them. When the last clone is dropped, the encoder finishes and the calls showing it
/// end their video track ([`EventKind::StreamEnded`](crate::EventKind::StreamEnded)).
#[derive(Debug, Clone)]
pub struct VideoWriter {
    inner: Arc<WriterInner>,
}

#[derive(Debug)]
struct WriterInner {
    live: Arc<LiveVideo>,
    params: VideoParams,
    frames: Sender<Vec<u8>>,
    counters: Arc<VideoCounters>,
}

impl VideoWriter {
    /// Bytes of one frame: `width * height * 3 / 2` (yuv420p).
    pub fn frame_bytes(&self) -> usize {
        let p = &self.inner.params;
        usize::from(p.width) * usize::from(p.height) * 3 / 2
    }

    /// The parameters the frames are encoded with.
    pub fn params(&self) -> VideoParams {
        self.inner.params
    }

    /// Queues one yuv420p frame (Y plane, then U, then V) for the encoder. Returns whether it
    /// was queued: `false` when the queue was full and the frame was dropped (counted).
    ///
    /// # Errors
    /// [`SourceError::InvalidArgument`] for a frame of the wrong size; the encoder's own error
    /// ([`SourceError::Decoder`] with ffmpeg's standard error) once it has failed.
    pub fn write(&self, frame: &[u8]) -> Result<bool, SourceError> {
        if frame.len() != self.frame_bytes() {
            return Err(SourceError::InvalidArgument {
                reason: format!(
                    "a {}x{} yuv420p frame is {} bytes, not {}",
                    self.inner.params.width,
                    self.inner.params.height,
                    self.frame_bytes(),
                    frame.len()
                ),
            });
        }
        if let Some(Err(e)) = &lock(&self.inner.live.ring).ended {
            return Err(e.clone());
        }
        let c = &self.inner.counters;
        match self.inner.frames.try_send(frame.to_vec()) {
            Ok(()) => {
                c.external_frames.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(TrySendError::Full(_)) => {
                c.external_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            Err(TrySendError::Disconnected(_)) => Err(SourceError::Decoder {
                program: "ffmpeg".to_owned(),
                reason: "the encoder stopped taking frames".to_owned(),
                stderr: String::new(),
            }),
        }
    }
}

impl VideoHub {
    /// Starts an encoder for frames the application writes.
    pub(crate) fn writer(&self, params: VideoParams) -> Result<VideoWriter, SourceError> {
        params.validate()?;
        let live = LiveVideo::new(params.codec, &self.counters);
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(EXTERNAL_QUEUE);
        let weak = Arc::downgrade(&live);
        let ffmpeg = self.ffmpeg.clone();
        spawn_encoder(
            &self.counters,
            move || encode_external(&ffmpeg, params, rx, &weak),
            LiveVideo::ended_with(Arc::downgrade(&live)),
        )?;
        Ok(VideoWriter {
            inner: Arc::new(WriterInner {
                live,
                params,
                frames: tx,
                counters: self.counters.clone(),
            }),
        })
    }

    /// A reader of what `writer` is given, from its last key frame.
    pub(crate) fn open_writer(&self, writer: &VideoWriter) -> Box<dyn VideoSource> {
        let live = writer.inner.live.clone();
        let next = {
            let ring = lock(&live.ring);
            last_keyframe(&ring).unwrap_or(ring.next)
        };
        self.counters.shared_plays.fetch_add(1, Ordering::Relaxed);
        Box::new(LiveVideoReader { live, next })
    }
}

/// The encoder of a [`VideoWriter`]: ffmpeg reads raw frames on its standard input, fed from
/// `frames` by a thread of its own, until every writer is gone.
fn encode_external(
    ffmpeg: &Ffmpeg,
    params: VideoParams,
    frames: crossbeam_channel::Receiver<Vec<u8>>,
    live: &Weak<LiveVideo>,
) -> Result<(), SourceError> {
    let mut args = base_args(false);
    args.extend(raw_input_args(params));
    args.extend(params.output_args().into_iter().map(OsString::from));
    let mut cmd = ffmpeg.command();
    cmd.args(&args);
    let mut process = Process::spawn(cmd, ffmpeg.program(), Pipes::Both, Some(ffmpeg))?;
    let Some(mut stdin) = process.take_stdin() else {
        process.kill();
        return Err(process.failure("no standard input".to_owned()));
    };
    std::thread::Builder::new()
        .name("ringcast-video-in".into())
        .spawn(move || {
            use std::io::Write;
            // Ends when every writer is gone (ffmpeg then sees the end of its input and
            // finishes) or ffmpeg stops reading.
            for frame in frames {
                if stdin.write_all(&frame).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| SourceError::Io {
            reason: format!("starting the video input thread: {e}"),
        })?;
    run_encoder(process, params, live)
}
