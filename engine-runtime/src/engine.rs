//! The public [`Engine`] API: a handle that talks to the shard thread through bounded queues.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use ringcast_core::call::{CallConfig, IceTimings};
use ringcast_core::call::{CallState, DEFAULT_CONNECT_TIMEOUT, MediaState};
use ringcast_core::crypto::{CallCrypto, CryptoOptions};
use ringcast_core::pacer::LatenessHistogram;
use ringcast_core::str0m::config::DtlsCert;
use ringcast_core::str0m::crypto::CryptoProvider;
use ringcast_core::{SourceError, TrackKind};
use tokio::sync::Notify;

use crate::error::EngineError;
use crate::pool::SocketPool;
use crate::shard::{Request, ShardConfig};

mod p2p;
mod presentation;
pub use p2p::{AuthParams, P2pCallInfo, P2pKeyInfo, RtcServer};
pub(crate) use presentation::split_call_id;

/// A call's state, media state and counters, as [`Engine::call_info`] and [`Engine::calls`]
/// return them.
pub type CallInfo = ringcast_core::endpoint::CallSnapshot;
use crate::ffmpeg::Ffmpeg;
use crate::play::{MediaCacheConfig, MediaHub, MediaStats};
use crate::source::StreamSource;

/// Capacity of each shard's queue of datagrams handed over by other shards.
const FORWARD_QUEUE: usize = 8192;
/// Default capacity of the event channel.
const DEFAULT_EVENT_QUEUE: usize = 4096;
/// Default capacity of the command queue into the shard.
const DEFAULT_COMMAND_QUEUE: usize = 4096;
/// How long an API call waits for the shard's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest [`Engine::shutdown`] (and the drop) waits for the shard threads to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    /// The call's id: the chat id of a group call, the peer's user id of a 1:1 call. Both are
    /// one id space (as in ntgcalls): a group call and a 1:1 call cannot share an id.
    pub chat_id: i64,
    /// The event is about the chat's presentation (screen share) connection
    /// ([`Engine::init_presentation`]), not its main call.
    pub presentation: bool,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`EngineEvent`] (ntgcalls: `on_connection_change`, `on_stream_end`,
/// `on_media_state_change`, plus received audio when enabled).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// Connection state changed. `CallState::Ended(reason)` means the call is gone (reaped):
    /// the same chat can be created again at once.
    ConnectionChanged(CallState),
    /// The source ended (`error: None`) or failed: a missing file, an unreachable URL, ffmpeg
    /// exiting with an error ([`SourceError::Decoder`](ringcast_core::SourceError::Decoder)
    /// carries the tail of its standard error). The call stays connected, ready for the next
    /// [`Engine::set_stream_sources`]; no other call notices.
    StreamEnded {
        /// Which track's stream ended (audio; video once calls send it).
        track: TrackKind,
        /// The source's error, if any.
        error: Option<SourceError>,
    },
    /// Pause/mute changed (group calls).
    MediaStateChanged(MediaState),
    /// Encrypted signaling for the messenger from a 1:1 call: send it with
    /// `phone.sendSignalingData` (ntgcalls `onSignalingData`). A full event channel drops it
    /// and counts it in [`EngineStats::dropped_events`]; with the reliable framing (8.0.0,
    /// 9.0.0) the channel resends unacknowledged messages, with 7.0.0's raw framing the
    /// message is lost.
    SignalingData(Vec<u8>),
    /// A 1:1 call's state changed. `Ended(reason)` means it is gone.
    P2pConnectionChanged(ringcast_core::p2p_call::P2pState),
    /// Audio from another participant, or from the peer of a 1:1 call (only with
    /// [`EngineBuilder::receive_audio`]). The Opus payload as received: decode it to 16-bit
    /// 48 kHz PCM to hear it (the place a PCM sink attaches).
    AudioReceived {
        /// Speaker SSRC.
        ssrc: u32,
        /// RTP sequence number.
        seq: u16,
        /// The Opus packet.
        payload: Arc<[u8]>,
    },
    /// A video frame from a source added with [`Engine::add_incoming_video`]: reassembled
    /// from RTP, still encoded (a VP8 frame, or an H.264 access unit in Annex B), with the
    /// picture size of its last key frame.
    VideoReceived {
        /// The endpoint it was added under.
        endpoint: Arc<str>,
        /// The media SSRC it came on.
        ssrc: u32,
        /// The frame.
        frame: crate::ReceivedFrame,
    },
}

/// Engine-wide counters: every shard's endpoint counters added up, plus the runtime's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Number of shards.
    pub shards: u64,
    /// Live group calls.
    pub calls: u64,
    /// Live 1:1 calls on shards (each has a socket of its own, not counted in `sockets`).
    pub p2p_calls: u64,
    /// UDP sockets in the pool (every shard serves all of them).
    pub sockets: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// RTP media packets sent.
    pub packets_sent: u64,
    /// Datagrams that matched no call (dropped).
    pub dropped_unroutable: u64,
    /// Datagrams a call refused (malformed, bad integrity, replay...).
    pub dropped_by_call: u64,
    /// Events dropped because the event channel was full.
    pub dropped_events: u64,
    /// Datagrams dropped because a shard's receive queue was full. Always 0 since shards
    /// handle datagrams straight from their receive ring (they wait in the sockets' buffers);
    /// kept so existing readers still compile.
    pub dropped_rx_queue_full: u64,
    /// Send errors from the sockets.
    pub send_errors: u64,
    /// Datagrams dropped because their socket's send buffer was full (`EAGAIN`/`ENOBUFS`: a
    /// link slower than what the calls send, or a small `SO_SNDBUF`); the shard does not wait
    /// for the buffer to drain, so the other sockets' datagrams go on.
    pub dropped_send_buffer_full: u64,
    /// Calls reaped after they ended.
    pub calls_reaped: u64,
    /// Calls ended because their processing panicked (a bug): each ended alone with
    /// [`EndReason::Panicked`](crate::EndReason::Panicked) (1:1:
    /// [`P2pEndReason::Panicked`](crate::P2pEndReason::Panicked)); the shards and the other
    /// calls went on.
    pub calls_panicked: u64,
    /// Datagrams received by one shard for a call on another and handed over.
    pub forwarded_between_shards: u64,
    /// Datagrams dropped because the owning shard's forward queue was full.
    pub dropped_forward_full: u64,
    /// Pacer lateness (send time minus due time) of every packet, all shards.
    pub lateness: LatenessHistogram,
    /// What that lateness is made of, per pacer tick of every shard: how late the shard woke
    /// for its timer, the work it did before the tick, the tick itself and the send that
    /// follows. A frame's lateness is the time its shard woke late plus the work before its
    /// tick; a long tick or send delays the next tick.
    pub lateness_causes: LatenessCauses,
}

/// Where a pacer tick's lateness comes from, per tick of a shard (see
/// [`EngineStats::lateness_causes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatenessCauses {
    /// How late the shard woke for a timer it slept on: the runtime's timer resolution and
    /// the OS scheduler.
    pub timer: LatenessHistogram,
    /// From waking to the tick: commands and received datagrams handled first.
    pub before_tick: LatenessHistogram,
    /// The pacer tick itself (every due call's frames), which the next tick may wait behind.
    pub tick: LatenessHistogram,
    /// Sending the tick's datagrams (the system call).
    pub flush: LatenessHistogram,
}

impl LatenessCauses {
    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Self) {
        self.timer.merge(&other.timer);
        self.before_tick.merge(&other.before_tick);
        self.tick.merge(&other.tick);
        self.flush.merge(&other.flush);
    }
}

/// Builder for [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    shards: usize,
    bind: Option<SocketAddr>,
    connect_timeout: Duration,
    event_queue: usize,
    command_queue: usize,
    receive_audio: bool,
    seed: Option<u64>,
    ice: IceTimings,
    pre_connect_delay: Duration,
    cert_pool: usize,
    send_path: SendPath,
    ffmpeg: Ffmpeg,
    check_ffmpeg: bool,
    media_cache: MediaCacheConfig,
    video_cache: MediaCacheConfig,
}

/// How a shard puts its datagrams on the wire; see [`EngineBuilder::send_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendPath {
    /// A private raw io_uring per shard: every datagram of a pacer tick is one `SENDMSG`
    /// entry in a pre-allocated slot, all submitted with one system call, no allocation per
    /// packet. The default.
    #[default]
    IoUringBatch,
    /// One tokio-uring `send_to` future per datagram, joined per tick (one submission per
    /// tick too, but a boxed operation, a future and a waker per datagram). Kept to measure
    /// the batch path against.
    TokioUring,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            bind: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            event_queue: DEFAULT_EVENT_QUEUE,
            command_queue: DEFAULT_COMMAND_QUEUE,
            receive_audio: false,
            seed: None,
            ice: IceTimings::default(),
            pre_connect_delay: Duration::ZERO,
            cert_pool: DEFAULT_CERT_POOL,
            send_path: SendPath::default(),
            ffmpeg: Ffmpeg::default(),
            check_ffmpeg: false,
            media_cache: MediaCacheConfig::default(),
            video_cache: MediaCacheConfig::video_default(),
        }
    }
}

impl EngineBuilder {
    /// Number of shard threads, each with its own io_uring and its own calls. Default: one
    /// per available core.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }

    /// Binds every socket to this local IP (and the first one to this port, 0 = any). Must be
    /// a concrete IP the SFU can reach, not `0.0.0.0`.
    ///
    /// Without it (the default), a group call's socket is bound, per SFU address, to the local
    /// address the kernel routes toward that SFU (IPv4 or IPv6; the pool keeps sockets per
    /// local address), so an engine built with no configuration reaches an SFU on loopback,
    /// on a LAN or across the internet alike; 1:1 calls bind the default route's address.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// How long a call may take to connect before it fails. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Capacity of the event channel; events beyond it are dropped and counted.
    pub fn event_queue(mut self, capacity: usize) -> Self {
        self.event_queue = capacity.max(1);
        self
    }

    /// Capacity of the command queue; a full queue is [`EngineError::QueueFull`].
    pub fn command_queue(mut self, capacity: usize) -> Self {
        self.command_queue = capacity.max(1);
        self
    }

    /// Deliver other participants' audio as [`EventKind::AudioReceived`]. Off by default.
    pub fn receive_audio(mut self, on: bool) -> Self {
        self.receive_audio = on;
        self
    }

    /// ICE timers: keepalive interval, STUN retransmission budget, initial retransmission
    /// timeout, and how long a lost path may stay lost before the call fails.
    pub fn ice_timings(mut self, ice: IceTimings) -> Self {
        self.ice = ice;
        self
    }

    /// Wait this long after `connect` before starting ICE.
    pub fn pre_connect_delay(mut self, delay: Duration) -> Self {
        self.pre_connect_delay = delay;
        self
    }

    /// DTLS certificates generated ahead of time by a background thread, so a burst of
    /// `create_call`s does not wait on key generation. 0 turns the pool off (one certificate
    /// generated on the spot per call). Default 64.
    pub fn cert_pool(mut self, size: usize) -> Self {
        self.cert_pool = size;
        self
    }

    /// How shards send datagrams (default [`SendPath::IoUringBatch`]). `docs/performance.md`
    /// compares the two paths.
    pub fn send_path(mut self, path: SendPath) -> Self {
        self.send_path = path;
        self
    }

    /// Seed for the calls' random choices (ICE credentials, SSRCs). Default: from the OS.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The ffmpeg binary that decodes [`MediaSource`](crate::MediaSource)s (default: `ffmpeg` on `PATH`, with
    /// `ffprobe` beside it). Setting it turns the check on: [`build`](Self::build) runs it
    /// and fails with [`SourceError::FfmpegNotFound`] if it does not. Without it, a missing
    /// ffmpeg is that same error at the first play.
    pub fn ffmpeg(mut self, ffmpeg: Ffmpeg) -> Self {
        self.ffmpeg = ffmpeg;
        self.check_ffmpeg = true;
        self
    }

    /// Bounds of the on-demand track cache (see [`MediaCacheConfig`]).
    pub fn media_cache(mut self, config: MediaCacheConfig) -> Self {
        self.media_cache = config;
        self
    }

    /// Bounds of the on-demand video cache (default [`MediaCacheConfig::video_default`]:
    /// 512 MiB, 128 MiB per track; see [`crate::play::video`]).
    pub fn video_cache(mut self, config: MediaCacheConfig) -> Self {
        self.video_cache = config;
        self
    }

    /// Starts the shard thread.
    pub fn build(self) -> Result<Engine, EngineError> {
        if self.check_ffmpeg {
            self.ffmpeg.check()?;
        }
        if self.bind.is_some_and(|b| b.ip().is_unspecified()) {
            return Err(EngineError::InvalidConfig(
                "bind address must be a concrete ip (str0m matches STUN destinations against it)",
            ));
        }
        let certs = CertPool::start(self.cert_pool)?;
        // One validated DTLS configuration for every call of this engine.
        let crypto = CallCrypto::new(CryptoOptions::default())?.provider();
        let (ev_tx, ev_rx) = bounded(self.event_queue);
        // One socket pool for every shard: each shard sends and receives on all of it.
        let pool = Arc::new(SocketPool::new(self.bind, self.shards)?);
        let (forward_tx, forward_rx): (Vec<_>, Vec<_>) =
            (0..self.shards).map(|_| bounded(FORWARD_QUEUE)).unzip();
        // One wake-up per shard: the API (and other shards' forwarding) pokes it after
        // queueing work, so a command is handled at once, not at the next poll.
        let wakes: Vec<Arc<Notify>> = (0..self.shards).map(|_| Arc::new(Notify::new())).collect();
        let mut shards = Vec::with_capacity(self.shards);
        for (index, forwarded) in forward_rx.into_iter().enumerate() {
            let (cmd_tx, cmd_rx) = bounded(self.command_queue);
            let config = ShardConfig {
                index,
                receive_audio: self.receive_audio,
                send_path: self.send_path,
                pool: pool.clone(),
                forward: forward_tx.clone(),
                forwarded,
                wakes: wakes.clone(),
            };
            let (ready_tx, ready_rx) = bounded(1);
            let events = ev_tx.clone();
            let stopped = Arc::new(AtomicBool::new(false));
            let stopped_flag = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringcast-shard-{index}"))
                .spawn(move || crate::shard::run(config, cmd_rx, events, ready_tx, stopped_flag))?;
            match ready_rx.recv_timeout(REPLY_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(EngineError::Io(e)),
                Err(_) => return Err(EngineError::ShardGone),
            }
            shards.push(ShardHandle {
                commands: cmd_tx,
                wake: wakes.get(index).cloned().unwrap_or_default(),
                thread: Some(thread),
                stopped,
            });
        }
        let p2p = p2p::P2pSetups::new(self.seed)?;
        let seed = self.seed.unwrap_or_else(os_seed);
        Ok(Engine {
            p2p,
            shards,
            pool,
            events: ev_rx,
            connect_timeout: self.connect_timeout,
            ice: self.ice,
            pre_connect_delay: self.pre_connect_delay,
            certs,
            crypto,
            next_seed: AtomicU64::new(seed),
            video: crate::play::video::VideoHub::new(self.ffmpeg.clone(), self.video_cache),
            main_audio: presentation::MainAudio::default(),
            media: MediaHub::new(self.ffmpeg, self.media_cache),
        })
    }
}

#[derive(Debug)]
struct ShardHandle {
    commands: Sender<Request>,
    /// Wakes the shard's loop after a request is queued.
    wake: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
    /// Set by the shard once its calls, sockets and rings are gone (its thread then ends).
    stopped: Arc<AtomicBool>,
}

/// Options of a group call ([`Engine::create_call_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// Send a camera track with this codec (a single layer, with RTX). `None`: audio only.
    pub video: Option<ringcast_core::media::video::VideoCodec>,
}

impl CallOptions {
    /// Audio only.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a camera track of `codec`.
    pub fn video(mut self, codec: ringcast_core::media::video::VideoCodec) -> Self {
        self.video = Some(codec);
        self
    }
}

/// The engine handle. Cheap to share by reference across threads; dropping it stops the shard.
#[derive(Debug)]
pub struct Engine {
    shards: Vec<ShardHandle>,
    pool: Arc<SocketPool>,
    events: Receiver<EngineEvent>,
    connect_timeout: Duration,
    ice: IceTimings,
    pre_connect_delay: Duration,
    certs: CertPool,
    crypto: Arc<CryptoProvider>,
    next_seed: AtomicU64,
    /// 1:1 calls' key exchanges and pre-connect settings, tone bitrate knobs.
    p2p: p2p::P2pSetups,
    /// Decodes of files, URLs and commands, shared by the calls that play them.
    media: MediaHub,
    /// Video encoders of files and URLs, shared by the calls that show them.
    video: crate::play::video::VideoHub,
    /// The main connections' audio answers, for their presentations.
    main_audio: presentation::MainAudio,
}

impl Engine {
    /// A builder with defaults.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The event channel.
    pub fn events(&self) -> &Receiver<EngineEvent> {
        &self.events
    }

    /// The shard that owns `chat_id` for the call's whole life: a multiplicative hash spreads
    /// sequential and Telegram-style (-100...) ids evenly.
    pub(crate) fn shard_of(&self, chat_id: i64) -> usize {
        let h = (chat_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h >> 32) % self.shards.len() as u64) as usize
    }

    pub(crate) fn request<T>(
        &self,
        shard: usize,
        make: impl FnOnce(Sender<T>) -> Request,
    ) -> Result<T, EngineError> {
        let handle = self.shards.get(shard).ok_or(EngineError::ShardGone)?;
        let (tx, rx) = bounded(1);
        match handle.commands.try_send(make(tx)) {
            Ok(()) => handle.wake.notify_one(),
            Err(TrySendError::Full(_)) => return Err(EngineError::QueueFull),
            Err(TrySendError::Disconnected(_)) => return Err(EngineError::ShardGone),
        }
        rx.recv_timeout(REPLY_TIMEOUT).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => EngineError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => EngineError::ShardGone,
        })
    }

    /// A fresh seed per call, spread so calls never share ICE credentials or SSRCs.
    fn next_call_seed(&self) -> u64 {
        self.next_seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
    }

    /// Creates a call for `chat_id` and returns its join payload JSON (the `params` of
    /// `phone.joinGroupCall`). Fails with [`EngineError::ConnectionExists`] if the chat has a
    /// live call.
    pub fn create_call(&self, chat_id: i64) -> Result<String, EngineError> {
        self.create_call_with(chat_id, CallOptions::default())
    }

    /// [`Engine::create_call`] with options: a camera track ([`CallOptions::video`]) makes
    /// the join payload announce the video SSRC and its RTX SSRC (one `FID` group), and
    /// [`Engine::connect`] takes the codec's payload types from the answer.
    pub fn create_call_with(
        &self,
        chat_id: i64,
        options: CallOptions,
    ) -> Result<String, EngineError> {
        presentation::check_chat_id(chat_id)?;
        let mut config = self.call_config()?;
        config.video = options.video;
        self.request(self.shard_of(chat_id), |reply| Request::Create {
            chat_id,
            config,
            reply,
        })?
    }

    /// A group call's configuration with the engine's settings, a fresh seed and certificate.
    fn call_config(&self) -> Result<CallConfig, EngineError> {
        let mut config = CallConfig::new(self.next_call_seed(), self.certs.take()?);
        config.crypto = Some(self.crypto.clone());
        config.connect_timeout = self.connect_timeout;
        config.ice = self.ice;
        config.pre_connect_delay = self.pre_connect_delay;
        Ok(config)
    }

    /// Applies the SFU's answer (`updateGroupCallConnection.params.data`) and starts
    /// connecting. The outcome arrives as [`EventKind::ConnectionChanged`].
    pub fn connect(&self, chat_id: i64, response_json: &str) -> Result<(), EngineError> {
        let response =
            ringcast_core::signaling::group::JoinResponse::parse(response_json.as_bytes())?;
        self.main_audio.remember(chat_id, &response);
        self.request(self.shard_of(chat_id), |reply| Request::Connect {
            chat_id,
            response: Box::new(response),
            reply,
        })?
    }

    /// Plays `source` on the call (group or 1:1), replacing what it played. A 1:1 call that
    /// is not connected yet keeps it and starts it when it connects.
    ///
    /// A [`MediaSource`](crate::MediaSource) (file, URL, shell command) is opened here: this waits for its first
    /// frame, and an input that cannot be played is an error here
    /// ([`SourceError::Decoder`] with ffmpeg's words); one that fails later ends the track
    /// with [`EventKind::StreamEnded`]. The call stays connected either way.
    pub fn set_stream_sources(
        &self,
        chat_id: i64,
        source: impl Into<StreamSource>,
    ) -> Result<(), EngineError> {
        let source = self.open_source(chat_id, source.into())?;
        self.command(chat_id, ringcast_core::Command::SetSource(source))
    }

    /// Shows `source` (a file or URL with a video stream) on the call's camera track, encoded
    /// as `params` say, replacing what it showed. One ffmpeg encodes each distinct source and
    /// parameters for every call showing it (see [`crate::play::video`]); this waits for its
    /// first frame. The call must have been created with [`CallOptions::video`] of the same
    /// codec ([`EngineError::Call`] otherwise).
    pub fn set_video_source(
        &self,
        chat_id: i64,
        source: crate::MediaSource,
        params: crate::VideoParams,
    ) -> Result<(), EngineError> {
        let source = self.video.open(source, params)?;
        self.command(chat_id, ringcast_core::Command::SetVideoSource(source))
    }

    /// Starts an encoder for raw yuv420p frames the application writes (ntgcalls' `EXTERNAL`
    /// video source), encoded as `params` say; show it with [`Engine::set_video_writer`].
    ///
    /// # Errors
    /// [`SourceError::InvalidArgument`](crate::SourceError::InvalidArgument) for parameters
    /// out of range.
    pub fn video_writer(
        &self,
        params: crate::VideoParams,
    ) -> Result<crate::VideoWriter, EngineError> {
        Ok(self.video.writer(params)?)
    }

    /// Shows what `writer` is given on the call's camera track (from its last key frame),
    /// replacing what it showed. Any number of calls can show one writer: one encoder.
    pub fn set_video_writer(
        &self,
        chat_id: i64,
        writer: &crate::VideoWriter,
    ) -> Result<(), EngineError> {
        let source = self.video.open_writer(writer);
        self.command(chat_id, ringcast_core::Command::SetVideoSource(source))
    }

    /// Stops showing video on the camera track (the source is dropped).
    pub fn clear_video_source(&self, chat_id: i64) -> Result<(), EngineError> {
        self.command(chat_id, ringcast_core::Command::ClearVideoSource)
    }

    /// Stops sending video while its source runs on (ntgcalls' `video_stopped`).
    pub fn stop_video(&self, chat_id: i64) -> Result<(), EngineError> {
        self.command(chat_id, ringcast_core::Command::StopVideo)
    }

    /// Undoes [`Engine::stop_video`]; the picture returns at the next key frame.
    pub fn start_video(&self, chat_id: i64) -> Result<(), EngineError> {
        self.command(chat_id, ringcast_core::Command::StartVideo)
    }

    /// Receives another participant's video in a group call (ntgcalls' `add_incoming_video`):
    /// `endpoint` and `ssrc_groups` are the participant's `video.endpoint` and
    /// `video.source_groups` from Telegram's participant updates. The call asks the SFU for
    /// it over the data channel (opened by the first source) and delivers each reassembled
    /// frame as [`EventKind::VideoReceived`]. Adding an endpoint again replaces its SSRCs.
    ///
    /// # Errors
    /// [`EngineError::ConnectionNotFound`] for an unknown call; a call error wrapping
    /// [`crate::IncomingVideoError`] past the bounds (16 sources of 4 layers).
    pub fn add_incoming_video(
        &self,
        chat_id: i64,
        endpoint: &str,
        ssrc_groups: &[crate::SsrcGroup],
    ) -> Result<(), EngineError> {
        self.command(
            chat_id,
            ringcast_core::Command::AddIncomingVideo {
                endpoint: endpoint.to_owned(),
                ssrc_groups: ssrc_groups.to_vec(),
            },
        )
    }

    /// Stops receiving `endpoint`'s video (ntgcalls' `remove_incoming_video`); the SFU is told
    /// at once. Removing an endpoint that is not received is not an error.
    pub fn remove_incoming_video(&self, chat_id: i64, endpoint: &str) -> Result<(), EngineError> {
        self.command(
            chat_id,
            ringcast_core::Command::RemoveIncomingVideo {
                endpoint: endpoint.to_owned(),
            },
        )
    }

    /// Counters of the video encoders.
    pub fn video_stats(&self) -> crate::VideoStats {
        self.video.stats()
    }

    /// Pauses sending; [`Engine::time`] stops.
    pub fn pause(&self, chat_id: i64) -> Result<(), EngineError> {
        self.command(chat_id, ringcast_core::Command::Pause)
    }

    /// Resumes after [`Engine::pause`].
    pub fn resume(&self, chat_id: i64) -> Result<(), EngineError> {
        self.command(chat_id, ringcast_core::Command::Resume)
    }

    /// Sends silence instead of the source (the source keeps advancing).
    pub fn mute(&self, chat_id: i64) -> Result<(), EngineError> {
        self.command(chat_id, ringcast_core::Command::Mute)
    }

    /// Undoes [`Engine::mute`].
    pub fn unmute(&self, chat_id: i64) -> Result<(), EngineError> {
        self.command(chat_id, ringcast_core::Command::Unmute)
    }

    /// Ends the call (a 1:1 call hangs up: DTLS close_notify); it is reaped and the id can be
    /// used again.
    pub fn stop(&self, chat_id: i64) -> Result<(), EngineError> {
        let result = self.command(chat_id, ringcast_core::Command::Stop);
        // Its presentation, if any, ends with it (as in ntgcalls).
        if result.is_ok() {
            let _ = self.stop_presentation(chat_id);
        }
        self.main_audio.forget(chat_id);
        // Stopped now, or already gone on its shard: either way nothing is left to keep.
        self.p2p_forget(chat_id);
        result
    }

    /// Gives a command to a group or 1:1 call; a 1:1 call still setting up keeps it for
    /// `connect_p2p`.
    fn command(&self, chat_id: i64, command: ringcast_core::Command) -> Result<(), EngineError> {
        let mut command = Some(command);
        if self.p2p_pending_command(chat_id, &mut command) {
            return Ok(());
        }
        let Some(command) = command else {
            return Ok(());
        };
        self.request(self.shard_of(chat_id), |reply| Request::Command {
            chat_id,
            command,
            reply,
        })?
    }

    /// Position in what the call plays (ntgcalls' `time`): where the source started (its
    /// seek offset) plus what was played of it; stops while paused, starts again with each
    /// new source.
    pub fn time(&self, chat_id: i64) -> Result<Duration, EngineError> {
        let info = self.call_info(chat_id)?;
        Ok(Duration::from_micros(
            info.stats.position_samples * 1_000_000 / 48_000,
        ))
    }

    /// Counters of the decodes of files, URLs and commands and of the on-demand cache.
    pub fn media_stats(&self) -> MediaStats {
        self.media.stats()
    }

    /// Test-only fault hook: the next processing of call `chat_id` (group or 1:1) panics inside
    /// the call's guard, as a bug in it would. The call ends with
    /// [`EndReason::Panicked`](crate::EndReason::Panicked) and a
    /// [`EventKind::ConnectionChanged`](crate::EventKind::ConnectionChanged) event; the shard
    /// and its other calls go on. For tests of that guarantee; not part of the API.
    #[doc(hidden)]
    pub fn inject_panic(&self, chat_id: i64) -> Result<(), EngineError> {
        self.request(self.shard_of(chat_id), |reply| Request::InjectPanic {
            chat_id,
            reply,
        })?
    }

    /// The ffmpeg this engine decodes with.
    pub fn ffmpeg(&self) -> &Ffmpeg {
        self.media.ffmpeg()
    }

    /// Certificates waiting in the pool (see [`EngineBuilder::cert_pool`]).
    pub fn cert_pool_ready(&self) -> usize {
        self.certs.ready()
    }

    /// Certificates generated on the spot because the pool was empty.
    pub fn certs_generated_inline(&self) -> u64 {
        self.certs.generated_inline.load(Ordering::Relaxed)
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The call's connection state (ntgcalls' name, kept for porting).
    pub fn get_state(&self, chat_id: i64) -> Result<CallState, EngineError> {
        Ok(self.call_info(chat_id)?.state)
    }

    /// The SSRC of the call's outgoing audio.
    pub fn audio_ssrc(&self, chat_id: i64) -> Result<u32, EngineError> {
        Ok(self.call_info(chat_id)?.ssrc)
    }

    /// One call's state, media state and counters.
    pub fn call_info(&self, chat_id: i64) -> Result<CallInfo, EngineError> {
        self.request(self.shard_of(chat_id), |reply| Request::Info {
            chat_id,
            reply,
        })?
        .ok_or(EngineError::ConnectionNotFound(chat_id))
    }

    /// Every live call, from every shard (presentations excluded:
    /// [`Engine::presentation_info`]).
    pub fn calls(&self) -> Result<Vec<CallInfo>, EngineError> {
        let mut all = Vec::new();
        for shard in 0..self.shards.len() {
            all.extend(self.request(shard, |reply| Request::List { reply })?);
        }
        // Presentations are listed by `presentation_info`, not as calls of their own.
        all.retain(|c| !split_call_id(c.chat_id).1);
        Ok(all)
    }

    /// Engine-wide counters, added up over the shards.
    pub fn stats(&self) -> Result<EngineStats, EngineError> {
        let mut total = EngineStats {
            shards: self.shards.len() as u64,
            sockets: self.pool.len() as u64,
            ..EngineStats::default()
        };
        for shard in 0..self.shards.len() {
            let s = self.request(shard, |reply| Request::Stats { reply })?;
            let e = &s.endpoint;
            total.calls += e.calls;
            total.p2p_calls += e.p2p_calls;
            total.datagrams_received += e.datagrams_received;
            total.datagrams_sent += e.datagrams_sent;
            total.packets_sent += e.packets_sent;
            total.dropped_unroutable += e.dropped_unroutable;
            total.dropped_by_call += e.dropped_by_call;
            total.dropped_events += e.dropped_events;
            total.calls_reaped += e.calls_reaped;
            total.calls_panicked += e.calls_panicked;
            total.lateness.merge(&e.lateness);
            total.lateness_causes.merge(&s.causes);
            total.dropped_rx_queue_full += s.dropped_rx_queue_full;
            total.send_errors += s.send_errors;
            total.dropped_send_buffer_full += s.dropped_send_buffer_full;
            total.forwarded_between_shards += s.forwarded_out;
            total.dropped_forward_full += s.dropped_forward_full;
        }
        Ok(total)
    }

    /// Stops the shard and waits for it.
    pub fn shutdown(mut self) {
        self.stop_shard();
    }

    fn stop_shard(&mut self) {
        // A full queue still gets the shutdown through: a shard also exits when its command
        // sender is gone, which happens when `self` drops.
        for s in &self.shards {
            let _ = s.commands.try_send(Request::Shutdown);
            s.wake.notify_one();
        }
        // Wait (bounded) until every shard thread has ended (its calls, sockets and rings are
        // gone with it; see `shard::run`) and join it. A thread still running at the deadline
        // is detached, and said so.
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        for s in &mut self.shards {
            while s.thread.as_ref().is_some_and(|t| !t.is_finished())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            match s.thread.take() {
                Some(t) if t.is_finished() => {
                    let _ = t.join();
                }
                Some(_) => tracing::warn!(
                    "a shard did not stop within {STOP_TIMEOUT:?} (calls ended: {}); detached",
                    s.stopped.load(Ordering::Acquire)
                ),
                None => {}
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_shard();
    }
}

/// Default size of the DTLS certificate pool.
const DEFAULT_CERT_POOL: usize = 64;

/// DTLS certificates made ahead of time by a background thread. Each call gets its own
/// certificate (as libwebrtc-based clients do); a burst of calls takes them from the pool
/// instead of waiting on key generation, and generates inline only when the pool is dry.
#[derive(Debug)]
struct CertPool {
    ready: Option<Receiver<DtlsCert>>,
    generated_inline: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl CertPool {
    fn start(size: usize) -> Result<Self, EngineError> {
        if size == 0 {
            return Ok(Self {
                ready: None,
                generated_inline: AtomicU64::new(0),
                thread: None,
            });
        }
        let (tx, rx) = bounded(size);
        let thread = std::thread::Builder::new()
            .name("ringcast-certs".to_owned())
            .spawn(move || {
                // Ends when the engine drops the receiver.
                while let Ok(cert) = generate_cert() {
                    if tx.send(cert).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            ready: Some(rx),
            generated_inline: AtomicU64::new(0),
            thread: Some(thread),
        })
    }

    fn ready(&self) -> usize {
        self.ready.as_ref().map_or(0, Receiver::len)
    }

    fn take(&self) -> Result<DtlsCert, EngineError> {
        if let Some(cert) = self.ready.as_ref().and_then(|rx| rx.try_recv().ok()) {
            return Ok(cert);
        }
        self.generated_inline.fetch_add(1, Ordering::Relaxed);
        generate_cert()
    }
}

impl Drop for CertPool {
    fn drop(&mut self) {
        // Dropping the receiver makes the generator's next send fail, so it exits.
        self.ready = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fresh self-signed DTLS certificate.
fn generate_cert() -> Result<DtlsCert, EngineError> {
    ringcast_core::crypto::generate_certificate().ok_or(EngineError::Randomness(
        "dtls certificate generation failed",
    ))
}

/// A seed from the OS: std's `RandomState` is keyed from OS randomness per process.
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5249_4E47_4341_5354);
    h.finish()
}
