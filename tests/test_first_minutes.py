"""The first ten minutes on a laptop with no sound card, following the README (issue 27,
items 2–8): each test failed on the code before the fix."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import numpy as np
import pytest

from pi_synth import config as config_mod
from pi_synth.audio.backends import backend_class
from pi_synth.errors import DeviceError

ROOT = Path(__file__).resolve().parent.parent


def _midi(path: Path, seconds: float = 0.5, note: int = 72) -> Path:
    mid = mido.MidiFile()  # 480 ticks a beat at 120 bpm: 960 ticks a second
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("note_on", note=note, velocity=100, time=0))
    tr.append(mido.Message("note_off", note=note, velocity=0, time=int(seconds * 960)))
    mid.save(path)
    return path


# -- 2. a paced mode without a sound card ------------------------------------------------


def _play(backend, seconds: float, organ_path) -> tuple[float, object]:
    """Play ``seconds`` of the organ into ``backend`` through the real engine; wall time."""
    from pi_synth.audio.engine import Engine
    from pi_synth.audio.player import Player
    from pi_synth.audio.synth import Synth
    from pi_synth.control.events import StopAt
    from pi_synth.model.runtime import Runtime

    synth = Synth(Runtime(organ_path))
    player = Player(synth)
    player.hooks.append(StopAt(round(seconds * synth.sample_rate), player.fade_out))
    engine = Engine(player, backend, period=256, periods=2, gc="python")
    t0 = time.monotonic()
    engine.start()
    assert engine.wait(seconds * 20 + 10)
    dt = time.monotonic() - t0
    engine.stop(fade=False)
    return dt, engine


def test_null_is_paced_by_the_clock_and_unpaced_is_not(organ):
    """``--backend null`` plays in real time (it ran ~15× real time on one core, reporting
    'played 975 s' after 70 s); ``unpaced`` is the old behaviour, for benchmarks."""
    path = organ()
    null, unpaced = backend_class("null")(), backend_class("unpaced")()
    assert null.paced and not unpaced.paced
    dt_null, _ = _play(null, 1.0, path)
    dt_fast, _ = _play(unpaced, 1.0, path)
    assert dt_null >= 0.95  # 1 s of audio (and its fade) cannot be played sooner
    assert dt_fast < dt_null / 2


def test_the_paced_null_counts_an_underrun_like_a_card():
    """A writer that lets the buffer run dry gets an xrun, counted as ALSA counts one."""
    b = backend_class("null")()
    b.open(48000, 1, 256, 2)
    block = np.zeros((256, 1), np.float32)
    for _ in range(4):
        b.write(block)
    assert b.xruns == 0
    time.sleep(0.05)  # 50 ms: the 10.7 ms buffer has long played out
    b.write(block)
    assert b.xruns == 1 and len(b.last_xrun_times()) == 1
    b.close()


def test_unpaced_says_so_and_never_gets_realtime_priority(organ, cli):
    p = cli("run", "--backend", "unpaced", "--model", organ(), "--seconds", "1", check=0)
    assert "not paced by a clock" in p.stderr and "--backend null plays in real time" in p.stderr
    assert re.search(r"played 1\.\d+ s of organ on unpaced:", p.stderr)


def test_desktop_backend_plays_through_a_running_jack_server(organ, cli, jack_server):
    """``--backend desktop``: the sound server that runs (here a JACK dummy server: real
    pacing, no sound card), through its ALSA plugin; the run is paced by it."""
    from pi_synth.audio.backends.desktop import running_servers

    assert "jack" in running_servers()
    t0 = time.monotonic()
    p = cli("run", "--backend", "desktop", "--model", organ(), "--seconds", "1", check=0)
    assert time.monotonic() - t0 >= 1.0
    assert "desktop (jack):plug:jack" in p.stderr and "played 1.0" in p.stderr


def test_desktop_backend_without_a_server_says_what_to_do(organ, cli, monkeypatch, tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "JACK_DEFAULT_SERVER": "no-such-server", "PULSE_SERVER": ""}
    p = cli("run", "--backend", "desktop", "--model", organ(), "--seconds", "0.2", env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert "no desktop sound server" in line and "--backend wav" in line


def test_emulated_pins_keep_a_bounded_history(organ):
    """RSS of ``run --emulate`` grew by ~3 MB a second: gpiozero's mock pins kept every
    change the emulated SPI chip made. (The 10-minute curves: benchmarks/rss_curve.py.)"""
    from pi_synth.control.board import STATES_KEPT, EmulatedBoard, use_board
    from pi_synth.control.chips import open_adc

    board = use_board(EmulatedBoard())
    try:
        board.attach_adc("mcp3008")
        adc = open_adc("mcp3008", board)
        for _ in range(200):
            for ch in range(8):
                adc.read(ch)
        pins = board.pin_factory.pins.values()
        assert max(len(p.states) for p in pins) <= STATES_KEPT
        adc.close()
    finally:
        use_board(None)


# -- 3. run --midi stops at the end of the file ------------------------------------------


def test_run_midi_stops_at_the_end_plus_the_release_tail(organ, cli, tmp_path):
    """It played on forever (a 1445 s WAV until killed)."""
    mid = _midi(tmp_path / "n.mid", 0.5)
    out = tmp_path / "rec.wav"
    p = cli("run", "--backend", "wav", "--device", out, "--model", organ(), "--midi", mid, timeout=60)
    assert p.returncode == 0, p.stderr
    from pi_synth.audio.backends.wav import read_wav

    x, sr = read_wav(out)
    assert 1.5 * sr <= len(x) <= 1.7 * sr  # the note (0.5 s) + the 1 s release tail + the fade
    assert "stopping after 1.5 s: the events (last at 0.50 s) + 1 s release tail" in p.stderr


def test_run_midi_loops_with_loop_and_plays_on_with_a_live_source(organ, tmp_path):
    from pi_synth import render_plan
    from pi_synth.app import Instrument
    from pi_synth.control.events import load_midi_file
    from pi_synth.control.rig import live_inputs

    events = load_midi_file(_midi(tmp_path / "n.mid", 0.5))
    assert render_plan.length(events=events, loop=True).seconds is None
    # with a recording played in: the input's length, or the events' if they go on after it
    # (an event after the end of the input was dropped without a word)
    assert render_plan.length(events=events, input_seconds=2.0, tail_s=0.1).seconds == pytest.approx(2.1)
    long = render_plan.length(events=events, input_seconds=0.2, tail_s=0.1)
    assert long.seconds == pytest.approx(max(ev.t for ev in events) + 0.1) and "after the input's" in long.why
    cfg = config_mod.load()
    assert live_inputs(cfg) == []  # the defaults are no decision to play along
    conf = tmp_path / "osc.toml"
    conf.write_text("[osc]\nenabled = true\n")
    assert live_inputs(config_mod.load(str(conf))) == ["OSC"]
    assert render_plan.length(events=events, live=["OSC"]).seconds is None
    inst = Instrument(cfg, model=str(organ()), events=events, loop_seconds=1.5)
    notes = []
    inst.router.listener = None
    real = inst.router.midi_bytes
    inst.router.midi_bytes = lambda data, parser=None: notes.append(data[0] & 0xF0) or real(data, parser)
    for _ in range(round(4.0 * 48000 / 256)):  # 4 s of audio: three passes of 1.5 s
        inst.player.next_block()
    assert inst.timeline.passes == 2 and notes.count(0x90) == 3


def test_help_says_when_run_stops(cli):
    text = " ".join(cli("run", "--help", check=0).stdout.split())
    assert "--loop" in text and "stops at its end plus the release tail" in text
    assert "live source" in text and "desktop" in text and "unpaced" in text


# -- 4. --backend wav without --device ------------------------------------------------------
# (tests/test_bad_input.py::test_case10_run_backend_wav_without_a_device_names_its_file)


def test_wav_backend_default_is_a_dated_file_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b = backend_class("wav")("default")
    assert re.fullmatch(r"pi-synth-\d{8}-\d{6}\.wav", Path(b.device).name)
    assert Path(b.device).parent == tmp_path


# -- 5. the panel ---------------------------------------------------------------------------


@pytest.fixture
def panel(organ, tmp_path):
    """A real instrument, the emulated board and its rig, and the panel reading keys from a
    pipe (a terminal's bytes) and drawing into a buffer."""
    from pi_synth.app import Instrument
    from pi_synth.control.board import EmulatedBoard, use_board
    from pi_synth.control.panel import Panel
    from pi_synth.control.rig import Rig

    cfg = config_mod.load()
    cfg.values["knobs"]["chip"] = "mcp3008"
    cfg.values["midi"]["ports"] = ""
    board = use_board(EmulatedBoard())
    inst = Instrument(cfg, model=str(organ()))
    rig = Rig.from_config(cfg, inst.router)
    assert not rig.failed, rig.failed
    r, w = os.pipe()
    out = io.StringIO()
    stop = threading.Event()
    p = Panel(inst, board, rig, stop, fd=r, out=out)
    p.typed = lambda text: os.write(w, text.encode())
    yield p
    p.stop()
    rig.close()
    use_board(None)
    os.close(r)
    os.close(w)


def _until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def test_panel_shows_each_knobs_control_and_value_in_its_units(panel):
    lines = panel.lines()
    assert len(lines) == 5
    # the organ's timbre control first, then its voice's, in their units (knobs 1-4, 5-8)
    assert "[1 brightness 0.50]" in lines[1] and "2 attack 5.00 ms" in lines[1], lines[1]
    assert "3 release" in lines[1] and " ms" in lines[1] and "5 octave" in lines[2] and "8 -" in lines[2]
    assert "←→ ±.05" in lines[3] and "±.25" in lines[3] and "±.01" in lines[3] and "q: quit" in lines[4]
    assert all(len(line) < 80 for line in lines[1:])  # an 80-column terminal shows it whole


def test_panel_steps_are_coarse_and_fine_and_reach_the_model(panel):
    """A key moved a knob by 0.02 (25 presses for a sweep): now 0.05, 0.25 coarse, 0.01
    fine — through the emulated chip, the poller and the mapping to the control."""
    adc, bank = panel.emu.adc, panel.inst.synth.bank
    vref = adc.vref
    adc.volts[0] = 0.0
    panel.keys("]]")  # coarse: half way
    assert adc.volts[0] / vref == pytest.approx(0.5)
    panel.keys("+\x1b[C")  # two steps (an arrow key is an escape sequence)
    assert adc.volts[0] / vref == pytest.approx(0.6)
    panel.keys(",,")  # fine
    assert adc.volts[0] / vref == pytest.approx(0.58)
    for _ in range(10):
        panel.rig.poll_once()
        time.sleep(0.005)
    assert bank.get("brightness") == pytest.approx(0.58, abs=0.01)
    assert "[1 brightness 0.58]" in panel.lines()[1]
    panel.keys("6\x1b[A")  # select knob 6 (free), coarse up
    assert "[6 -]" in panel.lines()[2]


def test_panel_shows_the_note_and_gate(panel):
    assert "no note" in panel.lines()[0]
    panel.keys("a")  # C4
    head = panel.lines()[0]
    assert "note C4 (60) gate on" in head
    panel.keys("k")
    assert "note C5 (72)" in panel.lines()[0]
    panel.keys(" ")
    assert "gate on" not in panel.lines()[0]


def test_panel_shows_active_voices_when_the_status_has_them(panel):
    real = panel.inst.status
    panel.inst.status = lambda: {**real(), "voices": {"active": 3, "max": 8}}
    assert "voices 3/8" in panel.lines()[0]


def test_log_lines_print_above_the_panel_not_into_it(panel):
    """Log lines went into the panel's line; now they scroll above it, and the panel is
    drawn again below each."""
    root = logging.getLogger()
    h = logging.StreamHandler(panel._out)
    h.setFormatter(logging.Formatter("pi-synth: %(levelname)s: %(message)s"))
    root.addHandler(h)
    try:
        panel.start()
        panel.typed("a")
        assert _until(lambda: "note C4" in panel._out.getvalue())
        logging.getLogger("pi_synth.test").warning("a log line")
        assert _until(lambda: panel._out.getvalue().count("keys: 1-8") >= 3)
        text = panel._out.getvalue()
        i = text.index("pi-synth: WARNING: a log line\n")
        assert text[i - 4:i] == "\r\x1b[J"  # the panel's lines cleared first
        assert "keys: 1-8" in text[i:]  # and drawn again below
        assert h not in root.handlers  # while the panel is up, it prints the log
    finally:
        panel.stop()
        assert h in root.handlers
        root.removeHandler(h)


def test_panel_quits_on_q(panel):
    panel.start()
    panel.typed("q")
    assert _until(panel.stop_event.is_set)


# -- 6. calibrate off the Pi ------------------------------------------------------------------


def test_calibrate_points_needs_no_adc_or_config(cli, tmp_path):
    p = cli("calibrate", "3", "--points", "0.25:-2.5,0.5:0,0.75:2.5",
            env={"PI_SYNTH_STATE_DIR": str(tmp_path / "st")}, check=0)
    assert (tmp_path / "st" / "calibration" / "mcp3008-0.0-ch3.json").is_file() and "3-point" in p.stdout


def test_calibrate_takes_cv_names(cli, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('[[cv]]\nchannel = 5\nrole = "pitch"\n')
    p = cli("calibrate", "cv1", "--config", conf, "--points", "0.4:0,0.6:2",
            env={"PI_SYNTH_STATE_DIR": str(tmp_path / "st")}, check=0)
    assert "channel 5" in p.stdout and (tmp_path / "st" / "calibration" / "mcp3008-0.0-ch5.json").is_file()
    bad = cli("calibrate", "cv2", "--config", conf, "--points", "0.4:0,0.6:2")
    assert bad.returncode == 2 and "cv1..cv1" in bad.stderr


def test_calibrate_with_emulate_is_in_the_readme_table():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `pi-synth calibrate"))
    assert "--emulate" in row and "--points" in row


def test_state_goes_to_the_users_folder_off_the_pi(tmp_path, monkeypatch):
    """Off the Pi (no /var/lib/pi-synth), state goes to ~/.local/state/pi-synth — even for
    root, and the system folder is never created; on a provisioned Pi it is used."""
    from pi_synth import state

    monkeypatch.delenv("PI_SYNTH_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    system = tmp_path / "var-lib" / "pi-synth"
    monkeypatch.setattr(state, "SYSTEM_STATE_DIR", str(system))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state.state_dir() == tmp_path / "xdg" / "pi-synth"
    assert not system.exists()
    system.mkdir(parents=True)  # provisioned (scripts/provision.sh makes it)
    assert state.state_dir() == system and state.system_state_unreachable() is None


# -- 7. which file plays, said one way --------------------------------------------------------


def test_info_bench_doctor_and_run_name_the_same_file(cli, tmp_path):
    """``info flute`` showed flute.int8.onnx while bench, doctor and run played
    flute.fp32.onnx: now each names the file ``precision = "auto"`` picks, and why."""
    from pi_synth.model.library import shipped_dir

    models = tmp_path / "models"
    models.mkdir()
    for kind in ("int8", "fp32"):
        shutil.copy(shipped_dir() / f"morph.{kind}.onnx", models / f"morph.{kind}.onnx")
    env = {"PI_SYNTH_MODELS": str(models)}
    info = cli("info", "morph", env=env, check=0).stdout
    plays = re.search(r"plays (morph\.\w+\.onnx): precision \"auto\" picks it here", info).group(1)
    other = ({"morph.int8.onnx", "morph.fp32.onnx"} - {plays}).pop()
    assert f"{other} is the other file" in info
    assert json.loads(cli("info", "morph", "--json", env=env, check=0).stdout)["path"].endswith(plays)
    bench = cli("bench", "morph", "--blocks", "30", env=env, check=0).stdout
    assert bench.startswith(f"morph ({plays}: precision \"auto\" picks it here")
    assert f"  {plays}: block time median" in bench
    assert re.search(r"×\d\.\d{3} the time a block, \d+\.\d% (faster|slower)", bench)
    doc = json.loads(cli("doctor", "--json", "--model", "morph", "--blocks", "20", env=env).stdout)
    model = next(c for c in doc["checks"] if c["name"] == "model")
    assert model["details"]["path"].endswith(plays) and f"({plays}: precision" in model["summary"]
    run = cli("run", "--model", "morph", "--backend", "unpaced", "--seconds", "0.2", env=env, check=0).stderr
    assert f"playing morph ({plays}: precision \"auto\" picks it here" in run
    forced = cli("info", "morph", "--precision", "int8", env=env, check=0).stdout
    assert "plays morph.int8.onnx: precision \"int8\" asks for it" in forced


# -- 8. doctor and the README on a laptop -------------------------------------------------------


def test_doctor_on_a_laptop_points_to_the_laptop_ways_to_listen(cli, tmp_path):
    p = cli("doctor", "--json", "--root", tmp_path, "--device", "no_such_pcm", "--blocks", "20")
    rep = json.loads(p.stdout)
    pcm = next(c for c in rep["checks"] if c["name"] == "pcm")
    assert pcm["status"] == "fail"
    assert "--backend desktop" in pcm["fix"] and "--backend null" in pcm["fix"]
    assert "render default --midi demo" in pcm["fix"]


def test_readme_gives_the_demo_and_one_bring_your_own_model_walkthrough(cli, tmp_path):
    text = (ROOT / "README.md").read_text()
    assert "--midi demo" in text and "src/pi_synth/data/demo.mid" in text
    section = text.split("## Bring your own model", 1)[1].split("\n## ", 1)[0]
    for step in ("PI_SYNTH_MODELS", "pi-synth info", "pi-synth render", "pi-synth run", "docs/model-format.md"):
        assert step in section, step
    p = cli("render", "organ", "--midi", "demo", "-o", tmp_path / "demo.wav", check=0)  # the demo resolves
    assert "wrote" in p.stdout


def test_readme_has_a_laptop_section_with_commands_that_work():
    text = (ROOT / "README.md").read_text()
    section = text.split("## On a laptop", 1)[1].split("\n## ", 1)[0]
    for cmd in ("--backend desktop", "--backend null", "--emulate", "pi-synth render", "pi-synth doctor"):
        assert cmd in section, cmd
    from pi_synth.cli import build_parser

    parser = build_parser()
    for line in re.findall(r"^(?:\.venv/bin/)?pi-synth (.+)$", section, re.M):  # every command parses
        args = line.split(" #")[0].split()
        if "…" in args or "MODEL" in args:
            continue
        try:
            parser.parse_args(args)
        except SystemExit as e:
            pytest.fail(f"README laptop command does not parse: pi-synth {line} ({e})")


def test_run_into_a_file_plays_the_notes_of_a_model_with_an_encoder(cli, tmp_path):
    """`run --backend wav` is the render's twin: with no input of its own, a model that could
    take audio (morph and its encoder) plays the notes, not the encoder's answer to silence,
    and the same samples as `render` (which had it at -80 dB: the encoder heard silence)."""
    from pi_synth.audio.backends.wav import read_wav

    conf = tmp_path / "c.toml"
    conf.write_text('[model]\nprecision = "fp32"\n')
    env = {"PI_SYNTH_CONFIG": str(conf)}
    ran, rendered = tmp_path / "run.wav", tmp_path / "render.wav"
    p = cli("run", "--backend", "wav", "--device", ran, "--model", "morph", "--midi", "demo", "--seconds", "2",
            env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "no audio in: the wav backend has no input of its own" in p.stderr
    cli("render", "morph", "--midi", "demo", "--seconds", "2", "-o", rendered, env=env, check=0, timeout=120)
    x, y = read_wav(ran)[0], read_wav(rendered)[0]
    n = min(len(x), len(y))
    assert np.abs(y).max() > 0.05
    assert np.array_equal(x[:n], y[:n])


def test_calibrate_emulate_patches_each_voltage_and_saves_a_calibration(tmp_path):
    """--emulate used to read a fixed half-scale whatever was 'patched', so it always ended
    in 'readings are the same'. Now each Enter patches the asked voltage through an
    emulated input stage, and the calibration found maps readings back to those volts."""
    from pi_synth.control.calibrate import EMULATED_STAGE
    from pi_synth.control.cv import Calibration

    p = subprocess.run([sys.executable, "-m", "pi_synth", "calibrate", "3", "--emulate", "--volts", "0,1,2,3,4"],
                       input="\n" * 5, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PI_SYNTH_STATE_DIR": str(tmp_path / "st")})
    assert p.returncode == 0, p.stderr
    assert "saved 5-point calibration" in p.stdout
    cal = Calibration.from_json(json.loads((tmp_path / "st" / "calibration" / "mcp3008-0.0-ch3.json").read_text()))
    off, gain = EMULATED_STAGE
    for v in (0.5, 1.7, 3.2):
        assert abs(cal.volts((off + gain * v) / 3.3) - v) < 0.03  # within a 10-bit step of the stage


def test_counters_that_keep_moving_are_logged_every_few_seconds(monkeypatch, caplog):
    """A model that cannot keep up moves its xruns every period: the log said so ten times a
    second (500 lines for a 2 s run). Now the first move is said at once, then at most every
    COUNTER_EVERY_S with what it added meanwhile, and the rest when the run ends."""
    import logging
    import types

    from pi_synth import app

    now = [100.0]
    monkeypatch.setattr(app.time, "monotonic", lambda: now[0])
    engine = types.SimpleNamespace(failed=None)
    last: dict = {}

    def status(x):
        return {"xruns": x, "late_periods": 0, "nonfinite_blocks": 0, "device_errors": 0, "reopens": 0}

    caplog.set_level(logging.WARNING, logger="pi_synth")
    for k in range(1, 41):  # 4 s at the monitor's 10 Hz, an xrun each tick
        app.log_changes(status(k), last, engine)
        now[0] += 0.1
    said = [r.getMessage() for r in caplog.records if "xruns" in r.getMessage()]
    assert said == ["xruns: 1 (+1)"]
    now[0] += 1.5  # 5.5 s after the first line
    app.log_changes(status(60), last, engine)
    app.log_changes(status(61), last, engine)
    app.log_changes(status(62), last, engine, final=True)
    said = [r.getMessage() for r in caplog.records if "xruns" in r.getMessage()]
    assert said == ["xruns: 1 (+1)", "xruns: 60 (+59)", "xruns: 62 (+2)"]
