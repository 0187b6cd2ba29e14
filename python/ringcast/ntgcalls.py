"""ntgcalls' Python surface (3.0.x) over the ringcast engine.

py-tgcalls 3.0.x imports ``ntgcalls``; after :func:`ringcast.install_as_ntgcalls` that name is
this module, and py-tgcalls runs unchanged on ringcast::

    import ringcast
    ringcast.install_as_ntgcalls()      # before ``import pytgcalls``
    from pytgcalls import PyTgCalls

It mirrors ntgcalls 3.0.5 as py-tgcalls uses it (shared/docs/ntgcalls-python-surface.md):

- every ``NTgCalls`` instance method except ``on_*`` returns an :class:`asyncio.Future` bound
  to the loop ``asyncio.get_event_loop()`` returns at call time; the engine work runs on a
  worker thread with the GIL released, and errors are raised when the future is awaited;
- callbacks (``on_stream_end``, ``on_connection_change``, ``on_upgrade``,
  ``on_signaling_data``, ``on_update_emojis``) are called from a native thread with no running
  loop, as ntgcalls calls them; a callback that raises is logged (logger ``ringcast.ntgcalls``)
  and the next event is delivered all the same;
- ``stop`` of an unknown id resolves to None, and a user ``stop`` emits no connection change;
- the enums are :class:`enum.IntEnum` (hashable, ``.name``/``.value``, members are instances of
  their class), the data classes have read/write fields and ntgcalls' constructors, and the
  exceptions are ntgcalls' 20 classes under :class:`BaseRTCException`.

Video: a camera or screen from a SHELL command (raw yuv420p frames, encoded once per
distinct command, VP8) or EXTERNAL (frames given to ``send_external_frame``) is sent; the
screen goes to the presentation connection (``init_presentation`` /
``connect(.., is_presentation=True)`` / ``stop_presentation``), its own transport,
certificate and SSRCs.

What ringcast cannot do raises ntgcalls' own exception types when it is used: receiving
video, EXTERNAL audio, capture devices, STREAM/RTMP broadcast mode and end-to-end conference
calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import os
import resource
import shlex
import threading
import time as _time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import _native

__all__ = [
    "NTgCalls",
    # exceptions
    "BaseRTCException", "ConnectionError", "ConnectionNotFound", "ConnectionException",
    "CryptoError", "FFmpegError", "FileError", "InvalidParams", "MediaDeviceError",
    "MediaException", "RTCConnectionNeeded", "RTCException", "RTMPStreamingUnsupported",
    "SdpParseException", "ShellError", "SignalingError", "SignalingException",
    "SignalingUnsupported", "TelegramServerError", "TransportParseException",
    # enums
    "StreamMode", "StreamDevice", "StreamType", "StreamStatus", "MediaSource",
    "ConnectionState", "ConnectionKind", "ConnectionMode", "CallType", "VideoRotation",
    "MediaSegmentPartStatus", "MediaSegmentQuality",
    # data classes
    "AudioDescription", "VideoDescription", "MediaDescription", "MediaState",
    "ConnectionInfo", "CallInfo", "Frame", "FrameData", "DhConfig", "AuthParams", "RTCServer",
    "Protocol", "SsrcGroup", "SsrcMapping", "SegmentPartRequest", "SubchainRequest",
    "ConferenceJoinParams", "DeviceInfo", "MediaDevices", "RemoteSource", "ParticipantsRequest",
]

#: The ntgcalls version this module stands in for (py-tgcalls requires ``>=3.0.0,<4``).
__version__ = "3.0.5"

log = logging.getLogger("ringcast.ntgcalls")

# --------------------------------------------------------------------------------------------
# Exceptions: every one derives directly from BaseRTCException, and ConnectionError is not the
# builtin one (as in ntgcalls).


class BaseRTCException(Exception):
    """Base of every ntgcalls exception."""


class ConnectionError(BaseRTCException):  # noqa: A001 - ntgcalls' own name
    """A call cannot do this now (exists already, wrong order, engine busy...)."""


class ConnectionNotFound(BaseRTCException):
    """No call with this id."""


class ConnectionException(BaseRTCException):
    """A connection-level failure."""


class CryptoError(BaseRTCException):
    """A 1:1 key exchange step failed its checks."""


class FFmpegError(BaseRTCException):
    """Raised by py-tgcalls itself when ffprobe/ffmpeg fail."""


class FileError(BaseRTCException):
    """A FILE source could not be opened."""


class InvalidParams(BaseRTCException):
    """An argument ringcast cannot use."""


class MediaDeviceError(BaseRTCException):
    """Capture or playback devices (ringcast has none)."""


class MediaException(BaseRTCException):
    """A media feature ringcast does not implement."""


class RTCConnectionNeeded(BaseRTCException):
    """The call must be connected over RTC first."""


class RTCException(BaseRTCException):
    """The engine failed (shard gone, timeout)."""


class RTMPStreamingUnsupported(BaseRTCException):
    """STREAM/RTMP broadcast mode (ringcast joins group calls over RTC only)."""


class SdpParseException(BaseRTCException):
    """An SDP could not be parsed."""


class ShellError(BaseRTCException):
    """A SHELL source's command failed."""


class SignalingError(BaseRTCException):
    """1:1 signaling failed."""


class SignalingException(BaseRTCException):
    """1:1 signaling failed."""


class SignalingUnsupported(BaseRTCException):
    """No common 1:1 protocol version."""


class TelegramServerError(BaseRTCException):
    """Raised by py-tgcalls when a connection fails (it retries)."""


class TransportParseException(BaseRTCException):
    """The SFU's answer could not be parsed."""


# --------------------------------------------------------------------------------------------
# Enums (ntgcalls' values).


class _Enum(enum.IntEnum):
    """An int enum that prints as ``Class.MEMBER`` (as ntgcalls' do)."""

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


class StreamMode(_Enum):
    """Direction of a stream: what the call sends (CAPTURE) or receives (PLAYBACK)."""

    CAPTURE = 0
    PLAYBACK = 1


class StreamDevice(_Enum):
    """Which slot of a MediaDescription."""

    MICROPHONE = 0
    SPEAKER = 1
    CAMERA = 2
    SCREEN = 3


class StreamType(_Enum):
    """Audio or video."""

    AUDIO = 0
    VIDEO = 1


class StreamStatus(_Enum):
    """State of a call's stream in ``calls()``."""

    ACTIVE = 0
    PAUSED = 1
    IDLING = 2


class MediaSource(_Enum):
    """Where a description's media comes from."""

    UNKNOWN = 0
    FILE = 1
    SHELL = 2
    FFMPEG = 4
    DEVICE = 8
    DESKTOP = 16
    EXTERNAL = 32


class ConnectionState(_Enum):
    """A call's connection state (``on_connection_change``)."""

    CONNECTING = 1
    CONNECTED = 2
    FAILED = 4
    TIMEOUT = 8
    CLOSED = 16


class ConnectionKind(_Enum):
    """Which connection of a chat: the call or its presentation."""

    NORMAL = 0
    PRESENTATION = 1


class ConnectionMode(_Enum):
    """How a group call gets its media: RTC, or Telegram's broadcast modes."""

    NONE = 0
    RTC = 1
    STREAM = 2
    RTMP = 3


class CallType(_Enum):
    """Group, 1:1 (P2P = OUTGOING | INCOMING) or conference."""

    GROUP = 1
    OUTGOING = 2
    INCOMING = 4
    P2P = 6
    CONFERENCE = 8


class VideoRotation(_Enum):
    """Rotation of a video frame."""

    VIDEO_ROTATION_0 = 0
    VIDEO_ROTATION_90 = 90
    VIDEO_ROTATION_180 = 180
    VIDEO_ROTATION_270 = 270


class MediaSegmentPartStatus(_Enum):
    """Status of a broadcast segment part (STREAM mode)."""

    NOT_READY = 0
    RESYNC_NEEDED = 1
    DOWNLOADING = 2
    SUCCESS = 3


class MediaSegmentQuality(_Enum):
    """Video quality of a broadcast segment (STREAM mode)."""

    NONE = 0
    THUMBNAIL = 1
    MEDIUM = 2
    FULL = 3


# ntgcalls also exports every member at module level (``ntgcalls.CAPTURE``...).
for _enum in (
    StreamMode, StreamDevice, StreamType, StreamStatus, MediaSource, ConnectionState,
    ConnectionKind, ConnectionMode, CallType, VideoRotation, MediaSegmentPartStatus,
    MediaSegmentQuality,
):
    for _member in _enum:
        globals().setdefault(_member.name, _member)
del _enum, _member

# --------------------------------------------------------------------------------------------
# Data classes (read/write fields, ntgcalls' constructors).


@dataclass
class AudioDescription:
    """An audio stream: ``input`` is a command line (SHELL) or a raw s16le PCM file (FILE)."""

    media_source: MediaSource
    sample_rate: int
    channel_count: int
    input: str
    keep_open: bool = False


@dataclass
class VideoDescription:
    """A video stream (a SHELL camera is sent; see the module's documentation)."""

    media_source: MediaSource
    width: int
    height: int
    fps: int
    input: str
    keep_open: bool = False


@dataclass
class MediaDescription:
    """The four slots of a call's media. Always truthy (py-tgcalls tests it)."""

    microphone: Optional[AudioDescription] = None
    speaker: Optional[AudioDescription] = None
    camera: Optional[VideoDescription] = None
    screen: Optional[VideoDescription] = None

    def __bool__(self) -> bool:
        return True


@dataclass
class MediaState:
    """What ``on_upgrade`` and ``get_state`` report."""

    muted: bool = False
    video_paused: bool = False
    video_stopped: bool = True
    presentation_paused: bool = False
    presentation_stopped: bool = True


@dataclass
class ConnectionInfo:
    """What ``on_connection_change`` reports."""

    state: ConnectionState
    kind: ConnectionKind = ConnectionKind.NORMAL


@dataclass
class CallInfo:
    """One entry of ``calls()``."""

    playback: StreamStatus = StreamStatus.IDLING
    capture: StreamStatus = StreamStatus.IDLING


@dataclass
class FrameData:
    """Timing and geometry of a frame."""

    absolute_capture_timestamp_ms: int = 0
    rotation: VideoRotation = VideoRotation.VIDEO_ROTATION_0
    width: int = 0
    height: int = 0


@dataclass
class Frame:
    """A frame of ``on_frames``."""

    ssrc: int = 0
    data: bytes = b""
    frame_data: FrameData = field(default_factory=FrameData)


@dataclass
class DhConfig:
    """``messages.getDhConfig``: generator, prime, server randomness."""

    g: int
    p: bytes
    random: bytes


@dataclass
class AuthParams:
    """Result of ``exchange_keys``."""

    key_fingerprint: int = 0
    g_a_or_b: bytes = b""


@dataclass
class RTCServer:
    """A ``phoneConnectionWebrtc``/``phoneConnection`` entry."""

    id: int
    ipv4: str
    ipv6: str
    port: int
    username: Optional[str]
    password: Optional[str]
    turn: bool
    stun: bool
    tcp: bool
    peer_tag: Optional[bytes]


@dataclass
class Protocol:
    """The 1:1 call protocol this side offers (``phoneCallProtocol``)."""

    min_layer: int = 92
    max_layer: int = 92
    udp_p2p: bool = True
    udp_reflector: bool = False
    library_versions: List[str] = field(default_factory=list)


@dataclass
class SsrcGroup:
    """An SSRC group of a participant's video."""

    semantics: str = ""
    ssrcs: List[int] = field(default_factory=list)


@dataclass
class SsrcMapping:
    """A participant's audio SSRC."""

    user_id: int = 0
    ssrc: int = 0


@dataclass
class SegmentPartRequest:
    """A broadcast part request (STREAM mode; never made by ringcast)."""

    segment_id: int = 0
    part_id: int = 0
    limit: int = 0
    timestamp: int = 0
    quality_update: bool = False
    channel_id: int = 0
    quality: MediaSegmentQuality = MediaSegmentQuality.NONE


@dataclass
class SubchainRequest:
    """A conference block-chain request (never made by ringcast)."""

    subchain: int = 0
    height: int = 0
    limit: int = 0


@dataclass
class ConferenceJoinParams:
    """Result of ``init_conference`` (not supported by ringcast)."""

    payload: str = ""
    public_key: bytes = b""
    block: bytes = b""


@dataclass
class DeviceInfo:
    """A media device."""

    name: str = ""
    metadata: str = ""


@dataclass
class MediaDevices:
    """``get_media_devices()``: ringcast has none."""

    microphone: List[DeviceInfo] = field(default_factory=list)
    speaker: List[DeviceInfo] = field(default_factory=list)
    camera: List[DeviceInfo] = field(default_factory=list)
    screen: List[DeviceInfo] = field(default_factory=list)


@dataclass
class RemoteSource:
    """A remote participant's source (never reported by ringcast)."""

    ssrc: int = 0
    state: StreamStatus = StreamStatus.IDLING
    device: StreamDevice = StreamDevice.MICROPHONE


@dataclass
class ParticipantsRequest:
    """A request for participants' keys (conference; never made by ringcast)."""

    ssrcs: List[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Errors of the native engine, as ntgcalls' types.

_KIND_TO_EXCEPTION = {
    "not_found": ConnectionNotFound,
    "exists": ConnectionError,
    "order": ConnectionError,
    "stream_mode": RTMPStreamingUnsupported,
    "signaling": TransportParseException,
    "file": FileError,
    "shell": ShellError,
    "ffmpeg": ShellError,
    "invalid": InvalidParams,
    "media": MediaException,
    "crypto": CryptoError,
    "p2p": SignalingError,
    "connection": ConnectionError,
    "engine": RTCException,
}


def _translate(error: _native.NativeError, chat_id: Optional[int] = None) -> BaseRTCException:
    kind, message = error.args[0], error.args[1]
    if kind == "not_found" and chat_id is not None:
        message = f'Connection with chat id "{chat_id}" not found'
    elif kind == "exists":
        message = "Connection cannot be initialized more than once."
    elif kind == "stream_mode":
        message = (
            "ringcast joins group calls over RTC only: this chat answered in STREAM/RTMP "
            f"(broadcast) mode, which ringcast does not implement ({message})"
        )
    return _KIND_TO_EXCEPTION.get(kind, RTCException)(message)


def _connection_state(state: str) -> ConnectionState:
    """ntgcalls' ConnectionState of the engine's state name (``ended:failed`` and any other
    end: FAILED)."""
    return {
        "connecting": ConnectionState.CONNECTING,
        "connected": ConnectionState.CONNECTED,
        "ended:stopped": ConnectionState.CLOSED,
        "ended:timeout": ConnectionState.TIMEOUT,
    }.get(state, ConnectionState.FAILED)


def _unless_gone(stop: Callable[[int], Any], call_id: int) -> None:
    """Runs ``stop(call_id)``; a call the engine no longer has (it ended by itself) is not an
    error."""
    try:
        stop(call_id)
    except _native.NativeError as e:
        if e.args[0] != "not_found":
            raise


def _unsupported(exc: type, what: str) -> BaseRTCException:
    return exc(f"ringcast does not support {what}")


# --------------------------------------------------------------------------------------------
# The engine.


class _Call:
    """What ntgcalls keeps about a call and the engine does not."""

    __slots__ = (
        "kind", "mode", "playing", "recording", "on_shard", "video", "presenting", "screen",
        "external", "g_b",
    )

    def __init__(self, kind: CallType) -> None:
        self.kind = kind
        self.mode = ConnectionMode.NONE
        self.playing = False
        self.recording = False
        # A camera source is set (MediaState.video_stopped is False).
        self.video = False
        # The presentation connection exists (init_presentation ran; it has not ended).
        self.presenting = False
        # The screen VideoDescription set for the presentation (shown once it exists).
        self.screen: Optional[VideoDescription] = None
        # Devices (CAMERA/SCREEN) fed by send_external_frame.
        self.external: set = set()
        # A 1:1 call is on a shard (and ends with an event) once connect_p2p ran.
        self.on_shard = kind == CallType.GROUP
        # The callee's own g_b (init_exchange's result): its AuthParams carry it, as ntgcalls'.
        self.g_b: Optional[bytes] = None


_CALLBACK_NAMES = (
    "stream_end", "upgrade", "connection_change", "signaling_data", "frames",
    "update_emojis", "request_broadcast_part", "request_broadcast_timestamp",
    "remote_source_change", "outbound_block", "request_participants", "subchain_request",
)


class NTgCalls:
    """ntgcalls' engine object, on ringcast. One instance runs any number of calls.

    Every method except ``on_*`` and the static ones returns an :class:`asyncio.Future` of the
    loop current at call time.
    """

    #: Worker threads that run engine calls (each waits with the GIL released).
    WORKERS = 16

    def __init__(self) -> None:
        self._engine = _native.Engine()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.WORKERS, thread_name_prefix="ringcast-ntgcalls"
        )
        self._lock = threading.Lock()
        self._calls: Dict[int, _Call] = {}
        # 1:1 calls stopped by the user whose Ended event is still to come (suppressed).
        self._stopping: Dict[int, int] = {}
        self._callbacks: Dict[str, Optional[Callable[..., Any]]] = dict.fromkeys(_CALLBACK_NAMES)
        self._cpu_mark = (_time.monotonic(), _cpu_seconds())
        me = weakref.ref(self)

        def on_event(chat_id: int, kind: str, a: Any, b: Any) -> None:
            owner = me()
            if owner is not None:
                owner._on_event(chat_id, kind, a, b)

        self._engine.set_callback(on_event)

    # -- plumbing --------------------------------------------------------------------------

    def _future(self, chat_id: Optional[int], work: Callable[[], Any]) -> "asyncio.Future[Any]":
        loop = asyncio.get_event_loop()

        def run() -> Any:
            try:
                return work()
            except _native.NativeError as e:
                raise _translate(e, chat_id) from None

        return asyncio.wrap_future(self._pool.submit(run), loop=loop)

    def _call(self, chat_id: int) -> _Call:
        with self._lock:
            call = self._calls.get(chat_id)
        if call is None:
            raise ConnectionNotFound(f'Connection with chat id "{chat_id}" not found')
        return call

    def _fire(self, name: str, *args: Any) -> None:
        callback = self._callbacks.get(name)
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # a raising callback is logged; the dispatcher goes on
            log.exception("ntgcalls callback on_%s raised", name)

    def _on_event(self, chat_id: int, kind: str, a: Any, b: Any) -> None:
        try:
            if kind in ("connection", "p2p_connection"):
                self._on_connection(chat_id, kind == "p2p_connection", a)
            elif kind == "presentation_connection":
                self._on_presentation_connection(chat_id, a)
            elif kind == "presentation_stream_end":
                with self._lock:
                    call = self._calls.get(chat_id)
                    if call is not None:
                        call.screen = None
                if b is not None:
                    log.warning("chat %s: the screen stream failed: %s", chat_id, b)
                self._fire("stream_end", chat_id, StreamType.VIDEO, StreamDevice.SCREEN)
            elif kind == "stream_end":
                video = a == "video"
                with self._lock:
                    call = self._calls.get(chat_id)
                    if call is not None:
                        if video:
                            call.video = False
                        else:
                            call.playing = False
                if b is not None:
                    log.warning("chat %s: the %s stream failed: %s", chat_id, a, b)
                if video:
                    self._fire("stream_end", chat_id, StreamType.VIDEO, StreamDevice.CAMERA)
                else:
                    self._fire("stream_end", chat_id, StreamType.AUDIO, StreamDevice.MICROPHONE)
            elif kind == "media":
                with self._lock:
                    call = self._calls.get(chat_id)
                    camera = call is not None and call.video
                    screen = call is not None and call.screen is not None
                # As ntgcalls reports it (observed): a mute also pauses the camera and the
                # presentation; the stopped flags say whether a source is set.
                muted = bool(b)
                self._fire("upgrade", chat_id, MediaState(
                    muted=muted,
                    video_paused=muted,
                    video_stopped=not camera,
                    presentation_paused=muted,
                    presentation_stopped=not screen,
                ))
            elif kind == "signaling":
                self._fire("signaling_data", chat_id, a)
        except Exception:
            log.exception("ringcast: delivering %s of chat %s failed", kind, chat_id)

    def _on_connection(self, chat_id: int, p2p: bool, state: str) -> None:
        if state not in ("connecting", "connected"):
            with self._lock:
                if state == "ended:stopped":
                    # A group call ends "stopped" only by the user's stop(): ntgcalls reports
                    # nothing then. A 1:1 call also ends so when the peer hangs up.
                    if not p2p:
                        return
                    pending = self._stopping.get(chat_id, 0)
                    if pending:
                        if pending == 1:
                            del self._stopping[chat_id]
                        else:
                            self._stopping[chat_id] = pending - 1
                        return
                ended = self._calls.pop(chat_id, None)
            if ended is not None and ended.recording:
                # Finish the recording's file off the dispatcher thread (it waits for ffmpeg).
                self._pool.submit(self._engine.stop_recording, chat_id)
        self._fire(
            "connection_change",
            chat_id,
            ConnectionInfo(_connection_state(state), ConnectionKind.NORMAL),
        )

    def _on_presentation_connection(self, chat_id: int, state: str) -> None:
        if state not in ("connecting", "connected"):
            with self._lock:
                call = self._calls.get(chat_id)
                if call is not None:
                    call.presenting = False
            if state == "ended:stopped":
                return  # stop_presentation (or the call's stop): ntgcalls reports nothing
        self._fire(
            "connection_change",
            chat_id,
            ConnectionInfo(_connection_state(state), ConnectionKind.PRESENTATION),
        )

    # -- static ----------------------------------------------------------------------------

    @staticmethod
    def ping() -> str:
        """ntgcalls' liveness check."""
        return "pong"

    @staticmethod
    def get_protocol() -> Protocol:
        """The 1:1 protocol ringcast offers: only the library versions it speaks."""
        return Protocol(92, 92, True, False, list(_native.library_versions()))

    @staticmethod
    def get_media_devices() -> MediaDevices:
        """Capture and playback devices: ringcast has none."""
        return MediaDevices()

    @staticmethod
    def enable_glib_loop(enable: bool) -> None:
        """No GLib loop in ringcast: accepted and ignored."""

    # -- callbacks ---------------------------------------------------------------------------

    def on_stream_end(self, callback: Callable[[int, StreamType, StreamDevice], Any]) -> None:
        """``callback(chat_id, StreamType, StreamDevice)`` when a source ends."""
        self._callbacks["stream_end"] = callback

    def on_upgrade(self, callback: Callable[[int, MediaState], Any]) -> None:
        """``callback(chat_id, MediaState)`` when pause/mute changes."""
        self._callbacks["upgrade"] = callback

    def on_connection_change(self, callback: Callable[[int, ConnectionInfo], Any]) -> None:
        """``callback(chat_id, ConnectionInfo)`` when a call connects, fails or closes."""
        self._callbacks["connection_change"] = callback

    def on_signaling_data(self, callback: Callable[[int, bytes], Any]) -> None:
        """``callback(user_id, bytes)``: signaling for ``phone.sendSignalingData``."""
        self._callbacks["signaling_data"] = callback

    def on_frames(self, callback: Callable[..., Any]) -> None:
        """Accepted; ringcast delivers no frames (EXTERNAL recording is not supported)."""
        self._callbacks["frames"] = callback

    def on_update_emojis(self, callback: Callable[[int, str], Any]) -> None:
        """``callback(user_id, emojis)`` once a 1:1 call's key is known."""
        self._callbacks["update_emojis"] = callback

    def on_request_broadcast_part(self, callback: Callable[..., Any]) -> None:
        """Accepted; never fires (no STREAM mode)."""
        self._callbacks["request_broadcast_part"] = callback

    def on_request_broadcast_timestamp(self, callback: Callable[..., Any]) -> None:
        """Accepted; never fires (no RTMP mode)."""
        self._callbacks["request_broadcast_timestamp"] = callback

    def on_remote_source_change(self, callback: Callable[..., Any]) -> None:
        """Accepted; never fires."""
        self._callbacks["remote_source_change"] = callback

    def on_outbound_block(self, callback: Callable[..., Any]) -> None:
        """Accepted; never fires (no conference calls)."""
        self._callbacks["outbound_block"] = callback

    def on_request_participants(self, callback: Callable[..., Any]) -> None:
        """Accepted; never fires (no conference calls)."""
        self._callbacks["request_participants"] = callback

    def on_subchain_request(self, callback: Callable[..., Any]) -> None:
        """Accepted; never fires (no conference calls)."""
        self._callbacks["subchain_request"] = callback

    # -- group calls ---------------------------------------------------------------------------

    def create_call(self, chat_id: int) -> "asyncio.Future[str]":
        """Creates a group call; resolves to the join payload for ``phone.joinGroupCall``."""

        def work() -> str:
            with self._lock:
                if chat_id in self._calls:
                    raise ConnectionError("Connection cannot be initialized more than once.")
            # Like ntgcalls, the join payload always announces a camera track (its SSRCs in
            # ssrc-groups); it is only sent when a camera source is set.
            payload = self._engine.create_call(chat_id, "vp8")
            with self._lock:
                self._calls[chat_id] = _Call(CallType.GROUP)
            return payload

        return self._future(chat_id, work)

    def connect(self, chat_id: int, params: str, is_presentation: bool) -> "asyncio.Future[None]":
        """Applies the SFU's answer; the outcome comes through ``on_connection_change``."""

        def work() -> None:
            call = self._call(chat_id)
            if is_presentation:
                if not call.presenting:
                    raise ConnectionError("Presentation not initialized")
                self._engine.connect_presentation(chat_id, params)
                return
            self._engine.connect(chat_id, params)
            call.mode = ConnectionMode.RTC

        return self._future(chat_id, work)

    def set_stream_sources(
        self, chat_id: int, mode: StreamMode, media: MediaDescription
    ) -> "asyncio.Future[None]":
        """Sets what the call sends (CAPTURE) or where what it hears goes (PLAYBACK)."""

        def work() -> None:
            call = self._call(chat_id)
            if mode == StreamMode.PLAYBACK:
                self._set_playback(chat_id, call, media)
            else:
                self._set_capture(chat_id, call, media)

        return self._future(chat_id, work)

    def _set_capture(self, chat_id: int, call: _Call, media: MediaDescription) -> None:
        camera = media.camera
        if camera is not None:
            self._show(chat_id, call, camera, presentation=False)
            call.video = True
        elif call.video:
            self._engine.clear_video(chat_id)
            call.video = False
            call.external.discard(StreamDevice.CAMERA)
        # The screen goes to the presentation connection; py-tgcalls sets it before
        # init_presentation, so it is kept and shown once the presentation exists.
        call.screen = media.screen
        if media.screen is not None and call.presenting:
            self._show(chat_id, call, media.screen, presentation=True)
        if media.speaker is not None:
            raise _unsupported(MediaDeviceError, "speaker devices")
        mic = media.microphone
        if mic is None:
            return
        source = mic.media_source
        if source == MediaSource.SHELL:
            self._engine.play(chat_id, "shell", mic.input, mic.sample_rate, mic.channel_count)
        elif source == MediaSource.FILE:
            if not os.path.isfile(mic.input):
                raise FileError(f'Unable to open the file located at "{mic.input}"')
            # ntgcalls' FILE is raw s16le PCM at the description's rate and channels.
            command = f"cat {shlex.quote(mic.input)}"
            self._engine.play(chat_id, "shell", command, mic.sample_rate, mic.channel_count)
        elif source in (MediaSource.DEVICE, MediaSource.DESKTOP):
            raise _unsupported(MediaDeviceError, "capture devices")
        elif source == MediaSource.EXTERNAL:
            raise _unsupported(MediaException, "EXTERNAL audio (send_external_frame)")
        else:
            raise InvalidParams(f"unsupported audio source {source!r}")
        call.playing = True

    def _show(
        self, chat_id: int, call: _Call, video: VideoDescription, presentation: bool
    ) -> None:
        """Shows a SHELL command's raw frames (encoded once per distinct command) or frames
        sent through ``send_external_frame`` (EXTERNAL) on the camera or the presentation."""
        device = StreamDevice.SCREEN if presentation else StreamDevice.CAMERA
        if video.media_source == MediaSource.SHELL:
            self._engine.show_video(
                chat_id, video.input, video.width, video.height, video.fps,
                presentation=presentation,
            )
            call.external.discard(device)
        elif video.media_source == MediaSource.EXTERNAL:
            self._engine.external_video(
                chat_id, video.width, video.height, video.fps, presentation=presentation
            )
            call.external.add(device)
        else:
            raise _unsupported(MediaDeviceError, f"{video.media_source.name} video sources")

    def _set_playback(self, chat_id: int, call: _Call, media: MediaDescription) -> None:
        if media.camera is not None or media.screen is not None:
            raise _unsupported(MediaException, "receiving video")
        mic = media.microphone if media.microphone is not None else media.speaker
        if mic is None:
            self._engine.stop_recording(chat_id)
            call.recording = False
            return
        if mic.media_source != MediaSource.SHELL:
            raise _unsupported(MediaException, f"{mic.media_source.name} recording sources")
        if mic.channel_count not in (1, 2):
            raise InvalidParams(f"recording channels must be 1 or 2, got {mic.channel_count}")
        self._engine.record(chat_id, _at_48k(mic.input, mic.sample_rate), mic.channel_count)
        call.recording = True

    def pause(self, chat_id: int) -> "asyncio.Future[bool]":
        """Pauses sending; resolves True if the call was not paused."""
        return self._toggle(chat_id, "pause", paused=True)

    def resume(self, chat_id: int) -> "asyncio.Future[bool]":
        """Resumes sending; resolves True if the call was paused."""
        return self._toggle(chat_id, "resume", paused=False)

    def mute(self, chat_id: int) -> "asyncio.Future[bool]":
        """Mutes (silence is sent); resolves True if the call was not muted."""
        return self._toggle(chat_id, "mute", muted=True)

    def unmute(self, chat_id: int) -> "asyncio.Future[bool]":
        """Unmutes; resolves True if the call was muted."""
        return self._toggle(chat_id, "unmute", muted=False)

    def _toggle(self, chat_id: int, op: str, **want: bool) -> "asyncio.Future[bool]":
        def work() -> bool:
            call = self._call(chat_id)
            if call.on_shard:
                _, _, paused, muted = self._engine.info(chat_id)
                now = {"paused": paused, "muted": muted}
                if all(now[k] == v for k, v in want.items()):
                    return False
            getattr(self._engine, op)(chat_id)
            return True

        return self._future(chat_id, work)

    def stop(self, chat_id: int) -> "asyncio.Future[None]":
        """Ends the call. An unknown id is not an error."""

        def work() -> None:
            with self._lock:
                call = self._calls.pop(chat_id, None)
                if call is not None and call.kind != CallType.GROUP and call.on_shard:
                    self._stopping[chat_id] = self._stopping.get(chat_id, 0) + 1
            _unless_gone(self._engine.stop, chat_id)

        return self._future(chat_id, work)

    def time(self, chat_id: int, mode: StreamMode) -> "asyncio.Future[int]":
        """Whole seconds played of the CAPTURE stream (0 before it starts); PLAYBACK: 0."""

        def work() -> int:
            call = self._call(chat_id)
            if mode == StreamMode.PLAYBACK or not call.on_shard:
                return 0
            return self._engine.time_us(chat_id) // 1_000_000

        return self._future(chat_id, work)

    def get_state(self, chat_id: int) -> "asyncio.Future[MediaState]":
        """The call's MediaState (``video_stopped`` False while a camera plays;
        ``presentation_stopped`` False while a screen source is set, as in ntgcalls: py-tgcalls
        then joins the presentation)."""

        def work() -> MediaState:
            call = self._call(chat_id)
            muted = False
            if call.on_shard:
                muted = self._engine.info(chat_id)[3]
            return MediaState(
                muted=muted,
                video_stopped=not call.video,
                presentation_stopped=call.screen is None,
            )

        return self._future(chat_id, work)

    def get_connection_mode(self, chat_id: int) -> "asyncio.Future[ConnectionMode]":
        """NONE before ``connect``, RTC after (ringcast has no STREAM/RTMP mode)."""
        return self._future(chat_id, lambda: self._call(chat_id).mode)

    def get_call_type(self, chat_id: int) -> "asyncio.Future[CallType]":
        """GROUP or P2P."""
        return self._future(chat_id, lambda: self._call(chat_id).kind)

    def calls(self) -> "asyncio.Future[Dict[int, CallInfo]]":
        """Every call, with the status of what it sends and records."""

        def work() -> Dict[int, CallInfo]:
            live = {row[0]: row for row in self._engine.calls()}
            out: Dict[int, CallInfo] = {}
            with self._lock:
                items = list(self._calls.items())
            for chat_id, call in items:
                row = live.get(chat_id)
                if call.on_shard and row is None:
                    continue  # ended in the meantime
                paused = bool(row and row[3])
                capture = (
                    StreamStatus.PAUSED if paused
                    else StreamStatus.ACTIVE if call.playing else StreamStatus.IDLING
                )
                playback = (
                    StreamStatus.ACTIVE
                    if call.recording and self._engine.is_recording(chat_id)
                    else StreamStatus.IDLING
                )
                out[chat_id] = CallInfo(playback=playback, capture=capture)
            return out

        return self._future(None, work)

    def cpu_usage(self) -> "asyncio.Future[float]":
        """The process's CPU use since the previous call, in percent of all cores."""

        def work() -> float:
            now, cpu = _time.monotonic(), _cpu_seconds()
            then, cpu_then = self._cpu_mark
            self._cpu_mark = (now, cpu)
            elapsed = max(now - then, 1e-6)
            return 100.0 * (cpu - cpu_then) / elapsed / (os.cpu_count() or 1)

        return self._future(None, work)

    def add_incoming_video(
        self, chat_id: int, user_id: int, endpoint: str, ssrc_groups: List[SsrcGroup]
    ) -> "asyncio.Future[int]":
        """Accepted and ignored here. The engine receives other participants' video
        (Rust: ``Engine::add_incoming_video``), but ntgcalls hands ``on_frames`` decoded I420
        frames and this layer has no decoder yet, so the SFU is not asked for any."""
        return self._future(chat_id, lambda: 0)

    def remove_incoming_video(self, chat_id: int, endpoint: str) -> "asyncio.Future[bool]":
        """Accepted and ignored (see ``add_incoming_video``)."""
        return self._future(chat_id, lambda: False)

    def update_audio_ssrc_mappings(
        self, chat_id: int, ssrc_groups: List[SsrcMapping]
    ) -> "asyncio.Future[None]":
        """Accepted and ignored."""
        return self._future(chat_id, lambda: None)

    def send_external_frame(
        self, chat_id: int, device: StreamDevice, data: bytes, frame_data: FrameData
    ) -> "asyncio.Future[None]":
        """A raw yuv420p frame for an EXTERNAL camera or screen (the description's size);
        encoded once, shown at the description's rate. EXTERNAL audio is not supported."""

        def work() -> None:
            call = self._call(chat_id)
            if device not in call.external:
                if device in (StreamDevice.CAMERA, StreamDevice.SCREEN):
                    raise InvalidParams(f"no EXTERNAL {device.name.lower()} source is set")
                raise _unsupported(MediaException, "EXTERNAL audio (send_external_frame)")
            # A full queue drops the frame (counted by the engine), as a late frame would be.
            self._engine.write_video_frame(
                chat_id, data, presentation=device == StreamDevice.SCREEN
            )

        return self._future(chat_id, work)

    def init_presentation(self, chat_id: int) -> "asyncio.Future[str]":
        """Opens the presentation (screen share) connection: its own transport, certificate
        and SSRCs; resolves to the payload for ``phone.joinGroupCallPresentation``."""

        def work() -> str:
            call = self._call(chat_id)
            if call.kind != CallType.GROUP or call.mode != ConnectionMode.RTC:
                raise RTCConnectionNeeded("Presentation connection requires RTC connection")
            if call.presenting:
                raise ConnectionError("Presentation already initialized")
            payload = self._engine.init_presentation(chat_id, "vp8")
            call.presenting = True
            if call.screen is not None:
                self._show(chat_id, call, call.screen, presentation=True)
            return payload

        return self._future(chat_id, work)

    def stop_presentation(self, chat_id: int) -> "asyncio.Future[None]":
        """Ends the presentation; ConnectionError('Presentation not initialized') without one."""

        def work() -> None:
            call = self._call(chat_id)
            if not call.presenting:
                raise ConnectionError("Presentation not initialized")
            call.presenting = False
            call.external.discard(StreamDevice.SCREEN)
            _unless_gone(self._engine.stop_presentation, chat_id)

        return self._future(chat_id, work)

    def send_broadcast_part(
        self, chat_id: int, segment_id: int, part_id: int, status: MediaSegmentPartStatus,
        quality_update: bool, data: Optional[bytes],
    ) -> "asyncio.Future[None]":
        """Not supported (STREAM mode)."""
        return self._raise(chat_id, _unsupported(RTMPStreamingUnsupported, "STREAM mode"))

    def send_broadcast_timestamp(self, chat_id: int, timestamp: int) -> "asyncio.Future[None]":
        """Not supported (RTMP mode)."""
        return self._raise(chat_id, _unsupported(RTMPStreamingUnsupported, "RTMP mode"))

    def init_conference(
        self, chat_id: int, user_id: int, last_block: Optional[bytes]
    ) -> "asyncio.Future[ConferenceJoinParams]":
        """Not supported (end-to-end conference calls)."""
        return self._raise(chat_id, _unsupported(ConnectionError, "end-to-end conference calls"))

    def apply_blocks(
        self, chat_id: int, subchain: int, next_offset: int, blocks: List[bytes],
        from_short_poll: bool,
    ) -> "asyncio.Future[None]":
        """Not supported (end-to-end conference calls)."""
        return self._raise(chat_id, _unsupported(ConnectionError, "end-to-end conference calls"))

    def finish_subchain_request(self, chat_id: int, subchain: int) -> "asyncio.Future[None]":
        """Not supported (end-to-end conference calls)."""
        return self._raise(chat_id, _unsupported(ConnectionError, "end-to-end conference calls"))

    def _raise(self, chat_id: int, error: BaseRTCException) -> "asyncio.Future[Any]":
        def work() -> Any:
            raise error

        return self._future(chat_id, work)

    # -- 1:1 calls -----------------------------------------------------------------------------

    def create_p2p_call(self, user_id: int) -> "asyncio.Future[None]":
        """Creates a 1:1 call with ``user_id``."""

        def work() -> None:
            with self._lock:
                if user_id in self._calls:
                    raise ConnectionError("Connection cannot be initialized more than once.")
            self._engine.create_p2p_call(user_id)
            with self._lock:
                self._calls[user_id] = _Call(CallType.P2P)

        return self._future(user_id, work)

    def init_exchange(
        self, user_id: int, dh_config: DhConfig, g_a_hash: Optional[bytes]
    ) -> "asyncio.Future[bytes]":
        """Resolves to ``g_a_hash`` (caller: ``g_a_hash`` None) or ``g_b`` (callee)."""

        def work() -> bytes:
            call = self._call(user_id)
            value = self._engine.init_exchange(
                user_id, dh_config.g, bytes(dh_config.p), bytes(dh_config.random),
                None if g_a_hash is None else bytes(g_a_hash),
            )
            if g_a_hash is not None:
                call.g_b = bytes(value)
            return value

        return self._future(user_id, work)

    def exchange_keys(
        self, user_id: int, g_a_or_b: bytes, fingerprint: int
    ) -> "asyncio.Future[AuthParams]":
        """Completes the key exchange; ``on_update_emojis`` then fires. ``g_a_or_b`` of the
        result is this side's own public value, as in ntgcalls: ``g_a`` for the caller (for
        ``phone.confirmCall``), ``g_b`` for the callee."""

        def work() -> AuthParams:
            call = self._call(user_id)
            key_fingerprint, g_a = self._engine.exchange_keys(user_id, bytes(g_a_or_b), fingerprint)
            self._emojis(user_id)
            return AuthParams(key_fingerprint, g_a if call.g_b is None else call.g_b)

        return self._future(user_id, work)

    def skip_exchange(
        self, user_id: int, encryption_key: bytes, is_outgoing: bool
    ) -> "asyncio.Future[None]":
        """Uses a key agreed elsewhere."""

        def work() -> None:
            self._call(user_id)
            self._engine.skip_exchange(user_id, bytes(encryption_key), is_outgoing)

        return self._future(user_id, work)

    def get_emojis_fingerprint(self, chat_id: int) -> "asyncio.Future[str]":
        """The four verification emojis of a 1:1 call's key, as one string."""
        return self._future(chat_id, lambda: "".join(self._engine.p2p_key(chat_id)[1]))

    def _emojis(self, user_id: int) -> None:
        try:
            emojis = "".join(self._engine.p2p_key(user_id)[1])
        except _native.NativeError:
            return
        self._fire("update_emojis", user_id, emojis)

    def connect_p2p(
        self, user_id: int, servers: List[RTCServer], versions: List[str],
        p2p_allowed: bool, custom_parameters: Optional[str] = None,
    ) -> "asyncio.Future[None]":
        """Starts the 1:1 call (UDP STUN/TURN servers are used; reflectors and TCP are not)."""

        def work() -> None:
            call = self._call(user_id)
            rows = [
                (s.id, s.ipv4 or "", s.ipv6 or "", s.port, s.username, s.password,
                 s.turn, s.stun, s.tcp)
                for s in servers
                if not s.tcp and s.peer_tag is None
            ]
            self._engine.connect_p2p(user_id, rows, list(versions), p2p_allowed)
            call.on_shard = True
            call.mode = ConnectionMode.RTC

        return self._future(user_id, work)

    def send_signaling_data(self, chat_id: int, msg_key: bytes) -> "asyncio.Future[None]":
        """Hands ``updatePhoneCallSignalingData`` bytes to the call."""

        def work() -> None:
            self._call(chat_id)
            self._engine.send_signaling_data(chat_id, bytes(msg_key))

        return self._future(chat_id, work)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _at_48k(command: str, sample_rate: int) -> str:
    """ringcast writes recorded PCM at 48 kHz: py-tgcalls' recording command says ``-ar RATE``
    for its input; make that 48000 so ffmpeg reads it right (and resamples if told to)."""
    if sample_rate == 48000:
        return command
    args = shlex.split(command)
    try:
        pipe = args.index("pipe:0")
    except ValueError:
        return command
    for i in range(pipe - 1, 0, -1):
        if args[i - 1] == "-ar":
            args[i] = "48000"
            break
    return shlex.join(args)
