"""A running instrument and its web page, as on the Pi: two processes talking OSC on
localhost. The instrument plays through the project's ALSA test config into a JACK dummy
server (real-time pacing, no sound card); the web page is ``pi-synth web``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pi_synth.web.oscclient import InstrumentUnreachable, ask


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports() -> tuple[int, int]:
    """A TCP port for the page and a UDP port for OSC."""
    return free_port(), free_port(socket.SOCK_DGRAM)


class WebRig:
    def __init__(self, tmp: Path, organ, *, web: str = "", extra: str = "", env: dict | None = None):
        self.tmp = tmp
        self.models = tmp / "models"
        self.models.mkdir(exist_ok=True)
        shutil.copy(organ("organ"), self.models / "organ.onnx")
        self.uploads = tmp / "uploads"
        self.web_port, self.osc_port = free_ports()
        self.config = tmp / "pi-synth.toml"
        self.config.write_text(
            f'[audio]\nbackend = "alsa"\ndevice = "pisynth_jack"\n\n[model]\npath = "organ"\n\n'
            f'[midi]\nports = ""\n\n[osc]\nport = {self.osc_port}\n\n'
            f'[web]\nenabled = true\nport = {self.web_port}\n{web}\n{extra}')
        from conftest import ALSA_CONFIG_PATH

        self.env = dict(os.environ, PI_SYNTH_MODELS=str(self.models), PI_SYNTH_UPLOADS=str(self.uploads),
                        PI_SYNTH_STATE_DIR=str(tmp / "state"), PI_SYNTH_CACHE_DIR=str(tmp / "cache"),
                        XDG_CONFIG_HOME=str(tmp / "xdg"), ALSA_CONFIG_PATH=ALSA_CONFIG_PATH,
                        JACK_NO_START_SERVER="1", **(env or {}))
        self.env.pop("PI_SYNTH_CONFIG", None)
        self.procs: list[subprocess.Popen] = []
        self.url = f"http://127.0.0.1:{self.web_port}"

    def _start(self, *args, log: str) -> subprocess.Popen:
        out = open(self.tmp / log, "w")
        p = subprocess.Popen([sys.executable, "-m", "pi_synth", *args, "--config", str(self.config)],
                             env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start(self, instrument: bool = True, web: bool = True) -> "WebRig":
        if instrument:
            self.instrument = self._start("run", log="instrument.log")
            self._wait(lambda: self.status(), "the instrument", self.instrument, "instrument.log")
        if web:
            self.web = self._start("web", log="web.log")
            self._wait(lambda: urllib.request.urlopen(self.url + "/login", timeout=2), "the web page",
                       self.web, "web.log")
        return self

    def _wait(self, probe, what, proc, log, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited {proc.returncode}:\n{(self.tmp / log).read_text()}")
            try:
                probe()
                return
            except (InstrumentUnreachable, OSError):
                time.sleep(0.2)
        raise AssertionError(f"{what} did not start:\n{(self.tmp / log).read_text()}")

    def status(self) -> dict:
        return ask(self.osc_port, "status", timeout=5.0)

    def wait_for(self, cond, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                v = cond()
            except InstrumentUnreachable:  # a busy machine: ask again
                v = None
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def log(self, name: str) -> str:
        return (self.tmp / name).read_text()

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.procs.clear()


def organ_factory(tmp: Path):
    """Like conftest's ``organ`` fixture, for fixtures wider than one test."""
    from pi_synth.tools.procedural import build_organ, organ_card

    def make(name="organ", **kw):
        path = tmp / f"{name}.onnx"
        if "card" not in kw and name not in ("organ",):
            kw["card"] = organ_card(kw.get("block_size", 256), kw.get("sample_rate", 48000), name=name)
        build_organ(path, **kw)
        return path

    return make


def multipart(path: Path, filename: str, field: str = "model") -> tuple[bytes, str]:
    boundary = "pisynthtestboundary7d1c"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def bad_models(organ, tmp: Path) -> dict[str, Path]:
    """Files an upload must refuse: truncated, NaN output, not ONNX at all."""
    good = organ("good")
    data = good.read_bytes()
    out = {"truncated": tmp / "truncated.onnx", "nan": tmp / "noisy.onnx", "junk": tmp / "junk.onnx"}
    out["truncated"].write_bytes(data[: len(data) // 2])
    shutil.copy(organ("nanmodel", fault="nan"), out["nan"])
    out["junk"].write_bytes(b"MZ\x90\x00 this is not a model " * 100)
    return out


def http(method: str, url: str, body=None, headers=None, cookie: str | None = None):
    """(status, json, headers) of a request; ``body`` a dict → JSON, bytes → as is."""
    data = None
    h = dict(headers or {})
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    if cookie:
        h["Cookie"] = cookie
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}"), r.headers
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"{}"), e.headers
        except json.JSONDecodeError:
            return e.code, {"raw": raw.decode("utf-8", "replace")}, e.headers
