//! `ringcast._native`: the Rust half of ringcast's Python package.
//!
//! A thin, synchronous binding of [`ringcast::Engine`]: every method that waits on a shard
//! (or on ffmpeg, or on a 2048-bit Diffie-Hellman step) releases the GIL while it waits
//! ([`Python::detach`]), so other Python threads and the asyncio loop run meanwhile. The
//! asyncio API (`ringcast.Engine`) and the ntgcalls drop-in (`ringcast.ntgcalls`) are written
//! in Python on top of it (`python/ringcast/`): they turn these calls into futures bound to
//! the caller's event loop, as ntgcalls does.
//!
//! Events reach Python through one dispatcher thread per engine, a native thread (as
//! ntgcalls' callbacks are): it waits on the engine's event channel without the GIL, and
//! calls the registered callable with the GIL for each event. A callable that raises is
//! reported (`sys.unraisablehook`) and the dispatcher goes on.
//!
//! Errors are `NativeError(kind, message)`: `kind` is a short string the Python layer maps to
//! its own exception types (ntgcalls' `ConnectionNotFound`, `ConnectionError`, `FileError`...).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyString};
use ringcast::{
    CallOptions, CallState, DhConfig, EndReason, Engine, EngineError, EventKind, LIBRARY_VERSIONS,
    MediaSource, P2pEndReason, P2pState, PcmChannels, RecordConfig, Recording, RtcServer,
    SourceError, StreamSource, VideoCodec, VideoParams, VideoWriter,
};
use ringcast_core::SignalingError;

create_exception!(
    _native,
    NativeError,
    PyException,
    "An engine call failed: args are (kind, message); the Python layer maps kind to its own exception types."
);

/// How often the dispatcher looks at its stop flag while no event comes.
const DISPATCH_POLL: Duration = Duration::from_millis(100);

/// The short name of an error's kind, for the Python layer.
fn kind_of(e: &EngineError) -> &'static str {
    match e {
        EngineError::ConnectionExists(_) => "exists",
        EngineError::ConnectionNotFound(_) => "not_found",
        EngineError::OutOfOrder { .. } => "order",
        EngineError::Signaling(SignalingError::NoRtcTransport { .. }) => "stream_mode",
        EngineError::Signaling(_) => "signaling",
        EngineError::Source(SourceError::Io { .. }) => "file",
        EngineError::Source(SourceError::Decoder { .. }) => "shell",
        EngineError::Source(SourceError::FfmpegNotFound { .. }) => "ffmpeg",
        EngineError::Source(SourceError::InvalidArgument { .. }) => "invalid",
        EngineError::Source(_) => "media",
        EngineError::KeyExchange(_) => "crypto",
        EngineError::P2pCall(_) => "p2p",
        EngineError::InvalidKeyLength { .. }
        | EngineError::NoCommonVersion { .. }
        | EngineError::RelayOnlyUnsupported
        | EngineError::InvalidBitrate(_)
        | EngineError::BitrateUnsupported(_)
        | EngineError::InvalidConfig(_) => "invalid",
        EngineError::NoFreeSocket | EngineError::Io(_) => "connection",
        _ => "engine",
    }
}

/// An [`EngineError`] as a Python `NativeError(kind, message)`.
fn py_err(e: EngineError) -> PyErr {
    NativeError::new_err((kind_of(&e), e.to_string()))
}

/// `"vp8"` or `"h264"` (any case).
fn video_codec(name: &str) -> PyResult<VideoCodec> {
    match name.to_ascii_lowercase().as_str() {
        "vp8" => Ok(VideoCodec::Vp8),
        "h264" => Ok(VideoCodec::H264),
        other => Err(invalid(format!(
            "unknown video codec {other:?} (vp8 or h264)"
        ))),
    }
}

/// A `NativeError` of kind `invalid`.
fn video_params(
    codec: &str,
    width: u16,
    height: u16,
    fps: u8,
    bitrate_kbps: u32,
) -> PyResult<VideoParams> {
    Ok(VideoParams {
        codec: video_codec(codec)?,
        width,
        height,
        fps,
        bitrate_kbps,
    })
}

fn invalid(message: String) -> PyErr {
    NativeError::new_err(("invalid", message))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A group call's state as a string: `new`, `connecting`, `connected`, `ended:<reason>`.
fn call_state(state: &CallState) -> String {
    match state {
        CallState::New => "new".to_owned(),
        CallState::Connecting => "connecting".to_owned(),
        CallState::Connected => "connected".to_owned(),
        CallState::Ended(reason) => format!("ended:{}", end_reason(reason)),
        _ => "unknown".to_owned(),
    }
}

fn end_reason(reason: &EndReason) -> &'static str {
    match reason {
        EndReason::Stopped => "stopped",
        EndReason::ConnectTimeout => "timeout",
        _ => "failed",
    }
}

/// A 1:1 call's state as a string: `connecting`, `connected`, `ended:<reason>`.
fn p2p_state(state: &P2pState) -> String {
    match state {
        P2pState::Connecting => "connecting".to_owned(),
        P2pState::Connected => "connected".to_owned(),
        P2pState::Ended(P2pEndReason::Hangup) => "ended:stopped".to_owned(),
        P2pState::Ended(P2pEndReason::ConnectTimeout) => "ended:timeout".to_owned(),
        P2pState::Ended(_) => "ended:failed".to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// The dispatcher thread of one engine and its stop flag.
#[derive(Debug)]
struct Dispatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One ringcast engine (`ringcast.Engine` and `ringcast.ntgcalls.NTgCalls` wrap it).
///
/// Synchronous: each method returns when the engine has answered, with the GIL released
/// while it waits. Call ids are one int64 space: negative for group chats, the peer's user id
/// for 1:1 calls.
#[pyclass(frozen, module = "ringcast._native", name = "Engine")]
#[derive(Debug)]
struct NativeEngine {
    engine: Arc<Engine>,
    callback: Arc<Mutex<Option<Py<PyAny>>>>,
    dispatcher: Mutex<Option<Dispatcher>>,
    recordings: Mutex<HashMap<i64, Recording>>,
    /// Encoders of frames the application writes, by (chat, is the presentation).
    writers: Mutex<HashMap<(i64, bool), VideoWriter>>,
}

#[pymethods]
impl NativeEngine {
    /// Starts an engine. `shards`: shard threads (default one per core); `bind`: a local IP
    /// to bind every socket to (default: per SFU, the address the kernel routes toward it);
    /// `connect_timeout`: seconds a call may take to connect (default 10).
    #[new]
    #[pyo3(signature = (shards=None, bind=None, connect_timeout=None))]
    fn new(
        py: Python<'_>,
        shards: Option<usize>,
        bind: Option<String>,
        connect_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let mut builder = Engine::builder();
        if let Some(n) = shards {
            builder = builder.shards(n);
        }
        if let Some(ip) = bind {
            let ip: IpAddr = ip
                .parse()
                .map_err(|e| invalid(format!("bind address {ip:?}: {e}")))?;
            builder = builder.bind(SocketAddr::new(ip, 0));
        }
        if let Some(seconds) = connect_timeout {
            let timeout = Duration::try_from_secs_f64(seconds)
                .map_err(|e| invalid(format!("connect_timeout {seconds}: {e}")))?;
            builder = builder.connect_timeout(timeout);
        }
        let engine = py.detach(|| builder.build()).map_err(py_err)?;
        Ok(Self {
            engine: Arc::new(engine),
            callback: Arc::new(Mutex::new(None)),
            dispatcher: Mutex::new(None),
            recordings: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the callable that receives every event (replacing the previous one), and starts
    /// the dispatcher thread on first use. It is called from that thread as
    /// `callback(chat_id, kind, a, b)`:
    ///
    /// - `("connection", state, None)`: a group call's state (`connecting`, `connected`,
    ///   `ended:stopped|timeout|failed`);
    /// - `("p2p_connection", state, None)`: the same for a 1:1 call;
    /// - `("stream_end", track, error)`: the source ended (`error` is None) or failed;
    /// - `("media", paused, muted)`: pause/mute changed;
    /// - `("signaling", data, None)`: bytes for `phone.sendSignalingData`;
    /// - `"presentation_connection"`, `"presentation_stream_end"`: the same for the chat's
    ///   presentation connection.
    fn set_callback(&self, callback: Py<PyAny>) {
        *lock(&self.callback) = Some(callback);
        let mut dispatcher = lock(&self.dispatcher);
        if dispatcher.is_some() {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let events = self.engine.events().clone();
        let slot = self.callback.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringcast-events".to_owned())
            .spawn(move || dispatch(&events, &slot, &flag))
            .ok();
        *dispatcher = Some(Dispatcher { stop, thread });
    }

    /// Creates a group call; returns its join payload (the `params` of `phone.joinGroupCall`).
    /// `video`: `"vp8"` or `"h264"` announces a camera track of that codec (its SSRCs in
    /// `ssrc-groups`), `None` makes an audio-only call.
    #[pyo3(signature = (chat_id, video=None))]
    fn create_call(&self, py: Python<'_>, chat_id: i64, video: Option<&str>) -> PyResult<String> {
        let options = match video {
            None => CallOptions::new(),
            Some(codec) => CallOptions::new().video(video_codec(codec)?),
        };
        py.detach(|| self.engine.create_call_with(chat_id, options))
            .map_err(py_err)
    }

    /// Shows raw yuv420p frames of `width`x`height` at `fps` that the shell `command` writes
    /// (py-tgcalls' camera and screen commands) on the call's camera track, or on its
    /// presentation when `presentation`, encoded once per distinct command with `codec` (the
    /// call's). Replaces what it showed.
    #[pyo3(signature = (chat_id, command, width, height, fps, codec="vp8", bitrate_kbps=1500, presentation=false))]
    #[allow(clippy::too_many_arguments)]
    fn show_video(
        &self,
        py: Python<'_>,
        chat_id: i64,
        command: String,
        width: u16,
        height: u16,
        fps: u8,
        codec: &str,
        bitrate_kbps: u32,
        presentation: bool,
    ) -> PyResult<()> {
        let params = video_params(codec, width, height, fps, bitrate_kbps)?;
        // The audio fields of a shell source are unused for video.
        let source = MediaSource::shell(command, 48_000, 2);
        py.detach(|| {
            if presentation {
                self.engine.set_presentation_source(chat_id, source, params)
            } else {
                self.engine.set_video_source(chat_id, source, params)
            }
        })
        .map_err(py_err)
    }

    /// Opens the chat's presentation (screen share) connection; returns its join payload (the
    /// `params` of `phone.joinGroupCallPresentation`). The chat's call must exist.
    #[pyo3(signature = (chat_id, codec="vp8"))]
    fn init_presentation(&self, py: Python<'_>, chat_id: i64, codec: &str) -> PyResult<String> {
        let codec = video_codec(codec)?;
        py.detach(|| self.engine.init_presentation(chat_id, codec))
            .map_err(py_err)
    }

    /// Applies the SFU's answer to the presentation and starts connecting it.
    fn connect_presentation(&self, py: Python<'_>, chat_id: i64, params: String) -> PyResult<()> {
        py.detach(|| self.engine.connect_presentation(chat_id, &params))
            .map_err(py_err)
    }

    /// Ends the chat's presentation connection; the call goes on.
    fn stop_presentation(&self, py: Python<'_>, chat_id: i64) -> PyResult<()> {
        py.detach(|| self.engine.stop_presentation(chat_id))
            .map_err(py_err)
    }

    /// Starts an encoder for raw yuv420p frames the application writes (ntgcalls'
    /// `EXTERNAL` video) and shows it on the call's camera, or its presentation when
    /// `presentation`; frames then go in with `write_video_frame`.
    #[pyo3(signature = (chat_id, width, height, fps, codec="vp8", presentation=false, bitrate_kbps=1500))]
    #[allow(clippy::too_many_arguments)]
    fn external_video(
        &self,
        py: Python<'_>,
        chat_id: i64,
        width: u16,
        height: u16,
        fps: u8,
        codec: &str,
        presentation: bool,
        bitrate_kbps: u32,
    ) -> PyResult<()> {
        let params = video_params(codec, width, height, fps, bitrate_kbps)?;
        let writer = py
            .detach(|| -> Result<VideoWriter, EngineError> {
                let writer = self.engine.video_writer(params)?;
                if presentation {
                    self.engine.set_presentation_writer(chat_id, &writer)?;
                } else {
                    self.engine.set_video_writer(chat_id, &writer)?;
                }
                Ok(writer)
            })
            .map_err(py_err)?;
        lock(&self.writers).insert((chat_id, presentation), writer);
        Ok(())
    }

    /// Writes one yuv420p frame into the encoder `external_video` started; returns False if
    /// its queue was full and the frame was dropped (counted).
    #[pyo3(signature = (chat_id, frame, presentation=false))]
    fn write_video_frame(&self, chat_id: i64, frame: &[u8], presentation: bool) -> PyResult<bool> {
        let writer = lock(&self.writers)
            .get(&(chat_id, presentation))
            .cloned()
            .ok_or_else(|| py_err(EngineError::ConnectionNotFound(chat_id)))?;
        writer
            .write(frame)
            .map_err(|e| py_err(EngineError::Source(e)))
    }

    /// Removes the call's video source (nothing more is shown).
    fn clear_video(&self, py: Python<'_>, chat_id: i64) -> PyResult<()> {
        py.detach(|| self.engine.clear_video_source(chat_id))
            .map_err(py_err)
    }

    /// Applies the SFU's answer (`updateGroupCallConnection.params`) and starts connecting.
    fn connect(&self, py: Python<'_>, chat_id: i64, params: String) -> PyResult<()> {
        py.detach(|| self.engine.connect(chat_id, &params))
            .map_err(py_err)
    }

    /// Plays an input on the call, replacing what it played. `kind`: `shell` (a command
    /// writing s16le PCM at `sample_rate`/`channels`, as py-tgcalls builds them), `file` or
    /// `url` (anything ffmpeg reads). `live`: every call playing the same input hears the
    /// same position; otherwise each starts at the beginning (frames shared through a cache).
    #[pyo3(signature = (chat_id, kind, input, sample_rate=48000, channels=2, live=false, looped=false))]
    #[allow(clippy::too_many_arguments)]
    fn play(
        &self,
        py: Python<'_>,
        chat_id: i64,
        kind: &str,
        input: String,
        sample_rate: u32,
        channels: u8,
        live: bool,
        looped: bool,
    ) -> PyResult<()> {
        let mut source = match kind {
            "shell" => MediaSource::shell(input, sample_rate, channels),
            "file" => MediaSource::file(input),
            "url" => MediaSource::url(input),
            other => return Err(invalid(format!("unknown input kind {other:?}"))),
        };
        if live {
            source = source.live();
        }
        if looped {
            source = source.looped(true);
        }
        py.detach(|| self.engine.set_stream_sources(chat_id, source))
            .map_err(py_err)
    }

    /// Plays a sine tone of `frequency_hz` on the call.
    fn play_tone(&self, py: Python<'_>, chat_id: i64, frequency_hz: f32) -> PyResult<()> {
        py.detach(|| {
            self.engine
                .set_stream_sources(chat_id, StreamSource::Tone { frequency_hz })
        })
        .map_err(py_err)
    }

    /// Pauses sending (the position stops).
    fn pause(&self, py: Python<'_>, chat_id: i64) -> PyResult<()> {
        py.detach(|| self.engine.pause(chat_id)).map_err(py_err)
    }

    /// Resumes after `pause`.
    fn resume(&self, py: Python<'_>, chat_id: i64) -> PyResult<()> {
        py.detach(|| self.engine.resume(chat_id)).map_err(py_err)
    }

    /// Sends silence instead of the source (which keeps advancing).
    fn mute(&self, py: Python<'_>, chat_id: i64) -> PyResult<()> {
        py.detach(|| self.engine.mute(chat_id)).map_err(py_err)
    }

    /// Undoes `mute`.
    fn unmute(&self, py: Python<'_>, chat_id: i64) -> PyResult<()> {
        py.detach(|| self.engine.unmute(chat_id)).map_err(py_err)
    }

    /// Ends the call (and its recording, if any).
    fn stop(&self, py: Python<'_>, chat_id: i64) -> PyResult<()> {
        let recording = lock(&self.recordings).remove(&chat_id);
        py.detach(|| {
            drop(recording);
            self.engine.stop(chat_id)
        })
        .map_err(py_err)
    }

    /// `(kind, state, paused, muted)` of a live call: kind `group` or `p2p`, state as in
    /// `set_callback`.
    fn info(&self, py: Python<'_>, chat_id: i64) -> PyResult<(&'static str, String, bool, bool)> {
        py.detach(|| match self.engine.call_info(chat_id) {
            Ok(info) => Ok((
                "group",
                call_state(&info.state),
                info.media.paused,
                info.media.muted,
            )),
            Err(EngineError::ConnectionNotFound(_)) => {
                let info = self.engine.p2p_call_info(chat_id)?;
                Ok(("p2p", p2p_state(&info.state), info.paused, info.muted))
            }
            Err(e) => Err(e),
        })
        .map_err(py_err)
    }

    /// Position in what the call plays, in microseconds (stops while paused).
    fn time_us(&self, py: Python<'_>, chat_id: i64) -> PyResult<u64> {
        py.detach(|| self.engine.time(chat_id))
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .map_err(py_err)
    }

    /// The SSRC of the call's outgoing audio.
    fn audio_ssrc(&self, py: Python<'_>, chat_id: i64) -> PyResult<u32> {
        py.detach(|| self.engine.audio_ssrc(chat_id))
            .map_err(py_err)
    }

    /// Every live call on the shards: `[(chat_id, kind, state, paused, muted)]`.
    fn calls(&self, py: Python<'_>) -> PyResult<Vec<CallRow>> {
        py.detach(|| {
            let mut all: Vec<_> = self
                .engine
                .calls()?
                .into_iter()
                .map(|c| {
                    (
                        c.chat_id,
                        "group",
                        call_state(&c.state),
                        c.media.paused,
                        c.media.muted,
                    )
                })
                .collect();
            all.extend(
                self.engine
                    .p2p_calls()?
                    .into_iter()
                    .map(|c| (c.user_id, "p2p", p2p_state(&c.state), c.paused, c.muted)),
            );
            Ok(all)
        })
        .map_err(py_err)
    }

    /// Starts recording what the other participants say (mixed) into `command`'s standard
    /// input as s16le 48 kHz PCM with `channels` (1 or 2), or into `path` (format from the
    /// extension) when `is_file`. Replaces a recording already running on the call.
    #[pyo3(signature = (chat_id, output, channels=1, is_file=false))]
    fn record(
        &self,
        py: Python<'_>,
        chat_id: i64,
        output: String,
        channels: u8,
        is_file: bool,
    ) -> PyResult<()> {
        let channels = match channels {
            1 => PcmChannels::Mono,
            2 => PcmChannels::Stereo,
            n => {
                return Err(invalid(format!(
                    "recording channels must be 1 or 2, got {n}"
                )));
            }
        };
        let config = if is_file {
            RecordConfig::file(output)
        } else {
            RecordConfig::shell(output)
        }
        .channels(channels);
        let old = lock(&self.recordings).remove(&chat_id);
        let recording = py
            .detach(|| {
                drop(old);
                self.engine.record(chat_id, config)
            })
            .map_err(py_err)?;
        lock(&self.recordings).insert(chat_id, recording);
        Ok(())
    }

    /// Stops the call's recording (its output is complete when this returns); returns the
    /// 20 ms frames written, or None if the call was not recording.
    fn stop_recording(&self, py: Python<'_>, chat_id: i64) -> PyResult<Option<u64>> {
        let Some(recording) = lock(&self.recordings).remove(&chat_id) else {
            return Ok(None);
        };
        let summary = py
            .detach(|| recording.stop())
            .map_err(|e| py_err(EngineError::Source(e)))?;
        Ok(Some(summary.outputs.iter().map(|o| o.frames).sum()))
    }

    /// Whether the call has a recording running.
    fn is_recording(&self, chat_id: i64) -> bool {
        lock(&self.recordings)
            .get(&chat_id)
            .is_some_and(|r| !r.is_finished())
    }

    /// Creates a 1:1 call with `user_id`.
    fn create_p2p_call(&self, py: Python<'_>, user_id: i64) -> PyResult<()> {
        py.detach(|| self.engine.create_p2p_call(user_id))
            .map_err(py_err)
    }

    /// The DH step of a 1:1 call (`messages.getDhConfig`'s `g`, `p`, `random`): returns
    /// `g_a_hash` (caller, `g_a_hash` None) or `g_b` (callee, the caller's `g_a_hash` given).
    #[pyo3(signature = (user_id, g, p, random, g_a_hash=None))]
    fn init_exchange<'py>(
        &self,
        py: Python<'py>,
        user_id: i64,
        g: i32,
        p: Vec<u8>,
        random: Vec<u8>,
        g_a_hash: Option<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let dh = DhConfig { g, p, random };
        let out = py
            .detach(|| self.engine.init_exchange(user_id, &dh, g_a_hash.as_deref()))
            .map_err(py_err)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Completes the key exchange: returns `(key_fingerprint, g_a_or_b)`.
    fn exchange_keys<'py>(
        &self,
        py: Python<'py>,
        user_id: i64,
        g_a_or_b: Vec<u8>,
        fingerprint: i64,
    ) -> PyResult<(i64, Bound<'py, PyBytes>)> {
        let auth = py
            .detach(|| self.engine.exchange_keys(user_id, &g_a_or_b, fingerprint))
            .map_err(py_err)?;
        Ok((auth.key_fingerprint, PyBytes::new(py, &auth.g_a_or_b)))
    }

    /// Uses a key agreed elsewhere (256 bytes) instead of the DH exchange.
    fn skip_exchange(
        &self,
        py: Python<'_>,
        user_id: i64,
        key: Vec<u8>,
        is_outgoing: bool,
    ) -> PyResult<()> {
        py.detach(|| self.engine.skip_exchange(user_id, &key, is_outgoing))
            .map_err(py_err)
    }

    /// The 1:1 call's key fingerprint and its four verification emojis.
    fn p2p_key(&self, py: Python<'_>, user_id: i64) -> PyResult<(i64, Vec<&'static str>)> {
        py.detach(|| self.engine.p2p_key(user_id))
            .map(|k| (k.key_fingerprint, k.emoji.to_vec()))
            .map_err(py_err)
    }

    /// Starts the 1:1 call. `servers`: `(id, ipv4, ipv6, port, username, password, turn, stun,
    /// tcp)` tuples (`phoneConnectionWebrtc`; empty address strings are absent).
    fn connect_p2p(
        &self,
        py: Python<'_>,
        user_id: i64,
        servers: Vec<ServerTuple>,
        versions: Vec<String>,
        p2p_allowed: bool,
    ) -> PyResult<()> {
        let servers = servers
            .into_iter()
            .map(rtc_server)
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| {
            self.engine
                .connect_p2p(user_id, &servers, &versions, p2p_allowed)
        })
        .map_err(py_err)
    }

    /// Hands signaling bytes from the messenger (`updatePhoneCallSignalingData`) to the call.
    fn send_signaling_data(&self, py: Python<'_>, user_id: i64, data: Vec<u8>) -> PyResult<()> {
        py.detach(|| self.engine.send_signaling_data(user_id, &data))
            .map_err(py_err)
    }

    /// Engine-wide counters as a dict (calls, sockets, datagrams and packets sent, drops).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.engine.stats()).map_err(py_err)?;
        let m = self.engine.media_stats();
        let d = PyDict::new(py);
        d.set_item("shards", s.shards)?;
        d.set_item("calls", s.calls)?;
        d.set_item("p2p_calls", s.p2p_calls)?;
        d.set_item("sockets", s.sockets)?;
        d.set_item("datagrams_received", s.datagrams_received)?;
        d.set_item("datagrams_sent", s.datagrams_sent)?;
        d.set_item("packets_sent", s.packets_sent)?;
        d.set_item("dropped_events", s.dropped_events)?;
        d.set_item("send_errors", s.send_errors)?;
        d.set_item("calls_reaped", s.calls_reaped)?;
        d.set_item("decoder_processes_spawned", m.processes_spawned)?;
        d.set_item("decoder_processes_running", m.processes_running)?;
        d.set_item("encoders_created", m.encoders_created)?;
        d.set_item("underruns", m.underruns)?;
        Ok(d)
    }

    /// Stops the dispatcher thread (events are no longer delivered). The engine itself stops
    /// when the object is garbage-collected.
    fn close(&self, py: Python<'_>) {
        let dispatcher = lock(&self.dispatcher).take();
        let recordings: Vec<Recording> = lock(&self.recordings).drain().map(|(_, r)| r).collect();
        py.detach(|| {
            drop(recordings);
            if let Some(mut d) = dispatcher {
                d.stop.store(true, Ordering::Relaxed);
                if let Some(t) = d.thread.take() {
                    let _ = t.join();
                }
            }
        });
        *lock(&self.callback) = None;
    }
}

/// `(chat_id, kind, state, paused, muted)` of one call, as `Engine.calls` returns it.
type CallRow = (i64, &'static str, String, bool, bool);

/// `(id, ipv4, ipv6, port, username, password, turn, stun, tcp)`.
type ServerTuple = (
    i64,
    String,
    String,
    u16,
    Option<String>,
    Option<String>,
    bool,
    bool,
    bool,
);

fn rtc_server(t: ServerTuple) -> PyResult<RtcServer> {
    let (id, ipv4, ipv6, port, username, password, turn, stun, tcp) = t;
    let ipv4 = match ipv4.as_str() {
        "" => None,
        s => Some(
            s.parse::<Ipv4Addr>()
                .map_err(|e| invalid(format!("rtc server ipv4 {s:?}: {e}")))?,
        ),
    };
    let ipv6 = match ipv6.as_str() {
        "" => None,
        s => s.parse::<Ipv6Addr>().ok(),
    };
    Ok(RtcServer {
        id,
        ipv4,
        ipv6,
        port,
        username,
        password,
        turn,
        stun,
        tcp,
        peer_tag: None,
    })
}

/// The dispatcher thread: waits for events without the GIL, hands each to the callback.
fn dispatch(
    events: &crossbeam_channel::Receiver<ringcast::EngineEvent>,
    slot: &Mutex<Option<Py<PyAny>>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let event = match events.recv_timeout(DISPATCH_POLL) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        Python::attach(|py| {
            let Some(callback) = lock(slot).as_ref().map(|c| c.clone_ref(py)) else {
                return;
            };
            let chat_id = event.chat_id;
            let presentation = event.presentation;
            let args = event_args(py, event.kind).map(|(kind, a, b)| {
                let kind = match (presentation, kind) {
                    (true, "connection") => "presentation_connection",
                    (true, "stream_end") => "presentation_stream_end",
                    (true, other) => other,
                    (false, kind) => kind,
                };
                (kind, a, b)
            });
            if let Some((kind, a, b)) = args
                && let Err(e) = callback.call1(py, (chat_id, kind, a, b))
            {
                e.write_unraisable(py, Some(callback.bind(py)));
            }
        });
    }
}

/// The arguments after `chat_id` of the callback for one event; None for events the Python
/// layer does not take.
fn event_args(py: Python<'_>, kind: EventKind) -> Option<(&'static str, Py<PyAny>, Py<PyAny>)> {
    let text = |s: &str| PyString::new(py, s).into_any().unbind();
    let flag = |b: bool| PyBool::new(py, b).to_owned().into_any().unbind();
    match kind {
        EventKind::ConnectionChanged(state) => {
            Some(("connection", text(&call_state(&state)), py.None()))
        }
        EventKind::P2pConnectionChanged(state) => {
            Some(("p2p_connection", text(&p2p_state(&state)), py.None()))
        }
        EventKind::StreamEnded { track, error } => Some((
            "stream_end",
            text(&format!("{track:?}").to_lowercase()),
            error.map_or_else(|| py.None(), |e| text(&e.to_string())),
        )),
        EventKind::MediaStateChanged(m) => Some(("media", flag(m.paused), flag(m.muted))),
        EventKind::SignalingData(bytes) => Some((
            "signaling",
            PyBytes::new(py, &bytes).into_any().unbind(),
            py.None(),
        )),
        _ => None,
    }
}

/// The versions of Telegram's 1:1 call protocol ringcast speaks, newest first.
#[pyfunction]
fn library_versions() -> Vec<&'static str> {
    LIBRARY_VERSIONS.to_vec()
}

/// The Rust crate's version.
#[pyfunction]
fn engine_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add_function(wrap_pyfunction!(library_versions, m)?)?;
    m.add_function(wrap_pyfunction!(engine_version, m)?)?;
    Ok(())
}
