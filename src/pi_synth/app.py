"""The instrument: config + models + controls + engine, as ``pi-synth run`` plays it.

:class:`Instrument` assembles the audio path (a :class:`~pi_synth.audio.player.Player`
over one loaded model) and the control path (one :class:`~pi_synth.control.router.Router`
that every source talks to), and owns what happens *between* blocks: actions (next
or previous model, program change, presets, MIDI learn, panic), hot swap with a
crossfade, and config reload on SIGHUP. Everything slow (loading a model, reading a
file) happens here, on a control thread; the audio thread only ever sees a finished
object handed over in one attribute store.

``pi-synth render`` builds the same Instrument and pulls its player offline, so a
render and a live run make the same samples — with audio in too: ``--input IN.wav`` is
played into the same :class:`~pi_synth.audio.input.AudioInput` a live run reads its
capture device through (the WAV backend's capture side).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pi_synth.audio.player import Player
from pi_synth.control.events import StopAt, Timeline, check_events, demo_midi, note_ons
from pi_synth.control.router import Router
from pi_synth.errors import ConfigError, DeviceError, ModelError, PiSynthError
from pi_synth.model.library import find_model, list_models, precision_of
from pi_synth.patch import build_patch, make_mapping
from pi_synth.service.realtime import release_heap

log = logging.getLogger(__name__)

# --emulate: the emulated ADC is read bit by bit over mock SPI in Python (~0.4 ms a channel
# here, holding the GIL); 25 Hz is quick enough for keys on the panel and leaves the audio
# thread its time (at 100 Hz, a third of a core went to it)
EMULATED_POLL_HZ = 25.0


class Instrument:
    """One instrument: the playing patch (model, mapping, voice), the router every source
    talks to, the player the engine pulls from, presets and MIDI learn — and what happens
    between blocks (actions, hot swap, reload)."""

    def __init__(self, cfg, *, model: str | None = None, events=(), seconds: float | None = None,
                 sets=(), fade_in: bool = True, audio_in: bool | str = False, offline: bool = False,
                 loop_seconds: float | None = None):
        self.cfg = cfg
        self.offline = offline  # a render: see patch.voice_budget
        self.audio_in = audio_in  # for swaps too: True, "auto" (if the model can) or False
        self.audio_input = None  # the AudioInput, once connect_input made one
        self.needs_restart: list[str] = []  # settings the last reload changed but cannot apply
        self._started_with = cfg  # what those settings are while this instrument runs
        path = configured_model(cfg, model)
        patch = build_patch(cfg, path, fade_in=fade_in, offline=offline, audio_in=audio_in)
        self.model_path = patch.path
        synth, card = patch.synth, patch.card
        self.voice, self.mapping, self.controls = patch.voice, patch.mapping, patch.controls
        self.router = Router(self.controls.card, self.controls, self.mapping, voice=self.voice)
        self.router.on_action = self.action
        self.router.channel = listen_channel(cfg)
        self.set_names = [name for name, _ in sets]
        for name, value in sets:
            try:  # the played controls: the model's and its voice's (attack, release, …)
                why = self.controls.card.control(name).refuse(value)
            except KeyError as e:
                raise ConfigError(f"--set {name}: {e.args[0]}") from None
            if why:
                raise ConfigError(f"--set {name}={value:g}: {why}")
            self.controls.set(name, value)
        hooks = []
        self.timeline = None
        self.note_ons: list[tuple[int, int]] = []  # (channel, note) the events play
        if events:
            check_events(events, self.router)
            self.timeline = Timeline(events, self.router, card.sample_rate, loop_seconds, block=card.block_size)
            hooks.append(self.timeline)
            self.note_ons = note_ons(events)
            if self.note_ons:
                # the notes play it from the start: silence until the first (a latent voice
                # such as morph sounds at its card's loudness until a key takes over)
                self.router.voice_plays()
        hooks.append(self.router.on_block)  # the router object outlives swaps
        self.player = Player(synth, hooks, channels=cfg.output.channels or None)
        if not offline and cfg.output.record_seconds > 0:  # the last seconds, for the web page
            from pi_synth.audio.recorder import Recorder

            self.player.recorder = Recorder(cfg.output.record_seconds, card.sample_rate, self.player.channels,
                                            max_block=max(16384, card.block_size))
        self.stop_at = None
        if seconds is not None:
            self.stop_after(seconds)
        self.engine = None
        from pi_synth.control.learn import MidiLearn
        from pi_synth.control.presets import PresetStore

        self.presets = PresetStore()
        self.learn = MidiLearn(self.mapping)
        missing = self.learn.load()
        if missing:
            log.info("MIDI-learn bindings not used by %s: %s", card.name, ", ".join(missing))
        self.router.listener = self.learn.listener
        self._swap_lock = threading.Lock()  # control threads only: one swap at a time
        self._reload_lock = threading.Lock()  # SIGHUP and OSC's reload: one at a time
        self.config_path: str | None = None  # the --config the instrument started with
        self.failed_loads = 0
        self.last_error = ""

    def stop_after(self, seconds: float) -> None:
        """Fade out once the audio clock reaches ``seconds`` (the length the render plan
        decided; the earlier of two calls wins)."""
        frames = round(seconds * self.player.sample_rate)
        if self.stop_at is None:
            self.stop_at = StopAt(frames, self.player.fade_out)
            self.player.hooks.append(self.stop_at)
        else:
            self.stop_at.frames = min(self.stop_at.frames, frames)

    @property
    def card(self):
        return self.player.card

    def connect_input(self, backend) -> None:
        """Make the audio input on ``backend``'s capture side ([input] conditioning); the
        player reads it from the start if the playing model takes audio, else from the
        first swap to one that does."""
        from pi_synth.audio.input import AudioInput

        i = self.cfg.input
        self.audio_input = AudioInput(backend, self.player.block_size, self.player.sample_rate,
                                      gain_db=i.gain_db, gate_db=i.gate_db, gate_release_ms=i.gate_release_ms,
                                      dc_hz=i.dc_hz)
        if self.synth.takes_input:
            self.player.input = self.audio_input

    @property
    def synth(self):
        return self.player.synth

    # -- hot swap -------------------------------------------------------------------------

    def swap(self, model: str | Path) -> bool:
        """Load ``model`` beside the running one and crossfade to it. On any failure the
        old model keeps playing and the reason is logged in one line."""
        with self._swap_lock:
            self.collect_retired()  # models earlier swaps left behind, whoever else collects
            try:
                path = find_model(str(model), self.cfg.model.precision, self.cfg.model.threads)
                patch = build_patch(self.cfg, path, fade_in=False, carry=self.synth.bank, voice=self.voice,
                                    offline=self.offline,
                                    audio_in=self.audio_in if self.audio_input is not None else False)
            except PiSynthError as e:
                return self._refuse(str(e))
            synth = patch.synth
            if not self.player.can_crossfade(synth):
                return self._refuse(f"{path}: {synth.sample_rate} Hz cannot crossfade "
                                    f"with {self.player.sample_rate} Hz", restart=True)
            if synth.voices is not None and synth.block_size != self.player.block_size:
                # its voices advance once a player block: their row moves must meet its blocks one to one
                return self._refuse(f"{path}: a batched note model with {synth.block_size}-frame blocks cannot "
                                    f"take over a stream of {self.player.block_size}-frame blocks", restart=True)
            why = self.engine.admits(synth) if self.engine is not None else None
            if why:
                return self._refuse(f"{path}: {why}", restart=True)
            self.voice, self.mapping, self.controls = patch.voice, patch.mapping, patch.controls
            self.router.retarget(patch.controls.card, patch.controls, patch.mapping, patch.voice)
            if self.learn is not None:
                self.learn.attach(patch.mapping)
            inp = self.audio_input
            if synth.takes_input and self.player.input is None and inp is not None and self.engine is not None:
                self.engine.attach_input(inp, start=False)  # its own thread opens it, lets a block gather
                self.player.input = inp
            self.player.crossfade_to(synth)
            self.model_path = patch.path
            log.info("crossfading to %s (%s)", patch.card.name, path)
            if synth.channels > self.player.channels:
                log.warning("%s is stereo, this stream mono: heard as the mean of its channels; "
                            "restart with --model %s, or set output.channels = 2, to hear it in stereo",
                            patch.card.name, path)
            return True

    def _refuse(self, why: str, restart: bool = False) -> bool:
        """A swap that cannot happen: counted, said in one line; the old model plays on."""
        self.failed_loads += 1
        self.last_error = why + ("; restart with --model to switch" if restart else "")
        log.warning("model not changed: %s", self.last_error)
        return False

    def collect_retired(self) -> None:
        """Close models the audio thread has finished with (control thread), then hand the
        freed heap back to the system."""
        retired = self.player.retired
        if not retired:
            return
        while retired:
            retired.pop().close()
        release_heap()

    def model_names(self) -> list[str]:
        """The installed models in program order: the shipped ones first, then the ones
        added (boot partition, uploads), each group by name — so an upload takes the next
        program number and never moves a shipped voice's."""
        from pi_synth.model.library import shipped_dir

        shipped = shipped_dir()
        names, added = [], []
        for p in list_models():
            base = p.name.split(".")[0]
            group = names if shipped is not None and p.parent == shipped or p.parent.name == "data" else added
            if base not in names and base not in added:
                group.append(base)
        return names + added

    def _step_model(self, step: int) -> None:
        names = self.model_names()
        if not names:
            return
        current = Path(self.model_path).name.split(".")[0]
        i = names.index(current) if current in names else -1
        self.swap(names[(i + step) % len(names)])

    # -- actions (from any control thread) --------------------------------------------------

    def action(self, name: str, arg=None) -> None:
        if name in ("program", "preset_save", "preset_recall") and arg is not None:
            whole = (isinstance(arg, int) and not isinstance(arg, bool)) or (isinstance(arg, float)
                                                                             and arg.is_integer())
            if not whole or not 0 <= arg <= 127:
                log.warning("%s: the slot must be an integer in 0..127, got %r: ignored", name, arg)
                return
            arg = int(arg)
        if name == "program" and arg is None:
            log.warning("program: needs the number of the model (0..127): ignored")
            return
        if name in ("next_model", "prev_model", "program"):
            # loading takes a while: never on the thread that delivered the input
            if name == "program" and self.cfg.midi.program == "preset":
                return self.action("preset_recall", arg)
            if name == "program" and self.cfg.midi.program == "off":
                return
            if name == "program":
                names = self.model_names()
                target = names[int(arg)] if int(arg) < len(names) else None
                if target is None:
                    log.info("program %d: there are %d models (programs 0..%d: %s); ignored", int(arg),
                                len(names), len(names) - 1, ", ".join(names))
                if target:
                    threading.Thread(target=self.swap, args=(target,), daemon=True).start()
            else:
                threading.Thread(target=self._step_model, args=(1 if name == "next_model" else -1,),
                                 daemon=True).start()
        elif name == "panic":
            log.info("panic: all notes off")
        elif name == "preset_save":
            try:
                self.save_preset(int(arg or 0))
            except (ValueError, PiSynthError, OSError) as e:
                log.warning("preset not saved: %s", e)
        elif name == "preset_recall":
            try:
                self.recall_preset(int(arg or 0))
            except (ValueError, PiSynthError) as e:
                log.warning("preset not recalled: %s", e)
        elif name == "learn":
            self.learn.on_action(arg)

    # -- presets ------------------------------------------------------------------------------

    def save_preset(self, slot: int, name: str | None = None) -> None:
        """The controls and mapping now into ``slot``; ``name`` None keeps the slot's name."""
        from pi_synth.control.mapping import routes_to_json

        if name is None:
            try:
                old = self.presets.load(slot)
            except PiSynthError:
                old = None  # a corrupt preset is replaced by the new one
            name = old.get("name", "") if old else ""
        card = self.controls.card
        self.presets.save(slot, model=card.name, values=self.controls.values(),
                          mapping=routes_to_json(self.mapping.routes), name=name,
                          file=Path(self.model_path).name.split(".")[0],
                          units={c.name: c.unit for c in card.controls})
        log.info("preset %d saved", slot)

    def recall_preset(self, slot: int) -> tuple[list[str], str]:
        """Set the controls (and mapping) from ``slot``: a preset saved on another model
        switches to that model first (a patch is its model and its settings). Returns what
        the model playing lacks, and which model that is. Where the preset's model is not
        installed, only the controls both share in the same unit are set and its mapping
        (the other model's knobs) is left out. ``ValueError`` for an empty slot,
        ``ConfigError`` for a corrupt file."""
        from pi_synth.control.presets import apply

        p = self.presets.load(slot)
        if p is None:
            raise ValueError(f"preset {slot} is empty")
        saved_on = p.get("model", "")
        mapping = self.mapping
        if saved_on and saved_on != self.controls.card.name:
            target = p.get("file") or saved_on
            try:
                find_model(target, self.cfg.model.precision, self.cfg.model.threads)
                found = True
            except PiSynthError:
                found = False
            if not (found and self.swap(target)):
                mapping = None
                log.warning("preset %d was saved on %s, %s: the controls %s shares with it are set, its knob "
                            "mapping is not", slot, saved_on, "which is not installed" if not found else
                            "which cannot take over now", self.controls.card.name)
        skipped = apply(p, self.controls, mapping, units={c.name: c.unit for c in self.controls.card.controls})
        if skipped:
            log.info("preset %d: %s not in model %s", slot, ", ".join(skipped), self.controls.card.name)
        return skipped, self.controls.card.name

    # -- reload (SIGHUP) --------------------------------------------------------------------

    def reload(self, explicit_config: str | None = None) -> bool:
        """Re-read the config; a bad file keeps the old one. A changed model crossfades in.
        On failure :attr:`last_error` says why in one line."""
        with self._reload_lock:
            return self._reload(explicit_config)

    def _reload(self, explicit_config: str | None) -> bool:
        from pi_synth import config as config_mod

        try:
            cfg = config_mod.load(explicit_config)
        except PiSynthError as e:
            log.warning("config not reloaded, keeping the old one: %s", e)
            self.last_error = str(e)
            return False
        for w in cfg.warnings:
            log.warning("%s", w)
        try:
            mapping = make_mapping(cfg, self.controls)
            wanted = configured_model(cfg, None) if cfg.model.path else None  # before anything changes
        except PiSynthError as e:
            log.warning("config not reloaded, keeping the old one: %s", e)
            self.last_error = str(e)
            return False
        config_mod.keep_overrides(self.cfg, cfg)
        self.needs_restart = restart_keys(self._started_with, cfg)
        self.cfg = cfg
        self.mapping = mapping
        self.router.mapping = mapping
        self.learn.attach(mapping)
        self.router.channel = listen_channel(cfg)
        self.synth.guard.configure(gain_db=cfg.output.gain_db, limit_dbfs=cfg.output.limit_dbfs)
        if wanted is not None and wanted != Path(self.model_path):
            if not self.swap(wanted):
                return False  # the new settings hold; the old model plays on (last_error says why)
        log.info("config reloaded from %s", cfg.path or "built-in defaults")
        if self.needs_restart:
            log.warning("these settings take effect at the next start, not by a reload: %s (sudo systemctl "
                        "restart pi-synth)", ", ".join(self.needs_restart))
        return True

    def status(self) -> dict:
        """The engine's counters and what plays: what ``/pi-synth/status`` replies and the
        web page shows (control values included, so its sliders follow the knobs)."""
        st = self.engine.status() if self.engine is not None else {}
        path = Path(self.model_path)
        # the model chosen (whose controls the knobs now move), not the one fading out, so
        # model, model_path and controls agree from the moment a swap is accepted
        st.update(model=self.controls.card.name, crossfading=self.player.swapping,
                  swaps=self.player.swaps, failed_loads=self.failed_loads,
                  model_path=str(path), precision=precision_of(path), last_error=self.last_error,
                  controls=self.controls.values(),
                  learn={"armed": self.learn.armed, "target": self.learn.target})
        v = self.voice
        if v is not None and self.router.is_note:
            if getattr(v, "poly", False):
                st["voices"] = {"active": v.active, "max": v.budget, "stolen": v.stolen, "dropped": v.dropped}
            else:
                st["voices"] = {"active": int(v.sounding), "max": 1}
        if self.player.input is not None:
            st["input"] = self.player.input.status()
        return st


def listen_channel(cfg) -> int | None:
    """The MIDI channel the router passes on (0..15), or None for all: ``[midi] channel``,
    except in MPE, where every channel carries notes."""
    if cfg.voice.mode == "mpe" or cfg.midi.channel == 0:
        return None
    return cfg.midi.channel - 1


# -- the two ways to play: live and offline ---------------------------------------------------


def tail_seconds(cfg) -> float:
    """What plays after the last event: the voice's release and the fade (at least 1 s)."""
    return max(1.0, (cfg.midi.release_ms + cfg.output.fade_ms) / 1000.0 + 0.25)


# what a reload applies to the running instrument; every other setting is read at start
RELOADED = {"midi.channel", "output.gain_db", "output.limit_dbfs", "model.path"}


def restart_keys(old, new) -> list[str]:
    """The settings ``new`` changes from ``old`` that a reload cannot apply (the audio device,
    the OSC port, the knobs' wiring…): said, so a page that saved them is not believed."""
    out = []
    for table, values in new.values.items():
        before = old.values.get(table)
        if before == values or table == "map":
            continue
        if isinstance(values, list):
            out.append(f"[[{table}]]")
            continue
        out += [f"{table}.{k}" for k, v in values.items()
                if (before or {}).get(k) != v and f"{table}.{k}" not in RELOADED]
    return out


def configured_model(cfg, model: str | None) -> Path:
    """The model file to play: ``model`` (the command line's), else the config's
    ``[model] path``; a config's name that finds nothing says where it was set."""
    if model:
        return find_model(model, cfg.model.precision, cfg.model.threads)
    try:
        return find_model(cfg.model.path, cfg.model.precision, cfg.model.threads)
    except ModelError as e:
        where = cfg.where("model.path")
        if where is None:
            raise
        raise ModelError(f"{where}: [model] path: {e}") from None


LONG_RENDER_SECONDS = 600.0  # a render implied longer than this is said before it starts
LIMITED_SAY = 0.05  # a render whose limiter bent more than this share of its blocks says so


def render(cfg, *, model: str, output: str, format: str = "S16_LE", events=(), seconds: float | None = None,
           sets=(), input: str | None = None) -> str:
    """``pi-synth render``: the instrument pulled offline into a WAV file, faster than real
    time; returns the line to print. How long, and whether the file fits, is the render
    plan's call (:mod:`pi_synth.render_plan`), made before anything is written. ``input``:
    a WAV played into the audio input (the model must take audio: a decoder with its
    encoder, or an effect)."""
    from pi_synth import render_plan as plan
    from pi_synth.audio.backends.wav import WavBackend, load_input
    from pi_synth.audio.engine import render_offline
    from pi_synth.model.card import load_card
    from pi_synth.patch import input_kind, no_input_error

    if not output:
        raise ConfigError("render needs an output file: -o OUT.wav")
    said = None
    capture = None
    input_said = ""
    if input is not None:
        if plan.same_file(input, output):
            raise ConfigError(f"-o {output} is the --input file: the render would overwrite the recording; "
                              "write to another file")
        path = configured_model(cfg, model)
        card = load_card(path)
        if input_kind(path, card) is None:  # before the slow part: the one line, at once
            raise no_input_error(path, card)
        capture, notes = load_input(input, card.sample_rate)
        input_said = f", input {input} ({', '.join(notes)})" if notes else f", input {input}"
        model = str(path)
    elif not events:
        events, said = _demo_phrase_if_played_by_notes(cfg, model)
    length = plan.length(
        seconds=seconds, events=events, default=plan.DEFAULT_RENDER_SECONDS,
        # after an input: a block and the models' latency, so its last sound comes out
        input_seconds=len(capture) / card.sample_rate if capture is not None else None,
        tail_s=input_tail(card) if capture is not None
        else tail_seconds(cfg))
    inst = Instrument(cfg, model=model, events=events, seconds=length.seconds, sets=sets, offline=True,
                      audio_in=input is not None)
    for line in notes_said(inst, ranges=not said):  # the demo phrase fits every shipped voice
        log.warning("%s", line)
    card = inst.card
    ch = inst.player.channels
    plan.check_output(output, plan.wav_bytes(length.seconds, card.sample_rate, ch, format,
                                             card.block_size), length.seconds)
    if length.seconds > LONG_RENDER_SECONDS and length.why != "--seconds":  # a stray event far out, say
        log.warning("%s: rendering %s of audio (%s); --seconds S renders only the first S", output,
                    plan.hms(length.seconds), length.why)
    if said:  # said once the render is under way (a bad --set or -o is its own one line)
        inst.player.hooks.insert(0, lambda pos: pos or log.warning("%s", said))
    # "default" is the wav backend's word for "a dated file": a render writes what -o says
    backend = WavBackend(output if output != "default" else os.path.join(".", output), format=format,
                         capture=capture)
    if input is not None:
        inst.connect_input(backend)
    t0 = time.perf_counter()
    frames = render_offline(inst.player, backend)
    dt = time.perf_counter() - t0
    sr = card.sample_rate
    bad = inst.player.guard.nonfinite_blocks  # the live run logs this from its monitor
    limited, blocks = inst.player.guard.limited_blocks, max(1, -(-frames // card.block_size))
    if limited > LIMITED_SAY * blocks:
        log.warning("the limiter bent peaks over %g dBFS in %d of %d blocks (%.0f%%) of %s: turn [output] gain_db "
                    "down, or play softer", cfg.output.limit_dbfs, limited, blocks, 100 * limited / blocks, output)
    if bad:
        log.warning("the model's output was not finite or ran away (past +60 dBFS) in %d of %d blocks: those "
                    "are silent in %s and the model was reset after each; check the model, or its card's "
                    "control ranges", bad, -(-frames // card.block_size), output)
    return (f"wrote {output}: {frames / sr:.2f} s, {sr} Hz, {ch} ch, "
            f"model {card.name}{input_said}, rendered in {dt:.2f} s ({frames / sr / max(dt, 1e-9):.3g}× real time)")


DEMO_MIDI = Path(demo_midi())  # --midi demo
def _note_name(hz: float) -> str:
    from pi_synth.control.voice import note_name

    return note_name(round(69 + 12 * math.log2(hz / 440.0)))


def notes_said(inst, ranges: bool = True) -> list[str]:
    """What the notes of the instrument's events will not play as written, one line each:
    none on the MIDI channel listened to, notes past the model's pitch range (they sound
    at its nearest end; ``ranges``), a ``--set`` of what the notes play."""
    router = inst.router
    if inst.note_ons and "audio_in" in inst.card.extra:
        return [f"{inst.card.name} plays what the audio input says: the events' {len(inst.note_ons)} note(s) do "
                "not play it (their controllers and 'set' events do)"]
    if not router.is_note or router.voice is None:
        return []
    ons = inst.note_ons
    heard = [n for ch, n in ons if router.channel is None or ch == router.channel]
    out = []
    played = [n for n in ("pitch", "loudness") if n in inst.set_names]
    if played and heard:
        out.append(f"--set {' and '.join(played)}: the notes play {' and '.join(played)} on "
                   f"{inst.card.name} (the value holds only until the first note); to move the notes, "
                   "--set octave=N or transpose the file")
    if ons and not heard:
        chans = ", ".join(str(c + 1) for c in sorted({ch for ch, _ in ons}))
        out.append(f"no notes on MIDI channel {router.channel + 1} ([midi] channel), the events' are on "
                   f"channel(s) {chans}: set [midi] channel = 0 to play every channel")
    if not ranges:
        return out
    pitch = inst.controls.card.control("pitch")
    lo, hi = min(pitch.min, pitch.max), max(pitch.min, pitch.max)
    try:
        octave = inst.voice.param("octave")
    except (AttributeError, KeyError):
        octave = 0.0
    hz = [440.0 * 2.0 ** ((n - 69) / 12.0 + octave) for n in heard]
    past = sum(1 for f in hz if f < lo / 1.03 or f > hi * 1.03)  # a quarter tone of slack
    if past:
        out.append(f"{past} of {len(hz)} notes lie outside {inst.controls.card.name}'s pitch range "
                   f"{lo:g}–{hi:g} Hz ({_note_name(lo)}–{_note_name(hi)}) and sound at its nearest end: "
                   "transpose them, or --set octave=N (±2)")
    return out


def _demo_phrase_if_played_by_notes(cfg, model):
    """A model played by notes renders silence without any: the demo phrase's events, and
    the line that says so (and how to give your own); ``([], None)`` for other models."""
    from pi_synth.control.events import load_midi_file
    from pi_synth.model.card import load_card
    from pi_synth.patch import plays_notes

    card = load_card(configured_model(cfg, model))
    if not plays_notes(card):
        return [], None
    return load_midi_file(DEMO_MIDI), (
        f"{card.name} is played by notes, and no --midi or --events was given: rendering the demo phrase "
        f"({DEMO_MIDI}); give your own with --midi FILE.mid or --events FILE.json")


class SignalFlags:
    """What SIGTERM/SIGINT (stop) and SIGHUP (reload) asked for, as plain flags the main loop
    reads every tick. A Python signal handler runs in the main thread between two bytecodes,
    possibly while that thread holds an Event's lock inside ``Event.wait``: an ``Event.set()``
    there waits on itself for ever (seen: ``pi-synth run`` deaf to SIGTERM after a SIGHUP, on
    a loaded machine). Setting an attribute takes no lock."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False

    def handle(self, signum, frame=None) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True


def run(cfg, *, model: str | None = None, events=(), seconds: float | None = None, sets=(),
        emulate: bool = False, panel: bool = True, config_path: str | None = None, loop: bool = False) -> int:
    """``pi-synth run``: the instrument live — engine, control sources, sd_notify and the
    watchdog, the monitor that logs what the audio threads count — until SIGINT/SIGTERM
    (fade out), ``seconds``, or the end of the events (``--midi``/``--events``, plus the
    release tail, unless ``loop`` or a live source keeps it open); SIGHUP reloads the config."""
    from pi_synth.control.board import use_board

    state: dict = {"board": None}
    saved_signals: dict = {}
    try:
        return _play(cfg, model=model, events=events, seconds=seconds, sets=sets, emulate=emulate, panel=panel,
                     config_path=config_path, loop=loop, state=state, saved_signals=saved_signals)
    finally:  # whatever happened: the caller's signal handlers back (run in-process: the tests)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        if state["board"] is not None:
            use_board(None)


def _play(cfg, *, model, events, seconds, sets, emulate, panel, config_path, loop, state, saved_signals) -> int:
    """The body of :func:`run`; ``state`` and ``saved_signals`` are what it undoes."""
    from pi_synth import render_plan as plan
    from pi_synth.audio.backends import backend_class
    from pi_synth.audio.engine import Engine, ring_frames
    from pi_synth.control.board import EmulatedBoard, use_board
    from pi_synth.control.rig import Rig, live_inputs
    from pi_synth.service.notify import Notifier, WatchdogGate
    from pi_synth.patch import input_kind

    board = None
    notifier = Notifier.from_env()
    if emulate:  # the one place "emulated?" is decided: which board the control path gets
        board = state["board"] = use_board(EmulatedBoard())
        if cfg.knobs.chip == "none":
            cfg.values["knobs"]["chip"] = "mcp3008"
        log.info("emulating the Pi's controls: %s, an emulated %s", board.describe(), cfg.knobs.chip)
    live = live_inputs(cfg) + (["the emulated panel"] if emulate else [])
    a = cfg.audio
    capture = a.capture.strip()
    no_input = None
    if capture and capture.lower() != "none" and not backend_class(a.backend).opens_capture:
        raise ConfigError(backend_class(a.backend).no_capture_said(a.backend, capture))
    if not capture and not backend_class(a.backend).own_input:
        # full duplex on a backend with no input: silence would drive the encoder, not the notes
        no_input = (f"no audio in: the {a.backend} backend has no input of its own (set [audio] capture to a PCM"
                    f"{', or a WAV file' if a.backend == 'wav' else ''} to play one in)")
        capture = "none"
    tail = tail_seconds(cfg)
    recording, input_seconds, recording_said, rec_tail = _capture_file(cfg, model, capture)
    if recording is not None:  # a WAV played in ends the run as it ends a render (unless live or looped)
        if loop and events or live:
            input_seconds = None
        else:
            tail = rec_tail  # as render --input's
    length = plan.length(seconds=seconds, events=events, tail_s=tail, loop=loop, live=live,
                         input_seconds=input_seconds)
    loop_s = (max(ev.t for ev in events) + tail) if loop and events else None
    inst = Instrument(cfg, model=model, events=events, seconds=length.seconds, sets=sets, loop_seconds=loop_s,
                      audio_in="auto" if not _is_none(capture) else False)
    for line in notes_said(inst):
        log.warning("%s", line)
    from pi_synth.model.library import missing_encoder

    if why := missing_encoder(inst.model_path, inst.card):  # the decoder plays from its knobs
        log.warning("%s (it plays from its knobs)", why)
    elif not _is_none(capture) and (recording is not None or a.capture.strip()) \
            and input_kind(Path(inst.model_path), inst.card) is None:
        log.warning("--capture %s: %s takes no audio (no encoder beside it, no inputs.audio in its card): the "
                    "input is not played; a model that takes audio is made with 'pi-synth convert rave'",
                    a.capture.strip(), inst.card.name)
    if no_input and input_kind(Path(inst.model_path), inst.card) is not None:  # said where it matters
        log.info("%s", no_input)
    if events and length.seconds is not None and length.why != "--seconds":
        log.info("stopping after %s: %s (--loop or --seconds to play on)", plan.hms(length.seconds), length.why)
    elif events and length.seconds is None:
        log.info("playing on after the events: %s", length.why)
    backend = backend_class(a.backend)(a.device, format=a.format, capture=capture or None)
    if recording is not None:
        backend.preload_capture(recording[0], inst.card.sample_rate, recording[1])
    if a.backend == "wav":
        _plan_recording(inst, backend, length, a.format)
    if not _is_none(capture):
        inst.connect_input(backend)
    engine = inst.engine = Engine(
        inst.player, backend, period=a.period, periods=a.periods, ahead_blocks=a.ahead_blocks,
        # real-time priority for a backend with no clock would only hog a core
        realtime=a.realtime and backend.paced, mode=a.engine, cpus=set(a.cpus) or None,
        late=a.late_render,
    )
    stop = threading.Event()  # the panel's quit key (another thread)
    asked = SignalFlags()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        saved_signals[sig] = signal.signal(sig, asked.handle)
    if a.realtime and a.backend == "alsa":  # a sound card, where a page fault is a click (elsewhere
        from pi_synth.service.realtime import lock_memory  # the warning would only be noise)

        lock_memory()  # after the model is loaded, before sound: logged once if refused
    t_start = time.monotonic()
    engine.start()
    from pi_synth.surface import requests

    inst.config_path = config_path
    rig = Rig.from_config(cfg, inst.router, status_fn=inst.status,
                          poll_hz=min(cfg.knobs.poll_hz, EMULATED_POLL_HZ) if emulate else None,
                          osc_status_fn=inst.status, requests=requests(inst))
    rig.start()
    from pi_synth.model.library import which_file

    why = which_file(model or cfg.model.path or None, Path(inst.model_path), cfg.model.precision)
    log.info("playing %s (%s%s) on %s (block %d, %s engine%s)", inst.card.name, os.path.basename(inst.model_path),
             f": {why}" if why else "", backend.describe(), inst.card.block_size, engine.mode,
             f", ring {engine.ring.capacity} frames" if engine.ring is not None else "")
    if inst.player.input is not None:
        g = backend.capture_granted
        log.info("audio in from %s%s: %s, the output leading by %d frames",
                 recording_said or backend.capture or "the playback device",  # a file: what it was converted from
                 f" ({g.sample_rate} Hz {g.channels} ch {g.format} period {g.period}×{g.periods})"
                 if g and not recording_said else "",
                 inst.card.extra["audio_in"].get("encoder", "the model itself") + " takes it", engine.output_lead)
    if engine.periods > a.periods:
        log.info("audio.periods %d → %d: one block renders in %.1f%% of real time here, and a "
                 "bigger buffer lets it play in the direct engine (less latency than a %d-frame ring)",
                 a.periods, engine.periods, 100 * (inst.player.rtf_hint or 0),
                 ring_frames(inst.card.block_size, engine.period, a.ahead_blocks))
    if not backend.paced:
        log.info("backend %s is not paced by a clock: running as fast as the CPU allows, with no real-time "
                 "priority (--backend null plays in real time)", a.backend)
    elif (inst.player.rtf_hint or 0.0) > 1.0:
        log.warning("%s takes %.1f× its block's length to render a block here: it cannot play in real time on "
                    "this machine, expect gaps ('pi-synth bench %s' measures it; its int8 file, fewer voices or "
                    "a faster machine may help)", inst.card.name, inst.player.rtf_hint, inst.card.name)
    # on a clock, a run of S seconds ends after about S seconds even if the model cannot keep up
    wall_limit = length.seconds * 1.5 + 5.0 if length.seconds is not None and backend.paced else None
    front = None
    if board is not None and panel and sys.stdin.isatty():
        from pi_synth.control.panel import Panel

        front = Panel(inst, board, rig, stop)
        front.start()
    engine.settle()  # what start-up made is long-lived: out of the audio thread's collections
    gate = WatchdogGate(notifier, lambda: (engine.stats.blocks, backend.frames_written))
    last: dict = {}
    ready = False
    try:
        while not engine.finished and not stop.is_set() and not asked.stop:
            stop.wait(0.1 if not ready else 0.25)
            if asked.stop:
                break
            st = inst.status()
            if not ready and engine.stats.first_audio_at:
                ready = True
                notifier.ready(status_line(st))
            if asked.reload:
                asked.reload = False
                notifier.reloading()
                inst.reload(config_path)
                notifier.ready(status_line(inst.status()))
            gate.tick()
            engine.watch_clock()
            if ready:
                notifier.status(status_line(st))
            if wall_limit is not None and time.monotonic() - t_start > wall_limit:
                log.warning("stopping after %.0f s of wall time with %.2f of the %.2f s played: the model "
                            "could not keep up with real time here", time.monotonic() - t_start,
                            inst.player.position / inst.card.sample_rate, length.seconds)
                break
            inst.collect_retired()
            log_changes(st, last, engine)
    finally:
        notifier.stopping()
        if front is not None:
            front.stop()
        rig.close()
        engine.stop(fade=True)
    st = inst.status()
    log_changes(st, last, engine, final=True)
    if engine.failed:  # the output could not take more (a full disk): said in one line, exit 2
        from pi_synth.errors import OutputError

        raise OutputError(engine.failed)
    played = inst.player.position / inst.card.sample_rate
    first = (engine.stats.first_audio_at - t_start) if engine.stats.first_audio_at else float("nan")
    inp = st.get("input")
    print(f"played {played:.2f} s of {inst.card.name} on {a.backend}:{backend.device}: "
          f"{st['xruns']} xruns, {st['late_periods']} late periods, "
          + (f"{st['clock_gaps']} output clock gaps ({st['clock_gap_ms']:.0f} ms lost), " if st["clock_gaps"] else "")
          + f"load {engine.stats.load * 100:.1f}%, first audio after {first:.3f} s"
          + (f"; input: {inp['xruns']} xruns, {inp['late_blocks']} late blocks, {inp['clips']} clipped"
             if inp else ""), file=sys.stderr)
    return 0


def input_tail(card) -> float:
    """Seconds played after a recording ends (render --input, run --capture IN.wav): a block
    and the models' latency, so its last sound comes out."""
    return (2 * card.block_size + card.latency_samples) / card.sample_rate


def _is_none(capture) -> bool:
    return isinstance(capture, str) and capture.lower() == "none"


def _capture_file(cfg, model, capture: str):
    """``run --backend wav --capture IN.wav`` with a model that takes audio: the file at the
    model's rate (frames, what was converted), what it lasts, what was converted (in words), and the tail that lets its
    last sound out; else (None, None, "", 0). A PCM name there (``default``, ``hw:1,0``) is
    one line: the wav backend plays files in."""
    from pi_synth.model.card import load_card
    from pi_synth.patch import input_kind

    if cfg.audio.backend != "wav" or not capture or _is_none(capture):
        return None, None, "", 0.0
    if not os.path.exists(capture) and not capture.lower().endswith((".wav", ".rf64", ".bw64")):
        raise ConfigError(f"--capture {capture}: the wav backend plays a WAV file in, and there is no file "
                          f"{capture!r}; a sound card's input (an ALSA PCM) needs --backend alsa")
    path = configured_model(cfg, model)
    card = load_card(path)
    if input_kind(path, card) is None:
        return None, None, "", 0.0
    from pi_synth.audio.backends.wav import load_input

    x, notes = load_input(capture, card.sample_rate)
    tail = input_tail(card)  # as a render's
    return (x, notes), len(x) / card.sample_rate, capture + (f" ({', '.join(notes)})" if notes else ""), tail


def _plan_recording(inst, backend, length, fmt: str) -> None:
    """``run --backend wav``: a recording must fit the file format and the disk. A bounded
    run is checked before it starts; an open one stops where the room ends, and says so."""
    from pi_synth import render_plan as plan

    card, path, ch = inst.card, backend.device, inst.player.channels
    backend.keep_partial = True  # a live recording keeps what it got if the disk fills anyway
    if length.seconds is not None:
        plan.check_output(path, plan.wav_bytes(length.seconds, card.sample_rate, ch, fmt,
                                               card.block_size), length.seconds, flag="--device")
    else:
        room = plan.room_seconds(path, card.sample_rate, ch, fmt)
        if room is not None:
            if room < 1.0:
                raise DeviceError(f"{path}: no room for a recording (free space or the WAV limit); "
                                       "free some space or record elsewhere (--device OUT.wav)")
            inst.stop_after(room)
            log.info("recording to %s until stopped; it stops by itself after %s (free space and the WAV "
                     "format's 4 GiB)", path, plan.hms(room))
            return
    log.info("recording to %s", path)


def status_line(st: dict) -> str:
    """The one line systemd shows for the service (``systemctl status pi-synth``)."""
    return (f"{st.get('model')}: load {st.get('load', 0) * 100:.0f}%, xruns {st.get('xruns', 0)}, "
            f"late {st.get('late_periods', 0)}")


COUNTER_EVERY_S = 5.0  # a counter that keeps moving is logged at most this often


def _moved(key: str, value: int, last: dict, final: bool) -> int | None:
    """How much counter ``key`` moved since it was last said, if it is time to say it (at
    most every :data:`COUNTER_EVERY_S`; ``final``: now). A machine that cannot keep up
    moves its xruns every period: ten lines a second said nothing more than one."""
    said = last.setdefault("_said", {})
    t, was = said.get(key, (-math.inf, 0))
    now = time.monotonic()
    if value == was or not final and now - t < COUNTER_EVERY_S:
        return None
    said[key] = (now, value)
    return value - was


def log_changes(st: dict, last: dict, engine, final: bool = False) -> None:
    """Log counters that moved: the monitor half of 'xruns are data'."""
    inp = st.get("input") or {}
    for key in ("xruns", "clips"):
        if (d := _moved(f"input_{key}", inp.get(key, 0), last, final)) is not None:
            log.warning("audio input %s: %d (+%d)", "xruns" if key == "xruns" else "clipped blocks", inp[key], d)
    for key in ("xruns", "late_periods"):
        if (d := _moved(key, st[key], last, final)) is not None:
            log.warning("%s: %d (+%d)", key.replace("_", " "), st[key], d)
    if (d := _moved("clock_gaps", st.get("clock_gaps", 0), last, final)) is not None:
        log.warning("output clock gaps: %d (+%d), %.0f ms in all: the output stopped while the instrument did, "
                    "with no xrun reported (JACK skips a stalled client's cycles): that sound was lost",
                    st["clock_gaps"], d, st["clock_gap_ms"])
    for key in ("nonfinite_blocks", "device_errors", "reopens"):
        if st[key] != last.get(key, 0):
            if key == "reopens":
                log.warning("audio device back: playing again")
            elif key == "nonfinite_blocks":
                log.warning("model output was not finite or ran away (past +60 dBFS) in %d block(s): muted and reset",
                            st[key] - last.get(key, 0))
            elif not engine.failed:  # device errors: an output that cannot come back is said once, at the end
                log.warning("audio device error (%s); retrying", engine.stats.last_device_error)
    if st.get("render") == "ahead" and last.get("render") in ("early", "late"):
        log.warning("after an xrun, audio is rendered a period ahead for a while (one period more latency; "
                    "back to just in time after %.0f s without one, longer if they keep coming); audio.periods = 3 "
                    "starts with that margin", engine.ahead_hold_blocks * engine.stats.block_seconds)
    last.update(st)
