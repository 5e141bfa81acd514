"""The instrument: config + models + controls + engine, as ``pi-synth run`` plays it.

:class:`Instrument` assembles the audio path (a :class:`~pi_synth.audio.player.Player`
over one loaded model) and the control path (one :class:`~pi_synth.control.router.Router`
that every source talks to), and owns what happens *between* blocks: actions (next
or previous model, program change, presets, MIDI learn, panic), hot swap with a
crossfade, and config reload on SIGHUP. Everything slow (loading a model, reading a
file) happens here, on a control thread; the audio thread only ever sees a finished
object handed over in one attribute store.

``pi-synth render`` builds the same Instrument and pulls its player offline, so a
render and a live run make the same samples.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from pi_synth.model.library import find_model, list_models
from pi_synth.audio.player import Player
from pi_synth.model.runtime import Runtime
from pi_synth.audio.safety import OutputGuard
from pi_synth.audio.synth import Synth
from pi_synth.audio.bank import ControlBank
from pi_synth.control.events import StopAt, Timeline, check_events
from pi_synth.control.mapping import Mapping
from pi_synth.control.router import Router
from pi_synth.control.voice import MonoVoice
from pi_synth.errors import ConfigError, ModelError, PiSynthError
from pi_synth.service.realtime import release_heap

log = logging.getLogger(__name__)


class Instrument:
    def __init__(self, cfg, *, model: str | None = None, events=(), seconds: float | None = None,
                 sets=(), fade_in: bool = True):
        self.cfg = cfg
        self.model_path = find_model(model or cfg.model.path, cfg.model.precision, cfg.model.threads)
        synth = self.load(self.model_path, fade_in=fade_in)
        card = synth.card
        self.voice = self._make_voice(card)
        self.mapping = self._make_mapping(card)
        self.mapping.configure(synth.bank)
        self.router = Router(card, synth.bank, self.mapping, voice=self.voice)
        self.router.on_action = self.action
        self.router.channel = None if cfg.midi.channel == 0 else cfg.midi.channel - 1
        for name, value in sets:
            try:
                synth.bank.set(name, value)
            except KeyError as e:
                raise ConfigError(f"--set {name}: {e.args[0]}") from None
        hooks = []
        self.timeline = None
        if events:
            check_events(events, self.router)
            self.timeline = Timeline(events, self.router, card.sample_rate)
            hooks.append(self.timeline)
        hooks.append(self.router.on_block)  # the router object outlives swaps
        self.player = Player(synth, hooks)
        if seconds is not None:
            self.player.hooks.append(StopAt(round(seconds * card.sample_rate), self.player.fade_out))
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
        self.failed_loads = 0
        self.last_error = ""

    # -- building blocks ------------------------------------------------------------------

    def load(self, path, *, fade_in: bool = True) -> Synth:
        """Load a model beside whatever plays: runtime, bank, guard. Raises ModelError."""
        m, o = self.cfg.model, self.cfg.output
        rt = Runtime(path, threads=m.threads, warmup_blocks=max(1, m.warmup_blocks), use_cache=m.cache)
        card = rt.card
        audio = rt.step()  # the first block must run and be finite before we trust it
        if not np.isfinite(audio).all():
            raise ModelError(f"{path}: the model's first block is not finite (NaN/inf); not loading it")
        rt.reset()
        guard = OutputGuard(card.block_size, card.channels, card.sample_rate, fade_ms=o.fade_ms,
                            limit_dbfs=o.limit_dbfs, gain_db=o.gain_db, fade_in=fade_in)
        return Synth(rt, ControlBank(card), guard)

    def _make_voice(self, card):
        if not {"pitch", "loudness"} <= set(card.control_names):
            return None
        ch = self.cfg.midi.channel
        loud = card.control("loudness")
        return MonoVoice(channel=None if ch == 0 else ch - 1, bend_range=self.cfg.midi.bend_range,
                         floor_db=min(loud.min, loud.max), max_db=max(loud.min, loud.max),
                         attack_ms=self.cfg.midi.attack_ms, release_ms=self.cfg.midi.release_ms)

    def _make_mapping(self, card) -> Mapping:
        mapping = Mapping.from_config(card, self.cfg.map)
        for w in mapping.skipped:
            log.warning("%s (skipped for model %s)", w, card.name)
        return mapping

    @property
    def card(self):
        return self.player.card

    @property
    def synth(self) -> Synth:
        return self.player.synth

    # -- hot swap -------------------------------------------------------------------------

    def swap(self, model: str | Path) -> bool:
        """Load ``model`` beside the running one and crossfade to it. On any failure the
        old model keeps playing and the reason is logged in one line."""
        with self._swap_lock:
            self.collect_retired()  # models earlier swaps left behind, whoever else collects
            try:
                path = find_model(str(model), self.cfg.model.precision, self.cfg.model.threads)
                synth = self.load(path, fade_in=False)
            except PiSynthError as e:
                self.failed_loads += 1
                self.last_error = str(e)
                log.warning("model not changed: %s", e)
                return False
            if not self.player.can_crossfade(synth):
                self.failed_loads += 1
                self.last_error = (f"{path}: {synth.sample_rate} Hz / {synth.channels} ch cannot "
                                   f"crossfade with {self.player.sample_rate} Hz / {self.player.channels} ch")
                log.warning("model not changed: %s; restart with --model to switch", self.last_error)
                return False
            why = self.engine.admits(synth) if self.engine is not None else None
            if why:
                self.failed_loads += 1
                self.last_error = f"{path}: {why}"
                log.warning("model not changed: %s; restart with --model to switch", self.last_error)
                return False
            card = synth.card
            # carry control values the two models share (a knob's position stays put;
            # a held note keeps its pitch and loudness)
            old = self.synth.bank
            for name in card.control_names:
                if name in old.names:
                    synth.bank.set(name, old.get(name))
            mapping = self._make_mapping(card)
            mapping.configure(synth.bank)
            if self.voice is None:
                self.voice = self._make_voice(card)
            self.router.retarget(card, synth.bank, mapping, self.voice)
            self.mapping = mapping
            if self.learn is not None:
                self.learn.attach(mapping)
            self.player.crossfade_to(synth)
            self.model_path = path
            log.info("crossfading to %s (%s)", card.name, path)
            return True

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
        names = []
        for p in list_models():
            base = p.name.split(".")[0]
            if base not in names:
                names.append(base)
        return names

    def _step_model(self, step: int) -> None:
        names = self.model_names()
        if not names:
            return
        current = Path(self.model_path).name.split(".")[0]
        i = names.index(current) if current in names else -1
        self.swap(names[(i + step) % len(names)])

    # -- actions (from any control thread) --------------------------------------------------

    def action(self, name: str, arg=None) -> None:
        if name in ("next_model", "prev_model", "program"):
            # loading takes a while: never on the thread that delivered the input
            if name == "program" and self.cfg.midi.program == "preset":
                return self.action("preset_recall", arg)
            if name == "program" and self.cfg.midi.program == "off":
                return
            if name == "program":
                names = self.model_names()
                target = names[int(arg) % len(names)] if names else None
                if target:
                    threading.Thread(target=self.swap, args=(target,), daemon=True).start()
            else:
                threading.Thread(target=self._step_model, args=(1 if name == "next_model" else -1,),
                                 daemon=True).start()
        elif name == "panic":
            log.info("panic: all notes off")
        elif name == "preset_save":
            from pi_synth.control.learn import routes_to_json

            try:
                self.presets.save(int(arg or 0), model=self.card.name, values=self.synth.bank.values(),
                                  mapping=routes_to_json(self.mapping.routes))
                log.info("preset %d saved", int(arg or 0))
            except (ValueError, PiSynthError, OSError) as e:
                log.warning("preset not saved: %s", e)
        elif name == "preset_recall":
            from pi_synth.control.presets import apply

            try:
                p = self.presets.load(int(arg or 0))
            except (ValueError, PiSynthError) as e:
                log.warning("preset not recalled: %s", e)
                return
            if p is None:
                log.warning("preset %d is empty", int(arg or 0))
            else:
                skipped = apply(p, self.synth.bank, self.mapping)
                if skipped:
                    log.info("preset %d: %s not in model %s", int(arg or 0), ", ".join(skipped), self.card.name)
        elif name == "learn":
            self.learn.on_action(arg)

    # -- reload (SIGHUP) --------------------------------------------------------------------

    def reload(self, explicit_config: str | None = None) -> bool:
        """Re-read the config; a bad file keeps the old one. A changed model crossfades in."""
        from pi_synth import config as config_mod

        try:
            cfg = config_mod.load(explicit_config)
        except PiSynthError as e:
            log.warning("config not reloaded, keeping the old one: %s", e)
            self.last_error = str(e)
            return False
        for w in cfg.warnings:
            log.warning("%s", w)
        old = self.cfg
        self.cfg = cfg
        try:
            mapping = self._make_mapping(self.card)
        except PiSynthError as e:
            self.cfg = old
            log.warning("config not reloaded, keeping the old one: %s", e)
            return False
        self.mapping = mapping
        mapping.configure(self.synth.bank)
        self.router.mapping = mapping
        self.learn.attach(mapping)
        self.router.channel = None if cfg.midi.channel == 0 else cfg.midi.channel - 1
        g = self.synth.guard  # output settings apply at once (plain attribute stores)
        g.gain_lin = float(10 ** (cfg.output.gain_db / 20))
        g.limit = float(10 ** (min(cfg.output.limit_dbfs, 0.0) / 20))
        if cfg.model.path and find_model(cfg.model.path, cfg.model.precision, cfg.model.threads) != Path(self.model_path):
            self.swap(cfg.model.path)
        log.info("config reloaded from %s", cfg.path or "built-in defaults")
        return True

    def status(self) -> dict:
        st = self.engine.status() if self.engine is not None else {}
        st.update(model=self.card.name, swaps=self.player.swaps, failed_loads=self.failed_loads)
        return st
