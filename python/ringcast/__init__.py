"""ringcast: many WebRTC calls (Telegram group and 1:1 calls) from one process, from Python.

Two ways in:

- :class:`Engine`, an asyncio API over the Rust engine::

      engine = ringcast.Engine()
      payload = await engine.create_call(-100123)      # -> phone.joinGroupCall
      await engine.connect(-100123, answer)            # updateGroupCallConnection.params
      await engine.play(-100123, "song.mp3")
      async for event in engine.events():
          print(event)

- :mod:`ringcast.ntgcalls`, ntgcalls' API, so that py-tgcalls runs unchanged on ringcast::

      import ringcast
      ringcast.install_as_ntgcalls()                   # before ``import pytgcalls``
      from pytgcalls import PyTgCalls                  # use py-tgcalls as usual

Engine calls never hold the GIL while they wait on the engine.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import dataclass
from os import PathLike
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from . import _native

__all__ = [
    "Engine",
    "Event",
    "EventStream",
    "CallInfo",
    "RingcastError",
    "CallNotFound",
    "CallExists",
    "install_as_ntgcalls",
    "__version__",
]

#: The version of the Rust engine this package wraps.
__version__: str = _native.engine_version()


def install_as_ntgcalls() -> Any:
    """Makes ``import ntgcalls`` give :mod:`ringcast.ntgcalls`; returns that module.

    Call it before ``import pytgcalls``. Install py-tgcalls with ``pip install --no-deps
    py-tgcalls`` (plus its own dependencies ``aiohttp`` and ``deprecation``) so pip does not
    pull the real ntgcalls wheel.
    """
    from . import ntgcalls

    sys.modules["ntgcalls"] = ntgcalls
    return ntgcalls


class RingcastError(Exception):
    """An engine call failed. ``kind`` names the failure (``not_found``, ``exists``,
    ``order``, ``signaling``, ``stream_mode``, ``file``, ``shell``, ``invalid``, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CallNotFound(RingcastError):
    """No live call with this id."""


class CallExists(RingcastError):
    """A call with this id is already live."""


def _error(e: _native.NativeError) -> RingcastError:
    kind, message = e.args[0], e.args[1]
    cls = {"not_found": CallNotFound, "exists": CallExists}.get(kind, RingcastError)
    return cls(kind, message)


@dataclass(frozen=True)
class Event:
    """Something that happened to a call.

    ``kind``: ``connection`` (group call state: ``connecting``, ``connected``,
    ``ended:stopped|timeout|failed``), ``p2p_connection`` (the same for a 1:1 call),
    ``stream_end`` (``value`` is the track, ``error`` the failure or None), ``media``
    (``value`` is ``(paused, muted)``), ``signaling`` (``value``: bytes for
    ``phone.sendSignalingData``).
    """

    chat_id: int
    kind: str
    value: Any = None
    error: Optional[str] = None


@dataclass(frozen=True)
class CallInfo:
    """A live call: ``kind`` is ``group`` or ``p2p``; ``state`` as in :class:`Event`."""

    chat_id: int
    kind: str
    state: str
    paused: bool
    muted: bool


class EventStream:
    """An async iterator of an :class:`Engine`'s events, registered when it is made (so no
    event between ``engine.events()`` and the first ``__anext__`` is lost). ``close()`` ends
    the registration."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine
        self._queue: "asyncio.Queue[Event]" = asyncio.Queue()
        self._entry = (asyncio.get_running_loop(), self._queue)
        with engine._queues_lock:
            engine._queues.add(self._entry)

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> Event:
        return await self._queue.get()

    def close(self) -> None:
        """Stops receiving events."""
        with self._engine._queues_lock:
            self._engine._queues.discard(self._entry)


class Engine:
    """An asyncio handle of one ringcast engine.

    Every coroutine runs its engine call on the loop's default executor with the GIL released.
    ``shards``: engine threads (default: one per core). ``bind``: one local IP for every
    socket (default: per SFU, the address the kernel routes toward it). ``connect_timeout``:
    seconds a call may take to connect.
    """

    def __init__(
        self,
        *,
        shards: Optional[int] = None,
        bind: Optional[str] = None,
        connect_timeout: Optional[float] = None,
    ) -> None:
        self._native = _native.Engine(shards, bind, connect_timeout)
        self._queues: Set[Tuple[asyncio.AbstractEventLoop, "asyncio.Queue[Event]"]] = set()
        self._queues_lock = threading.Lock()
        self._native.set_callback(self._on_event)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()

        def work() -> Any:
            try:
                return fn(*args)
            except _native.NativeError as e:
                raise _error(e) from None

        return await loop.run_in_executor(None, work)

    def _on_event(self, chat_id: int, kind: str, a: Any, b: Any) -> None:
        if kind == "media":
            event = Event(chat_id, kind, (a, b))
        elif kind == "stream_end":
            event = Event(chat_id, kind, a, b)
        else:
            event = Event(chat_id, kind, a)
        with self._queues_lock:
            queues = list(self._queues)
        for loop, queue in queues:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that loop is closed
                with self._queues_lock:
                    self._queues.discard((loop, queue))

    def events(self) -> "EventStream":
        """Every event from this call on, as an async iterator (call it inside a running
        loop, before the calls whose events it should see)."""
        return EventStream(self)

    async def create_call(self, chat_id: int) -> str:
        """Creates a group call; returns the join payload (``phone.joinGroupCall`` params)."""
        return await self._run(self._native.create_call, chat_id)

    async def connect(self, chat_id: int, params: str) -> None:
        """Applies the SFU's answer; the outcome comes as a ``connection`` event."""
        await self._run(self._native.connect, chat_id, params)

    async def play(
        self,
        chat_id: int,
        source: Union[str, "PathLike[str]"],
        *,
        kind: str = "file",
        sample_rate: int = 48000,
        channels: int = 2,
        live: bool = False,
        looped: bool = False,
    ) -> None:
        """Plays a file (``kind="file"``, anything ffmpeg reads), a URL (``"url"``) or a shell
        command writing s16le PCM at ``sample_rate``/``channels`` (``"shell"``). Returns once
        the first frame is decoded; an input that cannot be played raises here."""
        await self._run(
            self._native.play, chat_id, kind, str(source), sample_rate, channels, live, looped
        )

    async def play_tone(self, chat_id: int, frequency_hz: float) -> None:
        """Plays a sine tone."""
        await self._run(self._native.play_tone, chat_id, frequency_hz)

    async def pause(self, chat_id: int) -> None:
        """Pauses sending."""
        await self._run(self._native.pause, chat_id)

    async def resume(self, chat_id: int) -> None:
        """Resumes sending."""
        await self._run(self._native.resume, chat_id)

    async def mute(self, chat_id: int) -> None:
        """Sends silence instead of the source."""
        await self._run(self._native.mute, chat_id)

    async def unmute(self, chat_id: int) -> None:
        """Undoes :meth:`mute`."""
        await self._run(self._native.unmute, chat_id)

    async def stop(self, chat_id: int) -> None:
        """Ends the call."""
        await self._run(self._native.stop, chat_id)

    async def time(self, chat_id: int) -> float:
        """Seconds played of the current source."""
        return (await self._run(self._native.time_us, chat_id)) / 1e6

    async def info(self, chat_id: int) -> CallInfo:
        """The call's state and media state."""
        kind, state, paused, muted = await self._run(self._native.info, chat_id)
        return CallInfo(chat_id, kind, state, paused, muted)

    async def calls(self) -> List[CallInfo]:
        """Every live call."""
        rows = await self._run(self._native.calls)
        return [CallInfo(*row) for row in rows]

    async def record(self, chat_id: int, path: Union[str, "PathLike[str]"]) -> None:
        """Records what the other participants say, mixed, to ``path`` (format from the
        extension: mp3, flac, wav, ogg, opus, m4a)."""
        await self._run(self._native.record, chat_id, str(path), 1, True)

    async def stop_recording(self, chat_id: int) -> Optional[int]:
        """Finishes the call's recording; returns the 20 ms frames written (None: none ran)."""
        return await self._run(self._native.stop_recording, chat_id)

    async def stats(self) -> Dict[str, int]:
        """Engine-wide counters."""
        return await self._run(self._native.stats)

    def close(self) -> None:
        """Stops delivering events. The engine stops when the object is collected."""
        self._native.close()
