"""OSC over UDP (kind ``osc``): set controls, play notes, trigger actions, read status.

For a phone or tablet app (TouchOSC, Open Stage Control…) or a script. Addresses:

==========================================  ============================================
``/pi-synth/control/<name> <number>``       ``router.set``: a model control, card units
``/pi-synth/source/<name> <number 0..1>``   ``router.source``: a physical source name
                                            (``knob1``, ``cc74``…) through the mapping
``/pi-synth/note <note> [velocity [ch]]``   note on (velocity 0: note off), default 100
``/pi-synth/midi <int>…`` or ``<blob>``     raw MIDI bytes through this source's own byte
                                            parser (running status carries across
                                            messages, never mixes with other inputs)
``/pi-synth/action/<name> [arg]``           ``router.action``: next_model, prev_model,
                                            program, preset_recall, preset_save, panic,
                                            learn
``/pi-synth/status [reply_port]``           replies ``/pi-synth/status <json string>``
                                            to the sender (or to its ``reply_port``):
                                            ``Instrument.status()`` (``voices``:
                                            ``active``, ``max`` for a note model)
``/pi-synth/<request> [args…]``             a :class:`Request` the instrument answers
                                            (models, card, presets, mapping, learn,
                                            reload…: ``docs/osc.md``), replied as
                                            ``/pi-synth/<request> <json string>``
==========================================  ============================================

Replies are JSON strings. One that does not fit a datagram (:data:`MAX_REPLY` bytes) is
sent as several messages ``/pi-synth/<request> <part> <index> <count>`` (index from 0);
the parts joined in order are the JSON.

Numbers may be OSC ints or floats (apps send floats); integral floats are accepted
where an integer is meant, and nothing else is (``preset_save 3.7`` is refused, not
rounded to slot 3). Bundles are executed at once, whatever their time tag (a
time tag in the future must never stall the instrument).

Security: the server binds ``127.0.0.1`` unless ``host`` is configured (``0.0.0.0``
exposes it to the network: a warning is logged). It only ever calls the router; nothing
it receives is executed.

Robustness: one thread receives and handles datagrams one at a time. A datagram that
is not OSC, an argument of the wrong type or a non-finite number is counted in
``garbage``; an unknown address, control or action in ``unknown`` (each logged once);
nothing a sender does raises out of the thread.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import mido

from pi_synth.control.midi.parser import MidiParser
from pi_synth.control.learn import CANCEL_WORDS as LEARN_CANCEL
from pi_synth.control.mapping import ACTIONS
from pi_synth.control.sources.base import Source
from pi_synth.errors import ConfigError, DeviceError, PiSynthError

log = logging.getLogger(__name__)

PREFIX = "/pi-synth/"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
POLL_S = 0.1  # how often the receive loop looks at the stop flag (close within this)
MAX_MIDI_BYTES = 4096
MAX_REPLY = 60000  # bytes of JSON per reply datagram (a UDP datagram holds 65507)
SLOW_QUEUE = 4  # slow requests waiting for the worker; more are refused as busy
# datagrams a second this thread takes (a burst of RATE_BURST at once): past that it naps and
# the kernel drops the rest. A flood of 100k notes a second held the GIL from the audio
# thread (49 xruns in 5 s); a phone's faders send hundreds a second, a sequencer thousands.
RATE_PER_S = 4000.0
RATE_BURST = 1000.0
_MAX_LOGGED = 64


@dataclass(frozen=True)
class Request:
    """A question or command the instrument answers over OSC (``/pi-synth/<address>``).

    ``handler(*args)`` gets the message's arguments (strings and numbers) and returns a
    JSON-able dict, the reply. A :class:`~pi_synth.errors.PiSynthError`, ``ValueError``,
    ``KeyError`` or wrong arguments are replied as ``{"ok": false, "error": "one line"}``.
    A ``slow`` request (a model load, a config reload) runs on the source's one worker
    thread, so the receive loop keeps serving knobs and notes meanwhile; it replies when
    it is done. ``usage`` names the arguments, for the error line and the docs.
    """

    handler: Callable[..., dict]
    usage: str = ""
    slow: bool = False


class _Bad(Exception):
    """A message whose arguments are wrong: counted as garbage."""


class _LibraryComplaints(logging.Filter):
    """python-osc says what it cannot parse (an unknown type tag, a short bundle) with
    ``logging.warning`` on the *root* logger, once per datagram and never rate-limited:
    a flood of garbage would be a flood of lines on the terminal. This filter keeps them
    off, and tells the receiving thread its datagram was not clean, so it is counted as
    garbage like any other."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and f"{os.sep}pythonosc{os.sep}" in record.pathname:
            self.local.complaint = record.getMessage()
            return False
        return True

    def take(self) -> str | None:
        c = getattr(self.local, "complaint", None)
        self.local.complaint = None
        return c


_COMPLAINTS = _LibraryComplaints()


class _Unknown(Exception):
    """A message for something that does not exist: counted as unknown."""


def _number(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"expected a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise _Bad(f"expected a finite number, got {f}")
    return f


def _integer(v, lo: int, hi: int, what: str) -> int:
    f = _number(v)
    if not f.is_integer() or not lo <= f <= hi:
        raise _Bad(f"{what} must be an integer in range {lo}..{hi}, got {v!r}")
    return int(f)


SLOT_ACTIONS = ("program", "preset_recall", "preset_save")  # their argument: a slot 0..127


def _action_arg(name: str, params, controls: int = 127):
    if not params:
        if name == "program":
            raise _Bad("program takes the number of the model, 0..127")
        return None
    if len(params) > 1:
        raise _Bad("an action takes at most one argument")
    v = params[0]
    if name in SLOT_ACTIONS:  # 3.7 is not slot 3: refused, never rounded
        return _integer(v, 0, 127, f"{name}'s argument (a slot)")
    if name == "learn" and not isinstance(v, str):  # 0: the next control, N: the N-th
        return _integer(v, 0, controls, "learn's argument (a control's number)")
    if isinstance(v, str):
        return v
    f = _number(v)
    return int(f) if f.is_integer() else f


def _server_class():
    from pythonosc.osc_server import BlockingOSCUDPServer

    class Server(BlockingOSCUDPServer):
        """python-osc's UDP server, every datagram handed to the source (garbage counted)."""

        max_packet_size = 65535  # socketserver's 8192 would truncate large bundles
        source: OscSource

        def verify_request(self, request, client_address) -> bool:
            return True  # garbage is counted by the source, not dropped silently

        def finish_request(self, request, client_address) -> None:
            self.source._datagram(request[0], request[1], client_address)

        def handle_error(self, request, client_address) -> None:
            self.source._count("errors", "internal", "error handling an OSC datagram", exc=True)

    return Server


class OscSource(Source):
    """OSC server on ``host:port`` (``port=0``: an ephemeral port, read :attr:`port`).

    ``status_fn``: a callable returning what ``/pi-synth/status`` replies, as JSON
    (default: the control bank's values). ``requests``: ``{address: Request}``, the
    instrument's answers (``pi_synth.surface``); addresses are relative to ``/pi-synth/``.
    """

    kind = "osc"

    def __init__(self, router, name: str | None = None, *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, status_fn=None, requests: dict[str, Request] | None = None,
                 **options):
        super().__init__(router, name, **options)
        if not isinstance(host, str) or not host:
            raise ConfigError(f"osc host must be an address such as {DEFAULT_HOST!r}, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"osc port must be an integer in range 0..65535, got {port!r}")
        self.host = host
        self.port = port
        self.status_fn = status_fn or (lambda: self.router.bank.values())
        self._full_status = status_fn is not None  # the instrument's: this surface's counters go in
        self.requests = dict(requests or {})
        self.answered = 0  # requests replied to (refusals included)
        self.refused = 0  # requests replied to with an error
        self.busy = 0  # slow requests refused because the worker's queue was full
        self._slow: queue.Queue | None = None
        self._running = ""  # the slow request the worker is on
        self._worker: threading.Thread | None = None
        self.packets = 0
        self.messages = 0
        self.flooded = 0  # datagrams dropped past RATE_PER_S
        self._tokens, self._tokens_at = RATE_BURST, 0.0
        self.garbage = 0
        self.unknown = 0
        self._logged: set[str] = set()
        self._server = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.parser = MidiParser()  # like din.py: a stream of its own

    # -- hooks ------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            server = _server_class()((self.host, self.port), dispatcher=None)
        except ImportError as e:
            raise DeviceError(f"OSC needs python-osc ({e}); install it: pip install python-osc") from None
        except OSError as e:
            raise DeviceError(
                f"cannot listen for OSC on {self.host}:{self.port} ({e.strerror or e}); "
                "choose another port or stop the program using it"
            ) from None
        server.source = self
        server.timeout = POLL_S
        root = logging.getLogger()
        if _COMPLAINTS not in root.filters:
            root.addFilter(_COMPLAINTS)
        self._server = server
        self.port = server.server_address[1]
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("OSC listens on %s:%d: reachable from the network, not only this machine",
                        self.host, self.port)
        else:
            log.info("OSC listening on %s:%d", self.host, self.port)
        self._stop.clear()
        if any(r.slow for r in self.requests.values()):
            self._slow = queue.Queue(SLOW_QUEUE)
            self._worker = threading.Thread(target=self._work, name=f"osc-{self.port}-slow", daemon=True)
            self._worker.start()
        self._thread = threading.Thread(target=self._run, name=f"osc-{self.port}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * POLL_S + 1.0)
            self._thread = None
        if self._worker is not None:
            self._slow.put(None)  # the receive loop has stopped: nothing else fills the queue
            self._worker.join(10.0)  # a model load in progress finishes first
            self._worker = None
        if self._server is not None:
            self._server.server_close()
            self._server = None

    def _run(self) -> None:
        server = self._server
        while not self._stop.is_set():
            try:
                server.handle_request()  # waits at most POLL_S for one datagram
            except Exception:  # never let the receive loop die
                self._count("errors", "internal", "OSC receive failed", exc=True)

    def status(self) -> dict:
        s = super().status()
        s.update(host=self.host, port=self.port, packets=self.packets, messages=self.messages,
                 garbage=self.garbage, unknown=self.unknown,
                 parser_errors=self.parser.stats.total, answered=self.answered,
                 refused=self.refused, busy=self.busy, flooded=self.flooded)
        return s

    # -- datagrams --------------------------------------------------------------------

    def _count(self, counter: str, key: str, text: str, exc: bool = False) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        if key not in self._logged and len(self._logged) < _MAX_LOGGED:
            self._logged.add(key)
            log.warning("OSC: %s (further ones are only counted)", text, exc_info=exc)

    def _datagram(self, data: bytes, sock, addr) -> None:
        from pythonosc.osc_packet import OscPacket

        self.packets += 1
        now = time.monotonic()
        self._tokens = min(RATE_BURST, self._tokens + (now - self._tokens_at) * RATE_PER_S)
        self._tokens_at = now
        if self._tokens < 1.0:  # a flood: not parsed; a nap so the kernel drops the rest of it
            self._count("flooded", "flood", f"more than {RATE_PER_S:.0f} datagrams a second (from {addr[0]}): "
                        "the excess is dropped so the audio plays on")
            time.sleep(0.002)
            return
        self._tokens -= 1.0
        _COMPLAINTS.take()
        try:
            messages = [tm.message for tm in OscPacket(data).messages]
            complaint = _COMPLAINTS.take()
            if complaint:  # python-osc skipped part of it: not what the sender meant
                raise ValueError(complaint)
        except Exception as e:
            self._count("garbage", "packet", f"ignored a datagram from {addr[0]} that is not OSC ({e})")
            return
        for msg in messages:
            try:
                address, params = msg.address, list(msg.params)
                self._dispatch(address, params, sock, addr)
                self.messages += 1
            except _Bad as e:
                self._count("garbage", f"bad {msg.address}", f"{msg.address}: {e}")
            except _Unknown as e:
                self._count("unknown", str(e), str(e))
            except Exception as e:  # a bug or a broken status_fn: count, keep serving
                self._count("errors", f"error {type(e).__name__}", f"{msg.address} failed: {e}", exc=True)

    def _dispatch(self, address: str, params: list, sock, addr) -> None:
        if not address.startswith(PREFIX):
            raise _Unknown(f"unknown address {address!r} (pi-synth's start with {PREFIX})")
        head, _, rest = address[len(PREFIX):].partition("/")
        r = self.router
        if head == "control" and rest:
            if len(params) != 1:
                raise _Bad("takes one number")
            value = _number(params[0])
            try:
                r.set(rest, value)
            except KeyError:
                raise _Unknown(f"unknown control {rest!r}; the model's controls are: "
                               + ", ".join(r.bank.names)) from None
        elif head == "source" and rest:
            if len(params) != 1:
                raise _Bad("takes one number in 0..1")
            r.source(rest, min(max(_number(params[0]), 0.0), 1.0))
        elif head == "note" and not rest:
            if not 1 <= len(params) <= 3:
                raise _Bad("takes note [velocity [channel]]")
            note = _integer(params[0], 0, 127, "note")
            vel = _integer(params[1], 0, 127, "velocity") if len(params) > 1 else 100
            ch = _integer(params[2], 0, 15, "channel") if len(params) > 2 else 0
            if vel:
                r.midi_message(mido.Message("note_on", note=note, velocity=vel, channel=ch))
            else:
                r.midi_message(mido.Message("note_off", note=note, velocity=0, channel=ch))
        elif head == "midi" and not rest:
            if len(params) == 1 and isinstance(params[0], bytes):
                data = params[0]
            else:
                data = bytes(_integer(p, 0, 255, "a MIDI byte") for p in params)
            if not data or len(data) > MAX_MIDI_BYTES:
                raise _Bad(f"takes 1..{MAX_MIDI_BYTES} MIDI bytes")
            self.parser.feed(data)
            for m in self.parser:
                r.midi_message(m)
        elif head == "action" and rest:
            if rest not in ACTIONS:
                raise _Unknown(f"unknown action {rest!r}; actions are: {', '.join(ACTIONS)}")
            arg = _action_arg(rest, params, len(r.bank.names))
            if rest == "learn" and isinstance(arg, str) and arg.strip().lower() not in LEARN_CANCEL \
                    and arg.strip() not in r.bank.names:
                raise _Unknown(f"learn: no control {arg!r}; the model's controls are: " + ", ".join(r.bank.names))
            r.action(rest, arg)
        elif head == "status" and not rest:
            port = addr[1]
            if params:
                port = _integer(params[0], 1, 65535, "reply port")
            status = self.status_fn()
            if self._full_status and isinstance(status, dict):  # what was wrong with what it was sent
                status = dict(status, osc={"garbage": self.garbage, "unknown": self.unknown})
            self._reply(sock, (addr[0], port) + tuple(addr[2:]), "/pi-synth/status",
                        json.dumps(status, sort_keys=True, default=str))
        elif address[len(PREFIX):] in self.requests:
            name = address[len(PREFIX):]
            req = self.requests[name]
            for p in params:
                why = ("request arguments are strings and numbers"
                       if isinstance(p, bool) or not isinstance(p, (str, int, float)) else
                       f"expected a finite number, got {p}" if isinstance(p, float) and not math.isfinite(p) else "")
                if why:  # a request is answered, even a wrong one: its sender waits for the reply
                    self._send(sock, addr, address, {"ok": False, "error": f"{address}: {why}"})
                    raise _Bad(why)
            if not req.slow:
                self._answer(sock, addr, name, req, params)
                return
            try:
                self._slow.put_nowait((sock, addr, name, req, params))
            except queue.Full:
                self.busy += 1
                running = self._running
                self._send(sock, addr, address, {
                    "ok": False, "busy": True,
                    "error": f"busy: {SLOW_QUEUE} slow requests are waiting"
                             + (f" behind /pi-synth/{running}" if running else "") + "; try again when they are done"})
        else:
            raise _Unknown(f"unknown address {address!r}")

    # -- requests ---------------------------------------------------------------------

    def _answer(self, sock, addr, name: str, req: Request, params: list) -> None:
        """Run one request and reply to the sender; whatever it raises becomes the reply."""
        try:
            reply = req.handler(*params)
        except TypeError as e:
            if "argument" not in str(e):
                raise
            reply = {"ok": False, "error": f"/pi-synth/{name} takes {req.usage or 'no arguments'}"}
        except (PiSynthError, ValueError, KeyError) as e:
            line = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            reply = {"ok": False, "error": str(line)}
        except Exception as e:  # a bug: counted and logged, and the sender still hears back
            self._count("errors", f"error {type(e).__name__}", f"/pi-synth/{name} failed: {e}", exc=True)
            reply = {"ok": False, "error": f"internal error ({type(e).__name__}: {e}); see the instrument's log"}
        if reply.get("ok") is False:
            self.refused += 1
        self.answered += 1
        self._send(sock, addr, PREFIX + name, reply)

    def _work(self) -> None:
        """The worker for slow requests: one at a time, in order."""
        while True:
            item = self._slow.get()
            if item is None:
                return
            sock, addr, name, req, params = item
            self._running = name  # what a busy reply names
            try:
                self._answer(sock, addr, name, req, params)
            except OSError as e:  # the reply could not be sent (the sender's socket is gone)
                self._count("errors", "reply", f"/pi-synth/{name}: reply not sent ({e})")
            finally:
                self._running = ""

    def _send(self, sock, addr, address: str, reply: dict) -> None:
        """One reply, split into parts if its JSON does not fit a datagram."""
        text = json.dumps(reply, sort_keys=True, default=str, allow_nan=False)  # ASCII: split anywhere
        if len(text) <= MAX_REPLY:
            self._reply(sock, addr, address, text)
            return
        parts = [text[i:i + MAX_REPLY] for i in range(0, len(text), MAX_REPLY)]
        for i, part in enumerate(parts):
            self._reply(sock, addr, address, part, i, len(parts))

    def _reply(self, sock, addr, address: str, text: str, *more) -> None:
        from pythonosc.osc_message_builder import OscMessageBuilder

        b = OscMessageBuilder(address=address)
        b.add_arg(text)
        for m in more:
            b.add_arg(m)
        sock.sendto(b.build().dgram, addr)


SOURCE = OscSource
