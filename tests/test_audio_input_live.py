"""Audio in, live: capture through real libasound from a JACK server (dummy backend, real
time), a JACK client singing into the instrument's input ports, device loss.

The JACK client is ``benchmarks/_jackprobe.py --play`` in its own process: it plays a
recorded voice (tests/data/voice.wav) out of ``pisynth-probe:play`` on JACK's clock, and
the test connects that port to the capture ports of our ALSA PCM (``pisynth_jack``, whose
capture side the test config gives ports). The output goes through ``pisynth_jackfile``, a
recorder of the exact bytes the engine wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pi_synth import config as config_mod
from pi_synth.app import Instrument
from pi_synth.audio.backends.alsa import AlsaBackend
from pi_synth.audio.backends.wav import WavBackend, read_wav
from pi_synth.audio.engine import Engine, render_offline
from pi_synth.errors import DeviceError
from pi_synth.tools.procedural import build_encoder, build_organ

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "benchmarks" / "_jackprobe.py"
VOICE = ROOT / "tests" / "data" / "voice.wav"
SR = 48000

pytestmark = pytest.mark.jack


@pytest.fixture
def pair(tmp_path):
    path = tmp_path / "organ.onnx"
    build_organ(path)
    build_encoder(tmp_path / "organ.encoder.onnx")
    return path


def config(**input_):
    c = config_mod.Config(None, config_mod.defaults())
    c.values["input"].update(input_)
    c.values["audio"].update(capture="pisynth_jack", realtime=True)
    return c


def our_ports(suffix: str) -> list[str]:
    ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split("\n")
    return [p for p in ports if p.endswith(suffix) and not p.startswith(("system:", "pisynth-probe:"))]


def start_probe(tmp_path, play: np.ndarray, tail: float = 0.5, env=None):
    np.save(tmp_path / "play.npy", play.astype(np.float32))
    p = subprocess.Popen([sys.executable, str(PROBE), "--play", str(tmp_path / "play.npy"), "--tail", str(tail),
                          "--out", str(tmp_path / "probe.npz")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    line = p.stdout.readline().strip()
    assert line == "ready", f"the JACK probe did not start ({line!r})"
    return p


def stop_probe(p):
    if p.poll() is None:
        try:
            p.stdin.write("go\n")
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_live_capture_plays_the_same_samples_as_the_render(pair, tmp_path, jack_server, retry_after_stall):
    """A voice sung into the capture ports through JACK: what the model heard is the voice,
    float for float (JACK's floats arrive exactly); and the output the engine wrote is,
    after its lead, the offline render of that very input — the same samples, the only
    offset the lead (direct engine: the buffer less one period: 1792 on the 256×8 buffer
    used here, deeper than a Pi needs, since the singer — a Python JACK client on a shared
    machine — may be late: the test is about bytes, not load)."""
    x, _ = read_wav(VOICE)
    voice = x[:, 0]
    seconds = 5.0
    c = config(gate_db=-120.0, dc_hz=0.0)  # conditioning that is exact: the mono mix of equal channels

    def attempt():
        raw = tmp_path / "out.raw"
        raw.unlink(missing_ok=True)
        probe = start_probe(tmp_path, np.concatenate([voice, np.zeros(SR // 2, np.float32)]))
        engine = None
        try:
            inst = Instrument(c, model=str(pair), audio_in=True, seconds=seconds, sets=[("pitch", 220.0)])
            backend = AlsaBackend(f"pisynth_jackfile:FILE={raw}", capture="pisynth_jack")
            inst.connect_input(backend)
            inst.audio_input.record(int((seconds + 1) * SR))
            engine = inst.engine = Engine(inst.player, backend, period=256, periods=8, realtime=True)
            engine.start()
            ins = our_ports(":in_000") + our_ports(":in_001")
            assert len(ins) == 2, ins
            for port in ins:  # both channels: their mono mix is the voice itself
                subprocess.run(["jack_connect", "pisynth-probe:play", port], check=True)
            probe.stdin.write("go\n")
            probe.stdin.flush()
            assert engine.wait(seconds + 10), "the stream never ended"
        finally:
            if engine is not None:
                engine.stop(fade=False)
            stop_probe(probe)
        st = inst.status()
        assert engine.mode == "direct" and engine.lead == 7 * 256
        assert st["xruns"] == 0 and st["late_periods"] == 0, st
        # no input overrun (ours to avoid); a late block — the singer, a Python client JACK
        # waits for, late on a loaded machine — is silence in, heard and rendered alike
        assert st["input"]["xruns"] == 0, st["input"]
        h = inst.audio_input.recorded
        # the voice came through exactly: its 256-frame blocks are in what the model heard
        # (most of them: the singer, not real-time, may skip a cycle on a loaded machine)
        sung = {voice[i:i + 256].tobytes() for i in range(0, len(voice) - 256, 256)}
        first = int(np.argmax(h != 0))
        heard = [h[i:i + 256].tobytes() for i in range(first, first + len(voice) - 256, 256)]
        assert sum(b in sung for b in heard) > 0.8 * len(heard), "the voice did not arrive sample-exact"
        # the offline render of what came in (float WAV → the same AudioInput) …
        inst2 = Instrument(c, model=str(pair), audio_in=True, seconds=seconds, sets=[("pitch", 220.0)])
        wav = tmp_path / "render.wav"
        b2 = WavBackend(str(wav), capture=h[:, None].copy())
        inst2.connect_input(b2)
        render_offline(inst2.player, b2)
        ref = np.round(read_wav(wav)[0][:, 0] * 32767).astype(np.int16)
        # … is what the engine wrote, after its lead
        live = np.fromfile(raw, "<i2")
        lead = engine.lead
        assert not live[:lead].any()
        assert len(live) >= lead + len(ref), (len(live), lead, len(ref))
        assert np.abs(ref).max() > 300  # the organ answered the voice
        assert np.array_equal(live[lead:lead + len(ref)], ref)

    retry_after_stall(attempt)


def test_no_capture_device_plays_on_with_one_line(pair, cli, tmp_path, jack_server):
    """A capture PCM that does not exist: the output plays (the decoder's answer to
    silence, here a loudness offset that sounds), one warning line, exit 0."""
    raw = tmp_path / "o.raw"
    p = cli("run", "--model", pair, "--device", f"pisynth_jackfile:FILE={raw}", "--capture", "no_such_pcm",
            "--set", "pitch=220", "--set", "loudness=-50", "--seconds", "2", check=0)
    warn = [line for line in p.stderr.splitlines() if "no audio input" in line]
    assert len(warn) == 1 and "no_such_pcm" in warn[0] and "arecord -L" in warn[0], p.stderr
    x = np.fromfile(raw, "<i2").astype(np.float32) / 32767
    assert len(x) > 1.5 * SR and np.sqrt(np.mean(x[SR // 2:SR] ** 2)) > 0.005


class PulledInput(AlsaBackend):
    """Real JACK output and input — and an input cable the test can pull. While pulled, the
    capture hook fails as ALSA does for a USB interface that vanished (ENODEV), and it cannot
    be reopened: what this machine cannot do for real (no second sound card; libjack cannot
    talk to two JACK servers from one process, so the input cannot sit on a server of its own)."""

    pulled = False

    def _read(self, out, timeout):
        if self.pulled:
            self._clost = True
            raise DeviceError(f"ALSA PCM {self.capture!r} (capture) failed: No such device [{self.capture}]")
        return super()._read(out, timeout)

    def _open_capture(self, sample_rate, channels, period, periods):
        if self.pulled:
            raise DeviceError(f"cannot open ALSA PCM {self.capture!r} for capture (No such device)")
        return super()._open_capture(sample_rate, channels, period, periods)


def test_a_lost_input_is_silence_and_comes_back_while_the_output_plays(pair, tmp_path, jack_server, caplog,
                                                                       retry_after_stall):
    """The input's interface pulled mid-gig and plugged back: the output plays on without
    an xrun — silence in, the decoder's answer (a loudness offset that sounds) — one line
    says the input is lost, its own thread reopens it when it returns."""
    seconds = 6.0
    c = config()

    def attempt():
        raw = tmp_path / "out.raw"
        raw.unlink(missing_ok=True)
        caplog.clear()
        engine = None
        try:
            inst = Instrument(c, model=str(pair), audio_in=True, seconds=seconds,
                              sets=[("pitch", 220.0), ("loudness", -60.0)])
            backend = PulledInput(f"pisynth_jackfile:FILE={raw}", capture="pisynth_jack")
            inst.connect_input(backend)
            engine = inst.engine = Engine(inst.player, backend, period=256, periods=8, realtime=True)
            engine.start()
            time.sleep(1.5)
            assert inst.audio_input.ready and backend.frames_read > SR
            backend.pulled = True
            t = t_pull = time.monotonic()
            while inst.audio_input.ready and time.monotonic() < t + 2:
                time.sleep(0.01)
            assert not inst.audio_input.ready, "the lost input was not noticed"
            time.sleep(1.2)  # down for a while: reopening fails, the output plays on
            assert inst.status()["input"]["device"] == "lost"
            backend.pulled = False
            t = t_back = time.monotonic()
            while not inst.audio_input.ready and time.monotonic() < t + 6:
                time.sleep(0.02)
            assert inst.audio_input.ready, f"the input did not come back: {inst.audio_input.last_error}"
            back = backend.frames_read
            time.sleep(0.5)
            assert backend.frames_read > back  # read again
            assert engine.wait(seconds + 10)
        finally:
            if engine is not None:
                engine.stop(fade=False)
        st = inst.status()
        when = [(round(x - t_pull, 3), round(x - t_back, 3)) for x in backend.last_xrun_times()]
        assert st["xruns"] == 0 and st["device_errors"] == 0, (st, "xruns after pull, after back:", when)
        assert st["input"]["reopens"] == 1, st["input"]
        lost = [r.getMessage() for r in caplog.records if "audio input lost" in r.getMessage()]
        assert len(lost) == 1 and "No such device" in lost[0] and "\n" not in lost[0], lost
        assert any("audio input back" in r.getMessage() for r in caplog.records)
        y = np.fromfile(raw, "<i2").astype(np.float32) / 32767
        blocks = y[SR // 2: int((seconds - 0.5) * SR)]
        blocks = blocks[: len(blocks) // 256 * 256].reshape(-1, 256)
        assert (np.sqrt((blocks ** 2).mean(axis=1)) > 0.003).all()  # sound all along: no gap

    retry_after_stall(attempt)


def test_input_and_output_lost_together_both_come_back(pair, jack_dummy):
    """Full duplex on one card, and the card pulled (the JACK server killed) and back: the
    engine reopens the output, the input's thread the input, and the input is read again."""
    c = config()
    inst = Instrument(c, model=str(pair), audio_in=True, sets=[("pitch", 220.0), ("loudness", -60.0)])
    backend = AlsaBackend("pisynth_jack")  # capture "": the same PCM, full duplex
    inst.connect_input(backend)
    engine = inst.engine = Engine(inst.player, backend, period=256, periods=2)
    engine.start()
    try:
        time.sleep(1.0)
        assert inst.audio_input.ready
        jack_dummy.kill()
        t = time.monotonic()
        while (engine.stats.device_errors == 0 or inst.audio_input.ready) and time.monotonic() < t + 5:
            time.sleep(0.05)
        assert engine.stats.device_errors >= 1 and not inst.audio_input.ready
        time.sleep(1.0)
        jack_dummy.start()
        t = time.monotonic()
        while not (engine.status()["device"] == "ok" and inst.audio_input.ready) and time.monotonic() < t + 10:
            time.sleep(0.05)
        assert engine.status()["device"] == "ok", engine.stats.last_device_error
        assert inst.audio_input.ready, inst.audio_input.last_error
        read = backend.frames_read
        time.sleep(0.5)
        assert backend.frames_read > read
        assert all(th.is_alive() for th in engine._threads)
    finally:
        engine.stop(fade=False)
