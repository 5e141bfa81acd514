"""The web process's side of the OSC surface: ask a question, get its JSON reply.

One fresh UDP socket per request, bound to localhost: the reply comes back to that
socket and to no other request, so concurrent requests (the status stream and a button)
never see each other's replies and no request id is needed. A reply split into parts
(``/pi-synth/<request> <part> <index> <count>``, :data:`MAX_REPLY` in ``osc.py``) is
joined here. Used from asyncio (:meth:`OscClient.ask`) and from tests and scripts
(:func:`ask`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from pi_synth.errors import PiSynthError

PREFIX = "/pi-synth/"


class InstrumentUnreachable(PiSynthError, ConnectionError):
    """No reply from the instrument's OSC surface."""


def message(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class _Parts:
    """Collects a reply's datagrams until the JSON is whole."""

    def __init__(self, address: str):
        self.address = address
        self.parts: dict[int, str] = {}
        self.count = 1

    def add(self, data: bytes):
        """The decoded reply once complete, else None. Other datagrams are ignored."""
        try:
            m = OscMessage(data)
        except Exception:
            return None
        if m.address != self.address or not m.params or not isinstance(m.params[0], str):
            return None
        if len(m.params) == 1:
            return json.loads(m.params[0])
        index, count = m.params[1], m.params[2]
        self.count = count
        self.parts[index] = m.params[0]
        if len(self.parts) == count:
            return json.loads("".join(self.parts[i] for i in range(count)))
        return None


def ask(port: int, request: str, *args, host: str = "127.0.0.1", timeout: float = 2.0):
    """Send ``/pi-synth/<request> args…`` and return its decoded JSON reply (blocking)."""
    address = PREFIX + request
    parts = _Parts(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.sendto(message(address, *args), (host, port))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise InstrumentUnreachable(f"no reply to {address} from the instrument on {host}:{port}")
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            reply = parts.add(data)
            if reply is not None:
                return reply


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, parts: _Parts, done: asyncio.Future):
        self.parts, self.done = parts, done

    def datagram_received(self, data, addr):
        if self.done.done():
            return
        try:
            reply = self.parts.add(data)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            self.done.set_exception(InstrumentUnreachable(f"garbled reply to {self.parts.address}: {e}"))
            return
        if reply is not None:
            self.done.set_result(reply)

    def error_received(self, exc):
        if not self.done.done():
            self.done.set_exception(InstrumentUnreachable(f"instrument not reachable ({exc})"))


class OscClient:
    """Asks the instrument on ``host:port`` (localhost) from an asyncio loop."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 2.0):
        self.host, self.port, self.timeout = host, port, timeout

    async def ask(self, request: str, *args, timeout: float | None = None):
        loop = asyncio.get_running_loop()
        address = PREFIX + request
        done = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(_Parts(address), done), local_addr=(self.host, 0))
        try:
            transport.sendto(message(address, *args), (self.host, self.port))
            return await asyncio.wait_for(done, timeout or self.timeout)
        except asyncio.TimeoutError:
            raise InstrumentUnreachable(
                f"no reply to {address} from the instrument on {self.host}:{self.port}: is pi-synth "
                "running with [web] or [osc] enabled?") from None
        finally:
            transport.close()
