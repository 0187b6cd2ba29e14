"""py-tgcalls' MTProto layer, answered by sfu-mock: the test double shared by the py-tgcalls
test (pytgcalls_bot.py) and the engine bench (benches/pytgcalls_bench.py).

Import it after choosing the engine (``ringcast.install_as_ntgcalls()``, or nothing for the real
ntgcalls): it imports pytgcalls, which imports ntgcalls.

``SfuBridge`` is a ``BridgedClient``; ``bind_bridge()`` makes ``MtProtoClient`` take the
client object given to ``PyTgCalls(...)`` as its bridge (py-tgcalls picks a pyrogram or
telethon bridge by the client's package otherwise). ``phone.joinGroupCall`` posts the join
payload to sfu-mock's control API and returns its answer as ``updateGroupCallConnection``
params; ``phone.leaveGroupCall`` leaves with the SSRC remembered at join time (py-tgcalls leaves
with source=0). Group chat ids must be negative; sources are Telegram's signed int32.
"""

import asyncio
import json
import urllib.request

from pytgcalls.mtproto import MtProtoClient
from pytgcalls.mtproto.bridged_client import BridgedClient
from pytgcalls.pytgcalls_session import PyTgCallsSession

# Offline: the banner and the online version check of app.start() are skipped.
PyTgCallsSession.notice_displayed = True


class Sfu:
    """sfu-mock's control API at ``host:port``."""

    def __init__(self, address):
        self.address = address

    def http(self, method, path, body=None):
        data = None if body is None else body.encode()
        req = urllib.request.Request(f"http://{self.address}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode()

    async def ahttp(self, method, path, body=None):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.http, method, path, body)

    async def chats(self):
        return json.loads(await self.ahttp("GET", "/v1/stats"))["chats"]

    async def participant(self, chat_id):
        """The chat's participant (the last one that joined), or None."""
        entries = (await self.chats()).get(str(chat_id)) or []
        return entries[-1] if entries else None


def signed32(ssrc):
    """Telegram's participant sources are signed int32."""
    ssrc &= 0xFFFFFFFF
    return ssrc - (1 << 32) if ssrc >= 1 << 31 else ssrc


class SfuBridge(BridgedClient):
    """py-tgcalls' Telegram bridge, answered by sfu-mock."""

    def __init__(self, sfu):
        self.sfu = sfu
        self.handlers = []
        self.sources = {}  # chat id -> our SSRC (signed int32), for leaving
        self.presentations = {}  # chat id -> the presentation's SSRC
        self.status = []  # set_call_status calls
        self.joins = 0
        self.leaves = 0

    async def join_group_call(self, chat_id, json_join, video_stopped, join_as,
                              invite_hash=None, block=None, public_key=None,
                              invite_msg_id=None):
        if chat_id >= 0:
            raise ValueError(f"group chat ids are negative, got {chat_id}")
        self.sources[chat_id] = signed32(json.loads(json_join)["ssrc"])
        answer = await self.sfu.ahttp("POST", f"/v1/chats/{chat_id}/join", json_join)
        self.joins += 1
        return answer  # updateGroupCallConnection.params.data

    async def leave_group_call(self, chat_id):
        source = self.sources.pop(chat_id, None)
        if source is not None:
            await self.sfu.ahttp("POST", f"/v1/chats/{chat_id}/leave",
                                 json.dumps({"ssrc": source & 0xFFFFFFFF}))
            self.leaves += 1

    async def join_presentation(self, chat_id, json_join):
        """``phone.joinGroupCallPresentation``: the presentation joins the chat at sfu-mock as
        a participant of its own (its own transport and SSRCs)."""
        self.presentations[chat_id] = signed32(json.loads(json_join)["ssrc"])
        return await self.sfu.ahttp("POST", f"/v1/chats/{chat_id}/join", json_join)

    async def leave_presentation(self, chat_id):
        source = self.presentations.pop(chat_id, None)
        if source is not None:
            await self.sfu.ahttp("POST", f"/v1/chats/{chat_id}/leave",
                                 json.dumps({"ssrc": source & 0xFFFFFFFF}))

    async def get_input_call(self, chat_id):
        return {"chat_id": chat_id} if chat_id < 0 else None

    async def create_group_call(self, chat_id):
        return None

    async def set_call_status(self, chat_id, muted_status, video_paused, video_stopped,
                              presentation_paused, participant):
        self.status.append((chat_id, muted_status, video_stopped))

    async def get_group_call_participants(self, chat_id):
        return []

    async def get_participants(self, input_call):
        return []

    async def resolve_peer(self, user_id):
        return user_id

    async def get_id(self):
        return 4242

    def is_connected(self):
        return True

    def no_updates(self):
        return False

    async def start(self):
        return None

    def add_handler(self, func):
        self.handlers.append(func)


def bind_bridge():
    """Makes ``MtProtoClient`` use the client object itself as its bridge."""

    def init(self, cache_duration, client):
        self._bind_client = client
        self.package_name = "sfu-mock"

    MtProtoClient.__init__ = init
